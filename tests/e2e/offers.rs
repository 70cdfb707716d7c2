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
    // The fixture's tools are read-only; storing their outcomes makes a keyed call replay.
    let env = everything(
        "[plugins.everything.limits]\nmax_output_bytes = 120\n\n[plugins.everything.idempotency]\nstore_read_only = true\n",
    );
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

/// A session client that declares roots: the guest's `roots/list` question goes to it as a
/// request, as `sample` and `elicit` do.
struct HasRoots;

// Roots are deprecated by SEP-2577 but still part of the revisions Cordon serves.
#[allow(deprecated)]
impl rmcp::ClientHandler for HasRoots {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        let mut info = rmcp::model::ClientConfig::default();
        info.capabilities.roots = Some(Default::default());
        info
    }

    async fn list_roots(
        &self,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::ListRootsResult, rmcp::ErrorData> {
        Ok(serde_json::from_value(json!({"roots": [{"uri": "file:///e2e/project", "name": "project"}]})).unwrap())
    }
}

#[tokio::test]
async fn a_session_client_is_asked_for_its_roots() {
    let (client, _log) = everything("").stdio_client_with(HasRoots).await;
    let out = call(&client, "test_input_required_result_list_roots", json!({})).await;
    assert_eq!(out.raw["content"][0]["text"], "Client roots: file:///e2e/project", "{}", out.raw);
    // It declared roots only: a batch that also asks for sampling has that question refused.
    call(&client, "test_input_required_result_multiple_inputs", json!({})).await.expect_error("unsupported", false);
    client.cancel().await.unwrap();
}

/// One request on the 2026-07-28 wire: no session, the client's metadata in `_meta` and the
/// headers. Returns the HTTP status and the JSON-RPC response (from JSON or from an SSE stream).
async fn post_2026(server: &HttpServer, method: &str, mut params: Value, capabilities: Value) -> (u16, Value) {
    let mut meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1.0.0"}
    });
    if let (Some(meta), Some(extra)) = (meta.as_object_mut(), params["_meta"].as_object()) {
        meta.extend(extra.clone());
    }
    params["_meta"] = meta;
    let mut request = reqwest::Client::new()
        .post(&server.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = params.get("name").and_then(Value::as_str) {
        request = request.header("mcp-name", name);
    }
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    let response = guard(method, request.json(&body).send()).await.expect("the request is sent");
    let status = response.status().as_u16();
    let text = guard(method, response.text()).await.expect("a body");
    // An SSE stream carries the response as one `data:` line among notifications.
    let reply = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|message| message.get("id") == Some(&json!(7)))
        .or_else(|| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| panic!("no JSON-RPC response to {method} in {text:?}"));
    (status, reply)
}

const ALL_ASKS: fn() -> Value = || json!({"sampling": {}, "elicitation": {}, "roots": {}});

#[tokio::test]
async fn a_stateless_client_answers_questions_on_its_next_try() {
    let env = everything("");
    let server = env.spawn_http(&[]).await;
    let call = |name: &str, extra: Value| {
        let mut params = json!({"name": name, "arguments": {}});
        if let (Some(params), Some(extra)) = (params.as_object_mut(), extra.as_object()) {
            params.extend(extra.clone());
        }
        params
    };

    // 1. The guest asks; the client cannot be sent a request, so the call ends asking it.
    let (status, first) =
        post_2026(&server, "tools/call", call("test_input_required_result_elicitation", json!({})), ALL_ASKS()).await;
    assert_eq!(status, 200, "{first}");
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    assert_eq!(result["inputRequests"]["user_name"]["method"], "elicitation/create", "{first}");
    assert_eq!(result["inputRequests"]["user_name"]["params"]["message"], "What is your name?");
    let state = result["requestState"].as_str().expect("a requestState").to_string();

    // 2. The next try carries the answer: the guest runs again and finishes with it.
    let answer = json!({"user_name": {"action": "accept", "content": {"name": "Alice"}}});
    let (_, done) = post_2026(
        &server,
        "tools/call",
        call("test_input_required_result_elicitation", json!({"inputResponses": answer, "requestState": state})),
        ALL_ASKS(),
    )
    .await;
    assert_eq!(done["result"]["content"][0]["text"], "Hello, Alice!", "{done}");
    assert_ne!(done["result"]["resultType"], "input_required");

    // A state that was changed, or given to another tool, is refused, never used.
    for (tool, sealed) in [
        ("test_input_required_result_elicitation", format!("{state}-TAMPERED")),
        ("test_input_required_result_request_state", state.clone()),
    ] {
        let (_, refused) = post_2026(
            &server,
            "tools/call",
            call(tool, json!({"inputResponses": answer, "requestState": sealed})),
            ALL_ASKS(),
        )
        .await;
        assert_eq!(refused["error"]["code"], -32602, "{tool}: {refused}");
    }

    // An answer of the wrong shape is asked again rather than handed to the guest.
    let (_, again) = post_2026(
        &server,
        "tools/call",
        call("test_input_required_result_elicitation", json!({"inputResponses": {"user_name": 12345}})),
        ALL_ASKS(),
    )
    .await;
    assert_eq!(again["result"]["resultType"], "input_required", "{again}");

    // Several rounds: the state carries the first answer into the third try.
    let (_, round1) =
        post_2026(&server, "tools/call", call("test_input_required_result_multi_round", json!({})), ALL_ASKS()).await;
    let state1 = round1["result"]["requestState"].clone();
    // With a state, only the questions it lists as asked take answers: one to step2 sent ahead
    // of its question is dropped, so step2 is still asked. (Without any state, a first try may
    // carry answers up front, as SEP-2322 allows: the conformance suite checks that.)
    let (_, ahead) = post_2026(
        &server,
        "tools/call",
        call(
            "test_input_required_result_multi_round",
            json!({"inputResponses": {
                "step1": {"action": "accept", "content": {"name": "Alice"}},
                "step2": {"action": "accept", "content": {"color": "forged"}}
            }, "requestState": state1}),
        ),
        ALL_ASKS(),
    )
    .await;
    assert!(ahead["result"]["inputRequests"]["step2"].is_object(), "{ahead}");
    let (_, round2) = post_2026(
        &server,
        "tools/call",
        call(
            "test_input_required_result_multi_round",
            json!({"inputResponses": {"step1": {"action": "accept", "content": {"name": "Alice"}}}, "requestState": state1}),
        ),
        ALL_ASKS(),
    )
    .await;
    assert!(round2["result"]["inputRequests"]["step2"].is_object(), "{round2}");
    let state2 = round2["result"]["requestState"].clone();
    assert_ne!(state1, state2);
    let (_, round3) = post_2026(
        &server,
        "tools/call",
        call(
            "test_input_required_result_multi_round",
            json!({"inputResponses": {"step2": {"action": "accept", "content": {"color": "blue"}}}, "requestState": state2}),
        ),
        ALL_ASKS(),
    )
    .await;
    assert_eq!(round3["result"]["content"][0]["text"], "name=Alice, color=blue", "{round3}");

    // Three questions at once, of three kinds.
    let (_, many) =
        post_2026(&server, "tools/call", call("test_input_required_result_multiple_inputs", json!({})), ALL_ASKS())
            .await;
    let methods: Vec<&str> = many["result"]["inputRequests"]
        .as_object()
        .expect("inputRequests")
        .values()
        .filter_map(|r| r["method"].as_str())
        .collect();
    assert_eq!(methods.len(), 3, "{many}");
    for method in ["elicitation/create", "sampling/createMessage", "roots/list"] {
        assert!(methods.contains(&method), "{method} in {many}");
    }

    // Only what the client declared is asked; the rest is refused to the guest as unsupported.
    let (_, sampling_only) = post_2026(
        &server,
        "tools/call",
        call("test_input_required_result_capabilities", json!({})),
        json!({"sampling": {}}),
    )
    .await;
    let asked: Vec<&String> =
        sampling_only["result"]["inputRequests"].as_object().expect("inputRequests").keys().collect();
    assert_eq!(asked, ["capital_question"], "{sampling_only}");

    // A guest that needs an undeclared capability fails the request with -32021 and HTTP 400.
    let (status, missing) =
        post_2026(&server, "tools/call", call("test_missing_capability", json!({})), json!({})).await;
    assert_eq!(status, 400, "{missing}");
    assert_eq!(missing["error"]["code"], -32021, "{missing}");
    assert_eq!(missing["error"]["data"]["requiredCapabilities"], json!({"sampling": {}}), "{missing}");

    // Prompts ask the same way.
    let (_, prompt) =
        post_2026(&server, "prompts/get", json!({"name": "test_input_required_result_prompt"}), ALL_ASKS()).await;
    assert_eq!(prompt["result"]["resultType"], "input_required", "{prompt}");
    let (_, rendered) = post_2026(
        &server,
        "prompts/get",
        json!({
            "name": "test_input_required_result_prompt",
            "inputResponses": {"user_context": {"action": "accept", "content": {"context": "tests"}}},
            "requestState": prompt["result"]["requestState"]
        }),
        ALL_ASKS(),
    )
    .await;
    let text = rendered["result"]["messages"][0]["content"]["text"].as_str().unwrap_or_default();
    assert!(text.ends_with("tests"), "{rendered}");

    // The audit line records the tries that stopped to ask as `input_required` (the writer
    // thread may still be on its way).
    let mut audit = String::new();
    for _ in 0..100 {
        audit = std::fs::read_to_string(env.audit_path()).unwrap_or_default();
        if audit.contains("\"input_required\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(audit.contains("\"error_type\":\"input_required\""), "{audit}");
}

/// A keyed call that stops to ask has no outcome yet: its key is not bound to the question, the
/// try with the answer runs and is stored, and a retry of that key replays it.
#[tokio::test]
async fn a_keyed_call_that_asks_stores_only_its_final_outcome() {
    let env = everything("[plugins.everything.idempotency]\nstore_read_only = true\n");
    let server = env.spawn_http(&[]).await;
    let tool = "test_input_required_result_elicitation";
    let keyed = |extra: Value| {
        let mut params = json!({"name": tool, "arguments": {}, "_meta": {"cordon/idempotency-key": "order-7"}});
        if let (Some(params), Some(extra)) = (params.as_object_mut(), extra.as_object()) {
            params.extend(extra.clone());
        }
        params
    };
    let (_, first) = post_2026(&server, "tools/call", keyed(json!({})), ALL_ASKS()).await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let answer = json!({"user_name": {"action": "accept", "content": {"name": "Bob"}}});
    let (_, second) = post_2026(
        &server,
        "tools/call",
        keyed(json!({"inputResponses": answer, "requestState": first["result"]["requestState"]})),
        ALL_ASKS(),
    )
    .await;
    assert_eq!(second["result"]["content"][0]["text"], "Hello, Bob!", "{second}");
    // The same key again, without answers: the stored outcome, not a new question.
    let (_, replay) = post_2026(&server, "tools/call", keyed(json!({})), ALL_ASKS()).await;
    assert_eq!(replay["result"]["content"][0]["text"], "Hello, Bob!", "{replay}");
    server.log.wait_for("idempotency=\"hit\"").await;
}

/// A resource read and a prompt render reach out under the plugin's grants like a tool call,
/// and their audit lines say so: the request that went out (method, host, status), and the one
/// the grants refused (before it connected: the upstream saw only the granted ones).
#[tokio::test]
async fn reads_and_renders_are_audited_with_their_outbound_requests() {
    let (base, seen) = counting_upstream().await;
    let env = fetcher_env(&base, "granted", "");
    let (client, _log) = env.stdio_client().await;

    let contents = read(&client, "fetch://page/granted").await.expect("the read succeeds");
    assert_eq!(contents["contents"][0]["text"], "status 200", "{contents}");
    let refused = read(&client, "fetch://page/secret").await;
    assert!(refused.is_err(), "an ungranted fetch fails the read: {refused:?}");
    let prompt = prompt(&client, "fetcher_fetch", json!({"name": "granted"})).await.expect("the render succeeds");
    assert_eq!(prompt["messages"][0]["content"]["text"], "status 200", "{prompt}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2, "only the granted requests reached the upstream");

    let records = env.audit_records(3).await;
    let line = |tool: &str| {
        records.iter().find(|r| r["tool"] == tool).unwrap_or_else(|| panic!("no audit line for {tool}: {records:#?}"))
    };
    let host = base.trim_start_matches("http://").split(':').next().unwrap().to_string();
    let granted = line("resources/read fetch://page/granted");
    assert_eq!(granted["outbound"], json!([{"method": "GET", "host": host, "status": 200}]), "{granted}");
    assert!(granted["fuel_used"].as_u64() > Some(0), "{granted}");
    let denied = line("resources/read fetch://page/secret");
    assert_eq!(denied["outbound"], json!([]), "{denied}");
    assert_eq!(denied["outcome"], "error", "the guest failed the read: {denied}");
    assert_eq!(granted["outcome"], "ok", "{granted}");
    assert_eq!(denied["refused"].as_array().map(Vec::len), Some(1), "{denied}");
    assert_eq!(line("prompts/get fetcher_fetch")["outbound"][0]["status"], 200);
}

/// A read waiting for its plugin's only slot ends when the client cancels it, long before the
/// queue timeout, and is audited `cancelled`; the read holding the slot is not disturbed.
#[tokio::test]
async fn cancelling_a_queued_read_ends_it_at_once() {
    use rmcp::model::{ClientRequest, ReadResourceRequest};
    use rmcp::service::PeerRequestOptions;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // An upstream whose `/api/slow` answers only when the test lets it.
    let arrived = std::sync::Arc::new(AtomicUsize::new(0));
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let app = {
        let (arrived, release) = (arrived.clone(), release.clone());
        axum::Router::new().fallback(move || {
            let (arrived, release) = (arrived.clone(), release.clone());
            async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                "ok"
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
    let base = format!("http://{}", listener.local_addr().expect("upstream address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("the upstream serves") });
    // One slot, and a queue timeout far longer than the test may take.
    let limits = "[plugins.fetcher.limits]\nmax_concurrency = 1\nqueue_timeout_ms = 600000\ntimeout_ms = 600000\n";
    let env = fetcher_env(&base, "slow", limits);
    let (client, _log) = env.stdio_client().await;
    let read = |uri: &str| {
        let params: ReadResourceRequestParams = serde_json::from_value(json!({"uri": uri})).unwrap();
        client.send_cancellable_request(
            ClientRequest::ReadResourceRequest(ReadResourceRequest::new(params)),
            PeerRequestOptions::no_options(),
        )
    };
    let holding = guard("the first read to be sent", read("fetch://page/slow")).await.expect("send a read");
    guard("the first read to reach its upstream", async {
        while arrived.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let queued = guard("the second read to be sent", read("fetch://page/queued")).await.expect("send a read");
    // Give the second read time to reach the slot's queue, then give up on it.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    queued.cancel(Some("the user gave up".into())).await.expect("send notifications/cancelled");
    let cancelled = guard("the queued read's audit line", async {
        loop {
            let records = env.audit_records(0).await;
            if let Some(record) = records.into_iter().find(|r| r["tool"] == "resources/read fetch://page/queued") {
                return record;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(cancelled["error_type"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["fuel_used"], 0, "the queued read never ran: {cancelled}");
    assert_eq!(arrived.load(Ordering::SeqCst), 1, "only the first read reached the upstream");

    release.notify_one();
    let answer = guard("the first read's answer", holding.await_response()).await.expect("the first read succeeds");
    assert!(format!("{answer:?}").contains("status 200"), "{answer:?}");
    let records = env.audit_records(2).await;
    let slow = records.iter().find(|r| r["tool"] == "resources/read fetch://page/slow").expect("the first read's line");
    assert_eq!(slow["outcome"], "ok", "{slow}");
}
