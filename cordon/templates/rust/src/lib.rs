//! {{name}}: a Cordon plugin (a WebAssembly component targeting `cordon:plugin`, see `wit/`).
//!
//! Build with `make`, then copy `{{name}}.wasm` into Cordon's plugins folder: the tool is served
//! as `{{prefix}}_hello`. The host validates arguments against the input schema before `call`
//! runs, enforces the limits, and decides what the plugin may reach (nothing by default).

wit_bindgen::generate!({ world: "plugin", path: "wit" });

use cordon::plugin::host::{log, LogLevel};
use cordon::plugin::types::{Annotations, CallContext, CallError, ToolDescriptor, ToolOutput};
use exports::cordon::plugin::tools::Guest;

struct Plugin;

impl Guest for Plugin {
    fn describe() -> Vec<ToolDescriptor> {
        vec![ToolDescriptor {
            name: "hello".into(),
            title: Some("Say hello".into()),
            description: "Greets someone by name. Fails with `empty_name` when the name is blank.".into(),
            input_schema: serde_json::json!({
                "type": "object",
                "properties": {"name": {"type": "string", "description": "Who to greet."}},
                "required": ["name"],
                "additionalProperties": false
            })
            .to_string(),
            output_schema: None,
            annotations: Annotations {
                read_only: Some(true),
                destructive: Some(false),
                idempotent: Some(true),
                open_world: Some(false),
            },
        }]
    }

    fn call(tool: String, arguments: String, context: CallContext) -> Result<ToolOutput, CallError> {
        let error = |kind: &str, message: String| CallError { kind: kind.into(), message, retryable: false };
        let arguments: serde_json::Value =
            serde_json::from_str(&arguments).map_err(|e| error("invalid_arguments", e.to_string()))?;
        match tool.as_str() {
            "hello" => {
                let name = arguments["name"].as_str().unwrap_or_default().trim();
                if name.is_empty() {
                    return Err(error("empty_name", "the name is blank".into()));
                }
                log(LogLevel::Info, &format!("greeting {name} for {}", context.principal));
                Ok(ToolOutput { text: Some(format!("Hello, {name}!")), json: None })
            }
            other => Err(error("unknown_tool", format!("no tool named {other}"))),
        }
    }
}

export!(Plugin);
