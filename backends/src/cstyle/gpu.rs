//! GPU kernels (`crate::gpu`) through the C-style printer: the statements of a kernel are the
//! kernel IR's (printed by `body.rs`), the GPU constructs — lane-split loops, cross-lane
//! combines through subgroup reductions and shared memory, lane-0 stores, barriers — are
//! printed here once for every dialect from the few words a [`GpuDialect`] supplies.

use std::fmt::Write;

use super::body::FnPrinter;
use super::{f32_lit, table_name, Dialect, MAX_I64, MIN_I64};
use crate::gpu::{Body, GStmt, GpuKernel};
use crate::kernel::{ReduceOp, Scalar, Var};

/// What a GPU language adds to a [`Dialect`].
pub trait GpuDialect: Dialect {
    /// Text after the dialect's prelude that GPU modules need (subgroup reduction helpers).
    fn gpu_prelude(&self) -> &str {
        ""
    }
    /// Everything from the kernel's buffer declarations to its opening `{`.
    fn gpu_signature(&self, k: &GpuKernel, params: &[String]) -> String;
    /// Statements at the top of the body: define `row` (and `lane`), leave when `row` is past
    /// the grid, declare the shared-memory partials (`combine_width() * threads` floats).
    fn gpu_prologue(&self, k: &GpuKernel) -> Vec<String>;
    /// The lane index, in the dialect's integer type.
    fn lane(&self) -> &str {
        "lane"
    }
    /// A barrier of the workgroup over device and shared memory.
    fn barrier(&self) -> &str;
    /// `v` reduced over the lanes of its subgroup (warp, simdgroup).
    fn subgroup_reduce(&self, op: ReduceOp, v: &str) -> String;
    /// True in the first lane of each subgroup.
    fn first_in_subgroup(&self) -> &str;
    /// True in lane 0 of the workgroup.
    fn is_lane0(&self) -> &str;
    /// The subgroup's index in the workgroup and the number of subgroups, in the integer type.
    fn subgroup_id(&self) -> &str;
    fn num_subgroups(&self) -> &str;
    /// The name of the kernel's shared-memory partials array.
    fn shared(&self, kernel: &str) -> String {
        let _ = kernel;
        "g4_partials".into()
    }
    /// The name of a shared-memory tile (`GpuKernel::shared`) of the kernel.
    fn tile(&self, kernel: &str, tile: &str) -> String {
        let _ = kernel;
        format!("g4_{tile}")
    }
}

/// Prints GPU kernels (in the order given) as one module: `header` as comment lines, the
/// dialect's prelude, helpers, constant tables, then the kernels.
pub fn print_gpu_module<'a>(
    d: &dyn GpuDialect,
    header: &str,
    kernels: impl IntoIterator<Item = &'a GpuKernel>,
) -> String {
    let mut tables = String::new();
    let mut bodies = String::new();
    let mut count = 0;
    for g in kernels {
        count += 1;
        let k = &g.kernel;
        for t in &k.tables {
            let values: Vec<String> = t.values.iter().map(|&v| f32_lit(d, v)).collect();
            let _ = writeln!(tables, "{}", d.table(&table_name(k, &t.name), &values));
        }
        bodies.push('\n');
        bodies.push_str(&print_kernel(d, g));
    }
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "// {line}");
    }
    let _ = writeln!(out, "// {count} kernels\n");
    out.push_str(d.prelude());
    out.push_str(d.gpu_prelude());
    for (f, op) in [(MIN_I64, '<'), (MAX_I64, '>')] {
        if bodies.contains(&format!("{f}(")) {
            let _ = writeln!(out, "{}", d.int_helper(f, op));
        }
    }
    if !tables.is_empty() {
        out.push('\n');
        out.push_str(&tables);
    }
    out.push_str(&bodies);
    out
}

/// Name of the loop counter of combines.
const FOLD: &str = "g4_s";

fn print_kernel(d: &dyn GpuDialect, g: &GpuKernel) -> String {
    let k = &g.kernel;
    let mut p = FnPrinter::new(d, k);
    let params: Vec<String> = k
        .params
        .iter()
        .enumerate()
        .map(|(i, prm)| d.param(i, prm.elem, prm.access, &p.param_name(i)))
        .collect();
    let _ = writeln!(p.out, "// {}", g.describe());
    let _ = writeln!(p.out, "// {}", k.params_summary());
    let _ = writeln!(p.out, "{}", d.gpu_signature(g, &params));
    for l in d.gpu_prologue(g) {
        p.line(&l);
    }
    p.declare_locals();
    match &g.body {
        Body::Thread => p.stmts(&k.body),
        Body::Workgroup(body) => {
            if g.combine_width() > 0 {
                let decl = d.declare(Scalar::I64, FOLD, &d.int_lit(0));
                p.line(&decl);
            }
            gstmts(d, g, &mut p, body);
        }
    }
    p.out.push_str("}\n");
    p.out
}

fn gstmts(d: &dyn GpuDialect, g: &GpuKernel, p: &mut FnPrinter, body: &[GStmt]) {
    for s in body {
        match s {
            GStmt::All(st) => p.stmt(st),
            GStmt::Seq { var, start, end, body } => p.for_loop(*var, start, end, None, |p| gstmts(d, g, p, body)),
            GStmt::If { cond, then, els } => {
                let c = p.expr(cond).0;
                p.line(&format!("if ({c}) {{"));
                p.depth += 1;
                gstmts(d, g, p, then);
                p.depth -= 1;
                if els.is_empty() {
                    p.line("}");
                } else {
                    p.line("} else {");
                    p.depth += 1;
                    gstmts(d, g, p, els);
                    p.depth -= 1;
                    p.line("}");
                }
            }
            GStmt::Lanes { var, start, end, body } => {
                let step = d.int_lit(g.threads as i64);
                p.for_loop(*var, start, end, Some((d.lane(), &step)), |p| p.stmts(body));
            }
            GStmt::Combine(vars) => combine(d, g, p, vars),
            GStmt::Lane0(stmts) => {
                p.line(&format!("if ({}) {{", d.is_lane0()));
                p.depth += 1;
                p.stmts(stmts);
                p.depth -= 1;
                p.line("}");
            }
            GStmt::Barrier => p.line(d.barrier()),
            GStmt::LaneIndex(v) => {
                let name = p.local(*v);
                p.line(&format!("{name} = {};", d.lane()));
            }
            GStmt::Own(stmts) => p.stmts(stmts),
            GStmt::ToShared { tile, index, value } => {
                let t = d.tile(&g.kernel.name, &g.shared[*tile].name);
                let (i, v) = (p.expr(index).0, p.expr(value).0);
                p.line(&format!("{t}[{i}] = {v};"));
            }
            GStmt::FromShared { var, tile, index } => {
                let t = d.tile(&g.kernel.name, &g.shared[*tile].name);
                let (name, i) = (p.local(*var), p.expr(index).0);
                p.line(&format!("{name} = {t}[{i}];"));
            }
        }
    }
}

/// Each lane's partials → a subgroup reduction → one partial per subgroup in shared memory →
/// every lane folds the subgroups' partials in order (so all lanes hold the same total).
fn combine(d: &dyn GpuDialect, g: &GpuKernel, p: &mut FnPrinter, vars: &[(Var, ReduceOp)]) {
    let sh = d.shared(&g.kernel.name);
    let names: Vec<String> = vars.iter().map(|(v, _)| p.local(*v)).collect();
    p.line(&format!("// combine {} across lanes", names.join(", ")));
    for ((_, op), n) in vars.iter().zip(&names) {
        let r = d.subgroup_reduce(*op, n);
        p.line(&format!("{n} = {r};"));
    }
    p.line(&format!("if ({}) {{", d.first_in_subgroup()));
    p.depth += 1;
    for (i, n) in names.iter().enumerate() {
        let base = d.int_lit((i * g.threads) as i64);
        p.line(&format!("{sh}[{base} + {}] = {n};", d.subgroup_id()));
    }
    p.depth -= 1;
    p.line("}");
    p.line(d.barrier());
    for ((_, op), n) in vars.iter().zip(&names) {
        let id = match op {
            ReduceOp::Add => f32_lit(d, 0.0),
            ReduceOp::Max => f32_lit(d, f32::NEG_INFINITY),
        };
        p.line(&format!("{n} = {id};"));
    }
    p.loops += 1;
    let end_name = format!("end{}", p.loops);
    p.line("{");
    p.depth += 1;
    let decl = d.declare_const_int(&end_name, d.num_subgroups());
    p.line(&decl);
    let header = d.for_header(FOLD, &d.int_lit(0), &end_name, None);
    p.line(&header);
    p.depth += 1;
    for (i, ((_, op), n)) in vars.iter().zip(&names).enumerate() {
        let base = d.int_lit((i * g.threads) as i64);
        let part = format!("{sh}[{base} + {FOLD}]");
        match op {
            ReduceOp::Add => p.line(&format!("{n} = {n} + {part};")),
            ReduceOp::Max => p.line(&format!("{n} = {}({n}, {part});", d.min_max_f32().1)),
        }
    }
    p.depth -= 1;
    p.line("}");
    p.depth -= 1;
    p.line("}");
    // The partials are reused by the next combine.
    p.line(d.barrier());
}
