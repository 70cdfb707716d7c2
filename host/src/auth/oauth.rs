//! OAuth 2.1 resource-server mode (the MCP authorization spec): Cordon accepts JWT access tokens
//! minted by an external authorization server, checks them against that server's keys (JWKS),
//! and maps their OAuth scopes to tool patterns.
//!
//! What a token must satisfy: a signature by a key of the configured JWKS, under an asymmetric
//! algorithm from the allow-list (`alg: none` and HMAC are never accepted: a JWKS holds public
//! keys, and an HMAC "key" taken from it would let anyone sign), `iss` equal to `issuer`, `aud`
//! containing this server's resource URL (RFC 8707: a token minted for another service is not
//! ours), and an unexpired `exp` (with `leeway_s` of clock skew). The principal is the `sub`
//! claim (or `principal_claim`); the token id in the audit log is `jti`.
//!
//! Scopes come from the `scope` claim (space-separated, RFC 9068) or `scp` (a list or a string).
//! Each configured scope grants tool patterns; a token's tools are the union over its scopes that
//! the config knows. Unknown scopes grant nothing.
//!
//! Keys come from `jwks_file` (read at start, re-read when a token names an unknown key) or
//! `jwks_url` (fetched on first use, refreshed after `jwks_cache_s`, and re-fetched when a token
//! names an unknown key — at most once per `jwks_refetch_s`, so random key ids cannot make Cordon
//! hammer the authorization server). When a refresh fails, the keys already held keep working.
//!
//! The bearer token authenticates the caller to Cordon and goes no further: guests never see it,
//! and outbound requests carry only the credentials a grant attaches (`crate::grants`).
//!
//! ```toml
//! [auth.oauth]
//! issuer = "https://auth.example.com"
//! resource = "https://cordon.example.com/mcp"
//! jwks_url = "https://auth.example.com/.well-known/jwks.json"
//!
//! [auth.oauth.scopes]
//! "tools:demo" = ["demo_*"]
//! "payments" = ["payments_*"]
//! ```

use super::scope::ToolScope;
use anyhow::{bail, Context, Result};
use http::Uri;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Bound on one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// `[auth.oauth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The authorization server's issuer identifier; tokens must carry it as `iss`.
    pub issuer: String,
    /// This server's resource URL (e.g. `https://cordon.example.com/mcp`), published in the
    /// protected-resource metadata; tokens must name it in `aud` unless `audience` says otherwise.
    pub resource: String,
    /// Accepted `aud` values. Default: `[resource]`.
    #[serde(default)]
    pub audience: Vec<String>,
    /// A JWKS document on disk (relative paths are from the working directory).
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (https; http only to a loopback address).
    pub jwks_url: Option<String>,
    /// Extra trust anchors (PEM) for an https `jwks_url` behind a private CA; the public roots
    /// (Mozilla's, from `webpki-roots`) are trusted either way.
    pub jwks_ca_file: Option<PathBuf>,
    /// How long fetched keys are used before they are fetched again, seconds. Default 300.
    #[serde(default = "default_cache_s")]
    pub jwks_cache_s: u64,
    /// Shortest time between two reloads triggered by unknown key ids, seconds. Default 10.
    #[serde(default = "default_refetch_s")]
    pub jwks_refetch_s: u64,
    /// Authorization servers named in the metadata. Default: `[issuer]`.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Accepted signature algorithms. Default: every asymmetric one (RS*, PS*, ES256, ES384, EdDSA).
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, seconds. Default 30.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// The claim naming the principal. Default `sub`.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// OAuth scope → the tool patterns it grants.
    #[serde(default)]
    pub scopes: BTreeMap<String, Vec<String>>,
    /// The claim that carries an idempotency scope (a batch item's `custom_id`, say): a call
    /// whose token has it as a string and that names no key of its own is keyed by that scope,
    /// the tool and the arguments, as with `cordon token issue --idempotency-scope`. A token
    /// whose claim is present but not a valid scope is refused. Default: none.
    #[serde(default)]
    pub idempotency_scope_claim: Option<String>,
}

fn default_cache_s() -> u64 {
    300
}
fn default_refetch_s() -> u64 {
    10
}
fn default_leeway_s() -> u64 {
    30
}
fn default_principal_claim() -> String {
    "sub".into()
}

/// What a valid access token says.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The principal claim.
    pub principal: String,
    /// `jti`, when the token has one.
    pub token_id: Option<String>,
    /// The tools its scopes grant.
    pub scope: ToolScope,
    /// Its `idempotency_scope_claim`, when configured and present.
    pub idempotency_scope: Option<String>,
}

/// Why a JWT was refused (logged, never sent: the client gets `invalid_token`).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not a parsable JWT, or an algorithm that is not allowed (including `none` and HMAC).
    #[error("malformed token or disallowed algorithm: {0}")]
    Header(String),
    /// No key in the JWKS has this id.
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// The signature, issuer, audience, expiry or another claim check failed.
    #[error("{0}")]
    Claims(String),
}

/// The OAuth verifier: config, scope map and key cache.
pub struct OAuth {
    config: OAuthConfig,
    algorithms: Vec<Algorithm>,
    scopes: Vec<(String, ToolScope)>,
    keys: Arc<Jwks>,
}

impl OAuth {
    /// Checks the config; reads `jwks_file` (a missing or malformed file refuses the start).
    pub fn new(config: &OAuthConfig) -> Result<OAuth> {
        let at = "[auth.oauth]";
        if config.issuer.trim().is_empty() {
            bail!("{at} issuer must not be empty");
        }
        let resource: Uri = config
            .resource
            .parse()
            .with_context(|| format!("{at} resource {:?} is not an absolute URL", config.resource))?;
        if !matches!(resource.scheme_str(), Some("https" | "http")) || resource.authority().is_none() {
            bail!("{at} resource must be an absolute http(s) URL, e.g. https://cordon.example.com/mcp");
        }
        let algorithms = if config.algorithms.is_empty() {
            use Algorithm::*;
            vec![RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA]
        } else {
            let mut algorithms = Vec::new();
            for name in &config.algorithms {
                let alg = Algorithm::from_str(name).map_err(|_| anyhow::anyhow!("{at} unknown algorithm {name:?}"))?;
                if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    bail!("{at} algorithm {name} is symmetric; a resource server verifies with public keys only");
                }
                algorithms.push(alg);
            }
            algorithms
        };
        let mut scopes = Vec::new();
        for (name, patterns) in &config.scopes {
            if patterns.is_empty() {
                bail!("{at} scope {name:?} grants no tool patterns (use [\"*\"] for every tool)");
            }
            let scope = ToolScope::from_patterns(patterns).with_context(|| format!("{at} scope {name:?}"))?;
            scopes.push((name.clone(), scope));
        }
        let source = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), None) => Source::File(path.clone()),
            (None, Some(url)) => {
                let parsed: Uri = url.parse().with_context(|| format!("{at} jwks_url {url:?} is not a URL"))?;
                let host = parsed.host().unwrap_or_default().trim_matches(['[', ']']);
                let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                match parsed.scheme_str() {
                    Some("https") => {}
                    Some("http") if loopback => {}
                    _ => bail!("{at} jwks_url must be https (plain http is accepted only for a loopback address)"),
                }
                Source::Url(parsed, Arc::new(tls_client(config.jwks_ca_file.as_deref())?))
            }
            _ => bail!("{at} needs exactly one of jwks_file and jwks_url"),
        };
        let keys =
            Jwks::new(source, Duration::from_secs(config.jwks_cache_s), Duration::from_secs(config.jwks_refetch_s))?;
        Ok(OAuth { config: config.clone(), algorithms, scopes, keys: Arc::new(keys) })
    }

    /// Fetches URL keys ahead of the first request; a failure is logged, not fatal (the
    /// authorization server may come up later, and every request retries within the bounds).
    pub async fn warm_up(&self) {
        if let Err(error) = self.keys.refresh(true).await {
            tracing::warn!(error = %format!("{error:#}"), "cannot load the OAuth JWKS yet; will retry on demand");
        }
    }

    /// Whether `token` looks like a JWT (three base64url segments), so it is ours to judge.
    pub fn claims_token(token: &str) -> bool {
        token.split('.').count() == 3
    }

    /// Verifies an access token.
    pub async fn verify(&self, token: &str, now: SystemTime) -> Result<Verified, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| Refusal::Header(e.to_string()))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(Refusal::Header(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let key = Jwks::find(&self.keys, header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[self.config.issuer.as_str()]);
        if self.config.audience.is_empty() {
            validation.set_audience(&[self.config.resource.as_str()]);
        } else {
            validation.set_audience(&self.config.audience);
        }
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.config.leeway_s;
        // jsonwebtoken reads the system clock; `now` lets tests and clock checks use their own.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let data =
            jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| Refusal::Claims(e.to_string()))?;
        let claims = data.claims;
        let now_s = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let exp =
            claims.get("exp").and_then(Value::as_u64).ok_or_else(|| Refusal::Claims("exp is not a number".into()))?;
        if exp.saturating_add(self.config.leeway_s) <= now_s {
            return Err(Refusal::Claims("token expired".into()));
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_u64().ok_or_else(|| Refusal::Claims("nbf is not a number".into()))?;
            if nbf > now_s.saturating_add(self.config.leeway_s) {
                return Err(Refusal::Claims("token not yet valid (nbf)".into()));
            }
        }
        let principal = claims
            .get(&self.config.principal_claim)
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Refusal::Claims(format!("no {:?} claim", self.config.principal_claim)))?
            .to_string();
        let token_id = claims.get("jti").and_then(Value::as_str).map(str::to_string);
        let idempotency_scope = match self.config.idempotency_scope_claim.as_deref().and_then(|c| claims.get(c)) {
            None | Some(Value::Null) => None,
            Some(Value::String(scope)) if super::check_idempotency_scope(scope).is_ok() => Some(scope.clone()),
            Some(_) => return Err(Refusal::Claims("the idempotency scope claim is not a valid scope".into())),
        };
        Ok(Verified { principal, token_id, scope: self.scope_of(&claims), idempotency_scope })
    }

    /// The union of the tool patterns of the token's known scopes.
    fn scope_of(&self, claims: &Value) -> ToolScope {
        let granted: Vec<&str> = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => s.split_whitespace().collect(),
            (None, Some(Value::Array(list))) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut patterns = Vec::new();
        for name in granted {
            if let Some((_, scope)) = self.scopes.iter().find(|(known, _)| known == name) {
                patterns.extend(scope.patterns().iter().cloned());
            }
        }
        if patterns.is_empty() {
            return ToolScope::none();
        }
        ToolScope::from_patterns(&patterns).unwrap_or_else(|_| ToolScope::none())
    }

    /// The configured scopes that grant `tool`: what a 403 challenge asks for (step-up).
    pub fn scopes_for(&self, tool: &str) -> Vec<&str> {
        self.scopes.iter().filter(|(_, scope)| scope.allows(tool)).map(|(name, _)| name.as_str()).collect()
    }

    /// The protected-resource metadata document (RFC 9728).
    pub fn metadata(&self) -> Value {
        let servers = if self.config.authorization_servers.is_empty() {
            vec![self.config.issuer.clone()]
        } else {
            self.config.authorization_servers.clone()
        };
        serde_json::json!({
            "resource": self.config.resource,
            "authorization_servers": servers,
            "scopes_supported": self.scopes.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            "bearer_methods_supported": ["header"],
            "resource_name": "Cordon",
        })
    }

    /// Where the metadata is served, relative to the server root: `/.well-known/oauth-protected-resource`
    /// followed by the resource's path (RFC 9728 §3.1), e.g. `…/mcp`.
    pub fn metadata_paths(&self) -> Vec<String> {
        let base = "/.well-known/oauth-protected-resource".to_string();
        let path = self.config.resource.parse::<Uri>().map(|u| u.path().trim_end_matches('/').to_string());
        match path {
            Ok(path) if !path.is_empty() => vec![format!("{base}{path}"), base],
            _ => vec![base],
        }
    }

    /// The absolute metadata URL a 401 challenge points at.
    pub fn metadata_url(&self) -> String {
        let origin = match self.config.resource.parse::<Uri>() {
            Ok(uri) => {
                format!("{}://{}", uri.scheme_str().unwrap_or("https"), uri.authority().map_or("", |a| a.as_str()))
            }
            Err(_) => String::new(),
        };
        format!("{origin}{}", self.metadata_paths()[0])
    }
}

enum Source {
    File(PathBuf),
    Url(Uri, Arc<rustls::ClientConfig>),
}

/// The TLS client for the JWKS fetch: ring, the public roots, and `ca_file`'s certificates.
fn tls_client(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        let mut added = 0;
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
            .with_context(|| format!("[auth.oauth] cannot read jwks_ca_file {}", path.display()))?
        {
            let cert = cert.with_context(|| format!("[auth.oauth] jwks_ca_file {} is not PEM", path.display()))?;
            roots.add(cert).with_context(|| format!("[auth.oauth] a certificate in {} is unusable", path.display()))?;
            added += 1;
        }
        if added == 0 {
            bail!("[auth.oauth] jwks_ca_file {} holds no certificate", path.display());
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS configuration")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Verification keys by id, with the time they were loaded.
struct Keys {
    by_id: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    /// Keys without a `kid`: usable only when the set has exactly one key.
    anonymous: Vec<(DecodingKey, Option<Algorithm>)>,
    loaded: Option<Instant>,
}

struct Jwks {
    source: Source,
    max_age: Duration,
    min_refetch: Duration,
    keys: RwLock<Keys>,
    /// Serialises reloads and remembers the last attempt (for `min_refetch`).
    reload: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    fn new(source: Source, max_age: Duration, min_refetch: Duration) -> Result<Jwks> {
        let jwks = Jwks {
            source,
            max_age,
            min_refetch,
            keys: RwLock::new(Keys { by_id: HashMap::new(), anonymous: Vec::new(), loaded: None }),
            reload: tokio::sync::Mutex::new(None),
        };
        if let Source::File(path) = &jwks.source {
            let text = std::fs::read(path).with_context(|| format!("cannot read jwks_file {}", path.display()))?;
            jwks.install(parse_jwks(&text).with_context(|| format!("jwks_file {}", path.display()))?);
        }
        Ok(jwks)
    }

    fn install(&self, keys: Keys) {
        let count = keys.by_id.len() + keys.anonymous.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        tracing::info!(keys = count, "OAuth JWKS loaded");
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let (key, key_alg) = match kid {
            Some(kid) => keys.by_id.get(kid)?,
            None if keys.by_id.len() + keys.anonymous.len() == 1 => {
                keys.anonymous.first().or_else(|| keys.by_id.values().next())?
            }
            None => return None,
        };
        // A key published for one algorithm verifies nothing else.
        key_alg.is_none_or(|a| a == alg).then(|| key.clone())
    }

    fn is_stale(&self) -> bool {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        matches!(self.source, Source::Url(..)) && keys.loaded.is_none_or(|at| at.elapsed() >= self.max_age)
    }

    async fn find(this: &Arc<Jwks>, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, Refusal> {
        let key = this.lookup(kid, alg);
        if this.is_stale() {
            // Refresh off the request path while the keys held still verify; a request waits
            // for a fetch only when it names a key Cordon does not have.
            let jwks = this.clone();
            let refresh = async move {
                if let Err(error) = jwks.refresh(false).await {
                    tracing::warn!(error = %format!("{error:#}"), "cannot refresh the OAuth JWKS; keeping the keys held");
                }
            };
            if key.is_some() {
                tokio::spawn(refresh);
            } else {
                refresh.await;
            }
        } else if key.is_none() {
            // Perhaps the authorization server rotated its keys.
            if let Err(error) = this.refresh(false).await {
                tracing::warn!(error = %format!("{error:#}"), "cannot reload the OAuth JWKS");
            }
        }
        key.or_else(|| this.lookup(kid, alg)).ok_or_else(|| Refusal::UnknownKey(kid.unwrap_or("(none)").to_string()))
    }

    /// Reloads the keys unless another reload is running or one was attempted within
    /// `min_refetch` (`force` skips the interval, not the serialisation).
    async fn refresh(&self, force: bool) -> Result<()> {
        let mut last = self.reload.lock().await;
        if !force && last.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let bytes = match &self.source {
            Source::File(path) => {
                tokio::fs::read(path).await.with_context(|| format!("cannot read jwks_file {}", path.display()))?
            }
            Source::Url(url, tls) => tokio::time::timeout(FETCH_TIMEOUT, fetch(url, tls))
                .await
                .map_err(|_| anyhow::anyhow!("GET {url} took longer than {FETCH_TIMEOUT:?}"))??,
        };
        self.install(parse_jwks(&bytes)?);
        Ok(())
    }
}

/// `GET url`: HTTP/1.1 over TCP, or over rustls with `tls` for https. Redirects are not
/// followed: a JWKS URL is configured exactly.
async fn fetch(url: &Uri, tls: &Arc<rustls::ClientConfig>) -> Result<Vec<u8>> {
    let host = url.host().context("the URL has no host")?;
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let authority = url.authority().map_or(host, |a| a.as_str());
    let request = http::Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, concat!("cordon/", env!("CARGO_PKG_VERSION")))
        .header(http::header::ACCEPT, "application/json, application/jwk-set+json")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .context("cannot build the request")?;
    let body = if https {
        let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .with_context(|| format!("{host} is not a valid TLS server name"))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {host} failed"))?;
        send(hyper_util::rt::TokioIo::new(stream), request).await
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), request).await
    };
    body.with_context(|| format!("GET {url} failed"))
}

async fn send<I>(io: I, request: http::Request<http_body_util::Empty<bytes::Bytes>>) -> Result<Vec<u8>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let connection = tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("the server answered {}", response.status());
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the body failed (at most {MAX_JWKS_BYTES} bytes): {e}"))?
        .to_bytes();
    connection.abort();
    Ok(body.to_vec())
}

fn parse_jwks(bytes: &[u8]) -> Result<Keys> {
    let set: JwkSet = serde_json::from_slice(bytes).context("not a JWKS document ({\"keys\": [...]})")?;
    let mut keys = Keys { by_id: HashMap::new(), anonymous: Vec::new(), loaded: Some(Instant::now()) };
    for jwk in &set.keys {
        if let Some((key, alg)) = usable(jwk) {
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_id.insert(kid.clone(), (key, alg));
                }
                None => keys.anonymous.push((key, alg)),
            }
        }
    }
    Ok(keys)
}

/// A signature key from a JWK: public, asymmetric, meant for signatures.
fn usable(jwk: &Jwk) -> Option<(DecodingKey, Option<Algorithm>)> {
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return None;
    }
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        Some(alg) => Some(Algorithm::from_str(&alg.to_string()).ok()?),
        None => None,
    };
    Some((DecodingKey::from_jwk(jwk).ok()?, alg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    const ISSUER: &str = "https://issuer.test";
    const RESOURCE: &str = "https://cordon.test/mcp";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A signing key and its public JWK.
    struct TestKey {
        alg: Algorithm,
        kid: String,
        encoding: EncodingKey,
        jwk: Value,
    }

    fn ed25519(kid: &str) -> TestKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA",
                         "x": b64(pair.public_key().as_ref())});
        TestKey { alg: Algorithm::EdDSA, kid: kid.into(), encoding: EncodingKey::from_ed_der(pkcs8.as_ref()), jwk }
    }

    fn es256(kid: &str) -> TestKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..])});
        TestKey { alg: Algorithm::ES256, kid: kid.into(), encoding: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk }
    }

    fn now_s() -> u64 {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
    }

    fn claims(scope: &str) -> Value {
        json!({"iss": ISSUER, "aud": RESOURCE, "sub": "agent-7", "jti": "t-1", "exp": now_s() + 600, "scope": scope})
    }

    fn sign(key: &TestKey, claims: &Value) -> String {
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    fn verifier(dir: &std::path::Path, keys: &[&TestKey]) -> OAuth {
        let path = dir.join("jwks.json");
        let set = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        std::fs::write(&path, set.to_string()).unwrap();
        let config: OAuthConfig = toml::from_str(&format!(
            "issuer = \"{ISSUER}\"\nresource = \"{RESOURCE}\"\njwks_file = {path:?}\n\
             [scopes]\n\"tools:demo\" = [\"demo_*\"]\n\"admin\" = [\"*\"]\n"
        ))
        .unwrap();
        OAuth::new(&config).unwrap()
    }

    #[tokio::test]
    async fn valid_tokens_carry_principal_id_and_the_tools_of_their_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let (ed, ec) = (ed25519("ed"), es256("ec"));
        let oauth = verifier(dir.path(), &[&ed, &ec]);
        let now = SystemTime::now();
        let demo = oauth.verify(&sign(&ed, &claims("tools:demo openid")), now).await.unwrap();
        assert_eq!((demo.principal.as_str(), demo.token_id.as_deref()), ("agent-7", Some("t-1")));
        assert!(demo.scope.allows("demo_echo") && !demo.scope.allows("payments_charge"));
        let admin = oauth.verify(&sign(&ec, &claims("admin")), now).await.unwrap();
        assert!(admin.scope.allows("payments_charge") && admin.scope.allows("demo_echo"));
        let mut scp = claims("");
        scp.as_object_mut().unwrap().remove("scope");
        scp["scp"] = json!(["tools:demo"]);
        assert!(oauth.verify(&sign(&ed, &scp), now).await.unwrap().scope.allows("demo_echo"));
        let nothing = oauth.verify(&sign(&ed, &claims("unknown-scope")), now).await.unwrap();
        assert!(nothing.scope.is_restricted() && !nothing.scope.allows("demo_echo"));
        assert_eq!(oauth.scopes_for("payments_charge"), vec!["admin"]);
        assert_eq!(oauth.scopes_for("demo_echo"), vec!["admin", "tools:demo"]);
    }

    #[tokio::test]
    async fn bad_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ed = ed25519("ed");
        let oauth = verifier(dir.path(), &[&ed]);
        let now = SystemTime::now();
        let with = |field: &str, value: Value| {
            let mut c = claims("admin");
            c[field] = value;
            c
        };
        let refused = |token: String| {
            let oauth = &oauth;
            async move { oauth.verify(&token, now).await.unwrap_err() }
        };
        assert!(matches!(refused(sign(&ed, &with("exp", json!(now_s() - 120)))).await, Refusal::Claims(_)));
        assert!(matches!(refused(sign(&ed, &with("aud", json!("https://other.test/mcp")))).await, Refusal::Claims(_)));
        assert!(matches!(refused(sign(&ed, &with("iss", json!("https://evil.test")))).await, Refusal::Claims(_)));
        assert!(matches!(refused(sign(&ed, &with("nbf", json!(now_s() + 3600)))).await, Refusal::Claims(_)));
        let mut no_exp = claims("admin");
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(matches!(refused(sign(&ed, &no_exp)).await, Refusal::Claims(_)));
        // Signed by another key that claims the same id.
        let forged = ed25519("ed");
        assert!(matches!(refused(sign(&forged, &claims("admin"))).await, Refusal::Claims(_)));
        assert!(matches!(refused(sign(&ed25519("nope"), &claims("admin"))).await, Refusal::UnknownKey(_)));
        // alg none: header and claims, empty signature.
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT","kid":"ed"}"#),
            b64(claims("admin").to_string().as_bytes())
        );
        assert!(matches!(refused(none).await, Refusal::Header(_)));
        // HMAC keyed with the public key (algorithm confusion).
        let x = ed.jwk["x"].as_str().unwrap().to_string();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("ed".into());
        let hs = jsonwebtoken::encode(&header, &claims("admin"), &EncodingKey::from_secret(x.as_bytes())).unwrap();
        assert!(matches!(refused(hs).await, Refusal::Header(_)));
        // Within the leeway, a just-expired token still passes.
        assert!(oauth.verify(&sign(&ed, &with("exp", json!(now_s() - 5))), now).await.is_ok());
    }

    #[tokio::test]
    async fn metadata_names_the_resource_and_its_authorization_server() {
        let dir = tempfile::tempdir().unwrap();
        let oauth = verifier(dir.path(), &[&ed25519("ed")]);
        let metadata = oauth.metadata();
        assert_eq!(metadata["resource"], RESOURCE);
        assert_eq!(metadata["authorization_servers"], json!([ISSUER]));
        assert_eq!(metadata["scopes_supported"], json!(["admin", "tools:demo"]));
        assert_eq!(
            oauth.metadata_paths(),
            vec!["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]
        );
        assert_eq!(oauth.metadata_url(), "https://cordon.test/.well-known/oauth-protected-resource/mcp");
    }

    /// Serves `body` once over TLS on loopback with a fresh self-signed certificate for
    /// 127.0.0.1; returns the port and the certificate (PEM).
    async fn tls_jwks_server(body: String) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let cert_pem = key.cert.pem();
        let certs = vec![key.cert.der().clone()];
        let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, private)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        (port, cert_pem)
    }

    #[tokio::test]
    async fn an_https_jwks_behind_a_private_ca_is_trusted_only_through_jwks_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = ed25519("tls-key");
        let (port, cert_pem) = tls_jwks_server(json!({"keys": [key.jwk.clone()]}).to_string()).await;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert_pem).unwrap();
        let config = |extra: &str| -> OAuthConfig {
            toml::from_str(&format!(
                "issuer = \"{ISSUER}\"\nresource = \"{RESOURCE}\"\njwks_url = \"https://127.0.0.1:{port}/jwks.json\"\n{extra}\n\
                 [scopes]\nadmin = [\"*\"]\n"
            ))
            .unwrap()
        };
        let token = sign(&key, &claims("admin"));
        let trusted = OAuth::new(&config(&format!("jwks_ca_file = {ca:?}"))).unwrap();
        let verified = trusted.verify(&token, SystemTime::now()).await.unwrap();
        assert_eq!(verified.principal, "agent-7");
        // Without the CA the certificate is not trusted: no keys, so the key id is unknown.
        let untrusted = OAuth::new(&config("")).unwrap();
        assert!(matches!(untrusted.verify(&token, SystemTime::now()).await, Err(Refusal::UnknownKey(_))));
        // A CA file that holds no certificate refuses the config.
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(OAuth::new(&config(&format!("jwks_ca_file = {empty:?}"))).is_err());
    }

    #[test]
    fn bad_config_is_refused() {
        let parse = |text: &str| {
            toml::from_str::<OAuthConfig>(text).map_err(anyhow::Error::from).and_then(|c| OAuth::new(&c).map(|_| ()))
        };
        let base = format!("issuer = \"{ISSUER}\"\nresource = \"{RESOURCE}\"\n");
        assert!(parse(&base).is_err(), "no JWKS source");
        assert!(parse(&format!("{base}jwks_url = \"http://auth.example.com/jwks\"\n")).is_err(), "plain http");
        assert!(parse(&format!("{base}jwks_url = \"http://127.0.0.1:9/jwks\"\n")).is_ok(), "loopback http");
        assert!(parse(&format!("{base}jwks_url = \"https://a/jwks\"\nalgorithms = [\"HS256\"]\n")).is_err());
        assert!(parse(&format!("{base}jwks_file = \"/nonexistent/jwks.json\"\n")).is_err());
        assert!(
            parse(&format!("issuer = \"{ISSUER}\"\nresource = \"not a url\"\njwks_url = \"https://a/j\"\n")).is_err()
        );
        assert!(parse(&format!("{base}jwks_url = \"https://a/j\"\n[scopes]\nx = []\n")).is_err());
    }
}
