//! The hub's side of a multi-node deployment: several hubs share one store and reach each other
//! through [`Peers`] (the server implements it over TCP, with node leases in the store).
//!
//! - A session belongs to one node at a time, written in the store's registry (`R\0{key}`); a
//!   connection on another node claims it, the previous node closes its connection and persists
//!   the session, and the new node takes it from the store.
//! - A message for a device (`/sys/{pk}/{dn}/...`, `/{pk}/{dn}/...`) goes to the node holding the
//!   device's session; when that node is gone, QoS 1 messages go to the session's stored queue.
//!   Other topics (the open broker's) go to every node, each routing to its own sessions.
//! - Broadcasts, RRPC answers and administrative disconnects reach the node that can serve them.
//! - Tenant-level rate limits are split between the live nodes; monthly usage is re-read from the
//!   store's counters, which every node adds to (docs/operations.md says how exact this is).

mod remote;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::router::Shares;
use super::{ConnectRefusal, Hub, HubError, KickReason, device_session_key};
use crate::data::message::Message;
use crate::store::records::{self, RegistryEntry};
use crate::store::{self, StoreError, transact};

/// Stored sessions read per transaction by the cluster-wide sweep.
pub(crate) const SWEEP_PAGE: usize = 1000;

/// How long a node waits for another to release a session it takes over.
const RELEASE_WAIT: Duration = Duration::from_secs(6);

/// A request from one node to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Route a message accepted elsewhere to this node's sessions (and no further).
    Route(Message),
    /// Close the session's connection here, persist it, and let it go: another node takes it.
    Release {
        /// Session key.
        session: String,
    },
    /// Keep (or, empty, drop) a retained message in this node's index; it is in the store already.
    Retain(Message),
    /// Close the session's connection here (the device was disabled or deleted).
    Kick {
        /// Session key.
        session: String,
    },
    /// Send a message to this node's online devices of a product, on
    /// `/sys/{productKey}/{deviceName}{suffix}` (a broadcast, a configuration push).
    Cast {
        /// Tenant.
        tenant: String,
        /// ProductKey.
        product_key: String,
        /// The topic after the device's `/sys/{pk}/{dn}`.
        suffix: String,
        /// Payload.
        payload: Bytes,
    },
    /// Route a message accepted elsewhere to this node's sessions, save its shared
    /// subscriptions: their groups are reported ([`PeerReply::Routed`]) and the accepting node
    /// gives the message to one member of each, on whichever node.
    RouteUnshared(Message),
    /// Give a message to one member, on this node, of a shared subscription group.
    RouteShared {
        /// The message.
        message: Message,
        /// `$share/{group}/{filter}`.
        group: String,
    },
    /// The filters a session held here subscribes to ([`PeerReply::Filters`]).
    Filters {
        /// Session key.
        session: String,
    },
    /// A device's RRPC answer, for the node whose caller waits for it.
    RrpcReply {
        /// The device's session key.
        session: String,
        /// The RRPC id.
        id: u64,
        /// The answer.
        payload: Bytes,
    },
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerReply {
    /// Sessions (or devices) the request reached on that node.
    Delivered(usize),
    /// Sessions a [`PeerRequest::RouteUnshared`] reached, and the shared groups it matched there.
    Routed {
        /// Sessions reached.
        delivered: usize,
        /// The matching groups' members on that node.
        groups: Vec<GroupLoad>,
    },
    /// The filters of a [`PeerRequest::Filters`] session, none when it is not online there.
    Filters(Option<Vec<String>>),
    /// Done.
    Done,
}

/// The members, on one node, of a shared subscription group a message matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLoad {
    /// `$share/{group}/{filter}`.
    pub group: String,
    /// Members whose session is online.
    pub online: u32,
    /// Members.
    pub members: u32,
}

/// A request that did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The node could not be reached or did not answer in time.
    #[error("node {node} unreachable: {reason}")]
    Unreachable {
        /// Which node.
        node: String,
        /// Why.
        reason: String,
    },
    /// The node answered with an error.
    #[error("node {node} failed: {reason}")]
    Failed {
        /// Which node.
        node: String,
        /// What it said.
        reason: String,
    },
}

/// The other nodes of the cluster, as the hub needs them.
#[async_trait]
pub trait Peers: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// Whether `node` holds a live lease.
    fn is_live(&self, node: &str) -> bool;
    /// The other live nodes.
    fn others(&self) -> Vec<String>;
    /// Sends a request to a node and waits for its answer.
    async fn call(&self, node: &str, request: PeerRequest) -> Result<PeerReply, PeerError>;
}

/// Gives a session's claim back unless the connect that made it succeeded ([`ClaimGuard::keep`]):
/// a failed connect must not leave the registry pointing at a node without the session.
pub(crate) struct ClaimGuard {
    hub: Hub,
    key: String,
    /// The entry the claim replaced, put back if the connect fails.
    previous: Option<RegistryEntry>,
    kept: bool,
}

impl ClaimGuard {
    pub(crate) fn new(hub: &Hub, key: &str, previous: Option<RegistryEntry>) -> ClaimGuard {
        ClaimGuard {
            hub: hub.clone(),
            key: key.to_owned(),
            previous,
            kept: false,
        }
    }

    /// The connect succeeded: the claim stays.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let (hub, key, previous) = (
            self.hub.clone(),
            std::mem::take(&mut self.key),
            self.previous.take(),
        );
        tokio::spawn(async move { hub.abandon_claim(&key, previous).await });
    }
}

/// The device a topic addresses, as its session key: `/sys/{pk}/{dn}/...`,
/// `/shadow/get/{pk}/{dn}`, `/{pk}/{dn}/...`, `/ext/ntp/{pk}/{dn}/response`, `/ext/session/{pk}/{dn}/combine/..._reply` and RRPC calls
/// wrapping one of them (devices may use only their own topics, so these are the only sessions
/// that can subscribe to them).
pub(super) fn device_of_topic(topic: &str) -> Option<String> {
    if let Some((_, wrapped)) = crate::topic::rrpc_wrapped(topic) {
        return device_of_topic(wrapped);
    }
    let mut levels = topic.split('/');
    if levels.next() != Some("") {
        return None;
    }
    let (a, b, c, d) = (levels.next()?, levels.next()?, levels.next(), levels.next());
    match (a, b) {
        ("sys", pk) => Some(device_session_key(pk, c?)).filter(|_| d.is_some()),
        ("shadow", "get") => Some(device_session_key(c?, d?)),
        ("ext", "ntp") => {
            Some(device_session_key(c?, d?)).filter(|_| levels.next() == Some("response"))
        }
        ("ext", "session") => Some(device_session_key(c?, d?)).filter(|_| {
            levels.next() == Some("combine")
                && levels.next().is_some_and(|op| op.ends_with("_reply"))
        }),
        ("shadow" | "ext" | "broadcast", _) => None,
        (pk, dn) if !pk.is_empty() && !dn.is_empty() && c.is_some() => {
            Some(device_session_key(pk, dn))
        }
        _ => None,
    }
}

impl Hub {
    /// The cluster this hub is part of, if any.
    pub(crate) fn peers(&self) -> Option<&Arc<dyn Peers>> {
        self.inner.peers.as_ref()
    }

    /// Answers a request of another node.
    pub async fn peer_request(&self, request: PeerRequest) -> Result<PeerReply, HubError> {
        match request {
            PeerRequest::Route(message) => {
                Ok(PeerReply::Delivered(self.accept_routed(message).await?))
            }
            PeerRequest::RouteUnshared(message) => {
                let mut groups = Vec::new();
                let delivered = self
                    .route(&Arc::new(message), Shares::Report(&mut groups))
                    .await?;
                Ok(PeerReply::Routed { delivered, groups })
            }
            PeerRequest::RouteShared { message, group } => Ok(PeerReply::Delivered(
                self.route(&Arc::new(message), Shares::Only(&group)).await?,
            )),
            PeerRequest::Retain(message) => {
                self.inner.router.set_retained(Arc::new(message));
                Ok(PeerReply::Done)
            }
            PeerRequest::Release { session } => {
                self.release_local(&session).await;
                Ok(PeerReply::Done)
            }
            PeerRequest::Kick { session } => {
                self.kick_local(&session, KickReason::AdministrativeAction)
                    .await;
                Ok(PeerReply::Done)
            }
            PeerRequest::Cast {
                tenant,
                product_key,
                suffix,
                payload,
            } => Ok(PeerReply::Delivered(
                self.cast_local(&tenant, &product_key, &suffix, payload)
                    .await?,
            )),
            PeerRequest::Filters { session } => Ok(PeerReply::Filters(
                self.online_filters_local(&session).await,
            )),
            PeerRequest::RrpcReply {
                session,
                id,
                payload,
            } => {
                self.rrpc_response(&session, &id.to_string(), &payload);
                Ok(PeerReply::Done)
            }
        }
    }

    /// Where a session is, per the registry.
    pub(crate) async fn registry_entry(
        &self,
        key: &str,
    ) -> Result<Option<RegistryEntry>, StoreError> {
        let key = key.to_owned();
        transact(&**self.store(), |t| {
            let key = key.clone();
            Box::pin(async move { records::get_registry(t, &key).await })
        })
        .await
    }

    /// Whether a device's session is connected on this node or on another live one.
    pub(crate) async fn online_anywhere(&self, key: &str) -> Result<bool, StoreError> {
        if self.slot(key).is_some_and(|s| s.is_online()) {
            return Ok(true);
        }
        Ok(self.online_elsewhere(key).await?.is_some())
    }

    /// The other live node a session is connected on, per the registry (None outside a cluster).
    async fn online_elsewhere(
        &self,
        key: &str,
    ) -> Result<Option<(&Arc<dyn Peers>, String)>, StoreError> {
        let Some(peers) = self.peers() else {
            return Ok(None);
        };
        Ok(self
            .registry_entry(key)
            .await?
            .filter(|e| e.online && e.node != peers.node_id() && peers.is_live(&e.node))
            .map(|e| (peers, e.node)))
    }

    /// The filters the session `key` subscribes to when it is online on this node.
    async fn online_filters_local(&self, key: &str) -> Option<Vec<String>> {
        let slot = self.slot(key).filter(|s| s.is_online())?;
        Some(slot.filters().await)
    }

    /// The filters the session `key` subscribes to, on whichever node it is online (None: not
    /// online anywhere, or its node did not answer).
    pub(crate) async fn online_filters(
        &self,
        key: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        if let Some(filters) = self.online_filters_local(key).await {
            return Ok(Some(filters));
        }
        let Some((peers, node)) = self.online_elsewhere(key).await? else {
            return Ok(None);
        };
        let request = PeerRequest::Filters {
            session: key.to_owned(),
        };
        match peers.call(&node, request).await {
            Ok(PeerReply::Filters(filters)) => Ok(filters),
            Ok(_) => Ok(None),
            Err(e) => {
                tracing::warn!(session = %key, error = %e, "holding node unreachable: the session's filters are unknown");
                Ok(None)
            }
        }
    }

    /// Writes that this node holds `key` (connected or not); returns the previous holder.
    pub(crate) async fn claim(
        &self,
        key: &str,
        online: bool,
    ) -> Result<Option<RegistryEntry>, StoreError> {
        let Some(peers) = self.peers() else {
            return Ok(None);
        };
        let entry = RegistryEntry {
            node: peers.node_id().to_owned(),
            online,
            since_ms: self.now_ms(),
        };
        let key = key.to_owned();
        transact(&**self.store(), |t| {
            let (key, entry) = (key.clone(), entry.clone());
            Box::pin(async move {
                let previous = records::get_registry(t, &key).await?;
                records::put_registry(t, &key, &entry);
                Ok(previous)
            })
        })
        .await
    }

    /// Puts back the registry entry a claim replaced, unless another node claimed since.
    pub(crate) async fn restore_claim(
        &self,
        key: &str,
        previous: Option<RegistryEntry>,
    ) -> Result<(), StoreError> {
        let Some(peers) = self.peers() else {
            return Ok(());
        };
        let (me, key) = (peers.node_id().to_owned(), key.to_owned());
        transact(&**self.store(), |t| {
            let (me, key, previous) = (me.clone(), key.clone(), previous.clone());
            Box::pin(async move {
                if records::get_registry(t, &key)
                    .await?
                    .is_some_and(|e| e.node == me)
                {
                    match &previous {
                        Some(p) => records::put_registry(t, &key, p),
                        None => records::delete_registry(t, &key),
                    }
                }
                Ok(())
            })
        })
        .await
    }

    /// After a connection on this node ended: the registry says the session is offline here, or
    /// forgets it (`gone`), unless another node has claimed it meanwhile.
    pub(crate) async fn unclaim(&self, key: &str, gone: bool) -> Result<(), StoreError> {
        let Some(peers) = self.peers() else {
            return Ok(());
        };
        let me = peers.node_id().to_owned();
        let key = key.to_owned();
        let now = self.now_ms();
        transact(&**self.store(), |t| {
            let (key, me) = (key.clone(), me.clone());
            Box::pin(async move {
                match records::get_registry(t, &key).await? {
                    Some(e) if e.node == me && gone => records::delete_registry(t, &key),
                    Some(mut e) if e.node == me => {
                        e.online = false;
                        e.since_ms = now;
                        records::put_registry(t, &key, &e);
                    }
                    _ => {}
                }
                Ok(())
            })
        })
        .await
    }

    /// Asks the node that held a session before this connection to let it go, and waits for it
    /// (its connection closed, its session and unacknowledged messages persisted). A live node
    /// that does not answer refuses the connect: two nodes must not both serve the session.
    pub(crate) async fn take_over_from(
        &self,
        key: &str,
        previous: Option<RegistryEntry>,
    ) -> Result<(), ConnectRefusal> {
        let Some(peers) = self.peers() else {
            return Ok(());
        };
        let Some(previous) = previous.filter(|p| p.node != peers.node_id()) else {
            return Ok(());
        };
        if !peers.is_live(&previous.node) {
            // A node that is gone persisted what it could; the store has the rest.
            return Ok(());
        }
        let release = peers.call(
            &previous.node,
            PeerRequest::Release {
                session: key.to_owned(),
            },
        );
        let failed = match tokio::time::timeout(RELEASE_WAIT, release).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("node {} did not answer in time", previous.node),
        };
        tracing::warn!(session = %key, reason = %failed, "takeover: the session was not released");
        Err(ConnectRefusal::Unavailable(format!(
            "the node holding the session did not let it go: {failed}"
        )))
    }

    /// Whether this node may write the session's state: no node holds it in the registry, or
    /// this one does (always, outside a cluster).
    pub(crate) async fn holds(&self, key: &str) -> bool {
        let Some(peers) = self.peers() else {
            return true;
        };
        match self.registry_entry(key).await {
            Ok(entry) => entry.is_none_or(|e| e.node == peers.node_id()),
            Err(e) => {
                tracing::warn!(session = %key, error = %e, "registry unreadable");
                true
            }
        }
    }

    /// After a connect: when another node claimed the session meanwhile (two connects at
    /// once), the last claim holds and this node's connection goes.
    pub(crate) async fn verify_claim(&self, key: &str) {
        let Some(peers) = self.peers() else {
            return;
        };
        if let Ok(Some(entry)) = self.registry_entry(key).await
            && entry.node != peers.node_id()
        {
            tracing::info!(session = %key, node = %entry.node, "session claimed by another node since");
            self.release_local(key).await;
        }
    }

    /// Tells the connections closed from now on to go to `server` (MQTT 5 server reference):
    /// this node is leaving and another serves its devices.
    pub fn set_handover(&self, server: Option<String>) {
        *self.inner.handover.write().expect("handover lock") = server;
    }

    /// Where a connection closed now should go instead, if this node is handing over.
    pub fn handover_reference(&self) -> Option<String> {
        self.inner.handover.read().expect("handover lock").clone()
    }

    /// How many nodes are live: tenant-level rate limits are split between them.
    pub fn set_cluster_size(&self, nodes: usize) {
        self.inner.limiter.set_nodes(nodes.max(1) as u64);
    }

    /// Reads everything the hub caches of the configuration (profiles and tenants' profiles,
    /// consumer groups, rules, API keys, thing models, topic categories, parsing scripts): at start, and again
    /// when another node changed it. Monthly usage is loaded separately
    /// ([`Hub::refresh_usage`]).
    pub async fn reload_config(&self) -> Result<(), HubError> {
        self.load_profile_maps().await?;
        self.load_groups().await?;
        self.load_rules().await?;
        self.load_api_keys().await?;
        self.load_models().await?;
        self.load_topic_categories().await?;
        self.load_ota().await?;
        self.load_scripts().await?;
        Ok(())
    }

    /// Marks the configuration as changed, so that the other nodes reload it.
    pub async fn config_changed(&self) -> Result<(), StoreError> {
        if self.peers().is_none() {
            return Ok(());
        }
        store::write(&**self.store(), records::bump_config_version).await
    }

    /// Brings the monthly usage of every tenant up to date with what all nodes added to the
    /// store (each node flushes its counters there).
    pub async fn refresh_usage(&self) -> Result<(), StoreError> {
        let store = self.store().clone();
        self.inner.meter.flush(&*store).await?;
        let now = self.now_ms();
        for tenant in self.inner.meter.tenants() {
            self.inner.meter.load_month(&*store, &tenant, now).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_the_device_they_address() {
        let dev = |t: &str| device_of_topic(t);
        assert_eq!(dev("/sys/pk/dn/rrpc/request/1").as_deref(), Some("pk/dn"));
        assert_eq!(dev("/pk/dn/user/get").as_deref(), Some("pk/dn"));
        assert_eq!(dev("/shadow/get/pk/dn").as_deref(), Some("pk/dn"));
        assert_eq!(dev("/sys/pk"), None);
        assert_eq!(dev("/shadow/update/pk/dn"), None);
        assert_eq!(dev("/pk/dn"), None, "a device's topics have a third level");
        assert_eq!(dev("sensors/one/two"), None, "not under a device");
        assert_eq!(dev("/ext/register/x"), None);
        assert_eq!(dev("/ext/rrpc/7/pk/dn/user/cmd").as_deref(), Some("pk/dn"));
        assert_eq!(
            dev("/ext/rrpc/7/sys/pk/dn/thing/service/s").as_deref(),
            Some("pk/dn")
        );
        assert_eq!(dev("/ext/ntp/pk/dn/response").as_deref(), Some("pk/dn"));
        assert_eq!(dev("/ext/ntp/pk/dn/request"), None);
        let reply = dev("/ext/session/pk/dn/combine/batch_login_reply");
        assert_eq!(reply.as_deref(), Some("pk/dn"));
        assert_eq!(dev("/ext/session/pk/dn/combine/batch_login"), None);
    }
}
