//! Core modules become components: `cordon wrap core.wasm -o plugin.wasm`, and automatically
//! when a core module is dropped into the plugins folder.
//!
//! Zig, C (wasi-libc) and Go build WASI preview-1 *core modules*. The host turns one into a
//! component in process with `wit-component` and the preview-1 reactor adapter published for
//! wasmtime 48 (`wasi-preview1-component-adapter-provider`), so an author needs no extra tool.
//! A module built with `wit-bindgen` bindings carries its world in a `component-type` custom
//! section; a module without one is taken to implement `cordon:plugin` plus outbound HTTP (the
//! host embeds the world `cordon:guest/plugin-http` of `plugins/wit`), so a hand-written module
//! only has to export the canonical-ABI functions (`cordon:plugin/tools@0.1.0#describe`, `…#call`,
//! `cabi_realloc`) and may import `wasi:http@0.2.12` functions by their component names (the C
//! helper `plugins/c-sdk` does). The component imports only what the module actually imports.

use anyhow::{bail, Context, Result};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};

/// The world embedded in modules that do not carry one, and the packages it depends on, in
/// dependency order: the plugin contract plus `wasi:http/outgoing-handler` (WASI 0.2.12, the
/// version wasmtime 48 implements).
const GUEST_WIT: [(&str, &str); 9] = [
    ("io.wit", include_str!("../../plugins/wit/deps/io.wit")),
    ("clocks.wit", include_str!("../../plugins/wit/deps/clocks.wit")),
    ("random.wit", include_str!("../../plugins/wit/deps/random.wit")),
    ("filesystem.wit", include_str!("../../plugins/wit/deps/filesystem.wit")),
    ("sockets.wit", include_str!("../../plugins/wit/deps/sockets.wit")),
    ("cli.wit", include_str!("../../plugins/wit/deps/cli.wit")),
    ("http.wit", include_str!("../../plugins/wit/deps/http.wit")),
    ("plugin.wit", include_str!("../../wit/plugin.wit")),
    ("world.wit", include_str!("../../plugins/wit/world.wit")),
];

/// What a `.wasm` file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A component (layer 1).
    Component,
    /// A core module (layer 0).
    CoreModule,
}

/// Reads the header: `\0asm`, then version and layer.
pub fn kind(bytes: &[u8]) -> Result<WasmKind> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("not a WebAssembly file (bad magic number)");
    }
    Ok(if bytes[6..8] == [0, 0] { WasmKind::CoreModule } else { WasmKind::Component })
}

/// The component for a preview-1 core module.
pub fn wrap(core: &[u8]) -> Result<Vec<u8>> {
    if kind(core)? != WasmKind::CoreModule {
        bail!("this is already a component");
    }
    let mut module = core.to_vec();
    if !has_component_type(core)? {
        let mut resolve = wit_parser::Resolve::default();
        let mut package = None;
        for (name, wit) in GUEST_WIT {
            package = Some(resolve.push_str(name, wit).with_context(|| format!("the built-in WIT {name}"))?);
        }
        let package = package.context("the built-in WIT")?;
        let world = resolve.select_world(&[package], Some("plugin-http")).context("the plugin-http world")?;
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
            false,
        )
        .context("cannot embed the plugin world")?;
    }
    // A command (with `_start`) needs the command adapter; plugins are normally reactors.
    let adapter = if exports_start(core)? {
        WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER
    } else {
        WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER
    };
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .context("the core module does not fit its world")?
        .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter)
        .context("the preview-1 adapter")?
        .encode()
        .context("cannot make a component of this core module")?;
    Ok(component)
}

fn has_component_type(module: &[u8]) -> Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::CustomSection(section) = payload.context("malformed core module")? {
            if section.name().starts_with("component-type") {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn exports_start(module: &[u8]) -> Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ExportSection(exports) = payload.context("malformed core module")? {
            for export in exports {
                if export.context("malformed export")?.name == "_start" {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_modules_from_components() {
        assert_eq!(kind(b"\0asm\x01\0\0\0").unwrap(), WasmKind::CoreModule);
        assert_eq!(kind(b"\0asm\x0d\0\x01\0").unwrap(), WasmKind::Component);
        assert!(kind(b"not wasm").is_err());
    }

    #[test]
    fn a_module_that_does_not_implement_the_world_is_refused_with_a_reason() {
        // An empty module: no describe/call exports.
        let error = wrap(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(
            format!("{error:#}").contains("does not fit") || format!("{error:#}").contains("component"),
            "{error:#}"
        );
    }
}
