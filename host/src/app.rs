//! [`Cordon`]: the running host — sandbox, compile cache and the catalog being served — shared
//! by every transport (stdio, HTTP, the in-process `cordon call`).

use crate::audit::AuditLog;
use crate::config::Config;
use crate::idempotency::Idempotency;
use crate::metrics::{Metrics, Snapshot};
use crate::ratelimit::RateLimits;
use crate::registry::{self, Catalog, LoadContext};
use anyhow::{Context, Result};
use cordon_core::InFlight;
use cordon_sandbox::cache::CompileCache;
use cordon_sandbox::grants::credentials::Credentials;
use cordon_sandbox::Sandbox;
use cordon_state::revocations::Revocations;
use cordon_state::Shared;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Where Cordon reads plugins and keeps its data.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The plugins folder.
    pub plugins: PathBuf,
    /// The data directory.
    pub data: PathBuf,
    /// The config file read at start, if any: what SIGHUP reads again.
    pub config_file: Option<PathBuf>,
}

impl Paths {
    /// What no plugin's directory grant may reach under `config` (`grants::dirs`).
    pub fn protected(&self, config: &Config) -> cordon_sandbox::grants::dirs::ProtectedPaths {
        config.protected_paths(&self.data, &self.plugins, self.config_file.as_deref())
    }
}

/// The running host.
pub struct Cordon {
    pub(crate) sandbox: Sandbox,
    /// The config, credentials and rate limits in force, swapped together on SIGHUP.
    settings: RwLock<Arc<Settings>>,
    cache: Arc<CompileCache>,
    pub(crate) idempotency: Arc<Idempotency>,
    pub(crate) audit: AuditLog,
    paths: Paths,
    /// Calls inside [`Cordon::call`]: what a graceful drain waits for, and a gauge in `/metrics`.
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) metrics: Metrics,
    /// Swapped whole on reload, so a call keeps the snapshot (and plugin versions) it started with;
    /// published on a watch channel, which the transports follow to tell their clients.
    catalog: watch::Sender<Arc<Catalog>>,
    /// One reload at a time (file events and SIGHUP may coincide).
    reloading: tokio::sync::Mutex<()>,
    /// Where shared state lives (SQLite here, or PostgreSQL shared with other replicas).
    store: Shared,
    /// The token revocation list, shared across config reloads.
    revocations: Arc<Revocations>,
    /// The tasks this process runs and the store that keeps them; `None` when tasks are off
    /// (`[tasks] enabled = false`) or the store keeps none.
    pub(crate) tasks: Option<Arc<crate::tasks::Tasks>>,
}

/// What SIGHUP replaces as one unit.
pub(crate) struct Settings {
    pub(crate) config: Arc<Config>,
    pub(crate) credentials: Arc<Credentials>,
    pub(crate) rate_limits: Arc<RateLimits>,
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Whether the tool list changed (the transports tell their clients).
    pub tools_changed: bool,
    /// Files refused in this pass (their previous versions, if any, keep serving).
    pub refused: Vec<String>,
}

impl Cordon {
    /// Builds the engine, opens the store `[store]` names and loads every plugin in
    /// `paths.plugins`.
    pub async fn start(config: Config, paths: Paths) -> Result<Arc<Cordon>> {
        let store = Shared::open(&config.store, &paths.data).await?;
        let revocations = store.revocations().await?;
        Self::start_with_store(config, paths, store, revocations).await
    }

    /// [`Cordon::start`] with a store already open (the server opens it first, to check
    /// authentication before the plugin load).
    pub async fn start_with_store(
        config: Config,
        paths: Paths,
        store: Shared,
        revocations: Arc<Revocations>,
    ) -> Result<Arc<Cordon>> {
        let credentials = Arc::new(Credentials::load(&config.credentials)?);
        tracing::info!(store = %store.describe(), "shared state");
        let idempotency = Idempotency::new(store.records()?);
        spawn_cleanup(idempotency.clone());
        let tasks = match config.tasks.enabled {
            true => store.tasks(idempotency.store().owner())?.map(crate::tasks::Tasks::new),
            false => None,
        };
        let audit = AuditLog::start_with_index(&config.audit, &paths.data, store.audit_index(&config.store))?;
        let rate_limits = Arc::new(RateLimits::new(&config.rate_limits)?.shared_by(store.live_replicas()));
        let sandbox = Sandbox::new(&config.pool)?;
        let cache = Arc::new(CompileCache::new(&paths.data.join("compile-cache"), sandbox.engine()));
        let protected = paths.protected(&config);
        let cx = LoadContext {
            sandbox: &sandbox,
            cache: &cache,
            config: &config,
            credentials: &credentials,
            protected: &protected,
            lint_refuses: true,
        };
        let catalog = registry::load_dir(&cx, &paths.plugins, None).await?;
        let settings = Settings { config: Arc::new(config), credentials, rate_limits };
        let metrics = Metrics::new(cache.clone());
        Ok(Arc::new(Cordon {
            store,
            revocations,
            sandbox,
            settings: RwLock::new(Arc::new(settings)),
            cache,
            idempotency,
            audit,
            paths,
            in_flight: InFlight::new(),
            metrics,
            catalog: watch::Sender::new(Arc::new(catalog)),
            reloading: tokio::sync::Mutex::new(()),
            tasks,
        }))
    }

    /// Where shared state lives.
    pub fn store(&self) -> &Shared {
        &self.store
    }

    /// The token revocation list.
    pub fn revocations(&self) -> Arc<Revocations> {
        self.revocations.clone()
    }

    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Rescans the plugins folder: changed files load again, unchanged ones keep their loaded
    /// plugin, removed ones go. Calls in flight finish on the catalog they started with.
    pub async fn reload_plugins(&self) -> Result<ReloadReport> {
        let _one_at_a_time = self.reloading.lock().await;
        let settings = self.settings();
        self.reload_with(&settings, true).await
    }

    /// Applies a new config: credentials, rate limits, then every plugin loaded again under it
    /// (limits, grants, overrides, pins). Nothing changes unless all of it is valid; a plugin
    /// the new config refuses keeps its previous version. `[server]`, `[pool]`, `[paths]`,
    /// `[audit]` and `[store]` take effect at the next start (a warning says so).
    pub async fn reload_config(&self, config: Config) -> Result<ReloadReport> {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.settings();
        let restart_only = [
            ("[server]", format!("{:?}", old.config.server) != format!("{:?}", config.server)),
            ("[pool]", format!("{:?}", old.config.pool) != format!("{:?}", config.pool)),
            ("[paths]", format!("{:?}", old.config.paths) != format!("{:?}", config.paths)),
            ("[audit]", format!("{:?}", old.config.audit) != format!("{:?}", config.audit)),
            ("[store]", format!("{:?}", old.config.store) != format!("{:?}", config.store)),
        ];
        for (section, _) in restart_only.iter().filter(|(_, changed)| *changed) {
            tracing::warn!("{section} changed: it takes effect at the next start");
        }
        let credentials = Arc::new(Credentials::load(&config.credentials).context("[credentials]")?);
        // Buckets restart only when their settings change, so a reload is no way around a limit.
        let rate_limits = if format!("{:?}", old.config.rate_limits) == format!("{:?}", config.rate_limits) {
            old.rate_limits.clone()
        } else {
            Arc::new(
                RateLimits::new(&config.rate_limits).context("[rate_limits]")?.shared_by(self.store.live_replicas()),
            )
        };
        let settings = Settings { config: Arc::new(config), credentials, rate_limits };
        let report = self.reload_with(&settings, false).await?;
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
        Ok(report)
    }

    async fn reload_with(&self, settings: &Settings, reuse_unchanged: bool) -> Result<ReloadReport> {
        let protected = self.paths.protected(&settings.config);
        let cx = LoadContext {
            sandbox: &self.sandbox,
            cache: &self.cache,
            config: &settings.config,
            credentials: &settings.credentials,
            protected: &protected,
            lint_refuses: true,
        };
        let old = self.catalog();
        let previous = registry::Previous { catalog: &old, reuse_unchanged };
        let catalog = registry::load_dir(&cx, &self.paths.plugins, Some(previous)).await?;
        let report = ReloadReport {
            tools_changed: catalog.lists_differ(&old),
            refused: catalog.failures.iter().map(|f| format!("{}: {}", f.file, f.reason)).collect(),
        };
        // Published once: whoever follows the catalog (the MCP sessions and listen streams) sees
        // the swap and decides what its clients are told.
        let replaced = self.catalog.send_replace(Arc::new(catalog));
        // A plugin the new catalog does not keep makes no more spares; calls still in flight on
        // it finish in instances made on demand.
        let kept = self.catalog();
        for gone in replaced.plugins.iter().filter(|p| !kept.plugins.iter().any(|k| Arc::ptr_eq(k, p))) {
            gone.spares.retire();
        }
        Ok(report)
    }

    /// Instance teardowns not finished yet (they run after their calls' replies; a drain waits
    /// for them).
    pub fn teardowns(&self) -> &Arc<InFlight> {
        self.sandbox.book().teardowns()
    }

    /// The catalog now being served.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// The catalog now being served, and every one that replaces it.
    pub fn catalog_changes(&self) -> watch::Receiver<Arc<Catalog>> {
        self.catalog.subscribe()
    }

    /// The rate limits, shared with the HTTP layer.
    pub fn rate_limits(&self) -> Arc<RateLimits> {
        self.settings().rate_limits.clone()
    }

    /// Writes queued audit lines, waiting at most `timeout` (before a short-lived process exits).
    pub fn flush_audit(&self, timeout: std::time::Duration) -> bool {
        self.audit.flush(timeout)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.settings().config.clone()
    }

    /// The config file SIGHUP reads again, if Cordon started from one.
    pub fn config_file(&self) -> Option<&Path> {
        self.paths.config_file.as_deref()
    }

    /// The plugins folder.
    pub fn plugins_dir(&self) -> &Path {
        &self.paths.plugins
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.paths.data
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
            spare_instances: self.sandbox.book().spares(),
            audit_lines_dropped: self.audit.dropped(),
            audit_index_rows_dropped: self.audit.index_dropped(),
        })
    }

    /// Compile-cache (hits, misses) since start.
    pub fn compile_cache_counts(&self) -> (u64, u64) {
        self.cache.counts()
    }
}

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
