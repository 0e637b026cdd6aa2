//! ironhub-mqtt: the MQTT 3.1.1 and 5.0 device transport over TCP.
//!
//! [`codec`] and [`state`] are free of IO (bytes in, packets out; packet ids and windows), and
//! unit-tested on bytes; [`conn`] is the tokio driver of one connection. Every decision about a
//! device (credentials, ACL, sessions, routing) is the hub's: this crate only speaks the protocol.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use ironhub_core::Hub;
use ironhub_core::transport::{BoxError, Transport};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod codec;
pub mod conn;
pub mod state;

/// How long shutdown waits for connections to close (and persist their sessions).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// MQTT over TCP on one listener.
pub struct MqttTransport {
    listener: TcpListener,
}

impl MqttTransport {
    /// Binds the listener (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(MqttTransport {
            listener: TcpListener::bind(addr).await?,
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
        "mqtt"
    }

    async fn serve(self: Box<Self>, hub: Hub, shutdown: CancellationToken) -> Result<(), BoxError> {
        let tracker = TaskTracker::new();
        tracing::info!(addr = %self.listener.local_addr()?, "MQTT listening");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    tracker.spawn(conn::serve_connection(stream, peer, hub.clone(), shutdown.clone()));
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
