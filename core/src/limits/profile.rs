//! Tenant profiles (seed 001): entity limits, rate limits in the `"100:1,1000:60"` syntax at device
//! and tenant level, the per-thing data-points-per-hour window (seed 003) and monthly API limits.
//! Every default is the seeds' value; every value can be overridden per profile. A count of 0
//! means unlimited; an empty rate means unlimited.

use serde::{Deserialize, Serialize};

use super::rate::RateSpec;

/// The profile every tenant has unless given another.
pub const DEFAULT_PROFILE: &str = "default";

fn rate(s: &str) -> RateSpec {
    s.parse().expect("built-in rate specs are valid")
}

/// A named set of limits, shared by the tenants that use it.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// Unique name.
    pub name: String,
    /// How many entities a tenant may create.
    pub entities: EntityLimits,
    /// Token-bucket rate limits.
    pub rates: RateLimits,
    /// Data points one device may publish per hour, as a 60-slot sliding window with one slot of
    /// overdraft (seed 003: 3600).
    pub data_points_per_hour: u64,
    /// Days property values and events are kept (seed 000: 30; seed 001's storage TTL); 0 keeps
    /// no history.
    pub history_retention_days: u64,
    /// Monthly API limits: a warning at 80 %, the component disabled for the tenant at 100 %.
    pub monthly: MonthlyLimits,
    /// Rules and server-side subscription: consumer groups and their queues.
    pub forwarding: ForwardingLimits,
    /// The business API.
    pub business: BusinessLimits,
    /// Device shadows.
    pub shadow: ShadowLimits,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            name: DEFAULT_PROFILE.into(),
            entities: EntityLimits::default(),
            rates: RateLimits::default(),
            data_points_per_hour: 3600,
            history_retention_days: 30,
            monthly: MonthlyLimits::default(),
            forwarding: ForwardingLimits::default(),
            business: BusinessLimits::default(),
            shadow: ShadowLimits::default(),
        }
    }
}

/// Entity limits (seed 000 section 7, seed 001).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EntityLimits {
    /// Products per tenant (seed 000: 1,000).
    pub products: u64,
    /// Devices per tenant (seed 000: 10,000,000).
    pub devices: u64,
    /// Devices per product (seed 000: 1,000,000).
    pub devices_per_product: u64,
    /// Topic filters one device may hold (seed 000: 100).
    pub subscriptions_per_device: u64,
    /// Sub-devices one gateway may carry (seed 000: 1,500).
    pub sub_devices_per_gateway: u64,
    /// Sub-devices online through one gateway at once (Alibaba: as many as it may carry).
    pub sub_devices_online_per_gateway: u64,
    /// Sub-devices in one login or logout request (Alibaba: 50).
    pub sub_devices_per_login: u64,
    /// Tags of one product, device or group (seed 000: 100).
    pub tags_per_device: u64,
    /// Custom topic categories per product (seed 000: 50).
    pub topic_categories: u64,
    /// Firmware packages per tenant (seed 000: 500).
    pub ota_packages: u64,
    /// Largest firmware package, bytes (seed 000: 2,000 MB).
    pub ota_package_bytes: u64,
    /// Devices one upgrade batch may target (seed 000: 100,000).
    pub ota_batch_devices: u64,
    /// Largest remote configuration file of a product, bytes (seed 000: 64 KB).
    pub remote_config_bytes: u64,
    /// Largest data parsing script of a product, bytes (seed 000: 128 KB).
    pub script_bytes: u64,
    /// Device groups per tenant, sub-groups included (seed 000: 1,000).
    pub device_groups: u64,
    /// Devices in one group (seed 000: 100,000).
    pub devices_per_group: u64,
    /// Groups one device is in (seed 000: 10).
    pub groups_per_device: u64,
}

impl Default for EntityLimits {
    fn default() -> Self {
        EntityLimits {
            products: 1_000,
            devices: 10_000_000,
            devices_per_product: 1_000_000,
            subscriptions_per_device: 100,
            sub_devices_per_gateway: 1_500,
            sub_devices_online_per_gateway: 1_500,
            sub_devices_per_login: 50,
            tags_per_device: 100,
            topic_categories: 50,
            ota_packages: 500,
            ota_package_bytes: 2_000 * 1024 * 1024,
            ota_batch_devices: 100_000,
            remote_config_bytes: 64 * 1024,
            script_bytes: 128 * 1024,
            device_groups: 1_000,
            devices_per_group: 100_000,
            groups_per_device: 10,
        }
    }
}

/// Rate limits, each a set of token buckets (seed 001 syntax).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Connection requests per tenant (seed 000: 500 per second).
    pub tenant_connections: RateSpec,
    /// Connection requests per device (seed 000: 5 per minute).
    pub device_connections: RateSpec,
    /// Messages from all of a tenant's devices (seed 000: 10,000 per second).
    pub tenant_messages: RateSpec,
    /// QoS 0 messages per device (seed 000: 30 per second).
    pub device_messages_qos0: RateSpec,
    /// QoS 1 messages per device (seed 000: 10 per second).
    pub device_messages_qos1: RateSpec,
    /// Data points from all of a tenant's devices (no seed default: unlimited).
    pub tenant_data_points: RateSpec,
    /// Data points per device (no seed default: unlimited; the hourly window still applies).
    pub device_data_points: RateSpec,
    /// Device registry operations (create, disable, enable, delete) per tenant through the API
    /// (seed 002 throttles identity operations; 100 per second).
    pub registry_operations: RateSpec,
    /// Messages the tenant's rules process (seed 000: 1,000 per second).
    pub rule_messages: RateSpec,
    /// Writes of rule outputs to destinations (seed 000: 2,000 per second).
    pub rule_writes: RateSpec,
    /// Business API requests per tenant (seed 001: 100 per second).
    pub api_requests: RateSpec,
    /// Messages the business API sends to the tenant's devices (Pub, RRPC; seed 000: 2,000 per
    /// second).
    pub tenant_downlink: RateSpec,
    /// Messages the business API sends to one device (seed 000: 50 per second).
    pub device_downlink: RateSpec,
    /// Broadcasts per tenant (seed 000: one per minute).
    pub broadcasts: RateSpec,
    /// Shadow requests per device (seed 000: 20 per second).
    pub shadow_requests: RateSpec,
    /// Sub-devices logging in through one gateway (no seed value: 100 per second, so a gateway
    /// brings its 1,500 sub-devices back within 15 seconds).
    pub sub_device_logins: RateSpec,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            tenant_connections: rate("500:1"),
            device_connections: rate("5:60"),
            tenant_messages: rate("10000:1"),
            device_messages_qos0: rate("30:1"),
            device_messages_qos1: rate("10:1"),
            tenant_data_points: RateSpec::default(),
            device_data_points: RateSpec::default(),
            registry_operations: rate("100:1"),
            rule_messages: rate("1000:1"),
            rule_writes: rate("2000:1"),
            api_requests: rate("100:1"),
            tenant_downlink: rate("2000:1"),
            device_downlink: rate("50:1"),
            broadcasts: rate("1:60"),
            shadow_requests: rate("20:1"),
            sub_device_logins: rate("100:1"),
        }
    }
}

/// Device shadow limits (seed 000).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShadowLimits {
    /// JSON levels of the reported or desired state (seed 000: 5).
    pub levels: u64,
    /// Size of the shadow document, bytes (seed 000: 16 KB).
    pub bytes: u64,
    /// Reported plus desired properties (seed 000: 128).
    pub properties: u64,
}

impl Default for ShadowLimits {
    fn default() -> Self {
        ShadowLimits {
            levels: 5,
            bytes: 16 * 1024,
            properties: 128,
        }
    }
}

/// Business API limits (seed 000).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusinessLimits {
    /// Largest broadcast payload, bytes (seed 000: 64 KB).
    pub broadcast_bytes: u64,
}

impl Default for BusinessLimits {
    fn default() -> Self {
        BusinessLimits {
            broadcast_bytes: 64 * 1024,
        }
    }
}

/// Rules and server-side subscription limits (seed 000 section 7: rules engine, AMQP
/// server-side subscription).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardingLimits {
    /// Rules per tenant (seed 000: 1,000).
    pub rules: u64,
    /// Destinations one rule may have (seed 000: 10).
    pub destinations_per_rule: u64,
    /// Consumer groups per tenant (seed 000: 1,000).
    pub consumer_groups: u64,
    /// Consumer groups one product may be associated with (seed 000: 10).
    pub groups_per_product: u64,
    /// Products one consumer group may be associated with (seed 000: 1,000).
    pub products_per_group: u64,
    /// Consumers (connections, and channels) of one consumer group's broker user (seed 000: 64).
    pub consumers_per_group: u64,
    /// How long a consumer group keeps a message nobody consumed, seconds (seed 000: one day).
    pub group_retention_secs: u64,
    /// Messages a consumer group keeps; the oldest are dropped beyond it (seed 000: 100 million).
    pub group_max_messages: u64,
}

impl Default for ForwardingLimits {
    fn default() -> Self {
        ForwardingLimits {
            rules: 1_000,
            destinations_per_rule: 10,
            consumer_groups: 1_000,
            groups_per_product: 10,
            products_per_group: 1_000,
            consumers_per_group: 64,
            group_retention_secs: 86_400,
            group_max_messages: 100_000_000,
        }
    }
}

/// Monthly API limits (seed 001). 0 means unlimited.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonthlyLimits {
    /// Messages devices send to the hub per month (seed 001's example: 100 million).
    pub transport_messages: u64,
    /// Data points devices send per month (no seed default: unlimited).
    pub transport_data_points: u64,
    /// Rule executions per month (seed 001: unlimited by default).
    pub rule_executions: u64,
    /// Data parsing script executions per month (seed 001's JavaScript executions: unlimited by
    /// default).
    pub js_executions: u64,
    /// History values stored per month, each times the days it is kept (seed 001's storage
    /// data point days: unlimited by default).
    pub stored_point_days: u64,
}

impl Default for MonthlyLimits {
    fn default() -> Self {
        MonthlyLimits {
            transport_messages: 100_000_000,
            transport_data_points: 0,
            rule_executions: 0,
            js_executions: 0,
            stored_point_days: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seed_values_and_partial_overrides_keep_them() {
        let p: Profile =
            serde_json::from_str(r#"{"name":"small","rates":{"device_messages_qos0":"5:1"}}"#)
                .unwrap();
        assert_eq!(p.rates.device_messages_qos0.to_string(), "5:1");
        assert_eq!(p.rates.device_connections.to_string(), "5:60");
        assert_eq!(p.entities.subscriptions_per_device, 100);
        assert_eq!(p.data_points_per_hour, 3600);
        assert!(
            serde_json::from_str::<Profile>(r#"{"rates":{"device_messages_qos0":"fast"}}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Profile>(r#"{"colour":"red"}"#).is_err());
    }
}
