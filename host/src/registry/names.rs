//! Naming rules: a plugin is named by its file's stem; a tool is published as
//! `<plugin>_<tool>`, which must match `^[a-zA-Z0-9_-]{1,64}$`, the strictest rule among
//! common MCP clients.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// The longest published tool name.
pub const MAX_TOOL_NAME: usize = 64;

/// Whether `name` is a valid published tool name.
pub fn is_valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The plugin name for a `.wasm` file.
pub fn plugin_name(path: &Path) -> Result<String> {
    let stem = path.file_stem().and_then(|s| s.to_str()).context("the file name is not valid UTF-8")?;
    if !is_valid_tool_name(stem) {
        bail!("plugin name {stem:?} (the file's stem) must be 1 to {MAX_TOOL_NAME} of [a-zA-Z0-9_-]");
    }
    Ok(stem.to_string())
}

/// `<prefix>_<tool>` (just `<tool>` for an empty prefix), or why it is not a valid tool name.
pub fn published_name(plugin: &str, tool: &str) -> Result<String> {
    let name = if plugin.is_empty() { tool.to_string() } else { format!("{plugin}_{tool}") };
    if tool.is_empty() || !is_valid_tool_name(&name) {
        bail!(
            "tool {tool:?} of plugin {plugin:?} would be published as {name:?}, which is not 1 to {MAX_TOOL_NAME} of [a-zA-Z0-9_-]"
        );
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_strictest_client_rule() {
        assert_eq!(published_name("demo", "echo").unwrap(), "demo_echo");
        assert!(published_name("demo", "not a valid name!").is_err());
        assert!(published_name("demo", "").is_err());
        assert!(published_name("demo", &"x".repeat(60)).is_err());
        assert!(published_name("d", &"x".repeat(62)).is_ok());
        assert!(plugin_name(Path::new("/p/with space.wasm")).is_err());
        assert_eq!(plugin_name(Path::new("/p/demo.wasm")).unwrap(), "demo");
    }
}
