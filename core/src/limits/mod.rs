//! Limits: the catalog of documented limits (docs/limits.md), tenant profiles, and the pure
//! machinery that enforces them (multi-interval token buckets, the hourly sliding window, data
//! point counting, monthly quotas). Everything takes `now` in ms, so tests drive a clock instead of
//! sleeping. The hub calls [`Limiter`] on connect, publish and registry operations, so every
//! transport enforces the same limits.

use crate::FastMap;
use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

pub mod datapoints;
pub mod profile;
pub mod quota;
pub mod rate;
pub mod window;

pub use profile::{DEFAULT_PROFILE, Profile, ShadowLimits};
use rate::{Buckets, RateSpec};
use window::Window;

/// How a transport answers a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Too fast: throttled (MQTT 5 0x97 / CONNACK 0x9F, HTTP 429, CoAP 4.29).
    Rate,
    /// A count or budget is used up (MQTT 5 0x97, HTTP 403 or 429).
    Quota,
    /// The request itself is out of bounds (MQTT 5 0x90 / 0x8F / 0x83, HTTP 400).
    Malformed,
}

/// Declares the catalog once: every row of docs/limits.md (fixed ones and guarantees included, so
/// the contract's coverage test can check the code) with its id, a few words, and the kind of
/// answer transports give where the limit refuses something.
macro_rules! catalog {
    ($($variant:ident => $id:literal, $what:literal, $kind:ident;)*) => {
        /// Limits the hub enforces, by their id in docs/limits.md.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum LimitId {
            $(
                #[doc = concat!($id, " ", $what, ".")]
                $variant,
            )*
        }

        impl LimitId {
            /// How many limits are enforced.
            pub const COUNT: usize = [$($id),*].len();

            /// Every enforced limit, in id order.
            pub const ALL: [LimitId; Self::COUNT] = [$(LimitId::$variant),*];

            /// The stable id used in docs/limits.md, logs, usage reports and error bodies.
            pub fn id(self) -> &'static str {
                match self { $(LimitId::$variant => $id,)* }
            }

            /// What is limited, in a few words (for error messages and reports).
            pub fn describe(self) -> &'static str {
                match self { $(LimitId::$variant => $what,)* }
            }

            /// How transports answer it.
            pub fn kind(self) -> LimitKind {
                match self { $(LimitId::$variant => LimitKind::$kind,)* }
            }
        }
    };
}

catalog! {
    ProductsPerTenant => "L-001", "products per tenant", Quota;
    DevicesPerProduct => "L-002", "devices per product", Quota;
    DevicesPerTenant => "L-003", "devices per tenant", Quota;
    SubDevicesPerGateway => "L-004", "sub-devices per gateway", Quota;
    SubDevicesOnline => "L-007", "sub-devices online per gateway", Quota;
    SubDeviceLogins => "L-008", "sub-device logins per gateway", Rate;
    SubDevicesPerLogin => "L-009", "sub-devices per login or logout request", Malformed;
    TagsPerDevice => "L-090", "tags per product, device or group", Quota;
    OtaPackages => "L-091", "firmware packages per tenant", Quota;
    OtaPackageSize => "L-092", "firmware package size", Malformed;
    OtaBatchDevices => "L-093", "devices per upgrade batch", Malformed;
    RemoteConfigSize => "L-094", "remote configuration file size", Malformed;
    DataRetention => "L-095", "data retention (property and event history)", Quota;
    ScriptSize => "L-096", "data parsing script size", Malformed;
    MonthlyJsExecutions => "L-097", "data parsing script executions per month", Quota;
    ScriptBudget => "L-098", "data parsing script time and memory per execution", Malformed;
    DeviceGroups => "L-099", "device groups per tenant", Quota;
    DevicesPerGroup => "L-100", "devices per group", Quota;
    GroupsPerDevice => "L-101", "groups per device", Quota;
    TslImportSize => "L-102", "thing model document size (import)", Malformed;
    TslValidCharacters => "L-103", "thing model valid characters", Malformed;
    TslNesting => "L-104", "struct and array nesting of a thing model", Malformed;
    TslVersions => "L-105", "saved versions of a thing model", Quota;
    MonthlyStoredPointDays => "L-106", "stored data-point-days per month", Quota;
    RulesPerTenant => "L-005", "rules per tenant", Quota;
    ConsumerGroupsPerTenant => "L-006", "consumer groups per tenant", Quota;
    ConnectionsPerDevice => "L-010", "connections per device certificate (a new one takes over)", Quota;
    TenantConnections => "L-011", "connection requests per tenant", Rate;
    DeviceConnections => "L-012", "connection requests per device", Rate;
    SubscriptionsPerDevice => "L-013", "subscriptions per device", Quota;
    TenantMessages => "L-014", "messages per tenant", Rate;
    DeviceMessagesQos0 => "L-016", "QoS 0 messages per device", Rate;
    TenantDownlink => "L-015", "messages to devices per tenant", Rate;
    DeviceMessagesQos1 => "L-017", "QoS 1 messages per device", Rate;
    DeviceDownlink => "L-018", "messages a device receives from the business API", Rate;
    ConnectionBandwidth => "L-019", "bandwidth per connection", Rate;
    InFlightPublishes => "L-020", "unacknowledged QoS 1/2 publishes in flight", Quota;
    SessionRetention => "L-021", "QoS 1 message retention (session expiry)", Quota;
    MqttPacketSize => "L-022", "MQTT packet size", Malformed;
    KeepAlive => "L-024", "MQTT keep-alive range", Malformed;
    RrpcTimeout => "L-025", "RRPC timeout", Malformed;
    UserProperties => "L-026", "user properties per message", Malformed;
    UserPropertyLength => "L-027", "user property key or value length", Malformed;
    RequestResponseLength => "L-028", "response topic or correlation data length", Malformed;
    TopicLength => "L-031", "topic length", Malformed;
    TopicLevels => "L-032", "topic levels", Malformed;
    CoapMessageSize => "L-023", "CoAP message size", Malformed;
    TopicCategories => "L-030", "custom topic categories per product", Quota;
    FiltersPerSubscribe => "L-033", "topic filters per SUBSCRIBE", Quota;
    SubscriptionDelay => "L-034", "time for a subscription to take effect", Quota;
    BroadcastSize => "L-035", "broadcast message size", Malformed;
    TslModules => "L-045", "custom modules of a thing model", Malformed;
    TslFeatures => "L-046", "features of a thing model module", Malformed;
    TslTypeSize => "L-047", "struct fields, enum items or array elements", Malformed;
    TslTextLength => "L-048", "length of a text feature", Malformed;
    TslParams => "L-049", "service and event parameters", Malformed;
    ShadowLevels => "L-040", "shadow JSON levels", Malformed;
    ShadowSize => "L-041", "shadow size", Malformed;
    ShadowProperties => "L-042", "shadow properties", Malformed;
    ShadowRequests => "L-043", "shadow requests per device", Rate;
    Broadcasts => "L-036", "broadcasts per tenant", Rate;
    DestinationsPerRule => "L-050", "destinations per rule", Malformed;
    RuleSql => "L-053", "rule SQL statement size and nesting", Malformed;
    RuleMessages => "L-051", "rule-engine messages per tenant", Rate;
    RuleWrites => "L-052", "rule writes to destinations per tenant", Rate;
    GroupsPerProduct => "L-060", "consumer groups per product", Quota;
    ProductsPerGroup => "L-061", "products per consumer group", Quota;
    ConsumersPerGroup => "L-062", "consumers per consumer group", Quota;
    GroupRetention => "L-063", "consumer-group retention", Quota;
    MonthlyMessages => "L-070", "transport messages per month", Quota;
    MonthlyDataPoints => "L-071", "transport data points per month", Quota;
    MonthlyRuleExecutions => "L-072", "rule executions per month", Quota;
    TenantDataPoints => "L-073", "data points per tenant", Rate;
    DeviceDataPoints => "L-074", "data points per device", Rate;
    RegistryOperations => "L-075", "device registry operations per tenant", Rate;
    ApiRequests => "L-076", "business API requests per tenant", Rate;
    DataPointsPerHour => "L-080", "data points per device per hour", Quota;
}

impl std::fmt::Display for LimitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// A request stopped by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("limit {limit} reached: {}", limit.describe())]
pub struct Limited {
    /// Which limit.
    pub limit: LimitId,
    /// When a retry could succeed (rate limits), ms from now.
    pub retry_after_ms: Option<u64>,
}

impl Limited {
    /// A quota or bound, with no retry time.
    pub fn new(limit: LimitId) -> Self {
        Limited {
            limit,
            retry_after_ms: None,
        }
    }
}

/// Most keys of one kind kept in memory; beyond it idle keys are evicted first, then new keys are
/// checked against fresh state (the limit still applies, its history is lost).
const MAX_KEYS: usize = 1_000_000;

/// Rate state per key, rebuilt when the key's spec changes.
struct Keyed<T> {
    map: Mutex<FastMap<String, (RateKey, T)>>,
}

/// What a state was built from, to notice profile changes.
#[derive(Clone, PartialEq, Eq)]
enum RateKey {
    Spec(RateSpec),
    Hourly(u64),
}

/// A [`RateKey`] borrowed for the check each request makes (copied only into new state).
#[derive(Clone, Copy)]
enum RateKeyRef<'a> {
    Spec(&'a RateSpec),
    Hourly(u64),
}

impl RateKeyRef<'_> {
    fn matches(self, built: &RateKey) -> bool {
        match (self, built) {
            (RateKeyRef::Spec(a), RateKey::Spec(b)) => a == b,
            (RateKeyRef::Hourly(a), RateKey::Hourly(b)) => a == *b,
            _ => false,
        }
    }

    fn to_key(self) -> RateKey {
        match self {
            RateKeyRef::Spec(s) => RateKey::Spec(s.clone()),
            RateKeyRef::Hourly(n) => RateKey::Hourly(n),
        }
    }
}

impl<T> Default for Keyed<T> {
    fn default() -> Self {
        Keyed {
            map: Mutex::default(),
        }
    }
}

impl<T> Keyed<T> {
    fn with<R>(
        &self,
        key: &str,
        built_from: RateKeyRef<'_>,
        make: impl FnOnce() -> T,
        f: impl FnOnce(&mut T) -> R,
    ) -> R {
        let mut map = self.map.lock().expect("limiter lock");
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let mut fresh = make();
            return f(&mut fresh);
        }
        match map.get_mut(key) {
            Some(entry) if built_from.matches(&entry.0) => f(&mut entry.1),
            _ => {
                let mut state = make();
                let out = f(&mut state);
                map.insert(key.to_owned(), (built_from.to_key(), state));
                out
            }
        }
    }
}

/// Rate and window state for every tenant and device, in memory.
#[derive(Default)]
pub struct Limiter {
    tenant_connections: Keyed<Buckets>,
    device_connections: Keyed<Buckets>,
    tenant_messages: Keyed<Buckets>,
    device_qos0: Keyed<Buckets>,
    device_qos1: Keyed<Buckets>,
    tenant_points: Keyed<Buckets>,
    device_points: Keyed<Buckets>,
    registry: Keyed<Buckets>,
    rule_messages: Keyed<Buckets>,
    rule_writes: Keyed<Buckets>,
    api_requests: Keyed<Buckets>,
    tenant_downlink: Keyed<Buckets>,
    device_downlink: Keyed<Buckets>,
    broadcasts: Keyed<Buckets>,
    shadow_requests: Keyed<Buckets>,
    sub_device_logins: Keyed<Buckets>,
    hourly_points: Keyed<Window>,
    /// Live nodes of the cluster (1 alone): each applies its share of the tenant-level rates.
    nodes: AtomicU64,
}

fn take(
    k: &Keyed<Buckets>,
    key: &str,
    spec: &RateSpec,
    now: u64,
    cost: u64,
    limit: LimitId,
) -> Result<(), Limited> {
    if spec.is_unlimited() {
        return Ok(());
    }
    k.with(
        key,
        RateKeyRef::Spec(spec),
        || Buckets::new(spec, now),
        |b| b.try_take(now, cost),
    )
    .map_err(|wait| Limited {
        limit,
        retry_after_ms: Some(wait),
    })
}

impl Limiter {
    /// How many nodes share the tenant-level rates.
    pub fn nodes(&self) -> u64 {
        self.nodes.load(Ordering::Relaxed).max(1)
    }

    /// Sets how many nodes share the tenant-level rates.
    pub fn set_nodes(&self, nodes: u64) {
        self.nodes.store(nodes.max(1), Ordering::Relaxed);
    }

    /// A tenant-level spec as this node applies it: its share when the cluster has several nodes.
    fn tenant_share<'a>(&self, spec: &'a RateSpec) -> Cow<'a, RateSpec> {
        match self.nodes.load(Ordering::Relaxed) {
            0 | 1 => Cow::Borrowed(spec),
            n => Cow::Owned(spec.share(n)),
        }
    }

    /// A connection request by a device of a tenant (after authentication).
    pub fn connection(
        &self,
        p: &Profile,
        tenant: &str,
        device: &str,
        now: u64,
    ) -> Result<(), Limited> {
        take(
            &self.device_connections,
            device,
            &p.rates.device_connections,
            now,
            1,
            LimitId::DeviceConnections,
        )?;
        take(
            &self.tenant_connections,
            tenant,
            &self.tenant_share(&p.rates.tenant_connections),
            now,
            1,
            LimitId::TenantConnections,
        )
    }

    /// A message of `points` data points from a device: device rate by QoS, tenant rate, the
    /// hourly data-point window, then data-point rates.
    pub fn message(
        &self,
        p: &Profile,
        tenant: &str,
        device: &str,
        qos1_or_2: bool,
        points: u64,
        now: u64,
    ) -> Result<(), Limited> {
        if qos1_or_2 {
            take(
                &self.device_qos1,
                device,
                &p.rates.device_messages_qos1,
                now,
                1,
                LimitId::DeviceMessagesQos1,
            )?;
        } else {
            take(
                &self.device_qos0,
                device,
                &p.rates.device_messages_qos0,
                now,
                1,
                LimitId::DeviceMessagesQos0,
            )?;
        }
        take(
            &self.tenant_messages,
            tenant,
            &self.tenant_share(&p.rates.tenant_messages),
            now,
            1,
            LimitId::TenantMessages,
        )?;
        if p.data_points_per_hour > 0 {
            let limit = p.data_points_per_hour;
            let fits = self.hourly_points.with(
                device,
                RateKeyRef::Hourly(limit),
                || Window::new(limit, now),
                |w| w.charge(now, points),
            );
            if !fits {
                return Err(Limited::new(LimitId::DataPointsPerHour));
            }
        }
        take(
            &self.device_points,
            device,
            &p.rates.device_data_points,
            now,
            points,
            LimitId::DeviceDataPoints,
        )?;
        take(
            &self.tenant_points,
            tenant,
            &self.tenant_share(&p.rates.tenant_data_points),
            now,
            points,
            LimitId::TenantDataPoints,
        )
    }

    /// A device registry operation through the API.
    pub fn registry(&self, p: &Profile, tenant: &str, now: u64) -> Result<(), Limited> {
        take(
            &self.registry,
            tenant,
            &self.tenant_share(&p.rates.registry_operations),
            now,
            1,
            LimitId::RegistryOperations,
        )
    }

    /// A message a rule of the tenant is about to process (L-051).
    pub fn rule_message(&self, p: &Profile, tenant: &str, now: u64) -> Result<(), Limited> {
        take(
            &self.rule_messages,
            tenant,
            &self.tenant_share(&p.rates.rule_messages),
            now,
            1,
            LimitId::RuleMessages,
        )
    }

    /// A rule output about to be written to a destination (L-052).
    pub fn rule_write(&self, p: &Profile, tenant: &str, now: u64) -> Result<(), Limited> {
        take(
            &self.rule_writes,
            tenant,
            &self.tenant_share(&p.rates.rule_writes),
            now,
            1,
            LimitId::RuleWrites,
        )
    }

    /// A business API request of the tenant (L-076).
    pub fn api_request(&self, p: &Profile, tenant: &str, now: u64) -> Result<(), Limited> {
        take(
            &self.api_requests,
            tenant,
            &self.tenant_share(&p.rates.api_requests),
            now,
            1,
            LimitId::ApiRequests,
        )
    }

    /// A message the business API sends to a device: the device's rate (L-018), then the
    /// tenant's (L-015).
    pub fn downlink(
        &self,
        p: &Profile,
        tenant: &str,
        device: &str,
        now: u64,
    ) -> Result<(), Limited> {
        take(
            &self.device_downlink,
            device,
            &p.rates.device_downlink,
            now,
            1,
            LimitId::DeviceDownlink,
        )?;
        take(
            &self.tenant_downlink,
            tenant,
            &self.tenant_share(&p.rates.tenant_downlink),
            now,
            1,
            LimitId::TenantDownlink,
        )
    }

    /// A broadcast of the tenant (L-036).
    pub fn broadcast(&self, p: &Profile, tenant: &str, now: u64) -> Result<(), Limited> {
        take(
            &self.broadcasts,
            tenant,
            &self.tenant_share(&p.rates.broadcasts),
            now,
            1,
            LimitId::Broadcasts,
        )
    }

    /// A shadow request of a device (L-043).
    pub fn shadow_request(&self, p: &Profile, device: &str, now: u64) -> Result<(), Limited> {
        take(
            &self.shadow_requests,
            device,
            &p.rates.shadow_requests,
            now,
            1,
            LimitId::ShadowRequests,
        )
    }

    /// Sub-devices logging in through one gateway (L-008), `count` at once.
    pub fn sub_device_logins(
        &self,
        p: &Profile,
        gateway: &str,
        count: u64,
        now: u64,
    ) -> Result<(), Limited> {
        take(
            &self.sub_device_logins,
            gateway,
            &p.rates.sub_device_logins,
            now,
            count,
            LimitId::SubDeviceLogins,
        )
    }

    /// Drops state that is back to its initial value (full buckets, empty windows): it is the
    /// same as no state, so memory stays bounded by the keys active in the last period.
    pub fn sweep(&self, now: u64) {
        for k in [
            &self.tenant_connections,
            &self.device_connections,
            &self.tenant_messages,
            &self.device_qos0,
            &self.device_qos1,
            &self.tenant_points,
            &self.device_points,
            &self.registry,
            &self.rule_messages,
            &self.rule_writes,
            &self.api_requests,
            &self.tenant_downlink,
            &self.device_downlink,
            &self.broadcasts,
            &self.shadow_requests,
            &self.sub_device_logins,
        ] {
            k.map
                .lock()
                .expect("limiter lock")
                .retain(|_, (_, b)| !b.full_at(now));
        }
        self.hourly_points
            .map
            .lock()
            .expect("limiter lock")
            .retain(|_, (_, w)| w.used(now) > 0);
    }
}
