//! What a plugin offers besides tools: resources, resource templates and prompts (the optional
//! `resources` and `prompts` exports of `cordon:plugin`), as published to MCP clients.
//!
//! - Prompts are published as `<prefix><name>` like tools (`test_simple_prompt`), and token
//!   scopes match them by that name.
//! - Resources keep the URIs the plugin gives them (a URI is the client's handle, and prefixing
//!   a scheme would break it). Token scopes match a resource or template by `<prefix><name>`,
//!   its name published like a tool's. A URI or template another plugin already serves is
//!   skipped with a warning: the first loaded keeps it.
//! - A template is matched with RFC 6570 level-1 expansion: `{var}` matches one or more
//!   characters other than `/`, `?` and `#`; `{+var}` matches any characters.

use super::names::published_name;
use super::{Catalog, LoadedPlugin};
use anyhow::{bail, Result};
use cordon_sandbox::bindings::{PromptDescriptor, ResourceDescriptor, TemplateDescriptor};
use serde_json::{json, Value};
use std::collections::HashSet;

/// A published fixed resource.
pub struct ResourceEntry {
    /// `<prefix><name>`, what token scopes match.
    pub scope_name: String,
    /// Its URI.
    pub uri: String,
    /// The MCP `Resource` object, as JSON.
    pub descriptor: Value,
}

/// A published resource template.
pub struct TemplateEntry {
    /// `<prefix><name>`, what token scopes match.
    pub scope_name: String,
    /// The template, parsed for matching.
    pub template: UriTemplate,
    /// The MCP `ResourceTemplate` object, as JSON.
    pub descriptor: Value,
}

/// A published prompt.
pub struct PromptEntry {
    /// `<prefix><name>`, its published name.
    pub name: String,
    /// The plugin's own name for it.
    pub local_name: String,
    /// The names of its required arguments.
    pub required: Vec<String>,
    /// The MCP `Prompt` object, as JSON.
    pub descriptor: Value,
}

/// Resources, templates and prompts of one plugin.
#[derive(Default)]
pub struct Offers {
    /// Fixed resources.
    pub resources: Vec<ResourceEntry>,
    /// Resource templates.
    pub templates: Vec<TemplateEntry>,
    /// Prompts.
    pub prompts: Vec<PromptEntry>,
}

impl Offers {
    /// Whether there is nothing.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.templates.is_empty() && self.prompts.is_empty()
    }
}

fn put(object: &mut Value, key: &str, value: &Option<String>) {
    if let Some(value) = value {
        object[key] = json!(value);
    }
}

/// Publishes what a plugin described, against what other plugins already serve.
pub fn publish(
    plugin: &str,
    prefix: &str,
    resources: Vec<ResourceDescriptor>,
    templates: Vec<TemplateDescriptor>,
    prompts: Vec<PromptDescriptor>,
    loaded: &Catalog,
) -> Result<Offers> {
    let mut offers = Offers::default();
    let taken_uris: HashSet<&str> =
        loaded.plugins.iter().flat_map(|p| p.offers.resources.iter().map(|r| r.uri.as_str())).collect();
    let taken_templates: HashSet<&str> =
        loaded.plugins.iter().flat_map(|p| p.offers.templates.iter().map(|t| t.template.source.as_str())).collect();
    let mut seen = HashSet::new();
    for r in resources {
        if taken_uris.contains(r.uri.as_str()) || !seen.insert(r.uri.clone()) {
            tracing::warn!(plugin, uri = %r.uri, "resource URI already served: skipped");
            continue;
        }
        let mut descriptor = json!({"uri": r.uri, "name": r.name});
        put(&mut descriptor, "title", &r.title);
        put(&mut descriptor, "description", &r.description);
        put(&mut descriptor, "mimeType", &r.mime_type);
        offers.resources.push(ResourceEntry { scope_name: scope_name(prefix, &r.name), uri: r.uri, descriptor });
    }
    for t in templates {
        if taken_templates.contains(t.uri_template.as_str()) || !seen.insert(t.uri_template.clone()) {
            tracing::warn!(plugin, template = %t.uri_template, "resource template already served: skipped");
            continue;
        }
        let template = UriTemplate::parse(&t.uri_template)?;
        let mut descriptor = json!({"uriTemplate": t.uri_template, "name": t.name});
        put(&mut descriptor, "title", &t.title);
        put(&mut descriptor, "description", &t.description);
        put(&mut descriptor, "mimeType", &t.mime_type);
        offers.templates.push(TemplateEntry { scope_name: scope_name(prefix, &t.name), template, descriptor });
    }
    let taken_prompts: HashSet<&str> =
        loaded.plugins.iter().flat_map(|p| p.offers.prompts.iter().map(|p| p.name.as_str())).collect();
    let mut seen = HashSet::new();
    for p in prompts {
        let name = published_name(prefix, &p.name)?;
        if taken_prompts.contains(name.as_str()) {
            bail!("prompt name {name:?} collides with a prompt of the same name from another plugin");
        }
        if !seen.insert(name.clone()) {
            bail!("the plugin describes the prompt {:?} twice", p.name);
        }
        let arguments: Vec<Value> = p
            .arguments
            .iter()
            .map(|a| {
                let mut argument = json!({"name": a.name, "required": a.required});
                put(&mut argument, "description", &a.description);
                argument
            })
            .collect();
        let required = p.arguments.iter().filter(|a| a.required).map(|a| a.name.clone()).collect();
        let mut descriptor = json!({"name": name, "arguments": arguments});
        put(&mut descriptor, "title", &p.title);
        put(&mut descriptor, "description", &p.description);
        offers.prompts.push(PromptEntry { name, local_name: p.name, required, descriptor });
    }
    Ok(offers)
}

fn scope_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}_{name}")
    }
}

/// Which plugin serves `uri`, and the scope name a caller must be allowed: a fixed resource
/// first, then the first template that matches.
pub fn resolve<'a>(catalog: &'a Catalog, uri: &str) -> Option<(&'a std::sync::Arc<LoadedPlugin>, &'a str)> {
    for plugin in &catalog.plugins {
        if let Some(r) = plugin.offers.resources.iter().find(|r| r.uri == uri) {
            return Some((plugin, &r.scope_name));
        }
    }
    for plugin in &catalog.plugins {
        if let Some(t) = plugin.offers.templates.iter().find(|t| t.template.matches(uri)) {
            return Some((plugin, &t.scope_name));
        }
    }
    None
}

/// An RFC 6570 URI template, for matching URIs against it (level 1, plus `{+var}`).
#[derive(Debug, Clone)]
pub struct UriTemplate {
    /// The template as written.
    pub source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    /// A variable: `reserved` (`{+var}`) matches any characters, else not `/`, `?` or `#`.
    Variable {
        reserved: bool,
    },
}

impl UriTemplate {
    /// Parses a template; unbalanced braces or an empty expression are errors.
    pub fn parse(source: &str) -> Result<UriTemplate> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                bail!("resource template {source:?} has an unclosed `{{`");
            };
            let expression = &rest[open + 1..open + close];
            let (reserved, name) = match expression.strip_prefix('+') {
                Some(name) => (true, name),
                None => (false, expression),
            };
            if name.is_empty() || name.contains(['{', '/', ' ']) {
                bail!("resource template {source:?} has an unsupported expression {{{expression}}}");
            }
            if matches!(parts.last(), Some(Part::Variable { .. })) {
                bail!("resource template {source:?} has two variables with nothing between them");
            }
            parts.push(Part::Variable { reserved });
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            bail!("resource template {source:?} has an unmatched `}}`");
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(UriTemplate { source: source.to_string(), parts })
    }

    /// Whether `uri` is an expansion of this template.
    pub fn matches(&self, uri: &str) -> bool {
        match_parts(&self.parts, uri)
    }
}

fn match_parts(parts: &[Part], uri: &str) -> bool {
    match parts.split_first() {
        None => uri.is_empty(),
        Some((Part::Literal(literal), rest)) => {
            uri.strip_prefix(literal.as_str()).is_some_and(|u| match_parts(rest, u))
        }
        Some((Part::Variable { reserved }, rest)) => {
            // The shortest value that lets the rest match (variables are never adjacent).
            for (end, c) in uri.char_indices().map(|(i, c)| (i + c.len_utf8(), c)) {
                if !reserved && matches!(c, '/' | '?' | '#') {
                    return false;
                }
                if match_parts(rest, &uri[end..]) {
                    return true;
                }
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_their_expansions_only() {
        let t = UriTemplate::parse("test://template/{id}/data").unwrap();
        assert!(t.matches("test://template/123/data"));
        assert!(!t.matches("test://template//data"), "a variable is never empty");
        assert!(!t.matches("test://template/1/2/data"), "a simple variable stops at /");
        assert!(!t.matches("test://template/123/data/more"));
        assert!(!t.matches("other://template/123/data"));
        let reserved = UriTemplate::parse("file:///{+path}").unwrap();
        assert!(reserved.matches("file:///a/b/c.txt"));
        let trailing = UriTemplate::parse("users://{name}").unwrap();
        assert!(trailing.matches("users://ana"));
        assert!(!trailing.matches("users://"));
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in ["x://{id", "x://id}", "x://{}", "x://{a}{b}"] {
            assert!(UriTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
