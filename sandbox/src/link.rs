//! How one call is tied to its client: cancellation coming in, progress reports, guest log
//! lines and questions going out. Nothing here speaks a protocol: the transport turns these into
//! messages of its own.
//!
//! A transport builds a [`CallLink`] for each call: the client's cancellation token, and an
//! [`EventSink`] when the client listens for something. The guest's `progress` and `log` imports
//! push [`CallEvent`]s into the sink without ever waiting (a full buffer drops the event: a slow
//! client must not slow the guest down, let alone hold its slot); the transport forwards them.
//!
//! Progress reports are thinned here, before they leave the sandbox ([`ProgressGate`]): `done`
//! must be finite and increase from one forwarded report to the next, at most
//! [`MAX_PROGRESS_PER_CALL`] go out per call, and at most [`PROGRESS_PER_SECOND`] per second
//! (a token bucket, so short bursts pass). The first report that reaches its `total` skips the
//! per-second bucket, so a client sees the end even when the guest reported too fast.
//!
//! A guest may also *ask* the client something during a call (`sample`, `elicit`, `ask`): the
//! question travels as a [`CallEvent::Ask`] carrying a neutral [`Ask`] (its [`AskKind`] and the
//! guest's params) with a reply channel; the transport sends it to the client on the call's
//! stream and passes the answer back. Unlike the notifications, an ask waits (the guest is
//! blocked on it), for at most [`ASK_TIMEOUT`] and never past the call's own timeout. A
//! transport that cannot reach the client with a request (stateless HTTP, `cordon call`), or a
//! client that did not declare it can be asked, gets [`AskError::Unsupported`] at once.
//!
//! A client that connects without a session cannot be sent a request at all; it declares what
//! it can be asked with each request instead. There the transport gives the call an
//! [`InputRound`]: the answers the client sent with this try. An ask answered there is answered
//! at once; one that is not ends the run, and the call returns [`ClientNeeds::Input`] (every
//! question the run asked and could not answer, as [`PendingAsk`]s), which the transport sends
//! in its protocol's terms. The client calls again with its answers and the call runs again from
//! the start in a fresh instance. A question the client did not declare it takes is refused as
//! `unsupported`; a guest that then fails with that error makes the call fail with
//! [`ClientNeeds::Capability`].
//!
//! [`ClientNeeds::Input`]: cordon_core::ClientNeeds::Input
//! [`ClientNeeds::Capability`]: cordon_core::ClientNeeds::Capability

use crate::bindings::cordon::plugin::host::LogLevel;
use cordon_core::{AskKind, PendingAsk};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Events one call may have waiting for its transport; more are dropped, not waited for.
const EVENT_BUFFER: usize = 256;
/// Progress reports forwarded per call, at most.
pub const MAX_PROGRESS_PER_CALL: u32 = 1000;
/// Progress reports forwarded per second, sustained; also the largest burst.
pub const PROGRESS_PER_SECOND: u32 = 10;
/// Longest progress message forwarded, in bytes; longer ones are cut at a character boundary.
pub const MAX_PROGRESS_MESSAGE: usize = 256;
/// Longest wait for the client's answer to a guest's `sample` or `elicit`; the call's own timeout
/// applies as well.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(120);

/// How one call is tied to the client that made it.
#[derive(Clone, Default)]
pub struct CallLink {
    /// Cancelled when the client cancels the call or goes away; never, for `cordon call`.
    pub cancel: CancellationToken,
    /// Where the guest's reports go; `None` when the client listens for none.
    pub events: Option<EventSink>,
    /// On the 2026-07-28 wire: the client's answers to this call's questions, and what it may be
    /// asked. Asks then never go to `events`.
    pub inputs: Option<Arc<InputRound>>,
}

/// One try of a call by a client that cannot be sent requests (the 2026-07-28 wire).
#[derive(Debug, Default)]
pub struct InputRound {
    /// Answers by question key: those carried over from earlier tries, then what the client sent
    /// with this one (`inputResponses`).
    pub answers: BTreeMap<String, Value>,
    /// What the client declared with this request.
    pub capabilities: AskCapabilities,
}

/// Something a running guest reported.
#[derive(Debug)]
pub enum CallEvent {
    /// A progress report that passed the [`ProgressGate`].
    Progress {
        /// Work done so far; larger than in any earlier report of the call.
        progress: f64,
        /// Total work, when the guest knows it.
        total: Option<f64>,
        /// A short note on the current step.
        message: Option<String>,
    },
    /// A log line within the call's output budget.
    Log {
        /// The guest's level.
        level: LogLevel,
        /// The line.
        message: String,
    },
    /// A request for the client; its answer goes back on `reply`.
    Ask {
        /// What is asked.
        ask: Ask,
        /// Where the client's answer (its result, as JSON) goes.
        reply: oneshot::Sender<Result<Value, AskError>>,
    },
}

/// A question a guest asks its client: what it asks, and the guest's params.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// What is asked.
    pub kind: AskKind,
    /// The params, a JSON object as the guest wrote it.
    pub params: Value,
}

/// The names the `cordon:plugin` contract gives its questions: an `input-request`'s `method`
/// (the contract borrowed them from MCP, so a guest author recognises them). They are the
/// guest's vocabulary; how a transport carries a question is the transport's business.
const CONTRACT_NAMES: [(&str, AskKind); 3] = [
    ("sampling/createMessage", AskKind::Sample),
    ("elicitation/create", AskKind::Elicit),
    ("roots/list", AskKind::ListRoots),
];

/// The contract's name for a question of `kind`.
pub(crate) fn contract_name(kind: AskKind) -> &'static str {
    CONTRACT_NAMES.iter().find(|(_, known)| *known == kind).map_or("?", |(name, _)| name)
}

impl Ask {
    /// A question as a guest's `input-request` names it, with its params as JSON text (empty
    /// is `{}`).
    pub fn parse(name: &str, params: &str) -> Result<Ask, String> {
        let params: Value = if params.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(params).map_err(|e| format!("the params of {name} are not JSON: {e}"))?
        };
        if !params.is_object() {
            return Err(format!("the params of {name} must be a JSON object"));
        }
        let Some(&(_, kind)) = CONTRACT_NAMES.iter().find(|(known, _)| *known == name) else {
            return Err(format!(
                "cannot ask the client {name:?}: the methods are sampling/createMessage, \
                 elicitation/create and roots/list"
            ));
        };
        Ok(Ask { kind, params })
    }

    /// The contract's name for the question, for messages to the guest.
    pub fn name(&self) -> &'static str {
        contract_name(self.kind)
    }

    /// The question as one left for the client's next try.
    pub fn pending(&self) -> PendingAsk {
        PendingAsk { kind: self.kind, params: self.params.clone() }
    }

    /// Whether `answer` has the shape of an answer to this question, so that a guest is never
    /// handed something else as the client's answer.
    pub fn accepts(&self, answer: &Value) -> bool {
        match self.kind {
            AskKind::Sample => answer.get("role").is_some_and(Value::is_string) && answer.get("content").is_some(),
            AskKind::Elicit => answer
                .get("action")
                .and_then(Value::as_str)
                .is_some_and(|action| matches!(action, "accept" | "decline" | "cancel")),
            AskKind::ListRoots => answer.get("roots").is_some_and(Value::is_array),
        }
    }
}

/// Why an [`Ask`] got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AskError {
    /// The client cannot be asked: it did not declare the capability, or the transport has no
    /// way to send it a request.
    #[error("{0}")]
    Unsupported(String),
    /// The client answered with an error, or the connection failed.
    #[error("the client answered {method} with an error: {message}")]
    Client {
        /// The question, by its contract name.
        method: &'static str,
        /// What the client said.
        message: String,
    },
    /// No answer within [`ASK_TIMEOUT`].
    #[error("the client did not answer {0} within {1} s")]
    Timeout(&'static str, u64),
}

/// The sending half of a call's events, and what the client listens for.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<CallEvent>,
    progress: bool,
    log: bool,
    asks: AskCapabilities,
}

/// What the client can be asked during a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AskCapabilities {
    /// It declared `sampling` and the transport can send it requests.
    pub sample: bool,
    /// It declared `elicitation` and the transport can send it requests.
    pub elicit: bool,
    /// It declared `roots` and the transport can send it requests.
    pub roots: bool,
}

impl AskCapabilities {
    /// Whether the client may be asked `ask`.
    pub fn allows(&self, ask: &Ask) -> bool {
        match ask.kind {
            AskKind::Sample => self.sample,
            AskKind::Elicit => self.elicit,
            AskKind::ListRoots => self.roots,
        }
    }
}

impl EventSink {
    /// A sink and the receiver its transport drains. `progress`: the request carried a progress
    /// token; `log`: the session asked for log messages.
    pub fn channel(progress: bool, log: bool) -> (EventSink, mpsc::Receiver<CallEvent>) {
        Self::with_asks(progress, log, AskCapabilities::default())
    }

    /// The same, for a client that can also be asked what `asks` says.
    pub fn with_asks(progress: bool, log: bool, asks: AskCapabilities) -> (EventSink, mpsc::Receiver<CallEvent>) {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        (EventSink { tx, progress, log, asks }, rx)
    }

    /// Asks the client and waits for its answer (see the module docs).
    pub async fn ask(&self, ask: Ask) -> Result<Value, AskError> {
        let method = ask.name();
        if !self.asks.allows(&ask) {
            return Err(unsupported(method));
        }
        let (reply, answer) = oneshot::channel();
        // Unlike a notification, an ask waits for room: the guest is blocked on it anyway.
        if self.tx.send(CallEvent::Ask { ask, reply }).await.is_err() {
            return Err(AskError::Client { method, message: "the client went away".into() });
        }
        match tokio::time::timeout(ASK_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_dropped)) => Err(AskError::Client { method, message: "the client went away".into() }),
            Err(_elapsed) => Err(AskError::Timeout(method, ASK_TIMEOUT.as_secs())),
        }
    }

    /// Whether progress reports are wanted.
    pub fn wants_progress(&self) -> bool {
        self.progress
    }

    /// Whether log lines are wanted.
    pub fn wants_log(&self) -> bool {
        self.log
    }

    /// Queues an event, or drops it when the buffer is full or the transport stopped listening.
    pub fn send(&self, event: CallEvent) {
        if self.tx.try_send(event).is_err() {
            tracing::debug!("a call event was dropped: the client is not keeping up");
        }
    }
}

/// The refusal for a client that cannot be asked `method`.
pub fn unsupported(method: &str) -> AskError {
    AskError::Unsupported(format!(
        "the client cannot be asked {method}: it did not declare the capability, or it is connected \
         without a session (stateless HTTP, `cordon call`)"
    ))
}

/// Decides which progress reports of one call go out (see the module docs).
#[derive(Debug)]
pub struct ProgressGate {
    last: Option<f64>,
    forwarded: u32,
    tokens: f64,
    refilled: Instant,
    completed: bool,
}

impl ProgressGate {
    /// A gate for a call starting at `now`, with a full bucket.
    pub fn new(now: Instant) -> Self {
        Self { last: None, forwarded: 0, tokens: f64::from(PROGRESS_PER_SECOND), refilled: now, completed: false }
    }

    /// Whether a report of `done` (out of `total`) at `now` may go out; counts it if so.
    pub fn admit(&mut self, done: f64, total: Option<f64>, now: Instant) -> bool {
        if !done.is_finite() || self.last.is_some_and(|last| done <= last) || self.forwarded >= MAX_PROGRESS_PER_CALL {
            return false;
        }
        let rate = f64::from(PROGRESS_PER_SECOND);
        self.tokens = (self.tokens + now.saturating_duration_since(self.refilled).as_secs_f64() * rate).min(rate);
        self.refilled = now;
        let completes = !self.completed && total.is_some_and(|total| done >= total);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
        } else if !completes {
            return false;
        }
        self.completed |= completes;
        self.last = Some(done);
        self.forwarded += 1;
        true
    }
}

/// A progress total worth forwarding: finite and not negative.
pub fn clean_total(total: Option<f64>) -> Option<f64> {
    total.filter(|t| t.is_finite() && *t >= 0.0)
}

/// A progress message cut to [`MAX_PROGRESS_MESSAGE`] bytes at a character boundary.
pub fn clean_message(message: Option<String>) -> Option<String> {
    message.map(|mut m| {
        if m.len() > MAX_PROGRESS_MESSAGE {
            let mut end = MAX_PROGRESS_MESSAGE;
            while !m.is_char_boundary(end) {
                end -= 1;
            }
            m.truncate(end);
        }
        m
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_increasing_finite_reports_pass() {
        let t0 = Instant::now();
        let mut gate = ProgressGate::new(t0);
        assert!(gate.admit(1.0, Some(3.0), t0));
        assert!(!gate.admit(1.0, Some(3.0), t0), "equal to the last");
        assert!(!gate.admit(0.5, Some(3.0), t0), "smaller than the last");
        assert!(!gate.admit(f64::NAN, None, t0));
        assert!(!gate.admit(f64::INFINITY, None, t0));
        assert!(gate.admit(2.0, Some(3.0), t0));
    }

    #[test]
    fn a_burst_is_cut_at_the_per_second_cap_but_completion_gets_through() {
        let t0 = Instant::now();
        let mut gate = ProgressGate::new(t0);
        let passed = (1..=100).filter(|i| gate.admit(f64::from(*i), Some(1000.0), t0)).count();
        assert_eq!(passed, PROGRESS_PER_SECOND as usize);
        assert!(gate.admit(1000.0, Some(1000.0), t0), "the report that completes is not thinned");
        assert!(!gate.admit(1001.0, Some(1001.0), t0), "only once");
        // The bucket refills with time.
        assert!(gate.admit(1002.0, None, t0 + Duration::from_millis(150)));
    }

    #[test]
    fn no_call_forwards_more_than_the_per_call_cap() {
        let t0 = Instant::now();
        let mut gate = ProgressGate::new(t0);
        let passed = (1..=2 * MAX_PROGRESS_PER_CALL)
            .filter(|i| gate.admit(f64::from(*i), None, t0 + Duration::from_secs(u64::from(*i))))
            .count();
        assert_eq!(passed, MAX_PROGRESS_PER_CALL as usize);
    }

    #[test]
    fn asks_parse_known_methods_only_and_check_the_answer_shape() {
        let roots = Ask::parse("roots/list", "").unwrap();
        assert_eq!((roots.name(), roots.kind), ("roots/list", AskKind::ListRoots));
        assert!(roots.accepts(&json!({"roots": []})));
        assert!(!roots.accepts(&json!(12345)));
        let elicit = Ask::parse("elicitation/create", r#"{"message": "Name?"}"#).unwrap();
        assert!(elicit.accepts(&json!({"action": "decline"})));
        assert!(!elicit.accepts(&json!({"action": "maybe"})));
        assert!(!elicit.accepts(&json!({"name": "Alice"})));
        let sample = Ask::parse("sampling/createMessage", "{}").unwrap();
        assert!(sample.accepts(&json!({"role": "assistant", "content": {"type": "text", "text": "hi"}})));
        assert!(!sample.accepts(&json!({"content": "hi"})));
        assert!(Ask::parse("ping", "{}").unwrap_err().contains("ping"));
        assert!(Ask::parse("roots/list", "[1]").is_err());
        assert!(Ask::parse("roots/list", "{").is_err());
        let only_sampling = AskCapabilities { sample: true, ..AskCapabilities::default() };
        assert!(only_sampling.allows(&sample) && !only_sampling.allows(&elicit) && !only_sampling.allows(&roots));
    }

    #[test]
    fn totals_and_messages_are_cleaned() {
        assert_eq!(clean_total(Some(f64::NAN)), None);
        assert_eq!(clean_total(Some(-1.0)), None);
        assert_eq!(clean_total(Some(4.0)), Some(4.0));
        let long = "é".repeat(MAX_PROGRESS_MESSAGE);
        let cut = clean_message(Some(long)).unwrap();
        assert!(cut.len() <= MAX_PROGRESS_MESSAGE && cut.chars().all(|c| c == 'é'));
        assert_eq!(clean_message(Some("ok".into())), Some("ok".into()));
    }
}
