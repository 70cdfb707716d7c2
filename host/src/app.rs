//! [`Cordon`]: the running host — sandbox, compile cache and the catalog being served — shared
//! by every transport (stdio, HTTP, the in-process `cordon call`).

use crate::audit::AuditLog;
use crate::config::Config;
use crate::grants::credentials::Credentials;
use crate::idempotency::Idempotency;
use crate::lifecycle::InFlight;
use crate::metrics::{Metrics, Snapshot};
use crate::ratelimit::RateLimits;
use crate::registry::cache::CompileCache;
use crate::registry::{self, Catalog, LoadContext};
use crate::sandbox::Sandbox;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Where Cordon reads plugins and keeps its data.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The plugins folder.
    pub plugins: PathBuf,
    /// The data directory.
    pub data: PathBuf,
}

/// The running host.
pub struct Cordon {
    pub(crate) sandbox: Sandbox,
    pub(crate) config: Config,
    cache: Arc<CompileCache>,
    pub(crate) credentials: Arc<Credentials>,
    pub(crate) idempotency: Arc<Idempotency>,
    pub(crate) audit: AuditLog,
    pub(crate) rate_limits: Arc<RateLimits>,
    paths: Paths,
    /// Calls inside [`Cordon::call`]: what a graceful drain waits for, and a gauge in `/metrics`.
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) metrics: Metrics,
    /// Swapped whole on reload, so a call keeps the snapshot (and plugin versions) it started with.
    catalog: RwLock<Arc<Catalog>>,
}

impl Cordon {
    /// Builds the engine and loads every plugin in `paths.plugins`.
    pub async fn start(config: Config, paths: Paths) -> Result<Arc<Cordon>> {
        let credentials = Arc::new(Credentials::load(&config.credentials)?);
        let idempotency = Idempotency::open(&paths.data.join(IDEMPOTENCY_DB))?;
        spawn_cleanup(idempotency.clone());
        let audit = AuditLog::start(&config.audit, &paths.data)?;
        let rate_limits = Arc::new(RateLimits::new(&config.rate_limits)?);
        let sandbox = Sandbox::new(&config.pool)?;
        let cache = Arc::new(CompileCache::new(&paths.data.join("compile-cache"), sandbox.engine()));
        let cx = LoadContext { sandbox: &sandbox, cache: &cache, config: &config, credentials: &credentials };
        let catalog = registry::load_dir(&cx, &paths.plugins).await?;
        let metrics = Metrics::new(cache.clone());
        Ok(Arc::new(Cordon {
            sandbox,
            config,
            cache,
            credentials,
            idempotency,
            audit,
            rate_limits,
            paths,
            in_flight: InFlight::new(),
            metrics,
            catalog: RwLock::new(Arc::new(catalog)),
        }))
    }

    /// The catalog now being served.
    pub fn catalog(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The rate limits, shared with the HTTP layer.
    pub fn rate_limits(&self) -> Arc<RateLimits> {
        self.rate_limits.clone()
    }

    /// Writes queued audit lines, waiting at most `timeout` (before a short-lived process exits).
    pub fn flush_audit(&self, timeout: std::time::Duration) -> bool {
        self.audit.flush(timeout)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The plugins folder.
    pub fn plugins_dir(&self) -> &Path {
        &self.paths.plugins
    }

    /// Calls in progress, counted from their arrival in [`Cordon::call`] to their outcome.
    pub fn in_flight(&self) -> &Arc<InFlight> {
        &self.in_flight
    }

    /// The `/metrics` exposition (OpenMetrics text, [`crate::metrics::CONTENT_TYPE`]).
    pub fn metrics_text(&self) -> Result<String, std::fmt::Error> {
        let catalog = self.catalog();
        self.metrics.encode(&Snapshot {
            plugins_loaded: catalog.plugins.len(),
            plugins_refused: catalog.failures.len(),
            tools_served: catalog.tools.len(),
            calls_in_flight: self.in_flight.count(),
        })
    }

    /// Compile-cache (hits, misses) since start.
    pub fn compile_cache_counts(&self) -> (u64, u64) {
        self.cache.counts()
    }
}

/// The idempotency store's file in the data directory.
pub const IDEMPOTENCY_DB: &str = "idempotency.sqlite3";

/// How often expired idempotency records are deleted.
const CLEANUP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

fn spawn_cleanup(idempotency: Arc<Idempotency>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CLEANUP_EVERY);
        loop {
            tick.tick().await;
            match idempotency.store().purge(std::time::SystemTime::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(records = n, "expired idempotency records deleted"),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "idempotency clean-up failed"),
            }
        }
    });
}
