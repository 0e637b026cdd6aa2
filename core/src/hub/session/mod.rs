//! Connecting, sessions and their lifecycle: authentication, takeover (one connection per
//! session key across the hub), persistent sessions with their stored queue, wills, and the
//! per-session delivery queue with its slow-subscriber policy.
//!
//! This module holds the requests, outcomes and refusals transports see, and the session's slot;
//! the work is in one file per role: [`slot`] (deliveries and the hub's map of slots), [`connect`]
//! (authentication and takeover), [`publish`] (the publish pipeline), [`alink`] (device requests
//! answered by the hub), [`gateway`] (sub-devices' sessions on their gateway's connection) and
//! [`handle`] (the [`Session`] a transport holds).

mod alink;
mod connect;
mod gateway;
mod handle;
mod publish;
mod slot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};
use tokio_util::sync::CancellationToken;

use super::Hub;
use super::limits::Charges;
use super::queue::{DeliveryReceiver, DeliverySender};
use super::router::Delivery;
pub use crate::admission::{ConnectRefusal, PublishRefusal, SubscribeRefusal};
use crate::data::message::{Properties, QoS};
use crate::store::StoreError;
use crate::store::records::{QueueId, SubscriptionRecord};
pub(crate) use alink::{alink_answer, alink_request};
pub(crate) use connect::OPEN_CLIENT_PREFIX;
pub(crate) use gateway::Gateways;

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
    /// MQTT 5 Will Delay Interval: published this long after the connection ends, unless the
    /// session is resumed first, or when the session ends if that is sooner; 0 at once.
    pub delay_secs: u32,
}

/// A DISCONNECT gave a session that began without expiry one (MQTT-3.14.2-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session began with no expiry and cannot be given one at DISCONNECT")]
pub struct SessionExpiryRefused;

/// The transport a client came in by: registered by the transport itself with
/// [`Hub::transport`](crate::hub::Hub::transport) (core knows none by name); its label names it
/// in the hub's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportKind(pub(crate) u8);

impl TransportKind {
    /// Most transports one hub serves (the counters are fixed arrays of this size).
    pub const MAX: usize = 16;

    /// Its place in the hub's counters.
    pub(crate) fn index(self) -> usize {
        usize::from(self.0)
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
    /// Whether the hub may set the keep-alive instead (MQTT 5 Server Keep Alive): one outside
    /// the accepted range is then replaced by the nearest allowed value rather than refused.
    pub server_keep_alive: bool,
    /// Will message.
    pub will: Option<Will>,
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
        /// `/ext/register` or `/ext/regnwl`.
        topic: String,
        /// `{"productKey","deviceName","deviceSecret"}`, or `{"productKey","deviceName",
        /// "clientId","deviceToken"}`.
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
    /// Those of the backlog the last connection sent without their acknowledgement completing,
    /// by stored queue id: sent again under the same packet id (MQTT-4.4.0-1).
    pub resend: HashMap<QueueId, Unacknowledged>,
    /// Whether a stored session was resumed.
    pub session_present: bool,
    /// Fires when the hub closes this connection, with the reason.
    pub kicked: oneshot::Receiver<KickReason>,
    /// Session expiry granted, seconds.
    pub session_expiry_secs: u32,
    /// The keep-alive granted: the requested one, or the nearest allowed value when the hub
    /// may set it ([`ConnectRequest::server_keep_alive`]).
    pub keep_alive_secs: u16,
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

struct Live {
    tx: DeliverySender,
    kick: Option<oneshot::Sender<KickReason>>,
    done: CancellationToken,
    generation: u64,
    /// Set when the session is a sub-device's, carried by this gateway connection.
    gateway: Option<Arc<gateway::GatewayLink>>,
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
    /// What the last connection sent of the stored queue and the client did not fully
    /// acknowledge (kept in memory: a node that restarts sends them with new packet ids).
    unacknowledged: HashMap<QueueId, Unacknowledged>,
}

/// A stored delivery a connection sent whose acknowledgement had not completed when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unacknowledged {
    /// The packet id it went under.
    pub packet_id: std::num::NonZeroU16,
    /// QoS 2 with PUBREC received: what is owed next is PUBREL, not the PUBLISH.
    pub released: bool,
}

/// A session's place in the hub, online or not.
pub(crate) struct Slot {
    pub(crate) key: Arc<str>,
    pub(crate) tenant: String,
    online: AtomicBool,
    /// Whether the session outlives its connection (expiry > 0): its QoS 1/2 deliveries are
    /// stored before they are handed over. Mirrors `SlotState::expiry_secs` for the lock-free
    /// delivery path.
    persistent: AtomicBool,
    /// The transport of the connection while online ([`TransportKind`] as u8).
    transport: AtomicU8,
    /// Online through a gateway's connection rather than one of its own.
    carried: AtomicBool,
    state: Arc<Mutex<SlotState>>,
    /// The live connection's queue, for deliveries that find room in it without taking the
    /// state lock (an async mutex: two locks of its own per delivery). Set and cleared with
    /// `SlotState::live`, under that lock (and cleared when the slot is forgotten, so those
    /// deliveries take the lock): a delivery that got in before it was cleared is in the queue
    /// the closing connection drains.
    live_tx: std::sync::RwLock<Option<DeliverySender>>,
}

type SlotGuard = OwnedMutexGuard<SlotState>;

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

enum Authenticated {
    Client(ClientIdentity, Option<String>),
    Registered(crate::auth::Registration, Bytes),
}
