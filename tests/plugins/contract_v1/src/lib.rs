//! Fixture: version 1 of the plugin the tests serve as `contract.wasm` (so its tools are
//! `contract_*`). Version 2 (`contract_v2`) changes `order`'s input schema incompatibly.

use cordon_sdk::{Context, Plugin, Text, Tool};
use schemars::JsonSchema;
use serde::Deserialize;

/// An order.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Order {
    /// What to order.
    item: String,
    /// How many.
    quantity: u32,
    /// A note for the packer.
    note: Option<String>,
}

struct Contract;

impl Plugin for Contract {
    fn tools() -> Vec<Tool> {
        vec![Tool::new("order", "Places an order for an item (version 1 of the contract).", |o: Order, _: &Context| {
            Ok(Text(format!("v1 ordered {} x {}{}", o.quantity, o.item, o.note.map(|n| format!(" ({n})")).unwrap_or_default())))
        })]
    }
}

cordon_sdk::export_plugin!(Contract);
