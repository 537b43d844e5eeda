//! The e-graph form of a graph.
//!
//! Every graph node becomes `(mnemonic attr operand...)`: the first child is an
//! attribute leaf `attr:N` naming entry N of the attribute table (the node's `Op`
//! with its attributes, and its HF-style name). Because each node has its own
//! attribute leaf, hash-consing never merges two distinct graph nodes, and
//! patterns match on the mnemonic alone (`(gelu_tanh ?ga ?x)`).
//! Leaves (inputs, weights) are `(leaf attr)`. Result `p` of a multi-result node
//! is `(get<p> node)`.

use egg::{define_language, Analysis, DidMerge, EGraph, Id, Symbol};
use gemma4c_ir::{Graph, Op, Value};

define_language! {
    pub enum FusionLang {
        Node(Symbol, Vec<Id>),
    }
}

/// One attribute-table entry: the op (with attributes) and the node name.
#[derive(Debug, Clone)]
pub struct Attr {
    pub op: Op,
    pub name: String,
}

/// What the cost model needs to know about a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassInfo {
    /// Bytes of the value (0 for tuples and attribute leaves).
    pub bytes: usize,
    /// Users in the original graph (0 for classes made by rewrites).
    pub uses: usize,
}

/// Holds the attribute table; class data is set when the graph is loaded.
#[derive(Default)]
pub struct FusionAnalysis {
    pub attrs: Vec<Attr>,
}

impl FusionAnalysis {
    /// Adds an attribute entry and its leaf.
    pub fn add_attr(egraph: &mut FusionGraph, op: Op, name: &str) -> Id {
        let n = egraph.analysis.attrs.len();
        egraph.analysis.attrs.push(Attr {
            op,
            name: name.to_string(),
        });
        egraph.add(FusionLang::Node(Symbol::from(format!("attr:{n}")), vec![]))
    }

    /// The attribute entry a leaf class names.
    pub fn attr_of(egraph: &FusionGraph, class: Id) -> Option<&Attr> {
        egraph[class].nodes.iter().find_map(|FusionLang::Node(sym, _)| {
            sym.as_str()
                .strip_prefix("attr:")
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| egraph.analysis.attrs.get(n))
        })
    }
}

impl Analysis<FusionLang> for FusionAnalysis {
    type Data = ClassInfo;

    fn make(_egraph: &mut EGraph<FusionLang, Self>, _enode: &FusionLang, _id: Id) -> ClassInfo {
        ClassInfo::default()
    }

    /// Rewrites only union a new node's class with an original one, so the
    /// larger values are the original facts.
    fn merge(&mut self, to: &mut ClassInfo, from: ClassInfo) -> DidMerge {
        let merged = ClassInfo {
            bytes: to.bytes.max(from.bytes),
            uses: to.uses.max(from.uses),
        };
        let changed = merged != *to;
        *to = merged;
        DidMerge(changed, merged != from)
    }
}

pub type FusionGraph = EGraph<FusionLang, FusionAnalysis>;

pub fn node(sym: &str, children: Vec<Id>) -> FusionLang {
    FusionLang::Node(Symbol::from(sym), children)
}

/// Loads `graph` into a fresh e-graph. Returns the e-graph, the class of each
/// graph output (in order).
pub fn to_egraph(graph: &Graph) -> (FusionGraph, Vec<Id>) {
    let mut eg = FusionGraph::new(FusionAnalysis::default());
    // Users per value, for the rules' single-use conditions.
    let mut uses = std::collections::HashMap::<Value, usize>::new();
    for id in graph.node_ids() {
        for v in graph.operands(id) {
            *uses.entry(v).or_default() += 1;
        }
    }
    for out in graph.outputs() {
        *uses.entry(out.value).or_default() += 1;
    }

    let mut class_of: Vec<Vec<Id>> = Vec::with_capacity(graph.node_count());
    for (id, n) in graph.nodes() {
        let attr = FusionAnalysis::add_attr(&mut eg, n.op.clone(), &n.name);
        let class = if n.op.is_leaf() {
            eg.add(node("leaf", vec![attr]))
        } else {
            let mut children = vec![attr];
            children.extend(
                graph
                    .operands(id)
                    .iter()
                    .map(|v| class_of[v.node.index()][v.port as usize]),
            );
            eg.add(node(n.op.mnemonic(), children))
        };
        let results: Vec<Id> = if n.outputs.len() == 1 {
            vec![class]
        } else {
            (0..n.outputs.len())
                .map(|p| eg.add(node(&format!("get{p}"), vec![class])))
                .collect()
        };
        for (port, &c) in results.iter().enumerate() {
            eg[c].data = ClassInfo {
                bytes: n.outputs[port].size_bytes(),
                uses: uses.get(&Value::new(id, port as u32)).copied().unwrap_or(0),
            };
        }
        class_of.push(results);
    }
    let roots = graph
        .outputs()
        .iter()
        .map(|o| class_of[o.value.node.index()][o.value.port as usize])
        .collect();
    eg.rebuild();
    (eg, roots)
}
