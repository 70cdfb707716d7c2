//! Authentication of HTTP callers (DESIGN §7): every request carries `Authorization: Bearer`,
//! resolved to a [`Principal`] before MCP sees it.
//!
//! Static tokens are configured as SHA-256 hashes (`cordon token hash` prints one), so the config
//! file holds no usable secret. HTTP without any token is possible only when the operator says
//! so explicitly (`[auth] allow_unauthenticated = true` or `--allow-unauthenticated`) and only on
//! a loopback address; callers are then the principal `anonymous`.
//!
//! ```toml
//! [[auth.tokens]]
//! principal = "alice"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! ```

use crate::call::Principal;
use anyhow::{bail, Result};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Serve HTTP without bearer tokens (loopback addresses only). Default false.
    pub allow_unauthenticated: bool,
    /// Static bearer tokens.
    pub tokens: Vec<StaticToken>,
}

/// One `[[auth.tokens]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// Who presents this token.
    pub principal: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
}

/// The principal of unauthenticated HTTP callers, when they are allowed.
pub const ANONYMOUS: &str = "anonymous";

/// SHA-256 of a token, hex: what goes in `[[auth.tokens]] sha256`.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Resolves bearer tokens to principals.
pub struct Authenticator {
    by_hash: HashMap<[u8; 32], Principal>,
    allow_unauthenticated: bool,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No bearer token was presented.
    Missing,
    /// The token is not one Cordon knows.
    Invalid,
}

impl Authenticator {
    /// Builds the token table, refusing malformed hashes and duplicates.
    pub fn from_config(config: &AuthConfig, allow_unauthenticated: bool) -> Result<Authenticator> {
        let mut by_hash = HashMap::new();
        for (i, token) in config.tokens.iter().enumerate() {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(token.sha256.trim(), &mut hash).is_err() {
                bail!(
                    "[[auth.tokens]] #{} ({}): sha256 must be 64 hex digits (see `cordon token hash`)",
                    i + 1,
                    token.principal
                );
            }
            if token.principal.is_empty() {
                bail!("[[auth.tokens]] #{}: principal must not be empty", i + 1);
            }
            if by_hash.insert(hash, Principal::new(token.principal.as_str())).is_some() {
                bail!("[[auth.tokens]] #{} ({}): the same token hash is listed twice", i + 1, token.principal);
            }
        }
        Ok(Authenticator { by_hash, allow_unauthenticated: allow_unauthenticated || config.allow_unauthenticated })
    }

    /// Whether requests without a token are accepted.
    pub fn allows_unauthenticated(&self) -> bool {
        self.allow_unauthenticated
    }

    /// Whether any token is configured.
    pub fn has_tokens(&self) -> bool {
        !self.by_hash.is_empty()
    }

    /// The principal for an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&HeaderValue>) -> Result<Principal, AuthError> {
        let Some(value) = authorization else {
            return if self.allow_unauthenticated { Ok(Principal::new(ANONYMOUS)) } else { Err(AuthError::Missing) };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(AuthError::Invalid)?;
        // Looking up the digest, not the token, keeps comparison time independent of the secret.
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&digest).cloned().ok_or(AuthError::Invalid)
    }
}

/// Axum middleware: authenticates the request and stores its [`Principal`] in the request's
/// extensions (rmcp hands them to the MCP handler), or answers 401.
pub async fn require_bearer(State(auth): State<Arc<Authenticator>>, mut request: Request, next: Next) -> Response {
    match auth.authenticate(request.headers().get(header::AUTHORIZATION)) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => unauthorized(error),
    }
}

fn unauthorized(error: AuthError) -> Response {
    let (challenge, message) = match error {
        AuthError::Missing => ("Bearer realm=\"cordon\"", "missing bearer token"),
        AuthError::Invalid => ("Bearer realm=\"cordon\", error=\"invalid_token\"", "invalid bearer token"),
    };
    let body = serde_json::json!({ "error": message }).to_string();
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge), (header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(allow: bool) -> Authenticator {
        let config = AuthConfig {
            allow_unauthenticated: false,
            tokens: vec![StaticToken { principal: "alice".into(), sha256: hash_token("alice-token") }],
        };
        Authenticator::from_config(&config, allow).unwrap()
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    #[test]
    fn known_tokens_resolve_to_their_principal() {
        let a = auth(false);
        assert_eq!(a.authenticate(Some(&bearer("alice-token"))).unwrap().0.as_ref(), "alice");
        assert_eq!(a.authenticate(Some(&HeaderValue::from_static("bearer alice-token"))).unwrap().0.as_ref(), "alice");
    }

    #[test]
    fn missing_and_unknown_tokens_are_refused() {
        let a = auth(false);
        assert_eq!(a.authenticate(None), Err(AuthError::Missing));
        assert_eq!(a.authenticate(Some(&bearer("wrong"))), Err(AuthError::Invalid));
        assert_eq!(a.authenticate(Some(&HeaderValue::from_static("Basic YWxpY2U="))), Err(AuthError::Invalid));
        // Allowing unauthenticated callers never accepts a wrong token.
        let open = auth(true);
        assert_eq!(open.authenticate(None).unwrap().0.as_ref(), ANONYMOUS);
        assert_eq!(open.authenticate(Some(&bearer("wrong"))), Err(AuthError::Invalid));
    }

    #[test]
    fn malformed_hashes_are_refused_at_load() {
        let config = AuthConfig {
            allow_unauthenticated: false,
            tokens: vec![StaticToken { principal: "x".into(), sha256: "abc".into() }],
        };
        assert!(Authenticator::from_config(&config, false).is_err());
    }
}
