//! What a guest prints: stdout, stderr and `log` lines share one byte budget per call; past it,
//! output is counted and dropped rather than failing the guest's write (a Rust guest panics when
//! `println!` fails). What is kept reaches the host's log with control characters escaped.

use crate::bindings::cordon::plugin::host::LogLevel;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// What a guest printed during one call, within its budget.
pub struct GuestOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    budget: usize,
    dropped: usize,
}

impl GuestOutput {
    pub(super) fn new(budget: usize) -> Self {
        Self { stdout: Vec::new(), stderr: Vec::new(), budget, dropped: 0 }
    }

    /// Takes `len` bytes from the budget if they fit; counts them as dropped otherwise.
    pub(super) fn admit(&mut self, len: usize) -> bool {
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
pub(super) enum Stream {
    Stdout,
    Stderr,
}

/// A guest's stdout or stderr, captured into [`GuestOutput`].
#[derive(Clone)]
pub(super) struct CapturedStream {
    pub(super) output: Arc<Mutex<GuestOutput>>,
    pub(super) stream: Stream,
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

/// Writes what the guest printed to the host's log, once the call is over.
pub(super) fn flush(output: &Mutex<GuestOutput>, label: &str) {
    let Ok(mut guard) = output.lock() else {
        return;
    };
    let out = &mut *guard;
    for (stream, bytes) in [("stdout", &mut out.stdout), ("stderr", &mut out.stderr)] {
        if !bytes.is_empty() {
            let text = String::from_utf8_lossy(bytes);
            let text = escape_controls(text.trim_end());
            tracing::debug!(target: "cordon::guest", call = %label, stream, "{text}");
            bytes.clear();
        }
    }
    if out.dropped > 0 {
        tracing::debug!(target: "cordon::guest", call = %label, dropped_bytes = out.dropped,
            "guest output past the per-call budget was dropped");
        out.dropped = 0;
    }
}

/// A `log` line to the host's log, if it fits the budget; whether it did.
pub(super) fn log(output: &Mutex<GuestOutput>, label: &str, level: LogLevel, message: &str) -> bool {
    let admitted = output.lock().map(|mut out| out.admit(message.len())).unwrap_or(false);
    if !admitted {
        return false;
    }
    let call = label;
    // The log is read by people and by log shippers line by line: a guest's newline or
    // escape sequence must not forge a line of the host's, nor rewrite the operator's terminal.
    let message_for_log = escape_controls(message);
    let message_for_log = &*message_for_log;
    match level {
        LogLevel::Trace => tracing::trace!(target: "cordon::guest", call, "{message_for_log}"),
        LogLevel::Debug => tracing::debug!(target: "cordon::guest", call, "{message_for_log}"),
        LogLevel::Info => tracing::info!(target: "cordon::guest", call, "{message_for_log}"),
        LogLevel::Warn => tracing::warn!(target: "cordon::guest", call, "{message_for_log}"),
        LogLevel::Error => tracing::error!(target: "cordon::guest", call, "{message_for_log}"),
    }
    true
}

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
