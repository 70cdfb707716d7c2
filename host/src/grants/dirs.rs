//! Directory grants: a host directory visible to a plugin at a guest path, read-only unless the
//! operator says otherwise. Nothing else of the filesystem is visible.
//!
//! ```toml
//! [[plugins.notes.dirs]]
//! host = "/srv/cordon/notes"
//! guest = "/notes"
//! writable = false     # default
//! ```

use anyhow::{bail, Result};
use serde::Deserialize;
use std::path::PathBuf;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// One `[[plugins.NAME.dirs]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it (an absolute guest path).
    pub guest: String,
    /// Whether the guest may create, change and delete files there.
    #[serde(default)]
    pub writable: bool,
}

impl DirGrant {
    /// Checks the grant can be honoured: the host directory exists and the guest path is absolute.
    pub fn check(&self) -> Result<()> {
        if !self.host.is_dir() {
            bail!("directory grant: {} is not a directory", self.host.display());
        }
        if !self.guest.starts_with('/') {
            bail!("directory grant: guest path {:?} must be absolute", self.guest);
        }
        Ok(())
    }

    /// Preopens the directory in a call's WASI context.
    pub fn apply(&self, builder: &mut WasiCtxBuilder) -> Result<()> {
        let perms = if self.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
        builder.preopened_dir(&self.host, &self.guest, perms).map_err(anyhow::Error::from)?;
        Ok(())
    }
}
