//! MCP over stdio: the catalog, calls, argument validation and protocol errors, concurrency,
//! and a raw check that stdout carries nothing but JSON-RPC.

mod common;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test]
async fn lists_demo_tools_with_schemas_and_annotations() {
    let env = Env::demo();
    let (client, _log) = env.stdio_client().await;
    let tools = list_tools(&client).await;

    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["demo_add", "demo_divide", "demo_echo", "demo_greet", "demo_work"]);
    for (name, tool) in &tools {
        let description = tool["description"].as_str().unwrap_or_default();
        assert!(!description.is_empty(), "{name} has no description: {tool}");
        let input = &tool["inputSchema"];
        assert_eq!(input["type"], "object", "{name}: {input}");
        assert_eq!(
            input["additionalProperties"],
            json!(false),
            "{name}: the host must close the input schema: {input}"
        );
        assert_eq!(tool["outputSchema"]["type"], "object", "{name}: {tool}");
        assert!(tool["annotations"].is_object(), "{name}: {tool}");
    }

    let echo = &tools["demo_echo"];
    assert_eq!(echo["title"], "Echo");
    assert_eq!(echo["inputSchema"]["required"], json!(["text"]));
    assert_eq!(echo["inputSchema"]["properties"]["text"]["type"], "string");
    assert_eq!(echo["outputSchema"]["properties"]["text"]["type"], "string");
    assert_eq!(echo["annotations"]["readOnlyHint"], json!(true));
    assert_eq!(
        tools["demo_greet"]["inputSchema"]["properties"]["style"]["enum"],
        json!(["formal", "casual", "pirate"])
    );
}

#[tokio::test]
async fn calls_return_text_and_structured_content() {
    let env = Env::demo();
    let (client, _log) = env.stdio_client().await;

    let echo = call(&client, "demo_echo", json!({"text": "héllo, wörld"})).await;
    assert_eq!(echo.ok(), &json!({"text": "héllo, wörld"}));
    // The tool's text first, then the structured result as JSON text.
    assert_eq!(echo.texts.len(), 2, "{}", echo.raw);
    assert_eq!(echo.texts[0], "héllo, wörld");
    assert_eq!(serde_json::from_str::<Value>(&echo.texts[1]).unwrap(), json!({"text": "héllo, wörld"}));
    assert_eq!(echo.raw["isError"], json!(false));

    // demo_add's text is its JSON: sent once.
    let add = call(&client, "demo_add", json!({"a": 2.5, "b": -4})).await;
    assert_eq!(add.ok(), &json!({"sum": -1.5}));
    assert_eq!(add.texts.len(), 1, "{}", add.raw);
    assert_eq!(serde_json::from_str::<Value>(&add.texts[0]).unwrap(), json!({"sum": -1.5}));

    let greet = call(&client, "demo_greet", json!({"name": "Ada", "style": "formal"})).await;
    let greeting = greet.ok()["greeting"].as_str().expect("greeting");
    assert!(greeting.contains("Ada"), "{greeting}");

    let divide = call(&client, "demo_divide", json!({"a": 7, "b": 2})).await;
    assert_eq!(divide.ok(), &json!({"quotient": 3.5}));

    // A guest error keeps the guest's own kind.
    let by_zero = call(&client, "demo_divide", json!({"a": 1, "b": 0})).await;
    by_zero.expect_error("division_by_zero", false);
}

/// A tool whose text is its structured result as JSON gets that JSON once, whatever the
/// order of its keys (hostile_probe's fields are not in alphabetical order, and the host
/// re-serializes the structured result with sorted keys).
#[tokio::test]
async fn structured_text_is_sent_once_whatever_the_key_order() {
    let env = Env::demo().plugin(&fixture_wasm("hostile"), "hostile.wasm");
    let (client, _log) = env.stdio_client().await;
    let probe = call(&client, "hostile_probe", json!({})).await;
    let structured = probe.ok().clone();
    assert_eq!(probe.texts.len(), 1, "{}", probe.raw);
    assert_eq!(serde_json::from_str::<Value>(&probe.texts[0]).unwrap(), structured);
}

/// The pointers of an `invalid_arguments` error, in order.
fn pointers(error: &Value) -> Vec<&str> {
    error["violations"]
        .as_array()
        .unwrap_or_else(|| panic!("no violations: {error}"))
        .iter()
        .map(|v| v["pointer"].as_str().expect("pointer"))
        .collect()
}

/// The violation at `pointer` whose message mentions `word`.
fn violation<'a>(error: &'a Value, pointer: &str, word: &str) -> &'a Value {
    error["violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pointer"] == pointer && v["message"].as_str().unwrap().contains(word))
        .unwrap_or_else(|| panic!("no violation at {pointer:?} mentioning {word:?}: {error}"))
}

#[tokio::test]
async fn invalid_arguments_report_every_violation_with_its_pointer() {
    let env = Env::demo();
    let (client, _log) = env.stdio_client().await;

    // Wrong type.
    let out = call(&client, "demo_add", json!({"a": "one", "b": 2})).await;
    let error = out.expect_error("invalid_arguments", false);
    assert_eq!(pointers(error), ["/a"]);
    violation(error, "/a", "number");

    // Missing required property: reported at the root, naming the property.
    let out = call(&client, "demo_add", json!({"a": 1})).await;
    let error = out.expect_error("invalid_arguments", false);
    assert_eq!(pointers(error), [""]);
    violation(error, "", "\"b\"");

    // Unknown property: the host closed the schema.
    let out = call(&client, "demo_echo", json!({"text": "hi", "extra": true})).await;
    let error = out.expect_error("invalid_arguments", false);
    violation(error, "", "extra");

    // Enum violation.
    let out = call(&client, "demo_greet", json!({"name": "Ada", "style": "rude"})).await;
    let error = out.expect_error("invalid_arguments", false);
    assert_eq!(pointers(error), ["/style"]);
    violation(error, "/style", "rude");

    // Several at once: all reported.
    let out = call(&client, "demo_greet", json!({"name": 42, "style": "rude", "mood": "grumpy"})).await;
    let error = out.expect_error("invalid_arguments", false);
    assert_eq!(pointers(error).len(), 3, "{error}");
    violation(error, "/name", "string");
    violation(error, "/style", "rude");
    violation(error, "", "mood");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("/name") && message.contains("/style"), "{message}");

    // Missing arguments altogether are an empty object, which lacks `text`.
    let out = call(&client, "demo_echo", json!({})).await;
    violation(out.expect_error("invalid_arguments", false), "", "\"text\"");

    assert_echo(&client, "still serving").await;
}

#[tokio::test]
async fn unknown_tool_is_a_json_rpc_error() {
    let env = Env::demo();
    let (client, _log) = env.stdio_client().await;
    let err =
        try_call(&client, "demo_nope", json!({})).await.expect_err("an unknown tool must not produce a tool result");
    match err {
        rmcp::service::ServiceError::McpError(e) => {
            assert_eq!(e.code, rmcp::model::ErrorCode::INVALID_PARAMS, "{e:?}");
            assert!(e.message.contains("unknown tool"), "{e:?}");
            assert!(e.message.contains("demo_nope"), "{e:?}");
        }
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
    assert_echo(&client, "after unknown tool").await;
}

#[tokio::test]
async fn fifty_concurrent_calls_over_stdio() {
    let env = Env::demo().config(PATIENT);
    let (client, _log) = env.stdio_client().await;
    fifty_concurrent_echoes(&client).await;
}

/// Reads the next stdout line, which must be a JSON-RPC 2.0 message.
async fn next_message<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut tokio::io::Lines<R>) -> Value {
    let line = guard("a line on stdout", lines.next_line()).await.expect("read stdout").expect("stdout closed early");
    let message: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:.200}"));
    assert_eq!(message["jsonrpc"], "2.0", "not JSON-RPC: {line:.200}");
    message
}

/// Raw protocol on the pipes, including a tool that writes 4 MiB to its own stdout: the MCP
/// channel must carry nothing but JSON-RPC, and closing stdin ends the server cleanly.
#[tokio::test]
async fn stdout_carries_only_json_rpc() {
    let env = Env::demo().plugin(&fixture_wasm("hostile"), "hostile.wasm");
    let mut cmd = env.command(&["serve", "--stdio"]);
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cordon serve --stdio");
    let log = Log::default();
    log.collect(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let send = |message: Value| format!("{message}\n");
    stdin.write_all(send(initialize_request()).as_bytes()).await.unwrap();
    let first = next_message(&mut lines).await;
    assert_eq!(first["id"], 1, "{first}");
    assert_eq!(first["result"]["serverInfo"]["name"], "cordon", "{first}");
    assert!(first["result"]["capabilities"]["tools"].is_object(), "{first}");

    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let requests = [
        initialized,
        call_request(2, "hostile_chatter", json!({})),
        call_request(3, "demo_echo", json!({"text": "after chatter"})),
    ];
    for request in requests {
        stdin.write_all(send(request).as_bytes()).await.unwrap();
    }
    // Answers may come in any order; nothing but the two responses may appear.
    let mut answers = std::collections::BTreeMap::new();
    while answers.len() < 2 {
        let message = next_message(&mut lines).await;
        let id = message["id"].as_u64().unwrap_or_else(|| panic!("unexpected message on stdout: {message:.300}"));
        answers.insert(id, message);
    }
    let chatter = Outcome::from_wire(&answers[&2]["result"]);
    assert!(!chatter.is_error, "{}", chatter.raw);
    assert_eq!(chatter.texts, ["ok"]);
    let echo = Outcome::from_wire(&answers[&3]["result"]);
    assert_eq!(echo.ok(), &json!({"text": "after chatter"}));

    drop(stdin);
    let status = guard("cordon to exit after stdin closed", child.wait()).await.unwrap();
    assert!(status.success(), "{status:?}; stderr:\n{}", log.text());
    assert_eq!(guard("stdout EOF", lines.next_line()).await.unwrap(), None, "nothing may follow on stdout");
}

/// Node-based MCP clients (Claude Desktop among them) give a child a Unix socket pair, not
/// pipes, as stdin and stdout. Cordon drives pipes on its I/O reactor and anything else through
/// blocking stdio; over a socket pair it must answer all the same, and end when the client
/// closes its end.
#[tokio::test]
async fn a_socket_pair_for_stdio_is_served_too() {
    let env = Env::demo();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let mut cmd = env.command(&["serve", "--stdio"]);
    let theirs_out = theirs.try_clone().expect("clone the socket");
    cmd.stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cordon serve --stdio");
    let log = Log::default();
    log.collect(child.stderr.take().unwrap());
    drop(cmd);
    ours.set_nonblocking(true).expect("non-blocking socket");
    let ours = tokio::net::UnixStream::from_std(ours).expect("a tokio socket");
    let (read, mut write) = ours.into_split();
    let mut lines = BufReader::new(read).lines();

    write.write_all(format!("{}\n", initialize_request()).as_bytes()).await.unwrap();
    let first = next_message(&mut lines).await;
    assert_eq!(first["result"]["serverInfo"]["name"], "cordon", "{first}; stderr:\n{}", log.text());
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    write.write_all(format!("{initialized}\n").as_bytes()).await.unwrap();
    write
        .write_all(format!("{}\n", call_request(2, "demo_echo", json!({"text": "over a socket"}))).as_bytes())
        .await
        .unwrap();
    let answer = next_message(&mut lines).await;
    assert_eq!(answer["id"], 2, "{answer}");
    assert_eq!(Outcome::from_wire(&answer["result"]).ok(), &json!({"text": "over a socket"}));

    write.shutdown().await.expect("close our end for writing");
    let status = guard("cordon to exit after its stdin closed", child.wait()).await.unwrap();
    assert!(status.success(), "{status:?}; stderr:\n{}", log.text());
}
