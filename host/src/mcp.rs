//! The MCP surface (DESIGN §6): an rmcp [`ServerHandler`] over the catalog, shared by stdio and
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
//! Events are forwarded from the handler's own task, and all of a call's events before its reply.

use crate::app::Cordon;
use crate::auth::Caller;
use crate::call::{CallRequest, ProtocolError, ToolSuccess};
use crate::error::ToolError;
use crate::idempotency::{KeySource, ProvidedKey, META_KEY};
use crate::notify::{CallEvent, CallLink, EventSink};
use crate::sandbox::bindings::cordon::plugin::host::LogLevel;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProgressToken, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
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
    /// The connection's caller (stdio); `None` over HTTP, where each request carries its own.
    caller: Option<Caller>,
    /// The session's `logging/setLevel` as a [`LogRank`]; [`LogRank::OFF`] until the client sets
    /// one. Shared by the clones rmcp makes of one session's service, never across sessions.
    log_level: Arc<AtomicU8>,
}

impl McpService {
    /// A service whose calls all run as `caller` (stdio).
    pub fn for_caller(cordon: Arc<Cordon>, caller: Caller) -> Self {
        Self { cordon, caller: Some(caller), log_level: Arc::new(AtomicU8::new(LogRank::OFF.0)) }
    }

    /// A service whose calls run as the principal the HTTP auth layer attached to each request.
    pub fn per_request(cordon: Arc<Cordon>) -> Self {
        Self { cordon, caller: None, log_level: Arc::new(AtomicU8::new(LogRank::OFF.0)) }
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
        let capabilities =
            ServerCapabilities::builder().enable_logging().enable_tools().enable_tool_list_changed().build();
        let mut info = ServerConfig::new(capabilities);
        info.server_info = Implementation::new("cordon", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Tools served by Cordon run in sandboxed WebAssembly components. A failed call returns \
             {\"error\": {\"type\", \"message\", \"retryable\"}}; retry only when retryable is true."
                .into(),
        );
        info
    }

    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        // Stateless HTTP has no session to notify; every other client hears of tool changes.
        self.cordon.add_session(context.peer);
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        // Each caller sees only the tools its token allows.
        let scope = self.caller(&context)?.scope;
        let catalog = self.cordon.catalog();
        let visible = catalog.tools.iter().filter(|t| scope.allows(&t.name)).map(|t| t.descriptor.clone()).collect();
        Ok(ListToolsResult::with_all_items(visible))
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
        let (events, receiver) = if progress.is_some() || log {
            let (sink, receiver) = EventSink::channel(progress.is_some(), log);
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
            link: CallLink { cancel: context.ct.clone(), events },
        });
        let outcome = match receiver {
            Some(receiver) => self.forwarding(call, receiver, &context, progress, &tool).await,
            None => call.await,
        };
        match outcome {
            Ok(Ok(success)) => Ok(success_result(success).into()),
            Ok(Err(error)) => Ok(error_result(&error).into()),
            Err(ProtocolError::UnknownTool(name)) => {
                Err(McpError::invalid_params(format!("unknown tool: {name}"), None))
            }
        }
    }
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

/// The MCP result for a successful call: the tool's text, then its structured result as JSON
/// text (for clients that ignore `structuredContent`); once only when the two are the same.
pub fn success_result(success: ToolSuccess) -> CallToolResult {
    let json_text = success.structured.as_ref().map(Value::to_string);
    let mut content = Vec::with_capacity(2);
    if let Some(text) =
        success.text.filter(|t| json_text.is_none() || serde_json::from_str::<Value>(t).ok() != success.structured)
    {
        content.push(ContentBlock::text(text));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorType;
    use serde_json::json;

    fn texts(result: &CallToolResult) -> Vec<String> {
        result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect()
    }

    #[test]
    fn structured_result_is_also_sent_as_text_once() {
        let same =
            success_result(ToolSuccess { text: Some(r#"{"sum":3}"#.into()), structured: Some(json!({"sum": 3})) });
        assert_eq!(texts(&same), vec![r#"{"sum":3}"#]);
        assert_eq!(same.structured_content, Some(json!({"sum": 3})));

        let both = success_result(ToolSuccess { text: Some("hi".into()), structured: Some(json!({"text": "hi"})) });
        assert_eq!(texts(&both), vec!["hi".to_string(), r#"{"text":"hi"}"#.to_string()]);

        let plain = success_result(ToolSuccess { text: Some("ok".into()), structured: None });
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
