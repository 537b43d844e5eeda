//! What `run`, `chat` and `serve` share around the generation loop: the chat
//! template and stop ids of a checkpoint, streamed text with stop strings, an
//! executor for a checkpoint, and llama.cpp-style timings on stderr.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use gemma4c_frontend::{Conversion, Model};
use gemma4c_runtime::chat_template::{gguf_special_tokens, ChatTemplate, SpecialTokens};
use gemma4c_runtime::sampler::{Sampler, SamplingParams};
use gemma4c_runtime::stop::StopStrings;
use gemma4c_runtime::tokenizer::{TextStream, Tokenizer};
use gemma4c_runtime::{Executor, Flow, ReferenceSession, RuntimeError, Timings};

use super::executors::JitOptions;
use super::run::ExecutorKind;

/// Chat-template options shared by `run --chat`, `chat` and `serve`.
#[derive(clap::Args, Clone, Default)]
pub struct ChatArgs {
    /// A system message before the conversation.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Turn on the model's thinking (Gemma 4 `enable_thinking`).
    #[arg(long)]
    pub think: bool,
    /// Use this Jinja chat template instead of the model's (chat_template.jinja,
    /// tokenizer_config.json `chat_template`, or GGUF `tokenizer.chat_template`).
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<std::path::PathBuf>,
}

/// Sampling flags shared by `run`, `chat` and `serve` (for `serve`, the
/// values used when a request does not set them).
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only from the K most likely tokens.
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Sample only from the most likely tokens whose probabilities add up to P.
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Seed of the sampler's random numbers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The sampler settings, checked (a bad value is an error naming its flag).
    pub fn sampler(&self) -> Result<Sampler> {
        Ok(Sampler::new(self.params())?)
    }

    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        }
    }
}

/// `--threads`, shared by `run`, `chat`, `serve` and `bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct ThreadsArg {
    /// Threads of the JIT executor (default: GEMMA4C_THREADS, else all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl ThreadsArg {
    /// JIT options from GEMMA4C_THREADS and `--threads` (which wins), checked
    /// before anything is loaded: 0, a huge count or a bad variable is an error.
    #[cfg(feature = "jit")]
    pub fn jit_options(&self) -> Result<JitOptions> {
        let mut opts = JitOptions::from_env()?;
        if let Some(n) = self.threads {
            opts.threads = gemma4c_runtime::jit::check_threads("--threads", n)?;
        }
        Ok(opts)
    }

    /// Without the JIT there are no threads to set.
    #[cfg(not(feature = "jit"))]
    pub fn jit_options(&self) -> Result<JitOptions> {
        Ok(JitOptions)
    }
}

/// The tokenizer of a model: a GGUF file's metadata, else the checkpoint's
/// tokenizer.json, with an error that says what needs it.
pub fn load_tokenizer(model: &Model, needed_for: &str) -> Result<Tokenizer> {
    if let Some(gguf) = model.checkpoint.gguf() {
        return Ok(gemma4c_runtime::gguf_tokenizer::from_gguf(gguf)?);
    }
    let path = model.dir.join("tokenizer.json");
    if !path.exists() {
        anyhow::bail!("{}: no tokenizer.json (needed for {needed_for})", model.dir.display());
    }
    Ok(Tokenizer::from_file(&path)?)
}

/// The chat template: `file` if given (special tokens from the model's
/// tokenizer_config.json or GGUF metadata), else the model's own (GGUF
/// `tokenizer.chat_template`, chat_template.jinja or tokenizer_config.json);
/// an error if neither.
pub fn load_template(model: &Model, file: Option<&Path>) -> Result<ChatTemplate> {
    let gguf = model.checkpoint.gguf();
    if let Some(file) = file {
        let special = match gguf {
            Some(g) => gguf_special_tokens(g),
            None => ChatTemplate::from_model_dir(&model.dir)
                .ok()
                .flatten()
                .map(|t| t.special_tokens().clone())
                .unwrap_or_else(|| special_tokens_of(&model.dir)),
        };
        return Ok(ChatTemplate::from_file(file, special)?);
    }
    if let Some(g) = gguf {
        return ChatTemplate::from_gguf(g)?.with_context(|| {
            format!(
                "{}: no chat template (no tokenizer.chat_template in its metadata); give one with --chat-template FILE",
                model.dir.display()
            )
        });
    }
    ChatTemplate::from_model_dir(&model.dir)?.with_context(|| {
        format!(
            "{}: no chat template (neither chat_template.jinja nor a chat_template in tokenizer_config.json); \
             give one with --chat-template FILE",
            model.dir.display()
        )
    })
}

/// bos/eos strings of a tokenizer_config.json that has no template ("<bos>"
/// and "<eos>", Gemma's, when it says nothing).
fn special_tokens_of(model_dir: &Path) -> SpecialTokens {
    let cfg: serde_json::Value = std::fs::read_to_string(model_dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let get = |k: &str, d: &str| match &cfg[k] {
        serde_json::Value::String(s) => s.clone(),
        v => v["content"].as_str().unwrap_or(d).to_string(),
    };
    SpecialTokens {
        bos: get("bos_token", "<bos>"),
        eos: get("eos_token", "<eos>"),
    }
}

/// Stop ids: the config's and generation_config's eos ids, plus the ids of
/// the template's end-of-turn markers (`<turn|>`, `<end_of_turn>`).
pub fn stop_ids(config_eos: &[u32], template: Option<&ChatTemplate>, tokenizer: Option<&Tokenizer>) -> Vec<u32> {
    let mut ids = config_eos.to_vec();
    if let (Some(t), Some(tok)) = (template, tokenizer) {
        for marker in t.end_of_turn_markers() {
            if let Some(id) = tok.token_to_id(marker) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
    }
    ids
}

/// Generated ids to shown text: incremental decoding, then stop strings.
pub struct TextOut<'t> {
    stream: TextStream<'t>,
    stops: StopStrings,
    eos: Vec<u32>,
    /// Everything handed out so far.
    pub text: String,
}

impl<'t> TextOut<'t> {
    pub fn new(tokenizer: &'t Tokenizer, stops: &[String], eos: &[u32]) -> TextOut<'t> {
        TextOut {
            stream: TextStream::new(tokenizer),
            stops: StopStrings::new(stops),
            eos: eos.to_vec(),
            text: String::new(),
        }
    }

    /// Takes a generated id; returns the text to show now and whether a stop
    /// string has ended the reply. Stop ids add no text.
    pub fn push(&mut self, id: u32) -> Result<(String, Flow), RuntimeError> {
        let mut out = String::new();
        if !self.eos.contains(&id) {
            if let Some(d) = self.stream.push(id).map_err(|e| RuntimeError::Other(e.to_string()))? {
                out = self.stops.push(&d);
            }
        }
        self.text.push_str(&out);
        let flow = if self.stops.stopped() {
            Flow::Stop
        } else {
            Flow::Continue
        };
        Ok((out, flow))
    }

    /// The text held back at the end.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        if let Some(d) = self.stream.finish() {
            out = self.stops.push(&d);
        }
        out.push_str(&self.stops.finish());
        self.text.push_str(&out);
        out
    }
}

/// A spinner on stderr for a step that can take more than a second (LLVM
/// compiling a big model's kernels). Hidden when stderr is not a terminal.
/// The spinner is cleared when the returned guard is dropped.
pub fn spinner(message: &str) -> Spinner {
    // indicatif draws on stderr only when it is a terminal.
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    Spinner(bar)
}

pub struct Spinner(indicatif::ProgressBar);

/// What a progress bar counts.
#[derive(Clone, Copy)]
pub enum Unit {
    Items,
    Bytes,
}

/// A progress bar on stderr for a step of known size that can take more than
/// a second (TT weight conversion, benchmark phases). Like the spinner, it is
/// drawn only when stderr is a terminal, and cleared when dropped.
pub fn progress_bar(len: u64, unit: Unit, message: &str) -> Spinner {
    let bar = indicatif::ProgressBar::new(len);
    let template = match unit {
        Unit::Items => "{msg} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})",
        Unit::Bytes => "{msg} [{bar:30}] {bytes}/{total_bytes} ({elapsed}, eta {eta})",
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    Spinner(bar)
}

impl Spinner {
    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    pub fn set_message(&self, message: &str) {
        self.0.set_message(message.to_string());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Runs the weight conversions a model is served through (`--quant` quantization,
/// GGUF MoE dequantization, Gemma 3's `1 + w` norms) now, with a byte-counted
/// progress bar on a terminal, instead of silently inside the first forward call.
pub fn convert_weights(model: &Model) -> Result<()> {
    let pending = model.checkpoint.unconverted();
    if pending.is_empty() {
        return Ok(());
    }
    let total: usize = pending.iter().map(|(_, n, _)| n).sum();
    let bar = progress_bar(total as u64, Unit::Bytes, "converting weights");
    for (key, bytes, conversion) in pending {
        bar.set_message(&match conversion {
            Conversion::Quantize(q) => format!("quantizing weights to {q}"),
            Conversion::Dequantize => "dequantizing GGUF weights to f32".to_string(),
            Conversion::PlusOne => "converting norm weights".to_string(),
        });
        model.checkpoint.convert(key)?;
        bar.inc(bytes as u64);
    }
    Ok(())
}

/// An executor for a checkpoint (no plan): the reference interpreter, or
/// kernels generated for the CPU and JIT-compiled in memory.
pub fn model_executor<'m>(
    model: &'m Model,
    kind: ExecutorKind,
    max_context: usize,
    chunk: usize,
    jit: &JitOptions,
) -> Result<Box<dyn Executor + 'm>> {
    // Binding a GGUF file's weights (the reference executor dequantizes them
    // all; the JIT those its kernels read as f32) can take longer than the compile.
    let what = match (kind, model.checkpoint.gguf().is_some()) {
        (ExecutorKind::Jit, true) => Some("compiling CPU kernels (LLVM JIT) and loading GGUF weights"),
        (ExecutorKind::Jit, false) => Some("compiling CPU kernels (LLVM JIT)"),
        (ExecutorKind::Reference, true) => Some("dequantizing GGUF weights"),
        (ExecutorKind::Reference, false) => None,
    };
    convert_weights(model)?;
    let _spinner = what.map(spinner);
    Ok(match kind {
        ExecutorKind::Reference => Box::new(ReferenceSession::new(model, max_context, chunk)?),
        ExecutorKind::Jit => {
            let cfg = &model.config;
            let dtype_of = |k: &str| model.dtype_of(k);
            let compiled = super::compile::compile_model(
                cfg,
                &dtype_of,
                Some(&model.dir),
                &gemma4c_backends::cpu::CpuBackend,
                true,
                Some(max_context),
                Some(chunk),
            )?;
            super::executors::jit_compiled(compiled.plan, model, jit)?
        }
    })
}

/// Wall time of the steps before generation.
#[derive(Default)]
pub struct Setup {
    pub load: Duration,
    pub compile: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// llama.cpp-style timing lines on stderr: loading and compiling.
pub fn print_setup_timings(setup: &Setup) {
    eprintln!("gemma4c: load time     = {:10.2} ms", ms(setup.load));
    eprintln!("gemma4c: compile time  = {:10.2} ms", ms(setup.compile));
}

/// llama.cpp-style timing lines on stderr: the whole run.
pub fn print_timings(setup: &Setup, t: &Timings) {
    print_setup_timings(setup);
    print_generation_timings(t);
}

/// llama.cpp-style timing lines on stderr: prompt and generation.
pub fn print_generation_timings(t: &Timings) {
    eprintln!(
        "gemma4c: prompt eval   = {:10.2} ms / {:5} tokens ({:8.2} tokens per second)",
        ms(t.prompt_time),
        t.prompt_tokens,
        t.prompt_tokens_per_s()
    );
    eprintln!(
        "gemma4c: eval time     = {:10.2} ms / {:5} tokens ({:8.2} tokens per second)",
        ms(t.generate_time),
        t.generated_tokens,
        t.generated_tokens_per_s()
    );
}
