//! What a guest reports to a listening client while it runs: `progress`, thinned by the call's
//! [`ProgressGate`], and `log` lines the output budget admitted.

use crate::bindings::cordon::plugin::host::LogLevel;
use crate::link::{self, CallEvent, EventSink, ProgressGate};
use std::time::Instant;

/// The call's event sink, when its client listens, and its progress gate.
pub(super) struct Reports {
    events: Option<EventSink>,
    progress: ProgressGate,
}

impl Reports {
    pub(super) fn new(events: Option<EventSink>) -> Reports {
        Reports { events, progress: ProgressGate::new(Instant::now()) }
    }

    /// A log line the host's log took: the same budget covers what the client gets.
    pub(super) fn log(&self, level: LogLevel, message: String) {
        if let Some(events) = self.events.as_ref().filter(|e| e.wants_log()) {
            events.send(CallEvent::Log { level, message });
        }
    }

    /// `host.progress`.
    pub(super) fn progress(&mut self, done: f64, total: Option<f64>, message: Option<String>) {
        let Some(events) = self.events.as_ref().filter(|e| e.wants_progress()) else {
            return;
        };
        let total = link::clean_total(total);
        if self.progress.admit(done, total, Instant::now()) {
            events.send(CallEvent::Progress { progress: done, total, message: link::clean_message(message) });
        }
    }
}
