//! A multi-turn chat over one KV cache: which tokens each new turn feeds.
//!
//! Re-rendering the whole history every turn and prefilling it again costs
//! O(history) per turn. Instead the cache keeps every token fed so far and a
//! new turn feeds only what is new, the way llama.cpp's chat does:
//!
//! 1. the last token of the previous reply (sampled, not yet fed);
//! 2. the text the template writes after a model message's content (Gemma 4:
//!    `<turn|>\n`), without the end-of-turn marker when the reply ended with
//!    that token;
//! 3. the part of `render(history + [user], generation prompt)` after
//!    `render(history)`.
//!
//! The cache then holds the model's own tokens for its replies (including a
//! thought channel the template would strip from the history), which is what
//! the model generated them after. The first turn feeds the whole rendering.

use crate::chat_template::{ChatTemplate, Message, RenderOptions, TemplateError, END_OF_TURN_MARKERS};
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("the chat template {0} renders the history differently once a message is added; use /reset")]
    NotPrefixStable(String),
}

pub struct Conversation<'t> {
    template: &'t ChatTemplate,
    tokenizer: &'t Tokenizer,
    system: Option<String>,
    thinking: bool,
    /// System message (if any), then user and assistant messages.
    history: Vec<Message>,
    /// Whether the cache holds anything (false before the first turn).
    started: bool,
    /// The last sampled token of the previous reply, not yet fed.
    pending: Option<u32>,
}

impl<'t> Conversation<'t> {
    pub fn new(
        template: &'t ChatTemplate,
        tokenizer: &'t Tokenizer,
        system: Option<&str>,
        thinking: bool,
    ) -> Conversation<'t> {
        let mut c = Conversation {
            template,
            tokenizer,
            system: system.map(str::to_string),
            thinking,
            history: Vec::new(),
            started: false,
            pending: None,
        };
        c.reset();
        c
    }

    /// Forgets the history (the caller resets the executor's cache too).
    pub fn reset(&mut self) {
        self.history.clear();
        if let Some(s) = &self.system {
            self.history.push(Message::new("system", s));
        }
        self.started = false;
        self.pending = None;
    }

    pub fn history(&self) -> &[Message] {
        &self.history
    }

    /// The ids to feed for a new user message; the message joins the history.
    pub fn user_turn(&mut self, text: &str) -> Result<Vec<u32>, ChatError> {
        let opts = RenderOptions {
            add_generation_prompt: true,
            enable_thinking: self.thinking,
        };
        let mut next = self.history.clone();
        next.push(Message::new("user", text));
        let full = self.template.render(&next, opts)?;
        let mut ids = Vec::new();
        if !self.started {
            ids = self.tokenizer.encode(&full, None)?;
        } else {
            let past = self.template.render(
                &self.history,
                RenderOptions {
                    add_generation_prompt: false,
                    enable_thinking: self.thinking,
                },
            )?;
            let Some(new_part) = full.strip_prefix(past.as_str()) else {
                return Err(ChatError::NotPrefixStable(self.template.origin().into()));
            };
            let mut closing = self.template.closing_after_reply(&self.history)?;
            if let Some(last) = self.pending {
                let token = self.tokenizer.id_to_token(last).unwrap_or_default();
                if END_OF_TURN_MARKERS.contains(&token.as_str()) {
                    if let Some(rest) = closing.strip_prefix(token.as_str()) {
                        closing = rest.to_string();
                    }
                }
                ids.push(last);
            }
            ids.extend(self.tokenizer.encode(&(closing + new_part), None)?);
        }
        self.history = next;
        self.started = true;
        self.pending = None;
        Ok(ids)
    }

    /// Records the model's reply: `generated` as sampled (its last id is fed
    /// on the next turn) and the text shown for it (without stop tokens).
    pub fn model_reply(&mut self, generated: &[u32], text: &str) {
        self.pending = generated.last().copied();
        self.history.push(Message::new("assistant", text));
    }
}
