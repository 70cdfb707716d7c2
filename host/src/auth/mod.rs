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
        Caller { principal, token_id: None, scope: ToolScope::all(), kind: TokenKind::None }
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

    /// Whether callers have a way in: static tokens, OAuth, or host-signed ones by explicit choice.
    pub fn has_tokens(&self) -> bool {
        !self.by_hash.is_empty() || self.signed_tokens_only || self.oauth.is_some()
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
        Ok(Caller {
            principal: Principal::new(claims.sub.as_str()),
            token_id: Some(claims.jti.into()),
            scope,
            kind: TokenKind::Signed,
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
    let caller = match auth.authenticate(request.headers().get(header::AUTHORIZATION), SystemTime::now()).await {
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
    let mut request = if caller.scope.is_restricted() {
        let max_body = gate.cordon.config().server.max_request_bytes;
        match check_scope(request, &caller, auth.oauth(), max_body).await {
            Ok(request) => request,
            Err((tool, mut refusal)) => {
                let message = format!("this token may not call {tool}; its scope is {}", caller.scope.describe());
                gate.cordon.audit_denial(&caller, &tool, &message);
                if let Some(decision) = decision {
                    add_headers(&mut refusal, decision.headers());
                }
                return refusal;
            }
        }
    } else {
        request
    };
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    if let Some(decision) = decision {
        add_headers(&mut response, decision.headers());
    }
    response
}

fn add_headers(response: &mut Response, headers: Vec<(&'static str, String)>) {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

/// Reads the body of a POST (at most `max_body` bytes: `[server] max_request_bytes`, refused
/// from its `Content-Length` before any byte is read) to find `tools/call` names; answers 403
/// (with the tool's name) if one is out of scope, 413 past the cap, and a JSON-RPC parse error
/// (400) for a body that is not JSON.
async fn check_scope(
    request: Request,
    caller: &Caller,
    oauth: Option<&OAuth>,
    max_body: usize,
) -> Result<Request, (String, Response)> {
    let scope = &caller.scope;
    if request.method() != axum::http::Method::POST {
        return Ok(request);
    }
    let too_large = || (String::new(), (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response());
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, max_body).await.map_err(|_| too_large())?;
    let called = match serde_json::from_slice::<CalledTools>(&bytes) {
        Ok(called) => called,
        Err(_) => return Err((String::new(), parse_error())),
    };
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
        return Err((tool, response));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// A JSON-RPC parse error (-32700) as HTTP 400.
fn parse_error() -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": -32700, "message": "Parse error: the request body is not JSON" },
    })
    .to_string();
    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], body).into_response()
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
