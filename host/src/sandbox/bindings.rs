//! Host-side bindings for the `cordon:plugin` world, generated from `wit/`.

// Generated code: its items are documented by the WIT it comes from.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "cordon:plugin/plugin",
    exports: { default: async },
});

pub use cordon::plugin::types::{Annotations, CallContext, CallError, ToolDescriptor, ToolOutput};
pub use exports::cordon::plugin::tools::Guest as ToolsExport;
