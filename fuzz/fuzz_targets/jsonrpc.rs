//! Incoming MCP messages: the input is the body of a `POST /mcp`, sent in-process through the
//! router `cordon serve` builds (`server::mcp_router`: the bearer gate with its scope check,
//! then rmcp's Streamable HTTP service, stateless with JSON responses, then `McpService` and
//! the call path). The host serves the synthesized plain component (`cordon_fuzz`), so a
//! `tools/call` reaches argument validation, the JSON → WIT conversion and a fresh instance
//! (whose dummy function traps). Everything is built once per process.
//!
//! The token depends on the input's length (a fuzzer changes it with one byte of whitespace):
//! none, alice (scope `plain_scalars`) or bob (scope `plain_lists`, `plain_nothing`).
//!
//! Invariants:
//! - a message rmcp parses re-serialises to one that parses to the same (`ClientJsonRpcMessage`);
//! - without a token the answer is 401, whatever the body;
//! - no request is answered with a server error (5xx);
//! - a call reaches a tool only inside the caller's scope (read from `/metrics` after each
//!   request: only `forbidden` may be counted for a tool outside it);
//! - a JSON answer to a request carries the request's id.
#![no_main]

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use cordon_host::auth::{hash_token, Authenticator, Gate};
use cordon_host::{Config, Cordon, Paths};
use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use rmcp::model::ClientJsonRpcMessage;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tower::ServiceExt as _;

/// (token, principal, tool patterns), each patterned list a distinct set of tools.
const TOKENS: &[(&str, &str, &[&str])] =
    &[("alice-token", "alice", &["plain_scalars"]), ("bob-token", "bob", &["plain_lists", "plain_nothing"])];

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    cordon: Arc<Cordon>,
    /// `cordon_calls_total` as last read, by (tool, outcome).
    calls: Mutex<BTreeMap<(String, String), u64>>,
    _dir: tempfile::TempDir,
}

fn config_text() -> String {
    let mut text = String::from(
        r#"
[server]
max_request_bytes = 65536
[pool]
max_instances = 4
max_memory_mb = 16
[defaults]
memory_mb = 8
max_concurrency = 2
timeout_ms = 2000
fuel = 10000000
[audit]
file = ""
[lint]
mode = "off"
[plugins.plain.idempotency]
implicit_window_s = 0
"#,
    );
    for (token, principal, tools) in TOKENS {
        text.push_str(&format!(
            "[[auth.tokens]]\nprincipal = \"{principal}\"\nsha256 = \"{}\"\ntools = {tools:?}\n",
            hash_token(token)
        ));
    }
    text
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = cordon_fuzz::scratch_dir();
        let plugins = dir.path().join("plugins");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&plugins).expect("plugins dir");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::write(plugins.join("plain.wasm"), cordon_fuzz::plain_component().expect("component")).expect("write");
        let config = Config::parse(&config_text()).expect("config");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (router, cordon) = runtime.block_on(async {
            let paths = Paths { plugins, data: data.clone(), config_file: None };
            let cordon = Cordon::start(config.clone(), paths).await.expect("start");
            let auth =
                Arc::new(Authenticator::new(&config.auth, false, &data, cordon.revocations()).expect("authenticator"));
            assert_eq!(cordon.catalog().tools.len(), 5, "the plain component's functions are served");
            let gate = Arc::new(Gate::new(auth, cordon.clone()));
            let sessions = tokio_util::sync::CancellationToken::new();
            let router = cordon::server::mcp_router(
                cordon.clone(),
                gate,
                true,
                cordon::sessions::Sessions::follow(&cordon),
                sessions,
            );
            (router, cordon)
        });
        Fixture { runtime, router, cordon, calls: Mutex::new(BTreeMap::new()), _dir: dir }
    })
}

/// `CORDON_FUZZ_DEBUG=1`: print each answer (to see what a corpus reaches).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("CORDON_FUZZ_DEBUG").is_some())
}

/// `cordon_calls_total` by (tool, outcome).
fn calls(cordon: &Cordon) -> BTreeMap<(String, String), u64> {
    let text = cordon.metrics_text().expect("metrics");
    let mut calls = BTreeMap::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("cordon_calls_total{")) {
        let (labels, count) = line.rsplit_once("} ").expect("a sample line");
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\"")).expect("label") + name.len() + 2;
            labels[start..].split('"').next().expect("label value").to_string()
        };
        calls.insert((label("tool"), label("outcome")), count.parse().expect("a count"));
    }
    calls
}

fuzz_target!(|data: &[u8]| {
    // 1. rmcp's parse, as `/mcp` and stdio both do it.
    let parsed = serde_json::from_slice::<ClientJsonRpcMessage>(data).ok();
    if let Some(message) = &parsed {
        let value = serde_json::to_value(message).expect("a parsed message serialises");
        let again: ClientJsonRpcMessage = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("re-serialised message refused: {e}\n{value}"));
        assert_eq!(serde_json::to_value(&again).expect("serialises"), value, "message changed on a round trip");
    }

    // 2. The same bytes through the HTTP stack.
    let fx = fixture();
    let token = match data.len() % 3 {
        0 => None,
        n => Some(TOKENS[n - 1]),
    };
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/mcp")
        .header(header::HOST, "localhost:8787")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some((secret, _, _)) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {secret}"));
    }
    let request = request.body(Body::from(data.to_vec())).expect("request");
    let (status, content_type, body) = fx.runtime.block_on(async {
        let response = fx.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
        let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await
            .expect("the response ends")
            .expect("the response body reads")
            .to_bytes();
        (status, content_type, body)
    });
    let shown = String::from_utf8_lossy(&body);
    if debug() {
        eprintln!("{:?} -> {status} {content_type:?} {shown}", token.map(|t| t.1));
    }
    assert!(!status.is_server_error(), "{status}: {shown}");
    let Some((_, principal, scope)) = token else {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{shown}");
        return;
    };

    // Calls that passed the scope check since the last request: only in this caller's scope.
    let now = calls(&fx.cordon);
    let mut before = fx.calls.lock().unwrap_or_else(|p| p.into_inner());
    for ((tool, outcome), count) in &now {
        let grew = *count > before.get(&(tool.clone(), outcome.clone())).copied().unwrap_or(0);
        if grew && outcome != "forbidden" {
            assert!(scope.contains(&tool.as_str()), "{principal} reached {tool} ({outcome}) outside its scope");
        }
    }
    *before = now;

    // A JSON answer to a request carries its id.
    if let (Some(ClientJsonRpcMessage::Request(request)), true) =
        (&parsed, status == StatusCode::OK && content_type.as_deref() == Some("application/json"))
    {
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("a JSON answer is JSON");
        let id = serde_json::to_value(&request.id).expect("id");
        assert_eq!(answer.get("id"), Some(&id), "{shown}");
    }
});
