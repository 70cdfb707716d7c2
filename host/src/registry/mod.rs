//! The plugin registry: discovers `*.wasm` files, compiles (through the cache), links, asks each
//! plugin to describe itself, and publishes its tools under DESIGN §6's naming rules.
//!
//! Loading is per plugin and never all-or-nothing: a broken file, a bad name, a collision, an
//! unsupported import or a bad schema is logged with a clear reason and that plugin alone is
//! skipped; the rest keep serving. Files load in name order so collisions resolve the same way
//! on every start (the first file keeps the name).

pub mod cache;
mod names;

use crate::call::Principal;
use crate::config::{Config, Limits};
use crate::grants::credentials::Credentials;
use crate::grants::PluginGrants;
use crate::notify::CallLink;
use crate::sandbox::bindings::{Annotations, ToolDescriptor};
use crate::sandbox::{CallGrants, GuestReply, Invocation, Prepared, Sandbox};
use crate::schema::Schema;
use anyhow::{anyhow, bail, Context, Result};
use cache::{CacheOutcome, CompileCache};
use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub use names::{is_valid_tool_name, published_name};

/// One loaded plugin.
pub struct LoadedPlugin {
    /// The plugin's name: its file's stem.
    pub name: String,
    /// SHA-256 of the component file, hex.
    pub digest: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Its effective limits.
    pub limits: Limits,
    /// Whether its code came from the compile cache.
    pub compile_cache: CacheOutcome,
    /// What the operator granted it.
    pub grants: PluginGrants,
    /// Its idempotency settings.
    pub idempotency: crate::idempotency::IdempotencyConfig,
    pub(crate) prepared: Prepared,
    /// Instance slots: at most `limits.max_concurrency` calls run at once.
    pub(crate) slots: Semaphore,
}

/// One published tool.
pub struct ToolEntry {
    /// The published name, `<plugin>_<tool>`.
    pub name: String,
    /// The name inside the plugin.
    pub local_name: String,
    /// The plugin that serves it.
    pub plugin: Arc<LoadedPlugin>,
    /// The strict input schema the host validates against.
    pub input: Schema,
    /// The output schema, if the tool declares one.
    pub output: Option<Schema>,
    /// The tool's `tools/list` entry, built once.
    pub descriptor: Tool,
    /// Whether the tool declares itself read-only (not keyed unless configured).
    pub read_only: bool,
    /// The argument whose schema property says `"x-idempotency-key": true`.
    pub key_argument: Option<String>,
}

/// A plugin file that could not be loaded, and why.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    /// The file's name (not its full path).
    pub file: String,
    /// Why it was refused.
    pub reason: String,
}

/// Everything currently served: an immutable snapshot, replaced whole on reload.
#[derive(Default)]
pub struct Catalog {
    /// Loaded plugins in file-name order.
    pub plugins: Vec<Arc<LoadedPlugin>>,
    /// Tools in publication order.
    pub tools: Vec<Arc<ToolEntry>>,
    by_name: HashMap<String, Arc<ToolEntry>>,
    /// Files that were refused.
    pub failures: Vec<LoadFailure>,
}

impl Catalog {
    /// The tool published as `name`.
    pub fn tool(&self, name: &str) -> Option<&Arc<ToolEntry>> {
        self.by_name.get(name)
    }

    /// The catalog as JSON, for `cordon tools`.
    pub fn to_json(&self) -> Value {
        json!({
            "plugins": self.plugins.iter().map(|p| json!({
                "name": p.name,
                "digest": format!("sha256:{}", p.digest),
                "file": p.path.file_name().map(|f| f.to_string_lossy().into_owned()),
                "compile_cache": p.compile_cache.as_str(),
            })).collect::<Vec<_>>(),
            "tools": self.tools.iter().map(|t| json!({
                "name": t.name,
                "plugin": t.plugin.name,
                "title": t.descriptor.title,
                "description": t.descriptor.description,
                "inputSchema": t.descriptor.input_schema,
                "outputSchema": t.descriptor.output_schema,
                "annotations": t.descriptor.annotations,
            })).collect::<Vec<_>>(),
            "errors": self.failures.iter().map(|f| json!({"file": f.file, "error": f.reason})).collect::<Vec<_>>(),
        })
    }
}

/// What loading needs besides the files.
pub struct LoadContext<'a> {
    /// The engine and linker.
    pub sandbox: &'a Sandbox,
    /// The compile cache.
    pub cache: &'a Arc<CompileCache>,
    /// The configuration in force.
    pub config: &'a Config,
    /// Loaded credentials, to check grants against.
    pub credentials: &'a Credentials,
}

/// Loads every `*.wasm` in `dir`.
pub async fn load_dir(cx: &LoadContext<'_>, dir: &Path) -> Result<Catalog> {
    let config = cx.config;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the plugins folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    files.sort();

    let mut catalog = Catalog::default();
    for path in files {
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        match load_plugin(cx, &path, &catalog).await {
            Ok((plugin, tools)) => {
                tracing::info!(plugin = %plugin.name, tools = tools.len(), digest = %plugin.digest,
                    compile_cache = plugin.compile_cache.as_str(), "loaded plugin");
                for tool in tools {
                    catalog.by_name.insert(tool.name.clone(), tool.clone());
                    catalog.tools.push(tool);
                }
                catalog.plugins.push(plugin);
            }
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::error!(file = %file, reason = %reason, "plugin refused");
                catalog.failures.push(LoadFailure { file, reason });
            }
        }
    }
    for name in config.plugins.keys() {
        if !catalog.plugins.iter().any(|p| &p.name == name) {
            tracing::warn!(plugin = %name, "[plugins.{name}] is configured but no such plugin is loaded");
        }
    }
    Ok(catalog)
}

async fn load_plugin(
    cx: &LoadContext<'_>,
    path: &Path,
    loaded: &Catalog,
) -> Result<(Arc<LoadedPlugin>, Vec<Arc<ToolEntry>>)> {
    let LoadContext { sandbox, cache, config, credentials } = *cx;
    let name = names::plugin_name(path)?;
    let plugin_config = config.plugin(&name);
    let bytes = std::fs::read(path).context("cannot read the file")?;
    check_component_header(&bytes)?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if let Some(pin) = &plugin_config.sha256 {
        if !pin.eq_ignore_ascii_case(&digest) {
            bail!(
                "digest mismatch: the file is sha256:{digest}, but [plugins.{name}] sha256 pins sha256:{}",
                pin.to_ascii_lowercase()
            );
        }
    }
    let grants =
        PluginGrants::from_config(&plugin_config, credentials).with_context(|| format!("[plugins.{name}] grants"))?;

    // Compiling takes from milliseconds to many seconds (a Python component); keep it off the
    // async runtime's threads.
    let (component, compile_cache) = {
        let (engine, cache, digest) = (sandbox.engine().clone(), cache.clone(), digest.clone());
        tokio::task::spawn_blocking(move || cache.component(&engine, &bytes, &digest))
            .await
            .map_err(|e| anyhow!("compilation task failed: {e}"))?
            .context("not a valid component")?
    };
    let prepared = sandbox.prepare(&component)?;
    let limits = config.limits_for(&name);
    let label: Arc<str> = format!("{name}/describe").into();
    // Describing needs nothing: it runs with no grants at all.
    let nothing = CallGrants {
        grants: PluginGrants::default(),
        credentials: Arc::new(Credentials::default()),
        principal: Principal::new("cordon"),
        egress: Default::default(),
        upstream_key_base: None,
    };
    let run = sandbox.run(&prepared, &limits, label, nothing, CallLink::default(), Invocation::Describe).await;
    let descriptors = match run.reply {
        Ok(GuestReply::Tools(tools)) => tools,
        Ok(GuestReply::Output(_)) => bail!("describe returned a call result"),
        Err(e) => bail!("describe failed: {}", e.message),
    };

    let plugin = Arc::new(LoadedPlugin {
        slots: Semaphore::new(limits.max_concurrency as usize),
        name,
        digest,
        path: path.to_path_buf(),
        limits,
        compile_cache,
        grants,
        idempotency: plugin_config.idempotency.clone(),
        prepared,
    });
    let tools = publish_tools(&plugin, descriptors, loaded)?;
    Ok((plugin, tools))
}

/// Validates names and schemas, and builds the `tools/list` entries.
fn publish_tools(
    plugin: &Arc<LoadedPlugin>,
    descriptors: Vec<ToolDescriptor>,
    loaded: &Catalog,
) -> Result<Vec<Arc<ToolEntry>>> {
    if descriptors.is_empty() {
        bail!("the plugin describes no tools");
    }
    let mut tools: Vec<Arc<ToolEntry>> = Vec::with_capacity(descriptors.len());
    for d in descriptors {
        let name = published_name(&plugin.name, &d.name)?;
        if tools.iter().any(|t| t.name == name) {
            bail!("the plugin describes the tool {:?} twice", d.name);
        }
        if let Some(other) = loaded.tool(&name) {
            bail!(
                "tool name {name:?} collides with the tool of the same name from plugin {:?} ({}); rename one of the two files",
                other.plugin.name,
                other.plugin.path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default(),
            );
        }
        let input = Schema::input(&d.input_schema).with_context(|| format!("tool {:?}", d.name))?;
        let output =
            d.output_schema.as_deref().map(Schema::output).transpose().with_context(|| format!("tool {:?}", d.name))?;
        let mut descriptor = Tool::new(name.clone(), d.description, Arc::new(input.json.clone()))
            .with_annotations(annotations(&d.annotations));
        if let Some(title) = d.title {
            descriptor = descriptor.with_title(title);
        }
        if let Some(output) = &output {
            descriptor = descriptor.with_raw_output_schema(Arc::new(output.json.clone()));
        }
        let key_argument = key_argument(&input.json);
        let read_only = d.annotations.read_only == Some(true);
        tools.push(Arc::new(ToolEntry {
            name,
            local_name: d.name,
            plugin: plugin.clone(),
            input,
            output,
            descriptor,
            read_only,
            key_argument,
        }));
    }
    Ok(tools)
}

/// The top-level property marked `"x-idempotency-key": true`, if any.
fn key_argument(schema: &serde_json::Map<String, Value>) -> Option<String> {
    let properties = schema.get("properties")?.as_object()?;
    properties
        .iter()
        .find(|(_, p)| p.get("x-idempotency-key").and_then(Value::as_bool) == Some(true))
        .map(|(name, _)| name.clone())
}

fn annotations(a: &Annotations) -> ToolAnnotations {
    ToolAnnotations::from_raw(None, a.read_only, a.destructive, a.idempotent, a.open_world)
}

/// Refuses what is not a component with a message an operator can act on.
fn check_component_header(bytes: &[u8]) -> Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        bail!("not a WebAssembly file (bad magic number)");
    }
    // Bytes 4..8: version and layer. Layer 1 is a component; layer 0 a core module.
    if bytes[6..8] == [0, 0] {
        bail!("this is a core wasm module, not a component: build for wasm32-wasip2 or wrap it into a component");
    }
    Ok(())
}
