use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use gemma4c_runtime::artifact::{Artifact, MAX_KERNELS_BYTES};
use gemma4c_runtime::chat_template::{Message, RenderOptions};
use gemma4c_runtime::npy::write_npy_f32;
use gemma4c_runtime::{generate, Executor, Flow, Generation, PlanSession};

use super::executors;
use super::textgen::{self, Setup, TextOut};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Stream decoded text to stdout.
    Text,
    /// Print the generated ids, space-separated, on one line.
    Ids,
}

/// How a model or plan is executed.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// The IR's reference semantics (f32, on the host).
    Reference,
    /// Generated CPU kernels, JIT-compiled with LLVM.
    Jit,
}

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json),
    /// or a GGUF file (Gemma 3: config and tokenizer from its metadata).
    /// With --plan: the checkpoint to bind (default: the one the plan was compiled from).
    #[arg(long, required_unless_present = "plan")]
    model: Option<PathBuf>,
    /// Quantize the checkpoint's matmul weights at load: q8_0, q4_0, q4_k or q6_k (embeddings,
    /// per-layer inputs and norms stay as stored). With --plan, the plan's formats apply.
    #[arg(long, value_name = "FORMAT", value_parser = super::parse_quant)]
    quant: Option<gemma4c_ir::QuantFormat>,
    /// With --quant, also quantize the token embedding (and so a tied LM head), as llama.cpp's
    /// files do; by default it stays as stored. The PLE table always stays.
    #[arg(long, requires = "quant")]
    quant_embedding: bool,
    /// A compiled artifact directory (from `gemma4c compile`).
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Prompt text (tokenized with the model's tokenizer.json; BOS is added).
    #[arg(long, conflicts_with_all = ["prompt_ids", "prompt_file"], required_unless_present_any = ["prompt_ids", "prompt_file"])]
    prompt: Option<String>,
    /// Read the prompt text from FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "prompt_ids")]
    prompt_file: Option<PathBuf>,
    /// Prompt as token ids, e.g. 2,17,301 (used as given: include BOS yourself).
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Option<Vec<u32>>,
    /// Send the prompt as one user message through the model's chat template.
    #[arg(long, conflicts_with = "prompt_ids")]
    chat: bool,
    #[command(flatten)]
    template: textgen::ChatArgs,
    /// Stop when the generated text contains STRING (repeatable; the stop
    /// string and anything after it are not printed).
    #[arg(long, value_name = "STRING")]
    stop: Vec<String>,
    /// Do not print timings on stderr.
    #[arg(long, short)]
    quiet: bool,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: textgen::SamplingArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// Write the logits of every generated step as float32 .npy [steps, vocab].
    #[arg(long, value_name = "FILE.npy")]
    logits_out: Option<PathBuf>,
    /// Longest prompt chunk fed in one call (default: the sliding window).
    #[arg(long)]
    prefill_chunk: Option<usize>,
    /// Executor (default: jit for --model, and for --plan when the plan has
    /// kernels.ll; reference otherwise).
    #[arg(long, value_enum)]
    executor: Option<ExecutorKind>,
    #[command(flatten)]
    threads: textgen::ThreadsArg,
}

pub fn run(args: Args) -> Result<()> {
    let mut setup = Setup::default();
    let load_start = std::time::Instant::now();
    // The manifest's hashes and the whole plan are checked here, before any
    // checkpoint is opened or memory allocated.
    let artifact = args.plan.as_deref().map(Artifact::open).transpose()?;
    let plan = artifact.as_ref().map(|a| a.plan.clone());
    let model_dir: PathBuf = match (&args.model, &plan) {
        (Some(dir), _) => dir.clone(),
        (None, Some(p)) => match &p.model.source {
            Some(src) => PathBuf::from(src),
            None => bail!("the plan was compiled from a config alone: give --model DIR to bind weights"),
        },
        (None, None) => bail!("give --model DIR or --plan DIR"),
    };
    if (args.template.system.is_some() || args.template.think) && !args.chat {
        bail!("--system and --think need --chat");
    }
    // A plan compiled with --quant names its formats (the token embedding's
    // too, with --quant-embedding): quantize the same way.
    let quant = super::quant_spec(args.quant, args.quant_embedding).or_else(|| {
        let p = plan.as_ref()?;
        let gguf = model_dir.is_file() && gemma4c_frontend::gguf::GgufFile::sniff(&model_dir);
        let format = p.weights.iter().find_map(|w| w.dtype.block()).filter(|_| !gguf)?;
        let embedding = p
            .weights
            .iter()
            .any(|w| w.key.contains("embed_tokens") && w.dtype.block().is_some());
        super::quant_spec(Some(format), embedding)
    });
    let model = super::open_model(&model_dir, quant)?;
    let cfg = &model.config;
    let prompt_text = match (&args.prompt, &args.prompt_file) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(file)) => {
            Some(std::fs::read_to_string(file).with_context(|| format!("reading --prompt-file {}", file.display()))?)
        }
        (None, None) => None,
    };
    let needs_tokenizer = prompt_text.is_some() || args.output == OutputFormat::Text || !args.stop.is_empty();
    let tokenizer = if needs_tokenizer {
        Some(textgen::load_tokenizer(
            &model,
            "text prompts, --stop and --output text; use --prompt-ids and --output ids",
        )?)
    } else {
        None
    };
    let template = if args.chat {
        Some(textgen::load_template(&model, args.template.chat_template.as_deref())?)
    } else {
        None
    };
    let prompt: Vec<u32> = match (&prompt_text, &args.prompt_ids, &tokenizer, &template) {
        (Some(text), _, Some(tok), Some(tpl)) => {
            let mut messages = Vec::new();
            if let Some(system) = &args.template.system {
                messages.push(Message::new("system", system));
            }
            messages.push(Message::new("user", text));
            let rendered = tpl.render(
                &messages,
                RenderOptions {
                    add_generation_prompt: true,
                    enable_thinking: args.template.think,
                },
            )?;
            tok.encode(&rendered, None)?
        }
        (Some(text), _, Some(tok), None) => tok.encode(text, Some(cfg.bos_token_id))?,
        (None, Some(ids), _, _) => ids.clone(),
        _ => bail!("give --prompt TEXT, --prompt-file FILE or --prompt-ids IDS"),
    };
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let max_context = prompt.len().saturating_add(args.max_new_tokens);
    if max_context > cfg.max_position_embeddings {
        bail!(
            "prompt ({} tokens) + --max-new-tokens {} = {max_context} exceeds max_position_embeddings = {} ({})",
            prompt.len(),
            args.max_new_tokens,
            cfg.max_position_embeddings,
            cfg.path.display()
        );
    }
    if let Some(p) = &plan {
        if max_context > p.model.max_context {
            bail!(
                "prompt ({} tokens) + --max-new-tokens {} exceeds the plan's context of {} tokens (compile with a larger --max-context)",
                prompt.len(),
                args.max_new_tokens,
                p.model.max_context
            );
        }
    }
    // A bad --threads or GEMMA4C_THREADS is an error here, before anything is compiled.
    let jit = args.threads.jit_options()?;
    let chunk = args.prefill_chunk.unwrap_or(cfg.sliding_window);
    if chunk == 0 {
        bail!("--prefill-chunk must be at least 1");
    }
    let mut sampler = args.sampling.sampler()?;
    let eos = textgen::stop_ids(&cfg.eos_token_ids, template.as_ref(), tokenizer.as_ref());
    // --quant quantization (and other conversions) count as loading, with a progress bar.
    textgen::convert_weights(&model)?;
    setup.load = load_start.elapsed();
    let kernels_file = gemma4c_backends::cpu::KERNELS_FILE;
    let wgsl_file = gemma4c_backends::wgsl::KERNELS_FILE;
    let metal_file = gemma4c_backends::metal::KERNELS_FILE;
    let ptx_file = gemma4c_backends::cuda::PTX_FILE;
    // A plan compiled for another target, or whose kernels file was removed,
    // runs on the reference executor by default.
    let present = |f: &str| {
        artifact
            .as_ref()
            .is_some_and(|a| a.has(f) && a.dir.join(f).symlink_metadata().is_ok())
    };
    let (has_kernels, has_wgsl, has_ptx) = (present(kernels_file), present(wgsl_file), present(ptx_file));
    let has_metal = present(metal_file);
    let cuda_target = plan.as_ref().is_some_and(|p| p.target.starts_with("cuda"));
    // A `--target wgpu` plan runs its kernels.wgsl on the wgpu executor (a `--target metal`
    // plan its kernels.metal, through the same executor), a `--target cuda-*` plan its
    // kernels.ptx on the CUDA executor, unless an executor is named.
    let gpu_plan = args.executor.is_none() && plan.is_some() && (has_wgsl || has_metal || cuda_target);
    let executor = args.executor.unwrap_or(if plan.is_some() && !has_kernels {
        ExecutorKind::Reference
    } else {
        ExecutorKind::Jit
    });
    let compile_start = std::time::Instant::now();
    let mut session: Box<dyn Executor + '_> = match (executor, plan) {
        (_, Some(plan)) if gpu_plan => {
            let artifact = artifact.as_ref().context("--plan DIR")?;
            // What the sink needs decides where greedy ids are picked.
            let note = if sampler.is_greedy() && args.logits_out.is_none() {
                "greedy ids picked on the device"
            } else {
                "logits read back every step"
            };
            let gpu = if has_wgsl || has_metal {
                let file = if has_wgsl { wgsl_file } else { metal_file };
                let text = artifact.read_text(file, MAX_KERNELS_BYTES)?;
                executors::wgpu_plan(plan, &model, text, !has_wgsl, false)?
            } else {
                if !has_ptx {
                    bail!(
                        "{}: no {ptx_file} (`compile --target {}` writes it next to kernels.cu when NVRTC is available)",
                        artifact.dir.display(),
                        plan.target
                    );
                }
                let ptx = artifact.read_text(ptx_file, MAX_KERNELS_BYTES)?;
                executors::cuda_plan(plan, &model, &ptx, false)?
            };
            if !args.quiet {
                let kind = if has_wgsl || has_metal {
                    "wgpu adapter"
                } else {
                    "CUDA device"
                };
                eprintln!("{kind}: {} ({note})", gpu.device);
            }
            gpu.exec
        }
        (ExecutorKind::Reference, Some(plan)) => Box::new(PlanSession::new(plan, &model)?),
        (ExecutorKind::Jit, Some(plan)) => {
            let artifact = artifact.as_ref().context("--plan DIR")?;
            if !has_kernels {
                bail!(
                    "{}: no {kernels_file} (compile with --target cpu for the JIT executor)",
                    artifact.dir.display()
                );
            }
            let ll = artifact.read_text(kernels_file, MAX_KERNELS_BYTES)?;
            executors::jit_plan(plan, &model, &ll, &jit)?
        }
        (kind, None) => textgen::model_executor(&model, kind, max_context, chunk, &jit)?,
    };
    setup.compile = compile_start.elapsed();

    let mut all_logits: Vec<f32> = Vec::new();
    let mut steps = 0usize;
    let mut text = tokenizer.as_ref().map(|t| TextOut::new(t, &args.stop, &eos));
    let stdout = std::io::stdout();
    let text_out = args.output == OutputFormat::Text;
    let out = generate(
        session.as_mut(),
        &Generation {
            prompt: &prompt,
            max_new_tokens: args.max_new_tokens,
            eos_token_ids: &eos,
            logits: args.logits_out.is_some(),
        },
        &mut sampler,
        &mut |token, logits| {
            if args.logits_out.is_some() {
                all_logits.extend_from_slice(logits);
                steps += 1;
            }
            let Some(t) = text.as_mut() else {
                return Ok(Flow::Continue);
            };
            let (delta, flow) = t.push(token)?;
            if text_out && !delta.is_empty() {
                let mut out = stdout.lock();
                let _ = out.write_all(delta.as_bytes());
                let _ = out.flush();
            }
            Ok(flow)
        },
    )?;
    if text_out {
        if let Some(rest) = text.as_mut().map(TextOut::finish) {
            print!("{rest}");
        }
        println!();
    } else {
        let ids: Vec<String> = out.ids.iter().map(u32::to_string).collect();
        println!("{}", ids.join(" "));
    }
    if let Some(path) = &args.logits_out {
        write_npy_f32(path, &[steps, cfg.vocab_size], &all_logits)
            .with_context(|| format!("writing --logits-out {}", path.display()))?;
    }
    if !args.quiet {
        textgen::print_timings(&setup, &out.timings);
    }
    Ok(())
}
