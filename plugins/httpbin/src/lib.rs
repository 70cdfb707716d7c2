//! Example Cordon plugin: reads JSON from an HTTP API whose base URL the operator configures.
//!
//! It shows the outbound side of Cordon: the plugin only builds URLs from its configuration and
//! its arguments. Whether a request may leave at all, and with which credentials, is the
//! operator's decision, enforced by the host: the plugin never sees or sets a credential.
//!
//! ```toml
//! [plugins.httpbin.config]
//! base_url = "https://httpbin.org"
//! ```

use cordon_sdk::http::Request;
use cordon_sdk::serde_json::{self, Value};
use cordon_sdk::{Context, Plugin, Tool, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FetchArgs {
    /// The path (and optional query) to fetch, appended to the configured base URL. Must start
    /// with `/`, e.g. `/json` or `/anything?x=1`.
    path: String,
}

#[derive(Serialize, JsonSchema)]
struct Fetched {
    /// The URL that was fetched.
    url: String,
    /// The HTTP status code of the response (below 400: higher statuses are errors).
    status: u16,
    /// The response's `content-type`, when it has one.
    content_type: Option<String>,
    /// The response body parsed as JSON; `null` when the body is not JSON (see `text`).
    body: Value,
    /// The response body as text when it is not JSON; `null` when `body` holds it.
    text: Option<String>,
}

fn base_url() -> Result<String, ToolError> {
    let not_configured = |why: &str| {
        ToolError::new(
            "not_configured",
            format!(
                "{why}: set `base_url` under `[plugins.httpbin.config]` in cordon.toml, e.g. \
                 base_url = \"https://httpbin.org\""
            ),
        )
    };
    let base = cordon_sdk::config("base_url")
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| not_configured("no base URL is configured"))?;
    let base = base.trim();
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(not_configured(
            "the configured base URL does not start with http:// or https://",
        ));
    }
    Ok(base.trim_end_matches('/').to_owned())
}

fn fetch_json(args: FetchArgs, _: &Context) -> Result<Fetched, ToolError> {
    if !args.path.starts_with('/') {
        return Err(ToolError::invalid_arguments(format!(
            "path must start with `/`, got {:?}",
            args.path
        )));
    }
    let url = format!("{}{}", base_url()?, args.path);

    // No credentials here: the host attaches them to granted requests.
    let response = Request::get(url)
        .header("accept", "application/json")
        .send()?
        .error_for_status()?;

    let content_type = response.header("content-type").map(str::to_owned);
    let (body, text) = match serde_json::from_slice::<Value>(&response.body) {
        Ok(json) => (json, None),
        Err(_) => (Value::Null, Some(response.text())),
    };
    Ok(Fetched {
        url: response.url,
        status: response.status,
        content_type,
        body,
        text,
    })
}

struct Httpbin;

impl Plugin for Httpbin {
    fn tools() -> Vec<Tool> {
        vec![Tool::new(
            "fetch_json",
            "GETs `<base_url><path>` from the HTTP API the operator configured for this plugin \
             (for example https://httpbin.org) and returns the status with the body parsed as \
             JSON, or as text when it is not JSON. Fails with `upstream_error` for a 4xx or 5xx \
             status (retryable for 5xx), `egress_denied` when the operator has not granted the \
             host, and `not_configured` when no base URL is set.",
            fetch_json,
        )
        .title("Fetch JSON")
        .read_only()
        .open_world(true)]
    }
}

cordon_sdk::export_plugin!(Httpbin);

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Context {
        Context::new("tester", "call-1", None)
    }

    #[test]
    fn schemas_are_closed_and_described() {
        let tool = Httpbin::tools().remove(0);
        let input = tool.input_schema();
        assert_eq!(input["additionalProperties"], false);
        assert_eq!(input["required"], serde_json::json!(["path"]));
        let output = tool.output_schema().expect("structured output");
        for (name, prop) in output["properties"].as_object().expect("properties") {
            assert!(prop.get("description").is_some(), "{name} is undescribed");
        }
    }

    #[test]
    fn path_must_start_with_a_slash() {
        let e = fetch_json(
            FetchArgs {
                path: "json".into(),
            },
            &cx(),
        )
        .err()
        .expect("rejected");
        assert_eq!(e.kind, ToolError::INVALID_ARGUMENTS);
    }

    #[test]
    fn natively_there_is_no_base_url() {
        let e = fetch_json(
            FetchArgs {
                path: "/json".into(),
            },
            &cx(),
        )
        .err()
        .expect("not configured");
        assert_eq!(e.kind, "not_configured");
        assert!(e.message.contains("[plugins.httpbin.config]"), "{e}");
    }
}
