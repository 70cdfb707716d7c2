//! HTTPS: rustls (ring provider) under the same axum server as plain HTTP.
//!
//! [`TlsListener`] is an [`axum::serve::Listener`]: it accepts TCP connections and runs each TLS
//! handshake in its own task (bounded by [`HANDSHAKE_TIMEOUT`]), handing axum only finished
//! handshakes, so a slow or silent client never holds up the accept loop. Because axum drives it
//! like a `TcpListener`, HTTPS gets the very same graceful drain as HTTP; no second server
//! implementation (and no aws-lc-rs, which `axum-server`'s TLS feature would default to).
//!
//! Certificates are read at start — a file that cannot be loaded stops `cordon serve` with a
//! message naming it — and again on SIGHUP ([`reload_on_sighup`]): a new pair that loads replaces
//! the old one for new connections; one that does not is logged and the old pair keeps serving.

use anyhow::{bail, Context, Result};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A client that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; connections beyond it are closed at once (a flood of
/// half-open connections must not grow without bound).
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// The certificate chain and private key files (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads both files and builds a server configuration; errors name the file at fault.
    pub fn load(&self) -> Result<Arc<ServerConfig>> {
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("cannot read the TLS certificate file {}", self.cert.display()))?;
        if certs.is_empty() {
            bail!("the TLS certificate file {} holds no PEM certificate", self.cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("cannot read a PEM private key from {}", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("the TLS provider supports no protocol version")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .with_context(|| {
                format!("the TLS key {} does not go with the certificate {}", self.key.display(), self.cert.display())
            })?;
        // axum serves HTTP/1.1 only (its `http2` feature is off).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The acceptor new connections use; swapped whole on reload.
#[derive(Clone)]
pub struct SharedAcceptor(Arc<RwLock<TlsAcceptor>>);

impl SharedAcceptor {
    /// An acceptor serving `config`.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self(Arc::new(RwLock::new(TlsAcceptor::from(config))))
    }

    fn current(&self) -> TlsAcceptor {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn replace(&self, config: Arc<ServerConfig>) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = TlsAcceptor::from(config);
    }
}

/// A TCP listener that yields connections after their TLS handshake (see the module docs).
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: SharedAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serves TLS on `tcp` with whatever `acceptor` holds when each connection arrives.
    pub fn new(tcp: TcpListener, acceptor: SharedAcceptor) -> Self {
        Self { tcp, acceptor, handshakes: JoinSet::new() }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Both branches are cancel-safe, and all state lives in `self`, so axum may drop this
            // future (at shutdown) without losing a connection it was told about.
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((mut stream, peer)) => {
                        crate::connections::no_delay(&mut stream);
                        if self.handshakes.len() >= MAX_PENDING_HANDSHAKES {
                            tracing::warn!(%peer, "too many TLS handshakes in progress; connection closed");
                            continue;
                        }
                        let acceptor = self.acceptor.current();
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => Some((tls, peer)),
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    None
                                }
                                Err(_elapsed) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    Err(e) => {
                        // Typically out of file descriptors: back off instead of spinning, as
                        // axum's own TcpListener does.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Reloads `files` into `acceptor` on every SIGHUP, for as long as the process runs. A pair that
/// does not load is logged, and the previous one keeps serving.
pub fn reload_certificates_on_sighup(files: TlsFiles, acceptor: SharedAcceptor) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: TLS certificates will not reload");
                return;
            }
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match files.load() {
                    Ok(config) => {
                        acceptor.replace(config);
                        tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded (SIGHUP)");
                    }
                    Err(e) => tracing::error!(
                        error = %format!("{e:#}"),
                        "TLS certificate reload failed (SIGHUP); still serving the previous certificate"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (files, acceptor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles { cert: dir.path().join("nope.pem"), key: dir.path().join("key.pem") };
        let error = format!("{:#}", files.load().unwrap_err());
        assert!(error.contains("nope.pem"), "{error}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate\n").unwrap();
        let files = TlsFiles { cert: cert.clone(), key: dir.path().join("key.pem") };
        let error = format!("{:#}", files.load().unwrap_err());
        assert!(error.contains("cert.pem") && error.contains("no PEM certificate"), "{error}");
    }
}
