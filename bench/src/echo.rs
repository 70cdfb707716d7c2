//! The baseline: a native rmcp 3.9 server with one tool shaped like the demo plugin's `echo`
//! (same name, same input schema, same result: the text, and `{"text"}` as structured content),
//! over stdio or behind rmcp's Streamable HTTP in stateless JSON mode, as Cordon serves it.
//!
//! With `--wasm PLUGIN` the tool runs the plugin's `echo` in a fresh pooled wasmtime instance per
//! call ([`crate::bare`]) instead of answering natively: rmcp plus bare wasmtime, the floor under
//! anything that runs each call in its own instance.

use crate::bare::BareWasm;
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
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone)]
struct Echo {
    tool: Tool,
    /// The plugin run per call, when the tool is not answered natively.
    wasm: Option<Arc<BareWasm>>,
}

impl Echo {
    fn new(wasm: Option<Arc<BareWasm>>) -> Echo {
        let schema = json!({
            "type": "object",
            "properties": {"text": {"type": "string", "description": "The text to send back unchanged."}},
            "required": ["text"],
            "additionalProperties": false
        });
        let Value::Object(schema) = schema else { unreachable!() };
        Echo { tool: Tool::new("demo_echo", "Returns the text it was given, unchanged.", Arc::new(schema)), wasm }
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
        if let Some(wasm) = &self.wasm {
            let arguments = serde_json::to_string(&request.arguments.unwrap_or_default())
                .map_err(|e| McpError::invalid_params(e.to_string(), None))?;
            let output =
                wasm.call("echo", &arguments).await.map_err(|e| McpError::internal_error(e.to_string(), None))?;
            let mut result = CallToolResult::success(output.text.into_iter().map(ContentBlock::text).collect());
            result.structured_content = output.json.and_then(|json| serde_json::from_str(&json).ok());
            return Ok(result.into());
        }
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
pub async fn serve(stdio: bool, blocking_stdio: bool, listen: Option<String>, wasm: Option<PathBuf>) -> Result<()> {
    let wasm = match wasm {
        Some(plugin) => Some(Arc::new(BareWasm::new(&plugin, true).with_context(|| format!("{}", plugin.display()))?)),
        None => None,
    };
    if stdio {
        let service = if blocking_stdio {
            Echo::new(wasm).serve(rmcp::transport::stdio()).await.context("stdio")?
        } else {
            Echo::new(wasm).serve(rmcp::transport::stdio_pipes()).await.context("stdio")?
        };
        service.waiting().await?;
        return Ok(());
    }
    let listen = listen.context("--stdio or --listen ADDR")?;
    let config = StreamableHttpServerConfig::default().with_legacy_session_mode(false).with_json_response(true);
    let service = StreamableHttpService::new(
        move || Ok(Echo::new(wasm.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
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
