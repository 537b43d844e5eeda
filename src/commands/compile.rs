//! `gemma4c compile`: checkpoint (or config) → fused, planned artifact directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gemma4c_backends::{Backend, Checkpoint};
use gemma4c_frontend::{build, BuildOptions, Gemma4Config, Model};
use gemma4c_ir::DType;
use gemma4c_passes::plan::ModelInfo;
use gemma4c_passes::{compile, CallGraph, Compiled};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face checkpoint directory.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Compile from a config.json alone (no weights; `run --plan` then needs --model).
    #[arg(long, conflicts_with = "model")]
    config: Option<PathBuf>,
    #[arg(long, help = gemma4c_backends::backend::targets_help())]
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
    /// Tokens per prefill call (default: the sliding window, at most the context; 32, one tile
    /// row, on the tt-* targets).
    #[arg(long)]
    prefill_chunk: Option<usize>,
    /// Print launches per token with and without fusion.
    #[arg(long)]
    stats: bool,
    /// Tenstorrent targets: matmul weights as `bf16` (default) or `bfp8` (bfloat8_b block
    /// floats; embeddings, the per-layer-input path, norms and the MoE router stay bf16).
    #[arg(long, value_parser = ["bf16", "bfp8"])]
    weights: Option<String>,
    /// Quantize the checkpoint's matmul weights at load: q8_0, q4_0, q4_k or q6_k (embeddings,
    /// per-layer inputs and norms stay as stored; cpu target only).
    #[arg(long, value_name = "FORMAT", value_parser = super::parse_quant, requires = "model", conflicts_with = "config")]
    quant: Option<gemma4c_ir::QuantFormat>,
    /// With --quant, also quantize the token embedding (and so a tied LM head), as llama.cpp's
    /// files do; by default it stays as stored. The PLE table always stays.
    #[arg(long, requires = "quant")]
    quant_embedding: bool,
}

/// Builds the decode and prefill graphs and runs the middle of the compiler.
pub fn compile_model(
    cfg: &Gemma4Config,
    dtype_of: &dyn Fn(&str) -> gemma4c_ir::DType,
    source: Option<&Path>,
    target: &dyn Backend,
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
    let chunk = prefill_chunk
        .or(target.default_prefill_chunk())
        .unwrap_or(cfg.sliding_window)
        .min(ctx);
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
    // Block-quantized weights are dequantized inside the CPU kernels only.
    if target.name() != "cpu" {
        let quantized = calls[0]
            .graph
            .weights()
            .find(|(_, n)| n.outputs[0].dtype.block().is_some());
        if let Some((_, n)) = quantized {
            bail!(
                "tensor `{}` is {}: block-quantized weights run only on --target cpu (not {})",
                n.name,
                n.outputs[0].dtype,
                target.name()
            );
        }
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
    Ok(compile(&calls, target.name(), &target.cost_model(), fuse, info)?)
}

pub fn run(args: Args) -> Result<()> {
    let target = gemma4c_backends::lookup(&args.target)?;
    for e in &args.emit {
        if !["ir-before", "ir-after", "plan"].contains(&e.as_str()) {
            bail!("unknown --emit `{e}` (expected ir-before, ir-after or plan)");
        }
    }
    let model = match &args.model {
        Some(dir) => Some(super::open_model(
            dir,
            super::quant_spec(args.quant, args.quant_embedding),
        )?),
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

    let staging = super::out_dir::Staging::new(&args.out)?;
    let dir = staging.path();
    let write = |name: &str, text: &str| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("plan.json", &compiled.plan.to_json())?;
    let decode = compiled.plan.program("decode").context("plan has no decode program")?;
    let unfused_launches = unfused
        .as_ref()
        .and_then(|u| u.plan.program("decode").map(|p| p.launches()))
        .unwrap_or(decode.launches());
    // Targets that convert weights (TT's weights.safetensors) read them through
    // this checkpoint, which moves a progress bar over the plan's weight bytes.
    let weight_bytes: usize = compiled
        .plan
        .weights
        .iter()
        .map(|w| w.shape.iter().product::<usize>() * std::mem::size_of::<f32>())
        .sum();
    let checkpoint = model.as_ref().map(|m| ModelCheckpoint {
        model: m,
        progress: std::cell::OnceCell::new(),
        total: weight_bytes as u64,
    });
    let options = gemma4c_backends::backend::EmitOptions {
        weights: args.weights.clone(),
    };
    let emitted = target
        .emit_with(
            &compiled.plan,
            dir,
            checkpoint.as_ref().map(|c| c as &dyn Checkpoint),
            &options,
        )
        .with_context(|| format!("generating code for {}", target.name()))?;
    drop(checkpoint); // clears the progress bar
    if let Some(arch) = nvrtc_arch(target.name()) {
        write_ptx(dir, arch)?;
    }
    let mut stats = json!({
        "target": target.name(),
        "launches_per_token": decode.launches(),
        "launches_per_token_unfused": unfused_launches,
        "ops": decode.op_counts(),
        "compile_ms": compiled.compile_ms,
        "arena_bytes": compiled.plan.programs.iter().map(|p| p.arena_bytes).max().unwrap_or(0),
        "state_bytes": compiled.plan.state.iter().map(|s| s.bytes).sum::<usize>(),
    });
    for (key, value) in emitted.stats {
        stats[key] = value;
    }
    write("stats.json", &(serde_json::to_string_pretty(&stats)? + "\n"))?;
    if args.emit.iter().any(|e| e == "ir-before") {
        let g = unfused.as_ref().map_or(&compiled.fused[0], |u| &u.fused[0]);
        write("ir-before.txt", &gemma4c_ir::print(g))?;
    }
    if args.emit.iter().any(|e| e == "ir-after") {
        write("ir-after.txt", &gemma4c_ir::print(&compiled.fused[0]))?;
    }
    staging.commit()?;
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

/// The NVRTC architecture of a CUDA target's PTX (virtual, so any later GPU's driver
/// compiles it too).
fn nvrtc_arch(target: &str) -> Option<&'static str> {
    match target {
        "cuda-sm80" => Some("compute_80"),
        "cuda-sm90" => Some("compute_90"),
        _ => None,
    }
}

/// kernels.cu → kernels.ptx with NVRTC when it can be loaded; otherwise says why not (the
/// plan is complete without it: a machine with NVRTC can add it with `compile` again).
fn write_ptx(dir: &std::path::Path, arch: &'static str) -> Result<()> {
    use gemma4c_backends::cuda::{KERNELS_FILE, PTX_FILE};
    let cu_path = dir.join(KERNELS_FILE);
    let cu = std::fs::read_to_string(&cu_path).with_context(|| format!("reading {}", cu_path.display()))?;
    match super::executors::ptx_of(&cu, arch) {
        Ok(ptx) => {
            let path = dir.join(PTX_FILE);
            std::fs::write(&path, ptx).with_context(|| format!("writing {}", path.display()))
        }
        Err(why) if why.starts_with("NVRTC: ") => bail!("{KERNELS_FILE} does not compile for {arch}: {why}"),
        Err(why) => {
            eprintln!("note: {PTX_FILE} not written: {why}");
            Ok(())
        }
    }
}

/// The checkpoint as backends read it. The progress bar appears at the first
/// read (targets that only print code read nothing).
struct ModelCheckpoint<'a> {
    model: &'a Model,
    progress: std::cell::OnceCell<super::textgen::Spinner>,
    total: u64,
}

impl ModelCheckpoint<'_> {
    fn read(&self, values: &std::result::Result<Vec<f32>, String>) {
        if let Ok(v) = values {
            let bar = self.progress.get_or_init(|| {
                super::textgen::progress_bar(self.total, super::textgen::Unit::Bytes, "converting weights")
            });
            bar.inc((v.len() * std::mem::size_of::<f32>()) as u64);
        }
    }

    fn rows(&self, key: &str, rows: std::ops::Range<usize>) -> std::result::Result<Vec<f32>, String> {
        let ck = &self.model.checkpoint;
        let info = ck.require(key).map_err(|e| e.to_string())?;
        let bytes = ck.bytes(key).map_err(|e| e.to_string())?;
        let row = info
            .dtype
            .bytes_for(&info.shape[1..])
            .ok_or_else(|| format!("{key}: rows of {} {:?} are not whole blocks", info.dtype, info.shape))?;
        let range = rows.start * row..rows.end * row;
        let slice = bytes.get(range).ok_or_else(|| {
            format!(
                "{key}: rows {}..{} past the tensor's {} rows",
                rows.start,
                rows.end,
                info.shape.first().copied().unwrap_or(0)
            )
        })?;
        info.dtype
            .widen_le(slice)
            .ok_or_else(|| format!("{key}: not a float tensor"))
    }
}

impl Checkpoint for ModelCheckpoint<'_> {
    fn tensor_f32(&self, key: &str) -> std::result::Result<Vec<f32>, String> {
        let values = self.model.checkpoint.load_f32(key).map_err(|e| e.to_string());
        self.read(&values);
        values
    }

    fn rows_f32(&self, key: &str, rows: std::ops::Range<usize>) -> std::result::Result<Vec<f32>, String> {
        let values = self.rows(key, rows);
        self.read(&values);
        values
    }

    fn dtype(&self, key: &str) -> Option<DType> {
        self.model.checkpoint.get(key).map(|t| t.dtype)
    }
}
