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
use super::Extraction;
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

    /// Tries the moves in order, keeping each that makes the selected DAG
    /// cheaper, for up to four rounds. Costs are kept incrementally
    /// (`Incremental`), so a move costs the size of what it changes. Also
    /// says whether the result was cyclic and `run_full` had to redo it.
    fn run(&self, eg: &FusionGraph) -> (Selection, bool) {
        let moves = self.moves(eg);
        let mut inc = Incremental::new(self, self.initial());
        for _round in 0..4 {
            let mut improved = false;
            for mv in &moves {
                if mv.iter().all(|&(c, n)| inc.sel[c] == n) || inc.makes_cycle(mv) {
                    continue;
                }
                let saved: Vec<(usize, usize)> = mv.iter().map(|&(c, _)| (c, inc.sel[c])).collect();
                let delta: f64 = mv.iter().map(|&(c, n)| inc.set(c, n)).sum();
                if delta < -1e-9 {
                    improved = true;
                } else {
                    for &(c, n) in saved.iter().rev() {
                        inc.set(c, n);
                    }
                }
            }
            if !improved {
                break;
            }
        }
        // The cycle search is bounded in rank; confirm the result once.
        let mut marks = vec![0u8; inc.sel.len()];
        if self.dag_cost(&inc.sel, &mut marks).is_finite() {
            (inc.sel, false)
        } else {
            (self.run_full(eg), true)
        }
    }

    /// The same search recomputing the whole DAG's cost per move (quadratic
    /// in layers): the fallback when the incremental result is cyclic, and
    /// the reference the incremental search is tested against.
    fn run_full(&self, eg: &FusionGraph) -> Selection {
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

/// The DAG cost of a selection, kept up to date as moves are tried: every
/// class counts the selected nodes (and roots) that use it, and a class costs
/// while its count is positive. A move then costs time proportional to the
/// part of the DAG it changes, not to the whole graph, so extraction is
/// linear in layers. Decisions are those of `dag_cost`: the same moves in the
/// same order, kept when the selected DAG gets cheaper and stays acyclic.
struct Incremental<'a> {
    ex: &'a Extractor,
    sel: Selection,
    refs: Vec<u32>,
    /// Topological rank of each class (its original node's index; classes
    /// made by rewrites rank just above their children).
    rank: Vec<f64>,
    /// How far above its class a selected child may rank (tuples that fused
    /// nodes' projections read); bounds the cycle search.
    climb: f64,
    stack: Vec<usize>,
    seen: Vec<u32>,
    epoch: u32,
}

impl<'a> Incremental<'a> {
    fn new(ex: &'a Extractor, sel: Selection) -> Self {
        let n = sel.len();
        let mut rank = vec![f64::NAN; n];
        for (class, nodes) in ex.facts.iter().enumerate() {
            if let Some(a) = nodes
                .iter()
                .filter_map(|f| f.attr)
                .filter(|&a| a < ex.original_attrs)
                .min()
            {
                rank[class] = a as f64;
            }
        }
        // Classes without an original node (attribute leaves, tuples): above their children.
        for _ in 0..3 {
            for (class, nodes) in ex.facts.iter().enumerate() {
                if !rank[class].is_nan() || nodes.is_empty() {
                    continue;
                }
                let top = nodes
                    .iter()
                    .flat_map(|f| f.children.iter().map(|&c| rank[c]))
                    .filter(|r| !r.is_nan())
                    .fold(-1.0f64, f64::max);
                rank[class] = top + 0.5;
            }
        }
        let mut climb = 0.0f64;
        for (class, nodes) in ex.facts.iter().enumerate() {
            for f in nodes {
                for &c in &f.children {
                    if !rank[c].is_nan() && !rank[class].is_nan() {
                        climb = climb.max(rank[c] - rank[class]);
                    }
                }
            }
        }
        let mut inc = Incremental {
            ex,
            sel,
            refs: vec![0; n],
            rank,
            climb,
            stack: Vec::new(),
            seen: vec![0; n],
            epoch: 0,
        };
        for &r in &ex.roots {
            inc.add_ref(r);
        }
        inc
    }

    fn own(&self, class: usize) -> f64 {
        self.ex.facts[class][self.sel[class]].own_cost
    }

    /// Adds a use of `class`; returns the cost that became reachable.
    fn add_ref(&mut self, class: usize) -> f64 {
        let mut added = 0.0;
        self.stack.push(class);
        while let Some(c) = self.stack.pop() {
            self.refs[c] += 1;
            if self.refs[c] == 1 {
                added += self.own(c);
                let node = &self.ex.facts[c][self.sel[c]];
                self.stack.extend(node.children.iter().copied());
            }
        }
        added
    }

    /// Removes a use of `class`; returns the cost that became unreachable.
    fn remove_ref(&mut self, class: usize) -> f64 {
        let mut removed = 0.0;
        self.stack.push(class);
        while let Some(c) = self.stack.pop() {
            self.refs[c] -= 1;
            if self.refs[c] == 0 {
                removed += self.own(c);
                let node = &self.ex.facts[c][self.sel[c]];
                self.stack.extend(node.children.iter().copied());
            }
        }
        removed
    }

    /// Selects node `n` in `class`; returns the change in DAG cost.
    fn set(&mut self, class: usize, n: usize) -> f64 {
        let old = self.sel[class];
        if old == n {
            return 0.0;
        }
        if self.refs[class] == 0 {
            self.sel[class] = n;
            return 0.0;
        }
        let old_own = self.own(class);
        self.sel[class] = n;
        let mut delta = self.own(class) - old_own;
        for i in 0..self.ex.facts[class][n].children.len() {
            delta += self.add_ref(self.ex.facts[class][n].children[i]);
        }
        for i in 0..self.ex.facts[class][old].children.len() {
            delta -= self.remove_ref(self.ex.facts[class][old].children[i]);
        }
        delta
    }

    /// Whether selecting the move's nodes would put a reachable class on a
    /// cycle: some moved class reachable again from its new node's children.
    fn makes_cycle(&mut self, mv: &[(usize, usize)]) -> bool {
        let saved: Vec<usize> = mv.iter().map(|&(c, _)| self.sel[c]).collect();
        for &(c, n) in mv {
            self.sel[c] = n;
        }
        let mut cycle = false;
        for &(c, n) in mv {
            self.epoch += 1;
            // A path back to `c` cannot pass far below it: edges go down in
            // rank except to tuples, which are at most `climb` higher.
            let floor = self.rank[c] - 4.0 * self.climb - 8.0;
            let mut stack: Vec<usize> = self.ex.facts[c][n].children.clone();
            while let Some(x) = stack.pop() {
                if x == c {
                    cycle = true;
                    break;
                }
                if self.seen[x] == self.epoch || self.rank[x] < floor {
                    continue;
                }
                self.seen[x] = self.epoch;
                stack.extend(self.ex.facts[x][self.sel[x]].children.iter().copied());
            }
            if cycle {
                break;
            }
        }
        for (&(c, _), s) in mv.iter().zip(saved) {
            self.sel[c] = s;
        }
        cycle
    }
}

/// A class's value in the rebuilt graph.
#[derive(Clone)]
enum Built {
    One(Value),
    Tuple(Vec<Value>),
}

/// Chooses the cheapest form and rebuilds a graph with the same inputs, weights
/// and named outputs as `original`. Also says whether the incremental search
/// fell back to the full one.
pub fn extract(
    eg: &FusionGraph,
    roots: &[Id],
    original: &Graph,
    original_attrs: usize,
    model: &CostModel,
    extraction: Extraction,
) -> Result<(Graph, bool), IrError> {
    let ex = Extractor::new(eg, model, roots, original_attrs);
    let (sel, fell_back) = match extraction {
        Extraction::Incremental => ex.run(eg),
        Extraction::Full => (ex.run_full(eg), false),
    };
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
    Ok((b.finish()?, fell_back))
}
