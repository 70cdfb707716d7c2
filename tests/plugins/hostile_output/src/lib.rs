//! Fixture: results the SDK would refuse to produce, so the end-to-end tests can check that the
//! host turns each into a typed error and keeps serving. It uses `wit-bindgen` directly: the
//! SDK only ever returns valid UTF-8 and JSON that matches the schema it derived.
//!
//! - `bad_utf8`, `bad_utf8_error`: a result (or an error message) whose bytes are not UTF-8.
//!   A WIT `string` must be UTF-8, so the host cannot even lift it.
//! - `bad_json`: structured output that is not JSON.
//! - `deep_json`: JSON nested 100,000 arrays deep (valid, but deeper than any parser should
//!   follow).
//! - `off_schema`: structured output that violates the tool's own output schema.
//! - `no_structured`: a tool with an output schema that returns only text.
//! - `fill`: grows linear memory to exactly `mib` MiB plus `extra_pages` pages and writes to
//!   every new page, so a test can fill it right up to the host's cap on every call.
//! - `remember`: counts its calls in a global and leaves a mark in a static buffer, then reports
//!   both; in a fresh instance per call the count is always 1 and no mark is ever found.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "cordon:plugin/plugin",
});

use cordon::plugin::types::{Annotations, CallContext, CallError, ToolDescriptor, ToolOutput};
use exports::cordon::plugin::tools::Guest;

const NO_ARGUMENTS: &str = r#"{"type":"object","properties":{},"additionalProperties":false}"#;

const FILL_ARGUMENTS: &str = r#"{
  "type": "object",
  "properties": {
    "mib": {"type": "integer", "minimum": 1, "maximum": 4096, "description": "Total linear memory to reach, MiB."},
    "extra_pages": {"type": "integer", "minimum": 0, "maximum": 16, "description": "64 KiB pages to add beyond `mib`."}
  },
  "required": ["mib"],
  "additionalProperties": false
}"#;

const COUNT_SCHEMA: &str = r#"{
  "type": "object",
  "properties": {"count": {"type": "integer", "minimum": 0, "description": "How many."}},
  "required": ["count"],
  "additionalProperties": false
}"#;

const PAGE: usize = 64 * 1024;

/// Calls this instance has served.
static CALLS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// A mark left in linear memory by the previous call, if this memory saw one.
static MARK: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn remember() -> String {
    use core::sync::atomic::Ordering::SeqCst;
    let calls = CALLS.fetch_add(1, SeqCst) + 1;
    let found = MARK.swap(0xdead_beef, SeqCst);
    format!("calls={calls} mark={found:#x}")
}

fn tool(name: &str, description: &str, input: &str, output: Option<&str>) -> ToolDescriptor {
    ToolDescriptor {
        name: name.into(),
        title: None,
        description: description.into(),
        input_schema: input.into(),
        output_schema: output.map(Into::into),
        annotations: Annotations {
            read_only: Some(true),
            destructive: None,
            idempotent: None,
            open_world: Some(false),
        },
    }
}

/// Bytes that are not UTF-8, in a `String`. Nothing in this guest looks inside it: it is only
/// handed to the canonical ABI, which copies pointer and length, so the host sees the raw bytes.
fn not_utf8() -> String {
    // SAFETY (fixture): the string is never read as `str` here; see above.
    unsafe { String::from_utf8_unchecked(vec![b'o', b'k', 0xff, 0xfe, 0xc3, 0x28]) }
}

fn invalid(message: String) -> CallError {
    CallError { kind: "invalid_arguments".into(), message, retryable: false }
}

/// The value of `"key": <digits>` in the (host-validated) arguments.
fn number(arguments: &str, key: &str) -> Option<usize> {
    let quoted = format!("\"{key}\"");
    let rest = &arguments[arguments.find(&quoted)? + quoted.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(target_arch = "wasm32")]
fn fill(pages: usize) -> Result<usize, CallError> {
    use core::arch::wasm32::{memory_grow, memory_size};
    let current = memory_size(0);
    if pages > current && memory_grow(0, pages - current) == usize::MAX {
        return Err(CallError { kind: "grow_failed".into(), message: "memory.grow failed".into(), retryable: false });
    }
    // Touch every page that was added, so it is really committed.
    for page in current..pages {
        // SAFETY: the pages from `current` on were just added by `memory.grow` and belong to no
        // allocation; nothing else in this call uses them.
        unsafe { core::ptr::write_volatile((page * PAGE) as *mut u8, 0xa5) };
    }
    Ok(memory_size(0))
}

#[cfg(not(target_arch = "wasm32"))]
fn fill(pages: usize) -> Result<usize, CallError> {
    Ok(pages)
}

struct HostileOutput;

impl Guest for HostileOutput {
    fn describe() -> Vec<ToolDescriptor> {
        vec![
            tool("bad_utf8", "Returns text whose bytes are not UTF-8.", NO_ARGUMENTS, None),
            tool("bad_utf8_error", "Fails with an error message whose bytes are not UTF-8.", NO_ARGUMENTS, None),
            tool("bad_json", "Returns structured output that is not JSON.", NO_ARGUMENTS, None),
            tool("deep_json", "Returns JSON arrays nested 100,000 deep.", NO_ARGUMENTS, None),
            tool("off_schema", "Returns a count that violates its own output schema.", NO_ARGUMENTS, Some(COUNT_SCHEMA)),
            tool("no_structured", "Declares an output schema, then returns only text.", NO_ARGUMENTS, Some(COUNT_SCHEMA)),
            tool("remember", "Counts its calls and leaves a mark in memory; reports both.", NO_ARGUMENTS, None),
            tool(
                "fill",
                "Grows linear memory to exactly `mib` MiB (plus `extra_pages` 64 KiB pages) and writes to every new page.",
                FILL_ARGUMENTS,
                None,
            ),
        ]
    }

    fn call(tool: String, arguments: String, _cx: CallContext) -> Result<ToolOutput, CallError> {
        match tool.as_str() {
            "bad_utf8" => Ok(ToolOutput { text: Some(not_utf8()), json: None }),
            "bad_utf8_error" => Err(CallError { kind: "oops".into(), message: not_utf8(), retryable: false }),
            "bad_json" => Ok(ToolOutput { text: None, json: Some(r#"{"count": 1, "unterminated": "#.into()) }),
            "deep_json" => {
                let depth = 100_000;
                Ok(ToolOutput { text: None, json: Some(format!("{}{}", "[".repeat(depth), "]".repeat(depth))) })
            }
            "off_schema" => Ok(ToolOutput { text: None, json: Some(r#"{"count": "seven", "extra": true}"#.into()) }),
            "no_structured" => Ok(ToolOutput { text: Some("seven".into()), json: None }),
            "remember" => Ok(ToolOutput { text: Some(remember()), json: None }),
            "fill" => {
                let mib = number(&arguments, "mib").ok_or_else(|| invalid(format!("no mib in {arguments}")))?;
                let extra = number(&arguments, "extra_pages").unwrap_or(0);
                let pages = mib * (1024 * 1024 / PAGE) + extra;
                // Everything the reply needs is allocated before memory is full: past the cap,
                // the allocator could not grow the heap again.
                let mut text = String::with_capacity(64);
                let reached = fill(pages)?;
                use core::fmt::Write;
                let _ = write!(text, "{reached} pages");
                Ok(ToolOutput { text: Some(text), json: None })
            }
            other => {
                Err(CallError { kind: "unknown_tool".into(), message: format!("no tool {other}"), retryable: false })
            }
        }
    }
}

export!(HostileOutput);
