//! The per-call path, top to bottom in one place:
//!
//! 1. **authenticate** — the transport hands over an authenticated [`Principal`];
//! 2. **resolve** — the published tool name, in the catalog snapshot taken at the start;
//! 3. **validate** — size cap, then the strict input schema (`invalid_arguments`);
//! 4. **idempotency** — derive the call's key; replay a stored outcome, wait for a duplicate in
//!    flight, or claim the key durably before running ([`crate::idempotency`]);
//! 5. **limits** — an instance slot within `max_concurrency`, waiting at most `queue_timeout`;
//! 6. **instance** — a fresh instance under fuel, timeout and memory caps ([`crate::sandbox`]);
//! 7. **grants** — the plugin's grants for this principal go into the instance: directories,
//!    and outbound HTTP whose every request is checked ([`crate::grants`]); a refused request
//!    turns a failed call into `egress_denied` or `forbidden`, naming the URL;
//! 8. **result** — output size cap, JSON and output-schema checks; a keyed outcome is recorded
//!    durably before the reply.
//!
//! The client's cancellation ([`CallLink::cancel`]) is honoured wherever the call waits: for a
//! duplicate in flight (step 4), for a slot (step 5), and in the guest (step 6). The path still
//! runs to its end: the slot is released, a keyed claim is settled ([`Ticket::cancelled`]) and
//! the audit line says `cancelled`; only the reply goes nowhere.
//!
//! [`Ticket::cancelled`]: crate::idempotency::Ticket::cancelled

use crate::app::Cordon;
use crate::audit::{self, AuditRecord};
use crate::auth::Caller;
use crate::idempotency::{Begin, KeyedCall, ProvidedKey, ToolKeying};
use crate::metrics::CallSample;
use crate::ratelimit;
use crate::registry::{LoadedPlugin, ToolEntry};
use cordon_core::{CallOutcome, IdempotencyUse, Principal, ToolSuccess};
use cordon_core::{ErrorType, ToolError};
use cordon_sandbox::bindings::CallContext;
use cordon_sandbox::grants::http::{EgressRecord, Refusal};
use cordon_sandbox::link::CallLink;
use cordon_sandbox::{CallGrants, GuestReply, Invocation};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{SemaphorePermit, TryAcquireError};

/// One tool call as a transport received it.
pub struct CallRequest {
    /// Published tool name.
    pub tool: String,
    /// Arguments; `None` is an empty object.
    pub arguments: Option<Map<String, Value>>,
    /// Who is calling, with what token and scope.
    pub caller: Caller,
    /// An idempotency key the transport received (`_meta`, HTTP header, CLI flag).
    pub idempotency_key: Option<ProvidedKey>,
    /// The client's cancellation, and where the guest's progress and log lines go.
    pub link: CallLink,
    /// The task this call runs for, if it runs as one ([`crate::tasks`]), for its audit line.
    pub task_id: Option<Arc<str>>,
}

/// A call the protocol layer must refuse (a JSON-RPC error, not a tool result).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// No tool of that name is served.
    #[error("unknown tool: {0}")]
    UnknownTool(String),
}

/// What a call did, for its audit line and its metrics. Each step of [`Cordon::call`] returns its
/// part; `call` puts them together.
#[derive(Default)]
struct CallTrace {
    idempotency: IdempotencyUse,
    key: Option<String>,
    /// The arguments' fingerprint when a keyed call computed it; else the audit writer hashes
    /// `unhashed_arguments`.
    arguments_sha256: String,
    unhashed_arguments: Option<Value>,
    arguments: Option<Value>,
    /// The serialized arguments' size: what the audit queue charges for the two fields above.
    arguments_len: usize,
    fuel_used: u64,
    egress: Option<Arc<Mutex<EgressRecord>>>,
    /// The client's cancellation ended the call (not a guest that said `cancelled`).
    cancelled: bool,
}

/// Who calls which tool, fixed when the call arrives: what every step and the audit line name.
struct Arrival<'a> {
    id: String,
    tool: &'a ToolEntry,
    caller: &'a Caller,
}

/// What steps 5 to 8 made of one run.
struct Executed {
    outcome: CallOutcome,
    fuel_used: u64,
    egress: Option<Arc<Mutex<EgressRecord>>>,
    /// The client's cancellation ended it.
    cancelled: bool,
}

impl Cordon {
    /// Runs one tool call through the whole path (see the module docs): each numbered step is
    /// one call below, returning what the next needs and what the audit line records.
    pub async fn call(&self, request: CallRequest) -> Result<CallOutcome, ProtocolError> {
        let started = Instant::now();
        // Counted until the outcome is known (a dropped call too): what a graceful drain waits for.
        let _in_flight = self.in_flight.enter();
        // 1. authenticate: `request.caller` was established by the transport.
        // 2. resolve, in one snapshot: the call runs on the plugin version it started with.
        let tool = self.catalog().tool(&request.tool).cloned().ok_or(ProtocolError::UnknownTool(request.tool))?;
        let CallRequest { arguments, caller, idempotency_key, link, task_id, .. } = request;
        let call = Arrival { id: uuid::Uuid::new_v4().simple().to_string(), tool: &tool, caller: &caller };
        // ... and authorize: a tool outside the caller's scope is refused before anything runs.
        if !caller.scope.allows(&tool.name) {
            let message = format!("this token may not call {}; its scope is {}", tool.name, caller.scope.describe());
            self.audit_denial(&caller, &tool.name, &message);
            let outcome = Err(ToolError::new(ErrorType::Forbidden, message));
            self.record_metrics(&call, &outcome, &CallTrace::default(), started);
            return Ok(outcome);
        }
        let arguments = Value::Object(arguments.unwrap_or_default());
        let (outcome, mut trace) = self.run_steps(&call, &arguments, idempotency_key, link).await;
        // The audit line's hash of the arguments, unless a keyed call or a refusal already has it.
        if trace.arguments_sha256.is_empty() {
            trace.unhashed_arguments = Some(arguments);
        }
        self.record_metrics(&call, &outcome, &trace, started);
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        // `debug`, not `info`: the audit line already records every call, and a second line per
        // call on stderr costs a write and a reader's wake-up per call (BENCHMARKS.md).
        tracing::debug!(
            call = %call.id, tool = %tool.name, principal = %caller.principal.0,
            outcome = match &outcome { Ok(_) => "ok", Err(e) => &e.kind },
            idempotency = trace.idempotency.as_str(),
            latency_us,
            "tool call"
        );
        let mut record =
            audit_line(&call.id, &caller, &tool.name, Some(&tool.plugin), outcome.as_ref().err(), latency_us);
        record.arguments_sha256 = trace.arguments_sha256;
        record.unhashed_arguments = trace.unhashed_arguments;
        record.arguments = trace.arguments;
        record.arguments_len = trace.arguments_len;
        record.idempotency_key = trace.key;
        record.idempotency = trace.idempotency;
        record.task_id = task_id.as_deref().map(str::to_string);
        record.fuel_used = trace.fuel_used;
        if let Some(egress) = trace.egress.as_ref().and_then(|e| e.lock().ok()) {
            record.egress(&egress);
        }
        self.audit.record(record);
        Ok(outcome)
    }

    /// Steps 3 to 8, each returning its part of the trace.
    async fn run_steps(
        &self,
        call: &Arrival<'_>,
        arguments: &Value,
        provided_key: Option<ProvidedKey>,
        link: CallLink,
    ) -> (CallOutcome, CallTrace) {
        let mut trace = CallTrace::default();
        // 3. validate: the size cap, then the strict input schema.
        let serialized = match serialized_within_cap(call.tool, arguments) {
            Ok(serialized) => serialized,
            Err(error) => {
                if error.is(ErrorType::InputTooLarge) {
                    // Refused arguments are not kept for the audit writer: their hash is taken
                    // here, at the caller's expense, and their values are never logged.
                    trace.arguments_sha256 = audit::arguments_sha256(arguments);
                }
                return (Err(error), trace);
            }
        };
        trace.arguments = self.audit.arguments(arguments);
        trace.arguments_len = serialized.len();
        if let Err(error) = call.tool.input.check_arguments(arguments) {
            return (Err(error), trace);
        }

        // 4. idempotency: the key, then a replay, a wait, or a durable claim.
        let keyed = match self.idempotency.key_for(
            provided_key.as_ref(),
            &keying(call.tool),
            arguments,
            &call.caller.principal,
            call.caller.idempotency_scope.as_deref(),
        ) {
            Ok(keyed) => keyed,
            Err(error) => return (Err(error), trace),
        };
        let Some(keyed) = keyed else {
            let executed = self.execute(call, serialized, None, link).await;
            let trace = trace_of(trace, &executed);
            return (executed.outcome, trace);
        };
        trace.key = Some(keyed.key().to_string());
        trace.arguments_sha256 = keyed.fingerprint().to_string();
        let ticket = match self.idempotency.begin(&keyed, &link.cancel).await {
            Ok((begin, claimed)) => {
                trace.idempotency = claimed.idempotency_use();
                match begin {
                    Begin::Replay(stored) => return (stored, trace),
                    Begin::Run(ticket) => ticket,
                }
            }
            Err(error) => {
                if error.is(ErrorType::IdempotencyKeyReused) {
                    trace.idempotency = IdempotencyUse::Reused;
                }
                trace.cancelled = error.is(ErrorType::Cancelled);
                return (Err(error), trace);
            }
        };
        if trace.idempotency == IdempotencyUse::Recovery {
            tracing::warn!(call = %call.id, tool = %call.tool.name, key = %keyed.key(),
                "recovering a keyed call cut off by a crash: re-running with the same upstream keys");
        }

        // 5.–8.
        let executed = self.execute(call, serialized, Some(&keyed), link).await;
        let trace = trace_of(trace, &executed);
        // ... and the claim settled: the outcome is durable before anyone sees it.
        let outcome = self.settle(call, &keyed, ticket, executed).await;
        (outcome, trace)
    }

    /// After step 8 of a keyed call: the outcome stored, or the claim released or kept when the
    /// run has no outcome yet (cancelled, or waiting for a stateless client's input).
    async fn settle(
        &self,
        call: &Arrival<'_>,
        keyed: &KeyedCall,
        ticket: Box<crate::idempotency::Ticket>,
        executed: Executed,
    ) -> CallOutcome {
        let outcome = executed.outcome;
        // A try that stopped to ask a stateless client has no outcome yet: like a cancelled run,
        // it releases or keeps its claim, and the client's next try (with its answers) runs again.
        let needs_input = outcome.as_ref().is_err_and(|e| e.is(ErrorType::InputRequired));
        if executed.cancelled || needs_input {
            // Could the run have acted outside the sandbox? An admitted request may have reached
            // its upstream; a writable directory may have been written.
            let requested = executed.egress.as_ref().is_some_and(|e| e.lock().map_or(true, |r| r.admitted > 0));
            let acted = requested || call.tool.plugin.grants.dirs.iter().any(|d| d.writable);
            // A store failure is logged by the ticket; the outcome stays `cancelled` (the client
            // gets no answer either way), and the claim left `in_progress` is recovered later.
            if let Ok(released) = ticket.cancelled(acted).await {
                let settled = if released { "key released" } else { "key kept, retryable" };
                let why =
                    if needs_input { "keyed call waiting for the client's input" } else { "cancelled keyed call" };
                tracing::info!(call = %call.id, tool = %call.tool.name, key = %keyed.key(), acted, "{why}: {settled}");
            }
            return outcome;
        }
        ticket.finish(&outcome).await?;
        outcome
    }

    /// Steps 5 to 8: a slot, a fresh instance with the grants, the checked result.
    async fn execute(
        &self,
        call: &Arrival<'_>,
        arguments: String,
        keyed: Option<&KeyedCall>,
        link: CallLink,
    ) -> Executed {
        let (tool, principal) = (call.tool, &call.caller.principal);
        // 5.–7. the plugin's rate and a slot, then a fresh instance with the grants.
        let context = CallContext {
            principal: principal.0.to_string(),
            call_id: call.id.clone(),
            idempotency_key: keyed.map(|k| k.key().to_string()),
        };
        let invocation = Invocation::Call { tool: tool.local_name.clone(), arguments, context };
        let upstream_key_base = keyed.map(|k| k.upstream_base.clone());
        let GuestRun { run, egress } =
            match self.run_guest(&tool.plugin, principal, upstream_key_base, &call.id, link, invocation).await {
                Ok(ran) => ran,
                Err(error) => {
                    let cancelled = error.is(ErrorType::Cancelled);
                    return Executed { outcome: Err(error), fuel_used: 0, egress: None, cancelled };
                }
            };
        let cancelled = run.cancelled;
        let fuel_used = run.fuel_used;
        // 8. result
        let outcome = checked_result(tool, run, &egress, principal);
        Executed { outcome, fuel_used, egress: Some(egress), cancelled }
    }

    /// The call's metrics, once per call, from the same trace as its audit line.
    fn record_metrics(&self, call: &Arrival<'_>, outcome: &CallOutcome, trace: &CallTrace, started: Instant) {
        self.metrics.record_call(CallSample {
            tool: &call.tool.name,
            plugin: &call.tool.plugin.name,
            outcome: outcome.as_ref().map(|_| ()),
            latency: started.elapsed(),
            fuel_used: trace.fuel_used,
            idempotency: trace.idempotency,
            egress_denied: trace.egress.as_ref().and_then(|e| e.lock().ok().map(|e| e.refused.len())).unwrap_or(0),
        });
    }

    /// The audit line of a call refused before the call path (an out-of-scope call over HTTP).
    pub fn audit_denial(&self, caller: &Caller, tool: &str, message: &str) {
        tracing::info!(tool, principal = %caller.principal.0, "tool call outside the token's scope refused");
        let catalog = self.catalog();
        let plugin = catalog.tool(tool).map(|t| &t.plugin);
        let error = ToolError::new(ErrorType::Forbidden, message);
        let call_id = uuid::Uuid::new_v4().simple().to_string();
        self.audit.record(audit_line(&call_id, caller, tool, plugin, Some(&error), 0));
    }
}

/// Step 3's first half: the arguments as the guest receives them, within the tool's
/// `max_input_bytes`.
fn serialized_within_cap(tool: &ToolEntry, arguments: &Value) -> Result<String, ToolError> {
    let limit = tool.plugin.limits.max_input_bytes;
    let serialized = serde_json::to_string(arguments)
        .map_err(|e| ToolError::new(ErrorType::InvalidArguments, format!("bad arguments: {e}")))?;
    if serialized.len() > limit {
        return Err(ToolError::new(
            ErrorType::InputTooLarge,
            format!("arguments are {} bytes; this tool accepts at most {limit}", serialized.len()),
        ));
    }
    Ok(serialized)
}

/// How step 4 keys a call to `tool`.
pub(crate) fn keying(tool: &ToolEntry) -> ToolKeying<'_> {
    ToolKeying {
        plugin: &tool.plugin.name,
        tool: &tool.name,
        read_only: tool.read_only,
        key_argument: tool.key_argument.as_deref(),
        config: &tool.plugin.idempotency,
    }
}

/// `trace` with what the run did.
fn trace_of(trace: CallTrace, executed: &Executed) -> CallTrace {
    CallTrace { fuel_used: executed.fuel_used, egress: executed.egress.clone(), cancelled: executed.cancelled, ..trace }
}

/// The audit line every guest run starts from — a tool call, a refused one, a resource read, a
/// prompt render, a completion: who asked for `what`, served by `plugin`, and how it ended.
pub(crate) fn audit_line(
    call_id: &str,
    caller: &Caller,
    what: &str,
    plugin: Option<&Arc<LoadedPlugin>>,
    error: Option<&ToolError>,
    latency_us: u64,
) -> AuditRecord {
    AuditRecord {
        time: audit::timestamp(std::time::SystemTime::now()),
        call_id: call_id.to_string(),
        principal: caller.principal.0.to_string(),
        token_id: caller.token_id.as_deref().map(str::to_string),
        idempotency_scope: caller.idempotency_scope.as_deref().map(str::to_string),
        tool: what.to_string(),
        plugin: plugin.map(|p| p.name.clone()).unwrap_or_default(),
        plugin_digest: plugin.map(|p| p.digest.clone()).unwrap_or_default(),
        outcome: if error.is_none() { audit::Outcome::Ok } else { audit::Outcome::Error },
        error_type: error.map(|e| e.kind.to_string()),
        error_message: error.map(|e| e.message.clone()),
        retryable: error.map(|e| e.retryable),
        latency_us,
        ..Default::default()
    }
}

/// Step 8: the guest's answer as the caller gets it — a refused request explained, the output
/// cap, JSON and the tool's output schema checked.
fn checked_result(
    tool: &ToolEntry,
    run: cordon_sandbox::Run,
    egress: &Mutex<EgressRecord>,
    principal: &Principal,
) -> CallOutcome {
    let limits = &tool.plugin.limits;
    let reply = run.reply.and_then(|reply| match reply {
        GuestReply::Output(Ok(output)) => Ok(output),
        GuestReply::Output(Err(e)) => Err(ToolError::from_guest(e.kind, e.message, e.retryable)),
        _ => Err(ToolError::new(ErrorType::Internal, "unexpected guest reply")),
    });
    let output = reply.map_err(|error| {
        // A cancelled call stays `cancelled`: the refusal did not end it, the client did; one
        // that waits for the client's input has not failed.
        if run.cancelled || error.client_needs.is_some() {
            return error;
        }
        explain_refusal(egress, principal).unwrap_or(error)
    })?;
    let Some(attached) = run.attached else {
        return Err(ToolError::new(
            ErrorType::OutputTooLarge,
            format!("the plugin attached more than the {} bytes this tool may return", limits.max_output_bytes),
        ));
    };
    let attached_size = attached.iter().map(cordon_sandbox::content_size).sum::<usize>();
    let size =
        output.text.as_ref().map_or(0, String::len) + output.json.as_ref().map_or(0, String::len) + attached_size;
    if size > limits.max_output_bytes {
        return Err(ToolError::new(
            ErrorType::OutputTooLarge,
            format!("the result is {size} bytes; this tool may return at most {}", limits.max_output_bytes),
        ));
    }
    let structured =
        match output.json {
            Some(json) => Some(serde_json::from_str::<Value>(&json).map_err(|e| {
                ToolError::new(ErrorType::InvalidOutput, format!("the plugin returned invalid JSON: {e}"))
            })?),
            None => None,
        };
    if let Some(schema) = &tool.output {
        let Some(value) = &structured else {
            return Err(ToolError::new(
                ErrorType::InvalidOutput,
                "the tool declares an output schema but returned no structured result",
            ));
        };
        let violations = schema.violations(value);
        if !violations.is_empty() {
            return Err(ToolError::schema_violations(
                ErrorType::InvalidOutput,
                "the result does not match the tool's output schema",
                violations,
            ));
        }
    }
    let attached = attached.iter().map(crate::content::block).collect();
    Ok(ToolSuccess { text: output.text, structured, attached })
}

/// One guest run and what it sent out: [`Cordon::run_guest`]'s answer.
pub(crate) struct GuestRun {
    /// The sandbox's outcome.
    pub(crate) run: cordon_sandbox::Run,
    /// The outbound requests it made and had refused, for the audit line.
    pub(crate) egress: Arc<Mutex<EgressRecord>>,
}

impl Cordon {
    /// Steps 5 to 7 for every guest run — a tool call, a resource read, a prompt render, a
    /// completion — so each gets the same bounds: the plugin's rate limit, an instance slot
    /// (waiting at most `queue_timeout`, ended by the client's cancellation, `busy` while the
    /// plugin unloads), the instance gauge, and a fresh instance with the plugin's grants for
    /// `principal`. The slot is released when this returns.
    pub(crate) async fn run_guest(
        &self,
        plugin: &LoadedPlugin,
        principal: &Principal,
        upstream_key_base: Option<String>,
        call_id: &str,
        link: CallLink,
        invocation: Invocation,
    ) -> Result<GuestRun, ToolError> {
        let settings = self.settings();
        if let Some(decision) = settings.rate_limits.plugin(&plugin.name).filter(|d| !d.allowed) {
            return Err(ToolError::new(ErrorType::RateLimited, decision.message(ratelimit::Scope::Plugin)));
        }
        // A free slot is taken without arming the queue timer (the common case); a cancelled call
        // still never starts its guest (`Sandbox::run` checks first).
        let _slot = match plugin.slots.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(unloading(plugin)),
            Err(TryAcquireError::NoPermits) => queue_for_slot(plugin, &link).await?,
        };
        let egress = Arc::new(Mutex::new(EgressRecord::default()));
        let grants = CallGrants {
            grants: plugin.grants.clone(),
            credentials: settings.credentials.clone(),
            principal: principal.clone(),
            egress: egress.clone(),
            upstream_key_base,
        };
        let label: Arc<str> = format!("{}/{call_id}", plugin.name).into();
        let instance = self.metrics.instance();
        let guest =
            cordon_sandbox::Guest { prepared: &plugin.prepared, limits: &plugin.limits, spares: Some(&plugin.spares) };
        let run = self.sandbox.run(guest, label, grants, link, invocation).await;
        drop(instance);
        Ok(GuestRun { run, egress })
    }
}

/// Waits for an instance slot of a plugin at its limit, at most its `queue_timeout`, unless the
/// client cancels first.
async fn queue_for_slot<'p>(plugin: &'p LoadedPlugin, link: &CallLink) -> Result<SemaphorePermit<'p>, ToolError> {
    let limits = &plugin.limits;
    let queued = tokio::time::timeout(limits.queue_timeout, plugin.slots.acquire());
    tokio::select! {
        biased;
        () = link.cancel.cancelled() => Err(ToolError::cancelled()),
        acquired = queued => match acquired {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(unloading(plugin)),
            Err(_elapsed) => Err(ToolError::new(
                ErrorType::Busy,
                format!(
                    "plugin {} is running its maximum of {} calls; retry shortly",
                    plugin.name, limits.max_concurrency
                ),
            )),
        },
    }
}

fn unloading(plugin: &LoadedPlugin) -> ToolError {
    ToolError::new(ErrorType::Busy, format!("plugin {} is unloading", plugin.name))
}

/// When a call that failed had an outbound request refused, the refusal is the reason the caller
/// needs to see: `forbidden` for a missing credential, else `egress_denied` naming the URL. A
/// guest that handled the refusal and succeeded keeps its result.
fn explain_refusal(egress: &Mutex<EgressRecord>, principal: &Principal) -> Option<ToolError> {
    let record = egress.lock().ok()?;
    let (method, url, why) = record.refused.first()?;
    Some(match why {
        Refusal::MissingCredential(credential) => ToolError::new(
            ErrorType::Forbidden,
            format!(
                "principal {:?} has no value for credential {credential:?}, which {method} {url} requires",
                principal.0
            ),
        ),
        Refusal::NoGrant => ToolError::new(
            ErrorType::EgressDenied,
            format!("outbound request {method} {url} refused: no grant covers it"),
        ),
        Refusal::TooManyRequests(max) => ToolError::new(
            ErrorType::EgressDenied,
            format!("outbound request {method} {url} refused: this plugin may make at most {max} requests per call"),
        ),
        Refusal::UserInfo => ToolError::new(
            ErrorType::EgressDenied,
            format!("outbound request {method} {url} refused: a URL with user info (user@host) is never sent"),
        ),
    })
}
