//! What the engine tests share: an open-broker hub on a given store and clock whose sandbox
//! tenant has no rate limits, and the requests a transport would make.

use std::sync::Arc;

use bytes::Bytes;
use ironhub_core::clock::Clock;
use ironhub_core::data::message::Properties;
use ironhub_core::hub::{
    ConnectOutcome, ConnectRequest, Connected, PublishRequest, SubscribeRequest,
};
use ironhub_core::store::Store;
use ironhub_core::{Hub, HubConfig, QoS};

/// An open-broker hub on `store` with time from `clock`; the sandbox tenant's profile has no
/// rate limits (these tests are about sessions, queues and schedules).
pub async fn open_hub(
    store: Arc<dyn Store>,
    clock: Clock,
    tune: impl FnOnce(&mut HubConfig),
) -> Hub {
    let mut config = HubConfig::default();
    config.open_broker.enabled = true;
    tune(&mut config);
    let hub = Hub::start_with_clock(config, store, clock).await.unwrap();
    let unlimited = serde_json::json!({ "name": "open", "rates": { "tenant_connections": "", "device_connections": "",
        "tenant_messages": "", "device_messages_qos0": "", "device_messages_qos1": "" } });
    hub.limits()
        .put_profile(serde_json::from_value(unlimited).unwrap())
        .await
        .unwrap();
    hub.limits()
        .set_tenant_profile("sandbox", "open")
        .await
        .unwrap();
    hub
}

/// An MQTT CONNECT of an open-broker client (keep-alive 60 s).
pub fn request(
    hub: &Hub,
    client_id: &str,
    clean_start: bool,
    session_expiry_secs: Option<u32>,
) -> ConnectRequest {
    ConnectRequest {
        transport: hub.transport("mqtt"),
        client_id: client_id.into(),
        username: None,
        password: None,
        clean_start,
        session_expiry_secs,
        keep_alive_secs: 60,
        server_keep_alive: false,
        will: None,
    }
}

/// Connects; panics on a refusal.
pub async fn connect(hub: &Hub, req: ConnectRequest) -> Connected {
    match hub.connect(req).await.expect("accepted") {
        ConnectOutcome::Connected(c) => *c,
        ConnectOutcome::Registered { .. } => panic!("not a registration"),
    }
}

/// A PUBLISH of `{"t":21}` on `topic`.
pub fn publish(hub: &Hub, topic: &str, qos: QoS) -> PublishRequest {
    PublishRequest {
        transport: hub.transport("mqtt"),
        topic: topic.into(),
        payload: Bytes::from_static(br#"{"t":21}"#),
        qos,
        retain: false,
        properties: Properties::default(),
        message_expiry_secs: None,
    }
}

/// A SUBSCRIBE to one filter with default options.
pub fn subscribe(filter: &str, qos: QoS) -> Vec<SubscribeRequest> {
    vec![SubscribeRequest {
        filter: filter.into(),
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        subscription_id: None,
    }]
}
