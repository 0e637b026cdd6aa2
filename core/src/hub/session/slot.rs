//! A session's slot: handing deliveries to it (live queue, or the stored queue when offline),
//! and the hub's map of slots (finding, closing, forgetting, reclaiming them).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;

use super::{ClientIdentity, KickReason, Live, Slot, SlotState, TAKEOVER_WAIT};
use crate::data::message::QoS;
use crate::hub::Hub;
use crate::hub::queue::TrySendError;
use crate::hub::router::Delivery;
use crate::store::records::{self, RegistryEntry, SessionRecord};
use crate::store::{self, StoreError};

impl Slot {
    pub(super) fn new(key: Arc<str>, tenant: String) -> Arc<Slot> {
        Arc::new(Slot {
            key,
            tenant,
            online: AtomicBool::new(false),
            persistent: AtomicBool::new(false),
            transport: AtomicU8::new(0),
            carried: AtomicBool::new(false),
            live_tx: std::sync::RwLock::new(None),
            state: Arc::new(Mutex::new(SlotState {
                live: None,
                removed: false,
                expiry_secs: 0,
                disconnected_at_ms: None,
                subscriptions: HashMap::new(),
                queued: 0,
                generation: 0,
                stored: false,
                unacknowledged: HashMap::new(),
            })),
        })
    }

    pub(crate) fn restored(record: &SessionRecord, queued: usize, now_ms: u64) -> Arc<Slot> {
        let slot = Slot::new(Arc::from(record.key.as_str()), record.tenant.clone());
        let mut st = slot.state.try_lock().expect("fresh slot is unlocked");
        slot.set_expiry(&mut st, record.expiry_secs);
        // A session that was connected when the process stopped counts as disconnected now.
        st.disconnected_at_ms = Some(record.disconnected_at_ms.unwrap_or(now_ms));
        st.subscriptions = record
            .subscriptions
            .iter()
            .map(|s| (s.filter.clone(), s.clone()))
            .collect();
        st.queued = queued;
        st.stored = true;
        drop(st);
        slot
    }

    /// Waits until no one holds the slot's lock (a connect in progress is done).
    pub(crate) async fn settled(&self) {
        drop(self.state.lock().await);
    }

    /// Sets the session's expiry (caller holds the state lock).
    pub(super) fn set_expiry(&self, st: &mut SlotState, secs: u32) {
        st.expiry_secs = secs;
        self.persistent.store(secs > 0, Ordering::Relaxed);
    }

    pub(crate) fn is_persistent(&self) -> bool {
        self.persistent.load(Ordering::Relaxed)
    }

    pub(crate) fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// The transport of the connection, when online by a connection of its own.
    pub(crate) fn online_by(&self) -> Option<usize> {
        (self.is_online() && !self.is_carried())
            .then(|| usize::from(self.transport.load(Ordering::Relaxed)))
    }

    /// Whether the session is a sub-device's, online through its gateway's connection.
    pub(crate) fn is_carried(&self) -> bool {
        self.is_online() && self.carried.load(Ordering::Relaxed)
    }

    /// The filters the session subscribes to.
    pub(crate) async fn filters(&self) -> Vec<String> {
        self.state
            .lock()
            .await
            .subscriptions
            .keys()
            .cloned()
            .collect()
    }

    /// Sets or clears the live connection (caller holds the state lock).
    pub(super) fn set_live(&self, st: &mut SlotState, live: Option<Live>) {
        *self.live_tx.write().expect("slot lock") = live.as_ref().map(|l| l.tx.clone());
        st.live = live;
    }

    pub(super) fn record(&self, st: &SlotState) -> SessionRecord {
        SessionRecord {
            key: self.key.to_string(),
            tenant: self.tenant.clone(),
            expiry_secs: st.expiry_secs,
            disconnected_at_ms: st.disconnected_at_ms,
            subscriptions: st.subscriptions.values().cloned().collect(),
        }
    }

    /// Hands a delivery to the live connection if its queue has room (most deliveries); gives
    /// it back otherwise, for [`Slot::deliver`].
    pub(crate) fn try_deliver(&self, hub: &Hub, delivery: Delivery) -> Result<(), Delivery> {
        let qos = delivery.qos;
        match self.live_tx.read().expect("slot lock").as_ref() {
            Some(tx) => match tx.try_send(delivery) {
                Ok(()) => {
                    hub.inner.stats.delivered(qos);
                    Ok(())
                }
                Err(e) => Err(e.into_inner()),
            },
            None => Err(delivery),
        }
    }

    /// Hands a delivery to the session: into the live queue when connected (waiting for room
    /// for a bounded time), into the stored queue (QoS 1/2) when persistent and offline. See
    /// [`Slot::try_deliver`] for the common case.
    pub(crate) async fn deliver(&self, hub: &Hub, delivery: Delivery) -> Result<(), StoreError> {
        let stats = &hub.inner.stats;
        let qos = delivery.qos;
        let mut st = self.state.clone().lock_owned().await;
        if st.removed && hub.peers().is_some() {
            // Handed over to another node while this delivery waited: it goes there.
            drop(st);
            return hub.route_remote(&delivery.message).await.map(|_| ());
        }
        let Some(live) = &st.live else {
            return self.deliver_offline(hub, &mut st, delivery).await;
        };
        let tx = live.tx.clone();
        let delivery = match tx.try_send(delivery) {
            Ok(()) => {
                stats.delivered(qos);
                return Ok(());
            }
            Err(TrySendError::Closed(d)) => {
                return self.deliver_offline(hub, &mut st, d).await;
            }
            Err(TrySendError::Full(d)) => d,
        };
        drop(st);
        // Back-pressure on the publisher for a bounded time, then a counted drop.
        let qos0 = delivery.qos == QoS::AtMostOnce;
        let cfg = &hub.inner.config;
        let wait = Duration::from_millis(if qos0 {
            cfg.slow_subscriber_wait_qos0_ms
        } else {
            cfg.slow_subscriber_wait_ms
        });
        if qos0 && wait.is_zero() {
            stats
                .dropped_qos0_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match tokio::time::timeout(wait, tx.send(delivery)).await {
            Ok(Ok(())) => {
                stats.delivered(qos);
                Ok(())
            }
            // The connection closed meanwhile: the session is offline now.
            Ok(Err(d)) => {
                let mut st = self.state.clone().lock_owned().await;
                self.deliver_offline(hub, &mut st, d).await
            }
            Err(_) if qos0 => {
                stats
                    .dropped_qos0_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(session = %self.key, "slow subscriber: QoS 0 delivery dropped");
                Ok(())
            }
            Err(_) => {
                stats
                    .dropped_qos12_slow_subscriber
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    session = %self.key,
                    wait_ms = wait.as_millis() as u64,
                    "slow subscriber: queue stayed full, QoS 1/2 delivery dropped"
                );
                Ok(())
            }
        }
    }

    pub(super) async fn deliver_offline(
        &self,
        hub: &Hub,
        st: &mut SlotState,
        delivery: Delivery,
    ) -> Result<(), StoreError> {
        let stats = &hub.inner.stats;
        if st.expiry_secs == 0 || st.removed {
            return Ok(());
        }
        if delivery.stored_seq.is_some() {
            // Stored before it was handed over: it waits there for the next connection.
            stats.delivered(delivery.qos);
            return Ok(());
        }
        if delivery.qos == QoS::AtMostOnce {
            stats.dropped_qos0_offline.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if st.queued >= hub.inner.config.max_offline_messages {
            stats
                .dropped_offline_queue_full
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(session = %self.key, queued = st.queued, "offline queue full: message dropped");
            return Ok(());
        }
        let mut msg = (*delivery.message).clone();
        msg.qos = delivery.qos;
        msg.retain = delivery.retain;
        store::write(&**hub.store(), |t| {
            records::push_queued(t, &self.key, 0, &msg)
        })
        .await?;
        st.queued += 1;
        stats.delivered(msg.qos);
        Ok(())
    }

    /// Drops the session if it is offline and its expiry passed.
    pub(crate) async fn reclaim_if_expired(
        self: &Arc<Self>,
        hub: &Hub,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut st = self.state.clone().lock_owned().await;
        let expired = st.live.is_none()
            && !st.removed
            && records::expired(st.disconnected_at_ms, st.expiry_secs, now);
        if !expired {
            return Ok(false);
        }
        hub.remove_slot(self, &mut st).await?;
        hub.inner
            .stats
            .sessions_expired
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session = %self.key, "expired session reclaimed");
        Ok(true)
    }
}

impl Hub {
    /// QoS 1/2 deliveries to persistent sessions: each stored first (in as few commits as the
    /// writer can share between them), then handed over with its place in the stored queue, so
    /// that the client's acknowledgement removes the stored copy and a crash before it leaves
    /// the copy for the next connection. Returns how many were handed over; an Err means the
    /// store failed and the message must not be acknowledged to its publisher.
    pub(crate) async fn deliver_stored(
        &self,
        deliveries: Vec<(Arc<Slot>, Delivery)>,
    ) -> Result<usize, StoreError> {
        let stats = &self.inner.stats;
        let max = self.inner.config.max_offline_messages;
        let mut admitted = Vec::with_capacity(deliveries.len());
        for (slot, delivery) in deliveries {
            let mut st = slot.state.lock().await;
            if st.removed || st.expiry_secs == 0 {
                // Taken over, forgotten or made clean meanwhile: the usual way.
                drop(st);
                Box::pin(slot.deliver(self, delivery)).await?;
                continue;
            }
            if st.queued >= max {
                stats
                    .dropped_offline_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(session = %slot.key, queued = st.queued, "stored queue full: message dropped");
                continue;
            }
            st.queued += 1;
            drop(st);
            admitted.push((slot, delivery));
        }
        let writes = admitted.iter().map(|(slot, delivery)| {
            let mut msg = (*delivery.message).clone();
            msg.qos = delivery.qos;
            msg.retain = delivery.retain;
            self.inner.stored_queues.push(&slot.key, msg)
        });
        let places = futures_util::future::join_all(writes).await;
        let mut handed = 0;
        let mut failed = None;
        for ((slot, mut delivery), place) in admitted.into_iter().zip(places) {
            match place {
                Ok(id) => {
                    delivery.stored_seq = Some(Box::new(id));
                    if let Err(delivery) = slot.try_deliver(self, delivery) {
                        Box::pin(slot.deliver(self, delivery)).await?;
                    }
                    handed += 1;
                }
                Err(e) => {
                    let mut st = slot.state.lock().await;
                    st.queued = st.queued.saturating_sub(1);
                    failed = Some(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(handed),
        }
    }

    pub(super) fn slot_for(&self, identity: &ClientIdentity) -> Arc<Slot> {
        if let Some(slot) = self.slot(&identity.key) {
            return slot;
        }
        let mut sessions = self.inner.sessions.write().expect("sessions lock");
        sessions
            .entry(identity.key.clone())
            .or_insert_with(|| Slot::new(identity.key.clone(), identity.tenant.clone()))
            .clone()
    }

    /// Forgets a session entirely: routes, stored record and queue, map entry. Caller holds the
    /// slot's lock.
    pub(super) async fn remove_slot(
        &self,
        slot: &Arc<Slot>,
        st: &mut SlotState,
    ) -> Result<(), StoreError> {
        self.wipe(slot, st).await?;
        self.forget_slot(slot, st);
        Ok(())
    }

    pub(crate) fn slot(&self, key: &str) -> Option<Arc<Slot>> {
        self.inner
            .sessions
            .read()
            .expect("sessions lock")
            .get(key)
            .cloned()
    }

    /// Closes the connection of a session key on this node, if any.
    pub(crate) async fn kick_local(&self, key: &str, reason: KickReason) {
        if let Some(slot) = self.slot(key) {
            let mut st = slot.state.clone().lock_owned().await;
            if self.end_sub_login(&slot, &mut st) {
                self.forget_slot(&slot, &mut st);
                drop(st);
                if let Err(e) = self.unclaim(key, true).await {
                    tracing::warn!(session = %key, error = %e, "registry not updated");
                }
                return;
            }
            if let Some(kick) = st.live.as_mut().and_then(|l| l.kick.take()) {
                let _ = kick.send(reason);
            }
        }
    }

    /// Closes the slot's live connection, if any, and waits until it has ended (its session and
    /// unacknowledged messages dealt with).
    pub(crate) async fn close_live(&self, slot: &Arc<Slot>, reason: KickReason) {
        let done = {
            let mut st = slot.state.clone().lock_owned().await;
            if self.end_sub_login(slot, &mut st) {
                return;
            }
            let Some(live) = st.live.as_mut() else {
                return;
            };
            if let Some(kick) = live.kick.take() {
                let _ = kick.send(reason);
            }
            live.done.clone()
        };
        if tokio::time::timeout(TAKEOVER_WAIT, done.cancelled())
            .await
            .is_err()
        {
            tracing::warn!(session = %slot.key, "connection did not close in time");
        }
    }

    /// Closes a session's connection on this node (its state persisted as on any disconnect)
    /// and forgets the session here: another node takes it over from the store.
    pub(crate) async fn release_local(&self, key: &str) {
        let Some(slot) = self.slot(key) else {
            return;
        };
        self.close_live(&slot, KickReason::SessionTakenOver).await;
        let mut st = slot.state.clone().lock_owned().await;
        if st.live.is_some() {
            // The connection did not close in time: it is cut off from the session (its task
            // ends on its own), as a local takeover does.
            slot.set_live(&mut st, None);
            slot.online.store(false, Ordering::Relaxed);
        }
        if !st.removed {
            self.forget_slot(&slot, &mut st);
        }
    }

    /// A connect that claimed the session failed: the claim goes, and the empty slot it left.
    pub(crate) async fn abandon_claim(&self, key: &str, previous: Option<RegistryEntry>) {
        if let Some(slot) = self.slot(key) {
            let mut st = slot.state.clone().lock_owned().await;
            let empty = st.live.is_none() && !st.stored && st.subscriptions.is_empty();
            if empty && !st.removed {
                self.forget_slot(&slot, &mut st);
            }
        }
        if let Err(e) = self.restore_claim(key, previous).await {
            tracing::warn!(session = %key, error = %e, "claim not given back");
        }
    }

    /// Messages in a session's stored queue (up to the offline limit).
    pub(crate) async fn count_stored(&self, key: &str) -> Result<usize, StoreError> {
        let key = key.to_owned();
        let cap = self.inner.config.max_offline_messages;
        store::read(&**self.store(), |t| {
            let key = key.clone();
            Box::pin(async move { records::count_queued(t, &key, cap).await })
        })
        .await
    }

    /// Forgets a session on this node (routes, map entry) and leaves its stored state to the
    /// node that takes it over. Caller holds the slot's lock.
    pub(super) fn forget_slot(&self, slot: &Arc<Slot>, st: &mut SlotState) {
        self.drop_routes(slot, st);
        // Deliveries to a forgotten slot take the state lock (and go to another node in a
        // cluster).
        *slot.live_tx.write().expect("slot lock") = None;
        st.removed = true;
        let mut sessions = self.inner.sessions.write().expect("sessions lock");
        if sessions
            .get(&slot.key)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
        {
            sessions.remove(&slot.key);
        }
    }

    /// Drops a session (connected or not) and its stored state.
    pub(crate) async fn drop_session(&self, key: &str) -> Result<(), StoreError> {
        if let Some(slot) = self.slot(key) {
            let mut st = slot.state.clone().lock_owned().await;
            self.remove_slot(&slot, &mut st).await?;
        }
        Ok(())
    }
}
