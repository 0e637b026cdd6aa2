//! Connecting: authentication (device signatures, open-broker clients, dynamic registration),
//! taking the session's slot over from an earlier connection, and restoring a stored session.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{
    Authenticated, ClientIdentity, ConnectOutcome, ConnectRefusal, ConnectRequest, Connected,
    KickReason, Live, Session, Slot, SlotGuard, SlotState, TAKEOVER_WAIT, Unacknowledged,
};
use crate::acl::{self, Access};
use crate::admission::{self, Cause, Stage};
use crate::auth::{self, SignedClientId};
use crate::data::event::Event;
use crate::data::model::{self, Device};
use crate::hub::queue;
use crate::hub::router::Delivery;
use crate::hub::{Hub, device_session_key};
use crate::limits::LimitId;
use crate::store::records::{self, QueueId};
use crate::store::{self, StoreError, transact};
use crate::topic::Filter;

/// Session keys of open-broker clients: `open:{client id}`.
pub(crate) const OPEN_CLIENT_PREFIX: &str = "open:";

impl Hub {
    pub(super) async fn authenticate(
        &self,
        req: &ConnectRequest,
    ) -> Result<Authenticated, ConnectRefusal> {
        let device_creds = req.username.as_deref().filter(|u| u.contains('&'));
        let Some(username) = device_creds else {
            let open = &self.inner.config.open_broker;
            if !open.enabled {
                return Err(ConnectRefusal::BadCredentials(
                    "device credentials required",
                ));
            }
            let (client_id, assigned) = if req.client_id.is_empty() {
                let id = format!("auto-{}", model::random_token(16));
                (id.clone(), Some(id))
            } else {
                (req.client_id.clone(), None)
            };
            return Ok(Authenticated::Client(
                ClientIdentity {
                    tenant: open.tenant.clone(),
                    key: Arc::from(format!("{OPEN_CLIENT_PREFIX}{client_id}")),
                    device: None,
                },
                assigned,
            ));
        };
        let (dn, pk) = auth::parse_username(username).map_err(|_| {
            ConnectRefusal::BadCredentials("user name is not deviceName&productKey")
        })?;
        let signed = SignedClientId::parse(&req.client_id)
            .map_err(|_| ConnectRefusal::BadCredentials("client id is not in the signed form"))?;
        let password = req.password.as_deref().unwrap_or_default();
        if let Some(registration) = signed.registration() {
            return self.register(pk, dn, &signed, registration, password).await;
        }
        let identity = if signed.is_token() {
            self.verify_device_with(pk, dn, password, |secret| {
                auth::device_token(secret, &signed.id)
            })
            .await?
        } else {
            self.verify_device(
                pk,
                dn,
                &signed.id,
                signed.timestamp.as_deref(),
                signed.signmethod,
                password,
            )
            .await?
        };
        Ok(Authenticated::Client(identity, None))
    }

    /// Checks a device's signature (the MQTT password scheme, also used by the HTTP and CoAP
    /// `/auth` requests) and that it is enabled.
    pub(crate) async fn verify_device(
        &self,
        pk: &str,
        dn: &str,
        client_id: &str,
        timestamp: Option<&str>,
        method: auth::SignMethod,
        presented: &[u8],
    ) -> Result<ClientIdentity, ConnectRefusal> {
        self.verify_device_with(pk, dn, presented, |secret| {
            auth::mqtt_password(method, secret, client_id, dn, pk, timestamp)
        })
        .await
    }

    /// Checks what a device presents against what `expected` makes of its DeviceSecret, and
    /// that it is enabled.
    async fn verify_device_with(
        &self,
        pk: &str,
        dn: &str,
        presented: &[u8],
        expected: impl FnOnce(&str) -> String,
    ) -> Result<ClientIdentity, ConnectRefusal> {
        let device = self
            .device_record(pk, dn)
            .await?
            .ok_or(ConnectRefusal::BadCredentials("unknown device"))?;
        if !auth::signature_matches(&expected(&device.device_secret), presented) {
            return Err(ConnectRefusal::BadCredentials("signature mismatch"));
        }
        if !device.enabled {
            return Err(ConnectRefusal::Disabled);
        }
        if !device.activated {
            // Written in batches off the connect path (the device shows online from its
            // session meanwhile).
            self.record_activation(pk, dn).await;
        }
        Ok(ClientIdentity {
            tenant: device.tenant.clone(),
            key: Arc::from(device_session_key(pk, dn)),
            device: Some((pk.to_owned(), dn.to_owned())),
        })
    }

    /// Dynamic registration: the device proves it holds the ProductSecret and receives its
    /// DeviceSecret, or (without pre-registration) a client id and a token to connect with.
    /// Refused once the device has been activated, so a leaked ProductSecret cannot fetch the
    /// credentials of a device already in service.
    pub(super) async fn register(
        &self,
        pk: &str,
        dn: &str,
        signed: &SignedClientId,
        registration: auth::Registration,
        password: &[u8],
    ) -> Result<Authenticated, ConnectRefusal> {
        let product = self
            .registry()
            .product(pk)
            .await
            .map_err(|_| ConnectRefusal::BadCredentials("unknown product"))?;
        let random = signed
            .random
            .as_deref()
            .ok_or(ConnectRefusal::BadCredentials("registration needs random"))?;
        let expected =
            auth::register_password(signed.signmethod, &product.product_secret, dn, pk, random);
        if !auth::signature_matches(&expected, password) {
            return Err(ConnectRefusal::BadCredentials("signature mismatch"));
        }
        if !product.dynamic_registration {
            return Err(ConnectRefusal::NotAuthorized(
                "dynamic registration is off for this product".into(),
            ));
        }
        let device: Device = match self.device_record(pk, dn).await? {
            Some(d) if d.activated => {
                return Err(ConnectRefusal::NotAuthorized(
                    "device is already activated".into(),
                ));
            }
            Some(d) => d,
            None => self
                .registry()
                .create_device(pk, Some(dn))
                .await
                .map_err(|e| ConnectRefusal::NotAuthorized(e.to_string()))?,
        };
        let payload = match registration {
            auth::Registration::Secret => serde_json::json!({
                "productKey": pk,
                "deviceName": dn,
                "deviceSecret": device.device_secret,
            }),
            auth::Registration::Token => {
                let client_id = format!("{pk}.{dn}");
                let token = auth::device_token(&device.device_secret, &client_id);
                serde_json::json!({
                    "productKey": pk,
                    "deviceName": dn,
                    "clientId": client_id,
                    "deviceToken": token,
                })
            }
        };
        Ok(Authenticated::Registered(
            registration,
            Bytes::from(payload.to_string()),
        ))
    }

    /// Authenticates a connection and opens (or resumes, or takes over) its session.
    pub async fn connect(&self, req: ConnectRequest) -> Result<ConnectOutcome, ConnectRefusal> {
        let transport = req.transport;
        let outcome = self.connect_inner(req).await;
        self.inner.stats.connect(transport, outcome.as_ref().err());
        outcome
    }

    pub(super) async fn connect_inner(
        &self,
        req: ConnectRequest,
    ) -> Result<ConnectOutcome, ConnectRefusal> {
        let transport = req.transport;
        let (identity, assigned_client_id) = match self.authenticate(&req).await? {
            Authenticated::Registered(registration, payload) => {
                return Ok(ConnectOutcome::Registered {
                    topic: registration.topic().into(),
                    payload,
                });
            }
            Authenticated::Client(identity, assigned) => (identity, assigned),
        };
        let cfg = &self.inner.config;
        let keep_alive_secs =
            admission::keep_alive(cfg, req.keep_alive_secs, req.server_keep_alive)
                .inspect_err(|_| self.inner.stats.limited(LimitId::KeepAlive))?;
        if let Some(will) = &req.will {
            admission::will(&will.topic, |access, topic| {
                self.may(&identity, access, topic)
            })?;
        }
        self.admit_connection(&identity)
            .map_err(|l| ConnectRefusal::Limited(self.counted(l)))?;
        let expiry = match req.session_expiry_secs {
            Some(requested) => requested.min(cfg.max_session_expiry_secs),
            None if req.clean_start => 0,
            None => cfg.max_session_expiry_secs,
        };
        // In a cluster the session may be held by another node, or only in the store: claim it
        // and have the other node let it go (before taking the slot here, whose lock that node
        // may need to answer a crossing claim), then take it from the store. If this connect
        // fails after the claim, the guard gives the claim back.
        let mut claim = None;
        if self.peers().is_some() {
            let previous = self.claim(&identity.key, true).await?;
            claim = Some(crate::hub::cluster::ClaimGuard::new(
                self,
                &identity.key,
                previous.clone(),
            ));
            self.take_over_from(&identity.key, previous).await?;
        }
        let (slot, mut st) = self.take_slot(&identity).await;
        if claim.is_some() {
            // A connection of the session on this node, closed just now, marked the session
            // offline here as it went: claim again.
            self.claim(&identity.key, true).await?;
            if st.generation == 0 && !st.stored {
                self.adopt(&slot, &mut st).await?;
            } else if st.stored {
                // Other nodes may have queued for it while it was away.
                st.queued = self.count_stored(&slot.key).await?;
            }
        }
        let resumable = st.stored || !st.subscriptions.is_empty() || st.queued > 0;
        // A session whose expiry passed while it was away is gone, whether or not the sweep
        // has reclaimed it yet (MQTT 3.1.2.11.2): the client starts a new one.
        let expired = st.live.is_none()
            && records::expired(st.disconnected_at_ms, st.expiry_secs, self.now_ms());
        if (req.clean_start || expired) && resumable {
            self.wipe(&slot, &mut st).await?;
            if expired {
                self.inner
                    .stats
                    .sessions_expired
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let resumable = resumable && !expired;
        let session_present = !req.clean_start && resumable;
        slot.set_expiry(&mut st, expiry);
        st.disconnected_at_ms = None;
        if expiry > 0 {
            let record = slot.record(&st);
            store::write(&**self.store(), |t| records::put_session(t, &record)).await?;
            st.stored = true;
        }
        let resend = std::mem::take(&mut st.unacknowledged);
        let backlog = if session_present && st.queued > 0 {
            self.read_backlog(&slot.key, &resend).await?
        } else {
            Vec::new()
        };
        let (tx, rx) = queue::channel(cfg.session_queue_capacity);
        let (kick_tx, kick_rx) = oneshot::channel();
        let done = CancellationToken::new();
        st.generation += 1;
        let generation = st.generation;
        slot.set_live(
            &mut st,
            Some(Live {
                tx,
                kick: Some(kick_tx),
                done: done.clone(),
                generation,
                gateway: None,
            }),
        );
        slot.transport.store(transport.0, Ordering::Relaxed);
        slot.online.store(true, Ordering::Relaxed);
        drop(st);
        tracing::info!(session = %identity.key, tenant = %identity.tenant, session_present, "connected");
        if let Some((pk, dn)) = &identity.device {
            self.notify_groups(pk, |id, now| {
                Event::status(id, &identity.tenant, pk, dn, true, now)
            });
            self.record_status(pk, dn, true);
            // A desired state set while the device was away reaches it now.
            if self.has_pending_desired(&identity.key) {
                let hub = self.clone();
                let (tenant, pk, dn) = (identity.tenant.clone(), pk.clone(), dn.clone());
                tokio::spawn(async move { hub.shadow_on_connect(&tenant, &pk, &dn).await });
            }
        }
        if let Some(claim) = claim {
            claim.keep();
            // Two nodes claiming at once: the last claim holds, the other connection goes.
            let hub = self.clone();
            let key = identity.key.to_string();
            tokio::spawn(async move { hub.verify_claim(&key).await });
        }
        Ok(ConnectOutcome::Connected(Box::new(Connected {
            session: Session {
                hub: self.clone(),
                slot,
                identity,
                generation,
                will: req.will.map(Box::new),
                done,
                charges: OnceLock::new(),
            },
            deliveries: rx,
            backlog,
            resend,
            session_present,
            keep_alive_secs,
            kicked: kick_rx,
            session_expiry_secs: expiry,
            assigned_client_id,
        })))
    }

    /// Locks the session's slot with no live connection on it, closing the one there first and
    /// waiting for it to finish (so its unacknowledged messages and its will are dealt with
    /// before the new connection starts: takeover does not depend on timing).
    pub(super) async fn take_slot(&self, identity: &ClientIdentity) -> (Arc<Slot>, SlotGuard) {
        loop {
            let slot = self.slot_for(identity);
            let mut st = slot.state.clone().lock_owned().await;
            if st.removed {
                continue;
            }
            // A sub-device's login through a gateway ends here and now.
            if st.live.is_none() || self.end_sub_login(&slot, &mut st) {
                return (slot, st);
            }
            let Some(live) = st.live.as_mut() else {
                return (slot, st);
            };
            if let Some(kick) = live.kick.take() {
                let _ = kick.send(KickReason::SessionTakenOver);
            }
            let done = live.done.clone();
            drop(st);
            if tokio::time::timeout(TAKEOVER_WAIT, done.cancelled())
                .await
                .is_err()
            {
                tracing::warn!(session = %identity.key, "previous connection did not close in time");
                let mut st = slot.state.clone().lock_owned().await;
                if !st.removed {
                    slot.set_live(&mut st, None);
                    slot.online.store(false, Ordering::Relaxed);
                    return (slot, st);
                }
            }
        }
    }

    /// Takes a session this node does not have in memory from the store (cluster: it was held
    /// by another node, or by one that is gone).
    pub(super) async fn adopt(
        &self,
        slot: &Arc<Slot>,
        st: &mut SlotState,
    ) -> Result<(), StoreError> {
        let key = slot.key.clone();
        let (record, queued) = transact(&**self.store(), |t| {
            let key = key.clone();
            Box::pin(async move {
                let record = records::get_session(t, &key).await?;
                let queued = match &record {
                    Some(_) => records::count_queued(t, &key, usize::MAX).await?,
                    None => 0,
                };
                Ok((record, queued))
            })
        })
        .await?;
        let Some(record) = record.filter(|r| !r.expired(self.now_ms()) && r.tenant == slot.tenant)
        else {
            return Ok(());
        };
        let restored = Slot::restored(&record, queued, self.now_ms());
        let mut from = restored.state.try_lock().expect("fresh slot is unlocked");
        slot.set_expiry(st, from.expiry_secs);
        st.disconnected_at_ms = from.disconnected_at_ms;
        st.subscriptions = std::mem::take(&mut from.subscriptions);
        st.queued = from.queued;
        st.stored = true;
        for sub in st.subscriptions.values() {
            if let Ok(filter) = Filter::parse(&sub.filter) {
                self.inner
                    .router
                    .subscribe(&slot.tenant, &slot.key, &filter, sub);
            }
        }
        Ok(())
    }

    /// Takes a session's subscriptions out of the router.
    pub(super) fn drop_routes(&self, slot: &Arc<Slot>, st: &mut SlotState) {
        for raw in st.subscriptions.keys() {
            if let Ok(f) = Filter::parse(raw) {
                self.inner.router.unsubscribe(&slot.tenant, &slot.key, &f);
            }
        }
        st.subscriptions.clear();
    }

    /// Discards a session's subscriptions and stored record and queue (clean start).
    pub(super) async fn wipe(
        &self,
        slot: &Arc<Slot>,
        st: &mut SlotState,
    ) -> Result<(), StoreError> {
        self.drop_routes(slot, st);
        if st.stored || st.queued > 0 {
            store::write(&**self.store(), |t| records::delete_session(t, &slot.key)).await?;
        }
        st.stored = false;
        st.queued = 0;
        st.unacknowledged.clear();
        Ok(())
    }

    /// A session's stored queue, less what expired while it waited; what was sent before
    /// (`sent`) is not expired on its way again (MQTT-4.3.3-7).
    pub(super) async fn read_backlog(
        &self,
        key: &Arc<str>,
        sent: &HashMap<QueueId, Unacknowledged>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let k = key.clone();
        let rows = store::read(&**self.store(), |t| {
            let k = k.clone();
            Box::pin(async move { records::read_queue(t, &k, 0).await })
        })
        .await?;
        let now = self.now_ms();
        Ok(rows
            .into_iter()
            .filter(|(seq, m)| !m.expired(now) || sent.contains_key(seq))
            .map(|(seq, m)| Delivery {
                qos: m.qos,
                retain: m.retain,
                message: Arc::new(m),
                subscription_ids: Box::default(),
                stored_seq: Some(Box::new(seq)),
            })
            .collect())
    }

    /// Whether the open-broker clients among `targets` may get a message on `topic`: a filter
    /// granted wider than the rules (`#` while `secret/#` is denied) must not deliver what the
    /// rules deny. Device sessions are bound to their own namespace and never filtered here.
    pub(crate) fn keep_denied_from_open_clients(&self, tenant: &str, topic: &str) -> bool {
        let open = &self.inner.config.open_broker;
        open.enabled
            && tenant == open.tenant
            && acl::open_broker_denies_subscribers(&open.rules)
            && !acl::open_broker_delivers(&open.rules, topic)
    }

    /// What the engine does with a refusal of the admission checks: a limit's is counted (for
    /// /metrics), an ACL refusal logged at warn with the session and what it asked for.
    pub(super) fn note_refusal(&self, session: &str, stage: Stage, cause: &Cause, asked: &str) {
        match (cause, stage) {
            (Cause::Limited(l), _) => self.inner.stats.limited(l.limit),
            (Cause::NotAuthorized, Stage::Subscribe) => {
                tracing::warn!(%session, filter = %asked, "ACL: subscribe refused");
            }
            (Cause::NotAuthorized, _) => {
                tracing::warn!(%session, topic = %asked, "ACL: publish refused");
            }
            _ => {}
        }
    }

    pub(super) fn may(
        &self,
        identity: &ClientIdentity,
        access: Access,
        topic_or_filter: &str,
    ) -> bool {
        match &identity.device {
            Some((pk, dn)) => {
                acl::device_may(access, pk, dn, topic_or_filter)
                    && self.category_allows(pk, dn, access, topic_or_filter)
            }
            None => acl::open_broker_may(
                &self.inner.config.open_broker.rules,
                access,
                topic_or_filter,
            ),
        }
    }
}
