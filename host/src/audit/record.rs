//! One audit line: [`AuditRecord`] and what it is made of.

use super::redact::serialize_redacted;
use cordon_core::IdempotencyUse;
use cordon_sandbox::grants::http::{EgressRecord, Refusal};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::SystemTime;

/// Whether the call succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A successful result.
    #[default]
    Ok,
    /// A tool error (`isError: true`).
    Error,
}

/// A request that left the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundRequest {
    /// HTTP method.
    pub method: String,
    /// Host only: paths and queries may carry identifiers the audit log should not keep.
    pub host: String,
    /// Response status; `None` when no response arrived (connect error, timeout).
    pub status: Option<u16>,
}

/// A request the grants refused before any connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRequest {
    /// HTTP method.
    pub method: String,
    /// Scheme, host, port and path; user info, query and fragment are removed.
    pub url: String,
    /// `no_grant`, `too_many_requests` or `missing_credential:<credential name>`.
    pub reason: String,
}

impl RefusedRequest {
    /// A refused request; `url` is stripped of user info, query and fragment, which is where
    /// a guest would put tokens of its own.
    pub fn new(method: impl Into<String>, url: &str, reason: impl Into<String>) -> Self {
        Self { method: method.into(), url: strip_url(url), reason: reason.into() }
    }
}

/// The name of a refusal in the audit log.
pub fn refusal_reason(refusal: &Refusal) -> String {
    match refusal {
        Refusal::NoGrant => "no_grant".into(),
        Refusal::TooManyRequests(_) => "too_many_requests".into(),
        Refusal::MissingCredential(name) => format!("missing_credential:{name}"),
        Refusal::UserInfo => "user_info".into(),
    }
}

/// `scheme://host[:port]/path`, without user info, query or fragment.
pub(super) fn strip_url(url: &str) -> String {
    let cut = url.find(['?', '#']).map_or(url, |i| &url[..i]);
    match cut.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
            let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}{path}")
        }
        None => cut.to_string(),
    }
}

/// One line of the audit log. Build it with `..Default::default()` and [`AuditRecord::egress`].
///
/// Reading a line back requires `time`, `call_id`, `principal`, `tool` and `outcome`, so that
/// other JSON in the file is not mistaken for a call; the other fields may be missing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the call finished: RFC 3339, UTC, milliseconds ([`timestamp`]).
    pub time: String,
    /// Unique per call; the group key of [`errors_report`] for calls without an idempotency key.
    pub call_id: String,
    /// Who called.
    pub principal: String,
    /// Id of the token that authenticated the call (never the token itself).
    #[serde(default)]
    pub token_id: Option<String>,
    /// Published tool name.
    pub tool: String,
    /// Plugin name.
    #[serde(default)]
    pub plugin: String,
    /// SHA-256 of the plugin component, hex.
    #[serde(default)]
    pub plugin_digest: String,
    /// SHA-256 of the canonical arguments, hex ([`arguments_sha256`]).
    #[serde(default)]
    pub arguments_sha256: String,
    /// Argument values: only with `log_arguments`, and written redacted ([`redact`]).
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "serialize_redacted")]
    pub arguments: Option<Value>,
    /// The call's idempotency key, if it had one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The idempotency scope of the caller's token, if it carries one (a batch item's
    /// `custom_id`): what `cordon audit errors --scope` reconciles by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_scope: Option<String>,
    /// The task the call ran for (the MCP tasks extension), when it ran as one: every attempt of
    /// a task, a re-run after a crash included, names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// How the idempotency layer treated the call.
    #[serde(default)]
    pub idempotency: IdempotencyUse,
    /// `ok` or `error`.
    pub outcome: Outcome,
    /// Error type (`ToolError::kind`).
    #[serde(default)]
    pub error_type: Option<String>,
    /// Error message as the caller saw it.
    #[serde(default)]
    pub error_message: Option<String>,
    /// Whether the caller was told a retry may succeed.
    #[serde(default)]
    pub retryable: Option<bool>,
    /// Wall-clock time of the whole call, microseconds.
    #[serde(default)]
    pub latency_us: u64,
    /// Fuel the guest consumed (0 when it did not run).
    #[serde(default)]
    pub fuel_used: u64,
    /// Requests that left the host.
    #[serde(default)]
    pub outbound: Vec<OutboundRequest>,
    /// Requests the grants refused.
    #[serde(default)]
    pub refused: Vec<RefusedRequest>,
    /// Arguments still to hash into `arguments_sha256`: hashing them is left to the writer
    /// thread, off the call's path ([`AuditLog::record`]). Never written.
    #[serde(skip)]
    pub unhashed_arguments: Option<Value>,
    /// The serialized size of the arguments: the write queue charges it for `unhashed_arguments`
    /// and again for `arguments`, before the writer holds them. Never written.
    #[serde(skip)]
    pub arguments_len: usize,
}

impl AuditRecord {
    /// Fills `arguments_sha256` from `unhashed_arguments`, if it is still to do.
    pub(super) fn hash_arguments(&mut self) {
        if let Some(arguments) = self.unhashed_arguments.take() {
            self.arguments_sha256 = arguments_sha256(&arguments);
        }
    }

    /// Roughly the bytes the line will take: what the write queue counts for a record it has
    /// not serialized yet.
    pub(super) fn approximate_len(&self) -> usize {
        const FIXED_FIELDS: usize = 400;
        FIXED_FIELDS
            + self.principal.len()
            + self.tool.len()
            + self.error_message.as_ref().map_or(0, String::len)
            + self.idempotency_key.as_ref().map_or(0, String::len)
            + 64 * (self.outbound.len() + self.refused.len())
            + self.arguments_len
                * (usize::from(self.unhashed_arguments.is_some()) + usize::from(self.arguments.is_some()))
    }

    /// Fills `outbound` and `refused` from what the call did on the network.
    pub fn egress(&mut self, record: &EgressRecord) {
        self.outbound = record
            .sent
            .iter()
            .map(|s| OutboundRequest { method: s.method.to_string(), host: s.host.clone(), status: s.status })
            .collect();
        self.refused = record
            .refused
            .iter()
            .map(|(method, url, refusal)| RefusedRequest::new(method.as_str(), url, refusal_reason(refusal)))
            .collect();
    }
}

/// `time` as written in the log: RFC 3339, UTC, milliseconds.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// SHA-256 of the canonical arguments: the same value as the idempotency fingerprint, so a log
/// line can be matched with a stored key.
pub fn arguments_sha256(arguments: &Value) -> String {
    crate::idempotency::fingerprint(arguments)
}
