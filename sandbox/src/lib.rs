//! The sandbox: one wasmtime engine, and a fresh, limited instance for every guest call.
//!
//! Enforced here, all from operator [`Limits`], never from the guest:
//! - fuel per call (`Trap::OutOfFuel` → `fuel_exhausted`);
//! - wall-clock timeout by epoch interruption: the guest yields to the async runtime every
//!   [`EPOCH_TICK`], so a spinning guest never holds a runtime thread, and traps once its deadline
//!   passes (`Trap::Interrupt` → `timeout`); a tokio timeout backs this up for time the guest
//!   spends blocked in host calls;
//! - linear-memory cap through [`MemoryCap`] (→ `memory_limit`);
//! - the client's cancellation ([`CallLink::cancel`]) drops the invocation (→ `cancelled`);
//! - a string from the guest that is not UTF-8 (the canonical ABI cannot lift it) →
//!   `invalid_output`;
//! - any other trap → `plugin_crashed`.
//!
//! Instances come from a pooling allocator sized by `[pool]`; a full pool is `busy`.
//!
//! The crate's other parts are what an instance is given: [`grants`] (outbound HTTP, the
//! credentials attached to it, directories), [`link`] (the call's cancellation, and the events
//! and questions a guest sends its client), [`cache`] (compiled components on disk) and [`wrap`]
//! (core modules made components). It knows wasmtime and WASI, never the protocol a transport
//! speaks: a guest's question leaves it as a neutral [`link::Ask`], a call that needs its client
//! first as [`cordon_core::ClientNeeds`].

#![warn(missing_docs)]

pub mod bindings;
pub mod cache;
pub mod grants;
pub mod link;
pub mod plain;
pub mod spares;
mod state;
pub mod wrap;

pub use state::{content_size, CallGrants};
/// A compiled component, as the compile cache returns it and [`Sandbox::prepare`] links it.
pub use wasmtime::component::Component;

use crate::link::CallLink;
use anyhow::{Context as _, Result};
use bindings::exports::cordon::plugin::{completions, prompts, resources, tasks, tools};
use bindings::{
    CallContext, Completion, CompletionTarget, Content, PluginTasks, PromptDescriptor, PromptResult, ResourceContents,
    ResourceDescriptor, TemplateDescriptor, ToolDescriptor, ToolOutput,
};
use cordon_core::{ErrorType, ToolError};
use cordon_core::{Limits, PoolConfig};
use spares::{Book, Spares};
use state::{CallBinding, CallState};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Instance;
use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError, PoolingAllocationConfig, Store, Trap,
};

/// How often the epoch advances; the granularity of timeouts and of yielding to other tasks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Freed pool slots decommitted together (see `engine_config`).
pub const DECOMMIT_BATCH: usize = 32;
/// Bytes of each pooled memory, table and stack reset in place rather than decommitted.
pub const KEEP_RESIDENT_BYTES: usize = 64 << 10;
/// Bytes of a pooled linear memory's written pages reset in place when the kernel can say which
/// pages were written (`PAGEMAP_SCAN`, Linux 6.7+). Without the scan, keeping memory resident
/// means resetting its lowest bytes whether written or not, and a guest's stack and data sit
/// above 1 MiB (Rust's default layout), so [`KEEP_RESIDENT_BYTES`] applies instead.
pub const SCANNED_MEMORY_KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// Bytes the host lifts from a guest in one host call, or as `describe`'s result: twice
/// `registry::MAX_DESCRIPTION_BYTES`, for the records that hold the strings.
pub const DESCRIBE_LIFT_BYTES: usize = 8 << 20;

/// Room beyond the output cap in one lift, for an error's message and the records around the
/// strings.
const LIFT_SLACK_BYTES: usize = 64 << 10;

/// What wasmtime says when a lift runs out of hostcall fuel (its error type is private; wasmtime
/// is pinned, and the end-to-end test `a_list_bomb_is_refused_before_the_host_expands_it`
/// checks that it is recognised).
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// What wasmtime says when an instance's component handles pass `Store::set_max_component_handles`
/// (a plain error message; wasmtime is pinned, and `resource_and_header_bombs_are_bounded` in
/// the end-to-end tests checks that it is recognised).
const HANDLE_LIMIT_EXCEEDED: &str = "store handle limit exceeded";

/// The most the host lifts out of a guest at once for `invocation` (wasmtime's hostcall fuel:
/// one unit per byte of a string or list, `size_of` the element for a list of records or a
/// plain component's `Val`s). Checked before anything is copied, so a guest that hands over
/// more fails as `output_too_large` and the host never holds it: the result, and every argument
/// of a host call (`log`, `attach`, a stream write). Four times `max_output_bytes`: a tool's
/// text and JSON are each at most the cap, and a plain component's list is lifted as one
/// 32-byte `Val` per element, so a list of more than about an eighth of the cap's elements
/// is refused before it is expanded.
fn lift_budget(invocation: &Invocation, limits: &Limits) -> usize {
    match invocation {
        Invocation::Describe => DESCRIBE_LIFT_BYTES,
        _ => lift_budget_for_calls(limits),
    }
}

/// [`lift_budget`] for everything but `describe`.
fn lift_budget_for_calls(limits: &Limits) -> usize {
    limits.max_output_bytes.saturating_mul(4).saturating_add(LIFT_SLACK_BYTES)
}

/// Extra time the tokio backstop allows beyond the epoch deadline before giving up on a call.
const BACKSTOP_GRACE: Duration = Duration::from_millis(250);

/// The engine, the linker with everything the host offers guests, and the epoch ticker.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<CallState>,
    book: Arc<Book>,
    /// `[pool] spares_per_plugin`, fixed at start like the rest of `[pool]`.
    spares_per_plugin: usize,
}

/// What a run instantiates: the plugin's linked component under its limits, and its spares.
#[derive(Clone, Copy)]
pub struct Guest<'a> {
    /// The linked component.
    pub prepared: &'a Prepared,
    /// The plugin's limits.
    pub limits: &'a Limits,
    /// The plugin's spare instances, made from `prepared` under `limits` and the grants its
    /// calls get; `None` instantiates every run on demand.
    pub spares: Option<&'a Arc<Spares>>,
}

/// A component linked against the host, ready to instantiate many times.
#[derive(Clone)]
pub struct Prepared {
    kind: PreparedKind,
}

#[derive(Clone)]
enum PreparedKind {
    /// A `cordon:plugin` component: it describes its tools and receives JSON.
    Plugin(PluginExports),
    /// A plain component: its exported functions are the tools ([`plain`]).
    Plain(wasmtime::component::InstancePre<CallState>, Arc<Vec<plain::PlainTool>>),
}

impl Prepared {
    /// The names of the component's imports and of its exports (for `cordon inspect`).
    pub fn world(&self, engine: &Engine) -> (Vec<String>, Vec<String>) {
        let component = self.component().component_type();
        let imports = component.imports(engine).map(|(name, _)| name.to_string()).collect();
        let exports = component.exports(engine).map(|(name, _)| name.to_string()).collect();
        (imports, exports)
    }

    /// The compiled component.
    pub fn component(&self) -> &Component {
        match &self.kind {
            PreparedKind::Plugin(plugin) => plugin.pre.component(),
            PreparedKind::Plain(pre, _) => pre.component(),
        }
    }

    /// Whether the plugin exports `completions` (without it, every completion is empty and
    /// nothing needs to run).
    pub fn completes(&self) -> bool {
        matches!(&self.kind, PreparedKind::Plugin(plugin) if plugin.completions.is_some())
    }

    /// Whether this is a plain component (exported functions, not `cordon:plugin`).
    pub fn is_plain(&self) -> bool {
        matches!(self.kind, PreparedKind::Plain(..))
    }
}

/// A `cordon:plugin` component's exports: `tools`, and `resources`, `prompts`, `completions` and
/// `tasks` when it has them.
#[derive(Clone)]
pub struct PluginExports {
    pre: InstancePre<CallState>,
    tools: tools::GuestIndices,
    resources: Option<resources::GuestIndices>,
    prompts: Option<prompts::GuestIndices>,
    completions: Option<completions::GuestIndices>,
    tasks: Option<tasks::GuestIndices>,
}

/// What a guest is asked to do in one instance.
pub enum Invocation {
    /// List the plugin's tools, resources, templates and prompts.
    Describe,
    /// Read one resource.
    ReadResource {
        /// A URI the plugin listed, or one matching a template it listed.
        uri: String,
    },
    /// Render one prompt.
    GetPrompt {
        /// The prompt's local name (without the plugin prefix).
        name: String,
        /// The client's arguments.
        arguments: Vec<(String, String)>,
    },
    /// Suggest values for an argument of a prompt or resource template.
    Complete {
        /// The prompt (local name) or template.
        target: CompletionTarget,
        /// The argument being filled in.
        argument: String,
        /// What the user typed so far.
        value: String,
        /// Arguments already chosen.
        context: Vec<(String, String)>,
    },
    /// Run one tool.
    Call {
        /// The tool's local name (without the plugin prefix).
        tool: String,
        /// Arguments, serialized JSON.
        arguments: String,
        /// Caller and call identity.
        context: CallContext,
    },
}

/// What a plugin offers, as its `describe` and list functions answered.
#[derive(Default)]
pub struct Description {
    /// Its tools.
    pub tools: Vec<ToolDescriptor>,
    /// Its fixed resources (none unless it exports `resources`).
    pub resources: Vec<ResourceDescriptor>,
    /// Its resource templates.
    pub templates: Vec<TemplateDescriptor>,
    /// Its prompts (none unless it exports `prompts`).
    pub prompts: Vec<PromptDescriptor>,
    /// The task support its tools declare, by local name (none unless it exports `tasks`).
    pub task_support: Vec<(String, cordon_core::TaskSupport)>,
}

/// What the guest answered.
pub enum GuestReply {
    /// Answer to [`Invocation::Describe`].
    Described(Description),
    /// Answer to [`Invocation::Call`]: the guest's result or its own typed error.
    Output(Result<ToolOutput, bindings::CallError>),
    /// Answer to [`Invocation::ReadResource`].
    Resource(Result<Vec<ResourceContents>, bindings::CallError>),
    /// Answer to [`Invocation::GetPrompt`].
    Prompt(Result<PromptResult, bindings::CallError>),
    /// Answer to [`Invocation::Complete`].
    Completion(Result<Completion, bindings::CallError>),
}

impl GuestReply {
    /// Whether the guest answered with its own error of `kind`.
    fn failed_with(&self, kind: &str) -> bool {
        let error = match self {
            GuestReply::Described(_) => None,
            GuestReply::Output(reply) => reply.as_ref().err(),
            GuestReply::Resource(reply) => reply.as_ref().err(),
            GuestReply::Prompt(reply) => reply.as_ref().err(),
            GuestReply::Completion(reply) => reply.as_ref().err(),
        };
        error.is_some_and(|e| e.kind == kind)
    }
}

/// The outcome of one instance run, with what it cost.
pub struct Run {
    /// The guest's reply, or the host-side reason it has none.
    pub reply: Result<GuestReply, ToolError>,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Whether the client's cancellation cut the run short (the reply is then `cancelled`).
    pub cancelled: bool,
    /// Content the guest attached to its result (`host.attach`), in order; `None` when it
    /// attached more than the plugin's `max_output_bytes`.
    pub attached: Option<Vec<Content>>,
}

impl Sandbox {
    /// Builds the engine (pooling allocator, fuel, epochs) and links WASI p2 and `cordon:plugin`.
    pub fn new(pool: &PoolConfig) -> Result<Self> {
        let engine =
            Engine::new(&engine_config(pool)).map_err(anyhow::Error::from).context("cannot create the wasm engine")?;
        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from).context("cannot link WASI")?;
        // Outbound HTTP is linked for every plugin; what it may reach is decided per request by
        // the plugin's grants (`grants::http`), which default to nothing.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link wasi:http")?;
        PluginTasks::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("cannot link the cordon:plugin host interface")?;
        start_epoch_ticker(&engine).context("cannot start the epoch thread")?;
        let book = Arc::new(Book::new(pool.max_instances as usize));
        Ok(Self { engine, linker, book, spares_per_plugin: pool.spares_per_plugin as usize })
    }

    /// How many spares each plugin keeps (`[pool] spares_per_plugin`).
    pub fn spares_per_plugin(&self) -> usize {
        self.spares_per_plugin
    }

    /// Spares and teardowns across plugins ([`spares`]).
    pub fn book(&self) -> &Arc<Book> {
        &self.book
    }

    /// The engine, for compiling and deserializing components.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Links a compiled component. Fails, naming the import, when the component imports
    /// something the host does not offer or does not export the `cordon:plugin` world.
    pub fn prepare(&self, component: &Component) -> Result<Prepared> {
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .context("the component imports something Cordon does not provide")?;
        match tools::GuestIndices::new(&instance_pre) {
            Ok(tools) => Ok(Prepared {
                kind: PreparedKind::Plugin(PluginExports {
                    resources: resources::GuestIndices::new(&instance_pre).ok(),
                    prompts: prompts::GuestIndices::new(&instance_pre).ok(),
                    completions: completions::GuestIndices::new(&instance_pre).ok(),
                    tasks: tasks::GuestIndices::new(&instance_pre).ok(),
                    pre: instance_pre,
                    tools,
                }),
            }),
            Err(error) => {
                let targets_cordon = component
                    .component_type()
                    .exports(&self.engine)
                    .any(|(name, _)| name.starts_with("cordon:plugin/tools"));
                let tools = plain::exported_tools(&self.engine, component);
                if targets_cordon || tools.is_empty() {
                    return Err(anyhow::Error::from(error)).context(
                        "the component exports neither the cordon:plugin/tools@0.1.0 interface nor plain functions",
                    );
                }
                Ok(Prepared { kind: PreparedKind::Plain(instance_pre, Arc::new(tools)) })
            }
        }
    }

    /// Runs one invocation in a fresh instance of `guest` (a spare when one is ready) under its
    /// limits, until it ends or `link` is cancelled. The instance's store is torn down after this
    /// returns, off the caller's path ([`spares`]).
    pub async fn run(
        &self,
        guest: Guest<'_>,
        label: Arc<str>,
        grants: CallGrants,
        link: CallLink,
        invocation: Invocation,
    ) -> Run {
        let Guest { prepared, limits, spares } = guest;
        let CallLink { cancel, events, inputs } = link;
        let failed = |reply| Run { reply: Err(reply), fuel_used: 0, cancelled: false, attached: Some(Vec::new()) };
        let lift_budget = lift_budget(&invocation, limits);
        let describing = matches!(invocation, Invocation::Describe);
        let binding = CallBinding { label, grants, events, inputs };
        // `describe` runs once per load: it neither takes a spare nor makes one.
        let spares = spares.filter(|_| !describing);
        let spare = spares.and_then(|spares| spares.take()).and_then(|s| s.into_parts());
        let (mut store, instance, deadline) = match spare {
            Some((mut store, instance, made_in)) => {
                store.data_mut().bind(binding);
                (store, Some(instance), Instant::now() + limits.timeout.saturating_sub(made_in))
            }
            None => {
                let mut state = match CallState::unbound(limits, &binding.grants.grants, binding.label.clone()) {
                    Ok(state) => state,
                    Err(e) => return failed(internal("cannot prepare the call's sandbox", e)),
                };
                state.bind(binding);
                let mut store = Store::new(&self.engine, state);
                if let Err(e) = spares::limit_store(&mut store, limits, lift_budget) {
                    return failed(internal("cannot limit the call's store", e));
                }
                (store, None, Instant::now() + limits.timeout)
            }
        };
        store.set_hostcall_fuel(lift_budget);
        spares::set_deadline(&mut store, deadline);

        // Cancellation drops the invocation future instead of trapping from the epoch callback.
        // A flag checked there would stop a spinning guest only: the callback never runs while
        // the guest is blocked in a host call (an outbound request, a `wasi:clocks` sleep), and
        // dropping the future ends both. It is prompt for a spinning guest too, because the
        // epoch callback yields to tokio every tick and this `select!` is polled then. Dropping
        // the future unwinds the guest's fiber; the store (and with it the instance and its
        // pooled slot) goes to its teardown at the end of this function, and the caller's
        // concurrency permit when `Cordon::call` moves on. The backstop timeout already ends
        // calls this way.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let invocation = tokio::time::timeout(
            remaining + BACKSTOP_GRACE,
            invoke(prepared, &mut store, instance, &self.book, invocation, limits.max_output_bytes),
        );
        let outcome = tokio::select! {
            // Biased so that a call cancelled before it got here never starts the guest.
            biased;
            () = cancel.cancelled() => None,
            outcome = invocation => Some(outcome),
        };
        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let state = store.data_mut();
        let attached = state.take_attached();
        let cancelled = outcome.is_none();
        let mut reply = match outcome {
            None => Err(ToolError::cancelled()),
            Some(Ok(Ok(reply))) => Ok(reply),
            Some(Ok(Err(error))) => Err(classify(error, state.limiter.exceeded, limits, (lift_budget, describing))),
            Some(Err(_elapsed)) => Err(timeout_error(limits)),
        };
        // A question only the client's next try can answer ends the run (a trap); a guest that
        // failed because the client lacks a capability fails for that reason (`crate::notify`).
        if !cancelled {
            let failed_unsupported = reply.as_ref().is_ok_and(|reply| reply.failed_with("unsupported"));
            if let Some(needs) = state.client_needs(failed_unsupported) {
                reply = Err(ToolError::needs(needs));
            }
        }
        spares::tear_down(&self.book, store, spares);
        Run { reply, fuel_used, cancelled, attached }
    }
}

/// Runs `invocation` in `instance`, or in one instantiated now when there is none.
async fn invoke(
    prepared: &Prepared,
    store: &mut Store<CallState>,
    instance: Option<Instance>,
    book: &Book,
    invocation: Invocation,
    max_output_bytes: usize,
) -> wasmtime::Result<GuestReply> {
    let plugin = match &prepared.kind {
        PreparedKind::Plugin(plugin) => plugin,
        PreparedKind::Plain(pre, tools) => {
            return Ok(match invocation {
                // Described from the component's types: nothing runs.
                Invocation::Describe => GuestReply::Described(Description {
                    tools: tools.iter().map(|t| t.descriptor.clone()).collect(),
                    ..Description::default()
                }),
                Invocation::Call { tool, arguments, .. } => {
                    let instance = plain::Instantiated { pre, instance, book };
                    GuestReply::Output(plain::call(instance, store, tools, &tool, &arguments, max_output_bytes).await?)
                }
                Invocation::ReadResource { .. } | Invocation::GetPrompt { .. } | Invocation::Complete { .. } => {
                    wasmtime::bail!("a plain component has no resources, prompts or completions")
                }
            });
        }
    };
    let instance = match instance {
        Some(instance) => instance,
        None => spares::instantiate(&plugin.pre, store, book).await?,
    };
    let resources = match &plugin.resources {
        Some(indices) => Some(indices.load(&mut *store, &instance)?),
        None => None,
    };
    let prompts = match &plugin.prompts {
        Some(indices) => Some(indices.load(&mut *store, &instance)?),
        None => None,
    };
    Ok(match invocation {
        Invocation::Describe => {
            let tools = plugin.tools.load(&mut *store, &instance)?;
            let mut description =
                Description { tools: tools.call_describe(&mut *store).await?, ..Description::default() };
            if let Some(resources) = &resources {
                description.resources = resources.call_list_resources(&mut *store).await?;
                description.templates = resources.call_list_templates(&mut *store).await?;
            }
            if let Some(prompts) = &prompts {
                description.prompts = prompts.call_list_prompts(&mut *store).await?;
            }
            if let Some(indices) = &plugin.tasks {
                let tasks = indices.load(&mut *store, &instance)?;
                description.task_support = tasks
                    .call_supported(&mut *store)
                    .await?
                    .into_iter()
                    .map(|(tool, support)| {
                        let support = match support {
                            tasks::TaskSupport::Forbidden => cordon_core::TaskSupport::Forbidden,
                            tasks::TaskSupport::Optional => cordon_core::TaskSupport::Optional,
                            tasks::TaskSupport::Required => cordon_core::TaskSupport::Required,
                        };
                        (tool, support)
                    })
                    .collect();
            }
            GuestReply::Described(description)
        }
        Invocation::Call { tool, arguments, context } => {
            let tools = plugin.tools.load(&mut *store, &instance)?;
            GuestReply::Output(tools.call_call(&mut *store, &tool, &arguments, &context).await?)
        }
        Invocation::ReadResource { uri } => match &resources {
            Some(resources) => GuestReply::Resource(resources.call_read(&mut *store, &uri).await?),
            None => wasmtime::bail!("the plugin exports no resources"),
        },
        Invocation::GetPrompt { name, arguments } => match &prompts {
            Some(prompts) => GuestReply::Prompt(prompts.call_get(&mut *store, &name, &arguments).await?),
            None => wasmtime::bail!("the plugin exports no prompts"),
        },
        Invocation::Complete { target, argument, value, context } => match &plugin.completions {
            Some(indices) => {
                let completions = indices.load(&mut *store, &instance)?;
                GuestReply::Completion(
                    completions.call_complete(&mut *store, &target, &argument, &value, &context).await?,
                )
            }
            None => wasmtime::bail!("the plugin exports no completions"),
        },
    })
}

/// Maps a wasmtime failure to the typed error the caller sees. The full error goes to the log;
/// the caller gets a message without host detail.
/// `lift`: the run's lift budget, and whether it was a `describe` (whose results are not capped
/// by `max_output_bytes`).
fn classify(error: wasmtime::Error, memory_exceeded: bool, limits: &Limits, lift: (usize, bool)) -> ToolError {
    let (lift_budget, describing) = lift;
    if memory_exceeded {
        return ToolError::new(
            ErrorType::MemoryLimit,
            format!("the plugin tried to use more than its {} MiB memory cap", limits.memory_bytes >> 20),
        );
    }
    if error.chain().any(|cause| cause.to_string().contains(HOSTCALL_FUEL_EXHAUSTED)) {
        tracing::debug!(error = %format!("{:#}", anyhow::Error::from(error)), "guest handed over too much at once");
        return ToolError::new(
            ErrorType::OutputTooLarge,
            if describing {
                format!("the plugin handed the host more than {lift_budget} bytes at once")
            } else {
                format!(
                    "the plugin handed the host more than {lift_budget} bytes at once; a result may be at most {} bytes",
                    limits.max_output_bytes
                )
            },
        );
    }
    let table_full = matches!(error.downcast_ref(), Some(wasmtime::component::ResourceTableError::Full));
    if table_full || error.chain().any(|cause| cause.to_string().contains(HANDLE_LIMIT_EXCEEDED)) {
        return ToolError::new(
            ErrorType::MemoryLimit,
            format!(
                "the plugin held more than {} host resources at once (streams, pollables, HTTP requests, header maps)",
                limits.max_resources
            ),
        );
    }
    if let Some(wasmtime_wasi_http::FieldMapError::TotalSizeTooBig | wasmtime_wasi_http::FieldMapError::TooManyFields) =
        error.downcast_ref()
    {
        return ToolError::new(
            ErrorType::MemoryLimit,
            format!("the plugin built an HTTP header map of more than {} bytes", limits.max_header_bytes),
        );
    }
    if let Some(plain::TooLarge) = error.downcast_ref::<plain::TooLarge>() {
        return ToolError::new(
            ErrorType::OutputTooLarge,
            format!("the result is over the {} bytes this tool may return", limits.max_output_bytes),
        );
    }
    if error.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        return ToolError::new(ErrorType::Busy, "the host's instance pool is full; retry shortly");
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => {
            ToolError::new(ErrorType::FuelExhausted, format!("the plugin used up its fuel budget of {}", limits.fuel))
        }
        Some(Trap::Interrupt) => timeout_error(limits),
        Some(Trap::StackOverflow) => ToolError::new(ErrorType::PluginCrashed, "the plugin crashed: stack overflow"),
        Some(trap) => ToolError::new(ErrorType::PluginCrashed, format!("the plugin crashed: {trap}")),
        // A WIT `string` must be UTF-8: the canonical ABI fails to lift one that is not.
        None if error.is::<std::str::Utf8Error>() => {
            ToolError::new(ErrorType::InvalidOutput, "the plugin returned a string that is not valid UTF-8")
        }
        None => {
            tracing::warn!(error = %format!("{:#}", anyhow::Error::from(error)), "guest call failed");
            ToolError::new(ErrorType::PluginCrashed, "the plugin failed while running")
        }
    }
}

fn timeout_error(limits: &Limits) -> ToolError {
    ToolError::new(ErrorType::Timeout, format!("the call ran past its {} ms timeout", limits.timeout.as_millis()))
}

fn internal(what: &str, error: anyhow::Error) -> ToolError {
    tracing::error!(error = %format!("{error:#}"), "{what}");
    ToolError::new(ErrorType::Internal, "internal error in the host")
}

fn engine_config(pool: &PoolConfig) -> Config {
    let mut pooling = PoolingAllocationConfig::new();
    let instances = pool.max_instances;
    // A component holds several core instances, memories and tables (componentize-py output
    // has a dozen core instances); size the shared pools so `max_instances` components fit.
    pooling
        .total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(16))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(8))
        .total_stacks(instances)
        .max_memory_size((pool.max_memory_mb as usize).saturating_mul(1 << 20))
        // Per component, as the store's limiter allows (`state::MemoryCap`): a component of many
        // core modules cannot take the pool's memories and tables for itself.
        .max_memories_per_component(state::MAX_MEMORIES as u32)
        .max_tables_per_component(state::MAX_TABLES as u32)
        .max_core_instances_per_component(state::MAX_CORE_INSTANCES as u32);
    slot_reuse(&mut pooling);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .parallel_compilation(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    config
}

/// How a freed pool slot is made ready for the next instance; public so that the bench's bare
/// wasmtime baseline uses exactly the host's settings. What each part bought: BENCHMARKS.md,
/// "What each change bought".
///
/// - Freed slots go back to the kernel in batches: one `madvise` (and one TLB shootdown across
///   cores) per [`DECOMMIT_BATCH`] slots instead of per call.
/// - The pages a call wrote are reset in place rather than unmapped, so the next call on the slot
///   neither faults them in again nor breaks copy-on-write on the module's image (each such
///   fault is another cross-core TLB flush). With `PAGEMAP_SCAN` only written pages are reset,
///   up to [`SCANNED_MEMORY_KEEP_RESIDENT_BYTES`]; without it, the lowest
///   [`KEEP_RESIDENT_BYTES`]. The cost is resident memory: idle warm slots are capped by
///   wasmtime's `max_unused_warm_slots` (100 by default), so at most 200 MiB of kept pages on top
///   of the slots in use; a plugin reuses its own warm slots (module affinity), so in practice it
///   is its peak concurrency times what one call writes.
pub fn slot_reuse(pooling: &mut PoolingAllocationConfig) -> &mut PoolingAllocationConfig {
    let scan = PoolingAllocationConfig::is_pagemap_scan_available();
    let memory_keep_resident = if scan { SCANNED_MEMORY_KEEP_RESIDENT_BYTES } else { KEEP_RESIDENT_BYTES };
    pooling
        .decommit_batch_size(DECOMMIT_BATCH)
        .pagemap_scan(if scan { wasmtime::Enabled::Yes } else { wasmtime::Enabled::No })
        .linear_memory_keep_resident(memory_keep_resident)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .async_stack_keep_resident(KEEP_RESIDENT_BYTES)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] for as long as the engine lives.
fn start_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new().name("cordon-epoch".into()).spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    })?;
    Ok(())
}
