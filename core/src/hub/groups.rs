//! Consumer groups (server-side subscription) and the events their products' devices produce.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Hub, HubError};
use crate::data::event::{Destination, Event};
use crate::data::model::{self, ConsumerGroup};
use crate::egress::SinkStatsSnapshot;
use crate::limits::LimitId;
use crate::sink::{ConsumerCredentials, Sink};
use crate::store::{records, transact};

/// Where events go, rebuilt from the stored groups whenever one changes.
#[derive(Default)]
pub(crate) struct GroupRoutes {
    /// Each product's destinations: the queues of the consumer groups it is associated with.
    by_product: crate::FastMap<String, Arc<[Arc<Destination>]>>,
    /// Each group's queue by `{tenant}/{id}`, for rules (no store read per rule output).
    by_id: HashMap<String, Arc<Destination>>,
}

/// A notification for consumer groups: where it goes, and what.
pub(crate) type Notification = (Arc<[Arc<Destination>]>, Event);

/// Notifications waiting for [`Hub::notify_forever`] before they go on their own.
pub(crate) const NOTIFICATION_QUEUE: usize = 65_536;

impl Hub {
    /// Attaches a sink: events for its destinations flow to it from now on, starting with those
    /// its outbox kept from earlier.
    pub fn attach_sink(&self, sink: Arc<dyn Sink>) {
        let cfg = &self.inner.config;
        let settings = crate::egress::forward::ForwarderSettings {
            buffer: cfg.sink_buffer_capacity,
            batch: cfg.sink_batch_size,
            send_timeout: std::time::Duration::from_millis(cfg.sink_send_timeout_ms),
        };
        self.inner.forwarder.attach(sink, settings);
    }

    /// Counters of every attached sink.
    pub fn sink_stats(&self) -> Vec<SinkStatsSnapshot> {
        self.inner.forwarder.stats()
    }

    /// Checks every attached sink can reach its destination.
    pub async fn sinks_ready(&self) -> Result<(), String> {
        for sink in self.inner.forwarder.sinks() {
            sink.healthcheck()
                .await
                .map_err(|e| format!("sink {}: {e}", sink.name()))?;
        }
        Ok(())
    }

    pub(crate) async fn load_groups(&self) -> Result<(), HubError> {
        let groups = transact(&**self.store(), |t| {
            Box::pin(async move { records::list_groups(t, None).await })
        })
        .await?;
        let mut routes: HashMap<String, Vec<Arc<Destination>>> = HashMap::new();
        let mut by_id = HashMap::new();
        for g in &groups {
            let destination = Arc::new(destination(g));
            by_id.insert(format!("{}/{}", g.tenant, g.id), destination.clone());
            for pk in &g.products {
                routes
                    .entry(pk.clone())
                    .or_default()
                    .push(destination.clone());
            }
        }
        let by_product = routes
            .into_iter()
            .map(|(pk, d)| (pk, Arc::from(d)))
            .collect();
        *self.inner.group_routes.write().expect("group routes lock") =
            GroupRoutes { by_product, by_id };
        Ok(())
    }

    /// The queues a product's events go to, if any.
    pub(crate) fn group_destinations(&self, pk: &str) -> Option<Arc<[Arc<Destination>]>> {
        let routes = self.inner.group_routes.read().expect("group routes lock");
        routes.by_product.get(pk).cloned()
    }

    /// The queue of a tenant's consumer group, if it exists.
    pub(crate) fn group_destination(&self, tenant: &str, id: &str) -> Option<Arc<Destination>> {
        let routes = self.inner.group_routes.read().expect("group routes lock");
        routes.by_id.get(&format!("{tenant}/{id}")).cloned()
    }

    /// Sends a notification about a device of product `pk` to the product's consumer groups, in
    /// the background but in the order notifications happen (a device's online event before its
    /// offline one); `make` gets a message id and the time.
    pub(crate) fn notify_groups(&self, pk: &str, make: impl FnOnce(u64, u64) -> Event) {
        let Some(destinations) = self.group_destinations(pk) else {
            return;
        };
        let event = make(self.next_seq(), self.now_ms());
        if let Err(e) = self.inner.notifications.try_send((destinations, event)) {
            // Thousands waiting: this one goes on its own, possibly out of order.
            let (destinations, event) = e.into_inner();
            let hub = self.clone();
            tokio::spawn(async move { hub.notify(&destinations, event).await });
        }
    }

    /// Hands the notifications to the sinks' workers one after another, until the hub stops.
    pub(crate) async fn notify_forever(self, mut queue: mpsc::Receiver<Notification>) {
        loop {
            let next = tokio::select! {
                n = queue.recv() => n,
                () = self.inner.shutdown.cancelled() => None,
            };
            let Some((destinations, event)) = next else {
                return;
            };
            self.notify(&destinations, event).await;
        }
    }

    /// Enqueues one notification, then waits for it to be safe in the background.
    async fn notify(&self, destinations: &[Arc<Destination>], event: Event) {
        match self
            .inner
            .forwarder
            .enqueue(destinations, event, true)
            .await
        {
            Ok(confirmation) => {
                tokio::spawn(async move {
                    if let Err(e) = confirmation.await {
                        tracing::warn!(error = %e, "a device notification was not forwarded");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "a device notification was not forwarded"),
        }
    }

    async fn revoke_consumer(&self, group: &ConsumerGroup) {
        if group.consumer_user.is_none() {
            return;
        }
        if let Err(e) = self
            .inner
            .forwarder
            .revoke_consumer(&destination(group))
            .await
        {
            tracing::warn!(group = %group.id, error = %e, "could not remove the group's consumer user");
        }
    }

    /// Removes a deleted product from every group of its tenant.
    pub(crate) async fn forget_product_in_groups(
        &self,
        tenant: &str,
        pk: &str,
    ) -> Result<(), HubError> {
        let groups = self.groups().list(tenant).await?;
        for mut g in groups
            .into_iter()
            .filter(|g| g.products.iter().any(|p| p == pk))
        {
            g.products.retain(|p| p != pk);
            crate::store::write(&**self.store(), |t| records::put_group(t, &g)).await?;
        }
        self.load_groups().await
    }
}

fn destination(g: &ConsumerGroup) -> Destination {
    Destination {
        sink: g.sink.clone(),
        queue: g.queue.clone(),
        retention_ms: g.retention_secs.saturating_mul(1000),
        max_messages: g.max_messages,
    }
}

/// Consumer groups: a tenant's durable queues of device messages on a sink.
#[derive(Clone, Copy)]
pub struct ConsumerGroups<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Consumer groups: a tenant's durable queues of device messages on a sink.
    pub fn groups(&self) -> ConsumerGroups<'_> {
        ConsumerGroups { hub: self }
    }
}

impl ConsumerGroups<'_> {
    /// Creates a consumer group on `sink` (when None, the sink that declares itself the default
    /// for groups, AMQP in the stock server; the first by name if several do); its queue, named
    /// by the sink, is created on it
    /// at once, with the retention of the tenant's profile (L-063), and, where the sink manages
    /// them, credentials that may only consume it, at most L-062 at a time (returned once).
    pub async fn create(
        &self,
        tenant: &str,
        name: &str,
        sink: Option<&str>,
    ) -> Result<(ConsumerGroup, Option<ConsumerCredentials>), HubError> {
        self.hub.registry().tenant(tenant).await?;
        let sink = match sink {
            // A sink is named like a thing that may not exist: 404, not a malformed request.
            Some(kind) => self.hub.inner.forwarder.sink(kind).ok_or_else(|| HubError::NotFound {
                what: "sink",
                id: kind.to_owned(),
            })?,
            None => self.hub
                .inner
                .forwarder
                .sinks()
                .into_iter()
                .find(|s| s.capabilities().default_for_groups)
                .ok_or_else(|| {
                    HubError::Conflict(
                        "no sink takes consumer groups by default: configure one, or name it with \"sink\"".into(),
                    )
                })?,
        };
        if !model::valid_display_name(name) {
            return Err(HubError::Invalid("name must be 1 to 64 characters".into()));
        }
        let limits = self.hub.profile_of(tenant).forwarding.clone();
        let id = model::random_token(12);
        let group = ConsumerGroup {
            tenant: tenant.to_owned(),
            queue: sink.group_queue(tenant, &id),
            id,
            name: name.to_owned(),
            sink: sink.name().to_owned(),
            products: Vec::new(),
            retention_secs: limits.group_retention_secs,
            max_messages: limits.group_max_messages,
            created_at_ms: self.hub.now_ms(),
            consumer_user: None,
        };
        let mut group = group;
        let dest = destination(&group);
        self.hub
            .inner
            .forwarder
            .prepare(&dest)
            .await
            .map_err(|e| HubError::Unavailable(format!("cannot create the group's queue: {e}")))?;
        let credentials = self
            .hub
            .inner
            .forwarder
            .grant_consumer(&dest, limits.consumers_per_group)
            .await
            .map_err(|e| {
                HubError::Unavailable(format!("cannot create the group's consumer user: {e}"))
            })?;
        group.consumer_user = credentials.as_ref().map(|c| c.username.clone());
        let g = group.clone();
        let max = limits.consumer_groups;
        let created = transact(&**self.hub.store(), |t| {
            let g = g.clone();
            Box::pin(async move {
                let existing = records::list_groups(t, Some(&g.tenant)).await?;
                if max > 0 && existing.len() as u64 >= max {
                    return Ok(false);
                }
                records::put_group(t, &g);
                Ok(true)
            })
        })
        .await?;
        if !created {
            self.hub.revoke_consumer(&group).await;
            return Err(self.hub.limited(
                LimitId::ConsumerGroupsPerTenant,
                format!("at most {max} consumer groups per tenant"),
            ));
        }
        self.hub.load_groups().await?;
        Ok((group, credentials))
    }

    /// A tenant's consumer groups.
    pub async fn list(&self, tenant: &str) -> Result<Vec<ConsumerGroup>, HubError> {
        self.hub.registry().tenant(tenant).await?;
        let tenant = tenant.to_owned();
        Ok(transact(&**self.hub.store(), |t| {
            let tenant = tenant.clone();
            Box::pin(async move { records::list_groups(t, Some(&tenant)).await })
        })
        .await?)
    }

    /// One consumer group of a tenant.
    pub async fn get(&self, tenant: &str, id: &str) -> Result<ConsumerGroup, HubError> {
        let (tenant2, id2) = (tenant.to_owned(), id.to_owned());
        transact(&**self.hub.store(), |t| {
            let (tenant, id) = (tenant2.clone(), id2.clone());
            Box::pin(async move { records::get_group(t, &tenant, &id).await })
        })
        .await?
        .ok_or_else(|| HubError::NotFound {
            what: "consumer group",
            id: id.to_owned(),
        })
    }

    /// Deletes a consumer group: its products' events stop going to its queue (the queue and
    /// what it holds stay on the broker for consumers to finish).
    pub async fn delete(&self, tenant: &str, id: &str) -> Result<(), HubError> {
        let group = self.get(tenant, id).await?;
        crate::store::write(&**self.hub.store(), |t| {
            records::delete_group(t, tenant, id)
        })
        .await?;
        self.hub.revoke_consumer(&group).await;
        self.hub.load_groups().await
    }

    /// Associates a product of the tenant with a consumer group (L-060, L-061).
    pub async fn associate_product(
        &self,
        tenant: &str,
        id: &str,
        pk: &str,
    ) -> Result<ConsumerGroup, HubError> {
        let product = self.hub.registry().product(pk).await?;
        if product.tenant != tenant {
            // Another tenant's product does not exist for this one.
            return Err(HubError::NotFound {
                what: "product",
                id: pk.to_owned(),
            });
        }
        let limits = self.hub.profile_of(tenant).forwarding.clone();
        let (tenant2, id2, pk2) = (tenant.to_owned(), id.to_owned(), pk.to_owned());
        let outcome = transact(&**self.hub.store(), |t| {
            let (tenant, id, pk) = (tenant2.clone(), id2.clone(), pk2.clone());
            let limits = limits.clone();
            Box::pin(async move {
                let Some(mut group) = records::get_group(t, &tenant, &id).await? else {
                    return Ok(Err(None));
                };
                if group.products.contains(&pk) {
                    return Ok(Ok(group));
                }
                let max = limits.products_per_group;
                if max > 0 && group.products.len() as u64 >= max {
                    return Ok(Err(Some((LimitId::ProductsPerGroup, max))));
                }
                let all = records::list_groups(t, Some(&tenant)).await?;
                let of_product = all.iter().filter(|g| g.products.contains(&pk)).count() as u64;
                let max = limits.groups_per_product;
                if max > 0 && of_product >= max {
                    return Ok(Err(Some((LimitId::GroupsPerProduct, max))));
                }
                group.products.push(pk);
                group.products.sort();
                records::put_group(t, &group);
                Ok(Ok(group))
            })
        })
        .await?;
        let group = match outcome {
            Ok(group) => group,
            Err(None) => {
                return Err(HubError::NotFound {
                    what: "consumer group",
                    id: id.to_owned(),
                });
            }
            Err(Some((limit, max))) => {
                return Err(self
                    .hub
                    .limited(limit, format!("at most {max}: {}", limit.describe())));
            }
        };
        self.hub.load_groups().await?;
        Ok(group)
    }

    /// Removes a product from a consumer group.
    pub async fn dissociate_product(
        &self,
        tenant: &str,
        id: &str,
        pk: &str,
    ) -> Result<ConsumerGroup, HubError> {
        let mut group = self.get(tenant, id).await?;
        if !group.products.iter().any(|p| p == pk) {
            return Err(HubError::NotFound {
                what: "product in consumer group",
                id: pk.to_owned(),
            });
        }
        group.products.retain(|p| p != pk);
        crate::store::write(&**self.hub.store(), |t| records::put_group(t, &group)).await?;
        self.hub.load_groups().await?;
        Ok(group)
    }
}
