//! Sessions of sub-devices carried by their gateway's connection. A sub-device logged in through
//! its gateway has a session of its own (its key, subscriptions, limits and online status), whose
//! live queue is the gateway connection's: what reaches the sub-device goes out on the gateway's
//! connection, and what the gateway publishes or subscribes in the sub-device's namespace counts
//! as the sub-device's. The session ends with its logout, with a takeover (the sub-device
//! connecting itself, or logging in through another gateway), when it is disabled or deleted,
//! and with the gateway's connection.
//!
//! The Alink requests that open and end these sessions are in [`crate::hub::subdevices`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use tokio_util::sync::CancellationToken;

use super::{ClientIdentity, ConnectRefusal, Live, Session, Slot, SlotState};
use crate::FastMap;
use crate::data::event::Event;
use crate::hub::Hub;
use crate::hub::limits::Charges;
use crate::hub::queue::DeliverySender;

/// A gateway connection that carries sub-devices.
pub(crate) struct GatewayLink {
    /// The gateway's session key.
    key: Arc<str>,
    /// The generation of the gateway's connection.
    generation: u64,
    /// The connection's transport ([`super::TransportKind`] as u8).
    transport: u8,
    /// The connection's queue, which the sub-devices' deliveries join.
    tx: DeliverySender,
    /// Logged-in sub-devices by session key.
    subs: Mutex<FastMap<Arc<str>, Arc<SubSession>>>,
}

/// A sub-device logged in through its gateway.
pub(crate) struct SubSession {
    pub(crate) identity: ClientIdentity,
    pub(crate) charges: Charges,
    pub(super) slot: Arc<Slot>,
    generation: u64,
}

/// Every gateway connection of this node that carries sub-devices, by the gateway's key.
#[derive(Default)]
pub(crate) struct Gateways {
    links: RwLock<FastMap<Arc<str>, Arc<GatewayLink>>>,
}

impl GatewayLink {
    /// How many sub-devices it carries.
    pub(crate) fn carried(&self) -> usize {
        self.subs.lock().expect("gateway lock").len()
    }

    /// Whether the sub-device of session key `key` is logged in through it.
    pub(crate) fn carries(&self, key: &str) -> bool {
        self.subs.lock().expect("gateway lock").contains_key(key)
    }
}

impl Hub {
    /// The link of a gateway's live connection, made at its first sub-device login. None when
    /// the gateway has no live connection on this node (it published over HTTP or CoAP).
    pub(crate) async fn gateway_link(&self, gateway: &ClientIdentity) -> Option<Arc<GatewayLink>> {
        let slot = self.slot(&gateway.key)?;
        let st = slot.state.lock().await;
        let live = st.live.as_ref().filter(|l| l.gateway.is_none())?;
        let mut links = self.inner.gateways.links.write().expect("gateways lock");
        if let Some(link) = links.get(&gateway.key)
            && link.generation == live.generation
        {
            return Some(link.clone());
        }
        let link = Arc::new(GatewayLink {
            key: gateway.key.clone(),
            generation: live.generation,
            transport: slot.transport.load(Ordering::Relaxed),
            tx: live.tx.clone(),
            subs: Mutex::default(),
        });
        links.insert(gateway.key.clone(), link.clone());
        Some(link)
    }

    /// The sub-device session a gateway's publish or subscription on `topic` belongs to: the
    /// topic lies in the namespace of a sub-device logged in through this gateway.
    pub(crate) fn acting_for(
        &self,
        gateway: &ClientIdentity,
        topic: &str,
    ) -> Option<Arc<SubSession>> {
        let own = gateway.device.as_ref()?;
        let (pk, dn) = crate::topic::device_space(topic)?;
        if (pk, dn) == (own.0.as_str(), own.1.as_str()) {
            return None;
        }
        let link = self
            .inner
            .gateways
            .links
            .read()
            .expect("gateways lock")
            .get(&gateway.key)?
            .clone();
        let key = super::super::device_session_key(pk, dn);
        link.subs
            .lock()
            .expect("gateway lock")
            .get(key.as_str())
            .cloned()
    }

    /// Opens the session of a sub-device on its gateway's connection, ending any connection or
    /// login it had (a sub-device's session through a gateway is always a clean one).
    pub(crate) async fn open_sub_session(
        &self,
        link: &Arc<GatewayLink>,
        identity: ClientIdentity,
    ) -> Result<(), ConnectRefusal> {
        if link.carries(&identity.key) {
            return Ok(());
        }
        if self.peers().is_some() {
            // Other nodes find the sub-device here, as any device's session.
            let previous = self.claim(&identity.key, true).await?;
            self.take_over_from(&identity.key, previous).await?;
        }
        let (slot, mut st) = self.take_slot(&identity).await;
        if st.stored || !st.subscriptions.is_empty() || st.queued > 0 {
            self.wipe(&slot, &mut st).await?;
        }
        slot.set_expiry(&mut st, 0);
        st.disconnected_at_ms = None;
        st.generation += 1;
        let generation = st.generation;
        slot.set_live(
            &mut st,
            Some(Live {
                tx: link.tx.clone(),
                kick: None,
                done: CancellationToken::new(),
                generation,
                gateway: Some(link.clone()),
            }),
        );
        slot.transport.store(link.transport, Ordering::Relaxed);
        slot.carried.store(true, Ordering::Relaxed);
        slot.online.store(true, Ordering::Relaxed);
        drop(st);
        let session = SubSession {
            charges: self.charges(&identity),
            identity,
            slot,
            generation,
        };
        let (tenant, (pk, dn)) = (
            session.identity.tenant.clone(),
            session.identity.device.clone().unwrap_or_default(),
        );
        let key = session.identity.key.clone();
        link.subs
            .lock()
            .expect("gateway lock")
            .insert(key.clone(), Arc::new(session));
        tracing::info!(sub_device = %format!("{pk}/{dn}"), gateway = %link.key, "sub-device online");
        self.notify_groups(&pk, |id, now| {
            Event::status(id, &tenant, &pk, &dn, true, now)
        });
        self.record_status(&pk, &dn, true);
        // The gateway's connection may have ended meanwhile (its sub-devices logged out before
        // this one joined): this one goes too.
        let current = self
            .link_of(&link.key)
            .is_some_and(|l| Arc::ptr_eq(&l, link));
        if !current {
            self.close_sub_session(link, &key).await;
        }
        Ok(())
    }

    /// Ends a sub-device's session on its gateway's connection, if it is logged in there.
    /// Returns whether it was.
    pub(crate) async fn close_sub_session(&self, link: &GatewayLink, key: &str) -> bool {
        let Some(sub) = link.subs.lock().expect("gateway lock").remove(key) else {
            return false;
        };
        let mut st = sub.slot.state.clone().lock_owned().await;
        let current = st
            .live
            .as_ref()
            .is_some_and(|l| l.generation == sub.generation);
        if current {
            self.end_sub_live(&sub.slot, &mut st);
            self.forget_slot(&sub.slot, &mut st);
        }
        drop(st);
        if current {
            if let Err(e) = self.unclaim(key, true).await {
                tracing::warn!(session = %key, error = %e, "registry not updated");
            }
            self.sub_went_offline(&sub.identity);
        }
        true
    }

    /// Clears a sub-device's live session (caller holds its lock): what is delivered from now
    /// on finds it offline.
    pub(super) fn end_sub_live(&self, slot: &Arc<Slot>, st: &mut SlotState) {
        if let Some(live) = &st.live {
            live.done.cancel();
        }
        slot.set_live(st, None);
        slot.online.store(false, Ordering::Relaxed);
        slot.carried.store(false, Ordering::Relaxed);
    }

    /// Takes a sub-device's live session out of its gateway's table after a takeover or a kick
    /// ended it (caller holds its lock); returns whether the live session was a sub-device's.
    pub(super) fn end_sub_login(&self, slot: &Arc<Slot>, st: &mut SlotState) -> bool {
        let Some(link) = st.live.as_ref().and_then(|l| l.gateway.clone()) else {
            return false;
        };
        let sub = link.subs.lock().expect("gateway lock").remove(&slot.key);
        self.end_sub_live(slot, st);
        if let Some(sub) = sub {
            self.sub_went_offline(&sub.identity);
        }
        true
    }

    fn sub_went_offline(&self, identity: &ClientIdentity) {
        let Some((pk, dn)) = &identity.device else {
            return;
        };
        tracing::info!(sub_device = %identity.key, "sub-device offline");
        self.record_status(pk, dn, false);
        self.notify_groups(pk, |id, now| {
            Event::status(id, &identity.tenant, pk, dn, false, now)
        });
    }

    /// The gateway's connection ended: its sub-devices go offline.
    pub(super) async fn gateway_closed(&self, gateway: &Arc<str>, generation: u64) {
        // Every device's disconnect asks; few are gateways carrying sub-devices.
        if !self
            .inner
            .gateways
            .links
            .read()
            .expect("gateways lock")
            .contains_key(gateway)
        {
            return;
        }
        let link = {
            let mut links = self.inner.gateways.links.write().expect("gateways lock");
            match links.get(gateway) {
                Some(l) if l.generation == generation => links.remove(gateway),
                _ => None,
            }
        };
        let Some(link) = link else {
            return;
        };
        let keys: Vec<Arc<str>> = link
            .subs
            .lock()
            .expect("gateway lock")
            .keys()
            .cloned()
            .collect();
        for key in keys {
            self.close_sub_session(&link, &key).await;
        }
    }

    /// The link of a gateway's connection on this node, if it carries sub-devices.
    pub(crate) fn link_of(&self, gateway_key: &str) -> Option<Arc<GatewayLink>> {
        self.inner
            .gateways
            .links
            .read()
            .expect("gateways lock")
            .get(gateway_key)
            .cloned()
    }
}

impl Session {
    /// The sub-device a publish or subscription of this (gateway's) session on `topic` is for.
    pub(super) fn sub_session_for(&self, topic: &str) -> Option<Arc<SubSession>> {
        self.hub.acting_for(&self.identity, topic)
    }
}
