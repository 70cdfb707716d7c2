//! Per-call store state. A fresh [`CallState`] is built for every call, so nothing a guest does
//! survives it.
//!
//! Each capability a guest is given keeps its per-call state in a module of its own, and
//! `CallState` hands each only its part: the empty WASI context (no preopened directories but
//! the granted ones, no environment, no arguments, no sockets or name lookup, empty stdin) and
//! the egress hooks for `wasi:http` ([`crate::grants`]); the memory budget ([`memory`]); guest
//! output and `log` lines ([`output`]); attached content ([`attachments`]); progress and log
//! reports to a listening client ([`reports`]); and the questions a guest asks it ([`asks`]).

mod asks;
mod attachments;
mod memory;
mod output;
mod reports;

pub use attachments::content_size;
pub use memory::MemoryCap;
pub(crate) use memory::{MAX_CORE_INSTANCES, MAX_MEMORIES, MAX_TABLES};
use output::GuestOutput;

use crate::bindings::cordon::plugin::host::{self, InputRequest, LogLevel};
use crate::bindings::{CallError, Content};
use crate::grants::credentials::Credentials;
use crate::grants::http::{EgressHooks, EgressRecord};
use crate::grants::PluginGrants;
use crate::link::{EventSink, InputRound};
use asks::Asks;
use attachments::Attachments;
use cordon_core::{ClientNeeds, Limits, Principal};
use output::{CapturedStream, Stream};
use reports::Reports;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// What one call is allowed to reach: the plugin's grants applied for one principal.
pub struct CallGrants {
    /// The plugin's grants.
    pub grants: PluginGrants,
    /// Loaded credentials (the sandbox only ever hands them to the egress hooks).
    pub credentials: Arc<Credentials>,
    /// The caller.
    pub principal: Principal,
    /// Where the call's outbound requests are recorded.
    pub egress: Arc<Mutex<EgressRecord>>,
    /// For a keyed call: the base of each outbound request's `Idempotency-Key`.
    pub upstream_key_base: Option<String>,
}

impl CallGrants {
    /// Nothing granted (no HTTP, no directories, no settings, no credentials), for `principal`:
    /// what `describe` runs with.
    pub fn none(principal: Principal) -> Self {
        CallGrants {
            grants: PluginGrants::default(),
            credentials: Arc::default(),
            principal,
            egress: Arc::default(),
            upstream_key_base: None,
        }
    }
}

/// Everything one call's store holds.
///
/// Two parts. The instance's own, made with the store before any call exists: the WASI context
/// (the plugin's directories, captured output), the `wasi:http` context, the resource table,
/// the memory cap, the output and attachment budgets, the plugin's settings. And the call's,
/// given by [`CallState::bind`] when a call takes the instance: the principal and the egress
/// hooks with its credentials and upstream key, the label of its log lines, its event sink and
/// its inputs. Until then the call's part is [`CallState::unbound`]'s: egress refused, no
/// client, so an instance made ahead of its call ([`crate::spares`]) can reach nothing.
pub struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    egress: EgressHooks,
    settings: Arc<BTreeMap<String, String>>,
    table: ResourceTable,
    pub(crate) limiter: MemoryCap,
    output: Arc<Mutex<GuestOutput>>,
    /// `plugin/call-id`, to tag the guest's log lines.
    label: Arc<str>,
    reports: Reports,
    attachments: Attachments,
    asks: Asks,
}

/// What one call brings to the instance it takes (see [`CallState::bind`]).
pub(crate) struct CallBinding {
    pub(crate) label: Arc<str>,
    pub(crate) grants: CallGrants,
    pub(crate) events: Option<EventSink>,
    pub(crate) inputs: Option<Arc<InputRound>>,
}

impl CallState {
    /// The instance's own state under the plugin's `limits` and directory grants, bound to no
    /// call: outbound HTTP refused (no policy, no credentials), no client to report to or ask.
    pub(crate) fn unbound(limits: &Limits, grants: &PluginGrants, label: Arc<str>) -> anyhow::Result<Self> {
        let output = Arc::new(Mutex::new(GuestOutput::new(limits.max_log_bytes)));
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(CapturedStream { output: output.clone(), stream: Stream::Stdout })
            .stderr(CapturedStream { output: output.clone(), stream: Stream::Stderr })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        for dir in grants.dirs.iter() {
            dir.apply(&mut builder)?;
        }
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(limits.max_header_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_resources);
        let nobody = EgressHooks::new(Arc::default(), Arc::default(), Principal::new(""), Arc::default(), None);
        Ok(Self {
            wasi: builder.build(),
            http,
            egress: nobody,
            settings: grants.settings.clone(),
            table,
            limiter: MemoryCap::new(limits.memory_bytes),
            output,
            reports: Reports::new(None),
            attachments: Attachments::new(limits.max_output_bytes),
            asks: Asks::new(None, None, label.clone()),
            label,
        })
    }

    /// Gives the instance to one call: what the call may reach and who it reports to. The
    /// directories and settings stay the instance's own (the plugin's, the same for every call).
    pub(crate) fn bind(&mut self, call: CallBinding) {
        let CallBinding { label, grants, events, inputs } = call;
        let CallGrants { grants, credentials, principal, egress, upstream_key_base } = grants;
        self.egress = EgressHooks::new(grants.http, credentials, principal, egress, upstream_key_base);
        self.reports = Reports::new(events.clone());
        self.asks = Asks::new(events, inputs, label.clone());
        self.label = label;
    }

    /// Writes what the guest printed to the host's log, once the call is over (by the teardown,
    /// after the reply has left: [`crate::spares`]).
    pub(crate) fn flush_output(&self) {
        output::flush(&self.output, &self.label);
    }

    /// What the client must give before this call can finish, if that is why the run ended
    /// (`failed_unsupported`: the guest failed with kind `unsupported`).
    pub fn client_needs(&mut self, failed_unsupported: bool) -> Option<ClientNeeds> {
        self.asks.client_needs(failed_unsupported)
    }

    /// The content the guest attached, or `None` when it attached more than the output cap.
    pub fn take_attached(&mut self) -> Option<Vec<Content>> {
        self.attachments.take()
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.egress }
    }
}

/// `cordon:plugin/host`: each function goes to the one capability it concerns.
impl host::Host for CallState {
    fn config(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }

    fn log(&mut self, level: LogLevel, message: String) {
        if output::log(&self.output, &self.label, level, &message) {
            self.reports.log(level, message);
        }
    }

    fn attach(&mut self, item: Content) {
        self.attachments.attach(item, &self.label);
    }

    async fn sample(&mut self, request: String) -> wasmtime::Result<Result<String, CallError>> {
        self.asks.sample(request).await
    }

    async fn elicit(&mut self, request: String) -> wasmtime::Result<Result<String, CallError>> {
        self.asks.elicit(request).await
    }

    async fn ask(&mut self, requests: Vec<InputRequest>) -> wasmtime::Result<Vec<Result<String, CallError>>> {
        self.asks.ask(requests).await
    }

    fn progress(&mut self, done: f64, total: Option<f64>, message: Option<String>) {
        self.reports.progress(done, total, message);
    }
}

impl crate::bindings::cordon::plugin::types::Host for CallState {}
