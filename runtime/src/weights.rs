//! Weights for the reference executor: every tensor a graph reads, widened to f32
//! once at load (the reference semantics are f32; bf16/f16 widen exactly).

use std::collections::HashMap;

use gemma4c_frontend::Model;
use gemma4c_ir::{Graph, Op, Tensor, WeightSource};

use crate::error::RuntimeError;

#[derive(Default)]
pub struct HostWeights {
    tensors: HashMap<String, Tensor>,
}

impl HostWeights {
    /// Loads the weights `graph` reads that are not loaded yet.
    pub fn load_for(&mut self, model: &Model, graph: &Graph) -> Result<(), RuntimeError> {
        for (_, node) in graph.weights() {
            let Op::Weight { key } = &node.op else { continue };
            if self.tensors.contains_key(key) {
                continue;
            }
            let data = model.checkpoint.load_f32(key)?;
            let shape = node.outputs[0].shape.clone();
            if shape.iter().product::<usize>() != data.len() {
                return Err(RuntimeError::Other(format!(
                    "tensor `{key}` holds {} elements, the graph expects {:?}",
                    data.len(),
                    shape
                )));
            }
            self.tensors.insert(key.clone(), Tensor::f32(shape, data));
        }
        Ok(())
    }
}

impl WeightSource for HostWeights {
    fn weight(&self, key: &str) -> Option<&Tensor> {
        self.tensors.get(key)
    }
}
