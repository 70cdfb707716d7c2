//! Transports: MCP over stdio, and Streamable HTTP at `/mcp` with `/healthz` and `/readyz`.
//!
//! HTTP checks `Host` (DNS-rebinding protection) and `Origin` against `[server]` lists, which
//! default to loopback, and authenticates every `/mcp` request ([`crate::auth`]). Serving
//! without bearer tokens needs an explicit opt-in and a loopback address; with no tokens and no
//! opt-in, `cordon serve` refuses to start and says why.

use crate::app::Cordon;
use crate::auth::Caller;
use crate::auth::{self, Authenticator};
use crate::call::Principal;
use crate::mcp::McpService;
use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Serves MCP on stdin/stdout until the client closes it. Nothing else is written to stdout.
pub async fn serve_stdio(cordon: Arc<Cordon>) -> Result<()> {
    let _watcher = crate::reload::watch_plugins(cordon.clone())?;
    crate::reload::reload_on_sighup(cordon.clone(), Box::new(|_| Ok(Box::new(|| ()))));
    let principal = Principal::new(cordon.config().server.stdio_principal.as_str());
    let service = McpService::for_caller(cordon, Caller::unrestricted(principal))
        .serve(rmcp::transport::stdio())
        .await
        .context("MCP initialization over stdio failed")?;
    tokio::select! {
        ended = service.waiting() => { ended.context("stdio transport failed")?; }
        () = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

/// How to serve HTTP.
pub struct HttpOptions {
    /// Address to bind.
    pub listen: String,
    /// No sessions, JSON responses.
    pub stateless: bool,
    /// Serve without bearer tokens (loopback only).
    pub allow_unauthenticated: bool,
}

/// HTTP options checked against the config: where to listen and who may call.
pub struct HttpPlan {
    addr: SocketAddr,
    stateless: bool,
    allow_unauthenticated: bool,
    authenticator: Arc<Authenticator>,
}

impl HttpOptions {
    /// Checks the address and the authentication settings, before any plugin is loaded.
    pub fn plan(self, config: &crate::Config, data_dir: &std::path::Path) -> Result<HttpPlan> {
        let HttpOptions { listen, stateless, allow_unauthenticated } = self;
        let addr: SocketAddr = listen
            .parse()
            .with_context(|| format!("--listen {listen:?} is not an IP address and port, e.g. 127.0.0.1:8787"))?;
        let authenticator = authenticator_for(config, allow_unauthenticated, data_dir, addr)?;
        Ok(HttpPlan { addr, stateless, allow_unauthenticated, authenticator })
    }
}

/// The token table for `config`, refused when it would leave a non-loopback address open or
/// let nobody in (at start, and again on every config reload).
fn authenticator_for(
    config: &crate::Config,
    allow_unauthenticated: bool,
    data_dir: &std::path::Path,
    addr: SocketAddr,
) -> Result<Arc<Authenticator>> {
    let authenticator = Arc::new(Authenticator::new(&config.auth, allow_unauthenticated, data_dir)?);
    if authenticator.allows_unauthenticated() && !addr.ip().is_loopback() {
        bail!(
            "refusing to listen on {addr} without authentication: unauthenticated HTTP is allowed only on a \
             loopback address (127.0.0.1 or ::1); configure [[auth.tokens]] to serve other addresses"
        );
    }
    if !authenticator.allows_unauthenticated() && !authenticator.has_tokens() {
        bail!(
            "no bearer tokens configured: add [[auth.tokens]] to the config (`cordon token hash` prints the \
             sha256), or serve a loopback address without authentication with --allow-unauthenticated \
             (or set [auth] signed_tokens_only = true to accept only tokens from `cordon token issue`, or \
             configure [auth.oauth])"
        );
    }
    Ok(authenticator)
}

/// Serves Streamable HTTP until SIGTERM or SIGINT.
pub async fn serve_http(cordon: Arc<Cordon>, plan: HttpPlan) -> Result<()> {
    let HttpPlan { addr, stateless, allow_unauthenticated, authenticator } = plan;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("cannot read the bound address")?;

    let shutdown = CancellationToken::new();
    let server = &cordon.config().server;
    let mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(server.allowed_hosts.clone())
        .with_allowed_origins(server.allowed_origins.clone())
        .enforce_origin_validation()
        .with_legacy_session_mode(!stateless)
        .with_json_response(stateless)
        .with_max_request_body_bytes(server.max_request_bytes)
        .with_cancellation_token(shutdown.child_token());
    let mcp = {
        let cordon = cordon.clone();
        StreamableHttpService::new(
            move || Ok(McpService::per_request(cordon.clone())),
            Arc::new(LocalSessionManager::default()),
            mcp_config,
        )
    };
    let gate = Arc::new(auth::Gate::new(authenticator.clone(), cordon.clone()));
    let mcp = Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(gate.clone(), auth::require_bearer));
    let _watcher = crate::reload::watch_plugins(cordon.clone())?;
    let data_dir = cordon.data_dir().to_path_buf();
    let reload_gate = gate.clone();
    crate::reload::reload_on_sighup(
        cordon.clone(),
        Box::new(move |config| {
            let authenticator = authenticator_for(config, allow_unauthenticated, &data_dir, addr)?;
            let gate = reload_gate.clone();
            Ok(Box::new(move || {
                if authenticator.oauth().is_some() {
                    // Fetch the keys now rather than on the first request.
                    let authenticator = authenticator.clone();
                    tokio::spawn(async move {
                        if let Some(oauth) = authenticator.oauth() {
                            oauth.warm_up().await;
                        }
                    });
                }
                gate.set_auth(authenticator);
            }))
        }),
    );
    let mut app = Router::new()
        .merge(mcp)
        .route("/healthz", get(health))
        .route("/readyz", get(health))
        .with_state(cordon.clone());
    if let Some(oauth) = authenticator.oauth() {
        // Unauthenticated by design: it is how a client learns where to get a token.
        let metadata = Json(oauth.metadata());
        for path in oauth.metadata_paths() {
            let metadata = metadata.clone();
            app = app.route(&path, get(move || async move { metadata }));
        }
        oauth.warm_up().await;
    }

    tracing::info!(
        url = %format!("http://{local}/mcp"),
        stateless,
        authentication = if authenticator.allows_unauthenticated() {
            "off"
        } else if authenticator.oauth().is_some() {
            "bearer+oauth"
        } else {
            "bearer"
        },
        "listening"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        })
        .await
        .context("HTTP server failed")
}

async fn health(State(cordon): State<Arc<Cordon>>) -> Json<Value> {
    let catalog = cordon.catalog();
    Json(json!({
        "status": "ok",
        "plugins": catalog.plugins.len(),
        "tools": catalog.tools.len(),
        "refused": catalog.failures.len(),
    }))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
