//! Fixture: `describe` lists 10,000 tools (`t00000` to `t09999`), each valid on its own. The host
//! must refuse the plugin at load rather than publish them all. `wit-bindgen` directly: nothing
//! in the SDK stops a plugin from doing this, but the fixture should not depend on that.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "cordon:plugin/plugin",
});

use cordon::plugin::types::{Annotations, CallContext, CallError, ToolDescriptor, ToolOutput};
use exports::cordon::plugin::tools::Guest;

/// How many tools `describe` lists.
const TOOLS: usize = 10_000;

struct Many;

impl Guest for Many {
    fn describe() -> Vec<ToolDescriptor> {
        (0..TOOLS)
            .map(|i| ToolDescriptor {
                name: format!("t{i:05}"),
                title: None,
                description: format!("Tool number {i} of {TOOLS}; returns its own name."),
                input_schema: r#"{"type":"object","properties":{},"additionalProperties":false}"#.into(),
                output_schema: None,
                annotations: Annotations {
                    read_only: Some(true),
                    destructive: None,
                    idempotent: None,
                    open_world: None,
                },
            })
            .collect()
    }

    fn call(tool: String, _arguments: String, _cx: CallContext) -> Result<ToolOutput, CallError> {
        Ok(ToolOutput { text: Some(tool), json: None })
    }
}

export!(Many);
