//! `gemma4c chat`: an interactive multi-turn conversation over one KV cache.
//!
//! Each turn feeds only its new tokens (runtime/src/conversation.rs) on top of
//! the cache, so the history is never prefilled again. Lines come from a line
//! editor when stdin is a terminal, else one message per line of stdin (so the
//! command can be scripted and tested). `/reset` forgets the conversation,
//! `/exit` (or end of input) quits; Ctrl-C stops the reply being generated.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use gemma4c_frontend::Model;
use gemma4c_runtime::conversation::Conversation;
use gemma4c_runtime::{generate, Flow, Generation};

use super::run::{ExecutorKind, OutputFormat};
use super::textgen::{self, ChatArgs, SamplingArgs, Setup, TextOut, ThreadsArg};

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json),
    /// or a GGUF file (config, tokenizer and chat template from its metadata).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    template: ChatArgs,
    /// Longest reply, in tokens.
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Tokens the conversation may hold in all (default: max_position_embeddings, at most 4096).
    #[arg(long)]
    ctx_size: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop a reply when its text contains STRING (repeatable).
    #[arg(long, value_name = "STRING")]
    stop: Vec<String>,
    /// Print replies as text, or as the generated ids (one reply per line).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    #[arg(long, value_enum, default_value_t = ExecutorKind::Jit)]
    executor: ExecutorKind,
    #[command(flatten)]
    threads: ThreadsArg,
    /// Do not print timings on stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// Where user lines come from.
enum Input {
    Editor(Box<rustyline::DefaultEditor>),
    Piped(std::io::StdinLock<'static>),
}

impl Input {
    fn open() -> Input {
        if std::io::stdin().is_terminal() {
            if let Ok(editor) = rustyline::DefaultEditor::new() {
                return Input::Editor(Box::new(editor));
            }
        }
        Input::Piped(std::io::stdin().lock())
    }

    /// The next line, or `None` at the end of input.
    fn line(&mut self) -> Result<Option<String>> {
        match self {
            Input::Editor(ed) => loop {
                match ed.readline("> ") {
                    Ok(line) => {
                        let _ = ed.add_history_entry(line.as_str());
                        return Ok(Some(line));
                    }
                    // Ctrl-C at the prompt clears the line; Ctrl-D quits.
                    Err(rustyline::error::ReadlineError::Interrupted) => continue,
                    Err(rustyline::error::ReadlineError::Eof) => return Ok(None),
                    Err(e) => bail!("reading the terminal: {e}"),
                }
            },
            Input::Piped(stdin) => {
                let mut line = String::new();
                if stdin.read_line(&mut line)? == 0 {
                    return Ok(None);
                }
                Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
            }
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let mut setup = Setup::default();
    let start = Instant::now();
    // Flags first: a bad thread count or sampler setting fails before loading.
    let jit = args.threads.jit_options()?;
    let mut sampler = args.sampling.sampler()?;
    let model = Model::open(&args.model)?;
    let cfg = &model.config;
    let tokenizer = textgen::load_tokenizer(&model, "chat")?;
    let template = textgen::load_template(&model, args.template.chat_template.as_deref())?;
    let eos = textgen::stop_ids(&cfg.eos_token_ids, Some(&template), Some(&tokenizer));
    let ctx = args.ctx_size.unwrap_or(cfg.max_position_embeddings.min(4096));
    if ctx == 0 || ctx > cfg.max_position_embeddings {
        bail!(
            "--ctx-size {ctx} must be 1..={} (max_position_embeddings in {})",
            cfg.max_position_embeddings,
            cfg.path.display()
        );
    }
    setup.load = start.elapsed();
    let start = Instant::now();
    let mut session = textgen::model_executor(&model, args.executor, ctx, cfg.sliding_window.min(ctx), &jit)?;
    setup.compile = start.elapsed();
    if !args.quiet {
        textgen::print_setup_timings(&setup);
        eprintln!(
            "gemma4c: chat with {} (template {}, context {ctx} tokens); /reset forgets, /exit quits, Ctrl-C stops a reply",
            args.model.display(),
            template.origin()
        );
    }

    let mut conv = Conversation::new(
        &template,
        &tokenizer,
        args.template.system.as_deref(),
        args.template.think,
    );
    // The line editor installs its own SIGINT handler for as long as it lives,
    // so it is created first: the handler set after it is the one that runs.
    let mut input = Input::open();
    // Ctrl-C stops the reply being generated, not the program (at the prompt
    // the editor reads it as a key and clears the line).
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;
    }
    let stdout = std::io::stdout();
    while let Some(line) = input.line()? {
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                conv.reset();
                session.reset();
                continue;
            }
            _ => {}
        }
        let fed = conv.user_turn(&line)?;
        let room = ctx.saturating_sub(session.position() + fed.len());
        if room == 0 {
            eprintln!(
                "gemma4c: the context is full ({} of {ctx} tokens); /reset to start over",
                session.position()
            );
            conv.reset();
            session.reset();
            continue;
        }
        interrupted.store(false, Ordering::SeqCst);
        let mut text = TextOut::new(&tokenizer, &args.stop, &eos);
        let out = generate(
            session.as_mut(),
            &Generation {
                prompt: &fed,
                max_new_tokens: args.max_new_tokens.min(room),
                eos_token_ids: &eos,
                logits: false,
            },
            &mut sampler,
            &mut |token, _| {
                let (delta, flow) = text.push(token)?;
                if args.output == OutputFormat::Text && !delta.is_empty() {
                    let mut out = stdout.lock();
                    let _ = out.write_all(delta.as_bytes());
                    let _ = out.flush();
                }
                if interrupted.load(Ordering::SeqCst) {
                    return Ok(Flow::Stop);
                }
                Ok(flow)
            },
        )?;
        let rest = text.finish();
        {
            let mut w = stdout.lock();
            match args.output {
                OutputFormat::Text => writeln!(w, "{rest}")?,
                OutputFormat::Ids => {
                    let ids: Vec<String> = out.ids.iter().map(u32::to_string).collect();
                    writeln!(w, "{}", ids.join(" "))?
                }
            }
            w.flush()?;
        }
        conv.model_reply(&out.ids, &text.text);
        if !args.quiet {
            textgen::print_generation_timings(&out.timings);
        }
    }
    Ok(())
}
