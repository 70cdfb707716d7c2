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

use crate::config::PluginConfig;
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
    /// Parses and checks a plugin's grants; no directory grant may reach `protected`.
    pub fn from_config(
        config: &PluginConfig,
        credentials: &Credentials,
        protected: &dirs::ProtectedPaths,
    ) -> Result<PluginGrants> {
        let http = http::HttpPolicy::from_config(&config.http, credentials)?;
        for dir in &config.dirs {
            dir.check(protected)?;
        }
        Ok(PluginGrants {
            http: Arc::new(http),
            dirs: config.dirs.clone().into(),
            settings: Arc::new(config.config.clone()),
        })
    }
}
