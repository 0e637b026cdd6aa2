//! Server configuration: defaults, then an optional TOML file, then environment / command-line
//! overrides (see `ServeArgs`). Every section and key is documented in docs/operations.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ironhub_core::HubConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded store keeps its file.
    pub data_dir: PathBuf,
    /// The admin REST API.
    pub admin: AdminConfig,
    /// The MQTT transport.
    pub mqtt: MqttConfig,
    /// MQTT over QUIC.
    pub quic: QuicConfig,
    /// The HTTP device transport.
    pub http: HttpConfig,
    /// The CoAP device transport.
    pub coap: CoapConfig,
    /// The storage backend.
    pub store: StoreConfig,
    /// The AMQP sink (consumer groups); absent: no AMQP.
    pub amqp: Option<AmqpConfig>,
    /// The SQS sink (consumer groups on SQS); absent: no SQS.
    pub sqs: Option<SqsConfig>,
    /// Hub engine settings (keep-alive range, queue sizes, open-broker mode).
    pub hub: HubConfig,
    /// This node's place in a cluster sharing the store; absent: a single node.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: one node of several sharing a store (FoundationDB in production).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster (`[a-z0-9_-]`).
    pub node_id: String,
    /// Where the node-to-node link listens.
    pub listen: SocketAddr,
    /// Where the other nodes reach this one (default: `listen`).
    pub advertise: Option<String>,
    /// Where devices reach this node's MQTT listener, told to them when another node hands
    /// over (default: none).
    pub mqtt_advertise: Option<String>,
    /// Shared secret every node presents on the link.
    pub secret: String,
    /// How often the node renews its lease, ms.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How long a lease lasts, ms: a node silent this long counts as gone.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
}

fn default_heartbeat_ms() -> u64 {
    1000
}

fn default_lease_ms() -> u64 {
    5000
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            admin: AdminConfig::default(),
            mqtt: MqttConfig::default(),
            quic: QuicConfig::default(),
            http: HttpConfig::default(),
            coap: CoapConfig::default(),
            store: StoreConfig::default(),
            amqp: None,
            sqs: None,
            hub: HubConfig::default(),
            cluster: None,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address; loopback by default so the API is closed to the network.
    pub listen: SocketAddr,
    /// Admin token. When unset, one is generated on first start, printed once, and only its
    /// SHA-256 is kept in the store.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
        }
    }
}

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Serve MQTT (needs the `mqtt` cargo feature).
    pub enabled: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// MQTT over TLS on a second listener, when set.
    pub tls: Option<TlsListenerConfig>,
    /// MQTT over WebSocket on a listener of its own, when set.
    pub websocket: Option<WebSocketListenerConfig>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        let listen = SocketAddr::from(([0, 0, 0, 0], 1883));
        MqttConfig {
            enabled: true,
            listen,
            tls: None,
            websocket: None,
        }
    }
}

/// `[mqtt.websocket]`: MQTT over WebSocket (browsers, networks that pass HTTP only), with TLS
/// (`wss://`) when a certificate and key are given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketListenerConfig {
    /// Listen address (8083 by convention, as EMQX).
    #[serde(default = "default_websocket_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first (with `key`: `wss://`).
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

fn default_websocket_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8083))
}

/// `[mqtt.tls]`: a TLS listener with a certificate chain and key in PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// Listen address (8883 by convention).
    #[serde(default = "default_tls_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn default_tls_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8883))
}

/// `[quic]`: MQTT over QUIC (needs the `quic` cargo feature). Off by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    /// Serve MQTT over QUIC.
    pub enabled: bool,
    /// UDP listen address (14567, as EMQX).
    pub listen: SocketAddr,
    /// PEM certificate chain; with `key` unset, a self-signed pair is generated in `data_dir`.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 14567)),
            cert: None,
            key: None,
        }
    }
}

/// `[http]`: the HTTP device transport (needs the `http` cargo feature). Off by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve HTTP devices.
    pub enabled: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// How long a device token from `/auth` is valid, seconds (Alibaba: 48 hours).
    pub token_ttl_secs: u64,
    /// PEM certificate chain: with `key`, the listener speaks HTTPS; without both, plain HTTP.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            token_ttl_secs: 48 * 3600,
            cert: None,
            key: None,
        }
    }
}

/// `[coap]`: CoAP devices (UDP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    /// Off unless enabled.
    pub enabled: bool,
    /// UDP address.
    pub listen: SocketAddr,
    /// How long device tokens live.
    pub token_ttl_secs: u64,
    /// How long a confirmable request may take before an empty ACK and a separate response.
    pub separate_after_ms: u64,
}

impl Default for CoapConfig {
    fn default() -> Self {
        CoapConfig {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 5683)),
            token_ttl_secs: 48 * 3600,
            separate_after_ms: 500,
        }
    }
}

/// `[sqs]`: the SQS sink; consumer groups created with `"sink": "sqs"` are SQS queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    /// A custom endpoint (`http://127.0.0.1:4566`); absent: AWS's regional endpoint.
    pub endpoint: Option<String>,
    /// The region.
    #[serde(default = "default_region")]
    pub region: String,
    /// Static credentials; absent: the AWS default chain (environment, profile, instance role).
    pub access_key_id: Option<String>,
    /// The secret of `access_key_id`.
    pub secret_access_key: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// `[amqp]`: the AMQP sink; consumer groups are queues on this broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:port/vhost` (or `amqps://`).
    pub url: String,
    /// RabbitMQ's management API (`http://host:15672`): with it, each consumer group gets its
    /// own user, read-only on its queue, with at most L-062 consumers. The URL's user needs the
    /// `administrator` tag.
    pub management_url: Option<String>,
}

/// Which storage backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// redb in `data_dir` (needs the `embedded` cargo feature).
    #[default]
    Embedded,
    /// In memory: nothing survives a restart. For tests and demos.
    Memory,
    /// A FoundationDB cluster shared by several nodes (needs the `fdb` cargo feature).
    Fdb,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Backend.
    pub backend: StoreBackend,
    /// FoundationDB's cluster file (absent: its default, `/etc/foundationdb/fdb.cluster`).
    pub cluster_file: Option<PathBuf>,
    /// Prefix of every key in FoundationDB, one per deployment sharing a cluster.
    pub key_prefix: String,
    /// Memory the embedded store keeps for file pages, MiB (absent: 64).
    pub cache_mib: Option<usize>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Embedded,
            cluster_file: None,
            key_prefix: "ironhub/".into(),
            cache_mib: None,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: toml::de::Error,
    },
}

impl Config {
    /// Defaults, overlaid with `path` when given.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_keep_defaults_and_unknown_keys_are_errors() {
        let c: Config = toml::from_str(
            "[mqtt]\nlisten = \"127.0.0.1:1999\"\n[hub.open_broker]\nenabled = true\n",
        )
        .unwrap();
        assert_eq!(c.mqtt.listen.port(), 1999);
        assert!(c.mqtt.enabled);
        assert!(c.hub.open_broker.enabled);
        assert_eq!(c.hub.keepalive_max_secs, 1200);
        assert_eq!(c.admin.listen.ip().to_string(), "127.0.0.1");
        assert!(toml::from_str::<Config>("[mqtt]\nlisten_addr = \"x\"\n").is_err());
    }
}
