//! Events leaving the hub for business servers, and the queues they go to. A device's upstream
//! message or a notification about a device (status, lifecycle, topology), addressed to one or
//! more [`Destination`]s; the forwarder carries them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::message::QoS;

/// What an event tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A message a device published, payload unchanged.
    Upstream,
    /// The device went online or offline.
    Status,
    /// The device was created, deleted, enabled or disabled.
    Lifecycle,
    /// A gateway's sub-devices changed.
    Topology,
    /// A rule's output (its SELECT applied to a message).
    Rule,
    /// A rule's report that a destination failed after the retries.
    RuleError,
    /// A device's firmware upgrade changed state.
    Ota,
}

impl EventKind {
    /// The name used in envelopes (the AMQP `type` property).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Upstream => "upstream",
            EventKind::Status => "status",
            EventKind::Lifecycle => "lifecycle",
            EventKind::Topology => "topology",
            EventKind::Rule => "rule",
            EventKind::RuleError => "rule_error",
            EventKind::Ota => "ota",
        }
    }
}

/// One event on its way to business servers. The envelope each sink builds from it is documented
/// in docs/protocols/amqp.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique message id (increasing, unique across restarts of this hub).
    pub id: u64,
    /// What the event tells.
    pub kind: EventKind,
    /// Owning tenant.
    pub tenant: String,
    /// ProductKey of the device concerned.
    pub product_key: String,
    /// DeviceName of the device concerned.
    pub device_name: String,
    /// The device's topic for upstream messages; the notification topic otherwise.
    pub topic: String,
    /// QoS the device published with (notifications: 1).
    pub qos: QoS,
    /// When the hub accepted the message or saw the change (ms since the epoch).
    pub generated_at_ms: u64,
    /// The device's payload, unchanged; a JSON document for notifications.
    pub payload: Bytes,
}

impl Event {
    /// A status notification on `/as/mqtt/status/{pk}/{dn}` (Alibaba's topic):
    /// `{"status":"online"|"offline","productKey","deviceName","time"}`.
    pub fn status(id: u64, tenant: &str, pk: &str, dn: &str, online: bool, now_ms: u64) -> Event {
        let status = if online { "online" } else { "offline" };
        let payload = serde_json::json!({
            "status": status, "productKey": pk, "deviceName": dn, "time": now_ms,
        });
        Event::notification(id, EventKind::Status, tenant, pk, dn, now_ms, payload)
            .with_topic(format!("/as/mqtt/status/{pk}/{dn}"))
    }

    /// A lifecycle notification on `/{pk}/{dn}/thing/lifecycle` (Alibaba's topic):
    /// `{"action":"create"|"delete"|"enable"|"disable","productKey","deviceName","messageCreateTime"}`.
    pub fn lifecycle(
        id: u64,
        tenant: &str,
        pk: &str,
        dn: &str,
        action: &str,
        now_ms: u64,
    ) -> Event {
        let payload = serde_json::json!({
            "action": action, "productKey": pk, "deviceName": dn, "messageCreateTime": now_ms,
        });
        Event::notification(id, EventKind::Lifecycle, tenant, pk, dn, now_ms, payload)
            .with_topic(format!("/{pk}/{dn}/thing/lifecycle"))
    }

    /// A topology notification on `/{pk}/{dn}/thing/topo/lifecycle` (Alibaba's topic):
    /// `{"action":"add"|"remove","gwProductKey","gwDeviceName","devices":[{"productKey","deviceName"}],"messageCreateTime"}`.
    pub fn topology(
        id: u64,
        tenant: &str,
        gateway: (&str, &str),
        action: &str,
        devices: &[(String, String)],
        now_ms: u64,
    ) -> Event {
        let (pk, dn) = gateway;
        let devices: Vec<serde_json::Value> = devices
            .iter()
            .map(|(p, d)| serde_json::json!({ "productKey": p, "deviceName": d }))
            .collect();
        let payload = serde_json::json!({
            "action": action, "gwProductKey": pk, "gwDeviceName": dn, "devices": devices,
            "messageCreateTime": now_ms,
        });
        Event::notification(id, EventKind::Topology, tenant, pk, dn, now_ms, payload)
            .with_topic(format!("/{pk}/{dn}/thing/topo/lifecycle"))
    }

    /// A firmware upgrade's state change on `/{pk}/{dn}/ota/upgrade` (Alibaba's topic):
    /// `{"productKey","deviceName","moduleName","status","step","desc","srcVersion",
    /// "destVersion","jobId","packageId","messageCreateTime"}`.
    pub fn ota(
        id: u64,
        tenant: &str,
        pk: &str,
        dn: &str,
        now_ms: u64,
        payload: serde_json::Value,
    ) -> Event {
        Event::notification(id, EventKind::Ota, tenant, pk, dn, now_ms, payload)
            .with_topic(format!("/{pk}/{dn}/ota/upgrade"))
    }

    fn notification(
        id: u64,
        kind: EventKind,
        tenant: &str,
        pk: &str,
        dn: &str,
        now_ms: u64,
        payload: serde_json::Value,
    ) -> Event {
        Event {
            id,
            kind,
            tenant: tenant.to_owned(),
            product_key: pk.to_owned(),
            device_name: dn.to_owned(),
            topic: String::new(),
            qos: QoS::AtLeastOnce,
            generated_at_ms: now_ms,
            payload: Bytes::from(payload.to_string()),
        }
    }

    fn with_topic(mut self, topic: String) -> Event {
        self.topic = topic;
        self
    }
}

/// A queue of a sink that events go to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Destination {
    /// The sink that serves it ("amqp", "sqs").
    pub sink: String,
    /// The queue's name on the sink.
    pub queue: String,
    /// How long an event may wait, in the queue or in the hub's outbox, before it expires (ms).
    pub retention_ms: u64,
    /// Most events the queue holds; the oldest are dropped beyond it. 0 = unlimited.
    pub max_messages: u64,
}
