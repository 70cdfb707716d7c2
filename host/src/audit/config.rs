//! `[audit]`: where the lines go and how the file rotates.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The JSON-lines file. Unset: `<data>/audit.jsonl`; empty: no file, tracing only
    /// (see [`AuditConfig::file_in`]).
    pub file: Option<PathBuf>,
    /// Rotate when the next line would make the file larger than this.
    pub max_file_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` is the newest).
    pub keep_files: u32,
    /// Log argument values, with sensitive keys redacted. Off by default: arguments may carry
    /// personal data the operator has not decided to keep.
    pub log_arguments: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { file: None, max_file_bytes: 64 * 1024 * 1024, keep_files: 5, log_arguments: false }
    }
}

/// The default file name in the data directory.
pub const DEFAULT_FILE: &str = "audit.jsonl";

impl AuditConfig {
    /// The file to write: `file` as configured, `<data_dir>/audit.jsonl` when unset, and `None`
    /// (tracing only) when set to `""`.
    pub fn file_in(&self, data_dir: &Path) -> Option<PathBuf> {
        match &self.file {
            None => Some(data_dir.join(DEFAULT_FILE)),
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => Some(path.clone()),
        }
    }
}
