//! The MCP surface (DESIGN §6): an rmcp [`ServerHandler`] over the catalog, shared by stdio and
//! Streamable HTTP.
//!
//! Tool failures are results (`isError: true`, `{"error": {...}}` as text and structured
//! content); only protocol mistakes — an unknown tool, a malformed request — are JSON-RPC errors.

use crate::app::Cordon;
use crate::auth::Caller;
use crate::call::{CallRequest, ProtocolError, ToolSuccess};
use crate::error::{ErrorType, ToolError};
use crate::idempotency::{KeySource, ProvidedKey, META_KEY};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;
use std::sync::Arc;

/// One MCP connection's view of the host.
#[derive(Clone)]
pub struct McpService {
    cordon: Arc<Cordon>,
    /// The connection's caller (stdio); `None` over HTTP, where each request carries its own.
    caller: Option<Caller>,
}

impl McpService {
    /// A service whose calls all run as `caller` (stdio).
    pub fn for_caller(cordon: Arc<Cordon>, caller: Caller) -> Self {
        Self { cordon, caller: Some(caller) }
    }

    /// A service whose calls run as the principal the HTTP auth layer attached to each request.
    pub fn per_request(cordon: Arc<Cordon>) -> Self {
        Self { cordon, caller: None }
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

impl ServerHandler for McpService {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build();
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

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let idempotency_key = provided_key(&request, &context);
        let call = self.cordon.call(CallRequest {
            tool: request.name.into_owned(),
            arguments: request.arguments,
            caller: self.caller(&context)?,
            idempotency_key,
        });
        // A client's `notifications/cancelled` drops the call, and with it the guest instance.
        let outcome = tokio::select! {
            outcome = call => outcome,
            () = context.ct.cancelled() => Ok(Err(ToolError::new(ErrorType::Cancelled, "the call was cancelled by the client"))),
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
    fn error_result_carries_the_error_as_text_and_structured_content() {
        let result = error_result(&ToolError::new(ErrorType::Timeout, "too slow"));
        assert_eq!(result.is_error, Some(true));
        let body: Value = serde_json::from_str(&texts(&result)[0]).unwrap();
        assert_eq!(body, json!({"error": {"type": "timeout", "message": "too slow", "retryable": true}}));
        assert_eq!(result.structured_content, Some(body));
    }
}
