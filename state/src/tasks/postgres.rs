//! The PostgreSQL task store, for replicas: `cordon_tasks`, beside the idempotency records.
//!
//! Any replica reads, answers and cancels any task; the one holding it (`owner`) runs it and
//! settles it. A task's owner is alive while its heartbeat in `cordon_replicas` is younger than
//! the lease, exactly as for a keyed call ([`crate::records::postgres`]); once it is older, the
//! first replica to look takes the task over (`take_orphans`, under a row lock, so only one
//! does). A cancellation asked through another replica is a flag its owner polls.

use super::{Answered, Created, NewTask, Settled, TaskRecord, TaskStatus, TaskStore};
use crate::postgres::Postgres;
use anyhow::{anyhow, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_postgres::Row;

const COLUMNS: &str = "task_id, principal, token_id, idempotency_scope, plugin, tool, arguments, key_namespace, key, \
     capabilities, owner, status, result, error, input_requests, answers, attempts, cancel_requested, created_ms, \
     updated_ms, expires_ms, provided_key_source, provided_key";

/// The PostgreSQL task store.
pub struct PostgresTasks {
    pg: Arc<Postgres>,
}

impl PostgresTasks {
    /// Tasks in `pg`, run as its replica.
    pub fn new(pg: Arc<Postgres>) -> PostgresTasks {
        PostgresTasks { pg }
    }
}

fn record(row: &Row) -> Result<TaskRecord> {
    let status: String = row.get(11);
    let answers: String = row.get(15);
    let key = match (row.get::<_, Option<String>>(7), row.get::<_, Option<String>>(8)) {
        (Some(namespace), Some(key)) => Some((namespace, key)),
        _ => None,
    };
    let provided_key = match (row.get::<_, Option<String>>(21), row.get::<_, Option<String>>(22)) {
        (Some(source), Some(key)) => Some((source, key)),
        _ => None,
    };
    Ok(TaskRecord {
        task: NewTask {
            task_id: row.get(0),
            principal: row.get(1),
            token_id: row.get(2),
            idempotency_scope: row.get(3),
            plugin: row.get(4),
            tool: row.get(5),
            arguments: row.get(6),
            key,
            provided_key,
            capabilities: row.get(9),
            answers: BTreeMap::new(),
            owner: row.get(10),
            created_ms: row.get(18),
            expires_ms: row.get(20),
        },
        status: TaskStatus::parse(&status).ok_or_else(|| anyhow!("a task with an unknown status {status:?}"))?,
        result: row.get(12),
        error: row.get(13),
        input_requests: row.get(14),
        answers: serde_json::from_str(&answers).map_err(|e| anyhow!("a task's answers are unreadable: {e}"))?,
        attempts: u32::try_from(row.get::<_, i32>(16)).unwrap_or(0),
        cancel_requested: row.get(17),
        updated_ms: row.get(19),
    })
}

/// The task if `principal` may see it at `now_ms`, locked for update when `lock`.
async fn visible(
    client: &impl deadpool_postgres::GenericClient,
    task_id: &str,
    principal: &str,
    now_ms: i64,
    lock: bool,
) -> Result<Option<TaskRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM cordon_tasks WHERE task_id = $1 AND principal = $2 AND expires_ms >= $3{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    client.query_opt(&sql, &[&task_id, &principal, &now_ms]).await?.as_ref().map(record).transpose()
}

#[async_trait::async_trait]
impl TaskStore for PostgresTasks {
    fn owner(&self) -> &str {
        self.pg.replica()
    }

    async fn create(&self, task: NewTask) -> Result<Created> {
        self.pg
            .within("creating a task", async {
                let mut client = self.pg.client().await?;
                let tx = client.transaction().await?;
                if let Some((namespace, key)) = &task.key {
                    // One creator at a time per key, so two replicas cannot both create one.
                    tx.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1 || E'\\n' || $2, 0))",
                        &[namespace, key],
                    )
                    .await?;
                    let sql = format!(
                        "SELECT {COLUMNS} FROM cordon_tasks WHERE key_namespace = $1 AND key = $2 AND expires_ms >= $3
                         ORDER BY created_ms DESC LIMIT 1"
                    );
                    if let Some(row) = tx.query_opt(&sql, &[namespace, key, &task.created_ms]).await? {
                        return Ok(Created::Existing(Box::new(record(&row)?)));
                    }
                }
                let (namespace, key) = task.key.clone().unzip();
                let (provided_source, provided_key) = task.provided_key.clone().unzip();
                let answers = serde_json::to_string(&task.answers)?;
                tx.execute(
                    &format!(
                        "INSERT INTO cordon_tasks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                         'working', NULL, NULL, NULL, $12, 1, FALSE, $13, $13, $14, $15, $16)"
                    ),
                    &[
                        &task.task_id,
                        &task.principal,
                        &task.token_id,
                        &task.idempotency_scope,
                        &task.plugin,
                        &task.tool,
                        &task.arguments,
                        &namespace,
                        &key,
                        &task.capabilities,
                        &task.owner,
                        &answers,
                        &task.created_ms,
                        &task.expires_ms,
                        &provided_source,
                        &provided_key,
                    ],
                )
                .await?;
                tx.commit().await?;
                Ok(Created::New)
            })
            .await
    }

    async fn get(&self, task_id: &str, principal: &str, now_ms: i64) -> Result<Option<TaskRecord>> {
        self.pg
            .within("reading a task", async {
                let client = self.pg.client().await?;
                visible(&client, task_id, principal, now_ms, false).await
            })
            .await
    }

    async fn settle(&self, task_id: &str, owner: &str, attempt: u32, settled: Settled, now_ms: i64) -> Result<bool> {
        let (status, result, error, input_requests) = match settled {
            Settled::Completed(result) => (TaskStatus::Completed, Some(result), None, None),
            Settled::Failed(error) => (TaskStatus::Failed, None, Some(error), None),
            Settled::Cancelled => (TaskStatus::Cancelled, None, None, None),
            Settled::InputRequired(requests) => (TaskStatus::InputRequired, None, None, Some(requests)),
        };
        let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
        self.pg
            .within("settling a task", async {
                let client = self.pg.client().await?;
                let changed = client
                    .execute(
                        "UPDATE cordon_tasks SET status = $1, result = $2, error = $3, input_requests = $4,
                         updated_ms = $5 WHERE task_id = $6 AND owner = $7 AND attempts = $8 AND status = 'working'",
                        &[&status.as_str(), &result, &error, &input_requests, &now_ms, &task_id, &owner, &attempt],
                    )
                    .await?;
                Ok(changed == 1)
            })
            .await
    }

    async fn request_cancel(&self, task_id: &str, principal: &str, now_ms: i64) -> Result<Option<TaskStatus>> {
        self.pg
            .within("cancelling a task", async {
                let mut client = self.pg.client().await?;
                let tx = client.transaction().await?;
                let Some(task) = visible(&tx, task_id, principal, now_ms, true).await? else { return Ok(None) };
                match task.status {
                    TaskStatus::InputRequired => {
                        tx.execute(
                            "UPDATE cordon_tasks SET status = 'cancelled', input_requests = NULL, updated_ms = $1
                             WHERE task_id = $2",
                            &[&now_ms, &task_id],
                        )
                        .await?;
                    }
                    TaskStatus::Working => {
                        tx.execute(
                            "UPDATE cordon_tasks SET cancel_requested = TRUE, updated_ms = $1 WHERE task_id = $2",
                            &[&now_ms, &task_id],
                        )
                        .await?;
                    }
                    _ => {}
                }
                tx.commit().await?;
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
        self.pg
            .within("answering a task", async {
                let mut client = self.pg.client().await?;
                let tx = client.transaction().await?;
                let Some(mut task) = visible(&tx, task_id, principal, now_ms, true).await? else { return Ok(None) };
                if task.status != TaskStatus::InputRequired {
                    return Ok(Some(Answered::NotWaiting));
                }
                let requests = super::take_answers(&mut task, answers);
                let answers_text = serde_json::to_string(&task.answers)?;
                let answered = if requests.is_empty() {
                    task.attempts += 1;
                    let attempts = i32::try_from(task.attempts).unwrap_or(i32::MAX);
                    tx.execute(
                        "UPDATE cordon_tasks SET status = 'working', input_requests = NULL, answers = $1, owner = $2,
                         attempts = $3, updated_ms = $4 WHERE task_id = $5",
                        &[&answers_text, &owner, &attempts, &now_ms, &task_id],
                    )
                    .await?;
                    task.status = TaskStatus::Working;
                    task.input_requests = None;
                    task.task.owner = owner.to_string();
                    task.updated_ms = now_ms;
                    Answered::Resume(Box::new(task))
                } else {
                    let requests = serde_json::to_string(&requests)?;
                    tx.execute(
                        "UPDATE cordon_tasks SET input_requests = $1, answers = $2, updated_ms = $3 WHERE task_id = $4",
                        &[&requests, &answers_text, &now_ms, &task_id],
                    )
                    .await?;
                    Answered::StillWaiting
                };
                tx.commit().await?;
                Ok(Some(answered))
            })
            .await
    }

    async fn cancel_requested(&self, owner: &str) -> Result<Vec<String>> {
        self.pg
            .within("looking for cancelled tasks", async {
                let client = self.pg.client().await?;
                let rows = client
                    .query(
                        "SELECT task_id FROM cordon_tasks WHERE owner = $1 AND status = 'working' AND cancel_requested",
                        &[&owner],
                    )
                    .await?;
                Ok(rows.iter().map(|row| row.get(0)).collect())
            })
            .await
    }

    async fn take_orphans(&self, owner: &str, now_ms: i64) -> Result<Vec<TaskRecord>> {
        let lease_s = self.pg.lease().as_secs_f64();
        self.pg
            .within("taking over tasks", async {
                let mut client = self.pg.client().await?;
                let tx = client.transaction().await?;
                // Rows another replica is taking over are skipped, never waited for or taken twice.
                let sql = format!(
                    "SELECT {COLUMNS} FROM cordon_tasks t WHERE status = 'working' AND owner <> $1 AND expires_ms >= $2
                     AND NOT EXISTS (SELECT 1 FROM cordon_replicas p WHERE p.owner = t.owner
                                     AND p.heartbeat > clock_timestamp() - make_interval(secs => $3))
                     FOR UPDATE SKIP LOCKED"
                );
                let rows = tx.query(&sql, &[&owner, &now_ms, &lease_s]).await?;
                let mut taken = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut task = record(row)?;
                    task.attempts += 1;
                    let attempts = i32::try_from(task.attempts).unwrap_or(i32::MAX);
                    tx.execute(
                        "UPDATE cordon_tasks SET owner = $1, attempts = $2, updated_ms = $3 WHERE task_id = $4",
                        &[&owner, &attempts, &now_ms, &task.task.task_id],
                    )
                    .await?;
                    task.task.owner = owner.to_string();
                    task.updated_ms = now_ms;
                    taken.push(task);
                }
                tx.commit().await?;
                Ok(taken)
            })
            .await
    }

    async fn purge(&self, now_ms: i64) -> Result<usize> {
        self.pg
            .within("purging tasks", async {
                let client = self.pg.client().await?;
                let purged = client
                    .execute("DELETE FROM cordon_tasks WHERE expires_ms < $1 AND status <> 'working'", &[&now_ms])
                    .await?;
                Ok(usize::try_from(purged).unwrap_or(usize::MAX))
            })
            .await
    }
}
