//! The baseline: a native rmcp 3.9 server with one tool shaped like the demo plugin's `echo`
//! (same name, same input schema, same result: the text, and `{"text"}` as structured content),
//! over stdio or behind rmcp's Streamable HTTP in stateless JSON mode, as Cordon serves it.

use anyhow::{Context, Result};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Clone)]
struct Echo {
    tool: Tool,
}

impl Echo {
    fn new() -> Echo {
        let schema = json!({
            "type": "object",
            "properties": {"text": {"type": "string", "description": "The text to send back unchanged."}},
            "required": ["text"],
            "additionalProperties": false
        });
        let Value::Object(schema) = schema else { unreachable!() };
        Echo { tool: Tool::new("demo_echo", "Returns the text it was given, unchanged.", Arc::new(schema)) }
    }
}

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new("echo", "1");
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(vec![self.tool.clone()]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let text = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("text"))
            .and_then(Value::as_str)
            .ok_or_else(|| McpError::invalid_params("text must be a string", None))?
            .to_string();
        let mut result = CallToolResult::success(vec![ContentBlock::text(text.clone())]);
        result.structured_content = Some(json!({"text": text}));
        Ok(result.into())
    }
}

/// Serves until stdin closes (stdio) or forever (HTTP).
pub async fn serve(stdio: bool, listen: Option<String>) -> Result<()> {
    if stdio {
        let service = Echo::new().serve(rmcp::transport::stdio()).await.context("stdio")?;
        service.waiting().await?;
        return Ok(());
    }
    let listen = listen.context("--stdio or --listen ADDR")?;
    let config = StreamableHttpServerConfig::default().with_legacy_session_mode(false).with_json_response(true);
    let service = StreamableHttpService::new(|| Ok(Echo::new()), Arc::new(LocalSessionManager::default()), config);
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("url=http://{}/mcp", listener.local_addr()?);
    // TCP_NODELAY, as Cordon sets it on its connections (`connections::no_delay`).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await?;
    Ok(())
}
