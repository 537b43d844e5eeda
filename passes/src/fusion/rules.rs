//! Fusion rules. Each rule *adds* a fused node to the e-class of the chain it
//! replaces; the unfused form stays, and extraction decides.
//!
//! Rule discipline (as in Cranelift's ISLE rules):
//! - directional and few; no commutativity or other algebra;
//! - an intermediate value a fused op stops materializing must have exactly one
//!   user in the original graph, so fusing never duplicates work;
//! - attributes are carried over exactly; rules that combine two norms require
//!   the same epsilon.

use egg::{Applier, Id, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};
use gemma4c_ir::Op;

use super::lang::{node, FusionAnalysis, FusionGraph, FusionLang};

/// A rule's action: given the matched class and bindings, add the fused form and
/// union it in. Returns the classes it changed.
type Action = fn(&mut FusionGraph, Id, &Subst) -> Vec<Id>;

struct Fuse(Action);

impl Applier<FusionLang, FusionAnalysis> for Fuse {
    fn apply_one(
        &self,
        egraph: &mut FusionGraph,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<FusionLang>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        (self.0)(egraph, eclass, subst)
    }
}

fn rule(name: &str, pattern: &str, action: Action) -> Rewrite<FusionLang, FusionAnalysis> {
    let searcher: Pattern<FusionLang> = pattern.parse().expect("rule patterns are valid");
    Rewrite::new(name, searcher, Fuse(action)).expect("rule is well-formed")
}

fn var(name: &str) -> Var {
    name.parse().expect("valid variable")
}

fn op_of(eg: &FusionGraph, subst: &Subst, attr_var: &str) -> Option<(Op, String)> {
    FusionAnalysis::attr_of(eg, subst[var(attr_var)]).map(|a| (a.op.clone(), a.name.clone()))
}

fn eps_of(op: &Op) -> Option<f32> {
    match op {
        Op::RmsNorm { eps } => Some(*eps),
        _ => None,
    }
}

/// The class of an existing node, if it exists.
fn existing(eg: &FusionGraph, sym: &str, children: Vec<Id>) -> Option<Id> {
    eg.lookup(node(sym, children))
}

fn single_use(eg: &FusionGraph, class: Option<Id>) -> bool {
    class.is_some_and(|c| eg[c].data.uses == 1)
}

fn n_sym(n: &FusionLang) -> &str {
    let FusionLang::Node(s, _) = n;
    s.as_str()
}

/// Adds `(sym attr children...)` with a new attribute entry and unions it with `into`.
fn add_fused(eg: &mut FusionGraph, into: Id, op: Op, name: &str, children: &[Id]) -> Vec<Id> {
    // Rules fire on every iteration; each site gets its fused form once.
    if eg[into].nodes.iter().any(|n| n_sym(n) == op.mnemonic()) {
        return vec![];
    }
    let new = add_node(eg, op, name, children);
    if eg.union(into, new) {
        vec![into]
    } else {
        vec![]
    }
}

fn add_node(eg: &mut FusionGraph, op: Op, name: &str, children: &[Id]) -> Id {
    let sym = op.mnemonic();
    let attr = FusionAnalysis::add_attr(eg, op, name);
    let mut all = vec![attr];
    all.extend_from_slice(children);
    eg.add(node(sym, all))
}

/// Adds a two-result fused node and unions its results with `results`.
fn add_fused_pair(eg: &mut FusionGraph, results: [Id; 2], op: Op, name: &str, children: &[Id]) -> Vec<Id> {
    let already = eg[results[0]].nodes.iter().any(|n| {
        let FusionLang::Node(s, c) = n;
        s.as_str() == "get0" && eg[c[0]].nodes.iter().any(|t| n_sym(t) == op.mnemonic())
    });
    if already {
        return vec![];
    }
    let tuple = add_node(eg, op, name, children);
    let mut changed = vec![];
    for (port, class) in results.into_iter().enumerate() {
        let get = eg.add(node(&format!("get{port}"), vec![tuple]));
        if eg.union(class, get) {
            changed.push(class);
        }
    }
    changed
}

/// `gelu_tanh(a) * b` → `gelu_mul(a, b)`: MLP gate·up and the PLE gate·input.
fn gelu_mul(eg: &mut FusionGraph, class: Id, s: &Subst) -> Vec<Id> {
    let (a, b) = (s[var("?a")], s[var("?b")]);
    let gelu = existing(eg, "gelu_tanh", vec![s[var("?g")], a]);
    if !single_use(eg, gelu) || eg[a].data.bytes != eg[b].data.bytes {
        return vec![];
    }
    let Some((_, name)) = op_of(eg, s, "?m") else {
        return vec![];
    };
    add_fused(eg, class, Op::GeluMul, &name, &[a, b])
}

/// `rms_norm(a + b) * w` → `add_rms_norm(a, b, w)`, whose second result (the sum)
/// also replaces the add: the sum is the next residual.
fn add_rms_norm(eg: &mut FusionGraph, class: Id, s: &Subst) -> Vec<Id> {
    let (a, b, w) = (s[var("?a")], s[var("?b")], s[var("?w")]);
    let Some(sum) = existing(eg, "add", vec![s[var("?s")], a, b]) else {
        return vec![];
    };
    let Some((op, name)) = op_of(eg, s, "?n") else {
        return vec![];
    };
    let Some(eps) = eps_of(&op) else { return vec![] };
    if eg[a].data.bytes != eg[b].data.bytes {
        return vec![]; // a broadcast add is not a residual add
    }
    add_fused_pair(eg, [class, sum], Op::AddRmsNorm { eps }, &name, &[a, b, w])
}

/// The Gemma sandwich: `add_rms_norm(r, rms_norm(x) * w1, w2)` →
/// `norm_add_norm(r, x, w1, w2)` (post-norm of the branch, residual add, next pre-norm).
fn norm_add_norm(eg: &mut FusionGraph, tuple: Id, s: &Subst) -> Vec<Id> {
    let (r, x, w1, w2) = (s[var("?r")], s[var("?x")], s[var("?w1")], s[var("?w2")]);
    let inner = existing(eg, "rms_norm", vec![s[var("?n")], x, w1]);
    if !single_use(eg, inner) {
        return vec![];
    }
    let (Some((outer, name)), Some((inner_op, _))) = (op_of(eg, s, "?t"), op_of(eg, s, "?n")) else {
        return vec![];
    };
    let (Op::AddRmsNorm { eps }, Some(inner_eps)) = (outer, eps_of(&inner_op)) else {
        return vec![];
    };
    if eps != inner_eps {
        return vec![];
    }
    let (Some(r0), Some(r1)) = (existing(eg, "get0", vec![tuple]), existing(eg, "get1", vec![tuple])) else {
        return vec![];
    };
    add_fused_pair(eg, [r0, r1], Op::NormAddNorm { eps }, &name, &[r, x, w1, w2])
}

/// q/k norm then RoPE → `norm_rope(x, w, pos)`.
fn norm_rope(eg: &mut FusionGraph, class: Id, s: &Subst) -> Vec<Id> {
    let (x, w, pos) = (s[var("?x")], s[var("?w")], s[var("?pos")]);
    if !single_use(eg, existing(eg, "rms_norm", vec![s[var("?n")], x, w])) {
        return vec![];
    }
    let (Some((Op::Rope { rope }, name)), Some((norm, _))) = (op_of(eg, s, "?r"), op_of(eg, s, "?n")) else {
        return vec![];
    };
    let Some(eps) = eps_of(&norm) else { return vec![] };
    add_fused(eg, class, Op::NormRope { eps, rope }, &name, &[x, w, pos])
}

/// K normed, rotated and written into the cache in one op: `rope_kv_write`.
fn rope_kv_write(eg: &mut FusionGraph, class: Id, s: &Subst) -> Vec<Id> {
    let (cache, x, w, pos) = (s[var("?c")], s[var("?x")], s[var("?w")], s[var("?pos")]);
    if !single_use(eg, existing(eg, "norm_rope", vec![s[var("?nr")], x, w, pos])) {
        return vec![];
    }
    let Some((Op::NormRope { eps, rope }, _)) = op_of(eg, s, "?nr") else {
        return vec![];
    };
    let Some((_, name)) = op_of(eg, s, "?k") else {
        return vec![];
    };
    add_fused(eg, class, Op::RopeKvWrite { eps, rope }, &name, &[cache, x, w, pos])
}

/// Weightless V norm written into the cache: `norm_kv_write`.
fn norm_kv_write(eg: &mut FusionGraph, class: Id, s: &Subst) -> Vec<Id> {
    let (cache, v, pos) = (s[var("?c")], s[var("?v")], s[var("?pos")]);
    if !single_use(eg, existing(eg, "rms_norm", vec![s[var("?n")], v])) {
        return vec![];
    }
    let (Some((norm, _)), Some((_, name))) = (op_of(eg, s, "?n"), op_of(eg, s, "?k")) else {
        return vec![];
    };
    let Some(eps) = eps_of(&norm) else { return vec![] };
    add_fused(eg, class, Op::NormKvWrite { eps }, &name, &[cache, v, pos])
}

/// Final norm, LM head and soft-cap: `logits_head(x, w, table)`.
fn logits_head(eg: &mut FusionGraph, class: Id, s: &Subst) -> Vec<Id> {
    let (x, w, table) = (s[var("?x")], s[var("?w")], s[var("?t")]);
    let norm = existing(eg, "rms_norm", vec![s[var("?n")], x, w]);
    let Some(norm_class) = norm else { return vec![] };
    let matmul = existing(eg, "matmul", vec![s[var("?m")], norm_class, table]);
    if !single_use(eg, norm) || !single_use(eg, matmul) {
        return vec![];
    }
    let (Some((norm_op, _)), Some((Op::Softcap { cap }, name))) = (op_of(eg, s, "?n"), op_of(eg, s, "?c")) else {
        return vec![];
    };
    let Some(eps) = eps_of(&norm_op) else { return vec![] };
    add_fused(eg, class, Op::LogitsHead { eps, cap: Some(cap) }, &name, &[x, w, table])
}

/// Sandwich post-norm and residual add: `r + rms_norm(x) * w` → `norm_add(r, x, w)`.
fn norm_add(eg: &mut FusionGraph, class: Id, s: &Subst) -> Vec<Id> {
    let (r, x, w) = (s[var("?r")], s[var("?x")], s[var("?w")]);
    let norm = existing(eg, "rms_norm", vec![s[var("?n")], x, w]);
    if !single_use(eg, norm) || norm.is_some_and(|n| eg[n].data.bytes != eg[r].data.bytes) {
        return vec![];
    }
    let (Some((norm_op, _)), Some((_, name))) = (op_of(eg, s, "?n"), op_of(eg, s, "?s")) else {
        return vec![];
    };
    let Some(eps) = eps_of(&norm_op) else { return vec![] };
    add_fused(eg, class, Op::NormAdd { eps }, &name, &[r, x, w])
}

/// The MoE router chain (weightless norm, per-channel scale, `H^-0.5`, projection,
/// softmax/top-k) → one `moe_router`.
fn moe_router(eg: &mut FusionGraph, tuple: Id, s: &Subst) -> Vec<Id> {
    let (x, scale, proj, pes) = (s[var("?x")], s[var("?s")], s[var("?proj")], s[var("?pes")]);
    let norm = existing(eg, "rms_norm", vec![s[var("?n")], x]);
    let Some(norm_c) = norm else { return vec![] };
    let mul = existing(eg, "mul", vec![s[var("?mu")], norm_c, scale]);
    let Some(mul_c) = mul else { return vec![] };
    let scaled = existing(eg, "scale", vec![s[var("?sc")], mul_c]);
    let Some(scaled_c) = scaled else { return vec![] };
    let scores = existing(eg, "matmul", vec![s[var("?mm")], scaled_c, proj]);
    if ![norm, mul, scaled, scores].into_iter().all(|c| single_use(eg, c)) {
        return vec![];
    }
    let attrs = (op_of(eg, s, "?n"), op_of(eg, s, "?sc"), op_of(eg, s, "?mr"));
    let (Some((norm_op, _)), Some((Op::Scale { factor }, _)), Some((Op::MoeRoute { top_k }, name))) = attrs else {
        return vec![];
    };
    let Some(eps) = eps_of(&norm_op) else { return vec![] };
    let (Some(r0), Some(r1)) = (existing(eg, "get0", vec![tuple]), existing(eg, "get1", vec![tuple])) else {
        return vec![];
    };
    let op = Op::MoeRouter {
        eps,
        scalar: factor,
        top_k,
    };
    add_fused_pair(eg, [r0, r1], op, &name, &[x, scale, proj, pes])
}

/// A named rule set.
pub struct RuleSpec {
    pub name: &'static str,
    pub pattern: &'static str,
    action: Action,
}

/// Every fusion rule, in a fixed order.
pub fn all_rules() -> Vec<RuleSpec> {
    vec![
        RuleSpec {
            name: "gelu_mul",
            pattern: "(mul ?m (gelu_tanh ?g ?a) ?b)",
            action: gelu_mul,
        },
        RuleSpec {
            name: "add_rms_norm",
            pattern: "(rms_norm ?n (add ?s ?a ?b) ?w)",
            action: add_rms_norm,
        },
        RuleSpec {
            name: "norm_add_norm",
            pattern: "(add_rms_norm ?t ?r (rms_norm ?n ?x ?w1) ?w2)",
            action: norm_add_norm,
        },
        RuleSpec {
            name: "norm_rope",
            pattern: "(rope ?r (rms_norm ?n ?x ?w) ?pos)",
            action: norm_rope,
        },
        RuleSpec {
            name: "rope_kv_write",
            pattern: "(kv_write ?k ?c (norm_rope ?nr ?x ?w ?pos) ?pos)",
            action: rope_kv_write,
        },
        RuleSpec {
            name: "norm_kv_write",
            pattern: "(kv_write ?k ?c (rms_norm ?n ?v) ?pos)",
            action: norm_kv_write,
        },
        RuleSpec {
            name: "norm_add",
            pattern: "(add ?s ?r (rms_norm ?n ?x ?w))",
            action: norm_add,
        },
        RuleSpec {
            name: "moe_router",
            pattern: "(moe_route ?mr (matmul ?mm (scale ?sc (mul ?mu (rms_norm ?n ?x) ?s)) ?proj) ?pes)",
            action: moe_router,
        },
        RuleSpec {
            name: "logits_head",
            pattern: "(softcap ?c (matmul ?m (rms_norm ?n ?x ?w) ?t))",
            action: logits_head,
        },
    ]
}

pub fn to_rewrites(specs: &[RuleSpec]) -> Vec<Rewrite<FusionLang, FusionAnalysis>> {
    specs.iter().map(|r| rule(r.name, r.pattern, r.action)).collect()
}
