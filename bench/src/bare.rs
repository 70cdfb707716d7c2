//! The bare wasmtime baseline: the least a host must do to run the demo plugin's `echo` once per
//! call (the host's engine settings, a pooled `InstancePre`, a fresh store with an empty WASI
//! context and no-op host imports). `interleaved_series` (main.rs) times it in process; `echo-server --wasm` puts
//! it behind rmcp, which is the floor for Cordon over stdio and HTTP: rmcp plus one pooled
//! instance per call, and nothing else.

use anyhow::{bail, Result};
use cordon_sandbox::bindings::cordon::plugin::host::LogLevel;
use cordon_sandbox::bindings::cordon::plugin::{host, types};
use cordon_sandbox::bindings::exports::cordon::plugin::tools;
use cordon_sandbox::bindings::{CallContext, CallError, Content, PluginTasks};
use std::path::Path;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The least a host must hold to run the plugin: an empty WASI context and no-op host imports.
struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl host::Host for Bare {
    fn log(&mut self, _: LogLevel, _: String) {}
    fn progress(&mut self, _: f64, _: Option<f64>, _: Option<String>) {}
    fn config(&mut self, _: String) -> Option<String> {
        None
    }
    fn attach(&mut self, _: Content) {}
    async fn sample(&mut self, _: String) -> wasmtime::Result<Result<String, CallError>> {
        Ok(Err(unsupported()))
    }
    async fn elicit(&mut self, _: String) -> wasmtime::Result<Result<String, CallError>> {
        Ok(Err(unsupported()))
    }
    async fn ask(&mut self, requests: Vec<host::InputRequest>) -> wasmtime::Result<Vec<Result<String, CallError>>> {
        Ok(requests.iter().map(|_| Err(unsupported())).collect())
    }
}

impl types::Host for Bare {}

fn unsupported() -> CallError {
    CallError { kind: "unsupported".into(), message: String::new(), retryable: false }
}

/// The host's engine settings (pooling, slot reuse, epoch interruption), fuel on or off.
fn engine(fuel: bool) -> Result<Engine> {
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(256)
        .total_core_instances(256 * 16)
        .total_memories(512)
        .total_tables(256 * 8)
        .total_stacks(256)
        .max_memory_size(512 << 20);
    cordon_sandbox::slot_reuse(&mut pooling);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(fuel)
        .epoch_interruption(true)
        .parallel_compilation(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Ok(Engine::new(&config)?)
}

/// One plugin, compiled and pre-instantiated once; [`BareWasm::call`] runs one tool call in a
/// fresh instance.
pub struct BareWasm {
    engine: Engine,
    pre: InstancePre<Bare>,
    indices: tools::GuestIndices,
    fuel: bool,
}

/// What the guest returned: its text and its structured JSON.
pub struct BareOutput {
    pub text: Option<String>,
    pub json: Option<String>,
}

impl BareWasm {
    /// Compiles `plugin` with the host's engine settings.
    pub fn new(plugin: &Path, fuel: bool) -> Result<BareWasm> {
        let engine = engine(fuel)?;
        let component = Component::from_file(&engine, plugin)?;
        let mut linker = Linker::<Bare>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        PluginTasks::add_to_linker::<_, HasSelf<Bare>>(&mut linker, |state| state)?;
        let pre = linker.instantiate_pre(&component)?;
        let indices = tools::GuestIndices::new(&pre)?;
        Ok(BareWasm { engine, pre, indices, fuel })
    }

    /// `tool` with `arguments` (JSON text) in a fresh pooled instance.
    pub async fn call(&self, tool: &str, arguments: &str) -> Result<BareOutput> {
        let context = CallContext { principal: "bench".into(), call_id: "1".into(), idempotency_key: None };
        let mut store =
            Store::new(&self.engine, Bare { wasi: WasiCtx::builder().build(), table: ResourceTable::new() });
        if self.fuel {
            store.set_fuel(2_000_000_000)?;
        }
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = self.pre.instantiate_async(&mut store).await?;
        let guest = self.indices.load(&mut store, &instance)?;
        match guest.call_call(&mut store, tool, arguments, &context).await? {
            Ok(output) => Ok(BareOutput { text: output.text, json: output.json }),
            Err(e) => bail!("the guest failed: {}: {}", e.kind, e.message),
        }
    }
}
