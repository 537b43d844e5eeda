//! `gemma4c serve`: an OpenAI-compatible HTTP server (axum on tokio).
//!
//! `POST /v1/chat/completions` and `POST /v1/completions` (with `stream: true`
//! as server-sent events), `GET /v1/models`, `GET /health`. Requests are queued
//! to one generation worker (worker.rs); request bodies are bounded and checked
//! (api.rs), and a bad request gets a 400 with a JSON error.

mod api;
mod worker;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use self::api::{Head, Kind};
use self::worker::{Event, Job};
use super::run::ExecutorKind;
use super::textgen::{SamplingArgs, ThreadsArg};
use gemma4c_runtime::sampler::SamplingParams;

/// Request bodies larger than this are refused (413).
const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json),
    /// or a GGUF file (config, tokenizer and chat template from its metadata).
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on (loopback by default; the server has no authentication).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed on stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Use this Jinja chat template instead of the checkpoint's.
    #[arg(long, value_name = "FILE")]
    chat_template: Option<PathBuf>,
    /// Turn on the model's thinking (Gemma 4 `enable_thinking`) for chat requests.
    #[arg(long)]
    think: bool,
    /// Tokens per request, prompt + completion (default: max_position_embeddings, at most 4096).
    #[arg(long)]
    ctx_size: Option<usize>,
    /// Sampling of requests that do not set `temperature`, `top_k`, `top_p` or `seed`.
    #[command(flatten)]
    sampling: SamplingArgs,
    #[arg(long, value_enum, default_value_t = ExecutorKind::Jit)]
    executor: ExecutorKind,
    #[command(flatten)]
    threads: ThreadsArg,
    /// Do not log timings and requests on stderr.
    #[arg(long, short)]
    quiet: bool,
}

struct AppState {
    jobs: SyncSender<Job>,
    model_id: String,
    ctx: usize,
    sampling: SamplingParams,
    next_id: AtomicU64,
}

pub fn run(args: Args) -> Result<()> {
    // Flags first: a bad thread count or sampler setting fails before loading.
    let jit = args.threads.jit_options()?;
    args.sampling.sampler()?;
    let model_id = args
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "gemma4c".into());
    let (jobs, info) = worker::spawn(worker::Setup {
        model: args.model.clone(),
        chat_template: args.chat_template.clone(),
        think: args.think,
        ctx: args.ctx_size,
        executor: args.executor,
        jit,
        quiet: args.quiet,
    })?;
    let state = Arc::new(AppState {
        jobs,
        model_id,
        ctx: info.ctx,
        sampling: args.sampling.params(),
        next_id: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        // Always printed: with --port 0 this is how clients learn the port.
        eprintln!("gemma4c: listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await.context("the HTTP server stopped")
    })
}

async fn models(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({"object": "list", "data": [
        {"id": st.model_id, "object": "model", "created": 0, "owned_by": "gemma4c"}
    ]}))
}

async fn chat_completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let request = api::parse_chat(&body, st.ctx, &st.sampling);
    complete(st, Kind::Chat, request).await
}

async fn completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let request = api::parse_completion(&body, st.ctx, &st.sampling);
    complete(st, Kind::Text, request).await
}

fn error(status: StatusCode, message: &str) -> Response {
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    (status, Json(api::error_body(message, kind))).into_response()
}

async fn complete(st: Arc<AppState>, kind: Kind, request: Result<api::Request, String>) -> Response {
    let request = match request {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let stream = request.stream;
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    match st.jobs.try_send(Job { request, events }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "too many queued requests; retry later")
        }
        Err(TrySendError::Disconnected(_)) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "the generation worker has stopped")
        }
    }
    let prompt_tokens = match rx.recv().await {
        Some(Event::Started { prompt_tokens }) => prompt_tokens,
        Some(Event::Failed { status, message }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(status, &message);
        }
        _ => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the generation worker gave no answer",
            )
        }
    };
    let n = st.next_id.fetch_add(1, Ordering::Relaxed);
    let head = Head {
        id: format!("{}-{n}", if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: st.model_id.clone(),
        kind,
    };
    if stream {
        return Sse::new(sse_events(head, rx)).into_response();
    }
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Delta(d)) => text.push_str(&d),
            Some(Event::Done {
                finish,
                completion_tokens,
            }) => return Json(head.response(&text, finish, prompt_tokens, completion_tokens)).into_response(),
            Some(Event::Failed { message, .. }) => return error(StatusCode::INTERNAL_SERVER_ERROR, &message),
            Some(Event::Started { .. }) => {}
            None => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the generation worker gave no answer",
                )
            }
        }
    }
}

/// Where a server-sent event stream is.
enum Phase {
    /// The first chunk (chat: the assistant role).
    Open,
    Text,
    /// `data: [DONE]` still to send.
    Done,
    Closed,
}

/// The chunks of a streamed response. When the client disconnects, axum
/// drops this stream and with it `rx`; the worker sees that and stops.
fn sse_events(
    head: Head,
    rx: UnboundedReceiver<Event>,
) -> impl futures_util::Stream<Item = Result<SseEvent, Infallible>> {
    let data = |v: serde_json::Value| SseEvent::default().data(v.to_string());
    stream::unfold((head, rx, Phase::Open), move |(head, mut rx, phase)| async move {
        let (event, next) = match phase {
            Phase::Open if head.kind == Kind::Chat => (data(head.chunk(None, true, None)), Phase::Text),
            Phase::Open | Phase::Text => match rx.recv().await {
                Some(Event::Delta(d)) => (data(head.chunk(Some(&d), false, None)), Phase::Text),
                Some(Event::Done { finish, .. }) => (data(head.chunk(None, false, Some(finish))), Phase::Done),
                Some(Event::Failed { message, .. }) => (data(api::error_body(&message, "server_error")), Phase::Done),
                Some(Event::Started { .. }) => (SseEvent::default().comment(""), Phase::Text),
                None => return None,
            },
            Phase::Done => (SseEvent::default().data("[DONE]"), Phase::Closed),
            Phase::Closed => return None,
        };
        Some((Ok(event), (head, rx, next)))
    })
}
