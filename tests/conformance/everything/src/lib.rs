//! The MCP conformance suite's fixtures as a Cordon plugin. Each tool, resource and prompt is
//! the one the suite's scenario description asks for (`@modelcontextprotocol/conformance`,
//! `conformance list --server`); the literal texts follow its reference server.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "cordon:plugin/plugin-tasks",
});

use base64::Engine as _;
use cordon::plugin::host::{self, InputRequest, LogLevel};
use cordon::plugin::types::{
    Annotations, CallContext, CallError, Content, Media, ResourceBody, ResourceContents, ToolDescriptor, ToolOutput,
};
use exports::cordon::plugin::completions::{Completion, CompletionTarget, Guest as Completions};
use exports::cordon::plugin::prompts::{
    Guest as Prompts, PromptArgument, PromptDescriptor, PromptMessage, PromptResult, Role,
};
use exports::cordon::plugin::resources::{Guest as Resources, ResourceDescriptor, TemplateDescriptor};
use exports::cordon::plugin::tasks::{Guest as Tasks, TaskSupport};
use exports::cordon::plugin::tools::Guest as Tools;
use serde_json::{json, Value};

/// A 1×1 PNG.
const IMAGE_PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A minimal WAV file.
const AUDIO_WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

fn decode(b64: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default()
}

fn image() -> Content {
    Content::Image(Media { data: decode(IMAGE_PNG), mime_type: "image/png".into() })
}

fn text_resource(uri: &str, mime_type: &str, text: &str) -> ResourceContents {
    ResourceContents { uri: uri.into(), mime_type: Some(mime_type.into()), body: ResourceBody::Text(text.into()) }
}

const NO_ARGUMENTS: &str = r#"{"type":"object","properties":{}}"#;

fn tool(name: &str, description: &str, input_schema: &str) -> ToolDescriptor {
    ToolDescriptor {
        name: name.into(),
        title: None,
        description: description.into(),
        input_schema: input_schema.into(),
        output_schema: None,
        // Read-only: none of them acts outside the call. Also what keeps Cordon's implicit
        // idempotency window (a side-effecting call repeated with the same arguments within
        // seconds is answered from the first) away from the suite, which calls the same tool
        // with the same arguments in several scenarios and expects it to run each time.
        annotations: Annotations {
            read_only: Some(true),
            destructive: None,
            idempotent: None,
            open_world: Some(false),
        },
    }
}

fn text(text: impl Into<String>) -> Result<ToolOutput, CallError> {
    Ok(ToolOutput { text: Some(text.into()), json: None })
}

fn nothing() -> Result<ToolOutput, CallError> {
    Ok(ToolOutput { text: None, json: None })
}

fn error(kind: &str, message: impl Into<String>) -> CallError {
    CallError { kind: kind.into(), message: message.into(), retryable: false }
}

fn string_argument(arguments: &Value, name: &str) -> Result<String, CallError> {
    arguments
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| error("invalid_arguments", format!("{name} must be a string")))
}

/// Asks the client to fill in a form and describes what came back.
fn elicit(message: &str, schema: Value, describe: &str) -> Result<ToolOutput, CallError> {
    let request = json!({"message": message, "requestedSchema": schema});
    let answer: Value = serde_json::from_str(&host::elicit(&request.to_string())?)
        .map_err(|e| error("client_error", format!("the client's answer is not JSON: {e}")))?;
    let action = answer.get("action").and_then(Value::as_str).unwrap_or("unknown");
    let content = answer.get("content").cloned().unwrap_or(Value::Null);
    text(format!("{describe}: action={action}, content={content}"))
}

/// Asks the client several questions at once (`host.ask`): `(key, method, params)` each; the
/// answers in the same order, as JSON.
fn ask(questions: &[(&str, &str, Value)]) -> Vec<Result<Value, CallError>> {
    let requests: Vec<InputRequest> = questions
        .iter()
        .map(|(key, method, params)| InputRequest {
            key: (*key).into(),
            method: (*method).into(),
            params: params.to_string(),
        })
        .collect();
    host::ask(&requests)
        .into_iter()
        .map(|answer| {
            answer.and_then(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| error("client_error", format!("the client's answer is not JSON: {e}")))
            })
        })
        .collect()
}

/// One question; its answer.
fn ask_one(key: &str, method: &str, params: Value) -> Result<Value, CallError> {
    ask(&[(key, method, params)]).pop().unwrap_or_else(|| Err(error("client_error", "no answer")))
}

/// An `elicitation/create` question for one string or boolean field.
fn form(message: &str, field: &str, kind: &str) -> Value {
    json!({
        "message": message,
        "requestedSchema": {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    })
}

fn sampling(text: &str, max_tokens: u32) -> Value {
    json!({"messages": [{"role": "user", "content": {"type": "text", "text": text}}], "maxTokens": max_tokens})
}

/// A field of an accepted form, as text.
fn field(answer: &Value, name: &str) -> String {
    match answer.pointer(&format!("/content/{name}")) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => format!("({} without {name})", answer.get("action").and_then(Value::as_str).unwrap_or("no answer")),
    }
}

/// The text of a sampling answer.
fn sampled(answer: &Value) -> String {
    answer.pointer("/content/text").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// The root URIs of a `roots/list` answer.
fn roots(answer: &Value) -> String {
    let uris: Vec<&str> = answer
        .get("roots")
        .and_then(Value::as_array)
        .map(|roots| roots.iter().filter_map(|r| r.get("uri").and_then(Value::as_str)).collect())
        .unwrap_or_default();
    uris.join(", ")
}

struct Everything;

impl Tools for Everything {
    fn describe() -> Vec<ToolDescriptor> {
        vec![
            tool("test_simple_text", "Tests simple text content response", NO_ARGUMENTS),
            tool("test_image_content", "Tests image content response", NO_ARGUMENTS),
            tool("test_audio_content", "Tests audio content response", NO_ARGUMENTS),
            tool("test_embedded_resource", "Tests embedded resource content response", NO_ARGUMENTS),
            tool(
                "test_multiple_content_types",
                "Tests response with multiple content types (text, image, resource)",
                NO_ARGUMENTS,
            ),
            tool("test_tool_with_logging", "Tests tool that emits log messages during execution", NO_ARGUMENTS),
            tool("test_error_handling", "Tests error response handling", NO_ARGUMENTS),
            tool("test_tool_with_progress", "Tests tool that reports progress notifications", NO_ARGUMENTS),
            tool(
                "test_sampling",
                "Tests server-initiated sampling (LLM completion request)",
                r#"{"type":"object","properties":{"prompt":{"type":"string","description":"The prompt to send to the LLM"}},"required":["prompt"]}"#,
            ),
            tool(
                "test_elicitation",
                "Tests server-initiated elicitation (user input request)",
                r#"{"type":"object","properties":{"message":{"type":"string","description":"The message to show the user"}},"required":["message"]}"#,
            ),
            tool(
                "test_elicitation_sep1034_defaults",
                "Tests elicitation with default values for all primitive types (SEP-1034)",
                NO_ARGUMENTS,
            ),
            tool(
                "test_elicitation_sep1330_enums",
                "Tests elicitation with enum schema improvements (SEP-1330)",
                NO_ARGUMENTS,
            ),
            tool(
                "test_reconnection",
                "Tests SSE stream disconnection and client reconnection (SEP-1699)",
                NO_ARGUMENTS,
            ),
            // Diagnostic tools of the 2026-07-28 revision's `server-stateless` scenario.
            tool(
                "test_logging_tool",
                "Emits log messages (none may reach a client that set no log level)",
                NO_ARGUMENTS,
            ),
            tool("test_streaming_elicitation", "Asks the user for input during the call", NO_ARGUMENTS),
            tool("test_missing_capability", "Needs sampling: fails when the client did not declare it", NO_ARGUMENTS),
            // The 2026-07-28 revision's multi round-trip scenarios (SEP-2322).
            tool("test_input_required_result_elicitation", "Asks the user's name", NO_ARGUMENTS),
            tool("test_input_required_result_sampling", "Asks the client's model a question", NO_ARGUMENTS),
            tool("test_input_required_result_list_roots", "Asks the client for its roots", NO_ARGUMENTS),
            tool("test_input_required_result_request_state", "Asks for a confirmation", NO_ARGUMENTS),
            tool("test_input_required_result_multiple_inputs", "Asks three questions at once", NO_ARGUMENTS),
            tool("test_input_required_result_multi_round", "Asks two questions, one after the other", NO_ARGUMENTS),
            tool("test_input_required_result_tampered_state", "Asks for a confirmation", NO_ARGUMENTS),
            tool("test_input_required_result_capabilities", "Asks what the client's capabilities allow", NO_ARGUMENTS),
            // SEP-2243: an argument mirrored in an `Mcp-Param-Region` header, which the
            // server checks against the body (`http-custom-header-server-validation`).
            tool(
                "test_custom_header_region",
                "Echoes a region that the client also sends as the Mcp-Param-Region header",
                r#"{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"},"query":{"type":"string"}},"required":["region"]}"#,
            ),
            // The tasks extension's fixtures (SEP-2663 scenarios `tasks-*`); their task support
            // is declared by `Tasks::supported` below.
            tool(
                "greet",
                "Greets by name, in the request",
                r#"{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}"#,
            ),
            tool(
                "slow_compute",
                "Sleeps for the given seconds, then answers",
                r#"{"type":"object","properties":{"seconds":{"type":"number","minimum":0,"maximum":120},"label":{"type":"string"}},"required":["seconds"]}"#,
            ),
            tool("failing_job", "Fails with a tool error after about a second", NO_ARGUMENTS),
            tool("protocol_error_job", "Crashes after about a second", NO_ARGUMENTS),
            tool(
                "confirm_delete",
                "Asks for a confirmation before deleting a file",
                r#"{"type":"object","properties":{"filename":{"type":"string"}},"required":["filename"]}"#,
            ),
            tool("multi_input", "Asks two questions at once", NO_ARGUMENTS),
            tool("test_tool_with_task", "Asks the user's name, then works on it as a task", NO_ARGUMENTS),
            tool(
                "json_schema_2020_12_tool",
                "Tool with JSON Schema 2020-12 features",
                &json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "$defs": {
                        "address": {
                            "$anchor": "addressDef",
                            "type": "object",
                            "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
                        }
                    },
                    "properties": {
                        "name": {"type": "string"},
                        "address": {"$ref": "#/$defs/address"},
                        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                        "phone": {"type": "string"},
                        "email": {"type": "string"}
                    },
                    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
                    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
                    "then": {"required": ["phone"]},
                    "else": {"required": ["email"]},
                    "additionalProperties": false
                })
                .to_string(),
            ),
        ]
    }

    fn call(tool: String, arguments: String, _context: CallContext) -> Result<ToolOutput, CallError> {
        let arguments: Value = serde_json::from_str(&arguments).unwrap_or_else(|_| json!({}));
        match tool.as_str() {
            "test_simple_text" => text("This is a simple text response for testing."),
            "test_custom_header_region" => text(format!("region={}", string_argument(&arguments, "region")?)),
            "test_image_content" => {
                host::attach(&image());
                nothing()
            }
            "test_audio_content" => {
                host::attach(&Content::Audio(Media { data: decode(AUDIO_WAV), mime_type: "audio/wav".into() }));
                nothing()
            }
            "test_embedded_resource" => {
                host::attach(&Content::Resource(text_resource(
                    "test://embedded-resource",
                    "text/plain",
                    "This is an embedded resource content.",
                )));
                nothing()
            }
            "test_multiple_content_types" => {
                host::attach(&image());
                host::attach(&Content::Resource(text_resource(
                    "test://mixed-content-resource",
                    "application/json",
                    r#"{"test":"data","value":123}"#,
                )));
                text("Multiple content types test:")
            }
            "test_tool_with_logging" => {
                host::log(LogLevel::Info, "Tool execution started");
                host::log(LogLevel::Info, "Tool processing data");
                host::log(LogLevel::Info, "Tool execution completed");
                text("Tool with logging executed successfully")
            }
            "test_error_handling" => Err(error("test_error", "This tool intentionally returns an error for testing")),
            "test_tool_with_progress" => {
                for (step, done) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                    host::progress(done, Some(100.0), Some(&format!("Completed step {} of 3", step + 1)));
                }
                text("Progress reported: 0, 50 and 100 of 100")
            }
            "test_sampling" => {
                let prompt = string_argument(&arguments, "prompt")?;
                let request = json!({
                    "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
                    "maxTokens": 100
                });
                let answer: Value = serde_json::from_str(&host::sample(&request.to_string())?)
                    .map_err(|e| error("client_error", format!("the client's answer is not JSON: {e}")))?;
                let reply = answer.pointer("/content/text").and_then(Value::as_str).unwrap_or("");
                text(format!("LLM response: {reply}"))
            }
            "test_elicitation" => {
                let message = string_argument(&arguments, "message")?;
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "username": {"type": "string", "description": "User's response"},
                        "email": {"type": "string", "description": "User's email address"}
                    },
                    "required": ["username", "email"]
                });
                elicit(&message, schema, "User response")
            }
            "test_elicitation_sep1034_defaults" => {
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "description": "User name", "default": "John Doe"},
                        "age": {"type": "integer", "description": "User age", "default": 30},
                        "score": {"type": "number", "description": "User score", "default": 95.5},
                        "status": {
                            "type": "string",
                            "description": "User status",
                            "enum": ["active", "inactive", "pending"],
                            "default": "active"
                        },
                        "verified": {"type": "boolean", "description": "Verification status", "default": true}
                    },
                    "required": []
                });
                elicit("Please review and update the form fields with defaults", schema, "Elicitation completed")
            }
            "test_elicitation_sep1330_enums" => {
                let titled = |prefix: &str, titles: [&str; 3]| {
                    (1..=3)
                        .zip(titles)
                        .map(|(i, t)| json!({"const": format!("{prefix}{i}"), "title": t}))
                        .collect::<Vec<_>>()
                };
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "untitledSingle": {
                            "type": "string",
                            "description": "Select one option",
                            "enum": ["option1", "option2", "option3"]
                        },
                        "titledSingle": {
                            "type": "string",
                            "description": "Select one option with titles",
                            "oneOf": titled("value", ["First Option", "Second Option", "Third Option"])
                        },
                        "legacyEnum": {
                            "type": "string",
                            "description": "Select one option (legacy)",
                            "enum": ["opt1", "opt2", "opt3"],
                            "enumNames": ["Option One", "Option Two", "Option Three"]
                        },
                        "untitledMulti": {
                            "type": "array",
                            "description": "Select multiple options",
                            "minItems": 1,
                            "maxItems": 3,
                            "items": {"type": "string", "enum": ["option1", "option2", "option3"]}
                        },
                        "titledMulti": {
                            "type": "array",
                            "description": "Select multiple options with titles",
                            "minItems": 1,
                            "maxItems": 3,
                            "items": {"anyOf": titled("value", ["First Choice", "Second Choice", "Third Choice"])}
                        }
                    },
                    "required": []
                });
                elicit("Please select options from the enum fields", schema, "Elicitation completed")
            }
            "test_reconnection" => text(
                "Reconnection test completed successfully. If you received this, the client properly reconnected \
                 after stream closure.",
            ),
            "json_schema_2020_12_tool" => text(format!("Received: {arguments}")),
            "test_logging_tool" => {
                host::log(LogLevel::Info, "test_logging_tool ran");
                text("Logged one line")
            }
            "test_streaming_elicitation" => {
                let schema = json!({"type": "object", "properties": {"answer": {"type": "string", "description": "Your answer"}}});
                elicit("Please answer", schema, "Elicitation completed")
            }
            "test_missing_capability" => {
                let answer = host::sample(&sampling("Say hello", 10).to_string())?;
                text(format!("Sampled: {answer}"))
            }
            "test_input_required_result_elicitation" => {
                let answer = ask_one("user_name", "elicitation/create", form("What is your name?", "name", "string"))?;
                text(format!("Hello, {}!", field(&answer, "name")))
            }
            "test_input_required_result_sampling" => {
                let answer = ask_one(
                    "capital_question",
                    "sampling/createMessage",
                    sampling("What is the capital of France?", 100),
                )?;
                text(format!("The model answered: {}", sampled(&answer)))
            }
            "test_input_required_result_list_roots" => {
                let answer = ask_one("client_roots", "roots/list", json!({}))?;
                text(format!("Client roots: {}", roots(&answer)))
            }
            "test_input_required_result_request_state" | "test_input_required_result_tampered_state" => {
                let answer = ask_one("confirm", "elicitation/create", form("Please confirm", "ok", "boolean"))?;
                text(format!("state-ok: confirmed={}", field(&answer, "ok")))
            }
            "test_input_required_result_multiple_inputs" => {
                let mut answers = ask(&[
                    ("user_name", "elicitation/create", form("What is your name?", "name", "string")),
                    ("greeting", "sampling/createMessage", sampling("Generate a greeting", 50)),
                    ("client_roots", "roots/list", json!({})),
                ])
                .into_iter();
                let mut next = || answers.next().unwrap_or_else(|| Err(error("client_error", "no answer")));
                let (name, greeting, client_roots) = (next()?, next()?, next()?);
                text(format!(
                    "name={}, greeting={}, roots={}",
                    field(&name, "name"),
                    sampled(&greeting),
                    roots(&client_roots)
                ))
            }
            "test_input_required_result_multi_round" => {
                let name =
                    ask_one("step1", "elicitation/create", form("Step 1: What is your name?", "name", "string"))?;
                let color = ask_one(
                    "step2",
                    "elicitation/create",
                    form("Step 2: What is your favorite color?", "color", "string"),
                )?;
                text(format!("name={}, color={}", field(&name, "name"), field(&color, "color")))
            }
            "test_input_required_result_capabilities" => {
                // Uses what the client can answer; a question it cannot is refused as unsupported.
                let answers = ask(&[
                    ("user_name", "elicitation/create", form("What is your name?", "name", "string")),
                    ("capital_question", "sampling/createMessage", sampling("What is the capital of France?", 100)),
                ]);
                let parts: Vec<String> = answers
                    .iter()
                    .zip(["elicitation", "sampling"])
                    .map(|(answer, what)| match answer {
                        Ok(answer) => format!("{what}: {answer}"),
                        Err(e) => format!("{what}: {}", e.kind),
                    })
                    .collect();
                text(parts.join("; "))
            }
            "greet" => text(format!("Hello, {}!", string_argument(&arguments, "name")?)),
            "slow_compute" => {
                let seconds = arguments.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
                sleep(seconds);
                let label = arguments.get("label").and_then(Value::as_str).unwrap_or("");
                text(format!("computed {label} in {seconds}s"))
            }
            "failing_job" => {
                sleep(1.0);
                Err(error("job_failed", "the job failed, as this fixture always does"))
            }
            "protocol_error_job" => {
                sleep(1.0);
                panic!("protocol_error_job crashes by design")
            }
            "confirm_delete" => {
                // Past the host's promotion window first, so the question is asked in a task.
                sleep(0.6);
                let filename = string_argument(&arguments, "filename")?;
                let answer = ask_one(
                    "confirm",
                    "elicitation/create",
                    form(&format!("Delete {filename}?"), "confirm", "boolean"),
                )?;
                text(format!("delete {filename}: confirm={}", field(&answer, "confirm")))
            }
            "multi_input" => {
                sleep(0.6);
                let mut answers = ask(&[
                    ("first", "elicitation/create", form("First name?", "name", "string")),
                    ("second", "elicitation/create", form("Second name?", "name", "string")),
                ])
                .into_iter();
                let mut next = || answers.next().unwrap_or_else(|| Err(error("client_error", "no answer")));
                let (first, second) = (next()?, next()?);
                text(format!("first={}, second={}", field(&first, "name"), field(&second, "name")))
            }
            "test_tool_with_task" => {
                // Asked at once (an MRTR round in the request), then long enough to be a task.
                let answer = ask_one("user_name", "elicitation/create", form("What is your name?", "name", "string"))?;
                sleep(1.0);
                text(format!("Hello, {}! Your task is done.", field(&answer, "name")))
            }
            other => Err(error("unknown_tool", format!("no tool named {other}"))),
        }
    }
}

fn sleep(seconds: f64) {
    std::thread::sleep(std::time::Duration::from_secs_f64(seconds.clamp(0.0, 120.0)));
}

impl Tasks for Everything {
    fn supported() -> Vec<(String, TaskSupport)> {
        [
            ("slow_compute", TaskSupport::Optional),
            ("failing_job", TaskSupport::Required),
            ("protocol_error_job", TaskSupport::Optional),
            ("confirm_delete", TaskSupport::Optional),
            ("multi_input", TaskSupport::Optional),
            ("test_tool_with_task", TaskSupport::Required),
        ]
        .into_iter()
        .map(|(tool, support)| (tool.to_string(), support))
        .collect()
    }
}

impl Resources for Everything {
    fn list_resources() -> Vec<ResourceDescriptor> {
        let resource = |uri: &str, name: &str, title: &str, mime_type: &str| ResourceDescriptor {
            uri: uri.into(),
            name: name.into(),
            title: Some(title.into()),
            description: Some(format!("{title} for conformance testing")),
            mime_type: Some(mime_type.into()),
        };
        vec![
            resource("test://static-text", "static-text", "Static Text Resource", "text/plain"),
            resource("test://static-binary", "static-binary", "Static Binary Resource", "image/png"),
            resource("test://watched-resource", "watched-resource", "Watched Resource", "text/plain"),
        ]
    }

    fn list_templates() -> Vec<TemplateDescriptor> {
        vec![TemplateDescriptor {
            uri_template: "test://template/{id}/data".into(),
            name: "template".into(),
            title: Some("Resource Template".into()),
            description: Some("A resource template with a parameter".into()),
            mime_type: Some("application/json".into()),
        }]
    }

    fn read(uri: String) -> Result<Vec<ResourceContents>, CallError> {
        let contents = match uri.as_str() {
            "test://static-text" => {
                text_resource(&uri, "text/plain", "This is the content of the static text resource.")
            }
            "test://static-binary" => ResourceContents {
                uri: uri.clone(),
                mime_type: Some("image/png".into()),
                body: ResourceBody::Blob(decode(IMAGE_PNG)),
            },
            "test://watched-resource" => text_resource(&uri, "text/plain", "Watched resource content"),
            _ => {
                let id = uri
                    .strip_prefix("test://template/")
                    .and_then(|rest| rest.strip_suffix("/data"))
                    .ok_or_else(|| error("not_found", format!("no resource {uri}")))?;
                let body = json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
                text_resource(&uri, "application/json", &body.to_string())
            }
        };
        Ok(vec![contents])
    }
}

impl Prompts for Everything {
    fn list_prompts() -> Vec<PromptDescriptor> {
        let prompt = |name: &str, title: &str, description: &str, arguments: Vec<PromptArgument>| PromptDescriptor {
            name: name.into(),
            title: Some(title.into()),
            description: Some(description.into()),
            arguments,
        };
        let argument = |name: &str, description: &str| PromptArgument {
            name: name.into(),
            description: Some(description.into()),
            required: true,
        };
        vec![
            prompt("test_simple_prompt", "Simple Test Prompt", "A simple prompt without arguments", vec![]),
            prompt(
                "test_prompt_with_arguments",
                "Prompt With Arguments",
                "A prompt with required arguments",
                vec![argument("arg1", "First test argument"), argument("arg2", "Second test argument")],
            ),
            prompt(
                "test_prompt_with_embedded_resource",
                "Prompt With Embedded Resource",
                "A prompt that includes an embedded resource",
                vec![argument("resourceUri", "URI of the resource to embed")],
            ),
            prompt("test_prompt_with_image", "Prompt With Image", "A prompt that includes an image", vec![]),
            prompt(
                "test_input_required_result_prompt",
                "Prompt Asking For Context",
                "A prompt that asks the user for its context first (SEP-2322)",
                vec![],
            ),
        ]
    }

    fn get(name: String, arguments: Vec<(String, String)>) -> Result<PromptResult, CallError> {
        let argument = |key: &str| arguments.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
        let user = |content: Content| PromptMessage { role: Role::User, content };
        let messages = match name.as_str() {
            "test_simple_prompt" => vec![user(Content::Text("This is a simple prompt for testing.".into()))],
            "test_prompt_with_arguments" => vec![user(Content::Text(format!(
                "Prompt with arguments: arg1='{}', arg2='{}'",
                argument("arg1"),
                argument("arg2")
            )))],
            "test_prompt_with_embedded_resource" => vec![
                user(Content::Resource(text_resource(
                    &argument("resourceUri"),
                    "text/plain",
                    "Embedded resource content for testing.",
                ))),
                user(Content::Text("Please process the embedded resource above.".into())),
            ],
            "test_prompt_with_image" => {
                vec![user(image()), user(Content::Text("Please analyze the image above.".into()))]
            }
            "test_input_required_result_prompt" => {
                let answer = ask_one(
                    "user_context",
                    "elicitation/create",
                    form("What context should the prompt use?", "context", "string"),
                )?;
                vec![user(Content::Text(format!("Answer with this context in mind: {}", field(&answer, "context"))))]
            }
            other => return Err(error("not_found", format!("no prompt named {other}"))),
        };
        Ok(PromptResult { description: None, messages })
    }
}

/// Completes `arg1` of `test_prompt_with_arguments` from a fixed list, `arg2` from the `arg1`
/// already chosen, and the template's `{id}` from the three ids it serves.
impl Completions for Everything {
    fn complete(
        target: CompletionTarget,
        argument: String,
        value: String,
        context: Vec<(String, String)>,
    ) -> Result<Completion, CallError> {
        let candidates: Vec<String> = match (&target, argument.as_str()) {
            (CompletionTarget::Prompt(p), "arg1") if p == "test_prompt_with_arguments" => {
                ["paris", "park", "party", "lyon"].map(String::from).to_vec()
            }
            (CompletionTarget::Prompt(p), "arg2") if p == "test_prompt_with_arguments" => {
                context.iter().filter(|(k, _)| k == "arg1").map(|(_, v)| format!("after-{v}")).collect()
            }
            (CompletionTarget::ResourceTemplate(t), "id") if t == "test://template/{id}/data" => {
                ["1", "2", "3"].map(String::from).to_vec()
            }
            _ => return Err(error("not_found", format!("nothing to complete for {argument} of {target:?}"))),
        };
        let values: Vec<String> = candidates.into_iter().filter(|c| c.starts_with(&value)).collect();
        Ok(Completion { total: Some(values.len() as u32), values, has_more: false })
    }
}

export!(Everything);
