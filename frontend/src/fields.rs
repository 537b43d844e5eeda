//! Config JSON read with serde: field types with the checks every config field
//! needs (sizes bounded, token ids in either spelling), defaults for absent
//! fields, and errors that name the file and the field's path
//! (`serde_path_to_error`), e.g. `text_config.rope_parameters.full_attention.factor`.

use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::bounds::MAX_FIELD;
use crate::error::FrontendError;

pub(crate) fn read_json(path: &Path) -> Result<Value, FrontendError> {
    let text =
        gemma4c_ir::limits::read_text(path, gemma4c_ir::limits::MAX_JSON_BYTES).map_err(|e| FrontendError::Io {
            path: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
    serde_json::from_str(&text).map_err(|e| FrontendError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Where fields are read from: the file, and the prefix of their path in it
/// (`text_config.` inside a multimodal config).
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub path: &'a Path,
    pub prefix: &'a str,
}

impl At<'_> {
    pub(crate) fn err(&self, field: &str, message: impl Into<String>) -> FrontendError {
        FrontendError::Config {
            path: self.path.to_path_buf(),
            field: format!("{}{field}", self.prefix),
            message: message.into(),
        }
    }

    /// Deserializes `T` from `v`. JSON `null` counts as absent (the field's
    /// default); an error names the field's path and what was expected.
    pub(crate) fn parse<T: DeserializeOwned>(&self, v: &Value) -> Result<T, FrontendError> {
        serde_path_to_error::deserialize(without_nulls(v)).map_err(|e| {
            let at = e.path().to_string();
            let message = e.inner().to_string();
            // serde reports a missing field at its parent: name the field itself.
            if let Some(name) = message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
            {
                let parent = if at == "." { String::new() } else { format!("{at}.") };
                return self.err(&format!("{parent}{name}"), "is missing");
            }
            self.err(if at == "." { "(root)" } else { &at }, message)
        })
    }
}

/// `v` with every `null` member of an object removed, at any depth.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        x => x.clone(),
    }
}

/// A size field: a non-negative integer of at most `MAX_FIELD` (so products
/// of two sizes cannot overflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size(pub usize);

/// `#[serde(default = "size::<N>")]`.
pub(crate) fn size<const N: usize>() -> Size {
    Size(N)
}

pub(crate) fn yes() -> bool {
    true
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                if n > MAX_FIELD as u64 {
                    return Err(E::custom(format!(
                        "{n} is larger than any Gemma 4 size (at most {MAX_FIELD})"
                    )));
                }
                Ok(Size(n as usize))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))
                    .and_then(|n| self.visit_u64(n))
            }
        }
        d.deserialize_u64(V)
    }
}

/// Token ids: one id or a list of them (`eos_token_id: 1` or `[1, 106]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TokenIds(pub Vec<u32>);

impl TokenIds {
    /// The first id (`bos_token_id`, `pad_token_id`), or `default` for an empty list.
    pub(crate) fn first_or(ids: Option<TokenIds>, default: u32) -> u32 {
        ids.and_then(|t| t.0.first().copied()).unwrap_or(default)
    }
}

impl<'de> Deserialize<'de> for TokenIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TokenIds, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TokenIds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a token id or a list of them")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<TokenIds, E> {
                let id = u32::try_from(n).map_err(|_| E::invalid_value(Unexpected::Unsigned(n), &self))?;
                Ok(TokenIds(vec![id]))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<TokenIds, E> {
                Err(E::invalid_value(Unexpected::Signed(n), &self))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TokenIds, E> {
                Ok(TokenIds::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TokenIds, A::Error> {
                let mut ids = Vec::new();
                while let Some(TokenId(id)) = seq.next_element()? {
                    ids.push(id);
                }
                Ok(TokenIds(ids))
            }
        }
        d.deserialize_any(V)
    }
}

/// One entry of a token id list.
struct TokenId(u32);

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TokenId, D::Error> {
        let n = u64::deserialize(d)?;
        u32::try_from(n)
            .map(TokenId)
            .map_err(|_| de::Error::invalid_value(Unexpected::Unsigned(n), &"a token id (at most 2^32 - 1)"))
    }
}
