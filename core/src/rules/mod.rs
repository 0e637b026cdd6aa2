//! Rules (data forwarding): a SQL statement picks messages by topic filter and condition and
//! reshapes their JSON payload; the result goes to up to ten destinations (a consumer group's
//! queue, an SQS queue, a topic). A destination that fails is retried after 1, 3 and 10 seconds,
//! then the failure is reported to the rule's error destination (seed 000).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

pub mod sql;

pub use sql::{Context, Query, SqlError};

/// Where a rule's output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleDestination {
    /// A consumer group of the tenant (its AMQP or SQS queue).
    ConsumerGroup {
        /// The group's id.
        group: String,
    },
    /// An SQS queue by name (the `[sqs]` sink; created if missing).
    SqsQueue {
        /// Queue name.
        queue: String,
    },
    /// A topic of the tenant, published by the hub; `${productKey}` and `${deviceName}` are
    /// replaced by the publishing device's.
    Topic {
        /// Topic name.
        topic: String,
    },
}

/// A rule as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Owning tenant.
    pub tenant: String,
    /// Identifier, issued by the hub.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `SELECT ... FROM '<filter>' [WHERE ...]`.
    pub sql: String,
    /// Whether it runs.
    pub enabled: bool,
    /// Up to ten destinations (L-050).
    pub destinations: Vec<RuleDestination>,
    /// Where failures are reported after the retries.
    pub error_destination: Option<RuleDestination>,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
}

/// What a rule did since the hub started.
#[derive(Debug, Default)]
pub struct RuleCounters {
    /// Messages that passed its FROM and WHERE.
    pub matched: AtomicU64,
    /// Matched messages discarded by the tenant's rule-engine rate (L-051) or monthly quota
    /// (L-072).
    pub throttled: AtomicU64,
    /// Deliveries to destinations that succeeded (one per destination and message).
    pub forwarded: AtomicU64,
    /// Deliveries that failed after the retries (reported to the error destination).
    pub failed: AtomicU64,
    /// Deliveries dropped because too many were in flight.
    pub dropped: AtomicU64,
}

/// A copy of [`RuleCounters`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RuleCountersSnapshot {
    /// Messages matched.
    pub matched: u64,
    /// Matched messages discarded by L-051 or L-072.
    pub throttled: u64,
    /// Deliveries that succeeded.
    pub forwarded: u64,
    /// Deliveries that failed after the retries.
    pub failed: u64,
    /// Deliveries dropped at the in-flight cap.
    pub dropped: u64,
}

impl RuleCounters {
    /// A point-in-time copy.
    pub fn snapshot(&self) -> RuleCountersSnapshot {
        RuleCountersSnapshot {
            matched: self.matched.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Waits before the second, third and fourth attempt at a destination (seed 000).
pub const RETRY_DELAYS_SECS: [u64; 3] = [1, 3, 10];

/// Replaces `${productKey}` and `${deviceName}` in a destination topic.
pub fn render_topic(template: &str, product_key: &str, device_name: &str) -> String {
    template
        .replace("${productKey}", product_key)
        .replace("${deviceName}", device_name)
}
