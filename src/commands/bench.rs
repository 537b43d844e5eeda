//! `gemma4c bench`: prefill and decode speed of the JIT executor (or, with `--plan`, of a
//! GPU plan: `bench_gpu.rs`), weight bytes read per decoded token, and the memory bandwidth
//! measured in the same run (decode of a dense model is bandwidth-bound: the roofline is
//! bandwidth / bytes per token).

use std::path::PathBuf;
#[cfg(feature = "jit")]
use std::time::Instant;

use anyhow::{bail, Result};
#[cfg(feature = "jit")]
use gemma4c_runtime::jit::{measure_bandwidth, JitSession};
#[cfg(feature = "jit")]
use gemma4c_runtime::Executor;
#[cfg(feature = "jit")]
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face checkpoint directory (with --plan: default, the plan's source).
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// A compiled GPU plan (`compile --target wgpu | cuda-sm80 | cuda-sm90`) to time instead of
    /// the CPU JIT; its weights are --model's.
    #[arg(long, value_name = "OUT")]
    pub(crate) plan: Option<PathBuf>,
    #[command(flatten)]
    threads: super::textgen::ThreadsArg,
    /// Decoded tokens to time.
    #[arg(long, default_value_t = 32)]
    pub(crate) tokens: usize,
    /// Prompt tokens to time prefill with (fed in chunks of min(this, sliding window)).
    #[arg(long, default_value_t = 128)]
    pub(crate) prompt_tokens: usize,
    /// Also print the time per kernel of the decode step.
    #[arg(long)]
    profile: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Quantize the checkpoint's matmul weights at load, as `run --quant` does (CPU JIT only).
    #[arg(long, value_name = "FORMAT", value_parser = super::parse_quant, conflicts_with = "plan")]
    quant: Option<gemma4c_ir::QuantFormat>,
    /// With --quant, also quantize the token embedding (and so a tied LM head), as llama.cpp's
    /// files do; by default it stays as stored. The PLE table always stays.
    #[arg(long, requires = "quant")]
    quant_embedding: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.tokens == 0 || args.prompt_tokens == 0 {
        bail!("--tokens and --prompt-tokens must be at least 1");
    }
    if args.plan.is_some() {
        return super::bench_gpu::run(&args);
    }
    cpu(args)
}

#[cfg(not(feature = "jit"))]
fn cpu(_: Args) -> Result<()> {
    bail!("this gemma4c was built without the LLVM JIT (cargo feature `jit`): bench a GPU plan with --plan OUT")
}

#[cfg(feature = "jit")]
fn cpu(args: Args) -> Result<()> {
    let Some(model_dir) = &args.model else {
        bail!("give --model DIR (or --plan OUT for a GPU plan)");
    };
    let model = super::open_model(model_dir, super::quant_spec(args.quant, args.quant_embedding))?;
    let cfg = &model.config;
    let ctx = args.prompt_tokens.saturating_add(args.tokens).saturating_add(1);
    if ctx > cfg.max_position_embeddings {
        bail!(
            "--prompt-tokens + --tokens exceed max_position_embeddings = {}",
            cfg.max_position_embeddings
        );
    }
    let chunk = args.prompt_tokens.min(cfg.sliding_window);
    let mut opts = args.threads.jit_options()?;
    opts.profile = args.profile;

    let start = Instant::now();
    let dtype_of = |k: &str| model.dtype_of(k);
    let compiled = super::compile::compile_model(
        cfg,
        &dtype_of,
        Some(model_dir),
        &gemma4c_backends::cpu::CpuBackend,
        true,
        Some(ctx),
        Some(chunk),
    )?;
    let ll = gemma4c_backends::cpu::kernels_ll(&compiled.plan).map_err(anyhow::Error::msg)?;
    let kernels = ll.lines().filter(|l| l.starts_with("define void")).count();
    let mut session = JitSession::new(compiled.plan, &model, &ll, &opts)?;
    let setup_s = start.elapsed().as_secs_f64();

    // Deterministic ids spread over the vocabulary.
    let prompt: Vec<u32> = (0..args.prompt_tokens)
        .map(|i| ((i as u64 * 2_654_435_761 + 12_345) % cfg.vocab_size as u64) as u32)
        .collect();
    // Progress over the phases, in forward calls (drawn only on a terminal;
    // it is redrawn at most 20 times a second, from this thread, so it costs
    // the timed loops nothing measurable).
    let calls = 2 * args.prompt_tokens.div_ceil(chunk) as u64 + 2 + args.tokens as u64;
    let progress = super::textgen::progress_bar(calls, super::textgen::Unit::Items, "bench: warm-up");
    // Warm-up: fault in the weights' pages and the code.
    session.forward(&prompt)?;
    progress.inc(prompt.len().div_ceil(chunk) as u64);
    for _ in 0..2 {
        session.forward(&[prompt[0]])?;
        progress.inc(1);
    }
    session.reset();

    progress.set_message("bench: prefill");
    let t = Instant::now();
    let mut logits = session.forward(&prompt)?;
    let prefill_s = t.elapsed().as_secs_f64();
    progress.inc(prompt.len().div_ceil(chunk) as u64);
    progress.set_message("bench: decode");
    let t = Instant::now();
    for _ in 0..args.tokens {
        let next = argmax(&logits);
        logits = session.forward(&[next])?;
        progress.inc(1);
    }
    let decode_s = t.elapsed().as_secs_f64();
    progress.set_message("bench: memory bandwidth");

    let threads = session.threads();
    let bytes = session.weight_bytes("decode") as f64;
    let decode_tps = args.tokens as f64 / decode_s;
    let prefill_tps = args.prompt_tokens as f64 / prefill_s;
    let effective = bytes * decode_tps / 1e9;
    let bandwidth = measure_bandwidth(threads, 1 << 30, 5).map_err(anyhow::Error::msg)?;
    let fraction = effective / bandwidth;
    drop(progress);
    let dtype = model.dtype_of("embed_tokens.weight");

    if args.json {
        let v = json!({
            "model": model_dir.display().to_string(),
            "dtype": dtype.to_string(),
            "quant": args.quant.map(|q| q.name()),
            "quant_embedding": args.quant_embedding,
            "layers": cfg.num_hidden_layers,
            "hidden_size": cfg.hidden_size,
            "vocab_size": cfg.vocab_size,
            "threads": threads,
            "cpu": session.cpu(),
            "kernels": kernels,
            "jit_compile_ms": session.compile_ms(),
            "setup_s": setup_s,
            "prompt_tokens": args.prompt_tokens,
            "prefill_chunk": chunk,
            "prefill_tok_s": prefill_tps,
            "decode_tokens": args.tokens,
            "decode_tok_s": decode_tps,
            "weight_bytes_per_token": bytes,
            "effective_gb_s": effective,
            "measured_bandwidth_gb_s": bandwidth,
            "bandwidth_fraction": fraction,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "model: {} ({dtype}{}, {} layers, hidden {}, vocab {})",
            model_dir.display(),
            args.quant.map_or(String::new(), |q| format!(", --quant {q}")),
            cfg.num_hidden_layers,
            cfg.hidden_size,
            cfg.vocab_size
        );
        println!(
            "threads: {threads}, cpu: {}, {kernels} kernels JIT-compiled in {:.0} ms (setup {:.2} s)",
            session.cpu(),
            session.compile_ms(),
            setup_s
        );
        println!(
            "prefill: {} tokens (chunks of {chunk}) in {:.3} s = {prefill_tps:.1} tok/s",
            args.prompt_tokens, prefill_s
        );
        println!(
            "decode: {} tokens in {:.3} s = {decode_tps:.2} tok/s ({:.2} ms/token)",
            args.tokens,
            decode_s,
            1e3 / decode_tps
        );
        println!("weights read per decoded token: {:.1} MB", bytes / 1e6);
        println!("effective bandwidth: {effective:.1} GB/s");
        println!("measured memory bandwidth ({threads} threads, streaming read): {bandwidth:.1} GB/s");
        println!("decode at {:.1}% of measured bandwidth", 100.0 * fraction);
    }
    if args.profile {
        for program in ["prefill", "decode"] {
            print_profile(program, &session.profile(program));
        }
    }
    Ok(())
}

#[cfg(feature = "jit")]
/// Time per call by kernel: ms, share of kernel time, GB/s of weights read.
fn print_profile(program: &str, prof: &[gemma4c_runtime::jit::StepProfile]) {
    let total: f64 = prof.iter().map(|p| p.seconds).sum();
    let Some(calls) = prof.first().map(|p| p.calls.max(1)) else {
        return;
    };
    eprintln!(
        "{program}: {:.3} ms of kernels per call ({calls} calls); by kernel (ms, %, GB/s of weights):",
        total / calls as f64 * 1e3
    );
    for p in prof.iter().take(16) {
        let per_call = p.seconds / calls as f64;
        let gbs = if per_call > 0.0 {
            p.weight_bytes as f64 / per_call / 1e9
        } else {
            0.0
        };
        eprintln!(
            "  {:8.3} {:5.1}% {:6.1}  {} x{}",
            per_call * 1e3,
            100.0 * p.seconds / total,
            gbs,
            p.kernel,
            p.launches
        );
    }
}

#[cfg(feature = "jit")]
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}
