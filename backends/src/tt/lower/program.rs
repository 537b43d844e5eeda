//! One program of the plan (decode, or a prefill chunk) as device launches: the backend fusions
//! found on the whole program, each step lowered, activations given device tensors (shared when
//! their lifetimes are disjoint, and with the tensors of an earlier program of the same shape:
//! decode and prefill never run at once), and the launch code.

use std::collections::BTreeMap;

use gemma4c_ir::Op;
use gemma4c_passes::Program;

use super::ctx::Ctx;
use super::lookup::{self, Lookup};
use super::{attn_kv, attn_rope, geglu, kv_pair, mesh, ple_gate, qkv, sandwich, scaled_norm, steps};
use super::{Arg, Call, Item, Launch, ProgramLaunches, Slot};
use crate::tt::kernels::{self, SandwichBody};
use crate::tt::TtError;

/// Lowers `c.p`; its activations reuse `slots` (extended where no free one fits).
pub(super) fn lower_program(c: &mut Ctx, slots: &mut Vec<Slot>) -> Result<ProgramLaunches, TtError> {
    let p = c.p;
    let root = |id: usize| lookup::storage(p, id);
    // Backend fusions, found on the whole program before any step is lowered. A step fused into
    // another one's launch is `absorbed` (the launch is emitted at the group's key step).
    let mut absorbed = vec![false; p.steps.len()];
    let (geglus, sharded_mlps, scaled, gates, projections, kv_pairs, attn_ropes, attn_kvs, prologues) = {
        let l = Lookup::new(c, p);
        // gate/up matmuls + gelu_mul.
        let geglus = geglu::find(&l);
        for g in geglus.values() {
            absorbed[g.gate] = true;
            absorbed[g.up] = true;
        }
        // Tensor parallelism: the MLPs split over the chips (none on a one-chip board).
        let sharded_mlps = mesh::find(&l, &geglus);
        // norm_add, the layer scalar and the next input norm.
        let scaled = scaled_norm::find(&l);
        for g in scaled.values() {
            absorbed[g.norm_add] = true;
            if let Some(q) = g.next_norm {
                absorbed[q] = true;
            }
        }
        // The per-layer-input gate (matmul, slice, gelu_mul).
        let gates = ple_gate::find(&l);
        for g in gates.values() {
            absorbed[g.matmul] = true;
            absorbed[g.slice] = true;
        }
        // Matmuls of one input (q, k, v projections).
        let mut not_fused = absorbed.clone();
        for m in sharded_mlps.values() {
            not_fused[m.down] = true;
        }
        let projections = qkv::find(&l, &not_fused);
        for g in projections.values() {
            for &i in &g[1..] {
                absorbed[i] = true;
            }
        }
        // A layer's K and V cache writes.
        let kv_pairs = kv_pair::find(&l, &absorbed);
        for &i in kv_pairs.values() {
            absorbed[i] = true;
        }
        // The q norm + RoPE into its attention.
        let attn_ropes = attn_rope::find(&l);
        for g in attn_ropes.values() {
            absorbed[g.norm_rope] = true;
        }
        // A layer's K/V write pair into the attention that reads its caches (decode: a prefill
        // chunk writes whole tiles that its 32 queries then read, in launches of their own).
        let attn_kvs = if c.prefill {
            BTreeMap::new()
        } else {
            attn_kv::find(&l, &kv_pairs, &attn_ropes)
        };
        for f in attn_kvs.values() {
            absorbed[f.k] = true;
            absorbed[f.v] = true;
        }
        // The sandwich norms into the matmul launches that read them (on a mesh, into each
        // chip's share of the column-parallel gate/up: the norm is replicated anyway).
        let mut consumers: Vec<sandwich::Consumer> = Vec::new();
        let tiles = |b: usize| c.lay(b).map_or(0, |l| l.col_tiles());
        for g in geglus.values() {
            consumers.push(sandwich::Consumer {
                key: g.gelu_mul,
                x: p.steps[g.gate].inputs[0],
                steps: vec![g.gate, g.up, g.gelu_mul],
                body: SandwichBody::Geglu {
                    nt: tiles(p.steps[g.gelu_mul].outputs[0]),
                },
            });
        }
        for g in gates.values() {
            consumers.push(sandwich::Consumer {
                key: g.gelu_mul,
                x: p.steps[g.matmul].inputs[0],
                steps: vec![g.matmul, g.slice, g.gelu_mul],
                body: SandwichBody::Gated {
                    nt: tiles(p.steps[g.gelu_mul].outputs[0]),
                    epilogue: ("gelu".into(), kernels::gelu_expr("acc")),
                },
            });
        }
        for (&key, g) in &projections {
            consumers.push(sandwich::Consumer {
                key,
                x: p.steps[key].inputs[0],
                steps: g.clone(),
                body: SandwichBody::Matmul {
                    parts: g.iter().map(|&i| tiles(p.steps[i].outputs[0])).collect(),
                },
            });
        }
        for (i, s) in p.steps.iter().enumerate() {
            let plain = matches!(s.op, Op::MatMul)
                && !absorbed[i]
                && !not_fused[i]
                && !projections.contains_key(&i)
                && c.weight(s.inputs[1]).is_some()
                && !l.is_output(s.outputs[0])
                && c.lay(s.inputs[0]).is_ok()
                && c.lay(s.outputs[0]).is_ok();
            if plain {
                consumers.push(sandwich::Consumer {
                    key: i,
                    x: s.inputs[0],
                    steps: vec![i],
                    body: SandwichBody::Matmul {
                        parts: vec![tiles(s.outputs[0])],
                    },
                });
            }
        }
        consumers.sort_by_key(|k| k.key);
        let prologues = sandwich::find(&l, &consumers, &scaled, &absorbed);
        for pro in prologues.values() {
            for &i in &pro.steps {
                absorbed[i] = true;
            }
        }
        (
            geglus,
            sharded_mlps,
            scaled,
            gates,
            projections,
            kv_pairs,
            attn_ropes,
            attn_kvs,
            prologues,
        )
    };
    let sharded_down: BTreeMap<usize, usize> = sharded_mlps.iter().map(|(&g, m)| (m.down, g)).collect();

    let mut items: Vec<Item> = Vec::new();
    for (i, s) in p.steps.iter().enumerate() {
        if absorbed[i] {
            continue;
        }
        if let Some(&k) = kv_pairs.get(&i) {
            kv_pair::lower(c, p, k, i, &mut items)?;
            continue;
        }
        let pro = prologues.get(&i);
        if let Some(g) = projections.get(&i) {
            qkv::lower(c, p, g, pro, &mut items)?;
            continue;
        }
        if let Some(&g) = gates.get(&i) {
            ple_gate::lower(c, p, g, pro, &mut items)?;
            continue;
        }
        if let Some(&g) = scaled.get(&i) {
            scaled_norm::lower(c, p, g, &mut items)?;
            continue;
        }
        if let Some(g) = sharded_down.get(&i) {
            mesh::lower_down(c, &sharded_mlps[g], s, &mut items)?;
            continue;
        }
        if let Some(&g) = attn_ropes.get(&i) {
            attn_rope::lower(c, g, attn_kvs.get(&i).copied(), &mut items)?;
            continue;
        }
        if let (Some(m), Some(&g)) = (sharded_mlps.get(&i), geglus.get(&i)) {
            mesh::lower_gate_up(c, m, g, pro, &mut items)?;
            continue;
        }
        if let Some(&g) = geglus.get(&i) {
            geglu::lower(c, g, pro, &mut items)?;
            continue;
        }
        if pro.is_some() {
            // A plain matmul with the sandwich norm in front.
            qkv::lower(c, p, &[i], pro, &mut items)?;
            continue;
        }
        let comment = format!("{}: {}", s.name, s.op);
        steps::lower_step(c, s, comment, &mut items)?;
    }

    // Host work first: the token bookkeeping and the embedding-row writes come before every
    // launch, so that the launches alone are the decode step a trace captures (their order among
    // themselves, and the kernels' order, is unchanged).
    let (host, device): (Vec<Item>, Vec<Item>) = items
        .into_iter()
        .partition(|it| !matches!(it.call, Call::Kernel { .. } | Call::AllReduce { .. }));
    let items: Vec<Item> = host.into_iter().chain(device).collect();

    // ---- device tensors: activations share a tensor when their lifetimes are disjoint
    // Decode returns the logits; a prefill chunk (`cache_filling`) computes none.
    let logits = if c.prefill {
        None
    } else {
        let l = p.output("logits");
        Some(l.ok_or_else(|| TtError::new("the decode program has no `logits` output"))?)
    };
    let end = items.len();
    let mut life: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        for &w in &it.writes {
            life.entry(root(w)).or_insert((i, i));
        }
        for &r in &it.reads {
            if let Some(l) = life.get_mut(&root(r)) {
                l.1 = l.1.max(i);
            } else {
                return Err(TtError::new(format!("buffer {r} is read before any launch writes it")));
            }
        }
    }
    if let Some(l) = logits.and_then(|l| life.get_mut(&root(l))) {
        l.1 = end;
    }
    let mut slot_of: BTreeMap<usize, usize> = BTreeMap::new();
    let mut busy: Vec<(usize, usize)> = Vec::new(); // (slot, last)
                                                    // An earlier program's tensors are all free here.
    let mut free: Vec<usize> = (0..slots.len()).collect();
    for (i, it) in items.iter().enumerate() {
        busy.retain(|&(s, last)| {
            if last < i {
                free.push(s);
                false
            } else {
                true
            }
        });
        free.sort_unstable();
        for &w in &it.writes {
            let r = root(w);
            if life[&r].0 != i || slot_of.contains_key(&r) {
                continue;
            }
            let [rows, cols] = c.lay(r)?.dev_shape();
            let per_chip = c.per_chip.contains(&r);
            let name = if r < p.buffers.len() {
                p.steps
                    .iter()
                    .find(|s| s.outputs.contains(&r))
                    .map_or("scratch", |s| s.name.as_str())
            } else {
                "scratch"
            };
            // The logits get a tensor of their own: model.py allocates it with its logical shape
            // [1, vocabulary], which the on-device token selection reads.
            let shareable = logits.is_none_or(|l| r != root(l));
            let s = match free.iter().position(|&s| {
                shareable && slots[s].rows == rows && slots[s].cols == cols && slots[s].per_chip == per_chip
            }) {
                Some(k) => {
                    let s = free.remove(k);
                    if !slots[s].comment.split(", ").any(|n| n == name) {
                        slots[s].comment.push_str(", ");
                        slots[s].comment.push_str(name);
                    }
                    s
                }
                None => {
                    slots.push(Slot {
                        rows,
                        cols,
                        comment: name.to_string(),
                        per_chip,
                    });
                    slots.len() - 1
                }
            };
            slot_of.insert(r, s);
            busy.push((s, life[&r].1));
        }
    }
    let arg = |a: &Arg| -> String {
        match a {
            Arg::Buf(id) => format!("b[{}]", slot_of[&root(*id)]),
            Arg::State(i) => format!("s[{i}]"),
            Arg::W(n) => format!("w[\"{n}\"]"),
            Arg::Mask(i) => format!("self.masks[{i}]"),
            Arg::Pos => "self.pos".to_string(),
        }
    };
    let launches = items
        .iter()
        .map(|it| match &it.call {
            Call::Kernel { kernel, args } => {
                // A launch that touches a per-chip tensor runs on each chip's own values (on
                // hardware every launch does; the simulator's mesh needs to be told).
                let sharded = args.iter().any(|a| match a {
                    Arg::Buf(id) => c.per_chip.contains(&root(*id)),
                    Arg::W(n) => c.shards.contains_key(n),
                    _ => false,
                });
                let args: Vec<String> = args.iter().map(arg).collect();
                let name = &c.kernels[*kernel].name;
                let code = if sharded {
                    format!("m.each(K.{name}, {})", args.join(", "))
                } else {
                    format!("K.{name}({})", args.join(", "))
                };
                Launch {
                    code,
                    comment: it.comment.clone(),
                    kernel: Some(*kernel),
                    device: true,
                }
            }
            Call::AllReduce { src, dst } => Launch {
                code: format!("m.all_reduce({}, {})", arg(&Arg::Buf(*src)), arg(&Arg::Buf(*dst))),
                comment: it.comment.clone(),
                kernel: None,
                device: true,
            },
            Call::Gather { table, out } => Launch {
                code: if c.prefill {
                    format!(
                        "self.write(b[{}], self.rows(\"{table}\", tokens))",
                        slot_of[&root(*out)]
                    )
                } else {
                    format!("self.write(b[{}], self.row(\"{table}\", token))", slot_of[&root(*out)])
                },
                comment: it.comment.clone(),
                kernel: None,
                device: false,
            },
            Call::Host { code } => Launch {
                code: code.clone(),
                comment: it.comment.clone(),
                kernel: None,
                device: false,
            },
        })
        .collect();
    let all_reduce_bytes = items
        .iter()
        .filter_map(|it| match it.call {
            Call::AllReduce { dst, .. } => {
                let s = &slots[slot_of[&root(dst)]];
                Some(s.rows * s.cols * 2)
            }
            _ => None,
        })
        .collect();
    Ok(ProgramLaunches {
        logits_slot: logits.and_then(|l| slot_of.get(&root(l)).copied()),
        launches,
        all_reduce_bytes,
        rows: p.seq_len,
    })
}

/// The part of a prefill program that fills the KV caches: the steps that update a cache and
/// every step they read from, in program order; buffers are kept as they are (ids unchanged).
/// Everything else only leads to the chunk's logits, which nothing reads (`Model.generate` runs
/// the prompt's last id through the decode step, which chooses the first new token).
pub(super) fn cache_filling(p: &Program) -> Program {
    let root = |id: usize| lookup::storage(p, id);
    let mut producer: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, s) in p.steps.iter().enumerate() {
        for &o in &s.outputs {
            producer.insert(root(o), i);
        }
    }
    let mut live = vec![false; p.steps.len()];
    let mut todo: Vec<usize> = (0..p.steps.len()).filter(|&i| p.steps[i].op.updates_cache()).collect();
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut live[i], true) {
            continue;
        }
        for &b in &p.steps[i].inputs {
            if let Some(&j) = producer.get(&root(b)) {
                if !live[j] && j != i {
                    todo.push(j);
                }
            }
        }
    }
    Program {
        steps: p
            .steps
            .iter()
            .zip(&live)
            .filter(|(_, &l)| l)
            .map(|(s, _)| s.clone())
            .collect(),
        ..p.clone()
    }
}
