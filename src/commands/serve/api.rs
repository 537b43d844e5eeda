//! The OpenAI-compatible request bodies, their validation, and the response
//! objects (`chat.completion`, `text_completion` and their stream chunks).
//!
//! Every field a client sends is checked here, before a request reaches the
//! generation worker: a bad request becomes a 400 with a JSON error naming the
//! field, never a panic. Unknown fields are ignored, as OpenAI clients send
//! many this server does not implement.

use gemma4c_runtime::chat_template::Message;
use gemma4c_runtime::sampler::SamplingParams;
use serde::Deserialize;
use serde_json::{json, Value};

/// At most this many stop strings (OpenAI's limit), each at most this long.
const MAX_STOPS: usize = 4;
const MAX_STOP_BYTES: usize = 256;

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
struct ApiMessage {
    role: String,
    content: Content,
}

/// The sampling fields both endpoints share.
#[derive(Deserialize)]
struct Sampling {
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    seed: Option<u64>,
    stop: Option<OneOrMany>,
    stream: Option<bool>,
    n: Option<i64>,
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<ApiMessage>,
    #[serde(flatten)]
    sampling: Sampling,
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: OneOrMany,
    #[serde(flatten)]
    sampling: Sampling,
}

/// What to generate from.
pub enum Prompt {
    /// Rendered with the chat template.
    Chat(Vec<Message>),
    /// Tokenized as is, BOS added.
    Text(String),
}

/// A checked request.
pub struct Request {
    pub prompt: Prompt,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stops: Vec<String>,
    pub stream: bool,
}

/// Which endpoint a request came in on (shapes the response objects).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Text,
}

/// Parses and checks a `/v1/chat/completions` body.
/// `defaults` are the server's sampling flags, used for fields the request leaves out.
pub fn parse_chat(body: &[u8], ctx: usize, defaults: &SamplingParams) -> Result<Request, String> {
    let req: ChatRequest = from_json(body)?;
    if req.messages.is_empty() {
        return Err("`messages` is empty".into());
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant") {
            return Err(format!(
                "messages[{i}].role is {:?}; expected system, developer, user or assistant",
                m.role
            ));
        }
        let content = match m.content {
            Content::Text(t) => t,
            Content::Parts(parts) => {
                let mut text = String::new();
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(format!(
                                "messages[{i}].content[{j}] is of type {kind:?}; only text parts are supported"
                            ))
                        }
                    }
                }
                text
            }
        };
        messages.push(Message { role: m.role, content });
    }
    let max_default = ctx;
    request(Prompt::Chat(messages), req.sampling, max_default, ctx, defaults)
}

/// Parses and checks a `/v1/completions` body.
pub fn parse_completion(body: &[u8], ctx: usize, defaults: &SamplingParams) -> Result<Request, String> {
    let req: CompletionRequest = from_json(body)?;
    let prompt = match req.prompt {
        OneOrMany::One(p) => p,
        OneOrMany::Many(mut list) if list.len() == 1 => list.remove(0),
        OneOrMany::Many(_) => return Err("`prompt` must be one string (batches are not supported)".into()),
    };
    // OpenAI's default for completions.
    request(Prompt::Text(prompt), req.sampling, 16, ctx, defaults)
}

fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))
}

fn request(
    prompt: Prompt,
    s: Sampling,
    max_default: usize,
    ctx: usize,
    defaults: &SamplingParams,
) -> Result<Request, String> {
    if let Some(n) = s.n {
        if n != 1 {
            return Err(format!("`n` is {n}; only 1 is supported"));
        }
    }
    let max_tokens = match s.max_completion_tokens.or(s.max_tokens) {
        None => max_default,
        Some(m) if m >= 1 && (m as u64) <= ctx as u64 => m as usize,
        Some(m) => return Err(format!("`max_tokens` is {m}; expected 1..={ctx} (the context size)")),
    };
    let temperature = s.temperature.unwrap_or(defaults.temperature as f64);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(format!("`temperature` is {temperature}; expected 0..=2"));
    }
    let top_p = match s.top_p {
        None => defaults.top_p,
        Some(p) if p > 0.0 && p <= 1.0 => Some(p as f32),
        Some(p) => return Err(format!("`top_p` is {p}; expected a number in (0, 1]")),
    };
    let top_k = match s.top_k {
        None => defaults.top_k,
        Some(k) if k >= 1 => Some(k as usize),
        Some(k) => return Err(format!("`top_k` is {k}; expected at least 1")),
    };
    let stops = match s.stop {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    };
    if stops.len() > MAX_STOPS || stops.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(format!(
            "`stop` takes at most {MAX_STOPS} strings of at most {MAX_STOP_BYTES} bytes"
        ));
    }
    Ok(Request {
        prompt,
        max_tokens,
        sampling: SamplingParams {
            temperature: temperature as f32,
            top_k,
            top_p,
            seed: s.seed.unwrap_or(defaults.seed),
        },
        stops,
        stream: s.stream.unwrap_or(false),
    })
}

/// `{"error": {...}}` as OpenAI sends it.
pub fn error_body(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

/// Identity of one response, repeated in each of its stream chunks.
pub struct Head {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub kind: Kind,
}

impl Head {
    /// The whole (non-streamed) response.
    pub fn response(&self, text: &str, finish: &str, prompt_tokens: usize, completion_tokens: usize) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text},
                                 "logprobs": null, "finish_reason": finish}),
            Kind::Text => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
        };
        json!({
            "id": self.id, "object": self.object(false), "created": self.created, "model": self.model,
            "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })
    }

    /// A stream chunk: the assistant role first (chat only), then text deltas,
    /// then an empty delta with the finish reason.
    pub fn chunk(&self, delta: Option<&str>, role: bool, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut d = serde_json::Map::new();
                if role {
                    d.insert("role".into(), "assistant".into());
                }
                if let Some(t) = delta {
                    d.insert("content".into(), t.into());
                }
                json!({"index": 0, "delta": d, "logprobs": null, "finish_reason": finish})
            }
            Kind::Text => json!({"index": 0, "text": delta.unwrap_or(""), "logprobs": null, "finish_reason": finish}),
        };
        json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model,
               "choices": [choice]})
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        match parse_chat(body.as_bytes(), 100, &SamplingParams::default()) {
            Err(e) => e,
            Ok(_) => panic!("accepted {body}"),
        }
    }

    #[test]
    fn bad_chat_requests_are_rejected_with_the_field_named() {
        assert!(err("{").contains("invalid request body"));
        assert!(err(r#"{"messages": []}"#).contains("`messages` is empty"));
        assert!(err(r#"{"messages": [{"role": "robot", "content": "x"}]}"#).contains("messages[0].role"));
        let m = r#""messages": [{"role": "user", "content": "x"}]"#;
        assert!(err(&format!("{{{m}, \"max_tokens\": 0}}")).contains("`max_tokens` is 0"));
        assert!(err(&format!("{{{m}, \"max_tokens\": 101}}")).contains("1..=100"));
        assert!(err(&format!("{{{m}, \"temperature\": -1}}")).contains("`temperature`"));
        assert!(err(&format!("{{{m}, \"top_p\": 0}}")).contains("`top_p`"));
        assert!(err(&format!("{{{m}, \"top_k\": 0}}")).contains("`top_k`"));
        assert!(err(&format!("{{{m}, \"n\": 2}}")).contains("`n`"));
        assert!(err(&format!("{{{m}, \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}}")).contains("`stop`"));
        assert!(err(r#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#).contains("only text"));
    }

    #[test]
    fn good_requests_carry_their_parameters() {
        let body = r#"{"model": "x", "messages": [{"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "seed": 3, "stop": "END",
            "stream": true, "unknown_field": 1}"#;
        let r = parse_chat(body.as_bytes(), 100, &SamplingParams::default()).expect("valid");
        let Prompt::Chat(m) = &r.prompt else { panic!("chat") };
        assert_eq!(m[1], Message::new("user", "ab"));
        assert_eq!(
            (r.max_tokens, r.stream, r.stops.clone()),
            (7, true, vec!["END".to_string()])
        );
        assert_eq!(
            (r.sampling.temperature, r.sampling.top_k, r.sampling.seed),
            (0.5, Some(40), 3)
        );
        let r = parse_completion(br#"{"prompt": ["hi"]}"#, 100, &SamplingParams::default()).expect("valid");
        assert!(matches!(r.prompt, Prompt::Text(ref t) if t == "hi"));
        assert_eq!((r.max_tokens, r.stream, r.sampling.temperature), (16, false, 0.0));
        assert!(parse_completion(br#"{"prompt": ["a", "b"]}"#, 100, &SamplingParams::default()).is_err());
    }
}
