//! The egress engine: everything leaving the hub for somewhere else goes through here, durably.
//!
//! - [`forward`]: events and rule outputs for sinks' queues (consumer groups, SQS queues),
//!   batched per destination by one worker per sink; an event a sink does not confirm waits in
//!   the store's outbox, in order, and is sent again with back-off until its destination's
//!   retention expires it; a rule output it does not confirm goes to the retries.
//! - [`retry`]: deliveries on a fixed retry schedule (rule outputs: 1, 3 and 10 s, then the rule's
//!   error destination), each waiting attempt a store record, so a hard stop loses none.
//!
//! Both run on the store, the clock, the id sequence and the node's stop signal ([`EgressEnv`]),
//! not on the Hub: the hub's services hand them work and tell them how to attempt it.

pub mod forward;
pub(crate) mod retry;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub(crate) use forward::Kept;
pub use forward::{Confirmation, ForwardError, SinkStats, SinkStatsSnapshot};

use crate::clock::Clock;
use crate::data::sequence::Sequence;
use crate::store::Store;

/// What the egress engine uses of the node: the store (outbox, retries), the clock, the ids of
/// stored rows, and the node's stop signal.
#[derive(Clone)]
pub(crate) struct EgressEnv {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Clock,
    pub(crate) seq: Arc<Sequence>,
    pub(crate) shutdown: CancellationToken,
}
