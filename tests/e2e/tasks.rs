//! Durable tasks (the MCP tasks extension, `io.modelcontextprotocol/tasks`) end to end, over
//! raw JSON-RPC on the 2026-07-28 wire against the real binary: a long call becomes a task that
//! outlives the request and the process, only its principal sees it, `tasks/cancel` stops the
//! guest, and a task cut off by kill -9 is run once more with the same upstream key.
//!
//! The suite runs against both stores, like the idempotency suite: SQLite by default, a
//! PostgreSQL server of each test's own with `CORDON_E2E_STORE=postgres` (`make test` runs both;
//! the last test always uses PostgreSQL, with two replicas).
//!
//! The fixture is the conformance plugin (`tests/conformance/everything`: `slow_compute`,
//! `failing_job`, `confirm_delete`, `greet`, declared through its own `tasks` export), and
//! `payments.wasm` for recovery, whose charge `cordon-sdk` declares `optional`.

mod common;

use common::payments::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const TASKS: &str = "io.modelcontextprotocol/tasks";

fn everything(extra_config: &str) -> Env {
    let path = workspace().join("tests/conformance/dist/everything.wasm");
    assert!(path.exists(), "{} is missing: run `make conformance-plugins`", path.display());
    Env::new().plugin(&path, "everything.wasm").config_with_test_store(&format!(
        "{}[plugins.everything]\nprefix = \"\"\n\n[plugins.everything.limits]\ntimeout_ms = 90000\n\n{extra_config}",
        tokens(&["alice", "bob"])
    ))
}

/// payments.wasm (its charge declared `optional` by `cordon-sdk`) pointed at `api`, on the store
/// under test.
fn payments_env(api: &PaymentsApi) -> Env {
    Env::new().plugin(&example_wasm("payments"), "payments.wasm").config_with_test_store(&format!(
        "{PATIENT}\n[plugins.payments.config]\nbase_url = \"{base}\"\n\n\
         [[plugins.payments.http.grants]]\nurl = \"{base}{CHARGES}\"\nmethods = [\"POST\"]\n",
        base = api.base
    ))
}

/// What a client declares: the tasks extension and elicitation, or nothing.
fn declaring_tasks() -> Value {
    json!({"elicitation": {}, "extensions": {TASKS: {}}})
}

/// One JSON-RPC request on the 2026-07-28 wire as `principal` (its bearer token; `None` for an
/// unauthenticated server), with `capabilities` in `_meta`. The JSON-RPC response.
async fn rpc(url: &str, principal: Option<&str>, method: &str, mut params: Value, capabilities: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1.0.0"}
    });
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = params.get("name").or_else(|| params.get("taskId")).and_then(Value::as_str) {
        request = request.header("mcp-name", name);
    }
    if let Some(principal) = principal {
        request = request.bearer_auth(token(principal));
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let response = guard(method, request.json(&body).send()).await.expect("the request is sent");
    let text = guard(method, response.text()).await.expect("a body");
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|message| message.get("id") == Some(&json!(1)))
        .or_else(|| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| panic!("no JSON-RPC response to {method} in {text:?}"))
}

async fn call_tool(url: &str, principal: Option<&str>, tool: &str, arguments: Value, capabilities: Value) -> Value {
    rpc(url, principal, "tools/call", json!({"name": tool, "arguments": arguments}), capabilities).await
}

async fn get_task(url: &str, principal: Option<&str>, task_id: &str) -> Value {
    rpc(url, principal, "tasks/get", json!({"taskId": task_id}), declaring_tasks()).await
}

/// Polls `tasks/get` until the task's status is `status` (or the guard's time runs out).
async fn wait_for_status(url: &str, principal: Option<&str>, task_id: &str, status: &str) -> Value {
    guard(&format!("task {task_id} to be {status}"), async {
        loop {
            let reply = get_task(url, principal, task_id).await;
            if reply["result"]["status"] == status {
                return reply["result"].clone();
            }
            assert!(reply.get("error").is_none(), "{reply}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// The first audit line of `task_id` that `wanted` accepts, once the writer has written it.
async fn audit_line(env: &Env, task_id: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    guard(&format!("an audit line of task {task_id}"), async {
        loop {
            let text = std::fs::read_to_string(env.audit_path()).unwrap_or_default();
            let found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|r| r["task_id"] == task_id && wanted(r));
            if let Some(line) = found {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// The id of the task a `tools/call` reply created, or a panic showing what came back.
fn created(reply: &Value) -> String {
    let result = &reply["result"];
    assert_eq!(result["resultType"], "task", "a CreateTaskResult: {reply}");
    assert!(result["ttlMs"].as_u64().is_some_and(|ttl| ttl > 0), "{reply}");
    assert!(result.get("result").is_none() && result.get("task").is_none(), "{reply}");
    result["taskId"].as_str().expect("a taskId").to_string()
}

/// A long call becomes a task that the same principal reads while it works and once it is done,
/// from a restarted server too (the store is durable); another principal cannot tell it exists;
/// a client that did not declare the extension gets its answer in the request, or `-32021` for a
/// tool that requires tasks.
#[tokio::test]
async fn a_task_outlives_its_request_and_its_process_and_only_its_principal_sees_it() {
    // The operator's override makes the sync-only `greet` require a task.
    let env = everything("[plugins.everything.tools.greet]\ntasks = \"required\"\n");
    let listed = env.tools().await;
    let support = |name: &str| {
        let tools = listed["tools"].as_array().expect("tools");
        tools.iter().find(|t| t["name"] == name).map(|t| t["tasks"].clone()).unwrap_or_default()
    };
    assert_eq!(
        [support("slow_compute"), support("failing_job"), support("greet"), support("test_simple_text")],
        [json!("optional"), json!("required"), json!("required"), json!("forbidden")],
        "declared by the plugin, overridden by the operator"
    );
    let server = env.spawn_http_with(&[], &[]).await;
    let url = server.url.clone();
    let alice = Some("alice");
    let refused = call_tool(&url, alice, "greet", json!({"name": "x"}), json!({})).await;
    assert_eq!(refused["error"]["code"], -32021, "the override applies: {refused}");

    // Declared: a task, readable at once (created durably before the reply).
    let reply = call_tool(&url, alice, "slow_compute", json!({"seconds": 2, "label": "e2e"}), declaring_tasks()).await;
    let task_id = created(&reply);
    let working = get_task(&url, alice, &task_id).await;
    assert_eq!(working["result"]["status"], "working", "{working}");
    assert_eq!(working["result"]["taskId"], task_id.as_str());

    // Another principal: "unknown task", exactly as for an id that does not exist.
    for principal in ["bob"] {
        for method in ["tasks/get", "tasks/cancel"] {
            let refused = rpc(&url, Some(principal), method, json!({"taskId": task_id}), declaring_tasks()).await;
            assert_eq!(refused["error"]["code"], -32602, "{method}: {refused}");
            assert!(!refused.to_string().contains("forbidden"), "{refused}");
        }
        let update = json!({"taskId": task_id, "inputResponses": {}});
        let refused = rpc(&url, Some(principal), "tasks/update", update, declaring_tasks()).await;
        assert_eq!(refused["error"]["code"], -32602, "{refused}");
    }
    let unknown = get_task(&url, alice, "no-such-task").await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");

    let done = wait_for_status(&url, alice, &task_id, "completed").await;
    assert_eq!(done["result"]["content"][0]["text"], "computed e2e in 2s", "{done}");
    assert!(done["result"].get("isError").is_none_or(|e| e == false), "{done}");

    // Not declared: the same tool answers in the request; a tool that requires tasks is refused.
    let sync = call_tool(&url, alice, "slow_compute", json!({"seconds": 0.5}), json!({})).await;
    assert_eq!(sync["result"]["resultType"], "complete", "{sync}");
    assert_eq!(sync["result"]["content"][0]["text"], "computed  in 0.5s", "{sync}");
    let refused = call_tool(&url, alice, "failing_job", json!({}), json!({})).await;
    assert_eq!(refused["error"]["code"], -32021, "{refused}");
    assert!(refused["error"]["data"]["requiredCapabilities"]["extensions"][TASKS].is_object(), "{refused}");
    let gated = rpc(&url, alice, "tasks/get", json!({"taskId": task_id}), json!({})).await;
    assert_eq!(gated["error"]["code"], -32021, "{gated}");

    // A tool error completes its task with isError; it is not a failed task.
    let failing = call_tool(&url, alice, "failing_job", json!({}), declaring_tasks()).await;
    let failing_id = created(&failing);
    let failed = wait_for_status(&url, alice, &failing_id, "completed").await;
    assert_eq!(failed["result"]["isError"], true, "{failed}");

    // The audit names the task on its call's line.
    let line = audit_line(&env, &task_id, |_| true).await;
    assert_eq!((line["tool"].as_str(), line["principal"].as_str()), (Some("slow_compute"), Some("alice")), "{line}");

    // Killed and started again on the same data directory: the task is still there, as it was.
    server.stop().await;
    let server = env.spawn_http_with(&[], &[]).await;
    let again = get_task(&server.url, alice, &task_id).await;
    assert_eq!(again["result"]["status"], "completed", "{again}");
    assert_eq!(again["result"]["result"], done["result"], "the same result after the restart");
    let refused = get_task(&server.url, Some("bob"), &task_id).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    server.stop().await;
}

/// `tasks/cancel` stops the guest: a 60-second task is `cancelled` within seconds, its call's
/// audit line says `cancelled`, and cancelling again (or a finished task) is the same empty ack.
/// A principal at `max_running_per_principal` gets its next call answered in the request.
/// A question asked inside a task parks it `input_required`; `tasks/update` answers it and the
/// guest runs again to the end with the answer.
#[tokio::test]
async fn cancel_stops_the_guest_and_answers_resume_a_waiting_task() {
    let env = everything("[tasks]\nmax_running_per_principal = 1\n");
    let server = env.spawn_http_with(&[], &[]).await;
    let (url, alice) = (server.url.clone(), Some("alice"));

    let reply = call_tool(&url, alice, "slow_compute", json!({"seconds": 60}), declaring_tasks()).await;
    let task_id = created(&reply);
    // At the bound (one running task for alice): her next call answers in its request; bob's
    // does not count against hers.
    let held = call_tool(&url, alice, "slow_compute", json!({"seconds": 1}), declaring_tasks()).await;
    assert_eq!(held["result"]["resultType"], "complete", "{held}");
    let other = call_tool(&url, Some("bob"), "slow_compute", json!({"seconds": 1}), declaring_tasks()).await;
    created(&other);
    let started = std::time::Instant::now();
    let ack = rpc(&url, alice, "tasks/cancel", json!({"taskId": task_id}), declaring_tasks()).await;
    assert_eq!(ack["result"], json!({"resultType": "complete"}), "{ack}");
    wait_for_status(&url, alice, &task_id, "cancelled").await;
    let line = audit_line(&env, &task_id, |_| true).await;
    assert_eq!(line["error_type"], "cancelled", "{line}");
    assert!(started.elapsed() < Duration::from_secs(50), "the guest was stopped, not waited for");
    let again = rpc(&url, alice, "tasks/cancel", json!({"taskId": task_id}), declaring_tasks()).await;
    assert_eq!(again["result"], json!({"resultType": "complete"}), "{again}");

    let reply = call_tool(&url, alice, "confirm_delete", json!({"filename": "a.txt"}), declaring_tasks()).await;
    let task_id = created(&reply);
    let waiting = wait_for_status(&url, alice, &task_id, "input_required").await;
    assert_eq!(waiting["inputRequests"]["confirm"]["method"], "elicitation/create", "{waiting}");
    // An answer to a question not asked is ignored; the task keeps waiting.
    let update = json!({"taskId": task_id, "inputResponses": {"other": {"action": "accept", "content": {}}}});
    let ack = rpc(&url, alice, "tasks/update", update, declaring_tasks()).await;
    assert_eq!(ack["result"], json!({"resultType": "complete"}), "{ack}");
    assert_eq!(get_task(&url, alice, &task_id).await["result"]["status"], "input_required");
    let answer = json!({"action": "accept", "content": {"confirm": true}});
    let update = json!({"taskId": task_id, "inputResponses": {"confirm": answer}});
    rpc(&url, alice, "tasks/update", update, declaring_tasks()).await;
    let done = wait_for_status(&url, alice, &task_id, "completed").await;
    assert_eq!(done["result"]["content"][0]["text"], "delete a.txt: confirm=true", "{done}");
    server.stop().await;
}

/// A keyed charge running as a task when its server is killed (-9) is taken over by the next
/// server on the same data directory and run once more with the same upstream key: the payments
/// API acts once, the task completes with the charge, and the audit says `recovery`.
#[tokio::test]
async fn a_task_cut_off_by_kill_9_is_recovered_once_with_the_same_upstream_key() {
    let api = PaymentsApi::start().await;
    let env = payments_env(&api);
    api.set_delay(HANG_GUARD);
    let server = env.spawn_http(&[]).await;
    let arguments = json!({"account": "acct_task", "amount_cents": 1200, "idempotency_key": "order-task"});
    let reply = call_tool(&server.url, None, "payments_charge", arguments, declaring_tasks()).await;
    let task_id = created(&reply);
    guard("the charge to reach the API", async {
        while api.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    server.stop().await;
    api.set_delay(Duration::ZERO);

    let server = env.spawn_http(&[]).await;
    let done = wait_for_status(&server.url, None, &task_id, "completed").await;
    let effects = api.effects();
    assert_eq!(effects.len(), 1, "charged once: {effects:?}");
    assert_eq!(done["result"]["structuredContent"]["charge_id"], effects[0].id.as_str(), "{done}");
    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].key, requests[1].key, "the re-run sent the same upstream key");
    assert!(server.log.text().contains("recovering a task"), "{}", server.log.text());
    let recovered = audit_line(&env, &task_id, |r| r["idempotency"] == "recovery").await;
    assert_eq!(recovered["outcome"], "ok", "{recovered}");
    // Recovered once: a later sweep finds nothing to take.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(api.requests().len(), 2, "no further attempt");
    server.stop().await;
}

/// Two replicas on one PostgreSQL: a task created on one is read on the other; when its replica
/// is killed mid-charge, the other takes it over once the dead replica's lease lapses and runs
/// it once more with the same upstream key (one charge). A task running on one replica is
/// cancelled through the other.
#[tokio::test]
async fn a_task_is_read_and_cancelled_on_another_replica_and_recovered_there_when_its_replica_dies() {
    let pg = common::postgres::Postgres::start();
    let url = pg.database("cordon");
    let api = PaymentsApi::start().await;
    let config = format!(
        "{PATIENT}\n[store]\nurl = \"{url}\"\nlease_s = 2\n\n\
         [plugins.payments.config]\nbase_url = \"{base}\"\n\n\
         [[plugins.payments.http.grants]]\nurl = \"{base}{CHARGES}\"\nmethods = [\"POST\"]\n",
        base = api.base
    );
    let envs: Vec<Env> =
        (0..2).map(|_| Env::new().plugin(&example_wasm("payments"), "payments.wasm").config(&config)).collect();
    api.set_delay(HANG_GUARD);
    let first = envs[0].spawn_http(&[]).await;
    let second = envs[1].spawn_http(&[]).await;
    let arguments = json!({"account": "acct_replica", "amount_cents": 500, "idempotency_key": "order-replica"});
    let task_id = created(&call_tool(&first.url, None, "payments_charge", arguments, declaring_tasks()).await);
    guard("the charge to reach the API", async {
        while api.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let elsewhere = get_task(&second.url, None, &task_id).await;
    assert_eq!(elsewhere["result"]["status"], "working", "read on the other replica: {elsewhere}");

    first.stop().await;
    api.set_delay(Duration::ZERO);
    let done = wait_for_status(&second.url, None, &task_id, "completed").await;
    let effects = api.effects();
    assert_eq!(effects.len(), 1, "charged once: {effects:?}");
    assert_eq!(done["result"]["structuredContent"]["charge_id"], effects[0].id.as_str(), "{done}");
    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].key, requests[1].key, "the taking replica sent the same upstream key");
    assert!(second.log.text().contains("recovering a task"), "{}", second.log.text());

    // Cancelled through the replica that does not run it: its owner sees the flag and stops.
    api.set_delay(HANG_GUARD);
    let arguments = json!({"account": "acct_cancel", "amount_cents": 700, "idempotency_key": "order-cancel"});
    let running = created(&call_tool(&second.url, None, "payments_charge", arguments, declaring_tasks()).await);
    let first = envs[0].spawn_http(&[]).await;
    let ack = rpc(&first.url, None, "tasks/cancel", json!({"taskId": running}), declaring_tasks()).await;
    assert_eq!(ack["result"], json!({"resultType": "complete"}), "{ack}");
    wait_for_status(&second.url, None, &running, "cancelled").await;
    api.set_delay(Duration::ZERO);
    first.stop().await;
    second.stop().await;
}

/// A task-augmented call whose idempotency key a live task already holds is answered with that
/// task, not a second one, and the upstream sees one charge; a call with another key is a task
/// of its own.
#[tokio::test]
async fn a_second_call_with_a_live_tasks_key_answers_that_task() {
    let api = PaymentsApi::start().await;
    let env = payments_env(&api);
    api.set_delay(Duration::from_secs(3));
    let server = env.spawn_http(&[]).await;
    let arguments = json!({"account": "acct_dup", "amount_cents": 300, "idempotency_key": "order-dup"});
    let first = created(&call_tool(&server.url, None, "payments_charge", arguments.clone(), declaring_tasks()).await);
    let second = created(&call_tool(&server.url, None, "payments_charge", arguments, declaring_tasks()).await);
    assert_eq!(first, second, "the live task holding the key answers the duplicate");
    let other = json!({"account": "acct_dup", "amount_cents": 300, "idempotency_key": "order-dup-2"});
    let third = created(&call_tool(&server.url, None, "payments_charge", other, declaring_tasks()).await);
    assert_ne!(third, first, "another key is another task");
    wait_for_status(&server.url, None, &first, "completed").await;
    wait_for_status(&server.url, None, &third, "completed").await;
    assert_eq!(api.effects().len(), 2, "one charge per key: {:?}", api.effects());
    server.stop().await;
}
