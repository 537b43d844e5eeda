//! The Gemma 4 text decoder as a graph, written to read like the model
//! definition (`transformers`' `Gemma4TextModel.forward`, op for op).
//!
//! One builder makes both the decode step (S = 1) and prefill graphs (S > 1).
//! Inputs: `token_ids` i32[S], `position` i32[1] (position of the first token),
//! and one K and one V cache per layer that owns K/V. Outputs: `logits`, and the
//! updated caches under the same names as the inputs.

use gemma4c_ir::{DType, Graph, GraphBuilder, InputRole, IrError, Op, TensorType, Value};

use crate::config::{Family, Gemma4Config, LayerConfig, LayerType};

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    /// Every position of the call (`[S, V]`).
    All,
    /// Only the last position (`[1, V]`), what generation needs.
    Last,
}

/// Shapes of one call graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Tokens per call (1 for decode).
    pub seq_len: usize,
    /// Slots of each full-attention cache (the longest context to support).
    pub full_capacity: usize,
    /// Slots of each sliding-window cache (a ring buffer): at least
    /// `sliding_window - 1 + seq_len` so that a call's own keys never evict a key
    /// one of its queries still sees.
    pub sliding_capacity: usize,
    pub logits: LogitRows,
    /// The dtype activations are computed in. Hugging Face multiplies embeddings
    /// by `sqrt(H)` cast to the *weight* dtype of the running model, so a bf16
    /// run scales by 39.25 (E2B) where an f32 run of the same checkpoint scales
    /// by 39.1918. gemma4c's executors compute in f32.
    pub activation_dtype: DType,
}

impl BuildOptions {
    /// Graph shapes for calls of up to `max_chunk` tokens in a context of
    /// `max_context` tokens. Decode and prefill graphs built with the same
    /// `max_context`/`max_chunk` share their cache shapes.
    pub fn new(cfg: &Gemma4Config, seq_len: usize, max_context: usize, max_chunk: usize) -> Self {
        BuildOptions {
            seq_len,
            full_capacity: max_context,
            sliding_capacity: max_context.min(cfg.sliding_window - 1 + max_chunk.max(seq_len)),
            logits: LogitRows::Last,
            activation_dtype: DType::F32,
        }
    }

    pub fn capacity(&self, t: LayerType) -> usize {
        match t {
            LayerType::Sliding => self.sliding_capacity,
            LayerType::Full => self.full_capacity,
        }
    }
}

/// Names of a layer's cache inputs/outputs.
pub fn k_cache_name(layer: usize) -> String {
    format!("layers.{layer}.self_attn.k_cache")
}

pub fn v_cache_name(layer: usize) -> String {
    format!("layers.{layer}.self_attn.v_cache")
}

/// Checkpoint key and `[out, in]`-style shape of every weight the model reads,
/// in the order the graph first uses them.
pub fn weight_manifest(cfg: &Gemma4Config) -> Result<Vec<(String, Vec<usize>)>, IrError> {
    let g = build(cfg, &BuildOptions::new(cfg, 1, 2, 1), &|_| cfg.dtype)?;
    Ok(g.weights()
        .filter_map(|(_, n)| match &n.op {
            Op::Weight { key } => Some((key.clone(), n.outputs[0].shape.clone())),
            _ => None,
        })
        .collect())
}

/// Builds the call graph. `dtype_of` gives each checkpoint tensor's dtype (from
/// the checkpoint, or the config's `dtype` when compiling from config alone).
pub fn build(cfg: &Gemma4Config, opts: &BuildOptions, dtype_of: &dyn Fn(&str) -> DType) -> Result<Graph, IrError> {
    let family = match cfg.family {
        Family::Gemma3 => "gemma3",
        Family::Gemma4 => "gemma4",
    };
    let name = if opts.seq_len == 1 {
        format!("{family}_decode")
    } else {
        format!("{family}_prefill_{}", opts.seq_len)
    };
    let mut m = ModelBuilder {
        b: GraphBuilder::new(&name),
        cfg,
        opts,
        dtype_of,
    };
    match cfg.family {
        Family::Gemma3 => m.gemma3_forward()?,
        Family::Gemma4 => m.forward()?,
    }
    m.b.finish()
}

pub(crate) struct ModelBuilder<'a> {
    pub(crate) b: GraphBuilder,
    pub(crate) cfg: &'a Gemma4Config,
    pub(crate) opts: &'a BuildOptions,
    dtype_of: &'a dyn Fn(&str) -> DType,
}

/// K and V caches a layer attends over (after this call's write).
#[derive(Clone, Copy)]
pub(crate) struct LayerKv {
    pub(crate) k: Value,
    pub(crate) v: Value,
}

impl ModelBuilder<'_> {
    pub(crate) fn w(&mut self, key: &str, shape: &[usize]) -> Value {
        let dtype = (self.dtype_of)(key);
        self.b.weight(key, TensorType::new(dtype, shape))
    }

    pub(crate) fn norm(&mut self, x: Value, weight_key: Option<&str>, name: &str) -> Result<Value, IrError> {
        let dim = self.b.value_type(x).last_dim();
        let w = weight_key.map(|k| self.w(k, &[dim]));
        self.b.rms_norm(x, w, self.cfg.rms_norm_eps, name)
    }

    /// `nn.Linear` without bias: `x @ W^T`, W stored `[out, in]`.
    pub(crate) fn linear(&mut self, x: Value, module: &str, out: usize) -> Result<Value, IrError> {
        let inp = self.b.value_type(x).last_dim();
        let w = self.w(&format!("{module}.weight"), &[out, inp]);
        self.b.matmul(x, w, module)
    }

    /// `sqrt(dim)` rounded to the dtype the model runs in, as
    /// `Gemma4ScaledWordEmbedding` does (`embed_scale.to(weight.dtype)`).
    pub(crate) fn embed_scale(&self, dim: usize) -> f32 {
        self.opts.activation_dtype.round_f32((dim as f32).sqrt())
    }

    fn forward(&mut self) -> Result<(), IrError> {
        let cfg = self.cfg;
        let s = self.opts.seq_len;
        let h = cfg.hidden_size;

        let ids = self.b.input("token_ids", InputRole::TokenIds, TensorType::i32([s]));
        let pos = self.b.input("position", InputRole::Position, TensorType::i32([1]));
        let mut caches = Vec::new();
        for l in cfg.layers.iter().filter(|l| !l.shares_kv()) {
            let ty = TensorType::f32([l.num_kv_heads, self.opts.capacity(l.layer_type), l.head_dim]);
            let k = self.b.input(&k_cache_name(l.index), InputRole::KvCache, ty.clone());
            let v = self.b.input(&v_cache_name(l.index), InputRole::KvCache, ty);
            caches.push((l.index, LayerKv { k, v }));
        }

        // Multimodal checkpoints embed image/video/audio placeholders as pad
        // (only ids inside the vocabulary can occur, so others need no op).
        let placeholders: Vec<i32> = cfg
            .multimodal_placeholder_ids
            .iter()
            .filter(|&&t| (t as usize) < cfg.vocab_size)
            .map(|&t| t as i32)
            .collect();
        let text_ids = if placeholders.is_empty() {
            ids
        } else {
            let op = Op::ReplaceIds {
                ids: placeholders,
                with: cfg.pad_token_id as i32,
            };
            self.b.op(op, &[ids], "placeholder_ids_to_pad")?
        };

        // Token embedding, scaled by sqrt(H) in the activation dtype.
        let table = self.w("embed_tokens.weight", &[cfg.vocab_size, h]);
        let x = self.b.embedding(table, text_ids, "embed_tokens")?;
        let scale = self.embed_scale(h);
        let mut x = self.b.scale(x, scale, "embed_tokens.scale")?;

        let ple = match cfg.ple {
            Some(_) => Some(self.per_layer_inputs(text_ids, x)?),
            None => None,
        };

        let mut kv_of: Vec<Option<LayerKv>> = vec![None; cfg.num_hidden_layers];
        for layer in &cfg.layers {
            let p = layer.index;
            let own_cache = caches.iter().find(|(i, _)| *i == p).map(|(_, c)| *c);
            x = self.decoder_layer(layer, x, pos, own_cache, &mut kv_of, ple)?;
        }

        // Head: final norm, tied LM head (the unscaled table), soft-cap.
        if self.opts.logits == LogitRows::Last && s > 1 {
            x = self.b.slice(x, 0, s - 1, s, "last_position")?;
        }
        let x = self.norm(x, Some("norm.weight"), "norm")?;
        let lm_head = if cfg.tie_word_embeddings {
            table
        } else {
            self.w("lm_head.weight", &[cfg.vocab_size, h])
        };
        let mut logits = self.b.matmul(x, lm_head, "lm_head")?;
        if let Some(cap) = cfg.final_logit_softcapping {
            logits = self.b.op(Op::Softcap { cap }, &[logits], "final_logit_softcapping")?;
        }
        self.b.output("logits", logits);
        for (i, _) in &caches {
            let kv = kv_of[*i].expect("every cache-owning layer wrote its cache");
            self.b.output(&k_cache_name(*i), kv.k);
            self.b.output(&v_cache_name(*i), kv.v);
        }
        Ok(())
    }

    /// PLE inputs for all layers, `[S, L, P]`:
    /// `(RMSNorm(x0 @ W_proj^T * H^-1/2) + table[ids] * sqrt(P)) * 2^-1/2`.
    fn per_layer_inputs(&mut self, ids: Value, x0: Value) -> Result<Value, IrError> {
        let cfg = self.cfg;
        let ple = cfg.ple.as_ref().expect("called only with PLE");
        let (s, l, p) = (self.opts.seq_len, cfg.num_hidden_layers, ple.hidden);
        let table = self.w("embed_tokens_per_layer.weight", &[ple.vocab, l * p]);
        let tok = self.b.embedding(table, ids, "embed_tokens_per_layer")?;
        let tok = self.b.scale(tok, self.embed_scale(p), "embed_tokens_per_layer.scale")?;
        let tok = self.b.reshape(tok, &[s, l, p], "embed_tokens_per_layer.reshape")?;

        let ctx = self.linear(x0, "per_layer_model_projection", l * p)?;
        let ctx = self.b.scale(
            ctx,
            (cfg.hidden_size as f32).powf(-0.5),
            "per_layer_model_projection.scale",
        )?;
        let ctx = self.b.reshape(ctx, &[s, l, p], "per_layer_model_projection.reshape")?;
        let ctx = self.norm(
            ctx,
            Some("per_layer_projection_norm.weight"),
            "per_layer_projection_norm",
        )?;
        let sum = self.b.add(ctx, tok, "per_layer_inputs.add")?;
        self.b.scale(sum, 0.5f32.sqrt(), "per_layer_inputs")
    }

    fn decoder_layer(
        &mut self,
        layer: &LayerConfig,
        x: Value,
        pos: Value,
        own_cache: Option<LayerKv>,
        kv_of: &mut [Option<LayerKv>],
        ple: Option<Value>,
    ) -> Result<Value, IrError> {
        let cfg = self.cfg;
        let l = layer.index;
        let pre = format!("layers.{l}");

        // ---- attention block (sandwich norms) ----
        let residual = x;
        let h = self.norm(
            x,
            Some(&format!("{pre}.input_layernorm.weight")),
            &format!("{pre}.input_layernorm"),
        )?;
        let kv = self.self_attention(layer, h, pos, own_cache, kv_of)?;
        let attn = self.attention_output(layer, pos, kv)?;
        let attn = self.norm(
            attn,
            Some(&format!("{pre}.post_attention_layernorm.weight")),
            &format!("{pre}.post_attention_layernorm"),
        )?;
        let x = self.b.add(residual, attn, &format!("{pre}.attention_residual"))?;

        // ---- feed-forward block ----
        let residual = x;
        let h = self.norm(
            x,
            Some(&format!("{pre}.pre_feedforward_layernorm.weight")),
            &format!("{pre}.pre_feedforward_layernorm"),
        )?;
        let mut m = self.mlp(&format!("{pre}.mlp"), h, layer.mlp_width)?;
        if cfg.moe.is_some() {
            m = self.moe_block(&pre, m, residual)?;
        }
        let m = self.norm(
            m,
            Some(&format!("{pre}.post_feedforward_layernorm.weight")),
            &format!("{pre}.post_feedforward_layernorm"),
        )?;
        let mut x = self.b.add(residual, m, &format!("{pre}.mlp_residual"))?;

        // ---- per-layer embedding injection (after the FFN residual) ----
        if let (Some(ple), Some(pc)) = (ple, cfg.ple.as_ref()) {
            let s = self.opts.seq_len;
            let mine = self.b.slice(ple, 1, l, l + 1, &format!("{pre}.per_layer_input"))?;
            let mine = self
                .b
                .reshape(mine, &[s, pc.hidden], &format!("{pre}.per_layer_input.reshape"))?;
            let g = self.linear(x, &format!("{pre}.per_layer_input_gate"), pc.hidden)?;
            let g = self.b.gelu_tanh(g, &format!("{pre}.per_layer_input_gate.act"))?;
            let g = self.b.mul(g, mine, &format!("{pre}.per_layer_input_mul"))?;
            let g = self.linear(g, &format!("{pre}.per_layer_projection"), cfg.hidden_size)?;
            let g = self.norm(
                g,
                Some(&format!("{pre}.post_per_layer_input_norm.weight")),
                &format!("{pre}.post_per_layer_input_norm"),
            )?;
            x = self.b.add(x, g, &format!("{pre}.per_layer_residual"))?;
        }

        // ---- layer scalar: scales the whole residual stream ----
        let scalar = self.w(&format!("{pre}.layer_scalar"), &[1]);
        self.b.mul(x, scalar, &pre)
    }

    /// Q projection/norm/RoPE and, for layers that own K/V, K/V projection, norms,
    /// RoPE on K and the cache writes. Returns the (q, caches) this layer attends with.
    fn self_attention(
        &mut self,
        layer: &LayerConfig,
        h: Value,
        pos: Value,
        own_cache: Option<LayerKv>,
        kv_of: &mut [Option<LayerKv>],
    ) -> Result<(Value, LayerKv), IrError> {
        let cfg = self.cfg;
        let (s, d, nkv) = (self.opts.seq_len, layer.head_dim, layer.num_kv_heads);
        let nq = cfg.num_attention_heads;
        let pre = format!("layers.{}.self_attn", layer.index);
        let rope = cfg.rope(layer.layer_type).spec(d);

        let q = self.linear(h, &format!("{pre}.q_proj"), nq * d)?;
        let q = self.b.reshape(q, &[s, nq, d], &format!("{pre}.q_proj.reshape"))?;
        let q = self.norm(q, Some(&format!("{pre}.q_norm.weight")), &format!("{pre}.q_norm"))?;
        let q = self.b.rope(q, pos, &rope, &format!("{pre}.q_rope"))?;

        let kv = match own_cache {
            None => kv_of[layer.kv_source].expect("the KV source layer precedes its consumers"),
            Some(cache) => {
                let k_raw = self.linear(h, &format!("{pre}.k_proj"), nkv * d)?;
                let k_raw = self.b.reshape(k_raw, &[s, nkv, d], &format!("{pre}.k_proj.reshape"))?;
                // K=V layers have no v_proj: V is the raw K projection.
                let v_raw = if layer.k_eq_v {
                    k_raw
                } else {
                    let v = self.linear(h, &format!("{pre}.v_proj"), nkv * d)?;
                    self.b.reshape(v, &[s, nkv, d], &format!("{pre}.v_proj.reshape"))?
                };
                let k = self.norm(k_raw, Some(&format!("{pre}.k_norm.weight")), &format!("{pre}.k_norm"))?;
                let k = self.b.rope(k, pos, &rope, &format!("{pre}.k_rope"))?;
                let v = self.norm(v_raw, None, &format!("{pre}.v_norm"))?;
                let k = self
                    .b
                    .op(Op::KvWrite, &[cache.k, k, pos], &format!("{pre}.k_cache_write"))?;
                let v = self
                    .b
                    .op(Op::KvWrite, &[cache.v, v, pos], &format!("{pre}.v_cache_write"))?;
                LayerKv { k, v }
            }
        };
        kv_of[layer.index] = Some(kv);
        Ok((q, kv))
    }

    fn attention_output(
        &mut self,
        layer: &LayerConfig,
        pos: Value,
        (q, kv): (Value, LayerKv),
    ) -> Result<Value, IrError> {
        let cfg = self.cfg;
        let pre = format!("layers.{}.self_attn", layer.index);
        let window = match layer.layer_type {
            LayerType::Sliding => Some(cfg.sliding_window),
            LayerType::Full => None,
        };
        // Scale 1.0 in Gemma 4: q and k are RMS-normalized, there is no 1/sqrt(head_dim).
        let a = self.b.op(
            Op::Attention {
                window,
                scale: cfg.attention_scale,
            },
            &[q, kv.k, kv.v, pos],
            &format!("{pre}.attention"),
        )?;
        let width = cfg.num_attention_heads * layer.head_dim;
        let a = self
            .b
            .reshape(a, &[self.opts.seq_len, width], &format!("{pre}.attention.reshape"))?;
        self.linear(a, &format!("{pre}.o_proj"), cfg.hidden_size)
    }

    /// `down(gelu_tanh(gate(h)) * up(h))`.
    pub(crate) fn mlp(&mut self, pre: &str, h: Value, width: usize) -> Result<Value, IrError> {
        let gate = self.linear(h, &format!("{pre}.gate_proj"), width)?;
        let up = self.linear(h, &format!("{pre}.up_proj"), width)?;
        let gate = self.b.gelu_tanh(gate, &format!("{pre}.act_fn"))?;
        let prod = self.b.mul(gate, up, &format!("{pre}.gate_mul_up"))?;
        self.linear(prod, &format!("{pre}.down_proj"), self.cfg.hidden_size)
    }

    /// 26B-A4B: dense MLP output `m` plus routed experts, each with its own post-norm.
    /// The router reads the raw residual; the experts read `pre_feedforward_layernorm_2`.
    fn moe_block(&mut self, pre: &str, m: Value, residual: Value) -> Result<Value, IrError> {
        let cfg = self.cfg;
        let moe = cfg.moe.as_ref().expect("called only with MoE");
        let (h, e, i) = (cfg.hidden_size, moe.num_experts, moe.intermediate_size);
        let m1 = self.norm(
            m,
            Some(&format!("{pre}.post_feedforward_layernorm_1.weight")),
            &format!("{pre}.post_feedforward_layernorm_1"),
        )?;

        let r = self.norm(residual, None, &format!("{pre}.router.norm"))?;
        let router_scale = self.w(&format!("{pre}.router.scale"), &[h]);
        let r = self.b.mul(r, router_scale, &format!("{pre}.router.scaled"))?;
        let r = self
            .b
            .scale(r, (h as f32).powf(-0.5), &format!("{pre}.router.scalar_root_size"))?;
        let scores = self.linear(r, &format!("{pre}.router.proj"), e)?;
        let per_expert_scale = self.w(&format!("{pre}.router.per_expert_scale"), &[e]);
        let route = self.b.op_multi(
            Op::MoeRoute { top_k: moe.top_k },
            &[scores, per_expert_scale],
            &format!("{pre}.router"),
        )?;

        let h2 = self.norm(
            residual,
            Some(&format!("{pre}.pre_feedforward_layernorm_2.weight")),
            &format!("{pre}.pre_feedforward_layernorm_2"),
        )?;
        let gate_up = self.w(&format!("{pre}.experts.gate_up_proj"), &[e, 2 * i, h]);
        let down = self.w(&format!("{pre}.experts.down_proj"), &[e, h, i]);
        let m2 = self.b.op(
            Op::MoeExperts,
            &[h2, route[0], route[1], gate_up, down],
            &format!("{pre}.experts"),
        )?;
        let m2 = self.norm(
            m2,
            Some(&format!("{pre}.post_feedforward_layernorm_2.weight")),
            &format!("{pre}.post_feedforward_layernorm_2"),
        )?;
        self.b.add(m1, m2, &format!("{pre}.moe_sum"))
    }
}
