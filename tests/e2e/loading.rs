//! Loading plugins: the compile cache across restarts, and broken, misnamed or colliding files
//! refused one by one while the rest keep serving.

mod common;

use common::*;
use serde_json::{json, Value};

/// `name → compile_cache` of every loaded plugin, and `name → digest`.
fn cache_outcomes(tools: &Value) -> Vec<(String, String, String)> {
    tools["plugins"]
        .as_array()
        .expect("plugins array")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["compile_cache"].as_str().unwrap().to_string(),
                p["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_all(outcomes: &[(String, String, String)], expected: &str) {
    assert!(!outcomes.is_empty());
    for (name, outcome, _) in outcomes {
        assert_eq!(outcome, expected, "plugin {name}: {outcomes:?}");
    }
}

fn cache_entries(env: &Env) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(env.data_dir().join("compile-cache"))
        .expect("compile-cache dir")
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test]
async fn compile_cache_is_reused_by_the_next_run() {
    let env = Env::demo().plugin(&fixture_wasm("hostile"), "hostile.wasm").plugin(&fixture_wasm("twins"), "x.wasm");

    let first = cache_outcomes(&env.tools().await);
    let names: Vec<&str> = first.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["demo", "hostile", "x"]);
    assert_all(&first, "miss");
    for (name, _, digest) in &first {
        let hex = digest.strip_prefix("sha256:").expect("sha256: prefix");
        assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "{name}: {digest}");
    }
    assert_eq!(cache_entries(&env).len(), 3, "one entry per component");

    let second = cache_outcomes(&env.tools().await);
    assert_all(&second, "hit");
    assert_eq!(
        first.iter().map(|(n, _, d)| (n, d)).collect::<Vec<_>>(),
        second.iter().map(|(n, _, d)| (n, d)).collect::<Vec<_>>(),
        "same plugins, same digests"
    );

    // Code loaded from the cache runs.
    let out = env.run(&["call", "demo_echo", r#"{"text":"cached"}"#]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(Outcome::from_wire(&result).ok(), &json!({"text": "cached"}));

    // The cache is keyed by content: the same bytes under another name hit.
    let env = env.plugin(&demo_wasm(), "copy.wasm");
    let third = cache_outcomes(&env.tools().await);
    assert!(third.contains(&("copy".into(), "hit".into(), first[0].2.clone())), "{third:?}");
}

#[tokio::test]
async fn corrupt_cache_entries_are_recompiled() {
    let env = Env::demo();
    assert_all(&cache_outcomes(&env.tools().await), "miss");
    let entries = cache_entries(&env);
    assert_eq!(entries.len(), 1);
    for entry in &entries {
        std::fs::write(entry, b"not compiled code").unwrap();
    }
    // Unusable entry: compiled again, and the plugin still serves.
    assert_all(&cache_outcomes(&env.tools().await), "miss");
    let out = env.run(&["call", "demo_add", r#"{"a":1,"b":2}"#]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // ... and the entry was replaced.
    assert_all(&cache_outcomes(&env.tools().await), "hit");
}

/// The `loaded plugin` log line of `cordon serve` for `plugin`.
fn loaded_line(log: &str, plugin: &str) -> String {
    log.lines()
        .find(|l| l.contains("loaded plugin") && l.contains(&format!("plugin={plugin} ")))
        .unwrap_or_else(|| panic!("no loaded-plugin line for {plugin}:\n{log}"))
        .to_string()
}

#[tokio::test]
async fn serve_restart_uses_the_compile_cache() {
    let env = Env::demo().plugin(&fixture_wasm("hostile"), "hostile.wasm");
    let server = env.spawn_http(&[]).await;
    for plugin in ["demo", "hostile"] {
        let line = loaded_line(&server.log.text(), plugin);
        assert!(line.contains("compile_cache=\"miss\""), "{line}");
    }
    server.stop().await;

    let server = env.spawn_http(&[]).await;
    for plugin in ["demo", "hostile"] {
        let line = loaded_line(&server.log.text(), plugin);
        assert!(line.contains("compile_cache=\"hit\""), "{line}");
    }
    let client = server.client().await;
    assert_echo(&client, "served from cached code").await;
}

/// The truncated half of demo.wasm.
fn half_of_demo() -> Vec<u8> {
    let bytes = std::fs::read(demo_wasm()).unwrap();
    bytes[..bytes.len() / 2].to_vec()
}

/// A plugins folder full of bad files next to two good plugins.
fn bad_files_env() -> Env {
    let long_name = format!("{}.wasm", "a".repeat(60));
    let env = Env::demo()
        .plugin_bytes("junk.wasm", b"definitely not WebAssembly")
        .plugin_bytes("half.wasm", &half_of_demo())
        .plugin_bytes("core.wasm", b"\0asm\x01\0\0\0")
        .plugin(&fixture_wasm("badimport"), "badimport.wasm")
        .plugin(&fixture_wasm("badname"), "badname.wasm")
        .plugin(&fixture_wasm("twins"), "x.wasm")
        .plugin(&fixture_wasm("twins"), "x_a.wasm")
        .plugin(&demo_wasm(), &long_name)
        .plugin(&demo_wasm(), "with space.wasm")
        .plugin_bytes("README.txt", b"not a plugin: ignored");
    // A folder named like a plugin is ignored too.
    std::fs::create_dir(env.plugins_dir().join("folder.wasm")).unwrap();
    env
}

/// (file, stable words of the reason) for every file that must be refused.
fn expected_refusals() -> Vec<(String, Vec<&'static str>)> {
    let long = "a".repeat(60);
    vec![
        ("junk.wasm".into(), vec!["not a WebAssembly file"]),
        ("half.wasm".into(), vec!["not a valid component"]),
        ("core.wasm".into(), vec!["a core module that cannot be wrapped", "describe"]),
        ("badimport.wasm".into(), vec!["cordon:unknown/thing@0.1.0"]),
        ("badname.wasm".into(), vec!["\"not a valid name!\"", "badname_not a valid name!", "64"]),
        ("x_a.wasm".into(), vec!["x_a_b", "collides", "plugin \"x\"", "x.wasm"]),
        (format!("{long}.wasm"), vec!["would be published as", "64"]),
        ("with space.wasm".into(), vec!["plugin name", "with space", "64"]),
    ]
}

#[tokio::test]
async fn bad_files_are_refused_one_by_one() {
    let env = bad_files_env();
    let tools = env.tools().await;

    let loaded: Vec<&str> = tools["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(loaded, ["demo", "x"]);
    let mut names: Vec<&str> = tools["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["demo_add", "demo_divide", "demo_echo", "demo_greet", "demo_work", "x_a_b", "x_b"]);
    // `x_a_b` is x's tool `a_b`, not x_a's `b`.
    let x_a_b = tools["tools"].as_array().unwrap().iter().find(|t| t["name"] == "x_a_b").unwrap();
    assert_eq!(x_a_b["plugin"], "x");

    let errors = tools["errors"].as_array().unwrap();
    let expected = expected_refusals();
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (file, words) in expected {
        let error = errors
            .iter()
            .find(|e| e["file"] == file.as_str())
            .unwrap_or_else(|| panic!("{file} not refused: {errors:#?}"));
        let reason = error["error"].as_str().unwrap();
        for word in words {
            assert!(reason.contains(word), "{file}: {word:?} not in {reason:?}");
        }
        assert!(!reason.contains(env.path().to_str().unwrap()), "{file}: the reason leaks a host path: {reason}");
    }
}

#[tokio::test]
async fn bad_files_do_not_stop_the_server() {
    let env = bad_files_env();
    let server = env.spawn_http(&[]).await;
    let log = server.log.text();
    for (file, _) in expected_refusals() {
        assert!(
            log.lines().any(|l| l.contains("plugin refused") && l.contains(&file)),
            "{file} refusal not logged:\n{log}"
        );
    }
    let client = server.client().await;
    let tools = list_tools(&client).await;
    assert_eq!(tools.len(), 7, "{:?}", tools.keys());
    assert_echo(&client, "despite the junk").await;
    let b = call(&client, "x_b", json!({})).await;
    assert_eq!(b.texts, ["b"]);
    let a_b = call(&client, "x_a_b", json!({})).await;
    assert_eq!(a_b.texts, ["a_b"], "x_a_b is served by x.wasm");

    let health: Value =
        guard("healthz", reqwest::get(format!("{}/healthz", server.base))).await.unwrap().json().await.unwrap();
    assert_eq!(
        health,
        json!({"status": "ok", "plugins": 2, "tools": 7, "refused": 8, "calls_in_flight": 0, "listen_streams": 0})
    );
}
