//! Fixture: a component importing `cordon:unknown/thing@0.1.0`, which the host does not offer.
//! It uses `wit-bindgen` directly because the SDK only knows the standard world.

wit_bindgen::generate!({
    // The contract first: the fixture's package depends on it.
    path: ["../../../wit", "wit"],
    world: "cordon:unknown/badimport@0.1.0",
    // The contract lives in another package, whose bindings are generated here too.
    generate_all,
});

use cordon::plugin::types::{Annotations, CallContext, CallError, ToolDescriptor, ToolOutput};
use cordon::unknown::thing;
use exports::cordon::plugin::tools::Guest;

struct BadImport;

impl Guest for BadImport {
    fn describe() -> Vec<ToolDescriptor> {
        vec![ToolDescriptor {
            name: "poke".into(),
            title: None,
            description: "Calls an import the host does not offer.".into(),
            input_schema: r#"{"type":"object","properties":{},"additionalProperties":false}"#
                .into(),
            output_schema: None,
            annotations: Annotations {
                read_only: None,
                destructive: None,
                idempotent: None,
                open_world: None,
            },
        }]
    }

    fn call(_tool: String, _arguments: String, _cx: CallContext) -> Result<ToolOutput, CallError> {
        // Calling the import keeps it in the component: unused imports are dropped.
        Ok(ToolOutput {
            text: Some(thing::poke().to_string()),
            json: None,
        })
    }
}

export!(BadImport);
