//! Spare instances ([pool] spares_per_plugin) against the real binary: every call still gets an
//! instance of its own, a reload drops the replaced plugin's spares, and `[pool] max_instances`
//! bounds spares and running calls together without spares ever making a call `busy`.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

/// `cordon_spare_instances` once it reads `want` (spares are made after the reply, so a test
/// polls for them).
async fn wait_spares(server: &HttpServer, want: f64) {
    let url = format!("{}/metrics", server.base);
    guard(&format!("{want} spare instances"), async {
        loop {
            let text = get(&url, &[]).await.text().await.expect("the /metrics body");
            if sample(&text, "cordon_spare_instances", &[]) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A guest that counts its calls in a global and leaves a mark in memory sees 1 and no mark on
/// every call — one at a time (each taking the spare the previous call's teardown made) and 20
/// at once (more than the spares: the rest made on demand). Spares appear after a plugin's
/// first call only, two per plugin; replacing a plugin drops its spares and leaves the others'.
#[tokio::test]
async fn every_call_gets_a_fresh_instance_and_a_reload_drops_the_replaced_plugins_spares() {
    let env = Env::demo()
        .plugin(&fixture_wasm("hostile_output"), "hostile_output.wasm")
        .config("[pool]\nspares_per_plugin = 2\n");
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    wait_spares(&server, 0.0).await;

    for _ in 0..10 {
        let out = call(&client, "hostile_output_remember", json!({})).await;
        assert_eq!(out.texts, ["calls=1 mark=0x0"], "{}", out.raw);
        wait_spares(&server, 2.0).await;
    }
    let outs = futures::future::join_all((0..20).map(|_| call(&client, "hostile_output_remember", json!({})))).await;
    for out in outs {
        assert_eq!(out.texts, ["calls=1 mark=0x0"], "{}", out.raw);
    }
    wait_spares(&server, 2.0).await;
    assert_echo(&client, "demo gets its own").await;
    wait_spares(&server, 4.0).await;

    let replaced = new_version(&std::fs::read(fixture_wasm("hostile_output")).expect("the fixture"), "2");
    install(&env.plugins_dir(), "hostile_output.wasm", &replaced);
    server.log.wait_for(&format!("digest={}", sha256_hex(&replaced))).await;
    wait_spares(&server, 2.0).await;
    let out = call(&client, "hostile_output_remember", json!({})).await;
    assert_eq!(out.texts, ["calls=1 mark=0x0"], "{}", out.raw);
    wait_spares(&server, 4.0).await;
}

/// `[pool] max_instances = 2`: two plugins' spares cannot hold the pool against a call (the call
/// evicts them), while two running calls do hold it: a third call is `busy`, naming the pool.
#[tokio::test]
async fn max_instances_bounds_spares_and_running_calls_together() {
    let env =
        Env::demo_and_hostile("[pool]\nmax_instances = 2\nspares_per_plugin = 2\n\n[defaults]\nmax_concurrency = 2\n");
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    assert_echo(&client, "first").await;
    wait_spares(&server, 2.0).await;
    // demo's two spares fill the pool; hostile's call evicts them.
    let slept = call(&client, "hostile_sleep", json!({"ms": 1})).await;
    assert_eq!(slept.ok()["slept_ms"], 1, "{}", slept.raw);
    wait_spares(&server, 2.0).await;
    assert_echo(&client, "and back").await;

    let url = format!("{}/metrics", server.base);
    let third = async {
        guard("both sleepers running", async {
            loop {
                let text = get(&url, &[]).await.text().await.expect("the /metrics body");
                if sample(&text, "cordon_instances_in_use", &[]) == 2.0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        call(&client, "demo_echo", json!({"text": "no room"})).await
    };
    let (first, second, third) = tokio::join!(
        call(&client, "hostile_sleep", json!({"ms": 3000})),
        call(&client, "hostile_sleep", json!({"ms": 3000})),
        third
    );
    let error = third.expect_error("busy", true);
    assert!(error["message"].as_str().unwrap_or_default().contains("instance pool is full"), "{error}");
    for out in [first, second] {
        assert_eq!(out.ok()["slept_ms"], 3000, "{}", out.raw);
    }
    assert_echo(&client, "after the sleepers").await;
}
