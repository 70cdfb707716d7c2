//! Is a tool's new input schema still a contract its callers can rely on?
//!
//! A model (and any client that cached `tools/list`) calls a tool by its schema. A replacement
//! that accepts less than before breaks calls that used to work, so on reload Cordon compares
//! the input schema a tool had with the one its new version declares and names every change that
//! accepts less: a property removed (or renamed: it is removed under its old name), a new
//! required property, a type narrowed, an enum that lost values, a bound tightened, a pattern or
//! `const` added or changed, extra properties newly refused. Additions that accept more — a new
//! optional property, a wider type, a looser bound — are compatible. A new tool name is the way
//! to change a contract.

use serde_json::{Map, Value};

/// Every change from `old` to `new` that makes some previously valid arguments invalid, as
/// JSON-pointer-prefixed sentences. Empty when `new` accepts at least what `old` did (as far as
/// these rules can tell: the check is conservative, not a full schema-inclusion proof).
pub fn narrowing_changes(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    let mut changes = Vec::new();
    compare(old, new, "", &mut changes);
    changes
}

fn compare(old: &Map<String, Value>, new: &Map<String, Value>, at: &str, out: &mut Vec<String>) {
    let here = if at.is_empty() { "/" } else { at };
    // Types: every type the old schema accepted must still be accepted.
    let (old_types, new_types) = (types(old), types(new));
    if let Some(new_types) = &new_types {
        match &old_types {
            None => out.push(format!("{here}: a type constraint {new_types:?} was added")),
            Some(old_types) => {
                for t in old_types {
                    let kept = new_types.contains(t) || (t == "integer" && new_types.iter().any(|n| n == "number"));
                    if !kept {
                        out.push(format!("{here}: type {t:?} is no longer accepted"));
                    }
                }
            }
        }
    }
    // Enumerations and constants.
    match (old.get("enum").and_then(Value::as_array), new.get("enum").and_then(Value::as_array)) {
        (Some(old_values), Some(new_values)) => {
            for v in old_values.iter().filter(|v| !new_values.contains(v)) {
                out.push(format!("{here}: enum value {v} was removed"));
            }
        }
        (None, Some(_)) => out.push(format!("{here}: an enum was added")),
        _ => {}
    }
    for key in ["const", "pattern", "format"] {
        if let Some(value) = new.get(key) {
            if old.get(key) != Some(value) {
                out.push(format!("{here}: {key} {value} was added or changed"));
            }
        }
    }
    // Bounds: an upper bound may only grow, a lower bound only shrink.
    for key in ["maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"] {
        if let Some(new_bound) = new.get(key).and_then(Value::as_f64) {
            if old.get(key).and_then(Value::as_f64).is_none_or(|old_bound| new_bound < old_bound) {
                out.push(format!("{here}: {key} tightened to {new_bound}"));
            }
        }
    }
    for key in ["minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"] {
        if let Some(new_bound) = new.get(key).and_then(Value::as_f64) {
            if old.get(key).and_then(Value::as_f64).is_none_or(|old_bound| new_bound > old_bound) {
                out.push(format!("{here}: {key} tightened to {new_bound}"));
            }
        }
    }
    // Object members.
    let (old_props, new_props) = (properties(old), properties(new));
    for (name, old_schema) in &old_props {
        let path = format!("{at}/{name}");
        match new_props.iter().find(|(n, _)| n == name) {
            None if !allows_extra(new) => out.push(format!("{path}: property removed (or renamed)")),
            None => {}
            Some((_, new_schema)) => {
                if let (Some(o), Some(n)) = (old_schema.as_object(), new_schema.as_object()) {
                    compare(o, n, &path, out);
                }
            }
        }
    }
    let old_required = required(old);
    for name in required(new).into_iter().filter(|n| !old_required.contains(n)) {
        out.push(format!("{at}/{name}: property is newly required"));
    }
    if allows_extra(old) && !allows_extra(new) {
        out.push(format!("{here}: additional properties are no longer accepted"));
    }
    // Array items.
    if let (Some(o), Some(n)) =
        (old.get("items").and_then(Value::as_object), new.get("items").and_then(Value::as_object))
    {
        compare(o, n, &format!("{at}/items"), out);
    }
}

fn types(schema: &Map<String, Value>) -> Option<Vec<String>> {
    match schema.get("type")? {
        Value::String(t) => Some(vec![t.clone()]),
        Value::Array(list) => Some(list.iter().filter_map(|t| t.as_str().map(str::to_string)).collect()),
        _ => None,
    }
}

fn properties(schema: &Map<String, Value>) -> Vec<(String, Value)> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn required(schema: &Map<String, Value>) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Whether an object schema accepts properties it does not list.
fn allows_extra(schema: &Map<String, Value>) -> bool {
    !matches!(schema.get("additionalProperties"), Some(Value::Bool(false)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn changes(old: Value, new: Value) -> Vec<String> {
        narrowing_changes(old.as_object().unwrap(), new.as_object().unwrap())
    }

    fn object(props: Value, required: &[&str]) -> Value {
        json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
    }

    #[test]
    fn widening_is_compatible() {
        let old = object(json!({"a": {"type": "integer", "maximum": 10}, "b": {"enum": ["x"]}}), &["a"]);
        let new = object(
            json!({"a": {"type": "number", "maximum": 20}, "b": {"enum": ["x", "y"]}, "c": {"type": "string"}}),
            &["a"],
        );
        assert_eq!(changes(old.clone(), new), Vec::<String>::new());
        assert_eq!(changes(old.clone(), old), Vec::<String>::new());
    }

    #[test]
    fn narrowing_is_named_with_its_pointer() {
        let old = object(
            json!({"a": {"type": ["string", "null"]}, "b": {"type": "string"}, "n": {"type": "object",
                   "properties": {"deep": {"type": "integer"}}}}),
            &[],
        );
        let new = object(
            json!({"a": {"type": "string"}, "c": {"type": "string"}, "n": {"type": "object",
                   "properties": {"deep": {"type": "integer", "minimum": 1}}}}),
            &["c"],
        );
        let found = changes(old, new);
        assert!(found.contains(&"/a: type \"null\" is no longer accepted".to_string()), "{found:?}");
        assert!(found.contains(&"/b: property removed (or renamed)".to_string()), "{found:?}");
        assert!(found.contains(&"/c: property is newly required".to_string()), "{found:?}");
        assert!(found.contains(&"/n/deep: minimum tightened to 1".to_string()), "{found:?}");
        let enums = changes(json!({"enum": ["x", "y"]}), json!({"enum": ["x"]}));
        assert_eq!(enums, vec!["/: enum value \"y\" was removed"]);
    }
}
