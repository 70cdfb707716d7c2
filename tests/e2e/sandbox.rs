//! The sandbox holds: each hostile tool ends in its typed error (or harmlessly), the server and
//! the plugin keep serving, a spinning guest does not block other calls, concurrency and size
//! limits apply per plugin, and a cancelled call frees its slot.

mod common;

use common::*;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// hostile: 1 s timeout with fuel to spare, 32 MiB memory. burner (a copy of hostile): little
/// fuel and a long timeout, so spinning runs out of fuel first.
const LIMITS: &str = "
[plugins.hostile.limits]
timeout_ms = 1000
fuel = 10000000000000
memory_mb = 32

[plugins.burner.limits]
fuel = 50000000
timeout_ms = 60000
";

/// Calls a hostile tool over stdio, then checks that the connection, the demo plugin and the
/// hostile plugin itself still work.
async fn contained(tool: &str) -> Outcome {
    let env = Env::demo_and_hostile(LIMITS).plugin(&fixture_wasm("hostile"), "burner.wasm");
    let (client, log) = env.stdio_client().await;
    let out = call(&client, tool, json!({})).await;
    assert_echo(&client, &format!("after {tool}")).await;
    let plugin = tool.split('_').next().unwrap();
    let sleep = call(&client, &format!("{plugin}_sleep"), json!({"ms": 1})).await;
    assert_eq!(sleep.ok(), &json!({"slept_ms": 1}), "{plugin} still serves");
    // Every call is logged on stderr with its outcome.
    log.wait_for(&format!("tool={tool} ")).await;
    out
}

fn message(error: &Value) -> &str {
    error["message"].as_str().unwrap()
}

#[tokio::test]
async fn spin_hits_the_timeout() {
    let out = contained("hostile_spin").await;
    let error = out.expect_error("timeout", true);
    assert!(message(error).contains("1000 ms"), "{error}");
}

#[tokio::test]
async fn spin_with_little_fuel_runs_out_of_fuel() {
    let out = contained("burner_spin").await;
    let error = out.expect_error("fuel_exhausted", false);
    assert!(message(error).contains("50000000"), "{error}");
}

#[tokio::test]
async fn alloc_hits_the_memory_cap() {
    let out = contained("hostile_alloc").await;
    let error = out.expect_error("memory_limit", false);
    assert!(message(error).contains("32 MiB"), "{error}");
}

#[tokio::test]
async fn recursion_is_a_crash() {
    let out = contained("hostile_recurse").await;
    let error = out.expect_error("plugin_crashed", false);
    assert!(message(error).contains("stack overflow"), "{error}");
}

#[tokio::test]
async fn panic_is_a_crash() {
    contained("hostile_crash").await.expect_error("plugin_crashed", false);
}

#[tokio::test]
async fn flood_is_refused_as_too_large() {
    let out = contained("hostile_flood").await;
    let error = out.expect_error("output_too_large", false);
    assert!(message(error).contains("1048576"), "{error}");
}

#[tokio::test]
async fn chatter_is_capped_and_the_call_succeeds() {
    let out = contained("hostile_chatter").await;
    assert!(!out.is_error, "{}", out.raw);
    assert_eq!(out.texts, ["ok"]);
}

#[tokio::test]
async fn probe_finds_nothing() {
    let out = contained("hostile_probe").await;
    let found = out.ok();
    assert_eq!(found["env"], json!([]), "environment leaked: {found}");
    assert_eq!(found["files"], json!([]), "filesystem visible: {found}");
    assert_eq!(found["read"], json!([]), "files readable: {found}");
    for key in ["tcp", "dns"] {
        let outcome = found[key].as_str().unwrap();
        assert!(outcome.starts_with("error"), "{key} reachable: {found}");
    }
}

/// Sets `done` when `fut` finishes.
async fn flagged<F: Future>(fut: F, done: &AtomicBool) -> F::Output {
    let out = fut.await;
    done.store(true, Ordering::SeqCst);
    out
}

/// Calls `hostile_sleep {ms}` until one is refused `busy`, i.e. every slot of the plugin is
/// held by calls already past validation and into the sandbox. Panics if `first_done` is set
/// before that happens.
async fn until_busy(client: &Client, first_done: &[&AtomicBool]) -> Value {
    loop {
        let out = call(client, "hostile_sleep", json!({"ms": 1})).await;
        if out.is_error {
            return out.expect_error("busy", true).clone();
        }
        assert_eq!(out.ok(), &json!({"slept_ms": 1}));
        assert!(
            first_done.iter().all(|d| !d.load(Ordering::SeqCst)),
            "the long calls ended before the plugin was ever busy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two spinning guests (the machine has two cores) do not stop 20 other calls: each echo is
/// answered while both spins are still unfinished, and both spins then end in `timeout`.
#[tokio::test]
async fn spinning_calls_do_not_block_others() {
    let env = Env::demo_and_hostile(
        "[plugins.hostile.limits]\ntimeout_ms = 4000\nfuel = 10000000000000\n\
         max_concurrency = 2\nqueue_timeout_ms = 50\n",
    );
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    let (done1, done2) = (AtomicBool::new(false), AtomicBool::new(false));
    let spins = futures::future::join(
        flagged(call(&client, "hostile_spin", json!({})), &done1),
        flagged(call(&client, "hostile_spin", json!({})), &done2),
    );
    let others = async {
        // `busy` proves both spins hold their slots, i.e. are in the sandbox.
        until_busy(&client, &[&done1, &done2]).await;
        for i in 0..20 {
            assert_echo(&client, &format!("echo {i} during spins")).await;
            assert!(
                !done1.load(Ordering::SeqCst) && !done2.load(Ordering::SeqCst),
                "a spin finished before echo {i}: the echoes were held up"
            );
        }
    };
    let ((spin1, spin2), ()) = tokio::join!(spins, others);
    for spin in [spin1, spin2] {
        let error = spin.expect_error("timeout", true);
        assert!(message(error).contains("4000 ms"), "{error}");
    }
    assert_echo(&client, "after spins").await;
}

#[tokio::test]
async fn busy_when_the_plugin_is_at_its_concurrency_limit() {
    let env = Env::demo_and_hostile("[plugins.hostile.limits]\nmax_concurrency = 1\nqueue_timeout_ms = 100\n");
    let (client, _log) = env.stdio_client().await;
    let first_done = AtomicBool::new(false);
    let first = flagged(call(&client, "hostile_sleep", json!({"ms": 3000})), &first_done);
    let probe = async {
        let error = until_busy(&client, &[&first_done]).await;
        assert!(message(&error).contains("hostile"), "{error}");
        assert!(!first_done.load(Ordering::SeqCst), "busy must come while the slot is held");
    };
    let (first, ()) = tokio::join!(first, probe);
    assert_eq!(first.ok(), &json!({"slept_ms": 3000}));
    // The slot is free again.
    let third = call(&client, "hostile_sleep", json!({"ms": 1})).await;
    assert_eq!(third.ok(), &json!({"slept_ms": 1}));
    // Other plugins were never affected.
    assert_echo(&client, "demo unaffected").await;
}

#[tokio::test]
async fn input_and_output_size_limits_apply_per_plugin() {
    // `tight` is a copy of demo with a small output cap; demo has a small input cap.
    let env = Env::demo()
        .plugin(&demo_wasm(), "tight.wasm")
        .config("[plugins.demo.limits]\nmax_input_bytes = 100\n[plugins.tight.limits]\nmax_output_bytes = 100\n");
    let (client, _log) = env.stdio_client().await;
    let long = "x".repeat(200);

    let out = call(&client, "demo_echo", json!({"text": long})).await;
    let error = out.expect_error("input_too_large", false);
    assert!(message(error).contains("at most 100"), "{error}");
    assert_echo(&client, "short enough").await;

    // 60 characters: 71 bytes in (under demo's input cap), 60 + 71 out (over tight's output
    // cap, under demo's).
    let sixty = "y".repeat(60);
    let out = call(&client, "tight_echo", json!({"text": sixty})).await;
    out.expect_error("output_too_large", false);
    let out = call(&client, "demo_echo", json!({"text": sixty})).await;
    assert_eq!(out.ok(), &json!({"text": sixty}));
    let out = call(&client, "tight_echo", json!({"text": "tiny"})).await;
    assert_eq!(out.ok(), &json!({"text": "tiny"}));
}

/// A client that gives up on a call (rmcp sends `notifications/cancelled` when the request
/// future is dropped) frees the call's slot: with room for one call and a spin that would
/// otherwise run for ten minutes, the next call gets in.
async fn cancelling_frees_the_slot(client: &Client) {
    {
        let done = AtomicBool::new(false);
        let spin = pin!(flagged(call(client, "hostile_spin", json!({})), &done));
        let watched = [&done];
        tokio::select! {
            _ = spin => panic!("the spin ended on its own"),
            _ = until_busy(client, &watched) => {}
        }
        // Leaving the block drops the spin's request future: the client cancels it.
    }
    let next = guard("the slot to be freed by cancelling", async {
        loop {
            let out = call(client, "hostile_sleep", json!({"ms": 1})).await;
            if !out.is_error {
                return out;
            }
            out.expect_error("busy", true);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(next.ok(), &json!({"slept_ms": 1}));
}

const ONE_LONG_SLOT: &str = "[plugins.hostile.limits]\ntimeout_ms = 600000\n\
    fuel = 100000000000000000\nmax_concurrency = 1\nqueue_timeout_ms = 50\n";

#[tokio::test]
async fn cancelling_a_call_over_stdio_frees_its_slot() {
    let env = Env::demo_and_hostile(ONE_LONG_SLOT);
    let (client, _log) = env.stdio_client().await;
    cancelling_frees_the_slot(&client).await;
}

#[tokio::test]
async fn cancelling_a_call_over_http_frees_its_slot() {
    let env = Env::demo_and_hostile(ONE_LONG_SLOT);
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    cancelling_frees_the_slot(&client).await;
}
