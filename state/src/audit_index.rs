//! The audit index: with a PostgreSQL store, every audit line a replica writes to its file is
//! also inserted into `cordon_audit`, so one query covers every replica (who called what, which
//! calls failed, what a key did, across the cluster).
//!
//! The file stays the record; the index is best-effort, like the file on a full disk: the audit
//! log's writer hands over each batch it wrote, through a queue bounded in lines and bytes, to a
//! task that inserts them (one statement per at most 512 lines), and
//! a database that is slow or down costs dropped index rows (counted, warned about once a
//! minute), never a blocked call. Rows older than `[store] audit_index_days` are deleted.

use super::postgres::Postgres;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Lines waiting for the database before new ones are dropped.
const QUEUE_LINES: usize = 16_384;
/// Bytes waiting likewise: with `log_arguments` one line can be as large as a call's arguments,
/// so a line count alone would not bound memory.
const QUEUE_BYTES: usize = 64 << 20;
/// The most lines inserted in one statement.
const MAX_BATCH: usize = 512;
/// How often old rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The sending side; cheap to clone. The audit log's writer hands it each batch it wrote.
#[derive(Clone, Debug)]
pub struct AuditIndex {
    queue: mpsc::UnboundedSender<Vec<String>>,
    queued: Arc<Queued>,
}

/// What waits in the queue, and what was lost.
#[derive(Debug, Default)]
struct Queued {
    lines: AtomicUsize,
    bytes: AtomicUsize,
    dropped: AtomicU64,
}

impl Queued {
    /// Takes room for `lines` lines of `bytes` bytes, or refuses when the queue is full.
    fn reserve(&self, lines: usize, bytes: usize) -> bool {
        let lines_before = self.lines.fetch_add(lines, Ordering::Relaxed);
        let bytes_before = self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if lines_before + lines > QUEUE_LINES || bytes_before + bytes > QUEUE_BYTES {
            self.release(lines, bytes);
            return false;
        }
        true
    }

    fn release(&self, lines: usize, bytes: usize) {
        self.lines.fetch_sub(lines, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl AuditIndex {
    /// Starts the inserting task (it ends when every sender is gone).
    pub fn start(pg: Arc<Postgres>, keep_days: u32) -> AuditIndex {
        // Unbounded as a channel, bounded by `Queued`: lines and bytes, not batches, are what cost.
        let (queue, batches) = mpsc::unbounded_channel();
        let queued = Arc::new(Queued::default());
        tokio::spawn(insert_batches(pg, keep_days, batches, queued.clone()));
        AuditIndex { queue, queued }
    }

    /// Queues audit lines (the JSON written to the file); never waits. A batch that does not
    /// fit is dropped whole and counted.
    pub fn add_batch(&self, lines: Vec<String>) {
        let (count, bytes) = (lines.len(), lines.iter().map(String::len).sum::<usize>());
        if !self.queued.reserve(count, bytes) {
            self.queued.dropped.fetch_add(count as u64, Ordering::Relaxed);
            return;
        }
        if self.queue.send(lines).is_err() {
            self.queued.release(count, bytes);
            self.queued.dropped.fetch_add(count as u64, Ordering::Relaxed);
        }
    }

    /// Lines lost since start: the queue was full or the database failed.
    pub fn dropped(&self) -> u64 {
        self.queued.dropped.load(Ordering::Relaxed)
    }
}

async fn insert_batches(
    pg: Arc<Postgres>,
    keep_days: u32,
    mut batches: mpsc::UnboundedReceiver<Vec<String>>,
    queued: Arc<Queued>,
) {
    let mut last_warning: Option<Instant> = None;
    let mut last_prune: Option<Instant> = None;
    while let Some(lines) = batches.recv().await {
        queued.release(lines.len(), lines.iter().map(String::len).sum());
        for batch in lines.chunks(MAX_BATCH) {
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
                let total = queued.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed) + batch.len() as u64;
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(error = %format!("{e:#}"), dropped = total, "audit index rows are being dropped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> (AuditIndex, mpsc::UnboundedReceiver<Vec<String>>) {
        let (queue, batches) = mpsc::unbounded_channel();
        (AuditIndex { queue, queued: Arc::new(Queued::default()) }, batches)
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_as_well_as_lines() {
        let (index, mut batches) = index();
        // One line larger than the byte bound: refused whole, counted, nothing queued.
        index.add_batch(vec!["x".repeat(QUEUE_BYTES + 1)]);
        assert_eq!(index.dropped(), 1);
        assert!(batches.try_recv().is_err());
        // Many small lines up to the line bound pass; the batch past it is dropped whole.
        index.add_batch(vec!["{}".to_string(); QUEUE_LINES]);
        index.add_batch(vec!["{}".to_string(); 3]);
        assert_eq!(index.dropped(), 4);
        assert_eq!(batches.try_recv().map(|b| b.len()), Ok(QUEUE_LINES));
        // Once the consumer takes a batch, its room is free again.
        index.queued.release(QUEUE_LINES, 2 * QUEUE_LINES);
        index.add_batch(vec!["{}".to_string(); 3]);
        assert_eq!(index.dropped(), 4);
        assert_eq!(batches.try_recv().map(|b| b.len()), Ok(3));
    }
}
