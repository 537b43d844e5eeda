//! Lowering state: the plan being lowered, device layouts, registered kernels, prepared tensors,
//! RoPE tables, masks and ring capacities, with the helpers every step uses.

use std::collections::{BTreeMap, BTreeSet};

use gemma4c_ir::RopeSpec;
use gemma4c_passes::plan::{BufferKind, Program, Step};
use gemma4c_passes::Plan;

use super::mesh::ShardDim;
use super::{MaskUse, Prepared, Source};
use crate::tt::kernels::Kernel;
use crate::tt::layout::DevLayout;
use crate::tt::target::TtTarget;
use crate::tt::TtError;

pub(super) struct Ctx<'a> {
    pub(super) t: &'a TtTarget,
    pub(super) plan: &'a Plan,
    pub(super) p: &'a Program,
    pub(super) lay: BTreeMap<usize, DevLayout>,
    /// Lowering the prefill program: every row of a tile is a real position (`kernels::chunk`).
    pub(super) prefill: bool,
    pub(super) kernels: Vec<Kernel>,
    pub(super) prepared: Vec<Prepared>,
    pub(super) ropes: Vec<(RopeSpec, String, String)>,
    pub(super) masks: Vec<MaskUse>,
    pub(super) caps: Vec<usize>,
    /// Scratch buffers (ids after the plan's buffers).
    pub(super) scratch: usize,
    /// Activations whose values differ per chip (a sharded MLP's intermediate, partial sums).
    pub(super) per_chip: BTreeSet<usize>,
    /// Prepared weights split over the chips, and along which axis (`mesh.rs`).
    pub(super) shards: BTreeMap<String, ShardDim>,
}

impl Ctx<'_> {
    pub(super) fn err(&self, step: &Step, msg: impl std::fmt::Display) -> TtError {
        TtError::new(format!("step `{}` ({}): {msg}", step.name, step.op))
    }

    pub(super) fn lay(&self, id: usize) -> Result<DevLayout, TtError> {
        self.lay
            .get(&id)
            .copied()
            .ok_or_else(|| TtError::new(format!("buffer {id} has no device layout (not an activation)")))
    }

    pub(super) fn shape(&self, id: usize) -> &[usize] {
        &self.p.buffers[id].shape
    }

    pub(super) fn weight(&self, id: usize) -> Option<(&str, &[usize])> {
        match self.p.buffers[id].kind {
            BufferKind::Weight { index } => {
                let w = &self.plan.weights[index];
                Some((w.key.as_str(), w.shape.as_slice()))
            }
            _ => None,
        }
    }

    pub(super) fn state(&self, id: usize) -> Option<usize> {
        match self.p.buffers[id].kind {
            BufferKind::State { index } => Some(index),
            _ => None,
        }
    }

    /// `(kv_heads, capacity, head_dim)` of state `si`, the capacity rounded up to whole tile rows:
    /// a prefill chunk (32 positions from a multiple of 32) then fills exactly one tile row of a
    /// ring and never wraps inside it. Rounding up is safe: the plan's ring capacity already keeps
    /// `window - 1 + chunk` positions, and a larger ring only keeps more (the masks hide them);
    /// a full cache (capacity = max context) keeps the same slots.
    pub(super) fn ring(&self, si: usize) -> (usize, usize, usize) {
        let sh = &self.plan.state[si].shape;
        (sh[0], sh[1].div_ceil(32) * 32, sh[2])
    }

    pub(super) fn kernel(&mut self, mut k: Kernel) -> usize {
        if let Some(i) = self.kernels.iter().position(|o| o.same_program(&k)) {
            return i;
        }
        let mut name = k.base.clone();
        let mut n = 2;
        while self.kernels.iter().any(|o| o.name == name) {
            name = format!("{}_{n}", k.base);
            n += 1;
        }
        k.name = name;
        self.kernels.push(k);
        self.kernels.len() - 1
    }

    /// Registers a matmul-family kernel whose weight operand is the prepared tensor `w`, in the
    /// weight's device format.
    pub(super) fn weight_kernel(&mut self, k: Kernel, w: &str) -> Result<usize, TtError> {
        let fmt = self
            .prepared
            .iter()
            .find(|p| p.name == w)
            .map_or(self.t.weights, |p| p.format(self.t));
        let k = k.with_weight_format(fmt, self.t)?;
        Ok(self.kernel(k))
    }

    pub(super) fn prep(
        &mut self,
        name: String,
        rows: usize,
        cols: usize,
        host: bool,
        source: Source,
    ) -> Result<String, TtError> {
        if let Some(p) = self.prepared.iter().find(|p| p.name == name) {
            if p.source != source || p.host != host {
                return Err(TtError::new(format!(
                    "prepared tensor `{name}` is needed in two layouts"
                )));
            }
            return Ok(name);
        }
        self.prepared.push(Prepared {
            name: name.clone(),
            rows,
            cols,
            host,
            source,
        });
        Ok(name)
    }

    /// A weight vector laid out as one row of `layout`.
    pub(super) fn row(&mut self, key: &str, layout: DevLayout) -> Result<String, TtError> {
        let l = DevLayout { rows: 1, ..layout }.canonical();
        let tag = l.tag();
        let name = if tag.is_empty() {
            key.to_string()
        } else {
            format!("{key}@{tag}")
        };
        self.prep(
            name,
            1,
            l.col_tiles() * 32,
            false,
            Source::Row {
                key: key.into(),
                layout: l,
            },
        )
    }

    /// The device `(cos, sin)` tables of a RoPE variant, `[max_context, head_dim]`.
    pub(super) fn rope(&mut self, spec: &RopeSpec) -> Result<(String, String), TtError> {
        if let Some(r) = self.ropes.iter().find(|r| &r.0 == spec) {
            return Ok((r.1.clone(), r.2.clone()));
        }
        let base = format!(
            "rope.theta{}.pairs{}.d{}.factor{}",
            spec.theta, spec.rotated_pairs, spec.head_dim, spec.factor
        );
        let ctx = self.plan.model.max_context;
        // Tile-padded columns (zero beyond head_dim: padded lanes of a head stay zero).
        let d = spec.head_dim.div_ceil(32) * 32;
        // Device tables: kernels gather the step's row at run time.
        let cos = self.prep(
            format!("{base}.cos"),
            ctx,
            d,
            false,
            Source::Rope {
                spec: spec.clone(),
                context: ctx,
                sin: false,
            },
        )?;
        let sin = self.prep(
            format!("{base}.sin"),
            ctx,
            d,
            false,
            Source::Rope {
                spec: spec.clone(),
                context: ctx,
                sin: true,
            },
        )?;
        self.ropes.push((spec.clone(), cos.clone(), sin.clone()));
        Ok((cos, sin))
    }

    pub(super) fn rotate_half(&mut self, d: usize) -> Result<String, TtError> {
        let dp = d.div_ceil(32) * 32;
        self.prep(
            format!("rope.rotate_half.d{d}"),
            dp,
            dp,
            false,
            Source::RotateHalf { d },
        )
    }

    pub(super) fn cap(&mut self, capacity: usize) -> usize {
        if let Some(i) = self.caps.iter().position(|&c| c == capacity) {
            return i;
        }
        self.caps.push(capacity);
        self.caps.len() - 1
    }

    pub(super) fn mask(&mut self, m: MaskUse) -> usize {
        if let Some(i) = self.masks.iter().position(|o| o == &m) {
            return i;
        }
        self.masks.push(m);
        self.masks.len() - 1
    }

    /// `(groups, tiles per norm)` for a norm over the last `n` columns of a buffer in layout `l`,
    /// and the layout of one norm's weight row.
    pub(super) fn norm_segments(
        &self,
        step: &Step,
        l: DevLayout,
        n: usize,
    ) -> Result<(usize, usize, DevLayout), TtError> {
        if l.width.is_multiple_of(32) {
            if !n.is_multiple_of(32) || !l.cols().is_multiple_of(n) {
                return Err(self.err(step, format!("norm width {n} does not split the tile layout {l:?}")));
            }
            Ok((l.cols() / n, n / 32, DevLayout::flat(1, n)))
        } else {
            if !n.is_multiple_of(l.width) || !l.groups.is_multiple_of(n / l.width) {
                return Err(self.err(step, format!("norm width {n} does not split the segments of {l:?}")));
            }
            let k = n / l.width;
            Ok((
                l.groups / k,
                k * l.seg_tiles(),
                DevLayout {
                    rows: 1,
                    groups: k,
                    width: l.width,
                },
            ))
        }
    }

    pub(super) fn new_scratch(&mut self, l: DevLayout) -> usize {
        let id = self.p.buffers.len() + self.scratch;
        self.scratch += 1;
        self.lay.insert(id, l);
        id
    }
}

/// The prepared `W^T` of a matmul weight operand.
pub(super) fn transposed(c: &mut Ctx, s: &Step, w: usize, xin: DevLayout, out: DevLayout) -> Result<String, TtError> {
    let (name, rows, cols, source) = transposed_source(c, s, w, xin, out)?;
    c.prep(name, rows, cols, false, source)
}

/// Name, `[rows, cols]` and source of the prepared `W^T` of a matmul weight operand.
pub(super) fn transposed_source(
    c: &Ctx,
    s: &Step,
    w: usize,
    xin: DevLayout,
    out: DevLayout,
) -> Result<(String, usize, usize, Source), TtError> {
    let (key, shape) = c
        .weight(w)
        .ok_or_else(|| c.err(s, "the matmul weight is not a checkpoint tensor"))?;
    let (key, shape) = (key.to_string(), shape.to_vec());
    if shape.len() != 2 || shape[0] != out.cols() || shape[1] != xin.cols() {
        return Err(c.err(
            s,
            format!("weight {key} {shape:?} does not match x {xin:?} -> y {out:?}"),
        ));
    }
    let xt = DevLayout { rows: 1, ..xin }.canonical().tag();
    let ot = DevLayout { rows: 1, ..out }.canonical().tag();
    let name = match (xt.is_empty(), ot.is_empty()) {
        (true, true) => format!("{key}@t"),
        _ => format!(
            "{key}@t.{}.{}",
            if xt.is_empty() { "flat" } else { &xt },
            if ot.is_empty() { "flat" } else { &ot }
        ),
    };
    let (xin, out) = (
        DevLayout { rows: 1, ..xin }.canonical(),
        DevLayout { rows: 1, ..out }.canonical(),
    );
    Ok((
        name,
        xin.col_tiles() * 32,
        out.col_tiles() * 32,
        Source::Transposed { key, xin, out },
    ))
}
