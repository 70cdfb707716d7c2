//! The SQLite task store, for one host: `tasks.sqlite3` in the data directory, beside the
//! idempotency records (WAL, `synchronous = FULL`: a task is on disk before its id is sent).
//!
//! Tasks are few beside calls, so each operation takes the one connection in turn on a blocking
//! thread. A task's owner is the idempotency store's owner id, and whether it still lives is read
//! from the same lock files in `owners/` ([`super::super::records::sqlite`]): a working task whose
//! owner's lock can be taken belongs to a process that died.

use super::{Answered, Created, NewTask, Settled, TaskRecord, TaskStatus, TaskStore};
use crate::records::sqlite::{migrate, owner_alive};
use anyhow::{anyhow, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The tasks' file in the data directory.
pub const FILE: &str = "tasks.sqlite3";

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &["CREATE TABLE tasks (
        task_id           TEXT PRIMARY KEY,
        principal         TEXT NOT NULL,
        token_id          TEXT,
        idempotency_scope TEXT,
        plugin            TEXT NOT NULL,
        tool              TEXT NOT NULL,
        arguments         TEXT NOT NULL,
        key_namespace     TEXT,
        key               TEXT,
        capabilities      TEXT NOT NULL,
        owner             TEXT NOT NULL,
        status            TEXT NOT NULL
            CHECK (status IN ('working', 'input_required', 'completed', 'failed', 'cancelled')),
        result            TEXT,
        error             TEXT,
        input_requests    TEXT,
        answers           TEXT NOT NULL,
        attempts          INTEGER NOT NULL,
        cancel_requested  INTEGER NOT NULL,
        created_ms        INTEGER NOT NULL,
        updated_ms        INTEGER NOT NULL,
        expires_ms        INTEGER NOT NULL,
        provided_key_source TEXT,
        provided_key      TEXT
    );
    CREATE INDEX tasks_key ON tasks (key_namespace, key) WHERE key IS NOT NULL;
    CREATE INDEX tasks_expiry ON tasks (expires_ms);
    CREATE INDEX tasks_owner ON tasks (owner, status);"];

const COLUMNS: &str = "task_id, principal, token_id, idempotency_scope, plugin, tool, arguments, key_namespace, key, \
     capabilities, owner, status, result, error, input_requests, answers, attempts, cancel_requested, created_ms, \
     updated_ms, expires_ms, provided_key_source, provided_key";

/// The SQLite task store.
pub struct SqliteTasks {
    conn: Arc<Mutex<Connection>>,
    owners: PathBuf,
    owner: String,
}

impl SqliteTasks {
    /// Opens (creating and migrating) the store at `path`; `owner` is this process's owner id,
    /// whose lock lives in `owners` (the idempotency store holds it).
    pub fn open(path: &Path, owners: &Path, owner: &str) -> Result<SqliteTasks> {
        let what = || format!("cannot open the task store {}", path.display());
        let conn = Connection::open(path).with_context(what)?;
        conn.busy_timeout(Duration::from_secs(5)).with_context(what)?;
        conn.pragma_update(None, "journal_mode", "WAL").with_context(what)?;
        conn.pragma_update(None, "synchronous", "FULL").with_context(what)?;
        migrate(&conn, MIGRATIONS).with_context(|| format!("cannot migrate the task store {}", path.display()))?;
        Ok(SqliteTasks { conn: Arc::new(Mutex::new(conn)), owners: owners.to_path_buf(), owner: owner.to_string() })
    }

    /// Runs `operation` on the connection, on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut Connection, &Path) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (conn, owners) = (self.conn.clone(), self.owners.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().map_err(|_| anyhow!("the task store is poisoned"))?;
            operation(&mut conn, &owners)
        })
        .await
        .map_err(|e| anyhow!("the task store's thread failed: {e}"))?
    }
}

fn record(row: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.to_string().into())
    };
    let status: String = row.get(11)?;
    let answers: String = row.get(15)?;
    let key = match (row.get::<_, Option<String>>(7)?, row.get::<_, Option<String>>(8)?) {
        (Some(namespace), Some(key)) => Some((namespace, key)),
        _ => None,
    };
    Ok(TaskRecord {
        task: NewTask {
            task_id: row.get(0)?,
            principal: row.get(1)?,
            token_id: row.get(2)?,
            idempotency_scope: row.get(3)?,
            plugin: row.get(4)?,
            tool: row.get(5)?,
            arguments: row.get(6)?,
            key,
            capabilities: row.get(9)?,
            answers: BTreeMap::new(),
            owner: row.get(10)?,
            created_ms: row.get(18)?,
            expires_ms: row.get(20)?,
            provided_key: match (row.get::<_, Option<String>>(21)?, row.get::<_, Option<String>>(22)?) {
                (Some(source), Some(key)) => Some((source, key)),
                _ => None,
            },
        },
        status: TaskStatus::parse(&status).ok_or_else(|| bad(11, "an unknown task status"))?,
        result: row.get(12)?,
        error: row.get(13)?,
        input_requests: row.get(14)?,
        answers: serde_json::from_str(&answers).map_err(|_| bad(15, "unreadable answers"))?,
        attempts: row.get(16)?,
        cancel_requested: row.get::<_, i64>(17)? != 0,
        updated_ms: row.get(19)?,
    })
}

fn load(conn: &Connection, task_id: &str) -> Result<Option<TaskRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE task_id = ?1");
    Ok(conn.prepare_cached(&sql)?.query_row(params![task_id], record).optional()?)
}

/// The task if `principal` may see it at `now_ms`.
fn visible(conn: &Connection, task_id: &str, principal: &str, now_ms: i64) -> Result<Option<TaskRecord>> {
    Ok(load(conn, task_id)?.filter(|r| r.task.principal == principal && r.task.expires_ms >= now_ms))
}

/// The keys of a pending-questions object.

#[async_trait::async_trait]
impl TaskStore for SqliteTasks {
    fn owner(&self) -> &str {
        &self.owner
    }

    async fn create(&self, task: NewTask) -> Result<Created> {
        self.with(move |conn, _| {
            let tx = conn.transaction()?;
            if let Some((namespace, key)) = &task.key {
                let sql = format!(
                    "SELECT {COLUMNS} FROM tasks WHERE key_namespace = ?1 AND key = ?2 AND expires_ms >= ?3
                     ORDER BY created_ms DESC LIMIT 1"
                );
                let existing =
                    tx.prepare_cached(&sql)?.query_row(params![namespace, key, task.created_ms], record).optional()?;
                if let Some(existing) = existing {
                    return Ok(Created::Existing(Box::new(existing)));
                }
            }
            let (namespace, key) = task.key.clone().unzip();
            let (provided_source, provided_key) = task.provided_key.clone().unzip();
            tx.execute(
                &format!("INSERT INTO tasks ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'working', NULL, NULL, NULL, ?16, 1, 0, ?12, ?12, ?13, ?14, ?15)"),
                params![
                    task.task_id,
                    task.principal,
                    task.token_id,
                    task.idempotency_scope,
                    task.plugin,
                    task.tool,
                    task.arguments,
                    namespace,
                    key,
                    task.capabilities,
                    task.owner,
                    task.created_ms,
                    task.expires_ms,
                    provided_source,
                    provided_key,
                    serde_json::to_string(&task.answers)?
                ],
            )?;
            tx.commit()?;
            Ok(Created::New)
        })
        .await
    }

    async fn get(&self, task_id: &str, principal: &str, now_ms: i64) -> Result<Option<TaskRecord>> {
        let (task_id, principal) = (task_id.to_string(), principal.to_string());
        self.with(move |conn, _| visible(conn, &task_id, &principal, now_ms)).await
    }

    async fn settle(&self, task_id: &str, owner: &str, attempt: u32, settled: Settled, now_ms: i64) -> Result<bool> {
        let (task_id, owner) = (task_id.to_string(), owner.to_string());
        self.with(move |conn, _| {
            let (status, result, error, input_requests) = match settled {
                Settled::Completed(result) => (TaskStatus::Completed, Some(result), None, None),
                Settled::Failed(error) => (TaskStatus::Failed, None, Some(error), None),
                Settled::Cancelled => (TaskStatus::Cancelled, None, None, None),
                Settled::InputRequired(requests) => (TaskStatus::InputRequired, None, None, Some(requests)),
            };
            let changed = conn.execute(
                "UPDATE tasks SET status = ?1, result = ?2, error = ?3, input_requests = ?4, updated_ms = ?5
                 WHERE task_id = ?6 AND owner = ?7 AND attempts = ?8 AND status = 'working'",
                params![status.as_str(), result, error, input_requests, now_ms, task_id, owner, attempt],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn request_cancel(&self, task_id: &str, principal: &str, now_ms: i64) -> Result<Option<TaskStatus>> {
        let (task_id, principal) = (task_id.to_string(), principal.to_string());
        self.with(move |conn, _| {
            let tx = conn.transaction()?;
            let Some(task) = visible(&tx, &task_id, &principal, now_ms)? else { return Ok(None) };
            match task.status {
                TaskStatus::InputRequired => {
                    tx.execute(
                        "UPDATE tasks SET status = 'cancelled', input_requests = NULL, updated_ms = ?1 WHERE task_id = ?2",
                        params![now_ms, task_id],
                    )?;
                }
                TaskStatus::Working => {
                    tx.execute(
                        "UPDATE tasks SET cancel_requested = 1, updated_ms = ?1 WHERE task_id = ?2",
                        params![now_ms, task_id],
                    )?;
                }
                _ => {}
            }
            tx.commit()?;
            Ok(Some(task.status))
        })
        .await
    }

    async fn answer(
        &self,
        task_id: &str,
        principal: &str,
        answers: BTreeMap<String, Value>,
        owner: &str,
        now_ms: i64,
    ) -> Result<Option<Answered>> {
        let (task_id, principal, owner) = (task_id.to_string(), principal.to_string(), owner.to_string());
        self.with(move |conn, _| {
            let tx = conn.transaction()?;
            let Some(mut task) = visible(&tx, &task_id, &principal, now_ms)? else { return Ok(None) };
            if task.status != TaskStatus::InputRequired {
                return Ok(Some(Answered::NotWaiting));
            }
            let requests = super::take_answers(&mut task, answers);
            let answers_text = serde_json::to_string(&task.answers)?;
            let answered = if requests.is_empty() {
                task.attempts += 1;
                tx.execute(
                    "UPDATE tasks SET status = 'working', input_requests = NULL, answers = ?1, owner = ?2,
                     attempts = ?3, updated_ms = ?4 WHERE task_id = ?5",
                    params![answers_text, owner, task.attempts, now_ms, task_id],
                )?;
                task.status = TaskStatus::Working;
                task.input_requests = None;
                task.task.owner = owner;
                task.updated_ms = now_ms;
                Answered::Resume(Box::new(task))
            } else {
                tx.execute(
                    "UPDATE tasks SET input_requests = ?1, answers = ?2, updated_ms = ?3 WHERE task_id = ?4",
                    params![serde_json::to_string(&requests)?, answers_text, now_ms, task_id],
                )?;
                Answered::StillWaiting
            };
            tx.commit()?;
            Ok(Some(answered))
        })
        .await
    }

    async fn cancel_requested(&self, owner: &str) -> Result<Vec<String>> {
        let owner = owner.to_string();
        self.with(move |conn, _| {
            let mut stmt = conn.prepare_cached(
                "SELECT task_id FROM tasks WHERE owner = ?1 AND status = 'working' AND cancel_requested = 1",
            )?;
            let ids = stmt.query_map(params![owner], |row| row.get(0))?;
            Ok(ids.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn take_orphans(&self, owner: &str, now_ms: i64) -> Result<Vec<TaskRecord>> {
        let owner = owner.to_string();
        self.with(move |conn, owners| {
            let tx = conn.transaction()?;
            let sql =
                format!("SELECT {COLUMNS} FROM tasks WHERE status = 'working' AND owner != ?1 AND expires_ms >= ?2");
            let working = tx
                .prepare_cached(&sql)?
                .query_map(params![owner, now_ms], record)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut taken = Vec::new();
            for mut task in working.into_iter().filter(|t| !owner_alive(owners, &t.task.owner)) {
                task.attempts += 1;
                tx.execute(
                    "UPDATE tasks SET owner = ?1, attempts = ?2, updated_ms = ?3 WHERE task_id = ?4 AND owner = ?5",
                    params![owner, task.attempts, now_ms, task.task.task_id, task.task.owner],
                )?;
                task.task.owner = owner.clone();
                task.updated_ms = now_ms;
                taken.push(task);
            }
            tx.commit()?;
            Ok(taken)
        })
        .await
    }

    async fn purge(&self, now_ms: i64) -> Result<usize> {
        self.with(move |conn, _| {
            // A working task past its expiry may still be acting upstream: it is purged once it ends.
            Ok(conn.execute("DELETE FROM tasks WHERE expires_ms < ?1 AND status != 'working'", params![now_ms])?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(id: &str, principal: &str, key: Option<&str>, owner: &str) -> NewTask {
        NewTask {
            task_id: id.into(),
            principal: principal.into(),
            token_id: Some("t1".into()),
            idempotency_scope: None,
            plugin: "p".into(),
            tool: "p_slow".into(),
            arguments: r#"{"seconds":1}"#.into(),
            key: key.map(|k| ("[\"alice\",\"p\",\"p_slow\"]".to_string(), k.to_string())),
            provided_key: None,
            capabilities: "{}".into(),
            answers: BTreeMap::new(),
            owner: owner.into(),
            created_ms: 1_000,
            expires_ms: 100_000,
        }
    }

    fn open(dir: &Path, owner: &str) -> SqliteTasks {
        SqliteTasks::open(&dir.join(FILE), &dir.join("owners"), owner).unwrap()
    }

    /// Created durably, read only by its principal and before its expiry, settled only by the
    /// attempt that holds it, and never changed once over.
    #[tokio::test]
    async fn tasks_are_private_durable_and_settled_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "me");
        assert_eq!(store.create(task("t-1", "alice", Some("k1"), "me")).await.unwrap(), Created::New);
        // Another connection (another replica's view of the same file) sees it at once.
        let other = open(dir.path(), "other");
        let seen = other.get("t-1", "alice", 2_000).await.unwrap().expect("durable");
        assert_eq!(
            (seen.status, seen.attempts, seen.task.arguments.as_str()),
            (TaskStatus::Working, 1, r#"{"seconds":1}"#)
        );
        assert_eq!(store.get("t-1", "mallory", 2_000).await.unwrap(), None, "another principal sees nothing");
        assert_eq!(store.get("t-1", "alice", 200_000).await.unwrap(), None, "expired");
        assert_eq!(store.get("t-404", "alice", 2_000).await.unwrap(), None);

        // The same live key answers the existing task.
        match store.create(task("t-2", "alice", Some("k1"), "me")).await.unwrap() {
            Created::Existing(existing) => assert_eq!(existing.task.task_id, "t-1"),
            Created::New => panic!("a second task for a live key"),
        }
        assert_eq!(store.get("t-2", "alice", 2_000).await.unwrap(), None);

        assert!(!store.settle("t-1", "other", 1, Settled::Cancelled, 3_000).await.unwrap(), "not the owner");
        assert!(!store.settle("t-1", "me", 2, Settled::Cancelled, 3_000).await.unwrap(), "not the attempt");
        let result = json!({"content": [{"type": "text", "text": "done"}]}).to_string();
        assert!(store.settle("t-1", "me", 1, Settled::Completed(result.clone()), 3_000).await.unwrap());
        assert!(!store.settle("t-1", "me", 1, Settled::Failed("{}".into()), 4_000).await.unwrap(), "over");
        let done = store.get("t-1", "alice", 5_000).await.unwrap().unwrap();
        assert_eq!(
            (done.status, done.result.as_deref(), done.updated_ms),
            (TaskStatus::Completed, Some(result.as_str()), 3_000)
        );
        assert_eq!(store.request_cancel("t-1", "alice", 5_000).await.unwrap(), Some(TaskStatus::Completed));
        assert_eq!(store.get("t-1", "alice", 5_000).await.unwrap().unwrap().status, TaskStatus::Completed);
        assert_eq!(store.request_cancel("t-1", "mallory", 5_000).await.unwrap(), None);

        // Purged once expired (and over), never while working.
        store.create(task("t-3", "alice", None, "me")).await.unwrap();
        assert_eq!(store.purge(200_000).await.unwrap(), 1);
        assert!(load(&store.conn.lock().unwrap(), "t-3").unwrap().is_some(), "a working task is kept");
    }

    /// Answers: only pending questions take one; the task stays waiting until none is left, then
    /// is working again under the answering owner's next attempt. Cancelling a waiting task ends
    /// it; cancelling a working one marks it for its owner.
    #[tokio::test]
    async fn answers_resume_a_waiting_task_and_cancel_marks_a_running_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "me");
        store.create(task("t-1", "alice", None, "me")).await.unwrap();
        let questions = json!({"q1": {"method": "elicitation/create"}, "q2": {"method": "elicitation/create"}});
        assert!(store.settle("t-1", "me", 1, Settled::InputRequired(questions.to_string()), 2_000).await.unwrap());
        let one = BTreeMap::from([("q1".to_string(), json!({"action": "accept"})), ("q9".to_string(), json!(1))]);
        assert_eq!(store.answer("t-1", "alice", one, "me", 3_000).await.unwrap(), Some(Answered::StillWaiting));
        let waiting = store.get("t-1", "alice", 3_000).await.unwrap().unwrap();
        let pending: serde_json::Map<String, Value> =
            serde_json::from_str(waiting.input_requests.as_deref().unwrap_or("{}")).unwrap();
        assert_eq!(pending.keys().collect::<Vec<_>>(), ["q2"]);
        assert_eq!(waiting.answers.keys().collect::<Vec<_>>(), ["q1"], "an unasked key is ignored");
        assert_eq!(store.answer("t-1", "mallory", BTreeMap::new(), "me", 3_000).await.unwrap(), None);
        let two = BTreeMap::from([("q2".to_string(), json!({"action": "decline"}))]);
        match store.answer("t-1", "alice", two, "other", 4_000).await.unwrap() {
            Some(Answered::Resume(task)) => {
                assert_eq!((task.status, task.attempts, task.task.owner.as_str()), (TaskStatus::Working, 2, "other"));
                assert_eq!(task.answers.len(), 2);
            }
            other => panic!("expected to resume: {other:?}"),
        }
        assert_eq!(
            store.answer("t-1", "alice", BTreeMap::new(), "me", 5_000).await.unwrap(),
            Some(Answered::NotWaiting)
        );

        assert_eq!(store.request_cancel("t-1", "alice", 6_000).await.unwrap(), Some(TaskStatus::Working));
        assert_eq!(store.cancel_requested("other").await.unwrap(), ["t-1"]);
        assert!(store.cancel_requested("me").await.unwrap().is_empty());

        store.create(task("t-2", "alice", None, "me")).await.unwrap();
        store.settle("t-2", "me", 1, Settled::InputRequired(json!({"q": {}}).to_string()), 2_000).await.unwrap();
        assert_eq!(store.request_cancel("t-2", "alice", 3_000).await.unwrap(), Some(TaskStatus::InputRequired));
        assert_eq!(store.get("t-2", "alice", 3_000).await.unwrap().unwrap().status, TaskStatus::Cancelled);
    }

    /// A working task whose owner's lock is gone (its process died) is taken over once, with
    /// its next attempt; a live owner's task is left alone.
    #[tokio::test]
    async fn orphans_of_dead_owners_are_taken_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let owners = dir.path().join("owners");
        std::fs::create_dir_all(&owners).unwrap();
        // A live owner: its lock file is held.
        let live = std::fs::File::create(owners.join("alive1.lock")).unwrap();
        live.lock().unwrap();
        let store = open(dir.path(), "me");
        store.create(task("t-dead", "alice", None, "dead1")).await.unwrap();
        store.create(task("t-live", "alice", None, "alive1")).await.unwrap();
        let taken = store.take_orphans("me", 2_000).await.unwrap();
        assert_eq!(taken.iter().map(|t| t.task.task_id.as_str()).collect::<Vec<_>>(), ["t-dead"]);
        assert_eq!((taken[0].attempts, taken[0].task.owner.as_str()), (2, "me"));
        assert!(store.take_orphans("me", 3_000).await.unwrap().is_empty(), "taken once");
        // The dead owner's late settle changes nothing; the new attempt's does.
        assert!(!store.settle("t-dead", "dead1", 1, Settled::Cancelled, 4_000).await.unwrap());
        assert!(store.settle("t-dead", "me", 2, Settled::Cancelled, 4_000).await.unwrap());
        drop(live);
    }
}
