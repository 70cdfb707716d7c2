//! Running as a service: graceful drain on SIGTERM / SIGINT.
//!
//! A call is held in flight deterministically: the `reach` fixture fetches a URL from a test
//! upstream that answers only when the test releases it, so no test depends on how long
//! anything takes.

mod common;

use axum::extract::State;
use axum::routing::get as route_get;
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An upstream whose `/hold` answers only after [`Hold::release`].
struct Hold {
    base: String,
    arrived: Arc<AtomicUsize>,
    release: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct HoldState {
    arrived: Arc<AtomicUsize>,
    release: tokio::sync::watch::Receiver<bool>,
}

async fn hold(State(mut state): State<HoldState>) -> Json<Value> {
    state.arrived.fetch_add(1, Ordering::SeqCst);
    let _ = state.release.wait_for(|released| *released).await;
    Json(json!({"held": true}))
}

impl Hold {
    async fn start() -> Hold {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
        let base = format!("http://{}", listener.local_addr().expect("upstream address"));
        let arrived = Arc::new(AtomicUsize::new(0));
        let (release, receiver) = tokio::sync::watch::channel(false);
        let app = Router::new()
            .route("/hold", route_get(hold))
            .with_state(HoldState { arrived: arrived.clone(), release: receiver });
        let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("upstream serves") });
        Hold { base, arrived, release, server }
    }

    fn url(&self) -> String {
        format!("{}/hold", self.base)
    }

    /// Waits until `n` requests are being held.
    async fn wait_arrivals(&self, n: usize) {
        guard(&format!("{n} held request(s) at the upstream"), async {
            while self.arrived.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    fn release(&self) {
        let _ = self.release.send(true);
    }
}

/// reach.wasm allowed to GET the upstream, with limits far above any wait here, and
/// `[server] drain_timeout_s = drain_s`.
fn reach_env(upstream: &Hold, drain_s: u64) -> Env {
    Env::new().plugin(&fixture_wasm("reach"), "reach.wasm").config(&format!(
        "[server]\ndrain_timeout_s = {drain_s}\n\n\
         [plugins.reach.limits]\ntimeout_ms = 600000\n\n\
         [plugins.reach.idempotency]\nimplicit_window_s = 0\n\n\
         [plugins.reach.http]\nrequest_timeout_ms = 600000\n\n\
         [[plugins.reach.http.grants]]\nurl = \"{}/\"\nmethods = [\"GET\"]\n",
        upstream.base
    ))
}

/// A held `reach_request`, running in the background; it yields the client and the outcome.
fn held_call(client: Client, url: String) -> tokio::task::JoinHandle<(Client, Outcome)> {
    tokio::spawn(async move {
        let out = call(&client, "reach_request", json!({"method": "GET", "url": url})).await;
        (client, out)
    })
}

/// The `/readyz` body once it answers 503.
async fn wait_unready(base: &str) -> Value {
    let url = format!("{base}/readyz");
    guard("/readyz to answer 503", async {
        loop {
            let response = get(&url, &[]).await;
            if response.status() == 503 {
                return response.json::<Value>().await.expect("/readyz JSON");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// SIGTERM with a call in flight: `/readyz` turns 503 (`draining`) while `/healthz` stays 200,
/// new MCP requests are refused with 503, the call in flight still completes and its caller
/// gets the result, and the process then exits 0.
#[tokio::test]
async fn sigterm_drains_the_call_in_flight_then_exits_0() {
    let upstream = Hold::start().await;
    let env = reach_env(&upstream, 600);
    let mut server = env.spawn_http(&[]).await;
    let ready = get(&format!("{}/readyz", server.base), &[]).await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ok");

    let running = held_call(server.client().await, upstream.url());
    upstream.wait_arrivals(1).await;
    server.signal("TERM");

    let body = wait_unready(&server.base).await;
    assert_eq!(body["status"], "draining", "{body}");
    assert_eq!(body["calls_in_flight"], 1, "{body}");
    let health = get(&format!("{}/healthz", server.base), &[]).await;
    assert_eq!(health.status(), 200, "liveness holds while draining");
    let refused = post(&server.url, &initialize_request().to_string(), &[]).await;
    assert_eq!(refused.status(), 503, "a new MCP request while draining");
    assert!(server.is_running(), "the call is still held, so the server must still run");

    upstream.release();
    let (_client, out) = guard("the held call to finish", running).await.expect("the call task");
    assert_eq!(out.ok()["status"], 200, "{}", out.raw);
    assert_eq!(out.ok()["body"], json!({"held": true}).to_string(), "{}", out.raw);
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "exit status; stderr:\n{}", server.log.text());
    let log = server.log.text();
    assert!(log.contains("drained: no call in flight"), "{log}");
}

/// SIGINT with a call that outlives `drain_timeout_s`: the call is abandoned (the log says how
/// many) and the process still exits 0.
#[tokio::test]
async fn a_call_past_the_drain_bound_is_abandoned_and_the_exit_is_0() {
    let upstream = Hold::start().await;
    let env = reach_env(&upstream, 1);
    let mut server = env.spawn_http(&[]).await;
    let running = held_call(server.client().await, upstream.url());
    upstream.wait_arrivals(1).await;
    server.signal("INT");

    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "exit status; stderr:\n{}", server.log.text());
    let log = server.log.text();
    assert!(log.contains("abandoning 1 call(s) still in flight"), "{log}");
    // Never released: the caller gets no result; the client is simply dropped.
    running.abort();
}

/// The drain bound is read when the signal comes, over HTTP as over stdio: a server started with
/// `drain_timeout_s = 600` whose config was reloaded (SIGHUP) with 1 abandons a held call after
/// the new bound (the log names it) and exits 0.
#[tokio::test]
async fn the_drain_bound_follows_a_config_reload() {
    let upstream = Hold::start().await;
    let env = reach_env(&upstream, 600);
    let mut server = env.spawn_http(&[]).await;
    let reloaded = std::fs::read_to_string(env.config_path())
        .expect("the config")
        .replace("drain_timeout_s = 600", "drain_timeout_s = 1");
    std::fs::write(env.config_path(), reloaded).expect("write the config");
    server.signal("HUP");
    server.log.wait_for("config reloaded").await;
    let running = held_call(server.client().await, upstream.url());
    upstream.wait_arrivals(1).await;
    server.signal("TERM");

    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "exit status; stderr:\n{}", server.log.text());
    let log = server.log.text();
    assert!(log.contains("drain_timeout_s=1"), "{log}");
    assert!(log.contains("abandoning 1 call(s) still in flight"), "{log}");
    running.abort();
}

/// Over stdio, SIGTERM lets the call in flight finish and answers it before exiting 0.
#[tokio::test]
async fn stdio_sigterm_lets_the_call_in_flight_finish() {
    let upstream = Hold::start().await;
    let env = reach_env(&upstream, 600);
    let mut cmd = env.command(&["serve", "--stdio"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cordon serve --stdio");
    let log = Log::default();
    log.collect(child.stderr.take().expect("piped stderr"));
    let transport = (child.stdout.take().expect("piped stdout"), child.stdin.take().expect("piped stdin"));
    let client = guard("MCP initialize over stdio", rmcp::ServiceExt::serve((), transport))
        .await
        .unwrap_or_else(|e| panic!("MCP initialize over stdio: {e}; stderr:\n{}", log.text()));

    let running = held_call(client, upstream.url());
    upstream.wait_arrivals(1).await;
    send_signal(child.id().expect("cordon is running"), "TERM");
    log.wait_for("draining").await;
    assert!(matches!(child.try_wait(), Ok(None)), "the call is still held, so cordon must still run");

    upstream.release();
    let (_client, out) = guard("the held call to finish", running).await.expect("the call task");
    assert_eq!(out.ok()["status"], 200, "{}", out.raw);
    let status = guard("cordon --stdio to exit", child.wait()).await.expect("wait for cordon");
    assert_eq!(status.code(), Some(0), "exit status; stderr:\n{}", log.text());
}

/// A second signal during the drain ends it at once: the held call is abandoned and the exit is
/// still 0 (`drain_timeout_s` is far away).
#[tokio::test]
async fn a_second_signal_ends_the_drain_at_once() {
    let upstream = Hold::start().await;
    let env = reach_env(&upstream, 600);
    let mut server = env.spawn_http(&[]).await;
    let running = held_call(server.client().await, upstream.url());
    upstream.wait_arrivals(1).await;
    server.signal("TERM");
    server.log.wait_for("draining").await;
    server.signal("TERM");

    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "exit status; stderr:\n{}", server.log.text());
    let log = server.log.text();
    assert!(log.contains("second shutdown signal"), "{log}");
    assert!(log.contains("abandoning 1 call(s) still in flight"), "{log}");
    running.abort();
}
