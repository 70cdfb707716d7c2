//! Writes lines to the host's log, tagged by the host with the plugin and the call id.
//!
//! The host caps the bytes logged per call. When the MCP client asked for log messages
//! (`logging/setLevel`), lines at or above its level also go to it as `notifications/message`
//! (`trace` counts as `debug`). Outside a component (native unit tests) lines go
//! to stderr instead, since there is no host to receive them.

use crate::bindings::cordon::plugin::host::LogLevel;

/// Logs at `trace` level.
pub fn trace(message: impl AsRef<str>) {
    write(LogLevel::Trace, message.as_ref());
}

/// Logs at `debug` level.
pub fn debug(message: impl AsRef<str>) {
    write(LogLevel::Debug, message.as_ref());
}

/// Logs at `info` level.
pub fn info(message: impl AsRef<str>) {
    write(LogLevel::Info, message.as_ref());
}

/// Logs at `warn` level.
pub fn warn(message: impl AsRef<str>) {
    write(LogLevel::Warn, message.as_ref());
}

/// Logs at `error` level.
pub fn error(message: impl AsRef<str>) {
    write(LogLevel::Error, message.as_ref());
}

#[cfg(target_arch = "wasm32")]
fn write(level: LogLevel, message: &str) {
    crate::bindings::cordon::plugin::host::log(level, message);
}

#[cfg(not(target_arch = "wasm32"))]
fn write(level: LogLevel, message: &str) {
    eprintln!("[{level:?}] {message}");
}
