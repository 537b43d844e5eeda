//! The target-independent plan: what a backend generates code for and what the
//! runtime executes.
//!
//! A `Program` is one call graph (decode step or prefill chunk) lowered to
//! ordered steps, one kernel launch each, over a buffer table. Activations live
//! in one arena and share space when their lifetimes do not overlap; KV caches
//! are state buffers updated in place; weights are bound by checkpoint key.
//! Serialized as `plan.json`; the same input gives byte-identical output.

use std::collections::BTreeMap;

use gemma4c_ir::{DType, Graph, InputRole, IrError, Op, Value};
use serde::{Deserialize, Serialize};

/// Version of the plan.json format.
pub const PLAN_FORMAT: u32 = 1;

/// Arena offsets are aligned to this many bytes (a cache line; wide enough for
/// AVX-512 loads and for DMA on accelerators).
pub const ARENA_ALIGN: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: u32,
    pub target: String,
    pub model: ModelInfo,
    /// Weights read by any program, by checkpoint key (sorted).
    pub weights: Vec<WeightBinding>,
    /// KV caches shared by all programs.
    pub state: Vec<StateBuffer>,
    pub programs: Vec<Program>,
}

/// What the plan was compiled for; `run --plan` checks a model against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Digest of the resolved model configuration.
    pub fingerprint: String,
    /// Checkpoint directory the plan was compiled from (if any).
    pub source: Option<String>,
    pub vocab_size: usize,
    pub max_context: usize,
    pub prefill_chunk: usize,
    pub bos_token_id: u32,
    pub eos_token_ids: Vec<u32>,
}

/// How a target wants a checkpoint tensor laid out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Row-major as stored (`[out, in]` for linear weights).
    AsStored,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightBinding {
    pub key: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub layout: Layout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateBuffer {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BufferKind {
    /// `plan.weights[index]`.
    Weight { index: usize },
    /// `plan.state[index]`, updated in place.
    State { index: usize },
    /// A program input bound by name (token ids, position).
    Input { name: String },
    /// An arena activation; `output` names it if the program returns it.
    Activation { offset: usize, output: Option<String> },
    /// Another buffer's storage seen with a different shape (a reshape).
    View { of: usize },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Buffer {
    pub id: usize,
    pub kind: BufferKind,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: usize,
    /// Steps that write first and read last (activations; `None` for others).
    pub lifetime: Option<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The kernel: an IR op with its attributes (fused ops included).
    pub op: Op,
    /// HF-style name of what it computes.
    pub name: String,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub name: String,
    pub seq_len: usize,
    pub buffers: Vec<Buffer>,
    pub steps: Vec<Step>,
    pub arena_bytes: usize,
}

impl Program {
    pub fn launches(&self) -> usize {
        self.steps.len()
    }

    /// Steps per op mnemonic.
    pub fn op_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in &self.steps {
            *m.entry(s.op.mnemonic().to_string()).or_default() += 1;
        }
        m
    }

    /// The buffer that owns a buffer's storage (follows views).
    pub fn storage(&self, mut id: usize) -> &Buffer {
        while let BufferKind::View { of } = self.buffers[id].kind {
            id = of;
        }
        &self.buffers[id]
    }

    pub fn output(&self, name: &str) -> Option<usize> {
        self.buffers
            .iter()
            .position(|b| matches!(&b.kind, BufferKind::Activation { output: Some(n), .. } if n == name))
    }
}

impl Plan {
    /// Validates a plan read from disk before anything is allocated or run
    /// (see `plan_check`); the error names the program, step or buffer.
    pub fn check(&self) -> Result<(), String> {
        crate::plan_check::check(self)
    }

    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("plans serialize");
        s.push('\n');
        s
    }
}

fn align(n: usize) -> usize {
    n.div_ceil(ARENA_ALIGN) * ARENA_ALIGN
}

/// Lowers one (fused) call graph. Weight and state tables are shared across the
/// programs of a plan, so they are passed in and extended.
pub fn lower(
    name: &str,
    seq_len: usize,
    graph: &Graph,
    weights: &mut Vec<WeightBinding>,
    state: &mut Vec<StateBuffer>,
) -> Result<Program, IrError> {
    let err = |message: String| IrError::Structure {
        graph: graph.name.clone(),
        message,
    };
    let mut buffers: Vec<Buffer> = Vec::new();
    // Buffer of each (node, port).
    let mut buf_of: Vec<Vec<usize>> = vec![Vec::new(); graph.node_count()];
    let mut steps: Vec<Step> = Vec::new();
    let mut cache_version: BTreeMap<usize, Value> = BTreeMap::new();
    let outputs: BTreeMap<(usize, u32), &str> = graph
        .outputs()
        .iter()
        .map(|o| ((o.value.node.index(), o.value.port), o.name.as_str()))
        .collect();

    for (id, node) in graph.nodes() {
        let ty = &node.outputs;
        let new_buf = |buffers: &mut Vec<Buffer>, kind: BufferKind, port: usize| {
            let b = Buffer {
                id: buffers.len(),
                kind,
                dtype: ty[port].dtype,
                shape: ty[port].shape.clone(),
                bytes: ty[port].size_bytes(),
                lifetime: None,
            };
            buffers.push(b);
            buffers.len() - 1
        };
        let operand_values = graph.operands(id);
        let operands: Vec<usize> = operand_values
            .iter()
            .map(|v| buf_of[v.node.index()][v.port as usize])
            .collect();
        // In-place caches: a step may only read the newest version of a cache,
        // or it would see keys written after the value it asked for.
        for (v, &b) in operand_values.iter().zip(&operands) {
            if let Some(newest) = cache_version.get(&b) {
                if newest != v {
                    return Err(err(format!(
                        "`{}` reads an old version of cache `{}` after it was updated in place",
                        node.name,
                        graph.node(v.node).name
                    )));
                }
            }
        }
        match &node.op {
            Op::Weight { key } => {
                let index = match weights.iter().position(|w| &w.key == key) {
                    Some(i) => i,
                    None => {
                        weights.push(WeightBinding {
                            key: key.clone(),
                            dtype: ty[0].dtype,
                            shape: ty[0].shape.clone(),
                            layout: Layout::AsStored,
                        });
                        weights.len() - 1
                    }
                };
                let b = new_buf(&mut buffers, BufferKind::Weight { index }, 0);
                buf_of[id.index()] = vec![b];
            }
            Op::Input {
                role: InputRole::KvCache,
            } => {
                let index = match state.iter().position(|s| s.name == node.name) {
                    Some(i) if state[i].shape == ty[0].shape => i,
                    Some(_) => {
                        return Err(err(format!(
                            "state `{}` has different shapes in different programs",
                            node.name
                        )))
                    }
                    None => {
                        state.push(StateBuffer {
                            name: node.name.clone(),
                            dtype: ty[0].dtype,
                            shape: ty[0].shape.clone(),
                            bytes: ty[0].size_bytes(),
                        });
                        state.len() - 1
                    }
                };
                let b = new_buf(&mut buffers, BufferKind::State { index }, 0);
                buf_of[id.index()] = vec![b];
                cache_version.insert(b, Value::new(id, 0));
            }
            Op::Input { .. } => {
                let b = new_buf(
                    &mut buffers,
                    BufferKind::Input {
                        name: node.name.clone(),
                    },
                    0,
                );
                buf_of[id.index()] = vec![b];
            }
            Op::Reshape { .. } => {
                let b = new_buf(&mut buffers, BufferKind::View { of: operands[0] }, 0);
                buf_of[id.index()] = vec![b];
            }
            op if op.updates_cache() => {
                // In place: the result is the cache buffer itself.
                let cache = operands[0];
                if !matches!(buffers[cache].kind, BufferKind::State { .. }) {
                    return Err(err(format!(
                        "`{}` writes a cache that is not a state buffer",
                        node.name
                    )));
                }
                buf_of[id.index()] = vec![cache];
                cache_version.insert(cache, Value::new(id, 0));
                steps.push(Step {
                    op: op.clone(),
                    name: node.name.clone(),
                    inputs: operands,
                    outputs: vec![cache],
                });
            }
            op => {
                let outs: Vec<usize> = (0..ty.len())
                    .map(|p| {
                        let output = outputs.get(&(id.index(), p as u32)).map(|s| s.to_string());
                        new_buf(&mut buffers, BufferKind::Activation { offset: 0, output }, p)
                    })
                    .collect();
                buf_of[id.index()] = outs.clone();
                steps.push(Step {
                    op: op.clone(),
                    name: node.name.clone(),
                    inputs: operands,
                    outputs: outs,
                });
            }
        }
    }
    for out in graph.outputs() {
        let b = buf_of[out.value.node.index()][out.value.port as usize];
        let storage_kind = &buffers[b].kind;
        if !matches!(storage_kind, BufferKind::Activation { .. } | BufferKind::State { .. }) {
            return Err(err(format!("output `{}` is not computed by a step", out.name)));
        }
    }
    let arena_bytes = allocate(&mut buffers, &steps);
    Ok(Program {
        name: name.to_string(),
        seq_len,
        buffers,
        steps,
        arena_bytes,
    })
}

/// Assigns arena offsets: lifetimes from the step order (views extend their
/// storage's lifetime; outputs live to the end), then first-fit in step order,
/// reusing space of buffers that died before the current step.
fn allocate(buffers: &mut [Buffer], steps: &[Step]) -> usize {
    let life = lifetimes(buffers, steps);
    // (offset, size, last step) of live blocks.
    let mut live: Vec<(usize, usize, usize)> = Vec::new();
    let mut arena = 0usize;
    for (i, s) in steps.iter().enumerate() {
        live.retain(|&(_, _, last)| last >= i);
        for &o in &s.outputs {
            let r = storage_root(buffers, o);
            if !matches!(buffers[r].kind, BufferKind::Activation { .. }) || life[&r].0 != i {
                continue;
            }
            let size = align(buffers[r].bytes.max(1));
            live.sort();
            let mut offset = 0;
            for &(o2, s2, _) in &live {
                if offset + size <= o2 {
                    break;
                }
                offset = offset.max(o2 + s2);
            }
            live.push((offset, size, life[&r].1));
            arena = arena.max(offset + size);
            if let BufferKind::Activation { offset: off, .. } = &mut buffers[r].kind {
                *off = offset;
            }
            buffers[r].lifetime = Some(life[&r]);
        }
    }
    arena
}

/// The buffer owning `id`'s storage (follows views). Views must point to
/// lower ids (as `lower` makes them; `check` enforces it), so this ends.
pub(crate) fn storage_root(buffers: &[Buffer], mut id: usize) -> usize {
    while let BufferKind::View { of } = buffers[id].kind {
        id = of;
    }
    id
}

/// Lifetime `(first write, last read)` of every storage buffer a step writes,
/// from the step order alone: views extend their storage's lifetime, and
/// program outputs live to the end. The allocator assigns offsets from these,
/// and the plan checker recomputes them to verify a loaded plan.
pub(crate) fn lifetimes(buffers: &[Buffer], steps: &[Step]) -> BTreeMap<usize, (usize, usize)> {
    let end = steps.len();
    let mut life: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        for &o in &s.outputs {
            let r = storage_root(buffers, o);
            life.entry(r).or_insert((i, i));
        }
        for &b in &s.inputs {
            let r = storage_root(buffers, b);
            if let Some(l) = life.get_mut(&r) {
                l.1 = l.1.max(i);
            }
        }
    }
    for (&r, l) in life.iter_mut() {
        if matches!(&buffers[r].kind, BufferKind::Activation { output: Some(_), .. }) {
            l.1 = end;
        }
    }
    life
}
