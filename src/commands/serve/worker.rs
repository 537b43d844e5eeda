//! The one generation worker: a thread that owns the model and its executor
//! and serves queued requests one at a time, streaming events back.
//!
//! Executors hold raw pointers into the model's memory map and are not `Send`,
//! so everything model-related is created and kept on this thread; the HTTP
//! side only sees the job queue and the event channels.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use crate::commands::executors::JitOptions;
use anyhow::Result;
use gemma4c_frontend::Model;
use gemma4c_runtime::chat_template::RenderOptions;
use gemma4c_runtime::sampler::Sampler;
use gemma4c_runtime::{generate, Flow, Generation, StopReason};
use tokio::sync::mpsc::UnboundedSender;

use super::api::{Prompt, Request};
use crate::commands::run::ExecutorKind;
use crate::commands::textgen::{self, TextOut};

/// Requests waiting beyond this are refused with 503.
pub const QUEUE: usize = 64;

/// What the worker reports about one request.
pub enum Event {
    /// The prompt was accepted; text follows.
    Started {
        prompt_tokens: usize,
    },
    Delta(String),
    Done {
        finish: &'static str,
        completion_tokens: usize,
    },
    /// The request could not be served (`status` 400 before `Started`, 500 after).
    Failed {
        status: u16,
        message: String,
    },
}

pub struct Job {
    pub request: Request,
    pub events: UnboundedSender<Event>,
}

/// How to set up the model.
pub struct Setup {
    pub model: PathBuf,
    pub chat_template: Option<PathBuf>,
    pub think: bool,
    pub ctx: Option<usize>,
    pub executor: ExecutorKind,
    pub jit: JitOptions,
    pub quiet: bool,
}

/// What the HTTP side needs to know about the loaded model.
pub struct Info {
    pub ctx: usize,
}

/// Starts the worker; returns once the model is ready (or failed to load).
pub fn spawn(setup: Setup) -> Result<(SyncSender<Job>, Info)> {
    let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Info>>();
    std::thread::Builder::new()
        .name("gemma4c-generate".into())
        .spawn(move || {
            if let Err(e) = serve_jobs(&setup, &ready_tx, queue) {
                // Either loading failed (reported to `spawn`) or the model broke mid-run.
                let _ = ready_tx.send(Err(e));
            }
        })?;
    let info = ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the generation worker stopped while loading"))??;
    Ok((jobs, info))
}

fn serve_jobs(setup: &Setup, ready: &std::sync::mpsc::Sender<Result<Info>>, queue: Receiver<Job>) -> Result<()> {
    let start = Instant::now();
    let model = Model::open(&setup.model)?;
    let cfg = &model.config;
    let tokenizer = textgen::load_tokenizer(&model, "serve")?;
    // Text completions work without a template; chat completions need one.
    let template = match textgen::load_template(&model, setup.chat_template.as_deref()) {
        Ok(t) => Some(t),
        Err(e) if setup.chat_template.is_none() => {
            eprintln!("gemma4c: {e:#}; /v1/chat/completions will answer 400");
            None
        }
        Err(e) => return Err(e),
    };
    let eos = textgen::stop_ids(&cfg.eos_token_ids, template.as_ref(), Some(&tokenizer));
    let ctx = setup.ctx.unwrap_or(cfg.max_position_embeddings.min(4096));
    if ctx == 0 || ctx > cfg.max_position_embeddings {
        anyhow::bail!(
            "--ctx-size {ctx} must be 1..={} (max_position_embeddings in {})",
            cfg.max_position_embeddings,
            cfg.path.display()
        );
    }
    let load = start.elapsed();
    let start = Instant::now();
    let mut session = textgen::model_executor(&model, setup.executor, ctx, cfg.sliding_window.min(ctx), &setup.jit)?;
    if !setup.quiet {
        textgen::print_setup_timings(&textgen::Setup {
            load,
            compile: start.elapsed(),
        });
    }
    let _ = ready.send(Ok(Info { ctx }));

    for (n, job) in queue.into_iter().enumerate() {
        let events = job.events;
        let req = job.request;
        let fail = |status: u16, message: String| {
            let _ = events.send(Event::Failed { status, message });
        };
        let ids = match &req.prompt {
            Prompt::Chat(messages) => {
                let Some(t) = &template else {
                    fail(
                        400,
                        "this model has no chat template (start serve with --chat-template FILE)".into(),
                    );
                    continue;
                };
                let opts = RenderOptions {
                    add_generation_prompt: true,
                    enable_thinking: setup.think,
                };
                match t.render(messages, opts) {
                    Ok(text) => tokenizer.encode(&text, None),
                    Err(e) => {
                        fail(400, e.to_string());
                        continue;
                    }
                }
            }
            Prompt::Text(text) => tokenizer.encode(text, Some(cfg.bos_token_id)),
        };
        let ids = match ids {
            Ok(ids) => ids,
            Err(e) => {
                fail(400, e.to_string());
                continue;
            }
        };
        if ids.len() + req.max_tokens > ctx {
            fail(
                400,
                format!(
                    "the prompt ({} tokens) + max_tokens {} exceed the context of {ctx} tokens",
                    ids.len(),
                    req.max_tokens
                ),
            );
            continue;
        }
        let mut sampler = match Sampler::new(req.sampling) {
            Ok(s) => s,
            Err(e) => {
                fail(400, e.to_string());
                continue;
            }
        };
        session.reset();
        let _ = events.send(Event::Started {
            prompt_tokens: ids.len(),
        });
        let mut text = TextOut::new(&tokenizer, &req.stops, &eos);
        let mut gone = false;
        let result = generate(
            session.as_mut(),
            &Generation {
                prompt: &ids,
                max_new_tokens: req.max_tokens,
                eos_token_ids: &eos,
                logits: false,
            },
            &mut sampler,
            &mut |token, _| {
                let (delta, flow) = text.push(token)?;
                // A client that went away stops its generation.
                if (!delta.is_empty() && events.send(Event::Delta(delta)).is_err()) || events.is_closed() {
                    gone = true;
                    return Ok(Flow::Stop);
                }
                Ok(flow)
            },
        );
        match result {
            Ok(out) => {
                let rest = text.finish();
                if !rest.is_empty() {
                    let _ = events.send(Event::Delta(rest));
                }
                let finish = match out.reason {
                    StopReason::Length => "length",
                    StopReason::Eos | StopReason::Caller => "stop",
                };
                let _ = events.send(Event::Done {
                    finish,
                    completion_tokens: out.ids.len(),
                });
                if !setup.quiet {
                    eprintln!(
                        "gemma4c: request {n}: {} prompt tokens ({:.1} tok/s), {} generated ({:.1} tok/s), {}",
                        out.timings.prompt_tokens,
                        out.timings.prompt_tokens_per_s(),
                        out.timings.generated_tokens,
                        out.timings.generated_tokens_per_s(),
                        if gone { "client went away" } else { finish }
                    );
                }
            }
            Err(e) => fail(500, e.to_string()),
        }
    }
    Ok(())
}
