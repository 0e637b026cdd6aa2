//! Subscriptions and retained messages per tenant, and the fan-out of an accepted message.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use super::session::OPEN_CLIENT_PREFIX;
use super::{GroupLoad, Hub};
use crate::FastMap;
use crate::data::message::{Message, Origin, QoS};
use crate::store::records::{self, SubscriptionRecord};
use crate::store::{self, StoreError};
use crate::topic::{self, Filter, TopicTree};

/// Targets of one message past which the router indexes them by session.
const INDEX_TARGETS_PAST: usize = 16;

/// A message on its way to one session, with what that session's subscription made of it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message, shared by every delivery of it.
    pub message: Arc<Message>,
    /// QoS for this subscriber: the lower of the published and the granted QoS.
    pub qos: QoS,
    /// Retain flag to send (set for retained messages sent at subscribe time).
    pub retain: bool,
    /// MQTT 5 subscription identifiers of the matching subscriptions.
    pub subscription_ids: Box<[u32]>,
    /// Where the delivery waits in the session's stored queue, if it came from there; the stored
    /// copy is removed when the client acknowledges it. Boxed: every connection's queue holds
    /// room for deliveries, and few come from the store.
    pub stored_seq: Option<Box<crate::store::records::QueueId>>,
}

#[derive(Debug, Clone)]
struct Route {
    session: Arc<str>,
    qos: QoS,
    no_local: bool,
    retain_as_published: bool,
    subscription_id: Option<u32>,
    share: Option<Arc<str>>,
}

/// One session a message goes to.
pub(crate) struct Target {
    pub(crate) session: Arc<str>,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) subscription_ids: Vec<u32>,
}

/// What a node does with the shared subscription groups a message matches.
pub(crate) enum Shares<'a> {
    /// Gives it to one member of each (this node decides alone).
    Pick,
    /// Gives it to none and reports each group's members here, for the accepting node to
    /// choose one member across the cluster.
    Report(&'a mut Vec<GroupLoad>),
    /// Gives it to one member of this group, and to no other subscription.
    Only(&'a str),
}

/// The members, on this node, of one shared subscription group a message matches.
pub(crate) struct SharedGroup {
    /// `$share/{group}/{filter}`.
    pub(crate) name: Arc<str>,
    members: Vec<Route>,
}

impl SharedGroup {
    /// How many members the group has here, and how many of them are online.
    pub(crate) fn load(&self, online: impl Fn(&str) -> bool) -> GroupLoad {
        GroupLoad {
            group: self.name.to_string(),
            online: self.members.iter().filter(|r| online(&r.session)).count() as u32,
            members: self.members.len() as u32,
        }
    }
}

#[derive(Default)]
pub(crate) struct Router {
    trees: RwLock<FastMap<String, TopicTree<Route>>>,
    retained: RwLock<HashMap<String, BTreeMap<String, Arc<Message>>>>,
    share_cursor: AtomicUsize,
}

impl Router {
    pub(crate) fn subscribe(
        &self,
        tenant: &str,
        session: &Arc<str>,
        filter: &Filter,
        sub: &SubscriptionRecord,
    ) {
        let route = Route {
            session: session.clone(),
            qos: sub.qos,
            no_local: sub.no_local,
            retain_as_published: sub.retain_as_published,
            subscription_id: sub.subscription_id,
            share: filter.share_group.as_ref().map(|_| Arc::from(filter.raw())),
        };
        let mut trees = self.trees.write().expect("router lock");
        let share = route.share.clone();
        trees
            .entry(tenant.to_owned())
            .or_default()
            .insert(&filter.filter, route, |r| {
                r.session == *session && r.share == share
            });
    }

    pub(crate) fn unsubscribe(&self, tenant: &str, session: &str, filter: &Filter) -> bool {
        let mut trees = self.trees.write().expect("router lock");
        let Some(tree) = trees.get_mut(tenant) else {
            return false;
        };
        let share = filter.share_group.as_ref().map(|_| filter.raw());
        let removed = tree.remove(&filter.filter, |r| {
            &*r.session == session && r.share.as_deref() == share.as_deref()
        });
        if tree.is_empty() {
            trees.remove(tenant);
        }
        removed > 0
    }

    /// Sessions `msg` goes to by their own subscriptions, one entry per session (the highest QoS
    /// of its matching subscriptions, every subscription identifier), and the shared groups
    /// it matches, whose members are picked by the caller ([`Router::pick`]).
    pub(crate) fn matches(&self, msg: &Message) -> (Vec<Target>, Vec<SharedGroup>) {
        // One target per session: found by a linear search while there are few (most messages
        // have one or two), through an index past that.
        let mut direct: Vec<Target> = Vec::new();
        let mut index: Option<FastMap<Arc<str>, usize>> = None;
        // Shared subscriptions by `$share/{group}/{filter}`: each gets the message once.
        let mut groups: FastMap<Arc<str>, Vec<Route>> = FastMap::default();
        {
            let trees = self.trees.read().expect("router lock");
            let Some(tree) = trees.get(&msg.tenant) else {
                return (Vec::new(), Vec::new());
            };
            tree.for_each_match(&msg.topic, |route| {
                if let Some(group) = &route.share {
                    groups.entry(group.clone()).or_default().push(route.clone());
                    return;
                }
                if route.no_local
                    && matches!(&msg.origin, Origin::Client(c) if **c == *route.session)
                {
                    return;
                }
                let qos = route.qos.min(msg.qos);
                let retain = route.retain_as_published && msg.retain;
                let found = match &index {
                    Some(index) => index.get(&route.session).copied(),
                    None => direct.iter().position(|t| t.session == route.session),
                };
                let at = found.unwrap_or_else(|| {
                    direct.push(Target {
                        session: route.session.clone(),
                        qos,
                        retain,
                        subscription_ids: Vec::new(),
                    });
                    let at = direct.len() - 1;
                    if let Some(index) = &mut index {
                        index.insert(route.session.clone(), at);
                    } else if direct.len() == INDEX_TARGETS_PAST {
                        index = Some(
                            direct
                                .iter()
                                .enumerate()
                                .map(|(i, t)| (t.session.clone(), i))
                                .collect(),
                        );
                    }
                    at
                });
                let t = &mut direct[at];
                t.qos = t.qos.max(qos);
                t.retain |= retain;
                t.subscription_ids.extend(route.subscription_id);
            });
        }
        let groups = groups
            .into_iter()
            .map(|(name, members)| SharedGroup { name, members })
            .collect();
        (direct, groups)
    }

    /// One member of a shared group to give `msg` to: online members first, in turns.
    pub(crate) fn pick(
        &self,
        group: &SharedGroup,
        msg: &Message,
        online: impl Fn(&str) -> bool,
    ) -> Target {
        let live: Vec<&Route> = group
            .members
            .iter()
            .filter(|r| online(&r.session))
            .collect();
        let pool: Vec<&Route> = if live.is_empty() {
            group.members.iter().collect()
        } else {
            live
        };
        let pick = pool[self.next_turn() % pool.len()];
        Target {
            session: pick.session.clone(),
            qos: pick.qos.min(msg.qos),
            retain: false,
            subscription_ids: pick.subscription_id.into_iter().collect(),
        }
    }

    /// A turn of the round in which shared groups' members (and nodes) take messages.
    pub(crate) fn next_turn(&self) -> usize {
        self.share_cursor.fetch_add(1, Ordering::Relaxed)
    }

    /// The shared groups `session` is a member of that `topic` matches; None when one of its
    /// own subscriptions matches too (a delivery's origin is then unknown).
    pub(crate) fn groups_of(
        &self,
        tenant: &str,
        session: &str,
        topic: &str,
    ) -> Option<Vec<Arc<str>>> {
        let trees = self.trees.read().expect("router lock");
        let mut out: Vec<Arc<str>> = Vec::new();
        let mut own = false;
        if let Some(tree) = trees.get(tenant) {
            tree.for_each_match(topic, |route| {
                if *route.session != *session {
                    return;
                }
                match &route.share {
                    Some(group) if !out.contains(group) => out.push(group.clone()),
                    Some(_) => {}
                    None => own = true,
                }
            });
        }
        (!own).then_some(out)
    }

    /// Stores or (with an empty payload) clears the retained message of a topic.
    pub(crate) fn set_retained(&self, msg: Arc<Message>) {
        let mut retained = self.retained.write().expect("retained lock");
        let tenant = retained.entry(msg.tenant.clone()).or_default();
        if msg.payload.is_empty() {
            tenant.remove(&msg.topic);
        } else {
            tenant.insert(msg.topic.clone(), msg);
        }
    }

    pub(crate) fn retained_matching(&self, tenant: &str, filter: &str) -> Vec<Arc<Message>> {
        let retained = self.retained.read().expect("retained lock");
        retained
            .get(tenant)
            .map(|m| {
                m.values()
                    .filter(|msg| topic::matches(filter, &msg.topic))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The device a `/sys/{pk}/{dn}/...` (also as `/ext/rrpc/{id}/sys/...`), `/shadow/get/{pk}/{dn}`,
/// `/ext/ntp/{pk}/{dn}/response`, `/ota/device/upgrade/{pk}/{dn}` or
/// `/ext/session/{pk}/{dn}/combine/..._reply` topic addresses: the Link SDK never subscribes to
/// its own system topics (nor to upgrade pushes), a shadow's pending desired state must reach a device that has not subscribed
/// yet, and the hub answers the time whether or not the device subscribed first, so the hub
/// delivers them without a subscription.
pub(crate) fn sys_topic_device(topic: &str) -> Option<String> {
    // A synchronous service call, `/ext/rrpc/{id}/sys/{pk}/{dn}/...`, addresses its device too.
    let topic = crate::topic::rrpc_wrapped(topic)
        .filter(|(_, wrapped)| wrapped.starts_with("/sys/"))
        .map_or(topic, |(_, wrapped)| wrapped);
    let mut levels = topic.split('/');
    match (
        levels.next(),
        levels.next(),
        levels.next(),
        levels.next(),
        levels.next(),
        levels.next(),
    ) {
        (Some(""), Some("sys"), Some(pk), Some(dn), Some(_), _) => {
            Some(super::device_session_key(pk, dn))
        }
        (Some(""), Some("shadow"), Some("get"), Some(pk), Some(dn), None) => {
            Some(super::device_session_key(pk, dn))
        }
        (Some(""), Some("ota"), Some("device"), Some("upgrade"), Some(pk), Some(dn))
            if levels.next().is_none() =>
        {
            Some(super::device_session_key(pk, dn))
        }
        (Some(""), Some("ext"), Some("ntp"), Some(pk), Some(dn), Some("response"))
            if levels.next().is_none() =>
        {
            Some(super::device_session_key(pk, dn))
        }
        (Some(""), Some("ext"), Some("session"), Some(pk), Some(dn), Some("combine"))
            if levels.next().is_some_and(|op| op.ends_with("_reply")) =>
        {
            Some(super::device_session_key(pk, dn))
        }
        _ => None,
    }
}

impl Hub {
    /// Accepts a message: keeps it if retained, then hands it to every session it goes to.
    /// Returns the number of sessions. QoS 1/2 deliveries to offline persistent sessions are
    /// durable when this returns.
    ///
    /// Runs for every message: what most messages do not need (a store write for retained
    /// ones, other nodes, a full queue) is boxed, to keep the future every publish builds small.
    pub(crate) async fn accept(&self, msg: Message) -> Result<usize, StoreError> {
        let msg = Arc::new(msg);
        if msg.retain {
            Box::pin(store::write(&**self.store(), |t| {
                if msg.payload.is_empty() {
                    records::delete_retained(t, &msg.tenant, &msg.topic);
                } else {
                    records::put_retained(t, &msg);
                }
            }))
            .await?;
        }
        if self.peers().is_none() {
            return self.route(&msg, Shares::Pick).await;
        }
        Box::pin(self.accept_in_cluster(&msg)).await
    }

    /// Routes a message to this node's sessions only: one another node accepted (its retained
    /// copy is already stored), or a broadcast's share of this node.
    pub(crate) async fn accept_routed(&self, msg: Message) -> Result<usize, StoreError> {
        let msg = Arc::new(msg);
        let here = self.route(&msg, Shares::Pick).await?;
        if here == 0
            && self.peers().is_some()
            && let Some(key) = super::cluster::device_of_topic(&msg.topic)
            && self.slot(&key).is_none()
        {
            // The device's session left this node meanwhile: its stored queue.
            return self.queue_in_store(&key, &msg).await;
        }
        Ok(here)
    }

    /// Whether `tenant` is the open broker's (whose clients may read `$SYS`).
    fn is_open_tenant(&self, tenant: &str) -> bool {
        let open = &self.inner.config.open_broker;
        open.enabled && open.tenant == tenant
    }

    /// Hands a message to the sessions of this node it goes to, its shared groups as `shares`
    /// says.
    pub(crate) async fn route(
        &self,
        msg: &Arc<Message>,
        shares: Shares<'_>,
    ) -> Result<usize, StoreError> {
        // One group's share of a message already routed here: no second count, no retained copy.
        let only = matches!(shares, Shares::Only(_));
        let open_tenant = self.is_open_tenant(&msg.tenant);
        if !only {
            self.inner.stats.messages_in.fetch_add(1, Ordering::Relaxed);
            if open_tenant {
                self.inner
                    .stats
                    .open_broker
                    .received
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.peers().is_some()
            && let Some(key) = super::cluster::device_of_topic(&msg.topic)
            && let Some(slot) = self.slot(&key)
        {
            // A connect taking the session over from another node holds the slot until the
            // session (its subscriptions) is in place: route after it.
            Box::pin(slot.settled()).await;
        }
        if msg.retain && !only {
            self.inner.router.set_retained(msg.clone());
        }
        let online = |key: &str| self.slot(key).is_some_and(|s| s.is_online());
        let router = &self.inner.router;
        let (mut targets, groups) = router.matches(msg);
        match shares {
            Shares::Pick => targets.extend(groups.iter().map(|g| router.pick(g, msg, online))),
            Shares::Report(loads) => loads.extend(groups.iter().map(|g| g.load(online))),
            Shares::Only(name) => {
                targets = groups
                    .iter()
                    .filter(|g| *g.name == *name)
                    .map(|g| router.pick(g, msg, online))
                    .collect();
            }
        }
        if let Some(device) = sys_topic_device(&msg.topic).filter(|_| !only) {
            let from_device = matches!(&msg.origin, Origin::Client(c) if **c == *device);
            // Only a message of the device's own tenant reaches it this way (a tenant's rule
            // may name any topic).
            let same_tenant = self.slot(&device).is_some_and(|s| s.tenant == msg.tenant);
            if same_tenant && !from_device && !targets.iter().any(|t| *t.session == *device) {
                targets.push(Target {
                    session: Arc::from(device.as_str()),
                    qos: msg.qos.min(QoS::AtLeastOnce),
                    retain: false,
                    subscription_ids: Vec::new(),
                });
            }
        }
        if self.keep_denied_from_open_clients(&msg.tenant, &msg.topic) {
            targets.retain(|t| !t.session.starts_with(OPEN_CLIENT_PREFIX));
        }
        let mut delivered = 0;
        let mut to_store = Vec::new();
        for target in targets {
            let Some(slot) = self.slot(&target.session) else {
                continue;
            };
            let delivery = Delivery {
                message: msg.clone(),
                qos: target.qos,
                retain: target.retain,
                subscription_ids: target.subscription_ids.into_boxed_slice(),
                stored_seq: None,
            };
            if delivery.qos != QoS::AtMostOnce && slot.is_persistent() {
                to_store.push((slot, delivery));
                continue;
            }
            if let Err(delivery) = slot.try_deliver(self, delivery) {
                Box::pin(slot.deliver(self, delivery)).await?;
            }
            delivered += 1;
        }
        if !to_store.is_empty() {
            delivered += Box::pin(self.deliver_stored(to_store)).await?;
        }
        if open_tenant {
            self.inner
                .stats
                .open_broker
                .sent
                .fetch_add(delivered as u64, Ordering::Relaxed);
        }
        Ok(delivered)
    }
}
