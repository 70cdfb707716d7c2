//! Cordon: serves MCP tools implemented as sandboxed WebAssembly components.
//!
//! Start with `ARCHITECTURE.md` at the repository root: it maps these modules and walks the
//! per-call path, which reads top to bottom in [`call`].

#![warn(missing_docs)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod call;
pub mod config;
pub mod content;
pub mod idempotency;
pub mod metrics;
pub mod ratelimit;
pub mod reads;
pub mod registry;
pub mod schema;
pub mod tasks;

pub use app::{Cordon, Paths};
pub use config::Config;
