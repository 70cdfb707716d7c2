//! Reading resources and rendering prompts: the path for what a plugin offers besides tools.
//!
//! It is the tool call path without the parts that only make sense for tools:
//! 1. **authenticate** — the transport hands over the caller;
//! 2. **resolve** — the URI (a listed resource, else the first matching template) or the
//!    published prompt name, in one catalog snapshot;
//! 3. **authorize** — the caller's scope must allow the resource's or prompt's scope name
//!    (`<prefix>_<name>`, see [`crate::registry::offers`]); out of scope reads like unknown, so a
//!    token learns nothing about what it may not see;
//! 4. **validate** — a prompt's required arguments are present;
//! 5. **limits** — the plugin's rate limit and an instance slot, as for a tool call;
//! 6. **instance** — a fresh instance under the plugin's fuel, timeout and memory caps, with the
//!    plugin's grants for this caller (a resource may be fetched from an upstream);
//! 7. **result** — the plugin's `max_output_bytes` caps what it returns.
//!
//! Reads and renders are not keyed (they have no side effects to repeat) and are audited like
//! calls, with `resources/read <uri>` or `prompts/get <name>` as the tool.

use crate::app::Cordon;
use crate::audit::{self, AuditRecord};
use crate::auth::Caller;
use crate::error::{ErrorType, ToolError};
use crate::notify::CallLink;
use crate::ratelimit;
use crate::registry::{offers, LoadedPlugin};
use crate::sandbox::bindings::{CallError, Role};
use crate::sandbox::{CallGrants, GuestReply, Invocation};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why a read or a render has no result.
#[derive(Debug, Clone, PartialEq)]
pub enum OfferError {
    /// No plugin serves this URI or prompt name (or the caller may not see it).
    NotFound(String),
    /// A required prompt argument is missing.
    MissingArgument(String),
    /// The plugin, or the host running it, failed.
    Failed(ToolError),
}

impl Cordon {
    /// Reads a resource: its contents as MCP JSON (`{"uri", "mimeType"?, "text" | "blob"}`).
    pub async fn read_resource(&self, caller: &Caller, uri: &str, link: CallLink) -> Result<Vec<Value>, OfferError> {
        let catalog = self.catalog();
        let (plugin, scope_name) =
            offers::resolve(&catalog, uri).ok_or_else(|| OfferError::NotFound(uri.to_string()))?;
        if !caller.scope.allows(scope_name) {
            return Err(OfferError::NotFound(uri.to_string()));
        }
        let plugin = plugin.clone();
        drop(catalog);
        let what = format!("resources/read {uri}");
        let reply =
            self.run_offer(&plugin, caller, &what, Invocation::ReadResource { uri: uri.to_string() }, link).await;
        let contents = match reply {
            Ok(GuestReply::Resource(Ok(contents))) => contents,
            Ok(GuestReply::Resource(Err(e))) if e.kind == "not_found" => return Err(OfferError::NotFound(uri.into())),
            Ok(GuestReply::Resource(Err(e))) => return Err(OfferError::Failed(guest_error(e))),
            Ok(_) => return Err(OfferError::Failed(ToolError::new(ErrorType::Internal, "unexpected guest reply"))),
            Err(e) => return Err(OfferError::Failed(e)),
        };
        Ok(contents.iter().map(crate::content::resource_contents).collect())
    }

    /// Renders a prompt: the MCP `GetPromptResult` as JSON.
    pub async fn get_prompt(
        &self,
        caller: &Caller,
        name: &str,
        arguments: BTreeMap<String, String>,
        link: CallLink,
    ) -> Result<Value, OfferError> {
        let catalog = self.catalog();
        let found = catalog
            .plugins
            .iter()
            .find_map(|p| p.offers.prompts.iter().find(|e| e.name == name).map(|e| (p.clone(), e)))
            .filter(|_| caller.scope.allows(name));
        let Some((plugin, entry)) = found else {
            return Err(OfferError::NotFound(name.to_string()));
        };
        if let Some(missing) = entry.required.iter().find(|r| !arguments.contains_key(*r)) {
            return Err(OfferError::MissingArgument(format!("prompt {name} needs the argument {missing:?}")));
        }
        let local_name = entry.local_name.clone();
        drop(catalog);
        let what = format!("prompts/get {name}");
        let invocation = Invocation::GetPrompt { name: local_name, arguments: arguments.into_iter().collect() };
        let result = match self.run_offer(&plugin, caller, &what, invocation, link).await {
            Ok(GuestReply::Prompt(Ok(result))) => result,
            Ok(GuestReply::Prompt(Err(e))) => return Err(OfferError::Failed(guest_error(e))),
            Ok(_) => return Err(OfferError::Failed(ToolError::new(ErrorType::Internal, "unexpected guest reply"))),
            Err(e) => return Err(OfferError::Failed(e)),
        };
        let messages: Vec<Value> = result
            .messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                json!({"role": role, "content": crate::content::block(&m.content)})
            })
            .collect();
        let mut out = json!({"messages": messages});
        if let Some(description) = result.description {
            out["description"] = json!(description);
        }
        Ok(out)
    }

    /// Steps 5 to 7 for one read or render, with its audit line.
    async fn run_offer(
        &self,
        plugin: &Arc<LoadedPlugin>,
        caller: &Caller,
        what: &str,
        invocation: Invocation,
        link: CallLink,
    ) -> Result<GuestReply, ToolError> {
        let started = Instant::now();
        let _in_flight = self.in_flight.enter();
        let call_id = uuid::Uuid::new_v4().simple().to_string();
        let limits = &plugin.limits;
        let settings = self.settings();
        let outcome = async {
            if let Some(decision) = settings.rate_limits.plugin(&plugin.name).filter(|d| !d.allowed) {
                return Err(ToolError::new(ErrorType::RateLimited, decision.message(ratelimit::Scope::Plugin)));
            }
            let _slot = match tokio::time::timeout(limits.queue_timeout, plugin.slots.acquire()).await {
                Ok(Ok(permit)) => permit,
                _ => {
                    return Err(ToolError::new(
                        ErrorType::Busy,
                        format!(
                            "plugin {} is running its maximum of {} calls; retry shortly",
                            plugin.name, limits.max_concurrency
                        ),
                    ))
                }
            };
            let grants = CallGrants {
                grants: plugin.grants.clone(),
                credentials: settings.credentials.clone(),
                principal: caller.principal.clone(),
                egress: Arc::new(Mutex::new(Default::default())),
                upstream_key_base: None,
            };
            let label: Arc<str> = format!("{}/{call_id}", plugin.name).into();
            let run = self.sandbox.run(&plugin.prepared, limits, label, grants, link, invocation).await;
            let reply = run.reply?;
            let size = reply_size(&reply);
            if size > limits.max_output_bytes {
                return Err(ToolError::new(
                    ErrorType::OutputTooLarge,
                    format!("the result is {size} bytes; this plugin may return at most {}", limits.max_output_bytes),
                ));
            }
            Ok(reply)
        }
        .await;
        let error = outcome.as_ref().err();
        self.audit.record(&AuditRecord {
            time: audit::timestamp(std::time::SystemTime::now()),
            call_id,
            principal: caller.principal.0.to_string(),
            token_id: caller.token_id.as_deref().map(str::to_string),
            tool: what.to_string(),
            plugin: plugin.name.clone(),
            plugin_digest: plugin.digest.clone(),
            outcome: if error.is_none() { audit::Outcome::Ok } else { audit::Outcome::Error },
            error_type: error.map(|e| e.kind.to_string()),
            error_message: error.map(|e| e.message.clone()),
            retryable: error.map(|e| e.retryable),
            latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            ..Default::default()
        });
        outcome
    }
}

fn guest_error(e: CallError) -> ToolError {
    ToolError::from_guest(e.kind, e.message, e.retryable)
}

/// Bytes a read or render returns, for the output cap.
fn reply_size(reply: &GuestReply) -> usize {
    use crate::sandbox::bindings::{Content, ResourceBody, ResourceContents};
    let contents_size = |c: &ResourceContents| {
        c.uri.len()
            + match &c.body {
                ResourceBody::Text(t) => t.len(),
                ResourceBody::Blob(b) => b.len(),
            }
    };
    match reply {
        GuestReply::Resource(Ok(contents)) => contents.iter().map(contents_size).sum(),
        GuestReply::Prompt(Ok(result)) => result
            .messages
            .iter()
            .map(|m| match &m.content {
                Content::Resource(c) => contents_size(c),
                other => crate::sandbox::content_size(other),
            })
            .sum(),
        _ => 0,
    }
}
