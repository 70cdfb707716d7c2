//! Work in flight, counted so that a shutdown can wait for it (graceful drain) and `/metrics`
//! can report it.
//!
//! [`InFlight`] is a counter with a [`Notify`]: [`InFlight::enter`] returns a guard that counts
//! one unit of work until it is dropped, whatever way the work ends (success, error, the future
//! dropped by a cancellation). [`InFlight::wait_idle`] resolves when the count reaches zero. The
//! host keeps one for tool calls (`Cordon::call`); the HTTP transport keeps another for MCP
//! exchanges whose responses are still being written; the sandbox one for instances whose
//! teardown (after their call's reply) is not done yet.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// A count of work in flight that can be awaited down to zero.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    /// A fresh counter at zero, shareable between the work and whoever waits for it.
    pub fn new() -> Arc<InFlight> {
        Arc::new(InFlight::default())
    }

    /// Counts one unit of work until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// Work in flight now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Resolves once nothing is in flight (at once if nothing is). New work may start afterwards;
    /// callers that need "nothing more" stop admitting work first.
    pub async fn wait_idle(&self) {
        loop {
            // Register interest before reading the count, so a guard dropped in between still
            // wakes us (`notify_waiters` only reaches futures that already exist and are enabled).
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One unit of work in flight; dropping it ends the unit.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_at_once_when_nothing_runs() {
        let in_flight = InFlight::new();
        in_flight.wait_idle().await;
        assert_eq!(in_flight.count(), 0);
    }

    #[tokio::test]
    async fn wait_idle_resolves_when_the_last_guard_drops() {
        let in_flight = InFlight::new();
        let first = in_flight.enter();
        let second = in_flight.enter();
        assert_eq!(in_flight.count(), 2);
        let waiter = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.wait_idle().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one guard is still held");
        drop(second);
        // Only a hang guard: the waiter must finish once the count is zero.
        tokio::time::timeout(Duration::from_secs(60), waiter).await.unwrap().unwrap();
        assert_eq!(in_flight.count(), 0);
    }
}
