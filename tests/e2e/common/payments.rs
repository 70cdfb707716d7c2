//! A payments API for end-to-end tests: it honours `Idempotency-Key` the way Stripe does — the
//! first request with a key acts (mints a charge id) and stores its response, a repeat gets the
//! stored response and acts again never. It records every request and every effect, so "acted
//! once" is counted at the upstream, not inferred from what Cordon says.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The charge endpoint; everything else answers `{"method", "path"}` and acts on nothing.
pub const CHARGES: &str = "/v1/charges";
/// An account the API declines with 402 (a final, non-retryable failure).
pub const DECLINED: &str = "acct_declined";

/// One request as the API received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The `Idempotency-Key` header, if any.
    pub key: Option<String>,
    pub body: String,
}

/// One charge the API made: the side effect that must happen once.
#[derive(Debug, Clone)]
pub struct Effect {
    /// The `Idempotency-Key` of the request that made it.
    pub key: Option<String>,
    pub account: String,
    pub id: String,
}

#[derive(Default)]
pub struct Ledger {
    pub requests: Vec<Seen>,
    pub effects: Vec<Effect>,
    /// The stored response of each key: status and body.
    pub replies: HashMap<String, (StatusCode, Value)>,
    /// Answer 503, acting on nothing and storing nothing, to this many more charge requests.
    pub unavailable: usize,
    /// How long each response is held back after the API decided it (acted or not). Only widens
    /// race windows; nothing measures it.
    pub delay: Duration,
}

pub type Shared = Arc<Mutex<Ledger>>;

/// A payments API on `127.0.0.1:0`; see the module docs.
pub struct PaymentsApi {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub ledger: Shared,
    pub server: tokio::task::JoinHandle<()>,
}

impl Drop for PaymentsApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Decides a request atomically (record, replay or act, store), then holds the answer back for
/// the configured delay: an effect is made even when the caller dies before it hears the answer.
pub async fn payments(State(ledger): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        key: parts.headers.get("idempotency-key").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let (status, reply, delay) = {
        let mut ledger = ledger.lock().unwrap();
        ledger.requests.push(seen.clone());
        let (status, reply) = decide(&mut ledger, &seen);
        (status, reply, ledger.delay)
    };
    tokio::time::sleep(delay).await;
    (status, Json(reply)).into_response()
}

pub fn decide(ledger: &mut Ledger, seen: &Seen) -> (StatusCode, Value) {
    if (seen.method.as_str(), seen.path.as_str()) != ("POST", CHARGES) {
        return (StatusCode::OK, json!({"method": seen.method, "path": seen.path}));
    }
    if ledger.unavailable > 0 {
        ledger.unavailable -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "try again"}));
    }
    if let Some(stored) = seen.key.as_ref().and_then(|k| ledger.replies.get(k)) {
        return stored.clone();
    }
    let Some(account) =
        serde_json::from_str::<Value>(&seen.body).ok().and_then(|b| b["account"].as_str().map(String::from))
    else {
        // Not stored: a truncated body from a dying caller must not poison its key.
        return (StatusCode::BAD_REQUEST, json!({"error": "bad body"}));
    };
    let reply = if account == DECLINED {
        (StatusCode::PAYMENT_REQUIRED, json!({"error": "card_declined"}))
    } else {
        let id = format!("ch_{:04}", ledger.effects.len() + 1);
        ledger.effects.push(Effect { key: seen.key.clone(), account, id: id.clone() });
        (StatusCode::OK, json!({"id": id, "status": "succeeded"}))
    };
    if let Some(key) = &seen.key {
        ledger.replies.insert(key.clone(), reply.clone());
    }
    reply
}

impl PaymentsApi {
    pub async fn start() -> PaymentsApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the payments API");
        let base = format!("http://{}", listener.local_addr().expect("API address"));
        let ledger = Shared::default();
        let app = Router::new().fallback(payments).with_state(ledger.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("the API serves") });
        PaymentsApi { base, ledger, server }
    }

    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.ledger().requests.clone()
    }

    pub fn effects(&self) -> Vec<Effect> {
        self.ledger().effects.clone()
    }

    /// The requests that charged (or tried to charge) `account`.
    pub fn requests_for(&self, account: &str) -> Vec<Seen> {
        let needle = format!("\"account\":\"{account}\"");
        self.requests().into_iter().filter(|r| r.body.contains(&needle)).collect()
    }

    pub fn set_delay(&self, delay: Duration) {
        self.ledger().delay = delay;
    }

    pub fn fail_next(&self, requests: usize) {
        self.ledger().unavailable = requests;
    }
}
