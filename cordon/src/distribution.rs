//! `cordon pull`, `cordon push`, `cordon sign`, `cordon key new`: plugins as OCI artifacts.
//!
//! A pull is refused, with the folder left as it was, unless everything the config pins holds:
//! the repository (`[plugins.NAME] source`), the manifest digest (a source `@sha256:…`), the
//! file's digest (`sha256`) and the signer (`signed_by`, or `--key`). Only then is the component
//! installed, atomically, with its signature bundle beside it for the host to check at every load.

use anyhow::{bail, Context, Result};
use cordon_host::Config;
use cordon_oci::registry::{Access, Registry, Target};
use cordon_oci::signature::{self, PublicKey, SigningKey};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The largest component `cordon pull` downloads by default (Python components are 20–40 MB).
pub const DEFAULT_MAX_PULL_MB: u64 = 256;

/// How to reach the registry, from the command line.
pub struct RegistryFlags {
    /// `--username`.
    pub username: Option<String>,
    /// The password, read from stdin for `--password-stdin`.
    pub password: Option<String>,
    /// `--plain-http` (loopback registries only).
    pub plain_http: bool,
}

impl RegistryFlags {
    fn access(&self, target: &Target) -> Result<Access> {
        Access::for_registry(target.registry(), self.username.clone(), self.password.clone(), self.plain_http)
    }
}

/// What `cordon pull` was asked for.
pub struct PullRequest {
    /// `oci://…`, or the name of a plugin whose `[plugins.NAME] source` says where.
    pub reference: String,
    /// `--name`.
    pub name: Option<String>,
    /// `--key`.
    pub key: Option<PathBuf>,
    /// `--max-mb`.
    pub max_mb: u64,
}

/// Pulls, verifies and installs one plugin into `plugins`; returns what was installed.
pub async fn pull(config: &Config, plugins: &Path, request: PullRequest, flags: &RegistryFlags) -> Result<Value> {
    let (target, name) = if request.reference.starts_with("oci://") {
        let target = Target::parse(&request.reference)?;
        let name = request.name.clone().unwrap_or_else(|| target.last_segment().to_string());
        (target, name)
    } else {
        let name = request.reference.clone();
        let source = config.plugins.get(&name).and_then(|p| p.source.clone()).with_context(|| {
            format!("{name:?} is neither an oci:// reference nor a plugin with [plugins.{name}] source")
        })?;
        (Target::parse(&source).with_context(|| format!("[plugins.{name}] source"))?, name)
    };
    if !cordon_host::registry::is_valid_tool_name(&name) {
        bail!("plugin name {name:?} must be 1 to 64 of [a-zA-Z0-9_-] (choose one with --name)");
    }
    let plugin = config.plugin(&name);
    if let Some(source) = &plugin.source {
        let (repository, pinned) = signature::split_source(source)?;
        if target.repository() != repository {
            bail!("[plugins.{name}] source pins {repository}; refusing to install it from {}", target.repository());
        }
        if let (Some(pinned), Some(asked)) = (pinned, target.digest()) {
            if pinned != asked {
                bail!("[plugins.{name}] source pins {pinned}; refusing {asked}");
            }
        }
    }
    let key_file = match (&plugin.signed_by, &request.key) {
        (Some(configured), Some(given)) if configured != given => bail!(
            "[plugins.{name}] signed_by is {}, but --key names {}: the host will check the configured key",
            configured.display(),
            given.display()
        ),
        (Some(key), _) | (None, Some(key)) => Some(key.clone()),
        (None, None) => None,
    };
    let key = key_file.as_deref().map(PublicKey::read).transpose()?;

    let registry = Registry::new(&target, &flags.access(&target)?)?;
    let pulled = registry.pull(&target, request.max_mb.saturating_mul(1 << 20), key.as_ref()).await?;

    // What the config pins beyond the signature: the manifest (a source @digest) and the file.
    if let Some(source) = &plugin.source {
        if let (_, Some(pinned)) = signature::split_source(source)? {
            if pulled.manifest_digest != pinned {
                bail!(
                    "{target} is {}, but [plugins.{name}] source pins {pinned}: the pin wins over the tag; nothing installed",
                    pulled.manifest_digest
                );
            }
        }
    }
    let file_digest = signature::sha256_hex(&pulled.bytes);
    plugin.check_sha256(&name, &file_digest).with_context(|| format!("{target}: nothing installed"))?;
    cordon_sandbox::wrap::kind(&pulled.bytes).with_context(|| format!("{target} is not a wasm component or module"))?;
    if let (Some(bundle), Some(key)) = (&pulled.bundle, &key) {
        // The check the host makes at every load, made once more on what is about to be written.
        bundle.verify(key, &file_digest, plugin.source.as_deref()).context("the pulled signature")?;
    }
    let installed = cordon_oci::install::install(plugins, &name, &pulled.bytes, pulled.bundle.as_ref())?;
    Ok(json!({
        "installed": installed.display().to_string(),
        "plugin": name,
        "source": target.at_digest(&pulled.manifest_digest).to_string(),
        "manifest_digest": pulled.manifest_digest,
        "sha256": file_digest,
        "signed_by": key_file.map(|k| k.display().to_string()),
    }))
}

/// Publishes the component `file` at `reference`.
pub async fn push(file: &Path, reference: &str, flags: &RegistryFlags) -> Result<Value> {
    let target = Target::parse(reference)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    cordon_sandbox::wrap::kind(&bytes)
        .with_context(|| format!("{} is not a wasm component or module", file.display()))?;
    let registry = Registry::new(&target, &flags.access(&target)?)?;
    let manifest_digest = registry.push(&target, bytes.clone()).await?;
    Ok(json!({
        "pushed": target.to_string(),
        "source": target.at_digest(&manifest_digest).to_string(),
        "manifest_digest": manifest_digest,
        "sha256": signature::sha256_hex(&bytes),
    }))
}

/// Signs the artifact at `reference` with the private key in `key_file`.
pub async fn sign(reference: &str, key_file: &Path, flags: &RegistryFlags) -> Result<Value> {
    let target = Target::parse(reference)?;
    let key = SigningKey::read(key_file)?;
    let registry = Registry::new(&target, &flags.access(&target)?)?;
    let manifest_digest = registry.sign(&target, &key).await?;
    Ok(json!({ "signed": target.at_digest(&manifest_digest).to_string(), "manifest_digest": manifest_digest }))
}

/// Writes a new key pair: `PREFIX.key` (private, mode 0600) and `PREFIX.pub`. Never overwrites.
pub fn new_key(prefix: &Path) -> Result<(PathBuf, PathBuf)> {
    let private = with_suffix(prefix, "key");
    let public = with_suffix(prefix, "pub");
    for path in [&private, &public] {
        if path.exists() {
            bail!("{} exists; not overwriting a key", path.display());
        }
    }
    let pem = SigningKey::generate_pem()?;
    let key = SigningKey::from_pem(pem.as_bytes())?;
    write_private(&private, pem.as_bytes())?;
    std::fs::write(&public, key.public_key().to_pem()).with_context(|| format!("cannot write {}", public.display()))?;
    Ok((private, public))
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!(".{suffix}"));
    PathBuf::from(name)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))
}
