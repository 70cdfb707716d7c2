//! The audit log: one JSON line per tool call, to a file and to tracing.
//!
//! Each line is an [`AuditRecord`]: time, principal, token id, tool, plugin digest, argument
//! hash, idempotency key and how the idempotency layer treated the call, outcome and error type,
//! latency, fuel, and what the call did on the network. Argument *values* are left out unless
//! `log_arguments` is set, and then every object key that looks sensitive is redacted
//! ([`is_sensitive_key`]). Credential values never reach a record: the call path has none to give.
//!
//! **Off the call path.** [`AuditLog::record`] serializes the line, emits it to tracing (target
//! `cordon::audit`; level `info` when there is no file, else `debug`, since the file already has
//! it) and hands it to a bounded channel; a writer thread appends
//! whatever is waiting in one `write(2)` and rotates by size (`audit.jsonl` → `.1` → … → `.N`).
//! A call never waits for the disk and never fails because of it: when the queue is full or the
//! file cannot be written the line is dropped, counted ([`AuditLog::dropped`]) and a warning is
//! logged at most once a minute. Lines are not fsynced: the idempotency store is the durable
//! record of outcomes; this log is for people and for [`errors_report`].
//!
//! One process writes a given file: rotation renames files under the writer's feet.
//!
//! ```toml
//! [audit]
//! file = "/var/log/cordon/audit.jsonl"  # default <data>/audit.jsonl; "" = tracing only
//! max_file_bytes = 67108864             # rotate when the next line would pass this
//! keep_files = 5                        # audit.jsonl.1 … .5; 0 = no rotated files kept
//! log_arguments = false                 # argument values (sensitive keys redacted)
//! ```

mod config;
mod record;
mod redact;
mod report;
#[cfg(test)]
mod tests;
mod writer;

pub use config::{AuditConfig, DEFAULT_FILE};
pub use record::{arguments_sha256, refusal_reason, timestamp, AuditRecord, OutboundRequest, Outcome, RefusedRequest};
pub use redact::{is_sensitive_key, redact, REDACTED};
pub use report::{errors_report, parse_since, ErrorEntry, ErrorsFilter, ErrorsReport};
pub use writer::AuditLog;
