//! ironhub-mqtt: the MQTT 3.1.1 and 5.0 device transport over TCP and TLS.
//!
//! [`codec`] and [`state`] are free of IO (bytes in, packets out; packet ids and windows), and
//! unit-tested on bytes; [`conn`] is the tokio driver of one connection. Every decision about a
//! device (credentials, ACL, sessions, routing) is the hub's: this crate only speaks the protocol.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use ironhub_core::Hub;
use ironhub_core::transport::{BoxError, Transport};
use ironhub_tcp::listen::Listener;
use ironhub_tcp::tls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod codec;
pub mod conn;
pub mod state;

/// How long shutdown waits for connections to close (and persist their sessions).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// MQTT on one listener, plain TCP or TLS.
pub struct MqttTransport {
    listener: Listener,
    tls: Option<TlsAcceptor>,
}

impl MqttTransport {
    /// Binds a plain TCP listener (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = Listener::bind(addr).await?;
        Ok(MqttTransport {
            listener,
            tls: None,
        })
    }

    /// Binds a TLS listener.
    pub async fn bind_tls(addr: SocketAddr, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let listener = Listener::bind(addr).await?;
        Ok(MqttTransport {
            listener,
            tls: Some(acceptor),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

#[async_trait]
impl Transport for MqttTransport {
    fn name(&self) -> &'static str {
        if self.tls.is_some() { "mqtts" } else { "mqtt" }
    }

    async fn serve(
        mut self: Box<Self>,
        hub: Hub,
        shutdown: CancellationToken,
    ) -> Result<(), BoxError> {
        let tracker = TaskTracker::new();
        let kind = hub.transport(if self.tls.is_some() {
            "mqtt-tls"
        } else {
            "mqtt"
        });
        tracing::info!(addr = %self.listener.local_addr()?, tls = self.tls.is_some(), "MQTT listening");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                (stream, peer) = self.listener.accept() => {
                    let (hub, shutdown) = (hub.clone(), shutdown.clone());
                    match &self.tls {
                        None => {
                            tracker.spawn(conn::serve_connection(stream, peer, kind, hub, shutdown));
                        }
                        Some(acceptor) => {
                            let handshake = acceptor.accept(stream);
                            tracker.spawn(async move {
                                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                                    Ok(Ok(tls)) => conn::serve_connection(tls, peer, kind, hub, shutdown).await,
                                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
            }
        }
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("MQTT connections did not close in time");
        }
        Ok(())
    }
}
