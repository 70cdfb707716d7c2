//! Fixture: copied to `x.wasm` and `x_a.wasm`, plugin `x`'s tool `a_b` and plugin `x_a`'s tool
//! `b` are both published as `x_a_b`, a collision the host must detect.

use cordon_sdk::{Context, NoArgs, Plugin, Text, Tool};

struct Twins;

impl Plugin for Twins {
    fn tools() -> Vec<Tool> {
        vec![
            Tool::new("b", "Returns \"b\".", |_: NoArgs, _: &Context| {
                Ok(Text("b".into()))
            }),
            Tool::new("a_b", "Returns \"a_b\".", |_: NoArgs, _: &Context| {
                Ok(Text("a_b".into()))
            }),
        ]
    }
}

cordon_sdk::export_plugin!(Twins);
