//! A session's queue of live deliveries: bounded, many senders, one receiver (the connection),
//! and nothing allocated until a delivery arrives. tokio's mpsc allocates a block of 32 slots per
//! channel up front (~1.3 KB with a 40-byte delivery), which every idle connection paid.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use super::router::Delivery;

/// A queue that was emptied keeps at most this many slots (bursts grow it up to its capacity).
const KEEP_SLOTS: usize = 64;

struct State {
    items: VecDeque<Delivery>,
    closed: bool,
    receiver: Option<Waker>,
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
    senders: AtomicUsize,
    /// Senders waiting for room, and how they are woken.
    waiting: AtomicUsize,
    room: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("delivery queue lock")
    }

    /// Wakes senders waiting for room (after the receiver took deliveries or closed).
    fn make_room(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.room.notify_waiters();
        }
    }
}

/// A queue of at most `capacity` deliveries.
pub fn channel(capacity: usize) -> (DeliverySender, DeliveryReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            closed: false,
            receiver: None,
        }),
        capacity: capacity.max(1),
        senders: AtomicUsize::new(1),
        waiting: AtomicUsize::new(0),
        room: Notify::new(),
    });
    (DeliverySender(shared.clone()), DeliveryReceiver(shared))
}

/// Why [`DeliverySender::try_send`] gave a delivery back.
#[derive(Debug)]
pub enum TrySendError {
    /// The queue holds its capacity.
    Full(Delivery),
    /// The receiver closed the queue or is gone.
    Closed(Delivery),
}

impl TrySendError {
    /// The delivery that was not queued.
    pub fn into_inner(self) -> Delivery {
        match self {
            TrySendError::Full(d) | TrySendError::Closed(d) => d,
        }
    }
}

/// A sender waiting for room, for as long as it lives.
struct Waiting<'a>(&'a Shared);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The sending side; clones share the queue.
pub struct DeliverySender(Arc<Shared>);

impl Clone for DeliverySender {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        DeliverySender(self.0.clone())
    }
}

impl Drop for DeliverySender {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender: a receiver waiting on an empty queue ends.
            let waker = self.0.lock().receiver.take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl DeliverySender {
    /// Queues a delivery if there is room.
    pub fn try_send(&self, delivery: Delivery) -> Result<(), TrySendError> {
        let waker = {
            let mut st = self.0.lock();
            if st.closed {
                return Err(TrySendError::Closed(delivery));
            }
            if st.items.len() >= self.0.capacity {
                return Err(TrySendError::Full(delivery));
            }
            st.items.push_back(delivery);
            st.receiver.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Queues a delivery, waiting for room; gives it back if the queue closes meanwhile.
    pub async fn send(&self, mut delivery: Delivery) -> Result<(), Delivery> {
        // Counted while this waits, also when the caller gives up (a timeout drops this).
        self.0.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.0);
        loop {
            let room = self.0.room.notified();
            let mut room = std::pin::pin!(room);
            // Registered before trying, so a receiver taking deliveries in between wakes it.
            room.as_mut().enable();
            match self.try_send(delivery) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(d)) => return Err(d),
                Err(TrySendError::Full(d)) => delivery = d,
            }
            room.await;
        }
    }
}

/// The receiving side (the connection).
pub struct DeliveryReceiver(Arc<Shared>);

impl Drop for DeliveryReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

impl DeliveryReceiver {
    /// Waits for deliveries and moves up to `max` of them to `out`; false when the queue is
    /// closed or every sender is gone, and empty.
    pub async fn recv_many(&mut self, out: &mut VecDeque<Delivery>, max: usize) -> bool {
        poll_fn(|cx| self.poll_recv_many(cx, out, max)).await
    }

    fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut VecDeque<Delivery>,
        max: usize,
    ) -> Poll<bool> {
        let mut st = self.0.lock();
        if st.items.is_empty() {
            if st.closed || self.0.senders.load(Ordering::Acquire) == 0 {
                return Poll::Ready(false);
            }
            if !st
                .receiver
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                st.receiver = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let n = st.items.len().min(max);
        out.extend(st.items.drain(..n));
        if st.items.is_empty() && st.items.capacity() > KEEP_SLOTS {
            st.items.shrink_to(KEEP_SLOTS);
        }
        drop(st);
        self.0.make_room();
        Poll::Ready(true)
    }

    /// Waits for one delivery; None when the queue is closed or every sender is gone, and
    /// empty.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let mut one = VecDeque::new();
        self.recv_many(&mut one, 1).await;
        one.pop_front()
    }

    /// Takes a delivery if one is queued.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        let d = self.0.lock().items.pop_front();
        if d.is_some() {
            self.0.make_room();
        }
        d
    }

    /// Refuses further deliveries (senders get them back); those queued can still be taken.
    pub fn close(&mut self) {
        self.0.lock().closed = true;
        self.0.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::data::message::{Message, QoS};

    fn delivery(n: u8) -> Delivery {
        Delivery {
            message: Arc::new(Message::from_hub(
                "t",
                format!("d/{n}"),
                bytes::Bytes::new(),
                QoS::AtMostOnce,
                0,
            )),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids: Box::new([]),
            stored_seq: None,
        }
    }

    fn topics(items: &VecDeque<Delivery>) -> Vec<&str> {
        items.iter().map(|d| d.message.topic.as_str()).collect()
    }

    #[tokio::test]
    async fn bounded_in_order_and_closed_on_request() {
        let (tx, mut rx) = channel(2);
        tx.try_send(delivery(1)).unwrap();
        tx.try_send(delivery(2)).unwrap();
        assert!(matches!(
            tx.try_send(delivery(3)),
            Err(TrySendError::Full(_))
        ));
        let mut out = VecDeque::new();
        assert!(rx.recv_many(&mut out, 10).await);
        assert_eq!(topics(&out), ["d/1", "d/2"]);
        tx.try_send(delivery(4)).unwrap();
        rx.close();
        assert!(matches!(
            tx.try_send(delivery(5)),
            Err(TrySendError::Closed(_))
        ));
        assert_eq!(
            rx.try_recv().unwrap().message.topic,
            "d/4",
            "queued before the close"
        );
        assert!(rx.recv().await.is_none(), "closed and empty");
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_in_when_the_receiver_takes() {
        let (tx, mut rx) = channel(1);
        tx.try_send(delivery(1)).unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(delivery(2)).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room yet");
        assert_eq!(rx.recv().await.unwrap().message.topic, "d/1");
        assert!(waiting.await.unwrap(), "queued once there was room");
        assert_eq!(rx.recv().await.unwrap().message.topic, "d/2");
    }

    #[tokio::test]
    async fn a_sender_that_gives_up_waiting_is_no_longer_counted() {
        let (tx, mut rx) = channel(1);
        tx.try_send(delivery(1)).unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(20), tx.send(delivery(2))).await;
        assert!(gave_up.is_err(), "no room");
        assert_eq!(tx.0.waiting.load(Ordering::Acquire), 0);
        assert_eq!(rx.recv().await.unwrap().message.topic, "d/1");
        assert!(
            rx.try_recv().is_none(),
            "the abandoned delivery was not queued"
        );
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_its_delivery_back_when_the_queue_closes() {
        let (tx, rx) = channel(1);
        tx.try_send(delivery(1)).unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move {
                tx.send(delivery(2))
                    .await
                    .err()
                    .map(|d| d.message.topic.clone())
            }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(waiting.await.unwrap().as_deref(), Some("d/2"));
    }

    #[tokio::test]
    async fn the_receiver_wakes_for_a_delivery_and_ends_with_the_last_sender() {
        let (tx, mut rx) = channel(8);
        let receiver = tokio::spawn(async move {
            let first = rx.recv().await.map(|d| d.message.topic.clone());
            (first, rx.recv().await.is_none())
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        tx.try_send(delivery(7)).unwrap();
        drop(tx);
        assert_eq!(receiver.await.unwrap(), (Some("d/7".to_owned()), true));
    }
}
