//! ironhub-mqtt: the MQTT 3.1.1 and 5.0 device transport over TCP and TLS, and over WebSocket
//! (plain or TLS).
//!
//! [`codec`] and [`state`] are free of IO (bytes in, packets out; packet ids and windows), and
//! unit-tested on bytes; [`conn`] is the tokio driver of one connection, over any byte stream
//! ([`ws`] makes one of a WebSocket). Every decision about a device (credentials, ACL,
//! sessions, routing) is the hub's: this crate only speaks the protocol.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use ironhub_core::Hub;
use ironhub_core::transport::{BoxError, Transport};
use ironhub_tcp::listen::Listener;
use ironhub_tcp::quickack::QuickAck;
use ironhub_tcp::tls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod codec;
pub mod conn;
pub mod state;
pub mod ws;

/// How long shutdown waits for connections to close (and persist their sessions).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a TLS or WebSocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// MQTT on one listener: plain TCP or TLS, each directly or carrying WebSocket.
pub struct MqttTransport {
    listener: Listener,
    tls: Option<TlsAcceptor>,
    websocket: bool,
}

impl MqttTransport {
    /// Binds a plain TCP listener (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = Listener::bind(addr).await?;
        Ok(MqttTransport {
            listener,
            tls: None,
            websocket: false,
        })
    }

    /// Binds a TLS listener.
    pub async fn bind_tls(addr: SocketAddr, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let listener = Listener::bind(addr).await?;
        Ok(MqttTransport {
            listener,
            tls: Some(acceptor),
            websocket: false,
        })
    }

    /// Binds a WebSocket listener, over TLS when `tls` is given (`ws://` or `wss://`).
    pub async fn bind_websocket(
        addr: SocketAddr,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let listener = Listener::bind(addr).await?;
        Ok(MqttTransport {
            listener,
            tls,
            websocket: true,
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
        match (self.tls.is_some(), self.websocket) {
            (false, false) => "mqtt",
            (true, false) => "mqtts",
            (false, true) => "mqtt-ws",
            (true, true) => "mqtt-wss",
        }
    }

    async fn serve(
        mut self: Box<Self>,
        hub: Hub,
        shutdown: CancellationToken,
    ) -> Result<(), BoxError> {
        let tracker = TaskTracker::new();
        let kind = hub.transport(match (self.tls.is_some(), self.websocket) {
            (false, false) => "mqtt",
            (true, false) => "mqtt-tls",
            (false, true) => "mqtt-ws",
            (true, true) => "mqtt-wss",
        });
        let websocket = self.websocket;
        tracing::info!(addr = %self.listener.local_addr()?, tls = self.tls.is_some(), websocket, "MQTT listening");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                (stream, peer) = self.listener.accept() => {
                    let stream = QuickAck::new(stream);
                    let (hub, shutdown) = (hub.clone(), shutdown.clone());
                    match (&self.tls, websocket) {
                        (None, false) => {
                            tracker.spawn(conn::serve_connection(stream, peer, kind, hub, shutdown));
                        }
                        (None, true) => {
                            tracker.spawn(serve_websocket(stream, peer, kind, hub, shutdown));
                        }
                        (Some(acceptor), _) => {
                            let handshake = acceptor.accept(stream);
                            tracker.spawn(async move {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                                    Ok(Ok(tls)) if websocket => serve_websocket(tls, peer, kind, hub, shutdown).await,
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

/// Completes the WebSocket handshake, then serves MQTT over its binary frames.
async fn serve_websocket<S>(
    stream: S,
    peer: SocketAddr,
    kind: ironhub_core::hub::TransportKind,
    hub: Hub,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let max_packet = hub.config().max_packet_size as usize;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, ws::accept(stream, max_packet)).await {
        Ok(Ok(ws)) => conn::serve_connection(ws, peer, kind, hub, shutdown).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "WebSocket handshake failed"),
        Err(_) => tracing::debug!(%peer, "WebSocket handshake timed out"),
    }
}
