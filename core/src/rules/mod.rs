//! Rules (data forwarding): a SQL statement picks messages by topic filter and condition and
//! reshapes their JSON payload; the result goes to up to ten destinations (a consumer group's
//! queue, a queue of a sink that takes rule queues, a topic). A destination that fails is retried after 1, 3 and 10 seconds,
//! then the failure is reported to the rule's error destination (seed 000).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

pub mod sql;

pub use sql::{Context, Query, SqlError};

/// Where a rule's output goes. On the wire a destination is `{"kind": ..., ...}`: `consumer_group`
/// with `group`, `topic` with `topic`, or `{sink}_queue` with `queue` for a sink that takes rule
/// queues (`sqs_queue` with the SQS sink).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireDestination", into = "WireDestination")]
pub enum RuleDestination {
    /// A consumer group of the tenant (its queue on the group's sink).
    ConsumerGroup {
        /// The group's id.
        group: String,
    },
    /// A queue by name on a sink that takes rule queues (created if missing).
    SinkQueue {
        /// The sink's name.
        sink: String,
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

/// A destination as JSON has it: a kind and the one field that kind takes.
#[derive(Serialize, Deserialize)]
struct WireDestination {
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    /// Any other field: refused once the kind is known (so an unknown kind is named first).
    #[serde(flatten, skip_serializing)]
    other: serde_json::Map<String, serde_json::Value>,
}

impl TryFrom<WireDestination> for RuleDestination {
    type Error = String;

    fn try_from(w: WireDestination) -> Result<Self, String> {
        let sink = w.kind.strip_suffix("_queue").filter(|s| !s.is_empty());
        let (field, value, destination) = match (w.kind.as_str(), sink) {
            ("consumer_group", _) => ("group", &w.group, None),
            ("topic", _) => ("topic", &w.topic, None),
            (_, Some(sink)) => ("queue", &w.queue, Some(sink)),
            (kind, None) => {
                return Err(format!(
                    "unknown variant `{kind}`, expected `consumer_group`, `topic` or `{{sink}}_queue`"
                ));
            }
        };
        let given = [
            ("group", &w.group),
            ("queue", &w.queue),
            ("topic", &w.topic),
        ];
        let unexpected = given
            .iter()
            .filter(|(f, v)| *f != field && v.is_some())
            .map(|(f, _)| *f)
            .chain(w.other.keys().map(String::as_str))
            .next();
        if let Some(other) = unexpected {
            return Err(format!(
                "unknown field `{other}` for a {} destination",
                w.kind
            ));
        }
        let value = value
            .clone()
            .ok_or_else(|| format!("missing field `{field}`"))?;
        Ok(match (field, destination) {
            ("group", _) => RuleDestination::ConsumerGroup { group: value },
            ("topic", _) => RuleDestination::Topic { topic: value },
            (_, sink) => RuleDestination::SinkQueue {
                sink: sink.unwrap_or_default().to_owned(),
                queue: value,
            },
        })
    }
}

/// One object shape per kind, each closed: what [`WireDestination`]'s conversion accepts.
impl schemars::JsonSchema for RuleDestination {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RuleDestination".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let shape = |kind: serde_json::Value, field: &str| {
            serde_json::json!({
                "type": "object",
                "required": ["kind", field],
                "properties": { "kind": kind, field: { "type": "string", "minLength": 1 } },
                "additionalProperties": false,
            })
        };
        schemars::json_schema!({
            "description": "Where a rule's output goes: a consumer group, a topic of the tenant, \
                or a queue of a sink that takes rule queues (`{sink}_queue`, e.g. `sqs_queue`).",
            "oneOf": [
                shape(serde_json::json!({ "type": "string", "enum": ["consumer_group"] }), "group"),
                shape(serde_json::json!({ "type": "string", "enum": ["topic"] }), "topic"),
                shape(serde_json::json!({ "type": "string", "pattern": "^[a-z0-9]+_queue$" }), "queue"),
            ],
        })
    }
}

impl From<RuleDestination> for WireDestination {
    fn from(d: RuleDestination) -> Self {
        let wire = |kind: String| WireDestination {
            kind,
            group: None,
            queue: None,
            topic: None,
            other: serde_json::Map::new(),
        };
        match d {
            RuleDestination::ConsumerGroup { group } => WireDestination {
                group: Some(group),
                ..wire("consumer_group".into())
            },
            RuleDestination::SinkQueue { sink, queue } => WireDestination {
                queue: Some(queue),
                ..wire(format!("{sink}_queue"))
            },
            RuleDestination::Topic { topic } => WireDestination {
                topic: Some(topic),
                ..wire("topic".into())
            },
        }
    }
}

/// A rule as stored and shown.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// A copy of [`RuleCounters`].
#[derive(schemars::JsonSchema, Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RuleCountersSnapshot {
    /// Messages matched.
    pub matched: u64,
    /// Matched messages discarded by L-051 or L-072.
    pub throttled: u64,
    /// Deliveries that succeeded.
    pub forwarded: u64,
    /// Deliveries that failed after the retries.
    pub failed: u64,
}

impl RuleCounters {
    /// A point-in-time copy.
    pub fn snapshot(&self) -> RuleCountersSnapshot {
        RuleCountersSnapshot {
            matched: self.matched.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<RuleDestination, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn destinations_keep_their_wire_format() {
        let cases = [
            (
                json!({ "kind": "consumer_group", "group": "g1" }),
                RuleDestination::ConsumerGroup { group: "g1".into() },
            ),
            (
                json!({ "kind": "sqs_queue", "queue": "acme-hot" }),
                RuleDestination::SinkQueue {
                    sink: "sqs".into(),
                    queue: "acme-hot".into(),
                },
            ),
            (
                json!({ "kind": "topic", "topic": "/a/b/user/c" }),
                RuleDestination::Topic {
                    topic: "/a/b/user/c".into(),
                },
            ),
        ];
        for (wire, destination) in cases {
            assert_eq!(parse(wire.clone()).unwrap(), destination);
            assert_eq!(serde_json::to_value(&destination).unwrap(), wire);
        }
    }

    #[test]
    fn malformed_destinations_say_what_is_wrong() {
        let error = |v| parse(v).unwrap_err();
        assert!(
            error(json!({ "kind": "webhook", "url": "x" })).contains("unknown variant `webhook`")
        );
        assert!(
            error(json!({ "kind": "topic", "topic": "t", "url": "x" }))
                .contains("unknown field `url`")
        );
        assert!(error(json!({ "kind": "_queue", "queue": "q" })).contains("unknown variant"));
        assert!(error(json!({ "kind": "topic" })).contains("missing field `topic`"));
        assert!(
            error(json!({ "kind": "topic", "topic": "t", "group": "g" }))
                .contains("unknown field `group`")
        );
    }
}
