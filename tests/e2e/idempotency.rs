//! Idempotency end to end: a retried side-effecting call never acts twice — not when
//! duplicates arrive together, not after a restart, not after the host is killed mid-call.
//!
//! The side effect is a charge at [`PaymentsApi`], a payments API inside the test that honours
//! `Idempotency-Key` the way Stripe does: the first request with a key acts (mints a charge id)
//! and stores its response, a repeat gets the stored response and acts again never. It records
//! every request and every effect, so "acted once" is counted at the upstream, not inferred from
//! what Cordon says. The `payments` example plugin charges through it; its `idempotency_key`
//! argument is schema-marked, so the host keys the call by it.
//!
//! The suite runs against both stores: SQLite by default, and a PostgreSQL server of each test's
//! own with `CORDON_E2E_STORE=postgres` (`make test` runs both).

mod common;

use common::payments::*;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---- environments and calls --------------------------------------------------------------------

/// payments.wasm pointed at `api` (a POST grant for the charge endpoint, patient limits), plus
/// `extra` config, on the store under test.
fn payments_env(api: &PaymentsApi, extra: &str) -> Env {
    Env::new().plugin(&example_wasm("payments"), "payments.wasm").config_with_test_store(&payments_config(api, extra))
}

/// [`payments_env`] on SQLite whatever the store under test: for the tests of the data
/// directory's own files (a full or read-only disk, a corrupted database file).
fn sqlite_payments_env(api: &PaymentsApi, extra: &str) -> Env {
    Env::new().plugin(&example_wasm("payments"), "payments.wasm").config(&payments_config(api, extra))
}

fn payments_config(api: &PaymentsApi, extra: &str) -> String {
    format!(
        "{PATIENT}\n[plugins.payments.config]\nbase_url = \"{base}\"\n\n\
         [[plugins.payments.http.grants]]\nurl = \"{base}{CHARGES}\"\nmethods = [\"POST\"]\n{extra}\n",
        base = api.base
    )
}

/// `payments_charge` arguments.
fn charge(account: &str, amount_cents: u64, key: &str) -> Value {
    json!({"account": account, "amount_cents": amount_cents, "idempotency_key": key})
}

/// `_meta` carrying an idempotency key.
fn meta_key(key: &str) -> Value {
    json!({"cordon/idempotency-key": key})
}

/// A successful charge's structured result, checked against what the API did for `account`.
fn charged<'a>(out: &'a Outcome, api: &PaymentsApi, account: &str) -> &'a Value {
    let result = out.ok();
    let ids: Vec<String> = api.effects().into_iter().filter(|e| e.account == account).map(|e| e.id).collect();
    assert_eq!(ids.len(), 1, "{account} was charged {} times: {ids:?}", ids.len());
    assert_eq!(result["charge_id"], ids[0].as_str(), "{}", out.raw);
    assert_eq!((result["account"].as_str(), result["status"].as_str()), (Some(account), Some("succeeded")));
    result
}

/// The body of a raw JSON-RPC POST (stateless mode), which must be answered 200.
async fn post_text(url: &str, request: &Value, headers: &[(&str, &str)]) -> String {
    let response = post(url, &request.to_string(), headers).await;
    assert_eq!(response.status(), 200, "{request}");
    guard("a response body", response.text()).await.expect("response body")
}

/// The tool result in a raw JSON-RPC response body.
fn result_of(body: &str) -> Outcome {
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    Outcome::from_wire(&body["result"])
}

/// `cordon idempotency ARGS` in `env`.
async fn idempotency(env: &Env, args: &[&str]) -> std::process::Output {
    let mut all = vec!["idempotency"];
    all.extend_from_slice(args);
    env.run(&all).await
}

/// Every record `cordon idempotency list` prints, newest first.
async fn records(env: &Env) -> Vec<Value> {
    let out = idempotency(env, &["list", "--limit", "10000"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect()
}

/// The records of `key`, by `list`.
async fn records_of(env: &Env, key: &str) -> Vec<Value> {
    records(env).await.into_iter().filter(|r| r["key"] == key).collect()
}

/// The one record of `key`.
async fn one_record(env: &Env, key: &str) -> Value {
    let mut found = records_of(env, key).await;
    assert_eq!(found.len(), 1, "records of {key:?}: {found:?}");
    found.remove(0)
}

/// `cordon call TOOL ARGS EXTRA..` in `env`: exit code and the printed result.
async fn cordon_call(env: &Env, tool: &str, args: &Value, extra: &[&str]) -> (Option<i32>, Outcome) {
    let args = args.to_string();
    let mut all = vec!["call", tool, args.as_str()];
    all.extend_from_slice(extra);
    let out = env.run(&all).await;
    let printed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("cordon call printed no JSON ({e}): {}", describe(&out)));
    (out.status.code(), Outcome::from_wire(&printed))
}

/// What idempotency did for the calls in `log` (the `idempotency=` of each `tool call` line,
/// counted), once `calls` such lines are in. Every call logs its line before it answers; the line
/// is at `debug`, which the harness turns on (`SERVE_LOG`).
async fn notes(log: &Log, calls: usize) -> BTreeMap<String, usize> {
    let lines = || log.text().lines().filter(|l| l.contains(" tool call ")).map(String::from).collect::<Vec<_>>();
    guard(&format!("{calls} tool call lines"), async {
        while lines().len() < calls {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut counted = BTreeMap::new();
    for line in lines() {
        let note = line.split_once("idempotency=\"").and_then(|(_, rest)| rest.split_once('"')).map(|(n, _)| n);
        *counted.entry(note.unwrap_or_else(|| panic!("no idempotency= in {line}")).to_string()).or_default() += 1;
    }
    counted
}

/// `[(note, count)]` as [`notes`] returns it.
fn counts(expected: &[(&str, usize)]) -> BTreeMap<String, usize> {
    expected.iter().map(|(note, n)| (note.to_string(), *n)).collect()
}

/// Whether `key` looks like an upstream key: 40 lower-case hex digits.
fn is_upstream_key(key: &str) -> bool {
    key.len() == 40 && key.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

// ---- single flight, replay, reuse, principals ----------------------------------------------------

/// 50 concurrent calls with one key, over one session and then from five sessions: each group
/// runs the guest once (one `miss`, the rest `hit`), the API sees one request and makes one
/// charge, and all 50 results are the same, whole. `list` shows one record per key, attempt 1.
#[tokio::test]
async fn concurrent_duplicates_run_once() {
    let api = PaymentsApi::start().await;
    api.set_delay(Duration::from_millis(300));
    let env = payments_env(&api, "");
    let server = env.spawn_http(&[]).await;

    let one = server.client().await;
    let args = charge("acct_one_session", 500, "order-one-session");
    let outs = futures::future::join_all((0..50).map(|_| call(&one, "payments_charge", args.clone()))).await;
    charged(&outs[0], &api, "acct_one_session");
    for out in &outs {
        assert_eq!(out.raw, outs[0].raw);
    }
    assert_eq!(api.requests().len(), 1, "{:?}", api.requests());

    let sessions = futures::future::join_all((0..5).map(|_| server.client())).await;
    let args = &charge("acct_five_sessions", 700, "order-five-sessions");
    let outs = futures::future::join_all(
        sessions.iter().flat_map(|client| (0..10).map(move |_| call(client, "payments_charge", args.clone()))),
    )
    .await;
    charged(&outs[0], &api, "acct_five_sessions");
    for out in &outs {
        assert_eq!(out.raw, outs[0].raw);
    }
    assert_eq!(api.requests().len(), 2, "{:?}", api.requests());
    assert_eq!(api.effects().len(), 2);

    assert_eq!(notes(&server.log, 100).await, counts(&[("miss", 2), ("hit", 98)]));
    server.stop().await;
    for key in ["order-one-session", "order-five-sessions"] {
        let record = one_record(&env, key).await;
        assert_eq!((record["state"].as_str(), record["attempts"].as_u64()), (Some("completed"), Some(1)), "{record}");
    }
    assert_eq!(records(&env).await.len(), 2);
}

/// 20 concurrent duplicates whose first run fails retryably (the API answers 503): the caller of
/// that run gets the failure, one waiting duplicate runs the call again (same upstream key), and
/// the other 18 replay its result. One charge, two requests.
#[tokio::test]
async fn duplicates_waiting_on_a_retryable_failure_rerun_once() {
    let api = PaymentsApi::start().await;
    api.set_delay(Duration::from_millis(300));
    api.fail_next(1);
    let env = payments_env(&api, "");
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    let args = charge("acct_flaky", 900, "order-flaky");
    let outs = futures::future::join_all((0..20).map(|_| call(&client, "payments_charge", args.clone()))).await;

    let (failed, succeeded): (Vec<&Outcome>, Vec<&Outcome>) = outs.iter().partition(|out| out.is_error);
    assert_eq!(failed.len(), 1, "{:?}", failed.iter().map(|o| &o.raw).collect::<Vec<_>>());
    failed[0].expect_error("upstream_error", true);
    charged(succeeded[0], &api, "acct_flaky");
    assert!(succeeded.iter().all(|out| out.raw == succeeded[0].raw));
    let keys: Vec<Option<String>> = api.requests().into_iter().map(|r| r.key).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1]);
    assert_eq!(notes(&server.log, 20).await, counts(&[("miss", 1), ("retry", 1), ("hit", 18)]));
}

/// A replay after a restart is the stored result byte for byte: the raw JSON-RPC response of
/// the same request is identical on the first server (first run and replay) and on a new server
/// on the same data directory, and the API saw one request.
#[tokio::test]
async fn replay_after_a_restart_is_byte_identical() {
    let api = PaymentsApi::start().await;
    let env = payments_env(&api, "");
    let request = call_request(1, "payments_charge", charge("acct_restart", 1234, "order-restart"));

    let server = env.spawn_http(&["--stateless"]).await;
    let first = post_text(&server.url, &request, &[]).await;
    charged(&result_of(&first), &api, "acct_restart");
    assert_eq!(post_text(&server.url, &request, &[]).await, first);
    server.stop().await;

    let server = env.spawn_http(&["--stateless"]).await;
    assert_eq!(post_text(&server.url, &request, &[]).await, first);
    assert_eq!(notes(&server.log, 1).await, counts(&[("hit", 1)]));
    assert_eq!(api.requests().len(), 1);

    // An rmcp client (session mode) gets the same CallToolResult, serialized to the same text.
    let result = serde_json::from_str::<Value>(&first).unwrap()["result"].to_string();
    server.stop().await;
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    let out = call(&client, "payments_charge", charge("acct_restart", 1234, "order-restart")).await;
    assert_eq!(out.raw.to_string(), result);
    assert_eq!(api.requests().len(), 1);
}

/// The same key with other arguments is refused (`idempotency_key_reused`, not retryable)
/// without reaching the API or changing the record; the original arguments still replay.
#[tokio::test]
async fn a_key_reused_with_other_arguments_is_refused() {
    let api = PaymentsApi::start().await;
    let env = payments_env(&api, "");
    let (client, _log) = env.stdio_client().await;

    let first = call(&client, "payments_charge", charge("acct_reuse", 100, "order-reuse")).await;
    charged(&first, &api, "acct_reuse");
    for other in [charge("acct_reuse", 200, "order-reuse"), charge("acct_other", 100, "order-reuse")] {
        let out = call(&client, "payments_charge", other).await;
        let message = out.expect_error("idempotency_key_reused", false)["message"].as_str().unwrap();
        assert!(message.contains("order-reuse"), "{message}");
    }
    assert_eq!(api.requests().len(), 1);
    assert_eq!(call(&client, "payments_charge", charge("acct_reuse", 100, "order-reuse")).await.raw, first.raw);
    let record = one_record(&env, "order-reuse").await;
    assert_eq!((record["state"].as_str(), record["attempts"].as_u64()), (Some("completed"), Some(1)), "{record}");
    assert_eq!(record["outcome"]["structured"], first.structured.unwrap());
}

/// Keys are namespaced by principal: alice and bob using the same key and arguments get two
/// charges (different upstream keys, different charge ids), and each replays only their own.
#[tokio::test]
async fn principals_do_not_share_keys() {
    let api = PaymentsApi::start().await;
    let env = payments_env(&api, &tokens(&["alice", "bob"]));
    let server = env.spawn_http_with(&[], &[]).await;
    let alice = server.client_as(&token("alice")).await;
    let bob = server.client_as(&token("bob")).await;
    let args = charge("acct_shared", 300, "order-shared");

    let a = call(&alice, "payments_charge", args.clone()).await;
    let b = call(&bob, "payments_charge", args.clone()).await;
    let effects = api.effects();
    assert_eq!(effects.len(), 2, "{effects:?}");
    assert_eq!(a.ok()["charge_id"], effects[0].id.as_str());
    assert_eq!(b.ok()["charge_id"], effects[1].id.as_str());
    assert_ne!(effects[0].key, effects[1].key, "the upstream keys differ by principal");

    assert_eq!(call(&alice, "payments_charge", args.clone()).await.raw, a.raw);
    assert_eq!(call(&bob, "payments_charge", args.clone()).await.raw, b.raw);
    assert_eq!(api.requests().len(), 2);

    server.stop().await;
    let principals: BTreeSet<String> =
        records_of(&env, "order-shared").await.iter().map(|r| r["principal"].as_str().unwrap().to_string()).collect();
    assert_eq!(principals, BTreeSet::from(["alice".to_string(), "bob".to_string()]));
    let shown = idempotency(&env, &["show", "order-shared"]).await;
    assert_eq!(shown.status.code(), Some(0), "{}", describe(&shown));
    assert_eq!(serde_json::from_slice::<Value>(&shown.stdout).unwrap().as_array().unwrap().len(), 2);
}

// ---- where keys come from ----------------------------------------------------------------------

/// Every source keys a call, and the first found wins: `_meta` over the HTTP header over the
/// marked argument (rmcp sessions, raw stateless POSTs, `cordon call --idempotency-key`). A
/// winning key is shown by the record `list` prints (its key and `source`), by the API charging
/// once per winning key, and by `idempotency_key_reused` when only the losing key changes.
#[tokio::test]
async fn key_sources_and_their_precedence() {
    let api = PaymentsApi::start().await;
    let env = payments_env(&api, "");
    let tool = "payments_charge";

    // Session mode: `_meta` through rmcp, the header as an rmcp custom header.
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    let first = call_with_meta(&client, tool, charge("acct_meta", 100, "arg-meta"), meta_key("meta-key")).await;
    charged(&first, &api, "acct_meta");
    let again = call_with_meta(&client, tool, charge("acct_meta", 100, "arg-meta"), meta_key("meta-key")).await;
    assert_eq!(again.raw, first.raw);
    let out = call_with_meta(&client, tool, charge("acct_meta", 100, "arg-meta-2"), meta_key("meta-key")).await;
    out.expect_error("idempotency_key_reused", false);

    let with_header = server.client_with_headers(&[("Idempotency-Key", "header-key")]).await;
    let first = call(&with_header, tool, charge("acct_header", 100, "arg-header")).await;
    charged(&first, &api, "acct_header");
    assert_eq!(call(&with_header, tool, charge("acct_header", 100, "arg-header")).await.raw, first.raw);
    call(&with_header, tool, charge("acct_header", 100, "arg-header-2"))
        .await
        .expect_error("idempotency_key_reused", false);
    // `_meta` beats the header: a new key, so these other arguments run.
    let out =
        call_with_meta(&with_header, tool, charge("acct_meta_header", 100, "arg-mh"), meta_key("meta-over-header"));
    charged(&out.await, &api, "acct_meta_header");
    server.stop().await;

    // Stateless mode: raw POSTs.
    let server = env.spawn_http(&["--stateless"]).await;
    let request = call_request(1, tool, charge("acct_raw_header", 100, "arg-raw"));
    let first = post_text(&server.url, &request, &[("idempotency-key", "raw-header-key")]).await;
    charged(&result_of(&first), &api, "acct_raw_header");
    assert_eq!(post_text(&server.url, &request, &[("idempotency-key", "raw-header-key")]).await, first);
    let mut with_meta = call_request(2, tool, charge("acct_raw_meta", 100, "arg-raw"));
    with_meta["params"]["_meta"] = meta_key("raw-meta-key");
    let first = post_text(&server.url, &with_meta, &[("idempotency-key", "raw-header-key")]).await;
    charged(&result_of(&first), &api, "acct_raw_meta");
    // No key sent: the argument keys it ("arg-raw" is new to the anonymous principal).
    let plain = call_request(3, tool, charge("acct_argument", 100, "arg-raw"));
    let first = post_text(&server.url, &plain, &[]).await;
    charged(&result_of(&first), &api, "acct_argument");
    assert_eq!(post_text(&server.url, &plain, &[]).await, first);
    server.stop().await;

    // `cordon call --idempotency-key` beats the argument too.
    let args = charge("acct_cli", 100, "arg-cli");
    let (code, first) = cordon_call(&env, tool, &args, &["--idempotency-key", "cli-key"]).await;
    assert_eq!(code, Some(0), "{}", first.raw);
    charged(&first, &api, "acct_cli");
    let (_, again) = cordon_call(&env, tool, &args, &["--idempotency-key", "cli-key"]).await;
    assert_eq!(again.raw, first.raw);
    let (code, out) =
        cordon_call(&env, tool, &charge("acct_cli", 100, "arg-cli-2"), &["--idempotency-key", "cli-key"]).await;
    assert_eq!(code, Some(1));
    out.expect_error("idempotency_key_reused", false);

    // One charge per winning key.
    assert_eq!(api.effects().len(), 7, "{:?}", api.effects());
    assert_eq!(api.requests().len(), 7);
    let sources: BTreeMap<String, String> = records(&env)
        .await
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_string(), r["source"].as_str().unwrap().to_string()))
        .collect();
    let expected: BTreeMap<String, String> = [
        ("meta-key", "meta"),
        ("header-key", "header"),
        ("meta-over-header", "meta"),
        ("raw-header-key", "header"),
        ("raw-meta-key", "meta"),
        ("arg-raw", "argument"),
        ("cli-key", "cli"),
    ]
    .into_iter()
    .map(|(k, s)| (k.to_string(), s.to_string()))
    .collect();
    assert_eq!(sources, expected);
}

/// reach.wasm (a tool that is not read-only) and demo.wasm, both pointed at `api`.
fn reach_and_demo_env(api: &PaymentsApi, extra: &str) -> Env {
    let config = format!(
        "{PATIENT}\n[[plugins.reach.http.grants]]\nurl = \"{}/v1/\"\nmethods = [\"GET\", \"POST\"]\n\n{extra}",
        api.base
    );
    Env::demo().plugin(&fixture_wasm("reach"), "reach.wasm").config_with_test_store(&config)
}

/// `reach_request` arguments for a charge POST of `account` at `api`.
fn reach_charge(api: &PaymentsApi, account: &str) -> Value {
    json!({"method": "POST", "url": format!("{}{CHARGES}", api.base), "body": json!({"account": account}).to_string()})
}

/// Without any key, a tool that is not read-only gets an implicit one (the hash of its
/// arguments) for `implicit_window_s`: an agent's identical retry is answered from the store.
/// `implicit_window_s = 0` turns that off; once the window passed, the call runs again.
/// Read-only tools are never keyed — not even with an explicit key — unless `store_read_only`.
#[tokio::test]
async fn implicit_keys_dedupe_retries_within_the_window() {
    let api = PaymentsApi::start().await;
    let env = reach_and_demo_env(&api, "");
    let (client, log) = env.stdio_client().await;
    let first = call(&client, "reach_request", reach_charge(&api, "acct_implicit")).await;
    assert_eq!(first.ok()["status"], 200, "{}", first.raw);
    assert_eq!(call(&client, "reach_request", reach_charge(&api, "acct_implicit")).await.raw, first.raw);
    assert_eq!(api.requests_for("acct_implicit").len(), 1);
    for text in ["once", "once"] {
        assert_echo(&client, text).await;
    }
    call_with_meta(&client, "demo_echo", json!({"text": "keyed"}), meta_key("echo-key")).await.ok();
    assert_eq!(notes(&log, 5).await, counts(&[("miss", 1), ("hit", 1), ("none", 3)]));
    drop(client);
    let all = records(&env).await;
    assert_eq!(all.len(), 1, "only reach_request is stored: {all:?}");
    assert_eq!((all[0]["tool"].as_str(), all[0]["source"].as_str()), (Some("reach_request"), Some("implicit")));
    assert!(all[0]["key"].as_str().is_some_and(|k| k.len() == 64), "{}", all[0]);
    // The implicit key sends an upstream key like any other.
    assert!(api.requests_for("acct_implicit")[0].key.as_deref().is_some_and(is_upstream_key));

    let env = reach_and_demo_env(
        &api,
        "[plugins.reach.idempotency]\nimplicit_window_s = 0\n[plugins.demo.idempotency]\nstore_read_only = true\n",
    );
    let (client, log) = env.stdio_client().await;
    for _ in 0..2 {
        call(&client, "reach_request", reach_charge(&api, "acct_no_window")).await.ok();
        assert_echo(&client, "stored").await;
    }
    assert_eq!(api.requests_for("acct_no_window").len(), 2, "implicit_window_s = 0 runs both");
    assert!(api.requests_for("acct_no_window").iter().all(|r| r.key.is_none()), "an unkeyed call sends no key");
    assert_eq!(api.effects().iter().filter(|e| e.account == "acct_no_window").count(), 2);
    assert_eq!(notes(&log, 4).await, counts(&[("none", 2), ("miss", 1), ("hit", 1)]));
    drop(client);
    let all = records(&env).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!((all[0]["tool"].as_str(), all[0]["source"].as_str()), (Some("demo_echo"), Some("implicit")));

    let env = reach_and_demo_env(&api, "[plugins.reach.idempotency]\nimplicit_window_s = 1\n");
    let (client, _log) = env.stdio_client().await;
    call(&client, "reach_request", reach_charge(&api, "acct_short_window")).await.ok();
    // Not a timing assertion: waiting well past the window only makes the expiry certain.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    call(&client, "reach_request", reach_charge(&api, "acct_short_window")).await.ok();
    assert_eq!(api.requests_for("acct_short_window").len(), 2, "the window expired");
}

// ---- failures and upstream keys ----------------------------------------------------------------

/// A retryable failure (the API answers 503) is recorded as such; the next attempt with the same
/// key runs again (attempt 2, logged as `retry`) and sends the same upstream `Idempotency-Key`;
/// the API charges once. A non-retryable failure (402) is final: replayed, never re-run.
#[tokio::test]
async fn retryable_failures_rerun_with_the_same_upstream_key() {
    let api = PaymentsApi::start().await;
    let env = payments_env(&api, "");
    let (client, log) = env.stdio_client().await;
    let args = charge("acct_retry", 700, "order-retry");

    api.fail_next(1);
    let out = call(&client, "payments_charge", args.clone()).await;
    let message = out.expect_error("upstream_error", true)["message"].as_str().unwrap();
    assert!(message.contains("503"), "{message}");
    let record = one_record(&env, "order-retry").await;
    assert_eq!((record["state"].as_str(), record["attempts"].as_u64()), (Some("retryable"), Some(1)), "{record}");

    let ok = call(&client, "payments_charge", args.clone()).await;
    charged(&ok, &api, "acct_retry");
    let record = one_record(&env, "order-retry").await;
    assert_eq!((record["state"].as_str(), record["attempts"].as_u64()), (Some("completed"), Some(2)), "{record}");
    assert_eq!(call(&client, "payments_charge", args).await.raw, ok.raw);
    let keys: Vec<Option<String>> = api.requests_for("acct_retry").into_iter().map(|r| r.key).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1], "both attempts send the same upstream key");
    assert!(keys[0].as_deref().is_some_and(is_upstream_key), "{keys:?}");

    let args = charge(DECLINED, 100, "order-declined");
    let declined = call(&client, "payments_charge", args.clone()).await;
    let message = declined.expect_error("upstream_error", false)["message"].as_str().unwrap();
    assert!(message.contains("402"), "{message}");
    assert_eq!(call(&client, "payments_charge", args).await.raw, declined.raw);
    assert_eq!(api.requests_for(DECLINED).len(), 1, "a final failure is replayed, not re-run");
    let record = one_record(&env, "order-declined").await;
    assert_eq!((record["state"].as_str(), record["attempts"].as_u64()), (Some("completed"), Some(1)), "{record}");
    assert_eq!(record["outcome"]["status"], "error", "{record}");
    assert_eq!(notes(&log, 5).await, counts(&[("miss", 2), ("retry", 1), ("hit", 2)]));
}

/// Each request of a keyed call carries a deterministic upstream key: different call keys give
/// different upstream keys, the requests of one call get one each, and a grant with
/// `idempotency_key = false` sends none (Cordon still dedupes the call itself).
#[tokio::test]
async fn keyed_calls_send_upstream_keys_unless_the_grant_says_not() {
    let api = PaymentsApi::start().await;
    let env = payments_env(&api, "");
    let (client, _log) = env.stdio_client().await;
    call(&client, "payments_charge", charge("acct_k1", 100, "order-k1")).await.ok();
    call(&client, "payments_charge", charge("acct_k2", 100, "order-k2")).await.ok();
    let k1 = api.requests_for("acct_k1")[0].key.clone().expect("an upstream key");
    let k2 = api.requests_for("acct_k2")[0].key.clone().expect("an upstream key");
    assert!(is_upstream_key(&k1) && is_upstream_key(&k2), "{k1} {k2}");
    assert_ne!(k1, k2);
    drop(client);

    // Three requests in one keyed call: three different keys, none of them a call's first key.
    let env = reach_and_demo_env(&api, "[plugins.reach.idempotency]\nimplicit_window_s = 0\n");
    let (client, _log) = env.stdio_client().await;
    let before = api.requests().len();
    let burst = json!({"url": format!("{}/v1/burst", api.base), "count": 3});
    let out = call_with_meta(&client, "reach_burst", burst, meta_key("burst-key")).await;
    assert_eq!(out.ok()["ok"], 3, "{}", out.raw);
    let keys: BTreeSet<String> = api.requests()[before..].iter().map(|r| r.key.clone().expect("a key")).collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.iter().all(|k| is_upstream_key(k) && *k != k1 && *k != k2), "{keys:?}");
    drop(client);

    let api = PaymentsApi::start().await;
    let env = Env::new().plugin(&example_wasm("payments"), "payments.wasm").config_with_test_store(&format!(
        "[plugins.payments.config]\nbase_url = \"{base}\"\n\n[[plugins.payments.http.grants]]\n\
         url = \"{base}{CHARGES}\"\nmethods = [\"POST\"]\nidempotency_key = false\n",
        base = api.base
    ));
    let (client, _log) = env.stdio_client().await;
    let first = call(&client, "payments_charge", charge("acct_no_header", 100, "order-no-header")).await;
    charged(&first, &api, "acct_no_header");
    assert_eq!(call(&client, "payments_charge", charge("acct_no_header", 100, "order-no-header")).await.raw, first.raw);
    let requests = api.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].key, None, "{requests:?}");
}

/// A call cut off by a crash: the server is killed while the API holds its (already made)
/// charge's answer. The record stays `in_progress` — `purge` never deletes it — and the next
/// attempt, on a new server, recovers it (logged), sending the same upstream key: the API
/// replays its stored answer, so there is one charge and the caller gets its id.
#[tokio::test]
async fn a_call_cut_off_by_a_crash_is_recovered_with_the_same_upstream_key() {
    let api = PaymentsApi::start().await;
    let env = payments_env(&api, "");
    let request = call_request(1, "payments_charge", charge("acct_crash", 900, "order-crash"));

    api.set_delay(HANG_GUARD);
    let server = env.spawn_http(&["--stateless"]).await;
    let url = server.url.clone();
    let cut_off = tokio::spawn(async move {
        let body = request.to_string();
        let sent = reqwest::Client::new().post(&url).header("accept", "application/json, text/event-stream");
        sent.header("content-type", "application/json").body(body).send().await
    });
    guard("the charge to reach the API", async {
        while api.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    server.stop().await;
    assert!(guard("the cut-off request to fail", cut_off).await.unwrap().is_err(), "the server was killed");
    api.set_delay(Duration::ZERO);

    let record = one_record(&env, "order-crash").await;
    assert_eq!((record["state"].as_str(), record["attempts"].as_u64()), (Some("in_progress"), Some(1)), "{record}");
    let purged = idempotency(&env, &["purge", "--older-than", "0s"]).await;
    assert_eq!(String::from_utf8_lossy(&purged.stdout), "purged 0 record(s)\n", "{}", describe(&purged));

    let server = env.spawn_http(&["--stateless"]).await;
    let request = call_request(1, "payments_charge", charge("acct_crash", 900, "order-crash"));
    let body = post_text(&server.url, &request, &[]).await;
    charged(&result_of(&body), &api, "acct_crash");
    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].key, requests[1].key);
    assert_eq!(post_text(&server.url, &request, &[]).await, body);
    assert_eq!(notes(&server.log, 2).await, counts(&[("recovery", 1), ("hit", 1)]));
    assert!(server.log.text().contains("recovering a keyed call"), "{}", server.log.text());
    server.stop().await;
    let record = one_record(&env, "order-crash").await;
    assert_eq!((record["state"].as_str(), record["attempts"].as_u64()), (Some("completed"), Some(2)), "{record}");
}

/// Two processes on one data directory (as two desktop clients each starting Cordon, or
/// `cordon call` beside a server): while the server's keyed charge is still running, the same
/// key from `cordon call` is not taken for a crash. It waits for the live owner and replays its
/// outcome, so the upstream sees one request for the key (before, it saw two).
#[tokio::test]
async fn a_second_process_never_reruns_a_live_claim() {
    let api = PaymentsApi::start().await;
    // The CLI calls as the same principal as the unauthenticated HTTP caller: one namespace.
    let env = sqlite_payments_env(&api, "[server]\nstdio_principal = \"anonymous\"\n");
    api.set_delay(Duration::from_secs(3));
    let server = env.spawn_http(&["--stateless"]).await;
    let request = call_request(1, "payments_charge", charge("acct_twice", 700, "order-two-processes"));
    let url = server.url.clone();
    let first = tokio::spawn(async move { post_text(&url, &request, &[]).await });
    guard("the charge to reach the API", async {
        while api.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let (code, out) =
        cordon_call(&env, "payments_charge", &charge("acct_twice", 700, "order-two-processes"), &[]).await;
    assert_eq!(code, Some(0), "{}", out.raw);
    let by_cli = charged(&out, &api, "acct_twice").clone();
    let by_server = result_of(&guard("the server's charge", first).await.expect("the server answers"));
    assert_eq!(by_server.ok(), &by_cli);
    assert_eq!(api.requests().len(), 1, "{:?}", api.requests());
    let record = one_record(&env, "order-two-processes").await;
    assert_eq!((record["state"].as_str(), record["attempts"].as_u64()), (Some("completed"), Some(1)), "{record}");
}

// ---- idempotency scopes (batch items) -----------------------------------------------------------

/// `[auth]` for the scope tests: host-signed tokens only.
const SIGNED_ONLY: &str = "\n[auth]\nsigned_tokens_only = true\n";
/// Implicit keys off: what dedupes below is the scope, never the 60 s window.
const NO_IMPLICIT: &str = "\n[plugins.payments.idempotency]\nimplicit_window_s = 0\n";

/// `cordon token issue` for `subject`, scoped by `scope` when given: the token.
async fn scoped_token(env: &Env, subject: &str, scope: Option<&str>) -> String {
    let mut args = vec!["--subject", subject, "--ttl", "1h"];
    if let Some(scope) = scope {
        args.extend_from_slice(&["--idempotency-scope", scope]);
    }
    let issued = env.issue_token_with(&args).await;
    issued["token"].as_str().unwrap_or_else(|| panic!("no token in {issued}")).to_string()
}

/// A charge without a key argument, as `token`, on a stateless server: the raw body.
async fn charge_as(server: &HttpServer, token: &str, id: u64, account: &str, cents: u64) -> String {
    let request = call_request(id, "payments_charge", json!({"account": account, "amount_cents": cents}));
    post_text(&server.url, &request, &[("authorization", &format!("Bearer {token}"))]).await
}

/// A token's idempotency scope keys its calls that name no key: a resubmitted batch item with a
/// fresh token for the same scope replays the first charge (the API charged once); the same
/// arguments under another scope, or with no scope at all, charge again; one item charging twice
/// with the same arguments gets the first charge back. The audit lines carry the scope, and
/// `cordon audit errors --scope` reconciles one item.
#[tokio::test]
async fn a_scope_replays_a_resubmitted_item_with_a_fresh_token() {
    let api = PaymentsApi::start().await;
    let env = payments_env(&api, &format!("{NO_IMPLICIT}{SIGNED_ONLY}"));
    let server = env.spawn_http_with(&[], &["--stateless"]).await;
    let first = scoped_token(&env, "batch-job", Some("item-1")).await;
    let resubmitted = scoped_token(&env, "batch-job", Some("item-1")).await;
    assert_ne!(first, resubmitted);

    let a = charge_as(&server, &first, 1, "acct_scope", 500).await;
    let charged_a = result_of(&a).ok()["charge_id"].clone();
    assert!(charged_a.is_string(), "{a}");
    let again = charge_as(&server, &resubmitted, 2, "acct_scope", 500).await;
    assert_eq!(result_of(&again).ok(), result_of(&a).ok(), "a resubmitted item replays");
    assert_eq!(api.effects().len(), 1, "{:?}", api.effects());
    // The same item charging twice with the same arguments: the first charge, not a second.
    let twice = charge_as(&server, &first, 3, "acct_scope", 500).await;
    assert_eq!(result_of(&twice).ok()["charge_id"], charged_a);
    assert_eq!(api.effects().len(), 1);

    // Another item with the same arguments is another charge; so is a token without a scope.
    let other_item = scoped_token(&env, "batch-job", Some("item-2")).await;
    let b = charge_as(&server, &other_item, 4, "acct_scope", 500).await;
    assert_ne!(result_of(&b).ok()["charge_id"], charged_a);
    let unscoped = scoped_token(&env, "batch-job", None).await;
    charge_as(&server, &unscoped, 5, "acct_scope", 500).await;
    assert_eq!(api.effects().len(), 3, "{:?}", api.effects());

    // A declined charge in a third item: the reconciliation pass finds it by its scope.
    let declined_item = scoped_token(&env, "batch-job", Some("item-3")).await;
    let declined = charge_as(&server, &declined_item, 6, DECLINED, 100).await;
    result_of(&declined).error();

    let lines = env.audit_records(6).await;
    let scoped: Vec<&Value> = lines.iter().filter(|l| l["idempotency_scope"] == "item-1").collect();
    assert_eq!(scoped.len(), 3, "{lines:#?}");
    assert!(
        scoped.iter().all(|l| l["idempotency_key"].as_str().is_some_and(|k| k.starts_with("item-1/"))),
        "{scoped:#?}"
    );
    let uses: Vec<&str> = scoped.iter().map(|l| l["idempotency"].as_str().unwrap_or_default()).collect();
    assert_eq!(uses, ["miss", "hit", "hit"], "{scoped:#?}");
    let errors_of = |scope: &'static str| {
        let env = &env;
        async move {
            let out = env.run(&["audit", "errors", "--scope", scope]).await;
            assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
            let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
            report["entries"].as_array().cloned().unwrap_or_default()
        }
    };
    assert!(errors_of("item-1").await.is_empty());
    let standing = errors_of("item-3").await;
    assert_eq!(standing.len(), 1, "{standing:?}");
    assert_eq!(standing[0]["idempotency_scope"], "item-3");
}

// ---- crash test --------------------------------------------------------------------------------

/// A tiny xorshift64, so kill points are reproducible from the seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

const CRASH_SEED: u64 = 0x005e_ed0f_c0de_2024;
const CRASH_KEYS: usize = 300;
const CRASH_WORKERS: usize = 16;
const CRASH_KILLS: usize = 4;

/// The server currently serving: a generation (bumped by each restart) and its URL.
type Current = tokio::sync::watch::Receiver<(usize, String)>;

/// What the driver saw.
#[derive(Default)]
struct Driven {
    /// Every successful raw response body per key.
    answers: BTreeMap<usize, Vec<String>>,
    /// Calls that failed because the server went away, retried.
    transport_retries: usize,
    /// Anything that is not a success or a dead server.
    failures: Vec<String>,
}

/// Sends `request` (as item or key `i`, with `token` if any) until it gets an answer, following
/// restarts: a transport error (the server died under the call) waits for the next server and
/// sends it again; an HTTP error or a tool error is a failure.
async fn drive(
    i: usize,
    request: Value,
    token: Option<&str>,
    http: &reqwest::Client,
    mut current: Current,
    driven: &Mutex<Driven>,
) {
    loop {
        let (generation, url) = current.borrow_and_update().clone();
        let mut post = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(token) = token {
            post = post.header("authorization", format!("Bearer {token}"));
        }
        let body = match post.body(request.to_string()).send().await {
            Ok(response) if response.status() == 200 => response.text().await,
            Ok(response) => {
                driven.lock().unwrap().failures.push(format!("{i}: HTTP {}", response.status()));
                return;
            }
            Err(e) => Err(e),
        };
        let Ok(body) = body else {
            driven.lock().unwrap().transport_retries += 1;
            if current.wait_for(|(g, _)| *g > generation).await.is_err() {
                driven.lock().unwrap().failures.push(format!("{i}: no server to retry on"));
                return;
            }
            continue;
        };
        let out = result_of(&body);
        if out.is_error {
            driven.lock().unwrap().failures.push(format!("{i}: {}", out.raw));
        } else {
            driven.lock().unwrap().answers.entry(i).or_default().push(body);
        }
        return;
    }
}

/// Calls `payments_charge` for key `i` until it succeeds, following restarts.
async fn drive_key(i: usize, http: &reqwest::Client, current: Current, driven: &Mutex<Driven>) {
    let request =
        call_request(i as u64, "payments_charge", charge(&format!("acct_{i}"), 100 + i as u64, &format!("crash-{i}")));
    drive(i, request, None, http, current, driven).await;
}

/// Kills the host at random points while a few hundred keyed charges are in flight, restarting
/// it on the same data directory each time; the driver retries every call the kills cut off with
/// the same key until each has an answer. Then: the API charged every account exactly once (one
/// effect per upstream key, one upstream key per account), every key has a successful result
/// and all its answers (including a final replay of every key) are byte-identical and carry the
/// API's charge id, `list` shows every key `completed`, and at least one call was recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_hosts_never_charge_twice() {
    let seed = CRASH_SEED;
    let outcome = tokio::time::timeout(Duration::from_secs(120), crash_run(seed)).await;
    let stats = outcome.unwrap_or_else(|_| panic!("crash test (seed {seed:#x}) did not finish within 120 s"));
    eprintln!("crash test (seed {seed:#x}): {stats}");
}

async fn crash_run(seed: u64) -> String {
    let api = PaymentsApi::start().await;
    api.set_delay(Duration::from_millis(150));
    let env = payments_env(&api, "");
    let mut server = env.spawn_http(&["--stateless"]).await;
    let mut logs = vec![server.log.clone()];
    let (publish, current) = tokio::sync::watch::channel((0, server.url.clone()));
    let driven = Arc::new(Mutex::new(Driven::default()));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let queue = Arc::new(Mutex::new((0..CRASH_KEYS).collect::<VecDeque<_>>()));
    let http = reqwest::Client::new();

    let workers: Vec<_> = (0..CRASH_WORKERS)
        .map(|_| {
            let (queue, current, driven, done, http) =
                (queue.clone(), current.clone(), driven.clone(), done.clone(), http.clone());
            tokio::spawn(async move {
                loop {
                    let Some(i) = queue.lock().unwrap().pop_front() else { return };
                    drive_key(i, &http, current.clone(), &driven).await;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();

    // Kill when the driver has done about 1/5, 2/5, ... of the keys (so every kill lands while
    // calls are in flight), plus a random pause so the kill lands anywhere in a call's life.
    let mut rng = XorShift(seed);
    let mut kills = 0;
    for k in 1..=CRASH_KILLS {
        let threshold = k * CRASH_KEYS / (CRASH_KILLS + 1) - rng.range(0, 20) as usize;
        while done.load(std::sync::atomic::Ordering::SeqCst) < threshold {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 150))).await;
        server.stop().await;
        kills += 1;
        server = env.spawn_http(&["--stateless"]).await;
        logs.push(server.log.clone());
        publish.send((k, server.url.clone())).expect("workers are listening");
    }
    for worker in workers {
        worker.await.expect("a driver worker");
    }

    // Every key once more, on the last server: a replay.
    let replays: Vec<_> = (0..CRASH_KEYS).map(|i| drive_key(i, &http, current.clone(), &driven)).collect();
    futures::future::join_all(replays).await;
    server.stop().await;

    let driven = std::mem::take(&mut *driven.lock().unwrap());
    assert!(driven.failures.is_empty(), "seed {seed:#x}: {} failures: {:?}", driven.failures.len(), driven.failures);
    let effects = api.effects();
    let mut per_key: HashMap<Option<String>, usize> = HashMap::new();
    for effect in &effects {
        *per_key.entry(effect.key.clone()).or_default() += 1;
    }
    assert!(
        per_key.iter().all(|(key, n)| key.is_some() && *n == 1),
        "seed {seed:#x}: effects per upstream key: {per_key:?}"
    );
    let mut keys_per_account: HashMap<String, BTreeSet<Option<String>>> = HashMap::new();
    for request in api.requests() {
        // A body cut short by a kill names no account; the API refused it without acting.
        if let Some(account) =
            serde_json::from_str::<Value>(&request.body).ok().and_then(|b| b["account"].as_str().map(String::from))
        {
            keys_per_account.entry(account).or_default().insert(request.key);
        }
    }
    for i in 0..CRASH_KEYS {
        let account = format!("acct_{i}");
        let ids: Vec<&str> = effects.iter().filter(|e| e.account == account).map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), 1, "seed {seed:#x}: {account} charged {} times", ids.len());
        assert_eq!(keys_per_account[&account].len(), 1, "seed {seed:#x}: {account}: {:?}", keys_per_account[&account]);
        let answers = &driven.answers[&i];
        assert!(answers.len() >= 2, "seed {seed:#x}: key {i} has {} answers", answers.len());
        assert!(answers.iter().all(|a| a == &answers[0]), "seed {seed:#x}: key {i} answered differently: {answers:?}");
        assert_eq!(result_of(&answers[0]).ok()["charge_id"], ids[0], "seed {seed:#x}: key {i}");
    }
    assert_eq!(effects.len(), CRASH_KEYS);

    let all = records(&env).await;
    assert_eq!(all.len(), CRASH_KEYS, "seed {seed:#x}");
    let unfinished: Vec<&Value> = all.iter().filter(|r| r["state"] != "completed").collect();
    assert!(unfinished.is_empty(), "seed {seed:#x}: not completed: {unfinished:?}");
    let rerun = all.iter().filter(|r| r["attempts"].as_u64() > Some(1)).count();
    let log: String = logs.iter().map(Log::text).collect();
    let recoveries = log.lines().filter(|l| l.contains("idempotency=\"recovery\"")).count();
    assert!(recoveries >= 1, "seed {seed:#x}: no call was recovered after {kills} kills");
    assert_eq!(kills, CRASH_KILLS);
    format!(
        "{kills} kills, {} calls cut off and retried, {recoveries} recoveries, {rerun} keys run more than once, \
         {} upstream requests for {CRASH_KEYS} charges",
        driven.transport_retries,
        api.requests().len()
    )
}

/// `examples/batch/batch.py` (docs/batch.md) against a real server: `submit --dry-run` mints one
/// scoped token per item into a private request file; the connector's side is played by calling
/// the charge with each item's `authorization_token`; `reconcile --results` finds the item that
/// failed as a message and the one whose tool call failed (`cordon audit errors --scope`); the
/// resubmission, with fresh tokens for the same `custom_id`s, charges nothing twice.
#[tokio::test]
async fn the_batch_script_mints_submits_and_reconciles() {
    let api = PaymentsApi::start().await;
    let env = payments_env(&api, &format!("{NO_IMPLICIT}{SIGNED_ONLY}"));
    let server = env.spawn_http_with(&[], &["--stateless"]).await;
    let dir = env.path().to_path_buf();
    // What each item's model would charge.
    let charges = [("order-1", "acct_batch_a", 100), ("order-2", "acct_batch_b", 200), ("order-3", DECLINED, 300)];
    let items: String = charges
        .iter()
        .map(|(id, account, cents)| {
            json!({"custom_id": id, "prompt": format!("Charge {account} {cents} cents")}).to_string() + "\n"
        })
        .collect();
    std::fs::write(dir.join("items.jsonl"), items).unwrap();
    let script = |args: Vec<String>| {
        let (env, dir) = (&env, &dir);
        async move {
            let mut command = tokio::process::Command::new("python3");
            command
                .arg(workspace().join("examples/batch/batch.py"))
                .args(&args)
                .arg("--config")
                .arg(env.config_path())
                .env("CORDON", cordon_bin())
                .env("CORDON_DATA", env.data_dir())
                .env("CORDON_PLUGINS", env.plugins_dir())
                .env_remove("ANTHROPIC_API_KEY")
                .current_dir(dir);
            let out = guard("batch.py", command.output()).await.expect("python3 runs");
            assert_eq!(out.status.code(), Some(0), "batch.py {args:?}: {}", describe(&out));
            let summary: Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
            summary
        }
    };
    // The connector's side: each item's charge, with the token the job put in its request.
    let connect = |file: &'static str| {
        let (server, dir) = (&server, &dir);
        async move {
            let request: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
            let mut answers = BTreeMap::new();
            for (n, item) in request["requests"].as_array().expect("requests").iter().enumerate() {
                let id = item["custom_id"].as_str().unwrap().to_string();
                let server_entry = &item["params"]["mcp_servers"][0];
                assert_eq!(server_entry["url"], server.url.as_str());
                let token = server_entry["authorization_token"].as_str().expect("a token");
                let (_, account, cents) = charges.iter().find(|(c, _, _)| *c == id).unwrap();
                answers.insert(id, result_of(&charge_as(server, token, n as u64, account, *cents).await));
            }
            answers
        }
    };
    let submit = |items: &str, out: &str| {
        let url = server.url.clone();
        vec![
            "submit",
            items,
            "--url",
            &url,
            "--subject",
            "batch-job",
            "--tools",
            "payments_*",
            "--dry-run",
            "--out",
            out,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    assert_eq!(script(submit("items.jsonl", "batch.json")).await["items"], 3);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("batch.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the request holds tokens");
    }
    let first = connect("batch.json").await;
    assert_eq!(api.effects().len(), 2, "{:?}", api.effects());
    first["order-3"].error();

    // The API's results: order-2 errored as a message (its charge went through all the same).
    let results: String = [("order-1", "succeeded"), ("order-2", "errored"), ("order-3", "succeeded")]
        .iter()
        .map(|(id, kind)| json!({"custom_id": id, "result": {"type": kind}}).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("results.jsonl"), results).unwrap();
    let reconcile = ["reconcile", "--results", "results.jsonl", "--items", "items.jsonl", "--resubmit", "again.jsonl"];
    let summary = script(reconcile.iter().map(|a| a.to_string()).collect()).await;
    assert_eq!(summary["message_failed"], json!(["order-2"]), "{summary}");
    assert_eq!(summary["tool_failed"], json!(["order-3"]), "{summary}");
    let again = std::fs::read_to_string(dir.join("again.jsonl")).unwrap();
    assert_eq!(again.lines().count(), 2, "{again}");

    // The resubmission: fresh tokens, same custom_ids, nothing charged twice.
    script(submit("again.jsonl", "again.json")).await;
    let first_tokens = std::fs::read_to_string(dir.join("batch.json")).unwrap();
    let second: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("again.json")).unwrap()).unwrap();
    let token = second["requests"][0]["params"]["mcp_servers"][0]["authorization_token"].as_str().unwrap();
    assert!(!first_tokens.contains(token), "a resubmission mints fresh tokens");
    let resubmitted = connect("again.json").await;
    assert_eq!(resubmitted["order-2"].ok(), first["order-2"].ok(), "order-2 replays its charge");
    assert_eq!(resubmitted["order-3"].error(), first["order-3"].error());
    assert_eq!(api.effects().len(), 2, "{:?}", api.effects());
}

// ---- a batch job's resubmissions --------------------------------------------------------------

const BATCH_SEED: u64 = 0x0ba7_c4ed_5ee0_2026;
const BATCH_ITEMS: usize = 200;
const BATCH_SUBMISSIONS: usize = 3;
const BATCH_WORKERS: usize = 16;
/// Kills per submission round.
const BATCH_KILLS: usize = 2;

/// Sends item `i`'s charge as `token` until it has an answer, following restarts (the job's
/// connector would resubmit the item; here the same request goes again with the same token).
async fn drive_item(i: usize, token: &str, http: &reqwest::Client, current: Current, driven: &Mutex<Driven>) {
    // Items 2k and 2k+1 make the same charge: two items, two charges, told apart by scope only.
    let request = call_request(
        i as u64,
        "payments_charge",
        json!({"account": format!("acct_pair_{}", i / 2), "amount_cents": 100 + (i / 2) as u64}),
    );
    drive(i, request, Some(token), http, current, driven).await;
}

/// A Message Batch as Cordon sees it through the MCP connector: 200 items, each charging through
/// a token scoped by its `custom_id`, the whole batch submitted three times with fresh tokens
/// each time (as a job resubmits failed items), and the server killed (SIGKILL) at random points
/// of every submission and restarted on the same store; calls cut off are sent again. Then every
/// item charged the key-honouring API exactly once (one effect per item and per upstream key,
/// two items with the same arguments charged twice), and each item's three answers are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmitted_batch_charges_each_item_once() {
    let outcome = tokio::time::timeout(Duration::from_secs(240), batch_run(BATCH_SEED)).await;
    let stats = outcome.unwrap_or_else(|_| panic!("batch test (seed {BATCH_SEED:#x}) did not finish within 240 s"));
    eprintln!("batch test (seed {BATCH_SEED:#x}): {stats}");
}

async fn batch_run(seed: u64) -> String {
    let api = PaymentsApi::start().await;
    api.set_delay(Duration::from_millis(40));
    let env = payments_env(&api, &format!("{NO_IMPLICIT}{SIGNED_ONLY}"));
    // Each submission mints a fresh token per item (the job's side: `cordon token issue`).
    let mut tokens: Vec<Vec<String>> = Vec::new();
    for _ in 0..BATCH_SUBMISSIONS {
        use futures::StreamExt;
        let minted: Vec<String> = futures::stream::iter(0..BATCH_ITEMS)
            .map(|i| {
                let env = &env;
                async move { scoped_token(env, "batch-job", Some(&format!("custom-{i}"))).await }
            })
            .buffered(8)
            .collect()
            .await;
        tokens.push(minted);
    }

    let mut server = env.spawn_http_with(&[], &["--stateless"]).await;
    let mut logs = vec![server.log.clone()];
    let (publish, current) = tokio::sync::watch::channel((0, server.url.clone()));
    let driven = Arc::new(Mutex::new(Driven::default()));
    let http = reqwest::Client::new();
    let mut rng = XorShift(seed);
    let mut kills = 0;
    for round_tokens in &tokens {
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let queue = Arc::new(Mutex::new((0..BATCH_ITEMS).collect::<VecDeque<_>>()));
        let round_tokens = Arc::new(round_tokens.clone());
        let workers: Vec<_> = (0..BATCH_WORKERS)
            .map(|_| {
                let (queue, current, driven, done, http, tokens) =
                    (queue.clone(), current.clone(), driven.clone(), done.clone(), http.clone(), round_tokens.clone());
                tokio::spawn(async move {
                    loop {
                        let Some(i) = queue.lock().unwrap().pop_front() else { return };
                        drive_item(i, &tokens[i], &http, current.clone(), &driven).await;
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for k in 1..=BATCH_KILLS {
            let threshold = k * BATCH_ITEMS / (BATCH_KILLS + 1) - rng.range(0, 20) as usize;
            while done.load(std::sync::atomic::Ordering::SeqCst) < threshold {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.range(0, 60))).await;
            server.stop().await;
            kills += 1;
            server = env.spawn_http_with(&[], &["--stateless"]).await;
            logs.push(server.log.clone());
            publish.send((kills, server.url.clone())).expect("workers are listening");
        }
        for worker in workers {
            worker.await.expect("a batch worker");
        }
    }
    server.stop().await;

    let driven = std::mem::take(&mut *driven.lock().unwrap());
    assert!(driven.failures.is_empty(), "seed {seed:#x}: {} failures: {:?}", driven.failures.len(), driven.failures);
    let effects = api.effects();
    let mut per_key: HashMap<Option<String>, usize> = HashMap::new();
    for effect in &effects {
        *per_key.entry(effect.key.clone()).or_default() += 1;
    }
    assert!(per_key.iter().all(|(key, n)| key.is_some() && *n == 1), "seed {seed:#x}: effects per key: {per_key:?}");
    assert_eq!(effects.len(), BATCH_ITEMS, "seed {seed:#x}: one charge per item");
    for pair in 0..BATCH_ITEMS / 2 {
        let account = format!("acct_pair_{pair}");
        let ids: BTreeSet<&str> = effects.iter().filter(|e| e.account == account).map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), 2, "seed {seed:#x}: {account}, charged by two items: {ids:?}");
    }
    let mut charge_ids = BTreeSet::new();
    for i in 0..BATCH_ITEMS {
        let answers = &driven.answers[&i];
        assert_eq!(answers.len(), BATCH_SUBMISSIONS, "seed {seed:#x}: item {i}: {answers:?}");
        assert!(answers.iter().all(|a| a == &answers[0]), "seed {seed:#x}: item {i} answered differently: {answers:?}");
        let id = result_of(&answers[0]).ok()["charge_id"].as_str().expect("a charge id").to_string();
        assert!(charge_ids.insert(id), "seed {seed:#x}: item {i} got another item's charge");
    }
    let log: String = logs.iter().map(Log::text).collect();
    let recoveries = log.lines().filter(|l| l.contains("idempotency=\"recovery\"")).count();
    format!(
        "{kills} kills, {} calls cut off and sent again, {recoveries} recoveries, {} upstream requests for \
         {BATCH_ITEMS} charges",
        driven.transport_retries,
        api.requests().len()
    )
}

// ---- the CLI -----------------------------------------------------------------------------------

/// `list` (newest first, every field, `--limit`), `show KEY` (a JSON array with the outcome; exit
/// 1 for an unknown key), `purge` (only expired records by default; `--older-than` by age).
/// Purging forgets keys: the same call then runs again — here the API still charges once, only
/// because the deterministic upstream key is the same as before.
#[tokio::test]
async fn the_idempotency_cli_lists_shows_and_purges() {
    let api = PaymentsApi::start().await;
    let env = payments_env(&api, "");
    let mut ids = Vec::new();
    for (account, key) in [("acct_a", "cli-a"), ("acct_b", "cli-b"), ("acct_c", "cli-c")] {
        let (code, out) = cordon_call(&env, "payments_charge", &charge(account, 100, key), &[]).await;
        assert_eq!(code, Some(0), "{}", out.raw);
        ids.push(charged(&out, &api, account)["charge_id"].clone());
    }

    let all = records(&env).await;
    let keys: Vec<&str> = all.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["cli-c", "cli-b", "cli-a"], "newest first");
    let a = &all[2];
    let fields: BTreeSet<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    let expected =
        ["attempts", "created", "expires", "key", "outcome", "plugin", "principal", "source", "state", "tool"];
    assert_eq!(fields, BTreeSet::from(expected), "{a}");
    assert_eq!(
        (&a["principal"], &a["plugin"], &a["tool"], &a["source"], &a["state"], &a["attempts"]),
        (
            &json!("local"),
            &json!("payments"),
            &json!("payments_charge"),
            &json!("argument"),
            &json!("completed"),
            &json!(1)
        ),
    );
    assert_eq!(a["outcome"]["status"], "ok", "{a}");
    assert_eq!(a["outcome"]["structured"]["charge_id"], ids[0], "{a}");
    let (created, expires) = (a["created"].as_str().unwrap(), a["expires"].as_str().unwrap());
    assert!(created.ends_with('Z') && expires.ends_with('Z') && created < expires, "{a}");

    let limited = idempotency(&env, &["list", "--limit", "1"]).await;
    let lines: Vec<Value> =
        String::from_utf8_lossy(&limited.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, [all[0].clone()]);

    let shown = idempotency(&env, &["show", "cli-b"]).await;
    assert_eq!(shown.status.code(), Some(0), "{}", describe(&shown));
    assert_eq!(serde_json::from_slice::<Value>(&shown.stdout).unwrap(), json!([all[1]]));
    let missing = idempotency(&env, &["show", "no-such-key"]).await;
    assert_eq!(missing.status.code(), Some(1), "{}", describe(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-key"), "{}", describe(&missing));

    for args in [&["purge"][..], &["purge", "--older-than", "1h"]] {
        let out = idempotency(&env, args).await;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "purged 0 record(s)\n", "{args:?}: {}", describe(&out));
    }
    assert_eq!(records(&env).await.len(), 3);
    let out = idempotency(&env, &["purge", "--older-than", "0s"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "purged 3 record(s)\n", "{}", describe(&out));
    assert!(records(&env).await.is_empty());
    assert_eq!(idempotency(&env, &["show", "cli-a"]).await.status.code(), Some(1));

    // Forgotten: the call runs again (a second request), under the same upstream key.
    let (code, again) = cordon_call(&env, "payments_charge", &charge("acct_a", 100, "cli-a"), &[]).await;
    assert_eq!(code, Some(0), "{}", again.raw);
    let requests = api.requests_for("acct_a");
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].key, requests[1].key);
    assert_eq!(charged(&again, &api, "acct_a")["charge_id"], ids[0]);
    assert_eq!(one_record(&env, "cli-a").await["attempts"], 1);
}

// ---- the data disk: full, read-only, corrupted -------------------------------------------------

/// `serve` arguments for a stateless server on a free loopback port.
const SERVE_STATELESS: [&str; 5] = ["serve", "--listen", "127.0.0.1:0", "--allow-unauthenticated", "--stateless"];

/// Runs `cmd` (a `serve` that must refuse to start) to its end; checks that it failed without
/// a panic and returns its stderr.
async fn refused_start(mut cmd: tokio::process::Command, what: &str) -> String {
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let out = guard(what, cmd.output()).await.expect("run cordon");
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A full data disk (a 16 MiB tmpfs of the server's own, filled up while it runs): a keyed
/// charge is refused with the retryable `store_unavailable` before the guest runs, so the API
/// sees nothing; once there is space again, the same key charges exactly once.
#[tokio::test]
async fn a_full_disk_refuses_keyed_calls_before_they_run() {
    if !private_tmpfs_available() {
        return;
    }
    let api = PaymentsApi::start().await;
    let env = sqlite_payments_env(&api, "");
    let server = spawn_http_command(env.command_on_small_disk(&SERVE_STATELESS, 16 * 1024)).await;
    let data = env.data_dir().display().to_string();
    let charge_request = |id, account, key| call_request(id, "payments_charge", charge(account, 100, key));
    let before = result_of(&post_text(&server.url, &charge_request(1, "acct_before", "k-before"), &[]).await);
    charged(&before, &api, "acct_before");

    let df =
        in_mount_namespace(server.pid(), &format!("dd if=/dev/zero of={data}/filler bs=64k 2>/dev/null; df -k {data}"));
    // Enough refusals that their audit lines outgrow the audit file's last page as well.
    for attempt in 2..24 {
        let refused = result_of(&post_text(&server.url, &charge_request(attempt, "acct_full", "k-full"), &[]).await);
        let error = refused.expect_error("store_unavailable", true);
        assert!(error["message"].as_str().unwrap_or("").contains("did not run"), "{error} ({df})");
    }
    assert!(api.requests_for("acct_full").is_empty(), "the guest ran without a durable claim");
    assert!(server.log.text().contains("idempotency store unavailable"), "{}", server.log.text());
    // The audit log cannot be written either: its lines are dropped and counted, with a
    // warning, and calls are never held up by it.
    guard("the audit log to report dropped lines", async {
        while !server.log.text().contains("audit lines are being dropped") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // ... and `/metrics` counts them, so an operator can alert on lost audit lines.
    let metrics = get(&format!("{}/metrics", server.base), &[]).await.text().await.expect("read /metrics");
    let dropped = metrics
        .lines()
        .find_map(|line| line.strip_prefix("cordon_audit_lines_dropped_total "))
        .and_then(|value| value.trim().parse::<u64>().ok());
    assert!(dropped.is_some_and(|n| n > 0), "{metrics}");

    in_mount_namespace(server.pid(), &format!("rm {data}/filler"));
    let after = result_of(&post_text(&server.url, &charge_request(9, "acct_full", "k-full"), &[]).await);
    charged(&after, &api, "acct_full");
    let replay = result_of(&post_text(&server.url, &charge_request(10, "acct_full", "k-full"), &[]).await);
    assert_eq!(replay.raw, after.raw);
    assert_eq!(api.requests_for("acct_full").len(), 1);
}

/// A server started on a read-only data directory stops at once, naming the directory and
/// why. (A disk cannot be remounted read-only under a server holding its files open; a disk
/// that fills up under a running server is `a_full_disk_refuses_keyed_calls_before_they_run`.)
#[tokio::test]
async fn a_read_only_data_directory_is_a_clear_error() {
    if !private_tmpfs_available() {
        return;
    }
    let api = PaymentsApi::start().await;
    let env = sqlite_payments_env(&api, "");
    let data = env.data_dir().display().to_string();
    let stderr =
        refused_start(env.command_on_read_only_disk(&SERVE_STATELESS), "cordon to refuse a read-only data dir").await;
    assert!(stderr.contains(&data), "names the directory: {stderr}");
    assert!(stderr.to_lowercase().contains("read-only") || stderr.contains("readonly"), "says why: {stderr}");
}

/// A corrupted idempotency database stops the server at start with an error naming the file,
/// and the file is left exactly as it was for the operator to inspect or restore.
#[tokio::test]
async fn a_corrupted_store_stops_the_server_and_is_left_untouched() {
    let api = PaymentsApi::start().await;
    let env = sqlite_payments_env(&api, "");
    std::fs::create_dir_all(env.data_dir()).unwrap();
    let db = env.data_dir().join("idempotency.sqlite3");
    let garbage: Vec<u8> = b"this is not an SQLite database\n".iter().copied().cycle().take(64 * 1024).collect();
    std::fs::write(&db, &garbage).unwrap();
    let stderr = refused_start(env.command(&SERVE_STATELESS), "cordon to refuse a corrupted store").await;
    assert!(stderr.contains("idempotency.sqlite3"), "names the file: {stderr}");
    assert!(stderr.contains("not a database"), "says why: {stderr}");
    assert_eq!(std::fs::read(&db).unwrap(), garbage, "the corrupted file was modified");
}
