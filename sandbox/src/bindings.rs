//! Host-side bindings for the `cordon:plugin` worlds, generated from `wit/`.
//!
//! One set of bindings for `plugin-tasks` (the largest world) serves every plugin: a plugin
//! must export `tools`, and may export `resources`, `prompts`, `completions` and `tasks` (the
//! sandbox looks each export up on its own, so a
//! component built for the plain `plugin` world loads as before). `sample`, `elicit` and `ask`
//! wait for the MCP client, so they are async imports, and trappable: on the 2026-07-28 wire an
//! unanswered question ends the run ([`crate::notify`]). The rest of the host interface answers
//! at once.

// Generated code: its items are documented by the WIT it comes from.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "cordon:plugin/plugin-tasks",
    imports: {
        "cordon:plugin/host.sample": async | trappable,
        "cordon:plugin/host.elicit": async | trappable,
        "cordon:plugin/host.ask": async | trappable,
    },
    exports: { default: async },
});

pub use cordon::plugin::types::{
    Annotations, CallContext, CallError, Content, Media, ResourceBody, ResourceContents, ToolDescriptor, ToolOutput,
};
pub use exports::cordon::plugin::completions::{Completion, CompletionTarget};
pub use exports::cordon::plugin::prompts::{PromptDescriptor, PromptResult, Role};
pub use exports::cordon::plugin::resources::{ResourceDescriptor, TemplateDescriptor};
