//! Ids of messages and events: increasing, and unique across restarts of a node.

use std::sync::atomic::{AtomicU64, Ordering};

/// A source of ids, shared by the parts of a node that number what they store or send.
#[derive(Debug)]
pub struct Sequence(AtomicU64);

impl Sequence {
    /// Starts above every id an earlier run could have given: a million ids per millisecond of
    /// the wall clock at start.
    pub fn starting_at(now_ms: u64) -> Sequence {
        Sequence(AtomicU64::new(now_ms.saturating_mul(1_000_000)))
    }

    /// The next id.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}
