//! Where the state that must hold across calls and restarts lives.
//!
//! One host keeps it in SQLite files in its data directory: the default, nothing to run.
//! Several replicas behind a load balancer share it in PostgreSQL (`[store] url`), so that what
//! must be exactly-once or consistent holds across them:
//!
//! | state | SQLite (one host) | PostgreSQL (replicas) |
//! |---|---|---|
//! | idempotency records | `idempotency.sqlite3` | `cordon_idempotency`, single flight across replicas by leases (`cordon_replicas`) |
//! | token revocations | `tokens.sqlite3` | `cordon_revoked_tokens`, seen by every replica within a second |
//! | rate-limit buckets | in memory (not here) | in memory, each replica allowing its share of the live replicas ([`Shared::live_replicas`]) |
//! | tasks | `tasks.sqlite3` | `cordon_tasks`, read and cancelled from any replica, taken over when its owner's lease lapses |
//! | audit log | `audit.jsonl` per host (not here) | `audit.jsonl` per replica, plus the index `cordon_audit` ([`audit_index`]) |
//!
//! Each store is a narrow type of its own ([`records::RecordStore`] for idempotency,
//! [`revocations::Revocations`]); [`Shared`] chooses the backend from config and hands each
//! user only its view. This crate knows nothing of WebAssembly or of MCP.

#![warn(missing_docs)]

pub mod audit_index;
pub mod postgres;
pub mod records;
pub mod revocations;
pub mod tasks;

use anyhow::{bail, Context, Result};
use records::RecordStore;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `[store]`.
///
/// ```toml
/// [store]
/// url = "postgres://cordon@db.internal/cordon?sslmode=verify-full"   # or url_env = "CORDON_STORE_URL"
/// ca_file = "/etc/cordon/db-ca.pem"   # the CA that signed the server's certificate (TLS)
/// lease_s = 15       # a replica silent this long is presumed dead; its runs are recovered
/// pool_size = 16     # connections per replica
/// timeout_s = 5      # one store operation, connection included
/// audit_index_days = 30   # rows of the audit index kept
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// A PostgreSQL connection URL (`postgres://user:password@host:port/db`). Absent: SQLite in
    /// the data directory.
    pub url: Option<String>,
    /// The environment variable holding the URL, so the password stays out of the file.
    pub url_env: Option<String>,
    /// PEM certificates of the authorities the server's certificate must chain to. Setting it
    /// turns TLS on; without it, TLS (`sslmode=require`, `verify-ca` or `verify-full` in the URL)
    /// trusts the public web roots. Either way the host name is verified (postgres.rs says why).
    pub ca_file: Option<PathBuf>,
    /// Seconds without a heartbeat after which a replica is presumed dead and its unfinished
    /// keyed calls may be recovered by another replica.
    pub lease_s: u64,
    /// Connections each replica keeps to the database.
    pub pool_size: usize,
    /// Seconds one store operation may take, connecting included, before the call fails with
    /// the retryable `store_unavailable`.
    pub timeout_s: u64,
    /// Days the audit index (`cordon_audit`) keeps its rows.
    pub audit_index_days: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { url: None, url_env: None, ca_file: None, lease_s: 15, pool_size: 16, timeout_s: 5, audit_index_days: 30 }
    }
}

impl StoreConfig {
    /// Checks the numbers; the URL is checked when it is resolved.
    pub fn check(&self) -> Result<()> {
        if self.url.is_some() && self.url_env.is_some() {
            bail!("[store] sets both url and url_env; keep one");
        }
        if !(1..=3600).contains(&self.lease_s) {
            bail!("[store] lease_s must be between 1 and 3600");
        }
        if !(1..=1024).contains(&self.pool_size) {
            bail!("[store] pool_size must be between 1 and 1024");
        }
        if !(1..=600).contains(&self.timeout_s) {
            bail!("[store] timeout_s must be between 1 and 600");
        }
        if !(1..=36_500).contains(&self.audit_index_days) {
            bail!("[store] audit_index_days must be between 1 and 36500");
        }
        Ok(())
    }

    /// The PostgreSQL URL, if one is configured (from `url` or the variable `url_env` names).
    pub fn postgres_url(&self) -> Result<Option<String>> {
        let url = match (&self.url, &self.url_env) {
            (Some(url), _) => url.clone(),
            (None, Some(var)) => std::env::var(var)
                .with_context(|| format!("[store] url_env names {var}, which is not set (or not UTF-8)"))?,
            (None, None) => return Ok(None),
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("[store] url must start with postgres:// (got {})", redact_url(&url));
        }
        Ok(Some(url))
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "***".into() };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(user, _)| user);
            let hidden = if user_info.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{scheme}://{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// The backend chosen by config, opened: the handle every capability gets its view from.
#[derive(Clone)]
pub enum Shared {
    /// SQLite files in this data directory.
    Local(PathBuf),
    /// A PostgreSQL database shared with other replicas.
    Postgres(Arc<postgres::Postgres>),
}

impl Shared {
    /// Opens the backend `config` names: for PostgreSQL, connects, runs the migrations (safe
    /// from several replicas at once) and starts this replica's heartbeat.
    pub async fn open(config: &StoreConfig, data_dir: &Path) -> Result<Shared> {
        match config.postgres_url()? {
            None => {
                ensure_writable(data_dir)?;
                Ok(Shared::Local(data_dir.to_path_buf()))
            }
            Some(url) => Ok(Shared::Postgres(postgres::Postgres::connect(&url, config).await?)),
        }
    }

    /// The idempotency records, stamped with `owner` (this process's boot id).
    pub fn records(&self) -> Result<Arc<dyn RecordStore>> {
        match self {
            Shared::Local(dir) => Ok(Arc::new(records::sqlite::SqliteStore::open(&dir.join(records::sqlite::FILE))?)),
            Shared::Postgres(pg) => Ok(Arc::new(records::postgres::PostgresStore::new(pg.clone()))),
        }
    }

    /// The durable task records, for tasks run by `owner` (the idempotency store's owner id,
    /// whose liveness they share: an owner lock on SQLite, the replica's heartbeat on PostgreSQL).
    pub fn tasks(&self, owner: &str) -> Result<Option<Arc<dyn tasks::TaskStore>>> {
        match self {
            Shared::Local(dir) => Ok(Some(Arc::new(tasks::sqlite::SqliteTasks::open(
                &dir.join(tasks::sqlite::FILE),
                &dir.join("owners"),
                owner,
            )?))),
            Shared::Postgres(pg) => Ok(Some(Arc::new(tasks::postgres::PostgresTasks::new(pg.clone())))),
        }
    }

    /// The token revocation list.
    pub async fn revocations(&self) -> Result<Arc<revocations::Revocations>> {
        Ok(Arc::new(match self {
            Shared::Local(dir) => revocations::Revocations::open(dir)?,
            Shared::Postgres(pg) => revocations::Revocations::postgres(pg.clone()).await?,
        }))
    }

    /// The audit index of a PostgreSQL store (`None` for SQLite: the file is the whole log).
    pub fn audit_index(&self, config: &StoreConfig) -> Option<audit_index::AuditIndex> {
        match self {
            Shared::Local(_) => None,
            Shared::Postgres(pg) => Some(audit_index::AuditIndex::start(pg.clone(), config.audit_index_days)),
        }
    }

    /// Replicas alive (1 for a single host), kept current: rate limits give each its share.
    pub fn live_replicas(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        match self {
            Shared::Local(_) => Arc::new(std::sync::atomic::AtomicUsize::new(1)),
            Shared::Postgres(pg) => pg.live_replicas(),
        }
    }

    /// A short description for the start-up log line, without secrets.
    pub fn describe(&self) -> String {
        match self {
            Shared::Local(dir) => format!("sqlite in {}", dir.display()),
            Shared::Postgres(pg) => format!("postgres {}", pg.redacted_url()),
        }
    }
}

/// Creates the data directory if needed and checks it takes a write, so that a read-only or
/// missing directory is one clear error naming it, before any database file is opened (SQLite
/// would only say "unable to open database file").
fn ensure_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let probe = dir.join(".cordon-write-probe");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| format!("the data directory {} is not writable", dir.display()))
}

/// How long to wait between looks at a key another replica is running: short at first (most
/// calls are short), then backing off to a quarter second.
pub fn busy_backoff(attempt: u32) -> Duration {
    Duration::from_millis((10u64 << attempt.min(5)).min(250))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_for_logs() {
        assert_eq!(redact_url("postgres://cordon:s3cret@db:5432/cordon"), "postgres://cordon:***@db:5432/cordon");
        assert_eq!(redact_url("postgres://cordon@db/cordon"), "postgres://cordon@db/cordon");
        assert_eq!(redact_url("postgres://db/cordon"), "postgres://db/cordon");
        assert_eq!(redact_url("postgres://u:p@ss@db/x"), "postgres://u:***@db/x");
        assert_eq!(redact_url("nonsense"), "***");
    }

    #[test]
    fn store_settings_are_checked() {
        let config: StoreConfig = toml::from_str("url = 'mysql://x'").unwrap();
        assert!(config.postgres_url().unwrap_err().to_string().contains("must start with postgres://"));
        let config: StoreConfig = toml::from_str("url = 'postgres://a:b@h/d'\nurl_env = 'X'").unwrap();
        assert!(config.check().is_err());
        let config: StoreConfig = toml::from_str("lease_s = 0").unwrap();
        assert!(config.check().is_err());
        let config: StoreConfig = toml::from_str("url_env = 'CORDON_TEST_UNSET_STORE_URL'").unwrap();
        assert!(config.postgres_url().unwrap_err().to_string().contains("CORDON_TEST_UNSET_STORE_URL"));
        assert_eq!(StoreConfig::default().postgres_url().unwrap(), None);
    }
}
