//! Argument values in audit lines: sensitive keys are redacted at every depth.

use anyhow::Result;
use serde::{Serialize, Serializer};
use serde_json::Value;

/// The words that make an object key sensitive (matched case-insensitively, anywhere in the
/// key: `api_key`, `X-Auth-Token` and `clientSecret` all match, and so does `keyword` — a
/// redacted harmless value costs less than a leaked secret).
const SENSITIVE: &[&str] = &["secret", "token", "password", "key", "authorization", "credential"];

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Whether values under this object key are redacted.
pub fn is_sensitive_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SENSITIVE.iter().any(|word| lower.contains(word))
}

/// A copy of `value` with the value of every sensitive key, at any depth, replaced by
/// `"[redacted]"`.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_sensitive_key(k) { Value::String(REDACTED.into()) } else { redact(v) };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// Serializes a value redacted without copying it.
struct Redacted<'a>(&'a Value);

impl Serialize for Redacted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    if is_sensitive_key(k) {
                        out.serialize_entry(k, REDACTED)?;
                    } else {
                        out.serialize_entry(k, &Redacted(v))?;
                    }
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for v in items {
                    out.serialize_element(&Redacted(v))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// Arguments are redacted when written, whoever filled the field: redaction cannot be forgotten.
pub(super) fn serialize_redacted<S: Serializer>(value: &Option<Value>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => serializer.serialize_some(&Redacted(v)),
        None => serializer.serialize_none(),
    }
}
