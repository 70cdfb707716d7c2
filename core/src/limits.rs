//! The limits an operator sets on a plugin's calls: `[defaults]`, `[plugins.NAME.limits]` and
//! `[pool]` in `cordon.toml` (the reference is `docs/config.md`).

use serde::Deserialize;
use std::time::Duration;

/// `[pool]`: the pooling allocator reserves slots up front, so its size is host-wide.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Instances that may exist at once across all plugins. Default 256.
    pub max_instances: u32,
    /// Largest linear memory any plugin may be given, MiB; per-plugin `memory_mb` must fit.
    /// Default 512.
    pub max_memory_mb: u64,
    /// Instances of each plugin made ahead of its calls, after its first call (0: none).
    /// They count against `max_instances`, and calls evict them when the pool is full.
    /// Default 2, at most [`PoolConfig::MAX_SPARES_PER_PLUGIN`].
    pub spares_per_plugin: u32,
}

impl PoolConfig {
    /// The largest `spares_per_plugin` accepted.
    pub const MAX_SPARES_PER_PLUGIN: u32 = 16;
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self { max_instances: 256, max_memory_mb: 512, spares_per_plugin: 2 }
    }
}

/// Limits as written in the file: any subset of keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    /// Fuel (roughly, wasm instructions) per call.
    pub fuel: Option<u64>,
    /// Wall-clock limit per call, milliseconds.
    pub timeout_ms: Option<u64>,
    /// Linear-memory cap per instance, MiB.
    pub memory_mb: Option<u64>,
    /// Instances of this plugin that may run at once.
    pub max_concurrency: Option<u32>,
    /// How long a call waits for a free slot before failing with `busy`, milliseconds.
    pub queue_timeout_ms: Option<u64>,
    /// Largest accepted arguments (serialized JSON), bytes.
    pub max_input_bytes: Option<usize>,
    /// Largest accepted result (text plus JSON), bytes.
    pub max_output_bytes: Option<usize>,
    /// Guest stdout, stderr and `log` kept per call, bytes; the rest is dropped.
    pub max_log_bytes: Option<usize>,
    /// Host resources (WASI streams, pollables, HTTP requests and field maps…) and component
    /// handles an instance may hold at once.
    pub max_resources: Option<usize>,
    /// Bytes of one HTTP field map (a request's or response's headers) a guest may build.
    pub max_header_bytes: Option<usize>,
}

/// Effective limits for one plugin. Come from the operator, never the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per call.
    pub fuel: u64,
    /// Wall-clock limit per call.
    pub timeout: Duration,
    /// Linear-memory cap per instance, bytes.
    pub memory_bytes: usize,
    /// Concurrent instances of this plugin.
    pub max_concurrency: u32,
    /// Wait for a slot before `busy`.
    pub queue_timeout: Duration,
    /// Largest arguments, bytes.
    pub max_input_bytes: usize,
    /// Largest result, bytes.
    pub max_output_bytes: usize,
    /// Guest output kept per call, bytes.
    pub max_log_bytes: usize,
    /// Host resources and component handles an instance may hold at once.
    pub max_resources: usize,
    /// Bytes of one HTTP field map.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 2_000_000_000,
            timeout: Duration::from_secs(10),
            memory_bytes: 128 << 20,
            max_concurrency: 32,
            queue_timeout: Duration::from_secs(2),
            max_input_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            max_log_bytes: 64 << 10,
            max_resources: 1_000,
            max_header_bytes: 16 << 10,
        }
    }
}

impl Limits {
    /// `base` with every key `over` sets replaced.
    pub fn overridden(base: &Limits, over: &LimitsOverride) -> Limits {
        Limits {
            fuel: over.fuel.unwrap_or(base.fuel),
            timeout: over.timeout_ms.map_or(base.timeout, Duration::from_millis),
            memory_bytes: over.memory_mb.map_or(base.memory_bytes, |mb| (mb as usize).saturating_mul(1 << 20)),
            max_concurrency: over.max_concurrency.unwrap_or(base.max_concurrency),
            queue_timeout: over.queue_timeout_ms.map_or(base.queue_timeout, Duration::from_millis),
            max_input_bytes: over.max_input_bytes.unwrap_or(base.max_input_bytes),
            max_output_bytes: over.max_output_bytes.unwrap_or(base.max_output_bytes),
            max_log_bytes: over.max_log_bytes.unwrap_or(base.max_log_bytes),
            max_resources: over.max_resources.unwrap_or(base.max_resources),
            max_header_bytes: over.max_header_bytes.unwrap_or(base.max_header_bytes),
        }
    }
}
