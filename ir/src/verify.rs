//! The verifier: re-checks a whole graph (built, rewritten or deserialized).
//!
//! - operands come from earlier nodes (index order is topological) and name a
//!   result that exists;
//! - every non-leaf node's stored result types equal what the type rules infer;
//! - leaves have exactly one result; outputs name existing values and are unique;
//! - inputs have unique names.

use std::collections::HashSet;

use crate::error::IrError;
use crate::graph::Graph;
use crate::infer::infer;

pub fn verify(graph: &Graph) -> Result<(), IrError> {
    let structure = |message: String| IrError::Structure {
        graph: graph.name.clone(),
        message,
    };
    let mut input_names = HashSet::new();
    for (id, node) in graph.nodes() {
        let operands = graph.operands(id);
        for (slot, v) in operands.iter().enumerate() {
            if v.node >= id {
                return Err(structure(format!(
                    "node `{}`: operand {slot} comes from a later node (graph not in topological order)",
                    node.name
                )));
            }
            if v.port as usize >= graph.node(v.node).outputs.len() {
                return Err(structure(format!(
                    "node `{}`: operand {slot} reads result {} of `{}`, which has {}",
                    node.name,
                    v.port,
                    graph.node(v.node).name,
                    graph.node(v.node).outputs.len()
                )));
            }
        }
        if node.op.is_leaf() {
            if !operands.is_empty() || node.outputs.len() != 1 {
                return Err(structure(format!(
                    "leaf `{}` must have no operands and one result",
                    node.name
                )));
            }
            if matches!(node.op, crate::Op::Input { .. }) && !input_names.insert(node.name.as_str()) {
                return Err(structure(format!("two inputs are named `{}`", node.name)));
            }
            continue;
        }
        let types: Vec<_> = operands.iter().map(|v| graph.value_type(*v)).collect();
        let inferred = infer(&node.op, &types).map_err(|message| IrError::Type {
            node: node.name.clone(),
            op: node.op.to_string(),
            message,
        })?;
        if inferred != node.outputs {
            return Err(IrError::Type {
                node: node.name.clone(),
                op: node.op.to_string(),
                message: format!(
                    "stored result types {:?} differ from inferred {:?}",
                    node.outputs, inferred
                ),
            });
        }
    }
    let mut names = HashSet::new();
    for out in graph.outputs() {
        if !names.insert(out.name.as_str()) {
            return Err(structure(format!("two outputs are named `{}`", out.name)));
        }
        if out.value.node.index() >= graph.node_count()
            || out.value.port as usize >= graph.node(out.value.node).outputs.len()
        {
            return Err(structure(format!("output `{}` names no value", out.name)));
        }
    }
    if graph.outputs().is_empty() {
        return Err(structure("graph has no outputs".to_string()));
    }
    Ok(())
}
