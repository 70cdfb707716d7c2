//! Durable tasks (the MCP tasks extension): what a store of task records must do
//! ([`TaskStore`]), whichever backend keeps them — SQLite for one host ([`sqlite`]), PostgreSQL for
//! replicas ([`postgres`], beside the idempotency records).
//!
//! The contract, held by every backend:
//!
//! - a task is durable when [`TaskStore::create`] returns, so a `tasks/get` right after the reply
//!   finds it, on any replica;
//! - a task is read only by the principal that created it: another one gets `None`, exactly as
//!   for a task that does not exist (never "forbidden");
//! - a task past its expiry is `None` too, and is purged;
//! - only the owner that holds a task (its `owner` and `attempts`) settles it; a settle from an
//!   owner that lost it (another took it over after its lease lapsed) changes nothing;
//! - a terminal task (`completed`, `failed`, `cancelled`) never changes again.
//!
//! The row keeps what a re-run needs (the arguments, the caller, the answers given so far): a
//! task whose host died is taken over ([`TaskStore::take_orphans`]) and run again once more.

pub mod postgres;
pub mod sqlite;

use anyhow::Result;
use serde_json::Value;
use std::collections::BTreeMap;

/// A task's status, as the extension names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Running, or waiting for its turn.
    Working,
    /// Waiting for the client's answers (`tasks/update`).
    InputRequired,
    /// Finished with a tool result (a tool error included).
    Completed,
    /// Finished with a protocol-level error.
    Failed,
    /// Cancelled by the client.
    Cancelled,
}

impl TaskStatus {
    /// The wire (and stored) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Working => "working",
            Self::InputRequired => "input_required",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status of a stored name.
    pub fn parse(name: &str) -> Option<TaskStatus> {
        Some(match name {
            "working" => Self::Working,
            "input_required" => Self::InputRequired,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Whether the task is over and never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// What a new task is made of: everything a re-run needs, and who may see it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Server-generated, unguessable.
    pub task_id: String,
    /// The principal that created it: the only one that may read, update or cancel it.
    pub principal: String,
    /// The id of the token it was created with, for the audit of a re-run.
    pub token_id: Option<String>,
    /// The token's idempotency scope, kept for a re-run's keys.
    pub idempotency_scope: Option<String>,
    /// Plugin.
    pub plugin: String,
    /// Published tool name.
    pub tool: String,
    /// The call's arguments (JSON).
    pub arguments: String,
    /// The call's idempotency namespace and key, when it is keyed: a second task-augmented call
    /// with the same live key answers this task.
    pub key: Option<(String, String)>,
    /// The key the client itself sent (`_meta`, a header), with where it came from, so a re-run
    /// derives the same idempotency key; `None` when the key comes from the arguments or a
    /// token's scope (derived again from those) or there is none.
    pub provided_key: Option<(String, String)>,
    /// What the client declared it can be asked (JSON), for the answers of a re-run.
    pub capabilities: String,
    /// Answers the client gave before the task existed (in the request that created it), which
    /// every attempt needs again.
    pub answers: BTreeMap<String, Value>,
    /// The owner (process or replica) that runs it.
    pub owner: String,
    /// Created, ms since the epoch.
    pub created_ms: i64,
    /// Forgotten after, ms since the epoch.
    pub expires_ms: i64,
}

/// A stored task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// What it was created with.
    pub task: NewTask,
    /// Where it is.
    pub status: TaskStatus,
    /// The tool result (JSON), once `completed`.
    pub result: Option<String>,
    /// The JSON-RPC error (JSON), once `failed`.
    pub error: Option<String>,
    /// The questions pending, by key (JSON object), while `input_required`.
    pub input_requests: Option<String>,
    /// The answers given so far, by question key.
    pub answers: BTreeMap<String, Value>,
    /// Runs so far: 1 for the first.
    pub attempts: u32,
    /// The client asked to cancel it (the owner polls for this).
    pub cancel_requested: bool,
    /// Last change, ms since the epoch.
    pub updated_ms: i64,
}

/// The answer to [`TaskStore::create`].
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// Stored; the caller runs it.
    New,
    /// A live task already holds the call's key: answer with it, run nothing.
    Existing(Box<TaskRecord>),
}

/// How a run of a task ended, as [`TaskStore::settle`] records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// A tool result (JSON).
    Completed(String),
    /// A protocol-level error (JSON).
    Failed(String),
    /// Cancelled.
    Cancelled,
    /// Waiting for answers to these questions (a JSON object by key).
    InputRequired(String),
}

/// The answer to [`TaskStore::answer`].
#[derive(Debug, Clone, PartialEq)]
pub enum Answered {
    /// Questions are still pending: the task stays `input_required`.
    StillWaiting,
    /// Every question is answered: the task is `working` again, held by the caller, whose run
    /// is this attempt.
    Resume(Box<TaskRecord>),
    /// The task is not waiting for answers (working or over): nothing changed.
    NotWaiting,
}

/// What a store of tasks must do; see the module docs for the contract.
#[async_trait::async_trait]
pub trait TaskStore: Send + Sync {
    /// The owner id stamped on the tasks this process runs.
    fn owner(&self) -> &str;

    /// Stores a new `working` task (attempt 1, held by its `owner`), unless a live task holds the
    /// same key. Durable when it returns.
    async fn create(&self, task: NewTask) -> Result<Created>;

    /// The task, if it exists, has not expired at `now_ms`, and belongs to `principal`.
    async fn get(&self, task_id: &str, principal: &str, now_ms: i64) -> Result<Option<TaskRecord>>;

    /// Records how `attempt` of a task held by `owner` ended. `false` when the task is no longer
    /// that owner's attempt, or is already over: nothing changed.
    async fn settle(&self, task_id: &str, owner: &str, attempt: u32, settled: Settled, now_ms: i64) -> Result<bool>;

    /// A client's `tasks/cancel`: a task waiting for answers is cancelled at once; a working one
    /// is marked for its owner to stop; an ended one is left alone. The status it had, or `None`
    /// for a task `principal` cannot see.
    async fn request_cancel(&self, task_id: &str, principal: &str, now_ms: i64) -> Result<Option<TaskStatus>>;

    /// A client's `tasks/update`: keeps the answers to questions now pending (others are
    /// ignored), and when none is left pending hands the task to `owner` for its next attempt.
    /// `None` for a task `principal` cannot see.
    async fn answer(
        &self,
        task_id: &str,
        principal: &str,
        answers: BTreeMap<String, Value>,
        owner: &str,
        now_ms: i64,
    ) -> Result<Option<Answered>>;

    /// The ids of `owner`'s working tasks whose cancellation was asked.
    async fn cancel_requested(&self, owner: &str) -> Result<Vec<String>>;

    /// Takes over the working tasks whose owners are gone (their process died), for `owner` to
    /// run each once more (attempts + 1). Durable when it returns.
    async fn take_orphans(&self, owner: &str, now_ms: i64) -> Result<Vec<TaskRecord>>;

    /// Deletes tasks expired before `now_ms` that are not running; how many.
    async fn purge(&self, now_ms: i64) -> Result<usize>;
}

/// Keeps the answers to `task`'s pending questions (others are ignored: nothing unasked reaches
/// the guest) and returns the questions still pending. Every backend's `answer` goes through it.
pub(crate) fn take_answers(task: &mut TaskRecord, answers: BTreeMap<String, Value>) -> serde_json::Map<String, Value> {
    let mut pending: serde_json::Map<String, Value> =
        task.input_requests.as_deref().and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default();
    for (key, answer) in answers {
        if pending.remove(&key).is_some() {
            task.answers.insert(key, answer);
        }
    }
    pending
}
