//! MQTT 3.1.1, statement by statement: each test is named after the normative statements
//! (`[MQTT-x.x.x-y]`) it shows and drives the open broker with packets written by rumqttc's
//! codec or, where a library cannot go, by hand. docs/protocols/mqtt-conformance.md lists every
//! statement with the test that shows it; `mqtt_conformance_table.rs` checks the two agree.

use std::time::Duration;

use ironhub_conformance::Deployment;
use ironhub_conformance::raw::{field, packet};
use ironhub_conformance::wire::{Ended, Wire};
use rumqttc::QoS;
use rumqttc::mqttbytes::v4::{
    self, LastWill, Packet, PubAck, PubComp, PubRec, PubRel, Publish, Unsubscribe,
};

/// An open broker that accepts any keep-alive, as a general-purpose broker does.
async fn broker() -> Deployment {
    let d = Deployment::open_broker("keepalive_min_secs = 0\n").await;
    d.unlimit_sandbox().await;
    d
}

/// A CONNECT written by hand: protocol name and level, flags, keep-alive, payload fields.
fn connect_raw(name: &[u8], level: u8, flags: u8, payload: &[&[u8]]) -> Vec<u8> {
    let mut body = field(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    for f in payload {
        body.extend(field(f));
    }
    packet(0x10, &body)
}

/// A QoS 0 PUBLISH whose topic is given as bytes (possibly not UTF-8).
fn publish_raw(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = field(topic);
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

fn clean(client_id: &str) -> v4::Connect {
    let mut c = v4::Connect::new(client_id);
    c.keep_alive = 60;
    c
}

fn persistent(client_id: &str) -> v4::Connect {
    let mut c = clean(client_id);
    c.clean_session = false;
    c
}

fn publish(topic: &str, qos: QoS, pkid: u16, payload: &str) -> Packet {
    let mut p = Publish::new(topic, qos, payload.as_bytes().to_vec());
    p.pkid = pkid;
    Packet::Publish(p)
}

fn retained(topic: &str, payload: &str) -> Packet {
    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec());
    p.pkid = 1;
    p.retain = true;
    Packet::Publish(p)
}

/// Publishes from a connection of its own and completes the packet's QoS flow; a PINGREQ
/// after it makes sure a QoS 0 message was read before this returns.
async fn publish_from(d: &Deployment, client_id: &str, packet: Packet) {
    let mut w = Wire::v3_clean(d, client_id).await;
    w.send3(packet).await;
    w.send3(Packet::PingReq).await;
    loop {
        match w.recv3().await {
            Packet::PingResp => return,
            Packet::PubRec(rec) => w.send3(Packet::PubRel(PubRel::new(rec.pkid))).await,
            Packet::PubAck(_) | Packet::PubComp(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Sends `bytes` after a CONNECT and expects the connection closed (the CONNACK may come first).
async fn closes_after(d: &Deployment, client_id: &str, bytes: &[u8]) {
    let mut w = Wire::v3_clean(d, client_id).await;
    w.send_raw(bytes).await;
    w.closed(0).await;
}

const SHORT: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_1_5_3_1_and_1_5_3_2_ill_formed_utf8_and_nulls_close_the_connection() {
    let d = broker().await;
    closes_after(&d, "bad-utf8", &publish_raw(b"a/\xff\xfe", b"x")).await;
    closes_after(&d, "surrogate", &publish_raw(b"a/\xed\xa0\x80", b"x")).await;
    closes_after(&d, "overlong", &publish_raw(b"a/\xc0\xaf", b"x")).await;
    closes_after(&d, "null-topic", &publish_raw(b"a/\x00b", b"x")).await;
    let mut sub = 1u16.to_be_bytes().to_vec();
    sub.extend(field(b"a/\x00/#"));
    sub.push(0);
    closes_after(&d, "null-filter", &packet(0x82, &sub)).await;
    let mut unsub = 1u16.to_be_bytes().to_vec();
    unsub.extend(field(b"a/\xff"));
    closes_after(&d, "utf8-unsubscribe", &packet(0xA2, &unsub)).await;
    // Client id, will topic and user name not UTF-8: the CONNECT is refused without CONNACK.
    for (flags, fields) in [
        (0x02, &[&b"id\xff"[..]][..]),
        (0x06, &[b"w", b"will/\xff", b"m"]),
        (0x82, &[b"u", b"user\xff"]),
    ] {
        let mut w = Wire::open(&d).await;
        w.send_raw(&connect_raw(b"MQTT", 4, flags, fields)).await;
        assert!(w.closed(0).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_1_5_3_3_and_4_7_3_4_topics_are_matched_byte_for_byte() {
    let d = broker().await;
    let mut sub = Wire::v3_clean(&d, "exact").await;
    let bom = "\u{feff}room/a";
    let codes = sub
        .subscribe3(
            1,
            &[
                (bom, QoS::AtMostOnce),
                ("Room/A", QoS::AtMostOnce),
                ("room//a", QoS::AtMostOnce),
            ],
        )
        .await;
    assert_eq!(codes, vec![0, 0, 0]);
    let mut p = Wire::v3_clean(&d, "pub").await;
    for topic in ["room/a", "room/a/", bom, "Room/A", "room//a"] {
        p.send3(publish(topic, QoS::AtMostOnce, 0, topic)).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(sub.publish3().await.topic);
    }
    assert_eq!(
        got,
        vec![bom.to_owned(), "Room/A".to_owned(), "room//a".to_owned()],
        "the BOM is kept, case and empty levels matter; room/a and room/a/ match none"
    );
    sub.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_2_2_2_2_and_3_6_1_1_and_3_8_1_1_and_3_10_1_1_and_3_14_1_1_reserved_flags_close() {
    let d = broker().await;
    let mut sub = 1u16.to_be_bytes().to_vec();
    sub.extend(field(b"a/b"));
    sub.push(0);
    closes_after(&d, "subscribe-flags", &packet(0x80, &sub)).await;
    let mut unsub = 1u16.to_be_bytes().to_vec();
    unsub.extend(field(b"a/b"));
    closes_after(&d, "unsubscribe-flags", &packet(0xA0, &unsub)).await;
    closes_after(&d, "pubrel-flags", &packet(0x60, &1u16.to_be_bytes())).await;
    closes_after(&d, "pingreq-flags", &[0xC1, 0]).await;

    // A DISCONNECT with reserved bits is not a normal one: the will goes out.
    let mut watcher = Wire::v3_clean(&d, "watcher").await;
    watcher.subscribe3(1, &[("will/#", QoS::AtMostOnce)]).await;
    let mut c = clean("disconnect-flags");
    c.last_will = Some(LastWill::new("will/flags", "gone", QoS::AtMostOnce, false));
    let (mut w, _) = Wire::v3(&d, c).await;
    w.send_raw(&[0xE1, 0]).await;
    w.closed(0).await;
    assert_eq!(watcher.publish3().await.topic, "will/flags");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_2_3_1_1_and_2_3_1_5_packet_identifiers_zero_or_missing_close() {
    let d = broker().await;
    let mut body = field(b"a/b");
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(b"x");
    closes_after(&d, "qos1-id-0", &packet(0x32, &body)).await;
    let mut sub = 0u16.to_be_bytes().to_vec();
    sub.extend(field(b"a/b"));
    sub.push(0);
    closes_after(&d, "subscribe-id-0", &packet(0x82, &sub)).await;
    let mut unsub = 0u16.to_be_bytes().to_vec();
    unsub.extend(field(b"a/b"));
    closes_after(&d, "unsubscribe-id-0", &packet(0xA2, &unsub)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_2_3_1_4_and_2_3_1_6_and_2_3_1_7_and_4_3_2_1_identifiers_are_echoed_and_unique() {
    let d = broker().await;
    let mut sub = Wire::v3_clean(&d, "sub").await;
    assert_eq!(
        sub.subscribe3(4242, &[("ids/#", QoS::AtLeastOnce)]).await,
        vec![1]
    );
    let mut p = Wire::v3_clean(&d, "pub").await;
    p.send3(publish("ids/1", QoS::AtLeastOnce, 777, "a")).await;
    assert_eq!(p.recv3().await, Packet::PubAck(PubAck::new(777)));
    p.send3(publish("ids/2", QoS::ExactlyOnce, 778, "b")).await;
    assert_eq!(p.recv3().await, Packet::PubRec(PubRec::new(778)));
    p.send3(Packet::PubRel(PubRel::new(778))).await;
    assert_eq!(p.recv3().await, Packet::PubComp(PubComp::new(778)));
    // Two unacknowledged deliveries: non-zero, different identifiers, DUP 0.
    let first = sub.publish3().await;
    let second = sub.publish3().await;
    assert!(first.pkid != 0 && second.pkid != 0 && first.pkid != second.pkid);
    assert!(!first.dup && !second.dup && first.qos == QoS::AtLeastOnce);
    sub.send3(Packet::PubAck(PubAck::new(first.pkid))).await;
    sub.send3(Packet::PubAck(PubAck::new(second.pkid))).await;
    let unsub = Unsubscribe {
        pkid: 9,
        topics: vec!["ids/#".into()],
    };
    sub.send3(Packet::Unsubscribe(unsub)).await;
    assert!(matches!(sub.recv3().await, Packet::UnsubAck(a) if a.pkid == 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_0_2_and_4_8_0_1_a_second_connect_or_a_server_packet_closes() {
    let d = broker().await;
    let mut w = Wire::v3_clean(&d, "twice").await;
    w.send3(Packet::Connect(clean("twice"))).await;
    w.closed(0).await;
    // A CONNACK is the server's to send.
    closes_after(&d, "connack", &[0x20, 2, 0, 0]).await;
    // The first packet must be CONNECT.
    let mut w = Wire::open(&d).await;
    w.send3(Packet::PingReq).await;
    w.closed(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_1_and_3_1_2_2_and_3_2_2_4_and_3_2_2_5_protocol_name_and_level() {
    let d = broker().await;
    let mut w = Wire::open(&d).await;
    w.send_raw(&connect_raw(b"MQTX", 4, 0x02, &[b"name"])).await;
    w.closed(0).await;
    let mut w = Wire::open(&d).await;
    w.send_raw(&connect_raw(b"MQTT", 9, 0x02, &[b"level"]))
        .await;
    let frames = w.closed(1).await;
    assert_eq!(
        frames.iter().map(|f| &f[..]).collect::<Vec<_>>(),
        vec![&[0x20, 2, 0, 1][..]],
        "CONNACK 0x01 with Session Present 0, then closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_3_and_3_1_4_1_and_3_2_2_6_an_invalid_connect_is_closed_without_connack() {
    let d = broker().await;
    let cases: [(&str, Vec<u8>); 8] = [
        ("reserved flag", connect_raw(b"MQTT", 4, 0x03, &[b"r"])),
        (
            "will qos 3",
            connect_raw(b"MQTT", 4, 0x1E, &[b"w", b"t", b"m"]),
        ),
        (
            "will qos without will",
            connect_raw(b"MQTT", 4, 0x0A, &[b"q"]),
        ),
        (
            "will retain without will",
            connect_raw(b"MQTT", 4, 0x22, &[b"q"]),
        ),
        (
            "will flag without topic",
            connect_raw(b"MQTT", 4, 0x06, &[b"w"]),
        ),
        (
            "password without user name",
            connect_raw(b"MQTT", 4, 0x42, &[b"p", b"pw"]),
        ),
        (
            "user name flag without a name",
            connect_raw(b"MQTT", 4, 0x82, &[b"u"]),
        ),
        (
            "a user name without its flag",
            connect_raw(b"MQTT", 4, 0x02, &[b"u", b"name"]),
        ),
    ];
    for (case, bytes) in cases {
        let mut w = Wire::open(&d).await;
        w.send_raw(&bytes).await;
        assert!(w.closed(0).await.is_empty(), "{case}: no CONNACK");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_4_and_3_1_2_5_and_3_2_2_2_and_3_2_2_3_and_4_1_0_1_a_session_outlives_its_connection()
 {
    let d = broker().await;
    let (mut w, ack) = Wire::v3(&d, persistent("keeper")).await;
    assert!(
        !ack.session_present,
        "no session was stored: Session Present 0"
    );
    w.subscribe3(1, &[("kept/#", QoS::AtLeastOnce)]).await;
    w.send3(Packet::Disconnect).await;
    w.closed(0).await;
    publish_from(&d, "p1", publish("kept/1", QoS::AtLeastOnce, 1, "one")).await;
    publish_from(&d, "p2", publish("kept/0", QoS::AtMostOnce, 0, "zero")).await;
    let (mut w, ack) = Wire::v3(&d, persistent("keeper")).await;
    assert!(ack.session_present, "the stored session: Session Present 1");
    let got = w.publish3().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("kept/1", &b"one"[..])
    );
    w.send3(Packet::PubAck(PubAck::new(got.pkid))).await;
    w.quiet(SHORT).await;
    publish_from(&d, "p3", publish("kept/2", QoS::AtLeastOnce, 1, "live")).await;
    assert_eq!(
        w.publish3().await.topic,
        "kept/2",
        "the subscription came back with the session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_6_and_3_2_2_1_a_clean_session_discards_the_stored_one() {
    let d = broker().await;
    let (mut w, _) = Wire::v3(&d, persistent("fresh")).await;
    w.subscribe3(1, &[("fresh/#", QoS::AtLeastOnce)]).await;
    w.send3(Packet::Disconnect).await;
    w.closed(0).await;
    publish_from(&d, "p", publish("fresh/1", QoS::AtLeastOnce, 1, "queued")).await;
    let (mut w, ack) = Wire::v3(&d, clean("fresh")).await;
    assert!(!ack.session_present, "clean session: Session Present 0");
    w.quiet(SHORT).await;
    publish_from(&d, "p", publish("fresh/2", QoS::AtLeastOnce, 1, "live")).await;
    w.quiet(SHORT).await;
    w.send3(Packet::Disconnect).await;
    // Nor does the clean session's state outlive it.
    let (_w, ack) = Wire::v3(&d, persistent("fresh")).await;
    assert!(!ack.session_present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_7_retained_messages_outlive_sessions() {
    let d = broker().await;
    let mut w = Wire::v3_clean(&d, "owner").await;
    w.send3(retained("ret/kept", "stays")).await;
    assert!(matches!(w.recv3().await, Packet::PubAck(_)));
    w.send3(Packet::Disconnect).await;
    w.closed(0).await;
    let mut late = Wire::v3_clean(&d, "late").await;
    late.subscribe3(1, &[("ret/#", QoS::AtLeastOnce)]).await;
    let got = late.publish3().await;
    assert_eq!((got.topic.as_str(), got.retain), ("ret/kept", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_8_and_3_1_2_10_and_3_1_2_12_and_3_1_2_16_and_3_1_2_17_and_3_14_4_3_wills() {
    let d = broker().await;
    let mut watcher = Wire::v3_clean(&d, "watcher").await;
    watcher.subscribe3(1, &[("will/#", QoS::AtLeastOnce)]).await;
    let with_will = |id: &str, topic: &str, retain: bool| {
        let mut c = clean(id);
        c.last_will = Some(LastWill::new(topic, "gone", QoS::AtLeastOnce, retain));
        c
    };
    // Closed without DISCONNECT: the will goes out, retained as asked.
    let (w, _) = Wire::v3(&d, with_will("a", "will/a", true)).await;
    drop(w);
    let got = watcher.publish3().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("will/a", &b"gone"[..])
    );
    assert!(
        !got.retain,
        "an established subscription gets RETAIN 0 (MQTT-3.3.1-9)"
    );
    watcher.send3(Packet::PubAck(PubAck::new(got.pkid))).await;
    let mut late = Wire::v3_clean(&d, "late").await;
    late.subscribe3(1, &[("will/a", QoS::AtMostOnce)]).await;
    assert!(
        late.publish3().await.retain,
        "a retained will (MQTT-3.1.2-17)"
    );
    // Not retained when Will Retain is 0.
    let (w, _) = Wire::v3(&d, with_will("b", "will/b", false)).await;
    drop(w);
    let got = watcher.publish3().await;
    assert_eq!(got.topic, "will/b");
    watcher.send3(Packet::PubAck(PubAck::new(got.pkid))).await;
    let mut late = Wire::v3_clean(&d, "late2").await;
    late.subscribe3(1, &[("will/b", QoS::AtMostOnce)]).await;
    late.quiet(SHORT).await;
    // A DISCONNECT discards the will; no will flag, no will.
    let (mut w, _) = Wire::v3(&d, with_will("c", "will/c", false)).await;
    w.send3(Packet::Disconnect).await;
    w.closed(0).await;
    let (w, _) = Wire::v3(&d, clean("d")).await;
    drop(w);
    watcher.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_2_24_and_3_12_4_1_silence_past_one_and_a_half_keep_alives_closes() {
    let d = broker().await;
    let mut c = clean("quiet");
    c.keep_alive = 1;
    let (mut w, _) = Wire::v3(&d, c).await;
    let started = std::time::Instant::now();
    w.closed(0).await;
    assert!(started.elapsed() >= Duration::from_millis(1400));
    // A PINGREQ in time keeps it open, and is answered (MQTT-3.12.4-1).
    let mut c = clean("pinging");
    c.keep_alive = 1;
    let (mut w, _) = Wire::v3(&d, c).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        w.send3(Packet::PingReq).await;
        assert_eq!(w.recv3().await, Packet::PingResp);
    }
    // Keep-alive 0 turns the mechanism off.
    let mut c = clean("never");
    c.keep_alive = 0;
    let (mut w, _) = Wire::v3(&d, c).await;
    w.quiet(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_3_5_and_3_1_3_6_and_3_1_3_8_and_3_1_3_9_client_identifiers() {
    let d = broker().await;
    Wire::v3_clean(&d, "abcdefghijklmnopqrstuvw").await;
    Wire::v3_clean(&d, "0123456789ABCDEFGHIJKLM").await;
    // Zero-byte ids with a clean session: each is a client of its own.
    let mut a = Wire::v3_clean(&d, "").await;
    let mut b = Wire::v3_clean(&d, "").await;
    a.send3(Packet::PingReq).await;
    assert_eq!(
        a.recv3().await,
        Packet::PingResp,
        "the first is not taken over"
    );
    b.send3(Packet::PingReq).await;
    assert_eq!(b.recv3().await, Packet::PingResp);
    // Without a clean session: identifier rejected, then closed; nothing after it is processed
    // (MQTT-3.1.4-5).
    let mut watcher = Wire::v3_clean(&d, "watcher").await;
    watcher.subscribe3(1, &[("after/#", QoS::AtMostOnce)]).await;
    let mut w = Wire::open(&d).await;
    let mut bytes = connect_raw(b"MQTT", 4, 0x00, &[b""]);
    bytes.extend(publish_raw(b"after/refusal", b"x"));
    w.send_raw(&bytes).await;
    let frames = w.closed(1).await;
    assert_eq!(
        frames.iter().map(|f| &f[..]).collect::<Vec<_>>(),
        vec![&[0x20, 2, 0, 2][..]]
    );
    watcher.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_4_2_a_second_connection_with_the_same_id_takes_over() {
    let d = broker().await;
    let mut first = Wire::v3_clean(&d, "twin").await;
    let mut second = Wire::v3_clean(&d, "twin").await;
    first.closed(0).await;
    second.send3(Packet::PingReq).await;
    assert_eq!(second.recv3().await, Packet::PingResp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_4_5_data_after_a_refused_connect_is_not_processed() {
    let d = Deployment::open_broker("keepalive_min_secs = 30\n").await;
    let mut w = Wire::open(&d).await;
    let mut c = clean("too-short");
    c.keep_alive = 5;
    let mut bytes = Vec::new();
    let mut out = bytes::BytesMut::new();
    Packet::Connect(c).write(&mut out, 1 << 20).unwrap();
    bytes.extend_from_slice(&out);
    let mut out = bytes::BytesMut::new();
    retained("refused/after", "x")
        .write(&mut out, 1 << 20)
        .unwrap();
    bytes.extend_from_slice(&out);
    w.send_raw(&bytes).await;
    let frames = w.closed(1).await;
    assert_eq!(frames.len(), 1, "a CONNACK refusing the keep-alive");
    assert_ne!(frames[0][3], 0);
    assert_eq!(
        frames[0][2], 0,
        "Session Present 0 with a refusal (MQTT-3.2.2-4)"
    );
    let mut late = Wire::v3_clean(&d, "late").await;
    late.subscribe3(1, &[("refused/#", QoS::AtMostOnce)]).await;
    late.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_1_and_4_4_0_1_unacknowledged_messages_are_resent_with_dup_and_their_ids() {
    let d = broker().await;
    let (mut w, _) = Wire::v3(&d, persistent("resume")).await;
    w.subscribe3(1, &[("re/#", QoS::ExactlyOnce)]).await;
    publish_from(&d, "p", publish("re/1", QoS::AtLeastOnce, 1, "one")).await;
    publish_from(&d, "p", publish("re/2", QoS::ExactlyOnce, 2, "two")).await;
    let one = w.publish3().await;
    let two = w.publish3().await;
    assert_eq!((one.qos, two.qos), (QoS::AtLeastOnce, QoS::ExactlyOnce));
    // The QoS 2 one is received (PUBREC), then the connection drops before PUBREL is answered.
    w.send3(Packet::PubRec(PubRec::new(two.pkid))).await;
    assert_eq!(w.recv3().await, Packet::PubRel(PubRel::new(two.pkid)));
    drop(w);
    let (mut w, ack) = Wire::v3(&d, persistent("resume")).await;
    assert!(ack.session_present);
    let again = w.publish3().await;
    assert_eq!(
        (again.topic.as_str(), again.pkid, again.dup),
        ("re/1", one.pkid, true),
        "the unacknowledged PUBLISH again, same id, DUP 1"
    );
    assert_eq!(
        w.recv3().await,
        Packet::PubRel(PubRel::new(two.pkid)),
        "and the PUBREL"
    );
    w.send3(Packet::PubAck(PubAck::new(again.pkid))).await;
    w.send3(Packet::PubComp(PubComp::new(two.pkid))).await;
    w.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_2_and_3_3_1_3_and_4_3_1_1_dup_is_the_servers_own() {
    let d = broker().await;
    let mut sub = Wire::v3_clean(&d, "sub").await;
    sub.subscribe3(1, &[("dup/#", QoS::AtLeastOnce)]).await;
    let mut p = Wire::v3_clean(&d, "pub").await;
    let mut first = Publish::new("dup/1", QoS::AtLeastOnce, "x");
    first.pkid = 5;
    first.dup = true;
    p.send3(Packet::Publish(first)).await;
    assert!(matches!(p.recv3().await, Packet::PubAck(_)));
    let got = sub.publish3().await;
    assert!(
        !got.dup,
        "a first delivery has DUP 0 whatever the publisher set"
    );
    sub.send3(Packet::PubAck(PubAck::new(got.pkid))).await;
    p.send3(publish("dup/0", QoS::AtMostOnce, 0, "zero")).await;
    let got = sub.publish3().await;
    assert!(!got.dup && got.qos == QoS::AtMostOnce);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_4_and_3_3_2_2_and_4_7_1_1_and_4_7_3_1_bad_publishes_close() {
    let d = broker().await;
    let mut body = field(b"a/b");
    body.extend_from_slice(&1u16.to_be_bytes());
    closes_after(&d, "qos3", &packet(0x36, &body)).await;
    closes_after(&d, "plus", &publish_raw(b"a/+/b", b"x")).await;
    closes_after(&d, "hash", &publish_raw(b"a/#", b"x")).await;
    closes_after(&d, "empty", &publish_raw(b"", b"x")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_1_5_to_3_3_1_12_retained_messages() {
    let d = broker().await;
    let mut p = Wire::v3_clean(&d, "pub").await;
    p.send3(retained("r/a", "first")).await;
    p.recv3().await;
    p.send3(retained("r/a", "second")).await;
    p.recv3().await;
    let mut q0 = Publish::new("r/b", QoS::AtMostOnce, "zero");
    q0.retain = true;
    p.send3(Packet::Publish(q0)).await;
    // Not retained: neither stored nor replacing.
    p.send3(publish("r/a", QoS::AtLeastOnce, 2, "not retained"))
        .await;
    p.recv3().await;

    let mut sub = Wire::v3_clean(&d, "sub").await;
    sub.subscribe3(1, &[("r/#", QoS::AtLeastOnce)]).await;
    let mut got = vec![sub.publish3().await, sub.publish3().await];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(
        got.iter()
            .map(|g| (g.topic.as_str(), &g.payload[..], g.retain, g.qos))
            .collect::<Vec<_>>(),
        vec![
            ("r/a", &b"second"[..], true, QoS::AtLeastOnce),
            ("r/b", &b"zero"[..], true, QoS::AtMostOnce)
        ],
        "the last retained message per topic, with its QoS and RETAIN 1 on a new subscription"
    );
    for g in &got {
        if g.qos == QoS::AtLeastOnce {
            sub.send3(Packet::PubAck(PubAck::new(g.pkid))).await;
        }
    }
    // A zero-byte retained message is delivered to subscribers, and clears the topic.
    let mut clear = Publish::new("r/a", QoS::AtLeastOnce, Vec::new());
    clear.retain = true;
    clear.pkid = 3;
    p.send3(Packet::Publish(clear)).await;
    p.recv3().await;
    let got = sub.publish3().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.len(), got.retain),
        ("r/a", 0, false)
    );
    sub.send3(Packet::PubAck(PubAck::new(got.pkid))).await;
    let mut late = Wire::v3_clean(&d, "late").await;
    late.subscribe3(1, &[("r/a", QoS::AtLeastOnce)]).await;
    late.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_2_3_and_3_3_4_1_and_3_8_4_6_deliveries_name_the_topic_at_the_lower_qos() {
    let d = broker().await;
    let mut sub = Wire::v3_clean(&d, "sub").await;
    assert_eq!(
        sub.subscribe3(1, &[("q/+", QoS::AtLeastOnce)]).await,
        vec![1]
    );
    let mut p = Wire::v3_clean(&d, "pub").await;
    p.send3(publish("q/two", QoS::ExactlyOnce, 1, "2")).await;
    assert_eq!(p.recv3().await, Packet::PubRec(PubRec::new(1)));
    p.send3(Packet::PubRel(PubRel::new(1))).await;
    assert_eq!(p.recv3().await, Packet::PubComp(PubComp::new(1)));
    p.send3(publish("q/zero", QoS::AtMostOnce, 0, "0")).await;
    p.send3(Packet::PingReq).await;
    assert_eq!(
        p.recv3().await,
        Packet::PingResp,
        "no acknowledgement of QoS 0"
    );
    let got = sub.publish3().await;
    assert_eq!((got.topic.as_str(), got.qos), ("q/two", QoS::AtLeastOnce));
    sub.send3(Packet::PubAck(PubAck::new(got.pkid))).await;
    let got = sub.publish3().await;
    assert_eq!((got.topic.as_str(), got.qos), ("q/zero", QoS::AtMostOnce));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_5_1_overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let d = broker().await;
    let mut sub = Wire::v3_clean(&d, "sub").await;
    let codes = sub
        .subscribe3(
            1,
            &[
                ("o/#", QoS::AtMostOnce),
                ("o/+/x", QoS::ExactlyOnce),
                ("o/a/x", QoS::AtLeastOnce),
            ],
        )
        .await;
    assert_eq!(codes, vec![0, 2, 1]);
    publish_from(&d, "p", publish("o/a/x", QoS::ExactlyOnce, 1, "once")).await;
    let got = sub.publish3().await;
    assert_eq!(got.qos, QoS::ExactlyOnce);
    sub.send3(Packet::PubRec(PubRec::new(got.pkid))).await;
    assert_eq!(sub.recv3().await, Packet::PubRel(PubRel::new(got.pkid)));
    sub.send3(Packet::PubComp(PubComp::new(got.pkid))).await;
    sub.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_3_5_2_an_unauthorized_publish_closes_the_connection() {
    let d = Deployment::start(
        "[hub]\nkeepalive_min_secs = 0\n[hub.open_broker]\nenabled = true\n\
         rules = [ { filter = \"ro/#\", access = \"publish\", allow = false } ]",
    )
    .await;
    let mut sub = Wire::v3_clean(&d, "sub").await;
    sub.subscribe3(1, &[("ro/#", QoS::AtLeastOnce)]).await;
    let mut p = Wire::v3_clean(&d, "pub").await;
    p.send3(publish("ro/x", QoS::AtLeastOnce, 1, "no")).await;
    p.closed(0).await;
    sub.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_8_3_2_and_3_8_3_3_and_3_8_3_4_and_4_7_1_2_and_4_7_1_3_subscribe_payloads() {
    let d = broker().await;
    let mut w = Wire::v3_clean(&d, "wild").await;
    assert_eq!(
        w.subscribe3(
            1,
            &[
                ("+/#", QoS::AtMostOnce),
                ("#", QoS::AtMostOnce),
                ("a/+", QoS::AtMostOnce)
            ]
        )
        .await,
        vec![0, 0, 0],
        "wildcards are supported"
    );
    closes_after(&d, "no-filters", &packet(0x82, &1u16.to_be_bytes())).await;
    for (case, options) in [("qos 3", 3u8), ("reserved bits", 0x41)] {
        let mut sub = 1u16.to_be_bytes().to_vec();
        sub.extend(field(b"a/b"));
        sub.push(options);
        let mut w = Wire::v3_clean(&d, case).await;
        w.send_raw(&packet(0x82, &sub)).await;
        w.closed(0).await;
    }
    // A filter with a misplaced wildcard is that filter's failure; the connection stays.
    let mut w = Wire::v3_clean(&d, "bad-filters").await;
    let bad = ["a/#/b", "a#", "a/b+", "+a/b"].map(|f| (f, QoS::AtMostOnce));
    assert_eq!(w.subscribe3(2, &bad).await, vec![0x80; 4]);
    w.send3(Packet::PingReq).await;
    assert_eq!(w.recv3().await, Packet::PingResp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_8_4_1_to_3_8_4_5_and_3_9_3_1_and_3_9_3_2_suback_per_filter_in_order() {
    let d = Deployment::start(
        "[hub]\nkeepalive_min_secs = 0\n[hub.open_broker]\nenabled = true\n\
         rules = [ { filter = \"secret/#\", access = \"subscribe\", allow = false } ]",
    )
    .await;
    let mut p = Wire::v3_clean(&d, "pub").await;
    p.send3(retained("s/r", "kept")).await;
    p.recv3().await;
    let mut w = Wire::v3_clean(&d, "sub").await;
    let codes = w
        .subscribe3(
            7,
            &[
                ("s/#", QoS::AtLeastOnce),
                ("secret/x", QoS::AtMostOnce),
                ("t/#", QoS::ExactlyOnce),
            ],
        )
        .await;
    assert_eq!(
        codes,
        vec![1, 0x80, 2],
        "one code per filter, in order; only 0-2 and 0x80"
    );
    let got = w.publish3().await;
    assert!(got.retain);
    w.send3(Packet::PubAck(PubAck::new(got.pkid))).await;
    // The same filter again replaces the subscription (now QoS 0) and sends the retained
    // message again.
    assert_eq!(w.subscribe3(8, &[("s/#", QoS::AtMostOnce)]).await, vec![0]);
    let again = w.publish3().await;
    assert_eq!(
        (again.topic.as_str(), again.qos, again.retain),
        ("s/r", QoS::AtMostOnce, true)
    );
    p.send3(publish("s/live", QoS::AtLeastOnce, 2, "one copy"))
        .await;
    p.recv3().await;
    let live = w.publish3().await;
    assert_eq!((live.topic.as_str(), live.qos), ("s/live", QoS::AtMostOnce));
    w.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_10_3_2_and_3_10_4_1_to_3_10_4_6_unsubscribe() {
    let d = broker().await;
    let mut w = Wire::v3_clean(&d, "sub").await;
    w.subscribe3(1, &[("u/+", QoS::AtMostOnce), ("v/#", QoS::AtMostOnce)])
        .await;
    // Filters are compared as strings, not matched: u/a removes nothing.
    let unsub = Unsubscribe {
        pkid: 3,
        topics: vec!["u/a".into(), "none/#".into()],
    };
    w.send3(Packet::Unsubscribe(unsub)).await;
    assert!(
        matches!(w.recv3().await, Packet::UnsubAck(a) if a.pkid == 3),
        "UNSUBACK all the same"
    );
    publish_from(&d, "p", publish("u/a", QoS::AtMostOnce, 0, "still")).await;
    assert_eq!(w.publish3().await.topic, "u/a");
    let unsub = Unsubscribe {
        pkid: 4,
        topics: vec!["u/+".into(), "v/#".into()],
    };
    w.send3(Packet::Unsubscribe(unsub)).await;
    assert!(
        matches!(w.recv3().await, Packet::UnsubAck(a) if a.pkid == 4),
        "one UNSUBACK"
    );
    publish_from(&d, "p", publish("u/a", QoS::AtMostOnce, 0, "gone")).await;
    publish_from(&d, "p", publish("v/a", QoS::AtMostOnce, 0, "gone")).await;
    w.quiet(SHORT).await;
    closes_after(&d, "empty-unsubscribe", &packet(0xA2, &5u16.to_be_bytes())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_10_4_3_a_started_delivery_completes_after_unsubscribe() {
    let d = broker().await;
    let mut w = Wire::v3_clean(&d, "sub").await;
    w.subscribe3(1, &[("c/#", QoS::ExactlyOnce)]).await;
    publish_from(&d, "p", publish("c/1", QoS::ExactlyOnce, 1, "x")).await;
    let got = w.publish3().await;
    let unsub = Unsubscribe {
        pkid: 2,
        topics: vec!["c/#".into()],
    };
    w.send3(Packet::Unsubscribe(unsub)).await;
    assert!(matches!(w.recv3().await, Packet::UnsubAck(_)));
    w.send3(Packet::PubRec(PubRec::new(got.pkid))).await;
    assert_eq!(w.recv3().await, Packet::PubRel(PubRel::new(got.pkid)));
    w.send3(Packet::PubComp(PubComp::new(got.pkid))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_3_2_2_and_4_3_3_2_receiver_acknowledgements_and_duplicates() {
    let d = broker().await;
    let mut sub = Wire::v3_clean(&d, "sub").await;
    sub.subscribe3(1, &[("x/#", QoS::AtMostOnce)]).await;
    let mut p = Wire::v3_clean(&d, "pub").await;
    // QoS 1: once acknowledged, the same id is a new message.
    for payload in ["first", "second"] {
        p.send3(publish("x/1", QoS::AtLeastOnce, 9, payload)).await;
        assert_eq!(p.recv3().await, Packet::PubAck(PubAck::new(9)));
        assert_eq!(&sub.publish3().await.payload[..], payload.as_bytes());
    }
    // QoS 2: a resend before PUBREL is acknowledged again and not delivered twice.
    p.send3(publish("x/2", QoS::ExactlyOnce, 10, "once")).await;
    assert_eq!(p.recv3().await, Packet::PubRec(PubRec::new(10)));
    let mut resent = Publish::new("x/2", QoS::ExactlyOnce, "once");
    resent.pkid = 10;
    resent.dup = true;
    p.send3(Packet::Publish(resent)).await;
    assert_eq!(p.recv3().await, Packet::PubRec(PubRec::new(10)));
    p.send3(Packet::PubRel(PubRel::new(10))).await;
    assert_eq!(p.recv3().await, Packet::PubComp(PubComp::new(10)));
    assert_eq!(&sub.publish3().await.payload[..], b"once");
    sub.quiet(SHORT).await;
    // After PUBCOMP the id is new again.
    p.send3(publish("x/2", QoS::ExactlyOnce, 10, "again")).await;
    assert_eq!(p.recv3().await, Packet::PubRec(PubRec::new(10)));
    p.send3(Packet::PubRel(PubRel::new(10))).await;
    assert_eq!(p.recv3().await, Packet::PubComp(PubComp::new(10)));
    assert_eq!(&sub.publish3().await.payload[..], b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_3_3_1_the_server_sends_qos_2_in_two_steps() {
    let d = broker().await;
    let mut sub = Wire::v3_clean(&d, "sub").await;
    sub.subscribe3(1, &[("two/#", QoS::ExactlyOnce)]).await;
    publish_from(&d, "p", publish("two/1", QoS::ExactlyOnce, 1, "x")).await;
    let got = sub.publish3().await;
    assert!(got.qos == QoS::ExactlyOnce && !got.dup && got.pkid != 0);
    sub.send3(Packet::PubRec(PubRec::new(got.pkid))).await;
    assert_eq!(sub.recv3().await, Packet::PubRel(PubRel::new(got.pkid)));
    sub.send3(Packet::PubComp(PubComp::new(got.pkid))).await;
    sub.quiet(SHORT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_5_0_1_and_4_6_0_5_and_4_6_0_6_ordered_topics() {
    let d = broker().await;
    let mut sub = Wire::v3_clean(&d, "sub").await;
    sub.subscribe3(1, &[("ord/#", QoS::AtLeastOnce)]).await;
    let mut p = Wire::v3_clean(&d, "pub").await;
    for i in 1..=30u16 {
        p.send3(publish("ord/a", QoS::AtLeastOnce, i, &i.to_string()))
            .await;
    }
    for i in 1..=30u16 {
        assert_eq!(
            p.recv3().await,
            Packet::PubAck(PubAck::new(i)),
            "acknowledged in order"
        );
    }
    for i in 1..=30u16 {
        let got = sub.publish3().await;
        assert_eq!(
            &got.payload[..],
            i.to_string().as_bytes(),
            "delivered in order"
        );
        sub.send3(Packet::PubAck(PubAck::new(got.pkid))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_4_7_2_1_leading_wildcards_do_not_match_dollar_topics() {
    let d = broker().await;
    let mut wide = Wire::v3_clean(&d, "wide").await;
    wide.subscribe3(1, &[("#", QoS::AtMostOnce), ("+/x", QoS::AtMostOnce)])
        .await;
    let mut exact = Wire::v3_clean(&d, "exact").await;
    exact.subscribe3(1, &[("$app/#", QoS::AtMostOnce)]).await;
    publish_from(&d, "p", publish("$app/x", QoS::AtMostOnce, 0, "dollar")).await;
    assert_eq!(exact.publish3().await.topic, "$app/x");
    wide.quiet(SHORT).await;
    assert!(matches!(
        wide.try_recv3(Duration::from_millis(10)).await,
        Err(Ended::Silent)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_6_0_0_1_and_6_0_0_2_and_6_0_0_4_mqtt_over_websocket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let port = ironhub_conformance::free_port();
    let _d = Deployment::start(&format!(
        "[mqtt.websocket]\nlisten = \"127.0.0.1:{port}\"\n[hub]\nkeepalive_min_secs = 0\n\
         [hub.open_broker]\nenabled = true\n"
    ))
    .await;
    let open = |protocol: Option<&'static str>| async move {
        let mut request = format!("ws://127.0.0.1:{port}/mqtt")
            .into_client_request()
            .unwrap();
        if let Some(p) = protocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tokio_tungstenite::client_async(request, tcp).await
    };
    // A client that offers no "mqtt" subprotocol is refused at the handshake.
    assert!(open(None).await.is_err(), "no subprotocol: refused");
    let (mut ws, response) = open(Some("mqtt")).await.expect("handshake");
    assert_eq!(
        response.headers()["Sec-WebSocket-Protocol"],
        "mqtt",
        "the server selects mqtt (MQTT-6.0.0-4)"
    );
    // A CONNECT across two frames; then SUBSCRIBE and PINGREQ in one (MQTT-6.0.0-2).
    let mut connect = Vec::new();
    connect.extend(connect_raw(b"MQTT", 4, 0x02, &[b"ws"]));
    let (head, tail) = connect.split_at(5);
    for part in [head, tail] {
        ws.send(Message::Binary(bytes::Bytes::copy_from_slice(part)))
            .await
            .unwrap();
    }
    let mut sub = 1u16.to_be_bytes().to_vec();
    sub.extend(field(b"ws/#"));
    sub.push(0);
    let mut both = packet(0x82, &sub);
    both.extend_from_slice(&[0xC0, 0]);
    ws.send(Message::Binary(both.into())).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 4 + 5 + 2 {
        match tokio::time::timeout(ironhub_conformance::WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => got.extend_from_slice(&b),
            other => panic!("expected binary frames, got {other:?}"),
        }
    }
    assert_eq!(
        got,
        [0x20, 2, 0, 0, 0x90, 3, 0, 1, 0, 0xD0, 0],
        "CONNACK, SUBACK and PINGRESP, whatever the frames"
    );
    // A text frame is not MQTT: the connection is closed (MQTT-6.0.0-1).
    ws.send(Message::Text("hello".into())).await.unwrap();
    let end = tokio::time::timeout(ironhub_conformance::WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "closed after a text frame");
}
