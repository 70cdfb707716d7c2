//! The PostgreSQL record store, shared by replicas (`cordon_idempotency`).
//!
//! Every operation is its own transaction, committed before it answers (PostgreSQL's default
//! `synchronous_commit = on`): a claim is durable before the guest runs, an outcome before the
//! reply is sent. A claim locks the key's row (`SELECT … FOR UPDATE`), so two replicas claiming
//! one key are serialized by the database; a key no row exists for yet is inserted with
//! `ON CONFLICT DO NOTHING`, and the loser of that race looks again.
//!
//! Single flight across replicas: a record `in_progress` under another replica whose heartbeat
//! is fresh is [`Claimed::Busy`], and the caller waits and looks again; under a replica whose
//! lease expired (killed, or cut off from the database) it is taken over as a recovery. Finish
//! and release match the owner *and* the attempt, so a replica that lost its claim to a
//! takeover can never overwrite the run of record.

use super::{millis, rfc3339, Claim, Claimed, Record, RecordStore, StoredState};
use crate::postgres::Postgres;
use anyhow::{bail, Result};
use std::sync::Arc;
use std::time::SystemTime;

/// The PostgreSQL record store; cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    pg: Arc<Postgres>,
}

impl PostgresStore {
    /// Records in `pg`, claimed as its replica.
    pub fn new(pg: Arc<Postgres>) -> PostgresStore {
        PostgresStore { pg }
    }

    /// One claim transaction; `None` when a concurrent insert won the race for a new key.
    async fn try_claim(&self, c: &Claim, now: i64) -> Result<Option<Claimed>> {
        let mut client = self.pg.client().await?;
        let tx = client.transaction().await?;
        let lease_s = self.pg.lease().as_secs_f64();
        let existing = tx
            .query_opt(
                "SELECT r.fingerprint, r.state, r.outcome, r.owner, r.attempts, r.expires_ms,
                        EXISTS (SELECT 1 FROM cordon_replicas p WHERE p.owner = r.owner
                                AND p.heartbeat > clock_timestamp() - make_interval(secs => $3)) AS owner_alive
                 FROM cordon_idempotency r WHERE r.namespace = $1 AND r.key = $2 FOR UPDATE OF r",
                &[&c.namespace, &c.key, &lease_s],
            )
            .await?;
        let claimed = match existing {
            Some(row) => {
                let fingerprint: String = row.get(0);
                let state: String = row.get(1);
                let outcome: Option<String> = row.get(2);
                let owner: String = row.get(3);
                let attempts: i32 = row.get(4);
                let expires: i64 = row.get(5);
                let owner_alive: bool = row.get(6);
                if expires < now && state != "in_progress" {
                    // An expired finished record is forgotten: the key starts over.
                    tx.execute(
                        "DELETE FROM cordon_idempotency WHERE namespace = $1 AND key = $2",
                        &[&c.namespace, &c.key],
                    )
                    .await?;
                    insert(&tx, c, now).await?;
                    Claimed::Run { attempt: 1, recovery: false }
                } else if fingerprint != c.fingerprint {
                    Claimed::Mismatch
                } else if let ("completed", Some(outcome)) = (state.as_str(), outcome) {
                    Claimed::Done(outcome)
                } else if state == "in_progress" && owner != c.owner && owner_alive {
                    Claimed::Busy
                } else {
                    // Retryable, or cut off: under a replica whose lease lapsed, or under this
                    // one (a claim whose answer was lost to a timeout; this process's single
                    // flight means no run of it is in progress here).
                    let recovery = state == "in_progress";
                    if recovery {
                        tracing::warn!(key = %c.key, previous_owner = %owner, "recovering a call whose run was cut off");
                    }
                    tx.execute(
                        "UPDATE cordon_idempotency SET state = 'in_progress', owner = $1, attempts = attempts + 1,
                         updated_ms = $2 WHERE namespace = $3 AND key = $4",
                        &[&c.owner, &now, &c.namespace, &c.key],
                    )
                    .await?;
                    let attempt = u32::try_from(attempts).unwrap_or(0) + 1;
                    Claimed::Run { attempt, recovery }
                }
            }
            None => {
                if insert(&tx, c, now).await? == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                Claimed::Run { attempt: 1, recovery: false }
            }
        };
        tx.commit().await?;
        Ok(Some(claimed))
    }

    /// Sets the outcome of a held claim (`state` final or retryable), or deletes the record
    /// (`state` = `None`); fails if the claim is no longer held.
    async fn settle(&self, c: &Claim, attempt: u32, state: Option<&str>, outcome: Option<String>) -> Result<()> {
        let attempt = attempt as i32;
        let now = millis(SystemTime::now());
        let changed = self
            .pg
            .within("recording an outcome", async {
                let client = self.pg.client().await?;
                let changed = match state {
                    Some(state) => {
                        client
                            .execute(
                                "UPDATE cordon_idempotency SET state = $1, outcome = $2, updated_ms = $3
                                 WHERE namespace = $4 AND key = $5 AND owner = $6 AND attempts = $7
                                   AND state = 'in_progress'",
                                &[&state, &outcome, &now, &c.namespace, &c.key, &c.owner, &attempt],
                            )
                            .await?
                    }
                    None => {
                        client
                            .execute(
                                "DELETE FROM cordon_idempotency
                                 WHERE namespace = $1 AND key = $2 AND owner = $3 AND attempts = $4
                                   AND state = 'in_progress'",
                                &[&c.namespace, &c.key, &c.owner, &attempt],
                            )
                            .await?
                    }
                };
                Ok(changed)
            })
            .await?;
        if changed != 1 {
            // Another replica took the claim over (it thought this one dead): its run is the
            // one of record, and this outcome must not be reported as durable.
            bail!("the claim on key {:?} is no longer held by this replica", c.key);
        }
        Ok(())
    }

    async fn purge_where(&self, created: bool, before: SystemTime) -> Result<usize> {
        let before = millis(before);
        // In-progress records are never purged: their run may have acted upstream.
        let sql = if created {
            "DELETE FROM cordon_idempotency WHERE created_ms < $1 AND state != 'in_progress'"
        } else {
            "DELETE FROM cordon_idempotency WHERE expires_ms < $1 AND state != 'in_progress'"
        };
        self.pg
            .within("purging idempotency records", async {
                let client = self.pg.client().await?;
                Ok(client.execute(sql, &[&before]).await? as usize)
            })
            .await
    }
}

async fn insert(tx: &deadpool_postgres::Transaction<'_>, c: &Claim, now: i64) -> Result<u64> {
    Ok(tx
        .execute(
            "INSERT INTO cordon_idempotency
             (namespace, key, principal, plugin, tool, source, fingerprint, state, outcome, owner, attempts,
              created_ms, updated_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'in_progress', NULL, $8, 1, $9, $9, $10)
             ON CONFLICT (namespace, key) DO NOTHING",
            &[
                &c.namespace,
                &c.key,
                &c.principal,
                &c.plugin,
                &c.tool,
                &c.source,
                &c.fingerprint,
                &c.owner,
                &now,
                &c.expires_ms,
            ],
        )
        .await?)
}

#[async_trait::async_trait]
impl RecordStore for PostgresStore {
    fn owner(&self) -> &str {
        self.pg.replica()
    }

    async fn finished(&self, namespace: &str, key: &str, fingerprint: &str) -> Option<Claimed> {
        let row = self
            .pg
            .within("reading a record", async {
                let client = self.pg.client().await?;
                let statement = client
                    .prepare_cached(
                        "SELECT fingerprint, state, outcome, expires_ms FROM cordon_idempotency
                         WHERE namespace = $1 AND key = $2",
                    )
                    .await?;
                Ok(client.query_opt(&statement, &[&namespace, &key]).await?)
            })
            .await
            .ok()??;
        let stored =
            StoredState { fingerprint: row.get(0), state: row.get(1), outcome: row.get(2), expires_ms: row.get(3) };
        stored.finished_answer(fingerprint, millis(SystemTime::now()))
    }

    async fn claim(&self, claim: Claim) -> Result<Claimed> {
        self.pg
            .within("claiming a key", async {
                loop {
                    if let Some(claimed) = self.try_claim(&claim, millis(SystemTime::now())).await? {
                        return Ok(claimed);
                    }
                }
            })
            .await
    }

    async fn finish(&self, claim: &Claim, attempt: u32, retryable: bool, outcome: String) -> Result<()> {
        let state = if retryable { "retryable" } else { "completed" };
        self.settle(claim, attempt, Some(state), Some(outcome)).await
    }

    async fn release(&self, claim: &Claim, attempt: u32) -> Result<()> {
        self.settle(claim, attempt, None, None).await
    }

    fn abandon(&self, claim: &Claim, attempt: u32, outcome: String) {
        // A ticket dropped with no runtime left (process exit) leaves its claim `in_progress`:
        // the next attempt recovers it once this replica's lease lapses.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let store = self.clone();
        let claim = claim.clone();
        runtime.spawn(async move {
            if let Err(e) = store.settle(&claim, attempt, Some("retryable"), Some(outcome)).await {
                // The record stays in_progress; the next attempt recovers it once this
                // replica's claim is seen as cut off.
                tracing::warn!(error = %format!("{e:#}"), key = %claim.key, "cannot mark an interrupted call retryable");
            }
        });
    }

    async fn purge(&self, before: SystemTime) -> Result<usize> {
        self.purge_where(false, before).await
    }

    async fn purge_created_before(&self, before: SystemTime) -> Result<usize> {
        self.purge_where(true, before).await
    }

    async fn list(&self, key: Option<&str>, limit: usize) -> Result<Vec<Record>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .pg
            .within("listing idempotency records", async {
                let client = self.pg.client().await?;
                Ok(client
                    .query(
                        "SELECT key, principal, plugin, tool, source, state, attempts, created_ms, expires_ms, outcome
                         FROM cordon_idempotency WHERE ($1::TEXT IS NULL OR key = $1)
                         ORDER BY created_ms DESC LIMIT $2",
                        &[&key, &limit],
                    )
                    .await?)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let outcome: Option<String> = row.get(9);
                Record {
                    key: row.get(0),
                    principal: row.get(1),
                    plugin: row.get(2),
                    tool: row.get(3),
                    source: row.get(4),
                    state: row.get(5),
                    attempts: u32::try_from(row.get::<_, i32>(6)).unwrap_or(0),
                    created: rfc3339(row.get(7)),
                    expires: rfc3339(row.get(8)),
                    outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
                }
            })
            .collect())
    }
}
