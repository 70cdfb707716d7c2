//! The MCP surface: an rmcp [`ServerHandler`] over the catalog, shared by stdio and
//! Streamable HTTP.
//!
//! Tool failures are results (`isError: true`, `{"error": {...}}` as text and structured
//! content); only protocol mistakes — an unknown tool, a malformed request — are JSON-RPC errors.
//!
//! The MCP utilities around a call ([`crate::notify`]):
//! - **cancellation**: rmcp cancels the request's token on `notifications/cancelled` (and when
//!   the connection ends); the call path honours it and still writes its audit line, and rmcp
//!   drops the reply;
//! - **progress**: a guest's `progress` reports go out as `notifications/progress` when the
//!   request carried `_meta.progressToken`, and are ignored otherwise;
//! - **logging**: after `logging/setLevel`, the guest's log lines at or above that level go out
//!   as `notifications/message` (logger: the tool's name; data: the line). The level belongs to
//!   the session (stdio: the connection; HTTP: the `Mcp-Session-Id`); until a client sets one it
//!   gets no log messages. Stateless HTTP has no session to remember a level in.
//!
//! - **sampling and elicitation**: a guest's `sample` and `elicit` become server-to-client
//!   requests sent on the call's stream, when the session's client declared the capability;
//!   the answer goes back to the guest (see [`crate::notify`] for the refusals and the timeout).
//!
//! Events are forwarded from the handler's own task, and all of a call's events before its reply.
//!
//! Resources and prompts that plugins export are served through `resources/*` and `prompts/*`
//! ([`cordon_host::offers`]). `resources/subscribe` is accepted for any URI the caller can read and
//! remembered for the session; Cordon sends `notifications/resources/updated` for a subscribed
//! URI when the plugin serving it is reloaded (guests keep no state between calls, so a reload
//! is the only way their resources change).

use crate::inputs;
use crate::sessions::{Sessions, Subscriptions};
use cordon_core::ToolError;
use cordon_core::ToolSuccess;
use cordon_core::{ErrorType, TaskSupport};
use cordon_host::app::Cordon;
use cordon_host::auth::Caller;
use cordon_host::call::{CallRequest, ProtocolError};
use cordon_host::idempotency::{KeySource, ProvidedKey, META_KEY};
use cordon_host::reads::{CompletionRef, OfferError};
use cordon_host::registry::ToolEntry;
use cordon_host::tasks::{Started, TaskCall};
use cordon_sandbox::bindings::cordon::plugin::host::LogLevel;
use cordon_sandbox::link::{Ask, AskCapabilities, AskError, CallEvent, CallLink, EventSink};
use cordon_state::tasks::{TaskRecord, TaskStatus as StoredStatus};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientResult, ContentBlock, CustomRequest,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ProgressToken, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    ResultType, ServerCapabilities, ServerConfig, ServerRequest, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::model::{
    CancelTaskParams, ClientCapabilities, CreateTaskResult, DetailedTask, GetTaskParams, GetTaskResult, Task,
    TaskPayload, TaskStatus as WireStatus, UpdateTaskParams,
};
use rmcp::model::{SubscriptionFilter, Tool, ToolAnnotations};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One MCP connection's view of the host.
#[derive(Clone)]
pub struct McpService {
    cordon: Arc<Cordon>,
    /// The transport's sessions and listen streams, told of catalog changes.
    sessions: Arc<Sessions>,
    /// The connection's caller (stdio); `None` over HTTP, where each request carries its own.
    caller: Option<Caller>,
    /// The session's `logging/setLevel` as a [`LogRank`]; [`LogRank::OFF`] until the client sets
    /// one. Shared by the clones rmcp makes of one session's service, never across sessions.
    log_level: Arc<AtomicU8>,
    /// The resource URIs the session subscribed to, shared like `log_level`.
    subscriptions: Subscriptions,
}

impl McpService {
    /// A service whose calls all run as `caller` (stdio).
    pub fn for_caller(cordon: Arc<Cordon>, sessions: Arc<Sessions>, caller: Caller) -> Self {
        Self {
            cordon,
            sessions,
            caller: Some(caller),
            log_level: Arc::new(AtomicU8::new(LogRank::OFF.0)),
            subscriptions: Subscriptions::default(),
        }
    }

    /// A service whose calls run as the principal the HTTP auth layer attached to each request.
    pub fn per_request(cordon: Arc<Cordon>, sessions: Arc<Sessions>) -> Self {
        Self {
            cordon,
            sessions,
            caller: None,
            log_level: Arc::new(AtomicU8::new(LogRank::OFF.0)),
            subscriptions: Subscriptions::default(),
        }
    }

    fn log_level(&self) -> LogRank {
        LogRank(self.log_level.load(Ordering::Relaxed))
    }

    /// Runs `call` while forwarding its events to the client, then forwards what is left.
    ///
    /// Both run in the handler's task, joined rather than raced: the guest never waits for the
    /// client (events queue, or are dropped when the queue is full), and every event the guest
    /// reported is sent before the handler returns, so before rmcp sends the reply.
    async fn forwarding<T>(
        &self,
        call: impl Future<Output = T>,
        mut events: mpsc::Receiver<CallEvent>,
        context: &RequestContext<RoleServer>,
        progress: Option<ProgressToken>,
        tool: &str,
    ) -> T {
        let done = CancellationToken::new();
        let call = async {
            let outcome = call.await;
            done.cancel();
            outcome
        };
        let forward = async {
            loop {
                tokio::select! {
                    biased;
                    Some(event) = events.recv() => self.forward(event, context, progress.as_ref(), tool).await,
                    () = done.cancelled() => break,
                }
            }
            // The guest's instance is gone: what it queued is all there is.
            while let Ok(event) = events.try_recv() {
                self.forward(event, context, progress.as_ref(), tool).await;
            }
        };
        tokio::join!(call, forward).0
    }

    async fn forward(
        &self,
        event: CallEvent,
        context: &RequestContext<RoleServer>,
        progress: Option<&ProgressToken>,
        tool: &str,
    ) {
        // Nothing more about a request the client cancelled (its reply is dropped too).
        if context.ct.is_cancelled() {
            return;
        }
        let sent = match event {
            CallEvent::Ask { ask, mut reply } => {
                tokio::select! {
                    // The guest is waiting: the answer goes back whatever it is.
                    answer = ask_client(context, ask) => {
                        let _ = reply.send(answer);
                    }
                    // The call ended first (its timeout, a cancellation): nobody waits for the
                    // answer any more, and the call's result must not wait for the client.
                    () = reply.closed() => {}
                }
                return;
            }
            CallEvent::Progress { progress: done, total, message } => {
                let Some(token) = progress else { return };
                let mut param = ProgressNotificationParam::new(token.clone(), done);
                param.total = total;
                param.message = message;
                context.peer.notify_progress(param).await
            }
            CallEvent::Log { level, message } => {
                let wanted = self.log_level();
                let rank = LogRank::of_guest(level);
                if wanted == LogRank::OFF || rank < wanted {
                    return;
                }
                send_log(context, rank, tool, message).await
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "cannot send a notification to the client");
        }
    }

    fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
        if let Some(caller) = &self.caller {
            return Ok(caller.clone());
        }
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned()
            // The auth layer runs before every HTTP request; reaching here without a principal
            // is a wiring bug, and failing closed is the only safe answer.
            .ok_or_else(|| McpError::internal_error("request is not authenticated", None))
    }
}

/// An MCP log level as a number that orders them (`debug` = 1 … `emergency` = 8); 0 is "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct LogRank(u8);

// MCP logging is deprecated by SEP-2577 in rmcp, but it is in every protocol version clients
// speak today; the allows below are for that alone.
#[allow(deprecated)]
impl LogRank {
    const OFF: LogRank = LogRank(0);
    const LEVELS: [rmcp::model::LoggingLevel; 8] = {
        use rmcp::model::LoggingLevel::*;
        [Debug, Info, Notice, Warning, Error, Critical, Alert, Emergency]
    };

    fn of_mcp(level: rmcp::model::LoggingLevel) -> LogRank {
        let index = Self::LEVELS.iter().position(|l| *l == level).unwrap_or(0);
        LogRank(index as u8 + 1)
    }

    /// MCP has nothing below `debug`: a guest's `trace` lines count as `debug`.
    fn of_guest(level: LogLevel) -> LogRank {
        use rmcp::model::LoggingLevel as Mcp;
        Self::of_mcp(match level {
            LogLevel::Trace | LogLevel::Debug => Mcp::Debug,
            LogLevel::Info => Mcp::Info,
            LogLevel::Warn => Mcp::Warning,
            LogLevel::Error => Mcp::Error,
        })
    }

    fn mcp(self) -> rmcp::model::LoggingLevel {
        Self::LEVELS[usize::from(self.0.clamp(1, 8)) - 1]
    }
}

#[allow(deprecated)]
async fn send_log(
    context: &RequestContext<RoleServer>,
    rank: LogRank,
    tool: &str,
    message: String,
) -> Result<(), rmcp::service::ServiceError> {
    let mut param = rmcp::model::LoggingMessageNotificationParam::new(rank.mcp(), Value::String(message));
    param.logger = Some(tool.to_string());
    context.peer.notify_logging_message(param).await
}

impl ServerHandler for McpService {
    #[allow(deprecated)] // `enable_logging`: see `LogRank`
    fn get_info(&self) -> ServerConfig {
        let builder = ServerCapabilities::builder()
            .enable_logging()
            .enable_completions()
            .enable_prompts()
            .enable_resources()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_resources_subscribe();
        // The tasks extension, when this host keeps tasks (rmcp then routes `tasks/*` here and
        // refuses them, `-32021`, for a client that did not declare the extension).
        let capabilities = if self.cordon.serves_tasks() { builder.enable_tasks() } else { builder }.build();
        let mut info = ServerConfig::new(capabilities);
        info.server_info = Implementation::new("cordon", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Tools served by Cordon run in sandboxed WebAssembly components. A failed call returns \
             {\"error\": {\"type\", \"message\", \"retryable\"}}; retry only when retryable is true."
                .into(),
        );
        info
    }

    /// `subscriptions/listen` (2026-07-28): the tool list (it changes on reload) and resources
    /// whose plugin is replaced, as for a session; rmcp narrows this to what the client asked
    /// for and what `get_info` advertises, and tags each notification with the stream's id.
    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.tools_list_changed = requested.tools_list_changed;
        accepted.resource_subscriptions = requested.resource_subscriptions.clone();
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let caller = self.caller(context.request_context())?;
        // Held until the stream ends, or this future is dropped with its connection.
        let _listening = self.sessions.add_listener(context.sink().clone(), caller.scope);
        context.cancelled().await;
        Ok(())
    }

    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        // Stateless HTTP has no session to notify; every other client hears of tool changes.
        self.sessions.add_session(context.peer, self.subscriptions.clone());
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        // Each caller sees only the tools its token allows.
        let scope = self.caller(&context)?.scope;
        let catalog = self.cordon.catalog();
        let visible = catalog.tools.iter().filter(|t| scope.allows(&t.name)).map(|t| mcp_tool(t)).collect();
        Ok(ListToolsResult::with_all_items(visible))
    }

    /// The tool's MCP definition, for rmcp's check of SEP-2243 `Mcp-Param-*` headers against
    /// the arguments they mirror (the `x-mcp-header` properties of its input schema). Scope is
    /// not consulted: the auth layer has refused a call outside the caller's scope before rmcp
    /// asks, and the schema is only compared with the request, never sent.
    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.cordon.catalog().tool(name).map(|entry| mcp_tool(entry))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let scope = self.caller(&context)?.scope;
        let catalog = self.cordon.catalog();
        let visible = catalog
            .plugins
            .iter()
            .flat_map(|p| &p.offers.resources)
            .filter(|r| scope.allows(&r.scope_name))
            .map(|r| from_json(r.descriptor.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ListResourcesResult::with_all_items(visible))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let scope = self.caller(&context)?.scope;
        let catalog = self.cordon.catalog();
        let visible = catalog
            .plugins
            .iter()
            .flat_map(|p| &p.offers.templates)
            .filter(|t| scope.allows(&t.scope_name))
            .map(|t| from_json(t.descriptor.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ListResourceTemplatesResult::with_all_items(visible))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let caller = self.caller(&context)?;
        let (binding, round) = inputs::prepare(
            &context,
            &caller.principal.0,
            "resources/read",
            &request.uri,
            || Value::Null,
            request.input_responses,
            request.request_state.as_deref(),
        )?;
        let link = CallLink { cancel: context.ct.clone(), events: None, inputs: round };
        let contents = match self.cordon.read_resource(&caller, &request.uri, link).await {
            Ok(contents) => contents,
            Err(OfferError::Failed(ToolError { client_needs: Some(needs), .. })) => {
                return Ok(binding.input_required(*needs)?.into())
            }
            Err(error) => return Err(offer_error(error)),
        };
        let mut result: ReadResourceResult = from_json(serde_json::json!({"contents": contents}))?;
        // As rmcp's constructors do; its handler drops the field for peers on older revisions.
        result.result_type = Some(ResultType::COMPLETE);
        Ok(result.into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = self.caller(&context)?;
        let catalog = self.cordon.catalog();
        match cordon_host::registry::offers::resolve(&catalog, &request.uri) {
            Some((_, scope_name)) if caller.scope.allows(scope_name) => {
                self.subscriptions.lock().unwrap_or_else(|p| p.into_inner()).insert(request.uri);
                Ok(())
            }
            _ => Err(offer_error(OfferError::NotFound(request.uri))),
        }
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subscriptions.lock().unwrap_or_else(|p| p.into_inner()).remove(&request.uri);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let scope = self.caller(&context)?.scope;
        let catalog = self.cordon.catalog();
        let visible = catalog
            .plugins
            .iter()
            .flat_map(|p| &p.offers.prompts)
            .filter(|p| scope.allows(&p.name))
            .map(|p| from_json(p.descriptor.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ListPromptsResult::with_all_items(visible))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let caller = self.caller(&context)?;
        let (binding, round) = inputs::prepare(
            &context,
            &caller.principal.0,
            "prompts/get",
            &request.name,
            || Value::Object(request.arguments.clone().unwrap_or_default()),
            request.input_responses,
            request.request_state.as_deref(),
        )?;
        let arguments = request
            .arguments
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| {
                let value = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (name, value)
            })
            .collect();
        let link = CallLink { cancel: context.ct.clone(), events: None, inputs: round };
        let rendered = match self.cordon.get_prompt(&caller, &request.name, arguments, link).await {
            Ok(rendered) => rendered,
            Err(OfferError::Failed(ToolError { client_needs: Some(needs), .. })) => {
                return Ok(binding.input_required(*needs)?.into())
            }
            Err(error) => return Err(offer_error(error)),
        };
        let mut result: GetPromptResult = from_json(rendered)?;
        result.result_type = Some(ResultType::COMPLETE);
        Ok(result.into())
    }

    async fn complete(
        &self,
        request: rmcp::model::CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CompleteResult, McpError> {
        let caller = self.caller(&context)?;
        let target = match request.r#ref {
            rmcp::model::Reference::Prompt(prompt) => CompletionRef::Prompt(prompt.name),
            rmcp::model::Reference::Resource(template) => CompletionRef::ResourceTemplate(template.uri),
            other => {
                return Err(McpError::invalid_params(
                    format!("cannot complete a reference of this kind: {other:?}"),
                    None,
                ))
            }
        };
        let resolved = request.context.and_then(|c| c.arguments).unwrap_or_default().into_iter().collect();
        let link = CallLink { cancel: context.ct.clone(), events: None, inputs: None };
        let completion = self
            .cordon
            .complete(&caller, target, request.argument.name, request.argument.value, resolved, link)
            .await
            .map_err(offer_error)?;
        let mut result: rmcp::model::CompleteResult = from_json(serde_json::json!({"completion": completion}))?;
        result.result_type = Some(ResultType::COMPLETE);
        Ok(result)
    }

    #[allow(deprecated)] // `SetLevelRequestParams`: see `LogRank`
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.log_level.store(LogRank::of_mcp(request.level).0, Ordering::Relaxed);
        Ok(())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let idempotency_key = provided_key(&request, &context);
        let caller = self.caller(&context)?;
        // rmcp moves the request's `_meta` into the context; look in both, as for the key.
        let progress =
            context.meta.get_progress_token().or_else(|| request.meta.as_ref().and_then(|m| m.get_progress_token()));
        let log = self.log_level() != LogRank::OFF;
        // On the 2026-07-28 wire questions are answered from the request (`crate::inputs`); a
        // client with a session can be asked what it declared (stateless HTTP has no peer info).
        let (binding, round) = inputs::prepare(
            &context,
            &caller.principal.0,
            "tools/call",
            &request.name,
            || Value::Object(request.arguments.clone().unwrap_or_default()),
            request.input_responses,
            request.request_state.as_deref(),
        )?;
        // The tasks extension: a tool that may run as a task, for a client that can take one.
        let declares_tasks = context.client_capabilities().is_some_and(|c| c.supports_tasks());
        match self.cordon.task_support(&request.name) {
            Some(TaskSupport::Required) if !declares_tasks => {
                return Err(McpError::missing_required_client_capability(
                    ClientCapabilities::builder().enable_tasks().build(),
                ))
            }
            Some(TaskSupport::Optional | TaskSupport::Required) if declares_tasks => {
                let declared = context.client_capabilities().unwrap_or_default();
                let capabilities = AskCapabilities {
                    sample: declared.sampling.is_some(),
                    elicit: declared.elicitation.is_some(),
                    roots: declared.roots.is_some(),
                };
                let call = CallRequest {
                    tool: request.name.into_owned(),
                    arguments: request.arguments,
                    caller,
                    idempotency_key,
                    link: CallLink { cancel: context.ct.clone(), events: None, inputs: round },
                    task_id: None,
                };
                let questions_in_reply = binding.carries_questions();
                let started = self.cordon.call_or_task(TaskCall { call, questions_in_reply, capabilities }).await;
                return match started {
                    Ok(Started::Answered(outcome)) => call_response(&binding, Ok(outcome)),
                    Ok(Started::Task(record)) => {
                        Ok(CallToolResponse::Task(CreateTaskResult::new(self.wire_task(&record))))
                    }
                    Err(error) => call_response(&binding, Err(error)),
                };
            }
            _ => {}
        }
        let asks = match (&round, context.peer.peer_info()) {
            (None, Some(info)) => AskCapabilities {
                sample: info.capabilities.sampling.is_some(),
                elicit: info.capabilities.elicitation.is_some(),
                roots: info.capabilities.roots.is_some(),
            },
            _ => AskCapabilities::default(),
        };
        let (events, receiver) = if progress.is_some() || log || asks != AskCapabilities::default() {
            let (sink, receiver) = EventSink::with_asks(progress.is_some(), log, asks);
            (Some(sink), Some(receiver))
        } else {
            (None, None)
        };
        let tool = request.name.into_owned();
        // The call honours cancellation itself (see `call.rs`), so it is awaited to its end
        // rather than dropped: the slot, the idempotency claim and the audit line are settled.
        let call = self.cordon.call(CallRequest {
            tool: tool.clone(),
            arguments: request.arguments,
            caller,
            idempotency_key,
            link: CallLink { cancel: context.ct.clone(), events, inputs: round },
            task_id: None,
        });
        let outcome = match receiver {
            Some(receiver) => self.forwarding(call, receiver, &context, progress, &tool).await,
            None => call.await,
        };
        call_response(&binding, outcome)
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let caller = self.caller(&context)?;
        let view = self.cordon.task(&caller, &request.task_id).await.map_err(task_error)?;
        let view = view.ok_or_else(|| unknown_task(&request.task_id))?;
        let task = self.wire_task(&view.record);
        let payload = match view.record.status {
            StoredStatus::Working => TaskPayload::Working,
            StoredStatus::InputRequired => {
                TaskPayload::InputRequired { input_requests: inputs::input_requests(view.questions)? }
            }
            StoredStatus::Completed => {
                let result = match view.result {
                    Some(Ok(success)) => success_result(success),
                    Some(Err(error)) => error_result(&error),
                    None => error_result(&ToolError::new(ErrorType::Internal, "the task's result is missing")),
                };
                TaskPayload::Completed { result: json_object(&result)? }
            }
            StoredStatus::Failed => {
                let error = view.error.unwrap_or_else(|| ToolError::new(ErrorType::Internal, "the task failed"));
                let error = McpError::internal_error(error.message.clone(), Some(error.to_json()));
                TaskPayload::Failed { error: json_object(&error)? }
            }
            StoredStatus::Cancelled => TaskPayload::Cancelled,
        };
        Ok(GetTaskResult::new(DetailedTask::new(task, payload)))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = self.caller(&context)?;
        let answers = request.input_responses.into_iter().collect();
        match self.cordon.answer_task(&caller, &request.task_id, answers).await.map_err(task_error)? {
            true => Ok(()),
            false => Err(unknown_task(&request.task_id)),
        }
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = self.caller(&context)?;
        match self.cordon.cancel_task(&caller, &request.task_id).await.map_err(task_error)? {
            true => Ok(()),
            false => Err(unknown_task(&request.task_id)),
        }
    }
}

/// The reply to a `tools/call` whose call ended: its result, the questions it asks (2026-07-28),
/// or a JSON-RPC error.
fn call_response(
    binding: &inputs::StateBinding,
    outcome: Result<cordon_core::CallOutcome, ProtocolError>,
) -> Result<CallToolResponse, McpError> {
    match outcome {
        Ok(Ok(success)) => Ok(success_result(success).into()),
        Ok(Err(ToolError { client_needs: Some(needs), .. })) => Ok(binding.input_required(*needs)?.into()),
        Ok(Err(error)) => Ok(error_result(&error).into()),
        Err(ProtocolError::UnknownTool(name)) => Err(McpError::invalid_params(format!("unknown tool: {name}"), None)),
    }
}

/// A task the caller cannot see: `-32602`, whether it never existed, expired or is another
/// principal's (never "forbidden": that would confirm it exists).
fn unknown_task(task_id: &str) -> McpError {
    McpError::invalid_params(format!("unknown task: {task_id}"), None)
}

/// A task operation the store could not do.
fn task_error(error: ToolError) -> McpError {
    McpError::internal_error(error.message.clone(), Some(error.to_json()))
}

/// An MCP value as the JSON object a task payload inlines.
fn json_object(value: &impl serde::Serialize) -> Result<serde_json::Map<String, Value>, McpError> {
    match serde_json::to_value(value) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(McpError::internal_error("cannot build the task's payload", None)),
    }
}

/// Milliseconds since the epoch as ISO 8601 (UTC, milliseconds).
fn iso8601(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}

impl McpService {
    /// A stored task's base fields as the extension sends them.
    fn wire_task(&self, record: &TaskRecord) -> Task {
        let status = match record.status {
            StoredStatus::Working => WireStatus::Working,
            StoredStatus::InputRequired => WireStatus::InputRequired,
            StoredStatus::Completed => WireStatus::Completed,
            StoredStatus::Failed => WireStatus::Failed,
            StoredStatus::Cancelled => WireStatus::Cancelled,
        };
        let ttl_ms = u64::try_from(record.task.expires_ms.saturating_sub(record.task.created_ms)).unwrap_or(0).max(1);
        Task::new(&record.task.task_id, status, iso8601(record.task.created_ms), iso8601(record.updated_ms))
            .with_ttl_ms(ttl_ms)
            .with_poll_interval_ms(self.cordon.config().tasks.poll_interval_ms)
    }
}

/// Sends a guest's ask to the client on the call's stream and returns the client's result as
/// JSON. The params go as the guest wrote them (the client validates them); rmcp only adds
/// `_meta`.
async fn ask_client(context: &RequestContext<RoleServer>, ask: Ask) -> Result<Value, AskError> {
    let method = crate::inputs::mcp_method(ask.kind);
    let request = ServerRequest::CustomRequest(CustomRequest::new(method, Some(ask.params)));
    let answer = tokio::time::timeout(cordon_sandbox::link::ASK_TIMEOUT, context.peer.send_request(request)).await;
    match answer {
        Err(_elapsed) => Err(AskError::Timeout(method, cordon_sandbox::link::ASK_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(AskError::Client { method, message: e.to_string() }),
        Ok(Ok(result)) => {
            let value = match result {
                ClientResult::CustomResult(custom) => custom.0,
                other => serde_json::to_value(other).unwrap_or(Value::Null),
            };
            Ok(value)
        }
    }
}

/// The JSON-RPC error for a read or render that has no result.
fn offer_error(error: OfferError) -> McpError {
    match error {
        OfferError::NotFound(what) => {
            McpError::invalid_params(format!("not found: {what}"), Some(serde_json::json!({"uri": what})))
        }
        OfferError::MissingArgument(message) => McpError::invalid_params(message, None),
        OfferError::Failed(error) => McpError::internal_error(error.message.clone(), Some(error.to_json())),
    }
}

/// Parses MCP JSON the host built into the rmcp type it stands for.
fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, McpError> {
    serde_json::from_value(value).map_err(|e| McpError::internal_error(format!("cannot build the result: {e}"), None))
}

/// The key a client sent with the call: `_meta["cordon/idempotency-key"]` first, then the HTTP
/// `Idempotency-Key` header.
fn provided_key(request: &CallToolRequestParams, context: &RequestContext<RoleServer>) -> Option<ProvidedKey> {
    // Strings and numbers are keys, as for a key argument; anything else is ignored.
    let from_meta = |meta: &serde_json::Map<String, Value>| match meta.get(META_KEY)? {
        Value::String(key) => Some(key.clone()),
        Value::Number(key) => Some(key.to_string()),
        _ => None,
    };
    let meta = request.meta.as_ref().and_then(|m| from_meta(&m.0 .0)).or_else(|| from_meta(&context.meta.0 .0));
    if let Some(key) = meta {
        return Some(ProvidedKey { key, source: KeySource::Meta });
    }
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.headers.get("idempotency-key"))
        .and_then(|value| value.to_str().ok())
        .map(|key| ProvidedKey { key: key.to_owned(), source: KeySource::Header })
}

/// The MCP result for a successful call: the tool's text, then the blocks it attached (images,
/// audio, embedded resources), then its structured result as JSON text (for clients that ignore
/// `structuredContent`); the text once only when it is the same as the JSON.
pub fn success_result(success: ToolSuccess) -> CallToolResult {
    let json_text = success.structured.as_ref().map(Value::to_string);
    let mut content = Vec::with_capacity(2 + success.attached.len());
    if let Some(text) =
        success.text.filter(|t| json_text.is_none() || serde_json::from_str::<Value>(t).ok() != success.structured)
    {
        content.push(ContentBlock::text(text));
    }
    for block in success.attached {
        // Built by `cordon_host::content`, so always MCP content; a block that were not is dropped.
        match serde_json::from_value::<ContentBlock>(block) {
            Ok(block) => content.push(block),
            Err(e) => tracing::warn!(error = %e, "an attached content block is not MCP content; dropped"),
        }
    }
    if let Some(json_text) = json_text {
        content.push(ContentBlock::text(json_text));
    }
    let mut result = CallToolResult::success(content);
    result.structured_content = success.structured;
    result
}

/// The MCP result for a failed call.
pub fn error_result(error: &ToolError) -> CallToolResult {
    let body = error.to_json();
    let mut result = CallToolResult::error(vec![ContentBlock::text(body.to_string())]);
    result.structured_content = Some(body);
    result
}

/// A catalog tool as an MCP `Tool`.
fn mcp_tool(entry: &ToolEntry) -> Tool {
    let listing = &entry.listing;
    let hints = &listing.hints;
    let mut tool = Tool::new(entry.name.clone(), listing.description.clone(), listing.input_schema.clone())
        .with_annotations(ToolAnnotations::from_raw(
            None,
            hints.read_only_hint,
            hints.destructive_hint,
            hints.idempotent_hint,
            hints.open_world_hint,
        ));
    if let Some(title) = &listing.title {
        tool = tool.with_title(title.clone());
    }
    if let Some(output) = &listing.output_schema {
        tool = tool.with_raw_output_schema(output.clone());
    }
    tool
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_core::ErrorType;
    use serde_json::json;

    fn texts(result: &CallToolResult) -> Vec<String> {
        result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect()
    }

    #[test]
    fn structured_result_is_also_sent_as_text_once() {
        let same = success_result(ToolSuccess {
            text: Some(r#"{"sum":3}"#.into()),
            structured: Some(json!({"sum": 3})),
            attached: vec![],
        });
        assert_eq!(texts(&same), vec![r#"{"sum":3}"#]);
        assert_eq!(same.structured_content, Some(json!({"sum": 3})));

        let both = success_result(ToolSuccess {
            text: Some("hi".into()),
            structured: Some(json!({"text": "hi"})),
            attached: vec![json!({"type": "image", "data": "AQID", "mimeType": "image/png"})],
        });
        assert_eq!(texts(&both), vec!["hi".to_string(), r#"{"text":"hi"}"#.to_string()]);
        // Attached blocks go between the text and the JSON.
        assert_eq!(both.content.len(), 3);
        assert_eq!(serde_json::to_value(&both.content[1]).unwrap()["type"], "image");

        let plain = success_result(ToolSuccess { text: Some("ok".into()), structured: None, attached: vec![] });
        assert_eq!(texts(&plain), vec!["ok"]);
        assert_eq!(plain.structured_content, None);
        assert_eq!(plain.is_error, Some(false));
    }

    #[test]
    #[allow(deprecated)]
    fn guest_levels_map_onto_mcp_levels_in_order() {
        use rmcp::model::LoggingLevel as Mcp;
        assert_eq!(LogRank::of_guest(LogLevel::Trace).mcp(), Mcp::Debug);
        assert_eq!(LogRank::of_guest(LogLevel::Debug).mcp(), Mcp::Debug);
        assert_eq!(LogRank::of_guest(LogLevel::Info).mcp(), Mcp::Info);
        assert_eq!(LogRank::of_guest(LogLevel::Warn).mcp(), Mcp::Warning);
        assert_eq!(LogRank::of_guest(LogLevel::Error).mcp(), Mcp::Error);
        assert!(LogRank::of_guest(LogLevel::Info) < LogRank::of_mcp(Mcp::Notice));
        assert!(LogRank::of_guest(LogLevel::Warn) >= LogRank::of_mcp(Mcp::Notice));
        assert!(LogRank::of_mcp(Mcp::Emergency) > LogRank::of_guest(LogLevel::Error));
        assert!(LogRank::OFF < LogRank::of_guest(LogLevel::Trace));
    }

    #[test]
    fn error_result_carries_the_error_as_text_and_structured_content() {
        let result = error_result(&ToolError::new(ErrorType::Timeout, "too slow"));
        assert_eq!(result.is_error, Some(true));
        let body: Value = serde_json::from_str(&texts(&result)[0]).unwrap();
        assert_eq!(body, json!({"error": {"type": "timeout", "message": "too slow", "retryable": true}}));
        assert_eq!(result.structured_content, Some(body));
    }
}
