//! Fixture: a tool whose name the host must refuse to publish (spaces and `!` are not allowed in
//! MCP tool names).

use cordon_sdk::{Context, NoArgs, Plugin, Text, Tool};

struct BadName;

impl Plugin for BadName {
    fn tools() -> Vec<Tool> {
        vec![Tool::new(
            "not a valid name!",
            "Must never be published: its name is not a valid MCP tool name.",
            |_: NoArgs, _: &Context| Ok(Text("should not run".into())),
        )]
    }
}

cordon_sdk::export_plugin!(BadName);
