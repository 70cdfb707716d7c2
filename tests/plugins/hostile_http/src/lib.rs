//! Fixture: a guest that abuses outbound HTTP, through `wasi:http` directly (the SDK's client
//! would refuse most of it), so the end-to-end tests can check what an upstream really receives.
//!
//! - `smuggle {url}`: one attempt per trick, each to its own path under `url` (a granted
//!   `http://host:port/prefix/`): hop-by-hop and framing headers (`Host`, `Transfer-Encoding`,
//!   `Connection`, `TE`, ...) through every way of setting a header, CR/LF injected into names,
//!   values, the authority, the path and the method, user info in the authority, and
//!   `Content-Length` values that lie about the body. It reports, by attempt, how far each got:
//!   `fields: forbidden`, `authority: refused`, `handle: <error>`, `status 200`, with `; write:
//!   <error>` or `; finish: <error>` when writing the body failed.
//! - `fanout {url, count, fail_on_denied}`: starts `count` GETs of `url` before waiting for any,
//!   then reports how many got a response and how many the host denied; with `fail_on_denied`,
//!   the call fails when any was denied (so the host's explanation of the refusal shows).

wit_bindgen::generate!({
    path: "../../../wit",
    world: "cordon:plugin/plugin",
});

use cordon::plugin::types::{Annotations, CallContext, CallError, ToolDescriptor, ToolOutput};
use exports::cordon::plugin::tools::Guest;
use serde_json::{json, Map, Value};

const SMUGGLE_ARGUMENTS: &str = r#"{
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "A granted base URL, http://host:port/prefix/; each attempt goes to prefix + its name."}
  },
  "required": ["url"],
  "additionalProperties": false
}"#;

const FANOUT_ARGUMENTS: &str = r#"{
  "type": "object",
  "properties": {
    "url": {"type": "string", "description": "The URL to GET, http://host:port/path."},
    "count": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "How many GETs to start at once."},
    "fail_on_denied": {"type": "boolean", "description": "Fail the call when the host denied any request."}
  },
  "required": ["url", "count"],
  "additionalProperties": false
}"#;

/// `fields_bomb` and `table_bomb`: counts, no URL.
const BOMB_ARGUMENTS: &str = r#"{
  "type": "object",
  "properties": {
    "count": {"type": "integer", "minimum": 0},
    "appends": {"type": "integer", "minimum": 0},
    "value_bytes": {"type": "integer", "minimum": 1}
  },
  "required": ["count"],
  "additionalProperties": false
}"#;

fn tool(name: &str, description: &str, input: &str) -> ToolDescriptor {
    ToolDescriptor {
        name: name.into(),
        title: None,
        description: description.into(),
        input_schema: input.into(),
        output_schema: None,
        annotations: Annotations { read_only: None, destructive: None, idempotent: None, open_world: Some(true) },
    }
}

fn failed(kind: &str, message: impl Into<String>) -> CallError {
    CallError { kind: kind.into(), message: message.into(), retryable: false }
}

/// `http://authority/path` → (authority, path).
fn split_url(url: &str) -> Result<(String, String), CallError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| failed("invalid_arguments", "the url must be http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((authority.to_string(), path.to_string()))
}

fn json_output(value: Value) -> Result<ToolOutput, CallError> {
    Ok(ToolOutput { text: None, json: Some(value.to_string()) })
}

struct HostileHttp;

impl Guest for HostileHttp {
    fn describe() -> Vec<ToolDescriptor> {
        vec![
            tool(
                "smuggle",
                "Tries every way to send hop-by-hop and smuggling headers, injected CR/LF and lying Content-Lengths to the granted base URL, and reports how far each attempt got.",
                SMUGGLE_ARGUMENTS,
            ),
            tool(
                "fanout",
                "Starts `count` GETs of the URL at once, then reports how many got a response and how many the host denied.",
                FANOUT_ARGUMENTS,
            ),
            tool(
                "fields_bomb",
                "Builds `count` header maps, each with `appends` values of `value_bytes` bytes, and keeps them all alive; reports what the host accepted.",
                BOMB_ARGUMENTS,
            ),
            tool(
                "table_bomb",
                "Holds `count` host resources (clock pollables) at once; reports how many it got.",
                BOMB_ARGUMENTS,
            ),
        ]
    }

    fn call(tool: String, arguments: String, _cx: CallContext) -> Result<ToolOutput, CallError> {
        let args: Map<String, Value> =
            serde_json::from_str(&arguments).map_err(|e| failed("invalid_arguments", e.to_string()))?;
        let number = |key: &str, default: u64| args.get(key).and_then(Value::as_u64).unwrap_or(default) as usize;
        match tool.as_str() {
            "fields_bomb" => {
                let (fields, appended, refused) =
                    wire::fields_bomb(number("count", 1), number("appends", 1), number("value_bytes", 1024));
                return json_output(json!({"fields": fields, "appended_bytes": appended, "refused": refused}));
            }
            "table_bomb" => return json_output(json!({"held": wire::table_bomb(number("count", 1))})),
            _ => {}
        }
        let url = args.get("url").and_then(Value::as_str).unwrap_or_default();
        let (authority, path) = split_url(url)?;
        match tool.as_str() {
            "smuggle" => json_output(Value::Object(wire::smuggle(&authority, &path))),
            "fanout" => {
                let count = args.get("count").and_then(Value::as_u64).unwrap_or(1) as usize;
                let fail_on_denied = args.get("fail_on_denied").and_then(Value::as_bool).unwrap_or(false);
                let (ok, denied, errors) = wire::fanout(&authority, &path, count);
                if fail_on_denied && denied > 0 {
                    return Err(failed("fanout_failed", format!("{denied} of {count} requests got no response")));
                }
                json_output(json!({"ok": ok, "denied": denied, "errors": errors}))
            }
            other => Err(failed("unknown_tool", format!("no tool {other}"))),
        }
    }
}

export!(HostileHttp);

#[cfg(target_arch = "wasm32")]
mod wire {
    use serde_json::{Map, Value};
    use wasi::http::outgoing_handler;
    use wasi::http::types::{
        ErrorCode, Fields, FutureIncomingResponse, HeaderError, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use wasi::io::streams::StreamError;

    /// A request body: the bytes written in one go, and whether `finish` is called after.
    struct Body<'a> {
        bytes: &'a [u8],
        finish: bool,
    }

    fn header_error(e: HeaderError) -> &'static str {
        match e {
            HeaderError::InvalidSyntax => "invalid-syntax",
            HeaderError::Forbidden => "forbidden",
            HeaderError::Immutable => "immutable",
        }
    }

    fn code(e: &ErrorCode) -> String {
        match e {
            ErrorCode::HttpRequestDenied => "HttpRequestDenied".into(),
            ErrorCode::HttpRequestMethodInvalid => "HttpRequestMethodInvalid".into(),
            ErrorCode::HttpRequestUriInvalid => "HttpRequestUriInvalid".into(),
            ErrorCode::HttpRequestBodySize(size) => format!("HttpRequestBodySize({})", size.map_or(-1, |s| s as i64)),
            ErrorCode::HttpProtocolError => "HttpProtocolError".into(),
            ErrorCode::InternalError(message) => format!("InternalError({})", message.as_deref().unwrap_or("")),
            other => format!("{other:?}"),
        }
    }

    fn stream_error(e: StreamError) -> String {
        match e {
            StreamError::Closed => "closed".into(),
            StreamError::LastOperationFailed(e) => match wasi::http::types::http_error_code(&e) {
                Some(c) => code(&c),
                None => e.to_debug_string(),
            },
        }
    }

    fn wait(future: FutureIncomingResponse) -> Result<u16, String> {
        loop {
            match future.get() {
                Some(Ok(Ok(response))) => return Ok(response.status()),
                Some(Ok(Err(e))) => return Err(code(&e)),
                Some(Err(())) => return Err("response already taken".into()),
                None => future.subscribe().block(),
            }
        }
    }

    /// Builds and sends one request; how far it got.
    fn attempt(
        method: &Method,
        authority: &str,
        path: &str,
        headers: Result<Fields, HeaderError>,
        body: Option<Body>,
    ) -> String {
        let fields = match headers {
            Ok(fields) => fields,
            Err(e) => return format!("fields: {}", header_error(e)),
        };
        let request = OutgoingRequest::new(fields);
        if request.set_method(method).is_err() {
            return "method: refused".into();
        }
        if request.set_scheme(Some(&Scheme::Http)).is_err() {
            return "scheme: refused".into();
        }
        if request.set_authority(Some(authority)).is_err() {
            return "authority: refused".into();
        }
        if request.set_path_with_query(Some(path)).is_err() {
            return "path: refused".into();
        }
        let outgoing = match &body {
            Some(_) => match request.body() {
                Ok(body) => Some(body),
                Err(()) => return "body: refused".into(),
            },
            None => None,
        };
        let future = match outgoing_handler::handle(request, None) {
            Ok(future) => future,
            Err(e) => return format!("handle: {}", code(&e)),
        };
        let mut notes = Vec::new();
        if let (Some(outgoing), Some(body)) = (outgoing, body) {
            match outgoing.write() {
                Ok(stream) => {
                    if let Err(e) = stream.blocking_write_and_flush(body.bytes) {
                        notes.push(format!("write: {}", stream_error(e)));
                    }
                }
                Err(()) => notes.push("write: no stream".into()),
            }
            if body.finish {
                if let Err(e) = OutgoingBody::finish(outgoing, None) {
                    notes.push(format!("finish: {}", code(&e)));
                }
            }
        }
        let mut outcome = match wait(future) {
            Ok(status) => format!("status {status}"),
            Err(e) => format!("response: {e}"),
        };
        for note in notes {
            outcome.push_str("; ");
            outcome.push_str(&note);
        }
        outcome
    }

    fn list(entries: &[(&str, &[u8])]) -> Result<Fields, HeaderError> {
        let entries: Vec<(String, Vec<u8>)> = entries.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect();
        Fields::from_list(&entries)
    }

    fn set(name: &str, value: &[u8]) -> Result<Fields, HeaderError> {
        let fields = Fields::new();
        fields.set(name, &[value.to_vec()])?;
        Ok(fields)
    }

    fn append(entries: &[(&str, &[u8])]) -> Result<Fields, HeaderError> {
        let fields = Fields::new();
        for (name, value) in entries {
            fields.append(name, value)?;
        }
        Ok(fields)
    }

    /// Headers that frame or route the request, or concern only the next hop.
    const HOP_BY_HOP: &[(&str, &str, &[u8])] = &[
        ("host", "host", b"evil.example"),
        ("host_upper", "HOST", b"evil.example"),
        ("transfer_encoding", "transfer-encoding", b"chunked"),
        ("connection", "connection", b"close, x-smuggled"),
        ("keep_alive", "keep-alive", b"timeout=600"),
        ("upgrade", "upgrade", b"h2c"),
        ("te", "te", b"trailers"),
        ("trailer", "trailer", b"x-smuggled"),
        ("proxy_connection", "proxy-connection", b"keep-alive"),
        ("proxy_authorization", "proxy-authorization", b"Basic ZXZpbDpldmls"),
        ("http2_settings", "http2-settings", b"AAMAAABkAARAAAAAAAIAAAAA"),
    ];

    pub fn smuggle(authority: &str, prefix: &str) -> Map<String, Value> {
        let mut report = Map::new();
        let mut record = |name: &str, outcome: String| {
            report.insert(name.to_string(), Value::String(outcome));
        };
        let at = |name: &str| format!("{prefix}{name}");
        let get = Method::Get;
        let post = Method::Post;

        record("control", attempt(&get, authority, &at("control"), Ok(Fields::new()), None));

        // Each hop-by-hop header, three ways: from a list, `set`, `append`.
        for (attempt_name, header, value) in HOP_BY_HOP {
            for (how, fields) in [
                ("list", list(&[(header, value)])),
                ("set", set(header, value)),
                ("append", append(&[(header, value)])),
            ] {
                let name = format!("{attempt_name}_{how}");
                record(&name, attempt(&get, authority, &at(&name), fields, None));
            }
        }
        // After `OutgoingRequest::new`, its headers are immutable.
        {
            let request = OutgoingRequest::new(Fields::new());
            let headers = request.headers();
            let late = headers.append("x-late", b"1").map_err(header_error).err().unwrap_or("appended");
            let host = headers.append("host", b"evil.example").map_err(header_error).err().unwrap_or("appended");
            record("late_headers", format!("x-late: {late}; host: {host}"));
        }

        // CR/LF injection everywhere a request line or header could be split.
        let injected = b"1\r\nHost: evil.example\r\n\r\nGET /smuggled HTTP/1.1";
        record("value_crlf", attempt(&get, authority, &at("value_crlf"), list(&[("x-note", injected)]), None));
        record(
            "name_crlf",
            attempt(&get, authority, &at("name_crlf"), list(&[("x-a\r\nhost", b"evil.example")]), None),
        );
        let crlf_authority = format!("{authority}\r\nHost: evil.example");
        record("authority_crlf", attempt(&get, &crlf_authority, &at("authority_crlf"), Ok(Fields::new()), None));
        let userinfo_authority = format!("evil.example@{authority}");
        record(
            "authority_userinfo",
            attempt(&get, &userinfo_authority, &at("authority_userinfo"), Ok(Fields::new()), None),
        );
        let crlf_path = format!("{} HTTP/1.1\r\nHost: evil.example\r\n\r\nGET /smuggled", at("path_crlf"));
        record("path_crlf", attempt(&get, authority, &crlf_path, Ok(Fields::new()), None));
        record("path_absolute", attempt(&get, authority, "http://evil.example/smuggled", Ok(Fields::new()), None));
        let crlf_method = Method::Other("GET /smuggled HTTP/1.1\r\nX:".into());
        record("method_crlf", attempt(&crlf_method, authority, &at("method_crlf"), Ok(Fields::new()), None));

        // Content-Length: only the body's real length may go out.
        let body = |bytes: &'static [u8], finish: bool| Some(Body { bytes, finish });
        record(
            "content_length_exact",
            attempt(
                &post,
                authority,
                &at("content_length_exact"),
                list(&[("content-length", b"5")]),
                body(b"hello", true),
            ),
        );
        record(
            "content_length_computed",
            attempt(&post, authority, &at("content_length_computed"), Ok(Fields::new()), body(b"hello", true)),
        );
        record(
            "content_length_longer_than_body",
            attempt(
                &post,
                authority,
                &at("content_length_longer_than_body"),
                list(&[("content-length", b"100")]),
                body(b"hello", true),
            ),
        );
        record(
            "content_length_shorter_than_body",
            attempt(
                &post,
                authority,
                &at("content_length_shorter_than_body"),
                list(&[("content-length", b"5")]),
                body(b"hello\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: evil.example\r\n\r\n", true),
            ),
        );
        record(
            "content_length_without_body",
            attempt(&get, authority, &at("content_length_without_body"), list(&[("content-length", b"10")]), None),
        );
        record(
            "content_length_twice",
            attempt(
                &post,
                authority,
                &at("content_length_twice"),
                list(&[("content-length", b"5"), ("content-length", b"5")]),
                body(b"hello", true),
            ),
        );
        record(
            "content_length_twice_append",
            attempt(
                &post,
                authority,
                &at("content_length_twice_append"),
                append(&[("content-length", b"5"), ("content-length", b"50")]),
                body(b"hello", true),
            ),
        );
        for (name, value) in [
            ("content_length_plus", &b"+5"[..]),
            ("content_length_list", b"5, 5"),
            ("content_length_negative", b"-1"),
            ("content_length_overflow", b"99999999999999999999999"),
        ] {
            record(
                name,
                attempt(&post, authority, &at(name), list(&[("content-length", value)]), body(b"hello", true)),
            );
        }
        report
    }

    pub fn fanout(authority: &str, path: &str, count: usize) -> (u32, u32, Vec<String>) {
        let mut futures = Vec::with_capacity(count);
        let mut errors = Vec::new();
        for _ in 0..count {
            let request = OutgoingRequest::new(Fields::new());
            let _ = request.set_method(&Method::Get);
            let _ = request.set_scheme(Some(&Scheme::Http));
            let _ = request.set_authority(Some(authority));
            let _ = request.set_path_with_query(Some(path));
            match outgoing_handler::handle(request, None) {
                Ok(future) => futures.push(future),
                Err(e) => errors.push(code(&e)),
            }
        }
        let (mut ok, mut denied) = (0, 0);
        for future in futures {
            match wait(future) {
                Ok(_) => ok += 1,
                Err(e) if e == "HttpRequestDenied" => denied += 1,
                Err(e) => errors.push(e),
            }
        }
        (ok, denied, errors)
    }

    /// `count` header maps kept alive together, each given `appends` values of `value_bytes`:
    /// (maps made, value bytes the host accepted, appends it refused).
    pub fn fields_bomb(count: usize, appends: usize, value_bytes: usize) -> (usize, usize, usize) {
        let value = vec![b'a'; value_bytes];
        let (mut kept, mut appended, mut refused) = (Vec::new(), 0, 0);
        for _ in 0..count {
            let fields = Fields::new();
            for i in 0..appends {
                match fields.append(&format!("x-bomb-{i}"), &value) {
                    Ok(()) => appended += value_bytes,
                    Err(_) => refused += 1,
                }
            }
            kept.push(fields);
        }
        (kept.len(), appended, refused)
    }

    /// `count` pollables held at once (each is an entry in the host's resource table).
    pub fn table_bomb(count: usize) -> usize {
        let held: Vec<_> =
            (0..count).map(|_| wasi::clocks::monotonic_clock::subscribe_duration(1_000_000_000)).collect();
        held.len()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod wire {
    use serde_json::{Map, Value};

    pub fn smuggle(_authority: &str, _prefix: &str) -> Map<String, Value> {
        Map::new()
    }

    pub fn fanout(_authority: &str, _path: &str, _count: usize) -> (u32, u32, Vec<String>) {
        (0, 0, Vec::new())
    }

    pub fn fields_bomb(_count: usize, _appends: usize, _value_bytes: usize) -> (usize, usize, usize) {
        (0, 0, 0)
    }

    pub fn table_bomb(_count: usize) -> usize {
        0
    }
}
