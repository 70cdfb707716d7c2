//! The `cordon` binary's parts that speak to clients: the MCP handler ([`mcp`]) with its
//! multi round-trip inputs ([`inputs`]) and the sessions it tells of catalog changes
//! ([`sessions`]), the transports ([`server`]: stdio, Streamable HTTP, its accept loop in
//! [`connections`] and HTTPS in [`tls`]), hot reload ([`reload`]), and the operator commands
//! that load a plugin without serving it ([`inspect`], [`scaffold`]).
//!
//! Everything protocol-free — the catalog, the per-call path, auth, rate limits, audit, metrics
//! — is `cordon-host`; `ARCHITECTURE.md` at the repository root maps the crates.

#![warn(missing_docs)]

pub mod connections;
pub mod distribution;
pub mod inputs;
pub mod inspect;
pub mod legacy_sse;
pub mod mcp;
pub mod reload;
pub mod scaffold;
pub mod server;
pub mod sessions;
pub mod tls;
