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
use std::path::{Component, Path, PathBuf};
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
    /// Checks the grant can be honoured: the host directory exists, the guest path is absolute,
    /// and the directory neither holds nor lies inside anything in `protected`.
    pub fn check(&self, protected: &ProtectedPaths) -> Result<()> {
        if !self.host.is_dir() {
            bail!("directory grant: {} is not a directory", self.host.display());
        }
        if !self.guest.starts_with('/') {
            bail!("directory grant: guest path {:?} must be absolute", self.guest);
        }
        let granted = resolve(&self.host);
        if let Some((path, what)) = protected.overlapping(&granted) {
            bail!(
                "directory grant: {} overlaps {what} {}; a plugin must never reach the host's own files",
                self.host.display(),
                path.display()
            );
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

/// Host paths no directory grant may reach, read-only or not: the data directory (the token
/// signing key, the compile cache whose `.cwasm` files are loaded as native code, the stores and
/// the audit log), the plugins folder, the config file, and the files it names that hold secrets
/// or are trusted (credential files, the TLS key and certificate, the audit file). A grant that
/// contains one of them, or lies inside one, is refused when the plugin loads.
#[derive(Debug, Clone, Default)]
pub struct ProtectedPaths {
    paths: Vec<(PathBuf, &'static str)>,
}

impl ProtectedPaths {
    /// Nothing protected (unit tests of other parts).
    pub fn none() -> ProtectedPaths {
        ProtectedPaths::default()
    }

    /// Adds `path`, described as `what` in refusals; resolved now (symlinks, `..`), so a grant
    /// spelled differently is still recognised.
    pub fn with(mut self, path: &Path, what: &'static str) -> ProtectedPaths {
        self.paths.push((resolve(path), what));
        self
    }

    /// The first protected path that `granted` (resolved) contains or lies inside.
    fn overlapping(&self, granted: &Path) -> Option<&(PathBuf, &'static str)> {
        self.paths.iter().find(|(path, _)| path.starts_with(granted) || granted.starts_with(path))
    }
}

/// `path` made absolute with symlinks resolved as far as it exists; the part that does not
/// exist yet (a data directory created later) is appended with `.` and `..` applied.
fn resolve(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                match part {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other),
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(host: &Path) -> DirGrant {
        DirGrant { host: host.to_path_buf(), guest: "/data".into(), writable: true }
    }

    #[test]
    fn grants_overlapping_the_hosts_own_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let notes = root.path().join("notes");
        std::fs::create_dir_all(data.join("cache")).unwrap();
        std::fs::create_dir_all(&notes).unwrap();
        let config = root.path().join("cordon.toml");
        std::fs::write(&config, "").unwrap();
        let protected = ProtectedPaths::none()
            .with(&data, "the data directory")
            .with(&root.path().join("plugins-not-yet-made"), "the plugins folder")
            .with(&config, "the config file");
        // The data directory itself, a folder inside it, a folder holding it, and a spelling
        // through `..` or a symlink.
        assert!(grant(&data).check(&protected).is_err());
        assert!(grant(&data.join("cache")).check(&protected).is_err());
        assert!(grant(root.path()).check(&protected).is_err());
        assert!(grant(&notes.join("..").join("data")).check(&protected).is_err());
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        let refused = grant(&link).check(&protected).unwrap_err().to_string();
        assert!(refused.contains("the data directory"), "{refused}");
        // A sibling is fine.
        grant(&notes).check(&protected).unwrap();
    }
}
