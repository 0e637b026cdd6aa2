//! MQTT 5.0, statement by statement: each test is named after the normative statements
//! (`[MQTT-x.x.x-y]`) it shows and drives the open broker with packets written by rumqttc's
//! codec or, where a library cannot go, by hand. docs/protocols/mqtt-conformance.md lists every
//! statement with the test that shows it; `mqtt_conformance_table.rs` checks the two agree.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ironhub_conformance::Deployment;
use ironhub_conformance::raw::{field, packet};
use ironhub_conformance::wire::{Ended, Wire, filter5, v5_connect};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, LastWill,
    LastWillProperties, Packet, PubAck, PubAckReason, PubComp, PubRec, PubRecReason, PubRel,
    Publish, PublishProperties, RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
    UnsubAckReason, Unsubscribe,
};

const SHORT: Duration = Duration::from_millis(700);

/// An open broker that accepts any keep-alive, without rate limits.
async fn broker() -> Deployment {
    let d = Deployment::open_broker("keepalive_min_secs = 0\n").await;
    d.unlimit_sandbox().await;
    d
}

/// An open broker with access rules (TOML array items).
async fn broker_with_rules(rules: &str) -> Deployment {
    let d = Deployment::start(&format!(
        "[hub]\nkeepalive_min_secs = 0\n[hub.open_broker]\nenabled = true\nrules = [ {rules} ]\n"
    ))
    .await;
    d.unlimit_sandbox().await;
    d
}

/// A 5.0 CONNECT by hand: flags, then payload fields (the client id first), no properties.
fn connect_raw(level: u8, flags: u8, payload: &[&[u8]]) -> Vec<u8> {
    let mut body = field(b"MQTT");
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    body.push(0);
    for (i, f) in payload.iter().enumerate() {
        if i == 1 && flags & 0x04 != 0 {
            body.push(0); // will properties
        }
        body.extend(field(f));
    }
    packet(0x10, &body)
}

/// A QoS 0 PUBLISH with a topic given as bytes and no properties.
fn publish_raw(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = field(topic);
    body.push(0);
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

fn with_props(
    mut c: rumqttc::v5::mqttbytes::v5::Connect,
    f: impl FnOnce(&mut ConnectProperties),
) -> rumqttc::v5::mqttbytes::v5::Connect {
    let mut props = c.properties.take().unwrap_or_default();
    f(&mut props);
    c.properties = Some(props);
    c
}

fn persistent(client_id: &str, expiry: u32) -> rumqttc::v5::mqttbytes::v5::Connect {
    let mut c = with_props(v5_connect(client_id), |p| {
        p.session_expiry_interval = Some(expiry)
    });
    c.clean_start = false;
    c
}

fn publish(topic: &str, qos: QoS, pkid: u16, payload: &str) -> Packet {
    let mut p = Publish::new(topic, qos, payload.as_bytes().to_vec(), None);
    p.pkid = pkid;
    Packet::Publish(p)
}

fn retained(topic: &str, payload: &str) -> Packet {
    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec(), None);
    p.pkid = 1;
    p.retain = true;
    Packet::Publish(p)
}

fn disconnect(reason: DisconnectReasonCode) -> Packet {
    Packet::Disconnect(Disconnect::new(reason))
}

/// Publishes from a connection of its own and completes the QoS flow (a PINGREQ after it
/// makes sure a QoS 0 message was read before this returns).
async fn publish_from(d: &Deployment, client_id: &str, packet: Packet) {
    let mut w = Wire::v5_clean(d, client_id).await;
    w.send5(packet).await;
    w.send5(Packet::PingReq(rumqttc::v5::mqttbytes::v5::PingReq))
        .await;
    loop {
        match w.recv5().await {
            Packet::PingResp(_) => return,
            Packet::PubRec(rec) => w.send5(Packet::PubRel(PubRel::new(rec.pkid, None))).await,
            Packet::PubAck(_) | Packet::PubComp(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Expects a DISCONNECT with `reason`, then the connection closed.
async fn disconnected(w: &mut Wire, reason: DisconnectReasonCode) -> Disconnect {
    match w.recv5().await {
        Packet::Disconnect(d) => {
            assert_eq!(d.reason_code, reason, "{d:?}");
            assert!(
                d.properties
                    .as_ref()
                    .is_none_or(|p| p.session_expiry_interval.is_none()),
                "a server's DISCONNECT carries no Session Expiry Interval (MQTT-3.14.2-2)"
            );
            w.closed(0).await;
            d
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// Connects, sends `bytes` and expects DISCONNECT `reason` and the connection closed.
async fn refused_with(d: &Deployment, client_id: &str, bytes: &[u8], reason: DisconnectReasonCode) {
    let mut w = Wire::v5_clean(d, client_id).await;
    w.send_raw(bytes).await;
    disconnected(&mut w, reason).await;
}

async fn ping(w: &mut Wire) {
    w.send5(Packet::PingReq(rumqttc::v5::mqttbytes::v5::PingReq))
        .await;
    assert!(matches!(w.recv5().await, Packet::PingResp(_)));
}

fn puback(pkid: u16) -> Packet {
    Packet::PubAck(PubAck::new(pkid, None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_1_5_4_1_and_1_5_4_2_and_1_5_7_1_and_4_13_1_1_bad_strings_are_malformed() {
    let d = broker().await;
    use DisconnectReasonCode::MalformedPacket;
    refused_with(&d, "utf8", &publish_raw(b"a/\xff", b"x"), MalformedPacket).await;
    refused_with(
        &d,
        "surrogate",
        &publish_raw(b"a/\xed\xa0\x80", b"x"),
        MalformedPacket,
    )
    .await;
    refused_with(&d, "null", &publish_raw(b"a/\x00", b"x"), MalformedPacket).await;
    // A user property (a string pair) that is not UTF-8.
    let mut body = field(b"a/b");
    let mut prop = vec![0x26];
    prop.extend(field(b"k"));
    prop.extend(field(b"\xc3\x28"));
    body.push(prop.len() as u8);
    body.extend(prop);
    refused_with(&d, "pair", &packet(0x30, &body), MalformedPacket).await;
    let mut sub = 1u16.to_be_bytes().to_vec();
    sub.push(0);
    sub.extend(field(b"a/\x00"));
    sub.push(0);
    refused_with(&d, "null-filter", &packet(0x82, &sub), MalformedPacket).await;
    let mut sub = 1u16.to_be_bytes().to_vec();
    sub.push(0);
    sub.extend(field(b"a/\xff"));
    sub.push(0);
    refused_with(&d, "utf8-filter", &packet(0x82, &sub), MalformedPacket).await;
    let mut unsub = 1u16.to_be_bytes().to_vec();
    unsub.push(0);
    unsub.extend(field(b"a/\xff"));
    refused_with(
        &d,
        "utf8-unsubscribe",
        &packet(0xA2, &unsub),
        MalformedPacket,
    )
    .await;
    // Response Topic and Content Type that are not UTF-8.
    for (client, prop) in [("response", 0x08u8), ("content", 0x03)] {
        let mut body = field(b"a/b");
        let mut p = vec![prop];
        p.extend(field(b"\xff"));
        body.push(p.len() as u8);
        body.extend(p);
        refused_with(&d, client, &packet(0x30, &body), MalformedPacket).await;
    }
    // Client id, will topic and user name not UTF-8: refused without CONNACK.
    for (flags, fields) in [
        (0x02, &[&b"id\xff"[..]][..]),
        (0x06, &[b"w", b"will/\xff", b"m"]),
        (0x82, &[b"u", b"user\xff"]),
    ] {
        let mut w = Wire::open(&d).await;
        w.send_raw(&connect_raw(5, flags, fields)).await;
        assert!(w.closed(0).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_1_5_4_3_and_4_7_3_4_topics_are_matched_byte_for_byte() {
    let d = broker().await;
    let mut sub = Wire::v5_clean(&d, "exact").await;
    let bom = "\u{feff}room/a";
    let filters = [bom, "Room/A", "room//a"]
        .map(|f| filter5(f, QoS::AtMostOnce))
        .to_vec();
    sub.subscribe5(1, filters, None).await;
    let mut p = Wire::v5_clean(&d, "pub").await;
    for topic in ["room/a", "room/a/", bom, "Room/A", "room//a"] {
        p.send5(publish(topic, QoS::AtMostOnce, 0, topic)).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(String::from_utf8(sub.publish5().await.topic.to_vec()).unwrap());
    }
    assert_eq!(got, vec![bom.to_owned(), "Room/A".into(), "room//a".into()]);
    sub.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_2_1_3_1_and_3_6_1_1_and_3_8_1_1_and_3_10_1_1_and_3_14_1_1_and_3_15_1_1_reserved_flags()
 {
    let d = broker().await;
    use DisconnectReasonCode::MalformedPacket;
    let mut sub = 1u16.to_be_bytes().to_vec();
    sub.push(0);
    sub.extend(field(b"a/b"));
    sub.push(0);
    refused_with(&d, "subscribe", &packet(0x80, &sub), MalformedPacket).await;
    let mut unsub = 1u16.to_be_bytes().to_vec();
    unsub.push(0);
    unsub.extend(field(b"a/b"));
    refused_with(&d, "unsubscribe", &packet(0xA0, &unsub), MalformedPacket).await;
    refused_with(
        &d,
        "pubrel",
        &packet(0x60, &1u16.to_be_bytes()),
        MalformedPacket,
    )
    .await;
    refused_with(&d, "disconnect", &[0xE1, 0], MalformedPacket).await;
    refused_with(&d, "auth", &[0xF1, 0], MalformedPacket).await;
    refused_with(&d, "pingreq", &[0xC1, 0], MalformedPacket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_2_2_1_4_and_2_2_1_5_and_2_2_1_6_and_4_3_2_1_to_4_3_2_4_packet_identifiers() {
    let d = broker().await;
    let mut sub = Wire::v5_clean(&d, "sub").await;
    let ack = sub
        .subscribe5(4242, vec![filter5("ids/#", QoS::AtLeastOnce)], None)
        .await;
    assert_eq!(
        ack.return_codes,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let mut p = Wire::v5_clean(&d, "pub").await;
    p.send5(publish("ids/1", QoS::AtLeastOnce, 777, "a")).await;
    assert!(matches!(p.recv5().await, Packet::PubAck(a) if a.pkid == 777));
    p.send5(publish("ids/2", QoS::AtLeastOnce, 778, "b")).await;
    assert!(matches!(p.recv5().await, Packet::PubAck(a) if a.pkid == 778));
    let first = sub.publish5().await;
    let second = sub.publish5().await;
    assert!(first.pkid != 0 && second.pkid != 0 && first.pkid != second.pkid);
    assert!(!first.dup && !second.dup);
    // Unacknowledged until PUBACK: the first is still owed after the second is acknowledged.
    sub.send5(puback(second.pkid)).await;
    sub.send5(puback(first.pkid)).await;
    let mut unsub = Unsubscribe::new("ids/#", None);
    unsub.pkid = 9;
    sub.send5(Packet::Unsubscribe(unsub)).await;
    assert!(matches!(sub.recv5().await, Packet::UnsubAck(a) if a.pkid == 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_0_2_and_3_2_0_2_a_second_connect_is_a_protocol_error() {
    let d = broker().await;
    let mut w = Wire::v5_clean(&d, "twice").await;
    w.send5(Packet::Connect(v5_connect("twice"), None, None))
        .await;
    disconnected(&mut w, DisconnectReasonCode::ProtocolError).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_1_and_3_1_2_2_and_3_1_2_3_and_3_1_4_1_and_3_14_0_1_bad_connects_are_closed() {
    let d = broker().await;
    let mut w = Wire::open(&d).await;
    let mut wrong_name = connect_raw(5, 0x02, &[b"n"]);
    wrong_name[5] = b'X';
    w.send_raw(&wrong_name).await;
    assert!(
        w.closed(0).await.is_empty(),
        "a wrong protocol name: closed"
    );
    let mut w = Wire::open(&d).await;
    w.send_raw(&connect_raw(6, 0x02, &[b"v6"])).await;
    let frames = w.closed(1).await;
    assert_eq!(
        frames.iter().map(|f| &f[..]).collect::<Vec<_>>(),
        vec![&[0x20, 2, 0, 1][..]],
        "an unknown version: refused (the 3.1.1 form any client reads), then closed"
    );
    for (case, bytes) in [
        ("reserved flag", connect_raw(5, 0x03, &[b"r"])),
        ("will qos 3", connect_raw(5, 0x1E, &[b"w", b"t", b"m"])),
        ("will qos without will", connect_raw(5, 0x0A, &[b"q"])),
        (
            "user name flag without a name",
            connect_raw(5, 0x82, &[b"u"]),
        ),
        (
            "a user name without its flag",
            connect_raw(5, 0x02, &[b"u", b"name"]),
        ),
        (
            "a password without its flag",
            connect_raw(5, 0x82, &[b"u", b"name", b"pw"]),
        ),
    ] {
        let mut w = Wire::open(&d).await;
        w.send_raw(&bytes).await;
        assert!(
            w.closed(0).await.is_empty(),
            "{case}: closed with nothing sent, no DISCONNECT before a CONNACK"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_4_to_3_1_2_6_and_3_1_2_23_and_3_2_2_2_and_3_2_2_3_and_4_1_0_1_sessions() {
    let d = broker().await;
    let (mut w, ack) = Wire::v5(&d, persistent("keeper", 600)).await;
    assert!(!ack.session_present, "a new session");
    w.subscribe5(1, vec![filter5("kept/#", QoS::AtLeastOnce)], None)
        .await;
    w.send5(disconnect(DisconnectReasonCode::NormalDisconnection))
        .await;
    w.closed(0).await;
    publish_from(&d, "p", publish("kept/1", QoS::AtLeastOnce, 1, "one")).await;
    let (mut w, ack) = Wire::v5(&d, persistent("keeper", 600)).await;
    assert!(ack.session_present, "resumed");
    let got = w.publish5().await;
    assert_eq!(&got.payload[..], b"one", "stored while away");
    w.send5(puback(got.pkid)).await;
    w.send5(disconnect(DisconnectReasonCode::NormalDisconnection))
        .await;
    w.closed(0).await;
    publish_from(&d, "p", publish("kept/2", QoS::AtLeastOnce, 1, "two")).await;
    let (mut w, ack) = Wire::v5(
        &d,
        with_props(v5_connect("keeper"), |p| {
            p.session_expiry_interval = Some(600)
        }),
    )
    .await;
    assert!(!ack.session_present, "Clean Start discards the session");
    w.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_1_0_2_an_expired_session_is_discarded() {
    let d = broker().await;
    let (mut w, _) = Wire::v5(&d, persistent("brief", 1)).await;
    w.subscribe5(1, vec![filter5("brief/#", QoS::AtLeastOnce)], None)
        .await;
    w.send5(disconnect(DisconnectReasonCode::NormalDisconnection))
        .await;
    w.closed(0).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (mut w, ack) = Wire::v5(&d, persistent("brief", 1)).await;
    assert!(!ack.session_present, "the session expired while away");
    publish_from(&d, "p", publish("brief/1", QoS::AtLeastOnce, 1, "x")).await;
    w.quiet(SHORT).await;
}

fn with_will(
    client_id: &str,
    topic: &str,
    retain: bool,
    delay: Option<u32>,
) -> (rumqttc::v5::mqttbytes::v5::Connect, LastWill) {
    let props = LastWillProperties {
        delay_interval: delay,
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "3".into()),
        ],
    };
    let will = LastWill::new(topic, "gone", QoS::AtLeastOnce, retain, Some(props));
    (v5_connect(client_id), will)
}

async fn connect_with_will(
    d: &Deployment,
    connect: rumqttc::v5::mqttbytes::v5::Connect,
    will: LastWill,
) -> Wire {
    let mut w = Wire::open(d).await;
    w.send5(Packet::Connect(connect, Some(will), None)).await;
    assert!(matches!(w.recv5().await, Packet::ConnAck(a) if a.code == ConnectReturnCode::Success));
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_7_and_3_1_2_8_and_3_1_2_10_and_3_1_2_14_and_3_1_2_15_and_3_1_3_10_and_3_14_4_3_wills()
 {
    let d = broker().await;
    let mut watcher = Wire::v5_clean(&d, "watcher").await;
    watcher
        .subscribe5(1, vec![filter5("will/#", QoS::AtLeastOnce)], None)
        .await;
    let (c, will) = with_will("a", "will/a", true, None);
    drop(connect_with_will(&d, c, will).await);
    let got = watcher.publish5().await;
    assert_eq!(&got.topic[..], b"will/a");
    assert_eq!(
        got.properties.map(|p| p.user_properties),
        Some(vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "3".into())
        ]),
        "user properties in their order"
    );
    watcher.send5(puback(got.pkid)).await;
    let mut late = Wire::v5_clean(&d, "late").await;
    late.subscribe5(1, vec![filter5("will/a", QoS::AtMostOnce)], None)
        .await;
    assert!(late.publish5().await.retain, "a retained will");
    // Not retained when Will Retain is 0.
    let (c, will) = with_will("b", "will/b", false, None);
    drop(connect_with_will(&d, c, will).await);
    let got = watcher.publish5().await;
    assert_eq!(&got.topic[..], b"will/b");
    watcher.send5(puback(got.pkid)).await;
    let mut late = Wire::v5_clean(&d, "late2").await;
    late.subscribe5(1, vec![filter5("will/b", QoS::AtMostOnce)], None)
        .await;
    late.quiet(SHORT).await;
    // DISCONNECT 0x00 discards the will; 0x04 publishes it.
    let (c, will) = with_will("c", "will/c", false, None);
    let mut w = connect_with_will(&d, c, will).await;
    w.send5(disconnect(DisconnectReasonCode::NormalDisconnection))
        .await;
    w.closed(0).await;
    watcher.quiet(SHORT).await;
    let (c, will) = with_will("e", "will/e", false, None);
    let mut w = connect_with_will(&d, c, will).await;
    w.send5(disconnect(DisconnectReasonCode::DisconnectWithWillMessage))
        .await;
    w.closed(0).await;
    assert_eq!(&watcher.publish5().await.topic[..], b"will/e");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_3_9_a_resumed_session_cancels_a_delayed_will() {
    let d = broker().await;
    let mut watcher = Wire::v5_clean(&d, "watcher").await;
    watcher
        .subscribe5(1, vec![filter5("will/#", QoS::AtMostOnce)], None)
        .await;
    let (_, will) = with_will("delayed", "will/d", false, Some(2));
    drop(connect_with_will(&d, persistent("delayed", 600), will.clone()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_w, ack) = Wire::v5(&d, persistent("delayed", 600)).await;
    assert!(ack.session_present);
    watcher.quiet(Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_22_and_3_2_2_22_and_3_12_4_1_keep_alive() {
    let d = broker().await;
    let mut c = v5_connect("quiet");
    c.keep_alive = 1;
    let (mut w, ack) = Wire::v5(&d, c).await;
    assert!(
        ack.properties.is_none_or(|p| p.server_keep_alive.is_none()),
        "no Server Keep Alive: the client's value is the one used"
    );
    let started = Instant::now();
    disconnected(&mut w, DisconnectReasonCode::KeepAliveTimeout).await;
    assert!(started.elapsed() >= Duration::from_millis(1400));
    let mut c = v5_connect("pinging");
    c.keep_alive = 1;
    let (mut w, _) = Wire::v5(&d, c).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        ping(&mut w).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_24_and_3_1_2_25_deliveries_over_the_clients_maximum_are_dropped() {
    let d = broker().await;
    let c = with_props(v5_connect("small"), |p| p.max_packet_size = Some(128));
    let (mut w, _) = Wire::v5(&d, c).await;
    w.subscribe5(1, vec![filter5("size/#", QoS::AtLeastOnce)], None)
        .await;
    let big = "x".repeat(300);
    publish_from(&d, "p", publish("size/big", QoS::AtLeastOnce, 1, &big)).await;
    publish_from(&d, "p", publish("size/small", QoS::AtLeastOnce, 1, "ok")).await;
    let got = w.publish5().await;
    assert_eq!(
        &got.topic[..],
        b"size/small",
        "the large one was never sent"
    );
    w.send5(puback(got.pkid)).await;
    w.quiet(SHORT).await;
    let (_, stats) = d.api(hyper::Method::GET, "/api/v1/stats", None).await;
    assert_eq!(
        stats["dropped"]["too_large_for_client"], 1,
        "counted: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_26_and_3_1_2_27_and_3_3_2_8_and_3_3_2_11_outbound_topic_aliases() {
    let d = broker().await;
    let mut none = Wire::v5_clean(&d, "none").await;
    none.subscribe5(1, vec![filter5("al/#", QoS::AtMostOnce)], None)
        .await;
    let c = with_props(v5_connect("one"), |p| p.topic_alias_max = Some(1));
    let (mut one, _) = Wire::v5(&d, c).await;
    one.subscribe5(1, vec![filter5("al/#", QoS::AtMostOnce)], None)
        .await;
    for topic in ["al/a", "al/b", "al/a", "al/a", "al/b"] {
        publish_from(&d, "p", publish(topic, QoS::AtMostOnce, 0, topic)).await;
    }
    let mut named = Vec::new();
    for _ in 0..5 {
        let got = none.publish5().await;
        assert!(
            got.properties.is_none_or(|p| p.topic_alias.is_none()),
            "no alias without a maximum"
        );
        let got = one.publish5().await;
        let alias = got.properties.and_then(|p| p.topic_alias);
        assert!(
            alias.is_none_or(|a| a == 1),
            "never 0, never above the maximum: {alias:?}"
        );
        named.push((String::from_utf8(got.topic.to_vec()).unwrap(), alias));
    }
    assert_eq!(
        named,
        vec![
            ("al/a".into(), Some(1)),
            ("al/b".into(), None),
            (String::new(), Some(1)),
            (String::new(), Some(1)),
            ("al/b".into(), None)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_2_7_and_3_3_2_12_inbound_topic_aliases_live_with_their_connection() {
    let d = broker().await;
    let mut sub = Wire::v5_clean(&d, "sub").await;
    sub.subscribe5(1, vec![filter5("in/#", QoS::AtMostOnce)], None)
        .await;
    let (mut p, ack) = Wire::v5(&d, v5_connect("pub")).await;
    let max = ack
        .properties
        .and_then(|p| p.topic_alias_max)
        .expect("a Topic Alias Maximum");
    for (alias, topic) in [(1, "in/one"), (max, "in/last")] {
        let props = PublishProperties {
            topic_alias: Some(alias),
            ..Default::default()
        };
        p.send5(Packet::Publish(Publish::new(
            topic,
            QoS::AtMostOnce,
            "named",
            Some(props),
        )))
        .await;
        let props = PublishProperties {
            topic_alias: Some(alias),
            ..Default::default()
        };
        p.send5(Packet::Publish(Publish::new(
            "",
            QoS::AtMostOnce,
            "by alias",
            Some(props),
        )))
        .await;
    }
    let mut got: Vec<Bytes> = Vec::new();
    for _ in 0..4 {
        got.push(sub.publish5().await.topic);
    }
    assert_eq!(got, vec!["in/one", "in/one", "in/last", "in/last"]);
    drop(p);
    // A new connection starts with no aliases.
    let mut p = Wire::v5_clean(&d, "pub").await;
    let props = PublishProperties {
        topic_alias: Some(1),
        ..Default::default()
    };
    p.send5(Packet::Publish(Publish::new(
        "",
        QoS::AtMostOnce,
        "?",
        Some(props),
    )))
    .await;
    disconnected(&mut p, DisconnectReasonCode::ProtocolError).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_28_and_3_1_2_29_response_and_problem_information() {
    let d = broker_with_rules(r#"{ filter = "ro/#", access = "publish", allow = false }"#).await;
    let c = with_props(v5_connect("quiet"), |p| {
        p.request_problem_info = Some(0);
        p.request_response_info = Some(0);
    });
    let (mut w, ack) = Wire::v5(&d, c).await;
    assert!(
        ack.properties
            .is_none_or(|p| p.response_information.is_none())
    );
    w.send5(publish("ro/x", QoS::AtLeastOnce, 3, "no")).await;
    match w.recv5().await {
        Packet::PubAck(a) => {
            assert_eq!(a.reason, PubAckReason::NotAuthorized);
            assert!(
                a.properties.is_none_or(|p| p.reason_string.is_none()),
                "no reason string"
            );
        }
        other => panic!("{other:?}"),
    }
    // By default the reason is given.
    let mut w = Wire::v5_clean(&d, "curious").await;
    w.send5(publish("ro/x", QoS::AtLeastOnce, 3, "no")).await;
    assert!(
        matches!(w.recv5().await, Packet::PubAck(a) if a.properties.as_ref().is_some_and(|p| p.reason_string.is_some()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_2_2_19_and_3_4_2_2_and_3_5_2_2_and_3_14_2_3_reason_strings_yield_to_the_clients_maximum()
 {
    let d = broker_with_rules(r#"{ filter = "ro/#", access = "publish", allow = false }"#).await;
    // 32 bytes: the CONNACK fits, no reason string does.
    let c = with_props(v5_connect("tight"), |p| p.max_packet_size = Some(32));
    let (mut w, _) = Wire::v5(&d, c).await;
    w.send5(publish("ro/x", QoS::AtLeastOnce, 3, "no")).await;
    let frame = w
        .frame_within(ironhub_conformance::WAIT)
        .await
        .expect("PUBACK");
    assert_eq!(
        &frame[..],
        [0x40, 4, 0, 3, 0x87, 0],
        "PUBACK 0x87, without its reason string"
    );
    w.send5(publish("ro/y", QoS::ExactlyOnce, 4, "no")).await;
    let frame = w
        .frame_within(ironhub_conformance::WAIT)
        .await
        .expect("PUBREC");
    assert!(
        frame.len() <= 32 && frame[0] == 0x50 && frame[4] == 0x87,
        "{frame:?}"
    );
    // A DISCONNECT too: taken over, without the reason string that would not fit.
    let _second = Wire::v5_clean(&d, "tight").await;
    let frame = w
        .frame_within(ironhub_conformance::WAIT)
        .await
        .expect("DISCONNECT");
    assert!(
        frame.len() <= 32 && frame[0] == 0xE0 && frame[2] == 0x8E,
        "{frame:?}"
    );
    w.closed(0).await;
    // And a refusing CONNACK.
    let c = with_props(v5_connect("tight-auth"), |p| {
        p.max_packet_size = Some(32);
        p.authentication_method = Some("SCRAM-SHA-256".into());
    });
    let mut w = Wire::open(&d).await;
    w.send5(Packet::Connect(c, None, None)).await;
    let frame = w
        .frame_within(ironhub_conformance::WAIT)
        .await
        .expect("CONNACK");
    assert!(
        frame.len() <= 32 && frame[0] == 0x20 && frame[3] == 0x8C,
        "{frame:?}"
    );
    w.closed(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_3_5_to_3_1_3_8_and_3_2_2_16_client_identifiers() {
    let d = broker().await;
    Wire::v5_clean(&d, "abcdefghijklmnopqrstuvw").await;
    let (mut a, ack_a) = Wire::v5(&d, v5_connect("")).await;
    let (mut b, ack_b) = Wire::v5(&d, v5_connect("")).await;
    let id = |ack: rumqttc::v5::mqttbytes::v5::ConnAck| {
        ack.properties
            .and_then(|p| p.assigned_client_identifier)
            .expect("an assigned id")
    };
    let (id_a, id_b) = (id(ack_a), id(ack_b));
    assert_ne!(id_a, id_b);
    ping(&mut a).await;
    ping(&mut b).await;
    // A zero-length id cannot resume a session.
    let mut w = Wire::open(&d).await;
    let mut c = v5_connect("");
    c.clean_start = false;
    w.send5(Packet::Connect(c, None, None)).await;
    assert!(
        matches!(w.recv5().await, Packet::ConnAck(a) if a.code == ConnectReturnCode::ClientIdentifierNotValid)
    );
    w.closed(0).await;
    // The assigned id names the session like any other.
    let mut again = Wire::v5_clean(&d, &id_a).await;
    ping(&mut again).await;
    disconnected(&mut a, DisconnectReasonCode::SessionTakenOver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_4_3_and_3_14_2_2_and_3_14_4_1_and_3_14_4_2_a_takeover_disconnects_the_first() {
    let d = broker().await;
    let mut first = Wire::v5_clean(&d, "twin").await;
    let mut second = Wire::v5_clean(&d, "twin").await;
    disconnected(&mut first, DisconnectReasonCode::SessionTakenOver).await;
    ping(&mut second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_4_2_and_3_1_4_6_and_3_2_2_6_and_3_2_2_7_and_4_12_0_1_and_4_13_2_1_refused_connects()
 {
    let d = broker().await;
    let mut w = Wire::open(&d).await;
    let c = with_props(v5_connect("scram"), |p| {
        p.authentication_method = Some("SCRAM-SHA-1".into())
    });
    let mut bytes = bytes::BytesMut::new();
    Packet::Connect(c, None, None)
        .write(&mut bytes, None)
        .unwrap();
    retained("refused/after", "x")
        .write(&mut bytes, None)
        .unwrap();
    w.send_raw(&bytes).await;
    match w.recv5().await {
        Packet::ConnAck(a) => {
            assert_eq!(a.code, ConnectReturnCode::BadAuthenticationMethod);
            assert!(!a.session_present);
        }
        other => panic!("{other:?}"),
    }
    w.closed(0).await;
    let mut late = Wire::v5_clean(&d, "late").await;
    late.subscribe5(1, vec![filter5("refused/#", QoS::AtMostOnce)], None)
        .await;
    late.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_12_0_6_no_auth_exchange_is_started_by_the_server() {
    let d = broker().await;
    let mut w = Wire::v5_clean(&d, "auth").await;
    // AUTH with Reason Code 0x19 (re-authenticate) and no method: nothing to re-authenticate.
    w.send_raw(&[0xF0, 2, 0x19, 0]).await;
    disconnected(&mut w, DisconnectReasonCode::ProtocolError).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_2_0_1_and_3_2_2_1_and_3_2_2_8_connack_first_with_reserved_bits_clear() {
    let d = broker().await;
    let mut w = Wire::open(&d).await;
    w.send5(Packet::Connect(persistent("flags", 60), None, None))
        .await;
    let frame = w.frame_within(ironhub_conformance::WAIT).await.unwrap();
    assert_eq!(frame[0], 0x20, "CONNACK first");
    assert_eq!(frame[2] & 0xFE, 0, "reserved flag bits are 0");
    assert_eq!(frame[3], 0x00, "Success");
    ping(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_1_and_4_4_0_1_and_4_3_3_6_and_4_3_3_7_unacknowledged_messages_are_resent() {
    let d = broker().await;
    let (mut w, _) = Wire::v5(&d, persistent("resume", 600)).await;
    w.subscribe5(1, vec![filter5("re/#", QoS::ExactlyOnce)], None)
        .await;
    let expiring = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    let mut one = Publish::new("re/1", QoS::AtLeastOnce, "one", Some(expiring));
    one.pkid = 1;
    publish_from(&d, "p", Packet::Publish(one)).await;
    publish_from(&d, "p", publish("re/2", QoS::ExactlyOnce, 2, "two")).await;
    let one = w.publish5().await;
    let two = w.publish5().await;
    w.send5(Packet::PubRec(PubRec::new(two.pkid, None))).await;
    assert!(matches!(w.recv5().await, Packet::PubRel(r) if r.pkid == two.pkid));
    drop(w);
    // Past the first message's expiry: once sent, it is not expired on its way again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut w, ack) = Wire::v5(&d, persistent("resume", 600)).await;
    assert!(ack.session_present);
    let again = w.publish5().await;
    assert_eq!(
        (&again.topic[..], again.pkid, again.dup),
        (&b"re/1"[..], one.pkid, true)
    );
    assert!(
        matches!(w.recv5().await, Packet::PubRel(r) if r.pkid == two.pkid),
        "the PUBREL again, and not the PUBLISH it released"
    );
    w.send5(puback(again.pkid)).await;
    w.send5(Packet::PubComp(PubComp::new(two.pkid, None))).await;
    w.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_3_and_4_3_1_1_and_4_3_2_2_dup_is_the_servers_own() {
    let d = broker().await;
    let mut sub = Wire::v5_clean(&d, "sub").await;
    sub.subscribe5(1, vec![filter5("dup/#", QoS::AtLeastOnce)], None)
        .await;
    let mut p = Wire::v5_clean(&d, "pub").await;
    let mut first = Publish::new("dup/1", QoS::AtLeastOnce, "x", None);
    first.pkid = 5;
    first.dup = true;
    p.send5(Packet::Publish(first)).await;
    assert!(matches!(p.recv5().await, Packet::PubAck(_)));
    let got = sub.publish5().await;
    assert!(!got.dup);
    sub.send5(puback(got.pkid)).await;
    p.send5(publish("dup/0", QoS::AtMostOnce, 0, "zero")).await;
    let got = sub.publish5().await;
    assert!(!got.dup && got.qos == QoS::AtMostOnce);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_4_and_3_3_2_1_and_3_3_2_2_and_3_3_2_14_and_4_7_0_1_and_4_7_3_1_bad_publishes() {
    let d = broker().await;
    let mut body = field(b"a/b");
    body.extend_from_slice(&1u16.to_be_bytes());
    body.push(0);
    refused_with(
        &d,
        "qos3",
        &packet(0x36, &body),
        DisconnectReasonCode::MalformedPacket,
    )
    .await;
    // A Response Topic with a wildcard.
    let props = PublishProperties {
        response_topic: Some("resp/+".into()),
        ..Default::default()
    };
    let mut w = Wire::v5_clean(&d, "response-wildcard").await;
    w.send5(Packet::Publish(Publish::new(
        "a/b",
        QoS::AtMostOnce,
        "x",
        Some(props),
    )))
    .await;
    disconnected(&mut w, DisconnectReasonCode::ProtocolError).await;
    for (client, topic) in [("plus", &b"a/+"[..]), ("hash", b"a/#"), ("empty", b"")] {
        let mut w = Wire::v5_clean(&d, client).await;
        w.send_raw(&publish_raw(topic, b"x")).await;
        match w.recv5().await {
            Packet::Disconnect(dis) => assert!(
                matches!(
                    dis.reason_code,
                    DisconnectReasonCode::TopicNameInvalid | DisconnectReasonCode::ProtocolError
                ),
                "{client}: {dis:?}"
            ),
            other => panic!("{client}: {other:?}"),
        }
        w.closed(0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_5_to_3_3_1_13_and_3_8_4_4_retained_messages_and_retain_options() {
    let d = broker().await;
    let mut p = Wire::v5_clean(&d, "pub").await;
    p.send5(retained("r/a", "first")).await;
    p.recv5().await;
    p.send5(retained("r/a", "second")).await;
    p.recv5().await;
    p.send5(publish("r/a", QoS::AtLeastOnce, 2, "not retained"))
        .await;
    p.recv5().await;
    let sub_with = |rule: RetainForwardRule, rap: bool| {
        let mut f = filter5("r/#", QoS::AtLeastOnce);
        f.retain_forward_rule = rule;
        f.preserve_retain = rap;
        vec![f]
    };
    // Retain Handling 0: sent at every subscribe, with RETAIN 1.
    let mut zero = Wire::v5_clean(&d, "rh0").await;
    zero.subscribe5(
        1,
        sub_with(RetainForwardRule::OnEverySubscribe, false),
        None,
    )
    .await;
    let got = zero.publish5().await;
    assert_eq!((&got.payload[..], got.retain), (&b"second"[..], true));
    zero.send5(puback(got.pkid)).await;
    zero.subscribe5(
        2,
        sub_with(RetainForwardRule::OnEverySubscribe, false),
        None,
    )
    .await;
    let got = zero.publish5().await;
    assert!(got.retain, "sent again for the same subscription");
    zero.send5(puback(got.pkid)).await;
    // Retain Handling 1: only when the subscription is new.
    let mut one = Wire::v5_clean(&d, "rh1").await;
    one.subscribe5(1, sub_with(RetainForwardRule::OnNewSubscribe, true), None)
        .await;
    let got = one.publish5().await;
    one.send5(puback(got.pkid)).await;
    one.subscribe5(2, sub_with(RetainForwardRule::OnNewSubscribe, true), None)
        .await;
    one.quiet(SHORT).await;
    // Retain Handling 2: never.
    let mut two = Wire::v5_clean(&d, "rh2").await;
    two.subscribe5(1, sub_with(RetainForwardRule::Never, false), None)
        .await;
    two.quiet(SHORT).await;
    // Retain As Published: 1 keeps the flag on live messages, 0 clears it.
    p.send5(retained("r/live", "live")).await;
    p.recv5().await;
    let got = one.publish5().await;
    assert!(got.retain, "Retain As Published 1");
    one.send5(puback(got.pkid)).await;
    let got = zero.publish5().await;
    assert!(!got.retain, "Retain As Published 0");
    zero.send5(puback(got.pkid)).await;
    // An empty retained payload is forwarded and clears the topic.
    let mut clear = Publish::new("r/a", QoS::AtLeastOnce, Vec::new(), None);
    clear.retain = true;
    clear.pkid = 3;
    p.send5(Packet::Publish(clear)).await;
    p.recv5().await;
    assert!(zero.publish5().await.payload.is_empty());
    let mut late = Wire::v5_clean(&d, "late").await;
    late.subscribe5(1, vec![filter5("r/a", QoS::AtLeastOnce)], None)
        .await;
    late.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_4_2_to_3_3_4_5_overlapping_subscriptions_one_copy_with_every_identifier() {
    let d = broker().await;
    let mut sub = Wire::v5_clean(&d, "sub").await;
    for (pkid, filter, qos, id) in [
        (1, "o/#", QoS::AtMostOnce, 11),
        (2, "o/+/x", QoS::ExactlyOnce, 12),
        (3, "o/a/x", QoS::AtLeastOnce, 13),
    ] {
        let props = SubscribeProperties {
            id: Some(id),
            user_properties: Vec::new(),
        };
        sub.subscribe5(pkid, vec![filter5(filter, qos)], Some(props))
            .await;
    }
    sub.subscribe5(4, vec![filter5("o/a/+", QoS::AtMostOnce)], None)
        .await;
    publish_from(&d, "p", publish("o/a/x", QoS::ExactlyOnce, 1, "once")).await;
    // Read by hand: rumqttc 0.25 counts each Subscription Identifier's type byte twice and
    // drops the last of several.
    let frame = sub.frame_within(ironhub_conformance::WAIT).await.unwrap();
    assert_eq!(frame[0] & 0x06, 0x04, "the highest QoS of the matches: 2");
    let body = &frame[2..];
    let topic_end = 2 + usize::from(u16::from_be_bytes([body[0], body[1]]));
    let pkid = u16::from_be_bytes([body[topic_end], body[topic_end + 1]]);
    let props_len = usize::from(body[topic_end + 2]);
    let props = &body[topic_end + 3..topic_end + 3 + props_len];
    let mut ids: Vec<u8> = props
        .chunks(2)
        .map(|p| {
            assert_eq!(p[0], 0x0B, "only Subscription Identifiers: {props:?}");
            p[1]
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        vec![11, 12, 13],
        "every identifier of the matching subscriptions"
    );
    sub.send5(Packet::PubRec(PubRec::new(pkid, None))).await;
    assert!(matches!(sub.recv5().await, Packet::PubRel(_)));
    sub.send5(Packet::PubComp(PubComp::new(pkid, None))).await;
    sub.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_4_9_and_3_3_4_10_and_4_9_0_1_to_4_9_0_3_receive_maximum_of_the_client() {
    let d = broker().await;
    let c = with_props(v5_connect("slow"), |p| p.receive_maximum = Some(2));
    let (mut w, _) = Wire::v5(&d, c).await;
    w.subscribe5(1, vec![filter5("rm/#", QoS::AtLeastOnce)], None)
        .await;
    for i in 1..=5u16 {
        publish_from(
            &d,
            "p",
            publish("rm/x", QoS::AtLeastOnce, i, &i.to_string()),
        )
        .await;
    }
    let first = w.publish5().await;
    let second = w.publish5().await;
    w.quiet(SHORT).await;
    ping(&mut w).await;
    w.send5(puback(first.pkid)).await;
    let third = w.publish5().await;
    assert_eq!(&third.payload[..], b"3");
    w.quiet(SHORT).await;
    for got in [second, third] {
        w.send5(puback(got.pkid)).await;
    }
    for expected in [b"4", b"5"] {
        let got = w.publish5().await;
        assert_eq!(&got.payload[..], expected);
        w.send5(puback(got.pkid)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_8_3_3_and_3_8_3_4_and_3_8_3_5_subscription_options() {
    let d = broker().await;
    let mut a = Wire::v5_clean(&d, "a").await;
    let mut b = Wire::v5_clean(&d, "b").await;
    for w in [&mut a, &mut b] {
        let mut f = filter5("nl/#", QoS::AtMostOnce);
        f.nolocal = true;
        w.subscribe5(1, vec![f], None).await;
    }
    a.send5(publish("nl/x", QoS::AtMostOnce, 0, "from a")).await;
    assert_eq!(&b.publish5().await.payload[..], b"from a", "others get it");
    a.quiet(SHORT).await;
    // No Local on a shared subscription is a protocol error.
    let mut f = filter5("$share/g/nl/#", QoS::AtMostOnce);
    f.nolocal = true;
    let mut sub = rumqttc::v5::mqttbytes::v5::Subscribe::new(f, None);
    sub.pkid = 2;
    b.send5(Packet::Subscribe(sub)).await;
    disconnected(&mut b, DisconnectReasonCode::ProtocolError).await;
    // Reserved option bits: malformed.
    let mut raw = 1u16.to_be_bytes().to_vec();
    raw.push(0);
    raw.extend(field(b"a/b"));
    raw.push(0x40);
    refused_with(
        &d,
        "reserved",
        &packet(0x82, &raw),
        DisconnectReasonCode::MalformedPacket,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_8_4_1_to_3_8_4_8_and_3_9_3_1_and_3_9_3_2_suback() {
    let d =
        broker_with_rules(r#"{ filter = "secret/#", access = "subscribe", allow = false }"#).await;
    let mut p = Wire::v5_clean(&d, "pub").await;
    p.send5(retained("s/r", "kept")).await;
    p.recv5().await;
    let mut w = Wire::v5_clean(&d, "sub").await;
    let ack = w
        .subscribe5(
            7,
            vec![
                filter5("s/#", QoS::AtLeastOnce),
                filter5("secret/x", QoS::AtMostOnce),
                filter5("a/#/b", QoS::AtMostOnce),
                filter5("t/#", QoS::ExactlyOnce),
            ],
            None,
        )
        .await;
    assert_eq!(
        ack.return_codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::NotAuthorized,
            SubscribeReasonCode::TopicFilterInvalid,
            SubscribeReasonCode::Success(QoS::ExactlyOnce),
        ]
    );
    let got = w.publish5().await;
    w.send5(puback(got.pkid)).await;
    // The same filter replaces the subscription, retained messages are sent again.
    let ack = w
        .subscribe5(8, vec![filter5("s/#", QoS::AtMostOnce)], None)
        .await;
    assert_eq!(
        ack.return_codes,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    let again = w.publish5().await;
    assert_eq!((again.qos, again.retain), (QoS::AtMostOnce, true));
    p.send5(publish("s/live", QoS::AtLeastOnce, 2, "one copy"))
        .await;
    p.recv5().await;
    let live = w.publish5().await;
    assert_eq!(
        (&live.topic[..], live.qos),
        (&b"s/live"[..], QoS::AtMostOnce)
    );
    w.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_8_3_2_and_3_10_3_2_and_3_10_4_1_to_3_10_4_6_and_3_11_3_1_and_3_11_3_2_unsubscribe()
{
    let d = broker().await;
    let mut w = Wire::v5_clean(&d, "sub").await;
    w.subscribe5(
        1,
        vec![
            filter5("u/+", QoS::AtMostOnce),
            filter5("v/#", QoS::AtMostOnce),
        ],
        None,
    )
    .await;
    let unsub = Unsubscribe {
        pkid: 3,
        filters: vec!["u/a".into(), "v/#".into(), "u/+".into()],
        properties: None,
    };
    w.send5(Packet::Unsubscribe(unsub)).await;
    match w.recv5().await {
        Packet::UnsubAck(a) => {
            assert_eq!(a.pkid, 3);
            assert_eq!(
                a.reasons,
                vec![
                    UnsubAckReason::NoSubscriptionExisted,
                    UnsubAckReason::Success,
                    UnsubAckReason::Success
                ],
                "one code per filter, in order; filters compared as strings"
            );
        }
        other => panic!("{other:?}"),
    }
    publish_from(&d, "p", publish("u/a", QoS::AtMostOnce, 0, "gone")).await;
    w.quiet(SHORT).await;
    let mut raw = 5u16.to_be_bytes().to_vec();
    raw.push(0);
    refused_with(
        &d,
        "empty",
        &packet(0xA2, &raw),
        DisconnectReasonCode::ProtocolError,
    )
    .await;
    refused_with(
        &d,
        "empty-sub",
        &packet(0x82, &raw),
        DisconnectReasonCode::ProtocolError,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_10_4_3_and_4_3_3_1_to_4_3_3_5_the_server_sends_qos_2_in_two_steps() {
    let d = broker().await;
    let mut w = Wire::v5_clean(&d, "sub").await;
    w.subscribe5(1, vec![filter5("c/#", QoS::ExactlyOnce)], None)
        .await;
    publish_from(&d, "p", publish("c/1", QoS::ExactlyOnce, 1, "x")).await;
    let got = w.publish5().await;
    assert!(got.qos == QoS::ExactlyOnce && !got.dup && got.pkid != 0);
    // Unsubscribing does not stop a delivery under way.
    let unsub = Unsubscribe {
        pkid: 2,
        filters: vec!["c/#".into()],
        properties: None,
    };
    w.send5(Packet::Unsubscribe(unsub)).await;
    assert!(matches!(w.recv5().await, Packet::UnsubAck(_)));
    w.send5(Packet::PubRec(PubRec::new(got.pkid, None))).await;
    assert!(matches!(w.recv5().await, Packet::PubRel(r) if r.pkid == got.pkid));
    w.send5(Packet::PubComp(PubComp::new(got.pkid, None))).await;
    w.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_4_1_and_4_3_2_5_and_4_3_3_8_to_4_3_3_13_receiver_acknowledgements() {
    let d = broker_with_rules(r#"{ filter = "ro/#", access = "publish", allow = false }"#).await;
    let mut sub = Wire::v5_clean(&d, "sub").await;
    sub.subscribe5(1, vec![filter5("x/#", QoS::AtMostOnce)], None)
        .await;
    let mut p = Wire::v5_clean(&d, "pub").await;
    for payload in ["first", "second"] {
        p.send5(publish("x/1", QoS::AtLeastOnce, 9, payload)).await;
        assert!(matches!(p.recv5().await, Packet::PubAck(a) if a.pkid == 9));
        assert_eq!(&sub.publish5().await.payload[..], payload.as_bytes());
    }
    let expiring = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    let mut first = Publish::new("x/2", QoS::ExactlyOnce, "once", Some(expiring));
    first.pkid = 10;
    p.send5(Packet::Publish(first)).await;
    assert!(matches!(p.recv5().await, Packet::PubRec(r) if r.pkid == 10));
    // Its expiry passes before PUBREL: the acknowledgements go on all the same.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut resent = Publish::new("x/2", QoS::ExactlyOnce, "once", None);
    resent.pkid = 10;
    resent.dup = true;
    p.send5(Packet::Publish(resent)).await;
    assert!(matches!(p.recv5().await, Packet::PubRec(r) if r.pkid == 10));
    p.send5(Packet::PubRel(PubRel::new(10, None))).await;
    assert!(matches!(p.recv5().await, Packet::PubComp(c) if c.pkid == 10));
    assert_eq!(&sub.publish5().await.payload[..], b"once");
    sub.quiet(SHORT).await;
    // A refused QoS 2 message (PUBREC 0x87) leaves its id free: the next PUBLISH with it is new.
    p.send5(publish("ro/x", QoS::ExactlyOnce, 11, "refused"))
        .await;
    assert!(
        matches!(p.recv5().await, Packet::PubRec(r) if r.pkid == 11 && r.reason == PubRecReason::NotAuthorized)
    );
    p.send5(publish("x/3", QoS::ExactlyOnce, 11, "new")).await;
    assert!(
        matches!(p.recv5().await, Packet::PubRec(r) if r.pkid == 11 && r.reason == PubRecReason::Success)
    );
    p.send5(Packet::PubRel(PubRel::new(11, None))).await;
    assert!(matches!(p.recv5().await, Packet::PubComp(_)));
    assert_eq!(&sub.publish5().await.payload[..], b"new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_4_0_2_and_4_3_3_4_a_refusing_acknowledgement_ends_the_delivery() {
    let d = broker().await;
    let (mut w, _) = Wire::v5(&d, persistent("picky", 600)).await;
    w.subscribe5(1, vec![filter5("pk/#", QoS::ExactlyOnce)], None)
        .await;
    publish_from(&d, "p", publish("pk/1", QoS::AtLeastOnce, 1, "a")).await;
    publish_from(&d, "p", publish("pk/2", QoS::ExactlyOnce, 1, "b")).await;
    let one = w.publish5().await;
    let two = w.publish5().await;
    let mut refuse = PubAck::new(one.pkid, None);
    refuse.reason = PubAckReason::UnspecifiedError;
    w.send5(Packet::PubAck(refuse)).await;
    let mut refuse = PubRec::new(two.pkid, None);
    refuse.reason = PubRecReason::UnspecifiedError;
    w.send5(Packet::PubRec(refuse)).await;
    w.quiet(SHORT).await;
    drop(w);
    let (mut w, ack) = Wire::v5(&d, persistent("picky", 600)).await;
    assert!(ack.session_present);
    w.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_5_0_1_and_4_6_0_5_and_4_6_0_6_ordered_topics() {
    let d = broker().await;
    let mut sub = Wire::v5_clean(&d, "sub").await;
    sub.subscribe5(1, vec![filter5("ord/#", QoS::AtLeastOnce)], None)
        .await;
    let mut p = Wire::v5_clean(&d, "pub").await;
    for i in 1..=30u16 {
        p.send5(publish("ord/a", QoS::AtLeastOnce, i, &i.to_string()))
            .await;
    }
    for i in 1..=30u16 {
        assert!(matches!(p.recv5().await, Packet::PubAck(a) if a.pkid == i));
    }
    for i in 1..=30u16 {
        let got = sub.publish5().await;
        assert_eq!(&got.payload[..], i.to_string().as_bytes());
        sub.send5(puback(got.pkid)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_7_2_1_leading_wildcards_do_not_match_dollar_topics() {
    let d = broker().await;
    let mut wide = Wire::v5_clean(&d, "wide").await;
    wide.subscribe5(
        1,
        vec![
            filter5("#", QoS::AtMostOnce),
            filter5("+/x", QoS::AtMostOnce),
        ],
        None,
    )
    .await;
    let mut exact = Wire::v5_clean(&d, "exact").await;
    exact
        .subscribe5(1, vec![filter5("$app/#", QoS::AtMostOnce)], None)
        .await;
    publish_from(&d, "p", publish("$app/x", QoS::AtMostOnce, 0, "dollar")).await;
    assert_eq!(&exact.publish5().await.topic[..], b"$app/x");
    wide.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_8_2_1_to_4_8_2_5_shared_subscriptions() {
    let d = broker().await;
    let mut probe = Wire::v5_clean(&d, "probe").await;
    let ack = probe
        .subscribe5(
            1,
            ["$share/g", "$share//x", "$share/a+b/x", "$share/a#/x"]
                .map(|f| filter5(f, QoS::AtMostOnce))
                .to_vec(),
            None,
        )
        .await;
    assert!(
        ack.return_codes
            .iter()
            .all(|c| *c == SubscribeReasonCode::TopicFilterInvalid),
        "{:?}",
        ack.return_codes
    );
    let (mut a, _) = Wire::v5(&d, persistent("member-a", 600)).await;
    let (mut b, _) = Wire::v5(&d, persistent("member-b", 600)).await;
    a.subscribe5(1, vec![filter5("$share/g/job/#", QoS::ExactlyOnce)], None)
        .await;
    b.subscribe5(1, vec![filter5("$share/g/job/#", QoS::AtLeastOnce)], None)
        .await;
    let mut got = Vec::new();
    for i in 0..4u16 {
        publish_from(&d, "p", publish("job/x", QoS::ExactlyOnce, i + 1, "job")).await;
    }
    // Each message goes to one member, at that member's granted QoS.
    for _ in 0..4 {
        tokio::select! {
            p = a.publish5() => got.push(("a", p)),
            p = b.publish5() => got.push(("b", p)),
        }
    }
    for (who, p) in &got {
        let expected = if *who == "a" {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        assert_eq!(p.qos, expected, "{who}");
    }
    a.quiet(SHORT).await;
    b.quiet(Duration::from_millis(10)).await;
    // A QoS 2 delivery to a member whose connection breaks is completed with that member.
    let (_, pending) = got
        .iter()
        .find(|(w, _)| *w == "a")
        .expect("members take turns: a got some");
    let pkid = pending.pkid;
    for (who, p) in &got {
        if *who == "b" {
            b.send5(puback(p.pkid)).await;
        } else if p.pkid != pkid {
            a.send5(Packet::PubRec(PubRec::new(p.pkid, None))).await;
            assert!(matches!(a.recv5().await, Packet::PubRel(_)));
            a.send5(Packet::PubComp(PubComp::new(p.pkid, None))).await;
        }
    }
    drop(a);
    b.quiet(SHORT).await;
    let (mut a, _) = Wire::v5(&d, persistent("member-a", 600)).await;
    let again = a.publish5().await;
    assert_eq!((again.pkid, again.dup), (pkid, true));
    // A QoS 2 message whose member's session ends with its connection goes to no other member.
    let mut x = Wire::v5_clean(&d, "member-x").await;
    let mut y = Wire::v5_clean(&d, "member-y").await;
    for w in [&mut x, &mut y] {
        w.subscribe5(1, vec![filter5("$share/h/task/#", QoS::ExactlyOnce)], None)
            .await;
    }
    publish_from(&d, "p", publish("task/1", QoS::ExactlyOnce, 1, "once")).await;
    let x_has_it = tokio::select! {
        _ = x.publish5() => true,
        _ = y.publish5() => false,
    };
    let (holder, mut other) = if x_has_it { (x, y) } else { (y, x) };
    drop(holder);
    other.quiet(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_2_0_1_and_4_13_2_1_a_refusal_closes_the_connection() {
    let d = broker().await;
    let mut w = Wire::open(&d).await;
    w.send_raw(&connect_raw(5, 0x02, &[b"ok"])).await;
    assert!(matches!(w.recv5().await, Packet::ConnAck(_)));
    // A packet only a server sends.
    w.send_raw(&[0x20, 3, 0, 0, 0]).await;
    disconnected(&mut w, DisconnectReasonCode::ProtocolError).await;
    assert_eq!(
        w.try_recv5(Duration::from_millis(10)).await.unwrap_err(),
        Ended::Closed
    );
}
