//! Set-up and teardown off the call's path: spare instances made ahead of their calls, and the
//! stores of finished calls dropped after the reply has left.
//!
//! **A spare** is a `cordon:plugin` (or plain) component instantiated from the plugin's
//! [`InstancePre`](wasmtime::component::InstancePre) into a store of its own, bound to no call
//! ([`CallState::unbound`]: outbound HTTP refused, no client), and never called. A call takes one
//! (a pop under a lock, so exactly one call ever gets it), binds itself into the store
//! ([`CallState::bind`]: principal, grants and credentials, upstream key, log label, event sink,
//! inputs), sets its own deadline and output budget, and calls the export; afterwards the store is
//! torn down, never reused. It is as fresh as an instance made when the call arrives because
//! nothing that depends on the call exists before the call takes it, and no export has run:
//! the only guest code that can have run is the component's start functions, which run at
//! instantiation either way, under the plugin's limits and with nothing to reach. What they
//! consumed is charged to the call: the fuel left is what the call gets, and the time
//! instantiation took comes off the call's timeout. The one thing a start function could see
//! differently is the clock (the spare's creation, not the call's arrival).
//!
//! Spares are made lazily: a plugin gets one only after a call took an instance of it, in that
//! call's teardown, up to `[pool] spares_per_plugin`. They hold pool slots like any instance, so
//! `[pool] max_instances` bounds spares and calls together. Spares take at most three quarters of
//! the pool, and a call that finds the pool full evicts every spare of every plugin
//! ([`Book::evict`]) and tries once more, so spares never make a call `busy`. A reload retires the old plugin's spares ([`Spares::retire`]); a plugin whose
//! spare fails to instantiate (its start function traps or runs out of fuel) gets no more.
//!
//! **The teardown** of a call runs as a task of its own, spawned when the guest's run ends: it
//! writes what the guest printed to the log, drops the store (the pooling allocator resets the
//! memory the guest wrote), then makes the plugin's next spare, which then lands in the slot just
//! freed. The call's task goes on to its reply without waiting; a drain waits for teardowns
//! ([`Book::teardowns`]).

use crate::grants::PluginGrants;
use crate::state::CallState;
use crate::{Prepared, PreparedKind};
use cordon_core::{InFlight, Limits};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use wasmtime::component::Instance;
use wasmtime::{Store, UpdateDeadline};

/// The sandbox-wide account of spares and teardowns.
pub struct Book {
    /// Spares alive now, across plugins.
    spares: AtomicUsize,
    /// The most spares alive at once, across plugins: three quarters of the pool, so that many
    /// plugins' spares do not fill it and every call past that point evict them all.
    max_spares: usize,
    /// Every plugin's spares, for eviction when the pool is full.
    all: Mutex<Vec<Weak<Spares>>>,
    /// Teardowns spawned and not finished.
    teardowns: Arc<InFlight>,
}

impl Book {
    /// The account of a pool of `max_instances` instances.
    pub(crate) fn new(max_instances: usize) -> Book {
        Book {
            spares: AtomicUsize::new(0),
            max_spares: max_instances.saturating_mul(3).div_ceil(4),
            all: Mutex::default(),
            teardowns: Arc::default(),
        }
    }

    /// Spares alive now, across plugins (the `spare_instances` gauge).
    pub fn spares(&self) -> usize {
        self.spares.load(Ordering::Relaxed)
    }

    /// Teardowns not finished yet: a drain waits for this to reach zero.
    pub fn teardowns(&self) -> &Arc<InFlight> {
        &self.teardowns
    }

    /// Drops every spare of every plugin, to free their pool slots for calls. Whether any was
    /// dropped.
    pub(crate) fn evict(&self) -> bool {
        let all: Vec<Arc<Spares>> = match self.all.lock() {
            Ok(mut all) => {
                all.retain(|weak| weak.strong_count() > 0);
                all.iter().filter_map(Weak::upgrade).collect()
            }
            Err(_) => return false,
        };
        let mut evicted = false;
        for spares in all {
            evicted |= !spares.drain().is_empty();
        }
        evicted
    }
}

/// One plugin's spare instances.
pub struct Spares {
    prepared: Prepared,
    limits: Limits,
    grants: PluginGrants,
    label: Arc<str>,
    /// How many to keep ready.
    target: usize,
    ready: Mutex<Ready>,
    book: Arc<Book>,
}

#[derive(Default)]
struct Ready {
    spares: Vec<Spare>,
    /// Spares being instantiated now.
    making: usize,
    /// Set by a reload or after a spare failed: make no more.
    retired: bool,
}

/// An instance made ahead of its call.
pub(crate) struct Spare {
    /// Always `Some` until [`Spare::into_parts`].
    store: Option<Store<CallState>>,
    instance: Instance,
    /// Wall time its instantiation took: charged to the call's timeout.
    made_in: Duration,
    book: Arc<Book>,
}

impl Spare {
    /// The store, the instance, and how long instantiating it took.
    pub(crate) fn into_parts(mut self) -> Option<(Store<CallState>, Instance, Duration)> {
        Some((self.store.take()?, self.instance, self.made_in))
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        self.book.spares.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spares {
    /// Spares of `prepared`, made under the plugin's `limits` and directory `grants` (the same
    /// the plugin's calls run with), at most `target` at once.
    pub fn new(
        sandbox: &crate::Sandbox,
        prepared: Prepared,
        limits: Limits,
        grants: PluginGrants,
        plugin: &str,
        target: usize,
    ) -> Arc<Spares> {
        let spares = Arc::new(Spares {
            prepared,
            limits,
            grants,
            label: format!("{plugin}/spare").into(),
            target,
            ready: Mutex::default(),
            book: sandbox.book.clone(),
        });
        if target > 0 {
            if let Ok(mut all) = sandbox.book.all.lock() {
                all.retain(|weak| weak.strong_count() > 0);
                all.push(Arc::downgrade(&spares));
            }
        }
        spares
    }

    /// Spares ready now.
    pub fn ready(&self) -> usize {
        self.ready.lock().map_or(0, |ready| ready.spares.len())
    }

    /// Drops the spares and makes no more (the plugin was replaced or removed); calls still in
    /// flight on it instantiate on demand.
    pub fn retire(&self) {
        if let Ok(mut ready) = self.ready.lock() {
            ready.retired = true;
        }
        drop(self.drain());
    }

    /// Takes the spares out (the caller drops them).
    fn drain(&self) -> Vec<Spare> {
        self.ready.lock().map(|mut ready| std::mem::take(&mut ready.spares)).unwrap_or_default()
    }

    /// A spare for one call, if one is ready.
    pub(crate) fn take(&self) -> Option<Spare> {
        self.ready.lock().ok()?.spares.pop()
    }

    /// Makes spares until the plugin has its target ready or being made.
    async fn refill(&self) {
        loop {
            {
                let Ok(mut ready) = self.ready.lock() else { return };
                let pool_has_room = self.book.spares() + ready.making < self.book.max_spares;
                if ready.retired || ready.spares.len() + ready.making >= self.target || !pool_has_room {
                    return;
                }
                ready.making += 1;
            }
            let made = self.make().await;
            let Ok(mut ready) = self.ready.lock() else { return };
            ready.making -= 1;
            match made {
                Ok(spare) if !ready.retired => ready.spares.push(spare),
                Ok(_) => return,
                // A full pool is no fault of the plugin's: try again after a later call.
                Err(SpareError::PoolFull) => return,
                Err(SpareError::Failed(e)) => {
                    tracing::debug!(plugin = %self.label, error = %format!("{e:#}"),
                        "no spares for this plugin: its instantiation failed");
                    ready.retired = true;
                    return;
                }
            }
        }
    }

    async fn make(&self) -> Result<Spare, SpareError> {
        let state = CallState::unbound(&self.limits, &self.grants, self.label.clone()).map_err(SpareError::Failed)?;
        let pre = self.prepared.instance_pre();
        let mut store = Store::new(pre.engine(), state);
        limit_store(&mut store, &self.limits, crate::lift_budget_for_calls(&self.limits))
            .map_err(SpareError::Failed)?;
        let started = Instant::now();
        set_deadline(&mut store, started + self.limits.timeout);
        match pre.instantiate_async(&mut store).await {
            Ok(instance) => {
                self.book.spares.fetch_add(1, Ordering::Relaxed);
                Ok(Spare { store: Some(store), instance, made_in: started.elapsed(), book: self.book.clone() })
            }
            Err(e) if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() => Err(SpareError::PoolFull),
            Err(e) => Err(SpareError::Failed(e.into())),
        }
    }
}

enum SpareError {
    PoolFull,
    Failed(anyhow::Error),
}

impl Prepared {
    fn instance_pre(&self) -> &wasmtime::component::InstancePre<CallState> {
        match &self.kind {
            PreparedKind::Plugin(plugin) => &plugin.pre,
            PreparedKind::Plain(pre, _) => pre,
        }
    }
}

/// The bounds every store gets before guest code runs in it: the memory cap, the host's lift
/// budget, the handle cap, and the plugin's fuel.
pub(crate) fn limit_store(store: &mut Store<CallState>, limits: &Limits, lift_budget: usize) -> anyhow::Result<()> {
    store.limiter(|state| &mut state.limiter);
    store.set_hostcall_fuel(lift_budget);
    store.set_max_component_handles(limits.max_resources);
    store.set_fuel(limits.fuel)?;
    Ok(())
}

/// Interrupts the guest once `deadline` passes; until then it yields to the runtime every epoch
/// tick, so a guest that never calls out still lets other tasks on its thread run (tokio's
/// `yield_now` also lets the worker poll for I/O before resuming the guest).
pub(crate) fn set_deadline(store: &mut Store<CallState>, deadline: Instant) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
        }
    });
}

/// Hands a finished call's store to its teardown: the guest's output to the log, the store
/// dropped, then `spares` refilled — on a task of its own, so the call's reply does not wait.
/// Outside a runtime (nothing to spawn on) it all happens here.
pub(crate) fn tear_down(book: &Arc<Book>, store: Store<CallState>, spares: Option<&Arc<Spares>>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // No runtime to spawn on: the store goes now, and no spare is made.
        store.data().flush_output();
        return;
    };
    let guard = book.teardowns.enter();
    let spares = spares.filter(|spares| spares.target > 0).cloned();
    drop(runtime.spawn(async move {
        store.data().flush_output();
        drop(store);
        if let Some(spares) = spares {
            spares.refill().await;
        }
        drop(guard);
    }));
}

/// Instantiates `pre` on demand. When the pool is full, the slots spares and finished calls
/// still hold are freed first — spares evicted, teardowns waited for (briefly) — and the
/// instantiation is tried once more, so that spares never make a call `busy`.
pub(crate) async fn instantiate(
    pre: &wasmtime::component::InstancePre<CallState>,
    store: &mut Store<CallState>,
    book: &Book,
) -> wasmtime::Result<Instance> {
    match pre.instantiate_async(&mut *store).await {
        Err(e) if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() => {
            let evicted = book.evict();
            if book.teardowns.count() > 0 {
                let _ = tokio::time::timeout(TEARDOWN_WAIT, book.teardowns.wait_idle()).await;
                // A teardown may have made spares meanwhile.
                book.evict();
            } else if !evicted {
                return Err(e);
            }
            pre.instantiate_async(&mut *store).await
        }
        other => other,
    }
}

/// How long a call that found the pool full waits for finished calls' teardowns to free slots.
const TEARDOWN_WAIT: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::CallContext;
    use crate::link::CallLink;
    use crate::{CallGrants, GuestReply, Invocation, Sandbox};
    use cordon_core::{ErrorType, PoolConfig, Principal};
    use wasmtime::component::Component;

    /// A plain component whose `count` bumps a global and returns it: 1 in every fresh instance.
    /// `start` is a core start function run at instantiation (WAT: `(start $f)` or nothing).
    fn counter(sandbox: &Sandbox, start: &str) -> Prepared {
        let wat = format!(
            r#"(component
                 (core module $m
                   (global $calls (mut i32) (i32.const 0))
                   (func $boot {start})
                   (start $boot)
                   (func (export "count") (result i32)
                     (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
                     (global.get $calls)))
                 (core instance $i (instantiate $m))
                 (func (export "count") (result u32) (canon lift (core func $i "count"))))"#
        );
        let bytes = wat::parse_str(&wat).expect("the fixture's WAT");
        let component = Component::new(sandbox.engine(), bytes).expect("the fixture compiles");
        sandbox.prepare(&component).expect("the fixture links")
    }

    fn limits() -> Limits {
        Limits { timeout: Duration::from_secs(10), ..Limits::default() }
    }

    /// One call of `count` as alice.
    async fn run_count(sandbox: &Sandbox, guest: crate::Guest<'_>) -> crate::Run {
        let context = CallContext { principal: "alice".into(), call_id: "c".into(), idempotency_key: None };
        let invocation = Invocation::Call { tool: "count".into(), arguments: "{}".into(), context };
        let grants = CallGrants::none(Principal::new("alice"));
        sandbox.run(guest, "counter/c".into(), grants, CallLink::default(), invocation).await
    }

    /// [`run_count`]'s answer: the guest's text, or the host's error type.
    async fn count(
        sandbox: &Sandbox,
        prepared: &Prepared,
        limits: &Limits,
        spares: Option<&Arc<Spares>>,
    ) -> Result<String, String> {
        match run_count(sandbox, crate::Guest { prepared, limits, spares }).await.reply {
            Ok(GuestReply::Output(Ok(output))) => Ok(output.text.unwrap_or_default()),
            Ok(_) => Err("another reply".into()),
            Err(error) => Err(error.kind.into_owned()),
        }
    }

    /// A spare is made in the teardown after a call, taken by exactly one later call, and is as
    /// fresh as an instance made on demand: the guest's own call counter reads 1 every time.
    /// The teardown runs after the run returns (a current-thread runtime runs it only when the
    /// test yields), and a drain can wait for it.
    #[tokio::test(flavor = "current_thread")]
    async fn spares_are_made_after_a_call_taken_once_and_always_fresh() {
        let sandbox = Sandbox::new(&PoolConfig { max_instances: 8, ..PoolConfig::default() }).unwrap();
        let prepared = counter(&sandbox, "");
        let limits = limits();
        let spares = Spares::new(&sandbox, prepared.clone(), limits.clone(), PluginGrants::default(), "counter", 2);
        assert_eq!(spares.ready(), 0, "no spare before the plugin's first call");

        assert_eq!(count(&sandbox, &prepared, &limits, Some(&spares)).await.unwrap(), "1");
        assert_eq!(sandbox.book().teardowns().count(), 1, "the teardown is pending after the run returned");
        sandbox.book().teardowns().wait_idle().await;
        assert_eq!(spares.ready(), 2, "the teardown made the plugin's spares");
        assert_eq!(sandbox.book().spares(), 2);

        for _ in 0..10 {
            assert_eq!(count(&sandbox, &prepared, &limits, Some(&spares)).await.unwrap(), "1");
            assert_eq!(spares.ready(), 1, "the call took a spare");
            sandbox.book().teardowns().wait_idle().await;
            assert_eq!(spares.ready(), 2, "and its teardown made the next");
        }
        // Two runs at once each take their own.
        let (a, b) = tokio::join!(
            count(&sandbox, &prepared, &limits, Some(&spares)),
            count(&sandbox, &prepared, &limits, Some(&spares))
        );
        assert_eq!((a.unwrap(), b.unwrap()), ("1".to_string(), "1".to_string()));

        spares.retire();
        assert_eq!((spares.ready(), sandbox.book().spares()), (0, 0), "retired: the spares are dropped");
        assert_eq!(count(&sandbox, &prepared, &limits, Some(&spares)).await.unwrap(), "1");
        sandbox.book().teardowns().wait_idle().await;
        assert_eq!(spares.ready(), 0, "and no more are made");
    }

    /// Spares hold pool slots, but a call that finds the pool full evicts them: with a pool of
    /// two slots both held by one plugin's spares, another plugin's call still runs. Without
    /// spares to evict, the pool's bound holds: a full pool is `busy`.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_pool_evicts_spares_for_a_call_and_still_bounds_instances() {
        let sandbox = Sandbox::new(&PoolConfig { max_instances: 2, ..PoolConfig::default() }).unwrap();
        let limits = limits();
        let first = counter(&sandbox, "");
        let other = counter(&sandbox, "");
        let spares = Spares::new(&sandbox, first.clone(), limits.clone(), PluginGrants::default(), "first", 2);
        count(&sandbox, &first, &limits, Some(&spares)).await.unwrap();
        sandbox.book().teardowns().wait_idle().await;
        assert_eq!(spares.ready(), 2, "both slots hold spares");

        assert_eq!(count(&sandbox, &other, &limits, None).await.unwrap(), "1", "the spares made room");
        assert_eq!(spares.ready(), 0, "evicted");

        // Two instances held by spares of two plugins, no eviction possible for a third: the
        // spares are taken by calls that hold them while a third instantiates.
        let held: Vec<Spare> = {
            sandbox.book().teardowns().wait_idle().await;
            count(&sandbox, &first, &limits, Some(&spares)).await.unwrap();
            sandbox.book().teardowns().wait_idle().await;
            std::iter::from_fn(|| spares.take()).collect()
        };
        assert_eq!(held.len(), 2, "two instances exist");
        assert_eq!(
            count(&sandbox, &other, &limits, None).await,
            Err(ErrorType::Busy.as_str().into()),
            "a third does not fit"
        );
        drop(held);
        assert_eq!(count(&sandbox, &other, &limits, None).await.unwrap(), "1");
    }

    /// Many plugins' spares together take at most three quarters of the pool, so calls past that
    /// point still find free slots instead of evicting every spare each time: with a pool of 4,
    /// three plugins that each want 2 spares get 3 in all.
    #[tokio::test(flavor = "current_thread")]
    async fn spares_of_many_plugins_leave_a_quarter_of_the_pool_free() {
        let sandbox = Sandbox::new(&PoolConfig { max_instances: 4, ..PoolConfig::default() }).unwrap();
        let limits = limits();
        let mut plugins = Vec::new();
        for name in ["a", "b", "c"] {
            let prepared = counter(&sandbox, "");
            let spares = Spares::new(&sandbox, prepared.clone(), limits.clone(), PluginGrants::default(), name, 2);
            assert_eq!(count(&sandbox, &prepared, &limits, Some(&spares)).await.unwrap(), "1");
            sandbox.book().teardowns().wait_idle().await;
            plugins.push(spares);
        }
        let ready: usize = plugins.iter().map(|spares| spares.ready()).sum();
        assert_eq!((ready, sandbox.book().spares()), (3, 3), "three quarters of a pool of 4");
    }

    /// A start function runs when the spare is made, under the plugin's limits: one that traps
    /// leaves the plugin without spares (its calls report the crash as on demand), and the fuel
    /// one burns is charged to the call that takes the spare.
    #[tokio::test(flavor = "current_thread")]
    async fn start_functions_run_under_the_plugins_limits_and_are_charged_to_the_call() {
        let sandbox = Sandbox::new(&PoolConfig { max_instances: 8, ..PoolConfig::default() }).unwrap();
        let limits = limits();
        let trapping = counter(&sandbox, "unreachable");
        let spares = Spares::new(&sandbox, trapping.clone(), limits.clone(), PluginGrants::default(), "trap", 2);
        assert_eq!(
            count(&sandbox, &trapping, &limits, Some(&spares)).await,
            Err(ErrorType::PluginCrashed.as_str().into())
        );
        sandbox.book().teardowns().wait_idle().await;
        assert_eq!(spares.ready(), 0, "a spare that cannot be made is not kept");
        assert_eq!(
            count(&sandbox, &trapping, &limits, Some(&spares)).await,
            Err(ErrorType::PluginCrashed.as_str().into())
        );

        // A start function that burns fuel in a loop: 100,000 iterations.
        let burn = "(local $n i32) (loop $l (local.set $n (i32.add (local.get $n) (i32.const 1))) \
                    (br_if $l (i32.lt_u (local.get $n) (i32.const 100000))))";
        let burning = counter(&sandbox, burn);
        let spares = Spares::new(&sandbox, burning.clone(), limits.clone(), PluginGrants::default(), "burn", 1);
        let mut used = Vec::new();
        for _ in 0..3 {
            let guest = crate::Guest { prepared: &burning, limits: &limits, spares: Some(&spares) };
            used.push(run_count(&sandbox, guest).await.fuel_used);
            sandbox.book().teardowns().wait_idle().await;
        }
        assert!(used[0] > 100_000, "on demand, the start function's fuel is the call's: {used:?}");
        assert_eq!(used[1], used[0], "from a spare, the same fuel is charged: {used:?}");
        assert_eq!(used[2], used[0], "{used:?}");
    }
}
