//! Resources, prompts, rich content, sampling and elicitation, end to end, with the conformance
//! fixture plugin `tests/conformance/dist/everything.wasm` (`make conformance-plugins`) in the
//! real `cordon`. The official suite (`make conformance`) checks the answers a capable client
//! gets; these tests check what the suite does not: the refusals (a client that cannot be asked,
//! a token that may not see), the caps, and replay of attached content.

mod common;

use common::*;
use rmcp::model::{GetPromptRequestParams, ReadResourceRequestParams};
use rmcp::ServiceError;
use serde_json::{json, Value};

/// The fixture, published under the suite's own names.
fn everything(extra_config: &str) -> Env {
    let path = workspace().join("tests/conformance/dist/everything.wasm");
    assert!(path.exists(), "{} is missing: run `make conformance-plugins`", path.display());
    Env::new()
        .plugin(&path, "everything.wasm")
        .config(&format!("[plugins.everything]\nprefix = \"\"\n\n{extra_config}"))
}

/// The JSON-RPC error code of a failed request, or a panic naming what came back instead.
fn rpc_code<T: std::fmt::Debug>(outcome: Result<T, ServiceError>) -> (i32, Option<Value>) {
    match outcome {
        Err(ServiceError::McpError(e)) => (e.code.0, e.data),
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

async fn read(client: &Client, uri: &str) -> Result<Value, ServiceError> {
    let params: ReadResourceRequestParams = serde_json::from_value(json!({"uri": uri})).unwrap();
    let result = guard("resources/read", client.read_resource(params)).await?;
    Ok(serde_json::to_value(result).unwrap())
}

/// `completion/complete`: `reference` is the MCP `ref` object.
async fn complete(client: &Client, reference: Value, argument: Value, context: Value) -> Result<Value, ServiceError> {
    let mut request = json!({"ref": reference, "argument": argument});
    if !context.is_null() {
        request["context"] = json!({"arguments": context});
    }
    let params = serde_json::from_value(request).unwrap();
    let result = guard("completion/complete", client.complete(params)).await?;
    Ok(serde_json::to_value(result).unwrap()["completion"].clone())
}

async fn prompt(client: &Client, name: &str, arguments: Value) -> Result<Value, ServiceError> {
    let params: GetPromptRequestParams = serde_json::from_value(json!({"name": name, "arguments": arguments})).unwrap();
    let result = guard("prompts/get", client.get_prompt(params)).await?;
    Ok(serde_json::to_value(result).unwrap())
}

/// A raw `tools/call` result (content blocks of any type).
async fn call_raw(client: &Client, tool: &str, args: Value) -> Value {
    let params = serde_json::from_value(json!({"name": tool, "arguments": args})).unwrap();
    let result = guard(tool, client.call_tool(params)).await.unwrap_or_else(|e| panic!("{tool}: {e}"));
    serde_json::to_value(result).unwrap()
}

#[tokio::test]
async fn resources_and_prompts_are_listed_read_and_rendered() {
    let (client, _log) = everything("").stdio_client().await;

    let resources = guard("resources/list", client.list_all_resources()).await.unwrap();
    let mut uris: Vec<String> = resources.iter().map(|r| r.uri.clone()).collect();
    uris.sort();
    assert_eq!(uris, ["test://static-binary", "test://static-text", "test://watched-resource"]);
    let templates = guard("templates/list", client.list_all_resource_templates()).await.unwrap();
    assert_eq!(templates.len(), 1, "{templates:?}");
    assert_eq!(serde_json::to_value(&templates[0]).unwrap()["uriTemplate"], "test://template/{id}/data");

    // Text, binary (base64 of the guest's bytes), and a URI matching the template.
    let text = read(&client, "test://static-text").await.unwrap();
    assert_eq!(text["contents"][0]["text"], "This is the content of the static text resource.", "{text}");
    assert_eq!(text["contents"][0]["mimeType"], "text/plain");
    let binary = read(&client, "test://static-binary").await.unwrap();
    let blob = binary["contents"][0]["blob"].as_str().expect("blob");
    assert!(blob.starts_with("iVBORw0KGgo"), "a PNG, base64: {binary}");
    let templated = read(&client, "test://template/123/data").await.unwrap();
    let body: Value = serde_json::from_str(templated["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], "123");
    // Neither listed nor matching a template: -32602 naming the URI.
    let (code, data) = rpc_code(read(&client, "test://nowhere").await);
    assert_eq!(code, -32602);
    assert_eq!(data, Some(json!({"uri": "test://nowhere"})));
    let (code, _) = rpc_code(read(&client, "test://template/1/2/data").await);
    assert_eq!(code, -32602, "a template variable does not span a /");

    let prompts = guard("prompts/list", client.list_all_prompts()).await.unwrap();
    let with_args = prompts.iter().find(|p| p.name == "test_prompt_with_arguments").expect("listed");
    let with_args = serde_json::to_value(with_args).unwrap();
    assert_eq!(
        with_args["arguments"][0],
        json!({"name": "arg1", "description": "First test argument", "required": true})
    );
    let rendered = prompt(&client, "test_prompt_with_arguments", json!({"arg1": "a1", "arg2": "a2"})).await.unwrap();
    assert_eq!(rendered["messages"][0]["content"]["text"], "Prompt with arguments: arg1='a1', arg2='a2'");
    assert_eq!(rendered["messages"][0]["role"], "user");
    let image = prompt(&client, "test_prompt_with_image", json!({})).await.unwrap();
    assert_eq!(image["messages"][0]["content"]["type"], "image", "{image}");
    // A required argument missing never reaches the guest.
    let (code, _) = rpc_code(prompt(&client, "test_prompt_with_arguments", json!({"arg1": "only"})).await);
    assert_eq!(code, -32602);
    let (code, _) = rpc_code(prompt(&client, "no_such_prompt", json!({})).await);
    assert_eq!(code, -32602);

    // Attached content: the text first, then the blocks in the order attached.
    let mixed = call_raw(&client, "test_multiple_content_types", json!({})).await;
    let types: Vec<&str> = mixed["content"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["text", "image", "resource"], "{mixed}");
    assert_eq!(mixed["content"][2]["resource"]["uri"], "test://mixed-content-resource");
    let audio = call_raw(&client, "test_audio_content", json!({})).await;
    assert_eq!(audio["content"][0]["mimeType"], "audio/wav", "{audio}");
    client.cancel().await.unwrap();
}

/// A client that did not declare sampling or elicitation, and a stateless HTTP client (no way
/// back to it), get the typed `unsupported` error at once: never a hang.
#[tokio::test]
async fn a_client_that_cannot_be_asked_gets_a_typed_error() {
    let env = everything("");
    let (client, _log) = env.stdio_client().await;
    let out = call(&client, "test_sampling", json!({"prompt": "hi"})).await;
    let error = out.expect_error("unsupported", false);
    assert!(error["message"].as_str().unwrap().contains("sampling/createMessage"), "{error}");
    call(&client, "test_elicitation", json!({"message": "name?"})).await.expect_error("unsupported", false);
    client.cancel().await.unwrap();

    let server = env.spawn_http(&["--stateless"]).await;
    let response =
        post(&server.url, &call_request(1, "test_elicitation", json!({"message": "name?"})).to_string(), &[]).await;
    let body: Value = response.json().await.unwrap();
    Outcome::from_wire(&body["result"]).expect_error("unsupported", false);
}

/// A client that declares sampling but never answers: the guest's ask is given up at the tool's
/// timeout (`notify::ASK_TIMEOUT` is only the ceiling), the call fails as the retryable
/// `timeout`, and the session keeps serving.
struct NeverAnswers;

// Sampling is deprecated by SEP-2577 but still part of the revisions Cordon serves.
#[allow(deprecated)]
impl rmcp::ClientHandler for NeverAnswers {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        let mut info = rmcp::model::ClientConfig::default();
        info.capabilities.sampling = Some(Default::default());
        info
    }

    async fn create_message(
        &self,
        _params: rmcp::model::CreateMessageRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn an_ask_nobody_answers_ends_at_the_tools_timeout() {
    let env = everything("[plugins.everything.limits]\ntimeout_ms = 1000\n");
    let (client, log) = env.stdio_client_with(NeverAnswers).await;
    let out = call(&client, "test_sampling", json!({"prompt": "anyone?"})).await;
    out.expect_error("timeout", true);
    let simple = call(&client, "test_simple_text", json!({})).await;
    assert!(!simple.is_error, "still serving: {} {}", simple.raw, log.text());
    client.cancel().await.unwrap();
}

/// A token's scope covers resources and prompts by their published names.
#[tokio::test]
async fn scopes_cover_resources_and_prompts() {
    let config = format!(
        "[[auth.tokens]]\nprincipal = \"alice\"\nsha256 = \"{}\"\ntools = [\"test_simple_*\", \"static-text\"]\n",
        sha256_hex(b"alice-token-0123456789")
    );
    let server = everything(&config).spawn_http_with(&[], &[]).await;
    let alice = server.client_as("alice-token-0123456789").await;
    let resources = guard("resources/list", alice.list_all_resources()).await.unwrap();
    assert_eq!(resources.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(), ["test://static-text"]);
    assert!(guard("templates/list", alice.list_all_resource_templates()).await.unwrap().is_empty());
    let prompts = guard("prompts/list", alice.list_all_prompts()).await.unwrap();
    assert_eq!(prompts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["test_simple_prompt"]);
    read(&alice, "test://static-text").await.unwrap();
    // Out of scope reads as unknown.
    let (code, _) = rpc_code(read(&alice, "test://static-binary").await);
    assert_eq!(code, -32602);
    let (code, _) = rpc_code(prompt(&alice, "test_prompt_with_image", json!({})).await);
    assert_eq!(code, -32602);
}

/// Completions come from the plugin that serves the prompt or template, with the arguments
/// already chosen; what the plugin does not know, and what a token may not see, is -32602.
#[tokio::test]
async fn arguments_are_completed_by_the_plugin_within_the_callers_scope() {
    let config = format!(
        "[[auth.tokens]]\nprincipal = \"alice\"\nsha256 = \"{}\"\ntools = [\"test_simple_*\", \"static-text\"]\n\n\
         [[auth.tokens]]\nprincipal = \"bob\"\nsha256 = \"{}\"\ntools = [\"*\"]\n",
        sha256_hex(b"alice-token-0123456789"),
        sha256_hex(b"bob-token-0123456789ab")
    );
    let server = everything(&config).spawn_http_with(&[], &[]).await;
    let bob = server.client_as("bob-token-0123456789ab").await;
    let info = bob.peer_info().expect("initialized");
    assert!(info.capabilities.completions.is_some(), "completions declared: {:?}", info.capabilities);

    let prompt_ref = json!({"type": "ref/prompt", "name": "test_prompt_with_arguments"});
    let arg1 = complete(&bob, prompt_ref.clone(), json!({"name": "arg1", "value": "par"}), Value::Null).await.unwrap();
    assert_eq!(arg1, json!({"values": ["paris", "park", "party"], "total": 3, "hasMore": false}));
    // The arguments already chosen reach the plugin.
    let arg2 = complete(&bob, prompt_ref.clone(), json!({"name": "arg2", "value": ""}), json!({"arg1": "lyon"}))
        .await
        .unwrap();
    assert_eq!(arg2["values"], json!(["after-lyon"]), "{arg2}");
    let template_ref = json!({"type": "ref/resource", "uri": "test://template/{id}/data"});
    let ids = complete(&bob, template_ref.clone(), json!({"name": "id", "value": ""}), Value::Null).await.unwrap();
    assert_eq!(ids["values"], json!(["1", "2", "3"]), "{ids}");

    // Unknown to the host (no such prompt or template), or to the plugin (no such argument).
    let unknown_prompt = json!({"type": "ref/prompt", "name": "no_such_prompt"});
    let (code, _) = rpc_code(complete(&bob, unknown_prompt, json!({"name": "x", "value": ""}), Value::Null).await);
    assert_eq!(code, -32602);
    let unknown_template = json!({"type": "ref/resource", "uri": "test://nowhere/{id}"});
    let (code, _) = rpc_code(complete(&bob, unknown_template, json!({"name": "id", "value": ""}), Value::Null).await);
    assert_eq!(code, -32602);
    let (code, _) =
        rpc_code(complete(&bob, prompt_ref.clone(), json!({"name": "arg9", "value": ""}), Value::Null).await);
    assert_eq!(code, -32602, "the plugin's not_found is an unknown argument");

    // Out of scope reads as unknown, for prompts and templates alike.
    let alice = server.client_as("alice-token-0123456789").await;
    let (code, _) = rpc_code(complete(&alice, prompt_ref, json!({"name": "arg1", "value": ""}), Value::Null).await);
    assert_eq!(code, -32602);
    let (code, _) = rpc_code(complete(&alice, template_ref, json!({"name": "id", "value": ""}), Value::Null).await);
    assert_eq!(code, -32602);
}

/// Attached content counts against `max_output_bytes`, and a keyed call's attached content is
/// stored and replayed with the rest of its result.
#[tokio::test]
async fn attached_content_is_capped_and_replayed() {
    let env = everything("[plugins.everything.limits]\nmax_output_bytes = 120\n");
    let (client, log) = env.stdio_client().await;
    // An image (70 bytes of PNG + its type) fits; text + image + resource do not.
    let image = call_raw(&client, "test_image_content", json!({})).await;
    assert_eq!(image["content"][0]["type"], "image", "{image}");
    call(&client, "test_multiple_content_types", json!({})).await.expect_error("output_too_large", false);

    let meta = json!({"cordon/idempotency-key": "image-1"});
    let first = call_with_meta_raw(&client, "test_image_content", meta.clone()).await;
    let again = call_with_meta_raw(&client, "test_image_content", meta).await;
    assert_eq!(first["content"], again["content"]);
    assert_eq!(again["content"][0]["type"], "image", "{again}");
    // The second answer came from the store: the guest did not run again.
    log.wait_for("idempotency=\"hit\"").await;
    client.cancel().await.unwrap();
}

async fn call_with_meta_raw(client: &Client, tool: &str, meta: Value) -> Value {
    let params = serde_json::from_value(json!({"name": tool, "arguments": {}, "_meta": meta})).unwrap();
    let result = guard(tool, client.call_tool(params)).await.unwrap_or_else(|e| panic!("{tool}: {e}"));
    serde_json::to_value(result).unwrap()
}
