//! `cordon audit errors`: the tool-level failures no later call of the same key reconciled.

use super::record::{AuditRecord, Outcome};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One unreconciled tool-level failure: the latest record of a key whose calls never succeeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorEntry {
    /// The idempotency key, or the call id for a call without one.
    pub key: String,
    /// Whether `key` is an idempotency key (else a call id).
    pub idempotency_key: bool,
    /// Tool.
    pub tool: String,
    /// Caller.
    pub principal: String,
    /// The idempotency scope of the caller's token (a batch item's `custom_id`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_scope: Option<String>,
    /// Error type of the latest attempt.
    pub error_type: Option<String>,
    /// Error message of the latest attempt.
    pub message: Option<String>,
    /// Whether the latest attempt was retryable.
    pub retryable: Option<bool>,
    /// Records seen for this key (attempts and replays) in the files read.
    pub attempts: u32,
    /// Time of the latest attempt.
    pub last_time: String,
    /// Call id of the latest attempt, to find its line.
    pub call_id: String,
}

/// The result of [`errors_report`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ErrorsReport {
    /// Unreconciled failures, oldest latest attempt first.
    pub entries: Vec<ErrorEntry>,
    /// Lines that were not audit records (or had an unreadable time when `since` was given).
    pub skipped_lines: u64,
}

/// Which records [`errors_report`] reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsFilter<'a> {
    /// Only this tool's.
    pub tool: Option<&'a str>,
    /// Only calls whose token carried this idempotency scope.
    pub scope: Option<&'a str>,
}

/// The tool-level errors still standing, per idempotency key: the reconciliation pass after a
/// Messages Batch, whose message-level success can hide failed tool calls.
///
/// Reads the rotated files oldest first, then `path`. Records are grouped by principal, tool,
/// idempotency scope and key (the idempotency namespace; the call id stands in for a call
/// without a key); only records at or after `since`, of `filter.tool` and of `filter.scope`
/// count. A group whose latest record is `ok` is
/// reconciled and left out; for the others the latest error is reported with the number of
/// records seen. Lines that do not parse are skipped and counted.
pub fn errors_report(path: &Path, since: Option<SystemTime>, filter: &ErrorsFilter<'_>) -> Result<ErrorsReport> {
    let files = log_files(path)?;
    if files.is_empty() {
        bail!("no audit log at {}", path.display());
    }
    struct Group {
        latest: AuditRecord,
        attempts: u32,
        order: u64,
    }
    let mut groups: HashMap<(String, String, Option<String>, String), Group> = HashMap::new();
    let mut skipped = 0u64;
    let mut order = 0u64;
    for file in files {
        let reader = match File::open(&file) {
            Ok(f) => BufReader::new(f),
            // Rotated away between listing and opening: its lines are in the next file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        for line in reader.split(b'\n') {
            let line = line.with_context(|| format!("cannot read {}", file.display()))?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(record) = serde_json::from_slice::<AuditRecord>(&line) else {
                skipped += 1;
                continue;
            };
            if filter.tool.is_some_and(|t| t != record.tool)
                || filter.scope.is_some_and(|s| Some(s) != record.idempotency_scope.as_deref())
            {
                continue;
            }
            if let Some(since) = since {
                match humantime::parse_rfc3339_weak(&record.time) {
                    Ok(t) if t >= since => {}
                    Ok(_) => continue,
                    Err(_) => {
                        skipped += 1;
                        continue;
                    }
                }
            }
            let key = record.idempotency_key.clone().unwrap_or_else(|| record.call_id.clone());
            order += 1;
            let id = (record.principal.clone(), record.tool.clone(), record.idempotency_scope.clone(), key);
            let group =
                groups.entry(id).or_insert_with(|| Group { latest: AuditRecord::default(), attempts: 0, order });
            group.attempts += 1;
            group.order = order;
            group.latest = record;
        }
    }
    let mut standing: Vec<(u64, ErrorEntry)> = groups
        .into_iter()
        .filter(|(_, g)| g.latest.outcome == Outcome::Error)
        .map(|((principal, tool, idempotency_scope, key), g)| {
            let r = g.latest;
            let entry = ErrorEntry {
                key,
                idempotency_key: r.idempotency_key.is_some(),
                tool,
                principal,
                idempotency_scope,
                error_type: r.error_type,
                message: r.error_message,
                retryable: r.retryable,
                attempts: g.attempts,
                last_time: r.time,
                call_id: r.call_id,
            };
            (g.order, entry)
        })
        .collect();
    standing.sort_by_key(|(order, _)| *order);
    Ok(ErrorsReport { entries: standing.into_iter().map(|(_, e)| e).collect(), skipped_lines: skipped })
}

/// The existing log files, oldest first: `path.N`, …, `path.1`, `path`. Any number is picked up,
/// so a lowered `keep_files` does not hide older files still on disk.
fn log_files(path: &Path) -> Result<Vec<PathBuf>> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        bail!("{} is not a file path", path.display());
    };
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(n) = file_name
                    .to_str()
                    .and_then(|f| f.strip_prefix(name))
                    .and_then(|rest| rest.strip_prefix('.'))
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                rotated.push((n, entry.path()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    }
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

/// `--since`: an RFC 3339 time (`2025-05-01T12:00:00Z`), a date (`2025-05-01`, midnight UTC), or
/// a duration ago (`90m`, `2h`, `7days`).
pub fn parse_since(text: &str) -> Result<SystemTime> {
    let text = text.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    if text.len() == 10 {
        if let Ok(t) = humantime::parse_rfc3339(&format!("{text}T00:00:00Z")) {
            return Ok(t);
        }
    }
    let ago = humantime::parse_duration(text)
        .with_context(|| format!("{text:?} is neither an RFC 3339 time, a date, nor a duration like 2h"))?;
    SystemTime::now().checked_sub(ago).with_context(|| format!("{text:?} reaches before the epoch"))
}
