//! Credentials: secrets the host attaches to granted outbound requests.
//!
//! A credential names a header (default `Authorization`) and, per principal, where its value
//! comes from: an environment variable or a file. Values are read once at start-up, held as
//! sensitive `HeaderValue`s, and never written to a log, a tool result, `cordon tools` output or
//! guest memory. There is no shared fallback: a principal without a value gets `forbidden`.
//!
//! ```toml
//! [credentials.github]
//! header = "Authorization"          # default
//! prefix = "Bearer "                # prepended to the secret
//! principals.alice = { env = "GITHUB_TOKEN_ALICE" }
//! principals.bob = { file = "/etc/cordon/secrets/bob-github" }
//! ```

use anyhow::{bail, Context, Result};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// `[credentials.NAME]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// Header the host sets on matching requests.
    #[serde(default = "default_header")]
    pub header: String,
    /// Text put before the secret, e.g. `"Bearer "`.
    #[serde(default)]
    pub prefix: String,
    /// Where each principal's secret comes from.
    #[serde(default)]
    pub principals: BTreeMap<String, SecretSource>,
}

fn default_header() -> String {
    "Authorization".into()
}

/// Where one secret comes from: exactly one of `env` or `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// An environment variable of the Cordon process.
    pub env: Option<String>,
    /// A file whose contents (without trailing newline) are the secret.
    pub file: Option<PathBuf>,
}

impl SecretSource {
    fn read(&self) -> Result<String> {
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var).with_context(|| format!("environment variable {var} is not set")),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .with_context(|| format!("cannot read secret file {}", path.display())),
            _ => bail!("give exactly one of `env` or `file`"),
        }
    }
}

/// One loaded credential.
struct Credential {
    header: HeaderName,
    values: HashMap<String, HeaderValue>,
}

/// Every credential, loaded. Its `Debug` never shows a value.
#[derive(Default)]
pub struct Credentials {
    by_name: HashMap<String, Credential>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (name, c) in &self.by_name {
            let principals: Vec<&String> = c.values.keys().collect();
            map.entry(name, &format_args!("{} for {principals:?} (values redacted)", c.header));
        }
        map.finish()
    }
}

impl Credentials {
    /// Reads every secret. Errors name the credential, principal and source, never a value.
    pub fn load(configs: &BTreeMap<String, CredentialConfig>) -> Result<Credentials> {
        let mut by_name = HashMap::new();
        for (name, config) in configs {
            let header = HeaderName::from_bytes(config.header.as_bytes()).with_context(|| {
                format!("[credentials.{name}] header {:?} is not a valid header name", config.header)
            })?;
            let mut values = HashMap::new();
            for (principal, source) in &config.principals {
                let secret = source.read().with_context(|| format!("[credentials.{name}] principals.{principal}"))?;
                let mut value = HeaderValue::from_str(&format!("{}{secret}", config.prefix)).map_err(|_| {
                    anyhow::anyhow!(
                        "[credentials.{name}] principals.{principal}: the secret is not a valid header value"
                    )
                })?;
                value.set_sensitive(true);
                values.insert(principal.clone(), value);
            }
            by_name.insert(name.clone(), Credential { header, values });
        }
        Ok(Credentials { by_name })
    }

    /// Whether a credential of this name is configured.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The header and value of credential `name` for `principal`, if that principal has one.
    pub fn for_principal(&self, name: &str, principal: &str) -> Option<(&HeaderName, &HeaderValue)> {
        let credential = self.by_name.get(name)?;
        credential.values.get(principal).map(|v| (&credential.header, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(toml_text: &str) -> BTreeMap<String, CredentialConfig> {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn values_come_from_env_and_files_per_principal() {
        let dir = std::env::temp_dir().join(format!("cordon-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bob");
        std::fs::write(&file, "bob-secret\n").unwrap();
        std::env::set_var("CORDON_TEST_ALICE_SECRET", "alice-secret");
        let c = Credentials::load(&configs(&format!(
            "[api]\nprefix = \"Bearer \"\nprincipals.alice = {{ env = \"CORDON_TEST_ALICE_SECRET\" }}\nprincipals.bob = {{ file = {:?} }}\n",
            file.display().to_string()
        )))
        .unwrap();
        let (header, alice) = c.for_principal("api", "alice").unwrap();
        assert_eq!(header, "authorization");
        assert_eq!(alice, "Bearer alice-secret");
        assert!(alice.is_sensitive());
        assert_eq!(c.for_principal("api", "bob").unwrap().1, "Bearer bob-secret");
        assert!(c.for_principal("api", "carol").is_none(), "no shared fallback");
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn a_missing_source_is_an_error_naming_it_not_a_value() {
        let err =
            Credentials::load(&configs("[api]\nprincipals.alice = { env = \"CORDON_TEST_UNSET_VAR\" }\n")).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("CORDON_TEST_UNSET_VAR") && text.contains("principals.alice"), "{text}");
        assert!(Credentials::load(&configs("[api]\nprincipals.alice = {}\n")).is_err());
    }
}
