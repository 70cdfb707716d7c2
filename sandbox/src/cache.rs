//! Compiled-code cache in the data directory.
//!
//! Entries are keyed by SHA-256 of the component bytes and of the engine's compatibility hash
//! (wasmtime version and every setting that affects code generation), so a restart with the
//! same plugins compiles nothing, and a changed engine never loads stale code. Entries are
//! written to a temporary file and renamed into place, so a crash leaves no half-written entry.
//! A corrupt or incompatible entry is recompiled and replaced. The data directory must be
//! writable only by Cordon: cached code is loaded as trusted native code.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Deserialized from the cache; nothing was compiled.
    Hit,
    /// Compiled now (and stored, if the cache is writable).
    Miss,
}

impl CacheOutcome {
    /// `"hit"` or `"miss"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
        }
    }
}

/// The compile cache of one engine.
pub struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: [u8; 32],
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CompileCache {
    /// A cache under `dir` (created if missing). If it cannot be created, Cordon still runs, and
    /// compiles on every start; the reason is logged.
    pub fn new(dir: &Path, engine: &Engine) -> Self {
        let dir = match std::fs::create_dir_all(dir) {
            Ok(()) => Some(dir.to_path_buf()),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "compile cache disabled: cannot create its directory");
                None
            }
        };
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self { dir, engine_key: hasher.0.finalize().into(), hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    /// The component for `bytes`, from the cache or freshly compiled.
    pub fn component(&self, engine: &Engine, bytes: &[u8], digest: &str) -> Result<(Component, CacheOutcome)> {
        let entry = self.dir.as_ref().map(|dir| dir.join(format!("{}.cwasm", self.key(digest))));
        if let Some(path) = entry.as_deref().filter(|p| p.exists()) {
            // SAFETY: the entry was produced by `Engine::precompile_component` of an engine with
            // the same compatibility hash and written atomically into a directory only Cordon
            // writes (see the module docs); wasmtime still checks its header and compatibility.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok((component, CacheOutcome::Hit));
                }
                Err(e) => {
                    tracing::warn!(entry = %path.display(), error = %e, "discarding unusable compile-cache entry")
                }
            }
        }
        let compiled = engine.precompile_component(bytes).map_err(anyhow::Error::from)?;
        // SAFETY: `compiled` was just produced by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled) }
            .map_err(anyhow::Error::from)
            .context("cannot load freshly compiled code")?;
        self.misses.fetch_add(1, Ordering::Relaxed);
        if let Some(path) = entry {
            if let Err(e) = write_atomically(&path, &compiled) {
                tracing::warn!(entry = %path.display(), error = %format!("{e:#}"), "cannot store compiled code");
            }
        }
        Ok((component, CacheOutcome::Miss))
    }

    /// (hits, misses) since start.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    fn key(&self, digest: &str) -> String {
        let mut h = Sha256::new();
        h.update(digest.as_bytes());
        h.update(self.engine_key);
        hex::encode(h.finalize())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

/// Feeds `Hash` output into SHA-256, for a key that is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Never consulted: the key is the SHA-256 digest taken after hashing.
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
