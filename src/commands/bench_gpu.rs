//! `gemma4c bench --plan OUT`: a GPU plan (wgpu or CUDA) timed as the JIT is: prefill of
//! `--prompt-tokens`, then `--tokens` greedy decode steps with the id picked on the device
//! (one id crosses to the host per token; the CUDA decode step is a replayed graph), weight
//! bytes per token, effective GB/s, and the fraction of the device-to-device copy bandwidth
//! measured in the same run (a device-to-device buffer copy, timed by each runtime).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use gemma4c_frontend::Model;
use gemma4c_runtime::artifact::{Artifact, MAX_KERNELS_BYTES};
use serde_json::json;

use super::bench::Args;
use super::executors;

pub fn run(args: &Args) -> Result<()> {
    let dir = args.plan.as_ref().context("--plan OUT")?;
    let artifact = Artifact::open(dir)?;
    let plan = artifact.plan.clone();
    let model_dir: PathBuf = match (&args.model, &plan.model.source) {
        (Some(m), _) => m.clone(),
        (None, Some(src)) => PathBuf::from(src),
        (None, None) => bail!("the plan was compiled from a config alone: give --model DIR"),
    };
    let ctx = args.prompt_tokens.saturating_add(args.tokens).saturating_add(1);
    if ctx > plan.model.max_context {
        bail!(
            "--prompt-tokens + --tokens + 1 = {ctx} exceed the plan's context of {} tokens (compile with a larger --max-context)",
            plan.model.max_context
        );
    }
    let model = Model::open(&model_dir)?;
    let vocab = plan.model.vocab_size;
    let target = plan.target.clone();
    let (wgsl, ptx) = (gemma4c_backends::wgsl::KERNELS_FILE, gemma4c_backends::cuda::PTX_FILE);
    let metal = gemma4c_backends::metal::KERNELS_FILE;
    let start = Instant::now();
    let mut gpu = if artifact.has(wgsl) {
        let text = artifact.read_text(wgsl, MAX_KERNELS_BYTES)?;
        executors::wgpu_plan(plan, &model, text, false, true)?
    } else if artifact.has(metal) {
        let text = artifact.read_text(metal, MAX_KERNELS_BYTES)?;
        executors::wgpu_plan(plan, &model, text, true, true)?
    } else if artifact.has(ptx) {
        let text = artifact.read_text(ptx, MAX_KERNELS_BYTES)?;
        executors::cuda_plan(plan, &model, &text, true)?
    } else {
        bail!(
            "{}: a `--target {target}` plan has none of {wgsl}, {metal}, {ptx}: bench --plan times GPU plans",
            dir.display()
        );
    };
    let setup_s = start.elapsed().as_secs_f64();
    let session = gpu.exec.as_mut();

    // Deterministic ids spread over the vocabulary (as the CPU bench).
    let prompt: Vec<u32> = (0..args.prompt_tokens)
        .map(|i| ((i as u64 * 2_654_435_761 + 12_345) % vocab as u64) as u32)
        .collect();
    let calls = 3 + 1 + args.tokens as u64;
    let progress = super::textgen::progress_bar(calls, super::textgen::Unit::Items, "bench: warm-up");
    // Warm-up: first launches, the decode graph's capture.
    session.forward_greedy(&prompt)?;
    for _ in 0..2 {
        session.forward_greedy(&[prompt[0]])?;
    }
    progress.inc(3);
    session.reset();

    progress.set_message("bench: prefill");
    let t = Instant::now();
    let mut next = session.forward_greedy(&prompt)?;
    let prefill_s = t.elapsed().as_secs_f64();
    progress.inc(1);
    progress.set_message("bench: decode");
    let t = Instant::now();
    for _ in 0..args.tokens {
        next = session.forward_greedy(&[next])?;
        progress.inc(1);
    }
    let decode_s = t.elapsed().as_secs_f64();
    drop(progress);

    let bytes = gpu.decode_weight_bytes as f64;
    let decode_tps = args.tokens as f64 / decode_s;
    let prefill_tps = args.prompt_tokens as f64 / prefill_s;
    let effective = bytes * decode_tps / 1e9;
    // A copy reads and writes each byte; decode mostly reads: compare with the copy's total.
    let fraction = gpu.copy_gb_s.map(|bw| effective / bw);
    if args.json {
        let v = json!({
            "plan": dir.display().to_string(),
            "target": target,
            "device": gpu.device,
            "setup_s": setup_s,
            "prompt_tokens": args.prompt_tokens,
            "prefill_tok_s": prefill_tps,
            "decode_tokens": args.tokens,
            "decode_tok_s": decode_tps,
            "weight_bytes_per_token": bytes,
            "effective_gb_s": effective,
            "copy_bandwidth_gb_s": gpu.copy_gb_s,
            "bandwidth_fraction": fraction,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("plan: {} (target {target}), device: {}", dir.display(), gpu.device);
    println!("setup (upload, kernels) {setup_s:.2} s");
    println!(
        "prefill: {} tokens in {prefill_s:.3} s = {prefill_tps:.1} tok/s",
        args.prompt_tokens
    );
    println!(
        "decode: {} tokens in {decode_s:.3} s = {decode_tps:.2} tok/s ({:.3} ms/token, greedy id picked on the device)",
        args.tokens,
        1e3 / decode_tps
    );
    println!("weights read per decoded token: {:.1} MB", bytes / 1e6);
    println!("effective bandwidth: {effective:.1} GB/s");
    match (gpu.copy_gb_s, fraction) {
        (Some(bw), Some(f)) => {
            println!("measured device-to-device copy bandwidth (read + write): {bw:.1} GB/s");
            println!("decode at {:.1}% of measured bandwidth", 100.0 * f);
        }
        _ => println!("no device copy bandwidth measured on this runtime"),
    }
    Ok(())
}
