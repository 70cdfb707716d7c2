//! The batching writer: a bounded queue to a thread that appends what is waiting in one write
//! and rotates the file by size; lines that cannot be queued or written are dropped and counted.
//!
//! With a shared store the same batches go on to the audit index (`cordon_audit`): the line is
//! serialized once, by this thread, and the index inserts what each write carried; the call path
//! never serializes for it.

use super::config::AuditConfig;
use super::record::AuditRecord;
use anyhow::{Context, Result};
use cordon_state::audit_index::AuditIndex;
use serde_json::Value;
use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// The PostgreSQL audit index, when the store is shared: fed by the writer thread, or here
    /// when there is no file (and so no writer).
    index: Option<AuditIndex>,
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
        Self::start_with_index(config, data_dir, None)
    }

    /// [`AuditLog::start`], also sending every line to `index` (a shared store's audit index).
    pub fn start_with_index(config: &AuditConfig, data_dir: &Path, index: Option<AuditIndex>) -> Result<AuditLog> {
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
                index,
            });
        };
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        let (done, writer_done) = mpsc::channel::<()>();
        let mut sink = Sink::new(path, config.max_file_bytes, config.keep_files, health.clone(), index.clone());
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
            index,
        })
    }

    /// The `arguments` field for a call: `None` unless `log_arguments` is set. (Written redacted
    /// either way; see [`AuditRecord::arguments`].)
    pub fn arguments(&self, arguments: &Value) -> Option<Value> {
        self.log_arguments.then(|| arguments.clone())
    }

    /// Logs one call. Cheap and never blocks on I/O: a non-blocking hand-off to the writer
    /// thread, which hashes the arguments and serializes the record (a few microseconds off the
    /// call's path) for the file and a shared store's index. Only when the log wants the line too
    /// (`file = ""`, or `cordon::audit` at `debug`) is it serialized here.
    pub fn record(&self, mut record: AuditRecord) {
        if !self.log_arguments {
            // Arguments were filled although logging them is off: leave them out.
            record.arguments = None;
        }
        let copy_to_log = self.queue.is_none() || tracing::enabled!(target: "cordon::audit", tracing::Level::DEBUG);
        if !copy_to_log {
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
        if self.queue.is_none() {
            // No file, so no writer to batch for the index: it takes the line itself.
            if let Some(index) = &self.index {
                index.add_batch(vec![line]);
            }
            return;
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

    /// Lines the audit index lost since start (its queue full, the database failing); 0 without
    /// a shared store.
    pub fn index_dropped(&self) -> u64 {
        self.index.as_ref().map_or(0, AuditIndex::dropped)
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
    /// Where each batch goes next, when the store is shared.
    index: Option<AuditIndex>,
}

impl Sink {
    fn new(path: PathBuf, max_bytes: u64, keep: u32, health: Arc<Health>, index: Option<AuditIndex>) -> Sink {
        Sink { path, max_bytes, keep, file: None, size: 0, last_open_attempt: None, health, index }
    }

    /// Takes one message, then whatever else is waiting, and writes the lines together.
    fn run(&mut self, queue: Receiver<Msg>) {
        self.ensure_open();
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut flushes = Vec::new();
        // This batch's lines for the index, when there is one.
        let mut indexed = Vec::new();
        while let Ok(first) = queue.recv() {
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                let line = match msg {
                    Msg::Line(line) => {
                        self.health.queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
                        Some(line)
                    }
                    Msg::Record(mut record) => {
                        self.health.queued_bytes.fetch_sub(record.approximate_len(), Ordering::Relaxed);
                        record.hash_arguments();
                        match serde_json::to_string(&record) {
                            Ok(line) => Some(line),
                            Err(e) => {
                                self.health.drop_lines(1, &format_args!("cannot serialize a record: {e}"));
                                None
                            }
                        }
                    }
                    Msg::Flush(reply) => {
                        flushes.push(reply);
                        None
                    }
                };
                if let Some(line) = line {
                    self.push(&mut buf, line.as_bytes());
                    if self.index.is_some() {
                        indexed.push(line);
                    }
                }
                if buf.len() < MAX_WRITE_BYTES {
                    next = queue.try_recv().ok();
                }
            }
            self.write(&mut buf);
            // The index gets the batch whether or not the file took it: it is a second record,
            // not a copy of the file.
            if let Some(index) = &self.index {
                if !indexed.is_empty() {
                    index.add_batch(std::mem::take(&mut indexed));
                }
            }
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
pub(super) fn numbered(path: &Path, n: u32) -> PathBuf {
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
