//! Tool scopes: which tools a token may see and call, as glob patterns over published tool names
//! (`demo_*`, `payments_charge`). A token without patterns is unrestricted.

use anyhow::{Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::sync::Arc;

/// The tools a caller may list and call.
#[derive(Clone, Debug, Default)]
pub struct ToolScope {
    /// `None`: every tool.
    patterns: Option<Arc<(Vec<String>, GlobSet)>>,
}

impl ToolScope {
    /// Every tool.
    pub fn all() -> ToolScope {
        ToolScope { patterns: None }
    }

    /// The tools matching any of `patterns`; an empty list means every tool.
    pub fn from_patterns(patterns: &[String]) -> Result<ToolScope> {
        if patterns.is_empty() {
            return Ok(Self::all());
        }
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            builder.add(Glob::new(pattern).with_context(|| format!("tool pattern {pattern:?} is not a valid glob"))?);
        }
        let set = builder.build().context("cannot compile the tool patterns")?;
        Ok(ToolScope { patterns: Some(Arc::new((patterns.to_vec(), set))) })
    }

    /// No tool at all (an OAuth token none of whose scopes the config knows).
    pub fn none() -> ToolScope {
        ToolScope { patterns: Some(Arc::new((Vec::new(), GlobSet::empty()))) }
    }

    /// The patterns (empty when unrestricted).
    pub fn patterns(&self) -> &[String] {
        self.patterns.as_ref().map_or(&[], |p| p.0.as_slice())
    }

    /// Whether `tool` is in scope.
    pub fn allows(&self, tool: &str) -> bool {
        self.patterns.as_ref().is_none_or(|p| p.1.is_match(tool))
    }

    /// Whether some tools are out of scope.
    pub fn is_restricted(&self) -> bool {
        self.patterns.is_some()
    }

    /// The patterns, for error messages (`*` when unrestricted).
    pub fn describe(&self) -> String {
        match &self.patterns {
            None => "*".to_string(),
            Some(p) if p.0.is_empty() => "(no tools)".to_string(),
            Some(p) => p.0.join(" "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_published_tool_names() {
        let s = ToolScope::from_patterns(&["demo_*".into(), "payments_charge".into()]).unwrap();
        assert!(s.allows("demo_echo") && s.allows("payments_charge"));
        assert!(!s.allows("payments_refund") && !s.allows("hostile_spin") && !s.allows("xdemo_echo"));
        assert!(ToolScope::from_patterns(&[]).unwrap().allows("anything"));
        assert!(ToolScope::from_patterns(&["[".into()]).is_err());
    }
}
