//! The audit index: with a PostgreSQL store, every audit line a replica writes to its file is
//! also inserted into `cordon_audit`, so one query covers every replica (who called what, which
//! calls failed, what a key did, across the cluster).
//!
//! The file stays the record; the index is best-effort, like the file on a full disk: lines go
//! through a bounded queue to a task that inserts them in batches (one statement per batch), and
//! a database that is slow or down costs dropped index rows (counted, warned about once a
//! minute), never a blocked call. Rows older than `[store] audit_index_days` are deleted.

use super::postgres::Postgres;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Lines waiting for the database before new ones are dropped.
const QUEUE_LINES: usize = 16_384;
/// The most lines inserted in one statement.
const MAX_BATCH: usize = 512;
/// How often old rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The sending side; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditIndex {
    queue: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl AuditIndex {
    /// Starts the inserting task (it ends when every sender is gone).
    pub fn start(pg: Arc<Postgres>, keep_days: u32) -> AuditIndex {
        let (queue, lines) = mpsc::channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(insert_batches(pg, keep_days, lines, dropped.clone()));
        AuditIndex { queue, dropped }
    }

    /// Queues one audit line (the JSON written to the file); never waits.
    pub fn add(&self, line: &str) {
        if self.queue.try_send(line.to_string()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn insert_batches(pg: Arc<Postgres>, keep_days: u32, mut lines: mpsc::Receiver<String>, dropped: Arc<AtomicU64>) {
    let mut last_warning: Option<Instant> = None;
    let mut last_prune: Option<Instant> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while lines.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let inserted = pg
            .within("indexing audit lines", async {
                let client = pg.client().await?;
                let statement = client
                    .prepare_cached(
                        "INSERT INTO cordon_audit
                           (time, replica, call_id, principal, tool, outcome, error_type, idempotency_key, line)
                         SELECT (l->>'time')::timestamptz, $1, l->>'call_id', l->>'principal', l->>'tool',
                                l->>'outcome', l->>'error_type', l->>'idempotency_key', l
                         FROM (SELECT x::jsonb AS l FROM unnest($2::text[]) AS x) AS lines",
                    )
                    .await?;
                client.execute(&statement, &[&pg.replica(), &batch]).await?;
                if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                    let days = i32::try_from(keep_days).unwrap_or(i32::MAX);
                    client
                        .execute(
                            "DELETE FROM cordon_audit WHERE time < clock_timestamp() - make_interval(days => $1)",
                            &[&days],
                        )
                        .await?;
                    last_prune = Some(Instant::now());
                }
                Ok(())
            })
            .await;
        if let Err(e) = inserted {
            let total = dropped.fetch_add(batch.len() as u64, Ordering::Relaxed) + batch.len() as u64;
            if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                last_warning = Some(Instant::now());
                tracing::warn!(error = %format!("{e:#}"), dropped = total, "audit index rows are being dropped");
            }
        }
        batch.clear();
    }
}
