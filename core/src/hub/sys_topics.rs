//! `$SYS` topics for open-broker clients, as Mosquitto and EMQX publish them: the broker's
//! version, uptime, and the open-broker tenant's clients connected and messages received and
//! sent (no other tenant's figures), retained, every `[hub.open_broker] sys_interval_secs` (0,
//! the default, publishes none). Each node publishes its own figures to its own clients. Who may read them is the open-broker rules' say (a
//! subscribe rule denying `$SYS/#`); no client may publish on `$SYS`.

use std::time::Duration;

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::Hub;
use crate::data::message::{Message, Origin, Properties, QoS};

/// What the hub publishes under `$SYS/broker/`, by topic, at `now_ms` for a hub up since
/// `started_ms`.
fn figures(hub: &Hub, started_ms: u64, now_ms: u64) -> [(&'static str, String); 5] {
    let open = &hub.inner.stats.open_broker;
    let tenant = &hub.inner.config.open_broker.tenant;
    let connected = hub
        .inner
        .sessions
        .read()
        .expect("sessions lock")
        .values()
        .filter(|s| s.tenant == *tenant && s.is_online())
        .count();
    [
        ("version", format!("ironhub {}", env!("CARGO_PKG_VERSION"))),
        (
            "uptime",
            format!("{} seconds", now_ms.saturating_sub(started_ms) / 1000),
        ),
        ("clients/connected", connected.to_string()),
        (
            "messages/received",
            open.received.load(Ordering::Relaxed).to_string(),
        ),
        (
            "messages/sent",
            open.sent.load(Ordering::Relaxed).to_string(),
        ),
    ]
}

impl Hub {
    /// Publishes the `$SYS` topics every interval until the hub stops.
    pub(super) async fn publish_sys_forever(self) {
        let open = &self.inner.config.open_broker;
        let every = Duration::from_secs(u64::from(open.sys_interval_secs));
        let started_ms = self.now_ms();
        loop {
            let now = self.now_ms();
            for (leaf, value) in figures(&self, started_ms, now) {
                let msg = Message {
                    tenant: open.tenant.clone(),
                    topic: format!("$SYS/broker/{leaf}"),
                    payload: Bytes::from(value),
                    qos: QoS::AtMostOnce,
                    retain: true,
                    properties: Properties::default(),
                    expires_at_ms: None,
                    origin: Origin::Hub,
                    received_at_ms: now,
                };
                // This node's clients only, retained in this node's memory.
                if let Err(e) = self.accept_routed(msg).await {
                    tracing::warn!(error = %e, "publishing $SYS failed");
                }
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
