//! The SQLite record store, for one host: `idempotency.sqlite3` in the data directory (WAL,
//! `synchronous = FULL`).
//!
//! All writes go through one writer thread that groups whatever requests are waiting into a
//! single transaction, so N concurrent calls cost one fsync, not N (group commit). A request is
//! answered only after its transaction committed: a claim is durable before the guest runs, an
//! outcome before the reply is sent.
//!
//! Several processes may open the same data directory (two desktop clients each starting
//! `cordon serve --stdio`, or `cordon call` beside a server). Each holds an exclusive lock on
//! its own file in `owners/` for as long as its store is open ([`OwnerLock`]); a record
//! `in_progress` under another owner is recovered only when that owner's lock can be taken —
//! its process is gone. While the owner lives, the claim is `Busy` and the caller waits for its
//! outcome, exactly as for another replica on PostgreSQL.

use super::{millis, rfc3339, Claim, Claimed, Record, RecordStore, StoredState};
use anyhow::{anyhow, Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

/// The records' file in the data directory.
pub const FILE: &str = "idempotency.sqlite3";

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &["CREATE TABLE records (
        namespace   TEXT NOT NULL,
        key         TEXT NOT NULL,
        principal   TEXT NOT NULL,
        plugin      TEXT NOT NULL,
        tool        TEXT NOT NULL,
        source      TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('in_progress', 'completed', 'retryable')),
        outcome     TEXT,
        owner       TEXT NOT NULL,
        attempts    INTEGER NOT NULL,
        created_ms  INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL,
        expires_ms  INTEGER NOT NULL,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID;
    CREATE INDEX records_expiry ON records (expires_ms);
    CREATE INDEX records_key ON records (key);"];

/// The most requests committed in one transaction.
const MAX_BATCH: usize = 256;

enum Op {
    Claim(Claim, oneshot::Sender<Result<Claimed>>),
    Finish {
        namespace: String,
        key: String,
        owner: String,
        attempt: u32,
        state: &'static str,
        outcome: String,
        reply: oneshot::Sender<Result<()>>,
    },
    Release {
        namespace: String,
        key: String,
        owner: String,
        attempt: u32,
        reply: oneshot::Sender<Result<()>>,
    },
    Purge {
        created: bool,
        before_ms: i64,
        reply: oneshot::Sender<Result<usize>>,
    },
}

/// The SQLite record store.
pub struct SqliteStore {
    ops: mpsc::Sender<Op>,
    path: PathBuf,
    owner: String,
    /// Held for as long as the store is open: other processes on the data directory read it as
    /// "this owner is alive".
    _alive: Arc<OwnerLock>,
    /// A read-only connection for [`RecordStore::finished`], opened on first use: WAL lets it read
    /// while the writer thread commits.
    reader: Arc<Mutex<Option<Connection>>>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the store at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = open_connection(path)?;
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let owners = path.parent().unwrap_or(Path::new(".")).join("owners");
        let alive = Arc::new(OwnerLock::take(&owners, &owner)?);
        let (ops, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("cordon-idempotency".into())
            .spawn(move || writer(conn, rx, &owners))
            .context("cannot start the idempotency writer thread")?;
        Ok(SqliteStore { ops, path: path.to_path_buf(), owner, _alive: alive, reader: Arc::new(Mutex::new(None)) })
    }

    fn send(&self, op: Op) -> Result<()> {
        self.ops.send(op).map_err(|_| anyhow!("the idempotency store stopped"))
    }

    async fn purge_where(&self, created: bool, before: SystemTime) -> Result<usize> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Purge { created, before_ms: millis(before), reply })?;
        rx.await.map_err(|_| anyhow!("the idempotency store stopped"))?
    }
}

#[async_trait::async_trait]
impl RecordStore for SqliteStore {
    fn owner(&self) -> &str {
        &self.owner
    }

    /// Read on the calling thread through a read-only connection, without the writer.
    async fn finished(&self, namespace: &str, key: &str, fingerprint: &str) -> Option<Claimed> {
        let mut reader = self.reader.lock().ok()?;
        if reader.is_none() {
            let conn = Connection::open_with_flags(
                &self.path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .ok()?;
            conn.busy_timeout(Duration::from_millis(50)).ok()?;
            *reader = Some(conn);
        }
        let conn = reader.as_ref()?;
        let row = conn
            .prepare_cached(
                "SELECT fingerprint, state, outcome, expires_ms FROM records WHERE namespace = ?1 AND key = ?2",
            )
            .ok()?
            .query_row(params![namespace, key], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .optional()
            .ok()??;
        let (stored_fingerprint, state, outcome, expires_ms) = row;
        let stored = StoredState { fingerprint: stored_fingerprint, state, outcome, expires_ms };
        stored.finished_answer(fingerprint, millis(SystemTime::now()))
    }

    async fn claim(&self, claim: Claim) -> Result<Claimed> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Claim(claim, tx))?;
        rx.await.map_err(|_| anyhow!("the idempotency store stopped"))?
    }

    async fn finish(&self, claim: &Claim, attempt: u32, retryable: bool, outcome: String) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        let state = if retryable { "retryable" } else { "completed" };
        self.send(Op::Finish {
            namespace: claim.namespace.clone(),
            key: claim.key.clone(),
            owner: claim.owner.clone(),
            attempt,
            state,
            outcome,
            reply,
        })?;
        rx.await.map_err(|_| anyhow!("the idempotency store stopped"))?
    }

    async fn release(&self, claim: &Claim, attempt: u32) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Release {
            namespace: claim.namespace.clone(),
            key: claim.key.clone(),
            owner: claim.owner.clone(),
            attempt,
            reply,
        })?;
        rx.await.map_err(|_| anyhow!("the idempotency store stopped"))?
    }

    fn abandon(&self, claim: &Claim, attempt: u32, outcome: String) {
        let (reply, _) = oneshot::channel();
        let op = Op::Finish {
            namespace: claim.namespace.clone(),
            key: claim.key.clone(),
            owner: claim.owner.clone(),
            attempt,
            state: "retryable",
            outcome,
            reply,
        };
        let _ = self.send(op);
    }

    async fn purge(&self, before: SystemTime) -> Result<usize> {
        self.purge_where(false, before).await
    }

    async fn purge_created_before(&self, before: SystemTime) -> Result<usize> {
        self.purge_where(true, before).await
    }

    async fn list(&self, key: Option<&str>, limit: usize) -> Result<Vec<Record>> {
        let conn = open_connection(&self.path)?;
        let mut stmt = conn.prepare(
            "SELECT key, principal, plugin, tool, source, state, attempts, created_ms, expires_ms, outcome
             FROM records WHERE (?1 IS NULL OR key = ?1) ORDER BY created_ms DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![key, limit as i64], |row| {
            let outcome: Option<String> = row.get(9)?;
            Ok(Record {
                key: row.get(0)?,
                principal: row.get(1)?,
                plugin: row.get(2)?,
                tool: row.get(3)?,
                source: row.get(4)?,
                state: row.get(5)?,
                attempts: row.get(6)?,
                created: rfc3339(row.get(7)?),
                expires: rfc3339(row.get(8)?),
                outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("cannot list idempotency records")
    }
}

/// Opens (creating if missing) and migrates the store. A file that is not an SQLite database,
/// or one written by a newer Cordon, is an error naming the file; nothing is written to it.
fn open_connection(path: &Path) -> Result<Connection> {
    let what = || format!("cannot open the idempotency store {}", path.display());
    let conn = Connection::open(path).with_context(what)?;
    conn.busy_timeout(Duration::from_secs(5)).with_context(what)?;
    // The first statement that reads the file: a corrupted header fails here, before any write.
    conn.pragma_update(None, "journal_mode", "WAL").with_context(what)?;
    conn.pragma_update(None, "synchronous", "FULL").with_context(what)?;
    migrate(&conn, MIGRATIONS).with_context(|| format!("cannot migrate the idempotency store {}", path.display()))?;
    Ok(conn)
}

/// Applies `migrations` not yet run (`PRAGMA user_version` counts them); a file migrated further
/// by a newer Cordon is refused. Shared by every SQLite store of the data directory.
pub(crate) fn migrate(conn: &Connection, migrations: &[&str]) -> Result<()> {
    let done: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let done = usize::try_from(done).unwrap_or(usize::MAX);
    if done > migrations.len() {
        anyhow::bail!("the store was written by a newer Cordon (schema version {done})");
    }
    for (i, sql) in migrations.iter().enumerate().skip(done) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// A process's claim to be alive: an exclusive `flock` on `owners/<owner>.lock`, held until
/// the store is dropped or the process dies (the kernel releases it then, even on `kill -9`).
pub struct OwnerLock {
    path: PathBuf,
    _file: File,
}

impl OwnerLock {
    /// Creates and locks this owner's file. The file is locked under a temporary name and then
    /// renamed into place, so no other process ever finds it unlocked while its owner lives.
    /// Files left by owners that died are removed on the way.
    fn take(dir: &Path, owner: &str) -> Result<OwnerLock> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        remove_dead_owners(dir);
        let path = dir.join(format!("{owner}.lock"));
        let staging = dir.join(format!("{owner}.lock.new"));
        let file = File::create(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
        file.lock().with_context(|| format!("cannot lock {}", staging.display()))?;
        std::fs::rename(&staging, &path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(OwnerLock { path, _file: file })
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the process that stamped `owner` on a claim still runs: its lock file exists and
/// another lock on it cannot be taken. A missing file is a dead owner (it removed its file on
/// the way out, or a Cordon from before owner locks wrote the record). An owner that is not a
/// plain id is never taken for dead.
pub(crate) fn owner_alive(dir: &Path, owner: &str) -> bool {
    if owner.is_empty() || !owner.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return true;
    }
    let file = match File::open(dir.join(format!("{owner}.lock"))) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        // Unreadable: assume it lives rather than run its key twice.
        Err(_) => return true,
    };
    match file.try_lock() {
        // Our lock goes with `file` when it is dropped here.
        Ok(()) => false,
        Err(_) => true,
    }
}

/// Removes lock files whose owners are gone.
fn remove_dead_owners(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
            continue;
        };
        if !owner_alive(dir, owner) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The writer loop: take one request, then whatever else is waiting, commit them together.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Op>, owners: &Path) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let now = millis(SystemTime::now());
        let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                fail_all(batch, &format!("cannot start a transaction: {e}"));
                continue;
            }
        };
        let mut replies = Vec::with_capacity(batch.len());
        for op in batch {
            match op {
                Op::Claim(claim, reply) => replies.push(Reply::Claim(reply, apply_claim(&tx, &claim, now, owners))),
                Op::Finish { namespace, key, owner, attempt, state, outcome, reply } => {
                    let done = tx
                        .execute(
                            "UPDATE records SET state = ?1, outcome = ?2, updated_ms = ?3
                             WHERE namespace = ?4 AND key = ?5 AND owner = ?6 AND attempts = ?7
                               AND state = 'in_progress'",
                            params![state, outcome, now, namespace, key, owner, attempt],
                        )
                        .map_err(anyhow::Error::from)
                        .and_then(|updated| match updated {
                            1 => Ok(()),
                            // Another process took the claim over (it thought this one dead): its
                            // run is the one of record, and this outcome must not be reported
                            // as durable.
                            _ => Err(anyhow!("the claim on key {key:?} is no longer held by this process")),
                        });
                    replies.push(Reply::Unit(reply, done));
                }
                Op::Release { namespace, key, owner, attempt, reply } => {
                    let done = tx
                        .execute(
                            "DELETE FROM records
                             WHERE namespace = ?1 AND key = ?2 AND owner = ?3 AND attempts = ?4
                               AND state = 'in_progress'",
                            params![namespace, key, owner, attempt],
                        )
                        .map_err(anyhow::Error::from)
                        .and_then(|deleted| match deleted {
                            1 => Ok(()),
                            // As for `Finish`: another process took the claim over.
                            _ => Err(anyhow!("the claim on key {key:?} is no longer held by this process")),
                        });
                    replies.push(Reply::Unit(reply, done));
                }
                Op::Purge { created, before_ms, reply } => {
                    // In-progress records are never purged: their run may have acted upstream.
                    let sql = if created {
                        "DELETE FROM records WHERE created_ms < ?1 AND state != 'in_progress'"
                    } else {
                        "DELETE FROM records WHERE expires_ms < ?1 AND state != 'in_progress'"
                    };
                    let purged = tx.execute(sql, params![before_ms]).map_err(anyhow::Error::from);
                    replies.push(Reply::Count(reply, purged));
                }
            }
        }
        match tx.commit() {
            Ok(()) => replies.into_iter().for_each(Reply::send),
            Err(e) => {
                let message = format!("cannot commit to the idempotency store: {e}");
                tracing::error!("{message}");
                replies.into_iter().for_each(|r| r.fail(&message));
            }
        }
    }
}

enum Reply {
    Claim(oneshot::Sender<Result<Claimed>>, Result<Claimed>),
    Unit(oneshot::Sender<Result<()>>, Result<()>),
    Count(oneshot::Sender<Result<usize>>, Result<usize>),
}

impl Reply {
    fn send(self) {
        match self {
            Reply::Claim(tx, r) => drop(tx.send(r)),
            Reply::Unit(tx, r) => drop(tx.send(r)),
            Reply::Count(tx, r) => drop(tx.send(r)),
        }
    }

    fn fail(self, message: &str) {
        match self {
            Reply::Claim(tx, _) => drop(tx.send(Err(anyhow!("{message}")))),
            Reply::Unit(tx, _) => drop(tx.send(Err(anyhow!("{message}")))),
            Reply::Count(tx, _) => drop(tx.send(Err(anyhow!("{message}")))),
        }
    }
}

fn fail_all(batch: Vec<Op>, message: &str) {
    tracing::error!("{message}");
    for op in batch {
        match op {
            Op::Claim(_, tx) => drop(tx.send(Err(anyhow!("{message}")))),
            Op::Finish { reply, .. } => drop(reply.send(Err(anyhow!("{message}")))),
            Op::Release { reply, .. } => drop(reply.send(Err(anyhow!("{message}")))),
            Op::Purge { reply, .. } => drop(reply.send(Err(anyhow!("{message}")))),
        }
    }
}

fn apply_claim(tx: &rusqlite::Transaction<'_>, c: &Claim, now: i64, owners: &Path) -> Result<Claimed> {
    let existing = tx
        .query_row(
            "SELECT fingerprint, state, outcome, owner, attempts, expires_ms FROM records WHERE namespace = ?1 AND key = ?2",
            params![c.namespace, c.key],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, u32>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            },
        )
        .optional()?;
    match existing {
        // An expired finished record is forgotten; an unfinished one never is (its run may
        // have acted upstream, so a retry must reuse its upstream keys).
        Some((fingerprint, state, outcome, owner, attempts, expires)) if !(expires < now && state != "in_progress") => {
            if fingerprint != c.fingerprint {
                return Ok(Claimed::Mismatch);
            }
            match (state.as_str(), outcome) {
                ("completed", Some(outcome)) => Ok(Claimed::Done(outcome)),
                (state, _) => {
                    let recovery = state == "in_progress";
                    // Another live process is running it: wait for its outcome instead of acting
                    // twice. (This process's own runs are single-flighted before they get here,
                    // so one of its own left `in_progress` is a ticket that could not settle.)
                    if recovery && owner != c.owner && owner_alive(owners, &owner) {
                        return Ok(Claimed::Busy);
                    }
                    if recovery {
                        tracing::warn!(key = %c.key, previous_owner = %owner, "recovering a call whose run was cut off");
                    }
                    tx.execute(
                        "UPDATE records SET state = 'in_progress', owner = ?1, attempts = attempts + 1, updated_ms = ?2
                         WHERE namespace = ?3 AND key = ?4",
                        params![c.owner, now, c.namespace, c.key],
                    )?;
                    Ok(Claimed::Run { attempt: attempts + 1, recovery })
                }
            }
        }
        _ => {
            tx.execute(
                "INSERT OR REPLACE INTO records
                 (namespace, key, principal, plugin, tool, source, fingerprint, state, outcome, owner, attempts,
                  created_ms, updated_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'in_progress', NULL, ?8, 1, ?9, ?9, ?10)",
                params![
                    c.namespace,
                    c.key,
                    c.principal,
                    c.plugin,
                    c.tool,
                    c.source,
                    c.fingerprint,
                    c.owner,
                    now,
                    c.expires_ms
                ],
            )?;
            Ok(Claimed::Run { attempt: 1, recovery: false })
        }
    }
}
