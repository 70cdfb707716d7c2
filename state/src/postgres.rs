//! The PostgreSQL backend: a connection pool, the schema and its migrations, and this replica's
//! heartbeat.
//!
//! **Migrations** run at start inside one transaction that first takes a transaction-scoped
//! advisory lock, so replicas starting together apply them one at a time and the others find
//! them done. A database migrated by a newer Cordon is refused, never written to.
//!
//! **Leases.** Each replica has a row in `cordon_replicas` whose `heartbeat` it refreshes every
//! third of `lease_s`, using the database's clock (replica clocks may disagree). A keyed call
//! another replica is running is waited for while that replica's heartbeat is fresh; once it is
//! older than `lease_s` the replica is presumed dead and the call is recovered (re-run with the
//! same upstream keys), exactly as a restart recovers a call cut off by a crash.

use super::StoreConfig;
use anyhow::{anyhow, bail, Context, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio_postgres::NoTls;

/// An error and what caused it ("error performing TLS handshake: invalid peer certificate:
/// UnknownIssuer"): the driver's own message leaves the cause out. Its causes carry no URL.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

/// How connections to the database are made.
enum Transport {
    /// No TLS: no `sslmode` asking for it (or `disable`, `allow`, `prefer`) and no `ca_file`.
    Plain,
    /// TLS with the server's certificate and host name verified.
    Tls(Box<tokio_postgres_rustls::MakeRustlsConnect>),
}

/// Reads `sslmode` and `sslrootcert` off the URL (libpq's names) and `[store] ca_file`, and
/// returns the URL tokio-postgres is given with the transport to use.
///
/// tokio-postgres knows only `disable`, `prefer` and `require`, and its `require` does not say
/// how the certificate is checked: that is the connector's. Cordon's connector always verifies
/// the chain *and* the host name, so `require`, `verify-ca` and `verify-full` all mean libpq's
/// `verify-full` here: a managed database's documented `sslmode=require` then needs its CA in
/// `ca_file` (or `sslrootcert`) unless it chains to a public root. Unverified TLS is not offered.
fn transport(url: &str, config: &StoreConfig) -> Result<(String, Transport)> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let (mut mode, mut root_cert) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => mode = Some(value.to_string()),
            Some(("sslrootcert", value)) => root_cert = Some(std::path::PathBuf::from(value)),
            _ => kept.push(pair),
        }
    }
    let ca_file = match (&config.ca_file, root_cert) {
        (Some(_), Some(_)) => bail!("[store] sets ca_file and the url sets sslrootcert; keep one"),
        (Some(file), None) => Some(file.clone()),
        (None, file) => file,
    };
    let tls = match mode.as_deref() {
        Some("require" | "verify-ca" | "verify-full") => true,
        Some("disable") if ca_file.is_some() => {
            bail!("[store] url says sslmode=disable, but a CA file is set for TLS; remove one")
        }
        Some("disable" | "allow" | "prefer") | None => ca_file.is_some(),
        Some(other) => bail!(
            "[store] url: sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
        ),
    };
    kept.push(if tls { "sslmode=require" } else { "sslmode=disable" });
    let url = format!("{base}?{}", kept.join("&"));
    if !tls {
        return Ok((url, Transport::Plain));
    }
    let mut roots = rustls::RootCertStore::empty();
    match &ca_file {
        Some(file) => {
            use rustls_pki_types::pem::PemObject;
            let certificates = rustls_pki_types::CertificateDer::pem_file_iter(file)
                .map_err(|e| anyhow!("[store] cannot read the CA file {}: {e}", file.display()))?;
            for certificate in certificates {
                let certificate = certificate
                    .map_err(|e| anyhow!("[store] the CA file {} holds a bad certificate: {e}", file.display()))?;
                roots
                    .add(certificate)
                    .with_context(|| format!("[store] a certificate in {} is not a CA", file.display()))?;
            }
            if roots.is_empty() {
                bail!("[store] the CA file {} holds no certificate", file.display());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let tls_config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("[store] TLS set-up")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((url, Transport::Tls(Box::new(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config)))))
}

/// Any constant both sides agree on: the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x636f_7264_6f6e; // "cordon"

/// Schema migrations, applied in order; `cordon_schema.version` records how many ran. Append
/// only: a replica running an older Cordon keeps working against a schema it knows.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE cordon_idempotency (
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
        created_ms  BIGINT NOT NULL,
        updated_ms  BIGINT NOT NULL,
        expires_ms  BIGINT NOT NULL,
        PRIMARY KEY (namespace, key)
    );
    CREATE INDEX cordon_idempotency_expiry ON cordon_idempotency (expires_ms);
    CREATE INDEX cordon_idempotency_key ON cordon_idempotency (key);
    CREATE TABLE cordon_replicas (
        owner     TEXT PRIMARY KEY,
        host      TEXT NOT NULL,
        started   TIMESTAMPTZ NOT NULL,
        heartbeat TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE cordon_revoked_tokens (
        id         TEXT PRIMARY KEY,
        seq        BIGSERIAL UNIQUE,
        revoked_ms BIGINT NOT NULL
    );
",
    "
    CREATE TABLE cordon_audit (
        id              BIGSERIAL PRIMARY KEY,
        time            TIMESTAMPTZ NOT NULL,
        replica         TEXT NOT NULL,
        call_id         TEXT NOT NULL,
        principal       TEXT NOT NULL,
        tool            TEXT NOT NULL,
        outcome         TEXT NOT NULL,
        error_type      TEXT,
        idempotency_key TEXT,
        line            JSONB NOT NULL
    );
    CREATE INDEX cordon_audit_time ON cordon_audit (time);
    CREATE INDEX cordon_audit_principal ON cordon_audit (principal, time);
    CREATE INDEX cordon_audit_key ON cordon_audit (idempotency_key) WHERE idempotency_key IS NOT NULL;
",
    // The transaction that revoked each token: replicas tail the list by transaction, below the
    // oldest one still running, instead of by `seq`, which a revocation committing after a
    // later one was read would fall behind (`auth::signed::SharedRevocations::refresh`).
    "
    ALTER TABLE cordon_revoked_tokens ADD COLUMN xact xid8 NOT NULL DEFAULT pg_current_xact_id();
    CREATE INDEX cordon_revoked_tokens_xact ON cordon_revoked_tokens (xact);
",
    // Durable tasks (the MCP tasks extension): `tasks::postgres`.
    "
    CREATE TABLE cordon_tasks (
        task_id             TEXT PRIMARY KEY,
        principal           TEXT NOT NULL,
        token_id            TEXT,
        idempotency_scope   TEXT,
        plugin              TEXT NOT NULL,
        tool                TEXT NOT NULL,
        arguments           TEXT NOT NULL,
        key_namespace       TEXT,
        key                 TEXT,
        capabilities        TEXT NOT NULL,
        owner               TEXT NOT NULL,
        status              TEXT NOT NULL
            CHECK (status IN ('working', 'input_required', 'completed', 'failed', 'cancelled')),
        result              TEXT,
        error               TEXT,
        input_requests      TEXT,
        answers             TEXT NOT NULL,
        attempts            INTEGER NOT NULL,
        cancel_requested    BOOLEAN NOT NULL,
        created_ms          BIGINT NOT NULL,
        updated_ms          BIGINT NOT NULL,
        expires_ms          BIGINT NOT NULL,
        provided_key_source TEXT,
        provided_key        TEXT
    );
    CREATE INDEX cordon_tasks_key ON cordon_tasks (key_namespace, key) WHERE key IS NOT NULL;
    CREATE INDEX cordon_tasks_expiry ON cordon_tasks (expires_ms);
    CREATE INDEX cordon_tasks_owner ON cordon_tasks (owner, status);
",
];

/// A connected, migrated database, and this replica's place in it.
pub struct Postgres {
    pool: Pool,
    /// This replica's id: the owner of the claims it makes, and its row in `cordon_replicas`.
    replica: String,
    lease: Duration,
    timeout: Duration,
    redacted_url: String,
    live_replicas: Arc<AtomicUsize>,
    heartbeat_failing: AtomicBool,
}

impl Postgres {
    /// Connects (waiting up to `timeout_s` for the database), migrates, registers this replica
    /// and starts its heartbeat.
    pub async fn connect(url: &str, config: &StoreConfig) -> Result<Arc<Postgres>> {
        let pg = Self::build(url, config, uuid::Uuid::new_v4().simple().to_string(), config.pool_size)?;
        pg.migrate().await.with_context(|| format!("cannot prepare the store {}", pg.redacted_url))?;
        pg.heartbeat().await.with_context(|| format!("cannot register this replica in {}", pg.redacted_url))?;
        spawn_heartbeat(Arc::downgrade(&pg));
        Ok(pg)
    }

    /// Connects and migrates without registering a replica: for the `cordon` maintenance
    /// commands (token revoke, idempotency list and purge), which run no calls.
    pub async fn connect_for_maintenance(url: &str, config: &StoreConfig) -> Result<Arc<Postgres>> {
        let replica = format!("maintenance-{}", uuid::Uuid::new_v4().simple());
        let pg = Self::build(url, config, replica, 2)?;
        pg.migrate().await.with_context(|| format!("cannot prepare the store {}", pg.redacted_url))?;
        Ok(pg)
    }

    fn build(url: &str, config: &StoreConfig, replica: String, pool_size: usize) -> Result<Arc<Postgres>> {
        let redacted_url = super::redact_url(url);
        let timeout = Duration::from_secs(config.timeout_s);
        // The parse error never echoes the URL, so no password reaches a log through it.
        let (url, transport) = transport(url, config)?;
        let mut pg_config: tokio_postgres::Config =
            url.parse().map_err(|e| anyhow!("[store] url {redacted_url} is not a PostgreSQL URL: {e}"))?;
        pg_config
            .application_name("cordon")
            .connect_timeout(timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10));
        // `Fast` recycling trusts a pooled connection that looks open; one the server dropped
        // fails its next operation, which is a retryable `store_unavailable`, and is replaced.
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match transport {
            Transport::Plain => Manager::from_config(pg_config, NoTls, manager_config),
            Transport::Tls(tls) => Manager::from_config(pg_config, *tls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .context("cannot build the PostgreSQL connection pool")?;
        Ok(Arc::new(Postgres {
            pool,
            replica,
            lease: Duration::from_secs(config.lease_s),
            timeout,
            redacted_url,
            live_replicas: Arc::new(AtomicUsize::new(1)),
            heartbeat_failing: AtomicBool::new(false),
        }))
    }

    /// This replica's id (the owner of its claims).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// How long a silent replica is still presumed alive.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The URL without its password.
    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// Replicas whose heartbeat was fresh at the last look (this one included), kept current
    /// by the heartbeat.
    pub fn live_replicas(&self) -> Arc<AtomicUsize> {
        self.live_replicas.clone()
    }

    /// A pooled connection, within the operation timeout.
    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| anyhow!("cannot reach the store {}: {}", self.redacted_url, with_causes(&e)))
    }

    /// Runs `operation` within the operation timeout: a database that stops answering is an
    /// error after `timeout_s`, never a call that hangs.
    pub async fn within<T>(&self, what: &str, operation: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(done) => done.with_context(|| format!("{what} in {}", self.redacted_url)),
            Err(_) => bail!("{what} in {}: no answer within {:?}", self.redacted_url, self.timeout),
        }
    }

    async fn migrate(&self) -> Result<()> {
        self.within("migrating", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS cordon_schema (version INTEGER NOT NULL)").await?;
            let done: i32 = match tx.query_opt("SELECT version FROM cordon_schema", &[]).await? {
                Some(row) => row.get(0),
                None => {
                    tx.execute("INSERT INTO cordon_schema (version) VALUES (0)", &[]).await?;
                    0
                }
            };
            let done = usize::try_from(done).unwrap_or(usize::MAX);
            if done > MIGRATIONS.len() {
                bail!("the store was migrated by a newer Cordon (schema version {done}); refusing to use it");
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
                tx.batch_execute(sql).await.with_context(|| format!("migration {}", i + 1))?;
                tx.execute("UPDATE cordon_schema SET version = $1", &[&((i + 1) as i32)]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Refreshes this replica's heartbeat and counts the live ones.
    async fn heartbeat(&self) -> Result<()> {
        self.within("refreshing the replica heartbeat", async {
            let client = self.client().await?;
            let host = std::env::var("HOSTNAME").unwrap_or_default();
            client
                .execute(
                    "INSERT INTO cordon_replicas (owner, host, started, heartbeat)
                     VALUES ($1, $2, clock_timestamp(), clock_timestamp())
                     ON CONFLICT (owner) DO UPDATE SET heartbeat = clock_timestamp()",
                    &[&self.replica, &host],
                )
                .await?;
            let lease_s = self.lease.as_secs_f64();
            let live: i64 = client
                .query_one(
                    "SELECT count(*) FROM cordon_replicas
                     WHERE heartbeat > clock_timestamp() - make_interval(secs => $1)",
                    &[&lease_s],
                )
                .await?
                .get(0);
            self.live_replicas.store(usize::try_from(live).unwrap_or(1).max(1), Ordering::Relaxed);
            // Long-dead replicas are forgotten after a day; their unfinished claims are not.
            client
                .execute("DELETE FROM cordon_replicas WHERE heartbeat < clock_timestamp() - interval '1 day'", &[])
                .await?;
            Ok(())
        })
        .await
    }

    /// Removes this replica's row at a clean shutdown, so that nothing waits for its lease.
    /// Its calls have all finished by then (the drain waits for them).
    pub async fn leave(&self) {
        let left = self
            .within("leaving the replica set", async {
                let client = self.client().await?;
                client.execute("DELETE FROM cordon_replicas WHERE owner = $1", &[&self.replica]).await?;
                Ok(())
            })
            .await;
        if let Err(e) = left {
            tracing::warn!(error = %format!("{e:#}"), "could not deregister this replica; its lease will expire");
        }
    }
}

/// Refreshes the heartbeat every third of the lease while the store is in use. A failure is
/// logged once when it starts and once when it ends: a replica that cannot reach the database
/// fails keyed calls anyway, and its lease lapsing lets the others recover its runs.
fn spawn_heartbeat(pg: Weak<Postgres>) {
    tokio::spawn(async move {
        loop {
            let Some(pg) = pg.upgrade() else { return };
            let every = (pg.lease / 3).max(Duration::from_millis(200));
            match pg.heartbeat().await {
                Ok(()) => {
                    if pg.heartbeat_failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("the store answers heartbeats again");
                    }
                }
                Err(e) => {
                    if !pg.heartbeat_failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %format!("{e:#}"), "the replica heartbeat failed");
                    }
                }
            }
            drop(pg);
            tokio::time::sleep(every).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str, ca_file: Option<&str>) -> Result<(String, bool)> {
        let config = StoreConfig { ca_file: ca_file.map(Into::into), ..StoreConfig::default() };
        transport(url, &config).map(|(url, t)| (url, matches!(t, Transport::Tls(_))))
    }

    #[test]
    fn sslmode_decides_tls_and_tls_always_verifies() {
        let base = "postgres://cordon@db.example/cordon";
        assert_eq!(mode(base, None).unwrap(), (format!("{base}?sslmode=disable"), false));
        assert!(!mode(&format!("{base}?sslmode=prefer"), None).unwrap().1);
        for verified in ["require", "verify-ca", "verify-full"] {
            let (url, tls) = mode(&format!("{base}?application_name=x&sslmode={verified}"), None).unwrap();
            assert!(tls, "{verified}");
            assert_eq!(url, format!("{base}?application_name=x&sslmode=require"));
        }
        assert!(mode(&format!("{base}?sslmode=bogus"), None).is_err());
    }

    #[test]
    fn a_ca_file_turns_tls_on_and_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let base = "postgres://cordon@db.example/cordon";
        let e = mode(base, empty.to_str()).err().unwrap();
        assert!(e.to_string().contains("holds no certificate"), "{e}");
        let e = mode(&format!("{base}?sslrootcert={}", empty.display()), None).err().unwrap();
        assert!(e.to_string().contains("holds no certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        assert!(mode(base, missing.to_str()).err().unwrap().to_string().contains("cannot read the CA file"));
        let e = mode(&format!("{base}?sslmode=disable"), empty.to_str()).err().unwrap();
        assert!(e.to_string().contains("sslmode=disable"), "{e}");
        let e = mode(&format!("{base}?sslrootcert=/x.pem"), empty.to_str()).err().unwrap();
        assert!(e.to_string().contains("keep one"), "{e}");
    }
}
