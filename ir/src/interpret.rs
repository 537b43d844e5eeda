//! Runs a whole graph with the reference semantics.
//!
//! Inputs are moved in by name and weights are borrowed, so a KV cache threaded
//! through `kv_write` is updated in place when the write is its last use (what
//! every target does), and no weight is copied.

use std::collections::HashMap;

use crate::error::IrError;
use crate::eval::{eval, update_cache};
use crate::graph::{Graph, Node, NodeId};
use crate::op::Op;
use crate::tensor::Tensor;

/// Where weight values come from.
pub trait WeightSource {
    fn weight(&self, key: &str) -> Option<&Tensor>;
}

impl WeightSource for HashMap<String, Tensor> {
    fn weight(&self, key: &str) -> Option<&Tensor> {
        self.get(key)
    }
}

enum Slot<'w> {
    Empty,
    Borrowed(&'w Tensor),
    Owned(Vec<Tensor>),
}

/// Sees every non-leaf node's results as they are computed.
pub type Observer<'a> = &'a mut dyn FnMut(NodeId, &Node, &[Tensor]);

/// Evaluates `graph`. `observe` (if given) sees every non-leaf node's results as
/// they are computed, for divergence reports against a reference.
pub fn interpret<'w>(
    graph: &Graph,
    mut inputs: HashMap<String, Tensor>,
    weights: &'w dyn WeightSource,
    mut observe: Option<Observer<'_>>,
) -> Result<HashMap<String, Tensor>, IrError> {
    let n = graph.node_count();
    // Last node reading each node's results; graph outputs live to the end.
    let mut last_use = vec![0usize; n];
    for id in graph.node_ids() {
        for v in graph.operands(id) {
            last_use[v.node.index()] = last_use[v.node.index()].max(id.index());
        }
    }
    for out in graph.outputs() {
        last_use[out.value.node.index()] = usize::MAX;
    }

    let mut slots: Vec<Slot<'w>> = (0..n).map(|_| Slot::Empty).collect();
    let eval_err = |node: &Node, message: String| IrError::Eval {
        node: node.name.clone(),
        op: node.op.to_string(),
        message,
    };

    for (id, node) in graph.nodes() {
        let i = id.index();
        match &node.op {
            Op::Input { .. } => {
                let t = inputs
                    .remove(&node.name)
                    .ok_or_else(|| eval_err(node, "no value bound for this input".to_string()))?;
                if !t.fits(&node.outputs[0]) {
                    return Err(eval_err(
                        node,
                        format!("bound {} but the input is {}", t.describe(), node.outputs[0]),
                    ));
                }
                slots[i] = Slot::Owned(vec![t]);
                continue;
            }
            Op::Weight { key } => {
                let t = weights
                    .weight(key)
                    .ok_or_else(|| eval_err(node, format!("weight `{key}` is not loaded")))?;
                if !t.fits(&node.outputs[0]) {
                    return Err(eval_err(
                        node,
                        format!("weight is {} but the graph expects {}", t.describe(), node.outputs[0]),
                    ));
                }
                slots[i] = Slot::Borrowed(t);
                continue;
            }
            _ => {}
        }
        let operands = graph.operands(id);
        let results = if node.op.updates_cache() && last_use[operands[0].node.index()] == i {
            // The cache dies here: take it and write in place.
            let mut cache = match std::mem::replace(&mut slots[operands[0].node.index()], Slot::Empty) {
                Slot::Owned(mut v) if v.len() == 1 => v.remove(0),
                Slot::Borrowed(t) => t.clone(),
                _ => return Err(eval_err(node, "cache value is missing".to_string())),
            };
            let rest: Option<Vec<&Tensor>> = operands[1..].iter().map(|v| fetch(&slots, *v)).collect();
            let rest = rest.ok_or_else(|| eval_err(node, "missing operand".to_string()))?;
            update_cache(&node.op, &mut cache, &rest).map_err(|m| eval_err(node, m))?;
            vec![cache]
        } else {
            let args: Option<Vec<&Tensor>> = operands.iter().map(|v| fetch(&slots, *v)).collect();
            let args = args.ok_or_else(|| eval_err(node, "missing operand".to_string()))?;
            eval(&node.op, &args).map_err(|m| eval_err(node, m))?
        };
        if let Some(obs) = observe.as_deref_mut() {
            obs(id, node, &results);
        }
        slots[i] = Slot::Owned(results);
        for v in operands {
            if last_use[v.node.index()] == i {
                slots[v.node.index()] = Slot::Empty;
            }
        }
    }

    let mut outputs = HashMap::new();
    for out in graph.outputs() {
        let t = fetch(&slots, out.value).ok_or_else(|| IrError::Structure {
            graph: graph.name.clone(),
            message: format!("output `{}` was not computed", out.name),
        })?;
        outputs.insert(out.name.clone(), t.clone());
    }
    Ok(outputs)
}

fn fetch<'a>(slots: &'a [Slot<'_>], v: crate::graph::Value) -> Option<&'a Tensor> {
    match &slots[v.node.index()] {
        Slot::Borrowed(t) => (v.port == 0).then_some(*t),
        Slot::Owned(ts) => ts.get(v.port as usize),
        Slot::Empty => None,
    }
}
