//! Hot reload end to end: plugins added, replaced (atomically and by a slow in-place write) and
//! removed while calls run, with no failed call and `notifications/tools/list_changed` sent to a
//! connected client; a broken file leaves the previous version serving; a replacement that
//! narrows a tool's input schema is refused unless the policy allows it; SIGHUP reloads limits
//! and tokens, and a bad config changes nothing; the quality gate, `cordon lint`, `cordon
//! inspect`, and the operator's per-tool overrides.

mod common;

use common::*;
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---- helpers -----------------------------------------------------------------------------------

/// A client that counts `notifications/tools/list_changed`.
#[derive(Clone, Default)]
struct ListWatcher {
    changes: Arc<AtomicUsize>,
}

impl ClientHandler for ListWatcher {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }
}

impl ListWatcher {
    async fn connect(server: &HttpServer) -> (ListWatcher, RunningService<RoleClient, ListWatcher>) {
        let watcher = ListWatcher::default();
        let transport = StreamableHttpClientTransport::from_uri(server.url.clone());
        let client = guard("MCP initialize of the watching client", watcher.clone().serve(transport))
            .await
            .expect("the watching client connects");
        (watcher, client)
    }

    async fn wait_for(&self, at_least: usize) {
        guard(&format!("{at_least} tools/list_changed notification(s)"), async {
            while self.changes.load(Ordering::SeqCst) < at_least {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

/// The text of a successful call.
fn text_of(out: &Outcome) -> String {
    assert!(!out.is_error, "expected success, got {}", out.raw);
    out.texts.concat()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

async fn tool_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = list_tools(client).await.keys().cloned().collect();
    names.sort();
    names
}

async fn wait_for_tools(client: &Client, what: &str, done: impl Fn(&[String]) -> bool) {
    guard(what, async {
        while !done(&tool_names(client).await) {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

/// Echo calls on `tasks` concurrent loops until stopped; every outcome is recorded.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &Client, tasks: usize) -> Load {
        let (stop, ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let tasks = (0..tasks)
            .map(|i| {
                let (peer, stop, ok, failures) =
                    (client.peer().clone(), stop.clone(), ok.clone(), Arc::clone(&failures));
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let text = format!("load {i}/{n}");
                        let params = rmcp::model::CallToolRequestParams::new("demo_echo")
                            .with_arguments(object(json!({"text": text})));
                        match peer.call_tool(params).await {
                            Ok(result) if result.is_error != Some(true) => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            other => failures.lock().expect("failures lock").push(format!("{other:?}")),
                        }
                    }
                })
            })
            .collect();
        Load { stop, ok, failures, tasks }
    }

    /// Stops the loops; returns (successful calls, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            guard("a load loop to stop", task).await.expect("load loop");
        }
        let failures = self.failures.lock().expect("failures lock").clone();
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

// ---- tests -------------------------------------------------------------------------------------

#[tokio::test]
async fn plugins_come_and_go_under_load_without_a_failed_call() {
    let env = Env::demo();
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    let (watcher, _watching) = ListWatcher::connect(&server).await;
    let load = Load::start(&client, 4);
    let plugins = env.plugins_dir();

    // Added (by an atomic rename): listed, and the connected client is told.
    install(&plugins, "payments.wasm", &read(&example_wasm("payments")));
    wait_for_tools(&client, "payments_charge to be listed", |names| names.iter().any(|n| n == "payments_charge")).await;
    watcher.wait_for(1).await;

    // Replaced by a compatible new version while echo calls run on the old one.
    let v2 = new_version(&read(&demo_wasm()), "2");
    install(&plugins, "demo.wasm", &v2);
    server.log.wait_for(&format!("reloaded plugin plugin=demo tools=5 digest={}", sha256_hex(&v2))).await;
    assert_echo(&client, "after the replacement").await;

    // Removed: gone from the list, and the client is told again.
    std::fs::remove_file(plugins.join("payments.wasm")).expect("remove payments.wasm");
    wait_for_tools(&client, "payments_charge to go", |names| !names.iter().any(|n| n == "payments_charge")).await;
    watcher.wait_for(2).await;

    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} calls failed during reloads: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(ok > 0, "the load ran");
    assert!(server.log.text().contains("plugin removed"), "the removal is logged");
}

#[tokio::test]
async fn a_half_written_or_broken_file_keeps_the_previous_version_serving() {
    let env = Env::demo().config("[reload]\ndebounce_ms = 100\n");
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    let path = env.plugins_dir().join("demo.wasm");
    let good = new_version(&read(&demo_wasm()), "2");

    // A copy that stalls half-way (longer than the debounce): refused, the old version serves.
    std::fs::write(&path, &good[..good.len() / 2]).expect("write half the file");
    server.log.wait_for("keeps serving").await;
    assert_echo(&client, "while half-written").await;

    // Not wasm at all: refused too.
    std::fs::write(&path, b"this is not a component").expect("write garbage");
    guard("the second refusal", async {
        while server.log.text().matches("keeps serving").count() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(server.log.text().contains("not a WebAssembly file"), "the reason is logged");
    assert_echo(&client, "after garbage").await;

    // The copy completes: the new version loads.
    std::fs::write(&path, &good).expect("write the whole file");
    server.log.wait_for(&format!("reloaded plugin plugin=demo tools=5 digest={}", sha256_hex(&good))).await;
    assert_echo(&client, "after the complete copy").await;
}

#[tokio::test]
async fn incompatible_contract_changes_are_refused_unless_allowed() {
    let v1 = read(&fixture_wasm("contract_v1"));
    let v2 = read(&fixture_wasm("contract_v2"));
    let env = Env::new().plugin_bytes("contract.wasm", &v1).config("[reload]\ndebounce_ms = 100\n");
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    let (watcher, _watching) = ListWatcher::connect(&server).await;
    let order = json!({"item": "tea", "quantity": 2, "note": "green"});
    assert_eq!(text_of(&call(&client, "contract_order", order.clone()).await), "v1 ordered 2 x tea (green)");

    install(&env.plugins_dir(), "contract.wasm", &v2);
    let refusal = server.log.wait_for("changes existing tool contracts incompatibly").await;
    assert!(refusal.contains("contract_order /note: property removed"), "{refusal}");
    assert!(refusal.contains("contract_order /priority: property is newly required"), "{refusal}");
    assert_eq!(text_of(&call(&client, "contract_order", order).await), "v1 ordered 2 x tea (green)", "v1 still serves");
    assert_eq!(watcher.changes.load(Ordering::SeqCst), 0, "nothing changed for clients");

    // The operator allows it (config reload): v2 is served and clients are told.
    std::fs::write(env.config_path(), "[reload]\ndebounce_ms = 100\nincompatible_schemas = \"allow\"\n")
        .expect("write the config");
    server.signal("HUP");
    server.log.wait_for("config reloaded").await;
    watcher.wait_for(1).await;
    let v2_order = json!({"item": "tea", "quantity": 2, "priority": 3});
    assert_eq!(text_of(&call(&client, "contract_order", v2_order).await), "v2 ordered 2 x tea at priority 3");
}

#[tokio::test]
async fn sighup_reloads_limits_and_tokens_and_a_bad_config_changes_nothing() {
    let config = |principal: &str, max_input: usize| {
        format!("{}[plugins.demo.limits]\nmax_input_bytes = {max_input}\n", tokens(&[principal]))
    };
    let env = Env::demo().config(&config("alice", 100_000));
    let server = env.spawn_http_with(&[], &[]).await;
    let long = "x".repeat(500);
    let alice = server.client_as(&token("alice")).await;
    text_of(&call(&alice, "demo_echo", json!({"text": long})).await);

    std::fs::write(env.config_path(), config("bob", 200)).expect("write the new config");
    server.signal("HUP");
    server.log.wait_for("config reloaded").await;
    let status = |token: String| {
        let url = server.url.clone();
        async move {
            let authorization = format!("Bearer {token}");
            post(&url, &initialize_request().to_string(), &[("authorization", &authorization)]).await.status().as_u16()
        }
    };
    assert_eq!(status(token("alice")).await, 401, "alice's token was removed");
    assert_eq!(status(token("bob")).await, 200, "bob's token was added");
    let bob = server.client_as(&token("bob")).await;
    call(&bob, "demo_echo", json!({"text": long})).await.expect_error("input_too_large", false);
    assert_echo(&bob, "short").await;

    // A config with a typo is refused as a whole: bob keeps his token, the limit stays.
    std::fs::write(env.config_path(), format!("{}[defaults]\nfule = 1\n", tokens(&["carol"]))).expect("write");
    server.signal("HUP");
    server.log.wait_for("config reload refused").await;
    let log = server.log.text();
    let refusal = &log[log.find("config reload refused").expect("the refusal")..];
    assert!(refusal.contains("fule"), "the reason names the bad key: {refusal}");
    assert_eq!(status(token("bob")).await, 200);
    assert_eq!(status(token("carol")).await, 401);
    call(&bob, "demo_echo", json!({"text": long})).await.expect_error("input_too_large", false);
}

#[tokio::test]
async fn the_quality_gate_refuses_vague_tools_and_lint_reports_them() {
    let env = Env::demo().plugin(&fixture_wasm("twins"), "twins.wasm").config("[lint]\nmode = \"refuse\"\n");
    let tools = env.tools().await;
    let refused = tools["errors"].as_array().expect("errors").iter().find(|e| e["file"] == "twins.wasm");
    let refused = refused.unwrap_or_else(|| panic!("twins.wasm must be refused: {tools}"));
    assert!(refused["error"].as_str().unwrap_or("").contains("quality gate"), "{refused}");
    assert!(tools["tools"].as_array().expect("tools").iter().any(|t| t["name"] == "demo_echo"), "demo still loads");

    let twins = fixture_wasm("twins");
    let lint = env.run(&["lint", twins.to_str().expect("utf-8 path")]).await;
    assert_eq!(lint.status.code(), Some(1), "errors exit 1: {}", describe(&lint));
    let findings: Vec<Value> = String::from_utf8_lossy(&lint.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a finding per line"))
        .collect();
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert!(findings
        .iter()
        .all(|f| f["severity"] == "error" && f["message"].as_str().unwrap_or("").contains("description")));
    let demo = demo_wasm();
    let clean = env.run(&["lint", demo.to_str().expect("utf-8 path")]).await;
    assert_eq!(clean.status.code(), Some(0), "{}", describe(&clean));
    assert!(clean.stdout.is_empty(), "no findings for demo: {}", describe(&clean));
}

#[tokio::test]
async fn operators_can_rename_describe_and_disable_tools_and_inspect_plugins() {
    let env = Env::demo().config(
        "[plugins.demo]\nprefix = \"\"\n\n\
         [plugins.demo.tools.echo]\ndescription = \"Repeats the given text back verbatim (operator's wording).\"\n\n\
         [plugins.demo.tools.divide]\nenabled = false\n",
    );
    let tools = env.tools().await;
    let names: Vec<&str> =
        tools["tools"].as_array().expect("tools").iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"echo") && names.contains(&"add"), "unprefixed names: {names:?}");
    assert!(!names.iter().any(|n| n.contains("divide")), "divide is disabled: {names:?}");
    let echo = tools["tools"].as_array().expect("tools").iter().find(|t| t["name"] == "echo").expect("echo");
    assert_eq!(echo["description"], "Repeats the given text back verbatim (operator's wording).");
    let out = env.run(&["call", "divide", r#"{"a": 1, "b": 2}"#]).await;
    assert_eq!(out.status.code(), Some(2), "a disabled tool is unknown: {}", describe(&out));

    let demo = demo_wasm();
    let out = env.run(&["inspect", demo.to_str().expect("utf-8 path")]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let inspected: Value = serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
    assert_eq!(inspected["digest"], format!("sha256:{}", sha256_hex(&read(&demo))));
    let imports = inspected["world"]["imports"].to_string();
    let exports = inspected["world"]["exports"].to_string();
    assert!(imports.contains("cordon:plugin/types"), "{imports}");
    assert!(exports.contains("cordon:plugin/tools"), "{exports}");
    assert_eq!(inspected["granted"]["http_grants"], 0);
    assert_eq!(inspected["granted"]["config_section"]["prefix"], "");
    assert!(inspected["tools"].as_array().expect("tools").iter().any(|t| t["name"] == "echo"));
}

/// A 2026-07-28 client has no session: it opens a `subscriptions/listen` stream, and a reload that
/// changes the tool list reaches it there, tagged with the stream's subscription id.
#[tokio::test]
async fn a_listen_stream_hears_of_a_reload() {
    let env = Env::demo();
    let server = env.spawn_http(&[]).await;
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1.0.0"}
    });
    let body = json!({"jsonrpc": "2.0", "id": 41, "method": "subscriptions/listen",
        "params": {"_meta": meta, "notifications": {"toolsListChanged": true}}});
    let mut stream = guard(
        "subscriptions/listen",
        reqwest::Client::new()
            .post(&server.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "subscriptions/listen")
            .json(&body)
            .send(),
    )
    .await
    .expect("the listen request is sent");
    assert_eq!(stream.status(), 200);

    // Frames as they come: the acknowledgement first, then what the reload sends.
    let mut buffered = String::new();
    let mut frames: Vec<Value> = Vec::new();
    let mut next_frame = async || -> Value {
        loop {
            if let Some(frame) = frames.pop() {
                return frame;
            }
            let chunk = stream.chunk().await.expect("the stream stays open").expect("a chunk");
            buffered.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffered.find('\n') {
                let line: String = buffered.drain(..=end).collect();
                if let Some(data) = line.trim().strip_prefix("data:") {
                    if let Ok(frame) = serde_json::from_str::<Value>(data.trim()) {
                        frames.insert(0, frame);
                    }
                }
            }
        }
    };
    let ack = guard("the acknowledgement", next_frame()).await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    assert_eq!(ack["params"]["notifications"]["toolsListChanged"], true, "{ack}");

    install(&env.plugins_dir(), "payments.wasm", &read(&example_wasm("payments")));
    let changed = guard("tools/list_changed on the listen stream", next_frame()).await;
    assert_eq!(changed["method"], "notifications/tools/list_changed", "{changed}");
    assert_eq!(changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 41, "{changed}");

    // A stream the client closes is forgotten: the host holds nothing for it afterwards.
    let listen_streams = async || -> Value {
        let health = guard("/healthz", reqwest::get(format!("{}/healthz", server.base))).await.expect("/healthz");
        health.json::<Value>().await.expect("JSON")["listen_streams"].clone()
    };
    assert_eq!(listen_streams().await, 1);
    drop(stream);
    guard("the closed listen stream to be removed", async {
        while listen_streams().await != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
