//! Bearer tokens: the `Authorization` header as `auth::Authenticator` reads it (scheme, static
//! token digests, host-signed tokens), and `auth::signed::Signer` issuing and verifying
//! `cdt1.<claims>.<signature>` tokens under a fixed key.
//!
//! The input is used twice: whole, as a header value and as a token; and as the parameters of
//! a token to issue (8 bytes of lifetime, then the subject and tool patterns, one a line).
//!
//! Invariants:
//! - a token that verifies is byte for byte what the signer issues for its payload (no other
//!   spelling of a signature or payload is accepted), and has not expired;
//! - an accepted header resolves to the caller its token was configured or issued for;
//! - issuing refuses only an empty subject or an expiry past the year 9999, and what it issues
//!   has an expiry `cordon token issue` can print;
//! - an issued token verifies to the claims it was issued with, until it expires; any change to
//!   one of its characters makes it fail.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use cordon_host::auth::signed::{Invalid, Signer, KEY_FILE, MAX_EXPIRY, PREFIX};
use cordon_host::auth::{hash_token, AuthConfig, Authenticator, StaticToken, TokenKind};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The signing key: fixed, so the seed corpus can hold tokens that verify.
const KEY: [u8; 32] = *b"cordon-fuzz-fixed-signing-key-32";
/// "Now" for every check (2030-03-17): seed tokens issued at it stay valid.
const NOW_S: u64 = 1_900_000_000;
/// The static tokens: (token, principal, tool patterns).
const STATIC: &[(&str, &str, &[&str])] = &[("alice-token", "alice", &["demo_*"]), ("root-token", "root", &[])];

struct Fixture {
    signer: Signer,
    auth: Authenticator,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = cordon_fuzz::scratch_dir();
        std::fs::write(dir.path().join(KEY_FILE), KEY).expect("key file");
        let tokens = STATIC
            .iter()
            .map(|(token, principal, tools)| StaticToken {
                principal: principal.to_string(),
                sha256: hash_token(token),
                tools: tools.iter().map(|t| t.to_string()).collect(),
            })
            .collect();
        let config = AuthConfig { tokens, ..Default::default() };
        Fixture {
            signer: Signer::load_or_create(dir.path()).expect("signer"),
            auth: Authenticator::new(
                &config,
                false,
                dir.path(),
                std::sync::Arc::new(cordon_state::revocations::Revocations::open(dir.path()).expect("revocations")),
            )
            .expect("authenticator"),
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"),
            _dir: dir,
        }
    })
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_S)
}

/// What the signer would issue for the payload `cdt1.<claims>`.
fn canonical(payload: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&KEY).expect("any key length");
    mac.update(payload.as_bytes());
    format!("{payload}.{}", B64.encode(mac.finalize().into_bytes()))
}

/// Checks a token the signer accepted.
fn check_verified(token: &str, claims: &cordon_host::auth::signed::Claims) {
    let (payload, _) = token.rsplit_once('.').expect("a verified token has a signature");
    assert_eq!(token, canonical(payload), "a token verified that the signer would not have issued");
    assert!(claims.exp > NOW_S, "an expired token verified");
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();

    // 1. The input as a token, and as an `Authorization` header.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(claims) = fx.signer.verify(text, now()) {
            check_verified(text, &claims);
        }
    }
    if let Ok(header) = axum::http::HeaderValue::from_bytes(data) {
        if let Ok(caller) = fx.runtime.block_on(fx.auth.authenticate(Some(&header), now())) {
            let value = header.to_str().expect("an accepted header is text");
            let (scheme, token) = value.split_once(' ').expect("an accepted header has a scheme");
            assert!(scheme.eq_ignore_ascii_case("bearer"), "{value:?}");
            let token = token.trim();
            match caller.kind {
                TokenKind::Static => {
                    let (_, principal, _) = STATIC
                        .iter()
                        .find(|(t, _, _)| *t == token)
                        .unwrap_or_else(|| panic!("static token accepted that is not configured: {token:?}"));
                    assert_eq!(caller.principal.0.as_ref(), *principal);
                }
                TokenKind::Signed => {
                    let claims = fx.signer.verify(token, now()).expect("accepted signed token verifies");
                    check_verified(token, &claims);
                    assert_eq!(caller.principal.0.as_ref(), claims.sub);
                    assert_eq!(caller.token_id.as_deref(), Some(claims.jti.as_str()));
                }
                kind => panic!("unexpected token kind {kind:?} for {value:?}"),
            }
        }
    }

    // 2. The input as what to issue.
    if data.len() < 8 {
        return;
    }
    let ttl = Duration::from_secs(u64::from_le_bytes(data[..8].try_into().expect("8 bytes")));
    let Ok(text) = std::str::from_utf8(&data[8..]) else { return };
    let mut lines = text.split('\n');
    let subject = lines.next().unwrap_or_default();
    let tools: Vec<String> = lines.take(4).map(str::to_string).collect();
    let (token, claims) = match fx.signer.issue(subject, &tools, ttl, now()) {
        Ok(issued) => issued,
        Err(error) => {
            let too_long = NOW_S.checked_add(ttl.as_secs()).is_none_or(|exp| exp > MAX_EXPIRY);
            let reserved = cordon_host::auth::check_operator_principal(subject).is_err();
            assert!(subject.is_empty() || too_long || reserved, "issue refused: {error:#}");
            return;
        }
    };
    assert!(token.starts_with(PREFIX));
    // `cordon token issue` prints the expiry so.
    let expiry = UNIX_EPOCH + Duration::from_secs(claims.exp);
    let _ = humantime::format_rfc3339(expiry).to_string();
    assert_eq!((claims.sub.as_str(), claims.tools.as_slice()), (subject, tools.as_slice()));
    if ttl.as_secs() == 0 {
        assert_eq!(fx.signer.verify(&token, now()), Err(Invalid::Expired));
        return;
    }
    assert_eq!(fx.signer.verify(&token, now()).as_ref(), Ok(&claims), "an issued token does not verify");
    check_verified(&token, &claims);
    assert_eq!(fx.signer.verify(&token, expiry), Err(Invalid::Expired));

    // Any one character changed (within the base64url alphabet, so not trivially malformed).
    let at = usize::from(data[0]) * 256 + usize::from(data[1]);
    let at = at % token.len();
    let mut changed = token.clone().into_bytes();
    changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).expect("ASCII");
    assert!(fx.signer.verify(&changed, now()).is_err(), "a changed token verified: {changed}");

    // Presented as a bearer token, it authenticates as its subject (when its patterns are globs).
    let header = axum::http::HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is a header value");
    if let Ok(caller) = fx.runtime.block_on(fx.auth.authenticate(Some(&header), now())) {
        assert_eq!(caller.kind, TokenKind::Signed);
        assert_eq!(caller.principal.0.as_ref(), subject);
        assert_eq!(caller.token_id.as_deref(), Some(claims.jti.as_str()));
    } else {
        assert!(
            cordon_host::auth::ToolScope::from_patterns(&tools).is_err(),
            "a freshly issued token with valid patterns was refused"
        );
    }
});
