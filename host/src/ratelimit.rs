//! Rate limits: a token bucket per principal and per plugin.
//!
//! A [`Rate`] of `requests` per `per_seconds` refills continuously (one token every
//! `per_seconds / requests`) into a bucket of `burst` tokens (default `requests`); a call takes
//! one token or is refused. Over HTTP a refusal is a 429 with `RateLimit-Limit`,
//! `RateLimit-Remaining`, `RateLimit-Reset` and `Retry-After`, and answers within limits carry the
//! `RateLimit-*` headers too ([`Decision::headers`]); inside a tool result it is a retryable
//! `rate_limited` error saying how many seconds to wait ([`Decision::message`]).
//!
//! ```toml
//! [rate_limits]
//! per_principal = { requests = 60, per_seconds = 60 }              # each principal; none = unlimited
//! per_plugin = { requests = 600, per_seconds = 60, burst = 100 }   # each plugin, all callers together
//! principals.batch-runner = { requests = 6000, per_seconds = 60 }  # replaces per_principal for one
//! plugins.payments = { requests = 5, per_seconds = 1 }             # replaces per_plugin for one
//! ```
//!
//! Each bucket is one `Instant` (GCRA, the "virtual scheduling" form of a token bucket: the
//! time at which the bucket will be full again), so a check is one hash lookup under a mutex and
//! integer arithmetic. Memory is bounded: buckets that have refilled completely carry no
//! information (a missing key *is* a full bucket), so they are swept out once a minute; if the
//! map still reaches `max_keys`, the buckets closest to full are evicted down to three quarters of
//! it — the only lossy step, and it errs towards allowing.
//!
//! **Replicas.** Buckets live in each process's memory. With a shared PostgreSQL store several
//! replicas serve one cluster, so each allows its *share*: a limit of `requests` per window with
//! N live replicas (counted from their heartbeats, `store::postgres`) becomes, on each replica,
//! one token every N × `per_seconds / requests` and a bucket of `burst / N` (at least 1). With
//! a balancer that spreads calls evenly the cluster then allows about the configured rate; the
//! approximation is that a caller whose calls all land on one replica gets only that share, and
//! that the count follows replicas joining or dying within a lease (`deploy/replicas.md`). An
//! exact shared bucket would cost a database round trip on every call.

use anyhow::{bail, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A rate: `requests` per `per_seconds`, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Tokens added per window.
    pub requests: u32,
    /// The window, seconds.
    pub per_seconds: u64,
    /// Bucket size: calls allowed at once after a quiet period. Default `requests`.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// The longest window accepted: a year, far beyond any useful limit, and small enough that no
/// bucket arithmetic can overflow.
const MAX_WINDOW_S: u64 = 366 * 24 * 3600;

impl Rate {
    /// Checks the numbers make a usable bucket.
    pub fn validate(&self) -> Result<()> {
        if self.requests == 0 {
            bail!("requests must be at least 1");
        }
        if self.per_seconds == 0 || self.per_seconds > MAX_WINDOW_S {
            bail!("per_seconds must be between 1 and {MAX_WINDOW_S}");
        }
        if self.burst == Some(0) {
            bail!("burst must be at least 1");
        }
        Ok(())
    }

    /// The bucket size: `burst`, else `requests`.
    pub fn capacity(&self) -> u32 {
        self.burst.unwrap_or(self.requests)
    }

    /// Time to earn one token.
    fn interval(&self) -> Duration {
        Duration::from_secs(self.per_seconds) / self.requests.max(1)
    }
}

/// `[rate_limits]`: host-wide defaults and per-name overrides. Nothing set: no limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// The bucket of each principal, across all tools.
    pub per_principal: Option<Rate>,
    /// The bucket of each plugin, across all principals.
    pub per_plugin: Option<Rate>,
    /// Per-principal overrides of `per_principal`.
    pub principals: BTreeMap<String, Rate>,
    /// Per-plugin overrides of `per_plugin`.
    pub plugins: BTreeMap<String, Rate>,
}

impl RateLimitConfig {
    /// Checks every rate, naming the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let named = [("per_principal".to_string(), &self.per_principal), ("per_plugin".to_string(), &self.per_plugin)];
        let defaults = named.iter().filter_map(|(name, rate)| rate.as_ref().map(|r| (name.clone(), r)));
        let principals = self.principals.iter().map(|(n, r)| (format!("principals.{n}"), r));
        let plugins = self.plugins.iter().map(|(n, r)| (format!("plugins.{n}"), r));
        for (name, rate) in defaults.chain(principals).chain(plugins) {
            if let Err(e) = rate.validate() {
                bail!("[rate_limits] {name}: {e}");
            }
        }
        Ok(())
    }
}

/// The answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the call may go ahead (it took a token).
    pub allowed: bool,
    /// Bucket size.
    pub limit: u32,
    /// Whole tokens left after this call.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset_after: Duration,
    /// When refused: until one token is available.
    pub retry_after: Option<Duration>,
}

/// `RateLimit-Limit` (lowercase, as HTTP/2 sends it and `HeaderName::from_static` requires).
pub const RATELIMIT_LIMIT: &str = "ratelimit-limit";
/// `RateLimit-Remaining`.
pub const RATELIMIT_REMAINING: &str = "ratelimit-remaining";
/// `RateLimit-Reset`.
pub const RATELIMIT_RESET: &str = "ratelimit-reset";
/// `Retry-After`.
pub const RETRY_AFTER: &str = "retry-after";

/// Whole seconds, rounded up: waiting the advertised time must be enough.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Decision {
    /// The response headers: `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`
    /// (seconds, rounded up), and `Retry-After` when refused.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (RATELIMIT_LIMIT, self.limit.to_string()),
            (RATELIMIT_REMAINING, self.remaining.to_string()),
            (RATELIMIT_RESET, ceil_secs(self.reset_after).to_string()),
        ];
        if let Some(wait) = self.retry_after_secs() {
            headers.push((RETRY_AFTER, wait.to_string()));
        }
        headers
    }

    /// When refused: the seconds to wait, rounded up and at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| ceil_secs(d).max(1))
    }

    /// The message of the `rate_limited` tool error.
    pub fn message(&self, scope: Scope) -> String {
        let wait = self.retry_after_secs().unwrap_or(1);
        format!("too many calls for this {scope}; retry in {wait} s")
    }
}

/// Which limit applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The caller's bucket.
    Principal,
    /// The plugin's bucket.
    Plugin,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Principal => "principal",
            Scope::Plugin => "plugin",
        })
    }
}

/// Keys tracked by one limiter before the buckets closest to full are evicted.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// How often refilled buckets are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Token buckets of one rate, one per key.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    interval: Duration,
    /// How far ahead of now a bucket's full-time may be and still allow a call:
    /// `(capacity - 1) × interval`.
    tolerance: Duration,
    /// `capacity × interval`: an empty bucket's distance from full.
    depth: Duration,
    max_keys: usize,
    state: Mutex<State>,
    /// Live replicas sharing the limit (1 on one host; see the module docs).
    replicas: Arc<AtomicUsize>,
}

/// A bucket's numbers for one check, divided among `replicas`.
struct Shape {
    interval: Duration,
    tolerance: Duration,
    depth: Duration,
    capacity: u32,
}

#[derive(Debug, Default)]
struct State {
    /// Per key, when its bucket is full again (GCRA's "theoretical arrival time"). A key not
    /// here has a full bucket.
    full_at: HashMap<String, Instant>,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    /// A limiter for `rate`, tracking at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(rate: Rate) -> Result<RateLimiter> {
        Self::with_max_keys(rate, DEFAULT_MAX_KEYS)
    }

    /// A limiter for `rate` tracking at most `max_keys` keys (at least 1).
    pub fn with_max_keys(rate: Rate, max_keys: usize) -> Result<RateLimiter> {
        rate.validate()?;
        let interval = rate.interval();
        let capacity = rate.capacity();
        // Cannot overflow: interval ≤ a year and capacity ≤ u32::MAX.
        let depth = interval.saturating_mul(capacity);
        let tolerance = interval.saturating_mul(capacity - 1);
        Ok(RateLimiter {
            rate,
            interval,
            tolerance,
            depth,
            max_keys: max_keys.max(1),
            state: Mutex::default(),
            replicas: Arc::new(AtomicUsize::new(1)),
        })
    }

    /// This replica's share of the bucket (see the module docs).
    fn shape(&self) -> Shape {
        let replicas = u32::try_from(self.replicas.load(Ordering::Relaxed)).unwrap_or(u32::MAX).max(1);
        if replicas == 1 {
            return Shape {
                interval: self.interval,
                tolerance: self.tolerance,
                depth: self.depth,
                capacity: self.rate.capacity(),
            };
        }
        let interval = self.interval.saturating_mul(replicas);
        let capacity = (self.rate.capacity() / replicas).max(1);
        Shape {
            interval,
            tolerance: interval.saturating_mul(capacity - 1),
            depth: interval.saturating_mul(capacity),
            capacity,
        }
    }

    /// The rate.
    pub fn rate(&self) -> &Rate {
        &self.rate
    }

    /// Takes a token from `key`'s bucket if one is there.
    pub fn check(&self, key: &str) -> Decision {
        self.check_at(key, Instant::now())
    }

    /// [`check`](Self::check) at a given time (tests drive the clock).
    pub fn check_at(&self, key: &str, now: Instant) -> Decision {
        let shape = self.shape();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.sweep(&mut state, now);
        let full_at = state.full_at.get(key).copied().unwrap_or(now).max(now);
        let backlog = full_at - now;
        if backlog > shape.tolerance {
            return Decision {
                allowed: false,
                limit: shape.capacity,
                remaining: 0,
                reset_after: backlog,
                retry_after: Some(backlog - shape.tolerance),
            };
        }
        let backlog = backlog + shape.interval;
        let new_full_at = now.checked_add(backlog).unwrap_or(full_at);
        if let Some(slot) = state.full_at.get_mut(key) {
            *slot = new_full_at;
        } else {
            if state.full_at.len() >= self.max_keys {
                self.evict(&mut state, now);
            }
            state.full_at.insert(key.to_owned(), new_full_at);
        }
        let remaining = (shape.depth.saturating_sub(backlog).as_nanos() / shape.interval.as_nanos().max(1)) as u32;
        Decision { allowed: true, limit: shape.capacity, remaining, reset_after: backlog, retry_after: None }
    }

    /// Gives back the token an allowed check took (the call was refused by another limit).
    fn refund_at(&self, key: &str, now: Instant) {
        let interval = self.shape().interval;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(full_at) = state.full_at.get_mut(key) {
            *full_at = full_at.checked_sub(interval).unwrap_or(now).max(now);
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).full_at.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Once a minute: forget full buckets (lossless, a missing key is a full bucket).
    fn sweep(&self, state: &mut State, now: Instant) {
        if state.last_sweep.is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY) {
            return;
        }
        state.last_sweep = Some(now);
        state.full_at.retain(|_, full_at| *full_at > now);
    }

    /// At `max_keys`: forget full buckets, then, if still over, the ones closest to full until
    /// a quarter of the room is free, so the O(n) pass is paid once per `max_keys / 4` new keys.
    fn evict(&self, state: &mut State, now: Instant) {
        state.full_at.retain(|_, full_at| *full_at > now);
        let target = self.max_keys - self.max_keys / 4;
        let len = state.full_at.len();
        if len < target {
            return;
        }
        // Remove exactly `excess` (room for the key being added), ties at the cutoff included:
        // many keys created in the same instant must not all go at once.
        let excess = len + 1 - target;
        let mut times: Vec<Instant> = state.full_at.values().copied().collect();
        let (_, &mut cutoff, _) = times.select_nth_unstable(excess - 1);
        let below = times.iter().filter(|t| **t < cutoff).count();
        let mut at_cutoff = excess - below;
        state.full_at.retain(|_, full_at| {
            if *full_at < cutoff {
                false
            } else if *full_at == cutoff && at_cutoff > 0 {
                at_cutoff -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// Every configured limit: per principal and per plugin, with overrides.
#[derive(Debug, Default)]
pub struct RateLimits {
    per_principal: Option<RateLimiter>,
    per_plugin: Option<RateLimiter>,
    principals: HashMap<String, RateLimiter>,
    plugins: HashMap<String, RateLimiter>,
}

impl RateLimits {
    /// Builds the limiters; fails on a rate that [`RateLimitConfig::validate`] refuses.
    pub fn new(config: &RateLimitConfig) -> Result<RateLimits> {
        config.validate()?;
        let one = |rate: &Rate| RateLimiter::new(*rate);
        Ok(RateLimits {
            per_principal: config.per_principal.as_ref().map(one).transpose()?,
            per_plugin: config.per_plugin.as_ref().map(one).transpose()?,
            principals: config.principals.iter().map(|(n, r)| Ok((n.clone(), one(r)?))).collect::<Result<_>>()?,
            plugins: config.plugins.iter().map(|(n, r)| Ok((n.clone(), one(r)?))).collect::<Result<_>>()?,
        })
    }

    /// Divides every limit among `replicas` live replicas (a count kept current by the store's
    /// heartbeat; see the module docs).
    pub fn shared_by(mut self, replicas: Arc<AtomicUsize>) -> RateLimits {
        let limiters = self.per_principal.iter_mut().chain(self.per_plugin.iter_mut());
        for limiter in limiters.chain(self.principals.values_mut()).chain(self.plugins.values_mut()) {
            limiter.replicas = replicas.clone();
        }
        self
    }

    fn principal_limiter(&self, principal: &str) -> Option<&RateLimiter> {
        self.principals.get(principal).or(self.per_principal.as_ref())
    }

    fn plugin_limiter(&self, plugin: &str) -> Option<&RateLimiter> {
        self.plugins.get(plugin).or(self.per_plugin.as_ref())
    }

    /// Takes a token from the principal's bucket; `None` when no limit applies to it.
    pub fn principal(&self, principal: &str) -> Option<Decision> {
        self.principal_limiter(principal).map(|l| l.check(principal))
    }

    /// Takes a token from the plugin's bucket; `None` when no limit applies to it.
    pub fn plugin(&self, plugin: &str) -> Option<Decision> {
        self.plugin_limiter(plugin).map(|l| l.check(plugin))
    }

    /// Both buckets for one call: a token is taken from each or from neither. Returns the limit
    /// that decided — the refusing one, else the one with fewer tokens left — or `None` when
    /// neither applies.
    pub fn check(&self, principal: &str, plugin: &str) -> Option<(Scope, Decision)> {
        self.check_at(principal, plugin, Instant::now())
    }

    /// [`check`](Self::check) at a given time.
    pub fn check_at(&self, principal: &str, plugin: &str, now: Instant) -> Option<(Scope, Decision)> {
        let by_principal = self.principal_limiter(principal).map(|l| (l, l.check_at(principal, now)));
        if let Some((_, d)) = by_principal.filter(|(_, d)| !d.allowed) {
            return Some((Scope::Principal, d));
        }
        let by_plugin = self.plugin_limiter(plugin).map(|l| l.check_at(plugin, now));
        match (by_principal, by_plugin) {
            (Some((limiter, _)), Some(p)) if !p.allowed => {
                limiter.refund_at(principal, now);
                Some((Scope::Plugin, p))
            }
            (Some((_, a)), Some(p)) => {
                let tighter =
                    (p.remaining, std::cmp::Reverse(p.reset_after)) < (a.remaining, std::cmp::Reverse(a.reset_after));
                Some(if tighter { (Scope::Plugin, p) } else { (Scope::Principal, a) })
            }
            (Some((_, a)), None) => Some((Scope::Principal, a)),
            (None, Some(p)) => Some((Scope::Plugin, p)),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(requests: u32, per_seconds: u64, burst: Option<u32>) -> Rate {
        Rate { requests, per_seconds, burst }
    }

    #[test]
    fn a_burst_is_allowed_then_refused() {
        let limiter = RateLimiter::new(rate(3, 3, None)).unwrap();
        let t = Instant::now();
        let remaining: Vec<u32> = (0..3).map(|_| limiter.check_at("alice", t)).map(|d| d.remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check_at("alice", t);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(refused.reset_after, Duration::from_secs(3));
        // Refusals take nothing: the wait does not grow.
        assert_eq!(limiter.check_at("alice", t).retry_after, Some(Duration::from_secs(1)));
    }

    #[test]
    fn tokens_refill_continuously() {
        let limiter = RateLimiter::new(rate(10, 10, Some(2))).unwrap();
        let t = Instant::now();
        assert!(limiter.check_at("k", t).allowed);
        assert!(limiter.check_at("k", t).allowed);
        let refused = limiter.check_at("k", t + Duration::from_millis(400));
        assert_eq!(refused.retry_after, Some(Duration::from_millis(600)));
        let later = limiter.check_at("k", t + Duration::from_secs(1));
        assert!(later.allowed);
        assert_eq!(later.remaining, 0);
        // After a long quiet period the bucket holds `burst`, not more.
        let d = limiter.check_at("k", t + Duration::from_secs(3600));
        assert_eq!((d.allowed, d.remaining, d.limit), (true, 1, 2));
    }

    #[test]
    fn keys_have_independent_buckets() {
        let limiter = RateLimiter::new(rate(1, 60, None)).unwrap();
        let t = Instant::now();
        assert!(limiter.check_at("alice", t).allowed);
        assert!(!limiter.check_at("alice", t).allowed);
        assert!(limiter.check_at("bob", t).allowed);
    }

    #[test]
    fn headers_round_up_and_add_retry_after_when_refused() {
        let limiter = RateLimiter::new(rate(2, 3, None)).unwrap();
        let t = Instant::now();
        let ok = limiter.check_at("k", t);
        assert_eq!(
            ok.headers(),
            [
                ("ratelimit-limit", "2".to_string()),
                ("ratelimit-remaining", "1".into()),
                ("ratelimit-reset", "2".into())
            ]
        );
        limiter.check_at("k", t);
        let refused = limiter.check_at("k", t + Duration::from_millis(100));
        assert_eq!(
            refused.headers(),
            [
                ("ratelimit-limit", "2".to_string()),
                ("ratelimit-remaining", "0".into()),
                ("ratelimit-reset", "3".into()),
                ("retry-after", "2".into()),
            ]
        );
        assert_eq!(refused.message(Scope::Plugin), "too many calls for this plugin; retry in 2 s");
        for (name, _) in refused.headers() {
            http::HeaderName::from_static(name);
        }
    }

    #[test]
    fn full_buckets_are_swept_and_the_map_stays_bounded() {
        let limiter = RateLimiter::with_max_keys(rate(1, 10, None), 100).unwrap();
        let t = Instant::now();
        for i in 0..1000 {
            assert!(limiter.check_at(&format!("k{i}"), t).allowed);
            assert!(limiter.len() <= 100);
        }
        // Evicting makes room for a quarter, not more, even when every bucket ties.
        assert!(limiter.len() >= 75, "{}", limiter.len());
        // Every bucket refilled: the next sweep empties the map.
        limiter.check_at("late", t + Duration::from_secs(120));
        assert_eq!(limiter.len(), 1);
        // The most recent keys survive eviction, so they are still limited.
        let limiter = RateLimiter::with_max_keys(rate(1, 10, None), 100).unwrap();
        for i in 0..150u64 {
            limiter.check_at(&format!("k{i}"), t + Duration::from_millis(i));
        }
        assert!(!limiter.check_at("k149", t + Duration::from_millis(150)).allowed);
    }

    #[test]
    fn both_limits_take_a_token_or_neither() {
        let limits = RateLimits::new(&RateLimitConfig {
            per_principal: Some(rate(5, 60, None)),
            per_plugin: Some(rate(100, 60, None)),
            principals: BTreeMap::from([("batch".to_string(), rate(100, 60, None))]),
            plugins: BTreeMap::from([("pay".to_string(), rate(1, 60, None))]),
        })
        .unwrap();
        let t = Instant::now();
        let (scope, d) = limits.check_at("alice", "pay", t).unwrap();
        assert_eq!((scope, d.allowed, d.remaining), (Scope::Plugin, true, 0));
        let (scope, d) = limits.check_at("alice", "pay", t).unwrap();
        assert_eq!((scope, d.allowed), (Scope::Plugin, false));
        // The refused call gave alice's token back: 4 left, not 3.
        let (scope, d) = limits.check_at("alice", "notes", t).unwrap();
        assert_eq!((scope, d.allowed, d.remaining), (Scope::Principal, true, 3));
        assert_eq!(limits.principal_limiter("batch").unwrap().rate().requests, 100);
        assert!(RateLimits::default().check("alice", "pay").is_none());
    }

    #[test]
    fn config_parses_and_bad_rates_are_named() {
        let config: RateLimitConfig = toml::from_str(
            "per_principal = { requests = 60, per_seconds = 60 }\nplugins.pay = { requests = 5, per_seconds = 1, burst = 10 }",
        )
        .unwrap();
        assert_eq!(config.plugins["pay"].capacity(), 10);
        assert!(RateLimits::new(&config).is_ok());
        let bad: RateLimitConfig = toml::from_str("principals.bob = { requests = 0, per_seconds = 1 }").unwrap();
        let e = RateLimits::new(&bad).unwrap_err().to_string();
        assert!(e.contains("principals.bob") && e.contains("requests"), "{e}");
        assert!(toml::from_str::<RateLimitConfig>("per_principal = { requests = 1, per_second = 1 }").is_err());
    }

    /// With three live replicas each allows a third: one token every three intervals, a bucket
    /// of a third (at least one); back to the whole limit when the others are gone.
    #[test]
    fn replicas_divide_a_limit_among_them() {
        let replicas = Arc::new(AtomicUsize::new(3));
        let config = RateLimitConfig { per_principal: Some(rate(6, 6, None)), ..Default::default() };
        let limits = RateLimits::new(&config).unwrap().shared_by(replicas.clone());
        let t0 = Instant::now();
        let allowed = (0..6).filter(|_| limits.check_at("alice", "p", t0).unwrap().1.allowed).count();
        assert_eq!(allowed, 2, "a bucket of 6 / 3");
        let (_, refused) = limits.check_at("alice", "p", t0).unwrap();
        assert_eq!((refused.limit, refused.retry_after), (2, Some(Duration::from_secs(3))));
        assert!(limits.check_at("alice", "p", t0 + Duration::from_secs(3)).unwrap().1.allowed);
        replicas.store(1, Ordering::Relaxed);
        let (_, alone) = limits.check_at("bob", "p", t0).unwrap();
        assert_eq!((alone.allowed, alone.limit, alone.remaining), (true, 6, 5));
    }
}
