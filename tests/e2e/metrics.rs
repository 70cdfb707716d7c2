//! `/metrics`: counters move by exactly what the calls did, and the endpoint is behind the same
//! bearer authentication as `/mcp`.

mod common;

use common::*;
use serde_json::json;

/// One scrape, which must succeed, as text.
async fn scrape(server: &HttpServer, headers: &[(&str, &str)]) -> String {
    let response = get(&format!("{}/metrics", server.base), headers).await;
    assert_eq!(response.status(), 200, "GET /metrics");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text
}

/// One ok call, one plugin error, one host error, one refused egress and a keyed call made
/// twice (a miss, then a replayed hit): each counter moves by exactly that, the latency histogram
/// counts each call, fuel is counted for calls that ran, and the gauges describe the catalog.
#[tokio::test]
async fn counters_move_by_exactly_the_calls_made() {
    let env = Env::demo().plugin(&fixture_wasm("reach"), "reach.wasm").config(
        "[plugins.demo.idempotency]\nstore_read_only = true\nimplicit_window_s = 0\n\n\
         [plugins.reach.idempotency]\nimplicit_window_s = 0\n",
    );
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    let before = scrape(&server, &[]).await;
    let calls = |text: &str, tool: &str, outcome: &str| {
        sample(text, "cordon_calls_total", &[("tool", tool), ("outcome", outcome)])
    };

    assert_echo(&client, "counted").await;
    call(&client, "demo_divide", json!({"a": 1, "b": 0})).await.expect_error("division_by_zero", false);
    call(&client, "demo_add", json!({"a": "one", "b": 2})).await.expect_error("invalid_arguments", false);
    let refused = call(&client, "reach_request", json!({"method": "GET", "url": "http://127.0.0.1:9/x"})).await;
    refused.expect_error("egress_denied", false);
    let meta = json!({"cordon/idempotency-key": "metrics-key-1"});
    let first = call_with_meta(&client, "demo_add", json!({"a": 2, "b": 40}), meta.clone()).await;
    let replay = call_with_meta(&client, "demo_add", json!({"a": 2, "b": 40}), meta).await;
    assert_eq!(first.ok(), replay.ok());

    let after = scrape(&server, &[]).await;
    let delta = |f: &dyn Fn(&str) -> f64| f(&after) - f(&before);
    assert_eq!(delta(&|t| calls(t, "demo_echo", "ok")), 1.0, "{after}");
    assert_eq!(delta(&|t| calls(t, "demo_divide", "plugin_error")), 1.0, "{after}");
    assert_eq!(delta(&|t| calls(t, "demo_add", "invalid_arguments")), 1.0, "{after}");
    assert_eq!(delta(&|t| calls(t, "demo_add", "ok")), 2.0, "{after}");
    assert_eq!(delta(&|t| calls(t, "reach_request", "egress_denied")), 1.0, "{after}");
    let idempotency = |t: &str, result: &str| sample(t, "cordon_idempotency_total", &[("result", result)]);
    assert_eq!(delta(&|t| idempotency(t, "miss")), 1.0, "{after}");
    assert_eq!(delta(&|t| idempotency(t, "hit")), 1.0, "{after}");
    let denied = |t: &str| sample(t, "cordon_egress_denied_total", &[("plugin", "reach")]);
    assert_eq!(delta(&denied), 1.0, "{after}");
    let latency_count = |t: &str, tool: &str| sample(t, "cordon_call_duration_seconds_count", &[("tool", tool)]);
    assert_eq!(delta(&|t| latency_count(t, "demo_echo")), 1.0, "{after}");
    assert_eq!(delta(&|t| latency_count(t, "demo_add")), 3.0, "{after}");
    assert!(delta(&|t| sample(t, "cordon_fuel_consumed_total", &[("tool", "demo_echo")])) > 0.0, "{after}");

    assert_eq!(sample(&after, "cordon_calls_in_flight", &[]), 0.0, "{after}");
    assert_eq!(sample(&after, "cordon_instances_in_use", &[]), 0.0, "{after}");
    assert_eq!(sample(&after, "cordon_plugins_loaded", &[]), 2.0, "{after}");
    let listed = list_tools(&client).await.len() as f64;
    assert_eq!(sample(&after, "cordon_tools_served", &[]), listed, "{after}");
    let compiled = sample(&after, "cordon_compile_cache_total", &[("result", "hit")])
        + sample(&after, "cordon_compile_cache_total", &[("result", "miss")]);
    assert_eq!(compiled, 2.0, "one cache look-up per plugin loaded: {after}");
}

/// With bearer authentication on, `/metrics` needs a valid token (401 otherwise, with the same
/// challenge as `/mcp`) of a principal in `[auth] metrics_principals` — a caller's valid token
/// for tools is 403 — and an unknown `Host` is refused.
#[tokio::test]
async fn metrics_need_a_bearer_token_when_auth_is_on() {
    // As deploy/README.md suggests: Prometheus's own token, scoped to a pattern no tool matches.
    let config = format!(
        "[auth]\nmetrics_principals = [\"prometheus\"]\n\n\
         [[auth.tokens]]\nprincipal = \"prometheus\"\nsha256 = \"{}\"\ntools = [\"-\"]\n\n{}",
        sha256_hex(token("prometheus").as_bytes()),
        tokens(&["alice"])
    );
    let env = Env::demo().config(&config);
    let server = env.spawn_http_with(&[], &[]).await;
    let url = format!("{}/metrics", server.base);

    let missing = get(&url, &[]).await;
    assert_eq!(missing.status(), 401);
    let challenge = missing.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert_eq!(get(&url, &[("authorization", "Bearer not-a-token")]).await.status(), 401);
    let caller = format!("Bearer {}", token("alice"));
    assert_eq!(get(&url, &[("authorization", &caller)]).await.status(), 403, "a caller's token is not a scraper's");

    let bearer = format!("Bearer {}", token("prometheus"));
    let text = scrape(&server, &[("authorization", &bearer)]).await;
    assert_eq!(sample(&text, "cordon_plugins_loaded", &[]), 1.0, "{text}");

    let rebound = get(&url, &[("authorization", &bearer), ("host", "evil.example")]).await;
    assert_eq!(rebound.status(), 403, "a Host outside [server] allowed_hosts");
}

/// Resource reads and prompt renders run guests like tool calls, and are counted like them: by
/// method, plugin and outcome (never by URI, which the caller picks), with their fuel and the
/// outbound requests their grants refused.
#[tokio::test]
async fn reads_and_renders_are_counted() {
    let (base, _seen) = counting_upstream().await;
    let env = fetcher_env(&base, "granted", "");
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    let read = |uri: &str| {
        let params: rmcp::model::ReadResourceRequestParams = serde_json::from_value(json!({"uri": uri})).unwrap();
        client.read_resource(params)
    };
    guard("a granted read", read("fetch://page/granted")).await.expect("the read succeeds");
    assert!(guard("a refused read", read("fetch://page/secret")).await.is_err());
    let params: rmcp::model::GetPromptRequestParams =
        serde_json::from_value(json!({"name": "fetcher_fetch", "arguments": {"name": "granted"}})).unwrap();
    guard("a render", client.get_prompt(params)).await.expect("the render succeeds");

    let text = scrape(&server, &[]).await;
    let offers = |method: &str, outcome: &str| {
        sample(&text, "cordon_offer_calls_total", &[("method", method), ("plugin", "fetcher"), ("outcome", outcome)])
    };
    assert_eq!(offers("resources/read", "ok"), 1.0, "{text}");
    assert_eq!(offers("prompts/get", "ok"), 1.0, "{text}");
    let failed_reads: f64 = text
        .lines()
        .filter(|l| l.starts_with("cordon_offer_calls_total{") && l.contains("method=\"resources/read\""))
        .filter(|l| !l.contains("outcome=\"ok\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    assert_eq!(failed_reads, 1.0, "{text}");
    assert!(!text.contains("fetch://"), "no URI is a label: {text}");
    assert_eq!(sample(&text, "cordon_egress_denied_total", &[("plugin", "fetcher")]), 1.0, "{text}");
    assert!(sample(&text, "cordon_offer_fuel_consumed_total", &[("plugin", "fetcher")]) > 0.0, "{text}");
}
