//! The generation loop: prefill the prompt, then sample and feed one token at a
//! time until `max_new_tokens` or an end-of-sequence id.

use crate::error::RuntimeError;
use crate::sampler::Sampler;
use crate::session::Executor;

pub struct Generation<'a> {
    pub prompt: &'a [u32],
    pub max_new_tokens: usize,
    /// Generation stops after emitting any of these (the id itself is kept, as
    /// Hugging Face `generate` does).
    pub eos_token_ids: &'a [u32],
}

/// Sees each new id with the logits it was sampled from.
pub type TokenSink<'a> = &'a mut dyn FnMut(u32, &[f32]) -> Result<(), RuntimeError>;

/// Runs the loop; `on_token` sees each new id with the logits it was sampled
/// from (for streaming and `--logits-out`). Returns the generated ids.
pub fn generate(
    exec: &mut dyn Executor,
    req: &Generation,
    sampler: &mut Sampler,
    on_token: TokenSink<'_>,
) -> Result<Vec<u32>, RuntimeError> {
    if req.prompt.is_empty() {
        return Err(RuntimeError::Request(
            "the prompt is empty: give at least one token".into(),
        ));
    }
    let mut generated = Vec::with_capacity(req.max_new_tokens);
    if req.max_new_tokens == 0 {
        return Ok(generated);
    }
    let mut logits = exec.forward(req.prompt)?;
    loop {
        let token = sampler.sample(&logits);
        on_token(token, &logits)?;
        generated.push(token);
        if generated.len() == req.max_new_tokens || req.eos_token_ids.contains(&token) {
            return Ok(generated);
        }
        logits = exec.forward(&[token])?;
    }
}
