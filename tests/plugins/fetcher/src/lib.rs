//! Fixture: what a plugin offers besides tools reaches out too. Reading `fetch://page/{name}`
//! and rendering the prompt `fetch` (argument `name`) each GET `<base_url>/api/<name>` (the
//! `base_url` setting, `http://host:port`) and report the status; the tool `noop` does nothing.
//! The end-to-end tests check that those requests are granted, refused and audited exactly as
//! a tool's are.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "cordon:plugin/plugin-full",
});

use cordon::plugin::host;
use cordon::plugin::types::{
    Annotations, CallContext, CallError, Content, ResourceBody, ResourceContents, ToolDescriptor, ToolOutput,
};
use exports::cordon::plugin::prompts::{
    Guest as Prompts, PromptArgument, PromptDescriptor, PromptMessage, PromptResult, Role,
};
use exports::cordon::plugin::resources::{Guest as Resources, ResourceDescriptor, TemplateDescriptor};
use exports::cordon::plugin::tools::Guest as Tools;

const TEMPLATE: &str = "fetch://page/{name}";

fn failed(message: impl Into<String>) -> CallError {
    CallError { kind: "fetch_failed".into(), message: message.into(), retryable: false }
}

/// GET `<base_url>/api/<name>`: "status N", or why there was none.
fn fetch(name: &str) -> Result<String, CallError> {
    let base = host::config("base_url").ok_or_else(|| failed("no base_url setting"))?;
    let authority = base.strip_prefix("http://").ok_or_else(|| failed("base_url must be http://"))?;
    wire::get(authority, &format!("/api/{name}")).map(|status| format!("status {status}")).map_err(failed)
}

struct Fetcher;

impl Tools for Fetcher {
    fn describe() -> Vec<ToolDescriptor> {
        vec![ToolDescriptor {
            name: "noop".into(),
            title: None,
            description: "Does nothing: the plugin is here for its resource template and prompt.".into(),
            input_schema: r#"{"type": "object", "properties": {}, "additionalProperties": false}"#.into(),
            output_schema: None,
            annotations: Annotations { read_only: Some(true), destructive: None, idempotent: None, open_world: None },
        }]
    }

    fn call(_tool: String, _arguments: String, _cx: CallContext) -> Result<ToolOutput, CallError> {
        Ok(ToolOutput { text: Some("ok".into()), json: None })
    }
}

impl Resources for Fetcher {
    fn list_resources() -> Vec<ResourceDescriptor> {
        Vec::new()
    }

    fn list_templates() -> Vec<TemplateDescriptor> {
        vec![TemplateDescriptor {
            uri_template: TEMPLATE.into(),
            name: "page".into(),
            title: None,
            description: Some("The upstream's /api/<name>, fetched when read.".into()),
            mime_type: Some("text/plain".into()),
        }]
    }

    fn read(uri: String) -> Result<Vec<ResourceContents>, CallError> {
        let name = uri.strip_prefix("fetch://page/").ok_or_else(|| failed(format!("not a page: {uri}")))?;
        let text = fetch(name)?;
        Ok(vec![ResourceContents { uri, mime_type: Some("text/plain".into()), body: ResourceBody::Text(text) }])
    }
}

impl Prompts for Fetcher {
    fn list_prompts() -> Vec<PromptDescriptor> {
        vec![PromptDescriptor {
            name: "fetch".into(),
            title: None,
            description: Some("Fetches the upstream's /api/<name> and says how it went.".into()),
            arguments: vec![PromptArgument {
                name: "name".into(),
                description: Some("The page to fetch.".into()),
                required: true,
            }],
        }]
    }

    fn get(_name: String, arguments: Vec<(String, String)>) -> Result<PromptResult, CallError> {
        let page = arguments.iter().find(|(k, _)| k == "name").map(|(_, v)| v.as_str()).unwrap_or_default();
        let text = fetch(page)?;
        Ok(PromptResult {
            description: None,
            messages: vec![PromptMessage { role: Role::User, content: Content::Text(text) }],
        })
    }
}

export!(Fetcher);

#[cfg(target_arch = "wasm32")]
mod wire {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

    /// One GET; its status, or the error code.
    pub fn get(authority: &str, path: &str) -> Result<u16, String> {
        let request = OutgoingRequest::new(Fields::new());
        let set = request.set_method(&Method::Get).is_ok()
            && request.set_scheme(Some(&Scheme::Http)).is_ok()
            && request.set_authority(Some(authority)).is_ok()
            && request.set_path_with_query(Some(path)).is_ok();
        if !set {
            return Err("the request was refused as built".into());
        }
        let body = request.body().map_err(|()| "no body".to_string())?;
        let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
        OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
        loop {
            match future.get() {
                Some(Ok(Ok(response))) => return Ok(response.status()),
                Some(Ok(Err(e))) => return Err(format!("{e:?}")),
                Some(Err(())) => return Err("response already taken".into()),
                None => future.subscribe().block(),
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod wire {
    pub fn get(_authority: &str, _path: &str) -> Result<u16, String> {
        Err("only in wasm".into())
    }
}
