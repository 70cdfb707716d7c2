//! `cordon.toml`: host defaults, per-plugin limits, and the HTTP surface.
//!
//! Every key is optional; an empty file (or none at all) runs out of the box. Unknown keys are
//! refused with the line they are on, so a typo never silently weakens a limit. The reference
//! for every key is `docs/config.md`; this module is its source of truth.

use crate::auth::AuthConfig;
use anyhow::{bail, Context, Result};
use cordon_core::{Limits, LimitsOverride, PoolConfig};
use cordon_sandbox::grants::credentials::CredentialConfig;
use cordon_sandbox::grants::dirs::DirGrant;
use cordon_sandbox::grants::dirs::ProtectedPaths;
use cordon_sandbox::grants::http::HttpPolicyConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where plugins and compiled code live (flags override).
    #[serde(default)]
    pub paths: PathsConfig,
    /// The HTTP and stdio surface.
    #[serde(default)]
    pub server: ServerConfig,
    /// Host-wide sizing of the instance pool.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Limits applied to every plugin unless its own section overrides them.
    #[serde(default)]
    pub defaults: LimitsOverride,
    /// Per-plugin settings, keyed by plugin name (the `.wasm` file's stem).
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Who may call over HTTP.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Secrets attached to granted outbound requests, by name.
    #[serde(default)]
    pub credentials: BTreeMap<String, CredentialConfig>,
    /// The audit log.
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    /// Rate limits per principal and per plugin.
    #[serde(default)]
    pub rate_limits: crate::ratelimit::RateLimitConfig,
    /// The tool-contract quality gate.
    #[serde(default)]
    pub lint: crate::registry::lint::LintConfig,
    /// Hot reload of the plugins folder and of this file.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Where shared state lives: SQLite in the data directory, or PostgreSQL for replicas.
    #[serde(default)]
    pub store: cordon_state::StoreConfig,
    /// Long calls as tasks (the MCP tasks extension).
    #[serde(default)]
    pub tasks: crate::tasks::TasksConfig,
}

/// `[reload]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch the plugins folder and apply changes without a restart. Default true.
    pub watch: bool,
    /// Quiet time after the last change before reloading, milliseconds (a copy in progress
    /// settles first). Default 300.
    pub debounce_ms: u64,
    /// What a replacement that narrows an existing tool's input schema gets. Default `refuse`.
    pub incompatible_schemas: SchemaPolicy,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { watch: true, debounce_ms: 300, incompatible_schemas: SchemaPolicy::Refuse }
    }
}

/// What happens to a plugin version that changes a tool's input schema incompatibly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaPolicy {
    /// Keep serving the previous version and report why.
    Refuse,
    /// Serve the new version and log a warning.
    Allow,
}

/// `[paths]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// Folder scanned for `*.wasm` plugins. Default `./plugins`.
    pub plugins: Option<PathBuf>,
    /// Data directory (compile cache, later the idempotency store). Default `./cordon-data`.
    pub data: Option<PathBuf>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address for Streamable HTTP. Default `127.0.0.1:8787`.
    pub listen: String,
    /// Stateless mode: no sessions, plain JSON responses (no SSE). Default false.
    pub stateless: bool,
    /// Accepted `Host` header values (DNS-rebinding protection). Default: loopback names.
    pub allowed_hosts: Vec<String>,
    /// Accepted `Origin` header values, e.g. `https://app.example.com:443`; `:*` matches any port.
    /// A request without `Origin` (a non-browser client) is always accepted.
    /// Default: loopback origins on any port.
    pub allowed_origins: Vec<String>,
    /// Largest accepted HTTP request body, bytes. Default 4 MiB.
    pub max_request_bytes: usize,
    /// Seconds a client has to send a request's headers, and again its body; a slower client
    /// is disconnected (slow-loris protection, [`crate::connections`]). Default 30.
    pub read_timeout_s: u64,
    /// Open HTTP connections at once; more wait in the accept backlog. Default 1024.
    pub max_connections: usize,
    /// Open HTTP connections at once from one IP address; more are closed as they arrive.
    /// Default half of `max_connections`, so no one peer can hold every slot, while a busy
    /// client's connection pool still fits (behind a reverse proxy, where every client has its
    /// address, set it to `max_connections`).
    pub max_connections_per_peer: Option<usize>,
    /// MCP sessions (stateful HTTP) open at once; an `initialize` past it gets 503. Idle
    /// sessions close on their own after rmcp's keep-alive. Default 1024.
    pub max_sessions: usize,
    /// The principal of calls arriving over stdio (the local operator). Default `local`.
    pub stdio_principal: String,
    /// On SIGTERM or SIGINT, how long calls in flight may still run before they are abandoned
    /// and the process exits, seconds. Default 30.
    pub drain_timeout_s: u64,
    /// Plugins compiled at once on a compile-cache miss (at start and on reload); 0 is one per
    /// core. Default 0.
    pub compile_jobs: usize,
    /// PEM certificate chain for HTTPS (with `tls_key`); reloaded on SIGHUP. Default: plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8787".into(),
            stateless: false,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: [
                "http://localhost:*",
                "http://127.0.0.1:*",
                "http://[::1]:*",
                "https://localhost:*",
                "https://127.0.0.1:*",
                "https://[::1]:*",
            ]
            .map(String::from)
            .to_vec(),
            max_request_bytes: 4 << 20,
            read_timeout_s: 30,
            max_connections: 1024,
            max_connections_per_peer: None,
            max_sessions: 1024,
            stdio_principal: "local".into(),
            drain_timeout_s: 30,
            compile_jobs: 0,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[plugins.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Pins the component: a file whose SHA-256 (hex) differs is refused.
    pub sha256: Option<String>,
    /// Where `cordon pull NAME` fetches the plugin from: `oci://REGISTRY/REPOSITORY:TAG`, or
    /// `…@sha256:DIGEST` to pin the manifest. `cordon pull` refuses any other repository, and
    /// with `signed_by` the signature must name this repository (and this digest, if given).
    pub source: Option<String>,
    /// A PEM public key (ECDSA P-256, as cosign makes): the plugin must carry a cosign-compatible
    /// signature by this key, which only `cordon pull` writes (`NAME.wasm.sig`); it is checked at
    /// every load, so a file that reaches the folder another way is refused.
    pub signed_by: Option<PathBuf>,
    /// `[plugins.NAME.limits]`: this plugin's limits; unset keys fall back to `[defaults]`.
    #[serde(default)]
    pub limits: LimitsOverride,
    /// `[plugins.NAME.config]`: non-secret settings the guest reads through the `config` import.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// `[plugins.NAME.http]`: outbound HTTP policy and grants.
    #[serde(default)]
    pub http: HttpPolicyConfig,
    /// `[[plugins.NAME.dirs]]`: host directories visible to the guest.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// `[plugins.NAME.idempotency]`: key retention and implicit keys.
    #[serde(default)]
    pub idempotency: crate::idempotency::IdempotencyConfig,
    /// What goes before `_` in its published tool names. Default: the plugin's name; `""`
    /// publishes the tools under their own names.
    pub prefix: Option<String>,
    /// `[plugins.NAME.tools.TOOL]`: per-tool overrides, by the tool's name inside the plugin.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolOverride>,
}

impl PluginConfig {
    /// Refuses a file of plugin `name` whose SHA-256 (`digest`, hex) is not the `sha256` pin.
    /// The loader checks it before compiling; `cordon pull` before installing.
    pub fn check_sha256(&self, name: &str, digest: &str) -> Result<()> {
        match &self.sha256 {
            Some(pin) if !pin.eq_ignore_ascii_case(digest) => bail!(
                "digest mismatch: the file is sha256:{digest}, but [plugins.{name}] sha256 pins sha256:{}",
                pin.to_ascii_lowercase()
            ),
            _ => Ok(()),
        }
    }
}

/// `[plugins.NAME.tools.TOOL]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolOverride {
    /// `false` hides the tool from every caller and refuses calls to it. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Replaces the description the plugin declares.
    pub description: Option<String>,
    /// Replaces the title the plugin declares.
    pub title: Option<String>,
    /// Replaces the task support the plugin declares: `"forbidden"`, `"optional"` or
    /// `"required"` (see `docs/tasks.md`).
    pub tasks: Option<cordon_core::TaskSupport>,
}

fn yes() -> bool {
    true
}

impl Config {
    /// What a host serving `plugins` with its data in `data` (and `config_file`, if it read one)
    /// protects under this config.
    pub fn protected_paths(&self, data: &Path, plugins: &Path, config_file: Option<&Path>) -> ProtectedPaths {
        let mut protected = ProtectedPaths::none().with(data, "the data directory").with(plugins, "the plugins folder");
        if let Some(file) = config_file {
            protected = protected.with(file, "the config file");
        }
        if let Some(audit) = self.audit.file_in(data) {
            protected = protected.with(&audit, "the audit file");
        }
        for file in [&self.server.tls_cert, &self.server.tls_key].into_iter().flatten() {
            protected = protected.with(file, "a TLS file");
        }
        for credential in self.credentials.values() {
            for file in credential.principals.values().filter_map(|source| source.file.as_ref()) {
                protected = protected.with(file, "a credential file");
            }
        }
        protected
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and checks config text.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.check()?;
        Ok(config)
    }

    /// Host defaults after `[defaults]`.
    pub fn default_limits(&self) -> Limits {
        Limits::overridden(&Limits::default(), &self.defaults)
    }

    /// The `[plugins.NAME]` section of `name`, or an empty one.
    pub fn plugin(&self, name: &str) -> PluginConfig {
        self.plugins.get(name).cloned().unwrap_or_default()
    }

    /// Effective limits for the plugin `name`.
    pub fn limits_for(&self, name: &str) -> Limits {
        let base = self.default_limits();
        match self.plugins.get(name) {
            Some(plugin) => Limits::overridden(&base, &plugin.limits),
            None => base,
        }
    }

    fn check(&self) -> Result<()> {
        self.store.check()?;
        self.tasks.check()?;
        crate::auth::check_operator_principal(&self.server.stdio_principal).context("[server] stdio_principal")?;
        if self.pool.max_instances == 0 {
            bail!("[pool] max_instances must be at least 1");
        }
        if self.pool.spares_per_plugin > PoolConfig::MAX_SPARES_PER_PLUGIN {
            bail!(
                "[pool] spares_per_plugin = {} is more than {}",
                self.pool.spares_per_plugin,
                PoolConfig::MAX_SPARES_PER_PLUGIN
            );
        }
        let pool_memory = self.pool.max_memory_mb.saturating_mul(1 << 20) as usize;
        let sections = std::iter::once(("[defaults]".to_string(), self.default_limits()))
            .chain(self.plugins.keys().map(|name| (format!("[plugins.{name}]"), self.limits_for(name))));
        for (section, limits) in sections {
            if limits.memory_bytes > pool_memory {
                let origin = if self.defaults.memory_mb.is_none() && section == "[defaults]" {
                    " (the built-in default; set [defaults] memory_mb)"
                } else {
                    ""
                };
                bail!(
                    "{section} memory_mb = {}{origin} exceeds [pool] max_memory_mb = {}",
                    limits.memory_bytes >> 20,
                    self.pool.max_memory_mb
                );
            }
            if limits.max_concurrency == 0 {
                bail!("{section} max_concurrency must be at least 1");
            }
            if limits.max_concurrency > self.pool.max_instances {
                bail!(
                    "{section} max_concurrency = {} exceeds [pool] max_instances = {}",
                    limits.max_concurrency,
                    self.pool.max_instances
                );
            }
            if limits.timeout.is_zero() || limits.fuel == 0 {
                bail!("{section} timeout_ms and fuel must be greater than zero");
            }
        }
        self.rate_limits.validate()?;
        for (name, plugin) in &self.plugins {
            if let Some(prefix) = &plugin.prefix {
                if !prefix.is_empty() && !crate::registry::is_valid_tool_name(prefix) {
                    bail!("[plugins.{name}] prefix {prefix:?} must be empty or of [a-zA-Z0-9_-]");
                }
            }
            if let Some(source) = &plugin.source {
                cordon_oci::signature::split_source(source).with_context(|| format!("[plugins.{name}] source"))?;
            }
            if let Some(pin) = &plugin.sha256 {
                if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!(
                        "[plugins.{name}] sha256 must be 64 hex digits, as `cordon tools` shows (without \"sha256:\")"
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn empty_config_runs_on_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.limits_for("demo"), Limits::default());
        assert_eq!(c.server.listen, "127.0.0.1:8787");
        assert_eq!(c.server.drain_timeout_s, 30);
        assert!(c.server.tls_cert.is_none() && c.server.tls_key.is_none());
    }

    #[test]
    fn server_drain_and_tls_keys_parse() {
        let c = Config::parse("[server]\ndrain_timeout_s = 5\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
        assert_eq!(c.server.drain_timeout_s, 5);
        assert_eq!(c.server.tls_cert.as_deref(), Some(Path::new("c.pem")));
        assert_eq!(c.server.tls_key.as_deref(), Some(Path::new("k.pem")));
    }

    #[test]
    fn plugin_section_overrides_defaults_key_by_key() {
        let c = Config::parse(
            "[defaults]\ntimeout_ms = 3000\nfuel = 5\n[plugins.demo.limits]\nfuel = 10\nmemory_mb = 16\n",
        )
        .unwrap();
        let l = c.limits_for("demo");
        assert_eq!(l.fuel, 10);
        assert_eq!(l.timeout, Duration::from_millis(3000));
        assert_eq!(l.memory_bytes, 16 << 20);
        assert_eq!(c.limits_for("other").fuel, 5);
    }

    #[test]
    fn unknown_key_is_refused_with_its_name_and_line() {
        let err = Config::parse("[defaults]\nfuel = 1\nfule = 2\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("fule"), "{text}");
        assert!(text.contains("line 3"), "{text}");
    }

    #[test]
    fn wrong_type_is_refused() {
        let err = Config::parse("[defaults]\ntimeout_ms = \"soon\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("timeout_ms"), "{err:#}");
    }

    #[test]
    fn memory_above_pool_slot_is_refused() {
        let err = Config::parse(
            "[pool]\nmax_memory_mb = 64\n[defaults]\nmemory_mb = 32\n[plugins.big.limits]\nmemory_mb = 128\n",
        )
        .unwrap_err();
        assert!(format!("{err}").contains("[plugins.big]"), "{err}");
    }
}
