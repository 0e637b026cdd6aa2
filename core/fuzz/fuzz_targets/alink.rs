//! Fuzzes the Alink JSON requests devices make of the hub (property and event posts, topology,
//! RRPC responses, shadow updates, device info) through the hub's own classification: one hub on
//! the memory store with a device of a product with a thing model; each input is a publish by
//! that device on one of those topics (the first byte picks it) with the rest as the payload.
//! Nothing may panic, and every `_reply` the hub sends back must be Alink JSON with a code.
#![no_main]

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use ironhub_core::data::message::Properties;
use ironhub_core::data::model::NodeType;
use ironhub_core::hub::{
    ConnectOutcome, ConnectRequest, PublishRequest, Session, SubscribeRequest,
};
use ironhub_core::hub::queue::DeliveryReceiver;
use ironhub_core::store::memory::memory_store;
use ironhub_core::{Hub, HubConfig, QoS};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use tokio::sync::Mutex;

struct Device {
    hub: Hub,
    session: Session,
    deliveries: Mutex<DeliveryReceiver>,
    pk: String,
    dn: String,
}

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| runtime().block_on(start()))
}

async fn start() -> Device {
    let hub = Hub::start(HubConfig::default(), Arc::new(memory_store()))
        .await
        .unwrap();
    let unlimited = serde_json::json!({ "name": "fuzz", "rates": { "tenant_connections": "",
        "device_connections": "", "tenant_messages": "", "device_messages_qos0": "",
        "device_messages_qos1": "" }, "data_points_per_hour": 0 });
    hub.limits()
        .put_profile(serde_json::from_value(unlimited).unwrap())
        .await
        .unwrap();
    let registry = hub.registry();
    registry.create_tenant("fuzz", "fuzz", Some("fuzz")).await.unwrap();
    let product = registry
        .create_product("fuzz", "gateway", NodeType::Gateway, true)
        .await
        .unwrap();
    let pk = product.product_key.clone();
    let model = serde_json::json!({ "properties": [
        { "identifier": "temp", "dataType": { "type": "float", "specs": { "min": -40, "max": 85 } } },
        { "identifier": "mode", "dataType": { "type": "enum", "specs": { "0": "off", "1": "on" } } },
        { "identifier": "tags", "dataType": { "type": "array",
          "specs": { "size": 4, "item": { "type": "text", "specs": { "length": 8 } } } } } ],
        "events": [ { "identifier": "overheat", "type": "alert", "outputData": [
            { "identifier": "temp", "dataType": { "type": "double", "specs": { "min": -1000, "max": 1000 } } } ] } ] });
    hub.thing_models()
        .put(&pk, serde_json::from_value(model).unwrap())
        .await
        .unwrap();
    let device = registry.create_device(&pk, Some("gateway-1")).await.unwrap();
    let creds = ironhub_core::auth::device_credentials(
        &pk,
        &device.device_name,
        &device.device_secret,
        ironhub_core::now_ms(),
    );
    let connected = hub
        .connect(ConnectRequest {
            transport: hub.transport("mqtt"),
            client_id: creds.client_id,
            username: Some(creds.username),
            password: Some(creds.password.into()),
            clean_start: true,
            session_expiry_secs: None,
            keep_alive_secs: 60,
            server_keep_alive: false,
            will: None,
        })
        .await
        .unwrap();
    let ConnectOutcome::Connected(c) = connected else {
        panic!("not a registration")
    };
    let filters = [
        format!("/sys/{pk}/{}/#", device.device_name),
        format!("/shadow/get/{pk}/{}", device.device_name),
    ];
    let subscriptions = filters
        .iter()
        .map(|f| SubscribeRequest {
            filter: f.clone(),
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            subscription_id: None,
        })
        .collect();
    for granted in c.session.subscribe(subscriptions).await.0 {
        granted.unwrap();
    }
    Device {
        hub,
        session: c.session,
        deliveries: Mutex::new(c.deliveries),
        pk,
        dn: device.device_name,
    }
}

/// The device's request topics, by the input's first byte.
fn topic(d: &Device, pick: u8) -> String {
    let (pk, dn) = (&d.pk, &d.dn);
    let sys = format!("/sys/{pk}/{dn}");
    match pick % 10 {
        0 => format!("{sys}/thing/event/property/post"),
        1 => format!("{sys}/thing/event/overheat/post"),
        2 => format!("{sys}/thing/topo/add"),
        3 => format!("{sys}/thing/topo/delete"),
        4 => format!("{sys}/thing/topo/get"),
        5 => format!("{sys}/rrpc/response/{}", pick / 10),
        6 => format!("/shadow/update/{pk}/{dn}"),
        7 => format!("{sys}/thing/deviceinfo/update"),
        8 => format!("{sys}/thing/sub/register"),
        _ => format!("/{pk}/{dn}/user/update"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else { return };
    let d = device();
    runtime().block_on(async {
        let request = PublishRequest {
            transport: d.hub.transport("mqtt"),
            topic: topic(d, pick),
            payload: Bytes::copy_from_slice(payload),
            qos: if pick & 0x80 == 0 { QoS::AtLeastOnce } else { QoS::AtMostOnce },
            retain: false,
            properties: Properties::default(),
            message_expiry_secs: None,
        };
        let _ = d.session.publish(request).await;
        // What the hub answered: every reply is Alink JSON carrying a code.
        let mut rx = d.deliveries.lock().await;
        let mut out = VecDeque::new();
        while let Ok(true) = tokio::time::timeout(Duration::ZERO, rx.recv_many(&mut out, 64)).await {}
        for delivery in out {
            let m = &delivery.message;
            if m.topic.ends_with("_reply") {
                let reply: serde_json::Value = serde_json::from_slice(&m.payload)
                    .unwrap_or_else(|e| panic!("reply on {} is not JSON: {e}", m.topic));
                assert!(reply["code"].is_u64(), "reply without a code: {reply}");
            }
        }
    });
});
