//! Fixture: `describe` lists one tool whose input schema is a valid JSON Schema of about 10 MB
//! (100,000 properties, each with a long description). The host must refuse the plugin at load
//! rather than compile it and send it to every client in `tools/list`.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "cordon:plugin/plugin",
});

use cordon::plugin::types::{Annotations, CallContext, CallError, ToolDescriptor, ToolOutput};
use exports::cordon::plugin::tools::Guest;

/// Properties in the schema; with ~100 bytes each, about 10 MB in all.
const PROPERTIES: usize = 100_000;

fn schema() -> String {
    let filler = "x".repeat(64);
    let mut schema = String::with_capacity(PROPERTIES * 110 + 64);
    schema.push_str(r#"{"type":"object","properties":{"#);
    for i in 0..PROPERTIES {
        if i > 0 {
            schema.push(',');
        }
        schema.push_str(&format!(r#""p{i:06}":{{"type":"string","description":"{filler}"}}"#));
    }
    schema.push_str(r#"},"additionalProperties":false}"#);
    schema
}

struct Huge;

impl Guest for Huge {
    fn describe() -> Vec<ToolDescriptor> {
        vec![ToolDescriptor {
            name: "huge".into(),
            title: None,
            description: "Takes any of 100,000 optional string properties; returns \"ok\".".into(),
            input_schema: schema(),
            output_schema: None,
            annotations: Annotations { read_only: Some(true), destructive: None, idempotent: None, open_world: None },
        }]
    }

    fn call(_tool: String, _arguments: String, _cx: CallContext) -> Result<ToolOutput, CallError> {
        Ok(ToolOutput { text: Some("ok".into()), json: None })
    }
}

export!(Huge);
