//! A tokenizer built from a GGUF file's `tokenizer.ggml.*` metadata with the
//! `tokenizers` crate, the way transformers builds Gemma's from a GGUF
//! (`integrations/gguf/gguf_tokenizer_mapping.py`, `gemma_tokenizer`):
//!
//! - SentencePiece vocabulary (`tokenizer.ggml.model = llama`, Gemma 3) as a
//!   BPE with byte fallback: spaces become `▁` (normalizer), no prefix space;
//! - a Gemma 3 file has no merges, so they are derived from the vocabulary:
//!   every split of a token into two tokens is a merge, ranked by the token's
//!   position in the file (Gemma's scores do not follow its merge order);
//! - a Gemma 4 file (`tokenizer.ggml.model = gemma4`, written by llama.cpp's
//!   converter from tokenizer.json) is that same BPE with its merges stored in
//!   `tokenizer.ggml.merges` (`left right`, split at the first space after the
//!   first character, as llama.cpp reads them);
//! - tokens of only whitespace that contain a space are stored with real spaces
//!   but looked up as `▁`s, so they are respelled first;
//! - control tokens (type 3) are special added tokens, user-defined ones (type 4)
//!   plain added tokens, both matched whole in the text.

use std::collections::HashMap;

use gemma4c_frontend::gguf::GgufFile;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::Replace;
use tokenizers::pre_tokenizers::split::Split;
use tokenizers::{AddedToken, DecoderWrapper, SplitDelimiterBehavior};

use crate::tokenizer::{Tokenizer, TokenizerError};

const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// The tokenizer of a GGUF file.
pub fn from_gguf(g: &GgufFile) -> Result<Tokenizer, TokenizerError> {
    let parse = |reason: String| TokenizerError::Parse {
        path: g.path.clone(),
        reason,
    };
    let model = g.str("tokenizer.ggml.model").map_err(|e| parse(e.to_string()))?;
    if model != "llama" && model != "gemma4" {
        return Err(parse(format!(
            "tokenizer.ggml.model `{model}` is not supported (gemma4c builds `llama` (SentencePiece) and `gemma4` (BPE) vocabularies)"
        )));
    }
    let tokens: Vec<&str> = g
        .array("tokenizer.ggml.tokens")
        .map_err(|e| parse(e.to_string()))?
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_str()
                .ok_or_else(|| parse(format!("tokenizer.ggml.tokens[{i}] is not a string")))
        })
        .collect::<Result<_, _>>()?;
    let types: Vec<i64> = match g.meta("tokenizer.ggml.token_type") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .ok_or_else(|| parse("tokenizer.ggml.token_type is not an array".into()))?
            .iter()
            .map(|t| t.as_i64().unwrap_or(0))
            .collect(),
    };

    // Gemma 4's tokens come from tokenizer.json, already spelled with `▁`.
    let spelled: Vec<String> = tokens
        .iter()
        .map(|t| if model == "llama" { respell(t) } else { t.to_string() })
        .collect();
    let mut vocab: HashMap<String, u32> = HashMap::with_capacity(spelled.len());
    // Insertion order of distinct tokens (a later duplicate keeps the first
    // position in the order but takes the later id, as a Python dict does).
    let mut order: Vec<&str> = Vec::with_capacity(spelled.len());
    for (i, t) in spelled.iter().enumerate() {
        if vocab.insert(t.clone(), i as u32).is_none() {
            order.push(t);
        }
    }
    let merges = if model == "gemma4" {
        stored_merges(g, &vocab).map_err(parse)?
    } else {
        merges_from_vocab(&order, &vocab)
    };
    let unk = tokens
        .get(g.usize_or("tokenizer.ggml.unknown_token_id", 3).unwrap_or(3))
        .map_or("<unk>".to_string(), |s| s.to_string());
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vocab>(), merges)
        .unk_token(unk)
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| parse(format!("cannot build the BPE model: {e}")))?;

    let mut inner = tokenizers::Tokenizer::new(bpe);
    let normalizer = Replace::new(" ", "▁").map_err(|e| parse(e.to_string()))?;
    inner
        .with_normalizer(Some(normalizer))
        .map_err(|e| parse(e.to_string()))?;
    let split = Split::new(" ", SplitDelimiterBehavior::MergedWithPrevious, false).map_err(|e| parse(e.to_string()))?;
    inner.with_pre_tokenizer(Some(split));
    let decoder = DecoderSequence::new(vec![
        DecoderWrapper::Replace(tokenizers::normalizers::Replace::new("▁", " ").map_err(|e| parse(e.to_string()))?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ]);
    inner.with_decoder(Some(decoder));

    let control: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &ty)| ty == CONTROL)
        .map(|(t, _)| AddedToken::from(t.to_string(), true).normalized(false))
        .collect();
    inner
        .add_special_tokens(control)
        .map_err(|e| parse(format!("control tokens: {e}")))?;
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(t, &ty)| ty == USER_DEFINED && vocab.contains_key(**t))
        .map(|(t, _)| AddedToken::from(t.to_string(), false).normalized(false))
        .collect();
    inner
        .add_tokens(user)
        .map_err(|e| parse(format!("user-defined tokens: {e}")))?;
    Ok(Tokenizer::from_parts(inner, &g.path))
}

/// The chat template a GGUF file carries (`tokenizer.chat_template`), if any.
pub fn chat_template(g: &GgufFile) -> Option<&str> {
    g.meta("tokenizer.chat_template").and_then(|v| v.as_str())
}

/// `tokenizer.ggml.merges`: `left right` pairs of vocabulary tokens.
fn stored_merges(g: &GgufFile, vocab: &HashMap<String, u32>) -> Result<Vec<(String, String)>, String> {
    let key = "tokenizer.ggml.merges";
    let items = g.array(key).map_err(|e| e.to_string())?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let s = v.as_str().ok_or_else(|| format!("{key}[{i}] is not a string"))?;
            // llama.cpp: `word.find(' ', 1)`, so a merge may start with a space.
            let at = s
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(at, _)| at)
                .ok_or_else(|| format!("{key}[{i}] `{s}` is not `left right`"))?;
            let (l, r) = (&s[..at], &s[at + 1..]);
            for part in [l, r] {
                if !vocab.contains_key(part) {
                    return Err(format!("{key}[{i}] `{s}`: `{part}` is not in tokenizer.ggml.tokens"));
                }
            }
            Ok((l.to_string(), r.to_string()))
        })
        .collect()
}

/// A token of only whitespace that contains a space, written as `▁`s (one per character).
fn respell(t: &str) -> String {
    if t.contains(' ') && t.chars().all(char::is_whitespace) {
        "▁".repeat(t.chars().count())
    } else {
        t.to_string()
    }
}

/// transformers' `generate_merges(vocab, {token: -position})`: every split of a
/// token into two vocabulary tokens, best-ranked (earliest) tokens first, then
/// longer left pieces first.
fn merges_from_vocab(order: &[&str], vocab: &HashMap<String, u32>) -> Vec<(String, String)> {
    // (score, left length, right length, left, right)
    let mut merges: Vec<(i64, usize, usize, &str, &str)> = Vec::new();
    for &token in order {
        let score = -(vocab[token] as i64);
        let mut local = Vec::new();
        let chars: Vec<usize> = token.char_indices().map(|(i, _)| i).skip(1).collect();
        for (n, &at) in chars.iter().enumerate() {
            let (l, r) = token.split_at(at);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                let left_len = n + 1;
                let right_len = token[at..].chars().count();
                local.push((li, ri, (score, left_len, right_len, l, r)));
            }
        }
        local.sort_by_key(|&(li, ri, _)| (li, ri));
        merges.extend(local.into_iter().map(|(_, _, m)| m));
    }
    // Descending by (score, left length, right length); stable like Python's sort.
    merges.sort_by_key(|m| std::cmp::Reverse((m.0, m.1, m.2)));
    merges.into_iter().map(|m| (m.3.to_string(), m.4.to_string())).collect()
}
