//! `gemma4c compile`: checkpoint (or config) → fused, planned artifact directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gemma4c_frontend::{build, BuildOptions, Gemma4Config, Model};
use gemma4c_passes::plan::ModelInfo;
use gemma4c_passes::{compile, CallGraph, Compiled, Target};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face checkpoint directory.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Compile from a config.json alone (no weights; `run --plan` then needs --model).
    #[arg(long, conflicts_with = "model")]
    config: Option<PathBuf>,
    /// cpu, tt-p300, tt-p150, tt-n150, cuda-sm90 or metal.
    #[arg(long)]
    target: String,
    /// Artifact directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Skip fusion (the plan runs the unfused graph).
    #[arg(long)]
    no_fuse: bool,
    /// Extra dumps: ir-before, ir-after, plan (plan.json is always written).
    #[arg(long, value_delimiter = ',')]
    emit: Vec<String>,
    /// Longest context (prompt + generated) the KV caches hold
    /// (default: max_position_embeddings, at most 4096).
    #[arg(long)]
    max_context: Option<usize>,
    /// Tokens per prefill call (default: the sliding window, at most the context).
    #[arg(long)]
    prefill_chunk: Option<usize>,
    /// Print launches per token with and without fusion.
    #[arg(long)]
    stats: bool,
}

/// Builds the decode and prefill graphs and runs the middle of the compiler.
pub fn compile_model(
    cfg: &Gemma4Config,
    dtype_of: &dyn Fn(&str) -> gemma4c_ir::DType,
    source: Option<&Path>,
    target: Target,
    fuse: bool,
    max_context: Option<usize>,
    prefill_chunk: Option<usize>,
) -> Result<Compiled> {
    let ctx = max_context.unwrap_or(cfg.max_position_embeddings.min(4096));
    if ctx == 0 || ctx > cfg.max_position_embeddings {
        bail!(
            "--max-context {ctx} must be in 1..={} (max_position_embeddings in {})",
            cfg.max_position_embeddings,
            cfg.path.display()
        );
    }
    let chunk = prefill_chunk.unwrap_or(cfg.sliding_window).min(ctx);
    if chunk == 0 {
        bail!("--prefill-chunk must be at least 1");
    }
    let mut calls = vec![CallGraph {
        name: "decode".into(),
        seq_len: 1,
        graph: build(cfg, &BuildOptions::new(cfg, 1, ctx, chunk), dtype_of)?,
    }];
    if chunk > 1 {
        calls.push(CallGraph {
            name: "prefill".into(),
            seq_len: chunk,
            graph: build(cfg, &BuildOptions::new(cfg, chunk, ctx, chunk), dtype_of)?,
        });
    }
    let info = ModelInfo {
        fingerprint: cfg.fingerprint(),
        source: source.map(|p| p.display().to_string()),
        vocab_size: cfg.vocab_size,
        max_context: ctx,
        prefill_chunk: chunk,
        bos_token_id: cfg.bos_token_id,
        eos_token_ids: cfg.eos_token_ids.clone(),
    };
    Ok(compile(&calls, target, fuse, info)?)
}

pub fn run(args: Args) -> Result<()> {
    let target: Target = args.target.parse().map_err(anyhow::Error::msg)?;
    for e in &args.emit {
        if !["ir-before", "ir-after", "plan"].contains(&e.as_str()) {
            bail!("unknown --emit `{e}` (expected ir-before, ir-after or plan)");
        }
    }
    if !matches!(target, Target::Cpu | Target::CudaSm90) && !target.is_tenstorrent() {
        bail!("target `{target}` is not implemented yet (available: cpu, tt-p300, tt-p150, tt-n150, cuda-sm90)");
    }
    let model = match &args.model {
        Some(dir) => Some(Model::open(dir)?),
        None => None,
    };
    let cfg = match (&model, &args.config) {
        (Some(m), _) => m.config.clone(),
        (None, Some(path)) => Gemma4Config::from_file(path)?,
        (None, None) => bail!("give --model DIR or --config FILE"),
    };
    let dtype_of = |k: &str| model.as_ref().map_or(cfg.dtype, |m| m.dtype_of(k));
    let source = args
        .model
        .as_deref()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.to_path_buf()));
    let compiled = compile_model(
        &cfg,
        &dtype_of,
        source.as_deref(),
        target,
        !args.no_fuse,
        args.max_context,
        args.prefill_chunk,
    )?;
    let unfused = if args.no_fuse {
        None
    } else {
        Some(compile_model(
            &cfg,
            &dtype_of,
            source.as_deref(),
            target,
            false,
            args.max_context,
            args.prefill_chunk,
        )?)
    };

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let write = |name: &str, text: &str| -> Result<()> {
        let path = args.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("plan.json", &compiled.plan.to_json())?;
    if matches!(target, Target::Cpu) {
        let ll = gemma4c_backends::cpu::kernels_ll(&compiled.plan).map_err(anyhow::Error::msg)?;
        write(gemma4c_backends::cpu::KERNELS_FILE, &ll)?;
    }
    if matches!(target, Target::CudaSm90) {
        let cu = gemma4c_backends::cuda::kernels_cu(&compiled.plan).map_err(anyhow::Error::msg)?;
        write(gemma4c_backends::cuda::KERNELS_FILE, &cu)?;
    }
    let decode = compiled.plan.program("decode").context("plan has no decode program")?;
    let unfused_launches = unfused
        .as_ref()
        .and_then(|u| u.plan.program("decode").map(|p| p.launches()))
        .unwrap_or(decode.launches());
    // Tenstorrent: TT-Lang kernels, TTNN host program and prepared weights.
    let tt_stats = if target.is_tenstorrent() {
        let tt = gemma4c_backends::tt::TtTarget::for_target(target)?;
        let reader = |k: &str| -> std::result::Result<Vec<f32>, String> {
            let m = model.as_ref().ok_or("no checkpoint")?;
            m.checkpoint.load_f32(k).map_err(|e| e.to_string())
        };
        let st_dtype = |k: &str| model.as_ref().and_then(|m| m.checkpoint.get(k).map(|t| t.dtype));
        let rows = |k: &str, r: std::ops::Range<usize>| -> std::result::Result<Vec<f32>, String> {
            let m = model.as_ref().ok_or("no checkpoint")?;
            let info = m.checkpoint.require(k).map_err(|e| e.to_string())?;
            let bytes = m.checkpoint.bytes(k).map_err(|e| e.to_string())?;
            let row = info.shape[1..].iter().product::<usize>() * info.dtype.size_bytes();
            info.dtype
                .widen_le(&bytes[r.start * row..r.end * row])
                .ok_or_else(|| "not a float tensor".to_string())
        };
        let weights = model.as_ref().map(|_| gemma4c_backends::tt::Weights {
            tensor: &reader,
            rows: Some(&rows),
            dtype_of: &st_dtype,
        });
        Some(gemma4c_backends::tt::write_artifact(
            &args.out,
            &compiled.plan,
            &tt,
            weights,
        )?)
    } else {
        None
    };
    let mut stats = json!({
        "target": target.name(),
        "launches_per_token": decode.launches(),
        "launches_per_token_unfused": unfused_launches,
        "ops": decode.op_counts(),
        "compile_ms": compiled.compile_ms,
        "arena_bytes": compiled.plan.programs.iter().map(|p| p.arena_bytes).max().unwrap_or(0),
        "state_bytes": compiled.plan.state.iter().map(|s| s.bytes).sum::<usize>(),
    });
    if let Some(tt) = tt_stats {
        stats["tt"] = tt;
    }
    write("stats.json", &(serde_json::to_string_pretty(&stats)? + "\n"))?;
    if args.emit.iter().any(|e| e == "ir-before") {
        let g = unfused.as_ref().map_or(&compiled.fused[0], |u| &u.fused[0]);
        write("ir-before.txt", &gemma4c_ir::print(g))?;
    }
    if args.emit.iter().any(|e| e == "ir-after") {
        write("ir-after.txt", &gemma4c_ir::print(&compiled.fused[0]))?;
    }
    if args.stats {
        // Baseline measured in the same run: the same pipeline without fusion.
        let baseline = unfused.as_ref().map_or(compiled.compile_ms, |u| u.compile_ms);
        println!(
            "{}: {} launches per token ({} unfused); compile {:.1} ms (unfused pipeline {:.1} ms, ratio {:.2})",
            target.name(),
            decode.launches(),
            unfused_launches,
            compiled.compile_ms,
            baseline,
            compiled.compile_ms / baseline.max(1e-9)
        );
    }
    Ok(())
}
