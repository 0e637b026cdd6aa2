//! Shared subscriptions across nodes and members: a message goes to one member of each
//! `$share/{group}/{filter}` in the whole cluster (the accepting node learns where the members
//! are from the nodes' routing answers and picks one, online members first, in turns), and the
//! QoS 1 messages a member was given and had not acknowledged go to another member when its
//! session ends (MQTT 5 section 4.8.2; QoS 2 ones stay with it, MQTT-4.8.2-5).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Hub;
use super::cluster::{GroupLoad, PeerReply, PeerRequest};
use super::router::{Delivery, Shares};
use crate::data::message::{Message, QoS};
use crate::store::StoreError;

impl Hub {
    /// Accepts a message on a node of a cluster: a device's to the node holding it; any other
    /// to every node's own subscribers, and to one member of each shared group cluster-wide.
    pub(crate) async fn accept_in_cluster(&self, msg: &Arc<Message>) -> Result<usize, StoreError> {
        let Some(peers) = self.peers().cloned() else {
            return self.route(msg, Shares::Pick).await;
        };
        if self.device_addressed(msg).is_some() {
            let here = self.route(msg, Shares::Pick).await?;
            return Ok(here + self.route_remote(msg).await?);
        }
        let mut groups: Vec<(Option<String>, GroupLoad)> = Vec::new();
        let mut local = Vec::new();
        let mut delivered = self.route(msg, Shares::Report(&mut local)).await?;
        groups.extend(local.into_iter().map(|g| (None, g)));
        let calls = peers.others().into_iter().map(|node| {
            let request = PeerRequest::RouteUnshared((**msg).clone());
            let peers = peers.clone();
            async move { (peers.call(&node, request).await, node) }
        });
        for (reply, node) in futures_util::future::join_all(calls).await {
            match reply {
                Ok(PeerReply::Routed {
                    delivered: n,
                    groups: there,
                }) => {
                    delivered += n;
                    groups.extend(there.into_iter().map(|g| (Some(node.clone()), g)));
                }
                Ok(PeerReply::Delivered(n)) => delivered += n,
                Ok(PeerReply::Done | PeerReply::Filters(_)) => {}
                Err(e) => tracing::warn!(%node, error = %e, "routing a message not done on a node"),
            }
        }
        let mut by_group: BTreeMap<String, Vec<(Option<String>, GroupLoad)>> = BTreeMap::new();
        for (node, load) in groups {
            by_group
                .entry(load.group.clone())
                .or_default()
                .push((node, load));
        }
        for (group, places) in by_group {
            delivered += self.give_to_group(msg, &group, &places).await?;
        }
        Ok(delivered)
    }

    /// Gives a message to one member of `group`: a node chosen by its members (online ones
    /// first, in turns), which picks one of its own.
    async fn give_to_group(
        &self,
        msg: &Arc<Message>,
        group: &str,
        places: &[(Option<String>, GroupLoad)],
    ) -> Result<usize, StoreError> {
        let live = places.iter().any(|(_, l)| l.online > 0);
        let weight = |l: &GroupLoad| (if live { l.online } else { l.members }) as usize;
        let total: usize = places.iter().map(|(_, l)| weight(l)).sum();
        if total == 0 {
            return Ok(0);
        }
        let mut turn = self.inner.router.next_turn() % total;
        let chosen = places.iter().find(|(_, l)| {
            let w = weight(l);
            if turn < w {
                return true;
            }
            turn -= w;
            false
        });
        let Some((Some(node), _)) = chosen else {
            return self.route(msg, Shares::Only(group)).await;
        };
        let Some(peers) = self.peers() else {
            return Ok(0);
        };
        let request = PeerRequest::RouteShared {
            message: (**msg).clone(),
            group: group.to_owned(),
        };
        match peers.call(node, request).await {
            Ok(PeerReply::Delivered(n)) => Ok(n),
            Ok(_) => Ok(0),
            Err(e) => {
                // Another place takes it (a node that delivered and then failed to answer
                // makes this a second copy: at least once).
                tracing::warn!(%node, %group, error = %e, "shared group member unreachable: another takes it");
                let rest: Vec<_> = places
                    .iter()
                    .filter(|(n, _)| n.as_deref() != Some(node.as_str()))
                    .cloned()
                    .collect();
                Box::pin(self.give_to_group(msg, group, &rest)).await
            }
        }
    }

    /// The QoS 1 deliveries a leaving member of shared groups was given and had not
    /// acknowledged, with the group each came by. Call before its routes go.
    pub(crate) fn shared_leftovers(
        &self,
        tenant: &str,
        session: &str,
        pending: Vec<Delivery>,
    ) -> Vec<(Arc<Message>, Arc<str>)> {
        // A message two of its groups gave it is pending twice: each copy goes back to the
        // next of them. One its own subscription may have given it is not the groups' to take.
        let mut taken: Vec<(Arc<Message>, usize)> = Vec::new();
        pending
            .into_iter()
            .filter(|d| d.qos == QoS::AtLeastOnce)
            .filter_map(|d| {
                let groups = self
                    .inner
                    .router
                    .groups_of(tenant, session, &d.message.topic)?;
                let copy = match taken.iter_mut().find(|(m, _)| Arc::ptr_eq(m, &d.message)) {
                    Some((_, n)) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        taken.push((d.message.clone(), 0));
                        0
                    }
                };
                groups.get(copy).cloned().map(|g| (d.message, g))
            })
            .collect()
    }

    /// Gives a leaving member's leftovers to other members of their groups: one on this node,
    /// else one on the first other node that has one.
    pub(crate) async fn give_leftovers(&self, leftovers: Vec<(Arc<Message>, Arc<str>)>) {
        for (msg, group) in leftovers {
            let mut given = self
                .route(&msg, Shares::Only(&group))
                .await
                .unwrap_or_default();
            if let Some(peers) = self.peers().cloned() {
                for node in peers.others() {
                    if given > 0 {
                        break;
                    }
                    let request = PeerRequest::RouteShared {
                        message: (*msg).clone(),
                        group: group.to_string(),
                    };
                    if let Ok(PeerReply::Delivered(n)) = peers.call(&node, request).await {
                        given = n;
                    }
                }
            }
            if given == 0 {
                tracing::debug!(%group, topic = %msg.topic, "no other member to take a leftover");
            }
        }
    }
}
