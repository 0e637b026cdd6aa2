//! Group commit for the stored queues of persistent sessions. A QoS 1/2 message for a
//! persistent session is in the store before its publisher is acknowledged, online subscriber
//! or not; the rows that many publishers write at once, and the removals that acknowledgements
//! make, share one durable transaction. One writer task takes whatever is waiting when the
//! previous commit ends (up to [`MAX_BATCH`]): an idle hub commits each message at once, a busy
//! one shares each commit (one fsync on the embedded store, one commit on FoundationDB) between
//! the messages that arrived during the previous one.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::data::message::Message;
use crate::store::records::{self, QueueId};
use crate::store::{self, Store, StoreError};

/// Most operations one commit carries.
const MAX_BATCH: usize = 512;
/// Operations waiting for the writer before senders wait for room.
const CHANNEL: usize = 8192;

enum Op {
    /// Store a delivery; answer with its place once durable.
    Push {
        session: Arc<str>,
        message: Box<Message>,
        done: oneshot::Sender<Result<QueueId, StoreError>>,
    },
    /// Remove an acknowledged delivery (nobody waits: a removal that a crash loses is a
    /// duplicate delivery, never a lost one).
    Remove { session: Arc<str>, id: QueueId },
}

/// The handle the engine writes stored queues through.
pub(crate) struct StoredQueues {
    ops: mpsc::Sender<Op>,
}

impl StoredQueues {
    /// Starts the writer on `store`; it ends when the last handle is dropped.
    pub(crate) fn start(store: Arc<dyn Store>) -> StoredQueues {
        let (ops, rx) = mpsc::channel(CHANNEL);
        tokio::spawn(write_forever(store, rx));
        StoredQueues { ops }
    }

    /// Stores `message` at the end of `session`'s queue; returns its place once the commit that
    /// carried it is durable.
    pub(crate) async fn push(
        &self,
        session: &Arc<str>,
        message: Message,
    ) -> Result<QueueId, StoreError> {
        let (done, answer) = oneshot::channel();
        let op = Op::Push {
            session: session.clone(),
            message: Box::new(message),
            done,
        };
        if self.ops.send(op).await.is_err() {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Removes the delivery at `id` from `session`'s queue, in the next commit.
    pub(crate) async fn remove(&self, session: &Arc<str>, id: QueueId) {
        let op = Op::Remove {
            session: session.clone(),
            id,
        };
        // A stopped writer: the row stays, and is delivered again (at least once).
        let _ = self.ops.send(op).await;
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the stored-queue writer has stopped".into())
}

async fn write_forever(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // One warning per outage (a full disk fails every commit until space returns).
    let mut failing = false;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match commit(&*store, std::mem::take(&mut batch)).await {
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "stored-queue commits fail: their publishers are refused");
            }
            Ok(()) if failing => {
                failing = false;
                tracing::info!("stored-queue commits succeed again");
            }
            _ => {}
        }
    }
}

/// Writes one batch in one transaction and answers its pushes.
async fn commit(store: &dyn Store, batch: Vec<Op>) -> Result<(), StoreError> {
    // Each push's place within the commit, per session (the stamp comes from the commit).
    let mut next: HashMap<&str, u32> = HashMap::new();
    let orders: Vec<u32> = batch
        .iter()
        .map(|op| match op {
            Op::Push { session, .. } => {
                let order = next.entry(session).or_default();
                *order += 1;
                *order - 1
            }
            Op::Remove { .. } => 0,
        })
        .collect();
    let written = store::write_stamped(store, |t| {
        for (op, order) in batch.iter().zip(&orders) {
            match op {
                Op::Push {
                    session, message, ..
                } => records::push_queued(t, session, *order, message),
                Op::Remove { session, id } => records::remove_queued(t, session, id),
            }
        }
    })
    .await;
    for (op, order) in batch.into_iter().zip(orders) {
        let Op::Push { done, .. } = op else {
            continue;
        };
        let answer = match &written {
            Ok(Some(stamp)) => Ok(records::queue_id(stamp, order)),
            Ok(None) => Err(StoreError::Backend(
                "the store gave the queue's commit no stamp".into(),
            )),
            Err(e) => Err(e.clone()),
        };
        let _ = done.send(answer);
    }
    written.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::message::{Origin, Properties, QoS};
    use crate::store::memory::memory_store;

    fn message(topic: &str) -> Message {
        Message {
            tenant: "t".into(),
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
            expires_at_ms: None,
            origin: Origin::Hub,
            received_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn pushes_name_their_rows_and_removals_take_them_away() {
        let store: Arc<dyn Store> = Arc::new(memory_store());
        let queues = Arc::new(StoredQueues::start(store.clone()));
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        // Concurrent pushes, likely to share commits.
        let pushes: Vec<_> = (0..50)
            .map(|i| {
                let (queues, session) = (
                    queues.clone(),
                    if i % 2 == 0 { a.clone() } else { b.clone() },
                );
                tokio::spawn(async move { queues.push(&session, message(&format!("m/{i}"))).await })
            })
            .collect();
        let mut ids = Vec::new();
        for p in pushes {
            ids.push(p.await.unwrap().unwrap());
        }
        let mut t = store.begin().await.unwrap();
        let stored_a = records::read_queue(&mut *t, "a", 0).await.unwrap();
        let stored_b = records::read_queue(&mut *t, "b", 0).await.unwrap();
        drop(t);
        assert_eq!(stored_a.len() + stored_b.len(), 50);
        for (id, _) in stored_a.iter().chain(&stored_b) {
            assert!(ids.contains(id), "every row is named by a push's answer");
        }
        for (id, _) in &stored_a {
            queues.remove(&a, *id).await;
        }
        // A push after the removals is committed after them.
        queues.push(&b, message("last")).await.unwrap();
        let mut t = store.begin().await.unwrap();
        assert!(
            records::read_queue(&mut *t, "a", 0)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            records::read_queue(&mut *t, "b", 0).await.unwrap().len(),
            26
        );
    }
}
