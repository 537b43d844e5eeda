//! The GPU execution model shared by every GPU printer (WGSL, Metal, CUDA).
//!
//! A launch is a 1-D grid of *workgroups* (CUDA blocks, Metal threadgroups) of `threads` lanes.
//! A kernel has one of two schedules:
//!
//! - [`Body::Workgroup`]: one workgroup per grid row; the lanes cooperate on the row. The body
//!   is a tree of [`GStmt`]: statements every lane runs with the same values (uniform code),
//!   loops whose iterations are dealt to the lanes (`Lanes`: lane `l` runs `start + l`,
//!   `start + l + threads`, ... so neighbouring lanes read neighbouring elements: coalesced),
//!   cross-lane reductions of the lanes' partial accumulators (`Combine`: a subgroup reduction
//!   — warp shuffles, `simd_sum`, `subgroupAdd` — then one partial per subgroup through shared
//!   memory), stores by lane 0 alone, and barriers.
//! - [`Body::Thread`]: the kernel IR body as it is, one thread per grid row (the fallback for
//!   kernels with no loop to share out).
//!
//! [`schedule::derive`] derives the schedule from a kernel of the target-neutral kernel IR
//! (`crate::kernel`), so every op family gets one without a second description of its
//! arithmetic: matvec rows split their K loop across lanes (epilogue by lane 0 after the
//! combine), norms split both passes of their row, RoPE/KV writes and embedding gathers split
//! their element loops. Decode attention uses a GPU form of its own ([`attention`]: online
//! softmax over the positions up to the current one, lanes over the head dimension).
//! [`lower::lower_plan`] turns a plan into these kernels and their launches; every GPU printer
//! prints the same [`GpuPlan`].

pub mod argmax;
pub mod attention;
pub mod lower;
pub mod matmul;
pub mod schedule;

pub use lower::{lower_plan, ArgmaxLaunch, GpuPlan};

use crate::kernel::{Expr, Kernel, ReduceOp, Stmt, Var};

/// One statement of a workgroup-per-row body.
#[derive(Debug, Clone, PartialEq)]
pub enum GStmt {
    /// A kernel IR statement (no stores) every lane runs, computing the same values.
    All(Stmt),
    /// A loop every lane runs in step (uniform bounds); its body may share out inner loops.
    Seq {
        var: Var,
        start: Expr,
        end: Expr,
        body: Vec<GStmt>,
    },
    /// A uniform branch (every lane takes the same side). No barriers inside.
    If {
        cond: Expr,
        then: Vec<GStmt>,
        els: Vec<GStmt>,
    },
    /// `for var in start..end` with the iterations dealt to the lanes round-robin. Iterations
    /// are independent: they write disjoint elements and reduce into `Combine`d accumulators.
    Lanes {
        var: Var,
        start: Expr,
        end: Expr,
        body: Vec<Stmt>,
    },
    /// Every lane holds a partial value of each accumulator (the identity where it had no
    /// iteration); afterwards every lane holds the total. Contains barriers.
    Combine(Vec<(Var, ReduceOp)>),
    /// Statements (stores of the row's results) only lane 0 runs.
    Lane0(Vec<Stmt>),
    /// All lanes wait; device and shared memory writes before it are visible after it.
    Barrier,
    /// `var = ` this lane's index in the workgroup (`0..threads`).
    LaneIndex(Var),
    /// Statements every lane runs with values of its own (lane-dependent); stores in them go
    /// to elements no other lane stores. No barriers inside.
    Own(Vec<Stmt>),
    /// This lane writes `shared[tile][index] = value` (f32).
    ToShared { tile: usize, index: Expr, value: Expr },
    /// `var = shared[tile][index]` (f32), in this lane.
    FromShared { var: Var, tile: usize, index: Expr },
}

/// An f32 array in workgroup (shared, threadgroup) memory, one per workgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedTile {
    pub name: String,
    pub len: usize,
}

/// How a kernel's grid rows map to GPU threads.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// One thread per grid row, running `Kernel::body`.
    Thread,
    /// One workgroup per grid row.
    Workgroup(Vec<GStmt>),
}

/// A kernel with its GPU schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuKernel {
    /// Name, parameters, locals, tables, grid rows (and the sequential body `Body::Thread` runs).
    pub kernel: Kernel,
    /// Lanes per workgroup.
    pub threads: usize,
    pub body: Body,
    /// Shared-memory arrays of the body besides the combine partials (tiles of a tiled form).
    pub shared: Vec<SharedTile>,
}

impl GpuKernel {
    /// Workgroups a launch needs.
    pub fn workgroups(&self) -> usize {
        match self.body {
            Body::Thread => self.kernel.rows.div_ceil(self.threads),
            Body::Workgroup(_) => self.kernel.rows,
        }
    }

    /// Most accumulators one `Combine` reduces (the shared-memory partials are
    /// `combine_width() * threads` floats).
    pub fn combine_width(&self) -> usize {
        fn walk(s: &[GStmt]) -> usize {
            s.iter()
                .map(|g| match g {
                    GStmt::Combine(v) => v.len(),
                    GStmt::Seq { body, .. } => walk(body),
                    GStmt::If { then, els, .. } => walk(then).max(walk(els)),
                    _ => 0,
                })
                .max()
                .unwrap_or(0)
        }
        match &self.body {
            Body::Thread => 0,
            Body::Workgroup(b) => walk(b),
        }
    }

    /// One line for the printed source: how the grid maps to threads.
    pub fn describe(&self) -> String {
        match &self.body {
            Body::Thread => format!(
                "{} rows, one thread per row ({} threads per workgroup)",
                self.kernel.rows, self.threads
            ),
            Body::Workgroup(_) if !self.shared.is_empty() => {
                let tiles: Vec<String> = self.shared.iter().map(|t| format!("{}[{}]", t.name, t.len)).collect();
                format!(
                    "{} workgroups of {} lanes, one output tile each; shared-memory tiles {}",
                    self.kernel.rows,
                    self.threads,
                    tiles.join(", ")
                )
            }
            Body::Workgroup(b) => {
                let mut loops = Vec::new();
                fn walk(k: &Kernel, s: &[GStmt], out: &mut Vec<String>) {
                    for g in s {
                        match g {
                            GStmt::Lanes { var, .. } => out.push(k.local(*var).name.clone()),
                            GStmt::Seq { body, .. } => walk(k, body, out),
                            GStmt::If { then, els, .. } => {
                                walk(k, then, out);
                                walk(k, els, out);
                            }
                            _ => {}
                        }
                    }
                }
                walk(&self.kernel, b, &mut loops);
                format!(
                    "{} rows, one workgroup of {} lanes per row; loops over {} split across lanes",
                    self.kernel.rows,
                    self.threads,
                    loops.join(", ")
                )
            }
        }
    }
}
