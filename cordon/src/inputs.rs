//! Multi round-trip requests on the 2026-07-28 wire (MCP SEP-2322, "input required").
//!
//! A client on that revision has no session and cannot be sent a request, so a guest's question
//! (`ask`, `sample`, `elicit`) cannot wait for its answer. Instead the call ends with an
//! `InputRequiredResult` listing the unanswered questions, and the client calls again with
//! `inputResponses` and the `requestState` it was given. Every call runs in a fresh instance
//! anyway, so the next try simply runs the guest again from the start and answers each question
//! from what the client sent ([`crate::notify`] and the sandbox do that part). This module is the
//! wire side:
//!
//! - [`round`] builds a try's [`InputRound`] from the request: the answers sealed into its
//!   `requestState` by an earlier try, then its `inputResponses`, and the capabilities the client
//!   declared in `_meta`;
//! - [`input_required`] turns [`ClientNeeds`] into the result or error the client gets: an
//!   `InputRequiredResult` whose `requestState` carries the answers used so far (a question asked
//!   in an early round is asked again in the later ones, and the client sends only the latest
//!   answers), or `-32021` for a capability the client did not declare.
//!
//! `requestState` comes back from the client, so it is untrusted: it is sealed with HMAC-SHA256
//! (rmcp's `RequestStateCodec`) under a key drawn when the process starts, bound to the caller,
//! the method, its target and its arguments, and expires after [`STATE_TTL`]. A state that fails
//! any of that is refused with `-32602`, never used. The key is not persisted: after a restart
//! (or on another replica) the client's state no longer opens and it starts the call over. The
//! state is signed, not encrypted: it holds only answers the client itself gave.

use cordon_core::{AskKind, ClientNeeds, PendingAsk};
use cordon_sandbox::link::{AskCapabilities, InputRound};
use rmcp::model::{
    ClientCapabilities, InputRequest, InputRequests, InputRequiredResult, InputResponses, ProtocolVersion,
    RequestStateCodec, SealOptions,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long a `requestState` stays valid: the user may take a while to answer an elicitation.
pub const STATE_TTL: Duration = Duration::from_secs(60 * 60);

/// What a `requestState` carries from one try to the next.
#[derive(serde::Serialize, serde::Deserialize)]
struct CarriedState {
    /// Answers by question key.
    answers: BTreeMap<String, Value>,
    /// The questions the try that issued this state asked: the only keys the next try's
    /// `inputResponses` may answer.
    #[serde(default)]
    asked: BTreeSet<String>,
}

/// The process's sealing key, drawn once; `None` when the OS gives no randomness (then no
/// state is issued or opened: a guessable key would let a client forge answers).
fn codec() -> Result<&'static RequestStateCodec, McpError> {
    static CODEC: OnceLock<Option<RequestStateCodec>> = OnceLock::new();
    let codec = CODEC.get_or_init(|| {
        let mut key = [0u8; 32];
        let drawn = getrandom::fill(&mut key).map_err(|e| e.to_string());
        match drawn.and_then(|()| RequestStateCodec::try_new(key.to_vec()).map_err(|e| e.to_string())) {
            Ok(codec) => Some(codec),
            Err(e) => {
                tracing::error!(error = %e, "cannot make a key for requestState: stateless clients cannot be asked");
                None
            }
        }
    });
    codec.as_ref().ok_or_else(|| McpError::internal_error("requestState cannot be sealed on this host", None))
}

/// Whether this request came on the 2026-07-28 wire (or later): per-request metadata, no
/// session to send a request on.
fn is_inline(context: &RequestContext<RoleServer>) -> bool {
    context.meta.protocol_version().is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str())
}

/// What ties a `requestState` to one request: who asks, which method and target, with what
/// arguments.
pub fn binding(principal: &str, method: &str, target: &str, arguments: &Value) -> Vec<u8> {
    let arguments = Sha256::digest(arguments.to_string().as_bytes());
    format!("{principal}\n{method}\n{target}\n{}", hex::encode(arguments)).into_bytes()
}

/// The try's inputs on the 2026-07-28 wire ([`prepare`] calls it only there). A `requestState`
/// that does not open is `-32602`.
fn round(
    context: &RequestContext<RoleServer>,
    binding: &[u8],
    responses: Option<InputResponses>,
    state: Option<&str>,
) -> Result<Arc<InputRound>, McpError> {
    let responses = responses.unwrap_or_default();
    let answers = match state {
        // A later try: its state lists what the host asked, and only those questions take an
        // answer from `inputResponses` (one sent ahead of its question, or beside the state, is
        // dropped: the next round asks it again).
        Some(sealed) => {
            let CarriedState { mut answers, asked } = codec()?.open_json_with(sealed, binding).map_err(|e| {
                McpError::invalid_params(
                    format!("requestState is not one this server issued for this request: {e}"),
                    Some(json!({"reason": e.to_string()})),
                )
            })?;
            let unasked = responses.keys().filter(|key| !asked.contains(*key)).count();
            if unasked > 0 {
                tracing::debug!(unasked, "inputResponses for questions this server did not ask were ignored");
            }
            answers.extend(responses.into_iter().filter(|(key, _)| asked.contains(key)));
            answers
        }
        // A first try: answers the client gives up front are used (SEP-2322 lets a client send
        // them without a state); a key the guest never asks for is never read.
        None => responses,
    };
    let declared = context.client_capabilities().unwrap_or_default();
    let capabilities = AskCapabilities {
        sample: declared.sampling.is_some(),
        elicit: declared.elicitation.is_some(),
        roots: declared.roots.is_some(),
    };
    Ok(Arc::new(InputRound { answers, capabilities }))
}

/// What ties one request's `requestState` to it ([`binding`]); none on a session wire, where
/// questions go to the client as requests and no state is issued.
pub struct StateBinding(Option<Vec<u8>>);

impl StateBinding {
    /// Whether the reply can carry questions back (the 2026-07-28 wire).
    pub fn carries_questions(&self) -> bool {
        self.0.is_some()
    }

    /// The client's side of [`ClientNeeds`] for this request ([`input_required`]).
    pub fn input_required(&self, needs: ClientNeeds) -> Result<InputRequiredResult, McpError> {
        input_required(needs, self.0.as_deref())
    }
}

/// For one request: what binds its `requestState` and the try's inputs ([`round`]), only on the
/// 2026-07-28 wire; nothing with a session, so a session's requests pay for no hashing.
pub fn prepare(
    context: &RequestContext<RoleServer>,
    principal: &str,
    method: &str,
    target: &str,
    arguments: impl FnOnce() -> Value,
    responses: Option<InputResponses>,
    state: Option<&str>,
) -> Result<(StateBinding, Option<Arc<InputRound>>), McpError> {
    if !is_inline(context) {
        return Ok((StateBinding(None), None));
    }
    let binding = binding(principal, method, target, &arguments());
    let round = round(context, &binding, responses, state)?;
    Ok((StateBinding(Some(binding)), Some(round)))
}

/// The MCP method that asks a client what a guest's question asks.
pub fn mcp_method(kind: AskKind) -> &'static str {
    match kind {
        AskKind::Sample => "sampling/createMessage",
        AskKind::Elicit => "elicitation/create",
        AskKind::ListRoots => "roots/list",
    }
}

/// The client capability that says a client can be asked `kind`.
pub fn mcp_capability(kind: AskKind) -> &'static str {
    match kind {
        AskKind::Sample => "sampling",
        AskKind::Elicit => "elicitation",
        AskKind::ListRoots => "roots",
    }
}

/// A guest's pending questions as the MCP requests that ask them (an `InputRequiredResult`'s or
/// an `input_required` task's `inputRequests`).
pub fn input_requests(requests: BTreeMap<String, PendingAsk>) -> Result<InputRequests, McpError> {
    let mut input_requests = InputRequests::new();
    for (key, pending) in requests {
        let request = json!({"method": mcp_method(pending.kind), "params": pending.params});
        let request: InputRequest = serde_json::from_value(request).map_err(|e| {
            McpError::internal_error(
                format!("the plugin asked question {key:?} with params MCP does not allow: {e}"),
                None,
            )
        })?;
        input_requests.insert(key, request);
    }
    Ok(input_requests)
}

/// The client's side of [`ClientNeeds`]: an `InputRequiredResult` whose `requestState` is bound
/// to `binding`, or `-32021`. Questions left for the client only arise on the 2026-07-28 wire, so
/// without a binding they are an internal error rather than a state bound to nothing.
fn input_required(needs: ClientNeeds, binding: Option<&[u8]>) -> Result<InputRequiredResult, McpError> {
    let (requests, answered) = match needs {
        ClientNeeds::Input { requests, answered } => (requests, answered),
        ClientNeeds::Capability(kind) => {
            let required: ClientCapabilities = serde_json::from_value(json!({ mcp_capability(kind): {} }))
                .map_err(|e| McpError::internal_error(format!("cannot name the capability: {e}"), None))?;
            return Err(McpError::missing_required_client_capability(required));
        }
    };
    let binding = binding.ok_or_else(|| {
        McpError::internal_error("a question was left for a client that is asked on its session", None)
    })?;
    let asked: BTreeSet<String> = requests.keys().cloned().collect();
    let input_requests = input_requests(requests)?;
    let sealed = codec()?
        .seal_json_with(
            &CarriedState { answers: answered, asked },
            &SealOptions::new().associated_data(binding).ttl(STATE_TTL),
        )
        .map_err(|e| McpError::internal_error(format!("cannot seal requestState: {e}"), None))?;
    Ok(InputRequiredResult::new(Some(input_requests), Some(sealed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(key: &str, answered: &[(&str, Value)]) -> ClientNeeds {
        let mut requests = BTreeMap::new();
        requests.insert(
            key.to_string(),
            PendingAsk {
                kind: AskKind::Elicit,
                params: json!({"message": "Name?", "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}}),
            },
        );
        ClientNeeds::Input { requests, answered: answered.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() }
    }

    #[test]
    fn the_state_carries_answers_to_the_same_request_only() {
        let binding = binding("alice", "tools/call", "greet", &json!({"a": 1}));
        let answer = json!({"action": "accept", "content": {"name": "Alice"}});
        let result = input_required(needs("step2", &[("step1", answer.clone())]), Some(&binding)).unwrap();
        let wire = serde_json::to_value(&result).unwrap();
        assert_eq!(wire["resultType"], "input_required");
        assert_eq!(wire["inputRequests"]["step2"]["method"], "elicitation/create");
        let state = result.request_state.unwrap();

        let codec = codec().unwrap();
        let carried: CarriedState = codec.open_json_with(&state, &binding).unwrap();
        assert_eq!(carried.answers["step1"], answer);
        // Another caller, tool or argument list cannot use it; nor can a changed state.
        for other in [
            super::binding("bob", "tools/call", "greet", &json!({"a": 1})),
            super::binding("alice", "tools/call", "other", &json!({"a": 1})),
            super::binding("alice", "tools/call", "greet", &json!({"a": 2})),
        ] {
            assert!(codec.open_json_with::<CarriedState>(&state, &other).is_err());
        }
        assert!(codec.open_json_with::<CarriedState>(&format!("{state}-TAMPERED"), &binding).is_err());
    }

    #[test]
    fn questions_without_a_binding_get_no_state() {
        let error = StateBinding(None).input_required(needs("step1", &[])).unwrap_err();
        assert_eq!(error.code, rmcp::model::ErrorCode::INTERNAL_ERROR);
        assert!(error.message.contains("session"), "{}", error.message);
    }

    #[test]
    fn a_missing_capability_is_32021_naming_it() {
        let error = input_required(ClientNeeds::Capability(AskKind::Sample), None).unwrap_err();
        assert_eq!(error.code.0, -32021);
        assert_eq!(error.data.unwrap()["requiredCapabilities"], json!({"sampling": {}}));
    }

    #[test]
    fn params_mcp_does_not_allow_are_an_error_not_a_panic() {
        let mut requests = BTreeMap::new();
        requests.insert("k".to_string(), PendingAsk { kind: AskKind::Elicit, params: json!({"message": 3}) });
        let error = input_required(ClientNeeds::Input { requests, answered: BTreeMap::new() }, Some(b"x")).unwrap_err();
        assert!(error.message.contains("\"k\""), "{}", error.message);
    }
}
