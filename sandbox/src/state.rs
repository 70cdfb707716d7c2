//! Per-call store state: the empty WASI context, the memory cap, and captured guest output.
//!
//! A fresh [`CallState`] is built for every call, so nothing a guest does survives it. The WASI
//! context is empty on purpose: no preopened directories, no environment, no
//! arguments, no sockets or name lookup, empty stdin. Guest stdout, stderr and `log` lines share
//! one byte budget per call; past it, output is counted and dropped rather than failing the
//! guest's write (a Rust guest panics when `println!` fails). `log` lines and `progress` reports
//! also go to the call's [`EventSink`] when its client listens ([`crate::notify`]).

use super::bindings::cordon::plugin::host::{self, InputRequest, LogLevel};
use super::bindings::{CallError, Content, ResourceBody};
use crate::grants::credentials::Credentials;
use crate::grants::http::{EgressHooks, EgressRecord};
use crate::grants::PluginGrants;
use crate::link::{self as notify, Ask, AskError, CallEvent, EventSink, InputRound, ProgressGate};
use cordon_core::ClientNeeds;
use cordon_core::Limits;
use cordon_core::Principal;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// What one call is allowed to reach: the plugin's grants applied for one principal.
pub struct CallGrants {
    /// The plugin's grants.
    pub grants: PluginGrants,
    /// Loaded credentials (the sandbox only ever hands them to the egress hooks).
    pub credentials: Arc<Credentials>,
    /// The caller.
    pub principal: Principal,
    /// Where the call's outbound requests are recorded.
    pub egress: Arc<Mutex<EgressRecord>>,
    /// For a keyed call: the base of each outbound request's `Idempotency-Key`.
    pub upstream_key_base: Option<String>,
}

/// Everything one call's store holds.
pub struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    egress: EgressHooks,
    settings: Arc<BTreeMap<String, String>>,
    table: ResourceTable,
    pub(super) limiter: MemoryCap,
    pub(super) output: Arc<Mutex<GuestOutput>>,
    /// `plugin/call-id`, to tag the guest's log lines.
    pub(super) label: Arc<str>,
    /// Where progress and log lines go for the client, when it listens.
    events: Option<EventSink>,
    progress: ProgressGate,
    attached: Attached,
    asks: Asks,
}

/// The questions a guest asked its client during this run (see [`crate::notify`]).
#[derive(Default)]
struct Asks {
    /// On the 2026-07-28 wire, the client's answers for this try; `None` with a session.
    inputs: Option<Arc<InputRound>>,
    /// Questions asked and not answered (key → `{"method", "params"}`).
    pending: BTreeMap<String, Value>,
    /// Answers used.
    answered: BTreeMap<String, Value>,
    /// The capability of the first question refused because the client did not declare it.
    missing_capability: Option<&'static str>,
    /// Questions asked through `sample` and `elicit`, which number their keys.
    numbered: usize,
}

/// Ends a guest's run when it asked what only the client's next try can answer.
#[derive(Debug)]
struct InputRequired;

impl std::fmt::Display for InputRequired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the call needs input from the client")
    }
}

impl std::error::Error for InputRequired {}

/// Content a guest attached to its result (`host.attach`), within the output cap.
struct Attached {
    items: Vec<Content>,
    /// Bytes still allowed (the plugin's `max_output_bytes`).
    budget: usize,
    /// Whether something was refused for lack of budget (the call then fails as too large).
    overflowed: bool,
}

impl CallState {
    /// State for one call with the given memory cap, output budget, grants, and the client's
    /// event sink.
    pub fn new(
        limits: &Limits,
        label: Arc<str>,
        grants: CallGrants,
        events: Option<EventSink>,
        inputs: Option<Arc<InputRound>>,
    ) -> anyhow::Result<Self> {
        let output = Arc::new(Mutex::new(GuestOutput::new(limits.max_log_bytes)));
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(CapturedStream { output: output.clone(), stream: Stream::Stdout })
            .stderr(CapturedStream { output: output.clone(), stream: Stream::Stderr })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        for dir in grants.grants.dirs.iter() {
            dir.apply(&mut builder)?;
        }
        let CallGrants { grants, credentials, principal, egress, upstream_key_base } = grants;
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(limits.max_header_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_resources);
        Ok(Self {
            wasi: builder.build(),
            http,
            egress: EgressHooks::new(grants.http, credentials, principal, egress, upstream_key_base),
            settings: grants.settings,
            table,
            limiter: MemoryCap::new(limits.memory_bytes),
            output,
            label,
            events,
            progress: ProgressGate::new(Instant::now()),
            attached: Attached { items: Vec::new(), budget: limits.max_output_bytes, overflowed: false },
            asks: Asks { inputs, ..Asks::default() },
        })
    }

    /// What the client must give before this call can finish, if that is why the run ended
    /// (`failed_unsupported`: the guest failed with kind `unsupported`).
    pub fn client_needs(&mut self, failed_unsupported: bool) -> Option<ClientNeeds> {
        if !self.asks.pending.is_empty() {
            return Some(ClientNeeds::Input {
                requests: std::mem::take(&mut self.asks.pending),
                answered: std::mem::take(&mut self.asks.answered),
            });
        }
        self.asks.missing_capability.filter(|_| failed_unsupported).map(ClientNeeds::Capability)
    }

    /// The content the guest attached, or `None` when it attached more than the output cap.
    pub fn take_attached(&mut self) -> Option<Vec<Content>> {
        if self.attached.overflowed {
            return None;
        }
        Some(std::mem::take(&mut self.attached.items))
    }

    /// One question: answered from this try's inputs on the 2026-07-28 wire (or left pending),
    /// else sent to the client on the call's stream.
    async fn ask_one(&mut self, key: String, ask: Ask) -> Result<String, CallError> {
        let method = ask.method();
        if let Some(inputs) = &self.asks.inputs {
            if !inputs.capabilities.allows(&ask) {
                self.asks.missing_capability.get_or_insert(ask.capability());
                return Err(ask_error(notify::unsupported(method)));
            }
            // An answer of the wrong shape is asked again rather than handed to the guest.
            if let Some(answer) = inputs.answers.get(&key).filter(|answer| ask.accepts(answer)) {
                let text = answer.to_string();
                self.asks.answered.insert(key, answer.clone());
                return Ok(text);
            }
            tracing::debug!(call = %self.label, method, key, "the guest asks a stateless client: input required");
            self.asks.pending.insert(key, json!({"method": method, "params": ask.params()}));
            return Ok(String::new());
        }
        let Some(events) = self.events.clone() else {
            return Err(ask_error(notify::unsupported(method)));
        };
        tracing::debug!(call = %self.label, method, "the guest asks the client");
        events.ask(ask).await.map(|answer| answer.to_string()).map_err(ask_error)
    }

    /// `sample` and `elicit`: one question with a numbered key.
    async fn ask_numbered(&mut self, ask: Ask) -> wasmtime::Result<Result<String, CallError>> {
        self.asks.numbered += 1;
        let key = format!("{}-{}", ask.capability(), self.asks.numbered);
        let answer = self.ask_one(key, ask).await;
        self.end_if_pending()?;
        Ok(answer)
    }

    /// Ends the run once a question is pending: the rest of it needs the client's answer.
    fn end_if_pending(&self) -> wasmtime::Result<()> {
        if self.asks.pending.is_empty() {
            Ok(())
        } else {
            Err(wasmtime::Error::new(InputRequired))
        }
    }

    /// Writes what the guest printed to the host's log, once the call is over.
    pub fn flush_output(&self) {
        let Ok(mut guard) = self.output.lock() else {
            return;
        };
        let out = &mut *guard;
        for (stream, bytes) in [("stdout", &mut out.stdout), ("stderr", &mut out.stderr)] {
            if !bytes.is_empty() {
                let text = String::from_utf8_lossy(bytes);
                let text = escape_controls(text.trim_end());
                tracing::debug!(target: "cordon::guest", call = %self.label, stream, "{text}");
                bytes.clear();
            }
        }
        if out.dropped > 0 {
            tracing::debug!(target: "cordon::guest", call = %self.label, dropped_bytes = out.dropped,
                "guest output past the per-call budget was dropped");
            out.dropped = 0;
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.egress }
    }
}

impl host::Host for CallState {
    fn config(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }

    fn log(&mut self, level: LogLevel, message: String) {
        let admitted = self.output.lock().map(|mut out| out.admit(message.len())).unwrap_or(false);
        if !admitted {
            return;
        }
        let call = &*self.label;
        // The log is read by people and by log shippers line by line: a guest's newline or
        // escape sequence must not forge a line of the host's, nor rewrite the operator's terminal.
        let message_for_log = escape_controls(&message);
        let message_for_log = &*message_for_log;
        match level {
            LogLevel::Trace => tracing::trace!(target: "cordon::guest", call, "{message_for_log}"),
            LogLevel::Debug => tracing::debug!(target: "cordon::guest", call, "{message_for_log}"),
            LogLevel::Info => tracing::info!(target: "cordon::guest", call, "{message_for_log}"),
            LogLevel::Warn => tracing::warn!(target: "cordon::guest", call, "{message_for_log}"),
            LogLevel::Error => tracing::error!(target: "cordon::guest", call, "{message_for_log}"),
        }
        // The same budget covers what the client gets: a line the host log drops, it never sees.
        if let Some(events) = self.events.as_ref().filter(|e| e.wants_log()) {
            events.send(CallEvent::Log { level, message });
        }
    }

    fn attach(&mut self, item: Content) {
        let size = content_size(&item);
        if size > self.attached.budget {
            if !self.attached.overflowed {
                tracing::debug!(call = %self.label, size, "attached content past the output cap: the call will fail");
            }
            self.attached.overflowed = true;
            return;
        }
        self.attached.budget -= size;
        self.attached.items.push(item);
    }

    async fn sample(&mut self, request: String) -> wasmtime::Result<Result<String, CallError>> {
        match ask_params(&request, "sampling/createMessage") {
            Ok(params) => self.ask_numbered(Ask::Sample(params)).await,
            Err(e) => Ok(Err(e)),
        }
    }

    async fn elicit(&mut self, request: String) -> wasmtime::Result<Result<String, CallError>> {
        match ask_params(&request, "elicitation/create") {
            Ok(params) => self.ask_numbered(Ask::Elicit(params)).await,
            Err(e) => Ok(Err(e)),
        }
    }

    async fn ask(&mut self, requests: Vec<InputRequest>) -> wasmtime::Result<Vec<Result<String, CallError>>> {
        let mut answers = Vec::with_capacity(requests.len());
        for InputRequest { key, method, params } in requests {
            let answer = match Ask::parse(&method, &params) {
                Ok(ask) => self.ask_one(key, ask).await,
                Err(message) => Err(CallError { kind: "invalid_request".into(), message, retryable: false }),
            };
            answers.push(answer);
        }
        self.end_if_pending()?;
        Ok(answers)
    }

    fn progress(&mut self, done: f64, total: Option<f64>, message: Option<String>) {
        let Some(events) = self.events.as_ref().filter(|e| e.wants_progress()) else {
            return;
        };
        let total = notify::clean_total(total);
        if self.progress.admit(done, total, Instant::now()) {
            events.send(CallEvent::Progress { progress: done, total, message: notify::clean_message(message) });
        }
    }
}

impl super::bindings::cordon::plugin::types::Host for CallState {}

/// `text` with control characters (newlines, carriage returns, terminal escapes) written as
/// escapes, so guest text stays on its one line of the host's log.
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The size a content block counts for against the output cap.
pub fn content_size(item: &Content) -> usize {
    match item {
        Content::Text(text) => text.len(),
        Content::Image(media) | Content::Audio(media) => media.data.len() + media.mime_type.len(),
        Content::Resource(contents) => {
            let body = match &contents.body {
                ResourceBody::Text(text) => text.len(),
                ResourceBody::Blob(bytes) => bytes.len(),
            };
            contents.uri.len() + contents.mime_type.as_ref().map_or(0, String::len) + body
        }
    }
}

/// Parses the JSON params a guest passed to `sample` or `elicit`.
fn ask_params(request: &str, method: &str) -> Result<serde_json::Value, CallError> {
    match serde_json::from_str::<serde_json::Value>(request) {
        Ok(params @ serde_json::Value::Object(_)) => Ok(params),
        _ => Err(CallError {
            kind: "invalid_request".into(),
            message: format!("the params for {method} must be a JSON object"),
            retryable: false,
        }),
    }
}

fn ask_error(error: AskError) -> CallError {
    let (kind, retryable) = match &error {
        AskError::Unsupported(_) => ("unsupported", false),
        AskError::Client { .. } => ("client_error", false),
        AskError::Timeout(..) => ("timeout", true),
    };
    CallError { kind: kind.into(), message: error.to_string(), retryable }
}

/// One memory budget for the whole instance: every linear memory and every table of every core
/// instance in the component counts against the plugin's `memory_mb` together (a component
/// that instantiates many core modules gets the cap once, not once per memory). Table elements
/// count as [`TABLE_ELEMENT_BYTES`] each. Remembers whether the cap was hit so the host can
/// report `memory_limit` instead of a generic crash.
pub struct MemoryCap {
    max_bytes: usize,
    /// Bytes of linear memory and tables granted so far in this instance.
    used_bytes: usize,
    pub(super) exceeded: bool,
}

/// What one table element costs against the memory cap: the host stores a pointer-sized
/// reference (and the pool reserves that much) per element.
const TABLE_ELEMENT_BYTES: usize = 8;

/// Linear memories and tables one instance may have in all, and core instances: generous for
/// real components (componentize-py output has a dozen core instances), bounded for a hostile
/// one; each still counts against the memory budget.
pub(super) const MAX_MEMORIES: usize = 32;
pub(super) const MAX_TABLES: usize = 64;
pub(super) const MAX_CORE_INSTANCES: usize = 64;

impl MemoryCap {
    fn new(max_bytes: usize) -> MemoryCap {
        MemoryCap { max_bytes, used_bytes: 0, exceeded: false }
    }

    /// Charges `current → desired` bytes of one memory or table against the budget.
    fn grow(&mut self, current: usize, desired: usize, what: &str) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current);
        match self.used_bytes.checked_add(more).filter(|&total| total <= self.max_bytes) {
            Some(total) => {
                self.used_bytes = total;
                Ok(true)
            }
            None => {
                self.exceeded = true;
                wasmtime::bail!("{what}: the instance's memory cap of {} bytes exceeded", self.max_bytes)
            }
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current, desired, "linear memory")
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let bytes = |elements: usize| elements.saturating_mul(TABLE_ELEMENT_BYTES);
        self.grow(bytes(current), bytes(desired), "table")
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// What a guest printed during one call, within its budget.
pub struct GuestOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    budget: usize,
    dropped: usize,
}

impl GuestOutput {
    fn new(budget: usize) -> Self {
        Self { stdout: Vec::new(), stderr: Vec::new(), budget, dropped: 0 }
    }

    /// Takes `len` bytes from the budget if they fit; counts them as dropped otherwise.
    fn admit(&mut self, len: usize) -> bool {
        if len <= self.budget {
            self.budget -= len;
            true
        } else {
            self.dropped += len;
            false
        }
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// A guest's stdout or stderr, captured into [`GuestOutput`].
#[derive(Clone)]
struct CapturedStream {
    output: Arc<Mutex<GuestOutput>>,
    stream: Stream,
}

impl IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CapturedStream {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Ok(mut out) = self.output.lock() {
            let keep = buf.len().min(out.budget);
            out.budget -= keep;
            out.dropped += buf.len() - keep;
            match self.stream {
                Stream::Stdout => out.stdout.extend_from_slice(&buf[..keep]),
                Stream::Stderr => out.stderr.extend_from_slice(&buf[..keep]),
            }
        }
        // Always accept the whole write: a guest must not fail because the host stops listening.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
