//! Serving HTTP connections with bounds a slow or stalled client cannot outwait.
//!
//! `axum::serve` runs hyper without a timer, so a client that trickles its request headers one
//! byte at a time (slow loris), or sends headers and then never its body, holds a connection and
//! a task forever, and enough of them exhaust file descriptors. This loop serves the same
//! router with three bounds, from `[server]`:
//! - **`read_timeout_s`** (default 30): a request's headers must arrive within it (hyper's
//!   header-read timer, which also closes a kept-alive connection that sends nothing more), and
//!   its body within as long again once the headers are in ([`DeadlineBody`]): a late body is a
//!   failed body read, so the request ends with an error status or a closed connection;
//! - **`max_connections`** (default 1024): open connections beyond it wait in the kernel's
//!   accept backlog until one closes, so a flood cannot take every descriptor;
//! - **`max_connections_per_peer`** (default half of `max_connections`): a connection from an
//!   address that already holds that many is closed at once, so one peer cannot take every slot
//!   and lock the others out. A client's pool keeps idle connections open (until the header-read
//!   timer closes them), and they count: the default leaves a busy client room for hundreds.
//!   Behind a reverse proxy every client shares its address: set it to `max_connections`;
//! - graceful shutdown: when `shutdown` resolves, the listener closes, every connection finishes
//!   the request it is serving and closes, and this returns once all have (the caller bounds
//!   that wait).
//!
//! Long responses are not bounded here: an SSE stream or a slow tool call is the server's own
//! doing, bounded by the tool's timeout and the drain.

use axum::body::Body;
use axum::extract::Request;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Turns Nagle's algorithm off on an accepted connection. A response goes out in several writes
/// (headers, then SSE events and the closing chunk); with Nagle on, each write after the first
/// waits for the client's ACK of the one before, which a client holds back for up to 40 ms
/// (delayed ACK): a 40 ms stall per call on MCP sessions (measured: `make soak`, BENCHMARKS.md).
pub fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
    }
}

/// How long clients may take, and how many may be connected at once.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionBounds {
    /// Time for a request's headers, and again for its body.
    pub read_timeout: Duration,
    /// Open connections at once.
    pub max_connections: usize,
    /// Open connections at once from one IP address.
    pub max_connections_per_peer: usize,
}

/// Open connections by peer address, each held by a [`PeerSlot`].
#[derive(Default)]
struct PeerCounts(Mutex<HashMap<IpAddr, usize>>);

/// One open connection of a peer; dropping it gives the slot back.
struct PeerSlot {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

impl PeerCounts {
    /// A slot for `ip`, unless it already holds `max`.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let held = counts.entry(ip).or_insert(0);
        if *held >= max {
            return None;
        }
        *held += 1;
        Some(PeerSlot { counts: self.clone(), ip })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = counts.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open connections to
/// finish their current request.
pub async fn serve<L>(mut listener: L, app: Router, bounds: ConnectionBounds, shutdown: impl Future<Output = ()>)
where
    L: Listener<Addr = SocketAddr>,
{
    let max = bounds.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let peers = Arc::new(PeerCounts::default());
    let per_peer = bounds.max_connections_per_peer.max(1);
    let closing = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(bounds.read_timeout);
    let read_timeout = bounds.read_timeout;
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap, connections wait in the backlog rather than being accepted.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => break,
            },
            () = &mut shutdown => break,
        };
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        // Unmapped, so one peer is one address whether it came over IPv4 or IPv6.
        let Some(peer_slot) = peers.take(peer.ip().to_canonical(), per_peer) else {
            tracing::debug!(%peer, max_connections_per_peer = per_peer, "a peer at its connection cap; closing");
            drop(io);
            continue;
        };
        let service = app.clone().map_request(move |request: Request<Incoming>| {
            request.map(|body| Body::new(DeadlineBody::new(body, read_timeout)))
        });
        let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let closing = closing.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(peer_slot);
            drop(slot);
        });
    }
    drop(listener);
    closing.cancel();
    // Every connection task holds a slot until it ends: all slots back means all are closed.
    let _all = slots.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)).await;
}

/// A request body that fails once `limit` has passed since the headers arrived, so a client
/// that stalls mid-body does not hold its connection and the handler forever.
///
/// The timer is armed only when the body is not all there yet: a small request usually arrives
/// with its headers, and then its body is read without a timer ever being registered (one less
/// allocation and timer-wheel entry per request on the common path).
struct DeadlineBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        Self { inner, deadline: tokio::time::Instant::now() + limit, timer: None }
    }
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the read timeout")]
struct BodyTimeout;

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
