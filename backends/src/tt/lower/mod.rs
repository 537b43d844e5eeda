//! The decode and prefill programs of a plan as lists of device launches: which kernel each step
//! becomes, which prepared weights and per-position inputs it reads, and which device tensor holds
//! each activation.
//!
//! Split by job: `ctx.rs` (lowering state: prepared tensors, kernels, layouts), `program.rs` (one
//! program: backend fusion, device-tensor allocation, launch code), `steps.rs` (one plan step →
//! launches, dense ops), `moe.rs` (the MoE steps), `slice.rs` (slices), `prepared.rs` (the device
//! tensors made from the checkpoint); this file holds the launch records and the driver, which
//! lowers decode, then prefill on the same kernels, prepared tensors and device tensors.

use std::collections::BTreeMap;

use gemma4c_passes::Plan;

use super::kernels::Kernel;
use super::layout;
use super::target::TtTarget;
use super::TtError;

mod attn_kv;
mod attn_rope;
mod ctx;
mod geglu;
mod kv_pair;
mod lookup;
pub mod mesh;
mod moe;
mod ple_gate;
mod prepared;
mod program;
mod qkv;
mod sandwich;
mod scaled_norm;
mod slice;
mod steps;

use ctx::Ctx;
pub use prepared::{Prepared, Source};

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Buf(usize),
    State(usize),
    W(String),
    Mask(usize),
    /// The step's position tensor (see `model.py.tera`: tile 0 the absolute position, tile 1 + i
    /// the slot in ring `caps[i]`).
    Pos,
}

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Kernel {
        kernel: usize,
        args: Vec<Arg>,
    },
    Gather {
        table: String,
        out: usize,
    },
    /// A host line (token-id bookkeeping).
    Host {
        code: String,
    },
    /// TT-NN all-reduce over the chips: `dst` = the sum of every chip's `src` (`mesh.rs`).
    AllReduce {
        src: usize,
        dst: usize,
    },
}

struct Item {
    comment: String,
    call: Call,
    reads: Vec<usize>,
    writes: Vec<usize>,
}

impl Item {
    /// A kernel launch with what it reads and writes (for liveness).
    fn kernel(comment: String, kernel: usize, args: Vec<Arg>, reads: Vec<usize>, writes: Vec<usize>) -> Item {
        Item {
            comment,
            call: Call::Kernel { kernel, args },
            reads,
            writes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub rows: usize,
    pub cols: usize,
    pub comment: String,
    /// Holds a different value on each chip (emulated as one tensor per chip in the simulator).
    pub per_chip: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskUse {
    /// 1 (decode: this position's row) or the prefill chunk's 32 rows.
    pub rows: usize,
    pub capacity: usize,
    /// `None`: causal only (full attention).
    pub window: Option<usize>,
    pub width: usize,
    /// For launches that write this step's K/V row themselves (`attn_kv.rs`): the slot of the
    /// current position is hidden (the launch supplies that row from registers), and the last
    /// tile is the fresh row's own mask (column 0 visible, the rest hidden).
    pub fresh: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub code: String,
    pub comment: String,
    /// Index into `Lowered::kernels` (None for host row fetches and collectives).
    pub kernel: Option<usize>,
    /// A device operation of the decode step (a kernel or a collective), not host work.
    pub device: bool,
}

/// Everything the host program and kernels.py are rendered from.
pub struct Lowered {
    pub kernels: Vec<Kernel>,
    pub prepared: Vec<Prepared>,
    pub masks: Vec<MaskUse>,
    pub caps: Vec<usize>,
    pub states: Vec<Slot>,
    pub slots: Vec<Slot>,
    pub launches: Vec<Launch>,
    pub logits_slot: usize,
    pub max_context: usize,
    /// Prepared weights split over the chips (name -> axis); the rest are replicated.
    pub shards: BTreeMap<String, mesh::ShardDim>,
    /// Bytes of the tensor of each all-reduce of the decode step, in launch order.
    pub all_reduce_bytes: Vec<usize>,
    /// The prefill program (chunks of one tile row), when the plan has one.
    pub prefill: Option<ProgramLaunches>,
}

/// The launches of one program (decode: one token; prefill: one chunk of `rows` tokens, one
/// tile row).
pub struct ProgramLaunches {
    pub launches: Vec<Launch>,
    /// The device tensor holding the logits (`None` for a prefill chunk, which has none).
    pub logits_slot: Option<usize>,
    /// Bytes of the tensor of each all-reduce, in launch order.
    pub all_reduce_bytes: Vec<usize>,
    /// Tokens per call.
    pub rows: usize,
}

/// Tokens of a prefill chunk on Tenstorrent: one tile row. Every row-wise kernel computes whole
/// 32-row tiles already (in decode only row 0 is real), so a chunk of 32 costs a decode step's
/// weight traffic once for 32 tokens; more rows would need every kernel to loop over row tiles
/// and the KV write to span tile rows.
pub const PREFILL_CHUNK: usize = 32;

/// Lowers the plan's decode program for target `t`, and its prefill program when it has one.
pub fn lower(plan: &Plan, t: &TtTarget) -> Result<Lowered, TtError> {
    let p = plan
        .program("decode")
        .ok_or_else(|| TtError::new("the plan has no decode program"))?;
    if p.seq_len != 1 {
        return Err(TtError::new(format!(
            "decode program has seq_len {} (expected 1)",
            p.seq_len
        )));
    }
    // A prefill chunk only fills the KV caches: the last prompt id goes through the decode step,
    // which makes the first choice, so the chunk's logits and every step that only leads to them
    // (the LM head, the final norm, the KV-shared layers, each writing layer's tail) are dropped.
    let pruned = plan.program("prefill").map(program::cache_filling);
    let prefill = pruned.as_ref();
    if let Some(q) = prefill {
        // A chunk is one tile row starting at a multiple of 32 (the host feeds 32 tokens, padded);
        // a shorter program only where the whole context is shorter than a tile row.
        if q.seq_len != PREFILL_CHUNK.min(plan.model.max_context) {
            return Err(TtError::new(format!(
                "the prefill program has chunks of {} tokens; on Tenstorrent a chunk is one tile row \
                 (compile with --prefill-chunk {PREFILL_CHUNK}, the default for tt-* targets)",
                q.seq_len
            )));
        }
    }
    let mut c = Ctx {
        t,
        plan,
        p,
        lay: layout::infer(p)?,
        prefill: false,
        kernels: Vec::new(),
        prepared: Vec::new(),
        ropes: Vec::new(),
        masks: Vec::new(),
        caps: Vec::new(),
        scratch: 0,
        per_chip: Default::default(),
        shards: BTreeMap::new(),
    };
    // Constant tables every program reads.
    c.prep("kv.select".into(), 32 * 32, 32, false, Source::KvSelect)?;
    c.prep("kv.keep".into(), 32 * 32, 32, false, Source::KvKeep)?;

    let mut slots = Vec::new();
    let decode = program::lower_program(&mut c, &mut slots)?;
    // The prefill program shares the kernels (a matmul over one tile row is the same program),
    // prepared tensors, masks, rings and device tensors of decode.
    let prefill = match prefill {
        Some(q) => {
            c = Ctx {
                p: q,
                lay: layout::infer(q)?,
                prefill: true,
                scratch: 0,
                per_chip: Default::default(),
                ..c
            };
            Some(program::lower_program(&mut c, &mut slots)?)
        }
        None => None,
    };

    // KV caches with ring capacities rounded up to whole tile rows (`Ctx::ring`).
    let states: Vec<Slot> = plan
        .state
        .iter()
        .map(|s| {
            let (kv, cap, d) = (s.shape[0], s.shape[1], s.shape[2]);
            Slot {
                rows: kv * cap.div_ceil(32) * 32,
                cols: d.div_ceil(32) * 32,
                comment: s.name.clone(),
                per_chip: false,
            }
        })
        .collect();
    Ok(Lowered {
        logits_slot: decode
            .logits_slot
            .ok_or_else(|| TtError::new("the decode program has no `logits` output"))?,
        kernels: c.kernels,
        prepared: c.prepared,
        masks: c.masks,
        caps: c.caps,
        states,
        slots,
        launches: decode.launches,
        max_context: plan.model.max_context,
        shards: c.shards,
        all_reduce_bytes: decode.all_reduce_bytes,
        prefill,
    })
}
