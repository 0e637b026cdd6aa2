//! The session handle a transport holds: publish, subscribe, unsubscribe, acknowledge, close.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{
    ClientIdentity, PublishRefusal, PublishRequest, Session, SessionExpiryRefused, Slot, SlotState,
    SubscribeRefusal, SubscribeRequest, Unacknowledged, Will,
};
use crate::admission::{self, Stage};
use crate::data::event::Event;
use crate::data::message::{Message, Origin, QoS};
use crate::egress::Confirmation;
use crate::hub::Hub;
use crate::hub::queue::DeliveryReceiver;
use crate::hub::router::Delivery;
use crate::limits::{LimitId, Limited};
use crate::store::records::{self, QueueId, SubscriptionRecord};
use crate::store::{self, StoreError};
use crate::topic::Filter;

impl Hub {
    /// Removes one subscription of a session (caller holds its lock); returns whether it existed.
    fn unsubscribe_slot(&self, slot: &Arc<Slot>, st: &mut SlotState, raw: &str) -> bool {
        let existed = st.subscriptions.remove(raw).is_some();
        if let Ok(f) = Filter::parse(raw) {
            self.inner.router.unsubscribe(&slot.tenant, &slot.key, &f);
        }
        existed
    }
}

impl Session {
    /// The hub this session belongs to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Who this session is.
    pub fn identity(&self) -> &ClientIdentity {
        &self.identity
    }

    /// Checks and accepts a publish. Ok means the message is safely accepted (QoS 1/2 deliveries
    /// to offline persistent sessions are durable): the transport may acknowledge it.
    pub async fn publish(&self, req: PublishRequest) -> Result<usize, PublishRefusal> {
        super::publish::confirmed(self.publish_deferred(req).await?).await
    }

    /// Publishes; a QoS 1 message going to consumer groups comes back with the confirmation to
    /// wait for before acknowledging it ([`Hub::publish_deferred`]).
    pub async fn publish_deferred(
        &self,
        req: PublishRequest,
    ) -> Result<(usize, Option<Confirmation>), PublishRefusal> {
        // A gateway publishing for one of its logged-in sub-devices: the sub-device publishes.
        if let Some(sub) = self.sub_session_for(&req.topic) {
            return self
                .hub
                .publish_charged(&sub.identity, &sub.charges, req)
                .await;
        }
        let charges = self
            .charges
            .get_or_init(|| Box::new(self.hub.charges(&self.identity)));
        self.hub.publish_charged(&self.identity, charges, req).await
    }

    /// Subscribes; returns per filter the granted QoS or the refusal, and the retained messages
    /// to send after the acknowledgement. A gateway's filters in the namespace of a sub-device
    /// logged in through it are the sub-device's subscriptions.
    pub async fn subscribe(
        &self,
        requests: Vec<SubscribeRequest>,
    ) -> (Vec<Result<QoS, SubscribeRefusal>>, Vec<Delivery>) {
        let cfg = self.hub.config();
        if let Err(refusal) = admission::subscribe_count(cfg, requests.len()) {
            self.hub.inner.stats.limited(LimitId::FiltersPerSubscribe);
            return (vec![Err(refusal); requests.len()], Vec::new());
        }
        let subs: Vec<_> = requests
            .iter()
            .map(|r| self.sub_session_for(&r.filter))
            .collect();
        if subs.iter().all(Option::is_none) {
            return self
                .subscribe_as(&self.identity, &self.slot, requests)
                .await;
        }
        let mut results = Vec::with_capacity(requests.len());
        let mut retained = Vec::new();
        for (req, sub) in requests.into_iter().zip(subs) {
            let (identity, slot) = match &sub {
                Some(sub) => (&sub.identity, &sub.slot),
                None => (&self.identity, &self.slot),
            };
            let (mut result, mut messages) = self.subscribe_as(identity, slot, vec![req]).await;
            results.append(&mut result);
            retained.append(&mut messages);
        }
        (results, retained)
    }

    /// Subscribes `identity`'s session (this one, or a sub-device's it carries).
    async fn subscribe_as(
        &self,
        identity: &ClientIdentity,
        slot: &Arc<Slot>,
        requests: Vec<SubscribeRequest>,
    ) -> (Vec<Result<QoS, SubscribeRefusal>>, Vec<Delivery>) {
        let mut results = Vec::with_capacity(requests.len());
        let mut retained = Vec::new();
        let cfg = self.hub.config();
        let max_subscriptions = self
            .hub
            .profile_of(&identity.tenant)
            .entities
            .subscriptions_per_device;
        let mut st = slot.state.clone().lock_owned().await;
        for req in requests {
            let may = |access, filter: &str| self.hub.may(identity, access, filter);
            let filter = match admission::subscription(cfg, &req.filter, may) {
                Ok(filter) => filter,
                Err(refusal) => {
                    let session = &identity.key;
                    self.hub
                        .note_refusal(session, Stage::Subscribe, &refusal.cause(), &req.filter);
                    results.push(Err(refusal));
                    continue;
                }
            };
            let full = max_subscriptions > 0 && st.subscriptions.len() as u64 >= max_subscriptions;
            if full && !st.subscriptions.contains_key(&req.filter) {
                results.push(Err(SubscribeRefusal::Limited(
                    self.hub
                        .counted(Limited::new(LimitId::SubscriptionsPerDevice)),
                )));
                continue;
            }
            let record = SubscriptionRecord {
                filter: req.filter.clone(),
                qos: req.qos,
                no_local: req.no_local,
                retain_as_published: req.retain_as_published,
                subscription_id: req.subscription_id,
            };
            let existed = st
                .subscriptions
                .insert(req.filter.clone(), record.clone())
                .is_some();
            self.hub
                .inner
                .router
                .subscribe(&identity.tenant, &slot.key, &filter, &record);
            let send_retained = filter.share_group.is_none()
                && match req.retain_handling {
                    0 => true,
                    1 => !existed,
                    _ => false,
                };
            if send_retained {
                for msg in self
                    .hub
                    .inner
                    .router
                    .retained_matching(&identity.tenant, &filter.filter)
                {
                    if identity.device.is_none()
                        && self
                            .hub
                            .keep_denied_from_open_clients(&msg.tenant, &msg.topic)
                    {
                        continue;
                    }
                    retained.push(Delivery {
                        qos: msg.qos.min(req.qos),
                        retain: true,
                        message: msg,
                        subscription_ids: req.subscription_id.into_iter().collect(),
                        stored_seq: None,
                    });
                }
            }
            results.push(Ok(req.qos));
        }
        if st.expiry_secs > 0 {
            let record = slot.record(&st);
            let saved =
                store::write(&**self.hub.store(), |t| records::put_session(t, &record)).await;
            if let Err(e) = saved {
                let reason = e.to_string();
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(SubscribeRefusal::Unavailable(reason.clone()));
                }
            }
        }
        (results, retained)
    }

    /// Unsubscribes; returns per filter whether a subscription existed.
    pub async fn unsubscribe(&self, filters: Vec<String>) -> Vec<bool> {
        let mut st = self.slot.state.clone().lock_owned().await;
        let mut out = Vec::with_capacity(filters.len());
        for raw in filters {
            if let Some(sub) = self.sub_session_for(&raw) {
                // Never persistent: nothing to write.
                let slot = &sub.slot;
                let mut sub_st = slot.state.clone().lock_owned().await;
                out.push(self.hub.unsubscribe_slot(slot, &mut sub_st, &raw));
                continue;
            }
            out.push(self.hub.unsubscribe_slot(&self.slot, &mut st, &raw));
        }
        if st.expiry_secs > 0 {
            let record = self.slot.record(&st);
            let saved =
                store::write(&**self.hub.store(), |t| records::put_session(t, &record)).await;
            if let Err(e) = saved {
                tracing::warn!(session = %self.identity.key, error = %e, "could not persist unsubscribe");
            }
        }
        out
    }

    /// The client acknowledged a delivery that came from the stored queue: forget the stored copy.
    /// The removal shares a commit with others (a crash that loses it delivers the message
    /// again: at least once).
    pub async fn acknowledged(&self, stored: QueueId) -> Result<(), StoreError> {
        self.hub
            .inner
            .stored_queues
            .remove(&self.slot.key, stored)
            .await;
        let mut st = self.slot.state.lock().await;
        st.queued = st.queued.saturating_sub(1);
        Ok(())
    }

    /// Counts a delivery discarded because it is larger than the client accepts
    /// (MQTT-3.1.2-25).
    pub fn discarded_too_large(&self) {
        self.hub
            .inner
            .stats
            .dropped_too_large_for_client
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps, for the session's next connection, which stored deliveries this one sent under
    /// which packet id without their acknowledgement completing (MQTT-4.4.0-1). Call before
    /// [`Session::close`].
    pub async fn keep_unacknowledged(
        &self,
        sent: impl IntoIterator<Item = (QueueId, Unacknowledged)>,
    ) {
        self.slot.state.lock().await.unacknowledged.extend(sent);
    }

    /// Ends the connection. `normal` is a client DISCONNECT without will; otherwise the will is
    /// published. `unacked` are deliveries sent but not acknowledged, and `deliveries` the queue
    /// not yet sent: for a persistent session both are stored, in order, for the next connection.
    pub async fn close(
        self,
        normal: bool,
        unacked: Vec<Delivery>,
        mut deliveries: DeliveryReceiver,
    ) {
        if let Err(e) = self.close_inner(normal, unacked, &mut deliveries).await {
            tracing::error!(session = %self.identity.key, error = %e, "closing session failed");
        }
        if self.identity.device.is_some() {
            self.hub
                .gateway_closed(&self.identity.key, self.generation)
                .await;
        }
        self.done.cancel();
    }

    fn will_message(&self, will: &Will) -> Message {
        Message {
            tenant: self.identity.tenant.clone(),
            topic: will.topic.clone(),
            payload: will.payload.clone(),
            qos: will.qos,
            retain: will.retain,
            properties: will.properties.clone(),
            expires_at_ms: None,
            origin: Origin::Client(self.identity.key.clone()),
            received_at_ms: self.hub.now_ms(),
        }
    }

    /// Publishes a will after `delay_secs` unless a connection resumed the session meanwhile
    /// (the slot's generation moved on, or another node holds it). A will still waiting when
    /// the hub stops is dropped: nothing was acknowledged for it.
    fn publish_will_later(&self, will: Message, delay_secs: u32, generation: u64) {
        let (hub, slot) = (self.hub.clone(), self.slot.clone());
        // From the disconnect, not from when the task first runs.
        let due = tokio::time::Instant::now() + Duration::from_secs(u64::from(delay_secs));
        tokio::spawn(async move {
            tokio::select! {
                _ = hub.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(due) => {}
            }
            // A connection that resumed the session moved its generation on.
            let resumed = slot.state.lock().await.generation != generation;
            if resumed || !hub.holds(&slot.key).await {
                return;
            }
            if let Err(e) = hub.accept(will).await {
                tracing::warn!(session = %slot.key, error = %e, "delayed will not published");
            }
        });
    }

    /// Changes the session's expiry, as an MQTT 5 DISCONNECT may (clamped to the configured
    /// maximum). A session that began with no expiry cannot be given one at the end
    /// (MQTT-3.14.2-2): that is refused, and the expiry stays 0.
    pub async fn set_session_expiry(&self, secs: u32) -> Result<(), SessionExpiryRefused> {
        let mut st = self.slot.state.lock().await;
        if st.expiry_secs == 0 && secs > 0 {
            return Err(SessionExpiryRefused);
        }
        self.slot
            .set_expiry(&mut st, secs.min(self.hub.config().max_session_expiry_secs));
        Ok(())
    }

    pub(super) async fn close_inner(
        &self,
        normal: bool,
        unacked: Vec<Delivery>,
        deliveries: &mut DeliveryReceiver,
    ) -> Result<(), StoreError> {
        let hub = &self.hub;
        let mut st = self.slot.state.clone().lock_owned().await;
        // No new live deliveries from here on: publishers that find the queue closed fall back
        // to the stored queue (under this lock, so after what is written below).
        deliveries.close();
        let current = st
            .live
            .as_ref()
            .is_some_and(|l| l.generation == self.generation);
        if current {
            self.slot.set_live(&mut st, None);
            self.slot.online.store(false, Ordering::Relaxed);
        }
        let mut pending = unacked;
        let mut leftovers = Vec::new();
        while let Some(d) = deliveries.try_recv() {
            pending.push(d);
        }
        if st.expiry_secs > 0 && !st.removed {
            let now = self.hub.now_ms();
            let mut rows = Vec::new();
            for d in pending
                .into_iter()
                .filter(|d| d.qos != QoS::AtMostOnce && d.stored_seq.is_none())
            {
                if d.message.expired(now) {
                    continue;
                }
                let mut msg = (*d.message).clone();
                msg.qos = d.qos;
                msg.retain = d.retain;
                rows.push(msg);
            }
            if current {
                st.disconnected_at_ms = Some(now);
            }
            let record = self.slot.record(&st);
            let added = rows.len();
            // In a cluster another node may hold the session by now (this one was too slow to
            // let go): its record is not overwritten, the unacknowledged messages still join
            // the session's queue.
            let mine = hub.holds(&self.slot.key).await;
            store::write(&**hub.store(), |t| {
                for (order, msg) in (0u32..).zip(&rows) {
                    records::push_queued(t, &self.slot.key, order, msg);
                }
                if mine {
                    records::put_session(t, &record);
                }
            })
            .await?;
            st.queued += added;
            st.stored = true;
            if current && let Err(e) = hub.unclaim(&self.slot.key, false).await {
                tracing::warn!(session = %self.identity.key, error = %e, "registry not updated");
            }
        } else if current {
            // Before its routes go: which shared groups gave it what it leaves unacknowledged.
            leftovers = hub.shared_leftovers(&self.slot.tenant, &self.slot.key, pending);
            if hub.holds(&self.slot.key).await {
                hub.remove_slot(&self.slot, &mut st).await?;
            } else {
                hub.forget_slot(&self.slot, &mut st);
            }
            if let Err(e) = hub.unclaim(&self.slot.key, true).await {
                tracing::warn!(session = %self.identity.key, error = %e, "registry not updated");
            }
        }
        let (expiry_secs, generation) = (st.expiry_secs, st.generation);
        drop(st);
        if !leftovers.is_empty() {
            hub.give_leftovers(leftovers).await;
        }
        tracing::info!(session = %self.identity.key, normal, "disconnected");
        if current && let Some((pk, dn)) = &self.identity.device {
            hub.record_status(pk, dn, false);
            hub.notify_groups(pk, |id, now| {
                Event::status(id, &self.identity.tenant, pk, dn, false, now)
            });
        }
        if !normal && let Some(will) = &self.will {
            // A session that ends now (no expiry) takes its will's delay with it.
            let delay_secs = will.delay_secs.min(expiry_secs);
            if delay_secs == 0 || !current {
                hub.accept(self.will_message(will)).await?;
            } else {
                self.publish_will_later(self.will_message(will), delay_secs, generation);
            }
        }
        Ok(())
    }
}
