use super::*;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AddArgs {
    /// First addend.
    a: f64,
    /// Second addend.
    b: f64,
}

#[derive(Serialize, JsonSchema)]
struct Sum {
    /// The sum of `a` and `b`.
    sum: f64,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Mood {
    Happy,
    Grumpy,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MoodArgs {
    /// How to feel.
    mood: Mood,
}

struct TestPlugin;

impl Plugin for TestPlugin {
    fn tools() -> Vec<Tool> {
        vec![
            Tool::new("add", "Adds two numbers.", |a: AddArgs, _: &Context| Ok(Sum { sum: a.a + a.b }))
                .title("Add")
                .read_only()
                .idempotent(),
            Tool::new("mood", "Names a mood.", |a: MoodArgs, _: &Context| {
                Ok(Text(match a.mood {
                    Mood::Happy => "happy".into(),
                    Mood::Grumpy => "grumpy".into(),
                }))
            }),
            Tool::new("who", "Says who calls.", |_: NoArgs, cx: &Context| {
                Ok(WithText::new(
                    json!({ "principal": cx.principal() }),
                    format!("{} ({})", cx.principal(), cx.call_id()),
                ))
            })
            .task_support(TaskSupport::Optional),
            Tool::new("fail", "Always fails.", |_: NoArgs, _: &Context| {
                Err::<Text, _>(ToolError::new("busy", "try later").retryable())
            })
            .task_support(TaskSupport::Required),
            Tool::new("number", "Returns a bare number.", |_: NoArgs, _: &Context| Ok(42)),
        ]
    }
}

fn cx() -> Context {
    Context::new("alice", "call-1", Some("key-1".into()))
}

fn call(name: &str, arguments: &str) -> Result<wit::ToolOutput, ToolError> {
    dispatch(TestPlugin::tools(), name, arguments, &cx())
}

fn tool(name: &str) -> Tool {
    TestPlugin::tools().into_iter().find(|t| t.name() == name).expect("test tool exists")
}

#[test]
fn input_schema_is_a_closed_object_with_descriptions() {
    let schema = tool("add").input_schema();
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["properties"]["a"]["description"], "First addend.");
    assert_eq!(schema["properties"]["b"]["type"], "number");
    assert_eq!(schema["required"], json!(["a", "b"]));
    assert!(schema.get("$schema").is_none());
}

#[test]
fn enums_are_inlined() {
    let schema = tool("mood").input_schema();
    let mood = &schema["properties"]["mood"];
    assert_eq!(mood["enum"], json!(["happy", "grumpy"]));
    assert_eq!(mood["description"], "How to feel.");
    assert!(schema.get("$defs").is_none());
}

#[test]
fn no_args_is_an_empty_closed_object() {
    let mut schema = tool("who").input_schema();
    schema.as_object_mut().map(|s| s.remove("title"));
    assert_eq!(schema, json!({ "type": "object", "properties": {}, "additionalProperties": false }));
    assert_eq!(call("who", "{}").map(|o| o.text), Ok(Some("alice (call-1)".into())));
    assert_eq!(call("who", "").map(|o| o.text), Ok(Some("alice (call-1)".into())));
}

#[test]
fn empty_structs_get_properties() {
    #[derive(Deserialize, JsonSchema)]
    struct Empty {}
    let schema = input_schema_of::<Empty>();
    assert_eq!((&schema["type"], &schema["properties"]), (&json!("object"), &json!({})));
}

#[test]
fn describe_lists_every_tool_with_its_schemas_and_hints() {
    let descriptors = describe(TestPlugin::tools());
    let names: Vec<_> = descriptors.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["add", "mood", "who", "fail", "number"]);

    let add = &descriptors[0];
    assert_eq!(add.title.as_deref(), Some("Add"));
    assert_eq!(add.description, "Adds two numbers.");
    assert_eq!(add.annotations.read_only, Some(true));
    assert_eq!(add.annotations.idempotent, Some(true));
    assert_eq!(add.annotations.destructive, None);
    assert_eq!(add.annotations.open_world, None);
    let output: Value =
        serde_json::from_str(add.output_schema.as_deref().unwrap_or("null")).expect("output schema is JSON");
    assert_eq!(output["type"], "object");
    assert_eq!(output["properties"]["sum"]["description"], "The sum of `a` and `b`.");

    // Text has no schema; neither does a non-object result, which MCP cannot carry as
    // structured content.
    assert_eq!(descriptors[1].output_schema, None);
    assert_eq!(descriptors[4].output_schema, None);
}

#[test]
fn task_support_is_exported_for_the_tools_that_declare_it() {
    use crate::bindings::exports::cordon::plugin::tasks::{Guest, TaskSupport as Wit};
    let supported = crate::__private::Export::<TestPlugin>::supported();
    let names: Vec<(&str, bool)> =
        supported.iter().map(|(name, support)| (name.as_str(), matches!(support, Wit::Required))).collect();
    // Tools that declare nothing are left out: the host takes them for `forbidden`.
    assert_eq!(names, [("who", false), ("fail", true)]);
    assert!(matches!(supported[0].1, Wit::Optional));
}

#[test]
fn dispatches_a_known_tool() {
    let out = call("add", r#"{"a": 1.5, "b": 2}"#).expect("add succeeds");
    let json: Value = serde_json::from_str(out.json.as_deref().unwrap_or("null")).expect("JSON");
    assert_eq!(json, json!({ "sum": 3.5 }));
    assert_eq!(out.text.as_deref(), out.json.as_deref());

    let out = call("who", "{}").expect("who succeeds");
    assert_eq!(out.json.as_deref(), Some(r#"{"principal":"alice"}"#));

    let out = call("mood", r#"{"mood": "grumpy"}"#).expect("mood succeeds");
    assert_eq!((out.text.as_deref(), out.json), (Some("grumpy"), None));

    let out = call("number", "{}").expect("number succeeds");
    assert_eq!((out.text.as_deref(), out.json), (Some("42"), None));
}

#[test]
fn unknown_tool_is_a_typed_error() {
    let err = call("nope", "{}").expect_err("no such tool");
    assert_eq!(err.kind, ToolError::UNKNOWN_TOOL);
    assert!(!err.retryable);
}

#[test]
fn bad_arguments_become_invalid_arguments() {
    for arguments in [r#"{"a": "x", "b": 1}"#, r#"{"a": 1}"#, "not json", r#"{"a":1,"b":2,"c":3}"#] {
        let err = call("add", arguments).expect_err(arguments);
        assert_eq!(err.kind, "invalid_arguments", "{arguments}");
        assert!(!err.retryable);
    }
}

#[test]
fn handler_errors_convert_to_call_errors() {
    let err = call("fail", "{}").expect_err("fail fails");
    assert_eq!(err.to_string(), "busy: try later");
    let wit: wit::CallError = err.into();
    assert_eq!((wit.kind.as_str(), wit.message.as_str(), wit.retryable), ("busy", "try later", true));
}

#[test]
fn context_exposes_the_call() {
    let from_host: Context =
        wit::CallContext { principal: "bob".into(), call_id: "c-9".into(), idempotency_key: None }.into();
    assert_eq!((from_host.principal(), from_host.call_id(), from_host.idempotency_key()), ("bob", "c-9", None));
    assert_eq!(cx().idempotency_key(), Some("key-1"));
}
