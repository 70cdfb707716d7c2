//! Grants end to end: bearer-token principals over HTTP, outbound HTTP only where granted (refused
//! before any connection), per-principal credentials set by the host and never seen by the guest,
//! per-call request and response bounds, directory grants, and digest pins.
//!
//! Outbound traffic goes to [`Upstream`], a real HTTP server inside the test that records every
//! request and counts every accepted connection, so "refused before connecting" is checked on
//! the wire, not inferred from an error message.

mod common;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// Alice's credential value: the environment variable `ALICE_SECRET` of the cordon process.
const ALICE_SECRET: &str = "alice-secret-4f9c2e71";
/// Bob's credential value: a file (written with a trailing newline, which is dropped).
const BOB_SECRET: &str = "bob-secret-d8a03b56";
/// A value the guest tries to pass off as the credential.
const FORGED: &str = "Bearer guest-forged";
/// Size of the body at `/api/big`.
const BIG: usize = 10_000;

// ---- the recording upstream --------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query, as sent.
    path: String,
    /// Every header in order; repeated names appear repeatedly.
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    /// Every value of header `name` (lower case).
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
}

type Requests = Arc<Mutex<Vec<Seen>>>;

/// An HTTP server on `127.0.0.1:0` recording every request and counting accepted connections.
/// It answers `/api/big` with [`BIG`] bytes and everything else with [`upstream_reply`]. It never
/// echoes request headers: an upstream that did would hand the credential to the guest itself,
/// which no host can prevent, so the tests would prove nothing about Cordon.
struct Upstream {
    /// `http://127.0.0.1:PORT`.
    base: String,
    requests: Requests,
    connections: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What the upstream answers to `method path` (except `/api/big`).
fn upstream_reply(method: &str, path: &str) -> Value {
    json!({"method": method, "path": path, "items": [1, 2, 3]})
}

async fn record(State(requests): State<Requests>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let (method, path) = (seen.method.clone(), seen.path.clone());
    requests.lock().unwrap().push(seen);
    if path == "/api/big" {
        return Response::new(Body::from("B".repeat(BIG)));
    }
    if path == "/api/redirect" {
        // A granted target: the host must still not follow it.
        return (axum::http::StatusCode::FOUND, [(axum::http::header::LOCATION, "/api/target")]).into_response();
    }
    Json(upstream_reply(&method, &path)).into_response()
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
        let base = format!("http://{}", listener.local_addr().expect("upstream address"));
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let listener = listener.tap_io(move |_| {
            accepted.fetch_add(1, Ordering::SeqCst);
        });
        let requests = Requests::default();
        let app = Router::new().fallback(record).with_state(requests.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("upstream serves") });
        Upstream { base, requests, connections, server }
    }

    /// `http://127.0.0.1:PORT<path>`.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `PORT`.
    fn port(&self) -> &str {
        self.base.rsplit(':').next().expect("port")
    }

    fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }

    fn last(&self) -> Seen {
        self.requests().pop().expect("the upstream saw a request")
    }

    /// Requests recorded and connections accepted so far.
    fn counts(&self) -> (usize, usize) {
        (self.requests.lock().unwrap().len(), self.connections.load(Ordering::SeqCst))
    }
}

// ---- environments ------------------------------------------------------------------------------

/// A grant of `url` to `plugin` for `methods`, attaching `[credentials.api]`.
fn api_grant(plugin: &str, url: &str, methods: &[&str]) -> String {
    format!("[[plugins.{plugin}.http.grants]]\nurl = \"{url}\"\nmethods = {methods:?}\ncredential = \"api\"\n\n")
}

/// reach.wasm under `extra` config, plus: stdio principal alice; `[credentials.api]` with
/// `Bearer <secret>` for alice (env `ALICE_SECRET`, set for cordon only) and bob (a file); and
/// implicit idempotency keys off, so every repeated request really goes out.
fn reach_env(extra: &str) -> Env {
    let env = Env::new().plugin(&fixture_wasm("reach"), "reach.wasm").var("ALICE_SECRET", ALICE_SECRET);
    let bob = env.path().join("bob-secret");
    std::fs::write(&bob, format!("{BOB_SECRET}\n")).expect("write bob's secret");
    let config = format!(
        "[server]\nstdio_principal = \"alice\"\n\n\
         [plugins.reach.idempotency]\nimplicit_window_s = 0\n\n\
         [credentials.api]\nprefix = \"Bearer \"\n\
         principals.alice = {{ env = \"ALICE_SECRET\" }}\nprincipals.bob = {{ file = \"{}\" }}\n\n{extra}",
        bob.display()
    );
    env.config(&config)
}

/// `reach_request` arguments.
fn req(method: &str, url: &str) -> Value {
    json!({"method": method, "url": url})
}

/// A `reach_request` that must succeed with status 200; returns the reply.
async fn fetch(client: &Client, method: &str, url: &str) -> Value {
    let out = call(client, "reach_request", req(method, url)).await;
    let reply = out.ok().clone();
    assert_eq!(reply["status"], 200, "{method} {url}: {reply}");
    reply
}

/// `cordon token ARGS` (no plugins or config involved), with `stdin` as its input.
async fn cordon_token(args: &[&str], stdin: &str) -> Output {
    let mut child = tokio::process::Command::new(cordon_bin())
        .arg("token")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn cordon token");
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin.as_bytes()).await.expect("write stdin");
    drop(input);
    let out = guard("cordon token to exit", child.wait_with_output()).await.expect("wait for cordon token");
    assert_eq!(out.status.code(), Some(0), "cordon token {args:?}: {}", describe(&out));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---- principals ----------------------------------------------------------------------------

/// `/mcp` needs a known bearer token: none → 401 with a `Bearer` challenge, unknown → 401
/// `invalid_token`; a token from `cordon token new` (hashed as `cordon token hash` and SHA-256
/// say) works, as the principal it was made for. Without any token configured, serving HTTP is
/// refused outright.
#[tokio::test]
async fn http_callers_need_a_known_bearer_token() {
    let refused =
        Env::new().plugin(&fixture_wasm("reach"), "reach.wasm").run(&["serve", "--listen", "127.0.0.1:0"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no bearer tokens configured"), "{}", describe(&refused));

    // `token new` prints a token and the lines that accept it; `token hash` agrees, from an
    // argument or from stdin, and both are the SHA-256 of the token in hex.
    let new = stdout(&cordon_token(&["new", "--principal", "alice"], "").await);
    let fresh = new.lines().find_map(|l| l.strip_prefix("token: ")).expect("token: line").to_string();
    let snippet = new.split_once("\n\n").expect("a blank line before the config lines").1.to_string();
    let hash = sha256_hex(fresh.as_bytes());
    assert!(snippet.contains(&format!("sha256 = \"{hash}\"")) && snippet.contains("principal = \"alice\""), "{new}");
    assert_eq!(stdout(&cordon_token(&["hash", &fresh], "").await), format!("{hash}\n"));
    assert_eq!(stdout(&cordon_token(&["hash"], &format!("{fresh}\n")).await), format!("{hash}\n"));

    let upstream = Upstream::start().await;
    let grant = api_grant("reach", &upstream.url("/api/"), &["GET"]);
    let env = reach_env(&format!("{snippet}\n{}{grant}", tokens(&["bob"])));
    let server = env.spawn_http_with(&[], &[]).await;
    let init = initialize_request().to_string();
    let missing = post(&server.url, &init, &[]).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer realm=\"cordon\"");
    for bad in ["Bearer not-a-known-token", "Bearer ", &format!("Basic {fresh}"), &format!("Bearer {fresh}x")] {
        let unknown = post(&server.url, &init, &[("authorization", bad)]).await;
        assert_eq!(unknown.status(), 401, "{bad:?}");
        assert_eq!(
            unknown.headers()["www-authenticate"],
            "Bearer realm=\"cordon\", error=\"invalid_token\"",
            "{bad:?}"
        );
    }
    assert!(server.try_client(None).await.is_err(), "initialize without a token must fail");
    assert!(server.try_client(Some("not-a-known-token")).await.is_err(), "initialize with an unknown token must fail");

    // A known token works, as its principal (whose credential the upstream then sees).
    for (good, secret) in [(fresh.as_str(), ALICE_SECRET), (&token("bob"), BOB_SECRET)] {
        let client = server.client_as(good).await;
        assert!(list_tools(&client).await.contains_key("reach_request"));
        fetch(&client, "GET", &upstream.url("/api/whoami")).await;
        assert_eq!(upstream.last().header("authorization"), [format!("Bearer {secret}")]);
    }
}

/// Each principal's own credential is attached: alice over HTTP (and over `cordon call`, as the
/// stdio principal) gets hers, bob gets his from a file, carol — authenticated, but without a
/// value — is `forbidden` and the upstream sees neither a request nor a connection. A grant
/// without `credential` carries none.
#[tokio::test]
async fn each_principal_gets_its_own_credential() {
    let upstream = Upstream::start().await;
    let public = format!("[[plugins.reach.http.grants]]\nurl = \"{}\"\n\n", upstream.url("/public/"));
    let config = format!(
        "{}{}{public}",
        tokens(&["alice", "bob", "carol"]),
        api_grant("reach", &upstream.url("/api/"), &["GET", "POST"])
    );
    let env = reach_env(&config);
    let server = env.spawn_http_with(&[], &[]).await;
    let url = upstream.url("/api/x");

    for (principal, secret) in [("alice", ALICE_SECRET), ("bob", BOB_SECRET)] {
        let client = server.client_as(&token(principal)).await;
        let reply = fetch(&client, "GET", &url).await;
        assert_eq!(
            serde_json::from_str::<Value>(reply["body"].as_str().unwrap()).unwrap(),
            upstream_reply("GET", "/api/x")
        );
        let seen = upstream.last();
        assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", "/api/x"));
        assert_eq!(seen.header("authorization"), [format!("Bearer {secret}")], "{principal}: {seen:?}");
    }
    assert_eq!(upstream.counts(), (2, 2));

    let carol = server.client_as(&token("carol")).await;
    let out = call(&carol, "reach_request", req("GET", &url)).await;
    let message = out.expect_error("forbidden", false)["message"].as_str().unwrap().to_string();
    for part in ["\"carol\"", "\"api\"", &format!("GET {url}")] {
        assert!(message.contains(part), "{part} not in {message}");
    }
    assert!(!out.raw.to_string().contains("secret-"), "{}", out.raw);
    // Carol may still use a grant that needs no credential; it carries none.
    fetch(&carol, "GET", &upstream.url("/public/y")).await;
    let seen = upstream.last();
    assert_eq!(seen.path, "/public/y");
    assert!(seen.header("authorization").is_empty(), "{seen:?}");
    assert_eq!(upstream.counts(), (3, 3), "carol's refused request must not reach the upstream");

    // `cordon call` runs as the stdio principal, alice.
    let out = env.run(&["call", "reach_request", &req("GET", &url).to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(upstream.last().header("authorization"), [format!("Bearer {ALICE_SECRET}")]);
    assert_eq!(upstream.counts(), (4, 4));
}

// ---- outbound HTTP -----------------------------------------------------------------------------

/// An `Authorization` the guest sets on a credentialed request is replaced by the principal's
/// value: exactly one header reaches the upstream, whatever case and however many the guest
/// used. Other guest headers and the body pass.
#[tokio::test]
async fn guest_set_credentials_are_replaced() {
    let upstream = Upstream::start().await;
    let env = reach_env(&api_grant("reach", &upstream.url("/api/"), &["GET", "POST"]));
    let (client, _log) = env.stdio_client().await;

    let headers = json!({"authorization": FORGED, "AUTHORIZATION": "Bearer guest-forged-2", "x-guest": "kept"});
    let out = call(
        &client,
        "reach_request",
        json!({"method": "POST", "url": upstream.url("/api/submit"), "headers": headers, "body": "{\"n\":1}"}),
    )
    .await;
    assert_eq!(out.ok()["status"], 200, "{}", out.raw);
    let seen = upstream.last();
    assert_eq!((seen.method.as_str(), seen.path.as_str(), seen.body.as_str()), ("POST", "/api/submit", "{\"n\":1}"));
    assert_eq!(seen.header("authorization"), [format!("Bearer {ALICE_SECRET}")], "{seen:?}");
    assert_eq!(seen.header("x-guest"), ["kept"], "{seen:?}");
    assert_eq!(upstream.counts(), (1, 1));
}

/// Requests outside the grant — another port, another host name for the same address, another
/// scheme, a path outside the prefix (also by `..` or encoded dots), a method not granted — fail
/// with `egress_denied` naming method and URL, and no connection is opened: the granted
/// upstream's counters stay put and the other one never sees a connection.
#[tokio::test]
async fn requests_outside_the_grants_are_refused_before_connecting() {
    let upstream = Upstream::start().await;
    let other = Upstream::start().await;
    let env = reach_env(&api_grant("reach", &upstream.url("/api/"), &["GET", "POST"]));
    let (client, _log) = env.stdio_client().await;

    let port = upstream.port();
    let refused = [
        ("GET", other.url("/api/x")),
        ("GET", format!("http://localhost:{port}/api/x")),
        ("GET", format!("https://127.0.0.1:{port}/api/x")),
        ("GET", upstream.url("/admin")),
        ("GET", upstream.url("/api")),
        ("GET", upstream.url("/apix/y")),
        ("GET", upstream.url("/api/../admin")),
        ("GET", upstream.url("/api/./x")),
        ("GET", upstream.url("/api/%2e%2e/admin")),
        ("GET", upstream.url("/api/.%2E/admin")),
        ("GET", upstream.url("/api/x%2f..%2fadmin")),
        // What an upstream could normalize out of the prefix: path parameters on a dot segment,
        // an encoded backslash, a double-encoded dot or slash.
        ("GET", upstream.url("/api/..;/admin")),
        ("GET", upstream.url("/api/..%5cadmin")),
        ("GET", upstream.url("/api/%252e%252e/admin")),
        ("GET", upstream.url("/api/%252fadmin")),
        ("DELETE", upstream.url("/api/x")),
        ("PUT", upstream.url("/api/x")),
    ];
    for (method, url) in &refused {
        let out = call(&client, "reach_request", req(method, url)).await;
        let message = out.expect_error("egress_denied", false)["message"].as_str().unwrap().to_string();
        assert!(message.contains(&format!("{method} {url}")), "{method} {url}: {message}");
    }
    // The query is not part of the message.
    let out = call(&client, "reach_request", req("GET", &upstream.url("/admin?q=1"))).await;
    let message = out.expect_error("egress_denied", false)["message"].as_str().unwrap().to_string();
    assert!(message.contains(&format!("GET {} ", upstream.url("/admin"))), "{message}");

    assert_eq!(upstream.counts(), (0, 0), "{:?}", upstream.requests());
    assert_eq!(other.counts(), (0, 0), "{:?}", other.requests());
    // Both listen and count: a granted request reaches the first, the test reaches the second.
    // (Connections are accepted in order, so a refused request that had connected anyway would
    // have been counted before these.)
    fetch(&client, "GET", &upstream.url("/api/x")).await;
    assert_eq!(upstream.counts(), (1, 1));
    let direct = guard("a direct request", reqwest::get(other.url("/api/x"))).await.expect("reach the other upstream");
    assert_eq!(direct.status(), 200);
    assert_eq!(other.counts(), (1, 1));
}

/// `max_requests_per_call = 3`: a burst of 5 gets 3 responses and 2 `egress_denied`, and the
/// upstream sees exactly 3. The budget is per call: the next call gets 3 again.
#[tokio::test]
async fn requests_per_call_are_capped() {
    let upstream = Upstream::start().await;
    let config = format!(
        "[plugins.reach.http]\nmax_requests_per_call = 3\n\n{}",
        api_grant("reach", &upstream.url("/api/"), &["GET"])
    );
    let env = reach_env(&config);
    let (client, _log) = env.stdio_client().await;

    let url = upstream.url("/api/burst");
    let out = call(&client, "reach_burst", json!({"url": url, "count": 5})).await;
    let burst = out.ok();
    assert_eq!(burst["ok"], 3, "{burst}");
    let errors = burst["errors"].as_array().unwrap();
    let attempts: Vec<&Value> = errors.iter().map(|e| &e["attempt"]).collect();
    assert_eq!(attempts, [3, 4], "{burst}");
    for error in errors {
        assert_eq!(error["kind"], "egress_denied", "{burst}");
    }
    assert_eq!(upstream.counts(), (3, 3));

    let out = call(&client, "reach_burst", json!({"url": url, "count": 3})).await;
    assert_eq!(out.ok(), &json!({"ok": 3, "errors": []}));
    assert_eq!(upstream.counts(), (6, 6));
}

/// An environment with `max_response_bytes = 1000` and a client that asked for the 10 KB body:
/// the upstream got the (granted) request; the outcome is returned.
async fn fetch_too_much() -> (Upstream, Env, Client, Outcome) {
    let upstream = Upstream::start().await;
    let config = format!(
        "[plugins.reach.http]\nmax_response_bytes = 1000\n\n{}",
        api_grant("reach", &upstream.url("/api/"), &["GET"])
    );
    let env = reach_env(&config);
    let (client, _log) = env.stdio_client().await;
    let out = call(&client, "reach_request", req("GET", &upstream.url("/api/big"))).await;
    assert_eq!(upstream.last().path, "/api/big", "the request itself was granted");
    (upstream, env, client, out)
}

/// `request_timeout_ms` bounds a request: against an upstream that accepts the connection and
/// never answers, the guest gets a failed request (not the call's own `timeout`, which is far
/// longer), so it can report the upstream as unreachable.
#[tokio::test]
async fn outbound_requests_time_out_at_the_grant_bound() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the silent upstream");
    let port = listener.local_addr().expect("address").port();
    // Accept and hold every connection open without a byte of response.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("http://127.0.0.1:{port}/api/slow");
    let config = format!(
        "[plugins.reach.limits]\ntimeout_ms = 60000\n\n[plugins.reach.http]\nrequest_timeout_ms = 300\n\n\
         [[plugins.reach.http.grants]]\nurl = \"http://127.0.0.1:{port}/api/\"\n"
    );
    let env = reach_env(&config);
    let (client, _log) = env.stdio_client().await;
    let out = call(&client, "reach_request", req("GET", &url)).await;
    let error = out.error();
    assert_eq!(error["type"], "upstream_unreachable", "{}", out.raw);
    assert_eq!(error["retryable"], true, "{}", out.raw);
    assert!(error["message"].as_str().is_some_and(|m| m.to_ascii_lowercase().contains("timeout")), "{}", out.raw);
    silent.abort();
}

/// `max_response_bytes = 1000`: a 10 KB body fails to read — the guest gets an error naming the
/// cap, and none of the body; a small body passes.
#[tokio::test]
async fn response_bodies_are_capped() {
    let (upstream, _env, client, out) = fetch_too_much().await;
    let message = out.error()["message"].as_str().unwrap();
    assert!(message.contains("1000"), "the error names the cap: {}", out.raw);
    assert!(!out.raw.to_string().contains("BBBBBBBBBB"), "{}", out.raw);

    fetch(&client, "GET", &upstream.url("/api/small")).await;
    assert_eq!(upstream.counts(), (2, 2));
}

/// The SDK's kind for a capped body is `response_too_large` (not retryable): a declared
/// `Content-Length` over the cap fails on the response path, where the guest sees
/// `HttpResponseBodySize`.
#[tokio::test]
async fn capped_bodies_are_response_too_large() {
    let (_upstream, _env, _client, out) = fetch_too_much().await;
    out.expect_error("response_too_large", false);
}

/// The host follows no redirect, even to a granted URL: the guest gets the 302 itself and the
/// upstream sees one request.
#[tokio::test]
async fn redirects_are_not_followed() {
    let upstream = Upstream::start().await;
    let env = reach_env(&api_grant("reach", &upstream.url("/api/"), &["GET"]));
    let (client, _log) = env.stdio_client().await;
    let out = call(&client, "reach_request", req("GET", &upstream.url("/api/redirect"))).await;
    assert_eq!(out.ok()["status"], json!(302), "{}", out.raw);
    assert_eq!(out.ok()["headers"]["location"], json!("/api/target"), "{}", out.raw);
    assert_eq!(upstream.counts(), (1, 1));
    assert_eq!(upstream.last().path, "/api/redirect");
}

/// No secret reaches the guest or leaves Cordon: with credentials in use (the upstream got
/// alice's value), neither secret appears in the reply, in a refusal, in everything `reach_hunt`
/// could find (environment, arguments, files, config, its own provoked errors), in `cordon tools`,
/// or in the debug log.
#[tokio::test]
async fn secrets_never_reach_the_guest_or_the_log() {
    let upstream = Upstream::start().await;
    let config = format!(
        "[plugins.reach.config]\nbase_url = \"{}\"\n\n{}",
        upstream.base,
        api_grant("reach", &upstream.url("/api/"), &["GET"])
    );
    let env = reach_env(&config).var("CORDON_LOG", "debug");
    let no_secret = |what: &str, text: &str| {
        for secret in [ALICE_SECRET, BOB_SECRET] {
            assert!(!text.contains(secret), "{what} contains a secret:\n{text}");
        }
    };

    let (client, log) = env.stdio_client().await;
    let out = call(&client, "reach_request", req("GET", &upstream.url("/api/x"))).await;
    out.ok();
    assert_eq!(upstream.last().header("authorization"), [format!("Bearer {ALICE_SECRET}")]);
    no_secret("a granted reply", &out.raw.to_string());
    let out = call(&client, "reach_request", req("GET", &upstream.url("/elsewhere"))).await;
    out.expect_error("egress_denied", false);
    no_secret("a refusal", &out.raw.to_string());

    let out = call(&client, "reach_hunt", json!({})).await;
    let hunt = out.ok();
    no_secret("reach_hunt", &out.raw.to_string());
    assert!(!out.raw.to_string().contains("ALICE_SECRET"), "the variable is visible: {hunt}");
    assert_eq!(hunt["config"]["base_url"], upstream.base.as_str(), "the hunt reads config: {hunt}");
    let errors = hunt["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e.as_str().unwrap().starts_with("egress_denied")), "{hunt}");

    // The last call's refusal is logged last: once it is in, so is everything before it.
    let marker = upstream.url("/last-call");
    call(&client, "reach_request", req("GET", &marker)).await.expect_error("egress_denied", false);
    log.wait_for(&marker).await;
    let text = log.text();
    assert!(text.contains("DEBUG"), "the log is at debug level:\n{text}");
    no_secret("cordon's log", &text);

    let tools = env.run(&["tools"]).await;
    assert_eq!(tools.status.code(), Some(0), "{}", describe(&tools));
    no_secret("cordon tools", &describe(&tools));
}

// ---- directories -------------------------------------------------------------------------------

/// `[[plugins.reach.dirs]]` maps `<env>/shared` at `/data`.
fn dir_env(writable: bool) -> Env {
    let env = Env::new().plugin(&fixture_wasm("reach"), "reach.wasm");
    let shared = env.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("file.txt"), "from the host").unwrap();
    std::fs::write(env.path().join("outside.txt"), "outside the grant").unwrap();
    std::os::unix::fs::symlink(env.path().join("outside.txt"), shared.join("escape")).unwrap();
    let config =
        format!("[[plugins.reach.dirs]]\nhost = \"{}\"\nguest = \"/data\"\nwritable = {writable}\n", shared.display());
    env.config(&config)
}

async fn read_file(client: &Client, path: &str) -> Outcome {
    call(client, "reach_read_file", json!({"path": path})).await
}

async fn write_file(client: &Client, path: &str, content: &str) -> Outcome {
    call(client, "reach_write_file", json!({"path": path, "content": content})).await
}

/// Read-only by default: the file reads, writing fails and changes nothing on the host, and
/// nothing outside the directory is visible (not the rest of the host, not by `..`, not through
/// a symlink).
#[tokio::test]
async fn directory_grants_are_read_only_by_default() {
    let env = dir_env(false);
    let shared = env.path().join("shared");
    let (client, _log) = env.stdio_client().await;

    assert_eq!(read_file(&client, "/data/file.txt").await.ok(), &json!({"content": "from the host"}));
    let listing = call(&client, "reach_list_dir", json!({"path": "/data"})).await;
    assert_eq!(listing.ok(), &json!({"entries": ["escape", "file.txt"]}));

    write_file(&client, "/data/new.txt", "x").await.expect_error("io_error", false);
    write_file(&client, "/data/file.txt", "overwritten").await.expect_error("io_error", false);
    assert!(!shared.join("new.txt").exists());
    assert_eq!(std::fs::read_to_string(shared.join("file.txt")).unwrap(), "from the host");

    let outside = env.path().join("outside.txt").display().to_string();
    for path in ["/data/escape", "/data/../outside.txt", "/etc/passwd", &outside] {
        let out = read_file(&client, path).await;
        out.expect_error("io_error", false);
        assert!(!out.raw.to_string().contains("outside the grant"), "{path}: {}", out.raw);
    }
    // There is no `/` to list: only the preopened directory exists for the guest.
    call(&client, "reach_list_dir", json!({"path": "/"})).await.expect_error("io_error", false);
    let out = call(&client, "reach_hunt", json!({})).await;
    let hunt = out.ok();
    assert_eq!(hunt["preopens"], json!(["/data"]), "{hunt}");
    let mut files: Vec<&str> = hunt["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    files.sort_unstable();
    assert_eq!(files, [".", "/", "/data", "/data/escape", "/data/file.txt"], "{hunt}");
    assert!(!out.raw.to_string().contains("outside the grant"), "{hunt}");
}

/// `writable = true`: the guest's file appears on the host with its content.
#[tokio::test]
async fn writable_directory_grants_write_to_the_host() {
    let env = dir_env(true);
    let shared = env.path().join("shared");
    let (client, _log) = env.stdio_client().await;

    assert_eq!(write_file(&client, "/data/new.txt", "from the guest").await.ok(), &json!({"written": 14}));
    assert_eq!(std::fs::read_to_string(shared.join("new.txt")).unwrap(), "from the guest");
    assert_eq!(read_file(&client, "/data/new.txt").await.ok(), &json!({"content": "from the guest"}));
    // Writable does not widen the view.
    write_file(&client, "/data/../escaped.txt", "x").await.expect_error("io_error", false);
    assert!(!env.path().join("escaped.txt").exists());
}

// ---- integrity ---------------------------------------------------------------------------------

/// `cordon tools` shows each plugin's `sha256:` digest; pinning it (in any case) loads the
/// plugin, pinning another refuses it with both digests while the others load.
#[tokio::test]
async fn digest_pins_are_enforced() {
    let reach = sha256_hex(&std::fs::read(fixture_wasm("reach")).unwrap());
    let httpbin = sha256_hex(&std::fs::read(workspace().join("plugins/dist/httpbin.wasm")).unwrap());
    let env = |pin: &str| {
        Env::new()
            .plugin(&fixture_wasm("reach"), "reach.wasm")
            .plugin(&workspace().join("plugins/dist/httpbin.wasm"), "httpbin.wasm")
            .config(&format!("[plugins.reach]\nsha256 = \"{pin}\"\n"))
    };
    let digests = |tools: &Value| -> Vec<(String, String)> {
        tools["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_string(), p["digest"].as_str().unwrap().to_string()))
            .collect()
    };

    for pin in [reach.clone(), reach.to_uppercase()] {
        let tools = env(&pin).tools().await;
        assert_eq!(tools["errors"], json!([]), "{pin}");
        assert_eq!(
            digests(&tools),
            [("httpbin".to_string(), format!("sha256:{httpbin}")), ("reach".to_string(), format!("sha256:{reach}"))]
        );
    }

    let wrong = "0".repeat(64);
    let tools = env(&wrong).tools().await;
    assert_eq!(digests(&tools), [("httpbin".to_string(), format!("sha256:{httpbin}"))]);
    let names: Vec<&str> = tools["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["httpbin_fetch_json"]);
    let errors = tools["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["file"], "reach.wasm");
    let error = errors[0]["error"].as_str().unwrap();
    for part in ["digest mismatch", &format!("sha256:{reach}"), &format!("sha256:{wrong}")] {
        assert!(error.contains(part), "{part} not in {error}");
    }
}

// ---- the httpbin example -----------------------------------------------------------------------

/// The httpbin example against a recording upstream with a credentialed grant, over stdio as
/// alice: the upstream's JSON comes back structured and the upstream saw alice's credential;
/// a path outside the grant is `egress_denied`.
#[tokio::test]
async fn httpbin_fetches_with_the_callers_credential() {
    let upstream = Upstream::start().await;
    let config = format!(
        "[plugins.httpbin.config]\nbase_url = \"{}\"\n\n{}",
        upstream.base,
        api_grant("httpbin", &upstream.url("/api/"), &["GET"])
    );
    let env = reach_env(&config).plugin(&workspace().join("plugins/dist/httpbin.wasm"), "httpbin.wasm");
    let (client, _log) = env.stdio_client().await;

    let out = call(&client, "httpbin_fetch_json", json!({"path": "/api/items"})).await;
    let fetched = out.ok();
    assert_eq!(fetched["status"], 200, "{fetched}");
    assert_eq!(fetched["url"], upstream.url("/api/items"));
    assert_eq!(fetched["body"], upstream_reply("GET", "/api/items"));
    assert_eq!(fetched["text"], Value::Null);
    let seen = upstream.last();
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", "/api/items"));
    assert_eq!(seen.header("authorization"), [format!("Bearer {ALICE_SECRET}")]);
    assert_eq!(seen.header("accept"), ["application/json"]);

    let out = call(&client, "httpbin_fetch_json", json!({"path": "/admin"})).await;
    out.expect_error("egress_denied", false);
    assert_eq!(upstream.counts(), (1, 1));

    // Paths that servers stripping `;params`, taking `\` for `/` or decoding twice would serve
    // as `/admin`: refused before connecting, so the credential never goes with them.
    for path in ["/api/..;/admin", "/api/..%5cadmin", "/api/%252e%252e/admin"] {
        let out = call(&client, "httpbin_fetch_json", json!({"path": path})).await;
        out.expect_error("egress_denied", false);
    }
    assert_eq!(upstream.counts(), (1, 1), "{:?}", upstream.requests());
}

/// A directory grant that holds or lies inside the host's own files — the data directory (the
/// token signing key, compiled native code in the cache), the plugins folder, the config file,
/// a credential file — refuses that plugin at load, naming the path; the rest load.
#[tokio::test]
async fn directory_grants_reaching_the_hosts_own_files_are_refused() {
    type Where = fn(&Env) -> PathBuf;
    let cases: [(Where, &str); 5] = [
        (|env| env.data_dir(), "the data directory"),
        (|env| env.data_dir().join("compile-cache"), "the data directory"),
        (|env| env.path().to_path_buf(), "the data directory"),
        (|env| env.plugins_dir(), "the plugins folder"),
        (|env| env.path().join("secrets"), "a credential file"),
    ];
    for (host, what) in cases {
        let env = Env::demo().plugin(&fixture_wasm("reach"), "reach.wasm");
        let secrets = env.path().join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::create_dir_all(env.data_dir().join("compile-cache")).unwrap();
        std::fs::write(secrets.join("api-key"), "s3cret\n").unwrap();
        let host = host(&env);
        let config = format!(
            "[credentials.api]\nprincipals.local = {{ file = \"{}\" }}\n\n\
             [[plugins.reach.dirs]]\nhost = \"{}\"\nguest = \"/data\"\nwritable = true\n",
            secrets.join("api-key").display(),
            host.display()
        );
        let tools = env.config(&config).tools().await;
        let errors = tools["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{}: {tools:#}", host.display());
        let reason = errors[0]["error"].as_str().unwrap();
        assert!(reason.contains(what) && reason.contains("overlaps"), "{}: {reason}", host.display());
        let plugins: Vec<&str> =
            tools["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(plugins, ["demo"], "{tools:#}");
    }
}
