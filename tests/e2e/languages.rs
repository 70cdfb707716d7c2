//! The same plugin in six languages, end to end: `rust-weather` (the Rust SDK),
//! `python-weather` (componentize-py), `js-weather` (componentize-js), `c-weather` (C on the
//! C helper, a preview-1 core module the host wraps), `zig-weather` (Zig on the same helper) and
//! `go-weather` (Go's wasip1 target on the Go helper, also a core module the host wraps)
//! implement the same two tools. One scenario runs against each in the real `cordon`: they list
//! the same schemas and annotations, answer a call, report the same typed error, and make an
//! outbound HTTP GET through a grant to a local upstream, which is refused when not granted.
//! Passing it for all six is what "behaves identically under Cordon" means here.
//!
//! `make plugins` builds them all into `plugins/dist/`. The Python component is large and slow to
//! compile, so each language gets one data directory (its compile cache) for all its servers.

mod common;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

// ---- a recording upstream ----------------------------------------------------------------------

/// One request as the upstream received it: method, path with query, and its `accept` header.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    accept: Option<String>,
}

type Requests = Arc<Mutex<Vec<Seen>>>;

/// A weather API on `127.0.0.1:0` recording every request. `/v1/current?city=Atlantis` fails
/// with 503; any other path answers [`weather_reply`].
struct Upstream {
    /// `http://127.0.0.1:PORT`.
    base: String,
    requests: Requests,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What the upstream answers to a request for `path`.
fn weather_reply(path: &str) -> Value {
    json!({"temperature_c": 21.5, "sky": "clear", "path": path})
}

async fn record(State(requests): State<Requests>, request: Request) -> Response {
    let path = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let accept = request.headers().get("accept").and_then(|v| v.to_str().ok()).map(str::to_owned);
    requests.lock().unwrap().push(Seen { method: request.method().to_string(), path: path.clone(), accept });
    if path.ends_with("city=Atlantis") {
        return (StatusCode::SERVICE_UNAVAILABLE, "sunk").into_response();
    }
    Json(weather_reply(&path)).into_response()
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
        let base = format!("http://{}", listener.local_addr().expect("upstream address"));
        let requests = Requests::default();
        let app = Router::new().fallback(record).with_state(requests.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("upstream serves") });
        Upstream { base, requests, server }
    }

    fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }
}

// ---- the scenario, once per language -----------------------------------------------------------

/// Config for `plugin`: the upstream as its base URL, granted for `GET <base>/v1/` when `granted`.
fn config(plugin: &str, upstream: &Upstream, granted: bool) -> String {
    let mut toml = format!("{PATIENT}\n[plugins.{plugin}.config]\nbase_url = \"{}\"\n", upstream.base);
    if granted {
        toml.push_str(&format!(
            "\n[[plugins.{plugin}.http.grants]]\nurl = \"{}/v1/\"\nmethods = [\"GET\"]\n",
            upstream.base
        ));
    }
    toml
}

/// Loads `plugins/dist/<plugin>.wasm` and runs every check against it: one server with the grant,
/// then one without (same data dir, so the component is compiled once).
async fn exercise(plugin: &str) {
    let upstream = Upstream::start().await;
    let env =
        Env::new().plugin(&example_wasm(plugin), &format!("{plugin}.wasm")).config(&config(plugin, &upstream, true));
    let (client, log) = env.stdio_client().await;
    let convert = format!("{plugin}_convert");
    let current = format!("{plugin}_current");

    // The helper published both tools, with the schemas and annotations it was given or derived.
    let tools = list_tools(&client).await;
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, [convert.as_str(), current.as_str()], "{tools:?}");
    let schema = &tools[&convert]["inputSchema"];
    assert_eq!(schema["type"], "object", "{schema}");
    assert_eq!(schema["additionalProperties"], false, "{schema}");
    assert_eq!(schema["properties"]["value"]["type"], "number", "{schema}");
    assert_eq!(schema["properties"]["from_unit"]["enum"], json!(["celsius", "fahrenheit", "kelvin"]), "{schema}");
    let mut required: Vec<&str> =
        schema["required"].as_array().expect("required").iter().filter_map(Value::as_str).collect();
    required.sort_unstable();
    assert_eq!(required, ["from_unit", "to_unit", "value"], "{schema}");
    assert!(tools[&convert]["outputSchema"]["properties"]["unit"].is_object(), "{:?}", tools[&convert]);
    assert_eq!(tools[&convert]["annotations"]["readOnlyHint"], true, "{:?}", tools[&convert]);
    assert_eq!(tools[&current]["inputSchema"]["required"], json!(["city"]), "{:?}", tools[&current]);
    assert_eq!(tools[&current]["annotations"]["openWorldHint"], true, "{:?}", tools[&current]);

    // A successful call with structured output.
    let out = call(&client, &convert, json!({"value": 100, "from_unit": "celsius", "to_unit": "fahrenheit"})).await;
    let converted = out.ok();
    assert_eq!(converted["value"].as_f64(), Some(212.0), "{converted}");
    assert_eq!(converted["unit"], "fahrenheit", "{converted}");

    // The plugin's own typed error.
    let out = call(&client, &convert, json!({"value": -300, "from_unit": "celsius", "to_unit": "kelvin"})).await;
    let error = out.expect_error("below_absolute_zero", false);
    assert!(error["message"].as_str().unwrap().contains("absolute zero"), "{error}");

    // Arguments outside the derived schema never reach the guest.
    let out = call(&client, &convert, json!({"value": 1, "from_unit": "rankine", "to_unit": "kelvin"})).await;
    out.expect_error("invalid_arguments", false);

    // An outbound GET through the grant: the upstream saw it, the result carries its answer.
    let out = call(&client, &current, json!({"city": "Lisbon"})).await;
    let path = "/v1/current?city=Lisbon";
    let result = out.ok();
    assert_eq!(result["city"], "Lisbon", "{result}");
    assert_eq!(result["source"], format!("{}{path}", upstream.base), "{result}");
    assert_eq!(result["weather"], weather_reply(path), "{result}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", path));
    assert_eq!(seen[0].accept.as_deref(), Some("application/json"));
    // The `log` helper reached the host's log.
    log.wait_for("asks for the weather in Lisbon").await;

    // An upstream 5xx becomes the helper's retryable `upstream_error`.
    call(&client, &current, json!({"city": "Atlantis"})).await.expect_error("upstream_error", true);
    assert_eq!(upstream.requests().len(), 2);

    client.cancel().await.expect("stop the first server");

    // Without the grant, the same call is refused before anything reaches the upstream.
    let env = env.config(&config(plugin, &upstream, false));
    let (client, _log) = env.stdio_client().await;
    let out = call(&client, &current, json!({"city": "Lisbon"})).await;
    let error = out.expect_error("egress_denied", false);
    assert!(error["message"].as_str().unwrap().contains(&upstream.base), "{error}");
    assert_eq!(upstream.requests().len(), 2, "a refused request reached the upstream");
    client.cancel().await.expect("stop the second server");
}

#[tokio::test]
async fn a_python_plugin_calls_errs_and_reaches_out_only_where_granted() {
    exercise("python-weather").await;
}

#[tokio::test]
async fn a_javascript_plugin_calls_errs_and_reaches_out_only_where_granted() {
    exercise("js-weather").await;
}

#[tokio::test]
async fn a_rust_plugin_calls_errs_and_reaches_out_only_where_granted() {
    exercise("rust-weather").await;
}

#[tokio::test]
async fn a_c_plugin_calls_errs_and_reaches_out_only_where_granted() {
    exercise("c-weather").await;
}

#[tokio::test]
async fn a_zig_plugin_calls_errs_and_reaches_out_only_where_granted() {
    exercise("zig-weather").await;
}

#[tokio::test]
async fn a_go_plugin_calls_errs_and_reaches_out_only_where_granted() {
    exercise("go-weather").await;
}
