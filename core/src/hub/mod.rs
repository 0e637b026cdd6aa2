//! The hub engine: the one place where devices are authenticated, topics authorized, sessions
//! kept and messages routed. Transports hold a cheap [`Hub`] clone and call into it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::FastMap;
use crate::clock::Clock;
use crate::config::HubConfig;
use crate::data::message::{Message, QoS};
use crate::data::model;
use crate::data::sequence::Sequence;
use crate::egress::EgressEnv;
use crate::egress::forward::Forwarder;
use crate::egress::retry::Retries;
use crate::limits::{LimitId, Limited, Limiter, Profile};
use crate::metering::Meter;
use crate::store::records;
use crate::store::{self, Store, StoreError, transact};
use crate::topic;

mod business;
mod cluster;
mod desired;
mod device_groups;
mod device_info;
mod downloads;
mod groups;
mod limits;
mod ntp;
mod ota;
mod parsing;
mod property_set;
pub mod queue;
mod recent;
mod registry;
mod remote_config;
mod router;
mod rrpc;
mod rules;
mod service_calls;
mod session;
mod shadow;
mod shared_subs;
mod stats;
mod stored_queue;
mod sub_register;
mod subdevices;
mod sys_topics;
mod thing_history;
mod tokens;
mod topics;
mod topology;
mod tsl;

pub use business::{DevicePage, DeviceStatus, HISTORY_RETENTION_MS};
pub use cluster::{GroupLoad, PeerError, PeerReply, PeerRequest, Peers};
pub use desired::DesiredProperties;
pub use device_groups::{
    DeviceGroups, DeviceRef, DeviceRefPage, GroupEvent, GroupInvoke, GroupPub, GroupSet, GroupSpec,
    GroupView,
};
pub use device_info::{DeviceInfos, MAX_TAG_VALUE, TAG_KEY_PATTERN};
pub use downloads::{Download, DownloadBody, DownloadError};
pub use limits::{LimitCounters, UsageReport};
pub use ota::{BatchSpec, BatchView, Ota, PackageSpec};
pub use parsing::{ParsingScripts, ScriptTest, ScriptTestOutcome, ScriptUpdate, ScriptView};
pub use property_set::PropertySetOutcome;
pub use recent::{MIN_GAP_MS as RECENT_MIN_GAP_MS, Recent, RecentMessage};
pub use registry::{DeviceView, ProductView};
pub use remote_config::{ConfigView, RemoteConfigs};
pub use router::Delivery;
pub use rrpc::{RRPC_TIMEOUT_MS, RrpcForm, RrpcOutcome};
pub use rules::{RuleSpec, RuleView};
pub use service_calls::{InvokeOutcome, ServiceCalls};
use session::Slot;
pub use session::{
    ClientIdentity, ConnectOutcome, ConnectRefusal, ConnectRequest, Connected, KickReason,
    PublishRefusal, PublishRequest, Session, SessionExpiryRefused, SubscribeRefusal,
    SubscribeRequest, TransportKind, Unacknowledged, Will,
};
pub use stats::{Stats, StatsSnapshot, TransportStats};
pub use thing_history::{Bucket, LatestValue, Order, Point, PointPage, RangeQuery, ThingHistory};
pub use tokens::AuthRequest;
pub use topology::SubDevice;
pub use tsl::{ModelVersionView, VersionInfo};

/// Errors of management operations; each maps to one HTTP status in the admin API.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The entity does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Entity kind.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The entity exists already.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// Entity kind.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with current state.
    #[error("{0}")]
    Conflict(String),
    /// A documented limit stopped the request.
    #[error("{limited}: {message}")]
    Limited {
        /// Which limit, and when to retry.
        limited: Limited,
        /// What was limited.
        message: String,
    },
    /// A destination the request needs is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) struct Inner {
    pub(crate) config: HubConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sessions: RwLock<FastMap<Arc<str>, Arc<Slot>>>,
    pub(crate) router: router::Router,
    pub(crate) stats: Stats,
    /// Ids of queued messages and events, increasing across restarts.
    pub(crate) seq: Arc<Sequence>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) limiter: Limiter,
    pub(crate) meter: Meter,
    /// Stored profiles by name (the built-in default is used for "default" unless stored).
    pub(crate) profiles: RwLock<FastMap<String, Arc<Profile>>>,
    /// Each tenant's profile name.
    pub(crate) tenant_profiles: RwLock<FastMap<String, String>>,
    pub(crate) tokens: tokens::TokenTable,
    /// Attached sinks and their workers.
    pub(crate) forwarder: Forwarder,
    /// Rule outputs waiting for a retry, in the store.
    pub(crate) rule_retries: Arc<Retries>,
    /// Persistent sessions' stored queues, written with group commit.
    pub(crate) stored_queues: stored_queue::StoredQueues,
    /// Device notifications for consumer groups, in order ([`Hub::notify_forever`]).
    pub(crate) notifications: tokio::sync::mpsc::Sender<groups::Notification>,
    /// The consumer-group queues of each product.
    pub(crate) group_routes: RwLock<groups::GroupRoutes>,
    /// Each tenant's enabled rules, compiled.
    pub(crate) rules: rules::RuleTable,
    /// Business API keys.
    pub(crate) api_keys: business::ApiKeys,
    /// RRPC calls waiting for their device.
    pub(crate) rrpc: rrpc::PendingRrpc,
    /// Gateway connections carrying sub-devices.
    pub(crate) gateways: session::Gateways,
    /// Online/offline changes on their way to the store.
    pub(crate) history: business::WriteQueue<business::StatusChange>,
    /// Devices connected for the first time, on their way to the store.
    pub(crate) activations: business::WriteQueue<(String, String)>,
    /// The tasks writing `history` and `activations`, waited for at shutdown.
    pub(crate) writers: tokio_util::task::TaskTracker,
    /// Products' thing models.
    pub(crate) models: tsl::Models,
    /// Products' topic categories.
    pub(crate) categories: topics::Categories,
    /// Devices whose shadow has desired properties (delivered at connect).
    pub(crate) desired_pending: RwLock<std::collections::HashSet<String>>,
    /// The last messages of each device (a bounded view for the console).
    pub(crate) recent: recent::Recent,
    /// The store's latency histograms.
    pub(crate) store_latency: crate::store::timed::LatencyHandle,
    /// The other nodes, when this hub is one node of a cluster.
    pub(crate) peers: Option<Arc<dyn cluster::Peers>>,
    /// Where devices should go when this node leaves the cluster (an MQTT server reference).
    pub(crate) handover: RwLock<Option<String>>,
    /// The built-in default profile (a stored profile named "default" replaces it).
    pub(crate) default_profile: Arc<Profile>,
    /// Moves on every change of profiles or of tenants' profiles (sessions cache theirs).
    pub(crate) profile_generation: AtomicU64,
    /// Where "now" comes from (the wall clock, or tokio's in virtual-time tests).
    pub(crate) clock: Clock,
    /// The labels of the transports registered so far, indexed by [`TransportKind`].
    pub(crate) transports: RwLock<Vec<&'static str>>,
    /// Firmware packages' bytes.
    pub(crate) blobs: Arc<dyn crate::store::blobs::Blobs>,
    /// Open upgrade batches.
    pub(crate) ota: ota::OtaRuntime,
    /// The secret of download URLs, and their base.
    pub(crate) downloads: downloads::DownloadLinks,
    /// Property values and events on their way to the store.
    pub(crate) thing_history: business::WriteQueue<thing_history::HistoryWrite>,
    /// Products' parsing scripts and the workers running them.
    pub(crate) scripts: parsing::ScriptTable,
}

/// Handle to the hub engine; clones share one engine.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<Inner>,
}

/// The session key of a device: one connection per device across the hub.
pub fn device_session_key(pk: &str, dn: &str) -> String {
    format!("{pk}/{dn}")
}

impl Hub {
    /// A management request stopped by `limit` (counted).
    fn limited(&self, limit: LimitId, message: String) -> HubError {
        HubError::Limited {
            limited: self.counted(Limited::new(limit)),
            message,
        }
    }

    /// Starts the engine on `store`: reloads persistent sessions (dropping expired ones) and
    /// retained messages, and starts the session sweeper.
    pub async fn start(config: HubConfig, store: Arc<dyn Store>) -> Result<Hub, HubError> {
        Hub::start_with(config, store, None, Clock::system()).await
    }

    /// As [`Hub::start`], with time from `clock` (tests run the engine in virtual time with
    /// [`Clock::tokio`]).
    pub async fn start_with_clock(
        config: HubConfig,
        store: Arc<dyn Store>,
        clock: Clock,
    ) -> Result<Hub, HubError> {
        Hub::start_with(config, store, None, clock).await
    }

    /// Starts the engine as one node of a cluster sharing `store` with the other nodes, which
    /// `peers` reaches. Sessions are not loaded at start: each belongs to the node its device
    /// connects to, which takes it from the store then.
    pub async fn start_node(
        config: HubConfig,
        store: Arc<dyn Store>,
        peers: Arc<dyn Peers>,
    ) -> Result<Hub, HubError> {
        Hub::start_with(config, store, Some(peers), Clock::system()).await
    }

    async fn start_with(
        config: HubConfig,
        store: Arc<dyn Store>,
        peers: Option<Arc<dyn Peers>>,
        clock: Clock,
    ) -> Result<Hub, HubError> {
        let (store, store_latency) = crate::store::timed::TimedStore::wrap(store);
        let seq = Arc::new(Sequence::starting_at(clock.now_ms()));
        let shutdown = CancellationToken::new();
        let egress = EgressEnv {
            store: store.clone(),
            clock,
            seq: seq.clone(),
            shutdown: shutdown.clone(),
        };
        let rule_retries = Retries::new(egress.clone(), &crate::rules::RETRY_DELAYS_SECS);
        let forwarder = Forwarder::new(egress);
        let (notifications, notification_queue) =
            tokio::sync::mpsc::channel(groups::NOTIFICATION_QUEUE);
        let hub = Hub {
            inner: Arc::new(Inner {
                seq,
                router: router::Router::default(),
                sessions: RwLock::default(),
                stats: Stats::default(),
                shutdown,
                limiter: Limiter::default(),
                meter: Meter::default(),
                profiles: RwLock::default(),
                tenant_profiles: RwLock::default(),
                tokens: tokens::TokenTable::default(),
                forwarder,
                rule_retries,
                stored_queues: stored_queue::StoredQueues::start(store.clone()),
                notifications,
                group_routes: RwLock::new(groups::GroupRoutes::default()),
                rules: rules::RuleTable::new(),
                api_keys: business::ApiKeys::default(),
                rrpc: rrpc::PendingRrpc::default(),
                history: business::WriteQueue::default(),
                activations: business::WriteQueue::default(),
                gateways: session::Gateways::default(),
                writers: tokio_util::task::TaskTracker::new(),
                models: RwLock::new(HashMap::new()),
                categories: RwLock::new(HashMap::new()),
                desired_pending: RwLock::new(std::collections::HashSet::new()),
                recent: recent::Recent::new(
                    config.recent_messages_per_device,
                    config.recent_messages_max_devices,
                ),
                scripts: parsing::ScriptTable::new(&config.scripts),
                config,
                blobs: Arc::new(crate::store::blobs::StoreBlobs::new(store.clone())),
                ota: ota::OtaRuntime::default(),
                downloads: downloads::DownloadLinks::default(),
                thing_history: business::WriteQueue::default(),
                store,
                store_latency,
                peers,
                handover: RwLock::new(None),
                default_profile: Arc::new(Profile::default()),
                profile_generation: AtomicU64::new(0),
                clock,
                transports: RwLock::default(),
            }),
        };
        hub.restore().await?;
        hub.load_download_key().await?;
        hub.reload_config().await?;
        hub.load_months().await?;
        hub.load_pending_desired().await?;
        if hub.inner.config.open_broker.enabled {
            let id = hub.inner.config.open_broker.tenant.clone();
            model::validate_tenant_id(&id).map_err(|e| HubError::Invalid(e.to_string()))?;
            if hub.registry().tenant(&id).await.is_err() {
                hub.registry()
                    .create_tenant(&id, "open broker sandbox", None)
                    .await?;
            }
        }
        hub.inner
            .rule_retries
            .start(Arc::new(rules::RuleAttempts(hub.clone())));
        tokio::spawn(hub.clone().notify_forever(notification_queue));
        tokio::spawn(hub.clone().roll_out_forever());
        let sweeper = hub.clone();
        tokio::spawn(async move { sweeper.sweep_sessions_forever().await });
        let flusher = hub.clone();
        tokio::spawn(async move { flusher.flush_usage_forever().await });
        let historian = hub.clone();
        let writers = &hub.inner.writers;
        writers.spawn(async move { historian.write_history_forever().await });
        let activator = hub.clone();
        writers.spawn(async move { activator.write_activations_forever().await });
        let historian = hub.clone();
        writers.spawn(async move { historian.write_thing_history_forever().await });
        let sweeper = hub.clone();
        tokio::spawn(async move { sweeper.sweep_thing_history_forever().await });
        if hub.inner.config.open_broker.enabled
            && hub.inner.config.open_broker.sys_interval_secs > 0
        {
            tokio::spawn(hub.clone().publish_sys_forever());
        }
        Ok(hub)
    }

    /// Stops background work and writes the last usage counters. Connections are closed by
    /// their transports first.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        // What the background writers hold (status history, activations) is written first.
        self.inner.writers.close();
        let writers = self.inner.writers.wait();
        if tokio::time::timeout(std::time::Duration::from_secs(10), writers)
            .await
            .is_err()
        {
            tracing::error!("status history and activations not all written at shutdown");
        }
        self.inner.forwarder.stop().await;
        if let Err(e) = self.inner.meter.flush(&**self.store()).await {
            tracing::error!(error = %e, "could not write usage counters at shutdown");
        }
    }

    /// The configuration the hub runs with.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The store the hub runs on.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The kind of the transport labelled `label` ("mqtt", "coap", ...), registered on first use:
    /// a transport asks once when it starts serving. Panics past [`TransportKind::MAX`]
    /// transports, a composition error.
    pub fn transport(&self, label: &'static str) -> TransportKind {
        let known = |labels: &[&str]| labels.iter().position(|&l| l == label);
        if let Some(i) = known(&self.inner.transports.read().expect("transports lock")) {
            return TransportKind(i as u8);
        }
        let mut labels = self.inner.transports.write().expect("transports lock");
        let i = known(&labels).unwrap_or_else(|| {
            assert!(
                labels.len() < TransportKind::MAX,
                "more than {} transports",
                TransportKind::MAX
            );
            labels.push(label);
            labels.len() - 1
        });
        TransportKind(i as u8)
    }

    /// Now, in milliseconds since the epoch, by the hub's clock.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.inner.seq.next()
    }

    /// Current counters.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.inner.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // Before the sessions lock: connects and disconnects need it.
        let now = self.now_ms();
        let tenants_monthly = self
            .inner
            .meter
            .tenants()
            .into_iter()
            .map(|t| {
                let usage = self.inner.meter.monthly(&self.profile_of(&t), &t, now);
                (t, usage)
            })
            .collect();
        let sessions = self.inner.sessions.read().expect("sessions lock");
        let labels = self
            .inner
            .transports
            .read()
            .expect("transports lock")
            .clone();
        let mut open_by = [0u64; TransportKind::MAX];
        let mut tenants_online = BTreeMap::new();
        let mut sub_devices_online = 0;
        for slot in sessions.values() {
            if let Some(t) = slot.online_by() {
                open_by[t] += 1;
                *tenants_online.entry(slot.tenant.clone()).or_default() += 1;
            }
            sub_devices_online += u64::from(slot.is_carried());
        }
        let open = open_by.iter().sum();
        let transports = labels
            .iter()
            .enumerate()
            .map(|(i, &label)| {
                let stats = TransportStats {
                    open: open_by[i],
                    accepted: get(&s.accepted[i]),
                    refused: ConnectRefusal::KIND_LABELS
                        .iter()
                        .zip(&s.refused[i])
                        .filter(|(_, n)| get(n) > 0)
                        .map(|(reason, n)| (*reason, get(n)))
                        .collect(),
                    received: s.received[i].each_ref().map(get),
                };
                (label, stats)
            })
            .collect();
        StatsSnapshot {
            node: self.peers().map(|p| p.node_id().to_owned()),
            cluster_nodes: self.inner.limiter.nodes(),
            tenants_monthly,
            transports,
            delivered_by_qos: s.delivered.each_ref().map(get),
            tenants_online,
            store: self.inner.store_latency.snapshot(),
            // Totals are the sums of the per-transport and per-QoS counters.
            connections_accepted: s.accepted.iter().map(get).sum(),
            connections_refused: s.refused.iter().flatten().map(get).sum(),
            connections_open: open,
            sub_devices_online,
            sessions: sessions.len() as u64,
            messages_in: get(&s.messages_in),
            deliveries: s.delivered.iter().map(get).sum(),
            dropped: HashMap::from([
                ("qos0_queue_full", get(&s.dropped_qos0_queue_full)),
                (
                    "qos12_slow_subscriber",
                    get(&s.dropped_qos12_slow_subscriber),
                ),
                ("qos0_offline", get(&s.dropped_qos0_offline)),
                ("offline_queue_full", get(&s.dropped_offline_queue_full)),
                ("too_large_for_client", get(&s.dropped_too_large_for_client)),
            ]),
            sessions_expired: get(&s.sessions_expired),
            limited: LimitId::ALL
                .iter()
                .zip(s.limited.iter())
                .filter(|(_, n)| get(n) > 0)
                .map(|(id, n)| (id.id(), get(n)))
                .collect(),
        }
    }

    async fn restore(&self) -> Result<(), HubError> {
        let store = self.inner.store.clone();
        // In a cluster a session is loaded by the node its device connects to: no scan of them
        // all (which a large fleet on FoundationDB could not read in one transaction).
        let clustered = self.peers().is_some();
        let (sessions, retained) = transact(&*store, |t| {
            Box::pin(async move {
                let s = if clustered {
                    Vec::new()
                } else {
                    records::list_sessions(t).await?
                };
                let r = records::list_retained(t).await?;
                Ok((s, r))
            })
        })
        .await?;
        let now = self.now_ms();
        for msg in retained {
            self.inner.router.set_retained(Arc::new(msg));
        }
        for record in sessions {
            if record.expired(now) {
                store::write(&*store, |t| records::delete_session(t, &record.key)).await?;
                self.inner
                    .stats
                    .sessions_expired
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let key = record.key.clone();
            let queued = transact(&*store, |t| {
                let key = key.clone();
                Box::pin(async move { records::count_queued(t, &key, usize::MAX).await })
            })
            .await?;
            let slot = Slot::restored(&record, queued, now);
            for sub in &record.subscriptions {
                if let Ok(filter) = topic::Filter::parse(&sub.filter) {
                    self.inner
                        .router
                        .subscribe(&record.tenant, &slot.key, &filter, sub);
                }
            }
            let mut sessions = self.inner.sessions.write().expect("sessions lock");
            sessions.insert(slot.key.clone(), slot);
        }
        Ok(())
    }

    async fn sweep_sessions_forever(&self) {
        let every =
            std::time::Duration::from_secs(self.inner.config.session_sweep_interval_secs.max(1));
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = self.now_ms();
            if let Err(e) = self.sweep_sessions(now).await {
                tracing::warn!(error = %e, "session sweep failed");
            }
            self.inner.limiter.sweep(now);
            self.sweep_tokens(now);
            // In a cluster one node sweeps the stored tokens for all (server/src/cluster).
            if self.peers().is_none()
                && let Err(e) = self.tokens().sweep_stored(now).await
            {
                tracing::warn!(error = %e, "sweeping stored device tokens failed");
            }
        }
    }

    /// Reclaims sessions whose expiry passed by `now`: subscriptions, queue and record. Returns how
    /// many were reclaimed.
    pub async fn sweep_sessions(&self, now: u64) -> Result<usize, HubError> {
        let slots: Vec<Arc<Slot>> = self
            .inner
            .sessions
            .read()
            .expect("sessions lock")
            .values()
            .cloned()
            .collect();
        let mut reclaimed = 0;
        for slot in slots {
            if slot.reclaim_if_expired(self, now).await? {
                reclaimed += 1;
            }
        }
        Ok(reclaimed)
    }

    /// Publishes a message as the hub (downlink from the admin API, replies), routed like any
    /// other. Returns how many sessions it was handed to.
    pub async fn publish_as_hub(
        &self,
        tenant: &str,
        topic_name: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<usize, HubError> {
        topic::validate_name(topic_name).map_err(|e| HubError::Invalid(e.to_string()))?;
        self.registry().tenant(tenant).await?;
        let mut msg = Message::from_hub(tenant, topic_name.to_owned(), payload, qos, self.now_ms());
        msg.retain = retain;
        Ok(self.accept(msg).await?)
    }
}
