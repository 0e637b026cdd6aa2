//! Deliveries on a retry schedule. A delivery whose first attempt failed is written to the store
//! (`j\0{due}{id}`, see [`records::RetryRecord`]) before anything else happens to it, and one
//! worker per node attempts whatever is due, earliest first: a success clears it, a failure moves
//! it to its next due time, and after the last attempt its owner is told it failed for good.
//!
//! What a delivery is stays opaque here (bytes its owner encodes): the owner's [`Attempts`] says
//! how to attempt it and what to do when it is exhausted. Before attempting, the worker moves
//! each due row a lease into the future in one transaction, so two nodes sharing a store never
//! attempt the same row at once, and a row whose node dies mid-attempt comes back after the
//! lease, on whichever node looks first.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::EgressEnv;
use crate::store::records::{self, RetryRecord, RetryRow};
use crate::store::{self, StoreError, transact};

/// Rows attempted together.
const BATCH: usize = 64;

/// How long a claimed row stays out of every worker's sight while it is attempted.
const LEASE_MS: u64 = 30_000;

/// How often the worker looks at the store even when nothing is due here (other nodes' rows).
const POLL: Duration = Duration::from_secs(5);

/// How the owner of the deliveries attempts them.
#[async_trait]
pub(crate) trait Attempts: Send + Sync + 'static {
    /// Attempts a delivery once more; Ok ends its retries.
    async fn attempt(&self, body: &[u8]) -> Result<(), String>;
    /// The last attempt failed with `error`: the delivery is given up.
    async fn exhausted(&self, body: &[u8], error: &str);
}

/// A durable retry schedule.
pub(crate) struct Retries {
    env: EgressEnv,
    /// Seconds before each retry: `delays[0]` before the first.
    delays: &'static [u64],
    /// Wakes the worker when a retry is written.
    scheduled: Notify,
}

impl Retries {
    pub(crate) fn new(env: EgressEnv, delays: &'static [u64]) -> Arc<Retries> {
        Arc::new(Retries {
            env,
            delays,
            scheduled: Notify::new(),
        })
    }

    /// Keeps a delivery whose first attempt failed, for its first retry. Ok means it is stored.
    pub(crate) async fn schedule(&self, body: Vec<u8>) -> Result<(), StoreError> {
        let Some(&delay) = self.delays.first() else {
            return Ok(());
        };
        let due = self.env.clock.now_ms() + delay * 1000;
        let id = self.env.seq.next();
        let record = RetryRecord { attempt: 1, body };
        store::write(&*self.env.store, |t| {
            records::put_retry(t, due, id, &record);
        })
        .await?;
        self.scheduled.notify_one();
        Ok(())
    }

    /// Starts the worker, which runs until the node stops.
    pub(crate) fn start(self: &Arc<Self>, owner: Arc<dyn Attempts>) {
        let retries = self.clone();
        tokio::spawn(async move { retries.run(&*owner).await });
    }

    async fn run(&self, owner: &dyn Attempts) {
        let shutdown = self.env.shutdown.clone();
        loop {
            let wait = match self.pass(owner).await {
                Ok(Some(wait)) => wait,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the retries");
                    POLL
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.scheduled.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Attempts what is due now. Returns how long to wait for the next due row when nothing was
    /// due, or None after a batch (more may be due already).
    async fn pass(&self, owner: &dyn Attempts) -> Result<Option<Duration>, StoreError> {
        let now = self.env.clock.now_ms();
        let (claimed, next_due) = self.claim(now).await?;
        if claimed.is_empty() {
            let wait = next_due.map_or(POLL, |due| {
                Duration::from_millis(due.saturating_sub(self.env.clock.now_ms())).min(POLL)
            });
            return Ok(Some(wait));
        }
        let outcomes = futures_util::future::join_all(
            claimed
                .iter()
                .map(|row| async move { owner.attempt(&row.record.body).await }),
        )
        .await;
        let now = self.env.clock.now_ms();
        let mut moves = Vec::new();
        for (row, outcome) in claimed.iter().zip(outcomes) {
            let Err(error) = outcome else {
                moves.push((row, None));
                continue;
            };
            match self.delays.get(row.record.attempt as usize) {
                Some(delay) => {
                    let next = RetryRecord {
                        attempt: row.record.attempt + 1,
                        body: row.record.body.clone(),
                    };
                    moves.push((row, Some((now + delay * 1000, next))));
                }
                None => {
                    owner.exhausted(&row.record.body, &error).await;
                    moves.push((row, None));
                }
            }
        }
        store::write(&*self.env.store, |t| {
            for (row, next) in &moves {
                records::delete_retry(t, &row.key);
                if let Some((due, record)) = next {
                    records::put_retry(t, *due, row.id, record);
                }
            }
        })
        .await?;
        Ok(None)
    }

    /// Takes the rows due by `now` out of every worker's sight for a lease, in one transaction;
    /// returns them as they are stored now, or, when none is due, when the earliest is.
    async fn claim(&self, now: u64) -> Result<(Vec<RetryRow>, Option<u64>), StoreError> {
        transact(&*self.env.store, |t| {
            Box::pin(async move {
                let due = records::due_retries(t, now, BATCH).await?;
                if due.is_empty() {
                    return Ok((Vec::new(), records::next_retry_due(t).await?));
                }
                let leased = now + LEASE_MS;
                let claimed = due
                    .into_iter()
                    .map(|row| {
                        records::delete_retry(t, &row.key);
                        RetryRow {
                            key: records::put_retry(t, leased, row.id, &row.record),
                            due_ms: leased,
                            ..row
                        }
                    })
                    .collect();
                Ok((claimed, None))
            })
        })
        .await
    }
}
