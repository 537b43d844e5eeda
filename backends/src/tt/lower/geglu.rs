//! Backend fusion of the MLP's gate/up: `gelu_mul` fed by two matmuls of the same input whose
//! results nothing else reads becomes one `geglu_matmul` launch (both weights streamed, the GELU
//! product in the epilogue; neither projection is written).

use std::collections::BTreeMap;

use gemma4c_ir::Op;

use super::ctx::{transposed, Ctx};
use super::lookup::Lookup;
use super::sandwich::Prologue;
use super::{Arg, Item};
use crate::tt::kernels::{self, Kernel, SandwichBody};
use crate::tt::TtError;

/// The steps of one fused MLP input: the gate and up matmuls feeding the `gelu_mul`.
#[derive(Debug, Clone, Copy)]
pub(super) struct GeGlu {
    pub(super) gate: usize,
    pub(super) up: usize,
    pub(super) gelu_mul: usize,
}

/// Groups keyed by their gelu_mul step.
pub(super) fn find(l: &Lookup) -> BTreeMap<usize, GeGlu> {
    let (c, p) = (l.c, l.p);
    let mut out = BTreeMap::new();
    for (i, s) in p.steps.iter().enumerate() {
        if !matches!(s.op, Op::GeluMul) {
            continue;
        }
        let (g, u) = (l.root(s.inputs[0]), l.root(s.inputs[1]));
        let (Some(pg), Some(pu)) = (l.producer(g), l.producer(u)) else {
            continue;
        };
        let (sg, su) = (&p.steps[pg], &p.steps[pu]);
        let same = |a: usize, b: usize| matches!((c.lay(a), c.lay(b)), (Ok(x), Ok(y)) if x == y);
        let fusable = pg != pu
            && matches!(sg.op, Op::MatMul)
            && matches!(su.op, Op::MatMul)
            && l.root(sg.inputs[0]) == l.root(su.inputs[0])
            && l.once(g)
            && l.once(u)
            && same(g, u)
            && same(g, s.outputs[0])
            && c.lay(g).is_ok_and(|l| l.groups == 1);
        if fusable {
            out.insert(
                i,
                GeGlu {
                    gate: pg,
                    up: pu,
                    gelu_mul: i,
                },
            );
        }
    }
    out
}

/// The geglu_matmul launch of `g`.
/// With `pro`, the sandwich norm that makes x is computed in the same launch.
pub(super) fn lower(c: &mut Ctx, g: GeGlu, pro: Option<&Prologue>, items: &mut Vec<Item>) -> Result<(), TtError> {
    let p = c.p;
    let (sg, su, s) = (&p.steps[g.gate], &p.steps[g.up], &p.steps[g.gelu_mul]);
    let x = sg.inputs[0];
    let (lx, lo) = (c.lay(x)?, c.lay(s.outputs[0])?);
    let wg = transposed(c, sg, sg.inputs[1], lx, lo)?;
    let wu = transposed(c, su, su.inputs[1], lx, lo)?;
    let comment = format!("{} + {} + {}: {}", sg.name, su.name, s.name, s.op);
    let (k, mut args, reads, mut writes, comment) = gate_up_kernel(c, pro, x, lo.col_tiles(), "", comment)?;
    let k = c.weight_kernel(k, &wg)?;
    args.extend([Arg::W(wg), Arg::W(wu)]);
    if let Some(pro) = pro {
        args.push(Arg::Buf(pro.s));
    }
    args.push(Arg::Buf(s.outputs[0]));
    writes.push(s.outputs[0]);
    items.push(Item::kernel(comment, k, args, reads, writes));
    Ok(())
}

/// The gate/up kernel of a GeGLU on `x` with `nt` output tile columns (`doc_suffix` says how
/// it is split, if at all): with `pro`, the sandwich norm that makes `x` runs in the same launch
/// (`sandwich_matmul`), else `geglu_matmul` reads `x`. Returns the kernel, the arguments in front
/// of the weights, what it reads and writes, and `comment` with the prologue's in front.
#[allow(clippy::type_complexity)]
pub(super) fn gate_up_kernel(
    c: &mut Ctx,
    pro: Option<&Prologue>,
    x: usize,
    nt: usize,
    doc_suffix: &str,
    comment: String,
) -> Result<(Kernel, Vec<Arg>, Vec<usize>, Vec<usize>, String), TtError> {
    Ok(match pro {
        Some(pro) => {
            let k = kernels::sandwich_matmul(
                c.t,
                &format!("sandwich norm, then gelu_mul with its gate/up matmuls{doc_suffix}"),
                pro.spec(c)?,
                &SandwichBody::Geglu { nt },
            )?;
            let comment = format!("{} + {comment}", pro.comment(c));
            (k, pro.args(c)?, vec![pro.res, pro.h], vec![pro.s], comment)
        }
        None => {
            let lx = c.lay(x)?;
            let k = kernels::geglu_matmul(
                c.t,
                &format!("gelu_mul with its gate/up matmuls{doc_suffix}"),
                lx.row_tiles(),
                lx.col_tiles(),
                nt,
            )?;
            (k, vec![Arg::Buf(x)], vec![x], vec![], comment)
        }
    })
}
