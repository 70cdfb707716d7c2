//! The tool-contract quality gate: a model calls a tool by its name, description and input
//! schema, so a vague description or an undocumented argument is a bug an operator should see.
//!
//! Findings are **errors** (a missing or too-short tool description; an input property with
//! neither a description nor an enum) or **warnings** (an object schema the host could not close
//! — it still accepts unknown properties — and a free string property that looks like a small
//! fixed set, where an enum would tell the model the allowed values). `[lint] mode` decides what
//! happens at load: `warn` (default) logs every finding, `refuse` also refuses a plugin with any
//! error, `off` checks nothing. `cordon lint FILE.wasm` prints the same findings.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `[lint]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LintConfig {
    /// What findings do at load. Default `warn`.
    pub mode: LintMode,
    /// Shortest useful tool description, characters. Default 20.
    pub min_description_chars: usize,
}

impl Default for LintConfig {
    fn default() -> Self {
        Self { mode: LintMode::Warn, min_description_chars: 20 }
    }
}

/// What the quality gate does with findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LintMode {
    /// Check nothing.
    Off,
    /// Log findings; load anyway.
    Warn,
    /// Refuse a plugin that has any error-level finding.
    Refuse,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Refused under `mode = "refuse"`.
    Error,
    /// Reported only.
    Warning,
}

/// One finding about one tool.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The published tool name.
    pub tool: String,
    /// Error or warning.
    pub severity: Severity,
    /// Where in the input schema (JSON pointer), if it is about the schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

/// Property names whose values are usually one of a few words.
const CATEGORY_NAMES: &[&str] = &[
    "mode",
    "kind",
    "type",
    "level",
    "unit",
    "units",
    "status",
    "state",
    "sort",
    "order",
    "direction",
    "format",
    "method",
    "priority",
    "severity",
    "category",
    "currency",
    "lang",
    "language",
    "region",
];

/// The findings for one tool: its published name, its description (after operator overrides),
/// and its input schema as published (after the host made it strict).
pub fn lint_tool(tool: &str, description: &str, schema: &Map<String, Value>, config: &LintConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    let length = description.trim().chars().count();
    if length < config.min_description_chars {
        findings.push(Finding {
            tool: tool.into(),
            severity: Severity::Error,
            pointer: None,
            message: if length == 0 {
                "the tool has no description: say what it does, when to use it and what it returns".into()
            } else {
                format!(
                    "the description is {length} characters; at least {} are needed to tell a model when to use it",
                    config.min_description_chars
                )
            },
        });
    }
    check_object(tool, schema, "", &mut findings);
    findings
}

fn check_object(tool: &str, schema: &Map<String, Value>, at: &str, out: &mut Vec<Finding>) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let open = !matches!(schema.get("additionalProperties"), Some(Value::Bool(false)))
        && !matches!(schema.get("unevaluatedProperties"), Some(Value::Bool(false)));
    if open && (properties.is_some() || at.is_empty()) {
        out.push(Finding {
            tool: tool.into(),
            severity: Severity::Warning,
            pointer: Some(if at.is_empty() { "/".into() } else { at.into() }),
            message: "the object accepts properties it does not declare; set \"additionalProperties\": false".into(),
        });
    }
    let Some(properties) = properties else { return };
    for (name, property) in properties {
        let pointer = format!("{at}/{name}");
        let Some(property) = property.as_object() else { continue };
        let described = property.get("description").and_then(Value::as_str).is_some_and(|d| !d.trim().is_empty());
        let enumerated = property.contains_key("enum") || property.contains_key("const");
        if !described && !enumerated {
            out.push(Finding {
                tool: tool.into(),
                severity: Severity::Error,
                pointer: Some(pointer.clone()),
                message: format!("property {name:?} has neither a description nor an enum"),
            });
        }
        let free_string = property.get("type").and_then(Value::as_str) == Some("string")
            && !enumerated
            && !property.contains_key("pattern")
            && !property.contains_key("format");
        let description = property.get("description").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
        let sounds_fixed = CATEGORY_NAMES.contains(&name.to_ascii_lowercase().as_str())
            || description.contains("one of")
            || description.contains("either");
        if free_string && sounds_fixed {
            out.push(Finding {
                tool: tool.into(),
                severity: Severity::Warning,
                pointer: Some(pointer.clone()),
                message: format!("{name:?} is a free string but looks like a small fixed set; declare an enum"),
            });
        }
        if property.get("type").and_then(Value::as_str) == Some("object") {
            check_object(tool, property, &pointer, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lint(description: &str, schema: Value) -> Vec<Finding> {
        lint_tool("t", description, schema.as_object().unwrap(), &LintConfig::default())
    }

    #[test]
    fn a_documented_closed_tool_passes() {
        let schema = json!({"type": "object", "additionalProperties": false, "properties": {
            "text": {"type": "string", "description": "What to echo back."},
            "mode": {"type": "string", "enum": ["upper", "lower"]}}});
        assert!(lint("Echoes the text back, optionally changing case.", schema).is_empty());
    }

    #[test]
    fn vague_and_undocumented_tools_are_found() {
        let schema = json!({"type": "object", "properties": {
            "text": {"type": "string"},
            "unit": {"type": "string", "description": "The unit."}}});
        let findings = lint("Echo.", schema);
        let messages: Vec<(Severity, Option<&str>)> =
            findings.iter().map(|f| (f.severity, f.pointer.as_deref())).collect();
        assert!(messages.contains(&(Severity::Error, None)), "{findings:?}");
        assert!(messages.contains(&(Severity::Error, Some("/text"))), "{findings:?}");
        assert!(messages.contains(&(Severity::Warning, Some("/unit"))), "{findings:?}");
        assert!(messages.contains(&(Severity::Warning, Some("/"))), "{findings:?}");
    }
}
