//! The dataflow graph: nodes (one op each, possibly several results) on a
//! petgraph `DiGraph`, with edges from producer result to consumer operand slot.
//!
//! Invariant kept by `GraphBuilder` and checked by the verifier: every operand is
//! produced by a node with a smaller index, so index order is a topological order
//! and printing, evaluation and planning can walk nodes front to back.

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};

use crate::dtype::TensorType;
use crate::op::Op;

/// Index of a node.
pub type NodeId = NodeIndex<u32>;

/// One result of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Value {
    pub node: NodeId,
    pub port: u32,
}

impl Value {
    pub fn new(node: NodeId, port: u32) -> Self {
        Value { node, port }
    }
}

/// A node: its op, the Hugging Face-style name of what it computes
/// (`layers.3.self_attn.q_norm`), and the types of its results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub name: String,
    pub outputs: Vec<TensorType>,
}

/// Edge weight: which result of the producer feeds which operand of the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operand {
    pub port: u32,
    pub slot: u32,
}

/// A named graph output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub name: String,
    pub value: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Graph {
    pub name: String,
    pub(crate) g: DiGraph<Node, Operand, u32>,
    pub(crate) outputs: Vec<Output>,
}

impl Graph {
    pub(crate) fn empty(name: &str) -> Self {
        Graph {
            name: name.to_string(),
            g: DiGraph::default(),
            outputs: Vec::new(),
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Node ids in topological (= index) order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices()
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        self.g.node_indices().map(move |i| (i, &self.g[i]))
    }

    /// Operands of a node, in slot order.
    pub fn operands(&self, id: NodeId) -> Vec<Value> {
        let mut edges: Vec<(u32, Value)> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (e.weight().slot, Value::new(e.source(), e.weight().port)))
            .collect();
        edges.sort_by_key(|(slot, _)| *slot);
        edges.into_iter().map(|(_, v)| v).collect()
    }

    /// Nodes that read any result of `id`, in index order, without duplicates.
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut users: Vec<NodeId> = self
            .g
            .edges_directed(id, Direction::Outgoing)
            .map(|e| e.target())
            .collect();
        users.sort();
        users.dedup();
        users
    }

    pub fn value_type(&self, v: Value) -> &TensorType {
        &self.g[v.node].outputs[v.port as usize]
    }

    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    pub fn output(&self, name: &str) -> Option<Value> {
        self.outputs.iter().find(|o| o.name == name).map(|o| o.value)
    }

    /// Input nodes in index order.
    pub fn inputs(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        self.nodes().filter(|(_, n)| matches!(n.op, Op::Input { .. }))
    }

    /// Weight nodes in index order.
    pub fn weights(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        self.nodes().filter(|(_, n)| matches!(n.op, Op::Weight { .. }))
    }

    /// Finds a node by its name (first match in index order).
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.nodes().find(|(_, n)| n.name == name).map(|(i, _)| i)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("graph serialization cannot fail")
    }

    pub fn from_json(s: &str) -> Result<Graph, serde_json::Error> {
        serde_json::from_str(s)
    }
}
