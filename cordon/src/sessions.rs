//! Who the MCP layer tells when the catalog changes: connected sessions (told with
//! `notifications/tools/list_changed` and `notifications/resources/updated` for the resources
//! they subscribed to) and the 2026-07-28 wire's `subscriptions/listen` streams (told what their
//! filter accepted, within the scope of the caller that opened them).
//!
//! [`Cordon`] publishes each new catalog once, on a watch channel; [`Sessions::follow`] starts
//! the task that compares each catalog with the one before and sends what changed. The host
//! itself never holds a client connection.

use cordon_host::app::Cordon;
use cordon_host::auth::ToolScope;
use cordon_host::registry::{self, Catalog};
use rmcp::model::{
    ResourceUpdatedNotification, ResourceUpdatedNotificationParam, ServerNotification, ToolListChangedNotification,
};
use rmcp::service::{Peer, SubscriptionSendError, SubscriptionSink};
use rmcp::RoleServer;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// The resource URIs one session subscribed to (`resources/subscribe`).
pub type Subscriptions = Arc<Mutex<BTreeSet<String>>>;

/// The sessions and listen streams of one transport.
#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<Vec<(Peer<RoleServer>, Subscriptions)>>,
    /// By a key of their own (request ids repeat across clients), with the scope of the caller
    /// that opened each; each is removed when its stream ends ([`Listening`]).
    listeners: Mutex<Listeners>,
}

/// Open listen streams by key, and the next key.
#[derive(Default)]
struct Listeners {
    open: BTreeMap<u64, (SubscriptionSink, ToolScope)>,
    next: u64,
}

/// An open listen stream's place in [`Sessions`]; dropping it (the stream ended, or its request
/// was dropped) removes the stream.
pub struct Listening {
    sessions: Arc<Sessions>,
    key: u64,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.sessions.listeners.lock().unwrap_or_else(|p| p.into_inner()).open.remove(&self.key);
    }
}

impl Sessions {
    /// Sessions that hear of every catalog `cordon` publishes from now on, for as long as
    /// `cordon` runs.
    pub fn follow(cordon: &Cordon) -> Arc<Sessions> {
        let sessions = Arc::new(Sessions::default());
        let mut changes = cordon.catalog_changes();
        let following = sessions.clone();
        tokio::spawn(async move {
            let mut seen = changes.borrow_and_update().clone();
            // Ends when the host is dropped. Two swaps in quick succession are seen as one: what
            // clients are told is the difference from the catalog they last heard of.
            while changes.changed().await.is_ok() {
                let current = changes.borrow_and_update().clone();
                following.catalog_changed(&seen, &current).await;
                seen = current;
            }
        });
        sessions
    }

    /// Remembers a connected session, to tell it when the tool list or a resource it subscribed
    /// to changes.
    pub fn add_session(&self, peer: Peer<RoleServer>, subscriptions: Subscriptions) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|(p, _)| !p.is_transport_closed());
        sessions.push((peer, subscriptions));
    }

    /// Remembers an open `subscriptions/listen` stream for as long as the returned guard lives.
    pub fn add_listener(self: &Arc<Self>, sink: SubscriptionSink, scope: ToolScope) -> Listening {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let key = listeners.next;
        listeners.next += 1;
        listeners.open.insert(key, (sink, scope));
        Listening { sessions: self.clone(), key }
    }

    /// How many listen streams are open.
    pub fn listeners(&self) -> usize {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).open.len()
    }

    /// Tells everyone what changed from `old` to `new`.
    async fn catalog_changed(&self, old: &Catalog, new: &Catalog) {
        if new.lists_differ(old) {
            self.notify_tools_changed().await;
        }
        self.notify_resources_updated(old, new).await;
    }

    /// Sends `notification` to every open listen stream that accepted it (`wanted`); forgets
    /// the streams that closed.
    async fn notify_listeners(
        &self,
        notification: ServerNotification,
        wanted: impl Fn(&SubscriptionSink, &ToolScope) -> bool,
    ) {
        let listeners: Vec<_> =
            self.listeners.lock().unwrap_or_else(|p| p.into_inner()).open.values().cloned().collect();
        for (sink, _) in listeners.iter().filter(|(sink, scope)| wanted(sink, scope)) {
            match sink.send(notification.clone()).await {
                // A closed stream is removed by its own `Listening` guard.
                Ok(()) | Err(SubscriptionSendError::SubscriptionClosed) => {}
                Err(e) => tracing::debug!(error = %e, "cannot notify a listen stream"),
            }
        }
    }

    fn live_sessions(&self) -> Vec<(Peer<RoleServer>, Subscriptions)> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|(p, _)| !p.is_transport_closed());
        sessions.clone()
    }

    /// Tells each session about the subscribed resources whose plugin was replaced or removed.
    async fn notify_resources_updated(&self, old: &Catalog, new: &Catalog) {
        for (peer, subscriptions) in self.live_sessions() {
            let uris: Vec<String> = subscriptions.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
            for uri in uris {
                if !served_by_another_plugin(old, new, &uri) {
                    continue;
                }
                if let Err(e) = peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri)).await {
                    tracing::debug!(error = %e, "cannot send resources/updated");
                }
            }
        }
        // Listen streams name their URIs in the filter they were accepted with.
        let watched: BTreeSet<String> = {
            let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            listeners
                .open
                .values()
                .flat_map(|(sink, _)| sink.accepted().resource_subscriptions.clone().unwrap_or_default())
                .collect()
        };
        for uri in watched {
            if !served_by_another_plugin(old, new, &uri) {
                continue;
            }
            let resolved = registry::offers::resolve(new, &uri).or_else(|| registry::offers::resolve(old, &uri));
            let scope_name = resolved.map(|(_, name)| name.to_string()).unwrap_or_default();
            let notification = ServerNotification::ResourceUpdatedNotification(ResourceUpdatedNotification::new(
                ResourceUpdatedNotificationParam::new(uri.clone()),
            ));
            self.notify_listeners(notification, |sink, scope| {
                scope.allows(&scope_name)
                    && sink.accepted().resource_subscriptions.as_ref().is_some_and(|uris| uris.contains(&uri))
            })
            .await;
        }
    }

    async fn notify_tools_changed(&self) {
        let sessions: Vec<Peer<RoleServer>> = self.live_sessions().into_iter().map(|(p, _)| p).collect();
        tracing::info!(sessions = sessions.len(), "tool list changed; notifying connected clients");
        for peer in sessions {
            // A session that went away meanwhile is not an error worth more than a debug line.
            if let Err(e) = peer.notify_tool_list_changed().await {
                tracing::debug!(error = %e, "cannot send tools/list_changed");
            }
        }
        let notification = ServerNotification::ToolListChangedNotification(ToolListChangedNotification::default());
        self.notify_listeners(notification, |sink, _| sink.accepted().tools_list_changed == Some(true)).await;
    }
}

/// Whether the plugin serving `uri` was replaced, added or removed between two catalogs.
fn served_by_another_plugin(old: &Catalog, new: &Catalog, uri: &str) -> bool {
    let before = registry::offers::resolve(old, uri).map(|(p, _)| p);
    let after = registry::offers::resolve(new, uri).map(|(p, _)| p);
    match (before, after) {
        (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
        (a, b) => a.is_some() || b.is_some(),
    }
}
