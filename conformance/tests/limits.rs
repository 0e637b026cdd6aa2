//! One black-box test per enforced row of docs/limits.md, each named after its id. Each test makes
//! its own tenant with a profile whose limits it chooses (small values keep it fast), drives the
//! limit with real clients, and records what it observed for the report (`limits-report`).
//! `every_row_of_the_contract_has_a_test` fails when a row has neither a test nor a
//! not-yet-built mark.

use std::time::Duration;

use hyper::Method;
use ironhub_conformance::report::{self, check};
use ironhub_conformance::{Deployment, DeviceCreds, amqp, raw, v3, v5};
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode as Cr5, Filter, PubAckReason, PublishProperties, SubscribeReasonCode as Sr5,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A deployment and a device of a new tenant whose profile is `profile`.
async fn setup(profile: Value) -> (Deployment, DeviceCreds) {
    let d = Deployment::start("").await;
    let dev = d
        .tenant_with_profile(&Deployment::unique_tenant("limits"), profile)
        .await;
    (d, dev)
}

/// No rate limits at all, so a test isolates the one it sets.
fn unlimited() -> Value {
    json!({ "rates": { "tenant_connections": "", "device_connections": "", "tenant_messages": "",
                       "device_messages_qos0": "", "device_messages_qos1": "", "registry_operations": "" } })
}

fn with(mut base: Value, patch: Value) -> Value {
    for (section, fields) in patch.as_object().expect("object") {
        match (base.get_mut(section), fields) {
            (Some(Value::Object(b)), Value::Object(f)) => b.extend(f.clone()),
            _ => {
                base[section] = fields.clone();
            }
        }
    }
    base
}

async fn device_usage(d: &Deployment, dev: &DeviceCreds) -> Value {
    let path = format!(
        "/api/v1/products/{}/devices/{}/usage",
        dev.product_key, dev.device_name
    );
    let (s, v) = d.api(Method::GET, &path, None).await;
    assert_eq!(s, 200, "usage: {v}");
    v
}

async fn create_product(d: &Deployment, tenant: &str) -> (u16, Value) {
    d.api(
        Method::POST,
        "/api/v1/products",
        Some(json!({ "tenant": tenant, "name": "extra" })),
    )
    .await
}

async fn create_device(d: &Deployment, pk: &str, name: &str) -> (u16, Value) {
    d.api(
        Method::POST,
        &format!("/api/v1/products/{pk}/devices"),
        Some(json!({ "device_name": name })),
    )
    .await
}

async fn puback5(
    c: &rumqttc::v5::AsyncClient,
    ev: &mut rumqttc::v5::EventLoop,
    topic: &str,
    payload: &str,
) -> PubAckReason {
    c.publish(topic, Q5::AtLeastOnce, false, payload.to_owned())
        .await
        .unwrap();
    v5::puback(ev).await
}

fn points(n: usize) -> String {
    let fields: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
    format!("{{{}}}", fields.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_001_products_per_tenant() {
    let (d, dev) = setup(json!({ "entities": { "products": 2 } })).await;
    let (second, _) = create_product(&d, &dev.tenant).await;
    let (third, v) = create_product(&d, &dev.tenant).await;
    let observed = format!(
        "2nd product HTTP {second}; 3rd HTTP {third} {} {}",
        v["error"], v["limit"]
    );
    check(
        "L-001",
        "2 (profile entities.products)",
        &observed,
        second == 201 && third == 403 && v["limit"] == "L-001",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_002_devices_per_product() {
    let (d, dev) = setup(json!({ "entities": { "devices_per_product": 2 } })).await;
    let (second, _) = create_device(&d, &dev.product_key, "dev-2").await;
    let (third, v) = create_device(&d, &dev.product_key, "dev-3").await;
    let observed = format!("2nd device HTTP {second}; 3rd HTTP {third} {}", v["limit"]);
    check(
        "L-002",
        "2 (profile)",
        &observed,
        second == 201 && third == 403 && v["limit"] == "L-002",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_003_devices_per_tenant() {
    let (d, dev) = setup(json!({ "entities": { "devices": 3, "devices_per_product": 2 } })).await;
    create_device(&d, &dev.product_key, "dev-2").await;
    let (_, p) = create_product(&d, &dev.tenant).await;
    let pk2 = p["product_key"].as_str().unwrap();
    let (third, _) = create_device(&d, pk2, "dev-3").await;
    let (fourth, v) = create_device(&d, pk2, "dev-4").await;
    let observed = format!(
        "3rd device HTTP {third}; 4th (2nd product) HTTP {fourth} {}",
        v["limit"]
    );
    check(
        "L-003",
        "3 (profile)",
        &observed,
        third == 201 && fourth == 403 && v["limit"] == "L-003",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_010_one_connection_per_device() {
    let (d, dev) = setup(unlimited()).await;
    let (_c1, mut first) = v5::connect(dev.v5_options(&d)).await;
    let (_c2, _second) = v3::connect(dev.v3_options(&d)).await;
    let reason = v5::closed(&mut first).await;
    check(
        "L-010",
        "1",
        &format!("first connection closed with {reason:?}"),
        reason.is_some_and(|r| r as u8 == 0x8E),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_011_connection_requests_per_tenant() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "rates": { "tenant_connections": "2:60" } }),
    ))
    .await;
    let two = d.add_device(&dev.product_key, "dev-2").await;
    let three = d.add_device(&dev.product_key, "dev-3").await;
    v3::connect(dev.v3_options(&d)).await;
    v3::connect(two.v3_options(&d)).await;
    let refused = v5::refusal(three.v5_options(&d)).await;
    check(
        "L-011",
        "2:60 (profile)",
        &format!("3rd connection of the tenant: {refused:?}"),
        refused == Cr5::ConnectionRateExceeded,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_012_connection_requests_per_device() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "rates": { "device_connections": "2:60" } }),
    ))
    .await;
    for _ in 0..2 {
        let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
        c.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(2), ev.poll()).await;
    }
    let v5_refused = v5::refusal(dev.v5_options(&d)).await;
    let v3_refused = v3::refusal(dev.v3_options(&d)).await;
    let observed = format!("3rd attempt: MQTT 5 {v5_refused:?}, MQTT 3.1.1 {v3_refused:?}");
    check(
        "L-012",
        "2:60 (profile)",
        &observed,
        v5_refused == Cr5::ConnectionRateExceeded
            && v3_refused == rumqttc::ConnectReturnCode::ServiceUnavailable,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_013_subscriptions_per_device() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "entities": { "subscriptions_per_device": 2 } }),
    ))
    .await;
    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let mut codes = Vec::new();
    for leaf in ["a", "b", "c", "a"] {
        c.subscribe(dev.user_topic(leaf), Q5::AtMostOnce)
            .await
            .unwrap();
        codes.extend(v5::suback(&mut ev).await);
    }
    let expected = vec![
        Sr5::Success(Q5::AtMostOnce),
        Sr5::Success(Q5::AtMostOnce),
        Sr5::QuotaExceeded,
        Sr5::Success(Q5::AtMostOnce),
    ];
    check(
        "L-013",
        "2 (profile)",
        &format!("SUBACKs a, b, c, a again: {codes:?}"),
        codes == expected,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_014_messages_per_tenant() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "rates": { "tenant_messages": "3:60" } }),
    ))
    .await;
    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let mut reasons = Vec::new();
    for _ in 0..4 {
        reasons.push(puback5(&c, &mut ev, &dev.user_topic("t"), "x").await);
    }
    let discarded = device_usage(&d, &dev).await["usage"]["hour"]["discarded.L-014"].clone();
    let observed = format!("PUBACKs {reasons:?}; discarded.L-014 = {discarded}");
    let pass = reasons[..3].iter().all(|r| *r == PubAckReason::Success)
        && reasons[3] == PubAckReason::QuotaExceeded
        && discarded == 1;
    check("L-014", "3:60 (profile)", &observed, pass);
}

/// Publishes `n` messages at `qos` to the device's own topic, then a QoS 1 barrier, and counts
/// what came back before the barrier.
async fn own_echo_v3(
    d: &Deployment,
    dev: &DeviceCreds,
    qos: rumqttc::QoS,
    n: usize,
    barrier: rumqttc::QoS,
) -> usize {
    let (c, mut ev) = v3::connect(dev.v3_options(d)).await;
    c.subscribe(dev.user_topic("#"), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    v3::suback(&mut ev).await;
    for i in 0..n {
        c.publish(dev.user_topic("m"), qos, false, format!("{i}"))
            .await
            .unwrap();
    }
    c.publish(dev.user_topic("barrier"), barrier, false, "end")
        .await
        .unwrap();
    let mut got = 0;
    loop {
        let p = v3::next_publish(&mut ev).await;
        if p.topic.ends_with("/barrier") {
            return got;
        }
        got += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_016_qos0_messages_per_device() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "rates": { "device_messages_qos0": "4:60" } }),
    ))
    .await;
    let got = own_echo_v3(
        &d,
        &dev,
        rumqttc::QoS::AtMostOnce,
        5,
        rumqttc::QoS::AtLeastOnce,
    )
    .await;
    let discarded = device_usage(&d, &dev).await["usage"]["hour"]["discarded.L-016"].clone();
    let observed = format!("5 QoS 0 sent, {got} delivered; discarded.L-016 = {discarded}");
    check(
        "L-016",
        "4:60 (profile)",
        &observed,
        got == 4 && discarded == 1,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_017_qos1_messages_per_device() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "rates": { "device_messages_qos1": "2:60" } }),
    ))
    .await;
    let got = own_echo_v3(
        &d,
        &dev,
        rumqttc::QoS::AtLeastOnce,
        3,
        rumqttc::QoS::AtMostOnce,
    )
    .await;
    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let v5_reason = puback5(&c, &mut ev, &dev.user_topic("m"), "x").await;
    let discarded = device_usage(&d, &dev).await["usage"]["hour"]["discarded.L-017"].clone();
    let observed = format!(
        "3.1.1: 3 sent and acknowledged, {got} delivered; MQTT 5 PUBACK {v5_reason:?}; discarded.L-017 = {discarded}"
    );
    check(
        "L-017",
        "2:60 (profile)",
        &observed,
        got == 2 && v5_reason == PubAckReason::QuotaExceeded && discarded == 2,
    );
}

async fn raw_device(d: &Deployment, dev: &DeviceCreds, keep_alive: u16) -> (TcpStream, Vec<u8>) {
    let c = dev.mqtt();
    let mut s = TcpStream::connect(d.mqtt).await.unwrap();
    s.write_all(&raw::connect(
        &c.client_id,
        keep_alive,
        Some((&c.username, &c.password)),
    ))
    .await
    .unwrap();
    let mut ack = vec![0u8; 4];
    let n = tokio::time::timeout(ironhub_conformance::WAIT, s.read_exact(&mut ack)).await;
    if !matches!(n, Ok(Ok(_))) {
        ack.clear();
    }
    (s, ack)
}

async fn is_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(ironhub_conformance::WAIT, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn answers_ping(s: &mut TcpStream) -> bool {
    s.write_all(&[0xC0, 0x00]).await.unwrap();
    let mut buf = [0u8; 2];
    matches!(
        tokio::time::timeout(ironhub_conformance::WAIT, s.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && buf == [0xD0, 0x00]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_020_publishes_in_flight() {
    let (d, dev) = setup(unlimited()).await;
    let (_, props) = v5::connect_with_ack(dev.v5_options(&d)).await;
    let receive_max = props.and_then(|p| p.receive_max);
    let (mut s, _) = raw_device(&d, &dev, 60).await;
    let topic = dev.user_topic("q2");
    for id in 1..=100u16 {
        s.write_all(&raw::publish_qos(&topic, b"x", 2, id))
            .await
            .unwrap();
    }
    let mut recs = vec![0u8; 400];
    let got_100 = matches!(
        tokio::time::timeout(ironhub_conformance::WAIT, s.read_exact(&mut recs)).await,
        Ok(Ok(_))
    );
    s.write_all(&raw::publish_qos(&topic, b"x", 2, 101))
        .await
        .unwrap();
    let closed = is_closed(&mut s).await;
    let observed = format!(
        "CONNACK receive maximum {receive_max:?}; 100 QoS 2 without PUBREL acknowledged: {got_100}; the 101st closed the connection: {closed}"
    );
    check(
        "L-020",
        "100",
        &observed,
        receive_max == Some(100) && got_100 && closed,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_019_bandwidth_per_connection() {
    // 100 KB/s instead of 8 Mbps keeps the test short; the mechanism is the same.
    let d = Deployment::start("[hub]\nmax_connection_bytes_per_sec = 100000\n").await;
    let dev = d
        .tenant_with_profile(&Deployment::unique_tenant("limits"), unlimited())
        .await;
    let (mut s, _) = raw_device(&d, &dev, 60).await;
    let started = std::time::Instant::now();
    for _ in 0..10 {
        s.write_all(&raw::publish(
            &dev.user_topic("bulk"),
            &vec![b'x'; 50 * 1024],
        ))
        .await
        .unwrap();
    }
    let answered = answers_ping(&mut s).await;
    let elapsed = started.elapsed();
    let messages = device_usage(&d, &dev).await["usage"]["hour"]["messages"].clone();
    // 512 KB at 100 KB/s with one second of burst cannot take less than about 4 s.
    let observed = format!(
        "10 x 50 KB sent, all {messages} accepted, in {elapsed:.1?} (ping answered: {answered})"
    );
    check(
        "L-019",
        "100 KB/s (config)",
        &observed,
        answered && messages == 10 && elapsed >= Duration::from_secs(3),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_021_qos1_retention() {
    let (d, dev) = setup(unlimited()).await;
    let mut o = dev.v5_options(&d);
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(30 * 24 * 3600));
    let (_, props) = v5::connect_with_ack(o).await;
    let granted = props.and_then(|p| p.session_expiry_interval);
    check(
        "L-021",
        "7 days (604800 s)",
        &format!("30 days asked, {granted:?} s granted"),
        granted == Some(604_800),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_022_mqtt_packet_size() {
    let (d, dev) = setup(unlimited()).await;
    let (mut s, _) = raw_device(&d, &dev, 60).await;
    s.write_all(&raw::publish(
        &dev.user_topic("big"),
        &vec![b'x'; 200 * 1024],
    ))
    .await
    .unwrap();
    let fits = answers_ping(&mut s).await;
    s.write_all(&raw::publish(
        &dev.user_topic("big"),
        &vec![b'x'; 300 * 1024],
    ))
    .await
    .unwrap();
    let closed = is_closed(&mut s).await;
    let observed = format!("200 KB accepted: {fits}; 300 KB closed the connection: {closed}");
    check("L-022", "256 KB", &observed, fits && closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_024_keep_alive_range() {
    let (d, dev) = setup(unlimited()).await;
    let mut codes = Vec::new();
    for ka in [29u16, 30, 1200, 1201] {
        let (_s, ack) = raw_device(&d, &dev, ka).await;
        codes.push((ka, ack.get(3).copied()));
    }
    let expected = vec![
        (29, Some(5)),
        (30, Some(0)),
        (1200, Some(0)),
        (1201, Some(5)),
    ];
    check(
        "L-024",
        "30 to 1200 s",
        &format!("CONNACK codes by keep-alive: {codes:?}"),
        codes == expected,
    );
}

async fn v5_publish_with(
    d: &Deployment,
    dev: &DeviceCreds,
    topic: &str,
    props: PublishProperties,
) -> PubAckReason {
    let (c, mut ev) = v5::connect(dev.v5_options(d)).await;
    c.publish_with_properties(topic, Q5::AtLeastOnce, false, "x", props)
        .await
        .unwrap();
    v5::puback(&mut ev).await
}

/// Publishes with properties at a bound and one past it: the first is accepted, the second gets
/// 0x83 (implementation specific error) naming the limit.
async fn property_bound(
    id: &str,
    bound: usize,
    documented: &str,
    props: impl Fn(usize) -> PublishProperties,
) {
    let (d, dev) = setup(unlimited()).await;
    let at = v5_publish_with(&d, &dev, &dev.user_topic("p"), props(bound)).await;
    let over = v5_publish_with(&d, &dev, &dev.user_topic("p"), props(bound + 1)).await;
    let observed = format!("{bound}: {at:?}; {}: {over:?}", bound + 1);
    check(
        id,
        documented,
        &observed,
        at == PubAckReason::Success && over == PubAckReason::ImplementationSpecificError,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_026_user_properties_per_message() {
    property_bound("L-026", 20, "20", |n| PublishProperties {
        user_properties: (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect(),
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_027_user_property_length() {
    property_bound("L-027", 128, "128 characters", |n| PublishProperties {
        user_properties: vec![("k".into(), "v".repeat(n))],
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_028_response_topic_and_correlation_data_length() {
    let (d, dev) = setup(unlimited()).await;
    let topic = |n: usize| PublishProperties {
        response_topic: Some("r".repeat(n)),
        ..Default::default()
    };
    let data = |n: usize| PublishProperties {
        correlation_data: Some(vec![7u8; n].into()),
        ..Default::default()
    };
    let results = [
        v5_publish_with(&d, &dev, &dev.user_topic("p"), topic(128)).await,
        v5_publish_with(&d, &dev, &dev.user_topic("p"), topic(129)).await,
        v5_publish_with(&d, &dev, &dev.user_topic("p"), data(128)).await,
        v5_publish_with(&d, &dev, &dev.user_topic("p"), data(129)).await,
    ];
    let observed = format!("response topic 128/129, correlation data 128/129: {results:?}");
    let e = PubAckReason::ImplementationSpecificError;
    check(
        "L-028",
        "128",
        &observed,
        results == [PubAckReason::Success, e, PubAckReason::Success, e],
    );
}

/// A device topic of exactly `len` bytes.
fn topic_of_len(dev: &DeviceCreds, len: usize) -> String {
    let base = dev.user_topic("");
    format!("{base}{}", "x".repeat(len - base.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_031_topic_length() {
    let (d, dev) = setup(unlimited()).await;
    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let ok = puback5(&c, &mut ev, &topic_of_len(&dev, 128), "x").await;
    let over = puback5(&c, &mut ev, &topic_of_len(&dev, 129), "x").await;
    c.subscribe(topic_of_len(&dev, 129), Q5::AtMostOnce)
        .await
        .unwrap();
    let sub = v5::suback(&mut ev).await;
    let observed = format!("publish 128 B: {ok:?}; 129 B: {over:?}; subscribe 129 B: {sub:?}");
    let pass = ok == PubAckReason::Success
        && over == PubAckReason::TopicNameInvalid
        && sub == vec![Sr5::TopicFilterInvalid];
    check("L-031", "128 bytes", &observed, pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_032_topic_levels() {
    let (d, dev) = setup(unlimited()).await;
    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let seven = dev.user_topic("a/b/c/d"); // /pk/dn/user/a/b/c/d: 7 slashes
    let eight = dev.user_topic("a/b/c/d/e");
    let ok = puback5(&c, &mut ev, &seven, "x").await;
    let over = puback5(&c, &mut ev, &eight, "x").await;
    let observed = format!("7 levels: {ok:?}; 8 levels: {over:?}");
    check(
        "L-032",
        "7",
        &observed,
        ok == PubAckReason::Success && over == PubAckReason::TopicNameInvalid,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_033_filters_per_subscribe() {
    let (d, dev) = setup(unlimited()).await;
    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let filters = |n: usize| {
        (0..n)
            .map(|i| Filter::new(dev.user_topic(&format!("f{i}")), Q5::AtMostOnce))
            .collect::<Vec<_>>()
    };
    c.subscribe_many(filters(8)).await.unwrap();
    let eight = v5::suback(&mut ev).await;
    c.subscribe_many(filters(9)).await.unwrap();
    let nine = v5::suback(&mut ev).await;
    let observed = format!(
        "8 filters: {} granted; 9 filters: {:?}",
        eight
            .iter()
            .filter(|c| matches!(c, Sr5::Success(_)))
            .count(),
        nine
    );
    let pass =
        eight.iter().all(|c| matches!(c, Sr5::Success(_))) && nine == vec![Sr5::QuotaExceeded; 9];
    check("L-033", "8", &observed, pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_034_subscription_takes_effect_immediately() {
    let (d, dev) = setup(unlimited()).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    c.subscribe(dev.user_topic("now"), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    v3::suback(&mut ev).await;
    let started = std::time::Instant::now();
    let body =
        json!({ "tenant": dev.tenant, "topic": dev.user_topic("now"), "payload": "hi", "qos": 1 });
    let (_, v) = d.api(Method::POST, "/api/v1/messages", Some(body)).await;
    v3::next_publish(&mut ev).await;
    let observed = format!(
        "published right after the SUBACK: delivered to {} session(s), received after {:?}",
        v["delivered_to"],
        started.elapsed()
    );
    check("L-034", "at most 10 s", &observed, v["delivered_to"] == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_070_transport_messages_per_month() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "monthly": { "transport_messages": 5 } }),
    ))
    .await;
    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let mut reasons = Vec::new();
    for _ in 0..6 {
        reasons.push(puback5(&c, &mut ev, &dev.user_topic("m"), "x").await);
    }
    let refused = v5::refusal(
        d.add_device(&dev.product_key, "late-1")
            .await
            .v5_options(&d),
    )
    .await;
    let (_, usage) = d
        .api(
            Method::GET,
            &format!("/api/v1/tenants/{}/usage", dev.tenant),
            None,
        )
        .await;
    let kinds: Vec<&str> = usage["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    let observed = format!("PUBACKs {reasons:?}; events {kinds:?}; new connection {refused:?}");
    let pass = reasons[..5].iter().all(|r| *r == PubAckReason::Success)
        && reasons[5] == PubAckReason::QuotaExceeded
        && kinds == ["warning", "disabled"]
        && refused == Cr5::QuotaExceeded;
    check(
        "L-070",
        "5 (profile monthly.transport_messages)",
        &observed,
        pass,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_071_transport_data_points_per_month() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "monthly": { "transport_data_points": 10 } }),
    ))
    .await;
    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let first = puback5(&c, &mut ev, &dev.user_topic("m"), &points(6)).await;
    let second = puback5(&c, &mut ev, &dev.user_topic("m"), &points(5)).await;
    let third = puback5(&c, &mut ev, &dev.user_topic("m"), &points(1)).await;
    let (_, usage) = d
        .api(
            Method::GET,
            &format!("/api/v1/tenants/{}/usage", dev.tenant),
            None,
        )
        .await;
    let events: Vec<String> = usage["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}:{}", e["limit"], e["kind"]))
        .collect();
    let observed = format!("6, 5, 1 points: {first:?}, {second:?}, {third:?}; events {events:?}");
    let pass = first == PubAckReason::Success
        && second == PubAckReason::Success
        && third == PubAckReason::QuotaExceeded;
    check(
        "L-071",
        "10 (profile)",
        &observed,
        pass && events == ["\"L-071\":\"warning\"", "\"L-071\":\"disabled\""],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_073_data_points_per_tenant() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "rates": { "tenant_data_points": "5:60" } }),
    ))
    .await;
    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let small = puback5(&c, &mut ev, &dev.user_topic("m"), &points(4)).await;
    let big = puback5(&c, &mut ev, &dev.user_topic("m"), &points(4)).await;
    let observed = format!("4 points: {small:?}; 4 more within the minute: {big:?}");
    check(
        "L-073",
        "5:60 (profile)",
        &observed,
        small == PubAckReason::Success && big == PubAckReason::QuotaExceeded,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_074_data_points_per_device() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "rates": { "device_data_points": "5:60" } }),
    ))
    .await;
    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let too_big = puback5(&c, &mut ev, &dev.user_topic("m"), &points(6)).await;
    let fits = puback5(&c, &mut ev, &dev.user_topic("m"), &points(5)).await;
    let discarded = device_usage(&d, &dev).await["usage"]["hour"]["discarded.L-074"].clone();
    let observed =
        format!("6 points: {too_big:?}; 5 points: {fits:?}; discarded.L-074 = {discarded}");
    check(
        "L-074",
        "5:60 (profile)",
        &observed,
        too_big == PubAckReason::QuotaExceeded && fits == PubAckReason::Success && discarded == 1,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_075_registry_operations_per_tenant() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "rates": { "registry_operations": "3:60" } }),
    ))
    .await;
    let mut statuses = Vec::new();
    let mut last = (0, hyper::HeaderMap::new(), Value::Null);
    for name in ["dev-2", "dev-3", "dev-4"] {
        last = d
            .api_with_headers(
                Method::POST,
                &format!("/api/v1/products/{}/devices", dev.product_key),
                Some(json!({ "device_name": name })),
            )
            .await;
        statuses.push(last.0);
    }
    let retry_after = last
        .1
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let observed = format!(
        "creates after the first: {statuses:?}; last {} Retry-After {retry_after:?}",
        last.2["limit"]
    );
    let pass = statuses == [201, 201, 429] && last.2["limit"] == "L-075" && retry_after.is_some();
    check("L-075", "3:60 (profile)", &observed, pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_080_data_points_per_device_per_hour() {
    let (d, dev) = setup(with(unlimited(), json!({ "data_points_per_hour": 60 }))).await;
    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let first = puback5(&c, &mut ev, &dev.user_topic("m"), &points(50)).await;
    let second = puback5(&c, &mut ev, &dev.user_topic("m"), &points(11)).await;
    let third = puback5(&c, &mut ev, &dev.user_topic("m"), &points(1)).await;
    let usage = device_usage(&d, &dev).await;
    let last_hour = usage["usage"]["last_24h"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()[1]
        .clone();
    let observed = format!(
        "50, 11 (up to the 61 with overdraft), 1 points: {first:?}, {second:?}, {third:?}; this hour's status {last_hour}"
    );
    let pass = first == PubAckReason::Success
        && second == PubAckReason::Success
        && third == PubAckReason::QuotaExceeded
        && last_hour["discarded.L-080"] == 1;
    check(
        "L-080",
        "60 per hour (profile), overdraft 1",
        &observed,
        pass,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_tenant_does_not_throttle_another() {
    let d = Deployment::start("").await;
    let noisy = d
        .tenant_with_profile(
            "noisy",
            with(
                unlimited(),
                json!({ "rates": { "tenant_messages": "2:60" } }),
            ),
        )
        .await;
    let quiet = d
        .tenant_with_profile(
            "quiet",
            with(
                unlimited(),
                json!({ "rates": { "tenant_messages": "5:60" } }),
            ),
        )
        .await;
    let (nc, mut nev) = v5::connect(noisy.v5_options(&d)).await;
    for _ in 0..5 {
        puback5(&nc, &mut nev, &noisy.user_topic("m"), "x").await;
    }
    let (qc, mut qev) = v5::connect(quiet.v5_options(&d)).await;
    let mut quiet_reasons = Vec::new();
    for _ in 0..5 {
        quiet_reasons.push(puback5(&qc, &mut qev, &quiet.user_topic("m"), "x").await);
    }
    assert!(
        quiet_reasons.iter().all(|r| *r == PubAckReason::Success),
        "{quiet_reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_004_sub_devices_per_gateway() {
    let (d, dev) = setup(json!({ "entities": { "sub_devices_per_gateway": 1 } })).await;
    let second = d.add_device(&dev.product_key, "dev-2").await;
    let gw = ironhub_conformance::gateway::gateway_device(&d, &dev.tenant).await;
    let attach = |sub: &DeviceCreds| {
        format!(
            "/api/v1/products/{}/devices/{}/sub-devices/{}/{}",
            gw.product_key, gw.device_name, sub.product_key, sub.device_name
        )
    };
    let (first, _) = d.api(Method::PUT, &attach(&dev), None).await;
    let (again, v) = d.api(Method::PUT, &attach(&second), None).await;
    let observed = format!(
        "1st sub-device HTTP {first}; 2nd HTTP {again} {}",
        v["limit"]
    );
    check(
        "L-004",
        "1 (profile entities.sub_devices_per_gateway)",
        &observed,
        first == 200 && again == 403 && v["limit"] == "L-004",
    );
}

/// A gateway connected over MQTT with three sub-devices attached, under a profile.
struct GatewayRig {
    d: Deployment,
    f: ironhub_conformance::gateway::Fleet,
    c: rumqttc::AsyncClient,
    ev: rumqttc::EventLoop,
}

impl GatewayRig {
    async fn start(profile: Value) -> GatewayRig {
        let d = Deployment::start("").await;
        let tenant = Deployment::unique_tenant("limits-gw");
        let f = ironhub_conformance::gateway::fleet(&d, &tenant, profile, 3).await;
        let (c, ev) = v3::connect(f.gateway.v3_options(&d)).await;
        GatewayRig { d, f, c, ev }
    }

    /// Sends a session request (`batch_login`, `batch_logout`) and returns its reply.
    async fn call(&mut self, op: &str, params: Value) -> Value {
        let gw = &self.f.gateway;
        ironhub_conformance::gateway::session_call(&self.c, &mut self.ev, gw, op, params, |_| {})
            .await
    }

    /// Logs in the sub-devices `subs` in one request.
    async fn login(&mut self, subs: std::ops::Range<usize>) -> Value {
        let params = ironhub_conformance::gateway::batch_login(&self.f.subs[subs]);
        self.call("batch_login", params).await
    }
}

/// Under `profile`, logs two sub-devices in, then a third: the two replies, and whether the
/// second names `limit` in its message.
async fn two_then_a_third(profile: Value, limit: &str) -> (Value, Value, bool) {
    let mut rig = GatewayRig::start(profile).await;
    let first = rig.login(0..2).await;
    let third = rig.login(2..3).await;
    let named = third["message"].as_str().unwrap_or("").contains(limit);
    (first, third, named)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_007_sub_devices_online_per_gateway() {
    let profile = with(
        unlimited(),
        json!({ "entities": { "sub_devices_online_per_gateway": 2 } }),
    );
    let (first, third, named) = two_then_a_third(profile, "L-007").await;
    let observed = format!(
        "2 sub-devices: code {}; a 3rd: code {} \"{}\"",
        first["code"], third["code"], third["message"]
    );
    check(
        "L-007",
        "2 (profile entities.sub_devices_online_per_gateway); Alink 428",
        &observed,
        first["code"] == 200 && third["code"] == 428 && named,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_008_sub_device_logins_per_gateway() {
    let profile = with(
        unlimited(),
        json!({ "rates": { "sub_device_logins": "2:60" } }),
    );
    let (first, third, named) = two_then_a_third(profile, "L-008").await;
    let observed = format!(
        "2 logins: code {}; a 3rd within the minute: code {} \"{}\"",
        first["code"], third["code"], third["message"]
    );
    check(
        "L-008",
        "2:60 (profile rates.sub_device_logins); Alink 429",
        &observed,
        first["code"] == 200 && third["code"] == 429 && named,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_009_sub_devices_per_login() {
    let profile = with(
        unlimited(),
        json!({ "entities": { "sub_devices_per_login": 2 } }),
    );
    let mut rig = GatewayRig::start(profile).await;
    let over = rig.login(0..3).await;
    let state = ironhub_conformance::gateway::state(&rig.d, &rig.f.subs[0]).await;
    let fits = rig.login(0..2).await;
    let all = ironhub_conformance::gateway::batch_logout(&rig.f.subs);
    let out = rig.call("batch_logout", all).await;
    let observed = format!(
        "3 in one login: code {} \"{}\" (first sub-device {state}); 2: code {}; 3 in one logout: code {}",
        over["code"], over["message"], fits["code"], out["code"]
    );
    let named = over["message"].as_str().unwrap_or("").contains("L-009");
    check(
        "L-009",
        "2 (profile entities.sub_devices_per_login); Alink 460",
        &observed,
        over["code"] == 460
            && named
            && state == "inactive"
            && fits["code"] == 200
            && out["code"] == 460,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_090_tags_per_product_device_or_group() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "entities": { "tags_per_device": 2 } }),
    ))
    .await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let suffix = "/thing/deviceinfo/update";
    let mut update = async |tags: Value| -> Value {
        ironhub_conformance::gateway::sys_call(&c, &mut ev, &dev, suffix, tags).await
    };
    let two =
        update(json!([{ "attrKey": "a", "attrValue": "1" }, { "attrKey": "b", "attrValue": "2" }]))
            .await;
    let three = update(json!([{ "attrKey": "c", "attrValue": "3" }])).await;
    let tags = format!(
        "/api/v1/products/{}/devices/{}/tags",
        dev.product_key, dev.device_name
    );
    let (api_status, api) = d.api(Method::PUT, &tags, Some(json!({ "c": "3" }))).await;
    let (replaced, _) = d
        .api(Method::PUT, &tags, Some(json!({ "a": "changed" })))
        .await;
    // The same bound for a product's tags and a group's.
    let product = format!("/api/v1/products/{}/tags", dev.product_key);
    let (product_two, _) = d
        .api(Method::PUT, &product, Some(json!({ "a": "1", "b": "2" })))
        .await;
    let (product_three, _) = d
        .api(Method::PUT, &product, Some(json!({ "c": "3" })))
        .await;
    let groups = format!("/api/v1/tenants/{}/device-groups", dev.tenant);
    let (_, group) = d
        .api(Method::POST, &groups, Some(json!({ "name": "g" })))
        .await;
    let group_tags = format!("{groups}/{}/tags", group["id"].as_str().unwrap_or(""));
    let (group_three, _) = d
        .api(
            Method::PUT,
            &group_tags,
            Some(json!({ "a": "1", "b": "2", "c": "3" })),
        )
        .await;
    let observed = format!(
        "2 tags over MQTT: code {}; a 3rd: code {} \"{}\"; over the API: HTTP {api_status} {}; changing one of the 2: HTTP {replaced}; a product's 2: HTTP {product_two}, 3rd: HTTP {product_three}; a group's 3: HTTP {group_three}",
        two["code"], three["code"], three["message"], api["limit"]
    );
    check(
        "L-090",
        "2 (profile entities.tags_per_device) for a device, a product, a group; Alink 460, HTTP 403",
        &observed,
        two["code"] == 200
            && three["code"] == 460
            && three["message"].as_str().unwrap_or("").contains("L-090")
            && api_status == 403
            && api["limit"] == "L-090"
            && replaced == 200
            && product_two == 200
            && product_three == 403
            && group_three == 403,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_023_coap_message_size() {
    let (d, coap) = ironhub_conformance::coap::Coap::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("limits")).await;
    let token = coap.token(&dev);
    let path = ironhub_conformance::coap::topic_path(&dev);
    let fits = coap.post(&path, Some(&token), &"x".repeat(1024), &[]);
    let over = coap.post(&path, Some(&token), &"x".repeat(1025), &[]);
    let observed = format!("1024 bytes: {}; 1025 bytes: {}", fits.trim(), over.trim());
    check(
        "L-023",
        "1 KB (config max_coap_payload 1024)",
        &observed,
        fits.contains(r#""code":0"#) && over.starts_with("4.13") && over.contains("L-023"),
    );
}

/// A tenant with `profile` and a device, and an API key of the tenant (its bearer header).
async fn business_setup(profile: Value) -> (Deployment, DeviceCreds, String) {
    let (d, dev) = setup(profile).await;
    let auth = format!("Bearer {}", d.api_key(&dev.tenant, "limits").await);
    (d, dev, auth)
}

/// A business API call: status, Retry-After, body.
async fn business(
    d: &Deployment,
    auth: &str,
    path: &str,
    body: Value,
) -> (u16, Option<String>, Value) {
    let (s, h, v) = d.api_as(Method::POST, path, Some(body), auth).await;
    let retry = h
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (s, retry, v)
}

fn pub_body(dev: &DeviceCreds) -> Value {
    json!({ "product_key": dev.product_key, "device_name": dev.device_name,
            "topic": dev.user_topic("get"), "payload": "x" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_015_messages_to_devices_per_tenant() {
    let (d, dev, auth) = business_setup(json!({ "rates": { "tenant_downlink": "2:60" } })).await;
    let second = d.add_device(&dev.product_key, "dev-2").await;
    let mut statuses = Vec::new();
    for target in [&dev, &second, &dev] {
        let (s, _, v) = business(&d, &auth, "/api/v1/business/pub", pub_body(target)).await;
        statuses.push((s, v["limit"].clone()));
    }
    let observed = format!("3 Pub calls to 2 devices at 2:60: {statuses:?}");
    check(
        "L-015",
        "2:60 (profile rates.tenant_downlink)",
        &observed,
        statuses[0].0 == 200 && statuses[1].0 == 200 && statuses[2] == (429, json!("L-015")),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_018_messages_a_device_receives() {
    let (d, dev, auth) = business_setup(json!({ "rates": { "device_downlink": "1:60" } })).await;
    let second = d.add_device(&dev.product_key, "dev-2").await;
    let (a, _, _) = business(&d, &auth, "/api/v1/business/pub", pub_body(&dev)).await;
    let (b, retry, v) = business(&d, &auth, "/api/v1/business/pub", pub_body(&dev)).await;
    let (c, _, _) = business(&d, &auth, "/api/v1/business/pub", pub_body(&second)).await;
    let observed = format!(
        "same device twice: {a}, {b} {} (Retry-After {retry:?}); another device: {c}",
        v["limit"]
    );
    check(
        "L-018",
        "1:60 (profile rates.device_downlink)",
        &observed,
        a == 200 && b == 429 && v["limit"] == "L-018" && retry.is_some() && c == 200,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_025_rrpc_timeout() {
    let (d, dev, auth) = business_setup(json!({})).await;
    let (_c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let keep = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let body = |timeout_ms: u64| {
        json!({ "product_key": dev.product_key, "device_name": dev.device_name,
                "payload": "x", "timeout_ms": timeout_ms })
    };
    let (over, _, v_over) = business(&d, &auth, "/api/v1/business/rrpc", body(9000)).await;
    let started = std::time::Instant::now();
    let (s, _, v) = business(&d, &auth, "/api/v1/business/rrpc", body(1000)).await;
    let waited = started.elapsed();
    let observed = format!(
        "timeout_ms 9000: HTTP {over} {}; 1000 ms with a silent device: HTTP {s} {} after {waited:?}",
        v_over["message"], v["rrpc_code"]
    );
    check(
        "L-025",
        "8 s at most (API parameter timeout_ms, 1000..8000, default 8000)",
        &observed,
        over == 400
            && s == 200
            && v["rrpc_code"] == "TIMEOUT"
            && waited >= Duration::from_millis(1000),
    );
    keep.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_035_broadcast_message_size() {
    let (d, dev, auth) = business_setup(json!({ "business": { "broadcast_bytes": 100 },
                                                 "rates": { "broadcasts": "" } }))
    .await;
    let body = |n: usize| json!({ "product_key": dev.product_key, "payload": "x".repeat(n) });
    let (fits, _, _) = business(&d, &auth, "/api/v1/business/broadcast", body(100)).await;
    let (over, _, v) = business(&d, &auth, "/api/v1/business/broadcast", body(101)).await;
    let observed = format!(
        "100 bytes: HTTP {fits}; 101 bytes: HTTP {over} {}",
        v["limit"]
    );
    check(
        "L-035",
        "100 bytes (profile business.broadcast_bytes; default 64 KB)",
        &observed,
        fits == 200 && over == 413 && v["limit"] == "L-035",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_036_broadcasts_per_tenant() {
    let (d, dev, auth) = business_setup(json!({})).await;
    let body = json!({ "product_key": dev.product_key, "payload": "x" });
    let (first, _, _) = business(&d, &auth, "/api/v1/business/broadcast", body.clone()).await;
    let (second, retry, v) = business(&d, &auth, "/api/v1/business/broadcast", body).await;
    let observed = format!(
        "1st broadcast HTTP {first}; 2nd HTTP {second} {} Retry-After {retry:?}",
        v["limit"]
    );
    check(
        "L-036",
        "1:60 (profile rates.broadcasts, the default)",
        &observed,
        first == 200 && second == 429 && v["limit"] == "L-036" && retry.is_some(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_076_business_api_requests() {
    let (d, dev, auth) = business_setup(json!({ "rates": { "api_requests": "2:60" } })).await;
    let path = format!(
        "/api/v1/business/devices/{}/{}",
        dev.product_key, dev.device_name
    );
    let mut statuses = Vec::new();
    let mut last = (Value::Null, None);
    for _ in 0..3 {
        let (s, h, v) = d.api_as(Method::GET, &path, None, &auth).await;
        statuses.push(s);
        last = (
            v["limit"].clone(),
            h.get("retry-after")
                .map(|v| v.to_str().unwrap_or("").to_owned()),
        );
    }
    let observed = format!(
        "3 requests at 2:60: {statuses:?}, last {} Retry-After {:?}",
        last.0, last.1
    );
    check(
        "L-076",
        "2:60 (profile rates.api_requests)",
        &observed,
        statuses == [200, 200, 429] && last.0 == "L-076" && last.1.is_some(),
    );
}

/// Sends shadow requests from the device and collects the hub's answers.
async fn shadow_answers(d: &Deployment, dev: &DeviceCreds, requests: &[Value]) -> Vec<Value> {
    let (c, mut ev) = v3::connect(dev.v3_options(d)).await;
    let update = format!("/shadow/update/{}/{}", dev.product_key, dev.device_name);
    let get = format!("/shadow/get/{}/{}", dev.product_key, dev.device_name);
    let mut out = Vec::new();
    for r in requests {
        c.publish(&update, rumqttc::QoS::AtLeastOnce, false, r.to_string())
            .await
            .unwrap();
        loop {
            let p = v3::next_publish(&mut ev).await;
            if p.topic == get {
                out.push(serde_json::from_slice(&p.payload).unwrap());
                break;
            }
        }
    }
    out
}

fn reported(state: Value) -> Value {
    json!({ "method": "update", "state": { "reported": state } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_040_shadow_json_levels() {
    let (d, dev) = setup(json!({ "shadow": { "levels": 2 } })).await;
    let answers = shadow_answers(
        &d,
        &dev,
        &[
            reported(json!({ "a": { "b": 1 } })),
            reported(json!({ "a": { "b": { "c": 1 } } })),
        ],
    )
    .await;
    let observed = format!(
        "2 levels: {}; 3 levels: {}",
        answers[0]["payload"], answers[1]["payload"]
    );
    check(
        "L-040",
        "2 (profile shadow.levels; default 5)",
        &observed,
        answers[0]["payload"]["status"] == "success"
            && answers[1]["payload"]["content"]["limit"] == "L-040",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_041_shadow_size() {
    let (d, dev, auth) = business_setup(json!({ "shadow": { "bytes": 200 } })).await;
    let path = format!(
        "/api/v1/business/shadows/{}/{}",
        dev.product_key, dev.device_name
    );
    let put = |n: usize| json!({ "state": { "desired": { "note": "x".repeat(n) } } });
    let (small, _, _) = d.api_as(Method::PUT, &path, Some(put(10)), &auth).await;
    let (big, _, v) = d.api_as(Method::PUT, &path, Some(put(300)), &auth).await;
    let observed = format!(
        "10-byte value: HTTP {small}; 300-byte value: HTTP {big} {}",
        v["limit"]
    );
    check(
        "L-041",
        "200 bytes (profile shadow.bytes; default 16 KB)",
        &observed,
        small == 200 && big == 413 && v["limit"] == "L-041",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_042_shadow_properties() {
    let (d, dev) = setup(json!({ "shadow": { "properties": 2 } })).await;
    let answers = shadow_answers(
        &d,
        &dev,
        &[
            reported(json!({ "a": 1, "b": 2 })),
            reported(json!({ "c": 3 })),
        ],
    )
    .await;
    let observed = format!(
        "2 properties: {}; a 3rd: {}",
        answers[0]["payload"], answers[1]["payload"]
    );
    check(
        "L-042",
        "2 (profile shadow.properties; default 128)",
        &observed,
        answers[0]["payload"]["status"] == "success"
            && answers[1]["payload"]["content"]["limit"] == "L-042",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_043_shadow_requests_per_device() {
    let (d, dev) = setup(json!({ "rates": { "shadow_requests": "1:60" } })).await;
    let get = json!({ "method": "get" });
    let answers = shadow_answers(&d, &dev, &[get.clone(), get]).await;
    let observed = format!(
        "1st get: {}; 2nd: {}",
        answers[0]["payload"]["status"], answers[1]["payload"]
    );
    check(
        "L-043",
        "1:60 (profile rates.shadow_requests; default 20:1)",
        &observed,
        answers[0]["payload"]["status"] == "success"
            && answers[1]["payload"]["content"]["errorcode"] == 429
            && answers[1]["payload"]["content"]["limit"] == "L-043",
    );
}

/// Puts a thing model on the device's product; returns status and body.
async fn put_model(d: &Deployment, dev: &DeviceCreds, model: Value) -> (u16, Value) {
    let path = format!("/api/v1/products/{}/tsl", dev.product_key);
    d.api(Method::PUT, &path, Some(model)).await
}

fn bool_props(n: usize) -> Value {
    let props: Vec<Value> = (0..n)
        .map(|i| json!({ "identifier": format!("p{i}"), "dataType": { "type": "bool", "specs": {} } }))
        .collect();
    json!({ "properties": props })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_030_topic_categories_per_product() {
    let (d, dev) = setup(json!({ "entities": { "topic_categories": 2 } })).await;
    let path = format!("/api/v1/products/{}/topics", dev.product_key);
    let categories = |n: usize| {
        let c: Vec<Value> = (0..n)
            .map(|i| json!({ "topic": format!("/${{productKey}}/${{deviceName}}/user/c{i}"), "operation": "all" }))
            .collect();
        json!(c)
    };
    let (fits, _) = d.api(Method::PUT, &path, Some(categories(2))).await;
    let (over, v) = d.api(Method::PUT, &path, Some(categories(3))).await;
    let observed = format!("2 categories: HTTP {fits}; 3: HTTP {over} {}", v["limit"]);
    check(
        "L-030",
        "2 (profile entities.topic_categories; default 50)",
        &observed,
        fits == 200 && over == 403 && v["limit"] == "L-030",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_045_thing_model_modules() {
    let (d, dev) = setup(json!({})).await;
    let modules = |n: usize| {
        let m: Vec<Value> = (0..n)
            .map(|i| json!({ "identifier": format!("m{i}") }))
            .collect();
        json!({ "modules": m })
    };
    let (fits, _) = put_model(&d, &dev, modules(20)).await;
    let (over, v) = put_model(&d, &dev, modules(21)).await;
    let observed = format!(
        "20 custom modules: HTTP {fits}; 21: HTTP {over} {}",
        v["limit"]
    );
    check(
        "L-045",
        "20",
        &observed,
        fits == 200 && over == 400 && v["limit"] == "L-045",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_046_features_per_thing_model() {
    let (d, dev) = setup(json!({})).await;
    let (fits, _) = put_model(&d, &dev, bool_props(300)).await;
    let (over, v) = put_model(&d, &dev, bool_props(301)).await;
    let observed = format!("300 features: HTTP {fits}; 301: HTTP {over} {}", v["limit"]);
    check(
        "L-046",
        "300",
        &observed,
        fits == 200 && over == 400 && v["limit"] == "L-046",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_047_struct_enum_and_array_sizes() {
    let (d, dev) = setup(json!({})).await;
    let enum_of = |n: usize| {
        let items: serde_json::Map<String, Value> = (0..n)
            .map(|i| (i.to_string(), json!(format!("v{i}"))))
            .collect();
        json!({ "properties": [ { "identifier": "e", "dataType": { "type": "enum", "specs": items } } ] })
    };
    let array_of = |n: usize| {
        json!({ "properties": [ { "identifier": "a", "dataType": { "type": "array",
        "specs": { "size": n, "item": { "type": "int", "specs": { "min": 0, "max": 1 } } } } } ] })
    };
    let (e_ok, _) = put_model(&d, &dev, enum_of(100)).await;
    let (e_over, ve) = put_model(&d, &dev, enum_of(101)).await;
    let (a_ok, _) = put_model(&d, &dev, array_of(512)).await;
    let (a_over, va) = put_model(&d, &dev, array_of(513)).await;
    let observed = format!(
        "enum 100/101 items: HTTP {e_ok}/{e_over} {}; array 512/513: HTTP {a_ok}/{a_over} {}",
        ve["limit"], va["limit"]
    );
    check(
        "L-047",
        "50 struct fields; 100 enum items; 512 array elements",
        &observed,
        e_ok == 200
            && e_over == 400
            && ve["limit"] == "L-047"
            && a_ok == 200
            && a_over == 400
            && va["limit"] == "L-047",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_048_text_length() {
    let (d, dev) = setup(json!({})).await;
    let text = |n: usize| {
        json!({ "properties": [ { "identifier": "t",
        "dataType": { "type": "text", "specs": { "length": n } } } ] })
    };
    let (fits, _) = put_model(&d, &dev, text(10_240)).await;
    let (over, v) = put_model(&d, &dev, text(10_241)).await;
    let observed = format!(
        "length 10240: HTTP {fits}; 10241: HTTP {over} {}",
        v["limit"]
    );
    check(
        "L-048",
        "10,240 characters",
        &observed,
        fits == 200 && over == 400 && v["limit"] == "L-048",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_049_service_and_event_parameters() {
    let (d, dev) = setup(json!({})).await;
    let params = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({ "identifier": format!("i{i}"), "dataType": { "type": "bool", "specs": {} } }))
            .collect()
    };
    let service =
        |n: usize| json!({ "services": [ { "identifier": "s", "inputData": params(n) } ] });
    let (fits, _) = put_model(&d, &dev, service(100)).await;
    let (over, v) = put_model(&d, &dev, service(101)).await;
    let four = json!({ "services": (0..4).map(|i| json!({ "identifier": format!("s{i}"),
        "inputData": params(80) })).collect::<Vec<_>>() });
    let (all, va) = put_model(&d, &dev, four).await;
    let observed = format!(
        "100 inputs: HTTP {fits}; 101: HTTP {over} {}; 4 x 80 in all: HTTP {all} {}",
        v["limit"], va["limit"]
    );
    check(
        "L-049",
        "100 each, 300 in all",
        &observed,
        fits == 200 && over == 400 && v["limit"] == "L-049" && all == 400 && va["limit"] == "L-049",
    );
}

/// A rule of `tenant` sending everything to `n` topic destinations.
async fn create_topic_rule(d: &Deployment, tenant: &str, n: usize) -> (u16, Value) {
    let destinations: Vec<Value> = (0..n)
        .map(|i| json!({ "kind": "topic", "topic": format!("/copy/{i}") }))
        .collect();
    let rule = json!({ "name": "r", "sql": "SELECT * FROM '/#'", "destinations": destinations });
    let path = format!("/api/v1/tenants/{tenant}/rules");
    d.api(Method::POST, &path, Some(rule)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_005_rules_per_tenant() {
    let (d, dev) = setup(json!({ "forwarding": { "rules": 1 } })).await;
    let (first, _) = create_topic_rule(&d, &dev.tenant, 1).await;
    let (second, v) = create_topic_rule(&d, &dev.tenant, 1).await;
    let observed = format!("1st rule HTTP {first}; 2nd HTTP {second} {}", v["limit"]);
    check(
        "L-005",
        "1 (profile forwarding.rules)",
        &observed,
        first == 201 && second == 403 && v["limit"] == "L-005",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_050_destinations_per_rule() {
    let (d, dev) = setup(json!({ "forwarding": { "destinations_per_rule": 2 } })).await;
    let (two, _) = create_topic_rule(&d, &dev.tenant, 2).await;
    let (three, v) = create_topic_rule(&d, &dev.tenant, 3).await;
    let observed = format!("2 destinations HTTP {two}; 3 HTTP {three} {}", v["limit"]);
    check(
        "L-050",
        "2 (profile forwarding.destinations_per_rule)",
        &observed,
        two == 201 && three == 400 && v["limit"] == "L-050",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_053_rule_sql_size_and_nesting() {
    let (d, dev) = setup(json!({})).await;
    let path = format!("/api/v1/tenants/{}/rules", dev.tenant);
    let create = async |sql: String| {
        let rule = json!({ "name": "r", "sql": sql,
                           "destinations": [{ "kind": "topic", "topic": "/copy/1" }] });
        d.api(Method::POST, &path, Some(rule)).await
    };
    let nested = |n: usize| {
        format!(
            "SELECT a FROM '/#' WHERE {}1{} = 1",
            "(".repeat(n),
            ")".repeat(n)
        )
    };
    let (deep32, _) = create(nested(32)).await;
    let (deep33, v33) = create(nested(33)).await;
    let padded = |n: usize| {
        let head = "SELECT a FROM '/#' WHERE a = '";
        format!("{head}{}'", "x".repeat(n - head.len() - 1))
    };
    let (long4096, _) = create(padded(4096)).await;
    let (long4097, v4097) = create(padded(4097)).await;
    let says = |v: &Value, what: &str| v.to_string().contains(what);
    let observed = format!(
        "nesting 32 HTTP {deep32}, 33 HTTP {deep33}; 4,096 bytes HTTP {long4096}, 4,097 HTTP {long4097}"
    );
    check(
        "L-053",
        "4,096 bytes, nesting 32 (fixed)",
        &observed,
        deep32 == 201
            && long4096 == 201
            && deep33 == 400
            && says(&v33, "nested deeper than 32")
            && long4097 == 400
            && says(&v4097, "longer than 4096 bytes"),
    );
}

/// Creates `rule` for `tenant`; returns its id.
async fn rule_id(d: &Deployment, tenant: &str, rule: Value) -> String {
    let (s, v) = d
        .api(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/rules"),
            Some(rule),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().expect("id").to_owned()
}

async fn rule_counters(d: &Deployment, tenant: &str, id: &str) -> Value {
    let (_, v) = d
        .api(
            Method::GET,
            &format!("/api/v1/tenants/{tenant}/rules/{id}"),
            None,
        )
        .await;
    v["counters"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_051_rule_engine_messages() {
    let (d, dev) = setup(json!({ "rates": { "rule_messages": "2:60" } })).await;
    let rule = json!({ "name": "r", "sql": "SELECT * FROM '/+/+/user/data'",
                       "destinations": [{ "kind": "topic", "topic": "/copy/data" }] });
    let id = rule_id(&d, &dev.tenant, rule).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    for i in 0..4 {
        c.publish(
            dev.user_topic("data"),
            rumqttc::QoS::AtLeastOnce,
            false,
            format!("{{\"i\":{i}}}"),
        )
        .await
        .unwrap();
        v3::acked(&mut ev).await;
    }
    let mut counters = Value::Null;
    for _ in 0..50 {
        counters = rule_counters(&d, &dev.tenant, &id).await;
        if counters["forwarded"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let observed = format!("4 matching messages: {counters}");
    check(
        "L-051",
        "2:60 (profile rates.rule_messages)",
        &observed,
        counters["matched"] == 4 && counters["throttled"] == 2 && counters["forwarded"] == 2,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_052_rule_writes_to_destinations() {
    let (d, dev) = setup(json!({ "rates": { "rule_writes": "1:60" } })).await;
    let errors = dev.user_topic("errors");
    let rule = json!({ "name": "r", "sql": "SELECT * FROM '/+/+/user/data'",
                       "destinations": [{ "kind": "topic", "topic": "/copy/data" }],
                       "error_destination": { "kind": "topic", "topic": errors } });
    let id = rule_id(&d, &dev.tenant, rule).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    c.subscribe(&errors, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    v3::suback(&mut ev).await;
    for i in 0..2 {
        c.publish(
            dev.user_topic("data"),
            rumqttc::QoS::AtLeastOnce,
            false,
            format!("{{\"i\":{i}}}"),
        )
        .await
        .unwrap();
        v3::acked(&mut ev).await;
    }
    // The second write is throttled at every attempt (1, 3, 10 s) and then reported.
    let report = v3::next_publish_within(&mut ev, Duration::from_secs(30)).await;
    let report: Value = report
        .map(|p| serde_json::from_slice(&p.payload).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    let counters = rule_counters(&d, &dev.tenant, &id).await;
    let observed = format!(
        "2 writes at 1:60: counters {counters}; report error {}",
        report["error"]
    );
    check(
        "L-052",
        "1:60 (profile rates.rule_writes), then retries at 1, 3, 10 s and the error destination",
        &observed,
        counters["forwarded"] == 1
            && counters["failed"] == 1
            && report["error"]
                .as_str()
                .is_some_and(|e| e.contains("L-052")),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_072_rule_executions_per_month() {
    let (d, dev) = setup(json!({ "monthly": { "rule_executions": 2 } })).await;
    let rule = json!({ "name": "r", "sql": "SELECT * FROM '/+/+/user/data'",
                       "destinations": [{ "kind": "topic", "topic": "/copy/data" }] });
    let id = rule_id(&d, &dev.tenant, rule).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    for i in 0..3 {
        c.publish(
            dev.user_topic("data"),
            rumqttc::QoS::AtLeastOnce,
            false,
            format!("{{\"i\":{i}}}"),
        )
        .await
        .unwrap();
        v3::acked(&mut ev).await;
    }
    let counters = rule_counters(&d, &dev.tenant, &id).await;
    let (usage, events) = month_usage(&d, &dev.tenant, "L-072").await;
    let executions = &usage["usage"]["month"]["rule_executions"];
    let observed = format!(
        "3 matching messages: counters {counters}; month rule_executions {executions}; L-072 events {events:?}"
    );
    check(
        "L-072",
        "2 (profile monthly.rule_executions)",
        &observed,
        counters["matched"] == 3
            && counters["throttled"] == 1
            && *executions == 2
            && events == ["warning", "disabled"],
    );
}

/// A deployment with the AMQP sink (the shared RabbitMQ node) and a device of a new tenant.
async fn setup_amqp(profile: Value) -> (Deployment, DeviceCreds, String) {
    let url = amqp::rabbitmq(amqp::SHARED_NODE);
    let d = Deployment::start(&amqp::config(amqp::SHARED_NODE)).await;
    let dev = d
        .tenant_with_profile(&Deployment::unique_tenant("limits"), profile)
        .await;
    (d, dev, url)
}

async fn create_group(d: &Deployment, tenant: &str) -> (u16, Value) {
    d.api(
        Method::POST,
        &format!("/api/v1/tenants/{tenant}/consumer-groups"),
        Some(json!({ "name": "g" })),
    )
    .await
}

async fn associate(d: &Deployment, tenant: &str, group: &Value, pk: &str) -> (u16, Value) {
    let id = group["id"].as_str().expect("group id");
    let path = format!("/api/v1/tenants/{tenant}/consumer-groups/{id}/products/{pk}");
    d.api(Method::PUT, &path, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_006_consumer_groups_per_tenant() {
    let (d, dev, _) = setup_amqp(json!({ "forwarding": { "consumer_groups": 2 } })).await;
    let (first, _) = create_group(&d, &dev.tenant).await;
    let (second, _) = create_group(&d, &dev.tenant).await;
    let (third, v) = create_group(&d, &dev.tenant).await;
    let observed = format!(
        "groups 1, 2: HTTP {first}, {second}; 3rd HTTP {third} {}",
        v["limit"]
    );
    check(
        "L-006",
        "2 (profile forwarding.consumer_groups)",
        &observed,
        first == 201 && second == 201 && third == 403 && v["limit"] == "L-006",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_060_consumer_groups_per_product() {
    let (d, dev, _) = setup_amqp(json!({ "forwarding": { "groups_per_product": 1 } })).await;
    let (_, g1) = create_group(&d, &dev.tenant).await;
    let (_, g2) = create_group(&d, &dev.tenant).await;
    let (first, _) = associate(&d, &dev.tenant, &g1, &dev.product_key).await;
    let (second, v) = associate(&d, &dev.tenant, &g2, &dev.product_key).await;
    let observed = format!(
        "1st group HTTP {first}; 2nd group HTTP {second} {}",
        v["limit"]
    );
    check(
        "L-060",
        "1 (profile forwarding.groups_per_product)",
        &observed,
        first == 200 && second == 403 && v["limit"] == "L-060",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_061_products_per_consumer_group() {
    let (d, dev, _) = setup_amqp(json!({ "forwarding": { "products_per_group": 1 } })).await;
    let (_, other) = create_product(&d, &dev.tenant).await;
    let (_, g) = create_group(&d, &dev.tenant).await;
    let (first, _) = associate(&d, &dev.tenant, &g, &dev.product_key).await;
    let other_pk = other["product_key"].as_str().unwrap();
    let (second, v) = associate(&d, &dev.tenant, &g, other_pk).await;
    let observed = format!(
        "1st product HTTP {first}; 2nd product HTTP {second} {}",
        v["limit"]
    );
    check(
        "L-061",
        "1 (profile forwarding.products_per_group)",
        &observed,
        first == 200 && second == 403 && v["limit"] == "L-061",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_062_consumers_per_consumer_group() {
    let (d, dev, _) = setup_amqp(json!({ "forwarding": { "consumers_per_group": 2 } })).await;
    let (s, g) = create_group(&d, &dev.tenant).await;
    assert_eq!(s, 201, "{g}");
    let url = amqp::url_as(
        amqp::SHARED_NODE,
        g["credentials"]["username"].as_str().expect("credentials"),
        g["credentials"]["password"].as_str().expect("credentials"),
    );
    let queue = g["queue"].as_str().unwrap();
    let mut open = Vec::new();
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        match amqp::try_consume(&url, queue).await {
            Ok(c) => {
                outcomes.push("consuming".to_owned());
                open.push(c);
            }
            Err(e) => outcomes.push(format!("refused: {e}")),
        }
    }
    let observed = format!("3 consumers with the group's credentials: {outcomes:?}");
    check(
        "L-062",
        "2 (profile forwarding.consumers_per_group; the group's RabbitMQ user limits)",
        &observed,
        outcomes[..2] == ["consuming", "consuming"] && outcomes[2].starts_with("refused"),
    );
}

/// Publishes `n` QoS 1 messages `m0..` and waits for each PUBACK; returns the connection, kept
/// open so that no offline notification follows.
async fn publish_acked(
    d: &Deployment,
    dev: &DeviceCreds,
    n: usize,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (c, mut ev) = v3::connect(dev.v3_options(d)).await;
    for i in 0..n {
        c.publish(
            dev.user_topic("data"),
            rumqttc::QoS::AtLeastOnce,
            false,
            format!("m{i}"),
        )
        .await
        .unwrap();
        v3::acked(&mut ev).await;
    }
    (c, ev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_063_consumer_group_retention() {
    // Length: a group keeping 3 messages holds the newest 3 of 6 (the online notification, then
    // m0..m4).
    let profile = with(
        unlimited(),
        json!({ "forwarding": { "group_max_messages": 3 } }),
    );
    let (d, dev, url) = setup_amqp(profile).await;
    let (_, g) = create_group(&d, &dev.tenant).await;
    associate(&d, &dev.tenant, &g, &dev.product_key).await;
    let _connected = publish_acked(&d, &dev, 5).await;
    let mut consumer = amqp::GroupConsumer::start(&url, g["queue"].as_str().unwrap()).await;
    let kept: Vec<String> = consumer
        .drain(Duration::from_secs(2))
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    // Time: a group keeping messages 1 s has nothing left for a consumer arriving 3 s later.
    let profile = with(
        unlimited(),
        json!({ "forwarding": { "group_retention_secs": 1 } }),
    );
    let tenant = Deployment::unique_tenant("limits");
    let dev2 = d.tenant_with_profile(&tenant, profile).await;
    let (_, g2) = create_group(&d, &tenant).await;
    associate(&d, &tenant, &g2, &dev2.product_key).await;
    let _connected2 = publish_acked(&d, &dev2, 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut late = amqp::GroupConsumer::start(&url, g2["queue"].as_str().unwrap()).await;
    let expired = late.drain(Duration::from_secs(1)).await.len();
    let observed =
        format!("length 3: kept {kept:?} of m0..m4; retention 1 s: {expired} left after 3 s");
    check(
        "L-063",
        "profile forwarding.group_max_messages 3, forwarding.group_retention_secs 1",
        &observed,
        kept == ["m2", "m3", "m4"] && expired == 0,
    );
}

/// Rows of the contract whose feature is not built yet, with the issue that builds it. The
/// coverage test checks this list and docs/limits.md agree, so a row cannot silently lose its
/// test or its plan.
const NOT_YET_BUILT: &[(&str, u32)] = &[];

#[test]
fn every_row_of_the_contract_has_a_test() {
    let rows = report::limit_rows(&report::contract());
    assert!(
        rows.len() >= 40,
        "docs/limits.md parsed into {} rows",
        rows.len()
    );
    let source = include_str!("limits.rs");
    let mut missing = Vec::new();
    for row in &rows {
        let test = format!("fn {}_", row.id.to_lowercase().replace('-', "_"));
        let has_test = source.contains(&test);
        if row.status == "enforced" && !has_test {
            missing.push(format!("{} has no test `{test}...`", row.id));
        }
        if row.status != "enforced" && !row.status.contains("not yet built (issue") {
            missing.push(format!(
                "{}: status must be `enforced` or `not yet built (issue N)`",
                row.id
            ));
        }
    }
    let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), rows.len(), "ids are unique");
    for (id, _) in NOT_YET_BUILT {
        let row = rows.iter().find(|r| r.id == *id);
        assert!(
            row.is_some_and(|r| r.status != "enforced"),
            "{id} is listed as not yet built but the contract says otherwise"
        );
    }
    let catalog: Vec<&str> = ironhub_core::limits::LimitId::ALL
        .iter()
        .map(|l| l.id())
        .collect();
    for row in &rows {
        if !catalog.contains(&row.id.as_str()) {
            missing.push(format!(
                "{} has no entry in core's catalog (LimitId)",
                row.id
            ));
        }
    }
    for id in &catalog {
        if !ids.contains(id) {
            missing.push(format!(
                "{id} is in core's catalog but not in docs/limits.md"
            ));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// A deployment serving downloads (upgrade batches need it) whose tenant has `entities`.
async fn ota_setup(entities: Value) -> (Deployment, DeviceCreds) {
    let (d, _) = ironhub_conformance::http::Http::start(ironhub_conformance::ota::CONFIG).await;
    let dev = d
        .tenant_with_profile(
            &Deployment::unique_tenant("limits"),
            with(unlimited(), json!({ "entities": entities })),
        )
        .await;
    (d, dev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_091_ota_packages_per_tenant() {
    use ironhub_conformance::ota::{firmware, upload};
    let (d, dev) = ota_setup(json!({ "ota_packages": 1 })).await;
    let query = |v: &str| format!("product_key={}&version={v}", dev.product_key);
    let (first, made) = upload(&d, &dev.tenant, &query("1.0"), &firmware(100, 1)).await;
    let (second, refused) = upload(&d, &dev.tenant, &query("1.1"), &firmware(100, 2)).await;
    let path = format!(
        "/api/v1/tenants/{}/ota/packages/{}",
        dev.tenant,
        made["id"].as_str().unwrap_or_default()
    );
    let (deleted, _) = d.api(Method::DELETE, &path, None).await;
    let (again, _) = upload(&d, &dev.tenant, &query("1.1"), &firmware(100, 2)).await;
    let observed = format!(
        "1st upload: HTTP {first}; 2nd: HTTP {second} {}; after deleting the 1st: HTTP {again}",
        refused["limit"]
    );
    check(
        "L-091",
        "1 (profile entities.ota_packages); HTTP 403",
        &observed,
        first == 201
            && second == 403
            && refused["limit"] == "L-091"
            && deleted == 204
            && again == 201,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_092_ota_package_size() {
    use ironhub_conformance::ota::{firmware, upload};
    let (d, dev) = ota_setup(json!({ "ota_package_bytes": 1000 })).await;
    let query = |v: &str| format!("product_key={}&version={v}", dev.product_key);
    let (fits, _) = upload(&d, &dev.tenant, &query("1.0"), &firmware(1000, 1)).await;
    let (over, refused) = upload(&d, &dev.tenant, &query("1.1"), &firmware(1001, 2)).await;
    let (_, listed) = d
        .api(
            Method::GET,
            &format!("/api/v1/tenants/{}/ota/packages", dev.tenant),
            None,
        )
        .await;
    let kept = listed.as_array().map_or(0, Vec::len);
    let observed = format!(
        "1,000 bytes: HTTP {fits}; 1,001 bytes: HTTP {over} {}; packages kept: {kept}",
        refused["limit"]
    );
    check(
        "L-092",
        "1,000 bytes (profile entities.ota_package_bytes); HTTP 413",
        &observed,
        fits == 201 && over == 413 && refused["limit"] == "L-092" && kept == 1,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_093_ota_batch_devices() {
    use ironhub_conformance::ota::{firmware, upload};
    let (d, dev) = ota_setup(json!({ "ota_batch_devices": 1 })).await;
    d.add_device(&dev.product_key, "dev-2").await;
    let query = format!("product_key={}&version=2.0", dev.product_key);
    let (_, package) = upload(&d, &dev.tenant, &query, &firmware(100, 1)).await;
    let path = format!("/api/v1/tenants/{}/ota/batches", dev.tenant);
    let (whole, refused) = d
        .api(
            Method::POST,
            &path,
            Some(json!({ "package_id": package["id"], "target": { "kind": "product" } })),
        )
        .await;
    let one = json!({ "package_id": package["id"],
                      "target": { "kind": "devices", "names": [dev.device_name] } });
    let (listed, _) = d.api(Method::POST, &path, Some(one)).await;
    let observed = format!(
        "a batch of the product's 2 devices: HTTP {whole} {}; of 1: HTTP {listed}",
        refused["limit"]
    );
    check(
        "L-093",
        "1 (profile entities.ota_batch_devices); HTTP 400",
        &observed,
        whole == 400 && refused["limit"] == "L-093" && listed == 201,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_094_remote_config_size() {
    let (d, dev) = ota_setup(json!({ "remote_config_bytes": 100 })).await;
    let path = format!("/api/v1/products/{}/config", dev.product_key);
    let file = |len: usize| format!("{{\"a\":\"{}\"}}", "x".repeat(len - 8));
    let send = async |body: String| {
        ironhub_conformance::ota::send_file(&d, "PUT", &path, body.as_bytes()).await
    };
    let (fits, _) = send(file(100)).await;
    let (over, refused) = send(file(101)).await;
    let (_, kept) = d.api(Method::GET, &path, None).await;
    let observed = format!(
        "100 bytes: HTTP {fits}; 101 bytes: HTTP {over} {}; the file kept: {} bytes",
        refused["limit"], kept["size"]
    );
    check(
        "L-094",
        "100 bytes (profile entities.remote_config_bytes); HTTP 413",
        &observed,
        fits == 200 && over == 413 && refused["limit"] == "L-094" && kept["size"] == 100,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_095_data_retention() {
    let (d, dev) = setup(with(unlimited(), json!({ "history_retention_days": 1 }))).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let now = ironhub_core::now_ms();
    let hour = 3_600_000;
    let suffix = "/thing/event/property/post";
    // A value the device dates 12 hours back is kept at that time; one it dates two days back,
    // past the retention, is kept at the hub's time instead.
    for (name, at) in [("recent", now - 12 * hour), ("stale", now - 48 * hour)] {
        let params = json!({ name: { "value": 1, "time": at } });
        ironhub_conformance::gateway::sys_call(&c, &mut ev, &dev, suffix, params).await;
    }
    let path = format!(
        "/api/v1/products/{}/devices/{}/properties",
        dev.product_key, dev.device_name
    );
    let mut latest = Value::Null;
    for _ in 0..50 {
        latest = d.api(Method::GET, &path, None).await.1;
        if latest["stale"].is_object() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recent = latest["recent"]["time_ms"].as_u64().unwrap_or(0);
    let stale = latest["stale"]["time_ms"].as_u64().unwrap_or(0);
    let (_, page) = d
        .api(
            Method::GET,
            &format!("{path}/recent?from_ms={}", now - 13 * hour),
            None,
        )
        .await;
    let observed = format!(
        "dated 12 h back: kept at {}h ago; dated 48 h back: kept at {}h ago; the default range finds {} value(s) of the first",
        now.saturating_sub(recent) / hour,
        now.saturating_sub(stale) / hour,
        page["points"].as_array().map_or(0, Vec::len)
    );
    check(
        "L-095",
        "1 day (profile history_retention_days); older device times are the hub's; swept hourly",
        &observed,
        recent == now - 12 * hour
            && stale >= now
            && page["points"].as_array().map_or(0, Vec::len) == 1,
    );
}

/// A raw frame on the device's `up_raw`, and the answer on `up_raw_reply` (None within 3 s).
async fn up_raw_post(
    c: &rumqttc::AsyncClient,
    ev: &mut rumqttc::EventLoop,
    dev: &DeviceCreds,
    frame: &[u8],
) -> Option<Vec<u8>> {
    let topic = format!(
        "/sys/{}/{}/thing/model/up_raw",
        dev.product_key, dev.device_name
    );
    c.publish(&topic, rumqttc::QoS::AtMostOnce, false, frame.to_vec())
        .await
        .unwrap();
    let reply = format!("{topic}_reply");
    tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = ev.poll().await
                && p.topic == reply
            {
                return p.payload.to_vec();
            }
        }
    })
    .await
    .ok()
}

/// Connects `dev` subscribed to its `up_raw_reply`.
async fn up_raw_device(
    d: &Deployment,
    dev: &DeviceCreds,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (c, mut ev) = v3::connect(dev.v3_options(d)).await;
    let reply = format!(
        "/sys/{}/{}/thing/model/up_raw_reply",
        dev.product_key, dev.device_name
    );
    c.subscribe(reply, rumqttc::QoS::AtMostOnce).await.unwrap();
    v3::suback(&mut ev).await;
    (c, ev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_096_parsing_script_size() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "entities": { "script_bytes": 100 } }),
    ))
    .await;
    let path = format!("/api/v1/products/{}/script", dev.product_key);
    let script = |len: usize| format!("var a = '{}';", "x".repeat(len - 11));
    let send = async |body: String| {
        ironhub_conformance::ota::send_file(&d, "PUT", &path, body.as_bytes()).await
    };
    let (fits, _) = send(script(100)).await;
    let (over, refused) = send(script(101)).await;
    let (_, kept) = d.api(Method::GET, &path, None).await;
    let kept = kept["source"].as_str().map_or(0, str::len);
    let observed = format!(
        "100 bytes: HTTP {fits}; 101 bytes: HTTP {over} {}; the script kept: {kept} bytes",
        refused["limit"]
    );
    check(
        "L-096",
        "100 bytes (profile entities.script_bytes); HTTP 413",
        &observed,
        fits == 200 && over == 413 && refused["limit"] == "L-096" && kept == 100,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_097_parsing_script_executions_per_month() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "monthly": { "js_executions": 2 } }),
    ))
    .await;
    let path = format!("/api/v1/products/{}/script", dev.product_key);
    let script = b"function rawDataToProtocol(b) { return { method: 'thing.event.property.post', id: '1', params: { level: b[0] } }; }
                   function protocolToRawData(j) { return [j.code & 0xff]; }";
    let (s, v) = ironhub_conformance::ota::send_file(&d, "PUT", &path, script).await;
    assert_eq!(s, 200, "{v}");
    let (c, mut ev) = up_raw_device(&d, &dev).await;
    // The first frame takes two executions (parse, then encode the answer); the second none.
    let first = up_raw_post(&c, &mut ev, &dev, &[7]).await;
    let second = up_raw_post(&c, &mut ev, &dev, &[8]).await;
    let (usage, events) = month_usage(&d, &dev.tenant, "L-097").await;
    let executions = &usage["usage"]["month"]["js_executions"];
    let observed = format!(
        "first frame answered {first:?}; second frame answered {second:?}; month js_executions {executions}; L-097 events {events:?}"
    );
    check(
        "L-097",
        "2 (profile monthly.js_executions); the frame past it is discarded",
        &observed,
        first == Some(vec![200])
            && second.is_none()
            && *executions == 2
            && events == ["warning", "disabled"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_098_parsing_script_time_and_memory_per_execution() {
    let d = Deployment::start("[hub.scripts]\ntime_budget_ms = 100\nmemory_mb = 4\n").await;
    let dev = d
        .tenant_with_profile(&Deployment::unique_tenant("limits"), unlimited())
        .await;
    let path = format!("/api/v1/products/{}/script", dev.product_key);
    let (c, mut ev) = up_raw_device(&d, &dev).await;
    let mut outcomes = Vec::new();
    for script in [
        "function rawDataToProtocol(b) { var t = Date.now(); while (Date.now() - t < 10) {} return { method: 'thing.event.property.post', id: '1', params: {} }; }",
        "function rawDataToProtocol(b) { for (;;) {} }",
        "function rawDataToProtocol(b) { var a = []; for (;;) { a.push(new Array(65536).fill(b)); } }",
    ] {
        let (s, v) = ironhub_conformance::ota::send_file(&d, "PUT", &path, script.as_bytes()).await;
        assert_eq!(s, 200, "{v}");
        let answer = up_raw_post(&c, &mut ev, &dev, &[1])
            .await
            .unwrap_or_default();
        let answer: Value = serde_json::from_slice(&answer).unwrap_or_default();
        outcomes.push(answer["code"].as_i64().unwrap_or(0));
        outcomes.push(i64::from(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("time budget") || m.contains("memory")),
        ));
    }
    let (at_load, refused) =
        ironhub_conformance::ota::send_file(&d, "PUT", &path, b"for (;;) {}").await;
    let observed = format!(
        "10 ms of work, an endless loop, endless allocation: (code, stopped) {outcomes:?}; an endless loop at load: HTTP {at_load} {}",
        refused["limit"]
    );
    check(
        "L-098",
        "100 ms and 4 MB ([hub.scripts] time_budget_ms, memory_mb); 6201 on up_raw_reply, HTTP 400 when saving",
        &observed,
        outcomes == [200, 0, 6201, 1, 6201, 1] && at_load == 400 && refused["limit"] == "L-098",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_099_device_groups_per_tenant() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "entities": { "device_groups": 2 } }),
    ))
    .await;
    let groups = format!("/api/v1/tenants/{}/device-groups", dev.tenant);
    let (first, g) = d
        .api(Method::POST, &groups, Some(json!({ "name": "a" })))
        .await;
    let sub = json!({ "name": "b", "parent_id": g["id"] });
    let (second, _) = d.api(Method::POST, &groups, Some(sub)).await;
    let (third, refused) = d
        .api(Method::POST, &groups, Some(json!({ "name": "c" })))
        .await;
    let observed = format!(
        "a group: HTTP {first}; a sub-group: HTTP {second}; a third: HTTP {third} {}",
        refused["limit"]
    );
    check(
        "L-099",
        "2 (profile entities.device_groups), sub-groups included; HTTP 403",
        &observed,
        first == 201 && second == 201 && third == 403 && refused["limit"] == "L-099",
    );
}

/// A group of `dev`'s tenant and `n` more devices of its product.
async fn group_with_devices(d: &Deployment, dev: &DeviceCreds, n: usize) -> (String, Vec<Value>) {
    let groups = format!("/api/v1/tenants/{}/device-groups", dev.tenant);
    let (_, g) = d
        .api(Method::POST, &groups, Some(json!({ "name": "g" })))
        .await;
    let mut devices =
        vec![json!({ "product_key": dev.product_key, "device_name": dev.device_name })];
    for i in 0..n {
        let more = d.add_device(&dev.product_key, &format!("more-{i}")).await;
        devices.push(json!({ "product_key": more.product_key, "device_name": more.device_name }));
    }
    (
        format!("{groups}/{}", g["id"].as_str().unwrap_or("")),
        devices,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_100_devices_per_group() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "entities": { "devices_per_group": 2 } }),
    ))
    .await;
    let (group, devices) = group_with_devices(&d, &dev, 2).await;
    let add = |list: &[Value]| json!({ "devices": list });
    let (two, _) = d
        .api(
            Method::POST,
            &format!("{group}/devices"),
            Some(add(&devices[..2])),
        )
        .await;
    let (again, _) = d
        .api(
            Method::POST,
            &format!("{group}/devices"),
            Some(add(&devices[..1])),
        )
        .await;
    let (third, refused) = d
        .api(
            Method::POST,
            &format!("{group}/devices"),
            Some(add(&devices[2..])),
        )
        .await;
    let (_, view) = d.api(Method::GET, &group, None).await;
    let observed = format!(
        "2 devices: HTTP {two}; one of them again: HTTP {again}; a 3rd: HTTP {third} {}; the group holds {}",
        refused["limit"], view["device_count"]
    );
    check(
        "L-100",
        "2 (profile entities.devices_per_group); HTTP 403",
        &observed,
        two == 200
            && again == 200
            && third == 403
            && refused["limit"] == "L-100"
            && view["device_count"] == 2,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_101_groups_per_device() {
    let (d, dev) = setup(with(
        unlimited(),
        json!({ "entities": { "groups_per_device": 2 } }),
    ))
    .await;
    let mut statuses = Vec::new();
    let mut last = Value::Null;
    for _ in 0..3 {
        let (group, devices) = group_with_devices(&d, &dev, 0).await;
        let (s, v) = d
            .api(
                Method::POST,
                &format!("{group}/devices"),
                Some(json!({ "devices": devices })),
            )
            .await;
        statuses.push(s);
        last = v;
    }
    let groups = format!(
        "/api/v1/products/{}/devices/{}/groups",
        dev.product_key, dev.device_name
    );
    let (_, of_device) = d.api(Method::GET, &groups, None).await;
    let held = of_device.as_array().map_or(0, Vec::len);
    let observed = format!(
        "a device put in 3 groups: HTTP {statuses:?}, the 3rd {}; it is in {held}",
        last["limit"]
    );
    check(
        "L-101",
        "2 (profile entities.groups_per_device); HTTP 403",
        &observed,
        statuses == [200, 200, 403] && last["limit"] == "L-101" && held == 2,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_102_thing_model_document_size() {
    let (d, dev) = setup(unlimited()).await;
    let path = format!("/api/v1/products/{}/tsl/import", dev.product_key);
    // A description pads the document; spaces keep its valid characters under L-103.
    let document = |len: usize| {
        let head = r#"{"properties":[],"desc":""}"#;
        format!("{}{}", head, " ".repeat(len - head.len()))
    };
    let send = async |body: String| {
        ironhub_conformance::ota::send_file(&d, "POST", &path, body.as_bytes()).await
    };
    let (fits, _) = send(document(512 * 1024)).await;
    let (over, refused) = send(document(512 * 1024 + 1)).await;
    let observed = format!(
        "512 KB: HTTP {fits}; 512 KB + 1 byte: HTTP {over} {}",
        refused["limit"]
    );
    check(
        "L-102",
        "512 KB; HTTP 413",
        &observed,
        fits == 200 && over == 413 && refused["limit"] == "L-102",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_103_thing_model_valid_characters() {
    let (d, dev) = setup(unlimited()).await;
    let path = format!("/api/v1/products/{}/tsl/import", dev.product_key);
    // Valid characters are the document without whitespace: a description pads them.
    let document = |valid: usize| {
        let head = r#"{"properties":[],"desc":""}"#;
        let padded = format!(
            r#"{{"properties":[],"desc":"{}"}}"#,
            "x".repeat(valid - head.len())
        );
        format!("{padded}{}", " ".repeat(100_000))
    };
    let send = async |body: String| {
        ironhub_conformance::ota::send_file(&d, "POST", &path, body.as_bytes()).await
    };
    let (fits, _) = send(document(256 * 1024)).await;
    let (over, refused) = send(document(256 * 1024 + 1)).await;
    let observed = format!(
        "256 KB of valid characters (and 100,000 spaces): HTTP {fits}; one more: HTTP {over} {}",
        refused["limit"]
    );
    check(
        "L-103",
        "256 KB without whitespace; HTTP 413",
        &observed,
        fits == 200 && over == 413 && refused["limit"] == "L-103",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_104_thing_model_nesting() {
    let (d, dev) = setup(unlimited()).await;
    let path = format!("/api/v1/products/{}/tsl", dev.product_key);
    let model = |inner: Value| {
        json!({ "properties": [{ "identifier": "a", "dataType": { "type": "array", "specs": {
            "size": 4, "item": { "type": "struct", "specs": [
                { "identifier": "s", "dataType": inner }] } } } }] })
    };
    let (two, _) = d
        .api(
            Method::PUT,
            &path,
            Some(model(
                json!({ "type": "int", "specs": { "min": 0, "max": 9 } }),
            )),
        )
        .await;
    let (three, refused) = d
        .api(
            Method::PUT,
            &path,
            Some(model(json!({ "type": "struct", "specs": [] }))),
        )
        .await;
    let observed = format!(
        "an array of structs: HTTP {two}; a struct in it: HTTP {three} {}",
        refused["limit"]
    );
    check(
        "L-104",
        "2 levels of arrays and structs; HTTP 400",
        &observed,
        two == 200 && three == 400 && refused["limit"] == "L-104",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_105_thing_model_versions() {
    let (d, dev) = setup(unlimited()).await;
    let path = format!("/api/v1/products/{}/tsl", dev.product_key);
    for i in 0..12 {
        let model = json!({ "properties": [{ "identifier": format!("p{i}"),
                             "dataType": { "type": "bool", "specs": {} } }] });
        let (s, v) = d.api(Method::PUT, &path, Some(model)).await;
        assert_eq!(s, 200, "{v}");
    }
    let (_, versions) = d.api(Method::GET, &format!("{path}/versions"), None).await;
    let numbers: Vec<u64> = versions
        .as_array()
        .map(|l| l.iter().filter_map(|v| v["version"].as_u64()).collect())
        .unwrap_or_default();
    let (oldest_gone, _) = d
        .api(Method::GET, &format!("{path}/versions/2"), None)
        .await;
    let observed =
        format!("12 models saved: versions kept {numbers:?}; version 2: HTTP {oldest_gone}");
    check(
        "L-105",
        "10; the oldest goes",
        &observed,
        numbers == (3..=12).rev().collect::<Vec<u64>>() && oldest_gone == 404,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_106_stored_data_point_days_per_month() {
    let profile = with(
        unlimited(),
        json!({ "history_retention_days": 30, "monthly": { "stored_point_days": 60 } }),
    );
    let (d, dev) = setup(profile).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let suffix = "/thing/event/property/post";
    // Two values kept 30 days: 60 point-days, the month's quota; the next values are not kept.
    let mut codes = Vec::new();
    for params in [json!({ "a": 1, "b": 2 }), json!({ "c": 3 })] {
        let reply = ironhub_conformance::gateway::sys_call_at(
            &c,
            &mut ev,
            &dev,
            (suffix, rumqttc::QoS::AtLeastOnce),
            params,
        )
        .await;
        codes.push(reply["code"].clone());
    }
    let latest = format!(
        "/api/v1/products/{}/devices/{}/properties",
        dev.product_key, dev.device_name
    );
    let (_, kept) = d.api(Method::GET, &latest, None).await;
    let mut names: Vec<String> = kept
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    let (usage, events) = month_usage(&d, &dev.tenant, "L-106").await;
    let used = &usage["usage"]["month"]["stored_point_days"];
    let observed = format!(
        "posts answered {codes:?}; values kept {names:?}; month stored_point_days {used}; L-106 events {events:?}"
    );
    check(
        "L-106",
        "60 (profile monthly.stored_point_days) at 30 days' retention; values past it are not kept",
        &observed,
        codes == [json!(200), json!(200)]
            && names == ["a", "b"]
            && *used == 60
            && events == ["warning", "disabled"],
    );
}

/// A tenant's usage and the kinds of the usage events `limit` raised, oldest first.
async fn month_usage(d: &Deployment, tenant: &str, limit: &str) -> (Value, Vec<String>) {
    let (_, usage) = d
        .api(
            Method::GET,
            &format!("/api/v1/tenants/{tenant}/usage"),
            None,
        )
        .await;
    let events = usage["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["limit"] == limit)
                .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default();
    (usage, events)
}
