//! ironhub-quic: MQTT over QUIC, as EMQX does it: a QUIC connection (ALPN `mqtt`) whose first
//! bidirectional stream carries an ordinary MQTT 3.1.1/5.0 session. The stream is handed to the
//! MQTT transport's connection driver unchanged, so codec, session rules, limits and takeover are
//! shared with TCP rather than copied. QUIC gives the device connection migration (a new address
//! keeps the session) and no head-of-line blocking on lossy links.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ironhub_core::Hub;
use ironhub_core::transport::{BoxError, Transport};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The ALPN protocol id clients must offer.
pub const ALPN: &[u8] = b"mqtt";
/// How long a client may take to open its MQTT stream after the handshake.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for connections to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why QUIC could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// Reading or writing a certificate or key file.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Generating a self-signed certificate.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls or quinn refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Binding the UDP socket.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> QuicError {
    QuicError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// The certificate and key in `dir` (`quic-cert.pem`, `quic-key.pem`), generated self-signed for
/// `localhost` and 127.0.0.1 on first use.
pub fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), QuicError> {
    let (cert, key) = (dir.join("quic-cert.pem"), dir.join("quic-key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    std::fs::write(&cert, generated.cert.pem()).map_err(|e| file_err(&cert, e))?;
    std::fs::write(&key, generated.signing_key.serialize_pem()).map_err(|e| file_err(&key, e))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed QUIC certificate");
    Ok((cert, key))
}

/// MQTT over QUIC on one UDP socket.
pub struct QuicTransport {
    endpoint: quinn::Endpoint,
}

impl QuicTransport {
    /// Binds with a PEM certificate chain and key.
    pub fn bind(addr: SocketAddr, cert: &Path, key: &Path) -> Result<Self, QuicError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| file_err(cert, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(cert, e))?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| QuicError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| QuicError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| QuicError::Tls(e.to_string()))?;
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = quinn::Endpoint::server(config, addr)
            .map_err(|source| QuicError::Bind { addr, source })?;
        Ok(QuicTransport { endpoint })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

async fn serve_quic_connection(incoming: quinn::Incoming, hub: Hub, shutdown: CancellationToken) {
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
    };
    let peer = connection.remote_address();
    let stream = tokio::time::timeout(STREAM_TIMEOUT, connection.accept_bi()).await;
    let (send, recv) = match stream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "QUIC connection ended before its MQTT stream");
            return;
        }
        Err(_) => {
            connection.close(0u32.into(), b"no MQTT stream");
            return;
        }
    };
    ironhub_mqtt::conn::serve_connection(
        tokio::io::join(recv, send),
        peer,
        hub.transport("quic"),
        hub,
        shutdown,
    )
    .await;
    connection.close(0u32.into(), b"");
}

#[async_trait]
impl Transport for QuicTransport {
    fn name(&self) -> &'static str {
        "quic"
    }

    async fn serve(self: Box<Self>, hub: Hub, shutdown: CancellationToken) -> Result<(), BoxError> {
        let tracker = TaskTracker::new();
        tracing::info!(addr = %self.endpoint.local_addr()?, "MQTT over QUIC listening");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    tracker.spawn(serve_quic_connection(incoming, hub.clone(), shutdown.clone()));
                }
            }
        }
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("QUIC connections did not close in time");
        }
        self.endpoint.close(0u32.into(), b"server shutting down");
        Ok(())
    }
}
