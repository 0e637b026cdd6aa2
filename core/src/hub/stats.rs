//! The hub's counters of the message path (`GET /api/v1/stats`, `/metrics`) and their snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::{ConnectRefusal, LimitCounters, TransportKind};
use crate::data::message::QoS;
use crate::limits::LimitId;

/// Counters of the message path, readable through the admin API.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages accepted from publishers.
    pub messages_in: AtomicU64,
    /// QoS 0 deliveries dropped because the subscriber's queue was full.
    pub dropped_qos0_queue_full: AtomicU64,
    /// QoS 1/2 deliveries dropped after the slow-subscriber wait.
    pub dropped_qos12_slow_subscriber: AtomicU64,
    /// QoS 0 messages for an offline session (not stored, by design).
    pub dropped_qos0_offline: AtomicU64,
    /// QoS 1/2 messages dropped because an offline session's queue was at its limit.
    pub dropped_offline_queue_full: AtomicU64,
    /// Deliveries larger than the client's Maximum Packet Size, discarded (MQTT-3.1.2-25).
    pub dropped_too_large_for_client: AtomicU64,
    /// Expired sessions reclaimed.
    pub sessions_expired: AtomicU64,
    /// Requests stopped by each limit, indexed like [`LimitId::ALL`].
    pub limited: LimitCounters,
    /// Connections (HTTP and CoAP: token requests) accepted, by [`TransportKind`].
    pub accepted: [AtomicU64; TransportKind::MAX],
    /// Connections refused, by [`TransportKind`] and [`ConnectRefusal::kind`].
    pub refused: [[AtomicU64; ConnectRefusal::KINDS]; TransportKind::MAX],
    /// Messages accepted from clients, by [`TransportKind`] and QoS.
    pub received: [[AtomicU64; 3]; TransportKind::MAX],
    /// Deliveries handed to sessions, by QoS.
    pub delivered: [AtomicU64; 3],
    /// The open-broker tenant's share of the above, for its `$SYS` topics (no other tenant's
    /// figures reach its anonymous clients).
    pub open_broker: OpenBrokerStats,
}

/// Messages of the open-broker tenant this node routed and delivered.
#[derive(Debug, Default)]
pub struct OpenBrokerStats {
    /// Messages routed.
    pub received: AtomicU64,
    /// Deliveries of them.
    pub sent: AtomicU64,
}

impl Stats {
    /// Counts a connection attempt's outcome.
    pub(crate) fn connect(&self, transport: TransportKind, refusal: Option<&ConnectRefusal>) {
        match refusal {
            None => self.accepted[transport.index()].fetch_add(1, Ordering::Relaxed),
            Some(r) => self.refused[transport.index()][r.kind()].fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Counts a delivery handed to a session (online queue or offline store).
    pub(crate) fn delivered(&self, qos: QoS) {
        self.delivered[qos as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A point-in-time copy of [`Stats`].
#[derive(schemars::JsonSchema, Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections refused.
    pub connections_refused: u64,
    /// Sessions currently connected (by a connection of their own).
    pub connections_open: u64,
    /// Sub-devices online through their gateways' connections.
    pub sub_devices_online: u64,
    /// Sessions known (connected or persisted).
    pub sessions: u64,
    /// Messages accepted.
    pub messages_in: u64,
    /// Deliveries to sessions.
    pub deliveries: u64,
    /// Drops by reason.
    pub dropped: HashMap<&'static str, u64>,
    /// Expired sessions reclaimed.
    pub sessions_expired: u64,
    /// Requests stopped by each limit, by id (limits never hit are left out).
    pub limited: std::collections::BTreeMap<&'static str, u64>,
    /// By transport: connections open, accepted, refused by reason, messages received by QoS.
    pub transports: BTreeMap<&'static str, TransportStats>,
    /// Deliveries by QoS (0, 1, 2).
    pub delivered_by_qos: [u64; 3],
    /// Connections open per tenant (tenants with none are left out).
    pub tenants_online: BTreeMap<String, u64>,
    /// Each tenant's standing against its monthly limits (tenants seen since the start).
    pub tenants_monthly: BTreeMap<String, Vec<crate::metering::MonthlyUsage>>,
    /// The store's latency.
    pub store: crate::store::timed::StoreLatency,
    /// This node's id in a cluster (None: a single node).
    pub node: Option<String>,
    /// Live nodes of the cluster, this one included (1 for a single node).
    pub cluster_nodes: u64,
}

/// Counters of one transport.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TransportStats {
    /// Connections open now.
    pub open: u64,
    /// Connections (token requests for HTTP and CoAP) accepted.
    pub accepted: u64,
    /// Refused, by reason (reasons never seen are left out).
    pub refused: BTreeMap<&'static str, u64>,
    /// Messages accepted from clients, by QoS (0, 1, 2).
    pub received: [u64; 3],
}

impl Stats {
    /// Counts a request stopped by a limit.
    pub(crate) fn limited(&self, limit: LimitId) {
        // `LimitId::ALL` lists the variants in declaration order.
        self.limited[limit as usize].fetch_add(1, Ordering::Relaxed);
    }
}
