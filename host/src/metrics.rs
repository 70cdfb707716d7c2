//! `/metrics`: what the host is doing, in the Prometheus exposition format.
//!
//! The crate is `prometheus-client`, the Prometheus project's own Rust client: metrics are plain
//! values owned by [`Metrics`] (no global recorder, unlike the `metrics` facade), label sets are
//! typed structs, and it has no HTTP server or background thread of its own, which suits a host
//! that already serves axum. It writes the OpenMetrics text format, which Prometheus scrapes
//! natively (counters are `…_total`, the body ends with `# EOF`).
//!
//! Series (all prefixed `cordon_`):
//!
//! | series | type | labels |
//! | --- | --- | --- |
//! | `calls_total` | counter | `tool`, `outcome` (`ok`, a host error type, or `plugin_error`) |
//! | `call_duration_seconds` | histogram | `tool` |
//! | `fuel_consumed_total` | counter | `tool` |
//! | `idempotency_total` | counter | `result` (`miss`, `hit`, `retry`, `recovery`, `reused`) |
//! | `egress_denied_total` | counter | `plugin` |
//! | `calls_in_flight` | gauge | — |
//! | `instances_in_use` | gauge | — |
//! | `spare_instances` | gauge | — |
//! | `compile_cache_total` | counter | `result` (`hit`, `miss`) |
//! | `plugins_loaded`, `plugins_refused`, `tools_served` | gauge | — |
//!
//! Label values are bounded: tools and plugins come from the operator's catalog, and an error
//! type a guest invents is counted as `plugin_error`, so an untrusted plugin cannot grow the
//! series without limit. Principals and arguments are never labels.
//!
//! Recording is cheap: one call records once, from the same place that writes its audit line;
//! the per-tool label values are interned once ([`Metrics::tool`]), so a call costs a few atomic
//! updates and hash look-ups, and no allocation.

use cordon_core::IdempotencyUse;
use cordon_core::ToolError;
use cordon_sandbox::cache::CompileCache;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The `Content-Type` of a scrape: OpenMetrics text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the call-latency buckets, seconds: a millisecond to the longest sensible
/// `timeout_ms`.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OfferLabels {
    /// `resources/read`, `prompts/get` or `completion/complete`: never the URI or argument,
    /// which a caller chooses.
    method: &'static str,
    plugin: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The series of one tool, looked up once and kept (metric handles are shared `Arc`s, so these
/// are the very series the registry encodes).
struct ToolSeries {
    tool: Arc<str>,
    latency: Histogram,
    fuel: Counter,
    egress_denied: Counter,
}

/// What one call did, for [`Metrics::record_call`].
pub struct CallSample<'a> {
    /// Published tool name.
    pub tool: &'a str,
    /// The plugin serving it.
    pub plugin: &'a str,
    /// `Ok` or the error the caller got.
    pub outcome: Result<(), &'a ToolError>,
    /// Wall-clock time in `Cordon::call`.
    pub latency: Duration,
    /// Fuel the guest used (0 when it did not run).
    pub fuel_used: u64,
    /// How idempotency applied.
    pub idempotency: IdempotencyUse,
    /// Outbound requests the grants refused.
    pub egress_denied: usize,
}

/// Values read when scraped rather than counted as they happen.
pub struct Snapshot {
    /// Plugins in the catalog.
    pub plugins_loaded: usize,
    /// Files refused at load.
    pub plugins_refused: usize,
    /// Tools published.
    pub tools_served: usize,
    /// Calls inside `Cordon::call`.
    pub calls_in_flight: usize,
    /// Instances made ahead of their calls, across plugins.
    pub spare_instances: usize,
    /// Audit lines lost since start (queue full, file unwritable): the audit log's own count.
    pub audit_lines_dropped: u64,
    /// Audit lines the shared store's index lost since start (the audit index's own count).
    pub audit_index_rows_dropped: u64,
}

/// The host's metrics, owned by `Cordon`.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<ToolLabels, Histogram, fn() -> Histogram>,
    fuel: Family<ToolLabels, Counter>,
    egress_denied: Family<PluginLabels, Counter>,
    offers: Family<OfferLabels, Counter>,
    offer_fuel: Family<PluginLabels, Counter>,
    idempotency: Family<ResultLabels, Counter>,
    instances_in_use: Gauge,
    spare_instances: Gauge,
    calls_in_flight: Gauge,
    plugins_loaded: Gauge,
    plugins_refused: Gauge,
    tools_served: Gauge,
    audit_lines_dropped: Counter,
    audit_index_rows_dropped: Counter,
    /// Held while a scrape brings `audit_lines_dropped` up to the audit log's count, so that two
    /// scrapes at once never add the same lines twice.
    scrape: std::sync::Mutex<()>,
    tools: RwLock<HashMap<String, Arc<ToolSeries>>>,
}

impl Metrics {
    /// Registers every series; compile-cache counts are read from `cache` at each scrape.
    pub fn new(cache: Arc<CompileCache>) -> Metrics {
        let mut registry = Registry::with_prefix("cordon");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("calls", "Tool calls by tool and outcome (ok, host error type, plugin_error)", calls.clone());
        let latency: Family<ToolLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register_with_unit(
            "call_duration",
            "Time from the call's arrival to its outcome",
            Unit::Seconds,
            latency.clone(),
        );
        let fuel = Family::<ToolLabels, Counter>::default();
        registry.register("fuel_consumed", "Fuel (about one per wasm instruction) used by guests", fuel.clone());
        let egress_denied = Family::<PluginLabels, Counter>::default();
        registry.register(
            "egress_denied",
            "Outbound requests refused before connecting (no grant, budget, credential)",
            egress_denied.clone(),
        );
        let offers = Family::<OfferLabels, Counter>::default();
        registry.register(
            "offer_calls",
            "Resource reads, prompt renders and completions run in a guest, by plugin and outcome",
            offers.clone(),
        );
        let offer_fuel = Family::<PluginLabels, Counter>::default();
        registry.register(
            "offer_fuel_consumed",
            "Fuel used by guests for resource reads, prompt renders and completions",
            offer_fuel.clone(),
        );
        let idempotency = Family::<ResultLabels, Counter>::default();
        registry.register(
            "idempotency",
            "Keyed calls by what the key did (miss, hit, retry, recovery, reused)",
            idempotency.clone(),
        );
        let instances_in_use = Gauge::default();
        registry.register("instances_in_use", "Guest instances running a call now", instances_in_use.clone());
        let spare_instances = Gauge::default();
        registry.register(
            "spare_instances",
            "Guest instances made ahead of their calls, never run ([pool] spares_per_plugin)",
            spare_instances.clone(),
        );
        let calls_in_flight = Gauge::default();
        registry.register(
            "calls_in_flight",
            "Calls in progress, including those waiting for a slot or an idempotency key",
            calls_in_flight.clone(),
        );
        let plugins_loaded = Gauge::default();
        registry.register("plugins_loaded", "Plugins being served", plugins_loaded.clone());
        let plugins_refused = Gauge::default();
        registry.register("plugins_refused", "Plugin files refused at load", plugins_refused.clone());
        let tools_served = Gauge::default();
        registry.register("tools_served", "Tools being published", tools_served.clone());
        let audit_lines_dropped = Counter::default();
        registry.register(
            "audit_lines_dropped",
            "Audit lines lost: the queue was full or the audit file could not be written",
            audit_lines_dropped.clone(),
        );
        let audit_index_rows_dropped = Counter::default();
        registry.register(
            "audit_index_rows_dropped",
            "Audit lines the shared store's index (cordon_audit) lost: its queue was full or the database failed",
            audit_index_rows_dropped.clone(),
        );
        registry.register_collector(Box::new(CompileCacheCounts(cache)));
        Metrics {
            registry,
            calls,
            latency,
            fuel,
            egress_denied,
            offers,
            offer_fuel,
            idempotency,
            instances_in_use,
            spare_instances,
            calls_in_flight,
            plugins_loaded,
            plugins_refused,
            tools_served,
            audit_lines_dropped,
            audit_index_rows_dropped,
            scrape: std::sync::Mutex::new(()),
            tools: RwLock::new(HashMap::new()),
        }
    }

    /// The series of `tool`, created on its first call and reused after (also across reloads,
    /// since the name is the same series).
    fn tool(&self, tool: &str, plugin: &str) -> Arc<ToolSeries> {
        let read = self.tools.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(series) = read.get(tool) {
            return series.clone();
        }
        drop(read);
        let mut write = self.tools.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        write
            .entry(tool.to_string())
            .or_insert_with(|| {
                let name: Arc<str> = tool.into();
                let labels = ToolLabels { tool: name.clone() };
                Arc::new(ToolSeries {
                    tool: name,
                    latency: self.latency.get_or_create_owned(&labels),
                    fuel: self.fuel.get_or_create_owned(&labels),
                    egress_denied: self.egress_denied.get_or_create_owned(&PluginLabels { plugin: plugin.into() }),
                })
            })
            .clone()
    }

    /// Records one call that reached a tool.
    pub fn record_call(&self, sample: CallSample<'_>) {
        let series = self.tool(sample.tool, sample.plugin);
        let outcome = match sample.outcome {
            Ok(()) => "ok",
            Err(error) => outcome_label(error),
        };
        self.calls.get_or_create(&CallLabels { tool: series.tool.clone(), outcome }).inc();
        series.latency.observe(sample.latency.as_secs_f64());
        if sample.fuel_used > 0 {
            series.fuel.inc_by(sample.fuel_used);
        }
        if sample.egress_denied > 0 {
            series.egress_denied.inc_by(sample.egress_denied as u64);
        }
        if sample.idempotency != IdempotencyUse::None {
            self.idempotency.get_or_create(&ResultLabels { result: sample.idempotency.as_str() }).inc();
        }
    }

    /// Records one resource read, prompt render or completion that reached its guest's slot.
    pub fn record_offer(
        &self,
        method: &'static str,
        plugin: &str,
        outcome: Result<(), &ToolError>,
        fuel_used: u64,
        egress_denied: usize,
    ) {
        let plugin: Arc<str> = plugin.into();
        let outcome = match outcome {
            Ok(()) => "ok",
            Err(error) => outcome_label(error),
        };
        self.offers.get_or_create(&OfferLabels { method, plugin: plugin.clone(), outcome }).inc();
        let labels = PluginLabels { plugin };
        if fuel_used > 0 {
            self.offer_fuel.get_or_create(&labels).inc_by(fuel_used);
        }
        if egress_denied > 0 {
            self.egress_denied.get_or_create(&labels).inc_by(egress_denied as u64);
        }
    }

    /// Counts a guest instance as running until the guard is dropped.
    pub fn instance(&self) -> InstanceGuard {
        self.instances_in_use.inc();
        InstanceGuard(self.instances_in_use.clone())
    }

    /// The exposition text, with the scrape-time values in `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot) -> Result<String, std::fmt::Error> {
        let gauge = |gauge: &Gauge, value: usize| {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        gauge(&self.plugins_loaded, snapshot.plugins_loaded);
        gauge(&self.plugins_refused, snapshot.plugins_refused);
        gauge(&self.tools_served, snapshot.tools_served);
        gauge(&self.calls_in_flight, snapshot.calls_in_flight);
        gauge(&self.spare_instances, snapshot.spare_instances);
        let _scrape = self.scrape.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The audit log and its index count their losses themselves; the counters follow them
        // (they only grow).
        for (counter, count) in [
            (&self.audit_lines_dropped, snapshot.audit_lines_dropped),
            (&self.audit_index_rows_dropped, snapshot.audit_index_rows_dropped),
        ] {
            let seen = counter.get();
            if count > seen {
                counter.inc_by(count - seen);
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The `outcome` label of a failed call. Host error types are `&'static str` (`ToolError::new`
/// borrows `ErrorType::as_str`); a kind the guest chose is owned, and becomes `plugin_error` so
/// that a plugin cannot mint label values.
fn outcome_label(error: &ToolError) -> &'static str {
    match &error.kind {
        Cow::Borrowed(kind) => kind,
        Cow::Owned(_) => "plugin_error",
    }
}

/// One running guest instance (see [`Metrics::instance`]).
pub struct InstanceGuard(Gauge);

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Compile-cache hits and misses, read from the cache's own counters at each scrape (the cache
/// counts them anyway; mirroring them into a second counter would be two sources of truth).
struct CompileCacheCounts(Arc<CompileCache>);

impl std::fmt::Debug for CompileCacheCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompileCacheCounts")
    }
}

impl Collector for CompileCacheCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (hits, misses) = self.0.counts();
        let metric = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "compile_cache",
            "Plugin compilations answered by the compile cache (hit) or compiled (miss).",
            None,
            metric.metric_type(),
        )?;
        for (result, count) in [("hit", hits), ("miss", misses)] {
            let labels = ResultLabels { result };
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_core::ErrorType;

    #[test]
    fn host_error_types_are_labels_and_guest_kinds_are_not() {
        assert_eq!(outcome_label(&ToolError::new(ErrorType::Timeout, "slow")), "timeout");
        let guest = ToolError::from_guest("my_own_kind".into(), "no".into(), false);
        assert_eq!(outcome_label(&guest), "plugin_error");
    }
}
