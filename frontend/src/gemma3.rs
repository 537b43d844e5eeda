//! The Gemma 3 text decoder as a graph, written to read like
//! `transformers`' `Gemma3TextModel.forward`, with the same ops, inputs and
//! outputs as the Gemma 4 builder (`gemma4.rs`, whose helpers it shares).
//!
//! Where Gemma 3 differs from Gemma 4 it is an attribute, not another op:
//! - attention scores are scaled by `query_pre_attn_scalar^-0.5`
//!   (`cfg.attention_scale`) instead of 1.0;
//! - RMSNorm scales by `1 + w`: the weight store hands the graph `1 + w` (for
//!   Hugging Face checkpoints it adds the 1 at load; llama.cpp's GGUF converter
//!   already stored `1 + w`), so the graph's `rms_norm` multiplies by the stored
//!   weight exactly as in Gemma 4;
//! - no V norm, no layer scalar, no PLE, MoE or KV sharing.

use gemma4c_ir::{InputRole, IrError, Op, TensorType, Value};

use crate::config::{LayerConfig, LayerType};
use crate::gemma4::{k_cache_name, v_cache_name, LayerKv, LogitRows, ModelBuilder};

impl ModelBuilder<'_> {
    pub(crate) fn gemma3_forward(&mut self) -> Result<(), IrError> {
        let cfg = self.cfg;
        let s = self.opts.seq_len;
        let h = cfg.hidden_size;

        let ids = self.b.input("token_ids", InputRole::TokenIds, TensorType::i32([s]));
        let pos = self.b.input("position", InputRole::Position, TensorType::i32([1]));
        let mut caches = Vec::new();
        for l in &cfg.layers {
            let ty = TensorType::f32([l.num_kv_heads, self.opts.capacity(l.layer_type), l.head_dim]);
            let k = self.b.input(&k_cache_name(l.index), InputRole::KvCache, ty.clone());
            let v = self.b.input(&v_cache_name(l.index), InputRole::KvCache, ty);
            caches.push(LayerKv { k, v });
        }

        // Token embedding, scaled by sqrt(H) in the activation dtype.
        let table = self.w("embed_tokens.weight", &[cfg.vocab_size, h]);
        let x = self.b.embedding(table, ids, "embed_tokens")?;
        let scale = self.embed_scale(h);
        let mut x = self.b.scale(x, scale, "embed_tokens.scale")?;

        let mut written = Vec::with_capacity(cfg.layers.len());
        for (layer, cache) in cfg.layers.iter().zip(&caches) {
            let (y, kv) = self.gemma3_decoder_layer(layer, x, pos, *cache)?;
            x = y;
            written.push(kv);
        }

        // Head: final norm, LM head (tied to the unscaled table by default).
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
        for (layer, kv) in cfg.layers.iter().zip(written) {
            self.b.output(&k_cache_name(layer.index), kv.k);
            self.b.output(&v_cache_name(layer.index), kv.v);
        }
        Ok(())
    }

    /// Sandwich-normed attention and MLP blocks; returns the new residual stream
    /// and the layer's updated caches.
    fn gemma3_decoder_layer(
        &mut self,
        layer: &LayerConfig,
        x: Value,
        pos: Value,
        cache: LayerKv,
    ) -> Result<(Value, LayerKv), IrError> {
        let pre = format!("layers.{}", layer.index);

        let residual = x;
        let h = self.norm(
            x,
            Some(&format!("{pre}.input_layernorm.weight")),
            &format!("{pre}.input_layernorm"),
        )?;
        let (attn, kv) = self.gemma3_attention(layer, h, pos, cache)?;
        let attn = self.norm(
            attn,
            Some(&format!("{pre}.post_attention_layernorm.weight")),
            &format!("{pre}.post_attention_layernorm"),
        )?;
        let x = self.b.add(residual, attn, &format!("{pre}.attention_residual"))?;

        let residual = x;
        let h = self.norm(
            x,
            Some(&format!("{pre}.pre_feedforward_layernorm.weight")),
            &format!("{pre}.pre_feedforward_layernorm"),
        )?;
        let m = self.mlp(&format!("{pre}.mlp"), h, layer.mlp_width)?;
        let m = self.norm(
            m,
            Some(&format!("{pre}.post_feedforward_layernorm.weight")),
            &format!("{pre}.post_feedforward_layernorm"),
        )?;
        // The layer's output carries the layer's name (as in gemma4.rs).
        let x = self.b.add(residual, m, &pre)?;
        Ok((x, kv))
    }

    /// q/k/v projections, q/k norms, RoPE (local or global base by layer type),
    /// cache writes, scaled causal attention (windowed on sliding layers), o_proj.
    fn gemma3_attention(
        &mut self,
        layer: &LayerConfig,
        h: Value,
        pos: Value,
        cache: LayerKv,
    ) -> Result<(Value, LayerKv), IrError> {
        let cfg = self.cfg;
        let (s, d, nkv, nq) = (
            self.opts.seq_len,
            layer.head_dim,
            layer.num_kv_heads,
            cfg.num_attention_heads,
        );
        let pre = format!("layers.{}.self_attn", layer.index);
        let rope = cfg.rope(layer.layer_type).spec(d);

        let q = self.linear(h, &format!("{pre}.q_proj"), nq * d)?;
        let q = self.b.reshape(q, &[s, nq, d], &format!("{pre}.q_proj.reshape"))?;
        let q = self.norm(q, Some(&format!("{pre}.q_norm.weight")), &format!("{pre}.q_norm"))?;
        let q = self.b.rope(q, pos, &rope, &format!("{pre}.q_rope"))?;

        let k = self.linear(h, &format!("{pre}.k_proj"), nkv * d)?;
        let k = self.b.reshape(k, &[s, nkv, d], &format!("{pre}.k_proj.reshape"))?;
        let k = self.norm(k, Some(&format!("{pre}.k_norm.weight")), &format!("{pre}.k_norm"))?;
        let k = self.b.rope(k, pos, &rope, &format!("{pre}.k_rope"))?;
        let v = self.linear(h, &format!("{pre}.v_proj"), nkv * d)?;
        let v = self.b.reshape(v, &[s, nkv, d], &format!("{pre}.v_proj.reshape"))?;
        let k = self
            .b
            .op(Op::KvWrite, &[cache.k, k, pos], &format!("{pre}.k_cache_write"))?;
        let v = self
            .b
            .op(Op::KvWrite, &[cache.v, v, pos], &format!("{pre}.v_cache_write"))?;

        let window = match layer.layer_type {
            LayerType::Sliding => Some(cfg.sliding_window),
            LayerType::Full => None,
        };
        let a = self.b.op(
            Op::Attention {
                window,
                scale: cfg.attention_scale,
            },
            &[q, k, v, pos],
            &format!("{pre}.attention"),
        )?;
        let a = self.b.reshape(a, &[s, nq * d], &format!("{pre}.attention.reshape"))?;
        let o = self.linear(a, &format!("{pre}.o_proj"), cfg.hidden_size)?;
        Ok((o, LayerKv { k, v }))
    }
}
