//! The reference executor: runs the frontend's call graphs with the IR's
//! reference semantics, keeping the KV caches and the position between calls.
//!
//! Prompts are fed in chunks of at most `max_chunk` tokens (one prefill graph per
//! distinct chunk length), then one token per decode step. All graphs share the
//! cache shapes fixed by `max_context` and `max_chunk`.

use std::collections::HashMap;

use gemma4c_frontend::gemma4::{BuildOptions, LogitRows};
use gemma4c_frontend::Model;
use gemma4c_ir::{interpret, Graph, InputRole, Observer, Op, Tensor};

use crate::error::RuntimeError;
use crate::weights::HostWeights;

/// Something that turns tokens into next-token logits, one call at a time.
pub trait Executor {
    /// Feeds `ids` at the current position; returns the logits of the last one.
    fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>, RuntimeError>;
    /// Feeds `ids` like [`Executor::forward`] and returns the greedy next id (the argmax of
    /// the last logits, lowest id on ties). GPU executors override it to pick the id on the
    /// device, so only the id crosses to the host.
    fn forward_greedy(&mut self, ids: &[u32]) -> Result<u32, RuntimeError> {
        let logits = self.forward(ids)?;
        crate::generate::check_logits(&logits, None)?;
        Ok(crate::sampler::argmax(&logits))
    }
    /// Tokens consumed so far.
    fn position(&self) -> usize;
    /// Forgets the context (zeroed KV caches, position 0), keeping what was
    /// compiled and loaded: `chat`'s /reset.
    fn reset(&mut self);
}

pub struct ReferenceSession<'m> {
    model: &'m Model,
    weights: HostWeights,
    max_context: usize,
    max_chunk: usize,
    graphs: HashMap<(usize, bool), Graph>,
    caches: HashMap<String, Tensor>,
    position: usize,
}

impl<'m> ReferenceSession<'m> {
    /// A session for up to `max_context` tokens (prompt + generated), feeding the
    /// prompt in chunks of at most `max_chunk` tokens.
    pub fn new(model: &'m Model, max_context: usize, max_chunk: usize) -> Result<Self, RuntimeError> {
        let limit = model.config.max_position_embeddings;
        if max_context > limit {
            return Err(RuntimeError::Request(format!(
                "{max_context} tokens (prompt + new tokens) exceed max_position_embeddings = {limit} in {}",
                model.config.path.display()
            )));
        }
        if max_context == 0 || max_chunk == 0 {
            return Err(RuntimeError::Request("the context must hold at least one token".into()));
        }
        Ok(ReferenceSession {
            model,
            weights: HostWeights::default(),
            max_context,
            max_chunk: max_chunk.min(max_context),
            graphs: HashMap::new(),
            caches: HashMap::new(),
            position: 0,
        })
    }

    fn graph(&mut self, seq_len: usize, all_logits: bool) -> Result<&Graph, RuntimeError> {
        let key = (seq_len, all_logits);
        if !self.graphs.contains_key(&key) {
            let mut opts = BuildOptions::new(&self.model.config, seq_len, self.max_context, self.max_chunk);
            opts.logits = if all_logits { LogitRows::All } else { LogitRows::Last };
            let g = self.model.graph(&opts)?;
            self.weights.load_for(self.model, &g)?;
            if self.caches.is_empty() {
                for (_, n) in g.inputs() {
                    if matches!(
                        n.op,
                        Op::Input {
                            role: InputRole::KvCache
                        }
                    ) {
                        self.caches.insert(n.name.clone(), Tensor::zeros(&n.outputs[0]));
                    }
                }
            }
            self.graphs.insert(key, g);
        }
        Ok(&self.graphs[&key])
    }

    /// Runs one call of `ids.len() <= max_chunk` tokens; returns the logits tensor
    /// (`[S, V]` with `all_logits`, else `[1, V]`). `observe` sees every node result.
    pub fn call(
        &mut self,
        ids: &[u32],
        all_logits: bool,
        observe: Option<Observer<'_>>,
    ) -> Result<Tensor, RuntimeError> {
        let cfg = &self.model.config;
        if ids.is_empty() || ids.len() > self.max_chunk {
            return Err(RuntimeError::Request(format!(
                "a call takes 1..={} tokens, got {}",
                self.max_chunk,
                ids.len()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(RuntimeError::Request(format!(
                "token id {bad} is out of range: the vocabulary has {} tokens (vocab_size in {})",
                cfg.vocab_size,
                cfg.path.display()
            )));
        }
        if let Some(ple) = &cfg.ple {
            if let Some(&bad) = ids.iter().find(|&&t| t as usize >= ple.vocab) {
                return Err(RuntimeError::Request(format!(
                    "token id {bad} has no per-layer embedding: vocab_size_per_layer_input is {} in {}",
                    ple.vocab,
                    cfg.path.display()
                )));
            }
        }
        if self.position + ids.len() > self.max_context {
            return Err(RuntimeError::Request(format!(
                "position {} + {} tokens exceeds the session's context of {} tokens",
                self.position,
                ids.len(),
                self.max_context
            )));
        }
        self.graph(ids.len(), all_logits)?;
        let graph = &self.graphs[&(ids.len(), all_logits)];
        let mut inputs = std::mem::take(&mut self.caches);
        inputs.insert(
            "token_ids".into(),
            Tensor::i32([ids.len()], ids.iter().map(|&t| t as i32).collect()),
        );
        inputs.insert("position".into(), Tensor::i32([1], vec![self.position as i32]));
        let mut outputs = interpret(graph, inputs, &self.weights, observe)?;
        let logits = outputs
            .remove("logits")
            .ok_or_else(|| RuntimeError::Other("graph has no `logits` output".into()))?;
        self.caches = outputs;
        self.position += ids.len();
        Ok(logits)
    }
}

impl Executor for ReferenceSession<'_> {
    fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        let mut last = None;
        for chunk in ids.chunks(self.max_chunk) {
            last = Some(self.call(chunk, false, None)?);
        }
        let logits = last.ok_or_else(|| RuntimeError::Request("no tokens to feed".into()))?;
        match logits.data {
            gemma4c_ir::Data::F32(v) => Ok(v),
            gemma4c_ir::Data::I32(_) => Err(RuntimeError::Other("logits are not f32".into())),
        }
    }

    fn position(&self) -> usize {
        self.position
    }

    fn reset(&mut self) {
        for cache in self.caches.values_mut() {
            match &mut cache.data {
                gemma4c_ir::Data::F32(v) => v.fill(0.0),
                gemma4c_ir::Data::I32(v) => v.fill(0),
            }
        }
        self.position = 0;
    }
}
