//! What the backend fusion finders (`geglu`, `ple_gate`, `scaled_norm`, `qkv`, `kv_pair`) ask of
//! the decode program: a buffer's storage (views followed), how many step inputs read a storage,
//! which step produced a buffer, whether a buffer is a program output, and the lowering state
//! (layouts, weights, states) — built once per program instead of passed piece by piece.

use std::collections::BTreeMap;

use gemma4c_passes::plan::{BufferKind, Program};

use super::ctx::Ctx;

pub(super) struct Lookup<'a, 'c> {
    pub(super) c: &'a Ctx<'c>,
    pub(super) p: &'a Program,
    /// Step inputs reading each storage buffer.
    uses: BTreeMap<usize, usize>,
    /// The step writing each buffer.
    producer: BTreeMap<usize, usize>,
}

impl<'a, 'c> Lookup<'a, 'c> {
    pub(super) fn new(c: &'a Ctx<'c>, p: &'a Program) -> Self {
        let mut l = Lookup {
            c,
            p,
            uses: BTreeMap::new(),
            producer: BTreeMap::new(),
        };
        for (i, s) in p.steps.iter().enumerate() {
            for &b in &s.inputs {
                *l.uses.entry(l.root(b)).or_default() += 1;
            }
            for &o in &s.outputs {
                l.producer.insert(o, i);
            }
        }
        l
    }

    /// The storage of buffer `id` (views followed; scratch buffers are their own storage).
    pub(super) fn root(&self, id: usize) -> usize {
        storage(self.p, id)
    }

    /// Step inputs that read storage `b`.
    pub(super) fn uses(&self, b: usize) -> usize {
        self.uses.get(&b).copied().unwrap_or(0)
    }

    /// The step that writes buffer `b`.
    pub(super) fn producer(&self, b: usize) -> Option<usize> {
        self.producer.get(&b).copied()
    }

    /// Whether buffer `id`'s storage is an output of the program (logits): never fused away.
    pub(super) fn is_output(&self, id: usize) -> bool {
        matches!(
            &self.p.buffers[self.root(id)].kind,
            BufferKind::Activation { output: Some(_), .. }
        )
    }

    /// Storage `b` is read by exactly one step input and is not an output: an intermediate a
    /// fused kernel can keep to itself.
    pub(super) fn once(&self, b: usize) -> bool {
        self.uses(b) == 1 && !self.is_output(b)
    }

    /// Steps that read storage `b`, in program order.
    pub(super) fn consumers(&self, b: usize) -> Vec<usize> {
        self.p
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.inputs.iter().any(|&i| self.root(i) == b))
            .map(|(i, _)| i)
            .collect()
    }
}

/// The storage of buffer `id` in `p` (views followed; scratch buffers are their own storage).
pub(super) fn storage(p: &Program, mut id: usize) -> usize {
    while let Some(BufferKind::View { of }) = p.buffers.get(id).map(|b| &b.kind) {
        id = *of;
    }
    id
}
