//! Plugins written in C and Zig, end to end: the examples `c-units` (clang + wasi-libc) and
//! `zig-text` (zig), both on the C helper `plugins/c-sdk`, are WASI preview-1 *core modules*.
//! Dropped into the plugins folder, each is wrapped into a component at load, lists its tools,
//! answers a call, reports its own typed `call-error`, and (Zig) reports progress to the client.
//!
//! `make plugins` builds both into `plugins/dist/`.

mod common;

use common::*;
use serde_json::{json, Value};

/// `plugins/dist/<name>.wasm`, checked to be a core module (the host wraps it, not the build).
fn core_example(name: &str) -> std::path::PathBuf {
    let path = example_wasm(name);
    let bytes = std::fs::read(&path).expect("read the example");
    assert_eq!(&bytes[..8], b"\0asm\x01\0\0\0", "{name} must be a core module");
    path
}

#[tokio::test]
async fn a_c_plugin_converts_and_reports_a_typed_error() {
    let env = Env::new().plugin(&core_example("c-units"), "units.wasm");
    let (client, log) = env.stdio_client().await;

    let tools = list_tools(&client).await;
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["units_convert", "units_list"], "{tools:?}");
    let convert = &tools["units_convert"];
    assert_eq!(convert["title"], "Convert units", "{convert}");
    assert_eq!(convert["inputSchema"]["required"], json!(["value", "from", "to"]), "{convert}");
    assert!(convert["outputSchema"]["properties"]["unit"].is_object(), "{convert}");
    assert_eq!(convert["annotations"]["readOnlyHint"], true, "{convert}");
    assert_eq!(convert["annotations"]["destructiveHint"], false, "{convert}");
    assert!(tools["units_list"].get("outputSchema").is_none_or(Value::is_null), "{:?}", tools["units_list"]);

    // Structured output and text, built with the helper; a JSON-escaped argument read back.
    let out = call(&client, "units_convert", json!({"value": 3, "from": "mi", "to": "km"})).await;
    let result = out.ok();
    assert!((result["value"].as_f64().unwrap() - 4.828032).abs() < 1e-9, "{result}");
    assert_eq!(result["unit"], "km", "{result}");
    assert!(out.texts.iter().any(|t| t.contains("3 mi = 4.828032 km")), "{:?}", out.texts);
    let out = call(&client, "units_convert", json!({"value": 212, "from": "F", "to": "C"})).await;
    assert!((out.ok()["value"].as_f64().unwrap() - 100.0).abs() < 1e-9, "{}", out.raw);
    // The `log` host import reached the host's log.
    log.wait_for("convert 3 mi to km").await;

    // Text only.
    let out = call(&client, "units_list", json!({})).await;
    assert!(!out.is_error, "{}", out.raw);
    assert!(out.texts[0].contains("length: mm cm m km"), "{:?}", out.texts);

    // The plugin's typed errors.
    let out = call(&client, "units_convert", json!({"value": 1, "from": "kg", "to": "km"})).await;
    let error = out.expect_error("incompatible_units", false);
    assert_eq!(error["message"], "cannot convert kg (mass) to km (length)", "{error}");
    let out = call(&client, "units_convert", json!({"value": 1, "from": "m", "to": "fath\"om"})).await;
    let error = out.expect_error("unknown_unit", false);
    assert!(error["message"].as_str().unwrap().contains("fath\"om"), "{error}");
    client.cancel().await.expect("stop the server");

    // The `config` host import: an operator setting changes the result's precision.
    let env = env.config("[plugins.units.config]\ndigits = \"3\"\n");
    let (client, _log) = env.stdio_client().await;
    let out = call(&client, "units_convert", json!({"value": 3, "from": "mi", "to": "km"})).await;
    assert_eq!(out.ok()["value"].as_f64(), Some(4.83), "{}", out.raw);
}

#[tokio::test]
async fn a_zig_plugin_counts_and_reports_a_typed_error() {
    let env = Env::new().plugin(&core_example("zig-text"), "text.wasm");
    let (client, log) = env.stdio_client().await;

    let tools = list_tools(&client).await;
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["text_repeat", "text_stats"], "{tools:?}");
    assert_eq!(tools["text_stats"]["annotations"]["idempotentHint"], true, "{:?}", tools["text_stats"]);

    // Non-ASCII text: bytes and code points differ.
    let out = call(&client, "text_stats", json!({"text": "héllo wörld\nzig \u{1F980}"})).await;
    assert_eq!(out.ok(), &json!({"bytes": 22, "chars": 17, "words": 4, "lines": 2}), "{}", out.raw);

    let out = call(&client, "text_repeat", json!({"text": "ab", "times": 3000})).await;
    assert_eq!(out.texts, ["ab".repeat(3000)], "{}", out.raw.to_string().len());
    let out = call(&client, "text_repeat", json!({"text": "ab", "times": 3})).await;
    assert!(!out.is_error, "{}", out.raw);
    assert_eq!(out.texts, ["ababab"], "{}", out.raw);
    log.wait_for("repeated 2 bytes 3 times").await;

    let out = call(&client, "text_repeat", json!({"text": "abcd", "times": 20000})).await;
    let error = out.expect_error("too_large", false);
    assert!(error["message"].as_str().unwrap().contains("80000 bytes"), "{error}");
}

/// A Zig plugin's `cordon_progress` calls reach the client as `notifications/progress` with the
/// request's token, in order, before the result (stateless HTTP: one SSE response per request).
#[tokio::test]
async fn a_zig_plugin_reports_progress_to_the_client() {
    let env = Env::new().plugin(&core_example("zig-text"), "text.wasm");
    let server = env.spawn_http(&["--stateless"]).await;
    let mut request = call_request(3, "text_repeat", json!({"text": "ab", "times": 3000}));
    request["params"]["_meta"] = json!({"progressToken": "zig-1"});
    let response = post(&server.url, &request.to_string(), &[]).await;
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let sent = messages(&content_type, &response.text().await.unwrap());
    let (result, notes) = sent.split_last().expect("a response");
    assert_eq!(result["id"], 3, "the result comes last: {sent:#?}");
    assert_eq!(result["result"]["isError"], false, "{result}");
    // The plugin reports every 1024 repetitions.
    let progress: Vec<(f64, f64)> = notes
        .iter()
        .map(|n| {
            assert_eq!(n["method"], "notifications/progress", "{n}");
            assert_eq!(n["params"]["progressToken"], "zig-1", "{n}");
            (n["params"]["progress"].as_f64().unwrap(), n["params"]["total"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(progress, [(1024.0, 3000.0), (2048.0, 3000.0)]);
}
