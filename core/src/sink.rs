//! The `Sink` trait: a destination for messages leaving the hub (AMQP consumer groups, SQS).

use async_trait::async_trait;

use crate::message::Message;

/// Why a sink could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination is unreachable or refused the whole batch; retry later.
    #[error("destination unavailable: {0}")]
    Unavailable(String),
    /// Some messages of the batch failed (indices into the batch); the rest were confirmed.
    #[error("{} messages of the batch failed", failed.len())]
    Partial {
        /// Indices of the failed messages.
        failed: Vec<usize>,
    },
}

/// A destination with at-least-once delivery: `send` returns Ok only once the destination has
/// confirmed every message of the batch.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Name for logs and metrics.
    fn name(&self) -> &str;
    /// Delivers a batch; Ok means every message was confirmed by the destination.
    async fn send(&self, batch: &[Message]) -> Result<(), SinkError>;
    /// Checks the destination is usable (run at startup and by readiness probes).
    async fn healthcheck(&self) -> Result<(), SinkError>;
}
