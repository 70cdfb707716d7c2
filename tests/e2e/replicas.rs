//! Several replicas behind a load balancer, sharing one PostgreSQL (`[store] url`): a keyed call
//! acts exactly once whichever replicas its duplicates and retries reach, even when the replica
//! running it is killed; a token revoked on one replica is refused by all; a replica that loses
//! its database refuses keyed calls with a retryable error and runs nothing.
//!
//! Everything is real: a PostgreSQL server started by the test (`common::postgres`), three
//! `cordon serve` processes on loopback, and the payments API of `common::payments`, whose count
//! of charges is the proof of "exactly once".

mod common;

use common::payments::*;
use common::postgres::Postgres;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Short, so a killed replica's calls are recovered within seconds.
const LEASE_S: u64 = 2;

/// payments.wasm against `api`, sharing the store at `url`, plus `extra` config.
fn replica_env(api: &PaymentsApi, url: &str, extra: &str) -> Env {
    let config = format!(
        "{PATIENT}\n[store]\nurl = \"{url}\"\nlease_s = {LEASE_S}\n\n{extra}\n\
         [plugins.payments.config]\nbase_url = \"{base}\"\n\n\
         [[plugins.payments.http.grants]]\nurl = \"{base}{CHARGES}\"\nmethods = [\"POST\"]\n",
        base = api.base
    );
    Env::new().plugin(&example_wasm("payments"), "payments.wasm").config(&config)
}

/// `payments_charge` arguments.
fn charge(account: &str, amount_cents: u64, key: &str) -> Value {
    json!({"account": account, "amount_cents": amount_cents, "idempotency_key": key})
}

/// POSTs a JSON-RPC request (stateless mode): the body, or why no answer came (a killed
/// replica).
async fn try_post(url: &str, request: &Value) -> Result<String, String> {
    let response = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(request.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("HTTP {}", response.status()));
    }
    response.text().await.map_err(|e| e.to_string())
}

/// The tool result in a JSON-RPC response body.
fn result_of(body: &str) -> Outcome {
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    Outcome::from_wire(&body["result"])
}

/// Asserts `account` was charged exactly once and `body` reports that charge.
fn charged_once(api: &PaymentsApi, account: &str, body: &str) {
    let ids: Vec<String> = api.effects().into_iter().filter(|e| e.account == account).map(|e| e.id).collect();
    assert_eq!(ids.len(), 1, "{account} was charged {} times: {ids:?}", ids.len());
    let out = result_of(body);
    assert_eq!(out.ok()["charge_id"], ids[0].as_str(), "{}", out.raw);
}

/// Starts one replica per environment, all at once (so their migrations race).
async fn start_all(envs: &[Env]) -> Vec<HttpServer> {
    futures::future::join_all(envs.iter().map(|env| env.spawn_http(&["--stateless"]))).await
}

/// 30 duplicates of one keyed call spread over three replicas started together: one charge,
/// one upstream request, 30 identical answers, one record. The concurrent starts migrated the
/// database once.
#[tokio::test]
async fn duplicates_spread_across_replicas_run_once() {
    let pg = Postgres::start();
    let url = pg.database("cordon");
    let api = PaymentsApi::start().await;
    api.set_delay(Duration::from_millis(500));
    let envs: Vec<Env> = (0..3).map(|_| replica_env(&api, &url, "")).collect();
    let servers = start_all(&envs).await;
    // Four migrations (records, replicas and revocations; the audit index; revocations by
    // transaction; tasks), applied once.
    assert_eq!(pg.query("cordon", "SELECT version FROM cordon_schema"), "4");
    assert_eq!(pg.query("cordon", "SELECT count(*) FROM cordon_replicas"), "3");

    let request = call_request(1, "payments_charge", charge("acct_spread", 500, "order-spread"));
    let bodies =
        futures::future::join_all((0..30).map(|i| guard("a duplicate", try_post(&servers[i % 3].url, &request)))).await;
    let bodies: Vec<String> = bodies.into_iter().map(|b| b.expect("every replica answers")).collect();
    charged_once(&api, "acct_spread", &bodies[0]);
    assert!(bodies.iter().all(|b| *b == bodies[0]), "answers differ: {bodies:?}");
    assert_eq!(api.requests_for("acct_spread").len(), 1, "{:?}", api.requests());
    assert_eq!(
        pg.query("cordon", "SELECT state || ' ' || attempts FROM cordon_idempotency WHERE key = 'order-spread'"),
        "completed 1"
    );
    // Every replica's audit lines reach the one index: 30 calls, from all three replicas.
    guard("the audit index to hold every call", async {
        let indexed = || pg.query("cordon", "SELECT count(*) FROM cordon_audit WHERE idempotency_key = 'order-spread'");
        while indexed() != "30" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(pg.query("cordon", "SELECT count(DISTINCT replica) FROM cordon_audit"), "3");
    assert_eq!(
        pg.query("cordon", "SELECT count(*) FROM cordon_audit WHERE tool = 'payments_charge' AND outcome = 'ok'"),
        "30"
    );
    // And `cordon idempotency` reads the shared store from any replica's config.
    let out = envs[2].run(&["idempotency", "show", "order-spread"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"completed\""), "{}", describe(&out));
    for server in servers {
        server.stop().await;
    }
}

/// What the storm's driver saw, per key.
#[derive(Default)]
struct Driven {
    answers: BTreeMap<usize, String>,
    transport_retries: usize,
}

/// The issue's proof: three replicas share one PostgreSQL; 60 keyed charges are driven across
/// them, 12 at a time, and one replica is SIGKILLed in the middle, calls in flight. Every call
/// whose replica died is retried on another, which waits out the dead replica's lease and
/// recovers the run with the same upstream keys. Then a second replica is killed while one
/// charge hangs at the API, and four duplicates retried on the last replica act once. The
/// API's count: exactly one charge per key.
#[tokio::test]
async fn three_replicas_act_once_per_key_while_one_is_killed_mid_call() {
    const KEYS: usize = 60;
    const WORKERS: usize = 12;
    let pg = Postgres::start();
    let url = pg.database("cordon");
    let api = PaymentsApi::start().await;
    api.set_delay(Duration::from_millis(100));
    let envs: Vec<Env> = (0..3).map(|_| replica_env(&api, &url, "")).collect();
    let mut servers: VecDeque<HttpServer> = start_all(&envs).await.into();
    let live = Arc::new(Mutex::new(servers.iter().map(|s| s.url.clone()).collect::<Vec<_>>()));
    let queue = Arc::new(Mutex::new((0..KEYS).collect::<VecDeque<_>>()));
    let driven = Arc::new(Mutex::new(Driven::default()));

    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (live, queue, driven) = (live.clone(), queue.clone(), driven.clone());
            tokio::spawn(async move {
                loop {
                    let Some(i) = queue.lock().unwrap().pop_front() else { return };
                    let request =
                        call_request(i as u64, "payments_charge", charge(&format!("acct_{i}"), 100, &format!("k-{i}")));
                    for attempt in 0.. {
                        let url = {
                            let live = live.lock().unwrap();
                            live[(i + attempt) % live.len()].clone()
                        };
                        match try_post(&url, &request).await {
                            Ok(body) => {
                                driven.lock().unwrap().answers.insert(i, body);
                                break;
                            }
                            Err(_) => {
                                driven.lock().unwrap().transport_retries += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    guard("a third of the keys to be charged", async {
        while driven.lock().unwrap().answers.len() < KEYS / 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let victim = servers.pop_front().expect("three replicas");
    let victim_url = victim.url.clone();
    victim.stop().await;
    live.lock().unwrap().retain(|u| *u != victim_url);
    for worker in workers {
        guard("the storm to finish", worker).await.expect("a worker");
    }

    {
        let driven = driven.lock().unwrap();
        assert_eq!(driven.answers.len(), KEYS);
        let recovered = servers.iter().map(|s| s.log.text().matches("recovering a call whose run was cut off").count());
        eprintln!(
            "storm: {} calls retried after the kill, {} recovered from the dead replica",
            driven.transport_retries,
            recovered.sum::<usize>()
        );
        for (i, body) in &driven.answers {
            charged_once(&api, &format!("acct_{i}"), body);
        }
        assert_eq!(api.effects().len(), KEYS, "one charge per key, no more");
        // Every request of a key carried the same upstream key: retries were recognised upstream.
        for i in 0..KEYS {
            let keys: std::collections::BTreeSet<_> =
                api.requests_for(&format!("acct_{i}")).into_iter().map(|r| r.key).collect();
            assert_eq!(keys.len(), 1, "acct_{i}: {keys:?}");
        }
    }

    // A charge hangs at the API while its replica is killed; duplicates go to the last one.
    api.set_delay(HANG_GUARD);
    let request = call_request(1, "payments_charge", charge("acct_hung", 900, "order-hung"));
    let victim = servers.pop_front().expect("two replicas");
    let cut_off = tokio::spawn({
        let (url, request) = (victim.url.clone(), request.clone());
        async move { try_post(&url, &request).await }
    });
    guard("the charge to reach the API", async {
        while api.requests_for("acct_hung").is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    victim.stop().await;
    assert!(guard("the cut-off call to fail", cut_off).await.expect("joined").is_err());
    api.set_delay(Duration::ZERO);
    let last = servers.pop_front().expect("one replica");
    let bodies = futures::future::join_all((0..4).map(|_| guard("a retry", try_post(&last.url, &request)))).await;
    let bodies: Vec<String> = bodies.into_iter().map(|b| b.expect("the last replica answers")).collect();
    charged_once(&api, "acct_hung", &bodies[0]);
    assert!(bodies.iter().all(|b| *b == bodies[0]), "answers differ: {bodies:?}");
    let requests = api.requests_for("acct_hung");
    assert_eq!(requests.len(), 2, "the cut-off request and one recovery: {requests:?}");
    assert_eq!(requests[0].key, requests[1].key, "the recovery reused the upstream key");
    assert_eq!(
        pg.query("cordon", "SELECT state || ' ' || attempts FROM cordon_idempotency WHERE key = 'order-hung'"),
        "completed 2"
    );
    assert!(last.log.text().contains("recovering a call whose run was cut off"), "{}", last.log.text());
    last.stop().await;
}

/// A tools/list with `token`: the HTTP status.
async fn list_status(server: &HttpServer, token: &str) -> u16 {
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    post(&server.url, &request, &[("authorization", &format!("Bearer {token}"))]).await.status().as_u16()
}

/// A host-signed token works on every replica (they share the signing key, as deploy/ says);
/// revoked with `cordon token revoke` against one replica's config, it is refused by all three.
#[tokio::test]
async fn a_token_revoked_on_one_replica_is_refused_by_all() {
    let pg = Postgres::start();
    let url = pg.database("cordon");
    let api = PaymentsApi::start().await;
    let envs: Vec<Env> = (0..3).map(|_| replica_env(&api, &url, "[auth]\nsigned_tokens_only = true\n")).collect();
    let issued = envs[0].issue_token("ci-bot", None, "1h").await;
    let token = issued["token"].as_str().expect("a token").to_string();
    let id = issued["id"].as_str().expect("an id").to_string();
    let key = std::fs::read(envs[0].data_dir().join("token-signing.key")).expect("the signing key");
    for env in &envs[1..] {
        std::fs::write(env.data_dir().join("token-signing.key"), &key).expect("share the signing key");
    }
    let servers = futures::future::join_all(envs.iter().map(|env| env.spawn_http_with(&[], &["--stateless"]))).await;
    for server in &servers {
        assert_eq!(list_status(server, &token).await, 200);
    }

    let out = envs[1].run(&["token", "revoke", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    for server in &servers {
        // Each replica refreshes its copy of the list every second.
        guard("the revocation to reach every replica", async {
            while list_status(server, &token).await != 401 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }
    assert_eq!(pg.query("cordon", "SELECT count(*) FROM cordon_revoked_tokens"), "1");
    for server in servers {
        server.stop().await;
    }
}

/// A revocation whose transaction commits after a later revocation was already read is still
/// seen: the replica tails the list by transaction, below the oldest one still open, so it
/// cannot skip past it (a cursor on the sequence number did: the early token stayed valid for
/// good on that replica).
#[tokio::test]
async fn a_revocation_that_commits_late_is_not_skipped() {
    let pg = Postgres::start();
    let url = pg.database("cordon");
    let api = PaymentsApi::start().await;
    let env = replica_env(&api, &url, "[auth]\nsigned_tokens_only = true\n");
    let early = env.issue_token("early-bot", None, "1h").await;
    let late = env.issue_token("late-bot", None, "1h").await;
    let token = |issued: &Value| issued["token"].as_str().expect("a token").to_string();
    let server = env.spawn_http_with(&[], &["--stateless"]).await;
    assert_eq!(list_status(&server, &token(&early)).await, 200);
    assert_eq!(list_status(&server, &token(&late)).await, 200);

    // The early revocation takes its place in the table first, then waits to commit.
    let mut slow = pg.session("cordon");
    slow.run(&format!(
        "BEGIN; INSERT INTO cordon_revoked_tokens (id, revoked_ms) VALUES ('{}', 0);",
        early["id"].as_str().expect("an id")
    ));
    let out = env.run(&["token", "revoke", late["id"].as_str().expect("an id")]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let refused = |issued: Value| {
        let server = &server;
        async move {
            while list_status(server, &token(&issued)).await != 401 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    guard("the late revocation to reach the replica", refused(late)).await;
    slow.run("COMMIT;");
    guard("the early revocation, committed last, to reach the replica too", refused(early)).await;
    server.stop().await;
}

/// The database goes away: a keyed call fails with the retryable `store_unavailable` before the
/// guest runs (the API sees nothing), the server keeps serving, and once the database is back
/// the same key charges exactly once.
#[tokio::test]
async fn a_replica_that_loses_its_database_runs_no_keyed_call() {
    let mut pg = Postgres::start();
    // The test server trusts loopback, so the password is never checked: it is there to prove
    // that no log line carries it.
    let url = pg.database("cordon").replace("cordon@", "cordon:s3cret@");
    let api = PaymentsApi::start().await;
    let env = replica_env(&api, &url, "");
    let server = env.spawn_http(&["--stateless"]).await;
    let request = call_request(1, "payments_charge", charge("acct_outage", 300, "order-outage"));

    pg.crash();
    let body = guard("an answer without the database", try_post(&server.url, &request)).await.expect("an answer");
    result_of(&body).expect_error("store_unavailable", true);
    assert!(api.requests().is_empty(), "nothing ran: {:?}", api.requests());

    pg.resume();
    let body = guard("a retry", async {
        loop {
            let body = try_post(&server.url, &request).await.expect("an answer");
            if !result_of(&body).is_error {
                return body;
            }
            // Pooled connections to the dead server fail once each before they are replaced.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    charged_once(&api, "acct_outage", &body);
    assert_eq!(api.requests().len(), 1);
    let log = server.log.text();
    assert!(log.contains("cordon:***@127.0.0.1"), "the store is named, redacted: {log}");
    assert!(!log.contains("s3cret"), "no password in the log: {log}");
    server.stop().await;
}

/// A database migrated by a newer Cordon is refused at start, untouched.
#[tokio::test]
async fn a_store_from_a_newer_cordon_is_refused() {
    let pg = Postgres::start();
    let url = pg.database("cordon");
    let api = PaymentsApi::start().await;
    let env = replica_env(&api, &url, "");
    let server = env.spawn_http(&["--stateless"]).await;
    server.stop().await;
    pg.query("cordon", "UPDATE cordon_schema SET version = 99");
    let out = env.run(&["tools"]).await;
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("migrated by a newer Cordon (schema version 99)"), "{}", describe(&out));
    assert!(err.contains(&format!("127.0.0.1:{}", pg.port)), "names the store: {err}");
    assert_eq!(pg.query("cordon", "SELECT version FROM cordon_schema"), "99");
}

/// A CA of its own and a certificate it signed for `127.0.0.1`: (CA PEM, certificate PEM, key PEM).
fn certificate_authority() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "cordon test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("CA key")).expect("CA");
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&server_key, &ca)
        .expect("server certificate");
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

/// TLS to PostgreSQL, `sslmode=verify-full` semantics: the server accepts TCP connections only
/// over TLS, with a certificate from a CA of the test's own. With that CA in `[store] ca_file`
/// a replica starts and its keyed call acts once; with another CA, or with the public roots,
/// it refuses to start and says the certificate is not trusted; without TLS the server turns it
/// away. `sslrootcert` in the URL works like `ca_file`.
#[tokio::test]
async fn the_store_is_reached_over_verified_tls_and_a_wrong_ca_is_refused() {
    let (ca, cert, key) = certificate_authority();
    let (other_ca, _, _) = certificate_authority();
    let pg = Postgres::start_with_tls(&cert, &key);
    let url = pg.database("cordon");
    let api = PaymentsApi::start().await;
    let files = tempfile::tempdir().unwrap();
    let (ca_file, other_file) = (files.path().join("ca.pem"), files.path().join("other.pem"));
    std::fs::write(&ca_file, &ca).unwrap();
    std::fs::write(&other_file, &other_ca).unwrap();

    let env = replica_env(&api, &format!("{url}?sslmode=verify-full"), &format!("ca_file = \"{}\"", ca_file.display()));
    let server = env.spawn_http(&["--stateless"]).await;
    let request = call_request(1, "payments_charge", charge("acct_tls", 700, "order-tls"));
    let body = guard("a call over a TLS store", try_post(&server.url, &request)).await.expect("an answer");
    charged_once(&api, "acct_tls", &body);
    assert_eq!(pg.query("cordon", "SELECT state FROM cordon_idempotency WHERE key = 'order-tls'"), "completed");
    // The connections really are TLS: the server counts them as such.
    let tls_backends =
        pg.query("cordon", "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.application_name = 'cordon'");
    assert_ne!(tls_backends, "0", "cordon's connections are not over TLS");
    server.stop().await;

    let refused = |out: &std::process::Output| {
        assert_ne!(out.status.code(), Some(0), "{}", describe(out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Another CA, and the public roots: not trusted.
    let env =
        replica_env(&api, &format!("{url}?sslmode=verify-full"), &format!("ca_file = \"{}\"", other_file.display()));
    let err = refused(&env.run(&["tools"]).await);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let env = replica_env(&api, &format!("{url}?sslmode=require"), "");
    let err = refused(&env.run(&["tools"]).await);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // No TLS: the server refuses the connection.
    let env = replica_env(&api, &url, "");
    let err = refused(&env.run(&["tools"]).await);
    assert!(err.contains("no encryption") || err.contains("pg_hba.conf"), "{err}");
    // The CA named in the URL, libpq's way.
    let env = replica_env(&api, &format!("{url}?sslmode=verify-full&sslrootcert={}", ca_file.display()), "");
    let out = env.run(&["tools"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

/// A rate limit is divided among the live replicas: 30 per hour with three replicas is a bucket
/// of 10 on each (`ratelimit` module docs), so a balancer spreading calls evenly gets about the
/// configured rate from the cluster.
#[tokio::test]
async fn a_rate_limit_is_shared_among_live_replicas() {
    let pg = Postgres::start();
    let url = pg.database("cordon");
    let api = PaymentsApi::start().await;
    let limit = "[rate_limits]\nper_principal = { requests = 30, per_seconds = 3600 }\n";
    let envs: Vec<Env> = (0..3).map(|_| replica_env(&api, &url, limit)).collect();
    let servers = start_all(&envs).await;
    // Each replica counts the live ones at every heartbeat (a third of the lease): wait until
    // all three are registered, then for one more heartbeat of each.
    guard("three replicas registered", async {
        while pg.query("cordon", "SELECT count(*) FROM cordon_replicas") != "3" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(LEASE_S * 1000 / 3 + 500)).await;

    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    for i in 0..10 {
        let response = post(&servers[0].url, &list, &[]).await;
        assert_eq!(response.status(), 200, "request {i} is within this replica's share");
        let limit = response.headers().get("ratelimit-limit").and_then(|v| v.to_str().ok()).map(String::from);
        assert_eq!(limit.as_deref(), Some("10"), "request {i}");
    }
    assert_eq!(post(&servers[0].url, &list, &[]).await.status(), 429, "the 11th is over the share");
    assert_eq!(post(&servers[1].url, &list, &[]).await.status(), 200, "another replica has its own share");
    for server in servers {
        server.stop().await;
    }
}
