//! Outbound HTTP: `wasi:http/outgoing-handler`, mediated by the operator's grants.
//!
//! Every request a guest makes passes [`EgressHooks::send_request`] before anything touches the
//! network. A request is sent only when a grant matches its scheme, host, port, path prefix and
//! method, the call is within its request budget, and — for a credentialed grant — the calling
//! principal has a value for the credential, which the host then sets (replacing whatever the
//! guest set). Anything else is refused with `HttpRequestDenied` and recorded, so the tool
//! result can say which URL was refused. No redirect is followed (the host returns 3xx as is),
//! response bodies are capped, and every timeout is bounded by the grant policy.
//!
//! What frames and routes a request is the host's, never the guest's:
//! - `Host` comes from the URL's authority; a guest cannot set it, nor any hop-by-hop field
//!   (`Transfer-Encoding`, `Connection`, `Keep-Alive`, `Upgrade`, `TE`, `Trailer`,
//!   `Proxy-*`, `HTTP2-Settings`): setting one fails in the guest with `forbidden`
//!   ([`is_forbidden_header`]), so such a request cannot even be built;
//! - a URL with user info (`user@host`) is refused ([`Refusal::UserInfo`]): it would not be
//!   the `Host` sent, and the connection would look up the whole `user@host` as a name;
//! - `Content-Length` may be set, but only ever frames the bytes it counts: one value of digits
//!   (else `invalid-syntax`), no value on a request without a body (`HttpRequestBodySize`),
//!   bytes past it are never sent, and a body shorter than it is aborted, so the upstream never
//!   gets a complete request it frames wrongly. Without it, the body goes out chunked. Each
//!   request has its own connection, so nothing can be appended to another request.
//!
//! A call may have at most `max_requests_per_call` requests, counted when each is started: that
//! also bounds how many are in flight at once, whatever the guest starts before waiting.
//!
//! ```toml
//! [plugins.httpbin.http]
//! max_requests_per_call = 16
//! request_timeout_ms = 10000
//! max_response_bytes = 4194304
//! [[plugins.httpbin.http.grants]]
//! url = "https://api.example.com/v1/"   # scheme, host, port (default by scheme), path prefix
//! methods = ["GET"]                       # default: GET only
//! credential = "example"                  # optional: a [credentials.NAME]
//! ```

use super::credentials::Credentials;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use cordon_core::Principal;
use http::{Method, Uri};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime_wasi_http::{
    Error as HttpError, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpHooks, DEFAULT_FORBIDDEN_HEADERS,
};

/// `[plugins.NAME.http]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpPolicyConfig {
    /// Requests one call may make; further ones are refused.
    pub max_requests_per_call: u32,
    /// Upper bound on connect, first-byte and between-bytes timeouts, milliseconds.
    pub request_timeout_ms: u64,
    /// Largest response body a guest may read, bytes.
    pub max_response_bytes: usize,
    /// What the plugin may reach. Empty: nothing.
    pub grants: Vec<GrantConfig>,
}

impl Default for HttpPolicyConfig {
    fn default() -> Self {
        Self { max_requests_per_call: 16, request_timeout_ms: 10_000, max_response_bytes: 4 << 20, grants: Vec::new() }
    }
}

/// One `[[plugins.NAME.http.grants]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// `scheme://host[:port]/path-prefix`.
    pub url: String,
    /// Allowed methods (default `["GET"]`).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// A `[credentials.NAME]` to attach.
    pub credential: Option<String>,
    /// Send a deterministic `Idempotency-Key` on requests of keyed calls (default true).
    #[serde(default = "yes")]
    pub idempotency_key: bool,
}

fn yes() -> bool {
    true
}

fn default_methods() -> Vec<String> {
    vec!["GET".into()]
}

/// A parsed grant.
#[derive(Debug, Clone)]
pub struct HttpGrant {
    scheme: String,
    host: String,
    port: u16,
    path_prefix: String,
    methods: Vec<Method>,
    /// The credential attached to matching requests.
    pub credential: Option<String>,
    idempotency_key: bool,
}

impl HttpGrant {
    fn parse(config: &GrantConfig) -> Result<HttpGrant> {
        let uri: Uri = config.url.parse().with_context(|| format!("grant url {:?} is not a URL", config.url))?;
        let scheme = uri.scheme_str().map(str::to_ascii_lowercase).unwrap_or_default();
        if scheme != "http" && scheme != "https" {
            bail!("grant url {:?} must start with http:// or https://", config.url);
        }
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            bail!("grant url {:?} has no host", config.url);
        };
        if uri.query().is_some() {
            bail!("grant url {:?} must not have a query", config.url);
        }
        let methods = config
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .with_context(|| format!("{m:?} is not an HTTP method"))
            })
            .collect::<Result<Vec<_>>>()?;
        if methods.is_empty() {
            bail!("grant url {:?} allows no methods", config.url);
        }
        Ok(HttpGrant {
            port: uri.port_u16().unwrap_or(default_port(&scheme)),
            host: host.trim_matches(['[', ']']).to_ascii_lowercase(),
            scheme,
            path_prefix: uri.path().to_string(),
            methods,
            credential: config.credential.clone(),
            idempotency_key: config.idempotency_key,
        })
    }

    fn matches(&self, method: &Method, target: &Target) -> bool {
        self.scheme == target.scheme
            && self.host == target.host
            && self.port == target.port
            && self.methods.contains(method)
            && path_within(&target.path, &self.path_prefix)
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// `path` is inside `prefix`: a prefix ending in `/` covers everything below it; otherwise the
/// path must equal it or continue with `/`.
fn path_within(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() || prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A request's destination, normalized for matching.
struct Target {
    scheme: String,
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn of(uri: &Uri) -> Option<Target> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.trim_matches(['[', ']']).to_ascii_lowercase();
        let path = uri.path().to_string();
        if !path_is_plain(&path) {
            return None;
        }
        Some(Target { port: uri.port_u16().unwrap_or(default_port(&scheme)), scheme, host, path })
    }
}

/// How many rounds of percent-decoding [`path_is_plain`] looks through: an upstream (or a proxy
/// in front of it) that decodes twice sees `%252e` as `.`; one more round covers a chain of two.
const DECODE_ROUNDS: usize = 3;

/// Whether `path` means the same to every upstream: an upstream normalizes dot segments (also
/// `..;params`, as servlet containers do), may take `\` for `/`, and may percent-decode more than
/// once; a path that climbs under any of those readings could leave the granted prefix after
/// matching it, so it is never sent. Encoded dots, slashes and backslashes are refused outright,
/// as are control characters; a `%` that does not start an escape is left as it is.
fn path_is_plain(path: &str) -> bool {
    let mut reading = path.as_bytes().to_vec();
    for _ in 0..=DECODE_ROUNDS {
        let escapes_a_separator = reading
            .windows(3)
            .any(|w| w[0] == b'%' && matches!(w[1..].to_ascii_lowercase().as_slice(), b"2e" | b"2f" | b"5c"));
        if escapes_a_separator || reading.iter().any(|&b| b == b'\\' || b.is_ascii_control()) {
            return false;
        }
        let climbs = reading.split(|&b| b == b'/').any(|segment| {
            // `..;jsessionid=x` is `..` to a server that strips path parameters.
            let name = segment.split(|&b| b == b';').next().unwrap_or_default();
            name == b"." || name == b".."
        });
        if climbs {
            return false;
        }
        match percent_decode(&reading) {
            Some(decoded) => reading = decoded,
            None => break,
        }
    }
    true
}

/// One round of percent-decoding, or `None` when there is no escape left to decode.
fn percent_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut decoded_any = false;
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%').then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?))).flatten();
        match escape {
            Some((high, low)) => {
                out.push(high << 4 | low);
                decoded_any = true;
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    decoded_any.then_some(out)
}

/// One plugin's outbound policy, parsed once at load. The default grants nothing.
#[derive(Debug, Clone, Default)]
pub struct HttpPolicy {
    grants: Vec<HttpGrant>,
    max_requests_per_call: u32,
    request_timeout: Duration,
    max_response_bytes: usize,
}

impl HttpPolicy {
    /// Parses a plugin's policy, checking every named credential exists.
    pub fn from_config(config: &HttpPolicyConfig, credentials: &Credentials) -> Result<HttpPolicy> {
        let grants = config.grants.iter().map(HttpGrant::parse).collect::<Result<Vec<_>>>()?;
        for grant in &grants {
            if let Some(name) = &grant.credential {
                if !credentials.contains(name) {
                    bail!("grant names credential {name:?}, but there is no [credentials.{name}]");
                }
            }
        }
        Ok(HttpPolicy {
            grants,
            max_requests_per_call: config.max_requests_per_call,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// Whether any request at all is granted.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No grant covers the method and URL.
    NoGrant,
    /// The call already made its maximum number of requests.
    TooManyRequests(u32),
    /// The grant needs a credential the principal has no value for.
    MissingCredential(String),
    /// The URL carries user info (`user@host`).
    UserInfo,
}

/// Header names a guest may never set on a request, nor see on a response: wasmtime's defaults
/// (`Host`, `Transfer-Encoding`, `Connection`, `Keep-Alive`, `Upgrade`, `Proxy-Connection`,
/// `Proxy-Authenticate`, `Proxy-Authorization`, `HTTP2-Settings`) and the other hop-by-hop
/// fields, `TE` and `Trailer` (RFC 9110 §7.6.1). Setting one fails in the guest with
/// `forbidden`.
pub fn is_forbidden_header(name: &http::HeaderName) -> bool {
    DEFAULT_FORBIDDEN_HEADERS.contains(name) || name == http::header::TE || name == http::header::TRAILER
}

/// What one call did on the network: kept for the result and the audit log.
#[derive(Debug, Default)]
pub struct EgressRecord {
    /// Requests let through to the network, counted before connecting: a request cut off by a
    /// cancellation may have reached its upstream without ever showing in `sent`.
    pub admitted: u32,
    /// Requests that were sent: method, host, and status once known.
    pub sent: Vec<SentRequest>,
    /// Requests that were refused: method, URL without query, and why.
    pub refused: Vec<(Method, String, Refusal)>,
}

/// A request that left the host.
#[derive(Debug, Clone)]
pub struct SentRequest {
    /// Its method.
    pub method: Method,
    /// Its host.
    pub host: String,
    /// The response status, if one arrived.
    pub status: Option<u16>,
}

/// The per-call `wasi:http` hooks: the plugin's policy applied for one principal.
pub struct EgressHooks {
    policy: Arc<HttpPolicy>,
    credentials: Arc<Credentials>,
    principal: Principal,
    attempts: u32,
    record: Arc<Mutex<EgressRecord>>,
    upstream_key_base: Option<String>,
}

impl EgressHooks {
    /// Hooks for one call; `record` is read by the call path afterwards.
    pub fn new(
        policy: Arc<HttpPolicy>,
        credentials: Arc<Credentials>,
        principal: Principal,
        record: Arc<Mutex<EgressRecord>>,
        upstream_key_base: Option<String>,
    ) -> Self {
        Self { policy, credentials, principal, attempts: 0, record, upstream_key_base }
    }

    fn refuse(&self, method: Method, uri: &Uri, why: Refusal) -> HttpError {
        // The authority without user info: that may hold something meant to stay secret.
        let authority = uri.authority().map_or("", |a| a.as_str());
        let shown = format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("?"),
            authority.rsplit_once('@').map_or(authority, |(_, host)| host),
            uri.path()
        );
        tracing::info!(principal = %self.principal.0, %method, url = %shown, reason = ?why, "outbound request refused");
        if let Ok(mut record) = self.record.lock() {
            record.refused.push((method, shown, why));
        }
        HttpError::HttpRequestDenied
    }

    /// Decides a request. `Ok` carries the request ready to send (credential set).
    fn admit(&mut self, mut request: http::Request<WasiBody>) -> Result<http::Request<WasiBody>, HttpError> {
        let method = request.method().clone();
        self.attempts += 1;
        if self.attempts > self.policy.max_requests_per_call {
            return Err(self.refuse(
                method,
                request.uri(),
                Refusal::TooManyRequests(self.policy.max_requests_per_call),
            ));
        }
        if request.uri().authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(self.refuse(method, request.uri(), Refusal::UserInfo));
        }
        let grant = Target::of(request.uri()).and_then(|t| self.policy.grants.iter().find(|g| g.matches(&method, &t)));
        let Some(grant) = grant else {
            return Err(self.refuse(method, request.uri(), Refusal::NoGrant));
        };
        if let Some(name) = &grant.credential {
            let Some((header, value)) = self.credentials.for_principal(name, &self.principal.0) else {
                let why = Refusal::MissingCredential(name.clone());
                return Err(self.refuse(method, request.uri(), why));
            };
            // `insert` replaces every value the guest set under this name.
            request.headers_mut().insert(header.clone(), value.clone());
        }
        if let (Some(base), true) = (&self.upstream_key_base, grant.idempotency_key) {
            // The same call key and ordinal give the same upstream key on every attempt, so an
            // upstream that honours keys acts once even across host crashes.
            let key = upstream_key(base, self.attempts);
            if let Ok(value) = http::HeaderValue::from_str(&key) {
                request.headers_mut().insert("idempotency-key", value);
            }
        }
        if let Ok(mut record) = self.record.lock() {
            record.admitted += 1;
        }
        Ok(request)
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for EgressHooks {
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        is_forbidden_header(name)
    }

    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(is_forbidden_header)
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let request = match self.admit(request) {
            Ok(request) => request,
            Err(refused) => return Box::new(async move { Err(refused) }),
        };
        let cap = self.policy.request_timeout;
        let bounded = |guest: Option<Duration>| Some(guest.map_or(cap, |g| g.min(cap)));
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: bounded(options.connect_timeout),
            first_byte_timeout: bounded(options.first_byte_timeout),
            between_bytes_timeout: bounded(options.between_bytes_timeout),
        };
        let max_body = self.policy.max_response_bytes;
        let record = self.record.clone();
        let (method, host) = (request.method().clone(), request.uri().host().unwrap_or_default().to_string());
        Box::new(async move {
            let sent = wasmtime_wasi_http::default_send_request(request, Some(options)).await;
            let status = sent.as_ref().ok().map(|(response, _)| response.status().as_u16());
            if let Ok(mut record) = record.lock() {
                record.sent.push(SentRequest { method, host, status });
            }
            let (response, io) = sent?;
            // A declared length over the cap fails on the response path, where the guest sees
            // `HttpResponseBodySize`; a body that grows past the cap fails while it is read.
            let declared = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > max_body as u64) {
                return Err(HttpError::HttpResponseBodySize(declared));
            }
            let response = response.map(|body| limit_body(body, max_body));
            Ok((response, Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>))
        })
    }
}

/// Caps a response body: past `max` bytes the guest reads `HttpResponseBodySize`.
fn limit_body(body: impl http_body::Body<Data = Bytes, Error = HttpError> + Send + 'static, max: usize) -> WasiBody {
    Limited::new(body, max)
        .map_err(move |e| match e.downcast::<HttpError>() {
            Ok(inner) => *inner,
            Err(_) => HttpError::HttpResponseBodySize(Some(max as u64)),
        })
        .boxed_unsync()
}

/// The outbound `Idempotency-Key` of the `ordinal`-th request (from 1) of a keyed call.
pub fn upstream_key(base: &str, ordinal: u32) -> String {
    hex::encode(&Sha256::digest(format!("{base}:{ordinal}").as_bytes())[..20])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_keys_are_deterministic_per_ordinal() {
        assert_eq!(upstream_key("base", 1), upstream_key("base", 1));
        assert_ne!(upstream_key("base", 1), upstream_key("base", 2));
        assert_ne!(upstream_key("base", 1), upstream_key("other", 1));
        assert_eq!(upstream_key("base", 1).len(), 40);
    }

    fn grant(url: &str, methods: &[&str]) -> HttpGrant {
        HttpGrant::parse(&GrantConfig {
            url: url.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            credential: None,
            idempotency_key: true,
        })
        .unwrap()
    }

    fn allows(g: &HttpGrant, method: &str, url: &str) -> bool {
        let uri: Uri = url.parse().unwrap();
        Target::of(&uri).is_some_and(|t| g.matches(&Method::from_bytes(method.as_bytes()).unwrap(), &t))
    }

    #[test]
    fn grants_match_scheme_host_port_prefix_and_method() {
        let g = grant("http://127.0.0.1:8080/api/", &["GET", "post"]);
        assert!(allows(&g, "GET", "http://127.0.0.1:8080/api/items?x=1"));
        assert!(allows(&g, "POST", "http://127.0.0.1:8080/api/"));
        assert!(!allows(&g, "DELETE", "http://127.0.0.1:8080/api/items"), "method");
        assert!(!allows(&g, "GET", "http://127.0.0.1:8081/api/items"), "port");
        assert!(!allows(&g, "GET", "http://localhost:8080/api/items"), "host");
        assert!(!allows(&g, "GET", "https://127.0.0.1:8080/api/items"), "scheme");
        assert!(!allows(&g, "GET", "http://127.0.0.1:8080/admin"), "path");
        assert!(!allows(&g, "GET", "http://127.0.0.1:8080/api"), "prefix with slash needs the slash");
    }

    #[test]
    fn prefix_without_slash_is_a_whole_segment() {
        let g = grant("https://api.example.com/v1", &["GET"]);
        assert!(allows(&g, "GET", "https://api.example.com/v1"));
        assert!(allows(&g, "GET", "https://API.example.com:443/v1/users"));
        assert!(!allows(&g, "GET", "https://api.example.com/v10"));
    }

    #[test]
    fn climbing_paths_are_never_allowed() {
        let g = grant("http://127.0.0.1:8080/api/", &["GET"]);
        assert!(!allows(&g, "GET", "http://127.0.0.1:8080/api/../admin"));
        assert!(!allows(&g, "GET", "http://127.0.0.1:8080/api/%2e%2e/admin"));
        assert!(!allows(&g, "GET", "http://127.0.0.1:8080/api/.%2E/admin"));
        assert!(!allows(&g, "GET", "http://127.0.0.1:8080/api/x%2F..%2Fadmin"));
    }

    #[test]
    fn paths_an_upstream_could_normalize_out_of_the_prefix_are_refused() {
        let g = grant("http://127.0.0.1:8080/api/", &["GET"]);
        for path in [
            "/api/..;/admin",
            "/api/.;x/admin",
            "/api/..%5cadmin",
            "/api/..%5Cadmin",
            "/api/%252e%252e/admin",
            "/api/%25252e%25252e/admin",
            "/api/%252fadmin",
            "/api/..\\admin",
            "/api/%2e%2e%3b/admin",
            "/api/%0a/x",
        ] {
            assert!(!allows(&g, "GET", &format!("http://127.0.0.1:8080{path}")), "{path} was allowed");
        }
        for path in ["/api/users;v=2", "/api/a.b/..c/d..", "/api/100%25", "/api/%41%42", "/api/x%zz"] {
            assert!(allows(&g, "GET", &format!("http://127.0.0.1:8080{path}")), "{path} was refused");
        }
    }

    #[test]
    fn hop_by_hop_and_framing_headers_are_forbidden() {
        for name in [
            "host",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "upgrade",
            "te",
            "trailer",
            "proxy-connection",
            "proxy-authorization",
            "http2-settings",
        ] {
            assert!(is_forbidden_header(&http::HeaderName::from_static(name)), "{name}");
        }
        for name in ["content-length", "authorization", "content-type", "idempotency-key", "x-trailer"] {
            assert!(!is_forbidden_header(&http::HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn bad_grants_are_refused_at_load() {
        for url in ["ftp://x/", "not a url", "http:///nohost", "http://x/?q=1"] {
            assert!(
                HttpGrant::parse(&GrantConfig {
                    url: url.into(),
                    methods: default_methods(),
                    credential: None,
                    idempotency_key: true,
                })
                .is_err(),
                "{url}"
            );
        }
        let g = GrantConfig { url: "http://x/".into(), methods: vec![], credential: None, idempotency_key: true };
        assert!(HttpGrant::parse(&g).is_err());
    }
}
