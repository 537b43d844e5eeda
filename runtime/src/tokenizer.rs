//! Text <-> token ids, backed by the Hugging Face `tokenizers` crate.
//!
//! Gemma ships a `tokenizer.json` whose post-processor adds nothing, so the
//! `<bos>` token that the model expects at the start of every prompt is added
//! here explicitly rather than through `add_special_tokens`. Everything runs
//! offline: the tokenizer is only ever loaded from a local file.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;

/// Errors from loading a tokenizer or converting between text and ids.
#[derive(Debug, Error)]
pub enum TokenizerError {
    /// The tokenizer file could not be read (missing, unreadable, ...).
    // The reason is text, not a `#[source]`: error chains printed with `{:#}`
    // would otherwise say it twice.
    #[error("cannot read tokenizer file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// The file was read but is not a valid Hugging Face `tokenizer.json`.
    #[error("cannot parse {path} as a Hugging Face tokenizer.json: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// The tokenizer pipeline failed on the input text.
    #[error("cannot encode text: {reason}")]
    Encode { reason: String },
    /// A token id has no entry in the vocabulary.
    #[error("token id {id} is not in the tokenizer vocabulary (size {vocab_size})")]
    UnknownId { id: u32, vocab_size: usize },
    /// The decoder pipeline failed on the given ids.
    #[error("cannot decode token ids: {reason}")]
    Decode { reason: String },
}

/// A loaded `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    // The wrapped tokenizer's Debug output dumps the whole vocabulary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json` from `path`.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        // Read it ourselves so a missing file and a malformed one produce
        // distinct errors that both name the file.
        let json = gemma4c_ir::limits::read_text(path, gemma4c_ir::limits::MAX_JSON_BYTES).map_err(|e| {
            TokenizerError::Read {
                path: path.to_path_buf(),
                reason: e,
            }
        })?;
        let inner = tokenizers::Tokenizer::from_str(&json).map_err(|e| TokenizerError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Wraps a tokenizer built in code (from a GGUF file's metadata) that was
    /// read from `path`.
    pub fn from_parts(inner: tokenizers::Tokenizer, path: &Path) -> Self {
        Self {
            inner,
            path: path.to_path_buf(),
        }
    }

    /// The file this tokenizer was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Vocabulary size including added (special) tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string such as `"<bos>"` or `"<end_of_turn>"`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of an id, if it is in the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Encodes `text` without the post-processor's special tokens, then
    /// prepends `bos` unless the ids already start with it (e.g. because the
    /// text itself began with the literal `<bos>` special token).
    pub fn encode(&self, text: &str, bos: Option<u32>) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode { reason: e.to_string() })?;
        let ids = encoding.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 1);
        if let Some(bos) = bos {
            if ids.first() != Some(&bos) {
                out.push(bos);
            }
        }
        out.extend_from_slice(ids);
        Ok(out)
    }

    /// Decodes `ids` to text, leaving out special tokens such as `<bos>`.
    ///
    /// Ids outside the vocabulary are an error rather than being silently
    /// dropped (which is what the `tokenizers` crate would do), since they
    /// indicate a model/tokenizer mismatch.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        for &id in ids {
            self.check_id(id)?;
        }
        self.decode_unchecked(ids)
    }

    /// A streaming decoder for generated ids; see [`TextStream`].
    pub fn stream(&self) -> TextStream<'_> {
        TextStream::new(self)
    }

    fn check_id(&self, id: u32) -> Result<(), TokenizerError> {
        if self.inner.id_to_token(id).is_some() {
            Ok(())
        } else {
            Err(TokenizerError::UnknownId {
                id,
                vocab_size: self.vocab_size(),
            })
        }
    }

    fn decode_unchecked(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| TokenizerError::Decode { reason: e.to_string() })
    }
}

/// Turns generated ids, fed one at a time, into printable text deltas whose
/// concatenation is byte-identical to a one-shot [`Tokenizer::decode`].
///
/// Decoding ids one by one is wrong for tokenizers like Gemma's: a character
/// may be spread over several byte-fallback tokens (`<0xE2>`, `<0x82>`,
/// `<0xAC>` for '€'), and the `ByteFallback` decoder turns a whole run of
/// byte tokens into U+FFFD, one per byte, as soon as the run is not valid
/// UTF-8 — so a later byte can rewrite characters an earlier prefix of the
/// run decoded to ('€' followed by a stray `<0xE2>` becomes "����"). The
/// `tokenizers` crate's `DecodeStream` emits such prefixes early and then
/// fails with "Invalid prefix" on these sequences, so this stream does the
/// same windowed decoding but holds a run of byte tokens back until a token
/// that closes it arrives (or [`TextStream::finish`]). Skipped special tokens
/// do not close a run: `decode` drops them before the byte run is joined.
///
/// Each push decodes only the window since the last emitted token (kept as
/// left context, as `DecodeStream` does, for decoders that look at their
/// neighbours), so streaming costs O(1) per token, not O(n).
#[derive(Debug)]
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    /// The last token that produced text, then every id pushed since.
    window: Vec<u32>,
    /// The decode of `window[..1]` when it holds a context token, else empty.
    prefix: String,
}

impl<'a> TextStream<'a> {
    /// Starts an empty stream.
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            window: Vec::new(),
            prefix: String::new(),
        }
    }

    /// The ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Adds one generated id and returns the text it completes, if any.
    ///
    /// Returns `Ok(None)` when there is nothing new to show yet (a special
    /// token, or a byte-fallback token whose run may still change). An id
    /// outside the vocabulary is an error and is not added.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.tokenizer.check_id(id)?;
        self.ids.push(id);
        self.window.push(id);
        if self.holds_back(id) {
            return Ok(None);
        }
        self.flush(Some(id))
    }

    /// Flushes text held back at the end of generation (e.g. a trailing
    /// byte sequence that never became a valid character, shown as U+FFFD).
    pub fn finish(&mut self) -> Option<String> {
        self.flush(None).ok().flatten()
    }

    /// Byte-fallback tokens (a run may still be rewritten) and special
    /// tokens (dropped by `decode`, so they do not end a run).
    fn holds_back(&self, id: u32) -> bool {
        let inner = &self.tokenizer.inner;
        match inner.id_to_token(id) {
            Some(t) => is_byte_token(&t) || inner.get_added_vocabulary().is_special_token(&t),
            None => false,
        }
    }

    /// Decodes the window and hands out what lies beyond the context; the
    /// window then restarts from `context` (the token that just produced text).
    fn flush(&mut self, context: Option<u32>) -> Result<Option<String>, TokenizerError> {
        let text = self.tokenizer.decode_unchecked(&self.window)?;
        let Some(delta) = text.strip_prefix(self.prefix.as_str()) else {
            return Err(TokenizerError::Decode {
                reason: format!(
                    "the decoder rewrote earlier text ({:?} is not a prefix of {text:?})",
                    self.prefix
                ),
            });
        };
        if delta.is_empty() {
            return Ok(None);
        }
        let delta = delta.to_string();
        self.window.clear();
        self.prefix.clear();
        if let Some(id) = context {
            self.window.push(id);
            self.prefix = self.tokenizer.decode_unchecked(&self.window)?;
        }
        Ok(Some(delta))
    }
}

/// Whether a vocabulary entry is a byte-fallback token such as `<0xE2>`.
fn is_byte_token(token: &str) -> bool {
    token.len() == 6
        && token.starts_with("<0x")
        && token.ends_with('>')
        && token[3..5].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Ids of the test vocabulary.
    const BOS: u32 = 2;
    const EOS: u32 = 1;
    const HI: u32 = 9;
    const YO: u32 = 11;
    const SPACE: u32 = 4;
    const E2: u32 = 12;
    const X82: u32 = 13;
    const XAC: u32 = 14;

    fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// A miniature Gemma-style tokenizer.json: BPE with byte fallback,
    /// spaces normalised to '▁', special tokens as added tokens, the
    /// Replace/ByteFallback/Fuse decoder, and no post-processor.
    fn gemma_like_json() -> serde_json::Value {
        let special = |id: u32, content: &str| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        };
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [special(0, "<pad>"), special(1, "<eos>"), special(2, "<bos>"),
                             special(3, "<unk>")],
            "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
            "pre_tokenizer": null,
            "post_processor": null,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"}
            ]},
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": "<unk>",
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": true,
                "byte_fallback": true,
                "ignore_merges": false,
                "vocab": {
                    "<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "▁": 4, "h": 5, "i": 6,
                    "y": 7, "o": 8, "hi": 9, "▁y": 10, "▁yo": 11,
                    "<0xE2>": 12, "<0x82>": 13, "<0xAC>": 14
                },
                "merges": [["h", "i"], ["▁", "y"], ["▁y", "o"]]
            }
        })
    }

    fn write_tokenizer(dir: &Path) -> PathBuf {
        let path = dir.join("tokenizer.json");
        must(std::fs::write(&path, gemma_like_json().to_string()));
        path
    }

    fn load() -> (tempfile::TempDir, Tokenizer) {
        let dir = must(tempfile::tempdir());
        let tok = must(Tokenizer::from_file(&write_tokenizer(dir.path())));
        (dir, tok)
    }

    #[test]
    fn encode_adds_bos_once() {
        let (_dir, tok) = load();
        assert_eq!(must(tok.encode("hi yo", None)), vec![HI, YO]);
        assert_eq!(must(tok.encode("hi yo", Some(BOS))), vec![BOS, HI, YO]);
        // A literal <bos> in the text is matched as the special token and
        // not doubled.
        assert_eq!(must(tok.encode("<bos>hi", Some(BOS))), vec![BOS, HI]);
        assert_eq!(must(tok.encode("", Some(BOS))), vec![BOS]);
        assert_eq!(tok.token_to_id("<bos>"), Some(BOS));
        assert_eq!(tok.id_to_token(YO).as_deref(), Some("▁yo"));
        assert_eq!(tok.vocab_size(), 15);
    }

    #[test]
    fn byte_fallback_round_trips_multibyte_text() {
        let (_dir, tok) = load();
        let ids = must(tok.encode("hi €", Some(BOS)));
        assert_eq!(ids, vec![BOS, HI, SPACE, E2, X82, XAC]);
        assert_eq!(must(tok.decode(&ids)), "hi €");
    }

    #[test]
    fn decode_skips_special_tokens_and_rejects_unknown_ids() {
        let (_dir, tok) = load();
        assert_eq!(must(tok.decode(&[BOS, HI, YO, EOS])), "hi yo");
        match tok.decode(&[HI, 99]) {
            Err(e @ TokenizerError::UnknownId { id: 99, .. }) => {
                assert!(e.to_string().contains("99"), "{e}")
            }
            other => panic!("expected UnknownId, got {other:?}"),
        }
    }

    #[test]
    fn stream_matches_one_shot_decode_and_holds_partial_chars() {
        let (_dir, tok) = load();
        let mut stream = tok.stream();
        let mut pieces = Vec::new();
        for id in [BOS, HI, YO, SPACE, E2, X82, XAC, YO, EOS] {
            pieces.push(must(stream.push(id)));
        }
        assert_eq!(
            pieces,
            vec![
                None, // <bos> is special: no text
                Some("hi".into()),
                Some(" yo".into()),
                Some(" ".into()),
                None,                // 0xE2: a byte run is held back
                None,                // 0xE2 0x82
                None,                // 0xE2 0x82 0xAC: valid, but a further byte could rewrite it
                Some("€ yo".into()), // the run is closed by a normal token
                None,                // <eos> is special
            ]
        );
        assert_eq!(stream.finish(), None);
        let all: String = pieces.into_iter().flatten().collect();
        assert_eq!(all, must(tok.decode(stream.ids())));
    }

    #[test]
    fn finish_flushes_an_incomplete_character() {
        let (_dir, tok) = load();
        let mut stream = tok.stream();
        assert_eq!(must(stream.push(HI)), Some("hi".into()));
        assert_eq!(must(stream.push(E2)), None);
        assert_eq!(stream.finish(), Some("\u{FFFD}".into()));
        assert_eq!(stream.finish(), None);
    }

    #[test]
    fn stream_rejects_unknown_ids_without_corrupting_state() {
        let (_dir, tok) = load();
        let mut stream = tok.stream();
        assert_eq!(must(stream.push(HI)), Some("hi".into()));
        assert!(matches!(
            stream.push(1000),
            Err(TokenizerError::UnknownId { id: 1000, .. })
        ));
        assert_eq!(stream.ids(), &[HI]);
        assert_eq!(must(stream.push(YO)), Some(" yo".into()));
    }

    #[test]
    fn missing_file_error_names_the_file() {
        let dir = must(tempfile::tempdir());
        let path = dir.path().join("nope").join("tokenizer.json");
        match Tokenizer::from_file(&path) {
            Err(e @ TokenizerError::Read { .. }) => {
                assert!(e.to_string().contains("nope/tokenizer.json"), "{e}")
            }
            other => panic!("expected a read error, got {other:?}"),
        }
    }

    #[test]
    fn invalid_json_error_names_the_file() {
        let dir = must(tempfile::tempdir());
        for (name, content) in [("broken.json", "{ not json"), ("wrong.json", r#"{"model": 3}"#)] {
            let path = dir.path().join(name);
            must(std::fs::write(&path, content));
            match Tokenizer::from_file(&path) {
                Err(e @ TokenizerError::Parse { .. }) => {
                    assert!(e.to_string().contains(name), "{e}")
                }
                other => panic!("expected a parse error for {name}, got {other:?}"),
            }
        }
    }

    #[test]
    fn streamed_deltas_equal_one_shot_decode_on_random_ids() {
        // Random id sequences over the whole test vocabulary: specials, byte
        // tokens that form valid and invalid UTF-8, and merges. A fixed seed
        // keeps the 500 cases reproducible.
        use rand::{Rng, SeedableRng};
        let (_dir, tok) = load();
        let vocab = tok.vocab_size() as u32;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x2545_f491);
        for _ in 0..500 {
            let len = rng.random_range(0..12);
            let ids: Vec<u32> = (0..len).map(|_| rng.random_range(0..vocab)).collect();
            let mut stream = tok.stream();
            let mut text = String::new();
            for &id in &ids {
                if let Some(d) = must(stream.push(id)) {
                    text.push_str(&d);
                }
            }
            if let Some(d) = stream.finish() {
                text.push_str(&d);
            }
            assert_eq!(text, must(tok.decode(&ids)), "ids {ids:?}");
        }
    }
}
