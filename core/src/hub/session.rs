//! Connecting, sessions and their lifecycle: authentication, takeover (one connection per
//! session key across the hub), persistent sessions with their stored queue, wills, and the
//! per-session delivery queue with its slow-subscriber policy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};
use tokio_util::sync::CancellationToken;

use super::limits::Charges;
use super::queue::{self, DeliveryReceiver, DeliverySender, TrySendError};
use super::router::Delivery;
use super::topology::TopoOp;
use super::{Hub, device_session_key};
use crate::acl::{self, Access};
use crate::auth::{self, SignedClientId};
use crate::data::event::{Event, EventKind};
use crate::data::message::{Message, Origin, Properties, QoS};
use crate::data::model::{self, Device};
use crate::forward::Confirmation;
use crate::limits::{LimitId, Limited};
use crate::now_ms;
use crate::store::records::{self, QueueId, RegistryEntry, SessionRecord, SubscriptionRecord};
use crate::store::{self, StoreError, transact};
use crate::topic::{self, Filter};

/// How long a new connection waits for the connection it takes over to finish closing.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// A will message, published when a connection ends without a normal DISCONNECT.
#[derive(Debug, Clone)]
pub struct Will {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 properties.
    pub properties: Properties,
}

/// The transport a client came in by (a label of the hub's counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// MQTT over TCP.
    Mqtt = 0,
    /// MQTT over TLS.
    MqttTls = 1,
    /// MQTT over QUIC.
    Quic = 2,
    /// HTTP devices.
    Http = 3,
    /// CoAP devices.
    Coap = 4,
}

impl TransportKind {
    /// How many transports there are.
    pub const COUNT: usize = 5;
    /// Every transport, in the order of their discriminants.
    pub const ALL: [TransportKind; TransportKind::COUNT] = [
        TransportKind::Mqtt,
        TransportKind::MqttTls,
        TransportKind::Quic,
        TransportKind::Http,
        TransportKind::Coap,
    ];

    /// The name in metrics.
    pub fn label(self) -> &'static str {
        match self {
            TransportKind::Mqtt => "mqtt",
            TransportKind::MqttTls => "mqtt-tls",
            TransportKind::Quic => "quic",
            TransportKind::Http => "http",
            TransportKind::Coap => "coap",
        }
    }
}

/// What a transport extracted from a connect request.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The transport it came in by.
    pub transport: TransportKind,
    /// Client identifier as sent.
    pub client_id: String,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<Bytes>,
    /// Start a new session, discarding any stored one.
    pub clean_start: bool,
    /// MQTT 5 session expiry interval; None for MQTT 3.1.1 (derived from `clean_start`).
    pub session_expiry_secs: Option<u32>,
    /// Keep-alive interval in seconds.
    pub keep_alive_secs: u16,
    /// Will message.
    pub will: Option<Will>,
}

/// Why a connection was refused. Transports map each to their protocol's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    /// Unknown device, malformed credentials or wrong signature.
    #[error("bad credentials: {0}")]
    BadCredentials(&'static str),
    /// The device is disabled.
    #[error("device is disabled")]
    Disabled,
    /// Credentials are fine but the request is not allowed.
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    /// Keep-alive outside the accepted range (seed 000: 30 to 1200 s).
    #[error("keep-alive {got} s outside {min}..={max} s")]
    KeepAliveOutOfRange {
        /// Requested.
        got: u16,
        /// Smallest accepted.
        min: u16,
        /// Largest accepted.
        max: u16,
    },
    /// A documented limit refused the connection (connection rate, monthly quota).
    #[error("{0}")]
    Limited(Limited),
    /// The hub cannot serve now (storage failure).
    #[error("server unavailable: {0}")]
    Unavailable(String),
}

impl ConnectRefusal {
    /// How many kinds of refusal there are.
    pub const KINDS: usize = 6;
    /// The kinds' names in metrics, indexed by [`ConnectRefusal::kind`].
    pub const KIND_LABELS: [&'static str; ConnectRefusal::KINDS] = [
        "bad_credentials",
        "disabled",
        "not_authorized",
        "keep_alive",
        "limited",
        "unavailable",
    ];

    /// Index of this refusal's kind in [`ConnectRefusal::KIND_LABELS`].
    pub fn kind(&self) -> usize {
        match self {
            ConnectRefusal::BadCredentials(_) => 0,
            ConnectRefusal::Disabled => 1,
            ConnectRefusal::NotAuthorized(_) => 2,
            ConnectRefusal::KeepAliveOutOfRange { .. } => 3,
            ConnectRefusal::Limited(_) => 4,
            ConnectRefusal::Unavailable(_) => 5,
        }
    }
}

impl From<StoreError> for ConnectRefusal {
    fn from(e: StoreError) -> Self {
        ConnectRefusal::Unavailable(e.to_string())
    }
}

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Tenant scope.
    pub tenant: String,
    /// Session key: one connection per key across the hub.
    pub key: Arc<str>,
    /// `(productKey, deviceName)` for devices; None for open-broker clients.
    pub device: Option<(String, String)>,
}

/// Why a connection is being closed by the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickReason {
    /// Another connection took the session over (MQTT 5 reason 0x8E).
    SessionTakenOver,
    /// An administrator disabled or deleted the device (MQTT 5 reason 0x98).
    AdministrativeAction,
}

/// The result of a successful CONNECT.
pub enum ConnectOutcome {
    /// A session is open.
    Connected(Box<Connected>),
    /// Dynamic registration succeeded: send `payload` on `topic`, then close.
    Registered {
        /// `/ext/register`.
        topic: String,
        /// `{"productKey":..,"deviceName":..,"deviceSecret":..}`.
        payload: Bytes,
    },
}

/// An open session as its transport holds it.
pub struct Connected {
    /// Calls into the hub for this session.
    pub session: Session,
    /// Live deliveries, bounded by `session_queue_capacity`.
    pub deliveries: DeliveryReceiver,
    /// Stored deliveries to send before the live ones.
    pub backlog: Vec<Delivery>,
    /// Whether a stored session was resumed.
    pub session_present: bool,
    /// Fires when the hub closes this connection, with the reason.
    pub kicked: oneshot::Receiver<KickReason>,
    /// Session expiry granted, seconds.
    pub session_expiry_secs: u32,
    /// Client id assigned by the hub when the client sent an empty one.
    pub assigned_client_id: Option<String>,
}

/// A publish as a transport received it.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// The transport it came in by.
    pub transport: TransportKind,
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 properties.
    pub properties: Properties,
    /// MQTT 5 message expiry interval.
    pub message_expiry_secs: Option<u32>,
}

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishRefusal {
    /// The topic is outside what this client may publish to.
    #[error("not authorized to publish to {0}")]
    NotAuthorized(String),
    /// The topic name is invalid.
    #[error("invalid topic name: {0}")]
    TopicInvalid(topic::TopicError),
    /// A documented limit discarded (rate, quota) or refused (bounds) the message.
    #[error("{0}")]
    Limited(Limited),
    /// Storage failed: the message was not accepted.
    #[error("server unavailable: {0}")]
    Unavailable(String),
}

/// One filter of a subscribe request.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    /// Filter as sent (may be `$share/...`).
    pub filter: String,
    /// Requested QoS.
    pub qos: QoS,
    /// MQTT 5 no-local.
    pub no_local: bool,
    /// MQTT 5 retain-as-published.
    pub retain_as_published: bool,
    /// MQTT 5 retain handling: 0 send retained, 1 only for a new subscription, 2 never.
    pub retain_handling: u8,
    /// MQTT 5 subscription identifier.
    pub subscription_id: Option<u32>,
}

/// Why one filter of a subscribe was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeRefusal {
    /// Malformed filter.
    #[error("invalid topic filter: {0}")]
    FilterInvalid(topic::TopicError),
    /// Outside what this client may subscribe to.
    #[error("not authorized to subscribe to {0}")]
    NotAuthorized(String),
    /// A documented limit refused it (filters per request, subscriptions per device, bounds).
    #[error("{0}")]
    Limited(Limited),
    /// Storage failed.
    #[error("server unavailable: {0}")]
    Unavailable(String),
}

struct Live {
    tx: DeliverySender,
    kick: Option<oneshot::Sender<KickReason>>,
    done: CancellationToken,
    generation: u64,
}

struct SlotState {
    live: Option<Live>,
    /// Removed from the hub's map: a connect that raced with removal must look again.
    removed: bool,
    expiry_secs: u32,
    disconnected_at_ms: Option<u64>,
    subscriptions: HashMap<String, SubscriptionRecord>,
    /// Messages in the stored queue.
    queued: usize,
    generation: u64,
    /// Whether a record of this session is in the store.
    stored: bool,
}

/// A session's place in the hub, online or not.
pub(crate) struct Slot {
    pub(crate) key: Arc<str>,
    pub(crate) tenant: String,
    online: AtomicBool,
    /// The transport of the connection while online ([`TransportKind`] as u8).
    transport: AtomicU8,
    state: Arc<Mutex<SlotState>>,
    /// The live connection's queue, for deliveries that find room in it without taking the
    /// state lock (an async mutex: two locks of its own per delivery). Set and cleared with
    /// `SlotState::live`, under that lock (and cleared when the slot is forgotten, so those
    /// deliveries take the lock): a delivery that got in before it was cleared is in the queue
    /// the closing connection drains.
    live_tx: std::sync::RwLock<Option<DeliverySender>>,
}

type SlotGuard = OwnedMutexGuard<SlotState>;

impl Slot {
    fn new(key: Arc<str>, tenant: String) -> Arc<Slot> {
        Arc::new(Slot {
            key,
            tenant,
            online: AtomicBool::new(false),
            transport: AtomicU8::new(0),
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
            })),
        })
    }

    pub(crate) fn restored(record: &SessionRecord, queued: usize) -> Arc<Slot> {
        let slot = Slot::new(Arc::from(record.key.as_str()), record.tenant.clone());
        let mut st = slot.state.try_lock().expect("fresh slot is unlocked");
        st.expiry_secs = record.expiry_secs;
        // A session that was connected when the process stopped counts as disconnected now.
        st.disconnected_at_ms = Some(record.disconnected_at_ms.unwrap_or_else(now_ms));
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

    pub(crate) fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// The transport of the connection, when online.
    pub(crate) fn online_by(&self) -> Option<usize> {
        self.is_online()
            .then(|| usize::from(self.transport.load(Ordering::Relaxed)))
    }

    /// Sets or clears the live connection (caller holds the state lock).
    fn set_live(&self, st: &mut SlotState, live: Option<Live>) {
        *self.live_tx.write().expect("slot lock") = live.as_ref().map(|l| l.tx.clone());
        st.live = live;
    }

    fn record(&self, st: &SlotState) -> SessionRecord {
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

    async fn deliver_offline(
        &self,
        hub: &Hub,
        st: &mut SlotState,
        delivery: Delivery,
    ) -> Result<(), StoreError> {
        let stats = &hub.inner.stats;
        if st.expiry_secs == 0 || st.removed {
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

/// A connected session, held by its transport.
pub struct Session {
    hub: Hub,
    slot: Arc<Slot>,
    identity: ClientIdentity,
    generation: u64,
    /// Boxed: rare, and every connection's task holds its session.
    will: Option<Box<Will>>,
    done: CancellationToken,
    /// Looked up at the first publish (idle connections do without; boxed, as every
    /// connection's task holds its session).
    charges: OnceLock<Box<Charges>>,
}

impl Hub {
    fn slot_for(&self, identity: &ClientIdentity) -> Arc<Slot> {
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
    async fn remove_slot(&self, slot: &Arc<Slot>, st: &mut SlotState) -> Result<(), StoreError> {
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
    fn forget_slot(&self, slot: &Arc<Slot>, st: &mut SlotState) {
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

    async fn authenticate(&self, req: &ConnectRequest) -> Result<Authenticated, ConnectRefusal> {
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
                    key: Arc::from(format!("open:{client_id}")),
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
        if signed.is_register() {
            return self.register(pk, dn, &signed, password).await;
        }
        let identity = self
            .verify_device(
                pk,
                dn,
                &signed.id,
                signed.timestamp.as_deref(),
                signed.signmethod,
                password,
            )
            .await?;
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
        let device = self
            .device_record(pk, dn)
            .await?
            .ok_or(ConnectRefusal::BadCredentials("unknown device"))?;
        let expected =
            auth::mqtt_password(method, &device.device_secret, client_id, dn, pk, timestamp);
        if !auth::signature_matches(&expected, presented) {
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
    /// DeviceSecret. Refused once the device has been activated, so a leaked ProductSecret cannot
    /// fetch the secret of a device already in service.
    async fn register(
        &self,
        pk: &str,
        dn: &str,
        signed: &SignedClientId,
        password: &[u8],
    ) -> Result<Authenticated, ConnectRefusal> {
        let product = self
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
                .create_device(pk, Some(dn))
                .await
                .map_err(|e| ConnectRefusal::NotAuthorized(e.to_string()))?,
        };
        let payload = serde_json::json!({
            "productKey": pk,
            "deviceName": dn,
            "deviceSecret": device.device_secret,
        });
        Ok(Authenticated::Registered(Bytes::from(payload.to_string())))
    }

    /// Authenticates a connection and opens (or resumes, or takes over) its session.
    pub async fn connect(&self, req: ConnectRequest) -> Result<ConnectOutcome, ConnectRefusal> {
        let transport = req.transport;
        let outcome = self.connect_inner(req).await;
        self.inner.stats.connect(transport, outcome.as_ref().err());
        outcome
    }

    async fn connect_inner(&self, req: ConnectRequest) -> Result<ConnectOutcome, ConnectRefusal> {
        let transport = req.transport;
        let (identity, assigned_client_id) = match self.authenticate(&req).await? {
            Authenticated::Registered(payload) => {
                return Ok(ConnectOutcome::Registered {
                    topic: "/ext/register".into(),
                    payload,
                });
            }
            Authenticated::Client(identity, assigned) => (identity, assigned),
        };
        let cfg = &self.inner.config;
        if !(cfg.keepalive_min_secs..=cfg.keepalive_max_secs).contains(&req.keep_alive_secs) {
            return Err(ConnectRefusal::KeepAliveOutOfRange {
                got: req.keep_alive_secs,
                min: cfg.keepalive_min_secs,
                max: cfg.keepalive_max_secs,
            });
        }
        if let Some(will) = &req.will
            && (topic::validate_name(&will.topic).is_err()
                || !self.may(&identity, Access::Publish, &will.topic))
        {
            return Err(ConnectRefusal::NotAuthorized(format!(
                "will topic {}",
                will.topic
            )));
        }
        self.admit_connection(&identity.tenant, &identity.key)
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
            claim = Some(super::cluster::ClaimGuard::new(
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
        if req.clean_start && resumable {
            self.wipe(&slot, &mut st).await?;
        }
        let session_present = !req.clean_start && resumable;
        st.expiry_secs = expiry;
        st.disconnected_at_ms = None;
        if expiry > 0 {
            let record = slot.record(&st);
            store::write(&**self.store(), |t| records::put_session(t, &record)).await?;
            st.stored = true;
        }
        let backlog = if session_present && st.queued > 0 {
            self.read_backlog(&slot.key).await?
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
            }),
        );
        slot.transport.store(transport as u8, Ordering::Relaxed);
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
            session_present,
            kicked: kick_rx,
            session_expiry_secs: expiry,
            assigned_client_id,
        })))
    }

    /// Locks the session's slot with no live connection on it, closing the one there first and
    /// waiting for it to finish (so its unacknowledged messages and its will are dealt with
    /// before the new connection starts: takeover does not depend on timing).
    async fn take_slot(&self, identity: &ClientIdentity) -> (Arc<Slot>, SlotGuard) {
        loop {
            let slot = self.slot_for(identity);
            let mut st = slot.state.clone().lock_owned().await;
            if st.removed {
                continue;
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
    async fn adopt(&self, slot: &Arc<Slot>, st: &mut SlotState) -> Result<(), StoreError> {
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
        let Some(record) = record.filter(|r| !r.expired(now_ms()) && r.tenant == slot.tenant)
        else {
            return Ok(());
        };
        let restored = Slot::restored(&record, queued);
        let mut from = restored.state.try_lock().expect("fresh slot is unlocked");
        st.expiry_secs = from.expiry_secs;
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
    fn drop_routes(&self, slot: &Arc<Slot>, st: &mut SlotState) {
        for raw in st.subscriptions.keys() {
            if let Ok(f) = Filter::parse(raw) {
                self.inner.router.unsubscribe(&slot.tenant, &slot.key, &f);
            }
        }
        st.subscriptions.clear();
    }

    /// Discards a session's subscriptions and stored record and queue (clean start).
    async fn wipe(&self, slot: &Arc<Slot>, st: &mut SlotState) -> Result<(), StoreError> {
        self.drop_routes(slot, st);
        if st.stored || st.queued > 0 {
            store::write(&**self.store(), |t| records::delete_session(t, &slot.key)).await?;
        }
        st.stored = false;
        st.queued = 0;
        Ok(())
    }

    async fn read_backlog(&self, key: &Arc<str>) -> Result<Vec<Delivery>, StoreError> {
        let k = key.clone();
        let rows = store::read(&**self.store(), |t| {
            let k = k.clone();
            Box::pin(async move { records::read_queue(t, &k, 0).await })
        })
        .await?;
        let now = now_ms();
        Ok(rows
            .into_iter()
            .filter(|(_, m)| !m.expired(now))
            .map(|(seq, m)| Delivery {
                qos: m.qos,
                retain: m.retain,
                message: Arc::new(m),
                subscription_ids: Box::default(),
                stored_seq: Some(Box::new(seq)),
            })
            .collect())
    }

    fn may(&self, identity: &ClientIdentity, access: Access, topic_or_filter: &str) -> bool {
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

impl Hub {
    /// Checks and accepts a publish of a client, connected or not (HTTP, CoAP): topic bounds,
    /// ACL, property bounds, limits, then routing. Ok means safely accepted.
    pub async fn publish_from(
        &self,
        identity: &ClientIdentity,
        req: PublishRequest,
    ) -> Result<usize, PublishRefusal> {
        let (delivered, confirmation) = self.publish_deferred(identity, req).await?;
        if let Some(confirmation) = confirmation {
            confirmation
                .await
                .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
        }
        Ok(delivered)
    }

    /// As [`Hub::publish_from`], but a QoS 1 message that goes to consumer groups comes back
    /// with the confirmation to wait for before acknowledging it, instead of waiting here: a
    /// connection keeps reading while its earlier messages wait for their sinks, and
    /// acknowledges them in order.
    pub async fn publish_deferred(
        &self,
        identity: &ClientIdentity,
        req: PublishRequest,
    ) -> Result<(usize, Option<Confirmation>), PublishRefusal> {
        let charges = self.charges(&identity.tenant, &identity.key);
        self.publish_charged(identity, &charges, req).await
    }

    /// [`Hub::publish_deferred`] with the charges a session keeps.
    async fn publish_charged(
        &self,
        identity: &ClientIdentity,
        charges: &Charges,
        req: PublishRequest,
    ) -> Result<(usize, Option<Confirmation>), PublishRefusal> {
        let now = now_ms();
        topic::validate_name(&req.topic).map_err(PublishRefusal::TopicInvalid)?;
        self.check_topic(&req.topic)
            .map_err(|l| PublishRefusal::Limited(self.counted(l)))?;
        if !self.may(identity, Access::Publish, &req.topic) {
            tracing::warn!(session = %identity.key, topic = %req.topic, "ACL: publish refused");
            return Err(PublishRefusal::NotAuthorized(req.topic));
        }
        self.check_properties(&req.properties)
            .map_err(|l| PublishRefusal::Limited(self.counted(l)))?;
        self.admit_message(charges, req.qos != QoS::AtMostOnce, &req.payload, now)
            .await
            .map_err(|l| PublishRefusal::Limited(self.counted(l)))?;
        self.inner.stats.received[req.transport as usize][req.qos as usize]
            .fetch_add(1, Ordering::Relaxed);
        if identity.device.is_some() {
            self.inner
                .recent
                .record(&identity.key, &req.topic, &req.payload, req.qos, now);
        }
        // A request of the device to the hub on one of its own topics, handled after routing.
        let request = identity.device.as_ref().and_then(|(pk, dn)| {
            DeviceRequest::of(&req.topic, pk, dn)
                .map(|kind| (kind, req.topic.clone(), req.payload.clone(), req.qos))
        });
        let msg = Message {
            tenant: identity.tenant.clone(),
            topic: req.topic,
            payload: req.payload,
            qos: req.qos,
            retain: req.retain,
            properties: req.properties,
            expires_at_ms: req.message_expiry_secs.map(|s| now + u64::from(s) * 1000),
            origin: Origin::Client(identity.key.clone()),
            received_at_ms: now,
        };
        // Built only for products with consumer groups: most messages go nowhere else.
        let upstream = identity.device.as_ref().and_then(|(pk, dn)| {
            let destinations = self.group_destinations(pk)?;
            Some((
                destinations,
                Event {
                    id: self.next_seq(),
                    kind: EventKind::Upstream,
                    tenant: msg.tenant.clone(),
                    product_key: pk.clone(),
                    device_name: dn.clone(),
                    topic: msg.topic.clone(),
                    qos: msg.qos,
                    generated_at_ms: now,
                    payload: msg.payload.clone(),
                },
            ))
        });
        let rules = self.tenant_rules(&identity.tenant);
        let rule_input = rules
            .as_ref()
            .map(|_| (msg.topic.clone(), msg.payload.clone(), msg.qos));
        let delivered = self
            .accept(msg)
            .await
            .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
        if let (Some(rules), Some((topic, payload, qos))) = (rules, rule_input) {
            let input = super::rules::RuleInput {
                tenant: &identity.tenant,
                topic: &topic,
                payload: &payload,
                qos,
                device: identity.device.as_ref(),
                received_at_ms: now,
            };
            Box::pin(self.run_rules(&rules, &input)).await;
        }
        let mut confirmation = None;
        if let Some((destinations, event)) = upstream {
            let wait = event.qos != QoS::AtMostOnce;
            let enqueued = Box::pin(self.inner.forwarder.enqueue(&destinations, event, wait))
                .await
                .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
            confirmation = wait.then_some(enqueued);
        }
        if let Some(request) = request {
            Box::pin(self.answer_device_request(identity, request, now)).await?;
        }
        Ok((delivered, confirmation))
    }

    /// Handles a device's request to the hub on one of its own topics (boxed by the caller:
    /// most messages are not requests).
    async fn answer_device_request(
        &self,
        identity: &ClientIdentity,
        (kind, topic, payload, qos): (DeviceRequest, String, Bytes, QoS),
        now: u64,
    ) -> Result<(), PublishRefusal> {
        if let Some((pk, dn)) = identity.device.as_ref() {
            let answer = match kind {
                DeviceRequest::PropertyPost => {
                    let model = self.model_of(pk);
                    Some(alink_reply(&payload, model.as_deref()))
                }
                DeviceRequest::Topology(op) => {
                    Some(self.topology_request((pk, dn), op, &payload).await)
                }
                DeviceRequest::RrpcResponse => {
                    let id = topic.rsplit('/').next().unwrap_or_default();
                    if !self.rrpc_response(&identity.key, id, &payload) {
                        self.rrpc_reply_elsewhere(&identity.key, id, &payload).await;
                    }
                    None
                }
                DeviceRequest::Shadow => {
                    self.shadow_request(&identity.tenant, pk, dn, &payload)
                        .await
                        .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
                    None
                }
            };
            if let Some(answer) = answer {
                let reply = Message::from_hub(
                    &identity.tenant,
                    format!("{topic}_reply"),
                    answer,
                    qos.min(QoS::AtLeastOnce),
                    now,
                );
                self.accept(reply)
                    .await
                    .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// The Alink topic of property posts, answered on `..._reply`.
const PROPERTY_POST: &str = "/thing/event/property/post";

/// What a device asks of the hub by publishing on one of its own topics.
enum DeviceRequest {
    /// `/sys/{pk}/{dn}/thing/event/property/post`: answered on `..._reply` (checked by the TSL).
    PropertyPost,
    /// `/sys/{pk}/{dn}/thing/topo/add|delete|get`: answered on `..._reply`.
    Topology(TopoOp),
    /// `/sys/{pk}/{dn}/rrpc/response/{id}`: completes the RRPC call waiting for it.
    RrpcResponse,
    /// `/shadow/update/{pk}/{dn}`: answered on `/shadow/get/{pk}/{dn}`.
    Shadow,
}

impl DeviceRequest {
    /// The request a device `pk`/`dn` makes by publishing on `topic`, if any.
    fn of(topic: &str, pk: &str, dn: &str) -> Option<DeviceRequest> {
        if let Some(suffix) = topic
            .strip_prefix("/sys/")
            .and_then(|t| t.strip_prefix(pk))
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_prefix(dn))
        {
            if suffix == PROPERTY_POST {
                return Some(DeviceRequest::PropertyPost);
            }
            if suffix.starts_with("/rrpc/response/") {
                return Some(DeviceRequest::RrpcResponse);
            }
            return TopoOp::from_suffix(suffix).map(DeviceRequest::Topology);
        }
        let shadow = topic
            .strip_prefix("/shadow/update/")
            .and_then(|t| t.strip_prefix(pk))
            .and_then(|t| t.strip_prefix('/'))
            == Some(dn);
        shadow.then_some(DeviceRequest::Shadow)
    }
}

/// Alink reply to a property post: `{"id","code","data","message","method","version"}`. Code 200
/// on success, 460 (request parameter error) when the payload is not Alink JSON, and with a
/// thing model 6304 (unknown property) or 6306 (wrong type or out of range).
fn alink_reply(payload: &[u8], model: Option<&crate::tsl::ThingModel>) -> Bytes {
    let request: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    let id = request
        .as_ref()
        .and_then(|v| v.get("id"))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let params = request
        .as_ref()
        .and_then(|v| v.get("params"))
        .and_then(|p| p.as_object());
    let outcome = match (params, model) {
        (None, _) => Err((
            460,
            "request parameter error: params must be a JSON object".to_owned(),
        )),
        (Some(params), Some(model)) => model.check_post(params),
        (Some(_), None) => Ok(()),
    };
    let (code, message) = match outcome {
        Ok(()) => (200, "success".to_owned()),
        Err(e) => e,
    };
    let reply = serde_json::json!({
        "id": id, "code": code, "data": {}, "message": message,
        "method": "thing.event.property.post", "version": "1.0",
    });
    Bytes::from(reply.to_string())
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
        self.hub.publish_from(&self.identity, req).await
    }

    /// Publishes; a QoS 1 message going to consumer groups comes back with the confirmation to
    /// wait for before acknowledging it ([`Hub::publish_deferred`]).
    pub async fn publish_deferred(
        &self,
        req: PublishRequest,
    ) -> Result<(usize, Option<Confirmation>), PublishRefusal> {
        let charges = self
            .charges
            .get_or_init(|| Box::new(self.hub.charges(&self.identity.tenant, &self.identity.key)));
        self.hub.publish_charged(&self.identity, charges, req).await
    }

    /// Subscribes; returns per filter the granted QoS or the refusal, and the retained messages
    /// to send after the acknowledgement.
    pub async fn subscribe(
        &self,
        requests: Vec<SubscribeRequest>,
    ) -> (Vec<Result<QoS, SubscribeRefusal>>, Vec<Delivery>) {
        let mut results = Vec::with_capacity(requests.len());
        let mut retained = Vec::new();
        if requests.len() > self.hub.config().max_filters_per_subscribe {
            let refusal = SubscribeRefusal::Limited(
                self.hub.counted(Limited::new(LimitId::FiltersPerSubscribe)),
            );
            return (vec![Err(refusal); requests.len()], retained);
        }
        let max_subscriptions = self
            .hub
            .profile_of(&self.identity.tenant)
            .entities
            .subscriptions_per_device;
        let mut st = self.slot.state.clone().lock_owned().await;
        for req in requests {
            let filter = match Filter::parse(&req.filter) {
                Ok(f) => f,
                Err(e) => {
                    results.push(Err(SubscribeRefusal::FilterInvalid(e)));
                    continue;
                }
            };
            if let Err(limited) = self.hub.check_topic(&req.filter) {
                results.push(Err(SubscribeRefusal::Limited(self.hub.counted(limited))));
                continue;
            }
            if !self
                .hub
                .may(&self.identity, Access::Subscribe, &filter.filter)
            {
                tracing::warn!(session = %self.identity.key, filter = %req.filter, "ACL: subscribe refused");
                results.push(Err(SubscribeRefusal::NotAuthorized(req.filter)));
                continue;
            }
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
            self.hub.inner.router.subscribe(
                &self.identity.tenant,
                &self.slot.key,
                &filter,
                &record,
            );
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
                    .retained_matching(&self.identity.tenant, &filter.filter)
                {
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
            let record = self.slot.record(&st);
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
            let existed = st.subscriptions.remove(&raw).is_some();
            if let Ok(f) = Filter::parse(&raw) {
                self.hub
                    .inner
                    .router
                    .unsubscribe(&self.identity.tenant, &self.slot.key, &f);
            }
            out.push(existed);
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
    pub async fn acknowledged(&self, stored: QueueId) -> Result<(), StoreError> {
        let mut st = self.slot.state.clone().lock_owned().await;
        store::write(&**self.hub.store(), |t| {
            records::remove_queued(t, &self.slot.key, &stored)
        })
        .await?;
        st.queued = st.queued.saturating_sub(1);
        Ok(())
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
        self.done.cancel();
    }

    async fn close_inner(
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
        while let Some(d) = deliveries.try_recv() {
            pending.push(d);
        }
        if st.expiry_secs > 0 && !st.removed {
            let now = now_ms();
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
            if hub.holds(&self.slot.key).await {
                hub.remove_slot(&self.slot, &mut st).await?;
            } else {
                hub.forget_slot(&self.slot, &mut st);
            }
            if let Err(e) = hub.unclaim(&self.slot.key, true).await {
                tracing::warn!(session = %self.identity.key, error = %e, "registry not updated");
            }
        }
        drop(st);
        tracing::info!(session = %self.identity.key, normal, "disconnected");
        if current && let Some((pk, dn)) = &self.identity.device {
            hub.record_status(pk, dn, false);
            hub.notify_groups(pk, |id, now| {
                Event::status(id, &self.identity.tenant, pk, dn, false, now)
            });
        }
        if !normal && let Some(will) = &self.will {
            let msg = Message {
                tenant: self.identity.tenant.clone(),
                topic: will.topic.clone(),
                payload: will.payload.clone(),
                qos: will.qos,
                retain: will.retain,
                properties: will.properties.clone(),
                expires_at_ms: None,
                origin: Origin::Client(self.identity.key.clone()),
                received_at_ms: now_ms(),
            };
            hub.accept(msg).await?;
        }
        Ok(())
    }
}

enum Authenticated {
    Client(ClientIdentity, Option<String>),
    Registered(Bytes),
}
