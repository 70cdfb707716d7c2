//! Plugin distribution for Cordon.
//!
//! - [`signature`]: cosign-compatible signatures (simple signing, ECDSA P-256), verified offline
//!   with a configured public key, and the [`signature::Bundle`] kept beside a pulled plugin so
//!   the host can check it again at every load.
//! - [`install`]: writing a plugin (and its bundle) into the plugins folder atomically.
//! - [`registry`] (feature `registry`): push, pull and sign wasm artifacts on an OCI registry.
#![warn(missing_docs)]

pub mod install;
#[cfg(feature = "registry")]
pub mod registry;
pub mod signature;
