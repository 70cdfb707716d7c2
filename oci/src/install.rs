//! Installing a plugin into the plugins folder so that a watching server sees either the old file
//! or the whole new one, never part of it, and sees the new file's signature bundle with it.

use crate::signature::Bundle;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `dir/NAME.wasm`. The bundle (or, for an unsigned install, the removal of a
/// stale one) lands first, then the component is renamed into place: the server reloads on the
/// `.wasm` event and finds the bundle that belongs to it. Returns the installed path.
pub fn install(dir: &Path, name: &str, bytes: &[u8], bundle: Option<&Bundle>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the plugins folder {}", dir.display()))?;
    let path = dir.join(format!("{name}.wasm"));
    let bundle_path = Bundle::path_for(&path);
    match bundle {
        Some(bundle) => {
            let text = serde_json::to_vec_pretty(bundle).context("cannot encode the signature bundle")?;
            write_atomically(&bundle_path, &text)?;
        }
        None => match std::fs::remove_file(&bundle_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove the stale {}", bundle_path.display())),
        },
    }
    write_atomically(&path, bytes)?;
    Ok(path)
}

/// Writes to a hidden temporary file beside `path` (an extension the watcher ignores), syncs it,
/// then renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("no parent folder")?;
    let file_name = path.file_name().context("no file name")?.to_string_lossy();
    let partial = dir.join(format!(".{file_name}.{}.partial", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e).with_context(|| format!("cannot write {}", partial.display()));
    }
    std::fs::rename(&partial, path).with_context(|| format!("cannot move the new file into {}", path.display()))?;
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsigned_install_removes_a_stale_bundle_and_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = Bundle {
            source: "oci://r/x@sha256:0".into(),
            manifest: "".into(),
            payload: "".into(),
            signature: "".into(),
        };
        let path = install(dir.path(), "demo", b"one", Some(&bundle)).unwrap();
        assert!(Bundle::path_for(&path).exists());
        install(dir.path(), "demo", b"two", None).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!Bundle::path_for(&path).exists());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("demo.wasm")]);
    }
}
