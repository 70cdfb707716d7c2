//! The 2024-11-05 HTTP+SSE transport, for clients that predate Streamable HTTP (tutorials, older
//! SDKs' `sse_client`): `GET /sse` opens a stream whose first event names the endpoint to POST
//! to (`event: endpoint`, `/messages?sessionId=…`); each `POST /messages?sessionId=…` carries one
//! JSON-RPC message and is answered `202 Accepted`, its reply travelling on the stream
//! (`event: message`).
//!
//! It is another way *in*, not another server: behind the same front door as `/mcp` (drain check
//! and bearer gate), the same `Host`/`Origin` rules (`[server] allowed_hosts`,
//! `allowed_origins`), the same request-body cap and session cap, and every message goes to the
//! same [`McpService`] the other transports run, over rmcp's sink/stream transport. A POST is
//! authenticated on its own, as on `/mcp`; it must come from the principal that opened the
//! stream, or the session is "not found" to it.

use crate::mcp::McpService;
use crate::sessions::Sessions;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cordon_core::Principal;
use cordon_host::auth::Caller;
use cordon_host::Cordon;
use futures::StreamExt as _;
use rmcp::model::{ClientJsonRpcMessage, GetExtensions as _, ServerJsonRpcMessage};
use rmcp::ServiceExt as _;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Messages queued towards one session's service before a POST waits.
const INBOX: usize = 64;

/// The open streams, by session id.
pub struct LegacySse {
    cordon: Arc<Cordon>,
    clients: Arc<Sessions>,
    /// Cancelled when the server closes its sessions (after the drain).
    close: CancellationToken,
    sessions: Mutex<HashMap<String, Session>>,
}

struct Session {
    /// Towards the session's MCP service.
    inbox: futures::channel::mpsc::Sender<ClientJsonRpcMessage>,
    /// Who opened it: the only principal whose POSTs it takes.
    principal: Principal,
}

#[derive(Deserialize)]
struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: String,
}

impl LegacySse {
    /// The routes `/sse` and `/messages`, unauthenticated: the caller puts the front door in
    /// front of them, as of `/mcp`.
    pub fn router(cordon: Arc<Cordon>, clients: Arc<Sessions>, close: CancellationToken) -> Router {
        let state = Arc::new(LegacySse { cordon, clients, close, sessions: Mutex::new(HashMap::new()) });
        Router::new().route("/sse", get(open)).route("/messages", post(message)).with_state(state)
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Removes its session when the stream ends (the client went away, or the server closed it),
/// which drops the service's inbox and so ends the service.
struct Closing {
    state: Arc<LegacySse>,
    id: String,
    service: CancellationToken,
}

impl Drop for Closing {
    fn drop(&mut self) {
        self.state.sessions().remove(&self.id);
        self.service.cancel();
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], json!({ "error": message }).to_string()).into_response()
}

/// `GET /sse`: a new session, its service, and the stream that carries its replies.
async fn open(State(state): State<Arc<LegacySse>>, request: Request) -> Response {
    if let Some(refused) = host_or_origin_refusal(request.headers(), &state.cordon) {
        return refused;
    }
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "request is not authenticated");
    };
    let max_sessions = state.cordon.config().server.max_sessions;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (inbox, from_client) = futures::channel::mpsc::channel::<ClientJsonRpcMessage>(INBOX);
    let (to_client, outbox) = futures::channel::mpsc::channel::<ServerJsonRpcMessage>(INBOX);
    {
        let mut sessions = state.sessions();
        if sessions.len() >= max_sessions {
            tracing::warn!(max_sessions, "session limit reached; refusing a new SSE session");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                json!({ "error": "too many open sessions; retry shortly" }).to_string(),
            )
                .into_response();
        }
        sessions.insert(id.clone(), Session { inbox, principal: caller.principal.clone() });
    }
    let service_stop = state.close.child_token();
    let service = McpService::per_request(state.cordon.clone(), state.clients.clone());
    let stop = service_stop.clone();
    tokio::spawn(async move {
        match service.serve_with_ct((to_client, from_client), stop).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => tracing::debug!(error = %e, "an SSE session ended before initialize"),
        }
    });
    let closing = Closing { state: state.clone(), id: id.clone(), service: service_stop.clone() };
    let endpoint = futures::stream::once(async move {
        Ok::<_, Infallible>(Event::default().event("endpoint").data(format!("/messages?sessionId={id}")))
    });
    let messages = outbox.map(move |message| {
        // Held by the stream: dropping the stream (the client left) closes the session.
        let _closing = &closing;
        let data = serde_json::to_string(&message).unwrap_or_default();
        Ok::<_, Infallible>(Event::default().event("message").data(data))
    });
    let stream = endpoint.chain(messages).take_until(service_stop.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

/// `POST /messages?sessionId=…`: one JSON-RPC message into the session's service.
async fn message(State(state): State<Arc<LegacySse>>, Query(query): Query<SessionQuery>, request: Request) -> Response {
    if let Some(refused) = host_or_origin_refusal(request.headers(), &state.cordon) {
        return refused;
    }
    let (parts, body) = request.into_parts();
    let Some(caller) = parts.extensions.get::<Caller>().cloned() else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "request is not authenticated");
    };
    let mut inbox = {
        let sessions = state.sessions();
        match sessions.get(&query.session_id) {
            Some(session) if session.principal == caller.principal => session.inbox.clone(),
            // Another principal's session is as absent as one that never was.
            _ => return refuse(StatusCode::NOT_FOUND, "no such session"),
        }
    };
    // The gate in front has read the body already, within `max_request_bytes`, checked it is
    // JSON (-32700 otherwise) and held it against the token's tool scope; what is left to check
    // is that it is a JSON-RPC message.
    let limit = state.cordon.config().server.max_request_bytes;
    let Ok(bytes) = axum::body::to_bytes(Body::new(body), limit).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the request body is larger than [server] max_request_bytes");
    };
    let Ok(mut message) = serde_json::from_slice::<ClientJsonRpcMessage>(&bytes) else {
        return cordon_host::auth::jsonrpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: the body is JSON but not a JSON-RPC 2.0 request, notification or response",
        );
    };
    // What the tool path reads from an HTTP request (the caller the gate attached,
    // `Idempotency-Key`) travels with the message, as rmcp's own HTTP transport does it.
    match &mut message {
        ClientJsonRpcMessage::Request(request) => {
            request.request.extensions_mut().insert(parts);
        }
        ClientJsonRpcMessage::Notification(notification) => {
            notification.notification.extensions_mut().insert(parts);
        }
        _ => {}
    }
    match futures::SinkExt::send(&mut inbox, message).await {
        Ok(()) => (StatusCode::ACCEPTED, "Accepted").into_response(),
        Err(_) => refuse(StatusCode::NOT_FOUND, "no such session"),
    }
}

/// The refusal, if any, of the DNS-rebinding and cross-origin checks `/mcp` makes (rmcp's, under the same config):
/// the `Host` must be one of `[server] allowed_hosts` (any port unless one is named), and an
/// `Origin`, when sent, one of `allowed_origins` (`:*` for any port).
fn host_or_origin_refusal(headers: &HeaderMap, cordon: &Cordon) -> Option<Response> {
    let server = &cordon.config().server;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let Some((host, port)) = split_authority(host) else {
        return Some(refuse(StatusCode::BAD_REQUEST, "missing or malformed Host header"));
    };
    let host_allowed = server.allowed_hosts.is_empty()
        || server.allowed_hosts.iter().filter_map(|allowed| split_authority(allowed)).any(|(name, allowed_port)| {
            name == host && allowed_port.is_none_or(|allowed_port| Some(allowed_port) == port)
        });
    if !host_allowed {
        tracing::warn!(host, "rejected an SSE request with a disallowed Host header (possible DNS rebinding)");
        return Some(refuse(StatusCode::FORBIDDEN, "Host header is not allowed"));
    }
    let origin = headers.get(header::ORIGIN)?;
    let allowed = origin.to_str().ok().is_some_and(|origin| origin_allowed(origin, &server.allowed_origins));
    if !allowed {
        tracing::warn!(origin = ?origin, "rejected an SSE request with a disallowed Origin header");
        return Some(refuse(StatusCode::FORBIDDEN, "Origin header is not allowed"));
    }
    None
}

/// `host[:port]` (IPv6 in brackets) → (lowercase host without brackets, port).
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim();
    if authority.is_empty() {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else if authority.matches(':').count() > 1 {
        // A bare IPv6 address, as `allowed_hosts` may list it (`::1`).
        (authority, None)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => Some(port.parse().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Whether `origin` (`scheme://host[:port]`) matches one of `allowed` (`:*`: any port).
fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let Some((host, port)) = split_authority(authority) else { return false };
    allowed.iter().any(|pattern| {
        let Some((allowed_scheme, allowed_authority)) = pattern.split_once("://") else { return false };
        if !allowed_scheme.eq_ignore_ascii_case(scheme) {
            return false;
        }
        match allowed_authority.strip_suffix(":*") {
            Some(any_port) => split_authority(any_port).is_some_and(|(name, _)| name == host),
            None => split_authority(allowed_authority).is_some_and(|(name, allowed_port)| {
                name == host && allowed_port.or(default_port(scheme)) == port.or(default_port(scheme))
            }),
        }
    })
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins_follow_the_mcp_rules() {
        assert_eq!(split_authority("127.0.0.1:8787"), Some(("127.0.0.1".into(), Some(8787))));
        assert_eq!(split_authority("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(split_authority("::1"), Some(("::1".into(), None)));
        assert_eq!(split_authority("Localhost"), Some(("localhost".into(), None)));
        assert_eq!(split_authority("host:notaport"), None);
        let allowed = vec!["http://localhost:*".to_string(), "https://app.example.com".to_string()];
        assert!(origin_allowed("http://localhost:3000", &allowed));
        assert!(origin_allowed("https://app.example.com:443", &allowed));
        assert!(!origin_allowed("https://app.example.com:8443", &allowed));
        assert!(!origin_allowed("https://localhost:3000", &allowed));
        assert!(!origin_allowed("http://evil.example", &allowed));
        assert!(!origin_allowed("null", &allowed));
    }
}
