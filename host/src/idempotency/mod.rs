//! Idempotency outside the guest: a retried side-effecting call never acts twice.
//!
//! **Keys**, first found wins: `params._meta["cordon/idempotency-key"]`; the HTTP
//! `Idempotency-Key` header; the tool argument whose schema property says
//! `"x-idempotency-key": true` (so a batch `custom_id` passed by the model works); the caller's
//! token's **idempotency scope** (`cordon token issue --idempotency-scope`, or an OAuth claim),
//! which keys the call by scope and canonical arguments (`<scope>/<arguments sha256>`) for
//! `ttl_hours`; else, for a tool that is not read-only, an implicit key — the hash of the
//! canonical arguments — that holds for `implicit_window_s`. Keys are namespaced by principal,
//! plugin and tool, and by the scope when the token carries one (so a key the call names itself
//! never meets the same key of another scope). Read-only tools are not keyed unless
//! `store_read_only` is set.
//!
//! **Semantics**: the claim (`in_progress`, with the arguments' fingerprint) is durable before
//! the guest runs; the outcome is durable before the reply is sent ([`store`]). A key seen again
//! returns the stored outcome without running the guest; with other arguments it is
//! `idempotency_key_reused`. A duplicate arriving while the first runs waits for it (single
//! flight in [`Idempotency::begin`]). A retryable failure is recorded and run again by the next
//! attempt. A claim left `in_progress` by a process that died is never treated as new: the next
//! attempt re-runs it as a *recovery*, and because the outbound `Idempotency-Key` of each request
//! derives from the call's key and the request's ordinal ([`cordon_sandbox::grants::http::upstream_key`]), upstreams that
//! honour keys see the same keys again and act once.
//!
//! **Cancellation** ([`Ticket::cancelled`]): a keyed call the client cancels is never left
//! `in_progress` and never recorded as a success. If it cannot have acted outside the sandbox —
//! no outbound request was let through, the plugin has no writable directory, and this was the
//! key's first attempt — its claim is released: the record is deleted, and the key is free, as
//! if the call had never been made. Otherwise the record becomes `retryable` holding the
//! `cancelled` outcome: the key stays bound to its arguments, and the next attempt runs again
//! with the same upstream keys, so an upstream that honours keys acts once. A duplicate waiting
//! for the cancelled run wakes up and runs the call itself.

use cordon_core::Principal;
use cordon_core::{ErrorType, ToolError, Violation};
use cordon_state::records::{self as store, Claim, Claimed, RecordStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// `[plugins.NAME.idempotency]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// How long a keyed outcome is kept and replayed, hours.
    pub ttl_hours: u64,
    /// How long an implicit key (same principal, tool and arguments) dedupes, seconds; 0 turns
    /// implicit keys off.
    pub implicit_window_s: u64,
    /// Key and store read-only tools too.
    pub store_read_only: bool,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self { ttl_hours: 24, implicit_window_s: 60, store_read_only: false }
    }
}

/// Where a call's key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `params._meta["cordon/idempotency-key"]`.
    Meta,
    /// The HTTP `Idempotency-Key` header.
    Header,
    /// `cordon call --idempotency-key`.
    Cli,
    /// The tool argument marked `x-idempotency-key`.
    Argument,
    /// The caller token's idempotency scope, with the arguments.
    Scope,
    /// Derived from the arguments.
    Implicit,
}

impl KeySource {
    /// The source [`KeySource::as_str`] names.
    pub fn parse(name: &str) -> Option<KeySource> {
        [Self::Meta, Self::Header, Self::Cli, Self::Argument, Self::Scope, Self::Implicit]
            .into_iter()
            .find(|source| source.as_str() == name)
    }

    /// The name stored and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Meta => "meta",
            Self::Header => "header",
            Self::Cli => "cli",
            Self::Argument => "argument",
            Self::Scope => "scope",
            Self::Implicit => "implicit",
        }
    }
}

/// A key the transport received with the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedKey {
    /// The key.
    pub key: String,
    /// Where it came from.
    pub source: KeySource,
}

/// The `_meta` field that carries a key.
pub const META_KEY: &str = "cordon/idempotency-key";
/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// What the idempotency layer needs to know about a tool.
pub struct ToolKeying<'a> {
    /// Plugin name.
    pub plugin: &'a str,
    /// Published tool name.
    pub tool: &'a str,
    /// Whether the tool declares itself read-only.
    pub read_only: bool,
    /// The argument that carries the key, if the schema marks one.
    pub key_argument: Option<&'a str>,
    /// The plugin's settings.
    pub config: &'a IdempotencyConfig,
}

/// A call that is keyed: what to claim, and the base of its upstream keys.
#[derive(Debug, Clone)]
pub struct KeyedCall {
    claim: Claim,
    /// Where the key came from.
    pub source: KeySource,
    /// Base for the outbound `Idempotency-Key` of each request (see [`cordon_sandbox::grants::http::upstream_key`]).
    pub upstream_base: String,
}

impl KeyedCall {
    /// The key.
    pub fn key(&self) -> &str {
        &self.claim.key
    }

    /// The namespace the key lives in (principal, plugin, tool and any scope).
    pub fn namespace(&self) -> &str {
        &self.claim.namespace
    }

    /// The [`fingerprint`] of the call's arguments.
    pub fn fingerprint(&self) -> &str {
        &self.claim.fingerprint
    }
}

/// The outcome of [`Idempotency::begin`].
pub enum Begin {
    /// Run the call, then [`Ticket::finish`] it.
    Run(Box<Ticket>),
    /// The stored outcome of an earlier run: return it without running anything.
    Replay(Result<cordon_core::ToolSuccess, ToolError>),
}

/// The idempotency layer: the store plus in-process single flight.
pub struct Idempotency {
    store: Arc<dyn RecordStore>,
    /// Random per process (the store's owner id): a claim `in_progress` under another owner
    /// belongs to another replica, or was cut off by a crash.
    boot_id: String,
    /// Keys being run in this process; followers wait for the leader's channel to close.
    inflight: Mutex<HashMap<(String, String), watch::Receiver<()>>>,
}

impl Idempotency {
    /// The layer over `store`.
    pub fn new(store: Arc<dyn RecordStore>) -> Arc<Idempotency> {
        Arc::new(Idempotency { boot_id: store.owner().to_string(), store, inflight: Mutex::new(HashMap::new()) })
    }

    /// The store, for maintenance.
    pub fn store(&self) -> &dyn RecordStore {
        &*self.store
    }

    /// The key of a call, if it has one (see the module docs for the order of sources). The
    /// arguments' [`fingerprint`] is computed only for a call that has one
    /// ([`KeyedCall::fingerprint`]): an unkeyed call leaves it to the audit writer.
    pub fn key_for(
        &self,
        provided: Option<&ProvidedKey>,
        tool: &ToolKeying<'_>,
        arguments: &Value,
        principal: &Principal,
        scope: Option<&str>,
    ) -> Result<Option<KeyedCall>, ToolError> {
        if tool.read_only && !tool.config.store_read_only {
            return Ok(None);
        }
        let argument_key = tool
            .key_argument
            .and_then(|name| arguments.get(name))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .map(|key| ProvidedKey { key, source: KeySource::Argument });
        let now = SystemTime::now();
        let named_lifetime = Duration::from_secs(tool.config.ttl_hours * 3600);
        let (key, source, lifetime) = match provided.cloned().or(argument_key) {
            Some(ProvidedKey { key, source }) => (Some(key), source, named_lifetime),
            None if scope.is_some() => (None, KeySource::Scope, named_lifetime),
            None if tool.config.implicit_window_s > 0 => {
                (None, KeySource::Implicit, Duration::from_secs(tool.config.implicit_window_s))
            }
            None => return Ok(None),
        };
        let fingerprint = fingerprint(arguments);
        // A scope's key is the scope with the fingerprint; an implicit key the fingerprint itself.
        let key = key.unwrap_or_else(|| match scope {
            Some(scope) => format!("{scope}/{fingerprint}"),
            None => fingerprint.clone(),
        });
        if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
            return Err(ToolError::new(
                ErrorType::InvalidArguments,
                format!("idempotency key must be 1 to {MAX_KEY_LEN} printable characters"),
            ));
        }
        let namespace = match scope {
            None => serde_json::json!([principal.0, tool.plugin, tool.tool]).to_string(),
            Some(scope) => serde_json::json!([principal.0, tool.plugin, tool.tool, scope]).to_string(),
        };
        let upstream_base = hex::encode(Sha256::digest(format!("{namespace}\n{key}").as_bytes()));
        Ok(Some(KeyedCall {
            claim: Claim {
                namespace,
                key,
                principal: principal.0.to_string(),
                plugin: tool.plugin.to_string(),
                tool: tool.tool.to_string(),
                source: source.as_str(),
                fingerprint,
                owner: self.boot_id.clone(),
                expires_ms: store::millis(now + lifetime),
            },
            source,
            upstream_base,
        }))
    }

    /// Claims a keyed call: run it, replay it, wait for the run in flight, or refuse reuse.
    /// `cancel` ends a wait for a duplicate in flight (`cancelled`); a claim, once asked of the
    /// store, is always seen through, so that no claim is made that nobody settles.
    pub async fn begin(
        self: &Arc<Self>,
        call: &KeyedCall,
        cancel: &CancellationToken,
    ) -> Result<(Begin, Claimed), ToolError> {
        // A finished key is answered from a read on this thread: no leader, no writer round trip.
        if let Some(claimed) =
            self.store.finished(&call.claim.namespace, &call.claim.key, &call.claim.fingerprint).await
        {
            match &claimed {
                Claimed::Done(stored) => return Ok((Begin::Replay(decode(stored)?), claimed)),
                Claimed::Mismatch => return Err(key_reused(&call.claim.key)),
                Claimed::Run { .. } | Claimed::Busy => {}
            }
        }
        let id = (call.claim.namespace.clone(), call.claim.key.clone());
        loop {
            let leader = {
                let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                match inflight.get(&id) {
                    Some(running) => Err(running.clone()),
                    None => {
                        let (tx, rx) = watch::channel(());
                        inflight.insert(id.clone(), rx);
                        Ok(Leader { idempotency: self.clone(), id: id.clone(), _done: tx })
                    }
                }
            };
            let leader = match leader {
                Ok(leader) => leader,
                Err(mut running) => {
                    // The leader's channel closes when it finishes; then look again.
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return Err(ToolError::cancelled()),
                        _ = running.changed() => continue,
                    }
                }
            };
            // Another replica running the key is waited for the way a local leader is: look
            // again until it finishes or its lease lapses (then this claim recovers it).
            let mut looks = 0;
            loop {
                let claimed = self.store.claim(call.claim.clone()).await.map_err(|e| {
                    tracing::error!(error = %format!("{e:#}"), "idempotency store unavailable");
                    ToolError::new(
                        ErrorType::StoreUnavailable,
                        "the idempotency store is unavailable; the call did not run",
                    )
                })?;
                let begin = match &claimed {
                    Claimed::Run { attempt, .. } => {
                        let ticket = Ticket { leader: Some(leader), call: call.clone(), attempt: *attempt };
                        Begin::Run(Box::new(ticket))
                    }
                    Claimed::Done(stored) => Begin::Replay(decode(stored)?),
                    Claimed::Mismatch => return Err(key_reused(&call.claim.key)),
                    Claimed::Busy => {
                        tokio::select! {
                            biased;
                            () = cancel.cancelled() => return Err(ToolError::cancelled()),
                            () = tokio::time::sleep(cordon_state::busy_backoff(looks)) => looks += 1,
                        }
                        continue;
                    }
                };
                return Ok((begin, claimed));
            }
        }
    }
}

fn key_reused(key: &str) -> ToolError {
    ToolError::new(
        ErrorType::IdempotencyKeyReused,
        format!("idempotency key {key:?} was already used with other arguments"),
    )
}

/// Holds the single-flight slot of a key; releasing it wakes the waiters.
struct Leader {
    idempotency: Arc<Idempotency>,
    id: (String, String),
    _done: watch::Sender<()>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Remove the entry before the sender closes, so woken waiters find the slot free.
        self.idempotency.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// The right (and duty) to run a claimed call and record its outcome.
pub struct Ticket {
    leader: Option<Leader>,
    call: KeyedCall,
    /// 1 for the key's first attempt.
    attempt: u32,
}

impl Ticket {
    /// Records the outcome durably; only then may the reply be sent.
    pub async fn finish(mut self, outcome: &Result<cordon_core::ToolSuccess, ToolError>) -> Result<(), ToolError> {
        let retryable = matches!(outcome, Err(e) if e.retryable);
        let encoded = encode(outcome);
        let Some(leader) = self.leader.take() else { return Ok(()) };
        let claim = &self.call.claim;
        let stored = leader.idempotency.store.finish(claim, self.attempt, retryable, encoded).await;
        drop(leader);
        stored.map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), key = %claim.key, "cannot record a call's outcome");
            ToolError::new(
                ErrorType::StoreUnavailable,
                "the call ran but its outcome could not be recorded; retry with the same key",
            )
        })
    }

    /// Settles a call the client cancelled (the rule is in the module docs): `acted` says whether
    /// the run may have had an effect outside the sandbox. Durable when it returns. Returns
    /// whether the key was released (forgotten) rather than kept retryable.
    pub async fn cancelled(mut self, acted: bool) -> Result<bool, ToolError> {
        let Some(leader) = self.leader.take() else { return Ok(false) };
        let claim = &self.call.claim;
        let release = !acted && self.attempt == 1;
        let store = &leader.idempotency.store;
        let settled = if release {
            store.release(claim, self.attempt).await
        } else {
            let outcome = encode(&Err(ToolError::cancelled()));
            store.finish(claim, self.attempt, true, outcome).await
        };
        // Waiters wake only once the record says what the next attempt must do.
        drop(leader);
        settled.map(|()| release).map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), key = %claim.key, "cannot settle a cancelled call's key");
            ToolError::new(ErrorType::StoreUnavailable, "the call was cancelled but its key could not be settled")
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Dropped unfinished (the client cancelled, or the task was aborted): the run may have
        // acted, so the next attempt must re-run it with the same upstream keys.
        if let Some(leader) = self.leader.take() {
            let claim = &self.call.claim;
            let outcome = encode(&Err(ToolError::new(ErrorType::Cancelled, "the call was interrupted")));
            leader.idempotency.store.abandon(claim, self.attempt, outcome);
        }
    }
}

/// SHA-256 (hex) of the canonical arguments: the idempotency fingerprint, also the audit log's
/// argument hash.
pub fn fingerprint(arguments: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(arguments).as_bytes()))
}

/// JSON with object keys sorted at every level: the same arguments always hash the same.
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// A stored outcome.
#[derive(Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Stored {
    Ok {
        text: Option<String>,
        structured: Option<Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attached: Vec<Value>,
    },
    Error {
        r#type: String,
        message: String,
        retryable: bool,
        violations: Vec<Violation>,
    },
}

/// An outcome as the stores keep it (idempotency records, task results).
pub(crate) fn encode(outcome: &Result<cordon_core::ToolSuccess, ToolError>) -> String {
    let stored = match outcome {
        Ok(s) => Stored::Ok { text: s.text.clone(), structured: s.structured.clone(), attached: s.attached.clone() },
        Err(e) => Stored::Error {
            r#type: e.kind.to_string(),
            message: e.message.clone(),
            retryable: e.retryable,
            violations: e.violations.clone(),
        },
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

/// An outcome [`encode`] stored.
pub(crate) fn decode(stored: &str) -> Result<Result<cordon_core::ToolSuccess, ToolError>, ToolError> {
    match serde_json::from_str::<Stored>(stored) {
        Ok(Stored::Ok { text, structured, attached }) => {
            Ok(Ok(cordon_core::ToolSuccess { text, structured, attached }))
        }
        Ok(Stored::Error { r#type, message, retryable, violations }) => {
            Ok(Err(ToolError { kind: r#type.into(), message, retryable, violations, client_needs: None }))
        }
        Err(e) => {
            tracing::error!(error = %e, "unreadable stored outcome");
            Err(ToolError::new(ErrorType::Internal, "the stored outcome of this key is unreadable"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": "s"}});
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,{"c":3,"d":2}]},"b":1}"#);
    }

    fn keyed(idempotency: &Idempotency, key: &str) -> KeyedCall {
        let config = IdempotencyConfig::default();
        let tool = ToolKeying { plugin: "p", tool: "p_t", read_only: false, key_argument: None, config: &config };
        let provided = ProvidedKey { key: key.into(), source: KeySource::Meta };
        let arguments = json!({"a": 1});
        idempotency.key_for(Some(&provided), &tool, &arguments, &Principal::new("alice"), None).unwrap().unwrap()
    }

    /// A token's scope keys a call that names no key by scope and arguments, for `ttl_hours`;
    /// a key the call names wins, inside the scope's own namespace; and no scope leaves keying
    /// as it was.
    #[test]
    fn an_idempotency_scope_keys_calls_that_name_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let idempotency =
            Idempotency::new(Arc::new(store::sqlite::SqliteStore::open(&dir.path().join("store.db")).unwrap()));
        let config = IdempotencyConfig { implicit_window_s: 0, ..IdempotencyConfig::default() };
        let tool = ToolKeying { plugin: "p", tool: "p_t", read_only: false, key_argument: None, config: &config };
        let alice = Principal::new("alice");
        let key = |provided: Option<&ProvidedKey>, arguments: Value, scope: Option<&str>| {
            idempotency.key_for(provided, &tool, &arguments, &alice, scope).unwrap()
        };
        // With implicit keys off, an unscoped call without a key is not keyed at all.
        assert!(key(None, json!({"a": 1}), None).is_none());
        let scoped = key(None, json!({"a": 1}), Some("item-7")).unwrap();
        assert_eq!(scoped.source, KeySource::Scope);
        assert_eq!(scoped.key(), format!("item-7/{}", fingerprint(&json!({"a": 1}))));
        assert!(scoped.claim.expires_ms > store::millis(SystemTime::now() + Duration::from_secs(23 * 3600)));
        // Same scope, same arguments (whatever their order): the same key and upstream keys.
        let again = key(None, json!({"a": 1}), Some("item-7")).unwrap();
        assert_eq!((again.key(), &again.upstream_base), (scoped.key(), &scoped.upstream_base));
        // Another scope or other arguments: another key.
        assert_ne!(key(None, json!({"a": 1}), Some("item-8")).unwrap().upstream_base, scoped.upstream_base);
        assert_ne!(key(None, json!({"a": 2}), Some("item-7")).unwrap().key(), scoped.key());
        // A named key wins, namespaced by the scope: the same key in two scopes is two keys.
        let named = ProvidedKey { key: "k1".into(), source: KeySource::Meta };
        let in_7 = key(Some(&named), json!({"a": 1}), Some("item-7")).unwrap();
        let in_8 = key(Some(&named), json!({"a": 1}), Some("item-8")).unwrap();
        let unscoped = key(Some(&named), json!({"a": 1}), None).unwrap();
        assert_eq!((in_7.key(), in_7.source), ("k1", KeySource::Meta));
        assert_ne!(in_7.claim.namespace, in_8.claim.namespace);
        assert_eq!(unscoped.claim.namespace, r#"["alice","p","p_t"]"#, "no scope: the namespace is unchanged");
        assert_ne!(in_7.upstream_base, unscoped.upstream_base);
    }

    async fn run(idempotency: &Arc<Idempotency>, call: &KeyedCall) -> (Box<Ticket>, Claimed) {
        match idempotency.begin(call, &CancellationToken::new()).await.unwrap() {
            (Begin::Run(ticket), claimed) => (ticket, claimed),
            (Begin::Replay(_), _) => panic!("expected to run"),
        }
    }

    /// A finished key is answered by a read on the calling thread; anything unfinished is not.
    #[tokio::test]
    async fn only_finished_keys_are_read_without_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let idempotency = Idempotency::new(Arc::new(
            cordon_state::records::sqlite::SqliteStore::open(&dir.path().join("store.db")).unwrap(),
        ));
        let call = keyed(&idempotency, "k9");
        let (namespace, key) = (&call.claim.namespace, &call.claim.key);
        assert_eq!(idempotency.store().finished(namespace, key, &call.claim.fingerprint).await, None, "absent");
        let (ticket, _) = run(&idempotency, &call).await;
        assert_eq!(idempotency.store().finished(namespace, key, &call.claim.fingerprint).await, None, "in progress");
        let outcome = Ok(cordon_core::ToolSuccess { text: Some("t".into()), structured: None, attached: vec![] });
        ticket.finish(&outcome).await.unwrap();
        let stored = idempotency.store().finished(namespace, key, &call.claim.fingerprint).await;
        assert!(matches!(stored, Some(Claimed::Done(_))), "{stored:?}");
        assert_eq!(idempotency.store().finished(namespace, key, "another fingerprint").await, Some(Claimed::Mismatch));
        // And begin() replays it.
        let (begin, claimed) = idempotency.begin(&call, &CancellationToken::new()).await.unwrap();
        assert!(matches!(begin, Begin::Replay(Ok(_))) && matches!(claimed, Claimed::Done(_)));
    }

    #[tokio::test]
    async fn a_cancelled_first_attempt_that_did_not_act_forgets_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let idempotency = Idempotency::new(Arc::new(
            cordon_state::records::sqlite::SqliteStore::open(&dir.path().join("store.db")).unwrap(),
        ));
        let call = keyed(&idempotency, "k1");
        let (ticket, _) = run(&idempotency, &call).await;
        assert!(ticket.cancelled(false).await.unwrap(), "released");
        assert!(idempotency.store().list(Some("k1"), 10).await.unwrap().is_empty());
        let (_, claimed) = run(&idempotency, &call).await;
        assert_eq!(claimed, Claimed::Run { attempt: 1, recovery: false }, "the key is as new");
    }

    #[tokio::test]
    async fn a_cancelled_call_that_may_have_acted_stays_bound_and_retryable() {
        let dir = tempfile::tempdir().unwrap();
        let idempotency = Idempotency::new(Arc::new(
            cordon_state::records::sqlite::SqliteStore::open(&dir.path().join("store.db")).unwrap(),
        ));
        let call = keyed(&idempotency, "k2");
        let (ticket, _) = run(&idempotency, &call).await;
        assert!(!ticket.cancelled(true).await.unwrap(), "kept");
        let records = idempotency.store().list(Some("k2"), 10).await.unwrap();
        assert_eq!(records[0].state, "retryable");
        assert_eq!(records[0].outcome.as_ref().unwrap()["type"], "cancelled");
        let (ticket, claimed) = run(&idempotency, &call).await;
        assert_eq!(claimed, Claimed::Run { attempt: 2, recovery: false }, "run again, not replayed");
        // A later attempt cancelled before acting keeps the record: the first one may have acted.
        assert!(!ticket.cancelled(false).await.unwrap());
        assert_eq!(idempotency.store().list(Some("k2"), 10).await.unwrap()[0].state, "retryable");
    }

    #[tokio::test]
    async fn a_duplicate_waiting_for_a_run_in_flight_can_be_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let idempotency = Idempotency::new(Arc::new(
            cordon_state::records::sqlite::SqliteStore::open(&dir.path().join("store.db")).unwrap(),
        ));
        let call = keyed(&idempotency, "k3");
        let (_leader, _) = run(&idempotency, &call).await;
        let cancel = CancellationToken::new();
        cancel.cancel();
        let waited = idempotency.begin(&call, &cancel).await.err().unwrap();
        assert!(waited.is(ErrorType::Cancelled), "{waited}");
    }

    #[test]
    fn outcomes_round_trip_exactly() {
        let ok = Ok(cordon_core::ToolSuccess {
            text: Some("t".into()),
            structured: Some(json!({"z": 1.5, "a": [1, 2]})),
            attached: vec![json!({"type": "image", "data": "AQID", "mimeType": "image/png"})],
        });
        let text = encode(&ok);
        assert_eq!(decode(&text).unwrap(), ok);
        let err: Result<cordon_core::ToolSuccess, ToolError> =
            Err(ToolError::from_guest("declined".into(), "no".into(), false));
        assert_eq!(decode(&encode(&err)).unwrap(), err);
    }
}
