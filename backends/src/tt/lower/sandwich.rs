//! Backend fusion of a sandwich norm into the matmul launch that reads its result: the norm step
//! (`norm_add_norm`, `norm_add`, or the scaled group of `scaled_norm.rs`) is computed by every
//! core of the matmul in front of its weight panels (`kernels::sandwich_matmul`), node 0 writing
//! the new residual. The consumers are the fused launches of `geglu.rs`, `ple_gate.rs` and
//! `qkv.rs`, and plain matmuls; the norm's own launch disappears.

use std::collections::{BTreeMap, BTreeSet};

use gemma4c_ir::Op;

use super::ctx::Ctx;
use super::lookup::Lookup;
use super::scaled_norm::ScaledNorm;
use super::{Arg, Source};
use crate::tt::kernels::{self, Sandwich, SandwichBody};
use crate::tt::layout::DevLayout;
use crate::tt::TtError;

/// One sandwich norm moved into its consumer.
#[derive(Debug, Clone)]
pub(super) struct Prologue {
    /// The steps it replaces (the norm step; the scalar mul and next norm of a scaled group).
    pub(super) steps: Vec<usize>,
    pub(super) res: usize,
    pub(super) h: usize,
    pub(super) w_post: usize,
    pub(super) w_pre: Option<usize>,
    pub(super) scale: Option<usize>,
    /// The new residual (written by node 0).
    pub(super) s: usize,
    /// What the consumer multiplies (the pre-normed row, or `s` itself).
    pub(super) x: usize,
    pub(super) eps: f32,
}

/// A launch that can take a prologue: its key step, the activation it multiplies and every step
/// it covers.
pub(super) struct Consumer {
    pub(super) key: usize,
    pub(super) x: usize,
    pub(super) steps: Vec<usize>,
    /// What the launch computes from x (to check that the fused kernel fits the device).
    pub(super) body: SandwichBody,
}

/// Prologues keyed by their consumer's key step. `scaled` are the scaled-norm groups (keyed by
/// their mul step); `absorbed` the steps already inside another launch.
pub(super) fn find(
    l: &Lookup,
    consumers: &[Consumer],
    scaled: &BTreeMap<usize, ScaledNorm>,
    absorbed: &[bool],
) -> BTreeMap<usize, Prologue> {
    let (c, p) = (l.c, l.p);
    // Scaled groups by the storage of their pre-normed output.
    let by_normed: BTreeMap<usize, &ScaledNorm> = scaled
        .values()
        .filter_map(|g| g.next_norm.map(|q| (l.root(p.steps[q].outputs[0]), g)))
        .collect();
    let mut out = BTreeMap::new();
    let mut taken = BTreeSet::new();
    for con in consumers {
        let x = l.root(con.x);
        let Some(pr) = l.producer(x) else { continue };
        let pro = if let Some(g) = by_normed.get(&x) {
            let (na, mul, q) = (&p.steps[g.norm_add], &p.steps[g.mul], g.next_norm.map(|q| &p.steps[q]));
            let (&Op::NormAdd { eps }, Some(q)) = (&na.op, q) else {
                continue;
            };
            Prologue {
                steps: vec![g.norm_add, g.mul, g.next_norm.unwrap_or(g.mul)],
                res: na.inputs[0],
                h: na.inputs[1],
                w_post: na.inputs[2],
                w_pre: Some(q.inputs[1]),
                scale: Some(mul.inputs[1]),
                s: mul.outputs[0],
                x,
                eps,
            }
        } else {
            let s = &p.steps[pr];
            if absorbed[pr] {
                continue;
            }
            match s.op {
                Op::NormAddNorm { eps } if s.inputs.len() == 4 && l.root(s.outputs[0]) == x => Prologue {
                    steps: vec![pr],
                    res: s.inputs[0],
                    h: s.inputs[1],
                    w_post: s.inputs[2],
                    w_pre: Some(s.inputs[3]),
                    scale: None,
                    s: s.outputs[1],
                    x,
                    eps,
                },
                Op::NormAdd { eps } if s.inputs.len() == 3 && l.root(s.outputs[0]) == x => Prologue {
                    steps: vec![pr],
                    res: s.inputs[0],
                    h: s.inputs[1],
                    w_post: s.inputs[2],
                    w_pre: None,
                    scale: None,
                    s: s.outputs[0],
                    x,
                    eps,
                },
                _ => continue,
            }
        };
        let first = *pro.steps.iter().min().unwrap_or(&pr);
        // The pre-normed row is read by this launch alone (it is never written); `s` is.
        let private = pro.w_pre.is_none() || l.consumers(x).iter().all(|i| con.steps.contains(i));
        // Nothing between the norm and the launch reads what the norm writes.
        let written: Vec<usize> = [l.root(pro.s), x].into();
        let quiet = p.steps[first + 1..con.key]
            .iter()
            .enumerate()
            .filter(|(k, _)| !pro.steps.contains(&(first + 1 + k)) && !con.steps.contains(&(first + 1 + k)))
            .all(|(_, s)| s.inputs.iter().all(|&i| !written.contains(&l.root(i))));
        let weights = c.weight(pro.w_post).is_some()
            && pro.w_pre.is_none_or(|w| c.weight(w).is_some())
            && pro.scale.is_none_or(|w| c.weight(w).is_some());
        let lays = match (c.lay(pro.s), c.lay(x), c.lay(pro.h), c.lay(pro.res)) {
            (Ok(a), Ok(b), Ok(h), Ok(r)) => {
                a == b && a == h && a == r && a.row_tiles() == 1 && a.groups == 1 && a.width.is_multiple_of(32)
            }
            _ => false,
        };
        // The norm rows and a weight panel fit L1 together (else the two launches stay).
        let fits = lays
            && pro
                .spec(c)
                .and_then(|spec| kernels::sandwich_matmul(c.t, "", spec, &con.body))
                .is_ok();
        if private && quiet && weights && fits && con.key > first && taken.insert(first) {
            out.insert(con.key, pro);
        }
    }
    out
}

impl Prologue {
    /// The kernel-side description over rows laid out like `x`.
    pub(super) fn spec(&self, c: &Ctx) -> Result<Sandwich, TtError> {
        let l = c.lay(self.x)?;
        Ok(Sandwich {
            kt: l.col_tiles(),
            n: l.width,
            eps: self.eps,
            pre: self.w_pre.is_some(),
            scaled: self.scale.is_some(),
        })
    }

    /// The prologue's operands, in the template's order: res, h, w_post, [w_pre], [scale].
    pub(super) fn args(&self, c: &mut Ctx) -> Result<Vec<Arg>, TtError> {
        let l = c.lay(self.x)?;
        let row = |c: &mut Ctx, id: usize| -> Result<String, TtError> {
            let (key, _) = c
                .weight(id)
                .ok_or_else(|| TtError::new(format!("sandwich norm: buffer {id} is not a checkpoint tensor")))?;
            let key = key.to_string();
            c.row(&key, norm_row(l))
        };
        let mut args = vec![Arg::Buf(self.res), Arg::Buf(self.h), Arg::W(row(c, self.w_post)?)];
        if let Some(w) = self.w_pre {
            args.push(Arg::W(row(c, w)?));
        }
        if let Some(sc) = self.scale {
            let (key, _) = c
                .weight(sc)
                .ok_or_else(|| TtError::new("sandwich norm: the scalar is not a checkpoint tensor"))?;
            let key = key.to_string();
            args.push(Arg::W(c.prep(key.clone(), 1, 32, false, Source::Scalar { key })?));
        }
        Ok(args)
    }

    /// The launch comment's prefix: the absorbed steps.
    pub(super) fn comment(&self, c: &Ctx) -> String {
        let mut steps = self.steps.clone();
        steps.dedup();
        steps
            .iter()
            .map(|&i| format!("{}: {}", c.p.steps[i].name, c.p.steps[i].op))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// The one-row layout of a norm weight over rows laid out like `l` (one segment).
fn norm_row(l: DevLayout) -> DevLayout {
    DevLayout::flat(1, l.width)
}
