//! The forwarder on the in-memory store with a sink whose failures the test scripts: a QoS 1
//! publisher is answered once its event is confirmed or stored; stored events are sent again in
//! order, also by the next start on the same store; events past their retention expire.
//! (The real broker is exercised by `conformance/tests/amqp.rs`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ironhub_core::data::event::{Destination, Event, EventKind};
use ironhub_core::data::message::Properties;
use ironhub_core::hub::{ConnectOutcome, ConnectRequest, Connected, PublishRequest};
use ironhub_core::sink::{Sink, SinkCapabilities, SinkError};
use ironhub_core::store::Store;
use ironhub_core::store::memory::memory_store;
use ironhub_core::{Hub, HubConfig, QoS, auth, now_ms};

/// A destination that fails the next `failures` batches, then confirms, except payloads starting
/// with "bad", which it rejects for good.
#[derive(Default)]
struct ScriptedSink {
    failures: AtomicUsize,
    received: Mutex<Vec<(String, EventKind, Bytes)>>,
}

#[async_trait]
impl Sink for ScriptedSink {
    fn name(&self) -> &str {
        "amqp"
    }
    fn capabilities(&self) -> SinkCapabilities {
        SinkCapabilities {
            default_for_groups: true,
            rule_queue_retention_ms: None,
        }
    }
    async fn prepare(&self, _destination: &Destination) -> Result<(), SinkError> {
        Ok(())
    }
    async fn send(&self, destination: &Destination, batch: &[&Event]) -> Result<(), SinkError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError::Unavailable("scripted failure".into()));
        }
        let mut received = self.received.lock().unwrap();
        let mut rejected = Vec::new();
        for (i, e) in batch.iter().enumerate() {
            if e.payload.starts_with(b"bad") {
                rejected.push(i);
            } else {
                received.push((destination.queue.clone(), e.kind, e.payload.clone()));
            }
        }
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Partial {
                failed: Vec::new(),
                rejected,
            })
        }
    }
    async fn healthcheck(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

impl ScriptedSink {
    fn upstream(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, k, _)| *k == EventKind::Upstream)
            .map(|(_, _, p)| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
}

struct Setup {
    hub: Hub,
    sink: Arc<ScriptedSink>,
    device: Connected,
}

async fn setup(store: Arc<dyn Store>, profile: serde_json::Value) -> Setup {
    let hub = Hub::start(HubConfig::default(), store).await.unwrap();
    let sink = Arc::new(ScriptedSink::default());
    hub.attach_sink(sink.clone());
    let mut profile = profile;
    profile["name"] = "fwd".into();
    profile["rates"] = serde_json::json!({ "device_messages_qos0": "", "device_messages_qos1": "",
        "tenant_messages": "", "device_connections": "", "registry_operations": "" });
    hub.limits()
        .put_profile(serde_json::from_value(profile).unwrap())
        .await
        .unwrap();
    let tenant = format!("t{}", now_ms() % 100_000);
    let tenant = hub
        .registry()
        .create_tenant(&tenant, "t", Some("fwd"))
        .await
        .unwrap();
    let product = hub
        .registry()
        .create_product(&tenant.id, "p", Default::default(), false)
        .await
        .unwrap();
    let device = hub
        .registry()
        .create_device(&product.product_key, Some("dev-1"))
        .await
        .unwrap();
    let (group, _) = hub.groups().create(&tenant.id, "g", None).await.unwrap();
    hub.groups()
        .associate_product(&tenant.id, &group.id, &product.product_key)
        .await
        .unwrap();
    let creds = auth::device_credentials(
        &device.product_key,
        &device.device_name,
        &device.device_secret,
        now_ms(),
    );
    let req = ConnectRequest {
        transport: hub.transport("mqtt"),
        client_id: creds.client_id,
        username: Some(creds.username),
        password: Some(Bytes::from(creds.password)),
        clean_start: true,
        session_expiry_secs: None,
        keep_alive_secs: 60,
        server_keep_alive: false,
        will: None,
    };
    let ConnectOutcome::Connected(device) = hub.connect(req).await.unwrap() else {
        panic!("not a registration");
    };
    Setup {
        hub,
        sink,
        device: *device,
    }
}

fn publish(hub: &Hub, topic: String, payload: String, qos: QoS) -> PublishRequest {
    PublishRequest {
        transport: hub.transport("mqtt"),
        topic,
        payload: Bytes::from(payload),
        qos,
        retain: false,
        properties: Properties::default(),
        message_expiry_secs: None,
    }
}

fn topic(s: &Setup) -> String {
    let (pk, dn) = s.device.session.identity().device.clone().unwrap();
    format!("/{pk}/{dn}/user/data")
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen in time");
}

#[tokio::test]
async fn an_outage_goes_through_the_outbox_and_keeps_the_order() {
    let s = setup(Arc::new(memory_store()), serde_json::json!({})).await;
    s.sink.failures.store(1, Ordering::SeqCst);
    for i in 0..10 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        s.device
            .session
            .publish(publish(
                s.device.session.hub(),
                topic(&s),
                format!("m{i}"),
                qos,
            ))
            .await
            .expect("accepted: confirmed or stored");
    }
    let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    eventually("redelivery from the outbox", || {
        s.sink.upstream() == expected
    })
    .await;
    let stats = &s.hub.sink_stats()[0];
    assert!(stats.stored > 0 && stats.resent > 0, "{stats:?}");
    eventually("an empty outbox", || s.hub.sink_stats()[0].outbox == 0).await;
}

#[tokio::test]
async fn events_past_their_retention_expire_in_the_outbox() {
    let profile = serde_json::json!({ "forwarding": { "group_retention_secs": 1 } });
    let s = setup(Arc::new(memory_store()), profile).await;
    // Fails long enough for the stored events to age past one second.
    s.sink.failures.store(3, Ordering::SeqCst);
    for i in 0..3 {
        s.device
            .session
            .publish(publish(
                s.device.session.hub(),
                topic(&s),
                format!("m{i}"),
                QoS::AtLeastOnce,
            ))
            .await
            .unwrap();
    }
    eventually("expiry", || s.hub.sink_stats()[0].expired >= 3).await;
    assert!(s.sink.upstream().is_empty());
}

#[tokio::test]
async fn stored_events_are_sent_by_the_next_start() {
    let store: Arc<dyn Store> = Arc::new(memory_store());
    let s = setup(store.clone(), serde_json::json!({})).await;
    s.sink.failures.store(usize::MAX, Ordering::SeqCst);
    for i in 0..5 {
        s.device
            .session
            .publish(publish(
                s.device.session.hub(),
                topic(&s),
                format!("m{i}"),
                QoS::AtLeastOnce,
            ))
            .await
            .unwrap();
    }
    s.hub.shutdown().await;
    assert!(s.sink.upstream().is_empty());

    let hub = Hub::start(HubConfig::default(), store).await.unwrap();
    let sink = Arc::new(ScriptedSink::default());
    hub.attach_sink(sink.clone());
    let expected: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    eventually("delivery after restart", || sink.upstream() == expected).await;
}

#[tokio::test]
async fn events_the_destination_rejects_are_counted_and_not_retried() {
    let s = setup(Arc::new(memory_store()), serde_json::json!({})).await;
    for payload in ["m0", "bad", "m1"] {
        s.device
            .session
            .publish(publish(
                s.device.session.hub(),
                topic(&s),
                payload.into(),
                QoS::AtLeastOnce,
            ))
            .await
            .unwrap();
    }
    eventually("the good ones", || s.sink.upstream() == ["m0", "m1"]).await;
    let stats = &s.hub.sink_stats()[0];
    assert_eq!((stats.rejected, stats.stored), (1, 0), "{stats:?}");
}
