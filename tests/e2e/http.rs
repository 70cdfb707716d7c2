//! MCP over Streamable HTTP: sessions (rmcp client), stateless JSON mode (raw POSTs), bad
//! requests, Host/Origin checks and the health endpoints.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn session_mode_lists_and_calls() {
    let env = Env::demo();
    let server = env.spawn_http(&[]).await;
    assert!(server.log.text().contains("stateless=false"), "{}", server.log.text());
    let client = server.client().await;

    let tools = list_tools(&client).await;
    for name in ["demo_echo", "demo_add", "demo_greet", "demo_divide"] {
        assert!(tools.contains_key(name), "{name} missing: {tools:?}");
    }
    assert_eq!(tools["demo_add"]["inputSchema"]["additionalProperties"], json!(false));

    assert_echo(&client, "over http").await;
    let add = call(&client, "demo_add", json!({"a": 40, "b": 2})).await;
    assert_eq!(add.ok(), &json!({"sum": 42.0}));
    call(&client, "demo_divide", json!({"a": 1, "b": 0})).await.expect_error("division_by_zero", false);

    // A second session on the same server is independent of the first.
    let other = server.client().await;
    assert_echo(&other, "second session").await;
    assert_echo(&client, "first session again").await;
}

/// The JSON-RPC message in an HTTP response body: plain JSON, or the data of an SSE stream.
fn json_rpc_body(content_type: &str, body: &str) -> Value {
    if content_type.starts_with("text/event-stream") {
        let data = body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .find(|d| !d.is_empty())
            .unwrap_or_else(|| panic!("no SSE data: {body}"));
        serde_json::from_str(data).unwrap()
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    }
}

/// Stateless mode needs no `initialize` and no session: one POST of `tools/call` gets a
/// plain JSON response (not SSE) with the result.
#[tokio::test]
async fn stateless_mode_answers_plain_json_without_a_session() {
    let env = Env::demo();
    let server = env.spawn_http(&["--stateless"]).await;
    assert!(server.log.text().contains("stateless=true"), "{}", server.log.text());

    let request = call_request(7, "demo_echo", json!({"text": "stateless"}));
    let response = post(&server.url, &request.to_string(), &[]).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/json"), "stateless answers must be JSON, not SSE: {content_type}");
    assert!(response.headers().get("mcp-session-id").is_none(), "stateless mode must not open a session");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], 7);
    let out = Outcome::from_wire(&body["result"]);
    assert_eq!(out.ok(), &json!({"text": "stateless"}));

    let list = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list"});
    let response = post(&server.url, &list.to_string(), &[]).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let names: Vec<&str> =
        body["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"demo_greet"), "{names:?}");

    // A tool error is a result there too.
    let request = call_request(9, "demo_add", json!({"a": "x", "b": 1}));
    let body: Value = post(&server.url, &request.to_string(), &[]).await.json().await.unwrap();
    Outcome::from_wire(&body["result"]).expect_error("invalid_arguments", false);

    // The rmcp client copes with the stateless server as well.
    let client = server.client().await;
    assert_echo(&client, "rmcp over stateless").await;
}

/// Session mode: a call without a session is refused; `initialize` opens one.
#[tokio::test]
async fn session_mode_requires_initialize() {
    let env = Env::demo();
    let server = env.spawn_http(&[]).await;
    let request = call_request(1, "demo_echo", json!({"text": "no session"}));
    let response = post(&server.url, &request.to_string(), &[]).await;
    assert_eq!(response.status(), 400, "a call without a session must be refused");

    let response = post(&server.url, &initialize_request().to_string(), &[]).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("mcp-session-id").is_some());
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    let body = json_rpc_body(&content_type, &response.text().await.unwrap());
    assert_eq!(body["id"], 1);
    assert_eq!(body["result"]["serverInfo"]["name"], "cordon");

    // DELETE ends the session with 204 (clients take 200 or 204 as a clean close; rmcp says 202),
    // and the session is gone after it.
    let session = response_session(&server, &[]).await;
    let delete = reqwest::Client::new()
        .delete(&server.url)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204, "{:?}", delete.text().await);
    let after = post(&server.url, &request.to_string(), &[("mcp-session-id", session.as_str())]).await;
    assert_eq!(after.status(), 404, "a deleted session must be gone");
}

/// Opens a session with `initialize` and returns its id.
async fn response_session(server: &HttpServer, headers: &[(&str, &str)]) -> String {
    let response = post(&server.url, &initialize_request().to_string(), headers).await;
    assert_eq!(response.status(), 200);
    response.headers()["mcp-session-id"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn fifty_concurrent_calls_over_one_session() {
    let env = Env::demo().config(PATIENT);
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    fifty_concurrent_echoes(&client).await;
}

/// Non-object arguments cannot even be sent with rmcp's typed client: raw POSTs. They must be
/// refused as a JSON-RPC error (never run, never a tool result), and the server keeps serving.
#[tokio::test]
async fn non_object_arguments_are_a_json_rpc_error() {
    let env = Env::demo();
    let server = env.spawn_http(&["--stateless"]).await;
    for (id, arguments) in [(1, json!([1, 2])), (2, json!("text")), (3, json!(12))] {
        let request = call_request(id, "demo_echo", arguments.clone());
        let response = post(&server.url, &request.to_string(), &[]).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        if status.is_success() {
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["id"], id, "{body}");
            assert!(body.get("result").is_none(), "{arguments}: ran: {body}");
            assert!(body["error"]["code"].is_i64(), "{arguments}: {body}");
        } else {
            assert!(status.is_client_error(), "{arguments}: {status} {text}");
        }
    }
    let request = call_request(4, "demo_echo", json!({"text": "still here"}));
    let body: Value = post(&server.url, &request.to_string(), &[]).await.json().await.unwrap();
    assert_eq!(Outcome::from_wire(&body["result"]).ok(), &json!({"text": "still here"}));
}

/// Garbage bodies get 400 with a JSON-RPC error, never 415 or a parser's message: -32700 for a
/// body that is not JSON, -32600 for JSON that is not a JSON-RPC message; and the server keeps
/// serving, in both modes.
#[tokio::test]
async fn malformed_requests_are_refused_and_the_server_keeps_serving() {
    let env = Env::demo();
    for extra in [&[][..], &["--stateless"][..]] {
        let mut server = env.spawn_http(extra).await;
        let client = server.client().await;
        for (body, code) in [
            ("garbage", -32700),
            ("{not json", -32700),
            ("{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ", -32700),
            ("", -32700),
            ("{\"not\": \"json-rpc\"}", -32600),
            ("[1, 2]", -32600),
            ("{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": 7}", -32600),
        ] {
            let response = post(&server.url, body, &[]).await;
            let status = response.status();
            let text = response.text().await.unwrap();
            assert_eq!(status, 400, "{extra:?} {body:?}: {text}");
            let reply: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{body:?}: not a JSON-RPC error ({e}): {text}"));
            assert_eq!(reply["jsonrpc"], "2.0", "{body:?}: {reply}");
            assert_eq!(reply["error"]["code"], code, "{extra:?} {body:?}: {reply}");
            let message = reply["error"]["message"].as_str().unwrap_or_default();
            // No parser's words reach the client ("key must be a string at line 1 column 2").
            assert!(!message.contains("line") && !message.contains("column"), "{body:?}: {message}");
        }
        assert!(server.is_running(), "{}", server.log.text());
        assert_echo(&client, "after garbage").await;
    }
}

#[tokio::test]
async fn host_and_origin_headers_are_checked() {
    let env = Env::demo();
    let server = env.spawn_http(&[]).await;
    let init = initialize_request().to_string();

    let response = post(&server.url, &init, &[("host", "evil.example")]).await;
    assert_eq!(response.status(), 403, "foreign Host must be refused");
    let response = post(&server.url, &init, &[("origin", "http://evil.example")]).await;
    assert_eq!(response.status(), 403, "foreign Origin must be refused");
    let response = post(&server.url, &init, &[("origin", "http://evil.example:1234")]).await;
    assert_eq!(response.status(), 403);

    for origin in ["http://localhost:1234", "http://127.0.0.1:9"] {
        let response = post(&server.url, &init, &[("origin", origin)]).await;
        assert_eq!(response.status(), 200, "loopback Origin {origin} is allowed");
    }
    let response = post(&server.url, &init, &[("host", "localhost")]).await;
    assert_eq!(response.status(), 200, "Host: localhost is allowed");
}

#[tokio::test]
async fn configured_hosts_and_origins_replace_the_defaults() {
    let env = Env::demo()
        .config("[server]\nallowed_hosts = [\"mcp.internal\"]\nallowed_origins = [\"https://app.example:443\"]\n");
    let server = env.spawn_http(&[]).await;
    let init = initialize_request().to_string();
    let headers = [("host", "mcp.internal"), ("origin", "https://app.example")];
    assert_eq!(post(&server.url, &init, &headers).await.status(), 200);
    // The loopback defaults are gone once the lists are set.
    assert_eq!(
        post(&server.url, &init, &[("host", "mcp.internal"), ("origin", "http://localhost:1")]).await.status(),
        403
    );
    assert_eq!(post(&server.url, &init, &[]).await.status(), 403);
}

#[tokio::test]
async fn health_endpoints_report_counts() {
    let env =
        Env::demo().plugin(&fixture_wasm("hostile"), "hostile.wasm").plugin_bytes("junk.wasm", b"this is not wasm");
    let server = env.spawn_http(&[]).await;
    for path in ["/healthz", "/readyz"] {
        let response = guard("health", reqwest::get(format!("{}{path}", server.base))).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"status": "ok", "plugins": 2, "tools": 14, "refused": 1, "calls_in_flight": 0, "listen_streams": 0}),
            "{path}"
        );
    }
}

/// How a hostile client holds a connection in `slow_clients_are_cut_off_and_others_are_served`.
#[derive(Debug, Clone, Copy)]
enum Hog {
    /// Sends the request headers one line every 200 ms, forever (slow loris).
    TrickledHeaders,
    /// Sends complete headers announcing a 1,000-byte body, then 10 bytes of it, then nothing.
    StalledBody,
    /// Connects and sends nothing.
    Silent,
}

/// Holds a connection as `hog` says until the server closes it; returns what the server sent.
async fn hog(stream: tokio::net::TcpStream, hog: Hog) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut from_server, mut to_server) = stream.into_split();
    let send = async move {
        match hog {
            Hog::TrickledHeaders => {
                let _ = to_server.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n").await;
                while to_server.write_all(b"x-slow: 1\r\n").await.is_ok() {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
            Hog::StalledBody => {
                let head = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n\
                            accept: application/json, text/event-stream\r\ncontent-length: 1000\r\n\r\n{\"jsonrpc\"";
                let _ = to_server.write_all(head.as_bytes()).await;
            }
            Hog::Silent => {}
        }
        // Keep the write half open: closing it would tell the server the request is over.
        std::future::pending::<()>().await;
    };
    let receive = async move {
        let mut received = Vec::new();
        let _ = from_server.read_to_end(&mut received).await;
        String::from_utf8_lossy(&received).into_owned()
    };
    tokio::select! {
        received = receive => received,
        () = send => unreachable!("the sender never finishes"),
    }
}

/// Clients that trickle their headers, stall mid-body or say nothing are cut off at
/// `[server] read_timeout_s`; `max_connections` keeps the rest waiting in the backlog rather
/// than accepted; a well-behaved call made while they hold every slot is answered once they are
/// gone, and the server keeps serving. Bounded, never timed: the hang guard is the only clock.
#[tokio::test]
async fn slow_clients_are_cut_off_and_others_are_served() {
    // Every client here is 127.0.0.1: the per-peer cap is lifted to test the global one.
    let env = Env::demo().config("[server]\nread_timeout_s = 1\nmax_connections = 4\nmax_connections_per_peer = 8\n");
    let mut server = env.spawn_http(&["--stateless"]).await;
    let addr = server.base.strip_prefix("http://").expect("http URL").to_string();
    let kinds =
        [Hog::TrickledHeaders, Hog::TrickledHeaders, Hog::StalledBody, Hog::StalledBody, Hog::Silent, Hog::Silent];
    let mut hogs = Vec::new();
    for kind in kinds {
        let stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        hogs.push((kind, tokio::spawn(hog(stream, kind))));
    }

    let request = call_request(1, "demo_echo", json!({"text": "patient"})).to_string();
    let response = post(&server.url, &request, &[]).await;
    assert_eq!(response.status(), 200);
    let reply: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(Outcome::from_wire(&reply["result"]).ok()["text"], "patient", "{reply}");

    for (kind, hog) in hogs {
        let received = guard("the server to cut off a slow client", hog).await.expect("hog task");
        // Cut off without an answer, or with an error status: never a 2xx for a partial request.
        let status = received.split_whitespace().nth(1).unwrap_or("");
        assert!(received.is_empty() || status.starts_with('4') || status.starts_with('5'), "{kind:?}: {received}");
    }
    assert!(server.is_running(), "{}", server.log.text());
    let response = post(&server.url, &request, &[]).await;
    assert_eq!(response.status(), 200, "still serving");
}

/// A body over `[server] max_request_bytes` is refused with 413, a body that is not JSON by
/// content type with 400, a client that accepts neither JSON nor SSE with 406, each with a
/// JSON-RPC error (-32600) saying what was wrong; none reaches a tool, and the server keeps
/// serving.
#[tokio::test]
async fn oversized_and_mistyped_requests_are_refused() {
    // The per-call `tool call` line is on (`SERVE_LOG`); the good call at the end shows it.
    let env = Env::demo().config("[server]\nmax_request_bytes = 2048\n");
    let mut server = env.spawn_http(&["--stateless"]).await;
    let big = call_request(1, "demo_echo", json!({"text": "x".repeat(4096)})).to_string();
    assert_eq!(post(&server.url, &big, &[]).await.status(), 413);
    let small = call_request(2, "demo_echo", json!({"text": "fits"})).to_string();
    let raw = |content_type: &'static str, accept: &'static str| {
        let request = reqwest::Client::new()
            .post(&server.url)
            .header("content-type", content_type)
            .header("accept", accept)
            .body(small.clone());
        async move {
            let response = guard("HTTP response", request.send()).await.expect("HTTP request");
            let status = response.status();
            let body: Value = response.json().await.expect("a JSON-RPC error body");
            assert_eq!(body["error"]["code"], -32600, "{content_type} / {accept}: {body}");
            (status, body["error"]["message"].as_str().unwrap_or_default().to_string())
        }
    };
    let (status, message) = raw("text/plain", "application/json, text/event-stream").await;
    assert_eq!(status, 400);
    assert!(message.contains("Content-Type"), "{message}");
    let (status, message) = raw("application/json", "text/html").await;
    assert_eq!(status, 406);
    assert!(message.contains("Accept"), "{message}");
    let response = post(&server.url, &big, &[]).await;
    let body: Value = response.json().await.expect("a JSON-RPC error body");
    assert_eq!(body["error"]["code"], -32600, "{body}");
    assert!(server.is_running(), "{}", server.log.text());
    assert!(!server.log.text().contains("tool call"), "a refused request reached a tool: {}", server.log.text());
    let response = post(&server.url, &small, &[]).await;
    assert_eq!(response.status(), 200);
    server.log.wait_for("tool call").await;
}

/// One peer cannot take every connection: with `max_connections_per_peer = 2`, two idle
/// connections from 127.0.0.1 hold its share and a third from the same address is closed at
/// once, while a client on another loopback address (127.0.0.2) is served; once the first
/// peer lets go, it is served again.
#[tokio::test]
async fn one_peer_cannot_hold_every_connection() {
    use tokio::io::AsyncReadExt;
    // A read timeout past the hang guard: a third connection kept open would fail the test, not
    // be closed by the header timer and pass.
    let env = Env::demo().config("[server]\nmax_connections_per_peer = 2\nread_timeout_s = 600\n");
    let server = env.spawn_http(&["--stateless"]).await;
    let addr: std::net::SocketAddr = server.base.strip_prefix("http://").expect("http URL").parse().unwrap();
    let idle: Vec<tokio::net::TcpStream> =
        futures::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(addr)))
            .await
            .into_iter()
            .map(|c| c.expect("connect"))
            .collect();
    // The server accepts connections in the order they arrive, so the two are counted first.
    let mut third = tokio::net::TcpStream::connect(addr).await.expect("the kernel accepts the third");
    let mut byte = [0u8; 1];
    let read = guard("the third connection to be closed", third.read(&mut byte)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "the third connection from one peer was kept: {read:?}");

    let other = tokio::net::TcpSocket::new_v4().expect("a socket");
    other.bind("127.0.0.2:0".parse().unwrap()).expect("bind 127.0.0.2");
    let stream = other.connect(addr).await.expect("connect from 127.0.0.2");
    let request = call_request(1, "demo_echo", json!({"text": "from another peer"})).to_string();
    let answer = raw_exchange(stream, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    drop(idle);
    let response = guard("a call once the peer let go", async {
        loop {
            // The server sees the two closes shortly after they happen.
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let answer = raw_exchange(stream, &request).await;
            if answer.starts_with("HTTP/1.1 200") {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(response.contains("from another peer"), "{response}");
}

/// A `tools/call` POST on `stream`, as raw HTTP/1.1 with `Connection: close`: all the server
/// sent back ("" if it closed first).
async fn raw_exchange(mut stream: tokio::net::TcpStream, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = guard("an answer", stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sessions are bounded: with `max_sessions = 2`, a third `initialize` gets 503 with
/// `Retry-After` while two sessions are open, and succeeds once one of them is closed.
#[tokio::test]
async fn sessions_are_bounded() {
    let env = Env::demo().config("[server]\nmax_sessions = 2\n");
    let server = env.spawn_http(&[]).await;
    let first = server.client().await;
    let second = server.client().await;
    assert_echo(&second, "the second session").await;
    let init = initialize_request().to_string();
    let refused = post(&server.url, &init, &[]).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
    first.cancel().await.expect("the first session closes");
    guard("a new session once one closed", async {
        while post(&server.url, &init, &[]).await.status() != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_echo(&second, "the second session still serves").await;
}

/// One legacy SSE stream (`GET /sse`), read event by event.
struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

impl SseStream {
    async fn open(url: &str, headers: &[(&str, &str)]) -> SseStream {
        let response = get(url, headers).await;
        assert_eq!(response.status(), 200, "GET /sse");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        SseStream { response, buffer: String::new() }
    }

    /// The next event with a name: (event, data). Keep-alive comments are skipped.
    async fn next_event(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if !event.is_empty() {
                    return (event, data);
                }
                continue;
            }
            let chunk = guard("an SSE event", self.response.chunk()).await.expect("read the stream");
            let chunk = chunk.expect("the stream ended");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next `message` event, as JSON.
    async fn next_message(&mut self) -> Value {
        let (event, data) = self.next_event().await;
        assert_eq!(event, "message", "{data}");
        serde_json::from_str(&data).unwrap_or_else(|e| panic!("not JSON ({e}): {data}"))
    }
}

/// The 2024-11-05 HTTP+SSE transport, under the rules of `/mcp`: a bearer token on every
/// request, the `Host` and `Origin` checks, the body cap; a session takes POSTs only from the
/// principal that opened it; malformed JSON is a JSON-RPC parse error with 400; replies come on
/// the stream.
#[tokio::test]
async fn the_legacy_sse_transport_serves_calls_under_the_mcp_rules() {
    let config = format!("[server]\nmax_request_bytes = 65536\n\n{}", tokens(&["alice", "bob"]));
    let env = Env::demo().config(&config);
    let server = env.spawn_http_with(&[], &[]).await;
    let sse = format!("{}/sse", server.base);
    let alice = format!("Bearer {}", token("alice"));
    let bob = format!("Bearer {}", token("bob"));
    let as_alice = [("authorization", alice.as_str())];

    assert_eq!(get(&sse, &[]).await.status(), 401, "no token");
    assert_eq!(get(&sse, &[as_alice[0], ("host", "evil.example")]).await.status(), 403, "a rebinding Host");
    assert_eq!(get(&sse, &[as_alice[0], ("origin", "http://evil.example")]).await.status(), 403, "a foreign Origin");

    let mut stream = SseStream::open(&sse, &as_alice).await;
    let (event, endpoint) = stream.next_event().await;
    assert_eq!(event, "endpoint");
    assert!(endpoint.starts_with("/messages?sessionId="), "{endpoint}");
    let messages = format!("{}{endpoint}", server.base);

    let accepted = post(&messages, &initialize_request().to_string(), &as_alice).await;
    assert_eq!(accepted.status(), 202);
    let reply = stream.next_message().await;
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["result"]["serverInfo"]["name"], "cordon");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(post(&messages, &initialized.to_string(), &as_alice).await.status(), 202);
    let call = call_request(2, "demo_echo", json!({"text": "over the old transport"}));
    assert_eq!(post(&messages, &call.to_string(), &as_alice).await.status(), 202);
    let reply = stream.next_message().await;
    assert_eq!(reply["id"], 2);
    assert_eq!(reply["result"]["structuredContent"]["text"], "over the old transport", "{reply}");

    // Bad input, each a clear answer that changes nothing.
    let malformed = post(&messages, "{not json", &as_alice).await;
    assert_eq!(malformed.status(), 400);
    let error: Value = malformed.json().await.unwrap();
    assert_eq!(error["error"]["code"], -32700, "{error}");
    let not_rpc = post(&messages, &json!({"hello": "world"}).to_string(), &as_alice).await;
    assert_eq!(not_rpc.status(), 400);
    let error: Value = not_rpc.json().await.unwrap();
    assert_eq!(error["error"]["code"], -32600, "{error}");
    let huge = format!("{{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(70_000));
    assert_eq!(post(&messages, &huge, &as_alice).await.status(), 413);
    // Another principal, an unknown session, no token.
    let as_bob = [("authorization", bob.as_str())];
    assert_eq!(post(&messages, &call.to_string(), &as_bob).await.status(), 404, "bob on alice's session");
    let unknown = format!("{}/messages?sessionId=0123456789abcdef", server.base);
    assert_eq!(post(&unknown, &call.to_string(), &as_alice).await.status(), 404);
    assert_eq!(post(&messages, &call.to_string(), &[]).await.status(), 401);

    // The session still works after all of that.
    let call = call_request(4, "demo_add", json!({"a": 2, "b": 40}));
    assert_eq!(post(&messages, &call.to_string(), &as_alice).await.status(), 202);
    let reply = stream.next_message().await;
    assert_eq!(reply["id"], 4);
    assert_eq!(reply["result"]["structuredContent"]["sum"].as_f64(), Some(42.0), "{reply}");

    // Closing the stream ends the session.
    drop(stream);
    let mut gone = false;
    for _ in 0..100 {
        if post(&messages, &call.to_string(), &as_alice).await.status() == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the session outlived its stream");
}
