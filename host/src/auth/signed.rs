//! Host-signed, short-lived, scoped tokens (`cordon token issue`).
//!
//! A token is `cdt1.<claims>.<signature>`: the claims (subject, allowed tool patterns, issue and
//! expiry times, a random id) as base64url JSON, and an HMAC-SHA256 over `cdt1.<claims>` with a
//! key kept in the data directory (`token-signing.key`, created on first use with mode 0600).
//! Anyone who can read that file can mint tokens: it is as sensitive as the tokens themselves.
//! Revoking an id (`cordon token revoke ID`) writes it to `tokens.sqlite3`, which the server
//! consults on every request, so revocation needs no restart. With a PostgreSQL store
//! (`[store] url`) the list is `cordon_revoked_tokens`, shared by every replica: each keeps a
//! copy in memory that it refreshes every second, so a revocation made anywhere is honoured
//! everywhere within about a second; a replica that cannot refresh its copy for longer than the
//! store's lease refuses every signed token (fail closed) until it can.

use anyhow::{Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The prefix that marks a host-signed token.
pub const PREFIX: &str = "cdt1.";
/// The signing key's file in the data directory.
pub const KEY_FILE: &str = "token-signing.key";
/// The revocation list's file in the data directory.
pub const REVOCATIONS_FILE: &str = "tokens.sqlite3";
/// The latest expiry a token may have (seconds since the Unix epoch): the last second of the
/// year 9999, the end of what RFC 3339 (`cordon token issue` prints the expiry so) and
/// `SystemTime` represent. A longer lifetime is refused rather than overflowing.
pub const MAX_EXPIRY: u64 = 253_402_300_799;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The principal the token authenticates as.
    pub sub: String,
    /// Glob patterns of the tools it may list and call; empty means every tool.
    pub tools: Vec<String>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// The token's id, for revocation and audit.
    pub jti: String,
}

/// Why a host-signed token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not of the `cdt1.<claims>.<signature>` shape, or unreadable claims.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match.
    #[error("bad signature")]
    Forged,
    /// Past its expiry.
    #[error("expired")]
    Expired,
    /// Revoked by an operator.
    #[error("revoked")]
    Revoked,
}

/// Signs and verifies tokens with the data directory's key.
pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    /// Loads the key from `data_dir`, creating it (mode 0600) if there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<Signer> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("{} must hold exactly 32 bytes", path.display()))?;
                Ok(Signer { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness for the signing key: {e}"))?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(&path) {
                    Ok(mut file) => {
                        file.write_all(&key).with_context(|| format!("cannot write {}", path.display()))?;
                        file.sync_all()?;
                        Ok(Signer { key })
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load_or_create(data_dir),
                    Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
                }
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Mints a token for `subject`, allowed `tools`, valid for `ttl`. Returns it with its id.
    pub fn issue(&self, subject: &str, tools: &[String], ttl: Duration, now: SystemTime) -> Result<(String, Claims)> {
        super::check_operator_principal(subject).context("the subject")?;
        let iat = unix(now);
        let exp = iat
            .checked_add(ttl.as_secs())
            .filter(|exp| *exp <= MAX_EXPIRY)
            .ok_or_else(|| anyhow::anyhow!("the lifetime is too long: a token must expire before the year 10000"))?;
        let mut id = [0u8; 12];
        getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness for the token id: {e}"))?;
        let claims = Claims { sub: subject.into(), tools: tools.to_vec(), iat, exp, jti: hex::encode(id) };
        let payload = format!("{PREFIX}{}", B64.encode(serde_json::to_vec(&claims)?));
        let signature = B64.encode(self.mac(&payload).finalize().into_bytes());
        Ok((format!("{payload}.{signature}"), claims))
    }

    /// Checks signature and expiry (revocation is the caller's next step).
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, Invalid> {
        let (payload, signature) = token.rsplit_once('.').ok_or(Invalid::Malformed)?;
        let claims_b64 = payload.strip_prefix(PREFIX).ok_or(Invalid::Malformed)?;
        let signature = B64.decode(signature).map_err(|_| Invalid::Malformed)?;
        // `verify_slice` compares in constant time.
        self.mac(payload).verify_slice(&signature).map_err(|_| Invalid::Forged)?;
        let claims: Claims = serde_json::from_slice(&B64.decode(claims_b64).map_err(|_| Invalid::Malformed)?)
            .map_err(|_| Invalid::Malformed)?;
        if unix(now) >= claims.exp {
            return Err(Invalid::Expired);
        }
        Ok(claims)
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(payload.as_bytes());
        mac
    }
}

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
    pg: Arc<crate::store::postgres::Postgres>,
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

impl Revocations {
    /// Opens (creating) the list in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Revocations> {
        let path = data_dir.join(REVOCATIONS_FILE);
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
    pub async fn postgres(pg: Arc<crate::store::postgres::Postgres>) -> Result<Revocations> {
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
    /// store's lease, counts as revoked: fail closed.
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
                if age > shared.pg.lease() {
                    // Once per outage, not once per request (the refresh task logs the recovery).
                    if !shared.stale_logged.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::error!(
                            stale_for = ?age,
                            "the token revocation list has not been refreshed within the store's lease; \
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

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> (Signer, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (Signer::load_or_create(dir.path()).unwrap(), dir)
    }

    /// Expiry is read from the wall clock at each request (`SystemTime`, not a monotonic
    /// clock), so a clock that jumps decides alone: forward past `exp` expires a token at once,
    /// backward (an NTP step) keeps it valid until `exp`, and a clock before 1970 is no panic.
    #[test]
    fn expiry_follows_the_wall_clock_across_jumps() {
        let (s, _dir) = signer();
        let issued = SystemTime::now();
        let (token, claims) = s.issue("alice", &[], Duration::from_secs(600), issued).unwrap();
        assert_eq!(s.verify(&token, issued - Duration::from_secs(3600)).unwrap(), claims, "jumped back an hour");
        assert_eq!(s.verify(&token, issued + Duration::from_secs(86_400)), Err(Invalid::Expired), "jumped a day ahead");
        assert_eq!(s.verify(&token, issued + Duration::from_secs(599)).unwrap(), claims, "one second left");
        assert_eq!(s.verify(&token, issued + Duration::from_secs(600)), Err(Invalid::Expired), "expiry is exclusive");
        assert_eq!(s.verify(&token, UNIX_EPOCH - Duration::from_secs(1)).unwrap(), claims, "a clock before 1970");
        // A token issued by a clock far behind is already expired by a correct one.
        let (stale, _) = s.issue("bob", &[], Duration::from_secs(60), issued - Duration::from_secs(3600)).unwrap();
        assert_eq!(s.verify(&stale, issued), Err(Invalid::Expired));
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let (s, _dir) = signer();
        let now = SystemTime::now();
        let (token, claims) = s.issue("alice", &["demo_*".into()], Duration::from_secs(60), now).unwrap();
        assert!(token.starts_with(PREFIX));
        assert_eq!(s.verify(&token, now).unwrap(), claims);
        assert_eq!(s.verify(&token, now + Duration::from_secs(61)), Err(Invalid::Expired));
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let (s, dir) = signer();
        let now = SystemTime::now();
        let (token, _) = s.issue("alice", &[], Duration::from_secs(60), now).unwrap();
        // Claims changed, signature kept.
        let (payload, sig) = token.rsplit_once('.').unwrap();
        let mut claims: Claims = serde_json::from_slice(&B64.decode(&payload[PREFIX.len()..]).unwrap()).unwrap();
        claims.sub = "root".into();
        let forged = format!("{PREFIX}{}.{sig}", B64.encode(serde_json::to_vec(&claims).unwrap()));
        assert_eq!(s.verify(&forged, now), Err(Invalid::Forged));
        // Another key.
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let other = Signer::load_or_create(dir.path()).unwrap();
        assert_eq!(other.verify(&token, now), Err(Invalid::Forged));
        for bad in ["", "cdt1.", "cdt1.abc", "nope.abc.def", "cdt1.!!!.###"] {
            assert!(matches!(s.verify(bad, now), Err(Invalid::Malformed | Invalid::Forged)), "{bad}");
        }
    }

    /// Found by `fuzz/` (token): `iat + ttl` overflowed, and an expiry past the year 9999 made
    /// `cordon token issue` panic printing it.
    #[test]
    fn lifetimes_ending_after_the_year_9999_are_refused() {
        let (s, _dir) = signer();
        let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        for ttl in [u64::MAX, u64::MAX - 1_000, MAX_EXPIRY] {
            let error = s.issue("alice", &[], Duration::from_secs(ttl), now).unwrap_err();
            assert!(format!("{error}").contains("too long"), "{error}");
        }
        let (token, claims) = s.issue("alice", &[], Duration::from_secs(MAX_EXPIRY - 1_900_000_000), now).unwrap();
        assert_eq!(claims.exp, MAX_EXPIRY);
        assert_eq!(s.verify(&token, now).unwrap(), claims);
        let expires = humantime::format_rfc3339(UNIX_EPOCH + Duration::from_secs(claims.exp));
        assert_eq!(expires.to_string(), "9999-12-31T23:59:59Z");
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let (s, dir) = signer();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Signer::load_or_create(dir.path()).unwrap();
        let (token, _) = s.issue("a", &[], Duration::from_secs(5), SystemTime::now()).unwrap();
        assert!(again.verify(&token, SystemTime::now()).is_ok());
    }

    #[tokio::test]
    async fn revocation_is_seen_by_another_handle() {
        let dir = tempfile::tempdir().unwrap();
        let server = Revocations::open(dir.path()).unwrap();
        let cli = Revocations::open(dir.path()).unwrap();
        assert!(!server.is_revoked("t1"));
        assert!(cli.revoke("t1").await.unwrap());
        assert!(!cli.revoke("t1").await.unwrap());
        assert!(server.is_revoked("t1"));
    }
}
