//! The hostile corpus: guests that attack the host through their results, their
//! memory, their outbound requests and their `describe`, each against the real binary. Every
//! case ends in a typed error or a clear refusal, and a well-behaved plugin (demo) keeps
//! answering correctly, during and after each storm. The last part holds inputs shaped around
//! the limits (SECURITY.md): a list bomb, a component of many memories, resource-table and
//! header bombs, body bombs from a scoped token, forged log lines, refused arguments.
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

/// The most resident memory a process has had (KiB): what a burst of allocations leaves behind
/// even once it is freed.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"))
}

/// The peak resident memory of `pid` grew by less than `mib` MiB from `before_kib`.
fn assert_peak_below(what: &str, pid: u32, before_kib: u64, mib: u64) {
    let after = peak_rss_kib(pid);
    eprintln!("{what}: peak {before_kib} → {after} KiB");
    assert!(
        after <= before_kib + mib * KIB_PER_MIB,
        "{what}: peak resident memory grew from {before_kib} to {after} KiB (allowed: {mib} MiB)"
    );
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

/// A guest that fills its linear memory to within a page of its 16 MiB cap on every call
/// succeeds every time (255 pages, each written; its tables take a few KiB of the same budget);
/// the whole cap in linear memory alone is `memory_limit`. After 400 full calls the
/// host holds no more than after a warm-up of 100, give or take the slots the pooling allocator
/// decommits in batches of 32 (bound: 32 × 16 MiB + 64 MiB, 16 descriptors), and demo answers
/// next to every batch.
#[tokio::test]
async fn filling_memory_to_the_cap_on_every_call_is_allowed_and_leaves_nothing_behind() {
    let env = Env::demo().plugin(&fixture_wasm("hostile_output"), "hostile_output.wasm").config(FILL_LIMITS);
    let mut server = env.spawn_http(&[]).await;
    let client = server.client().await;

    let over = call(&client, "hostile_output_fill", json!({"mib": 16})).await;
    let error = over.expect_error("memory_limit", false);
    assert!(message(error).contains("16 MiB"), "{error}");

    let full = |out: &Outcome| {
        assert!(!out.is_error, "{}", out.raw);
        assert_eq!(out.texts, ["255 pages"], "{}", out.raw);
    };
    let fill = json!({"mib": 15, "extra_pages": 15});
    storm(&client, "hostile_output_fill", fill.clone(), 100, 8, full).await;
    let before = footprint(server.pid());
    storm(&client, "hostile_output_fill", fill, 400, 8, full).await;
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

/// A 10 MB input schema is refused at load, before it is compiled: more than a `describe` may
/// hand over at all (8 MiB), refused before the host copies it (a schema under that bound but
/// over 1 MiB is refused by the per-schema cap, `registry::check_description_size`).
#[tokio::test]
async fn a_ten_megabyte_schema_is_refused_at_load() {
    let reason = refused_at_load("hostile_describe_huge", "").await;
    assert_eq!(reason, "describe failed: the plugin handed the host more than 8388608 bytes at once");
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

// ---- inputs shaped around the limits ----------------------------------------------------------

/// A plain component (calc) whose `bytes(n)` returns a `list<u8>` of `n` elements. The host lifts
/// a plain result as one `Val` per element, checked against its lift budget (four times
/// `max_output_bytes`) before anything is copied: 16 calls at once returning 3 MiB each are
/// `output_too_large` and the host's peak memory stays near the guests' own (before, it grew by
/// 300 MB: a `Val`, then a JSON value per byte, then two serializations); 8 MiB, which
/// wasmtime's own copy limit used to stop as a crash, is `output_too_large` too; a list that fits
/// is served.
#[tokio::test]
async fn a_list_bomb_is_refused_before_the_host_expands_it() {
    let config =
        "[plugins.calc.limits]\nqueue_timeout_ms = 60000\n\n[plugins.calc.idempotency]\nimplicit_window_s = 0\n";
    let env = Env::demo().plugin(&fixture_wasm("calc"), "calc.wasm").config(config);
    let mut server = env.spawn_http(&[]).await;
    let client = server.client().await;

    let fits = call(&client, "calc_ops_bytes", json!({"n": 50_000})).await;
    let list = fits.ok()["result"].as_array().unwrap_or_else(|| panic!("{}", fits.raw));
    assert_eq!((list.len(), &list[300]), (50_000, &json!(300 % 251)));

    let too_large = |out: &Outcome| {
        let error = out.expect_error("output_too_large", false);
        assert!(message(error).contains("at once"), "{error}");
    };
    storm(&client, "calc_ops_bytes", json!({"n": 1 << 20}), 4, 4, too_large).await;
    let before = peak_rss_kib(server.pid());
    storm(&client, "calc_ops_bytes", json!({"n": 3 << 20}), 32, 16, too_large).await;
    // The guests' own 3 MiB lists are resident in their pooled memories; nothing else may be.
    assert_peak_below("16 × 3 MiB lists at once", server.pid(), before, 160);
    too_large(&call(&client, "calc_ops_bytes", json!({"n": 8 << 20})).await);
    assert!(server.is_running(), "the server died; stderr:\n{}", server.log.text());
    assert_echo(&client, "after the list bombs").await;
}

/// A component of `instances` core instances, each with a linear memory of 40 pages (2.5 MiB),
/// exporting `run() -> u32` (7) as a plain function.
fn many_memories(instances: usize) -> Vec<u8> {
    let instantiate: String = (0..instances).map(|i| format!("(core instance $i{i} (instantiate $m))\n")).collect();
    let wat = format!(
        "(component
           (core module $m
             (memory (export \"memory\") 40)
             (func (export \"run\") (result i32) i32.const 7))
           {instantiate}
           (func $run (result u32) (canon lift (core func $i0 \"run\")))
           (export \"run\" (func $run)))"
    );
    wat::parse_str(&wat).expect("the many-memories fixture assembles")
}

/// The memory cap is one budget for every linear memory (and table) of an instance: under a
/// 16 MiB cap, four 2.5 MiB memories run, twelve (30 MiB in all, each under the cap) are
/// `memory_limit` instead of getting the cap twelve times.
#[tokio::test]
async fn a_component_of_many_memories_gets_the_cap_once() {
    let config = "[defaults]\nmemory_mb = 16\n";
    let env = Env::demo()
        .plugin_bytes("fourmem.wasm", &many_memories(4))
        .plugin_bytes("manymem.wasm", &many_memories(12))
        .config(config);
    let (client, _log) = env.stdio_client().await;
    assert_eq!(call(&client, "fourmem_run", json!({})).await.ok()["result"], 7);
    let error = call(&client, "manymem_run", json!({})).await;
    let error = error.expect_error("memory_limit", false);
    assert!(message(error).contains("16 MiB"), "{error}");
    assert_echo(&client, "after many memories").await;
}

/// Host resources are bounded per instance (`max_resources`, default 1,000): holding 100,000
/// pollables is `memory_limit` naming the bound, and 3,000 header maps of 12 KB each are stopped
/// the same way long before the host holds 36 MB of them. One header map holds at most
/// `max_header_bytes` (16 KiB): 40 KiB in one is `memory_limit` too.
#[tokio::test]
async fn resource_and_header_bombs_are_bounded() {
    let config = "[plugins.hostile_http.idempotency]\nimplicit_window_s = 0\n";
    let env = Env::demo().plugin(&fixture_wasm("hostile_http"), "hostile_http.wasm").config(config);
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;

    let table = call(&client, "hostile_http_table_bomb", json!({"count": 100_000})).await;
    let error = table.expect_error("memory_limit", false);
    assert!(message(error).contains("1000 host resources"), "{error}");
    assert_eq!(call(&client, "hostile_http_table_bomb", json!({"count": 500})).await.ok()["held"], 500);

    let fits = call(&client, "hostile_http_fields_bomb", json!({"count": 1, "appends": 3, "value_bytes": 4000})).await;
    assert_eq!(fits.ok()["appended_bytes"], 12_000, "{}", fits.raw);
    let big = call(&client, "hostile_http_fields_bomb", json!({"count": 1, "appends": 10, "value_bytes": 4096})).await;
    let error = big.expect_error("memory_limit", false);
    assert!(message(error).contains("header map of more than 16384 bytes"), "{error}");

    let before = peak_rss_kib(server.pid());
    let many =
        call(&client, "hostile_http_fields_bomb", json!({"count": 3000, "appends": 3, "value_bytes": 4000})).await;
    many.expect_error("memory_limit", false);
    assert_peak_below("3,000 header maps", server.pid(), before, 32);
    assert_echo(&client, "after the resource bombs").await;
}

/// A guest's log text keeps to its one line of the host's log: a newline, a carriage return and
/// a terminal escape in it are written as escapes, so it cannot forge a line of the host's.
#[tokio::test]
async fn guest_log_text_cannot_forge_host_log_lines() {
    let env = Env::demo_and_hostile("");
    let (client, log) = env.stdio_client().await;
    let forged = "first\n2099-01-01T00:00:00.000000Z  WARN cordon_host::auth: FORGED token accepted\r\x1b[2J";
    let out = call(&client, "hostile_forge_log", json!({"text": forged})).await;
    assert_eq!(out.texts, ["logged"], "{}", out.raw);
    let text = log.wait_for("FORGED").await;
    for line in text.lines().filter(|l| l.contains("FORGED")) {
        assert!(line.contains("first\\n2099"), "a forged line of its own: {line:?}");
    }
    assert!(!text.contains('\x1b') && !text.contains('\r'), "raw control characters reached the log: {text:?}");
}

/// A raw HTTP/1.1 POST to `/mcp` of `server` with `headers`, then `chunks` chunks of 1 MiB of
/// `0,` (a JSON array that never ends), written while the answer is read; the status line and
/// headers the server sent before it closed, or "" if the connection was reset first.
async fn raw_post(server: &HttpServer, headers: &str, chunks: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = server.base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await.expect("connect to the server");
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n{headers}\r\n"
    );
    let writer = tokio::spawn(async move {
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = format!("{:x}\r\n[{}\r\n", (1 << 20) + 1, "0,".repeat(1 << 19));
        for _ in 0..chunks {
            if write.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
        // Keep the connection open until the server is done with it.
        std::future::pending::<()>().await;
    });
    let answer = guard("the server's answer", async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await;
    writer.abort();
    answer
}

/// A token scoped to `demo_*` makes the host read a POST's body to check which tools it calls.
/// That read is bounded by `max_request_bytes` (4 MiB) before the host holds the bytes, and the
/// check skips everything but method and tool names instead of building a JSON tree: eight
/// 64 MiB bodies at once — four that declare their length (413 before a byte is read), four
/// chunked (413 once 4 MiB arrived, or the connection cut) — leave the server's peak memory
/// near where it was (before, it grew by 3 GB). A scoped caller's body that is not JSON gets
/// a JSON-RPC parse error, 400.
#[tokio::test]
async fn body_bombs_from_a_scoped_token_are_refused_before_they_are_held() {
    let config = format!(
        "[[auth.tokens]]\nprincipal = \"alice\"\nsha256 = \"{}\"\ntools = [\"demo_*\"]\n",
        sha256_hex(token("alice").as_bytes())
    );
    let env = Env::demo().config(&config);
    let server = env.spawn_http_with(&[], &["--stateless"]).await;
    let bearer = format!("Authorization: Bearer {}\r\n", token("alice"));
    let alice = server.client_as(&token("alice")).await;
    assert_echo(&alice, "before the body bombs").await;

    let before = peak_rss_kib(server.pid());
    let declared = format!("{bearer}Content-Length: {}\r\n", 64 << 20);
    let chunked = format!("{bearer}Transfer-Encoding: chunked\r\n");
    let bombs = (0..8).map(|i| {
        let (headers, chunks) = if i % 2 == 0 { (declared.clone(), 0) } else { (chunked.clone(), 64) };
        let server = &server;
        async move { (i, raw_post(server, &headers, chunks).await) }
    });
    for (i, answer) in futures::future::join_all(bombs).await {
        if i % 2 == 0 {
            assert!(answer.starts_with("HTTP/1.1 413"), "declared 64 MiB: {answer:?}");
        } else {
            assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 413"), "chunked 64 MiB: {answer:?}");
        }
    }
    assert_peak_below("eight 64 MiB bodies", server.pid(), before, 96);

    let response = post(&server.url, "{not json", &[("authorization", &format!("Bearer {}", token("alice")))]).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("a JSON-RPC error");
    assert_eq!(body["error"]["code"], -32700, "{body}");
    assert_echo(&alice, "after the body bombs").await;
}

/// Arguments refused as `input_too_large` are not queued for the audit writer: their line
/// carries the hash (taken on the refused call's own path) and, even with `log_arguments`, never
/// the values, so a caller cannot fill the writer's queue with megabytes per refused call.
#[tokio::test]
async fn refused_arguments_are_hashed_not_queued_for_the_audit() {
    let env = Env::demo().config("[audit]\nlog_arguments = true\n\n[plugins.demo.limits]\nmax_input_bytes = 1024\n");
    let (client, _log) = env.stdio_client().await;
    let big = "x".repeat(64 << 10);
    call(&client, "demo_echo", json!({"text": big})).await.expect_error("input_too_large", false);
    assert_echo(&client, "small enough").await;
    let records = env.audit_records(2).await;
    let refused = records.iter().find(|r| r["error_type"] == "input_too_large").expect("the refused call's line");
    assert_eq!(refused["arguments_sha256"].as_str().map(str::len), Some(64), "{refused}");
    assert!(refused.get("arguments").is_none(), "the refused values were logged: {}", refused.to_string().len());
    let echoed = records.iter().find(|r| r["outcome"] == "ok").expect("the echo's line");
    assert_eq!(echoed["arguments"], json!({"text": "small enough"}), "{echoed}");
}
