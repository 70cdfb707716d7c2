//! Reading resources, rendering prompts and completing their arguments: the path for what a
//! plugin offers besides tools.
//!
//! It is the tool call path without the parts that only make sense for tools:
//! 1. **authenticate** — the transport hands over the caller;
//! 2. **resolve** — the URI (a listed resource, else the first matching template), the
//!    published prompt name, or for a completion the prompt or the template as listed, in one
//!    catalog snapshot;
//! 3. **authorize** — the caller's scope must allow the resource's or prompt's scope name
//!    (`<prefix>_<name>`, see [`crate::registry::offers`]); out of scope reads like unknown, so a
//!    token learns nothing about what it may not see;
//! 4. **validate** — a prompt's required arguments are present;
//! 5. **limits** — the plugin's rate limit and an instance slot, as for a tool call;
//! 6. **instance** — a fresh instance under the plugin's fuel, timeout and memory caps, with the
//!    plugin's grants for this caller (a resource may be fetched from an upstream);
//! 7. **result** — the plugin's `max_output_bytes` caps what it returns.
//!
//! Reads, renders and completions are not keyed (they have no side effects to repeat) and are
//! audited like calls, with `resources/read <uri>`, `prompts/get <name>` or
//! `completion/complete <prompt or template>` as the tool, the fuel they used and the outbound
//! requests they sent or had refused. A plugin that does not export
//! `completions` answers every completion with no suggestions, without running.

use crate::app::Cordon;
use crate::auth::Caller;
use crate::call::audit_line;
use crate::registry::{offers, LoadedPlugin};
use cordon_core::{ErrorType, ToolError};
use cordon_sandbox::bindings::{CallError, CompletionTarget, Role};
use cordon_sandbox::link::CallLink;
use cordon_sandbox::{GuestReply, Invocation};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
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
        let invocation = Invocation::ReadResource { uri: uri.to_string() };
        let reply = self.run_offer(&plugin, caller, ("resources/read", uri), invocation, link).await;
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
        let invocation = Invocation::GetPrompt { name: local_name, arguments: arguments.into_iter().collect() };
        let result = match self.run_offer(&plugin, caller, ("prompts/get", name), invocation, link).await {
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

    /// Completes an argument of a prompt (by its published name) or of a resource template (by
    /// the template as listed): the MCP `completion` object as JSON.
    pub async fn complete(
        &self,
        caller: &Caller,
        target: CompletionRef,
        argument: String,
        value: String,
        context: BTreeMap<String, String>,
        link: CallLink,
    ) -> Result<Value, OfferError> {
        let catalog = self.catalog();
        let (plugin, local_target, what) = match &target {
            CompletionRef::Prompt(name) => catalog
                .plugins
                .iter()
                .find_map(|p| p.offers.prompts.iter().find(|e| &e.name == name).map(|e| (p.clone(), e)))
                .filter(|_| caller.scope.allows(name))
                .map(|(p, e)| (p, CompletionTarget::Prompt(e.local_name.clone()), format!("prompt {name}"))),
            CompletionRef::ResourceTemplate(template) => catalog
                .plugins
                .iter()
                .find_map(|p| {
                    p.offers.templates.iter().find(|t| &t.template.source == template).map(|t| (p.clone(), t))
                })
                .filter(|(_, t)| caller.scope.allows(&t.scope_name))
                .map(|(p, _)| {
                    (p, CompletionTarget::ResourceTemplate(template.clone()), format!("template {template}"))
                }),
        }
        .ok_or_else(|| OfferError::NotFound(target.name().to_string()))?;
        drop(catalog);
        if !plugin.prepared.completes() {
            return Ok(json!({"values": []}));
        }
        let invocation =
            Invocation::Complete { target: local_target, argument, value, context: context.into_iter().collect() };
        let completion = match self.run_offer(&plugin, caller, ("completion/complete", &what), invocation, link).await {
            Ok(GuestReply::Completion(Ok(completion))) => completion,
            Ok(GuestReply::Completion(Err(e))) if e.kind == "not_found" => {
                return Err(OfferError::NotFound(target.name().to_string()))
            }
            Ok(GuestReply::Completion(Err(e))) => return Err(OfferError::Failed(guest_error(e))),
            Ok(_) => return Err(OfferError::Failed(ToolError::new(ErrorType::Internal, "unexpected guest reply"))),
            Err(e) => return Err(OfferError::Failed(e)),
        };
        Ok(completion_json(completion))
    }

    /// Steps 5 to 7 for one read, render or completion, through the same [`Cordon::run_guest`]
    /// as a tool call, with its audit line. `(method, subject)`: what is run, on what (the URI,
    /// the prompt, the completion's target); the audit line names both, metrics the method only.
    async fn run_offer(
        &self,
        plugin: &Arc<LoadedPlugin>,
        caller: &Caller,
        (method, subject): (&'static str, &str),
        invocation: Invocation,
        link: CallLink,
    ) -> Result<GuestReply, ToolError> {
        let started = Instant::now();
        let _in_flight = self.in_flight.enter();
        let call_id = uuid::Uuid::new_v4().simple().to_string();
        let limits = &plugin.limits;
        // What the guest sent out (or was refused), for the audit line, however the run ends.
        let mut egress = None;
        let mut fuel_used = 0;
        let outcome = async {
            let ran = self.run_guest(plugin, &caller.principal, None, &call_id, link, invocation).await?;
            fuel_used = ran.run.fuel_used;
            egress = Some(ran.egress);
            let reply = ran.run.reply?;
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
        // A guest that answered with its own error failed the request as surely as a trap: the
        // audit line and the metrics say so.
        let guest_failure = outcome.as_ref().ok().and_then(guest_failure);
        let error = outcome.as_ref().err().or(guest_failure.as_ref());
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let what = format!("{method} {subject}");
        let mut record = audit_line(&call_id, caller, &what, Some(plugin), error, latency_us);
        record.fuel_used = fuel_used;
        let mut egress_denied = 0;
        if let Some(egress) = egress.as_ref().and_then(|e| e.lock().ok()) {
            egress_denied = egress.refused.len();
            record.egress(&egress);
        }
        self.metrics.record_offer(method, &plugin.name, error.map_or(Ok(()), Err), fuel_used, egress_denied);
        self.audit.record(record);
        outcome
    }
}

/// What a completion request refers to, as the client names it.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionRef {
    /// A prompt, by its published name.
    Prompt(String),
    /// A resource template, by its URI template.
    ResourceTemplate(String),
}

impl CompletionRef {
    fn name(&self) -> &str {
        match self {
            Self::Prompt(name) | Self::ResourceTemplate(name) => name,
        }
    }
}

/// MCP's `completion` object: at most [`MAX_COMPLETION_VALUES`] values; when the plugin gave
/// more, the rest are cut, `hasMore` is set and `total` says how many there were.
fn completion_json(completion: cordon_sandbox::bindings::Completion) -> Value {
    let given = completion.values.len();
    let mut values = completion.values;
    values.truncate(MAX_COMPLETION_VALUES);
    let cut = given > values.len();
    let mut out = json!({"values": values, "hasMore": completion.has_more || cut});
    match completion.total {
        Some(total) => out["total"] = json!(total.max(u32::try_from(given).unwrap_or(u32::MAX))),
        None if cut => out["total"] = json!(given),
        None => {}
    }
    out
}

/// MCP allows at most 100 completion values per response.
pub const MAX_COMPLETION_VALUES: usize = 100;

fn guest_error(e: CallError) -> ToolError {
    ToolError::from_guest(e.kind, e.message, e.retryable)
}

/// The guest's own error, when it answered a read, render or completion with one.
fn guest_failure(reply: &GuestReply) -> Option<ToolError> {
    let error = match reply {
        GuestReply::Resource(Err(e)) | GuestReply::Prompt(Err(e)) | GuestReply::Completion(Err(e)) => e,
        _ => return None,
    };
    Some(ToolError::from_guest(error.kind.clone(), error.message.clone(), error.retryable))
}

/// Bytes a read or render returns, for the output cap.
fn reply_size(reply: &GuestReply) -> usize {
    use cordon_sandbox::bindings::{Content, ResourceBody, ResourceContents};
    let contents_size = |c: &ResourceContents| {
        c.uri.len()
            + match &c.body {
                ResourceBody::Text(t) => t.len(),
                ResourceBody::Blob(b) => b.len(),
            }
    };
    match reply {
        GuestReply::Resource(Ok(contents)) => contents.iter().map(contents_size).sum(),
        GuestReply::Completion(Ok(completion)) => completion.values.iter().map(String::len).sum(),
        GuestReply::Prompt(Ok(result)) => result
            .messages
            .iter()
            .map(|m| match &m.content {
                Content::Resource(c) => contents_size(c),
                other => cordon_sandbox::content_size(other),
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_sandbox::bindings::Completion;

    #[test]
    fn completions_are_cut_at_the_mcp_limit_and_say_so() {
        let many = Completion { values: (0..150).map(|i| i.to_string()).collect(), total: None, has_more: false };
        let out = completion_json(many);
        assert_eq!(out["values"].as_array().map(Vec::len), Some(MAX_COMPLETION_VALUES));
        assert_eq!(out["hasMore"], json!(true));
        assert_eq!(out["total"], json!(150));

        let few = Completion { values: vec!["paris".into()], total: Some(3), has_more: true };
        assert_eq!(completion_json(few), json!({"values": ["paris"], "total": 3, "hasMore": true}));

        let exact = Completion { values: vec!["a".into(), "b".into()], total: None, has_more: false };
        assert_eq!(completion_json(exact), json!({"values": ["a", "b"], "hasMore": false}));
    }
}
