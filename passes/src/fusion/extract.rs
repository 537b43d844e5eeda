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

/// Which node each class uses (index into the class's node list).
type Selection = BTreeMap<Id, usize>;

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

struct Extractor<'a> {
    eg: &'a FusionGraph,
    model: &'a CostModel,
    roots: &'a [Id],
    original_attrs: usize,
}

impl Extractor<'_> {
    fn own_cost(&self, n: &FusionLang) -> f64 {
        if sym(n) == "leaf" || sym(n).starts_with("attr:") || is_projection(n).is_some() {
            return 0.0;
        }
        let op = attr_index(self.eg, n).map(|i| &self.eg.analysis.attrs[i].op);
        let read: usize = children(n)[1..].iter().map(|&c| self.eg[c].data.bytes).sum();
        match op {
            Some(op) if op.is_view() => 0.0,
            _ => self.model.launch + self.model.per_byte * read as f64,
        }
    }

    /// Cost of the DAG selected from the roots; infinite if the choice is cyclic.
    fn dag_cost(&self, sel: &Selection) -> f64 {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Open,
            Done,
        }
        let mut marks: HashMap<Id, Mark> = HashMap::new();
        let mut total = 0.0;
        let mut stack: Vec<(Id, bool)> = self.roots.iter().rev().map(|&r| (self.eg.find(r), false)).collect();
        while let Some((class, expanded)) = stack.pop() {
            if expanded {
                marks.insert(class, Mark::Done);
                continue;
            }
            match marks.get(&class) {
                Some(Mark::Done) => continue,
                Some(Mark::Open) => return f64::INFINITY,
                None => {}
            }
            marks.insert(class, Mark::Open);
            let n = &self.eg[class].nodes[sel[&class]];
            total += self.own_cost(n);
            stack.push((class, true));
            for &c in children(n).iter().rev() {
                let c = self.eg.find(c);
                match marks.get(&c) {
                    Some(Mark::Done) => {}
                    Some(Mark::Open) => return f64::INFINITY,
                    None => stack.push((c, false)),
                }
            }
        }
        total
    }

    fn initial(&self) -> Selection {
        let mut sel = Selection::new();
        for class in self.eg.classes() {
            let pick = class
                .nodes
                .iter()
                .position(|n| attr_index(self.eg, n).is_some_and(|i| i < self.original_attrs))
                .unwrap_or(0);
            sel.insert(class.id, pick);
        }
        sel
    }

    /// Candidate moves in a deterministic order.
    fn moves(&self) -> Vec<Vec<(Id, usize)>> {
        let mut moves = Vec::new();
        let mut tuple_moves: BTreeMap<Id, Vec<(Id, usize)>> = BTreeMap::new();
        let mut classes: Vec<Id> = self.eg.classes().map(|c| c.id).collect();
        classes.sort();
        for &class in &classes {
            for (i, n) in self.eg[class].nodes.iter().enumerate() {
                let fused = attr_index(self.eg, n).is_some_and(|a| a >= self.original_attrs);
                if fused && self.eg[class].nodes.len() > 1 {
                    moves.push(vec![(class, i)]);
                }
                if is_projection(n).is_some() {
                    let tuple = self.eg.find(children(n)[0]);
                    let tuple_node = self.eg[tuple]
                        .nodes
                        .iter()
                        .position(|t| attr_index(self.eg, t).is_some_and(|a| a >= self.original_attrs));
                    if let Some(t) = tuple_node {
                        let m = tuple_moves.entry(tuple).or_insert_with(|| vec![(tuple, t)]);
                        m.push((class, i));
                    }
                }
            }
        }
        moves.extend(tuple_moves.into_values());
        moves
    }

    fn run(&self) -> Selection {
        let mut sel = self.initial();
        let mut best = self.dag_cost(&sel);
        let moves = self.moves();
        for _round in 0..4 {
            let mut improved = false;
            for mv in &moves {
                let saved: Vec<(Id, usize)> = mv.iter().map(|(c, _)| (*c, sel[c])).collect();
                if saved.iter().zip(mv).all(|((_, old), (_, new))| old == new) {
                    continue;
                }
                for &(c, n) in mv {
                    sel.insert(c, n);
                }
                let cost = self.dag_cost(&sel);
                if cost < best - 1e-9 {
                    best = cost;
                    improved = true;
                } else {
                    for (c, n) in saved {
                        sel.insert(c, n);
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
    let x = Extractor {
        eg,
        model,
        roots,
        original_attrs,
    };
    let sel = x.run();
    // Leaf types come from the original graph (attr i = node i for original attrs).
    let leaf_types: Vec<_> = original.nodes().map(|(_, n)| n.outputs[0].clone()).collect();

    let mut b = GraphBuilder::new(&original.name);
    let mut built: HashMap<Id, Built> = HashMap::new();
    let mut stack: Vec<(Id, bool)> = roots.iter().rev().map(|&r| (eg.find(r), false)).collect();
    while let Some((class, expanded)) = stack.pop() {
        if built.contains_key(&class) {
            continue;
        }
        let n = &eg[class].nodes[sel[&class]];
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
