//! The types every part of Cordon shares: who calls ([`Principal`]), what a call returns
//! ([`ToolSuccess`], [`ToolError`] and its wire shape), what it still needs from its client
//! ([`ClientNeeds`]), the limits the operator sets ([`Limits`]) and how a call used its idempotency
//! key ([`IdempotencyUse`]), and the count of work in flight a shutdown waits for ([`InFlight`]).
//!
//! They live here, with serde and tokio's sync primitives as the only dependencies, so that the
//! sandbox, the state stores and the host can all name them without depending on one another.

#![warn(missing_docs)]

pub mod error;
pub mod in_flight;
mod limits;

pub use error::{ErrorType, ToolError, Violation};
pub use in_flight::{InFlight, InFlightGuard};
pub use limits::{Limits, LimitsOverride, PoolConfig};

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The authenticated caller of a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub Arc<str>);

impl Principal {
    /// A principal with the given name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }
}

/// A successful call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSuccess {
    /// Text content the tool returned.
    pub text: Option<String>,
    /// Structured content, checked against the output schema when one is declared.
    pub structured: Option<Value>,
    /// Content blocks the guest attached (`host.attach`), as MCP content JSON.
    pub attached: Vec<Value>,
}

/// The outcome of a call that reached a tool.
pub type CallOutcome = Result<ToolSuccess, ToolError>;

/// What a guest may ask its client: the questions of the `cordon:plugin` contract (`sample`,
/// `elicit`, and `ask` with an `input-request`), named here for what they ask, not for how a
/// protocol carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskKind {
    /// Have the client's model sample a message.
    Sample,
    /// Have the client ask its user for input.
    Elicit,
    /// Have the client list its roots.
    ListRoots,
}

impl AskKind {
    /// What the client is asked to do, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Sample => "sample a model",
            Self::Elicit => "ask its user for input",
            Self::ListRoots => "list its roots",
        }
    }
}

/// A question a guest asked and its client has not answered yet.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAsk {
    /// What is asked.
    pub kind: AskKind,
    /// Its parameters, as the guest wrote them (a JSON object).
    pub params: Value,
}

/// What a call needs from its client before it can finish.
///
/// A guest may ask its client something during a call. A client that cannot be sent a request
/// answers on its next try instead; until then the call has no outcome, only this, which the
/// transport turns into what its protocol says.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientNeeds {
    /// Answers to `requests` (by the question's key); `answered` are the answers this try used,
    /// which the next try needs again.
    Input {
        /// The unanswered questions.
        requests: BTreeMap<String, PendingAsk>,
        /// The answers used so far.
        answered: BTreeMap<String, Value>,
    },
    /// The client did not declare it can be asked this.
    Capability(AskKind),
}

/// Whether a tool may run as a task (the MCP tasks extension): answered at once with a handle the
/// client polls, instead of holding the request open until the tool is done.
///
/// A plugin declares it per tool (the `cordon:plugin` `tasks` export); the operator may override
/// it (`[plugins.NAME.tools.TOOL] tasks`). A tool that declares nothing is `forbidden`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskSupport {
    /// Always answered in the request.
    #[default]
    Forbidden,
    /// Run as a task when the client can take one and the call outlasts the promotion window.
    Optional,
    /// Only for clients that can take a task; others are refused before anything runs.
    Required,
}

impl TaskSupport {
    /// The name in config and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

/// How a call used its idempotency key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdempotencyUse {
    /// The call had no key (read-only tool, or implicit keys off).
    #[default]
    None,
    /// First attempt under its key: the guest ran.
    Miss,
    /// A stored outcome was replayed: the guest did not run.
    Hit,
    /// Run again after a retryable failure under the same key.
    Retry,
    /// Run again because an earlier attempt was cut off by a crash.
    Recovery,
    /// Refused: the key was used before with other arguments.
    Reused,
}

impl IdempotencyUse {
    /// The name written to logs and the audit file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Miss => "miss",
            Self::Hit => "hit",
            Self::Retry => "retry",
            Self::Recovery => "recovery",
            Self::Reused => "reused",
        }
    }
}
