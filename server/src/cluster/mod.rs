//! Running as one node of a cluster: every node shares the store (FoundationDB in production),
//! renews a lease there (`N\0{node}`) each heartbeat, and reaches the others over the link
//! (`link.rs`). The hub's side (which node holds a session, where a message goes) is in
//! `ironhub_core::hub` (`hub/cluster/`); this module gives it [`Peers`].
//!
//! Each heartbeat the node also: counts the live nodes (tenant-level rate limits are split
//! between them), reloads the configuration when another node changed it (the store's
//! configuration version moved), and every tenth beat re-reads the tenants' monthly usage.

pub mod link;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use ironhub_core::hub::{PeerError, PeerReply, PeerRequest, Peers};
use ironhub_core::store::records::{self, NodeRecord};
use ironhub_core::store::{self, Store, StoreError, transact};
use ironhub_core::{Hub, now_ms};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;

/// Heartbeats between two refreshes of the monthly usage.
const USAGE_EVERY: u64 = 10;

/// This node in the cluster: membership and the link.
pub struct Cluster {
    config: ClusterConfig,
    store: Arc<dyn Store>,
    dialer: link::Dialer,
    /// Live nodes (this one included) by id, as of the last heartbeat.
    live: RwLock<HashMap<String, NodeRecord>>,
    started_at_ms: u64,
    hub: OnceLock<Hub>,
}

impl Cluster {
    /// A node with `config` on `store`; [`Cluster::start`] joins.
    pub fn new(config: ClusterConfig, store: Arc<dyn Store>) -> Arc<Cluster> {
        Arc::new(Cluster {
            dialer: link::Dialer::new(&config.node_id, &config.secret),
            config,
            store,
            live: RwLock::new(HashMap::new()),
            started_at_ms: now_ms(),
            hub: OnceLock::new(),
        })
    }

    fn record(&self) -> NodeRecord {
        NodeRecord {
            id: self.config.node_id.clone(),
            cluster_addr: self
                .config
                .advertise
                .clone()
                .unwrap_or_else(|| self.config.listen.to_string()),
            mqtt_addr: self.config.mqtt_advertise.clone(),
            lease_until_ms: now_ms() + self.config.lease_ms,
            started_at_ms: self.started_at_ms,
        }
    }

    /// Renews this node's lease and reads who else is alive and the configuration version, in
    /// one transaction (the version rides on the lease renewal, so noticing another node's
    /// change costs no extra round trip, which is what a FoundationDB watch would save).
    async fn heartbeat(&self) -> Result<(usize, i64), StoreError> {
        let me = self.record();
        let (nodes, version) = transact(&*self.store, |t| {
            let me = me.clone();
            Box::pin(async move {
                records::put_node(t, &me);
                Ok((
                    records::list_nodes(t).await?,
                    records::config_version(t).await?,
                ))
            })
        })
        .await?;
        let now = now_ms();
        let live: HashMap<String, NodeRecord> = nodes
            .into_iter()
            .filter(|n| n.lease_until_ms > now)
            .map(|n| (n.id.clone(), n))
            .collect();
        let count = live.len();
        *self.live.write().expect("cluster lock") = live;
        Ok((count, version))
    }

    /// Joins: the first heartbeat, the link's listener, then a heartbeat every `heartbeat_ms`
    /// until `shutdown`.
    pub async fn start(
        self: &Arc<Self>,
        hub: Hub,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let _ = self.hub.set(hub.clone());
        let listener = TcpListener::bind(self.config.listen).await?;
        let (nodes, version) = self.heartbeat().await?;
        hub.set_cluster_size(nodes);
        tracing::info!(node = %self.config.node_id, link = %self.config.listen, nodes, "joined the cluster");
        let serve = tokio::spawn(link::serve(
            listener,
            hub.clone(),
            self.config.secret.clone(),
            shutdown.clone(),
        ));
        let this = self.clone();
        let beat = tokio::spawn(async move { this.beat_forever(hub, version, shutdown).await });
        Ok(vec![serve, beat])
    }

    async fn beat_forever(&self, hub: Hub, mut config_version: i64, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.config.heartbeat_ms.max(50));
        let sweep_every = Duration::from_secs(hub.config().session_sweep_interval_secs.max(1));
        let mut swept = tokio::time::Instant::now();
        let history_every = Duration::from_secs(hub.config().history_sweep_interval_secs.max(1));
        let mut history_swept = tokio::time::Instant::now();
        for beat in 1u64.. {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.heartbeat().await {
                Ok((nodes, version)) => {
                    hub.set_cluster_size(nodes);
                    if version != config_version {
                        match hub.reload_config().await {
                            Ok(()) => config_version = version,
                            Err(e) => {
                                tracing::warn!(error = %e, "reloading the configuration failed")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cluster heartbeat failed"),
            }
            if beat % USAGE_EVERY == 0
                && let Err(e) = hub.refresh_usage().await
            {
                tracing::warn!(error = %e, "refreshing monthly usage failed");
            }
            // Sessions left by nodes that are gone expire in the store: the live node with the
            // smallest id reclaims them.
            if swept.elapsed() >= sweep_every && self.leads() {
                swept = tokio::time::Instant::now();
                match hub.sweep_stored_sessions(now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(reclaimed = n, "expired stored sessions reclaimed"),
                    Err(e) => tracing::warn!(error = %e, "sweeping stored sessions failed"),
                }
                if let Err(e) = hub.tokens().sweep_stored(now_ms()).await {
                    tracing::warn!(error = %e, "sweeping stored device tokens failed");
                }
            }
            if history_swept.elapsed() >= history_every && self.leads() {
                history_swept = tokio::time::Instant::now();
                if let Err(e) = hub.thing_history().sweep(now_ms()).await {
                    tracing::warn!(error = %e, "sweeping history failed");
                }
            }
        }
    }

    /// Whether this node has the smallest id of the live nodes (it runs cluster-wide chores).
    fn leads(&self) -> bool {
        let live = self.live.read().expect("cluster lock");
        live.keys()
            .min()
            .is_some_and(|min| *min == self.config.node_id)
    }

    /// Leaves the cluster before shutting down: the node's record goes, so the others stop
    /// sending to it, and its devices are told where to reconnect.
    pub async fn leave(&self) {
        let handover = {
            let live = self.live.read().expect("cluster lock");
            live.values()
                .filter(|n| n.id != self.config.node_id)
                .find_map(|n| n.mqtt_addr.clone())
        };
        if let Some(hub) = self.hub.get() {
            hub.set_handover(handover);
        }
        let me = self.config.node_id.clone();
        if let Err(e) = store::write(&*self.store, |t| records::delete_node(t, &me)).await {
            tracing::warn!(error = %e, "could not remove this node's record");
        }
        tracing::info!(node = %me, "left the cluster");
    }
}

#[async_trait]
impl Peers for Cluster {
    fn node_id(&self) -> &str {
        &self.config.node_id
    }

    fn is_live(&self, node: &str) -> bool {
        let now = now_ms();
        self.live
            .read()
            .expect("cluster lock")
            .get(node)
            .is_some_and(|n| n.lease_until_ms > now)
    }

    fn others(&self) -> Vec<String> {
        let now = now_ms();
        self.live
            .read()
            .expect("cluster lock")
            .values()
            .filter(|n| n.id != self.config.node_id && n.lease_until_ms > now)
            .map(|n| n.id.clone())
            .collect()
    }

    async fn call(&self, node: &str, request: PeerRequest) -> Result<PeerReply, PeerError> {
        let addr = self
            .live
            .read()
            .expect("cluster lock")
            .get(node)
            .map(|n| n.cluster_addr.clone())
            .ok_or_else(|| PeerError::Unreachable {
                node: node.to_owned(),
                reason: "not a live node".into(),
            })?;
        self.dialer.call(node, &addr, request).await
    }
}

#[cfg(all(test, feature = "mqtt"))]
mod tests;
