//! Every fusion rule: a positive and a negative snapshot (IR before → after)
//! and a numeric check that the reference semantics give bit-identical outputs
//! before and after the rewrite (fused ops are defined as their unfused chains,
//! evaluated in the same order, so equality is exact).

use std::collections::HashMap;

use gemma4c_ir::{interpret, print, DType, Graph, GraphBuilder, InputRole, Op, RopeSpec, Tensor, TensorType};
use gemma4c_passes::fusion::{fuse_with, rules::all_rules, Limits};
use gemma4c_passes::CostModel;

const EPS: f32 = 1e-6;

fn rope() -> RopeSpec {
    RopeSpec {
        theta: 10_000.0,
        head_dim: 8,
        rotated_pairs: 4,
        factor: 1.0,
    }
}

/// Fuses with the named rules only.
fn fuse(g: &Graph, names: &[&str]) -> Graph {
    let specs: Vec<_> = all_rules().into_iter().filter(|r| names.contains(&r.name)).collect();
    assert_eq!(specs.len(), names.len(), "unknown rule in {names:?}");
    fuse_with(g, &CostModel::cpu(), &Limits::default(), &specs)
        .expect("fusion")
        .0
}

/// Deterministic pseudo-random values in [-1, 1) (64-bit LCG).
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn run(g: &Graph) -> HashMap<String, Tensor> {
    let mut inputs = HashMap::new();
    let mut weights = HashMap::new();
    for (_, n) in g.nodes() {
        let ty = &n.outputs[0];
        let seed = n
            .name
            .bytes()
            .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        match &n.op {
            Op::Input {
                role: InputRole::Position,
            } => {
                inputs.insert(n.name.clone(), Tensor::i32([1], vec![3]));
            }
            Op::Input { .. } => {
                inputs.insert(n.name.clone(), Tensor::f32(ty.shape.clone(), random(ty.numel(), seed)));
            }
            Op::Weight { key } => {
                weights.insert(key.clone(), Tensor::f32(ty.shape.clone(), random(ty.numel(), seed)));
            }
            _ => {}
        }
    }
    interpret(g, inputs, &weights, None).expect("evaluates")
}

/// Snapshots before/after, checks whether `fused_op` appears, and compares outputs.
fn check(name: &str, g: Graph, rules: &[&str], fused_op: &str, expect_fused: bool) {
    let after = fuse(&g, rules);
    let text = format!("{}--- after {} ---\n{}", print(&g), rules.join(", "), print(&after));
    insta::with_settings!({snapshot_path => "../../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(format!("rule_{name}"), text);
    });
    let has = after.nodes().any(|(_, n)| n.op.mnemonic() == fused_op);
    assert_eq!(has, expect_fused, "{name}: `{fused_op}` present = {has}\n{text}");
    let (a, b) = (run(&g), run(&after));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "{name}: output `{k}` changed by the rewrite");
    }
}

fn f32t(shape: &[usize]) -> TensorType {
    TensorType::f32(shape.to_vec())
}

#[test]
fn gelu_mul_positive() {
    let mut b = GraphBuilder::new("mlp");
    let x = b.input("x", InputRole::TokenIds, f32t(&[2, 8]));
    let wg = b.weight("gate_proj.weight", TensorType::new(DType::BF16, [16, 8]));
    let wu = b.weight("up_proj.weight", f32t(&[16, 8]));
    let g = b.matmul(x, wg, "gate_proj").unwrap();
    let u = b.matmul(x, wu, "up_proj").unwrap();
    let g = b.gelu_tanh(g, "act_fn").unwrap();
    let m = b.mul(g, u, "gate_mul_up").unwrap();
    b.output("y", m);
    check(
        "gelu_mul_positive",
        b.finish().unwrap(),
        &["gelu_mul"],
        "gelu_mul",
        true,
    );
}

#[test]
fn gelu_mul_negative_shared_activation() {
    let mut b = GraphBuilder::new("mlp");
    let a = b.input("a", InputRole::TokenIds, f32t(&[2, 16]));
    let c = b.input("b", InputRole::TokenIds, f32t(&[2, 16]));
    let g = b.gelu_tanh(a, "act_fn").unwrap();
    let m = b.mul(g, c, "gate_mul_up").unwrap();
    b.output("y", m);
    b.output("activation", g); // a second user: fusing would compute gelu twice
    check(
        "gelu_mul_negative",
        b.finish().unwrap(),
        &["gelu_mul"],
        "gelu_mul",
        false,
    );
}

#[test]
fn add_rms_norm_positive() {
    let mut b = GraphBuilder::new("residual");
    let r = b.input("residual", InputRole::TokenIds, f32t(&[2, 16]));
    let x = b.input("branch", InputRole::TokenIds, f32t(&[2, 16]));
    let w = b.weight("pre_feedforward_layernorm.weight", f32t(&[16]));
    let s = b.add(r, x, "residual_add").unwrap();
    let n = b.rms_norm(s, Some(w), EPS, "pre_feedforward_layernorm").unwrap();
    let next = b.add(s, n, "next_residual").unwrap(); // the sum is also the next residual
    b.output("y", next);
    check(
        "add_rms_norm_positive",
        b.finish().unwrap(),
        &["add_rms_norm"],
        "add_rms_norm",
        true,
    );
}

#[test]
fn add_rms_norm_negative_broadcast_add() {
    let mut b = GraphBuilder::new("residual");
    let r = b.input("x", InputRole::TokenIds, f32t(&[2, 16]));
    let bias = b.weight("bias", f32t(&[16]));
    let w = b.weight("norm.weight", f32t(&[16]));
    let s = b.add(r, bias, "bias_add").unwrap();
    let n = b.rms_norm(s, Some(w), EPS, "norm").unwrap();
    b.output("y", n);
    check(
        "add_rms_norm_negative",
        b.finish().unwrap(),
        &["add_rms_norm"],
        "add_rms_norm",
        false,
    );
}

#[test]
fn norm_add_norm_positive() {
    let mut b = GraphBuilder::new("sandwich");
    let r = b.input("residual", InputRole::TokenIds, f32t(&[2, 16]));
    let x = b.input("attn_out", InputRole::TokenIds, f32t(&[2, 16]));
    let w1 = b.weight("post_attention_layernorm.weight", f32t(&[16]));
    let w2 = b.weight("pre_feedforward_layernorm.weight", f32t(&[16]));
    let y = b.rms_norm(x, Some(w1), EPS, "post_attention_layernorm").unwrap();
    let s = b.add(r, y, "attention_residual").unwrap();
    let h = b.rms_norm(s, Some(w2), EPS, "pre_feedforward_layernorm").unwrap();
    let out = b.add(s, h, "mlp_residual").unwrap();
    b.output("y", out);
    check(
        "norm_add_norm_positive",
        b.finish().unwrap(),
        &["add_rms_norm", "norm_add_norm"],
        "norm_add_norm",
        true,
    );
}

#[test]
fn norm_add_norm_negative_shared_branch_norm() {
    let mut b = GraphBuilder::new("sandwich");
    let r = b.input("residual", InputRole::TokenIds, f32t(&[2, 16]));
    let x = b.input("attn_out", InputRole::TokenIds, f32t(&[2, 16]));
    let w1 = b.weight("post_attention_layernorm.weight", f32t(&[16]));
    let w2 = b.weight("pre_feedforward_layernorm.weight", f32t(&[16]));
    let y = b.rms_norm(x, Some(w1), EPS, "post_attention_layernorm").unwrap();
    let s = b.add(r, y, "attention_residual").unwrap();
    let h = b.rms_norm(s, Some(w2), EPS, "pre_feedforward_layernorm").unwrap();
    b.output("y", h);
    b.output("normed_branch", y);
    check(
        "norm_add_norm_negative",
        b.finish().unwrap(),
        &["add_rms_norm", "norm_add_norm"],
        "norm_add_norm",
        false,
    );
}

fn qk_graph(share_norm: bool) -> Graph {
    let mut b = GraphBuilder::new("q_path");
    let x = b.input("q", InputRole::TokenIds, f32t(&[2, 4, 8]));
    let pos = b.input("position", InputRole::Position, TensorType::i32([1]));
    let w = b.weight("q_norm.weight", f32t(&[8]));
    let n = b.rms_norm(x, Some(w), EPS, "q_norm").unwrap();
    let q = b.rope(n, pos, &rope(), "q_rope").unwrap();
    b.output("q", q);
    if share_norm {
        b.output("normed", n);
    }
    b.finish().unwrap()
}

#[test]
fn norm_rope_positive() {
    check("norm_rope_positive", qk_graph(false), &["norm_rope"], "norm_rope", true);
}

#[test]
fn norm_rope_negative() {
    check("norm_rope_negative", qk_graph(true), &["norm_rope"], "norm_rope", false);
}

fn kv_graph(share_rotated: bool, v_path: bool) -> Graph {
    let mut b = GraphBuilder::new("kv_path");
    let cache = b.input("k_cache", InputRole::KvCache, f32t(&[2, 6, 8]));
    let k = b.input("k", InputRole::TokenIds, f32t(&[2, 2, 8]));
    let pos = b.input("position", InputRole::Position, TensorType::i32([1]));
    let new = if v_path {
        b.rms_norm(k, None, EPS, "v_norm").unwrap()
    } else {
        let w = b.weight("k_norm.weight", f32t(&[8]));
        let n = b.rms_norm(k, Some(w), EPS, "k_norm").unwrap();
        b.rope(n, pos, &rope(), "k_rope").unwrap()
    };
    let c = b.op(Op::KvWrite, &[cache, new, pos], "k_cache_write").unwrap();
    b.output("k_cache", c);
    if share_rotated {
        b.output("k_rotated", new);
    }
    b.finish().unwrap()
}

#[test]
fn rope_kv_write_positive() {
    check(
        "rope_kv_write_positive",
        kv_graph(false, false),
        &["norm_rope", "rope_kv_write"],
        "rope_kv_write",
        true,
    );
}

#[test]
fn rope_kv_write_negative() {
    check(
        "rope_kv_write_negative",
        kv_graph(true, false),
        &["norm_rope", "rope_kv_write"],
        "rope_kv_write",
        false,
    );
}

#[test]
fn norm_kv_write_positive() {
    check(
        "norm_kv_write_positive",
        kv_graph(false, true),
        &["norm_kv_write"],
        "norm_kv_write",
        true,
    );
}

#[test]
fn norm_kv_write_negative() {
    check(
        "norm_kv_write_negative",
        kv_graph(true, true),
        &["norm_kv_write"],
        "norm_kv_write",
        false,
    );
}

fn head_graph(softcap: bool) -> Graph {
    let mut b = GraphBuilder::new("head");
    let x = b.input("x", InputRole::TokenIds, f32t(&[1, 16]));
    let w = b.weight("norm.weight", f32t(&[16]));
    let table = b.weight("embed_tokens.weight", TensorType::new(DType::BF16, [32, 16]));
    let n = b.rms_norm(x, Some(w), EPS, "norm").unwrap();
    let mut l = b.matmul(n, table, "lm_head").unwrap();
    if softcap {
        l = b
            .op(Op::Softcap { cap: 30.0 }, &[l], "final_logit_softcapping")
            .unwrap();
    }
    b.output("logits", l);
    b.finish().unwrap()
}

#[test]
fn logits_head_positive() {
    check(
        "logits_head_positive",
        head_graph(true),
        &["logits_head"],
        "logits_head",
        true,
    );
}

#[test]
fn logits_head_negative_without_softcap() {
    check(
        "logits_head_negative",
        head_graph(false),
        &["logits_head"],
        "logits_head",
        false,
    );
}

fn post_norm_graph(shared: bool) -> Graph {
    let mut b = GraphBuilder::new("mlp_residual");
    let r = b.input("residual", InputRole::TokenIds, f32t(&[2, 16]));
    let x = b.input("mlp_out", InputRole::TokenIds, f32t(&[2, 16]));
    let w = b.weight("post_feedforward_layernorm.weight", f32t(&[16]));
    let n = b.rms_norm(x, Some(w), EPS, "post_feedforward_layernorm").unwrap();
    let s = b.add(r, n, "mlp_residual").unwrap();
    b.output("y", s);
    if shared {
        b.output("normed", n);
    }
    b.finish().unwrap()
}

#[test]
fn norm_add_positive() {
    check(
        "norm_add_positive",
        post_norm_graph(false),
        &["norm_add"],
        "norm_add",
        true,
    );
}

#[test]
fn norm_add_negative() {
    check(
        "norm_add_negative",
        post_norm_graph(true),
        &["norm_add"],
        "norm_add",
        false,
    );
}

fn router_graph(shared: bool) -> Graph {
    let mut b = GraphBuilder::new("router");
    let r = b.input("residual", InputRole::TokenIds, f32t(&[2, 16]));
    let scale = b.weight("router.scale", f32t(&[16]));
    let proj = b.weight("router.proj.weight", f32t(&[8, 16]));
    let pes = b.weight("router.per_expert_scale", f32t(&[8]));
    let n = b.rms_norm(r, None, EPS, "router.norm").unwrap();
    let n = b.mul(n, scale, "router.scaled").unwrap();
    let n = b.scale(n, 0.25, "router.scalar_root_size").unwrap();
    let scores = b.matmul(n, proj, "router.proj").unwrap();
    let route = b.op_multi(Op::MoeRoute { top_k: 2 }, &[scores, pes], "router").unwrap();
    b.output("weights", route[0]);
    b.output("experts", route[1]);
    if shared {
        b.output("scores", scores);
    }
    b.finish().unwrap()
}

#[test]
fn moe_router_positive() {
    check(
        "moe_router_positive",
        router_graph(false),
        &["moe_router"],
        "moe_router",
        true,
    );
}

#[test]
fn moe_router_negative() {
    check(
        "moe_router_negative",
        router_graph(true),
        &["moe_router"],
        "moe_router",
        false,
    );
}

#[test]
fn plan_rejects_reading_a_cache_after_its_in_place_update() {
    use gemma4c_passes::plan::lower;
    let mut b = GraphBuilder::new("stale_cache");
    let cache = b.input("k_cache", InputRole::KvCache, f32t(&[1, 4, 8]));
    let k = b.input("k", InputRole::TokenIds, f32t(&[1, 1, 8]));
    let q = b.input("q", InputRole::TokenIds, f32t(&[1, 2, 8]));
    let pos = b.input("position", InputRole::Position, TensorType::i32([1]));
    let new = b.op(Op::KvWrite, &[cache, k, pos], "k_cache_write").unwrap();
    let attn = Op::Attention {
        window: None,
        scale: 1.0,
    };
    // Attends over the cache as it was before the write: impossible in place.
    let a = b.op(attn, &[q, cache, cache, pos], "attention").unwrap();
    b.output("a", a);
    b.output("k_cache", new);
    let g = b.finish().unwrap();
    let err = lower("decode", 1, &g, &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("old version of cache `k_cache`"), "{err}");
}
