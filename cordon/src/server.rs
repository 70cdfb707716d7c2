//! Transports: MCP over stdio, and Streamable HTTP (or HTTPS, [`crate::tls`]) at `/mcp` with
//! `/healthz` (liveness), `/readyz` (readiness) and `/metrics` ([`cordon_host::metrics`]).
//!
//! Both transports drain on SIGTERM or SIGINT: calls in flight get `[server] drain_timeout_s`
//! to finish (counted by [`Cordon::in_flight`]), then the process exits.
//!
//! HTTP checks `Host` (DNS-rebinding protection) and `Origin` against `[server]` lists, which
//! default to loopback, and authenticates every `/mcp` request ([`cordon_host::auth`]). Serving
//! without bearer tokens needs an explicit opt-in and a loopback address; with no tokens and no
//! opt-in, `cordon serve` refuses to start and says why.

use crate::connections::{self, ConnectionBounds};
use crate::mcp::McpService;
use crate::sessions::Sessions;
use crate::tls::{self, SharedAcceptor, TlsFiles, TlsListener};
use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use cordon_core::Principal;
use cordon_core::{InFlight, InFlightGuard};
use cordon_host::app::Cordon;
use cordon_host::auth::Caller;
use cordon_host::auth::{self, Authenticator};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Serves MCP on stdin/stdout until the client closes it, or until SIGTERM/SIGINT, after which
/// calls in flight may finish for `[server] drain_timeout_s`. Nothing else is written to stdout.
pub async fn serve_stdio(cordon: Arc<Cordon>) -> Result<()> {
    let _watcher = crate::reload::watch_plugins(cordon.clone())?;
    crate::reload::reload_on_sighup(cordon.clone(), Box::new(|_| Ok(Box::new(|| ()))));
    let mut signals = ShutdownSignals::listen();
    let principal = Principal::new(cordon.config().server.stdio_principal.as_str());
    let service = McpService::for_caller(cordon.clone(), Sessions::follow(&cordon), Caller::unrestricted(principal))
        // Both streams are pipes when an MCP client launches us: then reads and writes run on
        // the I/O reactor, without a hand-off to a blocking-pool thread per message (BENCHMARKS.md,
        // "What each change bought"). Anything else (a terminal, a file, a socket pair) falls
        // back to blocking stdio.
        .serve(rmcp::transport::stdio_pipes())
        .await
        .context("MCP initialization over stdio failed")?;
    let stop = service.cancellation_token();
    // `waiting` owns the service: keeping this future alive (not dropping it) keeps the service
    // answering while it drains.
    let waiting = service.waiting();
    tokio::pin!(waiting);
    tokio::select! {
        ended = &mut waiting => {
            ended.context("stdio transport failed")?;
            return Ok(());
        }
        () = signals.recv() => {}
    }
    // A stdio client has no readiness probe to consult and no other server to go to: its calls
    // in flight simply get the time to finish. (Calls it starts meanwhile count too; the bound
    // still holds.)
    drain_with(&cordon, Duration::from_secs(cordon.config().server.drain_timeout_s), None, &mut signals).await;
    stop.cancel();
    if tokio::time::timeout(CLOSE_GRACE, waiting).await.is_err() {
        tracing::warn!("the stdio transport did not close in time; exiting anyway");
    }
    Ok(())
}

/// After the drain, how long open connections (and the stdio transport) get to close before
/// the process exits regardless.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Waits up to `bound` (or until a second SIGTERM/SIGINT) for the host's calls in flight (and
/// `also`, HTTP exchanges still writing their responses) to finish. Logs what was abandoned.
/// Returns whether everything finished.
async fn drain_with(cordon: &Cordon, bound: Duration, also: Option<&InFlight>, signals: &mut ShutdownSignals) -> bool {
    let in_flight = cordon.in_flight();
    tracing::info!(
        calls_in_flight = in_flight.count(),
        drain_timeout_s = bound.as_secs(),
        "draining: letting calls in flight finish"
    );
    let idle = async {
        in_flight.wait_idle().await;
        if let Some(also) = also {
            also.wait_idle().await;
        }
        // The calls' teardowns (their guests' output to the log, their stores dropped) run after
        // the replies have left.
        cordon.teardowns().wait_idle().await;
    };
    let finished = tokio::select! {
        finished = tokio::time::timeout(bound, idle) => finished.is_ok(),
        // An operator who signals again does not want to wait.
        () = signals.recv() => {
            tracing::info!("second shutdown signal: ending the drain now");
            false
        }
    };
    if finished {
        tracing::info!("drained: no call in flight");
        true
    } else {
        let abandoned = in_flight.count();
        tracing::warn!(abandoned, drain_timeout_s = bound.as_secs(), "abandoning {abandoned} call(s) still in flight");
        false
    }
}

/// How to serve HTTP.
pub struct HttpOptions {
    /// Address to bind.
    pub listen: String,
    /// No sessions, JSON responses.
    pub stateless: bool,
    /// Serve without bearer tokens (loopback only).
    pub allow_unauthenticated: bool,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<TlsFiles>,
}

/// HTTP options checked against the config: where to listen, who may call, and the TLS
/// certificate, loaded.
pub struct HttpPlan {
    addr: SocketAddr,
    stateless: bool,
    allow_unauthenticated: bool,
    authenticator: Arc<Authenticator>,
    tls: Option<(TlsFiles, Arc<rustls::ServerConfig>)>,
}

impl HttpOptions {
    /// Checks the address, the authentication settings and the TLS files, before any plugin is
    /// loaded.
    pub fn plan(
        self,
        config: &cordon_host::Config,
        data_dir: &std::path::Path,
        revocations: Arc<cordon_state::revocations::Revocations>,
    ) -> Result<HttpPlan> {
        let HttpOptions { listen, stateless, allow_unauthenticated, tls } = self;
        let addr: SocketAddr = listen
            .parse()
            .with_context(|| format!("--listen {listen:?} is not an IP address and port, e.g. 127.0.0.1:8787"))?;
        let authenticator = authenticator_for(config, allow_unauthenticated, data_dir, revocations, addr)?;
        let tls = match tls {
            Some(files) => {
                let config = files.load()?;
                Some((files, config))
            }
            None => None,
        };
        Ok(HttpPlan { addr, stateless, allow_unauthenticated, authenticator, tls })
    }
}

/// The token table for `config`, refused when it would leave a non-loopback address open or
/// let nobody in (at start, and again on every config reload).
fn authenticator_for(
    config: &cordon_host::Config,
    allow_unauthenticated: bool,
    data_dir: &std::path::Path,
    revocations: Arc<cordon_state::revocations::Revocations>,
    addr: SocketAddr,
) -> Result<Arc<Authenticator>> {
    let authenticator = Arc::new(Authenticator::new(&config.auth, allow_unauthenticated, data_dir, revocations)?);
    for hint in auth::oauth_principal_hints(config) {
        tracing::warn!("{hint}");
    }
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

/// Whether the HTTP server is draining, and the MCP exchanges whose responses are still being
/// written (a call's outcome is only delivered once its response body is).
struct Drain {
    draining: AtomicBool,
    exchanges: Arc<InFlight>,
}

impl Drain {
    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// What the probes read.
#[derive(Clone)]
struct Probe {
    cordon: Arc<Cordon>,
    clients: Arc<Sessions>,
    drain: Arc<Drain>,
}

/// Serves Streamable HTTP (or HTTPS) until SIGTERM or SIGINT, then drains (see
/// `docs/operations.md`, "Run it as a service"):
///
/// 1. `/readyz` answers 503 at once, and new `/mcp` requests get 503 with `Connection: close`;
///    the listener stays open meanwhile so probes and load balancers see "not ready" rather than
///    a refused connection;
/// 2. calls in flight, and the responses carrying their outcomes, get up to
///    `[server] drain_timeout_s` to finish; what still runs then is abandoned, with a log line
///    saying how many;
/// 3. MCP sessions are closed, the listener stops, and open connections get [`CLOSE_GRACE`].
pub async fn serve_http(cordon: Arc<Cordon>, plan: HttpPlan) -> Result<()> {
    let HttpPlan { addr, stateless, allow_unauthenticated, authenticator, tls: tls_config } = plan;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("cannot read the bound address")?;

    // Cancelled only after the drain: it closes every MCP session and SSE stream, which would
    // cut off calls in flight.
    let sessions = CancellationToken::new();
    let server = &cordon.config().server;
    let drain = Arc::new(Drain { draining: AtomicBool::new(false), exchanges: InFlight::new() });
    let gate = Arc::new(auth::Gate::new(authenticator.clone(), cordon.clone()));
    let clients = Sessions::follow(&cordon);
    // One middleware in front: the drain check (a draining server refuses before spending
    // anything on authentication), then the bearer gate. Each axum layer costs a boxed future
    // and a hand-off per request; the two were separate layers before.
    let front = FrontDoor { drain: drain.clone(), gate: gate.clone() };
    let mut mcp = mcp_service(cordon.clone(), stateless, clients.clone(), sessions.child_token())
        .layer(axum::middleware::from_fn_with_state(front.clone(), front_door));
    if !stateless {
        // The 2024-11-05 transport for older clients, through the same front door; a session of
        // it is one connection, so it is not offered without sessions (behind a balancer).
        let legacy = crate::legacy_sse::LegacySse::router(cordon.clone(), clients.clone(), sessions.child_token())
            .layer(axum::middleware::from_fn_with_state(front, front_door));
        mcp = mcp.merge(legacy);
    }
    let _watcher = crate::reload::watch_plugins(cordon.clone())?;
    let data_dir = cordon.data_dir().to_path_buf();
    let revocations = cordon.revocations();
    let reload_gate = gate.clone();
    crate::reload::reload_on_sighup(
        cordon.clone(),
        Box::new(move |config| {
            let authenticator = authenticator_for(config, allow_unauthenticated, &data_dir, revocations.clone(), addr)?;
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
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            MetricsGate { gate: gate.clone(), allowed_hosts: server.allowed_hosts.clone() },
            require_metrics_access,
        ))
        .with_state(cordon.clone());
    let probes = Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(Probe {
        cordon: cordon.clone(),
        clients: clients.clone(),
        drain: drain.clone(),
    });
    let mut app = Router::new().merge(mcp).merge(metrics).merge(probes);
    if let Some(oauth) = authenticator.oauth() {
        // Unauthenticated by design: it is how a client learns where to get a token.
        let metadata = Json(oauth.metadata());
        for path in oauth.metadata_paths() {
            let metadata = metadata.clone();
            app = app.route(&path, get(move || async move { metadata }));
        }
        oauth.warm_up().await;
    }

    // Caught from before the "listening" line: a supervisor may signal as soon as it sees it.
    let mut signals = ShutdownSignals::listen();
    let acceptor = match tls_config {
        Some((files, config)) => {
            let acceptor = SharedAcceptor::new(config);
            tls::reload_certificates_on_sighup(files, acceptor.clone());
            Some(acceptor)
        }
        // Without TLS, SIGHUP is the config reload alone (`reload::reload_on_sighup`).
        None => None,
    };
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    tracing::info!(
        url = %format!("{scheme}://{local}/mcp"),
        stateless,
        authentication = if authenticator.allows_unauthenticated() {
            "off"
        } else if authenticator.oauth().is_some() {
            "bearer+oauth"
        } else {
            "bearer"
        },
        drain_timeout_s = server.drain_timeout_s,
        "listening"
    );

    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = {
        let cordon = cordon.clone();
        let drain = drain.clone();
        async move {
            signals.recv().await;
            drain.draining.store(true, Ordering::SeqCst);
            tracing::info!("shutdown signal: /readyz answers 503 and new MCP requests are refused");
            // Read when the signal comes, as stdio does: a SIGHUP'd config applies to the drain too.
            let drain_timeout = Duration::from_secs(cordon.config().server.drain_timeout_s);
            drain_with(&cordon, drain_timeout, Some(&drain.exchanges), &mut signals).await;
            tracing::info!("shutting down: closing MCP sessions and the listener");
            sessions.cancel();
            let _ = drained_tx.send(());
        }
    };
    // The listener stays open through the drain (axum stops accepting when `shutdown` resolves).
    let bounds = ConnectionBounds {
        read_timeout: Duration::from_secs(server.read_timeout_s.max(1)),
        max_connections: server.max_connections,
        max_connections_per_peer: server.max_connections_per_peer.unwrap_or(server.max_connections / 2),
    };
    let served = async move {
        match acceptor {
            Some(acceptor) => connections::serve(TlsListener::new(listener, acceptor), app, bounds, shutdown).await,
            None => connections::serve(listener.tap_io(connections::no_delay), app, bounds, shutdown).await,
        }
    };
    tokio::pin!(served);
    tokio::select! {
        () = &mut served => Ok(()),
        () = async {
            // Only once the drain is over: then connections get a last, short grace.
            if drained_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(CLOSE_GRACE).await;
        } => {
            tracing::warn!("connections still open after the drain; closing them");
            Ok(())
        }
    }
}

/// The `/mcp` route behind `gate` ([`auth::require_bearer`]) alone, without the drain check
/// [`serve_http`] puts in the same middleware ([`front_door`]): public so the fuzz targets
/// (`fuzz/`) and tests can drive the real request path in-process, without a socket.
pub fn mcp_router(
    cordon: Arc<Cordon>,
    gate: Arc<auth::Gate>,
    stateless: bool,
    clients: Arc<Sessions>,
    close: CancellationToken,
) -> Router {
    mcp_service(cordon, stateless, clients, close)
        .layer(axum::middleware::from_fn_with_state(gate, auth::require_bearer))
}

/// rmcp's Streamable HTTP service at `/mcp` (`[server]` hosts, origins and body cap; sessions
/// with SSE, or `stateless` plain JSON), with the session cap in session mode; unauthenticated:
/// [`mcp_router`] and [`serve_http`] put the gate in front of it. `clients` hears of catalog
/// changes; `close` ends every session and stream when cancelled.
fn mcp_service(cordon: Arc<Cordon>, stateless: bool, clients: Arc<Sessions>, close: CancellationToken) -> Router {
    let server = &cordon.config().server;
    let mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(server.allowed_hosts.clone())
        .with_allowed_origins(server.allowed_origins.clone())
        .enforce_origin_validation()
        .with_legacy_session_mode(!stateless)
        .with_json_response(stateless)
        .with_max_request_body_bytes(server.max_request_bytes)
        .with_cancellation_token(close);
    let manager = Arc::new(LocalSessionManager::default());
    let mcp = {
        let cordon = cordon.clone();
        StreamableHttpService::new(
            move || Ok(McpService::per_request(cordon.clone(), clients.clone())),
            manager.clone(),
            mcp_config,
        )
    };
    let mut router = Router::new().nest_service("/mcp", mcp);
    if !stateless {
        let cap = SessionCap { manager, max: server.max_sessions };
        router = router.layer(axum::middleware::from_fn_with_state(cap, cap_sessions));
    }
    router
}

/// `[server] max_sessions` over rmcp's session table.
#[derive(Clone)]
struct SessionCap {
    manager: Arc<LocalSessionManager>,
    max: usize,
}

/// Middleware on `/mcp` with sessions: while `max_sessions` are open, a POST that names no
/// session (an `initialize`, which would open one) gets 503 with `Retry-After`; requests of
/// open sessions go on. Sessions end on DELETE, when their client goes, or after rmcp's idle
/// keep-alive, which frees their places.
async fn cap_sessions(State(cap): State<SessionCap>, request: Request, next: Next) -> Response {
    let opens_one = request.method() == Method::POST && !request.headers().contains_key("mcp-session-id");
    if opens_one && cap.manager.sessions.read().await.len() >= cap.max {
        tracing::warn!(max_sessions = cap.max, "session limit reached; refusing a new session");
        let body = json!({ "error": "too many open sessions; retry shortly" }).to_string();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json"), (header::RETRY_AFTER, "5")],
            body,
        )
            .into_response();
    }
    next.run(request).await
}

/// What [`front_door`] needs: the drain, and the bearer gate.
#[derive(Clone)]
struct FrontDoor {
    drain: Arc<Drain>,
    gate: Arc<auth::Gate>,
}

/// The one middleware in front of `/mcp`: while draining, new requests get 503; otherwise each
/// POST (a JSON-RPC message, e.g. a `tools/call`) counts as an exchange until its response body
/// has been written or dropped, so the drain waits for outcomes to reach their callers; and in
/// between, the request goes through the bearer gate ([`auth::require_bearer`]).
async fn front_door(State(door): State<FrontDoor>, request: Request, next: Next) -> Response {
    let FrontDoor { drain, gate } = door;
    // Counted before the check: a drain that starts in between then either sees this exchange
    // or this request sees the drain (both sides use sequentially consistent operations).
    let exchange = (request.method() == Method::POST).then(|| drain.exchanges.enter());
    if drain.is_draining() {
        let body = json!({ "error": "the server is shutting down; retry on another instance" }).to_string();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json"), (header::CONNECTION, "close")],
            body,
        )
            .into_response();
    }
    let Some(exchange) = exchange else {
        let ends_session = request.method() == Method::DELETE;
        // GET opens a session's standing SSE stream, which never ends on its own: it is closed
        // with the sessions after the drain, not waited for.
        let mut response = auth::require_bearer(State(gate), request, next).await;
        // rmcp answers a session's DELETE with 202; the session is gone by then, and clients
        // (the official Python SDK among them) take only 200 or 204 as a clean close.
        if ends_session && response.status() == StatusCode::ACCEPTED {
            *response.status_mut() = StatusCode::NO_CONTENT;
        }
        return response;
    };
    let response = auth::require_bearer(State(gate), request, next).await;
    response.map(|body| Body::new(Tracked { body, _exchange: exchange }))
}

/// A response body that holds an exchange open until hyper has written it out (or dropped it).
struct Tracked {
    body: Body,
    _exchange: InFlightGuard,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Who may scrape `/metrics`: a valid bearer token of a principal in `[auth] metrics_principals`
/// (a caller's token for tools is not a scraper's: the counters describe every caller's traffic),
/// or anyone when the server runs unauthenticated on loopback; and, like `/mcp`, only under an
/// allowed `Host` (DNS-rebinding guard).
#[derive(Clone)]
struct MetricsGate {
    /// The `/mcp` gate: its token table follows config reloads.
    gate: Arc<auth::Gate>,
    allowed_hosts: Vec<String>,
}

async fn require_metrics_access(State(gate): State<MetricsGate>, request: Request, next: Next) -> Response {
    if !host_allowed(request.headers(), &gate.allowed_hosts) {
        return (StatusCode::FORBIDDEN, "Host not allowed").into_response();
    }
    let auth = gate.gate.auth();
    match auth.authenticate(request.headers().get(header::AUTHORIZATION), SystemTime::now()).await {
        Ok(caller) if auth.may_read_metrics(&caller) => next.run(request).await,
        Ok(caller) => {
            tracing::info!(principal = %caller.principal.0, "a token outside [auth] metrics_principals asked for /metrics");
            let body =
                json!({ "error": "this token may not read /metrics (see [auth] metrics_principals)" }).to_string();
            (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(error) => auth::unauthorized(&auth, error),
    }
}

/// Whether the `Host` header names an allowed host (with or without its port), as rmcp checks
/// for `/mcp`. An empty list allows any.
fn host_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    allowed.iter().any(|a| a.eq_ignore_ascii_case(name) || a.eq_ignore_ascii_case(host))
}

async fn metrics(State(cordon): State<Arc<Cordon>>) -> Response {
    match cordon.metrics_text() {
        Ok(text) => ([(header::CONTENT_TYPE, cordon_host::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn probe_body(probe: &Probe, status: &str) -> Value {
    let cordon = &probe.cordon;
    let catalog = cordon.catalog();
    json!({
        "status": status,
        "plugins": catalog.plugins.len(),
        "tools": catalog.tools.len(),
        "refused": catalog.failures.len(),
        "calls_in_flight": cordon.in_flight().count(),
        "listen_streams": probe.clients.listeners(),
    })
}

/// Liveness: 200 for as long as the process runs, draining or not.
async fn healthz(State(probe): State<Probe>) -> Json<Value> {
    Json(probe_body(&probe, "ok"))
}

/// Readiness: 200 while serving; 503 `{"status": "draining"}` from the shutdown signal on.
async fn readyz(State(probe): State<Probe>) -> Response {
    if probe.drain.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(probe_body(&probe, "draining"))).into_response()
    } else {
        Json(probe_body(&probe, "ok")).into_response()
    }
}

/// Resolves on SIGINT or SIGTERM (listening from the first poll; see [`ShutdownSignals`]).
pub async fn shutdown_signal() {
    ShutdownSignals::listen().recv().await;
}

/// SIGTERM and SIGINT, caught from the moment [`ShutdownSignals::listen`] returns: a signal
/// that arrives before the first `recv` is not lost, and does not kill the process with its
/// default action. Each `recv` waits for the next signal (a second one ends a drain early).
pub struct ShutdownSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    /// Installs the handlers now.
    pub fn listen() -> ShutdownSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let install = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(stream) => Some(stream),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}");
                    None
                }
            };
            ShutdownSignals {
                term: install(SignalKind::terminate(), "SIGTERM"),
                interrupt: install(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            ShutdownSignals {}
        }
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(stream: &mut Option<tokio::signal::unix::Signal>) {
                match stream {
                    Some(stream) => {
                        if stream.recv().await.is_none() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = next(&mut self.term) => {}
                () = next(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_host::app::Paths;
    use cordon_host::config::Config;

    async fn empty_host(dir: &std::path::Path) -> Arc<Cordon> {
        let paths = Paths { plugins: dir.join("plugins"), data: dir.join("data"), config_file: None };
        std::fs::create_dir_all(&paths.plugins).expect("plugins dir");
        std::fs::create_dir_all(&paths.data).expect("data dir");
        Cordon::start(Config::parse("").expect("the default config"), paths).await.expect("start a host")
    }

    /// A call whose reply has left still has its teardown to run (its guest's output to the
    /// log, its store dropped): SIGTERM's drain waits for it within the bound, and says it
    /// abandoned work when the bound passes first.
    #[tokio::test]
    async fn a_drain_waits_for_the_teardowns_of_answered_calls() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cordon = empty_host(dir.path()).await;
        let mut signals = ShutdownSignals::listen();

        let teardown = cordon.teardowns().enter();
        let draining = tokio::spawn({
            let cordon = cordon.clone();
            async move { drain_with(&cordon, Duration::from_secs(60), None, &mut signals).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!draining.is_finished(), "the drain ended with a teardown still running");
        drop(teardown);
        let drained = tokio::time::timeout(Duration::from_secs(10), draining).await;
        assert!(matches!(drained, Ok(Ok(true))), "the drain did not end when the teardown did: {drained:?}");

        let mut signals = ShutdownSignals::listen();
        let _stuck = cordon.teardowns().enter();
        let drained = drain_with(&cordon, Duration::from_millis(200), None, &mut signals).await;
        assert!(!drained, "a teardown past the bound is reported as abandoned work");
    }
}
