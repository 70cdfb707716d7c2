//! The questions a guest asks its client during a call (`sample`, `elicit`, `ask`): sent on the
//! call's stream to a client with a session, answered from the try's inputs by a client without
//! one (or left pending, which ends the run), refused when the client cannot be asked.

use crate::bindings::cordon::plugin::host::InputRequest;
use crate::bindings::CallError;
use crate::link::{self, Ask, AskError, EventSink, InputRound};
use cordon_core::{AskKind, ClientNeeds, PendingAsk};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One call's questions: where they go, and what became of them.
pub(super) struct Asks {
    /// The call's stream to a client with a session; asks go there when there are no `inputs`.
    events: Option<EventSink>,
    /// On the 2026-07-28 wire, the client's answers for this try; `None` with a session.
    inputs: Option<Arc<InputRound>>,
    /// Questions asked and not answered, by key.
    pending: BTreeMap<String, PendingAsk>,
    /// Answers used.
    answered: BTreeMap<String, Value>,
    /// The first question refused because the client did not declare it takes it.
    missing_capability: Option<AskKind>,
    /// Questions asked through `sample` and `elicit`, which number their keys.
    numbered: usize,
    /// `plugin/call-id`, for the debug lines.
    label: Arc<str>,
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

impl Asks {
    pub(super) fn new(events: Option<EventSink>, inputs: Option<Arc<InputRound>>, label: Arc<str>) -> Asks {
        Asks {
            events,
            inputs,
            pending: BTreeMap::new(),
            answered: BTreeMap::new(),
            missing_capability: None,
            numbered: 0,
            label,
        }
    }

    /// What the client must give before this call can finish, if that is why the run ended
    /// (`failed_unsupported`: the guest failed with kind `unsupported`).
    pub(super) fn client_needs(&mut self, failed_unsupported: bool) -> Option<ClientNeeds> {
        if !self.pending.is_empty() {
            return Some(ClientNeeds::Input {
                requests: std::mem::take(&mut self.pending),
                answered: std::mem::take(&mut self.answered),
            });
        }
        self.missing_capability.filter(|_| failed_unsupported).map(ClientNeeds::Capability)
    }

    /// `host.sample`.
    pub(super) async fn sample(&mut self, request: String) -> wasmtime::Result<Result<String, CallError>> {
        match ask_params(&request, AskKind::Sample) {
            Ok(params) => self.ask_numbered(Ask { kind: AskKind::Sample, params }).await,
            Err(e) => Ok(Err(e)),
        }
    }

    /// `host.elicit`.
    pub(super) async fn elicit(&mut self, request: String) -> wasmtime::Result<Result<String, CallError>> {
        match ask_params(&request, AskKind::Elicit) {
            Ok(params) => self.ask_numbered(Ask { kind: AskKind::Elicit, params }).await,
            Err(e) => Ok(Err(e)),
        }
    }

    /// `host.ask`: several questions, each under the guest's own key.
    pub(super) async fn ask(
        &mut self,
        requests: Vec<InputRequest>,
    ) -> wasmtime::Result<Vec<Result<String, CallError>>> {
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

    /// One question: answered from this try's inputs on the 2026-07-28 wire (or left pending),
    /// else sent to the client on the call's stream.
    async fn ask_one(&mut self, key: String, ask: Ask) -> Result<String, CallError> {
        let method = ask.name();
        if let Some(inputs) = &self.inputs {
            if !inputs.capabilities.allows(&ask) {
                self.missing_capability.get_or_insert(ask.kind);
                return Err(ask_error(link::unsupported(method)));
            }
            // An answer of the wrong shape is asked again rather than handed to the guest.
            if let Some(answer) = inputs.answers.get(&key).filter(|answer| ask.accepts(answer)) {
                let text = answer.to_string();
                self.answered.insert(key, answer.clone());
                return Ok(text);
            }
            tracing::debug!(call = %self.label, method, key, "the guest asks a stateless client: input required");
            self.pending.insert(key, ask.pending());
            return Ok(String::new());
        }
        let Some(events) = self.events.clone() else {
            return Err(ask_error(link::unsupported(method)));
        };
        tracing::debug!(call = %self.label, method, "the guest asks the client");
        events.ask(ask).await.map(|answer| answer.to_string()).map_err(ask_error)
    }

    /// `sample` and `elicit`: one question with a numbered key.
    async fn ask_numbered(&mut self, ask: Ask) -> wasmtime::Result<Result<String, CallError>> {
        self.numbered += 1;
        let key = format!("{}-{}", key_prefix(ask.kind), self.numbered);
        let answer = self.ask_one(key, ask).await;
        self.end_if_pending()?;
        Ok(answer)
    }

    /// Ends the run once a question is pending: the rest of it needs the client's answer.
    fn end_if_pending(&self) -> wasmtime::Result<()> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(wasmtime::Error::new(InputRequired))
        }
    }
}

/// What the keys of `sample` and `elicit` questions start with (`sampling-1`, …): stable, so
/// that a client's answers from one try find their questions in the next.
fn key_prefix(kind: AskKind) -> &'static str {
    match kind {
        AskKind::Sample => "sampling",
        AskKind::Elicit => "elicitation",
        AskKind::ListRoots => "roots",
    }
}

/// Parses the JSON params a guest passed to `sample` or `elicit`.
fn ask_params(request: &str, kind: AskKind) -> Result<serde_json::Value, CallError> {
    match serde_json::from_str::<serde_json::Value>(request) {
        Ok(params @ serde_json::Value::Object(_)) => Ok(params),
        _ => Err(CallError {
            kind: "invalid_request".into(),
            message: format!("the params for {} must be a JSON object", link::contract_name(kind)),
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
