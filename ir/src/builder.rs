//! Builder API: adds nodes in topological order, infers result types as it goes,
//! and reports an ill-typed op with the name of the node that was being built.

use crate::dtype::TensorType;
use crate::error::IrError;
use crate::graph::{Graph, Node, NodeId, Operand, Output, Value};
use crate::infer::infer;
use crate::op::{InputRole, Op, RopeSpec};
use crate::verify::verify;

pub struct GraphBuilder {
    graph: Graph,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        GraphBuilder {
            graph: Graph::empty(name),
        }
    }

    pub fn value_type(&self, v: Value) -> &TensorType {
        self.graph.value_type(v)
    }

    fn add_node(&mut self, op: Op, name: &str, operands: &[Value], outputs: Vec<TensorType>) -> NodeId {
        let id = self.graph.g.add_node(Node {
            op,
            name: name.to_string(),
            outputs,
        });
        for (slot, v) in operands.iter().enumerate() {
            self.graph.g.add_edge(
                v.node,
                id,
                Operand {
                    port: v.port,
                    slot: slot as u32,
                },
            );
        }
        id
    }

    /// A graph input bound by `name` at run time.
    pub fn input(&mut self, name: &str, role: InputRole, ty: TensorType) -> Value {
        Value::new(self.add_node(Op::Input { role }, name, &[], vec![ty]), 0)
    }

    /// A checkpoint tensor; the node is named by its key.
    pub fn weight(&mut self, key: &str, ty: TensorType) -> Value {
        let op = Op::Weight { key: key.to_string() };
        Value::new(self.add_node(op, key, &[], vec![ty]), 0)
    }

    /// Adds any non-leaf op; returns all of its results.
    pub fn op_multi(&mut self, op: Op, operands: &[Value], name: &str) -> Result<Vec<Value>, IrError> {
        let types: Vec<&TensorType> = operands.iter().map(|v| self.graph.value_type(*v)).collect();
        let outputs = infer(&op, &types).map_err(|message| IrError::Type {
            node: name.to_string(),
            op: op.to_string(),
            message,
        })?;
        let n = outputs.len();
        let id = self.add_node(op, name, operands, outputs);
        Ok((0..n as u32).map(|port| Value::new(id, port)).collect())
    }

    /// Adds a single-result op.
    pub fn op(&mut self, op: Op, operands: &[Value], name: &str) -> Result<Value, IrError> {
        Ok(self.op_multi(op, operands, name)?[0])
    }

    pub fn add(&mut self, a: Value, b: Value, name: &str) -> Result<Value, IrError> {
        self.op(Op::Add, &[a, b], name)
    }

    pub fn mul(&mut self, a: Value, b: Value, name: &str) -> Result<Value, IrError> {
        self.op(Op::Mul, &[a, b], name)
    }

    pub fn scale(&mut self, x: Value, factor: f32, name: &str) -> Result<Value, IrError> {
        self.op(Op::Scale { factor }, &[x], name)
    }

    pub fn gelu_tanh(&mut self, x: Value, name: &str) -> Result<Value, IrError> {
        self.op(Op::GeluTanh, &[x], name)
    }

    pub fn reshape(&mut self, x: Value, shape: &[usize], name: &str) -> Result<Value, IrError> {
        self.op(Op::Reshape { shape: shape.to_vec() }, &[x], name)
    }

    pub fn slice(&mut self, x: Value, axis: usize, start: usize, end: usize, name: &str) -> Result<Value, IrError> {
        self.op(Op::Slice { axis, start, end }, &[x], name)
    }

    pub fn embedding(&mut self, table: Value, ids: Value, name: &str) -> Result<Value, IrError> {
        self.op(Op::Embedding, &[table, ids], name)
    }

    /// `x @ w^T` with `w` stored `[out, in]`.
    pub fn matmul(&mut self, x: Value, w: Value, name: &str) -> Result<Value, IrError> {
        self.op(Op::MatMul, &[x, w], name)
    }

    /// RMSNorm over the last dim, with a weight (`x̂ · w`) or without.
    pub fn rms_norm(&mut self, x: Value, weight: Option<Value>, eps: f32, name: &str) -> Result<Value, IrError> {
        match weight {
            Some(w) => self.op(Op::RmsNorm { eps }, &[x, w], name),
            None => self.op(Op::RmsNorm { eps }, &[x], name),
        }
    }

    pub fn rope(&mut self, x: Value, pos: Value, rope: &RopeSpec, name: &str) -> Result<Value, IrError> {
        self.op(Op::Rope { rope: rope.clone() }, &[x, pos], name)
    }

    /// Declares a named graph output.
    pub fn output(&mut self, name: &str, value: Value) {
        self.graph.outputs.push(Output {
            name: name.to_string(),
            value,
        });
    }

    /// Finishes and verifies the graph.
    pub fn finish(self) -> Result<Graph, IrError> {
        verify(&self.graph)?;
        Ok(self.graph)
    }
}
