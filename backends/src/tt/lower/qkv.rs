//! Backend fusion of projections that read the same input (a layer's q, k and v projections):
//! one launch of a matmul over the weights side by side, whose writer sends each output block to
//! its own tensor. Saves two launches per layer that computes its own K/V.

use std::collections::BTreeMap;

use gemma4c_ir::Op;
use gemma4c_passes::plan::Program;

use super::ctx::{transposed, transposed_source, Ctx};
use super::lookup::Lookup;
use super::sandwich::Prologue;
use super::{Arg, Item, Source};
use crate::tt::kernels::{self, SandwichBody};
use crate::tt::TtError;

/// Groups of at least two matmul steps with the same input, keyed by the first step (where the
/// fused launch is emitted); steps already fused elsewhere (`absorbed`) are left alone.
pub(super) fn find(l: &Lookup, absorbed: &[bool]) -> BTreeMap<usize, Vec<usize>> {
    let (c, p) = (l.c, l.p);
    let mut by_input: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, s) in p.steps.iter().enumerate() {
        let fusable = matches!(s.op, Op::MatMul)
            && !absorbed[i]
            && c.weight(s.inputs[1]).is_some()
            && !l.is_output(s.outputs[0])
            && c.lay(s.inputs[0]).is_ok()
            && c.lay(s.outputs[0]).is_ok();
        if fusable {
            by_input.entry(l.root(s.inputs[0])).or_default().push(i);
        }
    }
    let format = |i: usize| {
        let s = &p.steps[i];
        let (lx, lo) = (c.lay(s.inputs[0]).ok()?, c.lay(s.outputs[0]).ok()?);
        let (name, rows, cols, source) = transposed_source(c, s, s.inputs[1], lx, lo).ok()?;
        let prep = super::Prepared {
            name,
            rows,
            cols,
            host: false,
            source,
        };
        Some(prep.format(c.t))
    };
    by_input
        .into_values()
        .filter(|g| g.len() > 1)
        .filter(|g| {
            let f0 = format(g[0]);
            f0.is_some() && g.iter().all(|&i| format(i) == f0)
        })
        .map(|g| (g[0], g))
        .collect()
}

/// The fused launch of the matmul steps `group` (with `pro`, the sandwich norm that makes their
/// input in the same launch). A group of one step is a plain matmul (only with a prologue).
pub(super) fn lower(
    c: &mut Ctx,
    p: &Program,
    group: &[usize],
    pro: Option<&Prologue>,
    items: &mut Vec<Item>,
) -> Result<(), TtError> {
    let x = p.steps[group[0]].inputs[0];
    let lx = c.lay(x)?;
    let mut parts = Vec::new();
    let mut names = Vec::new();
    let mut outs = Vec::new();
    let mut tiles = Vec::new();
    for &i in group {
        let s = &p.steps[i];
        let lo = c.lay(s.outputs[0])?;
        let (name, _, cols, source) = transposed_source(c, s, s.inputs[1], lx, lo)?;
        parts.push((cols, source));
        names.push(name);
        outs.push(s.outputs[0]);
        tiles.push(lo.col_tiles());
    }
    let w = if group.len() == 1 {
        let s = &p.steps[group[0]];
        transposed(c, s, s.inputs[1], lx, c.lay(s.outputs[0])?)?
    } else {
        let cols: usize = parts.iter().map(|(n, _)| n).sum();
        c.prep(
            names.join("+"),
            lx.col_tiles() * 32,
            cols,
            false,
            Source::Concat { parts },
        )?
    };
    let mut comment = group
        .iter()
        .map(|&i| format!("{}: {}", p.steps[i].name, p.steps[i].op))
        .collect::<Vec<_>>()
        .join(" + ");
    let (k, mut args, reads, mut writes) = match pro {
        Some(pro) => {
            let k = kernels::sandwich_matmul(
                c.t,
                "sandwich norm, then the projections of its result in one launch: [y0 | y1 | ...] = x @ [W0 | W1 | ...]",
                pro.spec(c)?,
                &SandwichBody::Matmul { parts: tiles },
            )?;
            comment = format!("{} + {comment}", pro.comment(c));
            (k, pro.args(c)?, vec![pro.res, pro.h], vec![pro.s])
        }
        None => {
            let k = kernels::split_matmul(
                c.t,
                "projections of one input in one launch: [y0 | y1 | ...] = x @ [W0 | W1 | ...]",
                lx.row_tiles(),
                lx.col_tiles(),
                &tiles,
            )?;
            (k, vec![Arg::Buf(x)], vec![x], vec![])
        }
    };
    let k = c.weight_kernel(k, &w)?;
    args.push(Arg::W(w));
    if let Some(pro) = pro {
        args.push(Arg::Buf(pro.s));
    }
    args.extend(outs.iter().map(|&o| Arg::Buf(o)));
    writes.extend(outs);
    items.push(Item::kernel(comment, k, args, reads, writes));
    Ok(())
}
