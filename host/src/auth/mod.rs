//! Authentication of HTTP callers: every `/mcp` request carries
//! `Authorization: Bearer`, resolved to a [`Caller`] — principal, token id and tool scope —
//! before MCP sees it.
//!
//! Token kinds:
//! - **static tokens**, configured as SHA-256 hashes (`cordon token hash`), each mapped to a
//!   principal and optionally to tool patterns;
//! - **host-signed tokens** (`cordon token issue`, [`signed`]): short-lived, scoped, revocable
//!   without a restart;
//! - **OAuth access tokens** ([`oauth`]): JWTs from an external authorization server, checked
//!   against its JWKS, issuer and this server's resource URL, their scopes mapped to tool patterns.
//!
//! Expired, revoked, forged or malformed tokens get 401 with `WWW-Authenticate: Bearer
//! error="invalid_token"`; a valid token calling a tool outside its scope gets 403 with
//! `error="insufficient_scope"` (and, over any transport, the call path answers `forbidden`).
//! With OAuth configured, every 401 challenge also carries `resource_metadata="…"` (RFC 9728), so
//! an MCP client can discover the authorization server.
//! HTTP without any token is possible only when the operator says so explicitly
//! (`[auth] allow_unauthenticated` or `--allow-unauthenticated`), and only on a loopback address;
//! callers are then `anonymous` with every tool in scope.
//!
//! ```toml
//! [[auth.tokens]]
//! principal = "alice"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! tools = ["demo_*"]        # optional; default: every tool
//! ```

pub mod oauth;
pub mod scope;
pub mod signed;

use anyhow::{bail, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cordon_core::Principal;
use cordon_state::revocations::Revocations;
use oauth::OAuth;
pub use scope::ToolScope;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use signed::{Invalid, Signer};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Serve HTTP without bearer tokens (loopback addresses only). Default false.
    pub allow_unauthenticated: bool,
    /// Static bearer tokens.
    pub tokens: Vec<StaticToken>,
    /// Serve HTTP with no static tokens, accepting only host-signed ones (`cordon token issue`).
    pub signed_tokens_only: bool,
    /// OAuth 2.1 resource-server mode.
    pub oauth: Option<oauth::OAuthConfig>,
    /// Principals whose tokens may read `/metrics` (e.g. `["prometheus"]`); no other token may.
    /// Unauthenticated loopback serving leaves `/metrics` open, like `/mcp`.
    pub metrics_principals: Vec<String>,
    /// Also serve `/mcp/t/<token>`, where the URL alone authenticates, for clients that take
    /// only a URL. Host-signed tokens only (`cordon token issue`: scoped, expiring, revocable);
    /// the token is never logged or audited, and a request that also sends `Authorization` is
    /// refused. Default false: every path under `/mcp/` but `/mcp` itself is 404.
    pub url_tokens: bool,
}

/// One `[[auth.tokens]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// Who presents this token.
    pub principal: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// Glob patterns of the tools it may list and call; default every tool.
    #[serde(default)]
    pub tools: Vec<String>,
}

/// The principal of unauthenticated HTTP callers, when they are allowed.
pub const ANONYMOUS: &str = "anonymous";

/// What every OAuth caller's principal starts with: `oauth:<sub>` (or the configured claim).
/// An authorization server names its subjects as it likes, so they live in a namespace of
/// their own; the names an operator gives (static tokens, `cordon token issue --subject`,
/// `[server] stdio_principal`) may not contain `:` ([`check_operator_principal`]), so an OAuth
/// subject called `local` or `alice` never gets that principal's credentials, idempotency
/// records or rate-limit bucket.
pub const OAUTH_PREFIX: &str = "oauth:";

/// Refuses a principal name an operator gives that could be mistaken for another source's:
/// empty, containing `:` (reserved for sources such as [`OAUTH_PREFIX`]), or containing control
/// characters.
pub fn check_operator_principal(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("a principal must not be empty");
    }
    if name.contains(':') {
        bail!("principal {name:?} contains ':', which is reserved for OAuth principals (oauth:<subject>)");
    }
    if name.chars().any(char::is_control) {
        bail!("principal {name:?} contains a control character");
    }
    Ok(())
}

/// With OAuth configured: a hint for each principal named in `[credentials.*]` or
/// `[rate_limits] principals` that no operator-named source uses and that is not an
/// `oauth:` name — most likely an OAuth subject from before OAuth principals were namespaced,
/// which now has to be written `"oauth:<subject>"` to apply.
pub fn oauth_principal_hints(config: &crate::Config) -> Vec<String> {
    if config.auth.oauth.is_none() {
        return Vec::new();
    }
    let known: std::collections::BTreeSet<&str> = config
        .auth
        .tokens
        .iter()
        .map(|t| t.principal.as_str())
        .chain([config.server.stdio_principal.as_str(), ANONYMOUS])
        .collect();
    let credentials = config.credentials.iter().flat_map(|(name, credential)| {
        credential.principals.keys().map(move |principal| (format!("[credentials.{name}]"), principal))
    });
    let rates = config.rate_limits.principals.keys().map(|principal| ("[rate_limits]".to_string(), principal));
    credentials
        .chain(rates)
        .filter(|(_, principal)| !principal.contains(':') && !known.contains(principal.as_str()))
        .map(|(section, principal)| {
            format!(
                "{section} names principal {principal:?}, which no static token or stdio uses: if it is an OAuth \
                 subject, write it \"{OAUTH_PREFIX}{principal}\" (OAuth callers are {OAUTH_PREFIX}<subject>); \
                 a host-signed token's subject keeps its name"
            )
        })
        .collect()
}

/// SHA-256 of a token, hex: what goes in `[[auth.tokens]] sha256`.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who it is.
    pub principal: Principal,
    /// The id of the token it presented (host-signed tokens), for audit.
    pub token_id: Option<Arc<str>>,
    /// The tools it may list and call.
    pub scope: ToolScope,
    /// How it authenticated.
    pub kind: TokenKind,
    /// The idempotency scope its token carries (a host-signed token's `--idempotency-scope`,
    /// or an OAuth token's `[auth.oauth] idempotency_scope_claim`): its calls that name no key
    /// are keyed by scope, tool and arguments ([`crate::idempotency`]).
    pub idempotency_scope: Option<Arc<str>>,
}

/// The longest idempotency scope a token may carry (a Message Batch `custom_id` is at most 64).
pub const MAX_IDEMPOTENCY_SCOPE_LEN: usize = 128;

/// An idempotency scope is 1 to [`MAX_IDEMPOTENCY_SCOPE_LEN`] bytes of printable text: it becomes
/// part of idempotency keys and audit lines.
pub fn check_idempotency_scope(scope: &str) -> Result<()> {
    if scope.is_empty() || scope.len() > MAX_IDEMPOTENCY_SCOPE_LEN || scope.chars().any(char::is_control) {
        bail!("an idempotency scope must be 1 to {MAX_IDEMPOTENCY_SCOPE_LEN} bytes of printable text");
    }
    Ok(())
}

/// How a caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// No token: stdio, the CLI, or unauthenticated loopback HTTP.
    None,
    /// A configured static token.
    Static,
    /// A host-signed token.
    Signed,
    /// An OAuth access token (JWT).
    OAuth,
}

impl Caller {
    /// A caller with every tool in scope (the local operator, an unauthenticated loopback user).
    pub fn unrestricted(principal: Principal) -> Caller {
        Caller { principal, token_id: None, scope: ToolScope::all(), kind: TokenKind::None, idempotency_scope: None }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No bearer token was presented.
    Missing,
    /// The token is unknown, forged, malformed, expired or revoked.
    Invalid,
}

/// Resolves bearer tokens to callers.
pub struct Authenticator {
    by_hash: HashMap<[u8; 32], Caller>,
    signer: Signer,
    revocations: Arc<Revocations>,
    allow_unauthenticated: bool,
    signed_tokens_only: bool,
    oauth: Option<OAuth>,
    metrics_principals: std::collections::BTreeSet<String>,
    url_tokens: bool,
}

impl Authenticator {
    /// Builds the token table (refusing malformed hashes, duplicates and bad patterns) and opens
    /// the signing key in `data_dir`; `revocations` is the store's list (shared across reloads).
    pub fn new(
        config: &AuthConfig,
        allow_unauthenticated: bool,
        data_dir: &Path,
        revocations: Arc<Revocations>,
    ) -> Result<Authenticator> {
        let mut by_hash = HashMap::new();
        for (i, token) in config.tokens.iter().enumerate() {
            let at = format!("[[auth.tokens]] #{} ({})", i + 1, token.principal);
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(token.sha256.trim(), &mut hash).is_err() {
                bail!("{at}: sha256 must be 64 hex digits (see `cordon token hash`)");
            }
            check_operator_principal(&token.principal).map_err(|e| anyhow::anyhow!("{at}: {e:#}"))?;
            let scope = ToolScope::from_patterns(&token.tools).map_err(|e| anyhow::anyhow!("{at}: {e:#}"))?;
            let caller = Caller {
                principal: Principal::new(token.principal.as_str()),
                token_id: None,
                scope,
                kind: TokenKind::Static,
                idempotency_scope: None,
            };
            if by_hash.insert(hash, caller).is_some() {
                bail!("{at}: the same token hash is listed twice");
            }
        }
        Ok(Authenticator {
            by_hash,
            signer: Signer::load_or_create(data_dir)?,
            revocations,
            allow_unauthenticated: allow_unauthenticated || config.allow_unauthenticated,
            signed_tokens_only: config.signed_tokens_only,
            oauth: config.oauth.as_ref().map(OAuth::new).transpose()?,
            metrics_principals: config.metrics_principals.iter().cloned().collect(),
            url_tokens: config.url_tokens,
        })
    }

    /// Whether `caller` may read `/metrics`: a principal of `[auth] metrics_principals`, or the
    /// anonymous caller of an unauthenticated loopback server.
    pub fn may_read_metrics(&self, caller: &Caller) -> bool {
        let anonymous = self.allow_unauthenticated && caller.kind == TokenKind::None;
        anonymous || self.metrics_principals.contains(caller.principal.0.as_ref())
    }

    /// The OAuth verifier, when resource-server mode is configured.
    pub fn oauth(&self) -> Option<&OAuth> {
        self.oauth.as_ref()
    }

    /// Whether requests without a token are accepted.
    pub fn allows_unauthenticated(&self) -> bool {
        self.allow_unauthenticated
    }

    /// Whether callers have a way in: static tokens, OAuth, or host-signed ones by explicit choice
    /// (`signed_tokens_only`, or `url_tokens`).
    pub fn has_tokens(&self) -> bool {
        !self.by_hash.is_empty() || self.signed_tokens_only || self.url_tokens || self.oauth.is_some()
    }

    /// Whether `/mcp/t/<token>` is served (`[auth] url_tokens`).
    pub fn serves_url_tokens(&self) -> bool {
        self.url_tokens
    }

    /// The caller for a token taken from the URL (`/mcp/t/<token>`): host-signed tokens only, with
    /// the same expiry, revocation and scope as in the header.
    pub fn authenticate_url_token(&self, token: &str, now: SystemTime) -> Result<Caller, AuthError> {
        if !token.starts_with(signed::PREFIX) {
            return Err(AuthError::Invalid);
        }
        self.signed(token, now)
    }

    /// The caller for an `Authorization` header value.
    pub async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
        now: SystemTime,
    ) -> Result<Caller, AuthError> {
        let Some(value) = authorization else {
            return if self.allow_unauthenticated {
                Ok(Caller::unrestricted(Principal::new(ANONYMOUS)))
            } else {
                Err(AuthError::Missing)
            };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(AuthError::Invalid)?;
        if token.starts_with(signed::PREFIX) {
            return self.signed(token, now);
        }
        // Looking up the digest, not the token, keeps comparison time independent of the secret.
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(caller) = self.by_hash.get(&digest) {
            return Ok(caller.clone());
        }
        match &self.oauth {
            Some(oauth) if OAuth::claims_token(token) => match oauth.verify(token, now).await {
                Ok(verified) => Ok(Caller {
                    principal: Principal::new(format!("{OAUTH_PREFIX}{}", verified.principal).as_str()),
                    token_id: verified.token_id.map(Into::into),
                    scope: verified.scope,
                    kind: TokenKind::OAuth,
                    idempotency_scope: verified.idempotency_scope.map(Into::into),
                }),
                Err(why) => {
                    tracing::info!(reason = %why, "OAuth access token refused");
                    Err(AuthError::Invalid)
                }
            },
            _ => Err(AuthError::Invalid),
        }
    }

    /// The `WWW-Authenticate` challenge of a 401.
    fn challenge(&self, error: AuthError) -> String {
        let mut challenge = "Bearer realm=\"cordon\"".to_string();
        if let Some(oauth) = &self.oauth {
            challenge.push_str(&format!(", resource_metadata=\"{}\"", oauth.metadata_url()));
        }
        if error == AuthError::Invalid {
            challenge.push_str(", error=\"invalid_token\"");
        }
        challenge
    }

    fn signed(&self, token: &str, now: SystemTime) -> Result<Caller, AuthError> {
        let refused = |why: Invalid| {
            tracing::info!(reason = %why, "host-signed token refused");
            AuthError::Invalid
        };
        let claims = self.signer.verify(token, now).map_err(refused)?;
        if self.revocations.is_revoked(&claims.jti) {
            return Err(refused(Invalid::Revoked));
        }
        // `issue` refuses such subjects; one here was minted before they were refused.
        if check_operator_principal(&claims.sub).is_err() {
            return Err(refused(Invalid::Malformed));
        }
        // Patterns were checked when the token was issued; a bad one here means tampering.
        let scope = ToolScope::from_patterns(&claims.tools).map_err(|_| refused(Invalid::Malformed))?;
        if claims.idempotency_scope.as_deref().is_some_and(|s| check_idempotency_scope(s).is_err()) {
            return Err(refused(Invalid::Malformed));
        }
        Ok(Caller {
            principal: Principal::new(claims.sub.as_str()),
            token_id: Some(claims.jti.into()),
            scope,
            kind: TokenKind::Signed,
            idempotency_scope: claims.idempotency_scope.map(Into::into),
        })
    }
}

/// What every `/mcp` request passes: authentication, then the caller's rate limit.
pub struct Gate {
    /// Resolves tokens to callers; replaced whole when SIGHUP reloads the config.
    auth: std::sync::RwLock<Arc<Authenticator>>,
    /// The host: its rate limits, and its audit log for denials decided here.
    pub cordon: Arc<crate::Cordon>,
}

impl Gate {
    /// A gate in front of `cordon`, resolving tokens with `auth`.
    pub fn new(auth: Arc<Authenticator>, cordon: Arc<crate::Cordon>) -> Gate {
        Gate { auth: std::sync::RwLock::new(auth), cordon }
    }

    /// The token table in force.
    pub fn auth(&self) -> Arc<Authenticator> {
        self.auth.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the token table (config reload); requests already past the gate are unaffected.
    pub fn set_auth(&self, auth: Arc<Authenticator>) {
        *self.auth.write().unwrap_or_else(|p| p.into_inner()) = auth;
    }
}

/// Axum middleware: authenticates the request, applies the caller's rate limit (429 with
/// `RateLimit-*` and `Retry-After`; the `RateLimit-*` headers on every response within limits),
/// refuses a `tools/call` outside the caller's scope with 403, and stores the [`Caller`] in the
/// request's extensions (rmcp hands them to the MCP handler).
pub async fn require_bearer(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let auth = gate.auth();
    let now = SystemTime::now();
    let authenticated = match token_in_path(&request) {
        TokenInPath::None => auth.authenticate(request.headers().get(header::AUTHORIZATION), now).await,
        // Without `[auth] url_tokens`, a token path is like any other path under `/mcp/`.
        TokenInPath::Other => return (StatusCode::NOT_FOUND, "Not Found").into_response(),
        TokenInPath::Token(_) if !auth.serves_url_tokens() => {
            return (StatusCode::NOT_FOUND, "Not Found").into_response()
        }
        TokenInPath::Token(_) if request.headers().contains_key(header::AUTHORIZATION) => {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                "Invalid Request: a token in the URL and an Authorization header: send one",
            )
        }
        TokenInPath::Token(token) => auth.authenticate_url_token(&token, now),
    };
    let caller = match authenticated {
        Ok(caller) => caller,
        Err(error) => return unauthorized(&auth, error),
    };
    let decision = gate.cordon.rate_limits().principal(&caller.principal.0);
    if let Some(decision) = decision.as_ref().filter(|d| !d.allowed) {
        tracing::info!(principal = %caller.principal.0, "rate limit exceeded");
        let body = serde_json::json!({ "error": decision.message(crate::ratelimit::Scope::Principal) }).to_string();
        let mut response =
            (StatusCode::TOO_MANY_REQUESTS, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        add_headers(&mut response, decision.headers());
        return response;
    }
    let max_body = gate.cordon.config().server.max_request_bytes;
    let mut request = match check_body(request, &caller, auth.oauth(), max_body).await {
        Ok(request) => request,
        Err(BodyRefusal { tool, mut response }) => {
            if let Some(tool) = tool {
                let message = format!("this token may not call {tool}; its scope is {}", caller.scope.describe());
                gate.cordon.audit_denial(&caller, &tool, &message);
            }
            if let Some(decision) = decision {
                add_headers(&mut response, decision.headers());
            }
            return response;
        }
    };
    let json_body = request.method() == axum::http::Method::POST && is_json(request.headers());
    request.extensions_mut().insert(caller);
    let mut response = as_jsonrpc_error(next.run(request).await, json_body);
    if let Some(decision) = decision {
        add_headers(&mut response, decision.headers());
    }
    response
}

/// Where a request to `/mcp…` carries its token.
enum TokenInPath {
    /// `/mcp` itself: the token, if any, is in the `Authorization` header.
    None,
    /// `/mcp/t/<token>`.
    Token(String),
    /// Any other path under `/mcp/`.
    Other,
}

/// Reads the request's path as the client sent it (before routing strips `/mcp`).
fn token_in_path(request: &Request) -> TokenInPath {
    let path = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| request.uri().path(), |original| original.0.path());
    let Some(rest) = path.strip_prefix("/mcp") else { return TokenInPath::None };
    if rest.is_empty() {
        return TokenInPath::None;
    }
    match rest.strip_prefix("/t/") {
        // A token is base64url and dots: nothing to percent-decode, and no `/` in it.
        Some(token) if !token.is_empty() && !token.contains('/') => TokenInPath::Token(token.to_owned()),
        _ => TokenInPath::Other,
    }
}

fn add_headers(response: &mut Response, headers: Vec<(&'static str, String)>) {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

/// Why [`check_body`] refused a request: the response to send, and the tool when it was one
/// outside the caller's scope (for the audit).
struct BodyRefusal {
    tool: Option<String>,
    response: Response,
}

/// Reads the body of a POST (at most `max_body` bytes: `[server] max_request_bytes`, refused
/// from its `Content-Length` before any byte is read), so that no malformed message reaches the
/// MCP layer and no tool outside the caller's scope is called: 413 past the cap, a JSON-RPC parse
/// error (400, -32700) for a body that is not JSON, 403 (with the tool's name) for a `tools/call`
/// out of scope. The bytes read are handed on as the body.
async fn check_body(
    request: Request,
    caller: &Caller,
    oauth: Option<&OAuth>,
    max_body: usize,
) -> Result<Request, BodyRefusal> {
    let scope = &caller.scope;
    if request.method() != axum::http::Method::POST {
        return Ok(request);
    }
    let too_large = || BodyRefusal {
        tool: None,
        response: jsonrpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            -32600,
            &format!("Invalid Request: the body exceeds {max_body} bytes ([server] max_request_bytes)"),
        ),
    };
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, max_body).await.map_err(|_| too_large())?;
    let not_json = || BodyRefusal { tool: None, response: jsonrpc_error(StatusCode::BAD_REQUEST, -32700, PARSE_ERROR) };
    if !scope.is_restricted() {
        // Syntax only: the MCP layer parses the message itself.
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(|_| not_json())?;
        return Ok(Request::from_parts(parts, Body::from(bytes)));
    }
    let called = serde_json::from_slice::<CalledTools>(&bytes).map_err(|_| not_json())?;
    if let Some(tool) = called.0.into_iter().find(|name| !scope.allows(name)) {
        // An OAuth client can step up: name the OAuth scopes that grant the tool. Other tokens
        // have no scopes to ask for; their tool patterns say what they may do.
        let wanted = match oauth.filter(|_| caller.kind == TokenKind::OAuth) {
            Some(oauth) => oauth.scopes_for(&tool).join(" "),
            None => scope.describe(),
        };
        let metadata = oauth.map(|o| format!(", resource_metadata=\"{}\"", o.metadata_url())).unwrap_or_default();
        let challenge = format!("Bearer realm=\"cordon\", error=\"insufficient_scope\", scope=\"{wanted}\"{metadata}");
        let body = serde_json::json!({ "error": format!("this token may not call {tool}") }).to_string();
        let response = (
            StatusCode::FORBIDDEN,
            [(header::WWW_AUTHENTICATE, challenge), (header::CONTENT_TYPE, "application/json".to_string())],
            body,
        )
            .into_response();
        return Err(BodyRefusal { tool: Some(tool), response });
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

const PARSE_ERROR: &str = "Parse error: the request body is not JSON";

/// Whether the request says its body is JSON (`application/json`, any parameters).
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|value| {
        value.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("application/json")
    })
}

/// A JSON-RPC error response with no id (the request's could not be read), as `status`.
pub fn jsonrpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = serde_json::json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The MCP transport's own refusals of a malformed request (plain text, and 415 for a body it
/// cannot take as a JSON-RPC message) as JSON-RPC errors: a client gets -32600 with what was
/// wrong, never a parser's message. `json_body`: the request said its body is JSON (and
/// [`check_body`] found it is), so a 415 means JSON that is not a JSON-RPC message.
fn as_jsonrpc_error(response: Response, json_body: bool) -> Response {
    let is_text = |response: &Response| {
        response.headers().get(header::CONTENT_TYPE).is_none_or(|v| v.as_bytes().starts_with(b"text/plain"))
    };
    match response.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE if json_body => jsonrpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: the body is JSON but not a JSON-RPC 2.0 request, notification or response",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            jsonrpc_error(StatusCode::BAD_REQUEST, -32600, "Invalid Request: Content-Type must be application/json")
        }
        StatusCode::NOT_ACCEPTABLE if is_text(&response) => jsonrpc_error(
            StatusCode::NOT_ACCEPTABLE,
            -32600,
            "Invalid Request: Accept must list both application/json and text/event-stream",
        ),
        _ => response,
    }
}

/// Visitor methods for JSON numbers, booleans and null, which carry no tool name.
macro_rules! skip_numbers {
    ($value:ty, $empty:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<$value, E> {
            Ok($empty)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<$value, E> {
            Ok($empty)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<$value, E> {
            Ok($empty)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<$value, E> {
            Ok($empty)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<$value, E> {
            Ok($empty)
        }
    };
}

/// [`skip_numbers`] and strings.
macro_rules! skip_scalars {
    ($value:ty, $empty:expr) => {
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<$value, E> {
            Ok($empty)
        }
        skip_numbers!($value, $empty);
    };
}

/// The tools a JSON-RPC message, or a batch of them, calls: `params.name` of every message
/// whose `method` is `tools/call`. Read in one pass without building a JSON tree: everything
/// else is skipped as it is parsed, so checking a scope holds no more than the body itself.
/// A key given twice counts every time (a parser that keeps the first and one that keeps the
/// last must both be covered), and a message with any `tools/call` method has all its names
/// checked.
struct CalledTools(Vec<String>);

impl<'de> Deserialize<'de> for CalledTools {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Batch;
        impl<'de> serde::de::Visitor<'de> for Batch {
            type Value = CalledTools;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON-RPC message or batch")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<CalledTools, A::Error> {
                Ok(CalledTools(message(map)?))
            }
            // A batch's elements are read the same way: a nested array (which no JSON-RPC
            // parser takes) only adds names to check.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<CalledTools, A::Error> {
                let mut names = Vec::new();
                while let Some(CalledTools(more)) = seq.next_element::<CalledTools>()? {
                    names.extend(more);
                }
                Ok(CalledTools(names))
            }
            skip_scalars!(CalledTools, CalledTools(Vec::new()));
        }
        deserializer.deserialize_any(Batch)
    }
}

/// The called tool names of one message object.
fn message<'de, A: serde::de::MapAccess<'de>>(mut map: A) -> Result<Vec<String>, A::Error> {
    let (mut calls, mut names) = (false, Vec::new());
    while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
        match key.as_ref() {
            "method" => calls |= map.next_value::<AnyString>()?.0.as_deref() == Some("tools/call"),
            "params" => names.extend(map.next_value::<ParamNames>()?.0),
            _ => {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
    }
    Ok(if calls { names } else { Vec::new() })
}

/// Every string `name` of a `params` object (nothing for any other value).
struct ParamNames(Vec<String>);

impl<'de> Deserialize<'de> for ParamNames {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Params;
        impl<'de> serde::de::Visitor<'de> for Params {
            type Value = ParamNames;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON-RPC params")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ParamNames, A::Error> {
                let mut names = Vec::new();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "name" {
                        names.extend(map.next_value::<AnyString>()?.0);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(ParamNames(names))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ParamNames, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(ParamNames(Vec::new()))
            }
            skip_scalars!(ParamNames, ParamNames(Vec::new()));
        }
        deserializer.deserialize_any(Params)
    }
}

/// A value kept only when it is a string.
struct AnyString(Option<String>);

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = AnyString;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<AnyString, E> {
                Ok(AnyString(Some(text.to_owned())))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<AnyString, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(AnyString(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<AnyString, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(AnyString(None))
            }
            skip_numbers!(AnyString, AnyString(None));
        }
        deserializer.deserialize_any(Text)
    }
}

/// The 401 for a request without a valid token, with the challenge its authenticator issues.
pub fn unauthorized(auth: &Authenticator, error: AuthError) -> Response {
    let challenge = auth.challenge(error);
    let message = match error {
        AuthError::Missing => "missing bearer token",
        AuthError::Invalid => "invalid bearer token",
    };
    let body = serde_json::json!({ "error": message }).to_string();
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge), (header::CONTENT_TYPE, "application/json".to_string())],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn auth(allow: bool, dir: &Path) -> Authenticator {
        let config = AuthConfig {
            tokens: vec![StaticToken {
                principal: "alice".into(),
                sha256: hash_token("alice-token"),
                tools: vec!["demo_*".into()],
            }],
            ..Default::default()
        };
        Authenticator::new(&config, allow, dir, revocations(dir)).unwrap()
    }

    fn revocations(dir: &Path) -> Arc<Revocations> {
        Arc::new(Revocations::open(dir).unwrap())
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    #[tokio::test]
    async fn static_tokens_resolve_to_their_principal_and_scope() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(false, dir.path());
        let now = SystemTime::now();
        let caller = a.authenticate(Some(&bearer("alice-token")), now).await.unwrap();
        assert_eq!(caller.principal.0.as_ref(), "alice");
        assert!(caller.scope.allows("demo_echo") && !caller.scope.allows("payments_charge"));
        assert!(a.authenticate(Some(&HeaderValue::from_static("bearer alice-token")), now).await.is_ok());
    }

    #[tokio::test]
    async fn missing_and_unknown_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(false, dir.path());
        let now = SystemTime::now();
        assert_eq!(a.authenticate(None, now).await.unwrap_err(), AuthError::Missing);
        assert_eq!(a.authenticate(Some(&bearer("wrong")), now).await.unwrap_err(), AuthError::Invalid);
        assert_eq!(
            a.authenticate(Some(&HeaderValue::from_static("Basic YWxpY2U=")), now).await.unwrap_err(),
            AuthError::Invalid
        );
        let open = auth(true, dir.path());
        assert_eq!(open.authenticate(None, now).await.unwrap().principal.0.as_ref(), ANONYMOUS);
        assert_eq!(open.authenticate(Some(&bearer("wrong")), now).await.unwrap_err(), AuthError::Invalid);
    }

    #[tokio::test]
    async fn signed_tokens_carry_subject_scope_and_id_until_expired_or_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(false, dir.path());
        let now = SystemTime::now();
        let signer = Signer::load_or_create(dir.path()).unwrap();
        let (token, claims) = signer.issue("bot", &["payments_*".into()], Duration::from_secs(60), now).unwrap();
        let caller = a.authenticate(Some(&bearer(&token)), now).await.unwrap();
        assert_eq!(caller.principal.0.as_ref(), "bot");
        assert_eq!(caller.token_id.as_deref(), Some(claims.jti.as_str()));
        assert!(caller.scope.allows("payments_charge") && !caller.scope.allows("demo_echo"));
        let later = now + Duration::from_secs(61);
        assert_eq!(a.authenticate(Some(&bearer(&token)), later).await.unwrap_err(), AuthError::Invalid);
        Revocations::open(dir.path()).unwrap().revoke(&claims.jti).await.unwrap();
        assert_eq!(a.authenticate(Some(&bearer(&token)), now).await.unwrap_err(), AuthError::Invalid);
    }

    #[test]
    fn called_tools_are_read_without_a_tree_and_every_duplicate_counts() {
        let names = |body: &str| serde_json::from_str::<CalledTools>(body).map(|c| c.0);
        let one = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":[1,{}]}}}"#;
        assert_eq!(names(one).unwrap(), ["a"]);
        let batch = r#"[{"method":"tools/list"},1,"x",{"method":"tools/call","params":{"name":"b"}}]"#;
        assert_eq!(names(batch).unwrap(), ["b"]);
        assert!(names(r#"{"method":"tools/list","params":{"name":"z"}}"#).unwrap().is_empty());
        // Whichever duplicate a later parser keeps, it was checked.
        let twice = r#"{"method":"tools/call","params":{"name":"ok","name":"evil"}}"#;
        assert_eq!(names(twice).unwrap(), ["ok", "evil"]);
        let method_twice = r#"{"method":"tools/list","method":"tools/call","params":{"name":"evil"}}"#;
        assert_eq!(names(method_twice).unwrap(), ["evil"]);
        let params_first = r#"{"params":{"name":"evil"},"method":"tools/call"}"#;
        assert_eq!(names(params_first).unwrap(), ["evil"]);
        let escaped = r#"{"meth\u006fd":"tools\/call","params":{"n\u0061me":"evil"}}"#;
        assert_eq!(names(escaped).unwrap(), ["evil"]);
        assert!(names("[0,0,0,null,true]").unwrap().is_empty());
        assert!(names("{not json").is_err());
        // Skipped values are not recursed into: deep nesting costs no stack (rmcp then refuses it);
        // nested batches stop at serde_json's depth limit, a parse error.
        let deep = format!("[{{\"params\":{}{}}}]", "[".repeat(100_000), "]".repeat(100_000));
        assert!(names(&deep).unwrap().is_empty());
        let nested = r#"[[{"method":"tools/call","params":{"name":"evil"}}]]"#;
        assert_eq!(names(nested).unwrap(), ["evil"]);
        assert!(names(&format!("{}{}", "[".repeat(200), "]".repeat(200))).is_err());
    }

    #[test]
    fn operator_principals_cannot_enter_the_oauth_namespace() {
        assert!(check_operator_principal("alice").is_ok());
        for bad in ["", "oauth:alice", "a:b", "line\nbreak"] {
            assert!(check_operator_principal(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let token = StaticToken { principal: "oauth:bob".into(), sha256: hash_token("t"), tools: vec![] };
        let config = AuthConfig { tokens: vec![token], ..Default::default() };
        assert!(Authenticator::new(&config, false, dir.path(), revocations(dir.path())).is_err());
        let signer = Signer::load_or_create(dir.path()).unwrap();
        assert!(signer.issue("oauth:bob", &[], Duration::from_secs(60), SystemTime::now()).is_err());
    }

    #[test]
    fn credentials_for_what_looks_like_an_oauth_subject_get_a_hint() {
        let config = crate::Config::parse(
            "[auth.oauth]\nissuer = \"https://i\"\nresource = \"https://r/mcp\"\njwks_file = \"j.json\"\n\n\
             [[auth.tokens]]\nprincipal = \"alice\"\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n\n\
             [credentials.api]\nprincipals.alice = { env = \"A\" }\nprincipals.agent-7 = { env = \"B\" }\n\
             principals.\"oauth:agent-8\" = { env = \"C\" }\n",
        )
        .unwrap();
        let hints = oauth_principal_hints(&config);
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(hints[0].contains("\"agent-7\"") && hints[0].contains("oauth:agent-7"), "{}", hints[0]);
    }

    #[test]
    fn malformed_config_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let bad_hash = StaticToken { principal: "x".into(), sha256: "abc".into(), tools: vec![] };
        let config = AuthConfig { tokens: vec![bad_hash], ..Default::default() };
        assert!(Authenticator::new(&config, false, dir.path(), revocations(dir.path())).is_err());
        let bad_glob = StaticToken { principal: "x".into(), sha256: hash_token("t"), tools: vec!["[".into()] };
        let config = AuthConfig { tokens: vec![bad_glob], ..Default::default() };
        assert!(Authenticator::new(&config, false, dir.path(), revocations(dir.path())).is_err());
    }
}
