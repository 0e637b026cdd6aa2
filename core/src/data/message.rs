//! A message as it travels through the hub: topic, payload (`Bytes`, never copied) and the MQTT 5
//! properties that must survive routing.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// MQTT 5 properties forwarded with a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Properties {
    /// User properties, in order.
    pub user: Vec<(String, String)>,
    /// Content type.
    pub content_type: Option<String>,
    /// Response topic (request/response).
    pub response_topic: Option<String>,
    /// Correlation data (request/response).
    pub correlation_data: Option<Bytes>,
    /// Payload format indicator: true for UTF-8.
    pub payload_utf8: bool,
}

/// Who published a message: the dedup key for MQTT 5 `no_local`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// A connected client, by its session key (shared with the session: no copy per message).
    Client(std::sync::Arc<str>),
    /// The hub itself (replies, admin downlink).
    Hub,
}

/// A message accepted by the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Tenant scope: routing never crosses tenants.
    pub tenant: String,
    /// Topic name.
    pub topic: String,
    /// Payload, shared between every subscriber it goes to.
    pub payload: Bytes,
    /// QoS the publisher used.
    pub qos: QoS,
    /// Retain flag as published.
    pub retain: bool,
    /// MQTT 5 properties.
    pub properties: Properties,
    /// Absolute expiry (ms since the epoch) from the message expiry interval.
    pub expires_at_ms: Option<u64>,
    /// Who published it.
    pub origin: Origin,
    /// When the hub accepted it (ms since the epoch).
    pub received_at_ms: u64,
}

impl Message {
    /// A message the hub itself publishes (downlink, replies): not retained, no properties.
    pub fn from_hub(tenant: &str, topic: String, payload: Bytes, qos: QoS, now_ms: u64) -> Message {
        Message {
            tenant: tenant.to_owned(),
            topic,
            payload,
            qos,
            retain: false,
            properties: Properties::default(),
            expires_at_ms: None,
            origin: Origin::Hub,
            received_at_ms: now_ms,
        }
    }
    /// Whether the message expired before `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }

    /// Seconds left of the expiry interval, for the forwarded message expiry property.
    pub fn remaining_expiry_secs(&self, now_ms: u64) -> Option<u32> {
        self.expires_at_ms
            .map(|t| (t.saturating_sub(now_ms).div_ceil(1000)).max(1) as u32)
    }
}
