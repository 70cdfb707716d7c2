//! `cordon-bench soak` (`make soak`, not in CI): a bounded load run against the real
//! `cordon serve` on loopback, then checks that nothing leaked and no call was lost.
//!
//! For `--seconds`, at once:
//! - **good calls**: `--workers` MCP sessions call `demo_echo` with a distinct text each, paced
//!   to `--rate` calls/s in all; every `--keyed-every`th call carries a distinct idempotency key in
//!   `_meta` (`demo` is configured with `store_read_only`, so those are keyed calls with a durable
//!   claim and outcome). Each session is closed (`DELETE`) and replaced after `--session-calls`.
//! - **hostile calls**: `--hostile-rate` calls/s round the hostile fixture's tools, on one
//!   session; the plugin has a 1 s timeout and a 32 MiB memory cap (its copy `chatty`, for
//!   `chatter`, a 10 s timeout).
//! - **hot reloads**: every `--reload-every` seconds the demo plugin is replaced by an atomic
//!   rename, alternating two copies that differ by a custom section (two digests).
//! - **sampling**: the server's VmRSS, open file descriptors and threads, once a second.
//!
//! Every request is classified: a good call must return its text; a hostile call its typed error
//! (or, for `chatter` and `probe`, their harmless result); `busy`/`rate_limited` are counted
//! apart (allowed: retryable, not lost); anything else (a wrong answer, a JSON-RPC error, an HTTP
//! error, a transport failure or a 30 s stall) is a failure. Afterwards: a sample of the keyed
//! calls is replayed (same result, counted as idempotency hits in `/metrics`); `/metrics` and the
//! audit file (read after a SIGTERM drain) must count exactly the calls the client saw; the RSS
//! and fd medians of the last window must stay within the bounds of the first window after
//! warm-up. The table goes to stdout, everything to `--out` (JSON); any failed check exits 1.
//! BENCHMARKS.md (`## Soak`) describes the method and the bounds.

use crate::load::{self, cut, Http};
use crate::{distinct_copy, machine, round, Series};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

#[derive(Parser)]
pub struct SoakArgs {
    /// The `cordon` binary (a release build for `make soak`).
    #[arg(long, default_value = "target/release/cordon")]
    cordon: PathBuf,
    /// The demo plugin.
    #[arg(long, default_value = "plugins/dist/demo.wasm")]
    demo: PathBuf,
    /// The hostile fixture (tests/plugins/hostile).
    #[arg(long, default_value = "tests/plugins/dist/hostile.wasm")]
    hostile: PathBuf,
    /// How long the load runs.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Where to write the results.
    #[arg(long, default_value = "target/soak.json")]
    out: PathBuf,
    /// Good calls per second, in all.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Sessions making the good calls, each paced to `rate / workers`.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Every Nth good call carries its own idempotency key (0: none).
    #[arg(long, default_value_t = 4)]
    keyed_every: u64,
    /// Hostile calls per second.
    #[arg(long, default_value_t = 2.0)]
    hostile_rate: f64,
    /// Seconds between two replacements of the demo plugin.
    #[arg(long, default_value_t = 5)]
    reload_every: u64,
    /// Good calls per session before it is closed and another opened.
    #[arg(long, default_value_t = 250)]
    session_calls: u64,
    /// Serve stateless JSON instead of sessions.
    #[arg(long)]
    stateless: bool,
    /// Keyed calls replayed at the end.
    #[arg(long, default_value_t = 200)]
    replays: usize,
    /// RSS bound: the last window's median may exceed the first's by this percentage…
    #[arg(long, default_value_t = 20.0)]
    rss_growth_pct: f64,
    /// …plus this many MiB.
    #[arg(long, default_value_t = 16)]
    rss_slack_mib: u64,
    /// Open file descriptors: the last window's median may exceed the first's by this many.
    #[arg(long, default_value_t = 8)]
    fd_slack: u64,
}

/// The server's config: demo's read-only echo keyed when asked (explicit keys only), hostile
/// calls ending fast and never deduplicated (no implicit keys: each runs the guest).
const CONFIG: &str = "\
[plugins.demo.idempotency]
store_read_only = true
implicit_window_s = 0

[plugins.hostile.limits]
timeout_ms = 1000
fuel = 10000000000000
memory_mb = 32

[plugins.hostile.idempotency]
implicit_window_s = 0

[plugins.chatty.limits]
timeout_ms = 10000

[plugins.chatty.idempotency]
implicit_window_s = 0
";

/// The hostile tools called (tool names as published), and what each must end in (`None`: its
/// own harmless result). `chatty` is a second copy of the fixture with a 10 s timeout: `chatter`
/// (4 MiB to stdout and to stderr, 10,000 log lines) must succeed with its output capped, and
/// on a busy machine (or a debug host) it can need more than hostile's 1 s.
const HOSTILE: &[(&str, Option<&str>)] = &[
    ("hostile_spin", Some("timeout")),
    ("hostile_alloc", Some("memory_limit")),
    ("hostile_flood", Some("output_too_large")),
    ("hostile_recurse", Some("plugin_crashed")),
    ("hostile_crash", Some("plugin_crashed")),
    ("chatty_chatter", None),
    ("hostile_probe", None),
];

/// Typed errors that are retryable refusals, not lost calls: counted apart.
const BUSY: &[&str] = &["busy", "rate_limited"];

const PROTOCOL: &str = "2025-06-18";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

// ---- the client -------------------------------------------------------------------------------

/// MCP over Streamable HTTP: sessions (initialize, calls, DELETE) or stateless POSTs.
#[derive(Clone)]
struct Mcp {
    http: Http,
    stateless: bool,
}

/// An open session (`None` when stateless).
struct Session(Option<String>);

impl Session {
    fn headers(&self) -> Vec<(&str, &str)> {
        match &self.0 {
            Some(id) => vec![("mcp-session-id", id.as_str()), ("mcp-protocol-version", PROTOCOL)],
            None => Vec::new(),
        }
    }
}

/// What a `tools/call` came back with.
enum Got {
    /// A result: `isError`, the text blocks, `structuredContent`, the whole result.
    Result { is_error: bool, texts: Vec<String>, structured: Value, raw: Value },
    /// A JSON-RPC error, an HTTP error or a transport failure: the call is lost.
    Lost(String),
}

impl Mcp {
    async fn send(&self, body: Value, session: &Session) -> Result<load::Reply> {
        let body = Bytes::from(body.to_string());
        let headers = session.headers();
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, self.http.post(body, &headers))
            .await
            .context("no answer in 30 s")??;
        Ok(reply)
    }

    async fn open(&self) -> Result<Session> {
        if self.stateless {
            return Ok(Session(None));
        }
        let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "cordon-soak", "version": "1"}}});
        let reply = self.send(initialize, &Session(None)).await?;
        let message = reply.json_rpc(0)?;
        if !reply.status.is_success() || message.get("result").is_none() {
            bail!("initialize: HTTP {}: {message}", reply.status);
        }
        let session = Session(Some(reply.session.context("initialize: no Mcp-Session-Id")?));
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let reply = self.send(initialized, &session).await?;
        if !reply.status.is_success() {
            bail!("notifications/initialized: HTTP {}", reply.status);
        }
        Ok(session)
    }

    async fn close(&self, session: Session) -> Result<()> {
        if session.0.is_none() {
            return Ok(());
        }
        let headers = session.headers();
        let deleted = self.http.send(hyper::Method::DELETE, Bytes::new(), &headers);
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, deleted).await.context("DELETE: no answer in 30 s")??;
        if !reply.status.is_success() {
            bail!("DELETE session: HTTP {}", reply.status);
        }
        Ok(())
    }

    async fn call(&self, session: &Session, id: u64, tool: &str, arguments: Value, key: Option<&str>) -> Got {
        let mut params = json!({"name": tool, "arguments": arguments});
        if let Some(key) = key {
            params["_meta"] = json!({"cordon/idempotency-key": key});
        }
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
        let reply = match self.send(request, session).await {
            Ok(reply) => reply,
            Err(e) => return Got::Lost(format!("{e:#}")),
        };
        if !reply.status.is_success() {
            return Got::Lost(format!("HTTP {}: {}", reply.status, cut(&String::from_utf8_lossy(&reply.body), 300)));
        }
        let message = match reply.json_rpc(id) {
            Ok(message) => message,
            Err(e) => return Got::Lost(format!("{e:#}")),
        };
        let Some(result) = message.get("result") else {
            return Got::Lost(format!("JSON-RPC error: {}", message["error"]));
        };
        let texts = result["content"]
            .as_array()
            .map(|blocks| blocks.iter().filter_map(|b| b["text"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        Got::Result {
            is_error: result["isError"].as_bool().unwrap_or(false),
            texts,
            structured: result.get("structuredContent").cloned().unwrap_or(Value::Null),
            raw: result.clone(),
        }
    }
}

// ---- counting ---------------------------------------------------------------------------------

/// How one request ended, as the soak judges it.
enum Verdict {
    Right,
    Busy,
    Wrong(String),
    Lost(String),
}

/// Every request, by outcome; good-call latencies by when they were sent.
#[derive(Default)]
struct Tally {
    /// (tool, `ok` or the error type) → answered calls: what `/metrics` and the audit must say.
    outcomes: BTreeMap<(String, String), u64>,
    right: u64,
    busy: u64,
    wrong: u64,
    lost: u64,
    /// The first failures, for the report.
    failures: Vec<String>,
    /// (seconds since the start, latency) of each answered good call.
    latencies: Vec<(f64, Duration)>,
    sessions_opened: u64,
    sessions_closed: u64,
}

impl Tally {
    fn record(&mut self, tool: &str, got: &Got, verdict: Verdict) {
        if let Got::Result { is_error, structured, .. } = got {
            let label =
                if *is_error { structured["error"]["type"].as_str().unwrap_or("?").to_string() } else { "ok".into() };
            *self.outcomes.entry((tool.to_string(), label)).or_default() += 1;
        }
        match verdict {
            Verdict::Right => self.right += 1,
            Verdict::Busy => self.busy += 1,
            Verdict::Wrong(why) => {
                self.wrong += 1;
                self.note(format!("{tool}: wrong answer: {why}"));
            }
            Verdict::Lost(why) => {
                self.lost += 1;
                self.note(format!("{tool}: lost: {why}"));
            }
        }
    }

    fn note(&mut self, failure: String) {
        if self.failures.len() < 20 {
            self.failures.push(failure);
        }
    }
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(shared: &Shared<T>) -> std::sync::MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// A typed error the soak allows, or the error type of a failed result.
fn error_type(got: &Got) -> Option<&str> {
    match got {
        Got::Result { is_error: true, structured, .. } => Some(structured["error"]["type"].as_str().unwrap_or("?")),
        _ => None,
    }
}

/// A good call must return its text, as the first text block and as `structuredContent`.
fn judge_echo(got: &Got, text: &str) -> Verdict {
    match got {
        Got::Lost(why) => Verdict::Lost(why.clone()),
        _ if error_type(got).is_some_and(|t| BUSY.contains(&t)) => Verdict::Busy,
        Got::Result { is_error: false, texts, structured, .. }
            if texts.first().map(String::as_str) == Some(text) && structured == &json!({"text": text}) =>
        {
            Verdict::Right
        }
        Got::Result { raw, .. } => Verdict::Wrong(format!("sent {text:?}, got {}", cut(&raw.to_string(), 300))),
    }
}

/// A hostile call must end in its typed error, or in its harmless result.
fn judge_hostile(got: &Got, tool: &str, expected: Option<&str>) -> Verdict {
    let wrong = |raw: &Value| Verdict::Wrong(cut(&raw.to_string(), 300).to_string());
    match (got, expected) {
        (Got::Lost(why), _) => Verdict::Lost(why.clone()),
        _ if error_type(got).is_some_and(|t| BUSY.contains(&t)) => Verdict::Busy,
        (Got::Result { is_error: true, structured, raw, .. }, Some(kind)) => {
            let error = &structured["error"];
            if error["type"] == kind && error["message"].is_string() && error["retryable"].is_boolean() {
                Verdict::Right
            } else {
                wrong(raw)
            }
        }
        (Got::Result { is_error: false, texts, raw, .. }, None) if tool.ends_with("_chatter") => {
            if texts.first().map(String::as_str) == Some("ok") {
                Verdict::Right
            } else {
                wrong(raw)
            }
        }
        (Got::Result { is_error: false, structured, raw, .. }, None) if tool.ends_with("_probe") => {
            let empty = ["env", "files", "read"].iter().all(|k| structured[k] == json!([]));
            let cut_off = ["tcp", "dns"].iter().all(|k| structured[k].as_str().is_some_and(|s| s.starts_with("error")));
            if empty && cut_off {
                Verdict::Right
            } else {
                wrong(raw)
            }
        }
        (Got::Result { raw, .. }, _) => wrong(raw),
    }
}

// ---- the drivers ------------------------------------------------------------------------------

/// A keyed good call that succeeded: replayed at the end.
struct Keyed {
    seq: u64,
    key: String,
    text: String,
    result: Value,
}

struct Plan {
    mcp: Mcp,
    tally: Shared<Tally>,
    started: Instant,
    stop_at: Instant,
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(period);
    // Behind schedule (a slow server), calls go on at the pace, not in a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

async fn open_counted(plan: &Plan) -> Option<Session> {
    match plan.mcp.open().await {
        Ok(session) => {
            lock(&plan.tally).sessions_opened += u64::from(session.0.is_some());
            Some(session)
        }
        Err(e) => {
            let mut tally = lock(&plan.tally);
            tally.lost += 1;
            tally.note(format!("session: lost: {e:#}"));
            None
        }
    }
}

async fn close_counted(plan: &Plan, session: Session) {
    let had = session.0.is_some();
    match plan.mcp.close(session).await {
        Ok(()) => lock(&plan.tally).sessions_closed += u64::from(had),
        Err(e) => {
            let mut tally = lock(&plan.tally);
            tally.lost += 1;
            tally.note(format!("session: lost: {e:#}"));
        }
    }
}

/// One session's share of the good calls.
async fn good_worker(
    plan: Arc<Plan>,
    period: Duration,
    args: Arc<SoakArgs>,
    seq: Arc<AtomicU64>,
    keyed: Shared<Vec<Keyed>>,
) {
    let mut ticker = ticker(period);
    let mut session: Option<Session> = None;
    let mut in_session = 0;
    while Instant::now() < plan.stop_at {
        ticker.tick().await;
        if session.is_none() {
            session = open_counted(&plan).await;
            in_session = 0;
        }
        let Some(open) = &session else { continue };
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let key = (args.keyed_every > 0 && n.is_multiple_of(args.keyed_every)).then(|| format!("soak-key-{n}"));
        let text = format!("soak {n}");
        let sent = Instant::now();
        let got = plan.mcp.call(open, n, "demo_echo", json!({"text": text}), key.as_deref()).await;
        let latency = sent.elapsed();
        let verdict = judge_echo(&got, &text);
        if let (Some(key), Verdict::Right, Got::Result { raw, .. }) = (&key, &verdict, &got) {
            lock(&keyed).push(Keyed { seq: n, key: key.clone(), text: text.clone(), result: raw.clone() });
        }
        {
            let mut tally = lock(&plan.tally);
            if matches!(verdict, Verdict::Right) {
                tally.latencies.push(((sent - plan.started).as_secs_f64(), latency));
            }
            tally.record("demo_echo", &got, verdict);
        }
        in_session += 1;
        if in_session >= args.session_calls {
            if let Some(done) = session.take() {
                close_counted(&plan, done).await;
            }
        }
    }
    if let Some(done) = session {
        close_counted(&plan, done).await;
    }
}

/// Hostile calls at their rate, each in its own task (a spin holds its call for a second), on
/// one session.
async fn hostile_driver(plan: Arc<Plan>, rate: f64, seq: Arc<AtomicU64>) {
    let mut ticker = ticker(Duration::from_secs_f64(1.0 / rate));
    let mut session = None;
    let mut calls = JoinSet::new();
    let mut i = 0usize;
    while Instant::now() < plan.stop_at {
        ticker.tick().await;
        if session.is_none() {
            session = open_counted(&plan).await.map(Arc::new);
        }
        let Some(open) = session.clone() else { continue };
        let (tool, expected) = HOSTILE[i % HOSTILE.len()];
        i += 1;
        let (plan, n) = (plan.clone(), seq.fetch_add(1, Ordering::Relaxed));
        calls.spawn(async move {
            let got = plan.mcp.call(&open, n, tool, json!({}), None).await;
            let verdict = judge_hostile(&got, tool, expected);
            lock(&plan.tally).record(tool, &got, verdict);
        });
    }
    while calls.join_next().await.is_some() {}
    if let Some(open) = session.and_then(Arc::into_inner) {
        close_counted(&plan, open).await;
    }
}

/// Replaces `plugins/demo.wasm` every `every` by writing a temporary file and renaming it over,
/// alternating two copies; returns how many times.
async fn reloader(plan: Arc<Plan>, plugins: PathBuf, copies: [Vec<u8>; 2], every: Duration) -> Result<u64> {
    let mut ticker = ticker(every);
    ticker.tick().await; // the first tick is immediate; the server starts with copy 0
    let mut rewrites = 0u64;
    loop {
        ticker.tick().await;
        if Instant::now() >= plan.stop_at {
            return Ok(rewrites);
        }
        rewrites += 1;
        let temporary = plugins.join(".soak-demo.tmp"); // not *.wasm: the watcher ignores it
        std::fs::write(&temporary, &copies[(rewrites % 2) as usize])?;
        std::fs::rename(&temporary, plugins.join("demo.wasm"))?;
    }
}

/// One sample of the server process.
#[derive(Clone, Copy)]
struct Sample {
    t: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn status_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn sample(pid: u32, t: f64) -> Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("the server is gone")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).context("the server is gone")?.count() as u64;
    Ok(Sample {
        t,
        rss_kib: status_field(&status, "VmRSS:").context("VmRSS")?,
        fds,
        threads: status_field(&status, "Threads:").context("Threads")?,
    })
}

/// Samples once a second until the load stops; an error if the server went away.
async fn sampler(plan: Arc<Plan>, pid: u32) -> Result<Vec<Sample>> {
    let mut ticker = ticker(Duration::from_secs(1));
    let mut samples = Vec::new();
    while Instant::now() < plan.stop_at {
        ticker.tick().await;
        samples.push(sample(pid, plan.started.elapsed().as_secs_f64())?);
    }
    Ok(samples)
}

/// What the server logged on stderr, by kind.
#[derive(Default)]
struct LogTally {
    reloads: u64,
    reloads_refusing: u64,
    reload_failures: u64,
    audit_drops: u64,
    warnings: u64,
    errors: u64,
    examples: Vec<String>,
}

impl LogTally {
    fn line(&mut self, line: &str) {
        if line.contains("plugins folder reloaded") {
            self.reloads += 1;
            if !line.contains("refused=0") {
                self.reloads_refusing += 1;
            }
        }
        if line.contains("reload failed") {
            self.reload_failures += 1;
        }
        if line.contains("audit lines are being dropped") {
            self.audit_drops += 1;
        }
        let level = line.split_whitespace().nth(1).unwrap_or("");
        if level == "WARN" || level == "ERROR" {
            if level == "WARN" {
                self.warnings += 1;
            } else {
                self.errors += 1;
            }
            // One example per message (the part after the timestamp, level and target).
            let message = line.splitn(4, ' ').nth(3).unwrap_or(line);
            let message = cut(message, 200);
            if self.examples.len() < 10 && !self.examples.iter().any(|e| e == message) {
                self.examples.push(message.to_string());
            }
        }
    }
}

// ---- the checks after the run -----------------------------------------------------------------

/// `/metrics` samples: name{labels} → value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series.to_string(), value.parse().ok()?)))
        .collect()
}

/// `cordon_calls_total` by (tool, outcome).
fn metric_calls(metrics: &BTreeMap<String, f64>) -> BTreeMap<(String, String), u64> {
    let mut calls = BTreeMap::new();
    for (series, value) in metrics {
        let Some(labels) = series.strip_prefix("cordon_calls_total{").and_then(|s| s.strip_suffix('}')) else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|kv| kv.strip_prefix(&format!("{name}=\""))?.strip_suffix('"').map(String::from))
        };
        if let (Some(tool), Some(outcome)) = (label("tool"), label("outcome")) {
            calls.insert((tool, outcome), *value as u64);
        }
    }
    calls
}

fn idempotency_metric(metrics: &BTreeMap<String, f64>, result: &str) -> u64 {
    metrics.get(&format!("cordon_idempotency_total{{result=\"{result}\"}}")).copied().unwrap_or(0.0) as u64
}

async fn scrape(metrics: &Http) -> Result<BTreeMap<String, f64>> {
    let reply = tokio::time::timeout(REQUEST_TIMEOUT, metrics.send(hyper::Method::GET, Bytes::new(), &[]))
        .await
        .context("/metrics: no answer")??;
    if !reply.status.is_success() {
        bail!("/metrics: HTTP {}", reply.status);
    }
    Ok(parse_metrics(std::str::from_utf8(&reply.body)?))
}

/// The audit files (`audit.jsonl` and its rotations), read after the server stopped.
#[derive(Default)]
struct Audit {
    calls: BTreeMap<(String, String), u64>,
    idempotency: BTreeMap<String, u64>,
    /// demo_echo's plugin digests in the order the calls finished.
    digests: Vec<String>,
    unreadable: u64,
}

fn read_audit(data: &Path) -> Result<Audit> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("audit.jsonl")))
        .collect();
    // Oldest first: audit.jsonl.N … .1, then audit.jsonl.
    files.sort_by_key(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        std::cmp::Reverse(name.rsplit_once('.').and_then(|(_, n)| n.parse::<u64>().ok()).unwrap_or(0))
    });
    let mut audit = Audit::default();
    for file in files {
        for line in std::fs::read_to_string(&file)?.lines() {
            let Ok(record) = serde_json::from_str::<Value>(line) else {
                audit.unreadable += 1;
                continue;
            };
            let tool = record["tool"].as_str().unwrap_or("?").to_string();
            let outcome = match record["outcome"].as_str() {
                Some("ok") => "ok".to_string(),
                _ => record["error_type"].as_str().unwrap_or("?").to_string(),
            };
            *audit.calls.entry((tool.clone(), outcome)).or_default() += 1;
            let idempotency = record["idempotency"].as_str().unwrap_or("none").to_string();
            *audit.idempotency.entry(idempotency).or_default() += 1;
            if tool == "demo_echo" {
                audit.digests.push(record["plugin_digest"].as_str().unwrap_or("").to_string());
            }
        }
    }
    Ok(audit)
}

/// Differences between two call counts, for a message.
fn differences(expected: &BTreeMap<(String, String), u64>, found: &BTreeMap<(String, String), u64>) -> Vec<String> {
    let mut keys: Vec<_> = expected.keys().chain(found.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (a, b) = (expected.get(k).copied().unwrap_or(0), found.get(k).copied().unwrap_or(0));
            (a != b).then(|| format!("{} {}: client {a}, server {b}", k.0, k.1))
        })
        .collect()
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied().filter(|_| !values.is_empty())
}

/// Theil–Sen slope of RSS over time (the median of the slopes between every two samples), KiB
/// per minute: robust to the short peaks of hostile calls (`alloc` holds up to 32 MiB).
fn slope_kib_per_min(samples: &[Sample]) -> f64 {
    let mut slopes = Vec::new();
    for (i, a) in samples.iter().enumerate() {
        for b in &samples[i + 1..] {
            if b.t > a.t {
                slopes.push((b.rss_kib as f64 - a.rss_kib as f64) / (b.t - a.t) * 60.0);
            }
        }
    }
    slopes.sort_by(f64::total_cmp);
    slopes.get(slopes.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Check {
    name: String,
    pass: bool,
    detail: String,
}

fn check(checks: &mut Vec<Check>, name: &str, pass: bool, detail: String) {
    checks.push(Check { name: name.to_string(), pass, detail });
}

// ---- the run ----------------------------------------------------------------------------------

pub async fn soak(args: SoakArgs) -> Result<()> {
    let cordon = args.cordon.canonicalize().with_context(|| format!("{} (cargo build)", args.cordon.display()))?;
    let demo = std::fs::read(&args.demo).with_context(|| format!("{} (make plugins)", args.demo.display()))?;
    let hostile = std::fs::read(&args.hostile).with_context(|| format!("{} (make plugins)", args.hostile.display()))?;
    if args.workers == 0 || args.rate <= 0.0 || args.hostile_rate <= 0.0 || args.seconds < 6 {
        bail!("--workers, --rate and --hostile-rate must be positive and --seconds at least 6");
    }
    let dir = tempfile::tempdir()?;
    let (plugins, data) = (dir.path().join("plugins"), dir.path().join("data"));
    std::fs::create_dir_all(&plugins)?;
    let copies = [distinct_copy(&demo, "cordon-soak-a"), distinct_copy(&demo, "cordon-soak-b")];
    std::fs::write(plugins.join("demo.wasm"), &copies[0])?;
    std::fs::write(plugins.join("hostile.wasm"), &hostile)?;
    std::fs::write(plugins.join("chatty.wasm"), &hostile)?;
    let config = dir.path().join("cordon.toml");
    std::fs::write(&config, CONFIG)?;

    let log = Arc::new(Mutex::new(LogTally::default()));
    let mut extra = vec!["--config", config.to_str().context("temp path")?];
    if args.stateless {
        extra.push("--stateless");
    }
    let sink = log.clone();
    let mut server =
        load::spawn_cordon_http_with(&cordon, &plugins, &data, &extra, move |line| lock(&sink).line(line)).await?;
    let pid = server.pid().context("the server exited")?;
    let mcp = Mcp { http: Http::new(&server.url)?, stateless: args.stateless };
    let metrics_http = Http::new(&server.url.replace("/mcp", "/metrics"))?;
    eprintln!(
        "soak: {} s against {} (pid {pid}, {}): {} good calls/s over {} sessions, {} hostile calls/s, a reload every {} s",
        args.seconds,
        server.url,
        if args.stateless { "stateless" } else { "sessions" },
        args.rate,
        args.workers,
        args.hostile_rate,
        args.reload_every
    );

    // The load.
    let args = Arc::new(args);
    let started = Instant::now();
    let plan = Arc::new(Plan {
        mcp: mcp.clone(),
        tally: Arc::new(Mutex::new(Tally::default())),
        started,
        stop_at: started + Duration::from_secs(args.seconds),
    });
    let seq = Arc::new(AtomicU64::new(1));
    let keyed = Arc::new(Mutex::new(Vec::new()));
    let period = Duration::from_secs_f64(args.workers as f64 / args.rate);
    let mut workers = JoinSet::new();
    for _ in 0..args.workers {
        workers.spawn(good_worker(plan.clone(), period, args.clone(), seq.clone(), keyed.clone()));
    }
    let hostile_task = tokio::spawn(hostile_driver(plan.clone(), args.hostile_rate, seq.clone()));
    let reload_task =
        tokio::spawn(reloader(plan.clone(), plugins.clone(), copies, Duration::from_secs(args.reload_every.max(1))));
    let sampled = sampler(plan.clone(), pid).await;
    while let Some(done) = workers.join_next().await {
        done?;
    }
    hostile_task.await?;
    let rewrites = reload_task.await??;
    let elapsed = started.elapsed().as_secs_f64();
    let peak_rss_kib = server.peak_rss_kib();
    eprintln!("soak: load done after {elapsed:.0} s; replaying keyed calls");
    let mut checks = Vec::new();
    let samples = match sampled {
        Ok(samples) => samples,
        Err(e) => {
            check(&mut checks, "server stayed up", false, format!("{e:#}"));
            Vec::new()
        }
    };

    // Replays: a sample of the keyed calls, spread over the run, must come back as stored,
    // without running the guest (idempotency hits).
    let before = scrape(&metrics_http).await?;
    let mut keyed = std::mem::take(&mut *lock(&keyed));
    keyed.sort_by_key(|k| k.seq);
    let step = (keyed.len() / args.replays.max(1)).max(1);
    let sample_keys: Vec<&Keyed> = keyed.iter().step_by(step).take(args.replays).collect();
    let mut replay_mismatches = 0u64;
    if let Some(session) = open_counted(&plan).await {
        for (i, k) in sample_keys.iter().enumerate() {
            let id = 1_000_000_000 + i as u64;
            let got = mcp.call(&session, id, "demo_echo", json!({"text": k.text}), Some(&k.key)).await;
            let verdict = match &got {
                Got::Result { raw, .. } if raw == &k.result => Verdict::Right,
                Got::Result { raw, .. } => {
                    replay_mismatches += 1;
                    Verdict::Wrong(format!("replay of {} differs: {}", k.key, cut(&raw.to_string(), 200)))
                }
                Got::Lost(why) => Verdict::Lost(why.clone()),
            };
            lock(&plan.tally).record("demo_echo", &got, verdict);
        }
        close_counted(&plan, session).await;
    }
    let after = scrape(&metrics_http).await?;
    let hits = idempotency_metric(&after, "hit").saturating_sub(idempotency_metric(&before, "hit"));

    // Stop (SIGTERM: the drain, which also flushes the audit file), then read the audit.
    let exit = server.terminate(Duration::from_secs(45)).await?;
    let audit = read_audit(&data)?;
    let tally = std::mem::take(&mut *lock(&plan.tally));
    let log = std::mem::take(&mut *lock(&log));

    // The checks.
    let answered: u64 = tally.outcomes.values().sum();
    check(
        &mut checks,
        "no call lost",
        tally.lost == 0,
        format!("{} requests lost (transport, HTTP or JSON-RPC errors, 30 s stalls)", tally.lost),
    );
    check(&mut checks, "every answer right", tally.wrong == 0, format!("{} wrong answers", tally.wrong));
    let metric_diff = differences(&tally.outcomes, &metric_calls(&after));
    check(
        &mut checks,
        "/metrics counts every call",
        metric_diff.is_empty(),
        if metric_diff.is_empty() { format!("{answered} calls by tool and outcome") } else { metric_diff.join("; ") },
    );
    let audit_diff = differences(&tally.outcomes, &audit.calls);
    check(
        &mut checks,
        "the audit file has every call",
        audit_diff.is_empty() && audit.unreadable == 0 && log.audit_drops == 0,
        if audit_diff.is_empty() {
            format!("{answered} lines; {} unreadable; {} drop warnings", audit.unreadable, log.audit_drops)
        } else {
            audit_diff.join("; ")
        },
    );
    let keyed_calls = keyed.len() as u64;
    let misses = audit.idempotency.get("miss").copied().unwrap_or(0);
    let audit_hits = audit.idempotency.get("hit").copied().unwrap_or(0);
    check(
        &mut checks,
        "keyed calls stored once, replays are hits",
        replay_mismatches == 0
            && hits == sample_keys.len() as u64
            && audit_hits == sample_keys.len() as u64
            && misses == keyed_calls,
        format!(
            "{keyed_calls} keyed calls, {misses} audited as miss; {} replayed: {hits} hits in /metrics, {audit_hits} in the audit, {replay_mismatches} different",
            sample_keys.len()
        ),
    );
    let switches = audit.digests.windows(2).filter(|w| w[0] != w[1]).count();
    let digests: std::collections::BTreeSet<&String> = audit.digests.iter().collect();
    check(
        &mut checks,
        "every reload applied",
        log.reloads >= rewrites && log.reload_failures == 0 && log.reloads_refusing == 0 && (rewrites == 0 || digests.len() == 2),
        format!(
            "{rewrites} rewrites, {} reloads logged ({} refusing a file, {} failed); calls saw {} digests, {switches} switches",
            log.reloads,
            log.reloads_refusing,
            log.reload_failures,
            digests.len()
        ),
    );
    check(&mut checks, "graceful stop (SIGTERM → exit 0)", exit == Some(0), format!("exit code {exit:?}"));

    // RSS and fds: the median of the last window against the first window after warm-up.
    let warm = (args.seconds as f64 / 6.0).min(30.0);
    let window = ((args.seconds as f64 - warm) / 3.0).min(60.0);
    let end = args.seconds as f64;
    let first: Vec<Sample> = samples.iter().copied().filter(|s| s.t >= warm && s.t < warm + window).collect();
    let last: Vec<Sample> = samples.iter().copied().filter(|s| s.t >= end - window).collect();
    let med = |set: &[Sample], f: fn(&Sample) -> u64| median(set.iter().map(f).collect());
    let (rss0, rss1) = (med(&first, |s| s.rss_kib), med(&last, |s| s.rss_kib));
    let (fd0, fd1) = (med(&first, |s| s.fds), med(&last, |s| s.fds));
    let (th0, th1) = (med(&first, |s| s.threads), med(&last, |s| s.threads));
    // Reported, not judged: how RSS moved over the second half (past any warm-up ramp).
    let second_half: Vec<Sample> = samples.iter().copied().filter(|s| s.t >= end / 2.0).collect();
    let slope = slope_kib_per_min(&second_half);
    let rss_bound = rss0.map(|r| (r as f64 * (1.0 + args.rss_growth_pct / 100.0)) as u64 + args.rss_slack_mib * 1024);
    let rss_flat = matches!((rss1, rss_bound), (Some(r), Some(b)) if r <= b);
    check(
        &mut checks,
        "RSS flat",
        rss_flat,
        format!(
            "median {} → {} MiB (bound {} MiB = +{}% + {} MiB); second-half slope {:.0} KiB/min",
            mib(rss0),
            mib(rss1),
            mib(rss_bound),
            args.rss_growth_pct,
            args.rss_slack_mib,
            slope
        ),
    );
    let fd_flat = matches!((fd0, fd1), (Some(a), Some(b)) if b <= a + args.fd_slack);
    check(
        &mut checks,
        "open fds flat",
        fd_flat,
        format!("median {} → {} (bound +{})", opt(fd0), opt(fd1), args.fd_slack),
    );

    // Latency of good calls, first window against last (reported, not judged).
    let window_latency = |from: f64, to: f64| {
        Series::new(tally.latencies.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, d)| *d).collect())
    };
    let (lat0, lat1) = (window_latency(warm, warm + window), window_latency(end - window, end + 1.0));

    let count = |tool_prefix: &str| -> u64 {
        tally.outcomes.iter().filter(|((t, _), _)| t.starts_with(tool_prefix)).map(|(_, n)| n).sum()
    };
    // Good calls during the load: the replays afterwards are demo_echo calls too.
    let good = count("demo_").saturating_sub(sample_keys.len() as u64);
    let hostile_calls = count("hostile_") + count("chatty_");

    // The report.
    let mut table: Vec<(String, String)> = vec![
        (
            "duration".into(),
            format!("{elapsed:.0} s of load ({} s asked), warm-up {warm:.0} s, windows of {window:.0} s", args.seconds),
        ),
        (
            "good calls (demo_echo)".into(),
            format!("{good} ({:.0}/s), {keyed_calls} of them keyed and stored", good as f64 / elapsed),
        ),
        ("hostile calls".into(), format!("{hostile_calls} ({:.1}/s)", hostile_calls as f64 / elapsed)),
        ("keyed calls replayed afterwards".into(), sample_keys.len().to_string()),
        (
            "right / busy / wrong / lost".into(),
            format!("{} / {} / {} / {}", tally.right, tally.busy, tally.wrong, tally.lost),
        ),
        ("sessions opened / closed".into(), format!("{} / {}", tally.sessions_opened, tally.sessions_closed)),
        ("hot reloads (file rewrites)".into(), rewrites.to_string()),
        ("good-call latency, first window".into(), format!("median {:.0} µs, p99 {:.0} µs", lat0.median(), lat0.p99())),
        ("good-call latency, last window".into(), format!("median {:.0} µs, p99 {:.0} µs", lat1.median(), lat1.p99())),
        (
            "RSS median first → last window".into(),
            format!("{} → {} MiB (peak {} MiB)", mib(rss0), mib(rss1), mib(peak_rss_kib)),
        ),
        ("open fds median first → last window".into(), format!("{} → {}", opt(fd0), opt(fd1))),
        ("threads median first → last window".into(), format!("{} → {}", opt(th0), opt(th1))),
        ("server log warnings / errors".into(), format!("{} / {}", log.warnings, log.errors)),
    ];
    for ((tool, outcome), n) in &tally.outcomes {
        table.push((format!("  {tool} → {outcome}"), n.to_string()));
    }
    println!("\n{:<42} result", "soak");
    println!("{}", "-".repeat(100));
    for (what, value) in &table {
        println!("{what:<42} {value}");
    }
    println!();
    for c in &checks {
        println!("{:<42} {} — {}", c.name, if c.pass { "ok" } else { "FAILED" }, c.detail);
    }
    for failure in &tally.failures {
        println!("  failure: {failure}");
    }
    for example in &log.examples {
        println!("  server log: {example}");
    }

    let outcomes: Vec<Value> = tally
        .outcomes
        .iter()
        .map(|((tool, outcome), n)| json!({"tool": tool, "outcome": outcome, "calls": n}))
        .collect();
    let results = json!({
        "seconds": args.seconds,
        "elapsed_s": round(elapsed),
        "mode": if args.stateless { "stateless" } else { "sessions" },
        "settings": {
            "rate": args.rate, "workers": args.workers, "keyed_every": args.keyed_every,
            "hostile_rate": args.hostile_rate, "reload_every_s": args.reload_every,
            "session_calls": args.session_calls, "replays": args.replays, "config": CONFIG,
        },
        "bounds": {"rss_growth_pct": args.rss_growth_pct, "rss_slack_mib": args.rss_slack_mib, "fd_slack": args.fd_slack},
        "calls": {
            "good": good, "keyed": keyed_calls, "replayed": sample_keys.len(), "hostile": hostile_calls, "right": tally.right, "busy": tally.busy,
            "wrong": tally.wrong, "lost": tally.lost, "by_outcome": outcomes, "failures": tally.failures,
        },
        "sessions": {"opened": tally.sessions_opened, "closed": tally.sessions_closed},
        "replays": {"sampled": sample_keys.len(), "metric_hits": hits, "audit_hits": audit_hits, "mismatches": replay_mismatches},
        "reloads": {"rewrites": rewrites, "logged": log.reloads, "refusing": log.reloads_refusing,
                    "failed": log.reload_failures, "digests_seen": digests.len(), "switches_seen": switches},
        "audit": {"idempotency": audit.idempotency, "unreadable": audit.unreadable},
        "latency": {"first_window": lat0.json(), "last_window": lat1.json()},
        "process": {
            "warm_up_s": round(warm), "window_s": round(window),
            "rss_kib": {"first": rss0, "last": rss1, "bound": rss_bound, "peak": peak_rss_kib, "slope_kib_per_min": round(slope)},
            "fds": {"first": fd0, "last": fd1},
            "threads": {"first": th0, "last": th1},
            "samples": samples.iter().map(|s| json!([round(s.t), s.rss_kib, s.fds, s.threads])).collect::<Vec<_>>(),
            "samples_columns": ["t_s", "rss_kib", "fds", "threads"],
        },
        "server_log": {"warnings": log.warnings, "errors": log.errors, "examples": log.examples},
        "exit_code": exit,
        "checks": checks.iter().map(|c| json!({"check": c.name, "pass": c.pass, "detail": c.detail})).collect::<Vec<_>>(),
        "machine": machine(),
    });
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)?;
    println!("\nresults: {}", args.out.display());
    let failed: Vec<&str> = checks.iter().filter(|c| !c.pass).map(|c| c.name.as_str()).collect();
    if !failed.is_empty() {
        bail!("soak failed: {}", failed.join(", "));
    }
    Ok(())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn opt(value: Option<u64>) -> String {
    value.map_or("?".into(), |v| v.to_string())
}
