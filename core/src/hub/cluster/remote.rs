//! Reaching the other nodes: messages routed to the node holding a session (or its stored
//! queue when that node is gone), kicks, RRPC answers and broadcasts, and the sweep of stored
//! sessions whatever node left them.

use std::sync::Arc;

use bytes::Bytes;

use super::{PeerReply, PeerRequest, Peers, SWEEP_PAGE, device_of_topic};
use crate::data::message::{Message, QoS};
use crate::hub::{Hub, KickReason};
use crate::store::records;
use crate::store::{StoreError, transact};
use crate::topic::{self, Filter};

impl Hub {
    /// Sends `request` to every other live node at once; returns how many sessions or devices
    /// it reached there. A node that fails is logged (`what` was not done there).
    pub(super) async fn ask_others(
        &self,
        peers: &Arc<dyn Peers>,
        request: PeerRequest,
        what: &str,
    ) -> usize {
        let calls = peers.others().into_iter().map(|node| {
            let request = request.clone();
            async move { (peers.call(&node, request).await, node) }
        });
        let mut reached = 0;
        for (reply, node) in futures_util::future::join_all(calls).await {
            match reply {
                Ok(PeerReply::Delivered(n) | PeerReply::Routed { delivered: n, .. }) => {
                    reached += n
                }
                Ok(PeerReply::Done | PeerReply::Filters(_)) => {}
                Err(e) => tracing::warn!(%node, error = %e, "{what} not done on a node"),
            }
        }
        reached
    }

    /// Routes a message to the sessions on other nodes that it goes to (nothing when the
    /// addressed device's session is on this node).
    pub(crate) async fn route_remote(&self, msg: &Arc<Message>) -> Result<usize, StoreError> {
        let Some(peers) = self.peers().cloned() else {
            return Ok(0);
        };
        let device = self.device_addressed(msg);
        if msg.retain && device.is_some() {
            // Whichever node the device subscribes on later must find it.
            let retain = PeerRequest::Retain((**msg).clone());
            self.ask_others(&peers, retain, "sharing a retained message")
                .await;
        }
        let Some(key) = device else {
            // Not addressed to one device: every node routes it to its own subscribers.
            let route = PeerRequest::Route((**msg).clone());
            return Ok(self.ask_others(&peers, route, "routing a message").await);
        };
        if self.slot(&key).is_some() {
            return Ok(0);
        }
        if let Some(entry) = self.registry_entry(&key).await?
            && entry.node != peers.node_id()
            && peers.is_live(&entry.node)
        {
            match peers
                .call(&entry.node, PeerRequest::Route((**msg).clone()))
                .await
            {
                Ok(PeerReply::Delivered(n) | PeerReply::Routed { delivered: n, .. }) => {
                    return Ok(n);
                }
                Ok(PeerReply::Done | PeerReply::Filters(_)) => return Ok(0),
                Err(e) => {
                    tracing::warn!(session = %key, error = %e, "holding node unreachable: storing for the session");
                }
            }
        }
        self.queue_in_store(&key, msg).await
    }

    /// The device session a message is addressed to, which one node holds (an open-broker
    /// tenant's topics address no device).
    pub(crate) fn device_addressed(&self, msg: &Message) -> Option<String> {
        let open_broker = &self.inner.config.open_broker;
        device_of_topic(&msg.topic)
            .filter(|_| !(open_broker.enabled && msg.tenant == open_broker.tenant))
    }

    /// Puts a message in the stored queue of a session no live node holds, if the session
    /// persists and would have received it (QoS 1; a matching subscription, or one of the
    /// device's `/sys/` topics, which need none).
    pub(in crate::hub) async fn queue_in_store(
        &self,
        key: &str,
        msg: &Arc<Message>,
    ) -> Result<usize, StoreError> {
        if msg.qos == QoS::AtMostOnce || msg.expired(self.now_ms()) {
            return Ok(0);
        }
        let k = key.to_owned();
        let Some(record) = transact(&**self.store(), |t| {
            let k = k.clone();
            Box::pin(async move { records::get_session(t, &k).await })
        })
        .await?
        else {
            return Ok(0);
        };
        if record.tenant != msg.tenant || record.expired(self.now_ms()) || record.expiry_secs == 0 {
            return Ok(0);
        }
        let subscribed = record
            .subscriptions
            .iter()
            .filter(|s| {
                Filter::parse(&s.filter).is_ok_and(|f| topic::matches(&f.filter, &msg.topic))
            })
            .map(|s| s.qos)
            .max();
        let implicit = crate::hub::router::sys_topic_device(&msg.topic).is_some_and(|d| d == key);
        let qos = match (subscribed, implicit) {
            (Some(q), _) => q.min(msg.qos),
            (None, true) => msg.qos.min(QoS::AtLeastOnce),
            (None, false) => return Ok(0),
        };
        if qos == QoS::AtMostOnce {
            return Ok(0);
        }
        let mut stored = (**msg).clone();
        stored.qos = qos;
        stored.retain = false;
        let cap = self.inner.config.max_offline_messages;
        let owned_key = key.to_owned();
        let queued = transact(&**self.store(), |t| {
            let (stored, key) = (stored.clone(), owned_key.clone());
            Box::pin(async move {
                if records::count_queued(t, &key, cap).await? >= cap {
                    return Ok(false);
                }
                records::push_queued(t, &key, 0, &stored);
                Ok(true)
            })
        })
        .await?;
        if !queued {
            self.inner
                .stats
                .dropped_offline_queue_full
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(session = %key, "offline queue full: message dropped");
            return Ok(0);
        }
        self.inner.stats.delivered(qos);
        Ok(1)
    }

    /// Closes the connection of a session key, if any, on whichever node holds it
    /// (administrative action).
    pub async fn kick(&self, key: &str) {
        self.kick_local(key, KickReason::AdministrativeAction).await;
        let Some(peers) = self.peers() else {
            return;
        };
        match self.registry_entry(key).await {
            Ok(Some(e)) if e.node != peers.node_id() && peers.is_live(&e.node) => {
                let kick = PeerRequest::Kick {
                    session: key.to_owned(),
                };
                if let Err(e) = peers.call(&e.node, kick).await {
                    tracing::warn!(session = %key, error = %e, "could not disconnect the device on its node");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(session = %key, error = %e, "registry unreadable"),
        }
    }

    /// Hands an RRPC answer that no caller here waits for to the other nodes.
    pub(crate) async fn rrpc_reply_elsewhere(&self, key: &str, id: &str, payload: &Bytes) {
        let (Some(peers), Ok(id)) = (self.peers(), id.parse::<u64>()) else {
            return;
        };
        let reply = PeerRequest::RrpcReply {
            session: key.to_owned(),
            id,
            payload: payload.clone(),
        };
        self.ask_others(peers, reply, "handing over an RRPC answer")
            .await;
    }

    /// Sends a message to the product's devices online on the other nodes, on
    /// `/sys/{pk}/{dn}{suffix}`; returns how many got it.
    pub(crate) async fn cast_elsewhere(
        &self,
        tenant: &str,
        pk: &str,
        suffix: &str,
        payload: &Bytes,
    ) -> usize {
        let Some(peers) = self.peers() else {
            return 0;
        };
        let cast = PeerRequest::Cast {
            tenant: tenant.to_owned(),
            product_key: pk.to_owned(),
            suffix: suffix.to_owned(),
            payload: payload.clone(),
        };
        self.ask_others(peers, cast, "a message to a product's devices")
            .await
    }

    /// Reclaims the stored sessions whose expiry passed, whichever node held them (in a cluster
    /// a session left by a node that is gone has no node to reclaim it): a session still marked
    /// connected on a node that is gone counts as disconnected from now, and expires after its
    /// expiry interval. Reads a page of sessions at a time; each change is made in a
    /// transaction that reads the session and its registry entry again, so a device that
    /// reconnected meanwhile keeps its session. Returns how many were reclaimed.
    pub async fn sweep_stored_sessions(&self, now: u64) -> Result<usize, StoreError> {
        let Some(peers) = self.peers().cloned() else {
            return Ok(0);
        };
        let mut after: Option<String> = None;
        let mut reclaimed = 0;
        loop {
            let page = transact(&**self.store(), |t| {
                let after = after.clone();
                Box::pin(async move {
                    records::list_sessions_after(t, after.as_deref(), SWEEP_PAGE).await
                })
            })
            .await?;
            let candidates: Vec<records::SessionRecord> = page
                .iter()
                .filter(|s| self.slot(&s.key).is_none())
                .filter(|s| s.expired(now) || s.disconnected_at_ms.is_none())
                .cloned()
                .collect();
            for seen in candidates {
                let peers = peers.clone();
                let gone = transact(&**self.store(), |t| {
                    let (seen, peers) = (seen.clone(), peers.clone());
                    Box::pin(async move {
                        if records::get_session(t, &seen.key).await?.as_ref() != Some(&seen) {
                            return Ok(false);
                        }
                        if seen.expired(now) {
                            records::delete_session(t, &seen.key);
                            records::delete_registry(t, &seen.key);
                            return Ok(true);
                        }
                        let holder = records::get_registry(t, &seen.key).await?;
                        if holder.is_none_or(|e| !peers.is_live(&e.node)) {
                            let mut orphan = seen;
                            orphan.disconnected_at_ms = Some(now);
                            records::put_session(t, &orphan);
                        }
                        Ok(false)
                    })
                })
                .await?;
                if gone {
                    reclaimed += 1;
                    self.inner
                        .stats
                        .sessions_expired
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            if page.len() < SWEEP_PAGE {
                return Ok(reclaimed);
            }
            after = page.last().map(|s| s.key.clone());
        }
    }
}
