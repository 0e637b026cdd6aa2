//! The engine in virtual time: the hub runs on tokio's paused clock ([`Clock::tokio`]), so
//! timeouts, sweeps, rate windows and retry schedules are checked to the millisecond without a
//! real sleep. The memory store is the backend; the sink is a recording one, because what is
//! tested is the engine's schedule, not a broker (conformance runs RabbitMQ and SQS for real).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ironhub_core::clock::Clock;
use ironhub_core::data::event::{Destination, Event, EventKind};
use ironhub_core::data::message::Properties;
use ironhub_core::hub::{
    ConnectRequest, Connected, KickReason, PublishRefusal, RuleSpec, SessionExpiryRefused, Will,
};
use ironhub_core::rules::RuleDestination;
use ironhub_core::sink::{Sink, SinkCapabilities, SinkError};
use ironhub_core::store::{Store, memory::memory_store, records};
use ironhub_core::{Hub, HubConfig, QoS};

mod support;
use support::{connect, open_hub, publish, request, subscribe};

/// 2026-12-01 00:00 UTC: where virtual time starts.
const T0: u64 = 1_796_083_200_000;

async fn hub_on(store: Arc<dyn Store>, tune: impl FnOnce(&mut HubConfig)) -> Hub {
    open_hub(store, Clock::tokio(T0), |c| {
        c.session_sweep_interval_secs = 1;
        tune(c);
    })
    .await
}

async fn hub(tune: impl FnOnce(&mut HubConfig)) -> Hub {
    hub_on(Arc::new(memory_store()), tune).await
}

async fn advance_ms(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
    // Let the tasks woken by the jump run before the test looks.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_takeover_waits_for_the_old_connection_at_most_five_seconds() {
    let hub = hub(|_| {}).await;
    let mut first = connect(&hub, request(&hub, "twin", false, Some(600))).await;
    let second = tokio::spawn({
        let hub = hub.clone();
        async move { connect(&hub, request(&hub, "twin", false, Some(600))).await }
    });
    advance_ms(0).await;
    assert_eq!(
        first.kicked.try_recv().ok(),
        Some(KickReason::SessionTakenOver),
        "the old connection is told at once"
    );
    // Its transport never closes it: the new one waits, up to the takeover bound.
    advance_ms(4_900).await;
    assert!(!second.is_finished(), "still waiting at 4.9 s");
    advance_ms(200).await;
    let second = tokio::time::timeout(Duration::from_secs(1), second)
        .await
        .expect("connected after 5 s")
        .unwrap();
    assert!(second.session_present, "the session was handed over");
}

#[tokio::test(start_paused = true)]
async fn a_persistent_session_lives_its_expiry_then_is_reclaimed() {
    let hub = hub(|_| {}).await;
    let c = connect(&hub, request(&hub, "keeper", false, Some(10))).await;
    c.session.close(true, Vec::new(), c.deliveries).await;
    advance_ms(9_000).await;
    let c = connect(&hub, request(&hub, "keeper", false, Some(10))).await;
    assert!(c.session_present, "resumed within its expiry");
    c.session.close(true, Vec::new(), c.deliveries).await;
    let expired_before = hub.stats().sessions_expired;
    // The sweep runs every second: by 11 s after the disconnect the session is gone.
    advance_ms(11_000).await;
    assert_eq!(hub.stats().sessions_expired, expired_before + 1);
    let c = connect(&hub, request(&hub, "keeper", false, Some(10))).await;
    assert!(!c.session_present, "a new session after the expiry");
}

#[tokio::test(start_paused = true)]
async fn a_session_that_expired_is_not_resumed_before_the_sweep_reclaims_it() {
    let hub = hub(|c| c.session_sweep_interval_secs = 3600).await;
    let c = connect(&hub, request(&hub, "late", false, Some(10))).await;
    c.session
        .subscribe(subscribe("t/#", QoS::AtLeastOnce))
        .await;
    c.session.close(true, Vec::new(), c.deliveries).await;
    advance_ms(10_000).await;
    let expired_before = hub.stats().sessions_expired;
    let c = connect(&hub, request(&hub, "late", false, Some(10))).await;
    assert!(!c.session_present, "expired when the client came back");
    assert_eq!(hub.stats().sessions_expired, expired_before + 1);
    let p = connect(&hub, request(&hub, "talker", true, None)).await;
    p.session
        .publish(publish(&hub, "t/1", QoS::AtLeastOnce))
        .await
        .unwrap();
    let mut deliveries = c.deliveries;
    advance_ms(0).await;
    assert!(
        deliveries.try_recv().is_none(),
        "the old subscription went with the session"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_refills_with_time() {
    let hub = hub(|_| {}).await;
    let limited = serde_json::json!({ "name": "slow", "rates": { "tenant_connections": "",
        "device_connections": "", "tenant_messages": "3:1", "device_messages_qos0": "",
        "device_messages_qos1": "" } });
    hub.limits()
        .put_profile(serde_json::from_value(limited).unwrap())
        .await
        .unwrap();
    hub.limits()
        .set_tenant_profile("sandbox", "slow")
        .await
        .unwrap();
    let c = connect(&hub, request(&hub, "talker", true, None)).await;
    for _ in 0..3 {
        c.session
            .publish(publish(&hub, "room/1", QoS::AtLeastOnce))
            .await
            .expect("within the rate");
    }
    let refused = c
        .session
        .publish(publish(&hub, "room/1", QoS::AtLeastOnce))
        .await;
    let Err(PublishRefusal::Limited(limited)) = refused else {
        panic!("the fourth message in a second is limited: {refused:?}");
    };
    assert!(limited.retry_after_ms.is_some_and(|ms| ms <= 1_000));
    advance_ms(1_000).await;
    c.session
        .publish(publish(&hub, "room/1", QoS::AtLeastOnce))
        .await
        .expect("the window moved on");
}

/// A sink whose every send fails or succeeds as the test says, noting the virtual time of each
/// rule event it is handed.
struct RecordingSink {
    clock: Clock,
    fail: Mutex<bool>,
    rule_sends: Mutex<Vec<(u64, Event)>>,
}

impl RecordingSink {
    fn new(fail: bool) -> Arc<RecordingSink> {
        Arc::new(RecordingSink {
            clock: Clock::tokio(T0),
            fail: Mutex::new(fail),
            rule_sends: Mutex::new(Vec::new()),
        })
    }

    fn times(&self) -> Vec<u64> {
        let sends = self.rule_sends.lock().unwrap();
        sends.iter().map(|(at, _)| at - T0).collect()
    }
}

#[async_trait]
impl Sink for RecordingSink {
    fn name(&self) -> &str {
        "recording"
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
    async fn send(&self, _destination: &Destination, batch: &[&Event]) -> Result<(), SinkError> {
        let now = self.clock.now_ms();
        let mut sends = self.rule_sends.lock().unwrap();
        for event in batch.iter().filter(|e| e.kind == EventKind::Rule) {
            sends.push((now, (*event).clone()));
        }
        if *self.fail.lock().unwrap() {
            return Err(SinkError::Unavailable("refused by the test".into()));
        }
        Ok(())
    }
    async fn healthcheck(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A rule sending `sensors/#` to a consumer group, failures reported on `rule-errors`; returns
/// the rule's id.
async fn rule_to_group(hub: &Hub) -> String {
    let (group, _) = hub
        .groups()
        .create("sandbox", "backend", None)
        .await
        .unwrap();
    let spec = RuleSpec {
        name: "to-backend".into(),
        sql: r#"SELECT t FROM "sensors/#""#.into(),
        destinations: vec![RuleDestination::ConsumerGroup { group: group.id }],
        error_destination: Some(RuleDestination::Topic {
            topic: "rule-errors".into(),
        }),
        enabled: true,
    };
    hub.rules().create("sandbox", spec).await.unwrap().rule.id
}

/// A sink that refuses everything, attached to `hub`, and [`rule_to_group`]'s rule; returns the
/// sink and the rule's id.
async fn failing_rule(hub: &Hub) -> (Arc<RecordingSink>, String) {
    let sink = RecordingSink::new(true);
    hub.attach_sink(sink.clone());
    let rule = rule_to_group(hub).await;
    (sink, rule)
}

/// A client `sensor` that has published `sensors/1` (QoS 1), which the rule matches.
async fn sensor_published(hub: &Hub) -> Connected {
    let c = connect(hub, request(hub, "sensor", true, None)).await;
    c.session
        .publish(publish(hub, "sensors/1", QoS::AtLeastOnce))
        .await
        .unwrap();
    c
}

#[tokio::test(start_paused = true)]
async fn a_failing_rule_destination_is_retried_after_1_3_and_10_s_then_reported() {
    let hub = hub(|_| {}).await;
    let (sink, _) = failing_rule(&hub).await;
    let mut watcher = connect(&hub, request(&hub, "watcher", true, None)).await;
    watcher
        .session
        .subscribe(subscribe("rule-errors", QoS::AtLeastOnce))
        .await;
    let _sensor = sensor_published(&hub).await;
    advance_ms(0).await;
    assert_eq!(sink.times(), [0], "the first attempt at once");
    for (wait, expected) in [(1_000, vec![0, 1_000]), (3_000, vec![0, 1_000, 4_000])] {
        advance_ms(wait - 1).await;
        assert_eq!(
            sink.times().len(),
            expected.len() - 1,
            "not before its time"
        );
        advance_ms(1).await;
        assert_eq!(sink.times(), expected);
    }
    assert!(watcher.deliveries.try_recv().is_none(), "no report yet");
    advance_ms(10_000).await;
    assert_eq!(sink.times(), [0, 1_000, 4_000, 14_000]);
    let report = watcher.deliveries.try_recv().expect("the failure report");
    assert_eq!(report.message.topic, "rule-errors");
    let report: serde_json::Value = serde_json::from_slice(&report.message.payload).unwrap();
    assert_eq!(report["attempts"], 4);
    assert_eq!(report["payload"]["t"], 21);
    assert_eq!(
        report["error"],
        "destination unavailable: refused by the test"
    );
    advance_ms(60_000).await;
    assert_eq!(sink.times().len(), 4, "nothing after the report");
}

#[tokio::test(start_paused = true)]
async fn a_rule_delivery_waiting_for_its_retry_is_made_by_the_next_process() {
    let store: Arc<dyn Store> = Arc::new(memory_store());
    let first = hub_on(store.clone(), |_| {}).await;
    let (failing, _) = failing_rule(&first).await;
    let c = sensor_published(&first).await;
    advance_ms(0).await;
    assert_eq!(failing.times(), [0]);
    // This process stops before the retry is due; the retry is only in the store.
    first.shutdown().await;
    drop((c, first));
    let second = hub_on(store, |_| {}).await;
    let working = RecordingSink::new(false);
    second.attach_sink(working.clone());
    advance_ms(1_000).await;
    let sends = working.rule_sends.lock().unwrap().clone();
    assert_eq!(sends.len(), 1, "the next process made the retry");
    assert_eq!(sends[0].1.topic, "sensors/1");
    assert_eq!(&sends[0].1.payload[..], br#"{"t":21}"#);
    drop(sends);
    advance_ms(30_000).await;
    assert_eq!(working.times().len(), 1, "made once");
    assert_eq!(failing.times().len(), 1, "the stopped process made no more");
}

#[tokio::test(start_paused = true)]
async fn a_retry_of_a_rule_disabled_meanwhile_is_dropped_unreported() {
    let hub = hub(|_| {}).await;
    let (sink, rule) = failing_rule(&hub).await;
    let mut watcher = connect(&hub, request(&hub, "watcher", true, None)).await;
    watcher
        .session
        .subscribe(subscribe("rule-errors", QoS::AtLeastOnce))
        .await;
    let _sensor = sensor_published(&hub).await;
    advance_ms(0).await;
    assert_eq!(sink.times(), [0]);
    hub.rules()
        .set_enabled("sandbox", &rule, false)
        .await
        .unwrap();
    advance_ms(20_000).await;
    assert_eq!(sink.times(), [0], "no attempt for a disabled rule");
    assert!(
        watcher.deliveries.try_recv().is_none(),
        "and no failure report"
    );
    let view = hub.rules().get("sandbox", &rule).await.unwrap();
    assert_eq!(view.counters.failed, 0);
}

#[tokio::test(start_paused = true)]
async fn no_local_spares_only_the_publisher() {
    let hub = hub(|_| {}).await;
    let mut a = connect(&hub, request(&hub, "a", true, None)).await;
    let mut b = connect(&hub, request(&hub, "b", true, None)).await;
    for c in [&a, &b] {
        let mut sub = subscribe("nl/t", QoS::AtLeastOnce);
        sub[0].no_local = true;
        c.session.subscribe(sub).await;
    }
    a.session
        .publish(publish(&hub, "nl/t", QoS::AtLeastOnce))
        .await
        .unwrap();
    advance_ms(0).await;
    assert!(
        a.deliveries.try_recv().is_none(),
        "not back to its publisher"
    );
    assert!(b.deliveries.try_recv().is_some(), "to the other subscriber");
}

/// A CONNECT with a persistent session of `expiry_secs` and a will on `wills/{client_id}`
/// delayed `delay_secs`.
fn with_will(hub: &Hub, client_id: &str, expiry_secs: u32, delay_secs: u32) -> ConnectRequest {
    let mut req = request(hub, client_id, false, Some(expiry_secs));
    req.will = Some(Will {
        topic: format!("wills/{client_id}"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
        delay_secs,
    });
    req
}

/// The topics delivered to `c` so far.
fn topics(c: &mut Connected) -> Vec<String> {
    std::iter::from_fn(|| c.deliveries.try_recv())
        .map(|d| d.message.topic.clone())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_will_waits_its_delay_unless_the_session_is_resumed() {
    let hub = hub(|_| {}).await;
    let mut watch = connect(&hub, request(&hub, "watch", true, None)).await;
    watch
        .session
        .subscribe(subscribe("wills/#", QoS::AtLeastOnce))
        .await;
    let c = connect(&hub, with_will(&hub, "late", 60, 10)).await;
    c.session.close(false, Vec::new(), c.deliveries).await;
    advance_ms(9_900).await;
    assert!(topics(&mut watch).is_empty(), "not before its 10 s delay");
    advance_ms(200).await;
    assert_eq!(topics(&mut watch), ["wills/late"]);

    let c = connect(&hub, with_will(&hub, "back", 60, 10)).await;
    c.session.close(false, Vec::new(), c.deliveries).await;
    advance_ms(5_000).await;
    let back = connect(&hub, with_will(&hub, "back", 60, 10)).await;
    assert!(back.session_present);
    advance_ms(20_000).await;
    assert!(
        topics(&mut watch).is_empty(),
        "the session was resumed within the delay: no will"
    );
}

#[tokio::test(start_paused = true)]
async fn a_will_goes_out_when_its_session_ends_before_the_delay() {
    let hub = hub(|_| {}).await;
    let mut watch = connect(&hub, request(&hub, "watch", true, None)).await;
    watch
        .session
        .subscribe(subscribe("wills/#", QoS::AtLeastOnce))
        .await;
    let c = connect(&hub, with_will(&hub, "short", 3, 10)).await;
    c.session.close(false, Vec::new(), c.deliveries).await;
    advance_ms(2_900).await;
    assert!(topics(&mut watch).is_empty());
    advance_ms(200).await;
    assert_eq!(
        topics(&mut watch),
        ["wills/short"],
        "at the session's 3 s expiry, not the will's 10 s delay"
    );
    let c = connect(&hub, with_will(&hub, "clean", 0, 10)).await;
    c.session.close(false, Vec::new(), c.deliveries).await;
    advance_ms(0).await;
    assert_eq!(
        topics(&mut watch),
        ["wills/clean"],
        "no session left: at once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_disconnect_may_shorten_a_session_but_not_give_one_to_a_clean_start() {
    let hub = hub(|_| {}).await;
    let c = connect(&hub, request(&hub, "fleeting", true, Some(0))).await;
    assert_eq!(
        c.session.set_session_expiry(30).await,
        Err(SessionExpiryRefused)
    );
    c.session.close(true, Vec::new(), c.deliveries).await;
    let c = connect(&hub, request(&hub, "ending", false, Some(600))).await;
    c.session.set_session_expiry(0).await.unwrap();
    c.session.close(true, Vec::new(), c.deliveries).await;
    let again = connect(&hub, request(&hub, "ending", false, Some(600))).await;
    assert!(
        !again.session_present,
        "expiry 0 at DISCONNECT ended the session with the connection"
    );
}

#[tokio::test(start_paused = true)]
async fn a_delivery_to_an_online_persistent_session_is_stored_until_acknowledged() {
    let store: Arc<dyn Store> = Arc::new(memory_store());
    let first = hub_on(store.clone(), |_| {}).await;
    let mut sub = connect(&first, request(&first, "keeper", false, Some(600))).await;
    sub.session
        .subscribe(subscribe("t/#", QoS::AtLeastOnce))
        .await;
    let publisher = connect(&first, request(&first, "talker", true, None)).await;
    publisher
        .session
        .publish(publish(&first, "t/1", QoS::AtLeastOnce))
        .await
        .unwrap();
    // Acknowledged to its publisher: it is in the store, though its subscriber is online.
    let queued = |store: Arc<dyn Store>| async move {
        let mut t = store.begin().await.unwrap();
        records::read_queue(&mut *t, "open:keeper", 0)
            .await
            .unwrap()
    };
    let stored = queued(store.clone()).await;
    assert_eq!(stored.len(), 1);
    let delivery = sub.deliveries.try_recv().expect("handed over live too");
    assert_eq!(delivery.stored_seq.as_deref(), Some(&stored[0].0));
    sub.session.acknowledged(stored[0].0).await.unwrap();
    advance_ms(0).await;
    assert!(
        queued(store.clone()).await.is_empty(),
        "the acknowledgement removed it"
    );
    // The next one is not acknowledged before the process dies (no shutdown, no close).
    publisher
        .session
        .publish(publish(&first, "t/2", QoS::AtLeastOnce))
        .await
        .unwrap();
    assert!(sub.deliveries.try_recv().is_some());
    std::mem::forget((sub, publisher, first));
    let second = hub_on(store, |_| {}).await;
    let mut back = connect(&second, request(&second, "keeper", false, Some(600))).await;
    assert!(back.session_present);
    let replayed: Vec<String> = back
        .backlog
        .iter()
        .map(|d| d.message.topic.clone())
        .chain(std::iter::from_fn(|| back.deliveries.try_recv()).map(|d| d.message.topic.clone()))
        .collect();
    assert_eq!(
        replayed,
        ["t/2"],
        "the unacknowledged message came back, the other did not"
    );
}

#[tokio::test(start_paused = true)]
async fn overlapping_subscriptions_make_one_delivery_with_every_identifier() {
    let hub = hub(|_| {}).await;
    let mut c = connect(&hub, request(&hub, "overlap", true, None)).await;
    let mut wide = subscribe("o/#", QoS::AtMostOnce);
    wide[0].subscription_id = Some(1);
    let mut narrow = subscribe("o/+", QoS::AtLeastOnce);
    narrow[0].subscription_id = Some(2);
    c.session.subscribe(wide).await;
    c.session.subscribe(narrow).await;
    let p = connect(&hub, request(&hub, "sender", true, None)).await;
    p.session
        .publish(publish(&hub, "o/x", QoS::AtLeastOnce))
        .await
        .unwrap();
    advance_ms(0).await;
    let d = c.deliveries.try_recv().expect("delivered");
    assert!(
        c.deliveries.try_recv().is_none(),
        "once, not once per subscription"
    );
    assert_eq!(
        d.qos,
        QoS::AtLeastOnce,
        "at the highest QoS of the matching subscriptions"
    );
    let mut ids = d.subscription_ids.to_vec();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [1, 2],
        "carrying every matching subscription identifier"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rule_output_is_safe_before_its_publisher_is_acknowledged() {
    let store: Arc<dyn Store> = Arc::new(memory_store());
    let hub = hub_on(store.clone(), |_| {}).await;
    let (sink, _) = failing_rule(&hub).await;
    let _sensor = sensor_published(&hub).await;
    // Acknowledged: the output's first attempt went out through the sink's worker, failed,
    // and is in the store for its retries, all before the publish returned.
    assert_eq!(sink.times(), [0]);
    let mut t = store.begin().await.unwrap();
    let waiting = records::due_retries(&mut *t, u64::MAX, 10).await.unwrap();
    assert_eq!(waiting.len(), 1, "stored for the retries");
}

/// Tenant `acme` with product `sensors` and devices `names` (with their secrets).
async fn acme_devices(hub: &Hub, names: &[&str]) -> Vec<ironhub_core::data::model::Device> {
    hub.registry()
        .create_tenant("acme", "Acme", None)
        .await
        .unwrap();
    let product = hub
        .registry()
        .create_product(
            "acme",
            "sensors",
            ironhub_core::data::model::NodeType::Device,
            false,
        )
        .await
        .unwrap();
    let mut devices = Vec::new();
    for name in names {
        let registry = hub.registry();
        devices.push(
            registry
                .create_device(&product.product_key, Some(name))
                .await
                .unwrap(),
        );
    }
    devices
}

/// A device connected over MQTT with its signed credentials.
async fn connect_device(hub: &Hub, d: &ironhub_core::data::model::Device) -> Connected {
    let creds = ironhub_core::auth::device_credentials(
        &d.product_key,
        &d.device_name,
        &d.device_secret,
        T0,
    );
    connect(
        hub,
        ConnectRequest {
            transport: hub.transport("mqtt"),
            client_id: creds.client_id,
            username: Some(creds.username),
            password: Some(Bytes::from(creds.password)),
            clean_start: true,
            session_expiry_secs: None,
            keep_alive_secs: 600,
            server_keep_alive: false,
            will: None,
        },
    )
    .await
}

/// Firmware upgrades: a batch's schedule holds its push back until its start, and a device
/// that stays silent is timed out once the batch's timeout has passed.
#[tokio::test(start_paused = true)]
async fn a_batch_waits_for_its_start_and_times_out_a_silent_device() {
    let hub = hub(|c| c.ota.rollout_interval_ms = 1000).await;
    let devices = acme_devices(&hub, &["sensor-1", "sensor-2"]).await;
    let pk = devices[0].product_key.clone();
    hub.offer_downloads("http://127.0.0.1:9");
    let body = futures_util::stream::iter([Ok::<_, String>(Bytes::from_static(b"firmware"))]);
    let spec = ironhub_core::hub::PackageSpec {
        version: "2.0".into(),
        module: None,
        sign_method: None,
        md5: None,
        sha256: None,
    };
    let package = hub.ota().upload("acme", &pk, spec, body).await.unwrap();
    assert_eq!(package.size, 8);
    let batch = hub
        .ota()
        .create_batch(
            "acme",
            ironhub_core::hub::BatchSpec {
                package_id: package.id.clone(),
                target: ironhub_core::data::ota::OtaTarget::Devices {
                    names: vec!["sensor-1".into(), "sensor-2".into()],
                },
                rate_per_minute: 0,
                start_at_ms: Some(T0 + 60_000),
                timeout_minutes: Some(2),
            },
        )
        .await
        .unwrap();

    let mut online = connect_device(&hub, &devices[0]).await;
    let jobs = async |hub: &Hub| hub.ota().jobs("acme", &batch.batch.id).await.unwrap();
    let state = async |hub: &Hub| jobs(hub).await[0].state;
    advance_ms(59_000).await;
    assert_eq!(
        state(&hub).await,
        ironhub_core::data::ota::OtaState::Queued,
        "not before its start"
    );
    let mut got = std::collections::VecDeque::new();
    advance_ms(2_000).await;
    let pushed = tokio::time::timeout(
        Duration::from_millis(10),
        online.deliveries.recv_many(&mut got, 10),
    )
    .await;
    assert!(pushed.is_ok(), "pushed once started");
    assert_eq!(
        got[0].message.topic,
        format!("/ota/device/upgrade/{pk}/sensor-1")
    );
    assert_eq!(
        state(&hub).await,
        ironhub_core::data::ota::OtaState::Notified
    );
    // The push's link opens the package until it expires, 24 hours on.
    let push: serde_json::Value = serde_json::from_slice(&got[0].message.payload).unwrap();
    let url = push["data"]["url"].as_str().unwrap();
    let (path, query) = url["http://127.0.0.1:9".len()..].split_once('?').unwrap();
    let param = |name: &str| {
        let pair = query.split('&').find(|p| p.starts_with(name)).unwrap();
        pair[name.len() + 1..].to_owned()
    };
    let (expires, signature) = (param("expires").parse::<u64>().unwrap(), param("signature"));
    assert_eq!(expires, (T0 + 61_000) / 1000 + 86_400);
    let file = hub.download(path, expires, &signature).await.ok().unwrap();
    assert_eq!(file.size, 8);
    assert!(matches!(
        hub.download(path, expires + 1, &signature).await,
        Err(ironhub_core::hub::DownloadError::BadSignature)
    ));
    advance_ms(119_000).await;
    assert_eq!(
        state(&hub).await,
        ironhub_core::data::ota::OtaState::Notified,
        "within its 2 minutes"
    );
    advance_ms(2_000).await;
    assert_eq!(
        state(&hub).await,
        ironhub_core::data::ota::OtaState::TimedOut
    );
    let view = hub.ota().batch("acme", &batch.batch.id).await.unwrap();
    assert_eq!(view.counts["timed_out"], 1);
    advance_ms(86_400_000).await;
    assert!(matches!(
        hub.download(path, expires, &signature).await,
        Err(ironhub_core::hub::DownloadError::Expired)
    ));
    // A device deleted while its job waits: the job is canceled, and says why.
    hub.registry().delete_device(&pk, "sensor-2").await.unwrap();
    let gone = &jobs(&hub).await[1];
    assert_eq!(gone.state, ironhub_core::data::ota::OtaState::Canceled);
    assert_eq!(gone.desc, "device deleted");
}

/// History: a property's values are kept for the tenant's retention (30 days by default) and
/// swept after it; a tenant whose retention is 0 keeps none.
#[tokio::test(start_paused = true)]
async fn history_is_kept_for_the_retention_then_swept() {
    use ironhub_core::store::records::SeriesKind;
    let hub = hub(|c| c.history_sweep_interval_secs = 3600).await;
    let devices = acme_devices(&hub, &["sensor-1"]).await;
    let pk = devices[0].product_key.clone();
    let online = connect_device(&hub, &devices[0]).await;
    let post = |t: f64| {
        let mut req = publish(
            &hub,
            &format!("/sys/{pk}/sensor-1/thing/event/property/post"),
            QoS::AtLeastOnce,
        );
        req.payload = Bytes::from(format!(r#"{{"id":"1","params":{{"temperature":{t}}}}}"#));
        req
    };
    online.session.publish(post(20.0)).await.unwrap();
    advance_ms(10 * 86_400_000).await;
    online.session.publish(post(21.0)).await.unwrap();
    let history = hub.thing_history();
    let all = ironhub_core::hub::RangeQuery {
        from_ms: Some(0),
        ..Default::default()
    };
    let values = async || {
        history
            .points((&pk, "sensor-1"), SeriesKind::Property, "temperature", &all)
            .await
            .unwrap()
            .points
            .into_iter()
            .map(|p| p.value.as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        values().await,
        [21.0, 20.0],
        "both kept (QoS 1: stored when acknowledged)"
    );
    // 30 days after the first, the next sweep (hourly) removes it; the second stays.
    advance_ms(20 * 86_400_000 + 2 * 3_600_000).await;
    assert_eq!(values().await, [21.0]);
    advance_ms(10 * 86_400_000).await;
    assert!(values().await.is_empty());
    let latest = history
        .latest(&pk, "sensor-1", SeriesKind::Property)
        .await
        .unwrap();
    assert!(
        latest.is_empty(),
        "the latest value goes with its series: {latest:?}"
    );

    // A tenant whose retention is 0 keeps no history.
    let none = serde_json::json!({ "name": "no-history", "history_retention_days": 0 });
    hub.limits()
        .put_profile(serde_json::from_value(none).unwrap())
        .await
        .unwrap();
    hub.limits()
        .set_tenant_profile("acme", "no-history")
        .await
        .unwrap();
    online.session.publish(post(22.0)).await.unwrap();
    advance_ms(1000).await;
    assert!(values().await.is_empty());
}
