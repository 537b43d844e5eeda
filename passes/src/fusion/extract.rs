//! Extraction: choose one node per e-class and rebuild a graph.
//!
//! egg's stock extractor scores trees, so a value with several users (the
//! residual stream, a KV cache) is counted once per user and costs explode
//! along the 2-user residual chain. Here the cost of a choice is the cost of the
//! DAG it selects (each class once): kernel launches plus bytes read, weighted
//! by the target's cost model. Starting from the original graph, moves are
//! tried in a fixed order and kept when the DAG gets cheaper; a fused node with
//! two results is one move covering every class that reads one of its results.

use std::collections::{BTreeMap, HashMap};

use egg::Id;
use gemma4c_ir::{Graph, GraphBuilder, IrError, Op, Value};

use super::lang::{FusionGraph, FusionLang};
use crate::cost::CostModel;

/// Which node each class uses (index into the class's node list), by class id.
type Selection = Vec<usize>;

fn sym(n: &FusionLang) -> &str {
    let FusionLang::Node(s, _) = n;
    s.as_str()
}

fn children(n: &FusionLang) -> &[Id] {
    let FusionLang::Node(_, c) = n;
    c
}

fn attr_index(eg: &FusionGraph, n: &FusionLang) -> Option<usize> {
    let first = *children(n).first()?;
    eg[first]
        .nodes
        .iter()
        .find_map(|m| sym(m).strip_prefix("attr:").and_then(|i| i.parse().ok()))
}

fn is_projection(n: &FusionLang) -> Option<usize> {
    sym(n).strip_prefix("get").and_then(|p| p.parse().ok())
}

/// Per e-node facts the search needs, computed once.
struct NodeFacts {
    own_cost: f64,
    /// Canonical child classes (attribute leaves included; they cost nothing).
    children: Vec<usize>,
    /// Attribute entry (None for projections).
    attr: Option<usize>,
}

struct Extractor {
    /// `facts[class][i]` for node `i` of each canonical class.
    facts: Vec<Vec<NodeFacts>>,
    roots: Vec<usize>,
    original_attrs: usize,
}

impl Extractor {
    fn new(eg: &FusionGraph, model: &CostModel, roots: &[Id], original_attrs: usize) -> Self {
        let size = eg.classes().map(|c| usize::from(c.id) + 1).max().unwrap_or(0);
        let mut facts: Vec<Vec<NodeFacts>> = (0..size).map(|_| Vec::new()).collect();
        for class in eg.classes() {
            facts[usize::from(class.id)] = class
                .nodes
                .iter()
                .map(|n| {
                    let attr = attr_index(eg, n);
                    let free = sym(n) == "leaf"
                        || sym(n).starts_with("attr:")
                        || is_projection(n).is_some()
                        || attr.is_some_and(|i| eg.analysis.attrs[i].op.is_view());
                    let read: usize = children(n).iter().skip(1).map(|&c| eg[c].data.bytes).sum();
                    NodeFacts {
                        own_cost: if free {
                            0.0
                        } else {
                            model.launch + model.per_byte * read as f64
                        },
                        children: children(n).iter().map(|&c| usize::from(eg.find(c))).collect(),
                        attr,
                    }
                })
                .collect();
        }
        Extractor {
            facts,
            roots: roots.iter().map(|&r| usize::from(eg.find(r))).collect(),
            original_attrs,
        }
    }

    /// Cost of the DAG selected from the roots; infinite if the choice is cyclic.
    fn dag_cost(&self, sel: &Selection, marks: &mut [u8]) -> f64 {
        const NEW: u8 = 0;
        const OPEN: u8 = 1;
        const DONE: u8 = 2;
        marks.fill(NEW);
        let mut total = 0.0;
        let mut stack: Vec<(usize, bool)> = self.roots.iter().rev().map(|&r| (r, false)).collect();
        while let Some((class, expanded)) = stack.pop() {
            if expanded {
                marks[class] = DONE;
                continue;
            }
            match marks[class] {
                DONE => continue,
                OPEN => return f64::INFINITY,
                _ => {}
            }
            marks[class] = OPEN;
            let n = &self.facts[class][sel[class]];
            total += n.own_cost;
            stack.push((class, true));
            for &c in n.children.iter().rev() {
                match marks[c] {
                    DONE => {}
                    OPEN => return f64::INFINITY,
                    _ => stack.push((c, false)),
                }
            }
        }
        total
    }

    fn is_fused(&self, n: &NodeFacts) -> bool {
        n.attr.is_some_and(|a| a >= self.original_attrs)
    }

    /// Every class starts with its original node (rewrites only add nodes).
    fn initial(&self) -> Selection {
        self.facts
            .iter()
            .map(|nodes| {
                nodes
                    .iter()
                    .position(|n| n.attr.is_some_and(|a| a < self.original_attrs))
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Candidate moves in a deterministic (class id) order.
    fn moves(&self, eg: &FusionGraph) -> Vec<Vec<(usize, usize)>> {
        let mut moves = Vec::new();
        let mut tuple_moves: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        for (class, nodes) in self.facts.iter().enumerate() {
            for (i, n) in nodes.iter().enumerate() {
                if self.is_fused(n) && nodes.len() > 1 {
                    moves.push(vec![(class, i)]);
                }
            }
            if nodes.is_empty() {
                continue;
            }
            for (i, node) in eg[Id::from(class)].nodes.iter().enumerate() {
                if is_projection(node).is_none() {
                    continue;
                }
                let tuple = self.facts[class][i].children[0];
                if let Some(t) = self.facts[tuple].iter().position(|f| self.is_fused(f)) {
                    tuple_moves
                        .entry(tuple)
                        .or_insert_with(|| vec![(tuple, t)])
                        .push((class, i));
                }
            }
        }
        moves.extend(tuple_moves.into_values());
        moves
    }

    fn run(&self, eg: &FusionGraph) -> Selection {
        let mut sel = self.initial();
        let mut marks = vec![0u8; sel.len()];
        let mut best = self.dag_cost(&sel, &mut marks);
        let moves = self.moves(eg);
        for _round in 0..4 {
            let mut improved = false;
            for mv in &moves {
                if mv.iter().all(|&(c, n)| sel[c] == n) {
                    continue;
                }
                let saved: Vec<(usize, usize)> = mv.iter().map(|&(c, _)| (c, sel[c])).collect();
                for &(c, n) in mv {
                    sel[c] = n;
                }
                let cost = self.dag_cost(&sel, &mut marks);
                if cost < best - 1e-9 {
                    best = cost;
                    improved = true;
                } else {
                    for (c, n) in saved {
                        sel[c] = n;
                    }
                }
            }
            if !improved {
                break;
            }
        }
        sel
    }
}

/// A class's value in the rebuilt graph.
#[derive(Clone)]
enum Built {
    One(Value),
    Tuple(Vec<Value>),
}

/// Chooses the cheapest form and rebuilds a graph with the same inputs, weights
/// and named outputs as `original`.
pub fn extract(
    eg: &FusionGraph,
    roots: &[Id],
    original: &Graph,
    original_attrs: usize,
    model: &CostModel,
) -> Result<Graph, IrError> {
    let sel = Extractor::new(eg, model, roots, original_attrs).run(eg);
    // Leaf types come from the original graph (attr i = node i for original attrs).
    let leaf_types: Vec<_> = original.nodes().map(|(_, n)| n.outputs[0].clone()).collect();

    let mut b = GraphBuilder::new(&original.name);
    let mut built: HashMap<Id, Built> = HashMap::new();
    let mut stack: Vec<(Id, bool)> = roots.iter().rev().map(|&r| (eg.find(r), false)).collect();
    while let Some((class, expanded)) = stack.pop() {
        if built.contains_key(&class) {
            continue;
        }
        let n = &eg[class].nodes[sel[usize::from(class)]];
        let kids: Vec<Id> = match is_projection(n) {
            Some(_) => children(n).iter().map(|&c| eg.find(c)).collect(),
            None if sym(n) == "leaf" => vec![],
            None => children(n)[1..].iter().map(|&c| eg.find(c)).collect(),
        };
        if !expanded {
            stack.push((class, true));
            for &c in kids.iter().rev() {
                if !built.contains_key(&c) {
                    stack.push((c, false));
                }
            }
            continue;
        }
        let value = if let Some(port) = is_projection(n) {
            match &built[&kids[0]] {
                Built::Tuple(vs) => Built::One(vs[port]),
                Built::One(_) => {
                    return Err(IrError::Structure {
                        graph: original.name.clone(),
                        message: "projection of a single-result node".into(),
                    })
                }
            }
        } else {
            let ai = attr_index(eg, n).ok_or_else(|| IrError::Structure {
                graph: original.name.clone(),
                message: "e-node without attributes".into(),
            })?;
            let attr = &eg.analysis.attrs[ai];
            match &attr.op {
                Op::Input { role } => Built::One(b.input(&attr.name, role.clone(), leaf_types[ai].clone())),
                Op::Weight { key } => Built::One(b.weight(key, leaf_types[ai].clone())),
                op => {
                    let operands: Vec<Value> = kids
                        .iter()
                        .map(|c| match &built[c] {
                            Built::One(v) => *v,
                            Built::Tuple(vs) => vs[0],
                        })
                        .collect();
                    let vs = b.op_multi(op.clone(), &operands, &attr.name)?;
                    if vs.len() == 1 {
                        Built::One(vs[0])
                    } else {
                        Built::Tuple(vs)
                    }
                }
            }
        };
        built.insert(class, value);
    }
    for (out, &root) in original.outputs().iter().zip(roots) {
        match &built[&eg.find(root)] {
            Built::One(v) => b.output(&out.name, *v),
            Built::Tuple(vs) => b.output(&out.name, vs[0]),
        }
    }
    b.finish()
}
