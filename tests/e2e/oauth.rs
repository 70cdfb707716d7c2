//! OAuth 2.1 resource-server mode end to end: JWT access tokens signed by keys the test makes
//! (Ed25519 and P-256), checked by the real `cordon serve` against a JWKS file or URL; the
//! protected-resource metadata and the `resource_metadata` challenge; scopes mapped to tools on
//! `tools/list` and `tools/call`; every kind of bad token refused; key rotation through the JWKS
//! URL without hammering it; and the bearer token never reaching an upstream, the audit log or
//! the server's log.

mod common;

use axum::extract::{Request, State};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const ISSUER: &str = "https://issuer.test";
const RESOURCE: &str = "https://cordon.test/mcp";
const METADATA_URL: &str = "https://cordon.test/.well-known/oauth-protected-resource/mcp";

// ---- keys and tokens ---------------------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key made by the test, and its public JWK.
struct TestKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn ed25519(kid: &str) -> TestKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("Ed25519 key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key parses");
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA",
                         "x": b64(pair.public_key().as_ref())});
        TestKey { alg: Algorithm::EdDSA, kid: kid.into(), encoding: EncodingKey::from_ed_der(pkcs8.as_ref()), jwk }
    }

    fn es256(kid: &str) -> TestKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("parses");
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..])});
        TestKey { alg: Algorithm::ES256, kid: kid.into(), encoding: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk }
    }

    /// A JWT with these claims, signed by this key, naming it in `kid`.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign a JWT")
    }
}

fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// Valid claims for subject `agent-7` with `scope`.
fn claims(scope: &str, jti: &str) -> Value {
    json!({"iss": ISSUER, "aud": RESOURCE, "sub": "agent-7", "jti": jti, "exp": now_s() + 600, "scope": scope})
}

/// `claims("admin", "bad")` with `field` set to `value`.
fn claims_with(field: &str, value: Value) -> Value {
    let mut c = claims("admin", "bad");
    c[field] = value;
    c
}

/// `[auth.oauth]` with `source` (a `jwks_file` or `jwks_url` line), scopes `tools:demo` →
/// `demo_*` and `admin` → every tool, plus a static token for `ops`.
fn oauth_config(source: &str) -> String {
    format!(
        "{}[auth.oauth]\nissuer = \"{ISSUER}\"\nresource = \"{RESOURCE}\"\n{source}\njwks_refetch_s = 1\n\n\
         [auth.oauth.scopes]\n\"tools:demo\" = [\"demo_*\"]\n\"admin\" = [\"*\"]\n\n",
        tokens(&["ops"])
    )
}

// ---- HTTP helpers ------------------------------------------------------------------------------

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().expect("ASCII header").to_string())
}

/// `initialize` with `Authorization: Bearer <token>` (none when `None`): status and challenge.
async fn initialize_as(server: &HttpServer, token: Option<&str>) -> (u16, Option<String>) {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("authorization", a.as_str())).collect();
    let response = post(&server.url, &initialize_request().to_string(), &headers).await;
    (response.status().as_u16(), header(&response, "www-authenticate"))
}

async fn assert_refused(server: &HttpServer, token: &str, what: &str) {
    let (status, challenge) = initialize_as(server, Some(token)).await;
    assert_eq!(status, 401, "{what} must be refused");
    let challenge = challenge.unwrap_or_else(|| panic!("{what}: a 401 without WWW-Authenticate"));
    assert!(challenge.contains("error=\"invalid_token\""), "{what}: {challenge}");
    assert!(challenge.contains(&format!("resource_metadata=\"{METADATA_URL}\"")), "{what}: {challenge}");
}

async fn tool_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = list_tools(client).await.keys().cloned().collect();
    names.sort();
    names
}

// ---- a JWKS server that also records upstream requests -----------------------------------------

/// The headers of one request, in order.
type Headers = Vec<(String, String)>;

#[derive(Clone, Default)]
struct AuthServerState {
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    /// The headers of every request to anything but `/jwks.json`.
    upstream: Arc<Mutex<Vec<Headers>>>,
}

struct AuthServer {
    base: String,
    state: AuthServerState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_jwks(State(state): State<AuthServerState>) -> Json<Value> {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    Json(state.jwks.lock().expect("jwks lock").clone())
}

async fn record(State(state): State<AuthServerState>, request: Request) -> Json<Value> {
    let headers = request
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    state.upstream.lock().expect("upstream lock").push(headers);
    Json(json!({"ok": true}))
}

impl AuthServer {
    async fn start(jwks: Value) -> AuthServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the JWKS server");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let state = AuthServerState::default();
        *state.jwks.lock().expect("jwks lock") = jwks;
        let app = Router::new().route("/jwks.json", get(serve_jwks)).fallback(record).with_state(state.clone());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.expect("JWKS server serves") });
        AuthServer { base, state, task }
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

// ---- tests -------------------------------------------------------------------------------------

#[tokio::test]
async fn oauth_tokens_are_verified_and_scoped_to_tools() {
    let (ed, ec) = (TestKey::ed25519("ed-1"), TestKey::es256("ec-1"));
    let env = Env::demo().plugin(&example_wasm("payments"), "payments.wasm");
    let jwks_path = env.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&ed, &ec]).to_string()).expect("write the JWKS");
    let env = env.config(&oauth_config(&format!("jwks_file = {:?}", jwks_path.display().to_string())));
    let server = env.spawn_http_with(&[], &[]).await;

    // Discovery: the metadata is public, at both the path-suffixed and the bare well-known URL.
    for path in ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"] {
        let response = reqwest::get(format!("{}{path}", server.base)).await.expect("GET the metadata");
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let metadata: Value = response.json().await.expect("metadata is JSON");
        assert_eq!(metadata["resource"], RESOURCE, "{path}: {metadata}");
        assert_eq!(metadata["authorization_servers"], json!([ISSUER]), "{path}: {metadata}");
        assert_eq!(metadata["scopes_supported"], json!(["admin", "tools:demo"]), "{path}: {metadata}");
    }
    let (status, challenge) = initialize_as(&server, None).await;
    assert_eq!(status, 401);
    let challenge = challenge.expect("a challenge");
    assert!(challenge.contains(&format!("resource_metadata=\"{METADATA_URL}\"")), "{challenge}");
    assert!(!challenge.contains("error="), "no token is not an invalid token: {challenge}");

    // A demo-scoped token sees and calls only demo tools; payments is 403 naming the scope to get.
    let demo_token = ed.sign(&claims("openid tools:demo", "jti-demo"));
    let demo = server.client_as(&demo_token).await;
    let names = tool_names(&demo).await;
    assert!(!names.is_empty() && names.iter().all(|n| n.starts_with("demo_")), "{names:?}");
    assert_echo(&demo, "via oauth").await;
    let authorization = format!("Bearer {demo_token}");
    let refused = post(
        &server.url,
        &call_request(1, "payments_charge", json!({"amount_cents": 100, "currency": "EUR"})).to_string(),
        &[("authorization", &authorization)],
    )
    .await;
    assert_eq!(refused.status().as_u16(), 403);
    let challenge = header(&refused, "www-authenticate").expect("a 403 challenge");
    assert!(challenge.contains("error=\"insufficient_scope\", scope=\"admin\""), "{challenge}");

    // An admin token (the other key, the other algorithm) sees every tool.
    let admin_token = ec.sign(&claims("admin", "jti-admin"));
    let admin = server.client_as(&admin_token).await;
    let names = tool_names(&admin).await;
    assert!(names.iter().any(|n| n.starts_with("payments_")) && names.iter().any(|n| n.starts_with("demo_")));

    // A token whose scopes the config does not know sees nothing.
    let stranger = server.client_as(&ed.sign(&claims("email", "jti-stranger"))).await;
    assert!(tool_names(&stranger).await.is_empty());

    // The other token kinds keep working beside OAuth.
    assert_eq!(initialize_as(&server, Some(&token("ops"))).await.0, 200, "static token");
    let issued = env.issue_token("bot", Some("demo_*"), "5m").await;
    assert_eq!(initialize_as(&server, Some(issued["token"].as_str().expect("token"))).await.0, 200, "signed");

    // Every kind of bad token.
    let bad = [
        ("expired", ed.sign(&claims_with("exp", json!(now_s() - 300)))),
        ("wrong audience", ed.sign(&claims_with("aud", json!("https://other.test/mcp")))),
        ("wrong issuer", ed.sign(&claims_with("iss", json!("https://evil.test")))),
        ("not yet valid", ed.sign(&claims_with("nbf", json!(now_s() + 3600)))),
        ("unknown key id", TestKey::ed25519("ed-unknown").sign(&claims("admin", "bad"))),
        ("forged (another key, same kid)", TestKey::ed25519("ed-1").sign(&claims("admin", "bad"))),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","kid":"ed-1"}"#),
                b64(claims("admin", "bad").to_string().as_bytes())
            ),
        ),
        ("HS256 keyed with the public key", {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("ed-1".into());
            let secret = ed.jwk["x"].as_str().expect("x").as_bytes().to_vec();
            jsonwebtoken::encode(&header, &claims("admin", "bad"), &EncodingKey::from_secret(&secret)).expect("HS256")
        }),
        ("truncated signature", demo_token[..demo_token.len() - 4].to_string()),
        ("garbage", "a.b.c".to_string()),
    ];
    for (what, token) in &bad {
        assert_refused(&server, token, what).await;
    }

    // The audit log names the principal and the token id, never a token.
    let records = env.audit_records(2).await;
    let mine = records.iter().find(|r| r["principal"] == "oauth:agent-7").expect("an audit line for the OAuth caller");
    assert_eq!(mine["token_id"], "jti-demo", "{mine}");
    let audit = std::fs::read_to_string(env.audit_path()).expect("read the audit log");
    let log = server.log.text();
    for token in [&demo_token, &admin_token].into_iter().chain(bad.iter().map(|(_, t)| t)) {
        let signature = token.rsplit('.').next().expect("a signature segment");
        if signature.len() > 8 {
            assert!(!audit.contains(signature), "a token signature is in the audit log");
            assert!(!log.contains(signature), "a token signature is in the server log");
        }
    }
}

#[tokio::test]
async fn jwks_url_keys_are_cached_and_rotated_without_hammering_the_issuer() {
    let (k1, k2) = (TestKey::ed25519("k1"), TestKey::es256("k2"));
    let issuer = AuthServer::start(jwks(&[&k1])).await;
    let env = Env::demo().config(&oauth_config(&format!("jwks_url = \"{}/jwks.json\"", issuer.base)));
    let server = env.spawn_http_with(&[], &[]).await;
    // The start-up fetch happened before the server said it was listening.
    let fetched = Instant::now();
    assert_eq!(issuer.fetches(), 1, "the keys are fetched once at start");

    for i in 0..5 {
        assert_eq!(initialize_as(&server, Some(&k1.sign(&claims("admin", &format!("a{i}"))))).await.0, 200);
    }
    assert_eq!(issuer.fetches(), 1, "known keys are served from the cache");

    // The issuer rotates in a new key; a token naming it makes Cordon fetch again.
    *issuer.state.jwks.lock().expect("jwks lock") = jwks(&[&k1, &k2]);
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(fetched.elapsed())).await;
    let rotated = server.client_as(&k2.sign(&claims("tools:demo", "rotated"))).await;
    assert_echo(&rotated, "new key").await;
    assert_eq!(issuer.fetches(), 2, "one fetch for the new key");

    // Unknown key ids are refused, and refetches stay bounded by jwks_refetch_s (1 s here).
    let burst = Instant::now();
    for i in 0..20 {
        assert_refused(&server, &TestKey::ed25519(&format!("random-{i}")).sign(&claims("admin", "x")), "unknown kid")
            .await;
    }
    let allowed = 3 + burst.elapsed().as_secs() as usize;
    assert!(issuer.fetches() <= allowed, "{} fetches for 20 unknown key ids (allowed {allowed})", issuer.fetches());
}

#[tokio::test]
async fn bearer_tokens_never_reach_upstreams() {
    let key = TestKey::ed25519("k1");
    let issuer = AuthServer::start(jwks(&[&key])).await;
    let grant = format!(
        "[plugins.reach.idempotency]\nimplicit_window_s = 0\n\n\
         [[plugins.reach.http.grants]]\nurl = \"{}/api/\"\nmethods = [\"GET\"]\n\n",
        issuer.base
    );
    let env = Env::new()
        .plugin(&fixture_wasm("reach"), "reach.wasm")
        .config(&format!("{}{grant}", oauth_config(&format!("jwks_url = \"{}/jwks.json\"", issuer.base))));
    let server = env.spawn_http_with(&[], &[]).await;
    let jwt = key.sign(&claims("admin", "upstream"));
    let client = server.client_as(&jwt).await;
    let out =
        call(&client, "reach_request", json!({"method": "GET", "url": format!("{}/api/data", issuer.base)})).await;
    assert_eq!(out.ok()["status"], 200, "{:?}", out.ok());
    let seen = issuer.state.upstream.lock().expect("upstream lock").clone();
    assert_eq!(seen.len(), 1, "one upstream request");
    let signature = jwt.rsplit('.').next().expect("signature");
    for (name, value) in &seen[0] {
        assert_ne!(name, "authorization", "no Authorization header was granted, so none may be sent");
        assert!(!value.contains(signature), "the caller's token reached the upstream in {name}");
    }
}

/// OAuth subjects live in a namespace of their own (`oauth:<sub>`): a subject an authorization
/// server calls `local` — the stdio principal, which has a credential here — gets no credential
/// (`forbidden`, nothing sent), while `oauth:agent-7`'s own credential is attached to its
/// request. An operator cannot name a static token into that namespace.
#[tokio::test]
async fn an_oauth_subject_never_gets_a_local_principals_credentials() {
    let key = TestKey::ed25519("k1");
    let issuer = AuthServer::start(jwks(&[&key])).await;
    let grant = format!(
        "[plugins.reach.idempotency]\nimplicit_window_s = 0\n\n\
         [[plugins.reach.http.grants]]\nurl = \"{}/api/\"\nmethods = [\"GET\"]\ncredential = \"api\"\n\n\
         [credentials.api]\nprefix = \"Bearer \"\nprincipals.local = {{ env = \"LOCAL_SECRET\" }}\n\
         principals.\"oauth:agent-7\" = {{ env = \"AGENT_SECRET\" }}\n\n",
        issuer.base
    );
    let env = Env::new()
        .plugin(&fixture_wasm("reach"), "reach.wasm")
        .var("LOCAL_SECRET", "local-secret-1")
        .var("AGENT_SECRET", "agent-secret-2")
        .config(&format!("{}{grant}", oauth_config(&format!("jwks_url = \"{}/jwks.json\"", issuer.base))));
    let server = env.spawn_http_with(&[], &[]).await;
    let url = format!("{}/api/data", issuer.base);

    let impostor = server.client_as(&key.sign(&claims_with("sub", json!("local")))).await;
    let out = call(&impostor, "reach_request", json!({"method": "GET", "url": url})).await;
    out.expect_error("forbidden", false);
    assert!(issuer.state.upstream.lock().expect("upstream lock").is_empty(), "nothing went out for oauth:local");

    let agent = server.client_as(&key.sign(&claims("admin", "agent"))).await;
    let out = call(&agent, "reach_request", json!({"method": "GET", "url": url})).await;
    assert_eq!(out.ok()["status"], 200, "{:?}", out.ok());
    let seen = issuer.state.upstream.lock().expect("upstream lock").clone();
    let authorization: Vec<&String> = seen[0].iter().filter(|(n, _)| n == "authorization").map(|(_, v)| v).collect();
    assert_eq!(authorization, ["Bearer agent-secret-2"]);

    let refused = Env::demo()
        .config(&format!("[[auth.tokens]]\nprincipal = \"oauth:agent-7\"\nsha256 = \"{}\"\n", sha256_hex(b"t")))
        .run(&["serve", "--listen", "127.0.0.1:0"])
        .await;
    assert_ne!(refused.status.code(), Some(0), "{}", describe(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("reserved for OAuth"), "{}", describe(&refused));
}
