//! The durable idempotency records: what a store must do ([`RecordStore`]), whichever backend
//! keeps them — SQLite for one host ([`sqlite`]), PostgreSQL for replicas
//! ([`postgres`]). Both are held to one contract, tested against both in
//! `tests/e2e/store_contract.rs`:
//!
//! - a claim that answers `Run` is durable before it returns, and so is every outcome;
//! - at most one owner holds a key `in_progress`; a finish or release from an owner that no
//!   longer holds it (another took the claim over) fails and changes nothing;
//! - a completed record never changes until it expires and is purged;
//! - `in_progress` records are never purged: their run may have acted upstream.

pub mod postgres;
pub mod sqlite;

use anyhow::Result;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a call asks to claim.
#[derive(Debug, Clone)]
pub struct Claim {
    /// `principal`, `plugin` and `tool`, joined: keys never collide across them.
    pub namespace: String,
    /// The idempotency key.
    pub key: String,
    /// Caller (kept for listing).
    pub principal: String,
    /// Plugin (kept for listing).
    pub plugin: String,
    /// Tool (kept for listing).
    pub tool: String,
    /// Where the key came from.
    pub source: &'static str,
    /// Hash of the canonical arguments.
    pub fingerprint: String,
    /// This process's boot id.
    pub owner: String,
    /// When the record may be forgotten.
    pub expires_ms: i64,
}

/// The store's answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The caller owns the key now and must run the call: a first attempt, a retry after a
    /// retryable failure, or a recovery of a run whose process died.
    Run {
        /// 1 for the first attempt.
        attempt: u32,
        /// Whether a previous attempt was cut off by a crash.
        recovery: bool,
    },
    /// A final outcome is stored: return it.
    Done(String),
    /// The key was used with other arguments.
    Mismatch,
    /// Another live replica is running the key now: look again shortly (never from SQLite,
    /// which serves one host).
    Busy,
}

impl Claimed {
    /// How a call that got this answer used its key, for the audit line and metrics.
    pub fn idempotency_use(&self) -> cordon_core::IdempotencyUse {
        use cordon_core::IdempotencyUse;
        match self {
            Claimed::Run { recovery: true, .. } => IdempotencyUse::Recovery,
            Claimed::Run { attempt, .. } if *attempt > 1 => IdempotencyUse::Retry,
            Claimed::Run { .. } => IdempotencyUse::Miss,
            Claimed::Done(_) => IdempotencyUse::Hit,
            Claimed::Mismatch => IdempotencyUse::Reused,
            // Never the outcome of a claim that began a call: a busy key is waited for.
            Claimed::Busy => IdempotencyUse::Miss,
        }
    }
}

/// One stored record, for `cordon idempotency`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    /// The key.
    pub key: String,
    /// Caller.
    pub principal: String,
    /// Plugin.
    pub plugin: String,
    /// Tool.
    pub tool: String,
    /// Where the key came from.
    pub source: String,
    /// `in_progress`, `completed` or `retryable`.
    pub state: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Expiry time, RFC 3339.
    pub expires: String,
    /// The stored outcome (JSON), if any.
    pub outcome: Option<serde_json::Value>,
}

/// The fields of a stored record that [`RecordStore::finished`] reads.
pub struct StoredState {
    /// The arguments' fingerprint the key is bound to.
    pub fingerprint: String,
    /// `in_progress`, `completed` or `retryable`.
    pub state: String,
    /// The stored outcome, if any.
    pub outcome: Option<String>,
    /// When the record may be forgotten, ms since the epoch.
    pub expires_ms: i64,
}

impl StoredState {
    /// The answer [`RecordStore::finished`] gives for this record at `now_ms`, asked with
    /// `fingerprint`: only a completed, unexpired record answers (every backend alike).
    pub fn finished_answer(self, fingerprint: &str, now_ms: i64) -> Option<Claimed> {
        if self.state != "completed" || self.expires_ms < now_ms {
            return None;
        }
        if self.fingerprint != fingerprint {
            return Some(Claimed::Mismatch);
        }
        self.outcome.map(Claimed::Done)
    }
}

/// What a store of idempotency records must do; see the module docs for the contract.
#[async_trait::async_trait]
pub trait RecordStore: Send + Sync {
    /// The owner id stamped on this process's claims: random per process start.
    fn owner(&self) -> &str;

    /// The answer a claim would give for a key whose record is final, read without taking a
    /// claim: `Done` for a completed record with the same fingerprint, `Mismatch` for a live
    /// record with another one. `None` when the record is absent, expired, not finished, or
    /// cannot be read now: then the caller claims as usual. A completed record never changes,
    /// so this answer is the claim's answer; it makes replays cheap (BENCHMARKS.md).
    async fn finished(&self, namespace: &str, key: &str, fingerprint: &str) -> Option<Claimed>;

    /// Claims a key (see [`Claimed`]). Durable when it returns `Run`.
    async fn claim(&self, claim: Claim) -> Result<Claimed>;

    /// Records the outcome of the `attempt` that `claim` holds; `retryable` outcomes are run
    /// again by the next attempt. Durable when it returns.
    async fn finish(&self, claim: &Claim, attempt: u32, retryable: bool, outcome: String) -> Result<()>;

    /// Forgets a held key, as if it had never been claimed: for a call that ended before it
    /// could act. Durable when it returns.
    async fn release(&self, claim: &Claim, attempt: u32) -> Result<()>;

    /// Marks a held key retryable without waiting (for a call dropped mid-run).
    fn abandon(&self, claim: &Claim, attempt: u32, outcome: String);

    /// Deletes finished records that expired before `before`.
    async fn purge(&self, before: SystemTime) -> Result<usize>;

    /// Deletes finished records created before `before`, expired or not.
    async fn purge_created_before(&self, before: SystemTime) -> Result<usize>;

    /// Records matching `key` (all of them if `None`), newest first, for `cordon idempotency`.
    async fn list(&self, key: Option<&str>, limit: usize) -> Result<Vec<Record>>;
}

/// Milliseconds since the Unix epoch.
pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `ms` since the epoch, as RFC 3339 with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}
