//! Fixture: version 2 of the plugin the tests serve as `contract.wasm`. Against version 1,
//! `order` lost its `note` property and gained a required `priority`: callers of version 1
//! would break, so the host must refuse this replacement on hot reload (by default).

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
    /// How urgent, 1 (low) to 3 (high).
    priority: u8,
}

struct Contract;

impl Plugin for Contract {
    fn tools() -> Vec<Tool> {
        vec![Tool::new("order", "Places an order for an item (version 2 of the contract).", |o: Order, _: &Context| {
            Ok(Text(format!("v2 ordered {} x {} at priority {}", o.quantity, o.item, o.priority)))
        })]
    }
}

cordon_sdk::export_plugin!(Contract);
