//! Hub-wide settings: every number here is documented in docs/limits.md or docs/operations.md.

use serde::{Deserialize, Serialize};

use crate::acl::Rule;

/// Settings of the hub engine. Defaults follow seed 000 section 7.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Smallest accepted MQTT keep-alive, seconds (seed 000: 30).
    pub keepalive_min_secs: u16,
    /// Largest accepted MQTT keep-alive, seconds (seed 000: 1200).
    pub keepalive_max_secs: u16,
    /// Largest packet a device may send, bytes (seed 000: 256 KB).
    pub max_packet_size: u32,
    /// Deliveries queued in memory per online session before the slow-subscriber policy applies.
    /// 1000 keeps a session's worst-case memory near 1000 x payload size.
    pub session_queue_capacity: usize,
    /// How long a QoS 1/2 publisher waits for a full subscriber queue before that delivery is
    /// dropped, counted and logged.
    pub slow_subscriber_wait_ms: u64,
    /// The same for QoS 0: publishers slow down to the pace of their subscribers (back-pressure)
    /// and a delivery is dropped and counted only when a subscriber stalls this long. 0 drops at
    /// once when the queue is full.
    pub slow_subscriber_wait_qos0_ms: u64,
    /// Largest session expiry granted, seconds; MQTT 3.1.1 persistent sessions get exactly this
    /// (seed 000: a QoS 1 message is kept 7 days).
    pub max_session_expiry_secs: u32,
    /// QoS 1/2 messages kept per offline session; beyond it new ones are dropped and counted.
    pub max_offline_messages: usize,
    /// Seconds between sweeps that reclaim expired sessions.
    pub session_sweep_interval_secs: u64,
    /// Longest topic name or filter, bytes of UTF-8 (seed 000: 128).
    pub max_topic_length: usize,
    /// Most levels in a topic, counted as its slashes (seed 000: 7).
    pub max_topic_levels: usize,
    /// Most topic filters in one SUBSCRIBE (seed 000: 8).
    pub max_filters_per_subscribe: usize,
    /// Most MQTT 5 user properties on a message (seed 000: 20).
    pub max_user_properties: usize,
    /// Longest MQTT 5 user property key or value, characters (seed 000: 128).
    pub max_user_property_length: usize,
    /// Longest MQTT 5 response topic or correlation data, characters or bytes (seed 000: 128).
    pub max_request_response_length: usize,
    /// Seconds between flushes of usage counters to the store (at most 60).
    pub usage_flush_interval_secs: u64,
    /// Bytes per second one connection may send (seed 000: 8 Mbps); faster senders are paused
    /// (TCP back-pressure), nothing is dropped. 0 = unlimited.
    pub max_connection_bytes_per_sec: u64,
    /// Events buffered in memory per sink before publishers wait (QoS 1) or events are dropped
    /// and counted (QoS 0).
    pub sink_buffer_capacity: usize,
    /// Most events a sink sends in one batch.
    pub sink_batch_size: usize,
    /// How long a sink may take to confirm a batch before its events go to the store's outbox
    /// (and the QoS 1 publishers are answered from there).
    pub sink_send_timeout_ms: u64,
    /// Largest CoAP payload, bytes (L-023, seed 000: 1 KB); larger requests get 4.13.
    pub max_coap_payload: usize,
    /// Messages remembered per device for the console and `GET .../devices/{dn}/messages`
    /// (0 = none).
    pub recent_messages_per_device: usize,
    /// Devices whose recent messages are remembered (beyond it, some are forgotten).
    pub recent_messages_max_devices: usize,
    /// The open-broker mode for a sandbox tenant.
    pub open_broker: OpenBrokerConfig,
    /// Firmware upgrades.
    pub ota: OtaConfig,
    /// Data parsing scripts.
    pub scripts: ScriptsConfig,
    /// How often property and event history past its tenant's retention is deleted, seconds.
    pub history_sweep_interval_secs: u64,
    /// How long a small batch of history writes waits for more before its commit, ms (QoS 1
    /// posts are acknowledged after it): fewer commits under a steady trickle of posts.
    pub history_commit_linger_ms: u64,
}

/// `[hub.ota]`: firmware upgrades.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtaConfig {
    /// The base URL devices download packages from (`https://iot.example.com:8081`); absent:
    /// the HTTP device transport's own address.
    pub download_url: Option<String>,
    /// How long a download URL stays valid, seconds (Alibaba: 24 hours).
    pub url_ttl_secs: u64,
    /// How often the rollout pushes upgrades and times out silent devices, ms.
    pub rollout_interval_ms: u64,
}

impl Default for OtaConfig {
    fn default() -> Self {
        OtaConfig {
            download_url: None,
            url_ttl_secs: 24 * 3600,
            rollout_interval_ms: 1000,
        }
    }
}

/// `[hub.scripts]`: data parsing scripts (docs/protocols/parsing-scripts.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptsConfig {
    /// Threads running scripts (each product's script runs on one of them).
    pub workers: usize,
    /// Wall time one execution may take before it is stopped, ms (L-098).
    pub time_budget_ms: u64,
    /// Memory one product's script may use, its code included, MB (L-098).
    pub memory_mb: usize,
    /// Memory the compiled scripts each worker keeps between executions may hold, MB (past it,
    /// others are dropped and compiled again when next used).
    pub cache_mb: usize,
}

impl Default for ScriptsConfig {
    fn default() -> Self {
        ScriptsConfig {
            workers: 2,
            time_budget_ms: 100,
            memory_mb: 16,
            cache_mb: 256,
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            keepalive_min_secs: 30,
            keepalive_max_secs: 1200,
            max_packet_size: 256 * 1024,
            session_queue_capacity: 1000,
            slow_subscriber_wait_ms: 2000,
            slow_subscriber_wait_qos0_ms: 500,
            max_session_expiry_secs: 7 * 24 * 3600,
            max_offline_messages: 100_000,
            session_sweep_interval_secs: 60,
            max_topic_length: 128,
            max_topic_levels: 7,
            max_filters_per_subscribe: 8,
            max_user_properties: 20,
            max_user_property_length: 128,
            max_request_response_length: 128,
            usage_flush_interval_secs: 10,
            max_connection_bytes_per_sec: 1_000_000,
            sink_buffer_capacity: 10_000,
            sink_batch_size: 256,
            sink_send_timeout_ms: 5_000,
            max_coap_payload: 1024,
            recent_messages_per_device: 10,
            recent_messages_max_devices: 100_000,
            open_broker: OpenBrokerConfig::default(),
            ota: OtaConfig::default(),
            scripts: ScriptsConfig::default(),
            history_sweep_interval_secs: 3600,
            history_commit_linger_ms: 20,
        }
    }
}

/// Anonymous clients with free topic names, confined to one sandbox tenant. Off by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenBrokerConfig {
    /// Accept clients that present no device credentials.
    pub enabled: bool,
    /// The tenant their messages live in (created on start when missing).
    pub tenant: String,
    /// Allow/deny rules, first match wins; no match allows.
    pub rules: Vec<Rule>,
    /// Seconds between publications of the `$SYS` topics (broker version, uptime, clients
    /// connected, messages received and sent); 0 publishes none.
    pub sys_interval_secs: u32,
}

impl Default for OpenBrokerConfig {
    fn default() -> Self {
        OpenBrokerConfig {
            enabled: false,
            tenant: "sandbox".into(),
            rules: Vec::new(),
            sys_interval_secs: 0,
        }
    }
}
