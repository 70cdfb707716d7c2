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
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The prefix that marks a host-signed token.
pub const PREFIX: &str = "cdt1.";
/// The signing key's file in the data directory.
pub const KEY_FILE: &str = "token-signing.key";
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
    /// The idempotency scope of its calls (`cordon token issue --idempotency-scope`): a call
    /// that names no key of its own is keyed by this scope, the tool and the canonical
    /// arguments. Absent from tokens issued without one (and from every older token).
    #[serde(default, rename = "idem", skip_serializing_if = "Option::is_none")]
    pub idempotency_scope: Option<String>,
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
    ///
    /// Several processes may race to create it (a batch job runs `cordon token issue` once per
    /// item, in parallel, against a fresh data directory). The key is therefore written whole to
    /// a private temporary file and published with a hard link, which fails if the name exists:
    /// a reader sees either no key or all 32 bytes of exactly one key, never a half-written file.
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
                let mut suffix = [0u8; 8];
                getrandom::fill(&mut suffix).map_err(|e| anyhow::anyhow!("no randomness for the signing key: {e}"))?;
                let staging = data_dir.join(format!(".{KEY_FILE}.{}.tmp", hex::encode(suffix)));
                let published =
                    Self::write_staged(&staging, &key).and_then(|()| match std::fs::hard_link(&staging, &path) {
                        Ok(()) => Ok(true),
                        // Another process published its key first: use theirs.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
                    });
                // The staging name is ours alone; it goes whether or not the link was made.
                let _ = std::fs::remove_file(&staging);
                if published? {
                    Ok(Signer { key })
                } else {
                    Self::load_or_create(data_dir)
                }
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes `key` to a new file at `staging` (mode 0600) and makes it durable.
    fn write_staged(staging: &Path, key: &[u8; 32]) -> Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(staging).with_context(|| format!("cannot create {}", staging.display()))?;
        file.write_all(key).with_context(|| format!("cannot write {}", staging.display()))?;
        file.sync_all().with_context(|| format!("cannot write {}", staging.display()))?;
        Ok(())
    }

    /// Mints a token for `subject`, allowed `tools`, valid for `ttl`. Returns it with its id.
    pub fn issue(&self, subject: &str, tools: &[String], ttl: Duration, now: SystemTime) -> Result<(String, Claims)> {
        self.issue_scoped(subject, tools, None, ttl, now)
    }

    /// [`Signer::issue`], with an idempotency scope for the token's calls
    /// ([`Claims::idempotency_scope`]; checked by [`check_idempotency_scope`]).
    pub fn issue_scoped(
        &self,
        subject: &str,
        tools: &[String],
        idempotency_scope: Option<&str>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(String, Claims)> {
        super::check_operator_principal(subject).context("the subject")?;
        if let Some(scope) = idempotency_scope {
            super::check_idempotency_scope(scope).context("the idempotency scope")?;
        }
        let iat = unix(now);
        let exp = iat
            .checked_add(ttl.as_secs())
            .filter(|exp| *exp <= MAX_EXPIRY)
            .ok_or_else(|| anyhow::anyhow!("the lifetime is too long: a token must expire before the year 10000"))?;
        let mut id = [0u8; 12];
        getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness for the token id: {e}"))?;
        let claims = Claims {
            sub: subject.into(),
            tools: tools.to_vec(),
            iat,
            exp,
            jti: hex::encode(id),
            idempotency_scope: idempotency_scope.map(str::to_owned),
        };
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

    /// Parallel first issues against a fresh data directory (a batch job minting one token per
    /// item) all load the same whole key: none reads a file another is still writing.
    #[test]
    fn processes_racing_to_create_the_key_all_get_one_whole_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let keys: Vec<[u8; 32]> = std::thread::scope(|scope| {
                let racers: Vec<_> =
                    (0..8).map(|_| scope.spawn(|| Signer::load_or_create(dir.path()).map(|s| s.key))).collect();
                racers.into_iter().map(|r| r.join().unwrap().unwrap()).collect()
            });
            assert!(keys.iter().all(|k| *k == keys[0]), "every racer uses the published key");
            let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, [std::ffi::OsString::from(KEY_FILE)], "no staging file is left behind");
            assert_eq!(std::fs::read(dir.path().join(KEY_FILE)).unwrap(), keys[0]);
        }
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
        let server = cordon_state::revocations::Revocations::open(dir.path()).unwrap();
        let cli = cordon_state::revocations::Revocations::open(dir.path()).unwrap();
        assert!(!server.is_revoked("t1"));
        assert!(cli.revoke("t1").await.unwrap());
        assert!(!cli.revoke("t1").await.unwrap());
        assert!(server.is_revoked("t1"));
    }
}
