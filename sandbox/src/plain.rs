//! Plain components: a component that does not target `cordon:plugin` but exports ordinary
//! functions (`export add: func(a: s32, b: s32) -> s32;`, or functions of an exported
//! interface) is served too. Each exported function becomes a tool; its input schema is derived
//! from the WIT parameter types, the host converts the (already validated) JSON arguments to
//! WIT values and the result back. Limits, grants and idempotency apply as for any tool: only
//! the last step — how the instance is asked — differs.
//!
//! Naming: a top-level function keeps its name (`add`); a function of an exported interface is
//! `<interface>_<function>` (`docs:calc/ops@1.0.0` → `ops_add`), with characters outside
//! `[a-zA-Z0-9_-]` replaced by `_`. Functions using resources, futures or streams are not served
//! (logged at load).
//!
//! The JSON ↔ WIT mapping (both directions):
//!
//! | WIT | JSON | JSON Schema |
//! | --- | --- | --- |
//! | `bool` | `true` / `false` | `boolean` |
//! | `s8`…`u64` | integer (`8.0` too, as JSON Schema counts it) | `integer` with the type's `minimum`/`maximum` |
//! | `f32`, `f64` | number (non-finite results become `null`) | `number` (`f32`: within its finite range) |
//! | `char` | one-character string | `string`, length 1 |
//! | `string` | string | `string` |
//! | `list<T>` | array | `array` of T |
//! | `tuple<A, B>` | array of fixed length | `prefixItems` |
//! | `record` | object; `option` fields may be omitted | `object`, closed, non-option fields required |
//! | `enum` | the case name | `string` with `enum` |
//! | `flags` | array of flag names | unique strings from the names |
//! | `variant` | a payload-less case as its name; otherwise `{"case": payload}` | `oneOf` |
//! | `option<T>` | `null` or T | `anyOf [T, null]` |
//! | `result<T, E>` | `{"ok": T}` or `{"err": E}` (payloads absent → `null`) | `oneOf` |
//!
//! Parameters form one object, one property per parameter. The function's result is the tool's
//! structured result `{"result": …}` (and its text). A top-level `result<T, E>` return is special:
//! `ok` is the result, and `err` is a tool error whose type is the error's case name when `E` is
//! an enum or variant (`"error"` otherwise) and whose message is `E` (a string, or its JSON).

use super::bindings::{Annotations, CallError, ToolDescriptor, ToolOutput};
use super::state::CallState;
use serde_json::{json, Map, Value};
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, InstancePre, Type, Val};
use wasmtime::Engine;
use wasmtime::Store;

/// One exported function served as a tool.
#[derive(Clone)]
pub struct PlainTool {
    /// The tool's name inside the plugin.
    pub local_name: String,
    /// The exported interface holding the function, if it is not top-level.
    instance: Option<String>,
    /// The function's export name.
    func: String,
    params: Vec<(String, Type)>,
    result: Option<Type>,
    /// What `describe` would have said.
    pub descriptor: ToolDescriptor,
}

/// The functions of `component` that can be served, or an empty list when it exports none.
pub fn exported_tools(engine: &Engine, component: &Component) -> Vec<PlainTool> {
    let mut tools = Vec::new();
    for (name, item) in component.component_type().exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(func) => push_tool(&mut tools, None, name, &func),
            ComponentItem::ComponentInstance(instance) => {
                for (func_name, item) in instance.exports(engine) {
                    if let ComponentItem::ComponentFunc(func) = item.ty {
                        push_tool(&mut tools, Some(name), func_name, &func);
                    }
                }
            }
            _ => {}
        }
    }
    tools
}

fn push_tool(tools: &mut Vec<PlainTool>, instance: Option<&str>, func: &str, ty: &ComponentFunc) {
    let local_name = match instance {
        Some(interface) => {
            let short = interface.rsplit('/').next().unwrap_or(interface).split('@').next().unwrap_or(interface);
            sanitize(&format!("{short}_{func}"))
        }
        None => sanitize(func),
    };
    let params: Vec<(String, Type)> = ty.params().map(|(name, ty)| (name.to_string(), ty)).collect();
    let results: Vec<Type> = ty.results().collect();
    let where_ = instance.map(|i| format!(" of interface `{i}`")).unwrap_or_default();
    if results.len() > 1 {
        tracing::warn!(function = %func, "not served: functions with several results are not supported");
        return;
    }
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, ty) in &params {
        let Some(mut schema) = schema(ty) else {
            tracing::warn!(function = %func, parameter = %name, "not served: resources, futures and streams have no JSON form");
            return;
        };
        if let Some(object) = schema.as_object_mut() {
            object.insert("description".into(), json!(format!("Parameter `{name}` ({}).", type_name(ty))));
        }
        if !matches!(ty, Type::Option(_)) {
            required.push(json!(name));
        }
        properties.insert(name.clone(), schema);
    }
    let result = results.into_iter().next();
    let output_schema = match &result {
        None => None,
        Some(ty) => {
            let value_type = match ty {
                Type::Result(r) => r.ok(),
                other => Some(other.clone()),
            };
            let value_schema = match &value_type {
                Some(t) => match schema(t) {
                    Some(s) => s,
                    None => {
                        tracing::warn!(function = %func, "not served: its result has no JSON form");
                        return;
                    }
                },
                None => json!({"type": "null"}),
            };
            Some(
                json!({"type": "object", "properties": {"result": value_schema}, "required": ["result"],
                       "additionalProperties": false})
                .to_string(),
            )
        }
    };
    let signature = format!(
        "({}){}",
        params.iter().map(|(n, t)| format!("{n}: {}", type_name(t))).collect::<Vec<_>>().join(", "),
        result.as_ref().map(|t| format!(" -> {}", type_name(t))).unwrap_or_default()
    );
    let descriptor = ToolDescriptor {
        name: local_name.clone(),
        title: None,
        description: format!("Calls the exported WebAssembly function `{func}`{where_}: {func}{signature}."),
        input_schema: json!({"type": "object", "properties": properties, "required": required,
                             "additionalProperties": false})
        .to_string(),
        output_schema,
        annotations: Annotations { read_only: None, destructive: None, idempotent: None, open_world: None },
    };
    tools.push(PlainTool {
        local_name,
        instance: instance.map(str::to_string),
        func: func.to_string(),
        params,
        result,
        descriptor,
    });
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

/// Where a plain call's instance comes from: a spare made ahead of the call, or `pre`
/// instantiated when the arguments have been converted.
pub(crate) struct Instantiated<'a> {
    pub(crate) pre: &'a InstancePre<CallState>,
    pub(crate) instance: Option<wasmtime::component::Instance>,
    pub(crate) book: &'a crate::spares::Book,
}

/// Calls `tool` in a fresh instance with the JSON `arguments`.
pub(crate) async fn call(
    source: Instantiated<'_>,
    store: &mut Store<CallState>,
    tools: &[PlainTool],
    name: &str,
    arguments: &str,
    max_output_bytes: usize,
) -> wasmtime::Result<Result<ToolOutput, CallError>> {
    let Some(tool) = tools.iter().find(|t| t.local_name == name) else {
        return Err(wasmtime::format_err!("no exported function serves {name}"));
    };
    let arguments: Map<String, Value> = serde_json::from_str(arguments).unwrap_or_default();
    let mut params = Vec::with_capacity(tool.params.len());
    for (param, ty) in &tool.params {
        let value = arguments.get(param).unwrap_or(&Value::Null);
        match to_val(value, ty, &format!("/{param}")) {
            Ok(val) => params.push(val),
            Err(message) => return Ok(Err(invalid_arguments(message))),
        }
    }
    let instance = match source.instance {
        Some(instance) => instance,
        None => crate::spares::instantiate(source.pre, store, source.book).await?,
    };
    let func = match &tool.instance {
        Some(interface) => {
            let scope = instance.get_export_index(&mut *store, None, interface);
            let index =
                scope.as_ref().and_then(|scope| instance.get_export_index(&mut *store, Some(scope), &tool.func));
            index.and_then(|index| instance.get_func(&mut *store, index))
        }
        None => instance.get_func(&mut *store, tool.func.as_str()),
    };
    let Some(func) = func else {
        return Err(wasmtime::format_err!("the instance does not export {}", tool.func));
    };
    let mut results = vec![Val::Bool(false); usize::from(tool.result.is_some())];
    func.call_async(&mut *store, &params, &mut results).await?;
    // Written straight to text under the output cap: a large result is never expanded into a
    // JSON tree first (`sandbox::lift_budget` bounds the `Val`s themselves).
    let text = match (results.pop(), &tool.result) {
        (Some(Val::Result(Err(error))), Some(Type::Result(_))) => return Ok(Err(guest_error(error.as_deref()))),
        (Some(Val::Result(Ok(ok))), Some(Type::Result(_))) => json_text(ok.as_deref(), max_output_bytes)?,
        (result, _) => json_text(result.as_ref(), max_output_bytes)?,
    };
    let json = format!("{{\"result\":{text}}}");
    Ok(Ok(ToolOutput { text: Some(text), json: Some(json) }))
}

/// A plain component's result whose JSON grew past the output cap while it was written.
#[derive(Debug)]
pub struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the result is larger than the output cap")
    }
}

impl std::error::Error for TooLarge {}

/// `val` (`None`: `null`) as JSON text of at most `max` bytes, written by serde_json straight
/// into a capped buffer: [`TooLarge`] as soon as a write would pass the cap.
pub fn json_text(val: Option<&Val>, max: usize) -> Result<String, TooLarge> {
    /// A buffer that refuses the write that would take it past `max`.
    struct Capped {
        bytes: Vec<u8>,
        max: usize,
    }
    impl std::io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.bytes.len().saturating_add(buf.len()) > self.max {
                return Err(std::io::Error::other(TooLarge));
            }
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Capped { bytes: Vec::new(), max };
    // The only error a string-keyed value can give is the cap's.
    serde_json::to_writer(&mut out, &val.map(AsJson)).map_err(|_| TooLarge)?;
    String::from_utf8(out.bytes).map_err(|_| TooLarge)
}

/// A WIT value as JSON, for serde: records and variants as objects, enums and payload-less cases
/// as strings, options as the value or `null`, results as `{"ok": …}` / `{"err": …}`, flags as
/// a list of names, non-finite floats as `null`.
struct AsJson<'a>(&'a Val);

impl serde::Serialize for AsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Val::Bool(b) => s.serialize_bool(*b),
            Val::S8(n) => s.serialize_i8(*n),
            Val::U8(n) => s.serialize_u8(*n),
            Val::S16(n) => s.serialize_i16(*n),
            Val::U16(n) => s.serialize_u16(*n),
            Val::S32(n) => s.serialize_i32(*n),
            Val::U32(n) => s.serialize_u32(*n),
            Val::S64(n) => s.serialize_i64(*n),
            Val::U64(n) => s.serialize_u64(*n),
            // serde_json writes a non-finite float as `null`.
            Val::Float32(n) => s.serialize_f64(f64::from(*n)),
            Val::Float64(n) => s.serialize_f64(*n),
            Val::Char(c) => s.serialize_char(*c),
            Val::String(text) => s.serialize_str(text),
            Val::List(items) | Val::Tuple(items) => s.collect_seq(items.iter().map(AsJson)),
            Val::Record(fields) => s.collect_map(fields.iter().map(|(name, value)| (name, AsJson(value)))),
            Val::Variant(case, None) | Val::Enum(case) => s.serialize_str(case),
            Val::Variant(case, Some(payload)) => s.collect_map([(case, AsJson(payload))]),
            Val::Option(None) => s.serialize_unit(),
            Val::Option(Some(v)) => AsJson(v).serialize(s),
            Val::Result(result) => {
                let (side, v) = match result {
                    Ok(v) => ("ok", v),
                    Err(v) => ("err", v),
                };
                s.collect_map([(side, v.as_deref().map(AsJson))])
            }
            Val::Flags(names) => s.collect_seq(names),
            // Resources, futures, streams and error contexts have no JSON form; such functions
            // are not published as tools (`schema`), so this is never reached.
            _ => s.serialize_unit(),
        }
    }
}

fn invalid_arguments(message: String) -> CallError {
    CallError { kind: "invalid_arguments".into(), message, retryable: false }
}

fn guest_error(error: Option<&Val>) -> CallError {
    let (kind, message) = match error {
        None => ("error".to_string(), "the function returned an error".to_string()),
        Some(Val::String(message)) => ("error".to_string(), message.clone()),
        Some(Val::Enum(case)) => (case.clone(), format!("the function returned the error {case}")),
        Some(Val::Variant(case, payload)) => {
            let message = match payload.as_deref() {
                Some(Val::String(text)) => text.clone(),
                Some(other) => to_json(other).to_string(),
                None => format!("the function returned the error {case}"),
            };
            (case.clone(), message)
        }
        Some(other) => ("error".to_string(), to_json(other).to_string()),
    };
    CallError { kind: sanitize(&kind), message, retryable: false }
}

/// The JSON Schema of a WIT type; `None` for types with no JSON form.
pub fn schema(ty: &Type) -> Option<Value> {
    let integer = |min: i128, max: i128| json!({"type": "integer", "minimum": min, "maximum": max});
    Some(match ty {
        Type::Bool => json!({"type": "boolean"}),
        Type::S8 => integer(i8::MIN.into(), i8::MAX.into()),
        Type::U8 => integer(0, u8::MAX.into()),
        Type::S16 => integer(i16::MIN.into(), i16::MAX.into()),
        Type::U16 => integer(0, u16::MAX.into()),
        Type::S32 => integer(i32::MIN.into(), i32::MAX.into()),
        Type::U32 => integer(0, u32::MAX.into()),
        Type::S64 => integer(i64::MIN.into(), i64::MAX.into()),
        Type::U64 => integer(0, u64::MAX.into()),
        // Larger numbers would reach the guest as infinities.
        Type::Float32 => json!({"type": "number", "minimum": f64::from(f32::MIN), "maximum": f64::from(f32::MAX)}),
        Type::Float64 => json!({"type": "number"}),
        Type::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
        Type::String => json!({"type": "string"}),
        Type::List(list) => json!({"type": "array", "items": schema(&list.ty())?}),
        Type::Record(record) => {
            let mut properties = Map::new();
            let mut required = Vec::new();
            for field in record.fields() {
                properties.insert(field.name.to_string(), schema(&field.ty)?);
                if !matches!(field.ty, Type::Option(_)) {
                    required.push(json!(field.name));
                }
            }
            json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
        }
        Type::Tuple(tuple) => {
            let items = tuple.types().map(|t| schema(&t)).collect::<Option<Vec<_>>>()?;
            let n = items.len();
            json!({"type": "array", "prefixItems": items, "items": false, "minItems": n, "maxItems": n})
        }
        Type::Variant(variant) => {
            let cases = variant
                .cases()
                .map(|case| match &case.ty {
                    None => Some(json!({"const": case.name})),
                    Some(payload) => Some(json!({"type": "object", "properties": {case.name: schema(payload)?},
                                                 "required": [case.name], "additionalProperties": false})),
                })
                .collect::<Option<Vec<_>>>()?;
            json!({"oneOf": cases})
        }
        Type::Enum(e) => json!({"type": "string", "enum": e.names().collect::<Vec<_>>()}),
        Type::Flags(flags) => {
            json!({"type": "array", "uniqueItems": true, "items": {"type": "string", "enum": flags.names().collect::<Vec<_>>()}})
        }
        Type::Option(option) => json!({"anyOf": [schema(&option.ty())?, {"type": "null"}]}),
        Type::Result(result) => {
            let side = |name: &str, ty: Option<Type>| -> Option<Value> {
                let payload = match ty {
                    Some(t) => schema(&t)?,
                    None => json!({"type": "null"}),
                };
                Some(
                    json!({"type": "object", "properties": {name: payload}, "required": [name], "additionalProperties": false}),
                )
            };
            json!({"oneOf": [side("ok", result.ok())?, side("err", result.err())?]})
        }
        _ => return None,
    })
}

/// A short WIT spelling of a type, for descriptions.
fn type_name(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", type_name(&l.ty())),
        Type::Option(o) => format!("option<{}>", type_name(&o.ty())),
        Type::Result(r) => format!(
            "result<{}, {}>",
            r.ok().map_or("_".into(), |t| type_name(&t)),
            r.err().map_or("_".into(), |t| type_name(&t))
        ),
        Type::Tuple(t) => format!("tuple<{}>", t.types().map(|t| type_name(&t)).collect::<Vec<_>>().join(", ")),
        Type::Record(_) => "record".into(),
        Type::Variant(_) => "variant".into(),
        Type::Enum(_) => "enum".into(),
        Type::Flags(_) => "flags".into(),
        _ => "resource".into(),
    }
}

/// JSON → WIT value, guided by the type. Errors name the JSON pointer.
pub fn to_val(value: &Value, ty: &Type, at: &str) -> std::result::Result<Val, String> {
    let wrong = |what: &str| format!("{at}: expected {what}, got {value}");
    macro_rules! int {
        ($variant:ident, $t:ty) => {{
            let n = value
                .as_i64()
                .map(i128::from)
                .or_else(|| value.as_u64().map(i128::from))
                // JSON Schema's `integer` (the published schema) accepts `8.0`: so do we.
                .or_else(|| value.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e38).map(|f| f as i128))
                .ok_or_else(|| wrong("an integer"))?;
            Val::$variant(<$t>::try_from(n).map_err(|_| format!("{at}: {n} is out of range for {}", stringify!($t)))?)
        }};
    }
    Ok(match ty {
        Type::Bool => Val::Bool(value.as_bool().ok_or_else(|| wrong("a boolean"))?),
        Type::S8 => int!(S8, i8),
        Type::U8 => int!(U8, u8),
        Type::S16 => int!(S16, i16),
        Type::U16 => int!(U16, u16),
        Type::S32 => int!(S32, i32),
        Type::U32 => int!(U32, u32),
        Type::S64 => int!(S64, i64),
        Type::U64 => int!(U64, u64),
        Type::Float32 => match value.as_f64().ok_or_else(|| wrong("a number"))? as f32 {
            n if n.is_finite() => Val::Float32(n),
            _ => return Err(format!("{at}: {value} is out of range for f32")),
        },
        Type::Float64 => Val::Float64(value.as_f64().ok_or_else(|| wrong("a number"))?),
        Type::Char => {
            let text = value.as_str().ok_or_else(|| wrong("a one-character string"))?;
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(wrong("a one-character string")),
            }
        }
        Type::String => Val::String(value.as_str().ok_or_else(|| wrong("a string"))?.to_string()),
        Type::List(list) => {
            let items = value.as_array().ok_or_else(|| wrong("an array"))?;
            let inner = list.ty();
            Val::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| to_val(v, &inner, &format!("{at}/{i}")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Tuple(tuple) => {
            let items = value.as_array().ok_or_else(|| wrong("an array"))?;
            let types: Vec<Type> = tuple.types().collect();
            if items.len() != types.len() {
                return Err(wrong(&format!("an array of {} items", types.len())));
            }
            Val::Tuple(
                items
                    .iter()
                    .zip(&types)
                    .enumerate()
                    .map(|(i, (v, t))| to_val(v, t, &format!("{at}/{i}")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Record(record) => {
            let object = value.as_object().ok_or_else(|| wrong("an object"))?;
            let mut fields = Vec::new();
            for field in record.fields() {
                let v = object.get(field.name).unwrap_or(&Value::Null);
                fields.push((field.name.to_string(), to_val(v, &field.ty, &format!("{at}/{}", field.name))?));
            }
            Val::Record(fields)
        }
        Type::Variant(variant) => {
            let (case, payload) = match value {
                Value::String(case) => (case.as_str(), None),
                Value::Object(map) if map.len() == 1 => {
                    let (case, payload) = map.iter().next().ok_or_else(|| wrong("a variant case"))?;
                    (case.as_str(), Some(payload))
                }
                _ => return Err(wrong("a case name or {\"case\": payload}")),
            };
            let found =
                variant.cases().find(|c| c.name == case).ok_or_else(|| format!("{at}: unknown case {case:?}"))?;
            let payload = match (&found.ty, payload) {
                (None, None) => None,
                (Some(t), Some(p)) => Some(Box::new(to_val(p, t, &format!("{at}/{case}"))?)),
                (Some(Type::Option(_)), None) => Some(Box::new(Val::Option(None))),
                _ => {
                    return Err(format!(
                        "{at}: case {case:?} {} a payload",
                        if found.ty.is_some() { "needs" } else { "takes no" }
                    ))
                }
            };
            Val::Variant(case.to_string(), payload)
        }
        Type::Enum(e) => {
            let case = value.as_str().ok_or_else(|| wrong("a case name"))?;
            if !e.names().any(|n| n == case) {
                return Err(format!("{at}: unknown case {case:?}"));
            }
            Val::Enum(case.to_string())
        }
        Type::Flags(flags) => {
            let names: Vec<&str> = flags.names().collect();
            let items = value.as_array().ok_or_else(|| wrong("an array of flag names"))?;
            let mut set = Vec::new();
            for item in items {
                let name =
                    item.as_str().filter(|n| names.contains(n)).ok_or_else(|| format!("{at}: unknown flag {item}"))?;
                set.push(name.to_string());
            }
            Val::Flags(set)
        }
        Type::Option(option) => match value {
            Value::Null => Val::Option(None),
            v => Val::Option(Some(Box::new(to_val(v, &option.ty(), at)?))),
        },
        Type::Result(result) => {
            let object =
                value.as_object().filter(|o| o.len() == 1).ok_or_else(|| wrong("{\"ok\": …} or {\"err\": …}"))?;
            let side = |name: &str, ty: Option<Type>| -> Result<Option<Box<Val>>, String> {
                match ty {
                    Some(t) => Ok(Some(Box::new(to_val(&object[name], &t, &format!("{at}/{name}"))?))),
                    None => Ok(None),
                }
            };
            if object.contains_key("ok") {
                Val::Result(Ok(side("ok", result.ok())?))
            } else if object.contains_key("err") {
                Val::Result(Err(side("err", result.err())?))
            } else {
                return Err(wrong("{\"ok\": …} or {\"err\": …}"));
            }
        }
        _ => return Err(format!("{at}: this type has no JSON form")),
    })
}

/// WIT value → JSON (for error payloads and the fuzz target's round trip; results are written
/// as text directly, [`json_text`]).
pub fn to_json(val: &Val) -> Value {
    serde_json::to_value(AsJson(val)).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain component exporting `f(small: s8, big: u64, ratio: f32)`: its published input
    /// schema, compiled, and its parameters.
    fn tool() -> (jsonschema::Validator, Vec<(String, Type)>) {
        let wit = "package test:plain; world w { export f: func(small: s8, big: u64, ratio: f32); }";
        let mut resolve = wit_parser::Resolve::default();
        let package = resolve.push_str("w.wit", wit).unwrap();
        let world = resolve.select_world(&[package], None).unwrap();
        let mut module = wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
            false,
        )
        .unwrap();
        let bytes = wit_component::ComponentEncoder::default().module(&module).unwrap().encode().unwrap();
        let engine = Engine::default();
        let mut tools = exported_tools(&engine, &Component::new(&engine, bytes).unwrap());
        let tool = tools.remove(0);
        let schema: Value = serde_json::from_str(&tool.descriptor.input_schema).unwrap();
        (jsonschema::validator_for(&schema).unwrap(), tool.params)
    }

    /// Found by `fuzz/` (arguments): JSON Schema's `integer` accepts `8.0`, the conversion did not.
    #[test]
    fn integral_floats_convert_as_the_published_schema_accepts_them() {
        let (schema, params) = tool();
        let arguments = json!({"small": 8.0, "big": 6e2, "ratio": 1});
        assert!(schema.is_valid(&arguments));
        let (small, big) = (&params[0].1, &params[1].1);
        assert_eq!(to_val(&arguments["small"], small, "/small").unwrap(), Val::S8(8));
        assert_eq!(to_val(&arguments["big"], big, "/big").unwrap(), Val::U64(600));
        assert_eq!(to_val(&json!(-0.0), small, "/small").unwrap(), Val::S8(0));
        assert!(to_val(&json!(8.5), small, "/small").unwrap_err().contains("expected an integer"));
        assert!(to_val(&json!(300.0), small, "/small").unwrap_err().contains("out of range"));
        assert!(to_val(&json!(-1.0), big, "/big").unwrap_err().contains("out of range"));
    }

    /// Found by `fuzz/` (arguments): a number beyond `f32`'s range reached the guest as an infinity.
    #[test]
    fn results_are_written_as_json_text_under_the_cap() {
        let val = Val::Record(vec![
            ("n".into(), Val::Float64(f64::NAN)),
            ("shape".into(), Val::Variant("circle".into(), Some(Box::new(Val::Float32(1.5))))),
            ("tag".into(), Val::Enum("down".into())),
            ("r".into(), Val::Result(Err(Some(Box::new(Val::String("no \"way\"".into())))))),
            ("f".into(), Val::Flags(vec!["bold".into()])),
            ("o".into(), Val::Option(None)),
        ]);
        let text = json_text(Some(&val), 1 << 10).unwrap();
        assert_eq!(
            text,
            r#"{"n":null,"shape":{"circle":1.5},"tag":"down","r":{"err":"no \"way\""},"f":["bold"],"o":null}"#
        );
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), to_json(&val));
        assert_eq!(json_text(None, 4).unwrap(), "null");
        // Many small elements are counted as they are written, not after.
        let list = Val::List(vec![Val::U8(7); 1000]);
        assert!(json_text(Some(&list), 1999).is_err());
        assert_eq!(json_text(Some(&list), 2001).unwrap().len(), 2001);
    }

    #[test]
    fn f32_arguments_beyond_its_range_are_refused_not_made_infinite() {
        let (schema, params) = tool();
        let ratio = &params[2].1;
        for too_big in [1e39, -1e39, 1.7e308] {
            assert!(!schema.is_valid(&json!({"small": 1, "big": 1, "ratio": too_big})), "{too_big}");
            assert!(to_val(&json!(too_big), ratio, "/ratio").unwrap_err().contains("out of range for f32"));
        }
        let max = json!(f64::from(f32::MAX));
        assert!(schema.is_valid(&json!({"small": 1, "big": 1, "ratio": max})));
        assert_eq!(to_val(&max, ratio, "/ratio").unwrap(), Val::Float32(f32::MAX));
    }
}
