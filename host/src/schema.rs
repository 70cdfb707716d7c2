//! Input and output JSON Schemas: made strict, compiled once per plugin load, checked per call.
//!
//! Strictness: unknown properties are rejected unless the schema allows them. The
//! host makes that true by adding `"additionalProperties": false` to every object schema that
//! lists `properties` and says nothing about extra ones itself. Object schemas that are combined
//! (`allOf`, `anyOf`, `oneOf`, `$ref`, `if`) are taken as written, because closing one branch
//! would reject the properties its siblings define; such a schema should state
//! `additionalProperties` or `unevaluatedProperties` itself. The strict schema is the one
//! published in `tools/list`, so clients see exactly what the host enforces.

use anyhow::{bail, Context, Result};
use cordon_core::{ToolError, Violation};
use jsonschema::Validator;
use serde_json::{Map, Value};

/// Keywords under which a value is itself a schema in "value position" (not a combinator branch).
const SCHEMA_MAPS: &[&str] = &["properties", "$defs", "definitions", "patternProperties"];
const SCHEMA_VALUES: &[&str] = &["items", "additionalItems", "contains", "additionalProperties", "not"];
const COMBINATORS: &[&str] = &["allOf", "anyOf", "oneOf", "$ref", "if"];
const OPEN_KEYWORDS: &[&str] = &["additionalProperties", "unevaluatedProperties", "patternProperties"];

/// A compiled schema and its published (strict) form.
pub struct Schema {
    /// The schema as published to clients.
    pub json: Map<String, Value>,
    validator: Validator,
}

impl Schema {
    /// Parses a tool's input schema: must be a JSON object schema of `"type": "object"`.
    pub fn input(text: &str) -> Result<Schema> {
        let mut value: Value = serde_json::from_str(text).context("input schema is not valid JSON")?;
        if value.get("type").and_then(Value::as_str) != Some("object") {
            bail!("input schema must have \"type\": \"object\"");
        }
        make_strict(&mut value);
        Self::compile(value).context("input schema is not a valid JSON Schema")
    }

    /// Parses a tool's output schema (taken as written).
    pub fn output(text: &str) -> Result<Schema> {
        let value: Value = serde_json::from_str(text).context("output schema is not valid JSON")?;
        if value.get("type").and_then(Value::as_str) != Some("object") {
            bail!("output schema must have \"type\": \"object\"");
        }
        Self::compile(value).context("output schema is not a valid JSON Schema")
    }

    fn compile(value: Value) -> Result<Schema> {
        let validator = jsonschema::validator_for(&value).map_err(|e| anyhow::anyhow!("{e}"))?;
        let Value::Object(json) = value else { bail!("schema must be a JSON object") };
        Ok(Schema { json, validator })
    }

    /// Every violation of `instance`, each with its JSON pointer.
    pub fn violations(&self, instance: &Value) -> Vec<Violation> {
        self.validator
            .iter_errors(instance)
            .map(|e| Violation { pointer: e.instance_path().to_string(), message: e.to_string() })
            .collect()
    }

    /// `Ok` when `arguments` are valid, else `invalid_arguments` listing every violation.
    pub fn check_arguments(&self, arguments: &Value) -> Result<(), ToolError> {
        if self.validator.is_valid(arguments) {
            return Ok(());
        }
        Err(ToolError::invalid_arguments(self.violations(arguments)))
    }
}

/// Closes every uncombined object schema that lists `properties` (see the module docs).
pub fn make_strict(schema: &mut Value) {
    let Value::Object(obj) = schema else { return };
    let combined = COMBINATORS.iter().any(|k| obj.contains_key(*k));
    let open_stated = OPEN_KEYWORDS.iter().any(|k| obj.contains_key(*k));
    if obj.contains_key("properties") && !combined && !open_stated {
        obj.insert("additionalProperties".into(), Value::Bool(false));
    }
    for key in SCHEMA_MAPS {
        if let Some(Value::Object(children)) = obj.get_mut(*key) {
            children.values_mut().for_each(make_strict);
        }
    }
    for key in SCHEMA_VALUES {
        match obj.get_mut(*key) {
            Some(Value::Array(items)) => items.iter_mut().for_each(make_strict),
            Some(child) => make_strict(child),
            None => {}
        }
    }
    if let Some(Value::Array(items)) = obj.get_mut("prefixItems") {
        items.iter_mut().for_each(make_strict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(schema: Value) -> Schema {
        Schema::input(&schema.to_string()).unwrap()
    }

    #[test]
    fn unknown_properties_are_rejected_unless_allowed() {
        let strict = input(json!({"type": "object", "properties": {"a": {"type": "number"}}}));
        assert_eq!(strict.json["additionalProperties"], json!(false));
        let v = strict.violations(&json!({"a": 1, "b": 2}));
        assert_eq!(v.len(), 1);
        assert!(v[0].message.contains('b'), "{:?}", v);

        let open = input(json!({"type": "object", "properties": {"a": {}}, "additionalProperties": true}));
        assert!(open.violations(&json!({"a": 1, "b": 2})).is_empty());
    }

    #[test]
    fn nested_objects_are_closed_too() {
        let s = input(json!({"type": "object", "properties": {
            "inner": {"type": "object", "properties": {"x": {"type": "string"}}},
            "list": {"type": "array", "items": {"type": "object", "properties": {"y": {}}}}
        }}));
        let v = s.violations(&json!({"inner": {"x": "ok", "z": 1}, "list": [{"y": 1, "w": 2}]}));
        let pointers: Vec<_> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/inner"), "{pointers:?}");
        assert!(pointers.contains(&"/list/0"), "{pointers:?}");
    }

    #[test]
    fn combined_schemas_are_left_as_written() {
        let mut s = json!({"type": "object", "allOf": [{"properties": {"a": {}}}], "properties": {"b": {}}});
        make_strict(&mut s);
        assert!(s.get("additionalProperties").is_none());
        assert!(s["allOf"][0].get("additionalProperties").is_none());
    }

    #[test]
    fn every_violation_is_reported_with_its_pointer() {
        let s = input(json!({"type": "object", "required": ["a", "b"],
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}));
        let v = s.violations(&json!({"a": "one"}));
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().any(|v| v.pointer == "/a"));
        assert!(v.iter().any(|v| v.pointer.is_empty() && v.message.contains("\"b\"")));
    }

    #[test]
    fn non_object_schemas_are_refused() {
        assert!(Schema::input(r#"{"type": "string"}"#).is_err());
        assert!(Schema::input("not json").is_err());
        assert!(Schema::input(r#"{"type": "object", "properties": {"a": {"type": 12}}}"#).is_err());
    }
}
