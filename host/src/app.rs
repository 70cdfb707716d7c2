//! [`Cordon`]: the running host — sandbox, compile cache and the catalog being served — shared
//! by every transport (stdio, HTTP, the in-process `cordon call`).

use crate::audit::AuditLog;
use crate::config::Config;
use crate::idempotency::Idempotency;
use crate::lifecycle::InFlight;
use crate::metrics::{Metrics, Snapshot};
use crate::ratelimit::RateLimits;
use crate::registry::{self, Catalog, LoadContext};
use anyhow::{Context, Result};
use cordon_sandbox::cache::CompileCache;
use cordon_sandbox::grants::credentials::Credentials;
use cordon_sandbox::Sandbox;
use cordon_state::revocations::Revocations;
use cordon_state::Shared;
use rmcp::model::ServerNotification;
use rmcp::service::{Peer, SubscriptionSendError, SubscriptionSink};
use rmcp::RoleServer;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

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
    /// Swapped whole on reload, so a call keeps the snapshot (and plugin versions) it started with.
    catalog: RwLock<Arc<Catalog>>,
    /// One reload at a time (file events and SIGHUP may coincide).
    reloading: tokio::sync::Mutex<()>,
    /// Where shared state lives (SQLite here, or PostgreSQL shared with other replicas).
    store: Shared,
    /// The token revocation list, shared across config reloads.
    revocations: Arc<Revocations>,
    /// Connected MCP sessions, told when the tool list changes.
    sessions: Mutex<Vec<(Peer<RoleServer>, crate::mcp::Subscriptions)>>,
    /// Open `subscriptions/listen` streams (the 2026-07-28 wire's sessionless notifications),
    /// by a key of their own (request ids repeat across clients), with the scope of the caller
    /// that opened each; each is removed when its stream ends ([`Listening`]).
    listeners: Mutex<Listeners>,
}

/// Open listen streams by key, and the next key.
#[derive(Default)]
struct Listeners {
    open: std::collections::BTreeMap<u64, (SubscriptionSink, crate::auth::ToolScope)>,
    next: u64,
}

/// An open listen stream's place in [`Cordon`]; dropping it (the stream ended, or its request
/// was dropped) removes the stream.
pub struct Listening<'a> {
    cordon: &'a Cordon,
    key: u64,
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.cordon.listeners.lock().unwrap_or_else(|p| p.into_inner()).open.remove(&self.key);
    }
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
    /// Whether the tool list changed (connected clients were notified).
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
        let audit = AuditLog::start(&config.audit, &paths.data)?.with_index(store.audit_index(&config.store));
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
            catalog: RwLock::new(Arc::new(catalog)),
            reloading: tokio::sync::Mutex::new(()),
            sessions: Mutex::new(Vec::new()),
            listeners: Mutex::new(Listeners::default()),
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
        let catalog = Arc::new(catalog);
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = catalog.clone();
        if report.tools_changed {
            self.notify_tools_changed().await;
        }
        self.notify_resources_updated(&old, &catalog).await;
        Ok(report)
    }

    /// Remembers a connected session, to tell it when the tool list or a resource it subscribed
    /// to changes.
    pub fn add_session(&self, peer: Peer<RoleServer>, subscriptions: crate::mcp::Subscriptions) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|(p, _)| !p.is_transport_closed());
        sessions.push((peer, subscriptions));
    }

    /// Remembers an open `subscriptions/listen` stream for as long as the returned guard lives.
    pub fn add_listener(&self, sink: SubscriptionSink, scope: crate::auth::ToolScope) -> Listening<'_> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let key = listeners.next;
        listeners.next += 1;
        listeners.open.insert(key, (sink, scope));
        Listening { cordon: self, key }
    }

    /// How many listen streams are open.
    pub fn listeners(&self) -> usize {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).open.len()
    }

    /// Sends `notification` to every open listen stream that accepted it (`wanted`); forgets
    /// the streams that closed.
    async fn notify_listeners(
        &self,
        notification: ServerNotification,
        wanted: impl Fn(&SubscriptionSink, &crate::auth::ToolScope) -> bool,
    ) {
        let listeners: Vec<_> =
            self.listeners.lock().unwrap_or_else(|p| p.into_inner()).open.values().cloned().collect();
        for (sink, _) in listeners.iter().filter(|(sink, scope)| wanted(sink, scope)) {
            match sink.send(notification.clone()).await {
                // A closed stream is removed by its own `Listening` guard.
                Ok(()) | Err(SubscriptionSendError::SubscriptionClosed) => {}
                Err(e) => tracing::debug!(error = %e, "cannot notify a listen stream"),
            }
        }
    }

    fn live_sessions(&self) -> Vec<(Peer<RoleServer>, crate::mcp::Subscriptions)> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|(p, _)| !p.is_transport_closed());
        sessions.clone()
    }

    /// Tells each session about the subscribed resources whose plugin was replaced or removed.
    async fn notify_resources_updated(&self, old: &Catalog, new: &Catalog) {
        for (peer, subscriptions) in self.live_sessions() {
            let uris: Vec<String> = subscriptions.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
            for uri in uris {
                if !served_by_another_plugin(old, new, &uri) {
                    continue;
                }
                let param = rmcp::model::ResourceUpdatedNotificationParam::new(uri);
                if let Err(e) = peer.notify_resource_updated(param).await {
                    tracing::debug!(error = %e, "cannot send resources/updated");
                }
            }
        }
        // Listen streams name their URIs in the filter they were accepted with.
        let watched: std::collections::BTreeSet<String> = {
            let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            listeners
                .open
                .values()
                .flat_map(|(sink, _)| sink.accepted().resource_subscriptions.clone().unwrap_or_default())
                .collect()
        };
        for uri in watched {
            if !served_by_another_plugin(old, new, &uri) {
                continue;
            }
            let resolved = registry::offers::resolve(new, &uri).or_else(|| registry::offers::resolve(old, &uri));
            let scope_name = resolved.map(|(_, name)| name.to_string()).unwrap_or_default();
            let notification =
                ServerNotification::ResourceUpdatedNotification(rmcp::model::ResourceUpdatedNotification::new(
                    rmcp::model::ResourceUpdatedNotificationParam::new(uri.clone()),
                ));
            self.notify_listeners(notification, |sink, scope| {
                scope.allows(&scope_name)
                    && sink.accepted().resource_subscriptions.as_ref().is_some_and(|uris| uris.contains(&uri))
            })
            .await;
        }
    }

    async fn notify_tools_changed(&self) {
        let sessions: Vec<Peer<RoleServer>> = self.live_sessions().into_iter().map(|(p, _)| p).collect();
        tracing::info!(sessions = sessions.len(), "tool list changed; notifying connected clients");
        for peer in sessions {
            // A session that went away meanwhile is not an error worth more than a debug line.
            if let Err(e) = peer.notify_tool_list_changed().await {
                tracing::debug!(error = %e, "cannot send tools/list_changed");
            }
        }
        let notification =
            ServerNotification::ToolListChangedNotification(rmcp::model::ToolListChangedNotification::default());
        self.notify_listeners(notification, |sink, _| sink.accepted().tools_list_changed == Some(true)).await;
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
            audit_lines_dropped: self.audit.dropped(),
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

/// Whether the plugin serving `uri` was replaced, added or removed between two catalogs.
fn served_by_another_plugin(old: &Catalog, new: &Catalog, uri: &str) -> bool {
    let before = registry::offers::resolve(old, uri).map(|(p, _)| p);
    let after = registry::offers::resolve(new, uri).map(|(p, _)| p);
    match (before, after) {
        (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
        (a, b) => a.is_some() || b.is_some(),
    }
}
