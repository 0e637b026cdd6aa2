//! The one place where cargo features select components. A configuration that names a component
//! compiled out of this binary fails at start with the feature to enable.

use std::sync::Arc;

use ironhub_core::sink::Sink;
use ironhub_core::store::Store;
use ironhub_core::transport::Transport;

use crate::config::{Config, StoreBackend};

/// A component the configuration asks for is not in this build.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// Compiled out.
    #[cfg_attr(
        all(
            feature = "mqtt",
            feature = "quic",
            feature = "http",
            feature = "coap",
            feature = "embedded",
            feature = "amqp",
            feature = "sqs",
            feature = "fdb"
        ),
        expect(
            dead_code,
            reason = "constructed only in builds that leave a component out"
        )
    )]
    #[error(
        "{component} is configured but this binary was built without it: rebuild with `--features {feature}`"
    )]
    CompiledOut {
        /// What the config asked for.
        component: &'static str,
        /// The cargo feature of the server crate that provides it.
        feature: &'static str,
    },
    /// The component failed to start.
    #[error("{component}: {reason}")]
    Start {
        /// Which.
        component: &'static str,
        /// Why.
        reason: String,
    },
}

/// Opens the configured store.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, ComponentError> {
    match config.store.backend {
        StoreBackend::Memory => Ok(Arc::new(ironhub_core::store::memory::memory_store())),
        #[cfg(feature = "embedded")]
        StoreBackend::Embedded => ironhub_store_embedded::open(
            &config.data_dir,
            config
                .store
                .cache_mib
                .map_or(ironhub_store_embedded::DEFAULT_CACHE_BYTES, |mib| mib << 20),
        )
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .map_err(|e| ComponentError::Start {
            component: "embedded store",
            reason: e.to_string(),
        }),
        #[cfg(not(feature = "embedded"))]
        StoreBackend::Embedded => Err(ComponentError::CompiledOut {
            component: "store.backend = \"embedded\"",
            feature: "embedded",
        }),
        #[cfg(feature = "fdb")]
        StoreBackend::Fdb => {
            let cluster_file = config
                .store
                .cluster_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned());
            ironhub_store_fdb::FdbStore::open(
                cluster_file.as_deref(),
                config.store.key_prefix.as_bytes(),
            )
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| ComponentError::Start {
                component: "fdb store",
                reason: e.to_string(),
            })
        }
        #[cfg(not(feature = "fdb"))]
        StoreBackend::Fdb => Err(ComponentError::CompiledOut {
            component: "store.backend = \"fdb\"",
            feature: "fdb",
        }),
    }
}

/// Binds the configured transports.
pub async fn transports(config: &Config) -> Result<Vec<Box<dyn Transport>>, ComponentError> {
    let mut out = Vec::new();
    if config.mqtt.enabled {
        out.extend(mqtt(config).await?);
    }
    if config.quic.enabled {
        out.push(quic(config)?);
    }
    if config.http.enabled {
        out.push(http(config).await?);
    }
    if config.coap.enabled {
        out.push(coap(config).await?);
    }
    Ok(out)
}

#[cfg(feature = "coap")]
async fn coap(config: &Config) -> Result<Box<dyn Transport>, ComponentError> {
    let c = &config.coap;
    let settings = ironhub_coap::CoapSettings {
        token_ttl_secs: c.token_ttl_secs,
        separate_after: std::time::Duration::from_millis(c.separate_after_ms),
    };
    let t = ironhub_coap::CoapTransport::bind(c.listen, settings)
        .await
        .map_err(|e| ComponentError::Start {
            component: "coap",
            reason: format!("bind {}: {e}", c.listen),
        })?;
    Ok(Box::new(t))
}

#[cfg(not(feature = "coap"))]
async fn coap(_config: &Config) -> Result<Box<dyn Transport>, ComponentError> {
    Err(ComponentError::CompiledOut {
        component: "[coap]",
        feature: "coap",
    })
}

#[cfg(feature = "http")]
async fn http(config: &Config) -> Result<Box<dyn Transport>, ComponentError> {
    let h = &config.http;
    let start = |reason: String| ComponentError::Start {
        component: "http",
        reason,
    };
    let tls = match (&h.cert, &h.key) {
        (Some(cert), Some(key)) => {
            Some(ironhub_tcp::tls::acceptor(cert, key).map_err(|e| start(e.to_string()))?)
        }
        (None, None) => None,
        _ => {
            return Err(start(
                "set both http.cert and http.key for HTTPS, or neither for plain HTTP".into(),
            ));
        }
    };
    let t = ironhub_http::HttpTransport::bind(h.listen, h.token_ttl_secs, tls)
        .await
        .map_err(|e| start(format!("bind {}: {e}", h.listen)))?;
    Ok(Box::new(t))
}

#[cfg(not(feature = "http"))]
async fn http(_config: &Config) -> Result<Box<dyn Transport>, ComponentError> {
    Err(ComponentError::CompiledOut {
        component: "[http]",
        feature: "http",
    })
}

#[cfg(feature = "quic")]
fn quic(config: &Config) -> Result<Box<dyn Transport>, ComponentError> {
    let start = |reason: String| ComponentError::Start {
        component: "quic",
        reason,
    };
    let q = &config.quic;
    let (cert, key) = match (&q.cert, &q.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => {
            ironhub_quic::self_signed(&config.data_dir).map_err(|e| start(e.to_string()))?
        }
        _ => {
            return Err(start(
                "set both quic.cert and quic.key, or neither (self-signed)".into(),
            ));
        }
    };
    let t = ironhub_quic::QuicTransport::bind(q.listen, &cert, &key)
        .map_err(|e| start(e.to_string()))?;
    Ok(Box::new(t))
}

#[cfg(not(feature = "quic"))]
fn quic(_config: &Config) -> Result<Box<dyn Transport>, ComponentError> {
    Err(ComponentError::CompiledOut {
        component: "[quic]",
        feature: "quic",
    })
}

#[cfg(feature = "mqtt")]
async fn mqtt(config: &Config) -> Result<Vec<Box<dyn Transport>>, ComponentError> {
    let start = |component, reason| ComponentError::Start { component, reason };
    let plain = ironhub_mqtt::MqttTransport::bind(config.mqtt.listen)
        .await
        .map_err(|e| start("mqtt", format!("bind {}: {e}", config.mqtt.listen)))?;
    let mut out: Vec<Box<dyn Transport>> = vec![Box::new(plain)];
    if let Some(tls) = &config.mqtt.tls {
        let acceptor = ironhub_tcp::tls::acceptor(&tls.cert, &tls.key)
            .map_err(|e| start("mqtt tls", e.to_string()))?;
        let secure = ironhub_mqtt::MqttTransport::bind_tls(tls.listen, acceptor)
            .await
            .map_err(|e| start("mqtt tls", format!("bind {}: {e}", tls.listen)))?;
        out.push(Box::new(secure));
    }
    if let Some(ws) = &config.mqtt.websocket {
        let tls = match (&ws.cert, &ws.key) {
            (Some(cert), Some(key)) => Some(
                ironhub_tcp::tls::acceptor(cert, key)
                    .map_err(|e| start("mqtt websocket", e.to_string()))?,
            ),
            (None, None) => None,
            _ => {
                return Err(start(
                    "mqtt websocket",
                    "cert and key go together (both for wss://, neither for ws://)".into(),
                ));
            }
        };
        let websocket = ironhub_mqtt::MqttTransport::bind_websocket(ws.listen, tls)
            .await
            .map_err(|e| start("mqtt websocket", format!("bind {}: {e}", ws.listen)))?;
        out.push(Box::new(websocket));
    }
    Ok(out)
}

#[cfg(not(feature = "mqtt"))]
async fn mqtt(_config: &Config) -> Result<Vec<Box<dyn Transport>>, ComponentError> {
    Err(ComponentError::CompiledOut {
        component: "[mqtt]",
        feature: "mqtt",
    })
}

/// The configured sinks.
pub async fn sinks(config: &Config) -> Result<Vec<Arc<dyn Sink>>, ComponentError> {
    let mut out = Vec::new();
    if let Some(amqp) = &config.amqp {
        out.push(amqp_sink(amqp)?);
    }
    if let Some(sqs) = &config.sqs {
        out.push(sqs_sink(sqs).await?);
    }
    Ok(out)
}

#[cfg(feature = "sqs")]
async fn sqs_sink(c: &crate::config::SqsConfig) -> Result<Arc<dyn Sink>, ComponentError> {
    let credentials = match (&c.access_key_id, &c.secret_access_key) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        (None, None) => None,
        _ => {
            return Err(ComponentError::Start {
                component: "sqs",
                reason: "set both sqs.access_key_id and sqs.secret_access_key, or neither".into(),
            });
        }
    };
    let settings = ironhub_sqs::SqsSettings {
        endpoint: c.endpoint.clone(),
        region: c.region.clone(),
        credentials,
    };
    Ok(Arc::new(ironhub_sqs::SqsSink::new(&settings).await))
}

#[cfg(not(feature = "sqs"))]
async fn sqs_sink(_c: &crate::config::SqsConfig) -> Result<Arc<dyn Sink>, ComponentError> {
    Err(ComponentError::CompiledOut {
        component: "[sqs]",
        feature: "sqs",
    })
}

#[cfg(feature = "amqp")]
fn amqp_sink(c: &crate::config::AmqpConfig) -> Result<Arc<dyn Sink>, ComponentError> {
    let sink = ironhub_amqp::AmqpSink::new(&c.url);
    let sink = match &c.management_url {
        Some(base) => sink
            .with_management(base)
            .map_err(|reason| ComponentError::Start {
                component: "amqp",
                reason,
            })?,
        None => sink,
    };
    Ok(Arc::new(sink))
}

#[cfg(not(feature = "amqp"))]
fn amqp_sink(_c: &crate::config::AmqpConfig) -> Result<Arc<dyn Sink>, ComponentError> {
    Err(ComponentError::CompiledOut {
        component: "[amqp]",
        feature: "amqp",
    })
}

/// The components compiled into this binary, for `ironhub --version` and logs.
pub fn compiled() -> Vec<&'static str> {
    let mut v = vec!["store:memory"];
    if cfg!(feature = "embedded") {
        v.push("store:embedded");
    }
    if cfg!(feature = "fdb") {
        v.push("store:fdb");
    }
    if cfg!(feature = "mqtt") {
        v.push("transport:mqtt");
    }
    if cfg!(feature = "quic") {
        v.push("transport:quic");
    }
    if cfg!(feature = "http") {
        v.push("transport:http");
    }
    if cfg!(feature = "coap") {
        v.push("transport:coap");
    }
    if cfg!(feature = "amqp") {
        v.push("sink:amqp");
    }
    if cfg!(feature = "sqs") {
        v.push("sink:sqs");
    }
    v
}
