//! Scoped tokens end to end: host-signed tokens (`cordon token issue`/`revoke`) over HTTP, every
//! kind of bad token refused with `invalid_token`, tool scopes on `tools/list` and `tools/call`
//! (403 `insufficient_scope`), rate limits per principal (429 and `RateLimit-*` headers) and per
//! plugin (`rate_limited` tool error), and the audit log (`audit.jsonl`, `cordon audit errors`).

mod common;

use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

// ---- helpers -----------------------------------------------------------------------------------

/// `[auth] signed_tokens_only = true`: HTTP with host-signed tokens only (no static ones).
const SIGNED_ONLY: &str = "[auth]\nsigned_tokens_only = true\n\n";

/// `Authorization: Bearer <token>`.
fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The `token` of a `cordon token issue` line.
fn token_of(issued: &Value) -> &str {
    issued["token"].as_str().unwrap_or_else(|| panic!("no token in {issued}"))
}

/// `cdt1.<claims>.<signature>`, split.
fn parts(token: &str) -> (&str, &str) {
    let rest = token.strip_prefix("cdt1.").unwrap_or_else(|| panic!("not a host-signed token: {token}"));
    rest.rsplit_once('.').unwrap_or_else(|| panic!("no signature in {token}"))
}

/// A header of a response, as text.
fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().expect("ASCII header").to_string())
}

/// POSTs an MCP `initialize` with this `Authorization` value (none when `None`): the status and
/// the `WWW-Authenticate` challenge.
async fn initialize_as(server: &HttpServer, authorization: Option<&str>) -> (u16, Option<String>) {
    let headers: Vec<(&str, &str)> = authorization.map(|a| ("authorization", a)).into_iter().collect();
    let response = post(&server.url, &initialize_request().to_string(), &headers).await;
    (response.status().as_u16(), header(&response, "www-authenticate"))
}

/// Asserts that `token` is refused as `invalid_token`.
async fn assert_invalid(server: &HttpServer, token: &str, what: &str) {
    let (status, challenge) = initialize_as(server, Some(&bearer(token))).await;
    assert_eq!(status, 401, "{what} must be refused");
    assert_eq!(
        challenge.as_deref(),
        Some("Bearer realm=\"cordon\", error=\"invalid_token\""),
        "{what}: the challenge must say invalid_token"
    );
}

/// Asserts that `token` is accepted.
async fn assert_accepted(server: &HttpServer, token: &str, what: &str) {
    let (status, challenge) = initialize_as(server, Some(&bearer(token))).await;
    assert_eq!(status, 200, "{what} must be accepted ({challenge:?})");
}

/// The names a `tools/list` shows.
async fn tool_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = list_tools(client).await.keys().cloned().collect();
    names.sort();
    names
}

/// Stateless POST of `request` as `token`.
async fn post_as(server: &HttpServer, token: &str, request: &Value) -> reqwest::Response {
    post(&server.url, &request.to_string(), &[("authorization", &bearer(token))]).await
}

/// Demo and payments (a tool outside `demo_*`) under `config`.
fn demo_and_payments(config: &str) -> Env {
    Env::demo().plugin(&example_wasm("payments"), "payments.wasm").config(config)
}

/// The keyed-call `_meta`.
fn meta_key(key: &str) -> Value {
    json!({ "cordon/idempotency-key": key })
}

// ---- host-signed tokens ------------------------------------------------------------------------

/// `cordon token issue` prints one JSON line and keeps its key private; the token authenticates
/// as its subject (the principal the idempotency store records); `revoke` reports the id.
#[tokio::test]
async fn issued_tokens_authenticate_as_their_subject() {
    let env = Env::demo().config(&format!("{SIGNED_ONLY}[plugins.demo.idempotency]\nstore_read_only = true\n"));
    let issued = env.issue_token("ci-bot", Some("demo_*,payments_charge"), "1h").await;
    let token = token_of(&issued);
    assert!(token.starts_with("cdt1."), "{issued}");
    assert_eq!(issued["subject"], "ci-bot");
    assert_eq!(issued["tools"], json!(["demo_*", "payments_charge"]));
    let id = issued["id"].as_str().expect("an id").to_string();
    assert!(!id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()), "{issued}");
    assert!(issued["expires"].as_str().is_some_and(|e| e.ends_with('Z')), "{issued}");
    let unscoped = env.issue_token("ops", None, "1h").await;
    assert_eq!(unscoped["tools"], json!([]));
    assert_ne!(unscoped["id"], issued["id"]);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = env.data_dir().join("token-signing.key");
        let mode = std::fs::metadata(&key).expect("token-signing.key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the signing key must be private");
    }

    // No static tokens at all: signed_tokens_only lets the server start.
    let server = env.spawn_http_with(&[], &[]).await;
    assert_eq!(initialize_as(&server, None).await, (401, Some("Bearer realm=\"cordon\"".to_string())));
    let client = server.client_as(token).await;
    call_with_meta(&client, "demo_echo", json!({"text": "as ci-bot"}), meta_key("subject-key")).await.ok();
    drop(client);
    let out = env.run(&["idempotency", "list"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let records: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!((records[0]["key"].as_str(), records[0]["principal"].as_str()), (Some("subject-key"), Some("ci-bot")));

    let out = env.run(&["token", "revoke", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("revoked {id}"));
}

/// Expired, revoked (while the server runs), forged, malformed and unknown tokens are all 401
/// `invalid_token`; a missing one is a bare `Bearer` challenge. Each bad token is checked next to
/// a good one, so a server refusing everything fails.
#[tokio::test]
async fn bad_tokens_are_refused_as_invalid() {
    let env = demo_and_payments(&format!("{SIGNED_ONLY}{}", tokens(&["alice"])));
    let server = env.spawn_http_with(&[], &[]).await;

    // Short-lived: accepted first, refused once its time is up (checked at the end).
    let issued_at = Instant::now();
    let short = env.issue_token("brief", None, "5s").await;
    assert_accepted(&server, token_of(&short), "a fresh 5 s token").await;

    let bot = env.issue_token("ci-bot", Some("demo_echo"), "1h").await;
    let bot = token_of(&bot).to_string();
    let admin = env.issue_token("admin", None, "1h").await;
    let admin = token_of(&admin).to_string();
    assert_accepted(&server, &bot, "ci-bot's token").await;
    assert_accepted(&server, &admin, "admin's token").await;
    assert_accepted(&server, &token("alice"), "alice's static token").await;

    // Missing, unknown static, wrong scheme.
    assert_eq!(initialize_as(&server, None).await, (401, Some("Bearer realm=\"cordon\"".to_string())));
    assert_invalid(&server, &token("mallory"), "an unknown static token").await;
    let (status, challenge) = initialize_as(&server, Some(&format!("Basic {}", token("alice")))).await;
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer realm=\"cordon\", error=\"invalid_token\"")));

    // Forged signature: one character of it changed.
    let (claims, signature) = parts(&bot);
    let mut flipped: Vec<char> = signature.chars().collect();
    flipped[0] = if flipped[0] == 'A' { 'B' } else { 'A' };
    let flipped: String = flipped.into_iter().collect();
    assert_invalid(&server, &format!("cdt1.{claims}.{flipped}"), "a token with a changed signature").await;
    // Forged claims: ci-bot's narrow claims swapped for admin's, with ci-bot's signature.
    let (admin_claims, _) = parts(&admin);
    assert_invalid(&server, &format!("cdt1.{admin_claims}.{signature}"), "a token with other claims").await;
    // Claims cut short, signature kept.
    assert_invalid(&server, &format!("cdt1.{}.{signature}", &claims[..claims.len() - 4]), "truncated claims").await;
    // Signed with another data directory's key.
    let elsewhere = Env::demo().config(SIGNED_ONLY);
    let foreign = elsewhere.issue_token("ci-bot", Some("demo_echo"), "1h").await;
    assert_invalid(&server, token_of(&foreign), "a token signed by another host").await;
    // Malformed.
    for bad in ["cdt1.garbage", "cdt1.", "cdt1.a.b.c", "cdt1.!!!.###"] {
        assert_invalid(&server, bad, &format!("malformed {bad:?}")).await;
    }

    // Revoked while the server runs: an open session is cut off at its next request.
    let victim = env.issue_token("victim", None, "1h").await;
    let client = server.client_as(token_of(&victim)).await;
    assert_echo(&client, "before revocation").await;
    let id = victim["id"].as_str().expect("id");
    let out = env.run(&["token", "revoke", id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_invalid(&server, token_of(&victim), "a revoked token").await;
    let after = try_call(&client, "demo_echo", json!({"text": "after revocation"})).await;
    assert!(after.is_err(), "a revoked token's session must not call tools: {after:?}");
    // Revoking one token leaves the others alone.
    assert_accepted(&server, &bot, "ci-bot's token after another was revoked").await;
    let out = env.run(&["token", "revoke", id]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("already revoked"), "{}", describe(&out));

    // Expiry.
    let expired_by = issued_at + Duration::from_secs(6);
    tokio::time::sleep_until(expired_by.into()).await;
    assert_invalid(&server, token_of(&short), "an expired token").await;
    assert_accepted(&server, &bot, "a token that has not expired").await;
    assert!(server.log.text().contains("expired"), "the refusal reason is logged: {}", server.log.text());
}

// ---- scopes --------------------------------------------------------------------------------------

/// A host-signed token sees only its tools in `tools/list`; calling another is 403
/// `insufficient_scope` naming the patterns (raw POST, stateless) and an error for the rmcp client
/// (session). An unscoped token and stdio (the local operator) see everything.
#[tokio::test]
async fn host_signed_scopes_limit_list_and_call() {
    let env = demo_and_payments(SIGNED_ONLY);
    let narrow = env.issue_token("ci-bot", Some("demo_e*,demo_add"), "1h").await;
    let narrow = token_of(&narrow).to_string();
    let wide = env.issue_token("ops", None, "1h").await;
    let wide = token_of(&wide).to_string();

    // Session mode, rmcp client.
    let server = env.spawn_http_with(&[], &[]).await;
    let client = server.client_as(&narrow).await;
    assert_eq!(tool_names(&client).await, ["demo_add", "demo_echo"]);
    assert_echo(&client, "in scope").await;
    let refused = try_call(&client, "payments_charge", json!({"account": "a", "amount_cents": 1})).await;
    assert!(refused.is_err(), "an out-of-scope call must fail: {refused:?}");
    let refused = try_call(&client, "demo_greet", json!({"name": "x", "style": "formal"})).await;
    assert!(refused.is_err(), "an out-of-scope call must fail: {refused:?}");
    let all = tool_names(&server.client_as(&wide).await).await;
    for name in ["demo_greet", "demo_divide", "payments_charge"] {
        assert!(all.iter().any(|t| t == name), "{name} missing for an unscoped token: {all:?}");
    }
    server.stop().await;

    // Stateless mode, raw POSTs.
    let server = env.spawn_http_with(&[], &["--stateless"]).await;
    let response = post_as(&server, &narrow, &call_request(1, "payments_charge", json!({"account": "a"}))).await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        header(&response, "www-authenticate").as_deref(),
        Some("Bearer realm=\"cordon\", error=\"insufficient_scope\", scope=\"demo_e* demo_add\"")
    );
    let body: Value = response.json().await.expect("a JSON body");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("payments_charge")), "{body}");
    // A batch hiding an out-of-scope call among allowed ones is refused whole.
    let batch = json!([
        call_request(2, "demo_echo", json!({"text": "ok"})),
        call_request(3, "payments_charge", json!({"account": "a", "amount_cents": 1})),
    ]);
    assert_eq!(post_as(&server, &narrow, &batch).await.status(), 403);
    let response = post_as(&server, &narrow, &call_request(4, "demo_echo", json!({"text": "allowed"}))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(Outcome::from_wire(&body["result"]).ok(), &json!({"text": "allowed"}));
    let response =
        post_as(&server, &wide, &call_request(5, "demo_greet", json!({"name": "A", "style": "casual"}))).await;
    assert_eq!(response.status(), 200);
    server.stop().await;

    // stdio: the local operator, no scopes.
    let (client, _log) = env.stdio_client().await;
    let all = tool_names(&client).await;
    assert!(all.iter().any(|t| t == "payments_charge"), "{all:?}");
    call(&client, "demo_greet", json!({"name": "op", "style": "formal"})).await.ok();
}

/// A static token with `tools = [...]` is scoped the same way; one without is not.
#[tokio::test]
async fn static_tokens_can_be_scoped() {
    let config = format!(
        "[[auth.tokens]]\nprincipal = \"alice\"\nsha256 = \"{}\"\ntools = [\"demo_echo\", \"payments_*\"]\n\n{}",
        sha256_hex(token("alice").as_bytes()),
        tokens(&["bob"])
    );
    let env = demo_and_payments(&config);
    let server = env.spawn_http_with(&[], &["--stateless"]).await;
    let alice = server.client_as(&token("alice")).await;
    assert_eq!(tool_names(&alice).await, ["demo_echo", "payments_charge"]);
    assert_echo(&alice, "alice in scope").await;
    let response = post_as(&server, &token("alice"), &call_request(1, "demo_add", json!({"a": 1, "b": 2}))).await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        header(&response, "www-authenticate").as_deref(),
        Some("Bearer realm=\"cordon\", error=\"insufficient_scope\", scope=\"demo_echo payments_*\"")
    );
    let bob = server.client_as(&token("bob")).await;
    let all = tool_names(&bob).await;
    assert!(all.len() > 2 && all.iter().any(|t| t == "demo_add"), "{all:?}");
    let add = call(&bob, "demo_add", json!({"a": 1, "b": 2})).await;
    assert_eq!(add.ok(), &json!({"sum": 3.0}));
}

// ---- rate limits ---------------------------------------------------------------------------------

/// `RateLimit-*` headers of a response: limit, remaining, reset.
fn rate_headers(response: &reqwest::Response) -> (Option<u64>, Option<u64>, Option<u64>) {
    let number = |name| header(response, name).map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name}: {v}")));
    (number("ratelimit-limit"), number("ratelimit-remaining"), number("ratelimit-reset"))
}

/// Every `/mcp` request of a principal takes from its bucket: within limits the answers carry
/// `RateLimit-Limit/Remaining/Reset`; past it, 429 with `Retry-After`. Another principal's bucket
/// is untouched. (The window is long enough that no token comes back during the test.)
#[tokio::test]
async fn a_burst_over_the_principal_limit_gets_429() {
    let config =
        format!("{}[rate_limits]\nper_principal = {{ requests = 5, per_seconds = 600 }}\n", tokens(&["alice", "bob"]));
    let env = Env::demo().config(&config);
    let server = env.spawn_http_with(&[], &["--stateless"]).await;
    let alice = token("alice");
    for i in 0..5u64 {
        let request = if i % 2 == 0 {
            call_request(i, "demo_echo", json!({"text": format!("burst {i}")}))
        } else {
            json!({"jsonrpc": "2.0", "id": i, "method": "tools/list"})
        };
        let response = post_as(&server, &alice, &request).await;
        assert_eq!(response.status(), 200, "request {i} is within the limit");
        let (limit, remaining, reset) = rate_headers(&response);
        assert_eq!((limit, remaining), (Some(5), Some(4 - i)), "request {i}");
        assert!(reset.is_some_and(|r| r >= 1), "RateLimit-Reset on request {i}: {reset:?}");
        assert!(header(&response, "retry-after").is_none(), "no Retry-After within limits");
    }
    for i in 5..7u64 {
        let response = post_as(&server, &alice, &call_request(i, "demo_echo", json!({"text": "over"}))).await;
        assert_eq!(response.status(), 429, "request {i} is over the limit");
        let (limit, remaining, reset) = rate_headers(&response);
        assert_eq!((limit, remaining), (Some(5), Some(0)));
        let retry_after: u64 = header(&response, "retry-after").expect("Retry-After").parse().expect("seconds");
        assert!(retry_after >= 1, "{retry_after}");
        assert!(reset.is_some_and(|r| r >= retry_after), "RateLimit-Reset {reset:?} vs Retry-After {retry_after}");
    }
    // Bob has his own bucket.
    let response = post_as(&server, &token("bob"), &call_request(9, "demo_echo", json!({"text": "bob"}))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(rate_headers(&response).1, Some(4));
    // The rmcp client sees the refusal as an error, not a hang.
    let refused = server.try_client(Some(&alice)).await;
    assert!(refused.is_err(), "alice is over her limit");
}

/// The per-plugin bucket is checked in the call path and shared by every caller: past it, a
/// retryable `rate_limited` tool error that says how long to wait.
#[tokio::test]
async fn a_plugin_over_its_limit_answers_rate_limited() {
    let config =
        format!("{}[rate_limits]\nplugins.demo = {{ requests = 3, per_seconds = 600 }}\n", tokens(&["alice", "bob"]));
    let env = Env::demo().config(&config);
    let server = env.spawn_http_with(&[], &[]).await;
    let alice = server.client_as(&token("alice")).await;
    let bob = server.client_as(&token("bob")).await;
    assert_echo(&alice, "one").await;
    assert_echo(&alice, "two").await;
    assert_echo(&bob, "three").await;
    for (client, who) in [(&alice, "alice"), (&bob, "bob")] {
        let out = call(client, "demo_add", json!({"a": 1, "b": 1})).await;
        let error = out.expect_error("rate_limited", true);
        let message = error["message"].as_str().expect("message");
        let seconds: u64 = message
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(3)
            .find_map(|w| (w[0] == "in" && w[2] == "s").then(|| w[1].parse().ok()).flatten())
            .unwrap_or_else(|| panic!("{who}: the message must say the seconds to wait: {message}"));
        assert!(seconds >= 1, "{message}");
    }
}

// ---- audit log -----------------------------------------------------------------------------------

/// The one audit record that `pick` selects.
fn find<'a>(records: &'a [Value], what: &str, pick: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = records.iter().filter(|r| pick(r)).collect();
    assert_eq!(found.len(), 1, "exactly one audit record for {what}: {records:#?}");
    found[0]
}

/// A success, a replay, a tool error and a refused egress each leave one line with who, what,
/// which plugin build, argument hash, idempotency and outcome; `log_arguments` redacts sensitive
/// keys; no token or secret appears anywhere. Over HTTP, an out-of-scope call is refused with 403
/// before the call path (see the assertion at the end for what the log shows for it).
#[tokio::test]
async fn every_call_leaves_one_audit_line_without_secrets() {
    const SECRET: &str = "sk-live-audit-7f3e9b1d";
    let config = format!(
        "{SIGNED_ONLY}[audit]\nlog_arguments = true\n\n\
         [plugins.demo.idempotency]\nstore_read_only = true\nimplicit_window_s = 0\n\n\
         [plugins.reach.idempotency]\nimplicit_window_s = 0\n"
    );
    let env = Env::demo().plugin(&fixture_wasm("reach"), "reach.wasm").config(&config);
    let issued = env.issue_token("auditor", Some("demo_*,reach_request"), "1h").await;
    let token = token_of(&issued).to_string();
    let token_id = issued["id"].as_str().expect("id").to_string();
    let server = env.spawn_http_with(&[], &[]).await;
    let client = server.client_as(&token).await;

    call_with_meta(&client, "demo_echo", json!({"text": "audited"}), meta_key("audit-ok")).await.ok();
    call_with_meta(&client, "demo_echo", json!({"text": "audited"}), meta_key("audit-ok")).await.ok();
    call(&client, "demo_divide", json!({"a": 1, "b": 0})).await.expect_error("division_by_zero", false);
    let refused = json!({
        "method": "GET",
        "url": "http://127.0.0.1:9/private?access_token=q-secret",
        "headers": {"api_key": SECRET, "accept": "application/json"},
    });
    call(&client, "reach_request", refused).await.expect_error("egress_denied", false);
    // Out of scope over HTTP: 403 before the call path, audited as a `forbidden` denial.
    let denied = try_call(&client, "reach_hunt", json!({})).await;
    assert!(denied.is_err(), "{denied:?}");

    let records = env.audit_records(5).await;
    // Common fields.
    for r in &records {
        assert_eq!(r["principal"], "auditor", "{r}");
        assert_eq!(r["token_id"], token_id.as_str(), "{r}");
        assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
        assert!(r["call_id"].as_str().is_some_and(|c| !c.is_empty()), "{r}");
        assert!(r["latency_us"].is_u64(), "{r}");
    }
    let ids: std::collections::HashSet<&str> = records.iter().filter_map(|r| r["call_id"].as_str()).collect();
    assert_eq!(ids.len(), records.len(), "call ids are unique");

    let demo_digest = sha256_hex(&std::fs::read(demo_wasm()).expect("read demo.wasm"));
    let miss = find(&records, "the first keyed echo", |r| r["idempotency"] == "miss");
    assert_eq!(miss["tool"], "demo_echo");
    assert_eq!(miss["plugin"], "demo");
    assert_eq!(miss["plugin_digest"], demo_digest.as_str());
    assert_eq!(miss["arguments_sha256"], sha256_hex(br#"{"text":"audited"}"#).as_str());
    assert_eq!(miss["arguments"], json!({"text": "audited"}));
    assert_eq!(miss["idempotency_key"], "audit-ok");
    assert_eq!(miss["outcome"], "ok");
    assert!(miss["error_type"].is_null(), "{miss}");
    assert!(miss["fuel_used"].as_u64().is_some_and(|f| f > 0), "the guest ran: {miss}");
    assert_eq!((&miss["outbound"], &miss["refused"]), (&json!([]), &json!([])));

    let hit = find(&records, "the replayed echo", |r| r["idempotency"] == "hit");
    assert_eq!(
        (&hit["tool"], &hit["idempotency_key"], &hit["outcome"]),
        (&json!("demo_echo"), &json!("audit-ok"), &json!("ok"))
    );
    assert_eq!(hit["arguments_sha256"], miss["arguments_sha256"]);
    assert_eq!(hit["fuel_used"], 0, "a replay runs no guest: {hit}");

    let error = find(&records, "the division by zero", |r| r["tool"] == "demo_divide");
    assert_eq!((&error["outcome"], &error["error_type"]), (&json!("error"), &json!("division_by_zero")));
    assert_eq!(error["plugin_digest"], demo_digest.as_str());

    let egress = find(&records, "the refused request", |r| r["tool"] == "reach_request");
    assert_eq!((&egress["outcome"], &egress["error_type"]), (&json!("error"), &json!("egress_denied")));
    assert_eq!(egress["plugin"], "reach");
    assert_eq!(egress["arguments"]["headers"]["api_key"], "[redacted]", "{egress}");
    assert_eq!(egress["arguments"]["headers"]["accept"], "application/json");
    assert_eq!(egress["outbound"], json!([]));
    assert_eq!(
        egress["refused"],
        json!([{"method": "GET", "url": "http://127.0.0.1:9/private", "reason": "no_grant"}])
    );

    // No secret in the file, nor in the server's log (audit lines also go to tracing).
    let text = std::fs::read_to_string(env.audit_path()).expect("audit.jsonl");
    let (_, signature) = parts(&token);
    for secret in [SECRET, token.as_str(), signature] {
        assert!(!text.contains(secret), "{secret:?} leaked into the audit log:\n{text}");
        assert!(!server.log.text().contains(secret), "{secret:?} leaked into the server log");
    }
    // The query of a refused URL is stripped where the host writes the URL; the `url` argument
    // itself is kept as given (log_arguments redacts by key, and `url` is not a sensitive key).
    for field in ["refused", "outbound", "error_message"] {
        assert!(!egress[field].to_string().contains("q-secret"), "{field}: {egress}");
    }

    // The out-of-scope call left exactly one `forbidden` line.
    let denials: Vec<&Value> = records.iter().filter(|r| r["tool"] == "reach_hunt").collect();
    assert!(denials.len() == 1 && denials[0]["error_type"] == "forbidden", "{denials:?}");
    assert_eq!(denials[0]["plugin"], "reach");
    assert_eq!(records.len(), 5, "one line per call: {records:#?}");
}

/// `cordon audit errors` lists the tool errors still standing per idempotency key: a key that
/// failed and then succeeded is reconciled and left out; `--tool` and `--since` filter.
#[tokio::test]
async fn audit_errors_lists_only_unreconciled_failures() {
    // A port with nothing behind it yet: the first request to it fails (retryably).
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
    let upstream_url = format!("http://127.0.0.1:{port}/api/ok");
    let config = format!(
        "[plugins.demo.idempotency]\nstore_read_only = true\n\n\
         [plugins.reach.idempotency]\nimplicit_window_s = 0\n\n\
         [[plugins.reach.http.grants]]\nurl = \"http://127.0.0.1:{port}/api/\"\n"
    );
    let env = Env::demo().plugin(&fixture_wasm("reach"), "reach.wasm").config(&config);
    let (client, _log) = env.stdio_client().await;
    let fetch = json!({"method": "GET", "url": upstream_url});

    let first = call_with_meta(&client, "reach_request", fetch.clone(), meta_key("flaky")).await;
    first.expect_error("upstream_unreachable", true);
    call_with_meta(&client, "demo_divide", json!({"a": 1, "b": 0}), meta_key("div"))
        .await
        .expect_error("division_by_zero", false);
    call_with_meta(&client, "demo_echo", json!({"text": "fine"}), meta_key("fine")).await.ok();

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("rebind the upstream port");
    let app = Router::new().fallback(|| async { Json(json!({"ok": true})) });
    let upstream = tokio::spawn(async move { axum::serve(listener, app).await.expect("upstream serves") });
    let second = call_with_meta(&client, "reach_request", fetch, meta_key("flaky")).await;
    assert_eq!(second.ok()["status"], 200, "{}", second.raw);

    let records = env.audit_records(4).await;
    upstream.abort();
    assert_eq!(records.len(), 4, "{records:#?}");
    let flaky: Vec<&Value> = records.iter().filter(|r| r["idempotency_key"] == "flaky").collect();
    assert_eq!(flaky.len(), 2, "{records:#?}");
    assert_eq!((&flaky[0]["outcome"], &flaky[0]["error_type"]), (&json!("error"), &json!("upstream_unreachable")));
    assert_eq!((&flaky[1]["outcome"], &flaky[1]["idempotency"]), (&json!("ok"), &json!("retry")));
    assert!(records.iter().all(|r| r["principal"] == "local" && r["token_id"].is_null()), "{records:#?}");

    let errors = |extra: &'static [&'static str]| {
        let env = &env;
        async move {
            let mut args = vec!["audit", "errors"];
            args.extend_from_slice(extra);
            let out = env.run(&args).await;
            assert_eq!(out.status.code(), Some(0), "cordon audit errors {extra:?}: {}", describe(&out));
            let report: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("cordon audit errors printed no JSON ({e}): {}", describe(&out)));
            report
        }
    };
    let keys = |report: &Value| -> Vec<String> {
        let entries = report.get("entries").unwrap_or(report);
        entries
            .as_array()
            .unwrap_or_else(|| panic!("no list of entries: {report}"))
            .iter()
            .map(|e| e["key"].as_str().unwrap_or_else(|| panic!("entry without key: {e}")).to_string())
            .collect()
    };
    let all = errors(&[]).await;
    assert_eq!(keys(&all), ["div"], "{all}");
    let entry = &all.get("entries").unwrap_or(&all)[0];
    assert_eq!((&entry["tool"], &entry["error_type"]), (&json!("demo_divide"), &json!("division_by_zero")));
    assert_eq!(keys(&errors(&["--since", "1h"]).await), ["div"]);
    assert_eq!(keys(&errors(&["--tool", "demo_divide"]).await), ["div"]);
    assert!(keys(&errors(&["--tool", "reach_request"]).await).is_empty());
}

// ---- a token in the URL ------------------------------------------------------------------------

/// `[auth] url_tokens`: `/mcp/t/<token>` authenticates by the URL alone, for clients that take
/// only a URL — a real MCP client (sessions, SSE) with no `Authorization` header; the token's
/// scope, revocation and expiry hold exactly as in the header; only host-signed tokens are taken
/// (a static token in the URL is 401); a URL token with a header too is refused; the token never
/// reaches the server's log or the audit log. Without the switch the path is 404, as is every
/// other path under `/mcp/`.
#[tokio::test]
async fn a_token_in_the_url_authenticates_like_the_header() {
    let config = format!("[auth]\nurl_tokens = true\n{}", tokens(&["alice"]));
    let env = demo_and_payments(&config);
    let server = env.spawn_http_with(&[], &[]).await;
    let issued_at = Instant::now();
    let narrow = env.issue_token("url-bot", Some("demo_echo"), "1h").await;
    let narrow = token_of(&narrow).to_string();
    let at = |token: &str| format!("{}/mcp/t/{token}", server.base);

    let client = server.client_at(&at(&narrow)).await;
    assert_eq!(tool_names(&client).await, ["demo_echo"], "the token's scope, as in the header");
    assert_echo(&client, "by URL").await;
    let outside = try_call(&client, "demo_add", json!({"a": 1, "b": 2})).await;
    assert!(outside.is_err(), "a tool outside the scope must be refused: {outside:?}");
    let response = post(&at(&narrow), &call_request(7, "demo_add", json!({"a": 1, "b": 2})).to_string(), &[]).await;
    assert_eq!(response.status(), 403);

    // Only host-signed tokens; never both a URL token and a header.
    let response = post(&at(&token("alice")), &initialize_request().to_string(), &[]).await;
    assert_eq!(response.status(), 401, "a static token in the URL");
    let response = post(&at("cdt1.forged.token"), &initialize_request().to_string(), &[]).await;
    assert_eq!(response.status(), 401, "a forged token in the URL");
    let both = [("authorization", bearer(&token("alice")))];
    let both: Vec<(&str, &str)> = both.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let response = post(&at(&narrow), &initialize_request().to_string(), &both).await;
    assert_eq!(response.status(), 400, "a URL token and a header");
    for path in ["/mcp/t/", "/mcp/x", &format!("/mcp/t/{narrow}/extra")] {
        let response = post(&format!("{}{path}", server.base), &initialize_request().to_string(), &[]).await;
        assert_eq!(response.status(), 404, "{path}");
    }

    // Expiry and revocation.
    let brief = env.issue_token("url-brief", None, "3s").await;
    let brief_client = server.client_at(&at(token_of(&brief))).await;
    assert_echo(&brief_client, "before expiry").await;
    let victim = env.issue_token("url-victim", None, "1h").await;
    let victim_client = server.client_at(&at(token_of(&victim))).await;
    assert_echo(&victim_client, "before revocation").await;
    let out = env.run(&["token", "revoke", victim["id"].as_str().expect("id")]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let after = try_call(&victim_client, "demo_echo", json!({"text": "after revocation"})).await;
    assert!(after.is_err(), "a revoked URL token must not call tools: {after:?}");
    tokio::time::sleep_until((issued_at + Duration::from_secs(5)).into()).await;
    let after = try_call(&brief_client, "demo_echo", json!({"text": "after expiry"})).await;
    assert!(after.is_err(), "an expired URL token must not call tools: {after:?}");
    assert_echo(&client, "the narrow token still works").await;

    // The audit names the principal and the token's id, never the token.
    let records = env.audit_records(3).await;
    let by_url = records.iter().find(|r| r["principal"] == "url-bot").expect("a url-bot line");
    assert!(by_url["token_id"].is_string(), "{by_url}");
    let audit = std::fs::read_to_string(env.audit_path()).expect("the audit log");
    let log = server.log.text();
    for secret in [&narrow, token_of(&brief), token_of(&victim)] {
        let signature = parts(secret).1;
        assert!(!audit.contains(signature), "a token in the audit log");
        assert!(!log.contains(signature), "a token in the server log: {log}");
    }

    // Off by default.
    let env = demo_and_payments(&tokens(&["alice"]));
    let server = env.spawn_http_with(&[], &[]).await;
    let issued = env.issue_token("url-bot", None, "1h").await;
    let url = format!("{}/mcp/t/{}", server.base, token_of(&issued));
    let response = post(&url, &initialize_request().to_string(), &[]).await;
    assert_eq!(response.status(), 404, "url_tokens is off by default");
    assert_accepted(&server, token_of(&issued), "the same token in the header").await;
}

// ---- idempotency scopes ------------------------------------------------------------------------

/// `cordon token issue --idempotency-scope` prints the scope; an empty, overlong or control
/// character scope is a usage error (exit 2) and mints nothing.
#[tokio::test]
async fn idempotency_scopes_are_checked_when_issued() {
    let env = Env::demo().config(SIGNED_ONLY);
    let issued = env.issue_token_with(&["--subject", "batch", "--idempotency-scope", "msgbatch-item-17"]).await;
    assert_eq!(issued["idempotency_scope"], "msgbatch-item-17", "{issued}");
    let plain = env.issue_token("batch", None, "1h").await;
    assert!(plain.get("idempotency_scope").is_none(), "{plain}");
    let long = "x".repeat(129);
    for bad in ["", long.as_str(), "item\n1"] {
        let out = env.run(&["token", "issue", "--subject", "batch", "--idempotency-scope", bad]).await;
        assert_eq!(out.status.code(), Some(2), "scope {bad:?}: {}", describe(&out));
        assert!(out.stdout.is_empty(), "scope {bad:?} minted a token: {}", describe(&out));
    }
}
