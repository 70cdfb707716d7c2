//! The load generators: a newline JSON-RPC client over a child's pipes, and a hyper HTTP client;
//! and starting the servers they drive.

use crate::{round, Counts, Series};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const CALL: &str = r#"{"name":"demo_echo","arguments":{"text":"hello"}}"#;

fn call_line(id: usize) -> String {
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{CALL}}}\n")
}

/// Whether a JSON-RPC response is an error, or a tool result marked `isError`.
fn failed(message: &Value) -> bool {
    message.get("error").is_some() || message["result"]["isError"] == json!(true)
}

/// Peak resident set of a process, KiB (`VmHWM`).
fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---- stdio ------------------------------------------------------------------------------------

/// One server over stdio: latencies one call at a time, and calls/s with 8 in flight.
pub struct StdioResult {
    pub sequential: Series,
    pub pipelined_per_s: f64,
    pub peak_rss_kib: Option<u64>,
}

impl StdioResult {
    pub fn json(&self) -> Value {
        json!({
            "sequential": self.sequential.json(),
            "pipelined_8_calls_per_s": round(self.pipelined_per_s),
            "peak_rss_kib": self.peak_rss_kib,
        })
    }
}

/// A newline JSON-RPC client on a child's pipes, initialized, with the next request id.
pub struct StdioClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: usize,
    samples: Vec<Duration>,
    pipelined: (usize, Duration),
}

impl StdioClient {
    /// Spawns `command` with piped stdio and completes the MCP handshake.
    pub async fn start(mut command: Command) -> Result<StdioClient> {
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true).spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        let lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "cordon-bench", "version": "1"}}});
        stdin.write_all(format!("{initialize}\n").as_bytes()).await?;
        let mut client = StdioClient {
            child,
            stdin: Some(stdin),
            lines,
            next_id: 1,
            samples: Vec::new(),
            pipelined: (0, Duration::ZERO),
        };
        client.read_response(0).await?;
        client.stdin()?.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n").await?;
        Ok(client)
    }

    fn stdin(&mut self) -> Result<&mut ChildStdin> {
        self.stdin.as_mut().context("stdin is closed")
    }

    /// Reads responses until the one with `id`; notifications and others are skipped.
    async fn read_response(&mut self, id: usize) -> Result<Value> {
        loop {
            let line = self.lines.next_line().await?.context("the server closed stdout")?;
            let message: Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
            if message["id"] == json!(id) {
                if failed(&message) {
                    bail!("call {id} failed: {line}");
                }
                return Ok(message);
            }
        }
    }

    /// `calls` calls one at a time; their latencies are kept unless `warmup`.
    pub async fn sequential(&mut self, calls: usize, warmup: bool) -> Result<()> {
        for _ in 0..calls {
            let id = self.next_id;
            self.next_id += 1;
            let started = Instant::now();
            self.stdin()?.write_all(call_line(id).as_bytes()).await?;
            self.read_response(id).await?;
            if !warmup {
                self.samples.push(started.elapsed());
            }
        }
        Ok(())
    }

    /// `calls` calls with 8 in flight: a writer keeps 8 requests outstanding, the reader releases
    /// a slot per answer. Adds to the pipelined count and time.
    pub async fn pipelined(&mut self, calls: usize) -> Result<()> {
        let first = self.next_id;
        self.next_id += calls;
        let slots = Arc::new(tokio::sync::Semaphore::new(8));
        let writer_slots = slots.clone();
        let mut stdin = self.stdin.take().context("stdin is closed")?;
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            for id in first..first + calls {
                writer_slots.acquire().await?.forget();
                stdin.write_all(call_line(id).as_bytes()).await?;
            }
            anyhow::Ok(stdin)
        });
        let mut answered = 0;
        while answered < calls {
            let line = self.lines.next_line().await?.context("the server closed stdout")?;
            let message: Value = serde_json::from_str(&line)?;
            if message["id"].as_u64().is_some_and(|id| id as usize >= first) {
                if failed(&message) {
                    bail!("a pipelined call failed: {line}");
                }
                answered += 1;
                slots.add_permits(1);
            }
        }
        let elapsed = started.elapsed();
        self.stdin = Some(writer.await??);
        self.pipelined.0 += calls;
        self.pipelined.1 += elapsed;
        Ok(())
    }

    /// Closes stdin, waits for the server to exit, and returns what was measured.
    pub async fn finish(mut self) -> Result<StdioResult> {
        let peak_rss_kib = peak_rss_kib(self.child.id());
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            self.child.kill().await.ok();
        }
        let (calls, elapsed) = self.pipelined;
        let pipelined_per_s = if calls == 0 { 0.0 } else { calls as f64 / elapsed.as_secs_f64() };
        Ok(StdioResult { sequential: Series::new(self.samples), pipelined_per_s, peak_rss_kib })
    }
}

/// `program args…` speaking MCP over stdio.
pub fn stdio_command(program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    command
}

/// `cordon serve --stdio` with the demo plugin and a fresh data directory (kept while the
/// returned directory lives).
pub fn stdio_cordon_command(cordon: &Path, plugin: &Path) -> Result<(Command, tempfile::TempDir)> {
    let (dir, plugins) = crate::demo_dir(plugin)?;
    let mut command = Command::new(cordon);
    command.arg("serve").arg("--stdio").arg("--plugins").arg(&plugins).arg("--data").arg(dir.path().join("data"));
    Ok((command, dir))
}

/// Drives every server alike, in `rounds` alternating blocks (each round in a rotated order), so
/// that the machine's slow and fast phases fall on all of them: `counts.stdio_sequential` calls
/// one at a time and `counts.stdio_pipelined` with 8 in flight per server, after a warm-up.
pub async fn stdio_interleaved(commands: Vec<Command>, counts: &Counts, rounds: usize) -> Result<Vec<StdioResult>> {
    let mut clients = Vec::new();
    for command in commands {
        let mut client = StdioClient::start(command).await?;
        client.sequential((counts.stdio_sequential / 10).max(1), true).await?;
        clients.push(client);
    }
    let rounds = rounds.max(1);
    let n = clients.len();
    for round in 0..rounds {
        for i in 0..n {
            clients[(round + i) % n].sequential(counts.stdio_sequential / rounds, false).await?;
        }
    }
    for round in 0..rounds {
        for i in 0..n {
            clients[(round + i) % n].pipelined(counts.stdio_pipelined / rounds).await?;
        }
    }
    let mut results = Vec::new();
    for client in clients {
        results.push(client.finish().await?);
    }
    Ok(results)
}

// ---- HTTP -------------------------------------------------------------------------------------

/// A server on loopback, killed when stopped or dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    pub async fn stop(&mut self) {
        self.child.kill().await.ok();
    }

    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.child.id())
    }

    /// CPU time (user + system) the process has used so far, seconds: `/proc/PID/stat`, in
    /// clock ticks of 1/100 s (Linux's `USER_HZ` on every architecture it runs Cordon on).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()?)).ok()?;
        // The command name may hold spaces: fields are counted after its closing parenthesis.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        Some((ticks(11)? + ticks(12)?) / 100.0)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM (the graceful drain), then the exit code, waiting at most `wait`; killed if it is
    /// still running by then (`None`).
    pub async fn terminate(&mut self, wait: Duration) -> Result<Option<i32>> {
        let pid = self.child.id().context("the server is not running")?;
        let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed");
        }
        match tokio::time::timeout(wait, self.child.wait()).await {
            Ok(status) => Ok(status?.code()),
            Err(_) => {
                self.stop().await;
                Ok(None)
            }
        }
    }
}

/// Starts `command` (which prints `url=…` on stderr once listening) and keeps its stderr drained,
/// handing each later line to `on_line`.
async fn spawn_listening(mut command: Command, mut on_line: impl FnMut(&str) + Send + 'static) -> Result<Server> {
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn()?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let url = tokio::time::timeout(Duration::from_secs(600), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.split_whitespace().find_map(|w| w.strip_prefix("url=")) {
                return anyhow::Ok(url.trim_matches('"').to_string());
            }
        }
        bail!("the server exited before listening")
    })
    .await
    .context("the server did not start listening")??;
    // Keep reading, so the server never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            on_line(&line);
        }
    });
    Ok(Server { child, url })
}

/// `cordon serve` on a free loopback port with `plugins` and `data`.
pub async fn spawn_cordon_http(cordon: &Path, plugins: &Path, data: &Path, extra: &[&str]) -> Result<Server> {
    spawn_cordon_http_with(cordon, plugins, data, extra, |_| {}).await
}

/// [`spawn_cordon_http`], handing each line the server logs after its listening line to `on_line`.
pub async fn spawn_cordon_http_with(
    cordon: &Path,
    plugins: &Path,
    data: &Path,
    extra: &[&str],
    on_line: impl FnMut(&str) + Send + 'static,
) -> Result<Server> {
    let mut command = Command::new(cordon);
    command
        .arg("serve")
        .arg("--plugins")
        .arg(plugins)
        .arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--allow-unauthenticated"])
        .args(extra);
    spawn_listening(command, on_line).await
}

/// A hyper client (kept-alive connections) for one URL.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
}

/// One HTTP answer, its body read to the end.
pub struct Reply {
    pub status: hyper::StatusCode,
    /// The `Mcp-Session-Id` header, when the server opened a session.
    pub session: Option<String>,
    pub body: Bytes,
}

impl Reply {
    /// The JSON-RPC response with `id`: the body itself (JSON), or the SSE event carrying it.
    pub fn json_rpc(&self, id: u64) -> Result<Value> {
        let text = std::str::from_utf8(&self.body).context("the body is not UTF-8")?;
        if let Ok(message) = serde_json::from_str::<Value>(text) {
            return Ok(message);
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|m| m["id"] == json!(id))
            .with_context(|| format!("no JSON-RPC response with id {id} in: {}", cut(text, 300)))
    }
}

/// At most `max` bytes of `text` (on a character boundary), for messages.
pub fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Http {
    pub fn new(url: &str) -> Result<Http> {
        // No Nagle on the client either: a request is one write, but the load generator must not
        // be what stalls (the servers set TCP_NODELAY too).
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(Http { client: Client::builder(TokioExecutor::new()).build(connector), uri: url.parse()? })
    }

    /// `method` with `body` (JSON) and extra `headers`; the whole answer.
    pub async fn send(&self, method: hyper::Method, body: Bytes, headers: &[(&str, &str)]) -> Result<Reply> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(self.uri.clone())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.client.request(request.body(Full::new(body))?).await?;
        let status = response.status();
        let session = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(String::from);
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply { status, session, body })
    }

    pub async fn post(&self, body: Bytes, headers: &[(&str, &str)]) -> Result<Reply> {
        self.send(hyper::Method::POST, body, headers).await
    }
}

/// Calls/s and latencies of one HTTP run.
pub struct HttpResult {
    pub per_s: f64,
    pub latency: Series,
    pub peak_rss_kib: Option<u64>,
}

impl HttpResult {
    pub fn json(&self) -> Value {
        json!({"calls_per_s": round(self.per_s), "latency": self.latency.json(), "peak_rss_kib": self.peak_rss_kib})
    }
}

/// One `tools/call demo_echo` POST; fails unless the call succeeded.
async fn post_call(http: &Http, body: &Bytes) -> Result<()> {
    let reply = http.post(body.clone(), &[]).await?;
    if !reply.status.is_success() || reply.body.windows(13).any(|w| w == b"\"isError\":true") {
        bail!("HTTP {}: {}", reply.status, String::from_utf8_lossy(&reply.body));
    }
    Ok(())
}

fn call_body() -> Bytes {
    Bytes::from(format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{CALL}}}"))
}

/// `requests` calls one after another, unmeasured (connections opened, caches warm).
async fn warm_up_http(http: &Http, requests: usize) -> Result<()> {
    let body = call_body();
    for _ in 0..requests {
        post_call(http, &body).await?;
    }
    Ok(())
}

/// `requests` calls, `concurrency` at a time: the wall time and each call's latency.
async fn http_block(http: &Http, concurrency: usize, requests: usize) -> Result<(Duration, Vec<Duration>)> {
    let body = call_body();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, http, body) = (next.clone(), http.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let t = Instant::now();
                post_call(&http, &body).await?;
                samples.push(t.elapsed());
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::with_capacity(requests);
    for worker in workers {
        samples.extend(worker.await??);
    }
    Ok((started.elapsed(), samples))
}

/// `requests` tools/call POSTs, `concurrency` at a time, each on a kept-alive connection, after a
/// warm-up: calls/s and latencies.
pub async fn drive_http(url: &str, concurrency: usize, requests: usize) -> Result<(f64, Series)> {
    let http = Http::new(url)?;
    warm_up_http(&http, (requests / 20).max(concurrency)).await?;
    let (elapsed, samples) = http_block(&http, concurrency, requests).await?;
    Ok((requests as f64 / elapsed.as_secs_f64(), Series::new(samples)))
}

/// The servers at `urls` driven alike: `requests` calls each at `concurrency`, in `rounds`
/// alternating blocks (each round in a rotated order), after a warm-up; calls/s and latencies per
/// server, in the order of `urls`.
pub async fn http_interleaved(
    urls: &[String],
    concurrency: usize,
    requests: usize,
    rounds: usize,
) -> Result<Vec<(f64, Series)>> {
    let rounds = rounds.max(1);
    let mut clients = Vec::new();
    for url in urls {
        let http = Http::new(url)?;
        warm_up_http(&http, (requests / 20).max(concurrency)).await?;
        clients.push((http, Duration::ZERO, Vec::with_capacity(requests)));
    }
    let n = clients.len();
    let per_block = (requests / rounds).max(1);
    for round in 0..rounds {
        for i in 0..n {
            let (http, elapsed, samples) = &mut clients[(round + i) % n];
            let (took, block) = http_block(http, concurrency, per_block).await?;
            *elapsed += took;
            samples.extend(block);
        }
    }
    Ok(clients
        .into_iter()
        .map(|(_, elapsed, samples)| (samples.len() as f64 / elapsed.as_secs_f64(), Series::new(samples)))
        .collect())
}

/// The native echo server (`cordon-bench echo-server --listen`), `extra` adding `--wasm PLUGIN`
/// for the floor.
pub async fn spawn_echo_http(me: &Path, extra: &[&str]) -> Result<Server> {
    let mut command = Command::new(me);
    command.args(["echo-server", "--listen", "127.0.0.1:0"]).args(extra);
    spawn_listening(command, |_| {}).await
}
