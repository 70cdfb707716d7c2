//! HTTPS: `cordon serve --tls-cert --tls-key` serves MCP over TLS, reloads its certificate on
//! SIGHUP (keeping the old one when the new pair is bad), and refuses to start with a
//! certificate it cannot load.

mod common;

use common::*;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fresh self-signed certificate for `localhost` and `127.0.0.1`: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

/// Writes the pair as `cert.pem` and `key.pem` in the environment; returns their paths.
fn write_pair(env: &Env, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
    let (cert_path, key_path) = (env.path().join("cert.pem"), env.path().join("key.pem"));
    std::fs::write(&cert_path, cert).expect("write cert.pem");
    std::fs::write(&key_path, key).expect("write key.pem");
    (cert_path, key_path)
}

/// A client that trusts `cert_pem` and nothing else (no system roots).
fn trusting(cert_pem: &str) -> reqwest::Client {
    install_crypto_provider();
    let cert = reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("parse the certificate");
    reqwest::Client::builder().tls_certs_only([cert]).build().expect("build an HTTPS client")
}

/// `GET url` on a new connection with `client`: its status, or the error (e.g. an untrusted
/// certificate).
async fn try_get(client: &reqwest::Client, url: &str) -> Result<u16, reqwest::Error> {
    guard("an HTTPS response", client.get(url).send()).await.map(|r| r.status().as_u16())
}

async fn spawn_https(env: &Env, cert: &Path, key: &Path) -> HttpServer {
    let (cert, key) = (cert.to_str().expect("UTF-8 path"), key.to_str().expect("UTF-8 path"));
    env.spawn_http(&["--tls-cert", cert, "--tls-key", key]).await
}

/// An MCP session over HTTPS trusting only `cert_pem`: initialize, list, call.
async fn mcp_over_https(server: &HttpServer, cert_pem: &str) {
    let config = StreamableHttpClientTransportConfig::with_uri(server.url.clone());
    let transport = StreamableHttpClientTransport::with_client(trusting(cert_pem), config);
    let client = guard("MCP initialize over HTTPS", ().serve(transport))
        .await
        .unwrap_or_else(|e| panic!("MCP initialize over HTTPS: {e}; stderr:\n{}", server.log.text()));
    assert!(list_tools(&client).await.contains_key("demo_echo"));
    assert_echo(&client, "over TLS").await;
}

/// The server announces an https URL and serves a whole MCP session over TLS; after the
/// certificate files are replaced and SIGHUP is sent, new connections get the new certificate
/// (a client trusting only the old one is refused).
#[tokio::test]
async fn https_serves_mcp_and_reloads_the_certificate_on_sighup() {
    let env = Env::demo();
    let first = self_signed();
    let (cert, key) = write_pair(&env, &first);
    let server = spawn_https(&env, &cert, &key).await;
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    mcp_over_https(&server, &first.0).await;
    let healthz = format!("{}/healthz", server.base);
    assert_eq!(try_get(&trusting(&first.0), &healthz).await.expect("the first certificate is served"), 200);

    let second = self_signed();
    write_pair(&env, &second);
    server.signal("HUP");
    server.log.wait_for("TLS certificate reloaded").await;
    assert_eq!(try_get(&trusting(&second.0), &healthz).await.expect("the new certificate is served"), 200);
    assert!(try_get(&trusting(&first.0), &healthz).await.is_err(), "the old certificate is no longer served");
    mcp_over_https(&server, &second.0).await;
}

/// A bad pair at SIGHUP (a key that is not PEM) is reported, and the current certificate keeps
/// serving.
#[tokio::test]
async fn a_bad_certificate_on_sighup_keeps_the_old_one() {
    let env = Env::demo();
    let pair = self_signed();
    let (cert, key) = write_pair(&env, &pair);
    let server = spawn_https(&env, &cert, &key).await;
    std::fs::write(&key, "not a key\n").expect("spoil key.pem");
    server.signal("HUP");
    let line = server.log.wait_for("TLS certificate reload failed").await;
    assert!(line.contains("key.pem"), "the log names the file: {line}");
    let healthz = format!("{}/healthz", server.base);
    assert_eq!(try_get(&trusting(&pair.0), &healthz).await.expect("the old certificate still serves"), 200);
    mcp_over_https(&server, &pair.0).await;

    // A key that does not go with the certificate is refused as well.
    std::fs::write(&key, self_signed().1).expect("write another key");
    server.signal("HUP");
    guard("a second reload failure", async {
        while server.log.text().matches("TLS certificate reload failed").count() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(try_get(&trusting(&pair.0), &healthz).await.expect("the old certificate still serves"), 200);
}

/// A certificate or key that cannot be loaded stops `cordon serve` at start with exit code 1
/// and a message naming the file; giving only one of the two flags is a usage error (2).
#[tokio::test]
async fn unloadable_tls_files_stop_the_server_at_start() {
    let env = Env::demo();
    let (cert, key) = write_pair(&env, &self_signed());
    let missing = env.path().join("missing-cert.pem");
    let args = |cert: &Path, key: &Path| {
        vec![
            "serve".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--allow-unauthenticated".into(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ]
    };
    let env = &env;
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        env.run(&args).await
    };
    let out = run(args(&missing, &key)).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing-cert.pem"), "{}", describe(&out));

    let bad_key = env.path().join("bad-key.pem");
    std::fs::write(&bad_key, "garbage\n").expect("write bad-key.pem");
    let out = run(args(&cert, &bad_key)).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad-key.pem"), "{}", describe(&out));

    let cert = cert.display().to_string();
    let out = env.run(&["serve", "--listen", "127.0.0.1:0", "--allow-unauthenticated", "--tls-cert", &cert]).await;
    assert_eq!(out.status.code(), Some(2), "--tls-cert without --tls-key: {}", describe(&out));
}
