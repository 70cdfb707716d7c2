//! Grants: what an operator lets a plugin reach. Default: nothing.
//!
//! - [`http`]: outbound HTTP to granted URL patterns, with per-call bounds;
//! - [`credentials`]: secrets the host attaches to granted requests, per principal — the guest
//!   never sees them;
//! - [`dirs`]: host directories mapped into the guest, read-only by default.
//!
//! [`PluginGrants`] is one plugin's set, parsed and checked once at load; the sandbox applies it
//! to every call's instance.

pub mod credentials;
pub mod dirs;
pub mod http;

use anyhow::Result;
use credentials::Credentials;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything one plugin is granted. The default grants nothing.
#[derive(Debug, Clone, Default)]
pub struct PluginGrants {
    /// Outbound HTTP policy.
    pub http: Arc<http::HttpPolicy>,
    /// Directories mapped into the guest.
    pub dirs: Arc<[dirs::DirGrant]>,
    /// Operator settings readable through the `config` import (not secret).
    pub settings: Arc<BTreeMap<String, String>>,
}

impl PluginGrants {
    /// Checks a plugin's grants as configured (`[plugins.NAME.http]`, `[[plugins.NAME.dirs]]`
    /// and `[plugins.NAME.config]`); no directory grant may reach `protected`.
    pub fn new(
        http: &http::HttpPolicyConfig,
        dirs: &[dirs::DirGrant],
        settings: &BTreeMap<String, String>,
        credentials: &Credentials,
        protected: &dirs::ProtectedPaths,
    ) -> Result<PluginGrants> {
        let http = http::HttpPolicy::from_config(http, credentials)?;
        for dir in dirs {
            dir.check(protected)?;
        }
        Ok(PluginGrants { http: Arc::new(http), dirs: dirs.into(), settings: Arc::new(settings.clone()) })
    }
}
