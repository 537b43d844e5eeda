//! Chat templates: the Jinja programs that Hugging Face checkpoints ship to
//! turn a list of messages into prompt text, rendered with `minijinja`.
//!
//! A template comes from a checkpoint directory (`chat_template.jinja`, else
//! the `chat_template` field of `tokenizer_config.json`), a GGUF file's
//! `tokenizer.chat_template` metadata, or any string (a `--chat-template`
//! file). Rendering follows transformers' `apply_chat_template`: `trim_blocks` and
//! `lstrip_blocks` on, Python string methods (`.split`, `.strip`, ...) via
//! minijinja-contrib's pycompat, `raise_exception`, and the variables
//! `messages`, `bos_token`, `eos_token`, `add_generation_prompt` and
//! `enable_thinking`.

use std::path::{Path, PathBuf};

use gemma4c_frontend::gguf::GgufFile;
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors from loading or rendering a chat template.
#[derive(Debug, Error)]
pub enum TemplateError {
    #[error("cannot read chat template {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {reason}")]
    Invalid { origin: String, reason: String },
    #[error("chat template from {origin} failed to render: {reason}")]
    Render { origin: String, reason: String },
}

/// One chat message, as in the OpenAI API and transformers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The special-token strings a template may print (`{{ bos_token }}`).
#[derive(Clone, Debug, Default)]
pub struct SpecialTokens {
    pub bos: String,
    pub eos: String,
}

/// Switches of one rendering.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenderOptions {
    /// Open a model turn at the end (for generation).
    pub add_generation_prompt: bool,
    /// Gemma 4's thinking switch (`<|think|>` in the system turn).
    pub enable_thinking: bool,
}

/// End-of-turn markers of the chat formats we know: generation stops on them.
pub const END_OF_TURN_MARKERS: [&str; 2] = ["<turn|>", "<end_of_turn>"];

const NAME: &str = "chat_template";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    origin: String,
    source: String,
    special: SpecialTokens,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("origin", &self.origin).finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `origin` names where it came from in errors.
    pub fn new(source: &str, origin: &str, special: SpecialTokens) -> Result<ChatTemplate, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| TemplateError::Invalid {
                origin: origin.into(),
                reason: format!("not a valid Jinja template: {e}"),
            })?;
        Ok(ChatTemplate {
            env,
            origin: origin.into(),
            source: source.into(),
            special,
        })
    }

    /// Reads a template file (e.g. `--chat-template FILE`).
    pub fn from_file(path: &Path, special: SpecialTokens) -> Result<ChatTemplate, TemplateError> {
        let source = read(path)?;
        ChatTemplate::new(&source, &path.display().to_string(), special)
    }

    /// The template of a Hugging Face checkpoint directory: `chat_template.jinja`,
    /// else `tokenizer_config.json`'s `chat_template` (a string, or a list of
    /// named templates of which `default` is used). `None` when it has neither.
    pub fn from_model_dir(dir: &Path) -> Result<Option<ChatTemplate>, TemplateError> {
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.exists() {
            let text = read(&config_path)?;
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| TemplateError::Invalid {
                origin: config_path.display().to_string(),
                reason: format!("not valid JSON: {e}"),
            })?;
            Some(json)
        } else {
            None
        };
        let special = config.as_ref().map(special_tokens).unwrap_or_default();
        let file = dir.join("chat_template.jinja");
        if file.exists() {
            return ChatTemplate::from_file(&file, special).map(Some);
        }
        let Some(field) = config.as_ref().and_then(|c| c.get("chat_template")) else {
            return Ok(None);
        };
        let origin = format!("{} field chat_template", config_path.display());
        let source = match field {
            serde_json::Value::String(s) => s.as_str(),
            serde_json::Value::Array(list) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .ok_or_else(|| TemplateError::Invalid {
                    origin: origin.clone(),
                    reason: "a list of templates without one named \"default\"".into(),
                })?,
            _ => {
                return Err(TemplateError::Invalid {
                    origin,
                    reason: "expected a string or a list of {name, template}".into(),
                })
            }
        };
        ChatTemplate::new(source, &origin, special).map(Some)
    }

    /// The template a GGUF file carries in `tokenizer.chat_template`, with
    /// `bos_token`/`eos_token` spelled as the file's tokens at
    /// `tokenizer.ggml.bos_token_id`/`eos_token_id`. `None` when it has none.
    pub fn from_gguf(g: &GgufFile) -> Result<Option<ChatTemplate>, TemplateError> {
        let origin = format!("{} metadata tokenizer.chat_template", g.path.display());
        let Some(value) = g.meta("tokenizer.chat_template") else {
            return Ok(None);
        };
        let source = value.as_str().ok_or_else(|| TemplateError::Invalid {
            origin: origin.clone(),
            reason: format!("expected a string, found {}", value.kind()),
        })?;
        ChatTemplate::new(source, &origin, gguf_special_tokens(g)).map(Some)
    }

    /// Where the template came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The special tokens the template is rendered with.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// The end-of-turn markers this template writes (generation stops on them).
    pub fn end_of_turn_markers(&self) -> Vec<&'static str> {
        END_OF_TURN_MARKERS
            .into_iter()
            .filter(|m| self.source.contains(m))
            .collect()
    }

    /// Renders `messages` to prompt text.
    pub fn render(&self, messages: &[Message], opts: RenderOptions) -> Result<String, TemplateError> {
        if messages.is_empty() {
            return Err(TemplateError::Render {
                origin: self.origin.clone(),
                reason: "no messages to render".into(),
            });
        }
        let tpl = self.env.get_template(NAME).map_err(|e| self.render_error(e))?;
        let ctx = minijinja::context! {
            messages => messages,
            bos_token => self.special.bos,
            eos_token => self.special.eos,
            add_generation_prompt => opts.add_generation_prompt,
            enable_thinking => opts.enable_thinking,
        };
        tpl.render(ctx).map_err(|e| self.render_error(e))
    }

    /// What the template writes after the content of a model message that ends
    /// `history` (e.g. `<turn|>\n`): the text that closes a generated reply.
    pub fn closing_after_reply(&self, history: &[Message]) -> Result<String, TemplateError> {
        // A private-use character marks where the content lands.
        const MARK: &str = "\u{E000}";
        let mut marked = history.to_vec();
        match marked.last_mut() {
            Some(last) if last.role == "assistant" => last.content = MARK.into(),
            _ => {
                return Err(TemplateError::Render {
                    origin: self.origin.clone(),
                    reason: "the history does not end with a model reply".into(),
                })
            }
        }
        let text = self.render(&marked, RenderOptions::default())?;
        let at = text.rfind(MARK).ok_or_else(|| TemplateError::Render {
            origin: self.origin.clone(),
            reason: "the template drops the content of model replies".into(),
        })?;
        Ok(text[at + MARK.len()..].to_string())
    }

    fn render_error(&self, e: minijinja::Error) -> TemplateError {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason.push_str(&format!(": {s}"));
            source = s.source();
        }
        TemplateError::Render {
            origin: self.origin.clone(),
            reason,
        }
    }
}

fn read(path: &Path) -> Result<String, TemplateError> {
    std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `bos_token` / `eos_token` of a GGUF file: the tokens its
/// `tokenizer.ggml.{bos,eos}_token_id` point at (Gemma's `<bos>` and `<eos>`
/// when a key is missing or out of range).
pub fn gguf_special_tokens(g: &GgufFile) -> SpecialTokens {
    let tokens = g.meta("tokenizer.ggml.tokens").and_then(|t| t.as_array());
    let get = |key: &str, default: &str| -> String {
        g.meta(key)
            .and_then(|id| id.as_u64())
            .and_then(|id| tokens?.get(usize::try_from(id).ok()?)?.as_str())
            .unwrap_or(default)
            .to_string()
    };
    SpecialTokens {
        bos: get("tokenizer.ggml.bos_token_id", "<bos>"),
        eos: get("tokenizer.ggml.eos_token_id", "<eos>"),
    }
}

/// `bos_token` / `eos_token` of a tokenizer_config.json: a string or an
/// AddedToken object `{"content": ...}`.
fn special_tokens(config: &serde_json::Value) -> SpecialTokens {
    let get = |key: &str| -> String {
        match config.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        }
    };
    SpecialTokens {
        bos: get("bos_token"),
        eos: get("eos_token"),
    }
}
