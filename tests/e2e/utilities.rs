//! The MCP utilities end to end: a client's `notifications/cancelled` stops the guest and frees
//! its slot (and its idempotency key) with `cancelled` in the audit log; a guest's progress
//! reaches the client in order and before the result, only when asked for; guest log lines reach
//! a client that set a level, at or above that level only.

// MCP logging is deprecated by SEP-2577 in rmcp, yet still in every protocol version clients
// speak, and it is one of the things this file tests.
#![allow(deprecated)]

mod common;

use common::*;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientRequest, LoggingLevel, LoggingMessageNotificationParam,
    ProgressNotificationParam, ProgressToken, ServerResult, SetLevelRequestParams,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RequestHandle, RunningService, Service};
use rmcp::{ClientHandler, RoleClient};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A notification the client received.
#[derive(Debug, Clone, PartialEq)]
enum Note {
    Progress { token: ProgressToken, progress: f64, total: Option<f64>, message: Option<String> },
    Log { level: LoggingLevel, logger: Option<String>, data: Value },
}

/// A client handler that records every progress and log notification, in arrival order.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Note>>>);

impl Collector {
    fn notes(&self) -> Vec<Note> {
        self.0.lock().unwrap().clone()
    }

    fn logs(&self) -> Vec<(LoggingLevel, String)> {
        self.notes()
            .into_iter()
            .filter_map(|n| match n {
                Note::Log { level, data, .. } => Some((level, data.as_str().unwrap_or_default().to_string())),
                Note::Progress { .. } => None,
            })
            .collect()
    }

    /// Waits until a log line `data` has arrived.
    async fn wait_for_log(&self, data: &str) {
        guard(&format!("log message {data:?}"), async {
            while !self.logs().iter().any(|(_, d)| d == data) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }
}

impl ClientHandler for Collector {
    async fn on_progress(&self, params: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        let ProgressNotificationParam { progress_token, progress, total, message, .. } = params;
        self.0.lock().unwrap().push(Note::Progress { token: progress_token, progress, total, message });
    }

    async fn on_logging_message(&self, params: LoggingMessageNotificationParam, _: NotificationContext<RoleClient>) {
        let LoggingMessageNotificationParam { level, logger, data, .. } = params;
        self.0.lock().unwrap().push(Note::Log { level, logger, data });
    }
}

/// Sends `tools/call` and returns the request's handle (its id and progress token) without
/// waiting for the answer.
async fn start_call<S: Service<RoleClient>>(
    client: &RunningService<RoleClient, S>,
    tool: &str,
    args: Value,
) -> RequestHandle<RoleClient> {
    start(client, CallToolRequestParams::new(tool.to_string()).with_arguments(object(args))).await
}

async fn start<S: Service<RoleClient>>(
    client: &RunningService<RoleClient, S>,
    params: CallToolRequestParams,
) -> RequestHandle<RoleClient> {
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
    guard("tools/call to be sent", client.send_cancellable_request(request, PeerRequestOptions::no_options()))
        .await
        .expect("send tools/call")
}

/// The tool result a handle's request got.
async fn outcome(handle: RequestHandle<RoleClient>) -> Outcome {
    match guard("the call's answer", handle.await_response()).await.expect("an answer") {
        ServerResult::CallToolResult(result) => Outcome::from_wire(&serde_json::to_value(&result).unwrap()),
        other => panic!("not a tool result: {other:?}"),
    }
}

/// hostile may run one call at a time, for as long as it likes; a second call waits 200 ms for
/// the slot, then fails `busy`.
const ONE_SLOT: &str = "[plugins.hostile.limits]\ntimeout_ms = 600000\nfuel = 100000000000000000\n\
    max_concurrency = 1\nqueue_timeout_ms = 200\n";

/// Waits until hostile's only slot is taken: a probe call is then `busy`.
async fn until_slot_taken<S: Service<RoleClient>>(client: &RunningService<RoleClient, S>) {
    guard("hostile's slot to be taken", async {
        loop {
            let probe = call(client, "hostile_sleep", json!({"ms": 1})).await;
            if probe.is_error {
                probe.expect_error("busy", true);
                return;
            }
        }
    })
    .await
}

/// The audit record of the first call of `tool` that ended in `error_type`, once it is written.
async fn audited(env: &Env, tool: &str, error_type: &str) -> Value {
    guard(&format!("a {error_type} audit record for {tool}"), async {
        loop {
            let found =
                env.audit_records(0).await.into_iter().find(|r| r["tool"] == tool && r["error_type"] == error_type);
            if let Some(record) = found {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Starts `tool` (which would run for ten minutes), waits until it holds hostile's only slot,
/// cancels it, and checks that: the audit log records `cancelled`; and, once it does, the slot
/// is free at the first try (a held slot would make the call `busy` after 200 ms).
async fn cancel_frees_the_slot<S: Service<RoleClient>>(
    env: &Env,
    client: &RunningService<RoleClient, S>,
    tool: &str,
    args: Value,
) {
    let handle = start_call(client, tool, args).await;
    until_slot_taken(client).await;
    handle.cancel(Some("the user gave up".into())).await.expect("send notifications/cancelled");

    let record = audited(env, tool, "cancelled").await;
    assert_eq!(record["outcome"], "error", "{record}");
    assert_eq!(record["retryable"], false, "{record}");
    // The audit line is written after the slot is released: the next call gets it at once.
    let next = call(client, "hostile_sleep", json!({"ms": 1})).await;
    assert_eq!(next.ok(), &json!({"slept_ms": 1}), "the cancelled call still holds the slot");
    assert_echo(client, "after the cancellation").await;
}

#[tokio::test]
async fn cancelling_a_spinning_call_over_stdio_stops_it_and_frees_its_slot() {
    let env = Env::demo_and_hostile(ONE_SLOT);
    let (client, log) = env.stdio_client().await;
    cancel_frees_the_slot(&env, &client, "hostile_spin", json!({})).await;
    // The host log says so too.
    let line = log.wait_for("tool=hostile_spin").await;
    assert!(line.contains("cancelled"), "{line}");
}

#[tokio::test]
async fn cancelling_a_spinning_call_over_http_stops_it_and_frees_its_slot() {
    let env = Env::demo_and_hostile(ONE_SLOT);
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    cancel_frees_the_slot(&env, &client, "hostile_spin", json!({})).await;
}

/// A guest asleep in `wasi:clocks` is in a host call, where no epoch callback runs: cancelling
/// still ends it.
#[tokio::test]
async fn cancelling_a_call_blocked_in_a_host_call_stops_it() {
    let env = Env::demo_and_hostile(ONE_SLOT);
    let (client, _log) = env.stdio_client().await;
    cancel_frees_the_slot(&env, &client, "hostile_sleep", json!({"ms": 600000})).await;
}

/// A keyed call cancelled before it could act is forgotten: the next call with the key runs
/// afresh (`miss`), rather than replaying `cancelled` or waiting for a run that is gone.
#[tokio::test]
async fn a_cancelled_keyed_call_that_did_not_act_releases_its_key() {
    let env = Env::demo_and_hostile(ONE_SLOT);
    let (client, _log) = env.stdio_client().await;
    let params = json!({"name": "hostile_spin", "arguments": {}, "_meta": {"cordon/idempotency-key": "spin-1"}});
    for attempt in 1..=2 {
        let handle = start(&client, serde_json::from_value(params.clone()).unwrap()).await;
        until_slot_taken(&client).await;
        handle.cancel(None).await.expect("send notifications/cancelled");
        guard("both cancellations in the audit log", async {
            loop {
                let cancelled = env
                    .audit_records(0)
                    .await
                    .into_iter()
                    .filter(|r| r["tool"] == "hostile_spin" && r["error_type"] == "cancelled")
                    .collect::<Vec<_>>();
                if cancelled.len() == attempt {
                    for record in cancelled {
                        assert_eq!(record["idempotency_key"], "spin-1", "{record}");
                        assert_eq!(record["idempotency"], "miss", "a released key runs as new: {record}");
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

/// demo_work's progress reports for `steps` steps, as the client should see them.
fn expected_progress(token: &ProgressToken, steps: u32) -> Vec<Note> {
    (1..=steps)
        .map(|step| Note::Progress {
            token: token.clone(),
            progress: f64::from(step),
            total: Some(f64::from(steps)),
            message: Some(format!("step {step} of {steps}")),
        })
        .collect()
}

/// Every progress report of a call reaches the client in order, with the request's token, by
/// the time its result does.
async fn progress_precedes_the_result<S: Service<RoleClient>>(
    client: &RunningService<RoleClient, S>,
    collector: &Collector,
) {
    let handle = start_call(client, "demo_work", json!({"steps": 4, "step_ms": 5})).await;
    let token = handle.progress_token.clone();
    let out = outcome(handle).await;
    // Taken as soon as the result is in: what arrives later does not count.
    let notes = collector.notes();
    assert_eq!(out.ok(), &json!({"steps": 4}));
    assert_eq!(notes, expected_progress(&token, 4));
}

#[tokio::test]
async fn progress_arrives_in_order_before_the_result_over_stdio() {
    let env = Env::demo();
    let collector = Collector::default();
    let (client, _log) = env.stdio_client_with(collector.clone()).await;
    progress_precedes_the_result(&client, &collector).await;
}

#[tokio::test]
async fn progress_arrives_in_order_before_the_result_over_http() {
    let env = Env::demo();
    let server = env.spawn_http(&[]).await;
    let collector = Collector::default();
    let client = server.client_with(collector.clone()).await;
    progress_precedes_the_result(&client, &collector).await;
}

/// On the wire (stateless HTTP, one response per request): with `_meta.progressToken` the
/// response streams the progress notifications, then the result; without one there is no
/// notification at all, and the answer is plain JSON.
#[tokio::test]
async fn progress_on_the_wire_precedes_the_result_and_needs_a_token() {
    let env = Env::demo();
    let server = env.spawn_http(&["--stateless"]).await;
    let arguments = json!({"steps": 3, "step_ms": 1});

    let mut request = call_request(7, "demo_work", arguments.clone());
    request["params"]["_meta"] = json!({"progressToken": "tok-7"});
    let response = post(&server.url, &request.to_string(), &[]).await;
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    let sent = messages(&content_type, &response.text().await.unwrap());
    let (result, notes) = sent.split_last().expect("a response");
    assert_eq!(result["id"], 7, "the result comes last: {sent:#?}");
    Outcome::from_wire(&result["result"]).ok();
    let progress: Vec<(f64, f64)> = notes
        .iter()
        .map(|n| {
            assert_eq!(n["method"], "notifications/progress", "{n}");
            assert_eq!(n["params"]["progressToken"], "tok-7", "{n}");
            (n["params"]["progress"].as_f64().unwrap(), n["params"]["total"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(progress, [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)]);

    let response = post(&server.url, &call_request(8, "demo_work", arguments).to_string(), &[]).await;
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    let sent = messages(&content_type, &response.text().await.unwrap());
    assert_eq!(sent.len(), 1, "no progress without a token: {sent:#?}");
    assert_eq!(sent[0]["id"], 8);
    assert!(content_type.starts_with("application/json"), "{content_type}");
}

async fn set_level<S: Service<RoleClient>>(client: &RunningService<RoleClient, S>, level: LoggingLevel) {
    guard("logging/setLevel", client.set_level(SetLevelRequestParams::new(level))).await.expect("logging/setLevel");
}

/// No log messages until the client sets a level; then the lines at or above it, in order,
/// tagged with the tool; lower ones never.
async fn log_lines_follow_the_level<S: Service<RoleClient>>(
    client: &RunningService<RoleClient, S>,
    collector: &Collector,
) {
    let info = client.peer_info().expect("initialized").capabilities.logging.clone();
    assert!(info.is_some(), "the server advertises logging");

    call(client, "demo_work", json!({"steps": 2, "step_ms": 0})).await.ok();
    set_level(client, LoggingLevel::Info).await;
    call(client, "demo_work", json!({"steps": 3, "step_ms": 0})).await.ok();
    // Each call's lines are sent before its answer, and in order: once the last line of the
    // second call is in, nothing of the first call nor of the second's debug lines is on its way.
    collector.wait_for_log("worked through 3 steps").await;
    assert_eq!(collector.logs(), [(LoggingLevel::Info, "worked through 3 steps".to_string())]);
    let logger = collector.notes().into_iter().find_map(|n| match n {
        Note::Log { logger, .. } => logger,
        Note::Progress { .. } => None,
    });
    assert_eq!(logger.as_deref(), Some("demo_work"));

    set_level(client, LoggingLevel::Debug).await;
    call(client, "demo_work", json!({"steps": 2, "step_ms": 0})).await.ok();
    collector.wait_for_log("worked through 2 steps").await;
    let expected = [
        (LoggingLevel::Info, "worked through 3 steps"),
        (LoggingLevel::Debug, "step 1 of 2 done"),
        (LoggingLevel::Debug, "step 2 of 2 done"),
        (LoggingLevel::Info, "worked through 2 steps"),
    ]
    .map(|(level, data)| (level, data.to_string()));
    assert_eq!(collector.logs(), expected);

    set_level(client, LoggingLevel::Warning).await;
    call(client, "demo_work", json!({"steps": 1, "step_ms": 0})).await.ok();
    // Nothing at warning or above: a marker call proves the stream is past that call.
    set_level(client, LoggingLevel::Info).await;
    call(client, "demo_work", json!({"steps": 4, "step_ms": 0})).await.ok();
    collector.wait_for_log("worked through 4 steps").await;
    assert_eq!(collector.logs().len(), expected.len() + 1, "{:#?}", collector.logs());
}

#[tokio::test]
async fn log_lines_reach_the_client_at_or_above_its_level_over_stdio() {
    let env = Env::demo();
    let collector = Collector::default();
    let (client, _log) = env.stdio_client_with(collector.clone()).await;
    log_lines_follow_the_level(&client, &collector).await;
}

#[tokio::test]
async fn log_lines_reach_the_client_at_or_above_its_level_over_http() {
    let env = Env::demo();
    let server = env.spawn_http(&[]).await;
    let collector = Collector::default();
    let client = server.client_with(collector.clone()).await;
    log_lines_follow_the_level(&client, &collector).await;
}
