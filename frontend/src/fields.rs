//! Typed, error-naming access to the fields of a JSON config object.

use std::path::Path;

use serde_json::{Map, Value};

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

/// Typed access to config fields with errors that name the field.
pub(crate) struct Fields<'a> {
    pub(crate) path: &'a Path,
    prefix: &'a str,
    obj: Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(path: &'a Path, prefix: &'a str, obj: Map<String, Value>) -> Self {
        Fields { path, prefix, obj }
    }

    pub(crate) fn err(&self, field: &str, message: impl Into<String>) -> FrontendError {
        FrontendError::Config {
            path: self.path.to_path_buf(),
            field: format!("{}{field}", self.prefix),
            message: message.into(),
        }
    }

    /// The value of a field; JSON `null` counts as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn usize_req(&self, key: &str) -> Result<usize, FrontendError> {
        match self.get(key) {
            None => Err(self.err(key, "is missing (expected a non-negative integer)")),
            Some(v) => self.as_usize(key, v),
        }
    }

    pub(crate) fn usize_or(&self, key: &str, default: usize) -> Result<usize, FrontendError> {
        self.get(key).map_or(Ok(default), |v| self.as_usize(key, v))
    }

    pub(crate) fn usize_opt(&self, key: &str) -> Result<Option<usize>, FrontendError> {
        self.get(key).map(|v| self.as_usize(key, v)).transpose()
    }

    pub(crate) fn as_usize(&self, key: &str, v: &Value) -> Result<usize, FrontendError> {
        let n = v
            .as_u64()
            .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}")))?;
        if n > crate::bounds::MAX_FIELD as u64 {
            return Err(self.err(
                key,
                format!(
                    "{n} is larger than any Gemma 4 size (at most {})",
                    crate::bounds::MAX_FIELD
                ),
            ));
        }
        Ok(n as usize)
    }

    pub(crate) fn f64_or(&self, key: &str, default: f64) -> Result<f64, FrontendError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool, FrontendError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true or false, got {v}"))),
        }
    }

    pub(crate) fn token_ids(&self, key: &str, v: &Value) -> Result<Vec<u32>, FrontendError> {
        let one = |x: &Value| {
            x.as_u64()
                .filter(|n| *n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or_else(|| self.err(key, format!("expected a token id or a list of them, got {v}")))
        };
        match v {
            Value::Array(items) => items.iter().map(one).collect(),
            Value::Null => Ok(Vec::new()),
            x => Ok(vec![one(x)?]),
        }
    }
}
