//! The GPU schedule of a kernel IR kernel: which loops the lanes of a workgroup share.
//!
//! A `for` loop is shared out (`GStmt::Lanes`) when its iterations are independent:
//! - every variable it assigns is private to it (assigned in the loop, read nowhere else in
//!   the kernel), except *accumulators*: variables it only reduces into (`Stmt::Reduce`), never
//!   reads, are f32 and were last set to the reduction's identity (0, −∞) before the loop; the
//!   lanes' partials are then combined (`GStmt::Combine`);
//! - every store's index mentions the loop variable (iterations write distinct elements: the
//!   builders index `base + j`), and a buffer it stores to is read in the loop only at an index
//!   it stores to in the same iteration.
//!
//! Other loops run in step on every lane (`GStmt::Seq`) with their bodies scheduled the same
//! way (the positions loop of attention, the slots of an MoE down projection). Stores outside
//! shared loops are lane 0's (`GStmt::Lane0`), and a barrier follows every statement that
//! stores, so later statements of any lane see the result. Barriers never sit inside a branch
//! (so no lane can miss one): inside an `if`, loops run in step and stores are lane 0's.
//! A kernel where no loop is shared out keeps one thread per row (`Body::Thread`).

use std::collections::BTreeSet;

use super::{Body, GStmt, GpuKernel};
use crate::kernel::{Expr, Kernel, ReduceOp, Scalar, Stmt, Var};

/// Lanes per workgroup for a body whose longest shared loop runs `trip` iterations (when known).
fn threads_for(trip: Option<i64>) -> usize {
    match trip {
        Some(t) if t >= 2048 => 256,
        Some(t) if t >= 512 => 128,
        _ => 64,
    }
}

/// Threads per workgroup of one-thread-per-row kernels.
pub const ROW_THREADS: usize = 64;

/// The GPU schedule of `k`.
pub fn derive(k: &Kernel) -> GpuKernel {
    let cx = Cx { k };
    let body = cx.list(&k.body, false);
    let mut trip = None;
    if !shares(&body, &mut trip) {
        return GpuKernel {
            kernel: k.clone(),
            threads: ROW_THREADS,
            body: Body::Thread,
            shared: Vec::new(),
        };
    }
    let mut body = body;
    // A barrier at the very end orders nothing.
    while body.last() == Some(&GStmt::Barrier) {
        body.pop();
    }
    GpuKernel {
        kernel: k.clone(),
        threads: threads_for(trip),
        body: Body::Workgroup(body),
        shared: Vec::new(),
    }
}

/// Whether any loop is shared out; `trip` collects the longest constant trip count.
fn shares(body: &[GStmt], trip: &mut Option<i64>) -> bool {
    let mut any = false;
    for g in body {
        match g {
            GStmt::Lanes { start, end, .. } => {
                any = true;
                if let (Expr::I64(a), Expr::I64(b)) = (start, end) {
                    *trip = Some(trip.unwrap_or(0).max(b - a));
                } else {
                    // Bounds known only at run time (positions): assume long.
                    *trip = Some(trip.unwrap_or(0).max(512));
                }
            }
            GStmt::Seq { body, .. } => any |= shares(body, trip),
            GStmt::If { then, els, .. } => {
                any |= shares(then, trip);
                any |= shares(els, trip);
            }
            _ => {}
        }
    }
    any
}

struct Cx<'k> {
    k: &'k Kernel,
}

impl Cx<'_> {
    /// Schedules a statement list; `in_if`: inside a branch (no barriers, no sharing).
    fn list(&self, stmts: &[Stmt], in_if: bool) -> Vec<GStmt> {
        let mut out = Vec::new();
        for (i, s) in stmts.iter().enumerate() {
            match s {
                Stmt::Set(..) | Stmt::Reduce(..) => out.push(GStmt::All(s.clone())),
                Stmt::TileStore { .. } => unreachable!("{}", crate::kernel::TILES_CPU_ONLY),
                Stmt::DotBf16 { .. } => unreachable!("{}", crate::kernel::DOT_BF16_CPU_ONLY),
                Stmt::Store { .. } => {
                    match out.last_mut() {
                        Some(GStmt::Lane0(v)) => v.push(s.clone()),
                        _ => out.push(GStmt::Lane0(vec![s.clone()])),
                    }
                    // The barrier comes after the run of stores.
                    let next_is_store = matches!(stmts.get(i + 1), Some(Stmt::Store { .. }));
                    if !in_if && !next_is_store {
                        out.push(GStmt::Barrier);
                    }
                }
                Stmt::For { var, start, end, body } => {
                    let accs = if in_if { None } else { self.shareable(&stmts[..i], s) };
                    match accs {
                        Some(accs) => {
                            out.push(GStmt::Lanes {
                                var: *var,
                                start: start.clone(),
                                end: end.clone(),
                                body: body.clone(),
                            });
                            if !accs.is_empty() {
                                out.push(GStmt::Combine(accs));
                            }
                            if stores(body) {
                                out.push(GStmt::Barrier);
                            }
                        }
                        None => out.push(GStmt::Seq {
                            var: *var,
                            start: start.clone(),
                            end: end.clone(),
                            body: self.list(body, in_if),
                        }),
                    }
                }
                Stmt::If { cond, then, els } => {
                    out.push(GStmt::If {
                        cond: cond.clone(),
                        then: self.list(then, true),
                        els: self.list(els, true),
                    });
                    if !in_if && (stores(then) || stores(els)) {
                        out.push(GStmt::Barrier);
                    }
                }
            }
        }
        out
    }

    /// The accumulators to combine if the loop `l` (preceded by `before` in its list) can be
    /// shared across lanes; None if it cannot.
    fn shareable(&self, before: &[Stmt], l: &Stmt) -> Option<Vec<(Var, ReduceOp)>> {
        let Stmt::For { var, body, .. } = l else { return None };
        let mut assigned = BTreeSet::new();
        assigned.insert(var.0);
        let mut reduced = Vec::new();
        walk_writes(body, &mut assigned, &mut reduced);
        // Private variables are read nowhere outside the loop.
        for v in &assigned {
            if reads_outside(&self.k.body, l, Var(*v)) {
                return None;
            }
        }
        let mut accs: Vec<(Var, ReduceOp)> = Vec::new();
        for (v, op) in reduced {
            if assigned.contains(&v.0) {
                continue;
            }
            if let Some(a) = accs.iter().find(|a| a.0 == v) {
                if a.1 != op {
                    return None;
                }
                continue;
            }
            if self.k.local(v).ty != Scalar::F32 {
                return None;
            }
            // Accumulators are only reduced into, and start from the identity.
            if reads_in(body, v) || !starts_at_identity(before, v, op) {
                return None;
            }
            accs.push((v, op));
        }
        // Stores: to distinct elements per iteration, read back only at the same index.
        let mut st = Vec::new();
        collect_stores(body, &mut st);
        for (param, index) in &st {
            if !mentions(index, *var) {
                return None;
            }
            let mut loads = Vec::new();
            loads_of(body, *param, &mut loads);
            if loads.iter().any(|ix| !st.iter().any(|(p, i)| p == param && i == ix)) {
                return None;
            }
        }
        Some(accs)
    }
}

fn stores(body: &[Stmt]) -> bool {
    let mut st = Vec::new();
    collect_stores(body, &mut st);
    !st.is_empty()
}

/// Variables assigned (`Set`, loop variables) and reduced into in `body`.
fn walk_writes(body: &[Stmt], assigned: &mut BTreeSet<u32>, reduced: &mut Vec<(Var, ReduceOp)>) {
    for s in body {
        match s {
            Stmt::Set(v, _) => {
                assigned.insert(v.0);
            }
            Stmt::Reduce(v, op, _) => reduced.push((*v, *op)),
            Stmt::Store { .. } | Stmt::TileStore { .. } => {}
            Stmt::DotBf16 { accs, .. } => reduced.extend(accs.iter().flatten().map(|&v| (v, ReduceOp::Add))),
            Stmt::For { var, body, .. } => {
                assigned.insert(var.0);
                walk_writes(body, assigned, reduced);
            }
            Stmt::If { then, els, .. } => {
                walk_writes(then, assigned, reduced);
                walk_writes(els, assigned, reduced);
            }
        }
    }
}

/// Whether the last write of `v` in `before` is `v = identity of op`.
fn starts_at_identity(before: &[Stmt], v: Var, op: ReduceOp) -> bool {
    for s in before.iter().rev() {
        if let Stmt::Set(w, e) = s {
            if *w == v {
                return match (op, e) {
                    (ReduceOp::Add, Expr::F32(x)) => *x == 0.0,
                    (ReduceOp::Max, Expr::F32(x)) => *x == f32::NEG_INFINITY,
                    _ => false,
                };
            }
        }
        let mut assigned = BTreeSet::new();
        let mut reduced = Vec::new();
        walk_writes(std::slice::from_ref(s), &mut assigned, &mut reduced);
        if assigned.contains(&v.0) || reduced.iter().any(|r| r.0 == v) {
            return false;
        }
    }
    false
}

fn collect_stores(body: &[Stmt], out: &mut Vec<(usize, Expr)>) {
    for s in body {
        match s {
            Stmt::Store { param, index, .. } => out.push((*param, index.clone())),
            Stmt::For { body, .. } => collect_stores(body, out),
            Stmt::If { then, els, .. } => {
                collect_stores(then, out);
                collect_stores(els, out);
            }
            Stmt::Set(..) | Stmt::Reduce(..) | Stmt::TileStore { .. } | Stmt::DotBf16 { .. } => {}
        }
    }
}

/// Every expression of a statement list, in order.
fn exprs<'a>(body: &'a [Stmt], out: &mut Vec<&'a Expr>) {
    for s in body {
        match s {
            Stmt::Set(_, e) | Stmt::Reduce(_, _, e) => out.push(e),
            Stmt::Store { index, value, .. } | Stmt::TileStore { index, value, .. } => {
                out.push(index);
                out.push(value);
            }
            Stmt::For { start, end, body, .. } => {
                out.push(start);
                out.push(end);
                exprs(body, out);
            }
            Stmt::If { cond, then, els } => {
                out.push(cond);
                exprs(then, out);
                exprs(els, out);
            }
            Stmt::DotBf16 { xs, ws, .. } => out.extend(xs.iter().chain(ws)),
        }
    }
}

fn mentions(e: &Expr, v: Var) -> bool {
    match e {
        Expr::Var(w) => *w == v,
        Expr::F32(_) | Expr::I64(_) | Expr::Bool(_) => false,
        Expr::Load { index, .. }
        | Expr::Table { index, .. }
        | Expr::Tile { index, .. }
        | Expr::Un(_, index)
        | Expr::Exact(index) => mentions(index, v),
        Expr::Bin(_, a, b) | Expr::Cmp(_, a, b) => mentions(a, v) || mentions(b, v),
        Expr::Select(c, a, b) => mentions(c, v) || mentions(a, v) || mentions(b, v),
    }
}

fn reads_in(body: &[Stmt], v: Var) -> bool {
    let mut es = Vec::new();
    exprs(body, &mut es);
    es.iter().any(|e| mentions(e, v))
}

/// Whether `v` is read anywhere in `body` outside the statement `skip` (compared by address).
fn reads_outside(body: &[Stmt], skip: &Stmt, v: Var) -> bool {
    body.iter().any(|s| {
        if std::ptr::eq(s, skip) {
            return false;
        }
        match s {
            Stmt::Set(_, e) | Stmt::Reduce(_, _, e) => mentions(e, v),
            Stmt::Store { index, value, .. } | Stmt::TileStore { index, value, .. } => {
                mentions(index, v) || mentions(value, v)
            }
            Stmt::For { start, end, body, .. } => {
                mentions(start, v) || mentions(end, v) || reads_outside(body, skip, v)
            }
            Stmt::If { cond, then, els } => {
                mentions(cond, v) || reads_outside(then, skip, v) || reads_outside(els, skip, v)
            }
            Stmt::DotBf16 { xs, ws, accs, .. } => {
                xs.iter().chain(ws).any(|e| mentions(e, v)) || accs.iter().flatten().any(|a| *a == v)
            }
        }
    })
}

/// Indices at which `param` is loaded in `body`.
fn loads_of(body: &[Stmt], param: usize, out: &mut Vec<Expr>) {
    fn expr(e: &Expr, param: usize, out: &mut Vec<Expr>) {
        match e {
            Expr::Load { param: p, index } => {
                if *p == param {
                    out.push((**index).clone());
                }
                expr(index, param, out);
            }
            Expr::F32(_) | Expr::I64(_) | Expr::Bool(_) | Expr::Var(_) => {}
            Expr::Table { index, .. } | Expr::Tile { index, .. } | Expr::Un(_, index) | Expr::Exact(index) => {
                expr(index, param, out)
            }
            Expr::Bin(_, a, b) | Expr::Cmp(_, a, b) => {
                expr(a, param, out);
                expr(b, param, out);
            }
            Expr::Select(c, a, b) => {
                expr(c, param, out);
                expr(a, param, out);
                expr(b, param, out);
            }
        }
    }
    let mut es = Vec::new();
    exprs(body, &mut es);
    for e in es {
        expr(e, param, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{ops, Elem};

    #[test]
    fn a_decode_matvec_splits_k_and_combines_its_accumulators() {
        let g = derive(&ops::matmul(1, 8, 4096, Elem::BF16, Some(30.0)));
        let Body::Workgroup(b) = &g.body else { panic!("{g:?}") };
        assert!(b.iter().any(|s| matches!(s, GStmt::Lanes { .. })));
        assert!(b.iter().any(|s| matches!(s, GStmt::Combine(v) if v.len() == 1)));
        // The soft-capped store is lane 0's, after the combine.
        assert!(matches!(b.last(), Some(GStmt::Lane0(_))), "{b:?}");
        assert_eq!(g.threads, 256);
        assert!(g.describe().contains("loops over k split"), "{}", g.describe());
    }

    #[test]
    fn norms_split_both_passes_and_barrier_between_them() {
        let g = derive(&ops::add_rms_norm(1, 256, 256, [Elem::F32; 3], 1e-6));
        let Body::Workgroup(b) = &g.body else { panic!() };
        let lanes = b.iter().filter(|s| matches!(s, GStmt::Lanes { .. })).count();
        assert_eq!(lanes, 2, "{b:?}");
        let first_lanes = b.iter().position(|s| matches!(s, GStmt::Lanes { .. })).unwrap();
        let GStmt::Combine(accs) = &b[first_lanes + 1] else {
            panic!("{b:?}")
        };
        assert_eq!(accs.len(), 1);
        assert_eq!(
            (g.kernel.local(accs[0].0).name.as_str(), accs[0].1),
            ("ss", ReduceOp::Add)
        );
        assert_eq!(b[first_lanes + 2], GStmt::Barrier);
    }

    #[test]
    fn attention_of_the_cpu_shares_no_store_loop_over_positions() {
        // The two-pass CPU attention accumulates into `out` across positions: the positions
        // loop must not be shared out (its stores do not mention p).
        let g = derive(&ops::attention(1, 4, 2, 8, 16, None, 1.0));
        fn no_p_lanes(k: &Kernel, s: &[GStmt]) -> bool {
            s.iter().all(|g| match g {
                GStmt::Lanes { var, body, .. } => k.local(*var).name != "p" || !stores(body),
                GStmt::Seq { body, .. } => no_p_lanes(k, body),
                _ => true,
            })
        }
        if let Body::Workgroup(b) = &g.body {
            assert!(no_p_lanes(&g.kernel, b));
        }
    }

    #[test]
    fn replace_ids_keeps_one_thread_per_row() {
        let g = derive(&ops::replace_ids(4, &[5, 6], 0));
        assert_eq!(g.body, Body::Thread);
        assert_eq!(g.workgroups(), 1);
    }
}
