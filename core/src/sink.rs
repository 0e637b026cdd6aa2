//! The `Sink` trait: a destination for events leaving the hub (AMQP consumer groups, SQS queues).
//!
//! The hub's forwarder batches events per destination, calls [`Sink::send`],
//! and keeps in the store whatever a sink could not confirm, to send it again later. A sink only
//! has to say, truthfully, which events the destination confirmed.

use async_trait::async_trait;

use crate::data::event::{Destination, Event};

/// Why a sink could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination is unreachable or refused the whole batch; retry later.
    #[error("destination unavailable: {0}")]
    Unavailable(String),
    /// Some events of the batch failed (indices into the batch); the rest were confirmed.
    #[error("{} events of the batch failed, {} were rejected", failed.len(), rejected.len())]
    Partial {
        /// Indices of events that failed for now: they are sent again.
        failed: Vec<usize>,
        /// Indices of events the destination refuses for good (too large, invalid): dropped and
        /// counted, never retried.
        rejected: Vec<usize>,
    },
}

/// Credentials that may only consume one destination, shown once when they are created.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerCredentials {
    /// User name on the destination's broker.
    pub username: String,
    /// Its password.
    pub password: String,
}

/// What a sink offers beyond sending events, declared by the sink itself (core names no sink).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkCapabilities {
    /// Consumer groups created without naming a sink live on this one.
    pub default_for_groups: bool,
    /// Rules may name their own queues on this sink (`{"kind": "{name}_queue", "queue": ...}`),
    /// created with this retention (ms) when missing; None: rules use its consumer groups only.
    pub rule_queue_retention_ms: Option<u64>,
}

/// A destination with at-least-once delivery: `send` returns Ok only once the destination has
/// confirmed every event of the batch.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// The sink's kind, as destinations name it ("amqp", "sqs"): also its name in metrics.
    fn name(&self) -> &str;
    /// What it offers beyond sending (none by default).
    fn capabilities(&self) -> SinkCapabilities {
        SinkCapabilities::default()
    }
    /// The queue of consumer group `id` of `tenant` on this sink (each broker has its own rules
    /// for names).
    fn group_queue(&self, tenant: &str, id: &str) -> String {
        format!("ironhub.{tenant}.{id}")
    }
    /// Creates the destination's queue (with its retention) if it does not exist, so consumers
    /// can attach before the first event.
    async fn prepare(&self, destination: &Destination) -> Result<(), SinkError>;
    /// Delivers a batch to one destination (a queue), creating the queue with the destination's
    /// retention if it does not exist; Ok means every event was confirmed.
    async fn send(&self, destination: &Destination, batch: &[&Event]) -> Result<(), SinkError>;
    /// Checks the destination is usable (run at startup and by readiness probes).
    async fn healthcheck(&self) -> Result<(), SinkError>;
    /// Creates credentials that may only consume `destination`, with at most `max_consumers`
    /// connections (0: unlimited); None when this sink leaves consumer access to its operator.
    async fn grant_consumer(
        &self,
        destination: &Destination,
        max_consumers: u64,
    ) -> Result<Option<ConsumerCredentials>, SinkError> {
        let _ = (destination, max_consumers);
        Ok(None)
    }
    /// Removes what `grant_consumer` created for `destination`.
    async fn revoke_consumer(&self, destination: &Destination) -> Result<(), SinkError> {
        let _ = destination;
        Ok(())
    }
}
