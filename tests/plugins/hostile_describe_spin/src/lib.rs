//! Fixture: `describe` never returns (it spins). The host runs `describe` under the plugin's own
//! limits, so this plugin must be refused at load, naming why, while the others load and serve.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "cordon:plugin/plugin",
});

use cordon::plugin::types::{CallContext, CallError, ToolDescriptor, ToolOutput};
use exports::cordon::plugin::tools::Guest;

struct Spin;

impl Guest for Spin {
    fn describe() -> Vec<ToolDescriptor> {
        let mut n = 0u64;
        loop {
            // black_box makes every iteration observable, so the loop cannot be optimized away.
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn call(_tool: String, _arguments: String, _cx: CallContext) -> Result<ToolOutput, CallError> {
        Ok(ToolOutput { text: Some("never described, never called".into()), json: None })
    }
}

export!(Spin);
