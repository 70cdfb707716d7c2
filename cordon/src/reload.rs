//! Hot reload: the plugins folder is watched and SIGHUP re-reads the config file.
//!
//! Both go through [`Cordon::reload_plugins`] / [`Cordon::reload_config`], which build a whole
//! new catalog next to the one being served and swap it in one step: calls in flight keep the
//! snapshot (and plugin versions) they started with, a file that fails to load leaves its
//! previous version serving, and connected clients get `notifications/tools/list_changed` when
//! their list could differ.
//!
//! File events are debounced (`[reload] debounce_ms` of quiet), so a copy in progress settles
//! first; a copy slower than that fails to load, keeps the old version serving, and the events
//! of its last writes trigger another pass. Writing a new version to a temporary name and
//! renaming it over the old one (what `install`, `mv` and most deploy tools do) is atomic and
//! never shows a half-written file.

use anyhow::{Context, Result};
use cordon_host::app::Cordon;
use cordon_host::config::Config;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use std::sync::Arc;
use std::time::Duration;

/// Keeps the plugins-folder watch alive; dropping it stops watching.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching the plugins folder (unless `[reload] watch = false`).
pub fn watch_plugins(cordon: Arc<Cordon>) -> Result<Option<PluginWatcher>> {
    let config = cordon.config();
    if !config.reload.watch {
        return Ok(None);
    }
    let debounce = Duration::from_millis(config.reload.debounce_ms);
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            // Reading the files during a reload must not trigger the next one.
            Ok(e) if matches!(e.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)) => false,
            Ok(e) => e.need_rescan() || e.paths.iter().any(|p| p.extension().is_some_and(|x| x == "wasm")),
            Err(e) => {
                tracing::warn!(error = %e, "plugins folder watch error; rescanning");
                true
            }
        };
        if relevant {
            let _ = changed.send(());
        }
    })
    .context("cannot watch the plugins folder")?;
    watcher
        .watch(cordon.plugins_dir(), RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", cordon.plugins_dir().display()))?;
    tracing::info!(folder = %cordon.plugins_dir().display(), "watching the plugins folder");
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            loop {
                match tokio::time::timeout(debounce, changes.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_quiet) => break,
                }
            }
            match cordon.reload_plugins().await {
                Ok(report) => tracing::info!(
                    tools_changed = report.tools_changed,
                    refused = report.refused.len(),
                    "plugins folder reloaded"
                ),
                Err(e) => tracing::error!(error = %format!("{e:#}"), "plugins folder reload failed; nothing changed"),
            }
        }
    });
    Ok(Some(PluginWatcher { _watcher: watcher }))
}

/// What a transport checks and swaps besides the host on a config reload (HTTP: its token
/// table). `prepare` validates the new config and returns the swap; an error refuses the
/// whole reload before anything changed.
pub type PrepareTransport = Box<dyn Fn(&Config) -> Result<Box<dyn FnOnce() + Send>> + Send + Sync>;

/// On every SIGHUP, reads the config file again and applies it; a bad file is reported and the
/// config in force stays. Without a config file there is nothing to re-read: the plugins
/// folder is rescanned.
pub fn reload_on_sighup(cordon: Arc<Cordon>, prepare: PrepareTransport) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => signal,
            Err(e) => return tracing::warn!(error = %e, "cannot listen for SIGHUP; config reload is off"),
        };
        while hangups.recv().await.is_some() {
            match reload_config_file(&cordon, &prepare).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "config reload refused; the config in force stays")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (cordon, prepare);
}

async fn reload_config_file(cordon: &Cordon, prepare: &PrepareTransport) -> Result<()> {
    let Some(path) = cordon.config_file() else {
        tracing::info!("SIGHUP: no config file to re-read; rescanning the plugins folder");
        cordon.reload_plugins().await?;
        return Ok(());
    };
    let config = Config::load(path)?;
    let swap_transport = prepare(&config)?;
    let report = cordon.reload_config(config).await?;
    swap_transport();
    tracing::info!(
        file = %path.display(),
        tools_changed = report.tools_changed,
        refused = report.refused.len(),
        "config reloaded"
    );
    Ok(())
}
