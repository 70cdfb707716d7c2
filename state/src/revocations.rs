//! The revocation list of host-signed tokens, shared by the server and `cordon token revoke`:
//! `tokens.sqlite3` in the data directory, or `cordon_revoked_tokens` in a PostgreSQL store that
//! every replica copies and refreshes every second. A list that cannot be read, or a copy older
//! than the store's lease, counts every token as revoked: it fails closed.

use anyhow::{Context, Result};
use rusqlite::{params, Connection};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The revocation list's file in the data directory.
pub const FILE: &str = "tokens.sqlite3";

/// The revocation list, shared by the server and `cordon token revoke`: `tokens.sqlite3` in the
/// data directory, or `cordon_revoked_tokens` in a PostgreSQL store (see the module docs).
pub struct Revocations {
    backend: RevocationBackend,
}

enum RevocationBackend {
    Sqlite(Mutex<Connection>),
    Postgres(Arc<SharedRevocations>),
}

/// A replica's copy of a shared revocation list.
struct SharedRevocations {
    pg: Arc<crate::postgres::Postgres>,
    /// Revoked ids, and where the next refresh reads from: the oldest transaction that was
    /// still running at the last refresh (`xid8`, as text).
    copy: std::sync::RwLock<(HashSet<String>, String)>,
    /// When the copy was last known complete.
    refreshed: Mutex<Instant>,
    /// Whether the current staleness was logged.
    stale_logged: std::sync::atomic::AtomicBool,
}

/// How often a replica refreshes its copy of a shared revocation list.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// How old a copy may be before it counts as stale: the store's lease, but never less than three
/// refreshes, so that one refresh late on a busy host (under a lease as short as `lease_s = 1`)
/// is not taken for an outage and every signed token refused.
fn stale_after(lease: Duration) -> Duration {
    lease.max(REFRESH_EVERY * 3)
}

impl Revocations {
    /// Opens (creating) the list in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Revocations> {
        let path = data_dir.join(FILE);
        let what = || format!("cannot open the token revocation list {}", path.display());
        let conn = Connection::open(&path).with_context(what)?;
        conn.busy_timeout(Duration::from_secs(5)).with_context(what)?;
        conn.pragma_update(None, "journal_mode", "WAL").with_context(what)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS revoked_tokens (id TEXT PRIMARY KEY, revoked_ms INTEGER NOT NULL) WITHOUT ROWID",
        )
        .with_context(|| format!("cannot prepare {}", path.display()))?;
        Ok(Revocations { backend: RevocationBackend::Sqlite(Mutex::new(conn)) })
    }

    /// The list in a PostgreSQL store, read whole now and then refreshed every second.
    pub async fn postgres(pg: Arc<crate::postgres::Postgres>) -> Result<Revocations> {
        let shared = Arc::new(SharedRevocations {
            pg,
            copy: std::sync::RwLock::new((HashSet::new(), "0".to_string())),
            refreshed: Mutex::new(Instant::now()),
            stale_logged: std::sync::atomic::AtomicBool::new(false),
        });
        shared.refresh().await.context("cannot read the token revocation list")?;
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let Some(shared) = weak.upgrade() else { return };
                match shared.refresh().await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("the token revocation list is read again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %format!("{e:#}"), "cannot refresh the token revocation list");
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(Revocations { backend: RevocationBackend::Postgres(shared) })
    }

    /// Revokes a token id. Returns false if it was already revoked.
    pub async fn revoke(&self, id: &str) -> Result<bool> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        match &self.backend {
            RevocationBackend::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                Ok(conn.execute(
                    "INSERT OR IGNORE INTO revoked_tokens (id, revoked_ms) VALUES (?1, ?2)",
                    params![id, now],
                )? == 1)
            }
            RevocationBackend::Postgres(shared) => {
                let inserted = shared
                    .pg
                    .within("revoking a token", async {
                        let client = shared.pg.client().await?;
                        Ok(client
                            .execute(
                                "INSERT INTO cordon_revoked_tokens (id, revoked_ms) VALUES ($1, $2)
                                 ON CONFLICT (id) DO NOTHING",
                                &[&id, &now],
                            )
                            .await?)
                    })
                    .await?;
                shared.copy.write().unwrap_or_else(|p| p.into_inner()).0.insert(id.to_string());
                Ok(inserted == 1)
            }
        }
    }

    /// Whether `id` is revoked. A store error, or a shared list not refreshed within the
    /// store's lease (at least three refreshes, [`stale_after`]), counts as revoked: fail closed.
    pub fn is_revoked(&self, id: &str) -> bool {
        match &self.backend {
            RevocationBackend::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                let found = conn
                    .prepare_cached("SELECT 1 FROM revoked_tokens WHERE id = ?1")
                    .and_then(|mut stmt| stmt.exists(params![id]));
                found.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot read the token revocation list; refusing the token");
                    true
                })
            }
            RevocationBackend::Postgres(shared) => {
                let age = shared.refreshed.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                if age > stale_after(shared.pg.lease()) {
                    // Once per outage, not once per request (the refresh task logs the recovery).
                    if !shared.stale_logged.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::error!(
                            stale_for = ?age,
                            "the token revocation list has not been refreshed within the store's lease (at least 3 s); \
                             refusing host-signed tokens until it is"
                        );
                    }
                    return true;
                }
                shared.copy.read().unwrap_or_else(|p| p.into_inner()).0.contains(id)
            }
        }
    }
}

impl SharedRevocations {
    /// Reads the ids revoked since the last look. A revocation's transaction may commit after
    /// a later one's (a sequence number is taken at insert, not at commit), so the cursor is not
    /// the newest row seen but the snapshot's `xmin`: every transaction older than it had
    /// finished when the rows were read, and every one from it on is read again next time.
    /// Rows of transactions still in that window are read more than once, which a set absorbs.
    async fn refresh(&self) -> Result<()> {
        let since = self.copy.read().unwrap_or_else(|p| p.into_inner()).1.clone();
        let row = self
            .pg
            .within("reading the token revocation list", async {
                let client = self.pg.client().await?;
                Ok(client
                    .query_one(
                        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text,
                                ARRAY(SELECT id FROM cordon_revoked_tokens WHERE xact >= $1::text::xid8)",
                        &[&since],
                    )
                    .await?)
            })
            .await?;
        let (next, ids): (String, Vec<String>) = (row.get(0), row.get(1));
        {
            let mut copy = self.copy.write().unwrap_or_else(|p| p.into_inner());
            copy.0.extend(ids);
            copy.1 = next;
        }
        *self.refreshed.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.stale_logged.store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy is stale after the store's lease, but never before three refreshes were missed.
    #[test]
    fn a_copy_is_stale_after_the_lease_but_not_before_three_refreshes() {
        assert_eq!(stale_after(Duration::from_secs(15)), Duration::from_secs(15));
        assert_eq!(stale_after(Duration::from_secs(1)), Duration::from_secs(3));
    }
}
