//! The command line: `cordon tools`, `cordon call` exit codes, config-file errors, and what
//! `cordon serve` refuses.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Output;

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(out)))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
}

#[tokio::test]
async fn tools_prints_every_tool_and_plugin() {
    let env = Env::demo().plugin(&fixture_wasm("hostile"), "hostile.wasm");
    let tools = env.tools().await;
    assert_eq!(tools["errors"], json!([]));
    let plugins = tools["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 2);
    assert_eq!(plugins[0]["name"], "demo");
    assert_eq!(plugins[0]["file"], "demo.wasm");
    assert_eq!(plugins[1]["name"], "hostile");

    let list = tools["tools"].as_array().unwrap();
    assert_eq!(list.len(), 14);
    for tool in list {
        for key in ["name", "plugin", "title", "description", "inputSchema", "outputSchema", "annotations"] {
            assert!(tool.get(key).is_some(), "{key} missing: {tool}");
        }
        let name = tool["name"].as_str().unwrap();
        let plugin = tool["plugin"].as_str().unwrap();
        assert!(name.starts_with(&format!("{plugin}_")), "{name} of {plugin}");
        assert_eq!(tool["inputSchema"]["additionalProperties"], json!(false));
    }
    let echo = list.iter().find(|t| t["name"] == "demo_echo").unwrap();
    assert_eq!(echo["title"], "Echo");
    assert_eq!(echo["annotations"]["readOnlyHint"], json!(true));
    assert_eq!(echo["outputSchema"]["type"], "object");
}

#[tokio::test]
async fn call_exit_codes() {
    let env = Env::demo();

    // 0: success, the MCP result on stdout.
    let out = env.run(&["call", "demo_echo", r#"{"text":"cli"}"#]).await;
    assert_exit(&out, 0);
    let result = Outcome::from_wire(&stdout_json(&out));
    assert_eq!(result.ok(), &json!({"text": "cli"}));
    assert_eq!(result.texts[0], "cli");

    // 1: a tool error, still printed as the MCP result.
    let out = env.run(&["call", "demo_divide", r#"{"a":1,"b":0}"#]).await;
    assert_exit(&out, 1);
    Outcome::from_wire(&stdout_json(&out)).expect_error("division_by_zero", false);

    let out = env.run(&["call", "demo_add", r#"{"a":"x","b":1}"#]).await;
    assert_exit(&out, 1);
    let result = Outcome::from_wire(&stdout_json(&out));
    let error = result.expect_error("invalid_arguments", false);
    assert_eq!(error["violations"][0]["pointer"], "/a");

    // Arguments default to `{}`, which lacks echo's `text`.
    let out = env.run(&["call", "demo_echo"]).await;
    assert_exit(&out, 1);
    Outcome::from_wire(&stdout_json(&out)).expect_error("invalid_arguments", false);

    // 2: usage errors, explained on stderr, nothing on stdout.
    for (args, words) in [
        (&["call", "demo_nope", "{}"][..], &["unknown tool", "demo_nope"][..]),
        (&["call", "demo_echo", "{not json"], &["not valid JSON"]),
        (&["call", "demo_echo", "[1, 2]"], &["JSON object"]),
        (&["call", "demo_echo", "\"text\""], &["JSON object"]),
        (&["frobnicate"], &["frobnicate"]),
    ] {
        let out = env.run(args).await;
        assert_exit(&out, 2);
        assert!(out.stdout.is_empty(), "{args:?}: {}", describe(&out));
        for word in words {
            assert!(stderr(&out).contains(word), "{args:?}: {}", describe(&out));
        }
    }
}

/// A bad config file stops every command with exit 2 and a message naming the file, the key
/// and, for parse errors, the line.
#[tokio::test]
async fn bad_config_is_a_usage_error() {
    let cases: [(&str, &[&str]); 4] = [
        ("[defaults]\nfuel = 1000000\nfule = 2\n", &["unknown field", "fule", "line 3"]),
        (
            "[server]\nallowed_hosts = [\"localhost\"]\n\n[plugins.demo.limits]\ntimeout_ms = \"soon\"\n",
            &["timeout_ms", "line 5", "invalid type"],
        ),
        ("[plugins.demo.limits]\nmemory_mb = 1024\n", &["[plugins.demo]", "memory_mb = 1024", "max_memory_mb = 512"]),
        ("[surprise]\nkey = 1\n", &["surprise", "line 1"]),
    ];
    for (toml, words) in cases {
        let env = Env::demo().config(toml);
        let path = env.config_path();
        for args in [
            &["tools"][..],
            &["call", "demo_echo", r#"{"text":"x"}"#],
            &["serve", "--stdio"],
            &["serve", "--listen", "127.0.0.1:0"],
        ] {
            let out = env.run(args).await;
            assert_exit(&out, 2);
            let err = stderr(&out);
            assert!(
                err.contains("error: invalid config file") && err.contains(path.to_str().unwrap()),
                "{args:?} with {toml:?}: {err}"
            );
            for word in words {
                assert!(err.contains(word), "{args:?}: {word:?} not in {err}");
            }
            assert!(out.stdout.is_empty(), "{args:?}: {}", describe(&out));
        }
    }
}

#[tokio::test]
async fn serve_refuses_non_loopback_and_bad_addresses() {
    let env = Env::demo();
    for address in ["0.0.0.0:0", "[::]:0"] {
        let out = env.run(&["serve", "--listen", address, "--allow-unauthenticated"]).await;
        assert_exit(&out, 1);
        assert!(stderr(&out).contains("only on a loopback address"), "{}", describe(&out));
    }
    // Without tokens and without the explicit opt-in, serving HTTP is refused even on loopback.
    let out = env.run(&["serve", "--listen", "127.0.0.1:0"]).await;
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("no bearer tokens configured"), "{}", describe(&out));
    let out = env.run(&["serve", "--listen", "localhost-ish", "--allow-unauthenticated"]).await;
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("not an IP address"), "{}", describe(&out));
}

#[tokio::test]
async fn missing_plugins_folder_is_reported() {
    let env = Env::demo();
    std::fs::remove_dir_all(env.plugins_dir()).unwrap();
    let out = env.run(&["tools"]).await;
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("cannot read the plugins folder"), "{}", describe(&out));
}
