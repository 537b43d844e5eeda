//! The generation loop: prefill the prompt, then sample and feed one token at a
//! time until `max_new_tokens`, a stop id, or the caller says stop.

use std::time::{Duration, Instant};

use crate::error::RuntimeError;
use crate::sampler::Sampler;
use crate::session::Executor;

pub struct Generation<'a> {
    /// Tokens to feed before sampling (the whole prompt, or the new tokens of
    /// a chat turn on top of the session's cache).
    pub prompt: &'a [u32],
    pub max_new_tokens: usize,
    /// Generation stops after emitting any of these (the id itself is kept, as
    /// Hugging Face `generate` does): the config's and generation_config's
    /// `eos_token_id` plus the chat template's end-of-turn token.
    pub eos_token_ids: &'a [u32],
    /// Whether the sink needs each step's logits (`--logits-out`). When it does not and the
    /// sampler is greedy, the executor picks the id itself ([`Executor::forward_greedy`]: on
    /// the device for GPU executors, so only the id crosses to the host) and the sink sees an
    /// empty slice.
    pub logits: bool,
}

/// What the token sink tells the loop after seeing a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop now (a stop string was completed, the user pressed Ctrl-C, the
    /// client went away); the token just seen is kept.
    Stop,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `max_new_tokens` reached.
    Length,
    /// A stop id (EOS / end of turn) was sampled.
    Eos,
    /// The sink returned [`Flow::Stop`].
    Caller,
}

/// Token counts and wall times of one generation, for llama.cpp-style reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub prompt_tokens: usize,
    /// Feeding the prompt up to the first logits.
    pub prompt_time: Duration,
    pub generated_tokens: usize,
    /// Sampling every token and feeding all but the last.
    pub generate_time: Duration,
}

impl Timings {
    pub fn prompt_tokens_per_s(&self) -> f64 {
        rate(self.prompt_tokens, self.prompt_time)
    }

    pub fn generated_tokens_per_s(&self) -> f64 {
        rate(self.generated_tokens, self.generate_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    let s = t.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// The generated ids and how the loop ended.
#[derive(Clone, Debug)]
pub struct Output {
    pub ids: Vec<u32>,
    pub reason: StopReason,
    pub timings: Timings,
}

/// Sees each new id with the logits it was sampled from.
pub type TokenSink<'a> = &'a mut dyn FnMut(u32, &[f32]) -> Result<Flow, RuntimeError>;

/// Runs the loop; `on_token` sees each new id with the logits it was sampled
/// from (for streaming, stop strings and `--logits-out`).
///
/// The last generated id is sampled but not fed: the executor's position is
/// `prompt.len() + ids.len() - 1` past where it started (a chat feeds it first
/// on the next turn).
pub fn generate(
    exec: &mut dyn Executor,
    req: &Generation,
    sampler: &mut Sampler,
    on_token: TokenSink<'_>,
) -> Result<Output, RuntimeError> {
    if req.prompt.is_empty() {
        return Err(RuntimeError::Request(
            "the prompt is empty: give at least one token".into(),
        ));
    }
    let mut timings = Timings {
        prompt_tokens: req.prompt.len(),
        ..Timings::default()
    };
    let mut ids = Vec::with_capacity(req.max_new_tokens.min(1 << 16));
    if req.max_new_tokens == 0 {
        return Ok(Output {
            ids,
            reason: StopReason::Length,
            timings,
        });
    }
    // Greedy without logits: the executor picks each id.
    let on_executor = sampler.is_greedy() && !req.logits;
    let mut logits = Vec::new();
    let start = Instant::now();
    let mut token = next_id(exec, sampler, req.prompt, on_executor, &mut logits, 0)?;
    timings.prompt_time = start.elapsed();
    let start = Instant::now();
    let reason = loop {
        ids.push(token);
        let flow = on_token(token, &logits)?;
        if req.eos_token_ids.contains(&token) {
            break StopReason::Eos;
        }
        if flow == Flow::Stop {
            break StopReason::Caller;
        }
        if ids.len() == req.max_new_tokens {
            break StopReason::Length;
        }
        token = next_id(exec, sampler, &[token], on_executor, &mut logits, ids.len())?;
    };
    timings.generate_time = start.elapsed();
    timings.generated_tokens = ids.len();
    Ok(Output { ids, reason, timings })
}

/// Feeds `fed` and picks generated token number `step`: by the executor when `on_executor`
/// (greedy, logits not wanted; `logits` is left empty), else by `sampler` from the logits,
/// which are left in `logits` for the sink.
fn next_id(
    exec: &mut dyn Executor,
    sampler: &mut Sampler,
    fed: &[u32],
    on_executor: bool,
    logits: &mut Vec<f32>,
    step: usize,
) -> Result<u32, RuntimeError> {
    if on_executor {
        return exec.forward_greedy(fed);
    }
    *logits = exec.forward(fed)?;
    check_logits(logits, Some(step))?;
    Ok(sampler.sample(logits))
}

/// NaN logits (from NaN or infinite weights, or an overflow) have no argmax:
/// say so instead of sampling token 0 forever.
/// `step`: the generated token's number, when known.
pub(crate) fn check_logits(logits: &[f32], step: Option<usize>) -> Result<(), RuntimeError> {
    let nan = logits.iter().filter(|x| x.is_nan()).count();
    if nan > 0 {
        let which = step.map_or(String::new(), |s| format!(" of generated token {s}"));
        return Err(RuntimeError::Request(format!(
            "the logits{which} are NaN ({nan} of {}): the checkpoint's weights \
             (or its activations) hold NaN or infinite values",
            logits.len()
        )));
    }
    Ok(())
}
