//! Tenants, products and devices: the entities the admin API manages and the hub authenticates.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// A tenant owns products; routing never crosses tenants.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Stable identifier, chosen at creation (`[a-z0-9_-]{1,64}`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The tenant profile whose limits apply.
    pub profile: String,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
}

/// Whether devices of a product connect directly or carry sub-devices.
#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// A device that connects on its own.
    #[default]
    Device,
    /// A gateway that owns sub-devices.
    Gateway,
}

/// A set of devices sharing a ProductKey (and a ProductSecret for dynamic registration).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// The tenant that owns the product.
    pub tenant: String,
    /// Globally unique key, issued by the hub.
    pub product_key: String,
    /// Display name.
    pub name: String,
    /// Device or gateway.
    pub node_type: NodeType,
    /// Secret for per-product (dynamic) registration. Never logged; returned only on creation.
    pub product_secret: String,
    /// Whether devices may obtain their DeviceSecret with the ProductSecret.
    pub dynamic_registration: bool,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
}

/// What a device says about itself: its tags (from the device's `thing/deviceinfo/update`, or
/// the admin API) and the firmware version it last reported per module (`/ota/device/inform`).
#[derive(schemars::JsonSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Tag key to value.
    pub tags: std::collections::BTreeMap<String, String>,
    /// Module (`default` when the device named none) to the version it reported.
    pub firmware: std::collections::BTreeMap<String, String>,
}

/// A product's remote configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteConfig {
    /// The file's id (a new one for every change).
    pub config_id: String,
    /// The file, JSON text as it was set.
    pub content: String,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// When it was set, ms since the epoch.
    pub updated_at_ms: u64,
}

/// How a product's devices speak the thing model (Alibaba's product "data type").
#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// Raw frames on `/thing/model/up_raw` and `down_raw`, turned into Alink JSON and back by
    /// the product's parsing script.
    #[default]
    Custom,
    /// Alink JSON on the thing-model topics; the script parses custom topics only.
    AlinkJson,
}

/// A product's data parsing script (JavaScript with Alibaba's entry points).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsingScript {
    /// The JavaScript source.
    pub source: String,
    /// How the product's devices speak the thing model.
    pub data_format: DataFormat,
    /// Changes with every new source (caches compile each version once).
    pub version: u64,
    /// When it was set, ms since the epoch.
    pub updated_at_ms: u64,
}

/// A service invoked asynchronously through the business API, and the device's answer.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceCall {
    /// The Alink id of the call (its `message_id`).
    pub message_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// ProductKey.
    pub product_key: String,
    /// DeviceName.
    pub device_name: String,
    /// The service's identifier (a custom module's as `{module}:{service}`).
    pub service: String,
    /// Its input parameters.
    pub params: serde_json::Value,
    /// When it was sent, ms since the epoch.
    pub sent_at_ms: u64,
    /// The device's answer on `.../thing/service/{identifier}_reply`, once it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ServiceReply>,
}

/// A device's answer to a service call.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReply {
    /// The device's Alink code (200: done).
    pub code: i64,
    /// The device's message, if any.
    #[serde(default)]
    pub message: String,
    /// The service's output.
    pub data: serde_json::Value,
    /// When it came, ms since the epoch.
    pub replied_at_ms: u64,
}

/// A desired value of a property (Alibaba's desired properties): what the business wants the
/// device to take, which the device reads when it can.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredValue {
    /// The value.
    pub value: serde_json::Value,
    /// 1 for the first value, one more with each change.
    pub version: u64,
    /// When it was set, ms since the epoch.
    pub time_ms: u64,
}

/// A device under a product.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The product's key.
    pub product_key: String,
    /// Unique under the product.
    pub device_name: String,
    /// The tenant that owns the product.
    pub tenant: String,
    /// HMAC key of the device's credentials. Never logged; returned only on creation.
    pub device_secret: String,
    /// A disabled device is refused at connect and disconnected when disabled.
    pub enabled: bool,
    /// Set on the first successful connection (or dynamic registration).
    pub activated: bool,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
}

/// A consumer group (server-side subscription): a durable queue on a sink that receives the
/// upstream messages and the status and lifecycle notifications of its products' devices.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroup {
    /// The tenant that owns the group.
    pub tenant: String,
    /// Identifier, issued by the hub.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The sink holding the queue ("amqp" or "sqs").
    pub sink: String,
    /// The queue's name on the sink: `ironhub.{tenant}.{id}` (AMQP), `ih-{tenant}-{id}` (SQS).
    pub queue: String,
    /// Associated ProductKeys, sorted.
    pub products: Vec<String>,
    /// How long an unconsumed message is kept, seconds (fixed at creation).
    pub retention_secs: u64,
    /// Most messages kept (fixed at creation).
    pub max_messages: u64,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
    /// The broker user that may consume the queue, when the sink manages consumer credentials
    /// (its password is shown once, at creation).
    pub consumer_user: Option<String>,
}

/// The state the admin API reports for a device (seed 000: inactive, online, offline, disabled).
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Never connected.
    Inactive,
    /// Holds a connection now.
    Online,
    /// Connected before, not now.
    Offline,
    /// Refused at connect.
    Disabled,
}

const KEY_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A random string over `[A-Za-z0-9]`.
pub fn random_token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| KEY_ALPHABET[rng.random_range(0..KEY_ALPHABET.len())] as char)
        .collect()
}

/// A new secret: 32 hex characters (128 bits).
pub fn new_secret() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// A new ProductKey in the Alibaba shape (11 characters, starting with a letter).
pub fn new_product_key() -> String {
    format!("a1{}", random_token(9))
}

/// Why an identifier was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{field} {reason}")]
pub struct InvalidName {
    /// Which field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// What [`validate_device_name`] accepts, as a regular expression (for API schemas).
pub const DEVICE_NAME_PATTERN: &str = "^[A-Za-z0-9_@.:-]{4,32}$";

/// What [`validate_tenant_id`] accepts (tenant ids and profile names).
pub const TENANT_ID_PATTERN: &str = "^[a-z0-9_-]{1,64}$";

/// A display name: 1 to 64 characters, not all white space.
pub const DISPLAY_NAME_PATTERN: &str = "\\S";

/// Checks a display name (products, groups, rules, API keys): 1 to 64 characters, not only
/// white space.
pub fn valid_display_name(name: &str) -> bool {
    !name.trim().is_empty() && name.chars().count() <= 64
}

/// DeviceName rule (Alibaba): 4 to 32 characters of letters, digits and `-_@.:`.
pub fn validate_device_name(name: &str) -> Result<(), InvalidName> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_@.:".contains(c));
    if !(4..=32).contains(&name.len()) {
        return Err(InvalidName {
            field: "device_name",
            reason: "must be 4 to 32 characters",
        });
    }
    if !ok_chars {
        return Err(InvalidName {
            field: "device_name",
            reason: "may contain only letters, digits and -_@.:",
        });
    }
    Ok(())
}

/// Tenant id rule: 1 to 64 characters of lowercase letters, digits, `-` and `_`.
pub fn validate_tenant_id(id: &str) -> Result<(), InvalidName> {
    if id.is_empty() || id.len() > 64 {
        return Err(InvalidName {
            field: "id",
            reason: "must be 1 to 64 characters",
        });
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(InvalidName {
            field: "id",
            reason: "may contain only lowercase letters, digits, - and _",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let pk = new_product_key();
        assert_eq!(pk.len(), 11);
        assert!(pk.starts_with("a1"));
        let s = new_secret();
        assert_eq!(s.len(), 32);
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(new_secret(), s);
    }

    #[test]
    fn device_names_are_checked() {
        assert!(validate_device_name("lamp-01").is_ok());
        assert!(validate_device_name("abc").is_err());
        assert!(validate_device_name("has space").is_err());
        assert!(validate_device_name(&"x".repeat(33)).is_err());
        assert!(validate_tenant_id("acme_1").is_ok());
        assert!(validate_tenant_id("Acme").is_err());
    }
}
