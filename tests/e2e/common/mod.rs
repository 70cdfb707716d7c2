//! Shared helpers: a throwaway environment (plugins, data, config) per test, the real `cordon`
//! binary started in it, and MCP clients (rmcp) over stdio and Streamable HTTP.
//!
//! Nothing here measures time: waits have generous hang guards that only turn a hung host into a
//! failure instead of a stuck test run.

#![allow(dead_code)] // each test binary uses a different subset

pub mod payments;
pub mod postgres;
pub mod registry;

use rmcp::model::CallToolRequestParams;
use rmcp::service::{RunningService, Service, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Map, Value};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};

/// An rmcp client connected to a cordon server (stdio or HTTP).
pub type Client = RunningService<RoleClient, ()>;

/// The log filter of every `cordon serve` the tests start, unless a test sets its own: the
/// default `info`, rmcp's lifecycle lines off, and the per-call `tool call` line on.
pub const SERVE_LOG: &str = "info,rmcp=warn,cordon_host::call=debug";

/// Longest wait for anything; only a hung host reaches it.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

/// Variables that would change what `cordon` does behind the test's back.
const CORDON_ENV: &[&str] =
    &["CORDON_PLUGINS", "CORDON_DATA", "CORDON_CONFIG", "CORDON_LISTEN", "CORDON_STATELESS", "CORDON_LOG", "RUST_LOG"];

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `cordon` binary under test: `$CORDON_BIN` or `<workspace>/target/debug/cordon`.
pub fn cordon_bin() -> PathBuf {
    let path =
        std::env::var_os("CORDON_BIN").map(PathBuf::from).unwrap_or_else(|| workspace().join("target/debug/cordon"));
    assert!(
        path.is_file(),
        "{} not found: build it first: cargo build -p cordon (make test does this)",
        path.display()
    );
    path
}

fn dist(path: PathBuf) -> PathBuf {
    assert!(path.is_file(), "{} not found: run make plugins", path.display());
    path
}

/// `plugins/dist/demo.wasm`.
pub fn demo_wasm() -> PathBuf {
    dist(workspace().join("plugins/dist/demo.wasm"))
}

/// An example plugin: `plugins/dist/<name>.wasm` (demo, httpbin, payments).
pub fn example_wasm(name: &str) -> PathBuf {
    dist(workspace().join(format!("plugins/dist/{name}.wasm")))
}

/// A test fixture: `tests/plugins/dist/<name>.wasm` (hostile, badimport, badname, twins).
pub fn fixture_wasm(name: &str) -> PathBuf {
    dist(workspace().join(format!("tests/plugins/dist/{name}.wasm")))
}

/// Makes ring this test process's rustls provider, once. reqwest is built with
/// `rustls-no-provider` (for the HTTPS tests, without aws-lc-rs, as the host does) and refuses to
/// build a client before a provider is installed; every test starts with an [`Env`], which calls
/// this.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A temp dir holding `plugins/`, `data/` and maybe `cordon.toml`; removed on drop.
pub struct Env {
    dir: TempDir,
    /// Extra environment variables for every command (see [`Env::var`]).
    vars: Vec<(String, String)>,
    /// A PostgreSQL server the config points at, kept as long as the environment.
    postgres: Option<postgres::Postgres>,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// An empty environment.
    pub fn new() -> Self {
        install_crypto_provider();
        let dir = tempfile::Builder::new().prefix("cordon-e2e-").tempdir().expect("create temp dir");
        std::fs::create_dir(dir.path().join("plugins")).expect("create plugins/");
        std::fs::create_dir(dir.path().join("data")).expect("create data/");
        Self { dir, vars: Vec::new(), postgres: None }
    }

    /// An environment serving demo.wasm.
    pub fn demo() -> Self {
        Self::new().plugin(&demo_wasm(), "demo.wasm")
    }

    /// An environment serving demo.wasm and hostile.wasm under `config`.
    ///
    /// Implicit idempotency keys are off for hostile: its tests need identical concurrent calls
    /// (two `spin {}`) to run twice, not to share one execution.
    pub fn demo_and_hostile(config: &str) -> Self {
        let config = format!("{config}\n[plugins.hostile.idempotency]\nimplicit_window_s = 0\n");
        Self::demo().plugin(&fixture_wasm("hostile"), "hostile.wasm").config(&config)
    }

    /// Copies `src` into `plugins/` as `file_name`.
    pub fn plugin(self, src: &Path, file_name: &str) -> Self {
        std::fs::copy(src, self.plugins_dir().join(file_name))
            .unwrap_or_else(|e| panic!("copy {} as {file_name}: {e}", src.display()));
        self
    }

    /// Writes `bytes` into `plugins/` as `file_name`.
    pub fn plugin_bytes(self, file_name: &str, bytes: &[u8]) -> Self {
        std::fs::write(self.plugins_dir().join(file_name), bytes).expect("write plugin file");
        self
    }

    /// Writes `cordon.toml`; every command then gets `--config` (an empty text leaves no file).
    pub fn config(self, toml: &str) -> Self {
        if !toml.is_empty() {
            std::fs::write(self.config_path(), toml).expect("write cordon.toml");
        }
        self
    }

    /// [`Env::config`], plus the store under test: with `CORDON_E2E_STORE=postgres` a
    /// PostgreSQL server of this environment's own (`[store] url`, a one-second lease), else the
    /// default SQLite. `make test` runs the idempotency suite both ways.
    pub fn config_with_test_store(mut self, toml: &str) -> Self {
        let mut toml = toml.to_string();
        if std::env::var("CORDON_E2E_STORE").is_ok_and(|store| store == "postgres") {
            let pg = postgres::Postgres::start();
            let url = pg.database("cordon");
            toml.push_str(&format!("\n[store]\nurl = \"{url}\"\nlease_s = 1\n"));
            self.postgres = Some(pg);
        }
        self.config(&toml)
    }

    /// Sets `name=value` in the environment of every `cordon` this environment starts (after the
    /// clean-up of `CORDON_*`, so it may set `CORDON_LOG`).
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.path().join("plugins")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("cordon.toml")
    }

    /// `cordon <args> --plugins .. --data .. [--config ..]`, run in the temp dir with a clean
    /// environment.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(cordon_bin());
        cmd.args(args).arg("--plugins").arg(self.plugins_dir()).arg("--data").arg(self.data_dir());
        if self.config_path().exists() {
            cmd.arg("--config").arg(self.config_path());
        }
        for var in CORDON_ENV {
            cmd.env_remove(var);
        }
        if args.first() == Some(&"serve") {
            // Servers log each call's `tool call` line (`debug` since it is off by default): the
            // tests wait for it and read the outcome and idempotency use from it. A test's own
            // `CORDON_LOG` (below) replaces this.
            cmd.env("CORDON_LOG", SERVE_LOG);
        }
        cmd.envs(self.vars.iter().map(|(name, value)| (name, value)));
        cmd.current_dir(self.path()).stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs a one-shot command (`tools`, `call`) to completion.
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn cordon");
        guard("cordon to exit", child.wait_with_output()).await.expect("wait for cordon")
    }

    /// `cordon tools`, which must succeed, as JSON.
    pub async fn tools(&self) -> Value {
        let out = self.run(&["tools"]).await;
        assert_eq!(out.status.code(), Some(0), "cordon tools: {}", describe(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("cordon tools printed no JSON ({e}): {}", describe(&out)))
    }

    /// `cordon serve --listen 127.0.0.1:0 --allow-unauthenticated <extra>`, once it is listening.
    pub async fn spawn_http(&self, extra: &[&str]) -> HttpServer {
        self.spawn_http_with(&["--allow-unauthenticated"], extra).await
    }

    /// `cordon serve --listen 127.0.0.1:0 <auth> <extra>`, once it is listening.
    pub async fn spawn_http_with(&self, auth: &[&str], extra: &[&str]) -> HttpServer {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(auth);
        args.extend_from_slice(extra);
        spawn_http_command(self.command(&args)).await
    }

    /// `cordon <args>` as [`Env::command`], but with the data directory on a tmpfs of
    /// `size_kib` KiB of its own, in a user and mount namespace (no privileges needed): a disk
    /// the test can fill or make read-only with [`in_mount_namespace`].
    pub fn command_on_small_disk(&self, args: &[&str], size_kib: u32) -> tokio::process::Command {
        self.command_on_tmpfs(args, size_kib, false)
    }

    /// [`Env::command_on_small_disk`] with the disk mounted read-only (and empty) before
    /// `cordon` starts.
    pub fn command_on_read_only_disk(&self, args: &[&str]) -> tokio::process::Command {
        self.command_on_tmpfs(args, 1024, true)
    }

    fn command_on_tmpfs(&self, args: &[&str], size_kib: u32, read_only: bool) -> tokio::process::Command {
        std::fs::create_dir_all(self.data_dir()).expect("create the data dir");
        let remount = if read_only { " && mount -o remount,ro \"$0\"" } else { "" };
        let inner = self.command(args);
        let inner = inner.as_std();
        let mut cmd = tokio::process::Command::new("unshare");
        cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(format!("mount -t tmpfs -o size={size_kib}k cordon-data \"$0\"{remount} && shift && exec \"$@\""))
            .arg(self.data_dir())
            .arg("--")
            .arg(inner.get_program())
            .args(inner.get_args());
        for (name, value) in inner.get_envs() {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        cmd.current_dir(self.path()).stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }
}

/// Whether this machine lets an unprivileged process mount a tmpfs of its own (user and mount
/// namespaces, `unshare`), which the disk tests need. Where it does not, they say so on stderr
/// and check nothing: the kernel or container forbids the setup, not Cordon.
pub fn private_tmpfs_available() -> bool {
    let probe = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k probe /tmp"])
        .output();
    let available = probe.as_ref().is_ok_and(|out| out.status.success());
    if !available {
        eprintln!("SKIPPED: no private tmpfs here (unshare --user --mount failed: {probe:?})");
    }
    available
}

/// Runs `script` with `sh` in the user and mount namespaces of process `pid` (one started by
/// [`Env::command_on_small_disk`]), where its data disk is mounted; panics if it fails.
pub fn in_mount_namespace(pid: u32, script: &str) -> String {
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-U", "-m", "--preserve-credentials", "sh", "-c", script])
        .output()
        .expect("run nsenter");
    assert!(out.status.success(), "{script}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Spawns a `cordon serve --listen ...` command and waits until it is listening.
pub async fn spawn_http_command(mut cmd: tokio::process::Command) -> HttpServer {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cordon serve");
    let log = Log::default();
    let stderr = child.stderr.take().expect("piped stderr");
    let url = guard("cordon serve to print its URL", log.collect_until(stderr, "url=")).await;
    let Some(line) = url else {
        let status = child.wait().await;
        panic!("cordon serve exited ({status:?}) before listening; stderr:\n{}", log.text());
    };
    let url =
        line.split_whitespace().find_map(|w| w.strip_prefix("url=")).expect("url= in the listening line").to_string();
    let base = url.strip_suffix("/mcp").expect("URL ends in /mcp").to_string();
    HttpServer { child, url, base, log }
}

impl Env {
    /// `cordon serve --stdio` with an rmcp client on its stdin/stdout; stderr is collected.
    pub async fn stdio_client(&self) -> (Client, Log) {
        self.stdio_client_with(()).await
    }

    /// [`Env::stdio_client`] whose client runs `handler` (to collect notifications, say).
    pub async fn stdio_client_with<H: ClientHandler>(&self, handler: H) -> (RunningService<RoleClient, H>, Log) {
        let cmd = self.command(&["serve", "--stdio"]);
        let (transport, stderr) =
            TokioChildProcess::builder(cmd).stderr(Stdio::piped()).spawn().expect("spawn cordon serve --stdio");
        let log = Log::default();
        log.collect(stderr.expect("piped stderr"));
        let client = guard("MCP initialize over stdio", handler.serve(transport))
            .await
            .unwrap_or_else(|e| panic!("MCP initialize over stdio: {e}; stderr:\n{}", log.text()));
        (client, log)
    }
}

/// A running `cordon serve --listen`; killed on drop.
pub struct HttpServer {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Everything the server wrote to stderr so far.
    pub log: Log,
}

impl HttpServer {
    /// An rmcp client over Streamable HTTP (allowing many requests in flight).
    pub async fn client(&self) -> Client {
        self.try_client(None)
            .await
            .unwrap_or_else(|e| panic!("MCP initialize over HTTP: {e}; stderr:\n{}", self.log.text()))
    }

    /// [`HttpServer::client`] whose client runs `handler` (to collect notifications, say).
    pub async fn client_with<H: ClientHandler>(&self, handler: H) -> RunningService<RoleClient, H> {
        install_crypto_provider();
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.clone()).max_concurrent_requests(64);
        let transport = StreamableHttpClientTransport::from_config(config);
        guard("MCP initialize over HTTP", handler.serve(transport))
            .await
            .unwrap_or_else(|e| panic!("MCP initialize over HTTP: {e}; stderr:\n{}", self.log.text()))
    }

    /// An rmcp client sending `Authorization: Bearer <token>` with every request.
    pub async fn client_as(&self, token: &str) -> Client {
        self.try_client(Some(token))
            .await
            .unwrap_or_else(|e| panic!("MCP initialize over HTTP with a token: {e}; stderr:\n{}", self.log.text()))
    }

    /// An rmcp client of `url` (a path of this server), sending no `Authorization` header.
    pub async fn client_at(&self, url: &str) -> Client {
        install_crypto_provider();
        let config = StreamableHttpClientTransportConfig::with_uri(url.to_string()).max_concurrent_requests(64);
        let transport = StreamableHttpClientTransport::from_config(config);
        guard("MCP initialize over HTTP", ().serve(transport))
            .await
            .unwrap_or_else(|e| panic!("MCP initialize at {url}: {e}; stderr:\n{}", self.log.text()))
    }

    /// Connects an rmcp client (with a bearer token, if given); `Err` when `initialize` fails.
    pub async fn try_client(&self, token: Option<&str>) -> Result<Client, rmcp::service::ClientInitializeError> {
        self.try_client_with(token, &[]).await
    }

    /// An rmcp client sending `headers` (e.g. `Idempotency-Key`) with every request.
    pub async fn client_with_headers(&self, headers: &[(&str, &str)]) -> Client {
        self.try_client_with(None, headers)
            .await
            .unwrap_or_else(|e| panic!("MCP initialize over HTTP with headers: {e}; stderr:\n{}", self.log.text()))
    }

    /// Connects an rmcp client with a bearer token, if given, and extra headers on every request.
    pub async fn try_client_with(
        &self,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Client, rmcp::service::ClientInitializeError> {
        install_crypto_provider();
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.url.clone()).max_concurrent_requests(64);
        if let Some(token) = token {
            config = config.auth_header(token);
        }
        if !headers.is_empty() {
            let headers = headers
                .iter()
                .map(|(name, value)| {
                    let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
                    (name, reqwest::header::HeaderValue::from_str(value).expect("a header value"))
                })
                .collect();
            config = config.custom_headers(headers);
        }
        let transport = StreamableHttpClientTransport::from_config(config);
        guard("MCP initialize over HTTP", ().serve(transport)).await
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the server and waits for it to go.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// Sends `signal` (`TERM`, `INT`, `HUP`, ...) to the server.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Waits for the server to exit on its own; its exit status.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        guard("cordon serve to exit", self.child.wait()).await.expect("wait for cordon serve")
    }
}

/// `kill -s SIGNAL PID`, which must succeed.
pub fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").args(["-s", signal, &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill -s {signal} {pid}: {status}");
}

/// A GET of `url` (on a fresh connection each time: a draining server closes idle ones).
pub async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    install_crypto_provider();
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    guard("HTTP response", request.send()).await.expect("HTTP request")
}

/// A child's stderr, collected line by line in the background.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    /// Everything collected so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until a line containing `marker` has been collected; returns that line.
    pub async fn wait_for(&self, marker: &str) -> String {
        guard(&format!("{marker:?} in the log"), async {
            loop {
                if let Some(line) = self.text().lines().find(|l| l.contains(marker)) {
                    return line.to_string();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }

    /// Collects every line of `stream` in the background.
    pub fn collect<R>(&self, stream: R)
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        self.collect_lines(BufReader::new(stream).lines());
    }

    fn collect_lines<R>(&self, mut lines: Lines<BufReader<R>>)
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let log = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                log.push(&line);
            }
        });
    }

    /// Collects lines until one contains `marker` (returned), then keeps collecting in the
    /// background. `None` when the stream ends first.
    async fn collect_until<R>(&self, stream: R, marker: &str) -> Option<String>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            self.push(&line);
            if line.contains(marker) {
                self.collect_lines(lines);
                return Some(line);
            }
        }
        None
    }

    fn push(&self, line: &str) {
        let mut text = self.0.lock().unwrap_or_else(|p| p.into_inner());
        text.push_str(line);
        text.push('\n');
    }
}

/// Awaits `fut`, failing the test if the host never answers.
pub async fn guard<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, fut)
        .await
        .unwrap_or_else(|_| panic!("hang guard: no {what} within {HANG_GUARD:?}"))
}

/// A tool result, as on the wire.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub is_error: bool,
    /// The text of every content block.
    pub texts: Vec<String>,
    pub structured: Option<Value>,
    /// The whole `CallToolResult`.
    pub raw: Value,
}

impl Outcome {
    /// Reads a `CallToolResult` in its JSON wire form.
    pub fn from_wire(raw: &Value) -> Self {
        let texts = raw["content"]
            .as_array()
            .unwrap_or_else(|| panic!("result without content: {raw}"))
            .iter()
            .map(|block| {
                assert_eq!(block["type"], "text", "non-text content: {raw}");
                block["text"].as_str().expect("text block").to_string()
            })
            .collect();
        Self {
            is_error: raw["isError"].as_bool().unwrap_or(false),
            texts,
            structured: raw.get("structuredContent").cloned(),
            raw: raw.clone(),
        }
    }

    /// The structured result of a successful call.
    pub fn ok(&self) -> &Value {
        assert!(!self.is_error, "expected success, got {}", self.raw);
        self.structured.as_ref().unwrap_or_else(|| panic!("no structuredContent: {}", self.raw))
    }

    /// The `error` object of a failed call, after checking that the text and the structured
    /// content carry the same `{"error": ...}` body.
    pub fn error(&self) -> &Value {
        assert!(self.is_error, "expected a tool error, got {}", self.raw);
        let structured =
            self.structured.as_ref().unwrap_or_else(|| panic!("error without structuredContent: {}", self.raw));
        let text: Value = serde_json::from_str(self.texts.first().expect("error text"))
            .unwrap_or_else(|e| panic!("error text is not JSON ({e}): {}", self.raw));
        assert_eq!(&text, structured, "error text and structuredContent differ");
        let error = &structured["error"];
        assert!(error["message"].is_string(), "error without message: {error}");
        assert!(error["retryable"].is_boolean(), "error without retryable: {error}");
        error
    }

    /// Asserts a failed call of `kind` with the given retryability, and returns its error.
    pub fn expect_error(&self, kind: &str, retryable: bool) -> &Value {
        let error = self.error();
        assert_eq!(error["type"], kind, "wrong error type: {error}");
        assert_eq!(error["retryable"], retryable, "wrong retryable: {error}");
        error
    }
}

/// A JSON object from a `json!` value.
pub fn object(args: Value) -> Map<String, Value> {
    match args {
        Value::Object(map) => map,
        other => panic!("arguments must be an object, not {other}"),
    }
}

/// Calls `tool`; `Err` is a JSON-RPC (protocol) error.
pub async fn try_call<S: Service<RoleClient>>(
    client: &RunningService<RoleClient, S>,
    tool: &str,
    args: Value,
) -> Result<Outcome, ServiceError> {
    let params = CallToolRequestParams::new(tool.to_string()).with_arguments(object(args));
    let result = guard(&format!("answer to {tool}"), client.call_tool(params)).await?;
    Ok(Outcome::from_wire(&serde_json::to_value(&result).expect("serialize CallToolResult")))
}

/// Calls `tool`, which must produce a tool result (success or tool error).
pub async fn call<S: Service<RoleClient>>(client: &RunningService<RoleClient, S>, tool: &str, args: Value) -> Outcome {
    try_call(client, tool, args).await.unwrap_or_else(|e| panic!("{tool}: JSON-RPC error instead of a result: {e}"))
}

/// Calls `tool` with `params._meta` set to `meta` (a JSON object), which must produce a tool
/// result.
pub async fn call_with_meta<S: Service<RoleClient>>(
    client: &RunningService<RoleClient, S>,
    tool: &str,
    args: Value,
    meta: Value,
) -> Outcome {
    let params: CallToolRequestParams =
        serde_json::from_value(json!({"name": tool, "arguments": args, "_meta": meta})).expect("call params");
    let result = guard(&format!("answer to {tool}"), client.call_tool(params))
        .await
        .unwrap_or_else(|e| panic!("{tool}: JSON-RPC error instead of a result: {e}"));
    Outcome::from_wire(&serde_json::to_value(&result).expect("serialize CallToolResult"))
}

/// `demo_echo` answers on this connection.
pub async fn assert_echo<S: Service<RoleClient>>(client: &RunningService<RoleClient, S>, text: &str) {
    let out = call(client, "demo_echo", json!({ "text": text })).await;
    assert_eq!(out.ok(), &json!({ "text": text }), "{}", out.raw);
    assert_eq!(out.texts[0], text);
}

/// Every tool the server lists, as wire JSON, keyed by name.
pub async fn list_tools(client: &Client) -> Map<String, Value> {
    let tools = guard("tools/list", client.list_all_tools()).await.expect("tools/list");
    tools
        .into_iter()
        .map(|t| {
            let v = serde_json::to_value(&t).expect("serialize Tool");
            (t.name.to_string(), v)
        })
        .collect()
}

/// A POST of `body` to `url` as an MCP client would send it, plus extra headers.
pub async fn post(url: &str, body: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    install_crypto_provider();
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    guard("HTTP response", request.send()).await.expect("HTTP request")
}

/// A JSON-RPC `initialize` request with id 1.
pub fn initialize_request() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "cordon-e2e", "version": "0"}
        }
    })
}

/// A JSON-RPC `tools/call` request.
pub fn call_request(id: u64, tool: &str, arguments: Value) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}
    })
}

/// Exit status, stdout and stderr, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// 50 `demo_echo` calls in flight at once on one connection: every answer is its own.
pub async fn fifty_concurrent_echoes(client: &Client) {
    let texts: Vec<String> = (0..50).map(|i| format!("concurrent echo #{i}")).collect();
    let outcomes =
        futures::future::join_all(texts.iter().map(|text| call(client, "demo_echo", json!({ "text": text })))).await;
    for (text, out) in texts.iter().zip(&outcomes) {
        assert_eq!(out.ok(), &json!({ "text": text }), "{}", out.raw);
        assert_eq!(&out.texts[0], text);
    }
}

/// Config under which calls wait for a slot instead of failing `busy` on a loaded machine.
pub const PATIENT: &str = "[defaults]\nqueue_timeout_ms = 60000\n";

// ---- bearer-token principals -------------------------------------------------------------------

/// SHA-256 of `bytes` in lower-case hex (what `cordon token hash` prints).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The bearer token of `principal` in these tests.
pub fn token(principal: &str) -> String {
    format!("{principal}-e2e-token")
}

/// `[[auth.tokens]]` for each principal's [`token`].
pub fn tokens(principals: &[&str]) -> String {
    principals
        .iter()
        .map(|p| format!("[[auth.tokens]]\nprincipal = \"{p}\"\nsha256 = \"{}\"\n\n", sha256_hex(token(p).as_bytes())))
        .collect()
}

// ---- host-signed tokens and the audit log ------------------------------------------------------

impl Env {
    /// `cordon token issue --subject SUBJECT [--tools TOOLS] --ttl TTL` in this environment (same
    /// data dir as its servers), which must succeed: the printed JSON line.
    pub async fn issue_token(&self, subject: &str, tools: Option<&str>, ttl: &str) -> Value {
        let mut args = vec!["--subject", subject, "--ttl", ttl];
        if let Some(tools) = tools {
            args.extend_from_slice(&["--tools", tools]);
        }
        self.issue_token_with(&args).await
    }

    /// `cordon token issue <args>`: its JSON line.
    pub async fn issue_token_with(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.splice(0..0, ["token", "issue"]);
        let out = self.run(&args).await;
        assert_eq!(out.status.code(), Some(0), "cordon token issue: {}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 1, "cordon token issue prints one line: {}", describe(&out));
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("cordon token issue printed no JSON ({e}): {text}"))
    }

    /// `<data>/audit.jsonl`, the default audit log.
    pub fn audit_path(&self) -> PathBuf {
        self.data_dir().join("audit.jsonl")
    }

    /// The audit log's records, once it holds at least `count` (lines are written off the call
    /// path, so they may trail the answers).
    pub async fn audit_records(&self, count: usize) -> Vec<Value> {
        let path = self.audit_path();
        guard(&format!("{count} audit records in {}", path.display()), async {
            loop {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // Only whole lines: the writer may be half-way through one.
                let records: Vec<Value> = text
                    .split_inclusive('\n')
                    .filter(|l| l.ends_with('\n') && !l.trim().is_empty())
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
                    .collect();
                if records.len() >= count {
                    return records;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

/// The JSON-RPC messages of a response body, in order: the data of each SSE event, or the one
/// JSON body.
pub fn messages(content_type: &str, body: &str) -> Vec<Value> {
    if content_type.starts_with("text/event-stream") {
        body.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {d}")))
            .collect()
    } else {
        vec![serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))]
    }
}

/// An upstream on `127.0.0.1:0` that answers 200 to everything and counts the requests.
pub async fn counting_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "ok" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
    let base = format!("http://{}", listener.local_addr().expect("upstream address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("the upstream serves") });
    (base, seen)
}

/// The `fetcher` fixture reading from `base`, granted `GET {base}/api/{granted}`, with `extra`
/// config after it.
pub fn fetcher_env(base: &str, granted: &str, extra: &str) -> Env {
    let config = format!(
        "[plugins.fetcher.config]\nbase_url = \"{base}\"\n\n\
         [[plugins.fetcher.http.grants]]\nurl = \"{base}/api/{granted}\"\nmethods = [\"GET\"]\n\n{extra}"
    );
    Env::new().plugin(&fixture_wasm("fetcher"), "fetcher.wasm").config(&config)
}

// ---- plugin files and metrics -----------------------------------------------------------------

/// Writes `bytes` to `<dir>/<name>` the way deploy tools do: a temporary name, then a rename.
pub fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let temporary = dir.join(format!(".{name}.partial"));
    std::fs::write(&temporary, bytes).expect("write the new version");
    std::fs::rename(&temporary, dir.join(name)).expect("rename it into place");
}

/// `wasm` with a custom section appended: a different file (and digest) with the same code, a
/// compatible new version of the same plugin.
pub fn new_version(wasm: &[u8], label: &str) -> Vec<u8> {
    let name = b"cordon-test-version";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(label.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    let mut size = payload.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        out.push(if size == 0 { byte } else { byte | 0x80 });
        if size == 0 {
            break;
        }
    }
    out.extend_from_slice(&payload);
    out
}

/// The value of the series `name` with exactly `labels`; 0 when absent (a family shows a series
/// only once it has been touched).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (metric, label_text) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let have: Vec<&str> = if label_text.is_empty() { Vec::new() } else { label_text.split(',').collect() };
        if have.len() == want.len() && want.iter().all(|w| have.contains(&w.as_str())) {
            return value.parse().unwrap_or_else(|e| panic!("bad sample value in {line:?}: {e}"));
        }
    }
    0.0
}
