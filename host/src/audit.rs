//! The audit log: one JSON line per tool call, to a file and to tracing.
//!
//! Each line is an [`AuditRecord`]: time, principal, token id, tool, plugin digest, argument
//! hash, idempotency key and how the idempotency layer treated the call, outcome and error type,
//! latency, fuel, and what the call did on the network. Argument *values* are left out unless
//! `log_arguments` is set, and then every object key that looks sensitive is redacted
//! ([`is_sensitive_key`]). Credential values never reach a record: the call path has none to give.
//!
//! **Off the call path.** [`AuditLog::record`] serializes the line, emits it to tracing (target
//! `cordon::audit`; level `info` when there is no file, else `debug`, since the file already has
//! it) and hands it to a bounded channel; a writer thread appends
//! whatever is waiting in one `write(2)` and rotates by size (`audit.jsonl` → `.1` → … → `.N`).
//! A call never waits for the disk and never fails because of it: when the queue is full or the
//! file cannot be written the line is dropped, counted ([`AuditLog::dropped`]) and a warning is
//! logged at most once a minute. Lines are not fsynced: the idempotency store is the durable
//! record of outcomes; this log is for people and for [`errors_report`].
//!
//! One process writes a given file: rotation renames files under the writer's feet.
//!
//! ```toml
//! [audit]
//! file = "/var/log/cordon/audit.jsonl"  # default <data>/audit.jsonl; "" = tracing only
//! max_file_bytes = 67108864             # rotate when the next line would pass this
//! keep_files = 5                        # audit.jsonl.1 … .5; 0 = no rotated files kept
//! log_arguments = false                 # argument values (sensitive keys redacted)
//! ```

use anyhow::{bail, Context, Result};
use cordon_core::IdempotencyUse;
use cordon_sandbox::grants::http::{EgressRecord, Refusal};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The JSON-lines file. Unset: `<data>/audit.jsonl`; empty: no file, tracing only
    /// (see [`AuditConfig::file_in`]).
    pub file: Option<PathBuf>,
    /// Rotate when the next line would make the file larger than this.
    pub max_file_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` is the newest).
    pub keep_files: u32,
    /// Log argument values, with sensitive keys redacted. Off by default: arguments may carry
    /// personal data the operator has not decided to keep.
    pub log_arguments: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { file: None, max_file_bytes: 64 * 1024 * 1024, keep_files: 5, log_arguments: false }
    }
}

/// The default file name in the data directory.
pub const DEFAULT_FILE: &str = "audit.jsonl";

impl AuditConfig {
    /// The file to write: `file` as configured, `<data_dir>/audit.jsonl` when unset, and `None`
    /// (tracing only) when set to `""`.
    pub fn file_in(&self, data_dir: &Path) -> Option<PathBuf> {
        match &self.file {
            None => Some(data_dir.join(DEFAULT_FILE)),
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => Some(path.clone()),
        }
    }
}

/// Whether the call succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A successful result.
    #[default]
    Ok,
    /// A tool error (`isError: true`).
    Error,
}

/// A request that left the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundRequest {
    /// HTTP method.
    pub method: String,
    /// Host only: paths and queries may carry identifiers the audit log should not keep.
    pub host: String,
    /// Response status; `None` when no response arrived (connect error, timeout).
    pub status: Option<u16>,
}

/// A request the grants refused before any connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRequest {
    /// HTTP method.
    pub method: String,
    /// Scheme, host, port and path; user info, query and fragment are removed.
    pub url: String,
    /// `no_grant`, `too_many_requests` or `missing_credential:<credential name>`.
    pub reason: String,
}

impl RefusedRequest {
    /// A refused request; `url` is stripped of user info, query and fragment, which is where
    /// a guest would put tokens of its own.
    pub fn new(method: impl Into<String>, url: &str, reason: impl Into<String>) -> Self {
        Self { method: method.into(), url: strip_url(url), reason: reason.into() }
    }
}

/// The name of a refusal in the audit log.
pub fn refusal_reason(refusal: &Refusal) -> String {
    match refusal {
        Refusal::NoGrant => "no_grant".into(),
        Refusal::TooManyRequests(_) => "too_many_requests".into(),
        Refusal::MissingCredential(name) => format!("missing_credential:{name}"),
        Refusal::UserInfo => "user_info".into(),
    }
}

/// `scheme://host[:port]/path`, without user info, query or fragment.
fn strip_url(url: &str) -> String {
    let cut = url.find(['?', '#']).map_or(url, |i| &url[..i]);
    match cut.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
            let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}{path}")
        }
        None => cut.to_string(),
    }
}

/// One line of the audit log. Build it with `..Default::default()` and [`AuditRecord::egress`].
///
/// Reading a line back requires `time`, `call_id`, `principal`, `tool` and `outcome`, so that
/// other JSON in the file is not mistaken for a call; the other fields may be missing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the call finished: RFC 3339, UTC, milliseconds ([`timestamp`]).
    pub time: String,
    /// Unique per call; the group key of [`errors_report`] for calls without an idempotency key.
    pub call_id: String,
    /// Who called.
    pub principal: String,
    /// Id of the token that authenticated the call (never the token itself).
    #[serde(default)]
    pub token_id: Option<String>,
    /// Published tool name.
    pub tool: String,
    /// Plugin name.
    #[serde(default)]
    pub plugin: String,
    /// SHA-256 of the plugin component, hex.
    #[serde(default)]
    pub plugin_digest: String,
    /// SHA-256 of the canonical arguments, hex ([`arguments_sha256`]).
    #[serde(default)]
    pub arguments_sha256: String,
    /// Argument values: only with `log_arguments`, and written redacted ([`redact`]).
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "serialize_redacted")]
    pub arguments: Option<Value>,
    /// The call's idempotency key, if it had one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// How the idempotency layer treated the call.
    #[serde(default)]
    pub idempotency: IdempotencyUse,
    /// `ok` or `error`.
    pub outcome: Outcome,
    /// Error type (`ToolError::kind`).
    #[serde(default)]
    pub error_type: Option<String>,
    /// Error message as the caller saw it.
    #[serde(default)]
    pub error_message: Option<String>,
    /// Whether the caller was told a retry may succeed.
    #[serde(default)]
    pub retryable: Option<bool>,
    /// Wall-clock time of the whole call, microseconds.
    #[serde(default)]
    pub latency_us: u64,
    /// Fuel the guest consumed (0 when it did not run).
    #[serde(default)]
    pub fuel_used: u64,
    /// Requests that left the host.
    #[serde(default)]
    pub outbound: Vec<OutboundRequest>,
    /// Requests the grants refused.
    #[serde(default)]
    pub refused: Vec<RefusedRequest>,
    /// Arguments still to hash into `arguments_sha256`: hashing them is left to the writer
    /// thread, off the call's path ([`AuditLog::record`]). Never written.
    #[serde(skip)]
    pub unhashed_arguments: Option<Value>,
    /// The serialized size of the arguments: the write queue charges it for `unhashed_arguments`
    /// and again for `arguments`, before the writer holds them. Never written.
    #[serde(skip)]
    pub arguments_len: usize,
}

impl AuditRecord {
    /// Fills `arguments_sha256` from `unhashed_arguments`, if it is still to do.
    fn hash_arguments(&mut self) {
        if let Some(arguments) = self.unhashed_arguments.take() {
            self.arguments_sha256 = arguments_sha256(&arguments);
        }
    }

    /// Roughly the bytes the line will take: what the write queue counts for a record it has
    /// not serialized yet.
    fn approximate_len(&self) -> usize {
        const FIXED_FIELDS: usize = 400;
        FIXED_FIELDS
            + self.principal.len()
            + self.tool.len()
            + self.error_message.as_ref().map_or(0, String::len)
            + self.idempotency_key.as_ref().map_or(0, String::len)
            + 64 * (self.outbound.len() + self.refused.len())
            + self.arguments_len
                * (usize::from(self.unhashed_arguments.is_some()) + usize::from(self.arguments.is_some()))
    }

    /// Fills `outbound` and `refused` from what the call did on the network.
    pub fn egress(&mut self, record: &EgressRecord) {
        self.outbound = record
            .sent
            .iter()
            .map(|s| OutboundRequest { method: s.method.to_string(), host: s.host.clone(), status: s.status })
            .collect();
        self.refused = record
            .refused
            .iter()
            .map(|(method, url, refusal)| RefusedRequest::new(method.as_str(), url, refusal_reason(refusal)))
            .collect();
    }
}

/// `time` as written in the log: RFC 3339, UTC, milliseconds.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// SHA-256 of the canonical arguments: the same value as the idempotency fingerprint, so a log
/// line can be matched with a stored key.
pub fn arguments_sha256(arguments: &Value) -> String {
    crate::idempotency::fingerprint(arguments)
}

/// The words that make an object key sensitive (matched case-insensitively, anywhere in the
/// key: `api_key`, `X-Auth-Token` and `clientSecret` all match, and so does `keyword` — a
/// redacted harmless value costs less than a leaked secret).
const SENSITIVE: &[&str] = &["secret", "token", "password", "key", "authorization", "credential"];

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Whether values under this object key are redacted.
pub fn is_sensitive_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SENSITIVE.iter().any(|word| lower.contains(word))
}

/// A copy of `value` with the value of every sensitive key, at any depth, replaced by
/// `"[redacted]"`.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_sensitive_key(k) { Value::String(REDACTED.into()) } else { redact(v) };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// Serializes a value redacted without copying it.
struct Redacted<'a>(&'a Value);

impl Serialize for Redacted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    if is_sensitive_key(k) {
                        out.serialize_entry(k, REDACTED)?;
                    } else {
                        out.serialize_entry(k, &Redacted(v))?;
                    }
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for v in items {
                    out.serialize_element(&Redacted(v))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// Arguments are redacted when written, whoever filled the field: redaction cannot be forgotten.
fn serialize_redacted<S: Serializer>(value: &Option<Value>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => serializer.serialize_some(&Redacted(v)),
        None => serializer.serialize_none(),
    }
}

/// Lines waiting for the writer; beyond this a line is dropped rather than delaying a call.
const QUEUE_LINES: usize = 16 * 1024;
/// How long the writer lets lines gather after each write.
const WRITE_LINGER: Duration = Duration::from_millis(10);
/// Bytes waiting for the writer, likewise: with `log_arguments` a line can be as large as the
/// arguments, so a line count alone would not bound memory.
const QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// The most bytes the writer gathers into one write.
const MAX_WRITE_BYTES: usize = 1024 * 1024;
/// How often the writer retries a file it could not open.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// At most one warning about lost lines or file trouble per this interval.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// How long dropping the log waits for the writer to write what is queued.
const DRAIN_ON_DROP: Duration = Duration::from_secs(5);

enum Msg {
    Line(String),
    /// A record only the file wants: the writer hashes and serializes it.
    Record(Box<AuditRecord>),
    Flush(mpsc::Sender<()>),
}

/// Counts lost lines and keeps warnings about them to one a minute.
struct Health {
    dropped: AtomicU64,
    /// Bytes in the queue (see [`QUEUE_BYTES`]).
    queued_bytes: AtomicUsize,
    last_warning: Mutex<Option<Instant>>,
}

impl Health {
    fn drop_lines(&self, lines: u64, why: &dyn Display) {
        let total = self.dropped.fetch_add(lines, Ordering::Relaxed) + lines;
        self.warn(&format_args!("audit lines are being dropped ({total} so far): {why}"));
    }

    fn warn(&self, message: &dyn Display) {
        // `try_lock`: a call that drops a line must not wait on another thread's warning.
        let Ok(mut last) = self.last_warning.try_lock() else { return };
        let now = Instant::now();
        if last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            *last = Some(now);
            // Not under `cordon::audit`: filtering the audit lines out must not hide this.
            tracing::warn!("{message}");
        }
    }
}

/// The audit log: tracing always, plus a rotated file when one is configured.
pub struct AuditLog {
    log_arguments: bool,
    queue: Option<SyncSender<Msg>>,
    writer: Option<JoinHandle<()>>,
    /// Disconnects when the writer thread ends; lets `Drop` wait for it with a deadline. (In a
    /// mutex only so the log can be shared across threads; only `Drop` touches it.)
    writer_done: Option<Mutex<Receiver<()>>>,
    health: Arc<Health>,
    /// The PostgreSQL audit index, when the store is shared (`store::audit_index`).
    index: Option<cordon_state::audit_index::AuditIndex>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("file", &self.queue.is_some())
            .field("log_arguments", &self.log_arguments)
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl AuditLog {
    /// Starts the log: the file is [`AuditConfig::file_in`]`(data_dir)`. A file that cannot be
    /// opened is not an error: the log warns and keeps retrying, so a full or read-only disk never
    /// stops Cordon or a call. Fails only if the writer thread cannot be started.
    pub fn start(config: &AuditConfig, data_dir: &Path) -> Result<AuditLog> {
        let health = Arc::new(Health {
            dropped: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            last_warning: Mutex::new(None),
        });
        let Some(path) = config.file_in(data_dir) else {
            return Ok(AuditLog {
                log_arguments: config.log_arguments,
                queue: None,
                writer: None,
                writer_done: None,
                health,
                index: None,
            });
        };
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        let (done, writer_done) = mpsc::channel::<()>();
        let mut sink = Sink::new(path, config.max_file_bytes, config.keep_files, health.clone());
        let writer = std::thread::Builder::new()
            .name("cordon-audit".into())
            .spawn(move || {
                let _done = done;
                sink.run(lines);
            })
            .context("cannot start the audit writer thread")?;
        Ok(AuditLog {
            log_arguments: config.log_arguments,
            queue: Some(queue),
            writer: Some(writer),
            writer_done: Some(Mutex::new(writer_done)),
            health,
            index: None,
        })
    }

    /// Also sends every line to `index` (a shared store's audit index).
    pub fn with_index(mut self, index: Option<cordon_state::audit_index::AuditIndex>) -> AuditLog {
        self.index = index;
        self
    }

    /// The `arguments` field for a call: `None` unless `log_arguments` is set. (Written redacted
    /// either way; see [`AuditRecord::arguments`].)
    pub fn arguments(&self, arguments: &Value) -> Option<Value> {
        self.log_arguments.then(|| arguments.clone())
    }

    /// Logs one call. Cheap and never blocks on I/O: a non-blocking hand-off to the writer
    /// thread. When the line goes only to the file, the writer also hashes the arguments and
    /// serializes the record (a few microseconds off the call's path); when it is also wanted by
    /// the log (`file = ""`, or `cordon::audit` at `debug`) or a shared store's index, it is
    /// serialized here.
    pub fn record(&self, mut record: AuditRecord) {
        if !self.log_arguments {
            // Arguments were filled although logging them is off: leave them out.
            record.arguments = None;
        }
        let copy_to_log = self.queue.is_none() || tracing::enabled!(target: "cordon::audit", tracing::Level::DEBUG);
        if !copy_to_log && self.index.is_none() {
            let len = record.approximate_len();
            self.enqueue(Msg::Record(Box::new(record)), len);
            return;
        }
        record.hash_arguments();
        let line = match serde_json::to_string(&record) {
            Ok(line) => line,
            Err(e) => {
                self.health.drop_lines(1, &format_args!("cannot serialize a record: {e}"));
                return;
            }
        };
        // The log carries the line at `info` only when it is the audit log's only home
        // (`file = ""`); with a file it is a copy, at `debug`, so a busy server does not write
        // every call twice (BENCHMARKS.md).
        if self.queue.is_some() {
            tracing::debug!(target: "cordon::audit", "{line}");
        } else {
            tracing::info!(target: "cordon::audit", "{line}");
        }
        if let Some(index) = &self.index {
            index.add(&line);
        }
        let len = line.len();
        self.enqueue(Msg::Line(line), len);
    }

    /// Hands `msg` (about `len` bytes) to the writer, or counts it dropped when the queue is full.
    fn enqueue(&self, msg: Msg, len: usize) {
        let Some(queue) = &self.queue else { return };
        if self.health.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
            self.health.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.health.drop_lines(1, &"the write queue is full");
            return;
        }
        let why = match queue.try_send(msg) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "the write queue is full",
            Err(TrySendError::Disconnected(_)) => "the writer thread stopped",
        };
        self.health.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        self.health.drop_lines(1, &why);
    }

    /// Waits until every line recorded so far was written (or dropped), for at most `timeout`.
    /// For shutdown and tests; the call path never needs it. Returns whether it finished in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(queue) = &self.queue else { return true };
        let deadline = Instant::now() + timeout;
        let (tx, rx) = mpsc::channel();
        let mut msg = Msg::Flush(tx);
        loop {
            match queue.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }

    /// Lines lost since start (queue full, file unwritable).
    pub fn dropped(&self) -> u64 {
        self.health.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Closing the queue lets the writer write what is left and stop; wait for it, but not
        // forever: a hung disk must not hang shutdown.
        self.queue = None;
        if let Some(done) = self.writer_done.take() {
            let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
            if let Err(mpsc::RecvTimeoutError::Disconnected) = done.recv_timeout(DRAIN_ON_DROP) {
                if let Some(writer) = self.writer.take() {
                    let _ = writer.join();
                }
            }
        }
    }
}

/// The writer thread's side: the open file, its size, and rotation.
struct Sink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
    last_open_attempt: Option<Instant>,
    health: Arc<Health>,
}

impl Sink {
    fn new(path: PathBuf, max_bytes: u64, keep: u32, health: Arc<Health>) -> Sink {
        Sink { path, max_bytes, keep, file: None, size: 0, last_open_attempt: None, health }
    }

    /// Takes one message, then whatever else is waiting, and writes the lines together.
    fn run(&mut self, queue: Receiver<Msg>) {
        self.ensure_open();
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut flushes = Vec::new();
        while let Ok(first) = queue.recv() {
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Line(line) => {
                        self.health.queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
                        self.push(&mut buf, line.as_bytes());
                    }
                    Msg::Record(mut record) => {
                        self.health.queued_bytes.fetch_sub(record.approximate_len(), Ordering::Relaxed);
                        record.hash_arguments();
                        match serde_json::to_vec(&record) {
                            Ok(line) => self.push(&mut buf, &line),
                            Err(e) => self.health.drop_lines(1, &format_args!("cannot serialize a record: {e}")),
                        }
                    }
                    Msg::Flush(reply) => flushes.push(reply),
                }
                if buf.len() < MAX_WRITE_BYTES {
                    next = queue.try_recv().ok();
                }
            }
            self.write(&mut buf);
            for reply in flushes.drain(..) {
                let _ = reply.send(());
            }
            // Let lines gather before looking again: a sender only wakes this thread when it is
            // blocked in `recv`, so under load calls hand off lines without a thread wake-up each
            // (BENCHMARKS.md). Lines reach the file at most WRITE_LINGER later.
            std::thread::sleep(WRITE_LINGER);
        }
        self.write(&mut buf);
    }

    /// Adds a line to the pending write, rotating first if it would not fit in the file.
    fn push(&mut self, buf: &mut Vec<u8>, line: &[u8]) {
        let pending = self.size + buf.len() as u64;
        if pending > 0 && pending + line.len() as u64 + 1 > self.max_bytes {
            self.write(buf);
            self.rotate();
        }
        buf.extend_from_slice(line);
        buf.push(b'\n');
    }

    fn write(&mut self, buf: &mut Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
        match self.ensure_open() {
            Some(file) => match file.write_all(buf) {
                Ok(()) => self.size += buf.len() as u64,
                Err(e) => {
                    // Part may have been written; count the lot and start a fresh file handle.
                    self.file = None;
                    self.health.drop_lines(lines, &format_args!("cannot write {}: {e}", self.path.display()));
                }
            },
            None => self.health.drop_lines(lines, &format_args!("cannot open {}", self.path.display())),
        }
        buf.clear();
    }

    fn ensure_open(&mut self) -> Option<&mut File> {
        if self.file.is_none() {
            let now = Instant::now();
            if self.last_open_attempt.is_some_and(|at| now.duration_since(at) < REOPEN_EVERY) {
                return None;
            }
            self.last_open_attempt = Some(now);
            match open_append(&self.path) {
                Ok((file, size)) => {
                    self.file = Some(file);
                    self.size = size;
                }
                Err(e) => self.health.warn(&format_args!("cannot open the audit log: {e:#}")),
            }
        }
        self.file.as_mut()
    }

    /// `audit.jsonl.N-1` → `.N`, …, `audit.jsonl` → `.1`; the oldest falls off the end.
    fn rotate(&mut self) {
        self.file = None;
        let result = if self.keep == 0 {
            remove_if_exists(&self.path)
        } else {
            remove_if_exists(&numbered(&self.path, self.keep)).and_then(|()| {
                for n in (1..self.keep).rev() {
                    rename_if_exists(&numbered(&self.path, n), &numbered(&self.path, n + 1))?;
                }
                rename_if_exists(&self.path, &numbered(&self.path, 1))
            })
        };
        if let Err(e) = &result {
            self.health.warn(&format_args!("cannot rotate the audit log {}: {e}", self.path.display()));
        }
        self.last_open_attempt = None;
        self.ensure_open();
        if result.is_err() {
            // The old file is still there and still large: keep appending to it, and try to
            // rotate again after another `max_bytes` rather than on every line.
            self.size = 0;
        }
    }
}

fn open_append(path: &Path) -> Result<(File, u64)> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        // Principals, tools and error messages are not for every local user.
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, size))
}

/// `audit.jsonl.N`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// One unreconciled tool-level failure: the latest record of a key whose calls never succeeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorEntry {
    /// The idempotency key, or the call id for a call without one.
    pub key: String,
    /// Whether `key` is an idempotency key (else a call id).
    pub idempotency_key: bool,
    /// Tool.
    pub tool: String,
    /// Caller.
    pub principal: String,
    /// Error type of the latest attempt.
    pub error_type: Option<String>,
    /// Error message of the latest attempt.
    pub message: Option<String>,
    /// Whether the latest attempt was retryable.
    pub retryable: Option<bool>,
    /// Records seen for this key (attempts and replays) in the files read.
    pub attempts: u32,
    /// Time of the latest attempt.
    pub last_time: String,
    /// Call id of the latest attempt, to find its line.
    pub call_id: String,
}

/// The result of [`errors_report`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ErrorsReport {
    /// Unreconciled failures, oldest latest attempt first.
    pub entries: Vec<ErrorEntry>,
    /// Lines that were not audit records (or had an unreadable time when `since` was given).
    pub skipped_lines: u64,
}

/// The tool-level errors still standing, per idempotency key: the reconciliation pass after a
/// Messages Batch, whose message-level success can hide failed tool calls.
///
/// Reads the rotated files oldest first, then `path`. Records are grouped by principal, tool
/// and key (the idempotency namespace; the call id stands in for a call without a key); only
/// records at or after `since` and of `tool` count. A group whose latest record is `ok` is
/// reconciled and left out; for the others the latest error is reported with the number of
/// records seen. Lines that do not parse are skipped and counted.
pub fn errors_report(path: &Path, since: Option<SystemTime>, tool: Option<&str>) -> Result<ErrorsReport> {
    let files = log_files(path)?;
    if files.is_empty() {
        bail!("no audit log at {}", path.display());
    }
    struct Group {
        latest: AuditRecord,
        attempts: u32,
        order: u64,
    }
    let mut groups: HashMap<(String, String, String), Group> = HashMap::new();
    let mut skipped = 0u64;
    let mut order = 0u64;
    for file in files {
        let reader = match File::open(&file) {
            Ok(f) => BufReader::new(f),
            // Rotated away between listing and opening: its lines are in the next file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        for line in reader.split(b'\n') {
            let line = line.with_context(|| format!("cannot read {}", file.display()))?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(record) = serde_json::from_slice::<AuditRecord>(&line) else {
                skipped += 1;
                continue;
            };
            if tool.is_some_and(|t| t != record.tool) {
                continue;
            }
            if let Some(since) = since {
                match humantime::parse_rfc3339_weak(&record.time) {
                    Ok(t) if t >= since => {}
                    Ok(_) => continue,
                    Err(_) => {
                        skipped += 1;
                        continue;
                    }
                }
            }
            let key = record.idempotency_key.clone().unwrap_or_else(|| record.call_id.clone());
            order += 1;
            let group = groups.entry((record.principal.clone(), record.tool.clone(), key)).or_insert_with(|| Group {
                latest: AuditRecord::default(),
                attempts: 0,
                order,
            });
            group.attempts += 1;
            group.order = order;
            group.latest = record;
        }
    }
    let mut standing: Vec<(u64, ErrorEntry)> = groups
        .into_iter()
        .filter(|(_, g)| g.latest.outcome == Outcome::Error)
        .map(|((principal, tool, key), g)| {
            let r = g.latest;
            let entry = ErrorEntry {
                key,
                idempotency_key: r.idempotency_key.is_some(),
                tool,
                principal,
                error_type: r.error_type,
                message: r.error_message,
                retryable: r.retryable,
                attempts: g.attempts,
                last_time: r.time,
                call_id: r.call_id,
            };
            (g.order, entry)
        })
        .collect();
    standing.sort_by_key(|(order, _)| *order);
    Ok(ErrorsReport { entries: standing.into_iter().map(|(_, e)| e).collect(), skipped_lines: skipped })
}

/// The existing log files, oldest first: `path.N`, …, `path.1`, `path`. Any number is picked up,
/// so a lowered `keep_files` does not hide older files still on disk.
fn log_files(path: &Path) -> Result<Vec<PathBuf>> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        bail!("{} is not a file path", path.display());
    };
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(n) = file_name
                    .to_str()
                    .and_then(|f| f.strip_prefix(name))
                    .and_then(|rest| rest.strip_prefix('.'))
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                rotated.push((n, entry.path()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    }
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

/// `--since`: an RFC 3339 time (`2025-05-01T12:00:00Z`), a date (`2025-05-01`, midnight UTC), or
/// a duration ago (`90m`, `2h`, `7days`).
pub fn parse_since(text: &str) -> Result<SystemTime> {
    let text = text.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    if text.len() == 10 {
        if let Ok(t) = humantime::parse_rfc3339(&format!("{text}T00:00:00Z")) {
            return Ok(t);
        }
    }
    let ago = humantime::parse_duration(text)
        .with_context(|| format!("{text:?} is neither an RFC 3339 time, a date, nor a duration like 2h"))?;
    SystemTime::now().checked_sub(ago).with_context(|| format!("{text:?} reaches before the epoch"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cordon-audit-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn config(file: &Path) -> AuditConfig {
        AuditConfig { file: Some(file.to_path_buf()), ..AuditConfig::default() }
    }

    fn record(call_id: &str, key: Option<&str>, tool: &str, error: Option<&str>, time: SystemTime) -> AuditRecord {
        AuditRecord {
            time: timestamp(time),
            call_id: call_id.into(),
            principal: "alice".into(),
            tool: tool.into(),
            plugin: "demo".into(),
            idempotency_key: key.map(str::to_string),
            idempotency: if key.is_some() { IdempotencyUse::Miss } else { IdempotencyUse::None },
            outcome: if error.is_some() { Outcome::Error } else { Outcome::Ok },
            error_type: error.map(|_| "upstream_failed".to_string()),
            error_message: error.map(str::to_string),
            retryable: error.map(|_| true),
            ..AuditRecord::default()
        }
    }

    fn lines(path: &Path) -> Vec<AuditRecord> {
        std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn redaction_is_recursive_and_case_insensitive() {
        let args = json!({
            "query": "weather",
            "API_Key": "k1",
            "nested": {"clientSecret": "s", "Password": 3, "ok": [1, {"x-auth-TOKEN": "t", "n": 2}]},
            "items": [{"authorization": "Bearer z", "credentials": {"a": 1}, "name": "n"}],
        });
        let expected = json!({
            "query": "weather",
            "API_Key": "[redacted]",
            "nested": {"clientSecret": "[redacted]", "Password": "[redacted]", "ok": [1, {"x-auth-TOKEN": "[redacted]", "n": 2}]},
            "items": [{"authorization": "[redacted]", "credentials": "[redacted]", "name": "n"}],
        });
        assert_eq!(redact(&args), expected);
        // The serializer redacts the same way, without a copy.
        let r = AuditRecord { arguments: Some(args), ..AuditRecord::default() };
        let written: Value = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(written["arguments"], expected);
    }

    #[test]
    fn arguments_are_written_only_when_configured() {
        let dir = temp_dir("args");
        let file = dir.join("audit.jsonl");
        let args = json!({"q": 1, "token": "t"});
        let off = AuditLog::start(&config(&file), &dir).unwrap();
        assert_eq!(off.arguments(&args), None);
        // Even a record that carries arguments is written without them.
        off.record(AuditRecord { call_id: "1".into(), arguments: Some(args.clone()), ..AuditRecord::default() });
        assert!(off.flush(Duration::from_secs(5)));
        let on = AuditLog::start(&AuditConfig { log_arguments: true, ..config(&file) }, &dir).unwrap();
        on.record(AuditRecord { call_id: "2".into(), arguments: on.arguments(&args), ..AuditRecord::default() });
        assert!(on.flush(Duration::from_secs(5)));
        let written = lines(&file);
        assert_eq!(written.len(), 2);
        assert_eq!(written[0].arguments, None);
        assert_eq!(written[1].arguments, Some(json!({"q": 1, "token": "[redacted]"})));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("\"t\""), "{text}");
    }

    #[test]
    fn the_queue_charges_the_arguments_a_record_holds() {
        let bare = AuditRecord::default().approximate_len();
        let held = AuditRecord {
            unhashed_arguments: Some(json!({})),
            arguments: Some(json!({})),
            arguments_len: 1 << 20,
            ..AuditRecord::default()
        };
        assert_eq!(held.approximate_len(), bare + (2 << 20));
    }

    #[test]
    fn the_writer_hashes_arguments_left_unhashed() {
        let dir = temp_dir("hash");
        let file = dir.join("audit.jsonl");
        let args = json!({"b": [1, 2], "a": "x"});
        let log = AuditLog::start(&config(&file), &dir).unwrap();
        log.record(AuditRecord {
            call_id: "1".into(),
            unhashed_arguments: Some(args.clone()),
            ..AuditRecord::default()
        });
        // A keyed call's fingerprint is already known and stays as it is.
        log.record(AuditRecord { call_id: "2".into(), arguments_sha256: "abc".into(), ..AuditRecord::default() });
        assert!(log.flush(Duration::from_secs(5)));
        let written = lines(&file);
        assert_eq!(written[0].arguments_sha256, arguments_sha256(&args));
        assert_eq!(written[0].arguments_sha256.len(), 64);
        assert_eq!(written[1].arguments_sha256, "abc");
        assert!(!std::fs::read_to_string(&file).unwrap().contains("unhashed"));
    }

    #[test]
    fn files_rotate_by_size_and_keep_at_most_keep_files() {
        let dir = temp_dir("rotate");
        let file = dir.join("audit.jsonl");
        let one_line = serde_json::to_string(&record("c00", None, "demo_echo", None, SystemTime::now())).unwrap();
        // Two lines fit in a file, a third does not.
        let max = 2 * (one_line.len() as u64 + 1) + 10;
        let log = AuditLog::start(&AuditConfig { max_file_bytes: max, keep_files: 2, ..config(&file) }, &dir).unwrap();
        for i in 0..9 {
            log.record(record(&format!("c{i:02}"), None, "demo_echo", None, SystemTime::now()));
        }
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(log.dropped(), 0);
        let ids = |p: &Path| lines(p).into_iter().map(|r| r.call_id).collect::<Vec<_>>();
        assert_eq!(ids(&file), ["c08"]);
        assert_eq!(ids(&numbered(&file, 1)), ["c06", "c07"]);
        assert_eq!(ids(&numbered(&file, 2)), ["c04", "c05"]);
        assert!(!numbered(&file, 3).exists());
        for f in [&file, &numbered(&file, 1), &numbered(&file, 2)] {
            assert!(std::fs::metadata(f).unwrap().len() <= max);
        }
        // A restart appends to the existing file and rotates from its real size.
        drop(log);
        let log = AuditLog::start(&AuditConfig { max_file_bytes: max, keep_files: 2, ..config(&file) }, &dir).unwrap();
        log.record(record("c09", None, "demo_echo", None, SystemTime::now()));
        log.record(record("c10", None, "demo_echo", None, SystemTime::now()));
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(ids(&file), ["c10"]);
        assert_eq!(ids(&numbered(&file, 1)), ["c08", "c09"]);
    }

    #[test]
    fn an_unwritable_file_never_fails_or_blocks_a_call() {
        let dir = temp_dir("unwritable");
        // A regular file where the log's directory should be: even root cannot create it.
        let blocker = dir.join("not-a-dir");
        std::fs::write(&blocker, "x").unwrap();
        let log = AuditLog::start(&config(&blocker.join("audit.jsonl")), &dir).unwrap();
        let started = Instant::now();
        for i in 0..100 {
            log.record(record(&format!("c{i}"), None, "demo_echo", None, SystemTime::now()));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(log.dropped(), 100);
    }

    #[test]
    fn tracing_only_needs_no_file() {
        let dir = temp_dir("tracing");
        let log = AuditLog::start(&AuditConfig { file: Some(PathBuf::new()), ..AuditConfig::default() }, &dir).unwrap();
        log.record(record("c1", None, "demo_echo", None, SystemTime::now()));
        assert!(log.flush(Duration::from_secs(1)));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(AuditConfig::default().file_in(&dir), Some(dir.join("audit.jsonl")));
    }

    #[test]
    fn errors_report_keeps_unreconciled_failures_per_key() {
        let dir = temp_dir("report");
        let file = dir.join("audit.jsonl");
        // Whole seconds: the log keeps milliseconds, and `since` compares with what was written.
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(now - 3600);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let rotated = [
            record("c1", Some("batch-1"), "pay_send", Some("upstream 503"), at(1)),
            record("c2", Some("batch-2"), "pay_send", Some("first failure"), at(2)),
        ];
        let current = [
            record("c3", Some("batch-1"), "pay_send", None, at(3)),
            record("c4", Some("batch-2"), "pay_send", Some("second failure"), at(4)),
            record("c5", None, "notes_get", Some("not found"), at(5)),
            record("c6", Some("batch-3"), "pay_send", Some("declined"), at(6)),
        ];
        let text = |records: &[AuditRecord]| {
            records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect::<String>()
        };
        std::fs::write(numbered(&file, 1), text(&rotated)).unwrap();
        std::fs::write(&file, format!("{}not json\n{{\"time\": 5}}\n{{\"other\": \"json\"}}\n\n", text(&current)))
            .unwrap();

        let report = errors_report(&file, None, None).unwrap();
        assert_eq!(report.skipped_lines, 3);
        let keys: Vec<_> = report.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["batch-2", "c5", "batch-3"], "batch-1 failed, then succeeded: reconciled");
        let batch2 = &report.entries[0];
        assert_eq!(batch2.attempts, 2);
        assert_eq!(batch2.message.as_deref(), Some("second failure"));
        assert_eq!(batch2.call_id, "c4");
        assert_eq!(batch2.last_time, timestamp(at(4)));
        assert!(batch2.idempotency_key);
        assert!(!report.entries[1].idempotency_key);

        let by_tool = errors_report(&file, None, Some("notes_get")).unwrap();
        assert_eq!(by_tool.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["c5"]);

        let recent = errors_report(&file, Some(at(4)), None).unwrap();
        let keys: Vec<_> = recent.entries.iter().map(|e| (e.key.as_str(), e.attempts)).collect();
        assert_eq!(keys, [("batch-2", 1), ("c5", 1), ("batch-3", 1)]);

        assert!(errors_report(&dir.join("missing.jsonl"), None, None).is_err());
    }

    #[test]
    fn refused_urls_and_since_are_cleaned_and_parsed() {
        assert_eq!(
            strip_url("https://user:pw@api.example.com:8443/v1/x?api_key=s#f"),
            "https://api.example.com:8443/v1/x"
        );
        assert_eq!(strip_url("http://h?q=1"), "http://h");
        assert_eq!(parse_since("2025-05-01").unwrap(), humantime::parse_rfc3339("2025-05-01T00:00:00Z").unwrap());
        assert_eq!(
            parse_since("2025-05-01T12:00:00.250Z").unwrap(),
            humantime::parse_rfc3339("2025-05-01T12:00:00.250Z").unwrap()
        );
        let two_hours_ago = parse_since("2h").unwrap();
        let age = SystemTime::now().duration_since(two_hours_ago).unwrap();
        assert!(age >= Duration::from_secs(7200) && age < Duration::from_secs(7260));
        assert!(parse_since("yesterday-ish").is_err());
        let t = humantime::parse_rfc3339("2025-05-01T12:00:00.250Z").unwrap();
        assert_eq!(timestamp(t), "2025-05-01T12:00:00.250Z");
    }
}
