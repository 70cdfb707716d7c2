//! The plugin registry: discovers `*.wasm` files, compiles (through the cache), links, asks each
//! plugin to describe itself, and publishes its tools under the naming rules of [`names`].
//!
//! Loading is per plugin and never all-or-nothing: a broken file, a bad name, a collision, an
//! unsupported import or a bad schema is logged with a clear reason and that plugin alone is
//! skipped; the rest keep serving. Files load in name order so collisions resolve the same way
//! on every start (the first file keeps the name). `describe` runs under the plugin's own limits
//! (a describe that spins is refused when its fuel or time runs out), and a description past
//! [`MAX_DESCRIBED_ITEMS`] items of a kind, [`MAX_SCHEMA_BYTES`] in one schema or
//! [`MAX_DESCRIPTION_BYTES`] in all is refused before anything in it is compiled.

pub mod compat;
pub mod lint;
mod names;
pub mod offers;

use crate::config::Config;
use crate::schema::Schema;
use anyhow::{anyhow, bail, Context, Result};
use cordon_core::Limits;
use cordon_core::Principal;
use cordon_sandbox::bindings::ToolDescriptor;
use cordon_sandbox::cache::{CacheOutcome, CompileCache};
use cordon_sandbox::grants::credentials::Credentials;
use cordon_sandbox::grants::PluginGrants;
use cordon_sandbox::link::CallLink;
use cordon_sandbox::spares::Spares;
use cordon_sandbox::{CallGrants, Description, GuestReply, Invocation, Prepared, Sandbox};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub use names::{is_valid_tool_name, published_name};

/// The most tools one plugin may describe; and, separately, the most resources, resource
/// templates and prompts. A plugin describing more is refused at load: every tool is compiled
/// and listed to every client, and no MCP client can use thousands of tools from one plugin.
pub const MAX_DESCRIBED_ITEMS: usize = 1_000;

/// The largest schema (input or output) one tool may declare, bytes. Each schema is compiled at
/// load and sent in every `tools/list`; real ones are a few KiB.
pub const MAX_SCHEMA_BYTES: usize = 1 << 20;

/// The largest description a plugin may give, bytes: every name, title, description, URI and
/// schema its `describe` (and list functions) returned, together.
pub const MAX_DESCRIPTION_BYTES: usize = 4 << 20;

// A description at the caps must lift: the sandbox's `describe` budget covers the strings twice
// over, for the records that hold them.
const _: () = assert!(cordon_sandbox::DESCRIBE_LIFT_BYTES >= 2 * MAX_DESCRIPTION_BYTES);

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
    /// The compiled, linked component.
    pub prepared: Prepared,
    /// Its resources, resource templates and prompts.
    pub offers: offers::Offers,
    /// Instance slots: at most `limits.max_concurrency` calls run at once.
    pub(crate) slots: Semaphore,
    /// Instances made ahead of its calls (`[pool] spares_per_plugin`); retired when the plugin
    /// leaves the catalog.
    pub spares: Arc<Spares>,
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
    /// What `tools/list` says of the tool, built once.
    pub listing: ToolListing,
    /// Whether the tool declares itself read-only (not keyed unless configured).
    pub read_only: bool,
    /// The argument whose schema property says `"x-idempotency-key": true`.
    pub key_argument: Option<String>,
    /// Whether it may run as a task: what the plugin declares, unless the operator overrides it
    /// (`[plugins.NAME.tools.TOOL] tasks`).
    pub task_support: cordon_core::TaskSupport,
}

/// What a tool's `tools/list` entry says besides its name: the description and title after the
/// operator's overrides, the schemas as published, and the plugin's hints.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolListing {
    /// Title, if any.
    pub title: Option<String>,
    /// Description.
    pub description: String,
    /// The published (strict) input schema, shared by every listing.
    pub input_schema: Arc<serde_json::Map<String, Value>>,
    /// The output schema, if the tool declares one.
    pub output_schema: Option<Arc<serde_json::Map<String, Value>>>,
    /// What the plugin says of the tool's effects.
    pub hints: ToolHints,
}

/// A tool's behaviour hints as the plugin declares them (MCP's tool annotations); untrusted,
/// for clients to show, never for the host to rely on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolHints {
    /// It changes nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_hint: Option<bool>,
    /// Its changes may destroy something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destructive_hint: Option<bool>,
    /// Repeating it with the same arguments changes nothing more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotent_hint: Option<bool>,
    /// It reaches outside systems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_world_hint: Option<bool>,
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
                "title": t.listing.title,
                "description": t.listing.description,
                "inputSchema": t.listing.input_schema,
                "outputSchema": t.listing.output_schema,
                "annotations": t.listing.hints,
                "tasks": t.task_support.as_str(),
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
    /// What no directory grant may reach.
    pub protected: &'a cordon_sandbox::grants::dirs::ProtectedPaths,
    /// Whether `[lint]` findings are logged and, under `mode = "refuse"`, refuse the plugin (the
    /// server); `cordon lint` and `cordon inspect` report them instead.
    pub lint_refuses: bool,
}

/// What a reload starts from: the catalog being served, and whether unchanged files may keep
/// their loaded plugin (a file event) or every plugin is loaded again (a new config).
pub struct Previous<'a> {
    /// The catalog now served.
    pub catalog: &'a Catalog,
    /// Reuse a plugin whose file has the same digest.
    pub reuse_unchanged: bool,
}

/// Loads every `*.wasm` in `dir`. On reload (`previous`), a file whose new version fails to
/// load — half-written, broken, or narrowing a tool's input schema under the `refuse` policy —
/// leaves its previous version serving, and the failure is reported.
pub async fn load_dir(cx: &LoadContext<'_>, dir: &Path, previous: Option<Previous<'_>>) -> Result<Catalog> {
    let config = cx.config;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the plugins folder {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    files.sort();

    // Compiling is most of a cold start (100 uncached plugins took 17 s one after another): every
    // file that needs it is compiled first, up to one per core at once, off the async runtime;
    // then each is described and published in name order, so the catalog (and which of two
    // plugins claiming one name wins) does not depend on which compile finished first.
    let compiles = Arc::new(tokio::sync::Semaphore::new(compile_parallelism(config)));
    let mut planned = Vec::with_capacity(files.len());
    for path in files {
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let before = previous.as_ref().and_then(|p| {
            let name = names::plugin_name(&path).ok()?;
            p.catalog.plugins.iter().find(|plugin| plugin.name == name).map(|plugin| (p, plugin.clone()))
        });
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {file}"));
        let plan = match bytes {
            Ok(bytes) => {
                let digest = hex::encode(Sha256::digest(&bytes));
                match &before {
                    Some((p, old)) if p.reuse_unchanged && digest == old.digest => Plan::Keep,
                    _ => Plan::Load(spawn_compile(cx, &path, bytes, digest, compiles.clone())),
                }
            }
            Err(e) => Plan::Failed(e),
        };
        planned.push((path, file, before, plan));
    }

    let mut catalog = Catalog::default();
    for (path, file, before, plan) in planned {
        let compiled = match plan {
            Plan::Keep => {
                if let Some((p, old)) = &before {
                    if let Err(e) = catalog.keep(p.catalog, old) {
                        catalog.refuse(file, e);
                    }
                }
                continue;
            }
            Plan::Failed(e) => Err(e),
            Plan::Load(compiling) => {
                compiling.await.map_err(|e| anyhow!("compilation task failed: {e}")).and_then(|compiled| compiled)
            }
        };
        let loaded = match compiled {
            Ok(compiled) => load_plugin(cx, &path, compiled, &catalog).await,
            Err(e) => Err(e),
        };
        let loaded = match (loaded, &before) {
            (Ok((plugin, tools)), Some((p, old))) => {
                let narrowed = narrowed_tools(p.catalog, old, &tools);
                if narrowed.is_empty() {
                    Ok((plugin, tools))
                } else if config.reload.incompatible_schemas == crate::config::SchemaPolicy::Allow {
                    tracing::warn!(plugin = %plugin.name, changes = %narrowed.join("; "),
                        "the new version narrows tool input schemas; serving it ([reload] incompatible_schemas = \"allow\")");
                    Ok((plugin, tools))
                } else {
                    Err(anyhow!(
                        "the new version changes existing tool contracts incompatibly ({}); publish the changed \
                         tool under a new name, or set [reload] incompatible_schemas = \"allow\"",
                        narrowed.join("; ")
                    ))
                }
            }
            (loaded, _) => loaded,
        };
        match loaded {
            Ok((plugin, tools)) => {
                let verb = if before.is_some() { "reloaded plugin" } else { "loaded plugin" };
                tracing::info!(plugin = %plugin.name, tools = tools.len(), digest = %plugin.digest,
                    compile_cache = plugin.compile_cache.as_str(), "{verb}");
                catalog.add(plugin, tools);
            }
            Err(e) => {
                let mut reason = format!("{e:#}");
                if let Some((p, old)) = &before {
                    match catalog.keep(p.catalog, old) {
                        Ok(()) => {
                            reason.push_str(&format!("; the previous version (sha256:{}) keeps serving", old.digest))
                        }
                        Err(e) => reason.push_str(&format!("; the previous version cannot be kept either: {e:#}")),
                    }
                }
                catalog.refuse(file, anyhow!(reason));
            }
        }
    }
    if let Some(previous) = &previous {
        for gone in previous.catalog.plugins.iter().filter(|p| !catalog.plugins.iter().any(|c| c.name == p.name)) {
            tracing::info!(plugin = %gone.name, "plugin removed; calls in flight finish on it");
        }
    } else {
        for name in config.plugins.keys() {
            if !catalog.plugins.iter().any(|p| &p.name == name) {
                tracing::warn!(plugin = %name, "[plugins.{name}] is configured but no such plugin is loaded");
            }
        }
    }
    Ok(catalog)
}

/// Every narrowing of an input schema from `old`'s tools to their namesakes in `new`, and the
/// tools that disappeared (logged, not refused: removal breaks no call that a list still offers).
fn narrowed_tools(previous: &Catalog, old: &Arc<LoadedPlugin>, new: &[Arc<ToolEntry>]) -> Vec<String> {
    let mut changes = Vec::new();
    for before in previous.tools.iter().filter(|t| Arc::ptr_eq(&t.plugin, old)) {
        match new.iter().find(|t| t.name == before.name) {
            Some(after) => {
                for change in compat::narrowing_changes(&before.input.json, &after.input.json) {
                    changes.push(format!("{} {change}", before.name));
                }
            }
            None => tracing::warn!(tool = %before.name, plugin = %old.name, "the new version no longer has this tool"),
        }
    }
    changes
}

impl Catalog {
    fn add(&mut self, plugin: Arc<LoadedPlugin>, tools: Vec<Arc<ToolEntry>>) {
        for tool in tools {
            self.by_name.insert(tool.name.clone(), tool.clone());
            self.tools.push(tool);
        }
        self.plugins.push(plugin);
    }

    /// Carries `plugin` and its tools over from `previous`, unless a plugin loaded before it in
    /// this pass took one of its names.
    fn keep(&mut self, previous: &Catalog, plugin: &Arc<LoadedPlugin>) -> Result<()> {
        let tools: Vec<Arc<ToolEntry>> =
            previous.tools.iter().filter(|t| Arc::ptr_eq(&t.plugin, plugin)).cloned().collect();
        if let Some(taken) = tools.iter().find_map(|t| self.tool(&t.name)) {
            bail!("tool name {:?} is now taken by plugin {:?}", taken.name, taken.plugin.name);
        }
        self.add(plugin.clone(), tools);
        Ok(())
    }

    fn refuse(&mut self, file: String, error: anyhow::Error) {
        let reason = format!("{error:#}");
        tracing::error!(file = %file, reason = %reason, "plugin refused");
        self.failures.push(LoadFailure { file, reason });
    }

    /// Whether a client's `tools/list` could differ between the two catalogs.
    pub fn lists_differ(&self, other: &Catalog) -> bool {
        self.tools.len() != other.tools.len()
            || self
                .tools
                .iter()
                .zip(&other.tools)
                .any(|(a, b)| a.name != b.name || (!Arc::ptr_eq(&a.plugin, &b.plugin) && a.listing != b.listing))
    }
}

/// One plugin file, loaded and linted on its own (for `cordon lint` and `cordon inspect`).
pub async fn load_file(cx: &LoadContext<'_>, path: &Path) -> Result<(Arc<LoadedPlugin>, Vec<Arc<ToolEntry>>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lenient = LoadContext { lint_refuses: false, ..*cx };
    let digest = hex::encode(Sha256::digest(&bytes));
    let compiles = Arc::new(tokio::sync::Semaphore::new(1));
    let compiled = spawn_compile(cx, path, bytes, digest, compiles)
        .await
        .map_err(|e| anyhow!("compilation task failed: {e}"))??;
    load_plugin(&lenient, path, compiled, &Catalog::default()).await
}

/// The quality-gate findings for loaded tools.
pub fn lint(tools: &[Arc<ToolEntry>], config: &lint::LintConfig) -> Vec<lint::Finding> {
    tools
        .iter()
        .flat_map(|t| {
            let description = t.listing.description.as_str();
            lint::lint_tool(&t.name, description, &t.input.json, config)
        })
        .collect()
}

/// What [`load_dir`] does with one file.
enum Plan {
    /// Unchanged since the catalog being served: keep its plugin.
    Keep,
    /// Being compiled; described and published once it is.
    Load(tokio::task::JoinHandle<Result<Compiled>>),
    /// Unreadable.
    Failed(anyhow::Error),
}

/// One file's component, compiled (or read from the compile cache).
struct Compiled {
    digest: String,
    component: cordon_sandbox::Component,
    compile_cache: CacheOutcome,
}

/// Compile jobs run at once: `[server] compile_jobs`, or one per core.
fn compile_parallelism(config: &Config) -> usize {
    match config.server.compile_jobs {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        jobs => jobs,
    }
}

/// Checks `bytes` against the plugin's digest pin, then compiles them on a blocking thread once
/// `compiles` has a permit. A core module (Zig, C, Go) is made a component first; the cache is
/// keyed by the component actually compiled.
fn spawn_compile(
    cx: &LoadContext<'_>,
    path: &Path,
    bytes: Vec<u8>,
    digest: String,
    compiles: Arc<tokio::sync::Semaphore>,
) -> tokio::task::JoinHandle<Result<Compiled>> {
    let pins = names::plugin_name(path).map(|name| (cx.config.plugin(&name).clone(), name));
    let path = path.to_path_buf();
    let (engine, cache) = (cx.sandbox.engine().clone(), cx.cache.clone());
    tokio::spawn(async move {
        let (plugin, name) = pins?;
        plugin.check_sha256(&name, &digest)?;
        if let Some(key) = &plugin.signed_by {
            check_signature(&path, &digest, key, plugin.source.as_deref())
                .with_context(|| format!("[plugins.{name}] signed_by"))?;
        }
        let _permit = compiles.acquire_owned().await.map_err(|e| anyhow!("compile queue closed: {e}"))?;
        // Compiling takes from milliseconds to many seconds (a Python component): off the async
        // runtime's threads.
        let file_digest = digest.clone();
        let (component, compile_cache) = tokio::task::spawn_blocking(move || {
            let (bytes, code_digest) = match cordon_sandbox::wrap::kind(&bytes)? {
                cordon_sandbox::wrap::WasmKind::Component => (bytes, file_digest),
                cordon_sandbox::wrap::WasmKind::CoreModule => {
                    let component =
                        cordon_sandbox::wrap::wrap(&bytes).context("a core module that cannot be wrapped")?;
                    let code_digest = hex::encode(Sha256::digest(&component));
                    (component, code_digest)
                }
            };
            cache.component(&engine, &bytes, &code_digest)
        })
        .await
        .map_err(|e| anyhow!("compilation task failed: {e}"))?
        .context("not a valid component")?;
        Ok(Compiled { digest, component, compile_cache })
    })
}

/// The signature bundle beside `path` proves, with the public key in `key_file`, that this file
/// is the one a signed artifact holds (from `source`'s repository, when configured).
fn check_signature(path: &Path, digest: &str, key_file: &Path, source: Option<&str>) -> Result<()> {
    // The key's path stays out of the reason: refusals are shown to clients of `cordon tools`.
    let key = std::fs::read(key_file).map_err(|e| anyhow!("cannot read the public key: {e}"))?;
    let key = cordon_oci::signature::PublicKey::from_pem(&key)?;
    let bundle = cordon_oci::signature::Bundle::read_for(path)?;
    bundle.verify(&key, digest, source)?;
    Ok(())
}

async fn load_plugin(
    cx: &LoadContext<'_>,
    path: &Path,
    compiled: Compiled,
    loaded: &Catalog,
) -> Result<(Arc<LoadedPlugin>, Vec<Arc<ToolEntry>>)> {
    let LoadContext { sandbox, config, credentials, protected, .. } = *cx;
    let name = names::plugin_name(path)?;
    let plugin_config = config.plugin(&name);
    let Compiled { digest, component, compile_cache } = compiled;
    let grants =
        PluginGrants::new(&plugin_config.http, &plugin_config.dirs, &plugin_config.config, credentials, protected)
            .with_context(|| format!("[plugins.{name}] grants"))?;
    let prepared = sandbox.prepare(&component)?;
    let limits = config.limits_for(&name);
    let label: Arc<str> = format!("{name}/describe").into();
    // Describing needs nothing: it runs with no grants at all.
    let nothing = CallGrants::none(Principal::new("cordon"));
    let describing = cordon_sandbox::Guest { prepared: &prepared, limits: &limits, spares: None };
    let run = sandbox.run(describing, label, nothing, CallLink::default(), Invocation::Describe).await;
    let description = match run.reply {
        Ok(GuestReply::Described(description)) => description,
        Ok(_) => bail!("describe returned something else"),
        Err(e) => bail!("describe failed: {}", e.message),
    };
    check_description_size(&description)?;
    let descriptors = description.tools;
    let task_support = description.task_support;
    for (local, _) in &task_support {
        if !descriptors.iter().any(|d| &d.name == local) {
            tracing::warn!(plugin = %name, tool = %truncated(local), "the plugin declares task support for a tool it does not describe");
        }
    }
    let prefix = plugin_config.prefix.as_deref().unwrap_or(&name);
    let offers =
        offers::publish(&name, prefix, description.resources, description.templates, description.prompts, loaded)?;
    for local in plugin_config.tools.keys() {
        if !descriptors.iter().any(|d| &d.name == local) {
            tracing::warn!(plugin = %name, tool = %local, "[plugins.{name}.tools.{local}] names no tool of this plugin");
        }
    }

    let spares =
        Spares::new(sandbox, prepared.clone(), limits.clone(), grants.clone(), &name, sandbox.spares_per_plugin());
    let plugin = Arc::new(LoadedPlugin {
        slots: Semaphore::new(limits.max_concurrency as usize),
        spares,
        name,
        digest,
        path: path.to_path_buf(),
        limits,
        compile_cache,
        grants,
        idempotency: plugin_config.idempotency.clone(),
        prepared,
        offers,
    });
    let tools = publish_tools(&plugin, descriptors, &task_support, &plugin_config, loaded)?;
    if config.lint.mode != lint::LintMode::Off {
        let findings = lint(&tools, &config.lint);
        for f in findings.iter().filter(|_| cx.lint_refuses) {
            let pointer = f.pointer.as_deref().unwrap_or("");
            tracing::warn!(plugin = %plugin.name, tool = %f.tool, severity = ?f.severity, pointer, "{}", f.message);
        }
        let errors: Vec<String> = findings
            .iter()
            .filter(|f| f.severity == lint::Severity::Error)
            .map(|f| format!("{}{}: {}", f.tool, f.pointer.as_deref().unwrap_or(""), f.message))
            .collect();
        if cx.lint_refuses && config.lint.mode == lint::LintMode::Refuse && !errors.is_empty() {
            bail!("the quality gate refuses it ([lint] mode = \"refuse\"): {}", errors.join("; "));
        }
    }
    Ok((plugin, tools))
}

/// Refuses a description past [`MAX_DESCRIBED_ITEMS`], [`MAX_SCHEMA_BYTES`] or
/// [`MAX_DESCRIPTION_BYTES`], before anything in it is compiled or published. (What the guest
/// returned is already in host memory, but it was bounded by the guest's own memory cap.)
fn check_description_size(description: &Description) -> Result<()> {
    let counts = [
        ("tools", description.tools.len()),
        ("resources", description.resources.len()),
        ("resource templates", description.templates.len()),
        ("prompts", description.prompts.len()),
        ("task supports", description.task_support.len()),
    ];
    for (what, count) in counts {
        if count > MAX_DESCRIBED_ITEMS {
            bail!("the plugin describes {count} {what}; a plugin may describe at most {MAX_DESCRIBED_ITEMS}");
        }
    }
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let mut total = 0;
    for tool in &description.tools {
        for (which, size) in [("input", tool.input_schema.len()), ("output", opt(&tool.output_schema))] {
            if size > MAX_SCHEMA_BYTES {
                bail!(
                    "tool {:?} declares an {which} schema of {size} bytes; a schema may have at most {MAX_SCHEMA_BYTES}",
                    truncated(&tool.name)
                );
            }
        }
        total += tool.name.len() + opt(&tool.title) + tool.description.len() + tool.input_schema.len();
        total += opt(&tool.output_schema);
    }
    for r in &description.resources {
        total += r.uri.len() + r.name.len() + opt(&r.title) + opt(&r.description) + opt(&r.mime_type);
    }
    for t in &description.templates {
        total += t.uri_template.len() + t.name.len() + opt(&t.title) + opt(&t.description) + opt(&t.mime_type);
    }
    for p in &description.prompts {
        total += p.name.len() + opt(&p.title) + opt(&p.description);
        total += p.arguments.iter().map(|a| a.name.len() + opt(&a.description)).sum::<usize>();
    }
    total += description.task_support.iter().map(|(tool, _)| tool.len()).sum::<usize>();
    if total > MAX_DESCRIPTION_BYTES {
        bail!("the plugin's description is {total} bytes; a plugin may describe at most {MAX_DESCRIPTION_BYTES}");
    }
    Ok(())
}

/// A guest-chosen name cut short for a message (the name check comes later).
fn truncated(name: &str) -> &str {
    match name.char_indices().nth(64) {
        Some((end, _)) => &name[..end],
        None => name,
    }
}

/// Validates names and schemas, applies the operator's overrides, and builds the `tools/list`
/// entries.
fn publish_tools(
    plugin: &Arc<LoadedPlugin>,
    descriptors: Vec<ToolDescriptor>,
    task_support: &[(String, cordon_core::TaskSupport)],
    plugin_config: &crate::config::PluginConfig,
    loaded: &Catalog,
) -> Result<Vec<Arc<ToolEntry>>> {
    if descriptors.is_empty() && plugin.offers.is_empty() {
        bail!("the plugin describes no tools, resources or prompts");
    }
    let prefix = plugin_config.prefix.as_deref().unwrap_or(&plugin.name);
    let mut tools: Vec<Arc<ToolEntry>> = Vec::with_capacity(descriptors.len());
    let mut seen = std::collections::HashSet::new();
    for mut d in descriptors {
        let name = published_name(prefix, &d.name)?;
        let mut tasks = task_support.iter().find(|(tool, _)| *tool == d.name).map(|(_, s)| *s).unwrap_or_default();
        if !seen.insert(name.clone()) {
            bail!("the plugin describes the tool {:?} twice", d.name);
        }
        if let Some(over) = plugin_config.tools.get(&d.name) {
            if !over.enabled {
                tracing::info!(tool = %name, "tool disabled by [plugins.{}.tools.{}]", plugin.name, d.name);
                continue;
            }
            if let Some(description) = &over.description {
                d.description = description.clone();
            }
            if let Some(title) = &over.title {
                d.title = Some(title.clone());
            }
            if let Some(support) = over.tasks {
                tasks = support;
            }
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
        let listing = ToolListing {
            title: d.title,
            description: d.description,
            input_schema: Arc::new(input.json.clone()),
            output_schema: output.as_ref().map(|output| Arc::new(output.json.clone())),
            hints: ToolHints {
                read_only_hint: d.annotations.read_only,
                destructive_hint: d.annotations.destructive,
                idempotent_hint: d.annotations.idempotent,
                open_world_hint: d.annotations.open_world,
            },
        };
        let key_argument = key_argument(&input.json);
        let read_only = d.annotations.read_only == Some(true);
        tools.push(Arc::new(ToolEntry {
            name,
            local_name: d.name,
            plugin: plugin.clone(),
            input,
            output,
            listing,
            read_only,
            key_argument,
            task_support: tasks,
        }));
    }
    if tools.is_empty() && plugin.offers.is_empty() {
        bail!("every tool of the plugin is disabled in [plugins.{}.tools]", plugin.name);
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
