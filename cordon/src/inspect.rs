//! `cordon inspect FILE.wasm` and `cordon lint FILE.wasm`: what an operator wants to know about
//! a plugin before dropping it into the plugins folder — its world (imports and exports), its
//! tools and schemas, its digest, the quality-gate findings, and what the current config would
//! grant it. The file is compiled and described exactly as the server would, in a sandbox with
//! no grants, and is never run otherwise.

use anyhow::Result;
use cordon_host::config::Config;
use cordon_host::registry::lint::{Finding, Severity};
use cordon_host::registry::{self, LoadContext, LoadedPlugin, ToolEntry};
use cordon_sandbox::cache::CompileCache;
use cordon_sandbox::grants::credentials::Credentials;
use cordon_sandbox::Sandbox;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// A plugin file, loaded the way the server would load it.
pub struct Examined {
    /// The loaded plugin.
    pub plugin: Arc<LoadedPlugin>,
    /// Its published tools (after the config's overrides).
    pub tools: Vec<Arc<ToolEntry>>,
    /// Quality-gate findings.
    pub findings: Vec<Finding>,
    sandbox: Sandbox,
}

impl Examined {
    /// Whether any finding is an error (what `[lint] mode = "refuse"` would refuse).
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// Compiles (through the compile cache in `data_dir`), links and describes `file` under `config`.
/// Credentials that cannot be loaded here (an unset variable) do not stop an inspection: grants
/// that name them are then reported as refused.
pub async fn examine(config: &Config, data_dir: &Path, file: &Path) -> Result<Examined> {
    let sandbox = Sandbox::new(&config.pool)?;
    let cache = Arc::new(CompileCache::new(&data_dir.join("compile-cache"), sandbox.engine()));
    let credentials = Credentials::load(&config.credentials).unwrap_or_default();
    let protected = config.protected_paths(data_dir, file.parent().unwrap_or(Path::new(".")), None);
    let cx = LoadContext {
        sandbox: &sandbox,
        cache: &cache,
        config,
        credentials: &credentials,
        protected: &protected,
        lint_refuses: false,
    };
    let (plugin, tools) = registry::load_file(&cx, file).await?;
    let findings = registry::lint(&tools, &config.lint);
    Ok(Examined { plugin, tools, findings, sandbox })
}

/// `cordon inspect` as JSON. `plugin_section` is the file's `[plugins.NAME]` table as written
/// (references to secrets, never their values).
pub fn inspection(examined: &Examined, config: &Config, plugin_section: Option<Value>) -> Value {
    let plugin = &examined.plugin;
    let (imports, exports) = plugin.prepared.world(examined.sandbox.engine());
    let limits = &plugin.limits;
    let section = config.plugin(&plugin.name);
    json!({
        "plugin": plugin.name,
        "file": plugin.path.display().to_string(),
        "digest": format!("sha256:{}", plugin.digest),
        "world": {"imports": imports, "exports": exports},
        "tools": examined.tools.iter().map(|t| json!({
            "name": t.name,
            "title": t.listing.title,
            "description": t.listing.description,
            "inputSchema": t.listing.input_schema,
            "outputSchema": t.listing.output_schema,
            "annotations": t.listing.hints,
            "idempotency": if t.read_only { "read-only: not keyed" } else { "keyed" },
            "tasks": t.task_support.as_str(),
        })).collect::<Vec<_>>(),
        "lint": examined.findings,
        "granted": {
            "limits": {
                "fuel": limits.fuel,
                "timeout_ms": limits.timeout.as_millis() as u64,
                "memory_mb": limits.memory_bytes >> 20,
                "max_concurrency": limits.max_concurrency,
                "queue_timeout_ms": limits.queue_timeout.as_millis() as u64,
                "max_input_bytes": limits.max_input_bytes,
                "max_output_bytes": limits.max_output_bytes,
            },
            "http_grants": section.http.grants.len(),
            "directories": section.dirs.iter().map(|d| json!({"guest": d.guest, "writable": d.writable})).collect::<Vec<_>>(),
            "config_section": plugin_section.unwrap_or(Value::Null),
            "summary": if section.http.grants.is_empty() && section.dirs.is_empty() {
                "nothing: no network, no files (the default)"
            } else {
                "see config_section: outbound HTTP and directories as granted there"
            },
        },
    })
}
