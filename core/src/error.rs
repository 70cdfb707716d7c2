//! Typed tool errors: what a failed call reports to its caller.
//!
//! A failed tool call is not a protocol error: it is a result with `isError: true` whose content
//! is `{"error": {"type", "message", "retryable"}}`. Every error the host produces
//! has a fixed `type` from [`ErrorType`]; errors a guest reports keep the guest's own kind.
//! Messages are written for the caller: they never carry a host path, a stack trace or a secret.

use crate::ClientNeeds;
use serde::Serialize;
use serde_json::{json, Value};
use std::borrow::Cow;

/// The error types the host itself produces. Guests may report any other kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Arguments do not match the tool's input schema.
    InvalidArguments,
    /// The arguments exceed the plugin's `max_input_bytes`.
    InputTooLarge,
    /// The guest used up its fuel budget.
    FuelExhausted,
    /// The guest ran past its wall-clock timeout.
    Timeout,
    /// The guest tried to grow its memory past its cap.
    MemoryLimit,
    /// The result exceeds the plugin's `max_output_bytes`.
    OutputTooLarge,
    /// The plugin is at its concurrency limit (or the instance pool is full).
    Busy,
    /// The guest trapped or panicked.
    PluginCrashed,
    /// The guest returned output that is not JSON, violates its own output schema, or is a
    /// string that is not UTF-8.
    InvalidOutput,
    /// The call was cancelled by the client.
    Cancelled,
    /// The guest tried to reach something no grant covers.
    EgressDenied,
    /// The caller may not do this (e.g. has no value for a credential the tool needs).
    Forbidden,
    /// The idempotency key was used before with other arguments.
    IdempotencyKeyReused,
    /// Over a rate limit; the message says how long to wait.
    RateLimited,
    /// The idempotency store could not be read or written (a full or read-only disk, a lost
    /// database): a keyed call is refused before it runs, or ran and must be retried with the
    /// same key to record its outcome.
    StoreUnavailable,
    /// Something went wrong inside the host; details are in the host's log only.
    Internal,
    /// The call asked its client questions a stateless client answers on its next try (MCP's
    /// `InputRequiredResult`): not a failure the client sees, but what the audit line records.
    InputRequired,
}

impl ErrorType {
    /// The wire name of this type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArguments => "invalid_arguments",
            Self::InputTooLarge => "input_too_large",
            Self::FuelExhausted => "fuel_exhausted",
            Self::Timeout => "timeout",
            Self::MemoryLimit => "memory_limit",
            Self::OutputTooLarge => "output_too_large",
            Self::Busy => "busy",
            Self::PluginCrashed => "plugin_crashed",
            Self::InvalidOutput => "invalid_output",
            Self::Cancelled => "cancelled",
            Self::EgressDenied => "egress_denied",
            Self::Forbidden => "forbidden",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::RateLimited => "rate_limited",
            Self::StoreUnavailable => "store_unavailable",
            Self::Internal => "internal",
            Self::InputRequired => "input_required",
        }
    }

    /// Whether the same call may succeed if simply retried later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::Timeout
                | Self::Busy
                | Self::StoreUnavailable
                | Self::Internal
                | Self::RateLimited
                | Self::InputRequired
        )
    }
}

/// One schema violation: where in the arguments, and what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Violation {
    /// JSON pointer into the arguments (`""` is the whole object).
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

/// A failed tool call, as the caller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolError {
    /// Machine-readable type: one of [`ErrorType`] or a guest-defined kind.
    pub kind: Cow<'static, str>,
    /// Human-readable explanation, safe to show the caller.
    pub message: String,
    /// Whether retrying the same call later may succeed.
    pub retryable: bool,
    /// Schema violations, for `invalid_arguments`.
    pub violations: Vec<Violation>,
    /// What the client must give before the call can finish, when that is why it has no result
    /// (only on the 2026-07-28 wire; the transport turns it into `InputRequiredResult` or a
    /// `-32021` error). Never stored: a call that needs input has no outcome yet.
    pub client_needs: Option<Box<ClientNeeds>>,
}

impl ToolError {
    /// A host-produced error with the type's default retryability.
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            kind: Cow::Borrowed(kind.as_str()),
            message: message.into(),
            retryable: kind.retryable(),
            violations: Vec::new(),
            client_needs: None,
        }
    }

    /// The call needs something from its client first ([`ClientNeeds`]).
    pub fn needs(needs: ClientNeeds) -> Self {
        let message = match &needs {
            ClientNeeds::Input { requests, .. } => {
                format!("the call asks the client {} question(s) first", requests.len())
            }
            ClientNeeds::Capability(kind) => {
                format!("the call needs its client to {}, which the client did not declare it can", kind.describe())
            }
        };
        Self { client_needs: Some(Box::new(needs)), ..Self::new(ErrorType::InputRequired, message) }
    }

    /// `cancelled`: the client cancelled the call. It gets no answer (MCP drops the reply to a
    /// cancelled request); this is what the audit log and the idempotency store record.
    pub fn cancelled() -> Self {
        Self::new(ErrorType::Cancelled, "the call was cancelled by the client")
    }

    /// An error the guest reported about its own work.
    pub fn from_guest(kind: String, message: String, retryable: bool) -> Self {
        Self { kind: Cow::Owned(kind), message, retryable, violations: Vec::new(), client_needs: None }
    }

    /// `invalid_arguments` listing every violation.
    pub fn invalid_arguments(violations: Vec<Violation>) -> Self {
        Self::schema_violations(ErrorType::InvalidArguments, "arguments do not match the input schema", violations)
    }

    /// An error of `kind` whose message summarizes every schema violation after `what`.
    pub fn schema_violations(kind: ErrorType, what: &str, violations: Vec<Violation>) -> Self {
        let summary = violations
            .iter()
            .map(|v| {
                let at = if v.pointer.is_empty() { "/" } else { &v.pointer };
                format!("{at}: {}", v.message)
            })
            .collect::<Vec<_>>()
            .join("; ");
        Self { violations, ..Self::new(kind, format!("{what}: {summary}")) }
    }

    /// Whether this error is of the given host type.
    pub fn is(&self, kind: ErrorType) -> bool {
        self.kind == kind.as_str()
    }

    /// The `{"error": {...}}` body sent as text and structured content.
    pub fn to_json(&self) -> Value {
        let mut error = json!({
            "type": self.kind,
            "message": self.message,
            "retryable": self.retryable,
        });
        if !self.violations.is_empty() {
            error["violations"] = json!(self.violations);
        }
        json!({ "error": error })
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ToolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_has_type_message_retryable() {
        let e = ToolError::new(ErrorType::Busy, "plugin demo is at its limit");
        assert_eq!(
            e.to_json(),
            json!({"error": {"type": "busy", "message": "plugin demo is at its limit", "retryable": true}})
        );
    }

    #[test]
    fn invalid_arguments_lists_every_pointer() {
        let e = ToolError::invalid_arguments(vec![
            Violation { pointer: "/a".into(), message: "\"x\" is not of type \"number\"".into() },
            Violation { pointer: String::new(), message: "\"b\" is a required property".into() },
        ]);
        assert!(e.message.contains("/a: "), "{}", e.message);
        assert!(e.message.contains("/: \"b\""), "{}", e.message);
        assert_eq!(e.to_json()["error"]["violations"][0]["pointer"], "/a");
        assert!(!e.retryable);
    }
}
