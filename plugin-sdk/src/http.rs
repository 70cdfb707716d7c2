//! A small blocking HTTP client for calling upstream APIs from a tool.
//!
//! Requests go through the host (`wasi:http/outgoing-handler`), which mediates every one of
//! them: a request outside the operator's grants for this plugin is refused before any
//! connection is made ([`HttpError::Denied`]), credentials are attached by the host to granted
//! requests (a plugin never sees them, and any value it sets for such a header is replaced),
//! response size and time are capped, and redirects are not followed (a `3xx` is returned as
//! is).
//!
//! ```no_run
//! use cordon_sdk::http::Request;
//! use cordon_sdk::ToolError;
//!
//! fn weather(city: &str) -> Result<serde_json::Value, ToolError> {
//!     let response = Request::get(format!("https://api.example.com/weather?q={city}"))
//!         .header("accept", "application/json")
//!         .send()?              // HttpError converts into ToolError
//!         .error_for_status()?; // 4xx and 5xx become `upstream_error`
//!     response.json()
//! }
//! ```
//!
//! Outside a component (native unit tests) there is no host to send requests through: every
//! [`Request::send`] of a well-formed request fails with [`HttpError::Failed`].

use std::fmt;

use serde::de::DeserializeOwned;

use crate::ToolError;

/// Error kind of [`HttpError::Denied`]: the host refused the request (outside the grants).
pub const EGRESS_DENIED: &str = "egress_denied";
/// Error kind of [`HttpError::Failed`]: no response came back (DNS, connection, TLS, timeout…).
pub const UPSTREAM_UNREACHABLE: &str = "upstream_unreachable";
/// Error kind of [`Response::error_for_status`]: the upstream answered with a 4xx or 5xx status.
pub const UPSTREAM_ERROR: &str = "upstream_error";
/// Error kind of [`HttpError::ResponseTooLarge`]: the response exceeded the host's size cap.
pub const RESPONSE_TOO_LARGE: &str = "response_too_large";
/// Error kind of [`Response::json`] when the body is not the expected JSON.
pub const INVALID_RESPONSE: &str = "invalid_response";

/// Request bodies are written in chunks of at most this many bytes, the most one
/// `blocking-write-and-flush` accepts.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
const WRITE_CHUNK: usize = 4096;

const STANDARD_METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// An outgoing HTTP request, built and then [sent](Request::send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Request {
    /// A request with the given method (such as `"GET"`, `"PATCH"`, or any other token) and
    /// URL (`http://` or `https://`, `host[:port]`, then an optional path and query).
    ///
    /// The standard methods are recognized in any case and sent in upper case; any other
    /// method is sent exactly as given.
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        let upper = method.to_ascii_uppercase();
        let method = if STANDARD_METHODS.contains(&upper.as_str()) { upper } else { method.to_owned() };
        Self { method, url: url.into(), headers: Vec::new(), body: None }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request with the given body.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", url).body(body)
    }

    /// Adds a header (several headers may share a name). Do not set credentials: the host
    /// attaches them to granted requests and replaces any value set here.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body. A `content-length` header is added when sending unless one was set.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends the request and waits for the whole response, whatever its status (see
    /// [`Response::error_for_status`]).
    pub fn send(self) -> Result<Response, HttpError> {
        let target = Target::parse(&self.url)?;
        if !is_token(&self.method) {
            return Err(HttpError::InvalidRequest(format!("{:?} is not a valid HTTP method", self.method)));
        }
        let mut headers = self.headers;
        if let Some(body) = &self.body {
            if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-length")) {
                headers.push(("content-length".into(), body.len().to_string()));
            }
        }
        transport::send(&self.method, &target, &self.url, &headers, self.body)
    }
}

/// A response: its status, headers and whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The URL the request went to.
    pub url: String,
    /// The status code, such as 200.
    pub status: u16,
    /// The headers, in order, names in lower case. Values that are not UTF-8 are converted
    /// lossily.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 is replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON into `T`; an [`INVALID_RESPONSE`] error if it does not fit.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ToolError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ToolError::new(INVALID_RESPONSE, format!("{} returned a body that is not the expected JSON: {e}", self.url))
        })
    }

    /// The response itself if its status is below 400; otherwise an [`UPSTREAM_ERROR`]
    /// whose message names the URL and status (with the start of the body), retryable for
    /// a 5xx status and not for a 4xx.
    pub fn error_for_status(self) -> Result<Self, ToolError> {
        if self.status < 400 {
            return Ok(self);
        }
        let mut message = format!("{} answered HTTP {}", self.url, self.status);
        let text = self.text();
        let text = text.trim();
        if !text.is_empty() {
            const SHOWN: usize = 200;
            let shown: String = text.chars().take(SHOWN).collect();
            let more = if shown.len() < text.len() { "…" } else { "" };
            message.push_str(&format!(": {shown}{more}"));
        }
        let error = ToolError::new(UPSTREAM_ERROR, message);
        Err(if self.status >= 500 { error.retryable() } else { error })
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused the request: it is outside the operator's grants for this plugin.
    Denied {
        /// The URL of the refused request.
        url: String,
    },
    /// The URL cannot be sent: not `http`/`https`, no host, a bad port, user info, spaces…
    InvalidUrl(String),
    /// The method or a header cannot be sent (malformed, or forbidden by the host, such as
    /// `host` or `connection`).
    InvalidRequest(String),
    /// The response body exceeded the host's size cap.
    ResponseTooLarge {
        /// The URL of the request.
        url: String,
        /// The cap in bytes, when the host said.
        limit: Option<u64>,
    },
    /// The request failed: DNS, connection, TLS, protocol or timeout.
    Failed {
        /// The URL of the request.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied { url } => {
                write!(f, "the host refused the request to {url}: it is outside this plugin's grants")
            }
            Self::InvalidUrl(message) | Self::InvalidRequest(message) => f.write_str(message),
            Self::ResponseTooLarge { url, limit: Some(limit) } => {
                write!(f, "the response from {url} is larger than the host's cap of {limit} bytes")
            }
            Self::ResponseTooLarge { url, limit: None } => {
                write!(f, "the response from {url} is larger than the host's cap")
            }
            Self::Failed { url, message } => write!(f, "the request to {url} failed: {message}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// `Denied` → [`EGRESS_DENIED`]; `InvalidUrl` and `InvalidRequest` →
/// [`invalid_arguments`](ToolError::INVALID_ARGUMENTS); `ResponseTooLarge` →
/// [`RESPONSE_TOO_LARGE`]; `Failed` → [`UPSTREAM_UNREACHABLE`], the only retryable one.
impl From<HttpError> for ToolError {
    fn from(e: HttpError) -> Self {
        let message = e.to_string();
        match e {
            HttpError::Denied { .. } => ToolError::new(EGRESS_DENIED, message),
            HttpError::InvalidUrl(_) | HttpError::InvalidRequest(_) => ToolError::invalid_arguments(message),
            HttpError::ResponseTooLarge { .. } => ToolError::new(RESPONSE_TOO_LARGE, message),
            HttpError::Failed { .. } => ToolError::new(UPSTREAM_UNREACHABLE, message).retryable(),
        }
    }
}

/// The parts of a URL that `wasi:http` takes separately.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    https: bool,
    /// `host[:port]`.
    authority: String,
    /// Starts with `/`; no fragment.
    path_with_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, HttpError> {
        let invalid = |why: &str| HttpError::InvalidUrl(format!("invalid URL {url:?}: {why}"));

        if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(&format!("it contains {c:?}; percent-encode spaces and control characters")));
        }
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| invalid("it does not start with http:// or https://"))?;
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return Err(invalid("only http and https are supported"));
        };

        // The fragment is never sent.
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_with_query) = rest.split_at(end);

        if authority.is_empty() {
            return Err(invalid("it has no host"));
        }
        if authority.contains('@') {
            return Err(invalid("user info (`user:password@`) is not supported; the host attaches credentials"));
        }
        if authority.contains('\\') {
            return Err(invalid("the host contains a backslash"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            // An IPv6 literal: `[addr]` or `[addr]:port`.
            let (addr, after) =
                bracketed.split_once(']').ok_or_else(|| invalid("an IPv6 address is missing its `]`"))?;
            if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
                return Err(invalid("the IPv6 address is malformed"));
            }
            match after {
                "" => (authority, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (&authority[..authority.len() - after.len()], Some(port)),
                    None => return Err(invalid("unexpected text after the IPv6 address")),
                },
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("it has no host"));
        }
        if !host.starts_with('[')
            && !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '%' | '~'))
        {
            return Err(invalid("the host name contains characters a host name cannot"));
        }
        if let Some(port) = port {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
                return Err(invalid("the port is not a number"));
            }
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(invalid("the port is out of range"));
            }
        }

        let path_with_query = if path_with_query.starts_with('/') {
            path_with_query.to_owned()
        } else {
            // Empty, or only a query.
            format!("/{path_with_query}")
        };
        Ok(Self { https, authority: authority.to_owned(), path_with_query })
    }
}

/// Whether `s` is an HTTP token (RFC 9110 `tchar`s), as methods and header names must be.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(target_arch = "wasm32")]
mod transport {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{
        ErrorCode, Fields, HeaderError, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use wasi::io::streams::StreamError;

    use super::{HttpError, Response, Target, WRITE_CHUNK};

    pub(super) fn send(
        method: &str,
        target: &Target,
        url: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        let failed = |code: ErrorCode| from_code(code, url);

        let entries: Vec<(String, Vec<u8>)> =
            headers.iter().map(|(name, value)| (name.clone(), value.clone().into_bytes())).collect();
        let fields = Fields::from_list(&entries).map_err(|e| {
            let why = match e {
                HeaderError::Forbidden => "a header the host forbids (such as host or connection)",
                HeaderError::Immutable => "headers that cannot be changed",
                HeaderError::InvalidSyntax => "a malformed header name or value",
            };
            HttpError::InvalidRequest(format!("the request to {url} has {why}"))
        })?;

        let request = OutgoingRequest::new(fields);
        let method = match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        };
        let scheme = if target.https { Scheme::Https } else { Scheme::Http };
        let invalid = |what: &str| HttpError::InvalidRequest(format!("invalid {what} for {url}"));
        request.set_method(&method).map_err(|()| invalid("method"))?;
        request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&target.authority))
            .map_err(|()| HttpError::InvalidUrl(format!("invalid host in URL {url:?}")))?;
        request
            .set_path_with_query(Some(&target.path_with_query))
            .map_err(|()| HttpError::InvalidUrl(format!("invalid path in URL {url:?}")))?;

        // The body is taken before the request is handed over, and written after: the host
        // reads it while it sends the request, so a large body cannot fill its buffer first.
        let outgoing_body = match body {
            Some(_) => Some(request.body().map_err(|()| invalid("body"))?),
            None => None,
        };
        let future = outgoing_handler::handle(request, None).map_err(failed)?;

        // A failed write is not an error of its own: the upstream may have answered early
        // (say with a 413), or the response carries the reason (say the host refused it).
        let write_error = match (outgoing_body, body) {
            (Some(outgoing_body), Some(bytes)) => write_body(outgoing_body, &bytes).err(),
            _ => None,
        };

        let response = loop {
            match future.get() {
                Some(Ok(result)) => break result,
                Some(Err(())) => {
                    return Err(HttpError::Failed {
                        url: url.to_owned(),
                        message: "the response was already taken".into(),
                    })
                }
                None => future.subscribe().block(),
            }
        };
        drop(future);
        let response = match (response, write_error) {
            (Ok(response), _) => response,
            // The upstream got part of the body at most; the write error says why.
            (Err(ErrorCode::HttpProtocolError), Some(code)) => return Err(failed(code)),
            (Err(code), _) => return Err(failed(code)),
        };

        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect();
        let incoming = response.consume().map_err(|()| HttpError::Failed {
            url: url.to_owned(),
            message: "the response body was already taken".into(),
        })?;
        let body = read_body(&incoming, url);
        // Children before parents: the body (trailers are not needed), then the response.
        drop(incoming);
        drop(response);

        Ok(Response { url: url.to_owned(), status, headers, body: body? })
    }

    /// Writes the whole body and finishes it. On failure, the error code if there is one.
    fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), ErrorCode> {
        let stream = body.write().map_err(|()| ErrorCode::InternalError(Some("the body stream was taken".into())))?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                return Err(match e {
                    StreamError::LastOperationFailed(e) => wasi::http::types::http_error_code(&e)
                        .unwrap_or_else(|| ErrorCode::InternalError(Some(e.to_debug_string()))),
                    StreamError::Closed => {
                        ErrorCode::InternalError(Some("the host closed the request body before it was written".into()))
                    }
                });
            }
        }
        drop(stream);
        OutgoingBody::finish(body, None)
    }

    fn read_body(body: &IncomingBody, url: &str) -> Result<Vec<u8>, HttpError> {
        let stream = body.stream().map_err(|()| HttpError::Failed {
            url: url.to_owned(),
            message: "the response body stream was already taken".into(),
        })?;
        let mut bytes = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => return Ok(bytes),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(match wasi::http::types::http_error_code(&e) {
                        Some(code) => from_code(code, url),
                        None => HttpError::Failed {
                            url: url.to_owned(),
                            message: format!("reading the response failed: {}", e.to_debug_string()),
                        },
                    })
                }
            }
        }
    }

    fn from_code(code: ErrorCode, url: &str) -> HttpError {
        let url = url.to_owned();
        match code {
            ErrorCode::HttpRequestDenied => HttpError::Denied { url },
            ErrorCode::HttpResponseBodySize(limit) => HttpError::ResponseTooLarge { url, limit },
            ErrorCode::HttpRequestMethodInvalid => {
                HttpError::InvalidRequest(format!("the host refused the method for {url}"))
            }
            ErrorCode::HttpRequestUriInvalid => HttpError::InvalidUrl(format!("the host refused the URL {url:?}")),
            other => HttpError::Failed { url, message: format!("{other:?}") },
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod transport {
    use super::{HttpError, Response, Target};

    pub(super) fn send(
        _method: &str,
        _target: &Target,
        url: &str,
        _headers: &[(String, String)],
        _body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        Err(HttpError::Failed {
            url: url.to_owned(),
            message: "HTTP is only available inside a component run by the Cordon host".into(),
        })
    }
}

#[cfg(test)]
mod tests;
