//! The hostile corpus (issue 10): guests that attack the host through their results, their
//! memory, their outbound requests and their `describe`, each against the real binary. Every
//! case ends in a typed error or a clear refusal, and a well-behaved plugin (demo) keeps
//! answering correctly, during and after each storm.
//!
//! Storms check the host's footprint from `/proc/<pid>` (resident memory, open descriptors)
//! against generous bounds after a warm-up: they catch a leak per call, never a slow host.
//! Nothing here measures time (speed belongs in the benchmarks).

mod common;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use axum::Router;
use common::*;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KIB_PER_MIB: u64 = 1024;

fn message(error: &Value) -> &str {
    error["message"].as_str().expect("error message")
}

// ---- the host's footprint ----------------------------------------------------------------------

/// What a process holds: resident memory (KiB) and open file descriptors.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    rss_kib: u64,
    fds: usize,
}

fn footprint(pid: u32) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("list /proc/<pid>/fd").count();
    Footprint { rss_kib, fds }
}

/// `after` is within `rss_mib` MiB and `fds` descriptors of `before`.
fn assert_bounded(what: &str, before: Footprint, after: Footprint, rss_mib: u64, fds: usize) {
    eprintln!("{what}: {before:?} → {after:?}");
    assert!(
        after.rss_kib <= before.rss_kib + rss_mib * KIB_PER_MIB,
        "{what}: resident memory grew from {} to {} KiB (allowed: {rss_mib} MiB)",
        before.rss_kib,
        after.rss_kib
    );
    assert!(
        after.fds <= before.fds + fds,
        "{what}: open descriptors grew from {} to {} (allowed: {fds})",
        before.fds,
        after.fds
    );
}

/// `calls` calls of `tool` with `args`, `batch` at a time; next to each batch, a `demo_echo`
/// that must be answered correctly. `check` looks at every outcome.
async fn storm(client: &Client, tool: &str, args: Value, calls: usize, batch: usize, check: impl Fn(&Outcome)) {
    for start in (0..calls).step_by(batch) {
        let n = batch.min(calls - start);
        let batch = futures::future::join_all((0..n).map(|_| call(client, tool, args.clone())));
        let text = format!("next to {tool} call {start}");
        let (outcomes, ()) = tokio::join!(batch, assert_echo(client, &text));
        for out in &outcomes {
            check(out);
        }
    }
}

// ---- trap storm ------------------------------------------------------------------------------

/// Room for every call of a batch to wait for a slot, however loaded the machine.
const STORM_LIMITS: &str = "[plugins.hostile.limits]\nqueue_timeout_ms = 60000\n";

/// 2,000 panicking calls over HTTP, 50 at a time: each is `plugin_crashed`, demo answers next to
/// every batch, and afterwards the server is up, hostile itself still serves, and the host holds
/// no more memory or descriptors than after a warm-up of 200 (bounds: 64 MiB, 16 descriptors).
#[tokio::test]
async fn a_trap_storm_is_contained_and_leaves_nothing_behind() {
    let env = Env::demo_and_hostile(STORM_LIMITS);
    let mut server = env.spawn_http(&[]).await;
    let client = server.client().await;
    let crashed = |out: &Outcome| {
        let error = out.expect_error("plugin_crashed", false);
        assert!(message(error).starts_with("the plugin crashed"), "{error}");
    };

    storm(&client, "hostile_crash", json!({}), 200, 50, crashed).await;
    let before = footprint(server.pid());
    storm(&client, "hostile_crash", json!({}), 2_000, 50, crashed).await;
    let after = footprint(server.pid());

    assert!(server.is_running(), "the server died in the storm; stderr:\n{}", server.log.text());
    assert_echo(&client, "after the trap storm").await;
    let sleep = call(&client, "hostile_sleep", json!({"ms": 1})).await;
    assert_eq!(sleep.ok(), &json!({"slept_ms": 1}), "hostile still serves");
    assert_bounded("2,000 crashes", before, after, 64, 16);
}

// ---- memory up to the cap ----------------------------------------------------------------------

/// hostile_output with a 16 MiB cap; four calls at a time, each waiting as long as it takes.
const FILL_LIMITS: &str = "[plugins.hostile_output.limits]\nmemory_mb = 16\nmax_concurrency = 4\n\
    queue_timeout_ms = 60000\n";

/// A guest that fills its linear memory to exactly its 16 MiB cap on every call succeeds every
/// time (256 pages, each written); one page more is `memory_limit`. After 400 full calls the
/// host holds no more than after a warm-up of 100, give or take the slots the pooling allocator
/// decommits in batches of 32 (bound: 32 × 16 MiB + 64 MiB, 16 descriptors), and demo answers
/// next to every batch.
#[tokio::test]
async fn filling_memory_to_the_cap_on_every_call_is_allowed_and_leaves_nothing_behind() {
    let env = Env::demo().plugin(&fixture_wasm("hostile_output"), "hostile_output.wasm").config(FILL_LIMITS);
    let mut server = env.spawn_http(&[]).await;
    let client = server.client().await;

    let over = call(&client, "hostile_output_fill", json!({"mib": 16, "extra_pages": 1})).await;
    let error = over.expect_error("memory_limit", false);
    assert!(message(error).contains("16 MiB"), "{error}");

    let full = |out: &Outcome| {
        assert!(!out.is_error, "{}", out.raw);
        assert_eq!(out.texts, ["256 pages"], "{}", out.raw);
    };
    storm(&client, "hostile_output_fill", json!({"mib": 16}), 100, 8, full).await;
    let before = footprint(server.pid());
    storm(&client, "hostile_output_fill", json!({"mib": 16}), 400, 8, full).await;
    let after = footprint(server.pid());

    assert!(server.is_running(), "the server died; stderr:\n{}", server.log.text());
    assert_echo(&client, "after filling memory 500 times").await;
    assert_bounded("400 calls at the memory cap", before, after, 32 * 16 + 64, 16);
}

// ---- invalid results ---------------------------------------------------------------------------

/// Calls a hostile_output tool over stdio, then checks that demo and hostile_output itself still
/// answer correctly.
async fn invalid_result(tool: &str) -> Outcome {
    let env = Env::demo().plugin(&fixture_wasm("hostile_output"), "hostile_output.wasm");
    let (client, log) = env.stdio_client().await;
    let out = call(&client, &format!("hostile_output_{tool}"), json!({})).await;
    assert_echo(&client, &format!("after {tool}")).await;
    let fill = call(&client, "hostile_output_fill", json!({"mib": 2})).await;
    assert_eq!(fill.texts, ["32 pages"], "hostile_output still serves: {}", fill.raw);
    log.wait_for(&format!("tool=hostile_output_{tool} ")).await;
    out
}

/// Bytes that are not UTF-8 cannot cross a WIT `string`: lifting them fails, and the host makes
/// that `invalid_output`, for a result and for an error message alike.
#[tokio::test]
async fn a_string_that_is_not_utf8_is_invalid_output() {
    for tool in ["bad_utf8", "bad_utf8_error"] {
        let out = invalid_result(tool).await;
        let error = out.expect_error("invalid_output", false);
        assert_eq!(message(error), "the plugin returned a string that is not valid UTF-8", "{tool}");
    }
}

#[tokio::test]
async fn a_result_that_is_not_json_is_invalid_output() {
    let out = invalid_result("bad_json").await;
    let error = out.expect_error("invalid_output", false);
    assert!(message(error).starts_with("the plugin returned invalid JSON: "), "{error}");
}

/// 100,000 nested arrays are valid JSON, but the host's parser stops at its depth limit instead
/// of following them (and overflowing its own stack).
#[tokio::test]
async fn json_nested_100_000_deep_is_invalid_output() {
    let out = invalid_result("deep_json").await;
    let error = out.expect_error("invalid_output", false);
    assert!(message(error).starts_with("the plugin returned invalid JSON: recursion limit exceeded"), "{error}");
}

/// Output that breaks the tool's own output schema is `invalid_output` listing every violation
/// with its pointer; so is a tool with an output schema that returns no structured result.
#[tokio::test]
async fn a_result_off_its_own_output_schema_is_invalid_output() {
    let out = invalid_result("off_schema").await;
    let error = out.expect_error("invalid_output", false);
    assert!(message(error).starts_with("the result does not match the tool's output schema: "), "{error}");
    let pointers: Vec<&str> =
        error["violations"].as_array().expect("violations").iter().map(|v| v["pointer"].as_str().unwrap()).collect();
    assert_eq!(pointers, ["/count", ""], "{error}");
    assert!(!out.raw.to_string().contains("seven\\\", \\\"extra"), "the bad output is not passed on: {}", out.raw);

    let out = invalid_result("no_structured").await;
    let error = out.expect_error("invalid_output", false);
    assert_eq!(message(error), "the tool declares an output schema but returned no structured result");
}

// ---- outbound HTTP -----------------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Whether the whole body arrived (as framed by the request's own headers).
    complete: bool,
}

impl Seen {
    /// Every value of header `name` (lower case).
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
}

#[derive(Default)]
struct Tally {
    requests: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// A loopback HTTP server recording every request (complete or cut off) and the most requests it
/// ever had in flight at once. Paths under `/api/slow` are answered after a pause, so requests
/// started together overlap there.
struct Upstream {
    /// `http://127.0.0.1:PORT`.
    base: String,
    tally: Arc<Tally>,
    connections: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Counts a request out of flight however its handler ends.
struct InFlight(Arc<Tally>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn record(State(tally): State<Arc<Tally>>, request: Request) -> Response {
    let now = tally.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    tally.peak.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(tally.clone());
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await;
    let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    if path.starts_with("/api/slow") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tally.requests.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        complete: body.is_ok(),
        body: body.map(|b| b.to_vec()).unwrap_or_default(),
    });
    "ok".into_response()
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
        let base = format!("http://{}", listener.local_addr().expect("upstream address"));
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let listener = listener.tap_io(move |_| {
            accepted.fetch_add(1, Ordering::SeqCst);
        });
        let tally = Arc::new(Tally::default());
        let app = Router::new().fallback(record).with_state(tally.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("upstream serves") });
        Upstream { base, tally, connections, server }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `127.0.0.1:PORT`.
    fn authority(&self) -> &str {
        self.base.strip_prefix("http://").expect("http base")
    }

    fn requests(&self) -> Vec<Seen> {
        self.tally.requests.lock().unwrap().clone()
    }

    fn peak(&self) -> usize {
        self.tally.peak.load(Ordering::SeqCst)
    }
}

/// demo, hostile_http and reach, granted GET and POST under the upstream's `/api/`; implicit
/// idempotency keys off (identical calls must each run).
fn http_env(upstream: &Upstream, http: &str) -> Env {
    let grant = |plugin: &str| {
        format!(
            "[plugins.{plugin}.http]\n{http}\n[[plugins.{plugin}.http.grants]]\nurl = \"{}\"\nmethods = [\"GET\", \"POST\"]\n\
             [plugins.{plugin}.idempotency]\nimplicit_window_s = 0\n\n",
            upstream.url("/api/")
        )
    };
    Env::demo()
        .plugin(&fixture_wasm("hostile_http"), "hostile_http.wasm")
        .plugin(&fixture_wasm("reach"), "reach.wasm")
        .config(&format!("{}{}", grant("hostile_http"), grant("reach")))
}

/// How far each of hostile_http's attempts gets: a hop-by-hop or routing header cannot be set
/// at all (`forbidden`, however it is set: from a list, `set`, `append`, or on a request's
/// headers afterwards), CR/LF cannot be injected anywhere, user info in the authority is
/// refused by the host (`HttpRequestDenied`), and a `Content-Length` is accepted only as a
/// single run of digits that then frames exactly the bytes sent.
fn expected_smuggle_report() -> Map<String, Value> {
    let mut report = Map::new();
    let mut expect = |name: &str, outcome: &str| {
        report.insert(name.to_string(), json!(outcome));
    };
    expect("control", "status 200");
    for header in [
        "host",
        "host_upper",
        "transfer_encoding",
        "connection",
        "keep_alive",
        "upgrade",
        "te",
        "trailer",
        "proxy_connection",
        "proxy_authorization",
        "http2_settings",
    ] {
        for how in ["list", "set", "append"] {
            expect(&format!("{header}_{how}"), "fields: forbidden");
        }
    }
    expect("late_headers", "x-late: immutable; host: forbidden");
    expect("value_crlf", "fields: invalid-syntax");
    expect("name_crlf", "fields: invalid-syntax");
    expect("authority_crlf", "authority: refused");
    expect("authority_userinfo", "response: HttpRequestDenied");
    expect("path_crlf", "path: refused");
    expect("path_absolute", "path: refused");
    expect("method_crlf", "method: refused");
    expect("content_length_exact", "status 200");
    expect("content_length_computed", "status 200");
    // The body falls short of the length: it is aborted and the request fails.
    expect("content_length_longer_than_body", "response: HttpProtocolError; finish: HttpRequestBodySize(5)");
    // The bytes past the length are refused; the 5 it counts went out as one complete request.
    expect(
        "content_length_shorter_than_body",
        "status 200; write: HttpRequestBodySize(55); finish: HttpRequestBodySize(55)",
    );
    expect("content_length_without_body", "handle: HttpRequestBodySize(0)");
    for name in [
        "content_length_twice",
        "content_length_twice_append",
        "content_length_plus",
        "content_length_list",
        "content_length_negative",
        "content_length_overflow",
    ] {
        expect(name, "fields: invalid-syntax");
    }
    report
}

/// Hop-by-hop and smuggling headers never reach the upstream. The decision: a guest cannot set
/// `Host`, `Transfer-Encoding` or any other hop-by-hop field at all (refused as it builds the
/// request), user info in the URL is refused by the host before connecting (`egress_denied`
/// when the call fails on it), and `Content-Length` passes only when it is the body's exact
/// length. On the wire: every complete request carries exactly one `Host`, the granted
/// authority; no hop-by-hop field but the `Transfer-Encoding: chunked` the host chose for a body
/// without a length; every `Content-Length` counts exactly the body received; nothing injected
/// (no `/smuggled` request, no `evil.example` anywhere). Through the SDK the same headers are
/// `invalid_arguments`.
#[tokio::test]
async fn smuggling_headers_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let env = http_env(&upstream, "max_requests_per_call = 100\n");
    let (client, _log) = env.stdio_client().await;

    let out = call(&client, "hostile_http_smuggle", json!({"url": upstream.url("/api/")})).await;
    let report = out.ok().as_object().expect("a report").clone();
    let expected = expected_smuggle_report();
    for (name, outcome) in &expected {
        assert_eq!(report.get(name), Some(outcome), "attempt {name}: {report:#?}");
    }
    assert_eq!(report.len(), expected.len(), "{report:#?}");

    // What reached the upstream.
    let requests = upstream.requests();
    let mut complete: Vec<&str> = requests.iter().filter(|r| r.complete).map(|r| r.path.as_str()).collect();
    complete.sort_unstable();
    assert_eq!(
        complete,
        [
            "/api/content_length_computed",
            "/api/content_length_exact",
            "/api/content_length_shorter_than_body",
            "/api/control"
        ],
        "{requests:#?}"
    );
    for seen in &requests {
        assert_eq!(seen.header("host"), [upstream.authority()], "{seen:#?}");
        for name in ["connection", "keep-alive", "upgrade", "te", "trailer", "proxy-connection", "proxy-authorization"]
        {
            assert!(seen.header(name).is_empty(), "{name} reached the upstream: {seen:#?}");
        }
        let text = format!("{seen:?}");
        assert!(!text.contains("smuggled") && !text.contains("evil.example"), "{seen:#?}");
        if !seen.complete {
            continue;
        }
        match seen.header("content-length").as_slice() {
            // No length: no body, or the host's own chunked framing.
            [] if seen.body.is_empty() => {
                assert!(seen.header("transfer-encoding").iter().all(|te| *te == "chunked"), "{seen:#?}")
            }
            [] => assert_eq!(seen.header("transfer-encoding"), ["chunked"], "{seen:#?}"),
            [length] => {
                assert_eq!(length.parse::<usize>().ok(), Some(seen.body.len()), "{seen:#?}");
                assert!(seen.header("transfer-encoding").is_empty(), "{seen:#?}");
            }
            more => panic!("{} content-lengths: {seen:#?}", more.len()),
        }
        if seen.method == "POST" {
            assert_eq!(seen.body, b"hello", "{seen:#?}");
        }
    }

    // A call that fails on a refused user-info URL is `egress_denied`, naming the URL without
    // the user info.
    let url = format!("http://evil.example@{}/api/userinfo", upstream.authority());
    let out = call(&client, "hostile_http_fanout", json!({"url": url, "count": 1, "fail_on_denied": true})).await;
    let error = out.expect_error("egress_denied", false);
    assert_eq!(
        message(error),
        format!(
            "outbound request GET {} refused: a URL with user info (user@host) is never sent",
            upstream.url("/api/userinfo")
        )
    );

    // Through the SDK, a forbidden header makes the request invalid: nothing is sent.
    let before = upstream.requests().len();
    for (name, value) in [("Host", "evil.example"), ("Transfer-Encoding", "chunked"), ("TE", "trailers")] {
        let args = json!({"method": "GET", "url": upstream.url("/api/sdk"), "headers": {name: value}});
        let out = call(&client, "reach_request", args).await;
        let error = out.expect_error("invalid_arguments", false);
        assert!(message(error).contains("a header the host forbids"), "{name}: {error}");
    }
    assert_eq!(upstream.requests().len(), before, "no SDK request with a forbidden header was sent");
    assert_echo(&client, "after the smuggling attempts").await;
}

/// A guest that starts 200 GETs before waiting for any gets 8 responses, the per-call cap, and
/// 192 `HttpRequestDenied`; the upstream sees exactly 8, never more than 8 at once. Failing on
/// the refusal makes the call `egress_denied` naming the cap. The budget is per call: four calls
/// at once get 8 each, at most 4 × 8 in flight. demo answers throughout.
#[tokio::test]
async fn many_outbound_requests_at_once_are_capped_per_call() {
    let upstream = Upstream::start().await;
    let env = http_env(&upstream, "max_requests_per_call = 8\n");
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    let slow = upstream.url("/api/slow");

    let out = call(&client, "hostile_http_fanout", json!({"url": slow, "count": 200})).await;
    assert_eq!(out.ok(), &json!({"ok": 8, "denied": 192, "errors": []}), "{}", out.raw);
    assert_eq!(upstream.requests().len(), 8);
    assert!(upstream.peak() <= 8, "{} requests in flight at once", upstream.peak());

    let out = call(&client, "hostile_http_fanout", json!({"url": slow, "count": 50, "fail_on_denied": true})).await;
    let error = out.expect_error("egress_denied", false);
    assert_eq!(
        message(error),
        format!("outbound request GET {slow} refused: this plugin may make at most 8 requests per call")
    );
    assert_eq!(upstream.requests().len(), 16);

    let four = (0..4).map(|_| call(&client, "hostile_http_fanout", json!({"url": slow, "count": 50})));
    let (outcomes, ()) = tokio::join!(futures::future::join_all(four), assert_echo(&client, "during the fan-outs"));
    for out in outcomes {
        assert_eq!(out.ok(), &json!({"ok": 8, "denied": 42, "errors": []}), "{}", out.raw);
    }
    assert_eq!(upstream.requests().len(), 48);
    assert!(upstream.peak() <= 32, "{} requests in flight at once", upstream.peak());
    assert!(upstream.connections.load(Ordering::SeqCst) <= 48, "a refused request connected");
    assert_echo(&client, "after the fan-outs").await;
}

// ---- describe ----------------------------------------------------------------------------------

/// demo's tools.
const DEMO_TOOLS: [&str; 5] = ["demo_add", "demo_divide", "demo_echo", "demo_greet", "demo_work"];

/// Serves demo and the fixture `name` (under `config`), which must be refused at load: `cordon
/// tools` lists demo alone and the refusal of `<name>.wasm`; `cordon serve` logs `plugin refused`
/// naming the file and the reason, lists demo's tools only and answers them. The reason.
async fn refused_at_load(name: &str, config: &str) -> String {
    let file = format!("{name}.wasm");
    let env = Env::demo().plugin(&fixture_wasm(name), &file).config(config);

    let tools = env.tools().await;
    let plugins: Vec<&str> = tools["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(plugins, ["demo"], "{tools:#}");
    let errors = tools["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["file"], file.as_str());
    let reason = errors[0]["error"].as_str().unwrap().to_string();

    let server = env.spawn_http(&[]).await;
    let log = server.log.text();
    let line = log
        .lines()
        .find(|l| l.contains("plugin refused") && l.contains(&file))
        .unwrap_or_else(|| panic!("no refusal of {file} in the log:\n{log}"));
    assert!(line.contains(&reason), "the log line gives the reason {reason:?}: {line}");
    let client = server.client().await;
    let listed = list_tools(&client).await;
    assert_eq!(listed.keys().map(String::as_str).collect::<Vec<_>>(), DEMO_TOOLS);
    assert_echo(&client, &format!("next to the refused {name}")).await;
    reason
}

/// 10,000 tools are refused at load (the cap is 1,000), before any is compiled or listed.
#[tokio::test]
async fn ten_thousand_tools_are_refused_at_load() {
    let reason = refused_at_load("hostile_describe_many", "").await;
    assert_eq!(reason, "the plugin describes 10000 tools; a plugin may describe at most 1000");
}

/// A 10 MB input schema is refused at load (the cap is 1 MiB a schema), before it is compiled.
#[tokio::test]
async fn a_ten_megabyte_schema_is_refused_at_load() {
    let reason = refused_at_load("hostile_describe_huge", "").await;
    let (size, rest) = reason
        .strip_prefix("tool \"huge\" declares an input schema of ")
        .and_then(|r| r.split_once(' '))
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(size.parse::<usize>().is_ok_and(|s| s > 10_000_000), "{reason}");
    assert_eq!(rest, "bytes; a schema may have at most 1048576");
}

/// A `describe` that never returns runs under the plugin's own limits: here its timeout, with
/// fuel to spare. The plugin is refused, naming the timeout, and demo loads and serves.
#[tokio::test]
async fn a_describe_that_spins_is_refused_at_load() {
    let config = "[plugins.hostile_describe_spin.limits]\ntimeout_ms = 1000\nfuel = 1000000000000000\n";
    let reason = refused_at_load("hostile_describe_spin", config).await;
    assert_eq!(reason, "describe failed: the call ran past its 1000 ms timeout");
}

/// Nothing survives a call: a counter in a global is 1 on every call and a mark left in memory
/// is never found by the next one, whether calls come one at a time (the pool reuses the slot)
/// or many at once.
#[tokio::test]
async fn no_state_survives_from_one_call_to_the_next() {
    let env = Env::new().plugin(&fixture_wasm("hostile_output"), "hostile_output.wasm");
    let (client, log) = env.stdio_client().await;
    for _ in 0..5 {
        let out = call(&client, "hostile_output_remember", json!({})).await;
        assert_eq!(out.texts, ["calls=1 mark=0x0"], "{}", log.text());
    }
    let outs = futures::future::join_all((0..20).map(|_| call(&client, "hostile_output_remember", json!({})))).await;
    for out in outs {
        assert_eq!(out.texts, ["calls=1 mark=0x0"]);
    }
}
