//! Tool arguments: the strict input schema check (`schema::Schema`) and, for plain components,
//! the JSON → WIT conversion that follows it (`sandbox::plain::to_val`, and `to_json` back).
//!
//! The input is JSON. As an object it is a whole `arguments` object for every tool; any value
//! also goes in each parameter of each plain tool in turn, the other parameters valid.
//!
//! Invariants:
//! - `check_arguments` accepts exactly when `violations` is empty, and every violation's JSON
//!   pointer names a place in the arguments;
//! - arguments the published schema accepts survive the trip the call path gives them
//!   (serialised for the guest, parsed again) and convert to WIT values for every parameter;
//! - WIT → JSON → WIT → JSON is stable after one round.
#![no_main]

use cordon_host::schema::Schema;
use cordon_sandbox::plain;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Type};

/// One tool: its published input schema, compiled as the registry compiles it, and what to check
/// against it.
struct Tool {
    name: String,
    schema: Schema,
    /// The WIT parameters (plain tools only).
    params: Vec<(String, Type)>,
    /// Valid arguments, each parameter of which the input replaces in turn.
    valid: Map<String, Value>,
}

/// Valid arguments of the plain component's functions, by tool name.
fn valid_arguments(tool: &str) -> Value {
    match tool {
        "scalars" => json!({"b": true, "a": -1, "c": 1, "d": -300, "e": 300, "f": -70000, "g": 70000,
                            "h": -1, "i": 1, "j": 1.5, "k": 2.5, "l": "x", "m": "text"}),
        "lists" => json!({"bytes": [1, 2], "words": ["a"], "grid": [[1.0]], "triple": [true, "c", -2]}),
        "nothing" => json!({}),
        "shapes_paint" => json!({"s": {"circle": 1.0}, "c": "red", "p": ["read"]}),
        "shapes_nested" => json!({"points": [{"x": 1, "y": 2}], "pairs": [[1, "a"]], "deep": null,
                                  "outcome": {"ok": {"x": 1, "y": 2, "label": "p"}}, "bare": {"ok": null},
                                  "either": {"err": "blue"}}),
        other => panic!("no valid arguments for {other}"),
    }
}

/// Hand-written input schemas of the kind plugins declare (made strict by `Schema::input`).
const DECLARED: &[&str] = &[
    r#"{"type": "object", "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 80},
        "units": {"enum": ["metric", "imperial"]}, "days": {"type": "integer", "minimum": 1, "maximum": 16}},
        "required": ["city"]}"#,
    r#"{"type": "object", "properties": {"amount": {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.01},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true, "maxItems": 8},
        "meta": {"type": "object", "additionalProperties": {"type": "string"}}}, "required": ["amount", "currency"]}"#,
    r##"{"type": "object", "$defs": {"item": {"type": "object", "properties": {"id": {"type": "integer"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/item"}}}, "required": ["id"]}},
        "properties": {"root": {"$ref": "#/$defs/item"}, "mode": {"oneOf": [{"const": "a"}, {"type": "null"}]}}}"##,
];

fn fixture() -> &'static Vec<Tool> {
    static TOOLS: OnceLock<Vec<Tool>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let engine = wasmtime::Engine::new(&wasmtime::Config::new()).expect("engine");
        let bytes = cordon_fuzz::plain_component().expect("plain component");
        let component = Component::new(&engine, bytes).expect("compile");
        // The parameter types, in the order `exported_tools` visits the exports.
        let mut params = Vec::new();
        for (_, item) in component.component_type().exports(&engine) {
            let mut push = |func: wasmtime::component::types::ComponentFunc| {
                params.push(func.params().map(|(n, t)| (n.to_string(), t)).collect::<Vec<_>>())
            };
            match item.ty {
                ComponentItem::ComponentFunc(func) => push(func),
                ComponentItem::ComponentInstance(instance) => {
                    for (_, item) in instance.exports(&engine) {
                        if let ComponentItem::ComponentFunc(func) = item.ty {
                            push(func);
                        }
                    }
                }
                _ => {}
            }
        }
        let exported = plain::exported_tools(&engine, &component);
        assert_eq!(exported.len(), params.len(), "every function is served");
        let mut tools: Vec<Tool> = exported
            .into_iter()
            .zip(params)
            .map(|(tool, params)| {
                let schema = Schema::input(&tool.descriptor.input_schema).expect("a derived schema compiles");
                let Value::Object(valid) = valid_arguments(&tool.local_name) else { unreachable!() };
                assert!(schema.check_arguments(&Value::Object(valid.clone())).is_ok(), "{}", tool.local_name);
                Tool { name: tool.local_name, schema, params, valid }
            })
            .collect();
        for (i, text) in DECLARED.iter().enumerate() {
            let schema = Schema::input(text).expect("declared schema");
            tools.push(Tool { name: format!("declared{i}"), schema, params: Vec::new(), valid: Map::new() });
        }
        tools
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    for tool in fixture() {
        if let Value::Object(arguments) = &value {
            check(tool, arguments);
        }
        for (param, _) in &tool.params {
            let mut arguments = tool.valid.clone();
            arguments.insert(param.clone(), value.clone());
            check(tool, &arguments);
        }
    }
});

fn check(tool: &Tool, arguments: &Map<String, Value>) {
    // The call path validates `Value::Object(arguments)`.
    let instance = Value::Object(arguments.clone());
    let violations = tool.schema.violations(&instance);
    let accepted = tool.schema.check_arguments(&instance).is_ok();
    assert_eq!(accepted, violations.is_empty(), "{}: check and violations disagree: {violations:?}", tool.name);
    for v in &violations {
        assert!(
            instance.pointer(&v.pointer).is_some(),
            "{}: violation at {:?} not in {instance}",
            tool.name,
            v.pointer
        );
    }
    if !accepted || tool.params.is_empty() {
        return;
    }
    // Then serialises it for the guest; `plain::call` parses it back.
    let serialized = serde_json::to_string(&instance).expect("arguments serialise");
    let parsed: Map<String, Value> = serde_json::from_str(&serialized).expect("serialised arguments parse");
    assert_eq!(&parsed, arguments, "{}: arguments changed on the way to the guest", tool.name);
    for (param, ty) in &tool.params {
        let at = format!("/{param}");
        let value = parsed.get(param).unwrap_or(&Value::Null);
        let val = plain::to_val(value, ty, &at)
            .unwrap_or_else(|e| panic!("{}: validated arguments do not convert: {e}", tool.name));
        let json = plain::to_json(&val);
        let again =
            plain::to_val(&json, ty, &at).unwrap_or_else(|e| panic!("{}: to_json output refused: {e}", tool.name));
        assert_eq!(plain::to_json(&again), json, "{}: WIT ↔ JSON not stable for {param}", tool.name);
    }
}
