//! MQTT 5 specifics, black-box with rumqttc's v5 client: properties forwarded end to end,
//! subscription identifiers, message expiry on a stored session, open-broker allow/deny rules,
//! delayed wills, and paho-mqtt 1.x (a widely deployed MQTT 5 client) getting No Local and QoS 2 right.

use std::time::Duration;

use ironhub_conformance::{Deployment, open_v5, python_client, v5};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    LastWill, LastWillProperties, PubAckReason, PublishProperties, SubscribeProperties,
    SubscribeReasonCode,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_and_user_properties_arrive_unchanged() {
    let d = Deployment::open_broker("").await;
    let (sub, mut sev) = v5::connect(open_v5(&d, "responder")).await;
    let props = SubscribeProperties {
        id: Some(7),
        user_properties: Vec::new(),
    };
    sub.subscribe_with_properties("req/#", QoS::AtLeastOnce, props)
        .await
        .unwrap();
    v5::suback(&mut sev).await;

    let (p, mut pev) = v5::connect(open_v5(&d, "requester")).await;
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(600),
        response_topic: Some("resp/requester".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"corr-42")),
        user_properties: vec![
            ("trace".into(), "abc".into()),
            ("trace".into(), "def".into()),
        ],
        content_type: Some("application/json".into()),
        ..PublishProperties::default()
    };
    p.publish_with_properties("req/lamp", QoS::AtLeastOnce, false, "{}", props)
        .await
        .unwrap();
    assert_eq!(v5::puback(&mut pev).await, PubAckReason::Success);
    let got = v5::next_publish(&mut sev).await;
    let props = got.properties.expect("properties forwarded");
    assert_eq!(props.response_topic.as_deref(), Some("resp/requester"));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"corr-42"[..]));
    assert_eq!(props.content_type.as_deref(), Some("application/json"));
    assert_eq!(props.payload_format_indicator, Some(1));
    assert_eq!(
        props.user_properties,
        vec![
            ("trace".to_string(), "abc".to_string()),
            ("trace".to_string(), "def".to_string())
        ],
        "user properties keep their order and duplicates"
    );
    assert_eq!(props.subscription_identifiers, vec![7]);
    let left = props
        .message_expiry_interval
        .expect("remaining expiry forwarded");
    assert!(left <= 600 && left > 500, "remaining expiry {left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_not_delivered_from_a_stored_session() {
    let d = Deployment::open_broker("").await;
    let mut opts = open_v5(&d, "sleeper");
    opts.set_clean_start(false)
        .set_session_expiry_interval(Some(300));
    {
        let (c, mut ev) = v5::connect(opts.clone()).await;
        c.subscribe("news/#", QoS::AtLeastOnce).await.unwrap();
        v5::suback(&mut ev).await;
        c.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), ev.poll()).await;
    }
    let (p, mut pev) = v5::connect(open_v5(&d, "press")).await;
    let short = PublishProperties {
        message_expiry_interval: Some(1),
        ..PublishProperties::default()
    };
    p.publish_with_properties("news/stale", QoS::AtLeastOnce, false, "old", short)
        .await
        .unwrap();
    v5::puback(&mut pev).await;
    p.publish("news/fresh", QoS::AtLeastOnce, false, "new")
        .await
        .unwrap();
    v5::puback(&mut pev).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_c, mut ev) = v5::connect(opts).await;
    let got = v5::next_publish(&mut ev).await;
    assert_eq!(
        &got.topic[..],
        b"news/fresh",
        "the expired message was skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_broker_rules_allow_and_deny_per_filter() {
    let d = Deployment::start(
        "[hub.open_broker]\nenabled = true\n\
         rules = [ { filter = \"secret/#\", access = \"subscribe\", allow = false },\n\
                   { filter = \"ro/#\", access = \"publish\", allow = false } ]",
    )
    .await;
    // A retained message on a denied topic, there before anyone subscribes with `#`.
    let (p, mut pev) = v5::connect(open_v5(&d, "publisher")).await;
    p.publish("secret/kept", QoS::AtLeastOnce, true, "retained secret")
        .await
        .unwrap();
    assert_eq!(v5::puback(&mut pev).await, PubAckReason::Success);
    let (c, mut ev) = v5::connect(open_v5(&d, "guest")).await;
    c.subscribe("secret/#", QoS::AtMostOnce).await.unwrap();
    assert_eq!(
        v5::suback(&mut ev).await,
        vec![SubscribeReasonCode::NotAuthorized],
        "a filter that can only match denied topics is refused"
    );
    c.subscribe("#", QoS::AtMostOnce).await.unwrap();
    assert_eq!(
        v5::suback(&mut ev).await,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)],
        "# overlaps secret/# without being covered by it: granted (MQTT clients clean up with #)"
    );
    p.publish("news/first", QoS::AtLeastOnce, false, "news")
        .await
        .unwrap();
    assert_eq!(v5::puback(&mut pev).await, PubAckReason::Success);
    assert_eq!(
        v5::next_publish(&mut ev).await.topic.as_ref(),
        b"news/first",
        "the retained message on secret/ was not sent to the # subscriber"
    );
    c.subscribe("ro/#", QoS::AtLeastOnce).await.unwrap();
    assert_eq!(
        v5::suback(&mut ev).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    c.publish("ro/x", QoS::AtLeastOnce, false, "nope")
        .await
        .unwrap();
    assert_eq!(v5::puback(&mut ev).await, PubAckReason::NotAuthorized);
    p.publish("secret/x", QoS::AtLeastOnce, false, "ok")
        .await
        .unwrap();
    assert_eq!(
        v5::puback(&mut pev).await,
        PubAckReason::Success,
        "publishing to secret/ is allowed"
    );
    p.publish("news/x", QoS::AtLeastOnce, false, "news")
        .await
        .unwrap();
    assert_eq!(v5::puback(&mut pev).await, PubAckReason::Success);
    let first = v5::next_publish(&mut ev).await;
    assert_eq!(
        first.topic.as_ref(),
        b"news/x",
        "the live message on secret/ did not reach the # subscriber"
    );
    // A shared subscription's filter follows the same rules.
    c.subscribe("$share/g/secret/#", QoS::AtMostOnce)
        .await
        .unwrap();
    assert_eq!(
        v5::suback(&mut ev).await,
        vec![SubscribeReasonCode::NotAuthorized]
    );
    c.subscribe("$share/g/#", QoS::AtMostOnce).await.unwrap();
    assert_eq!(
        v5::suback(&mut ev).await,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v5_clients_get_no_local_and_every_qos() {
    let d = Deployment::open_broker("").await;
    let args = vec!["127.0.0.1".into(), d.mqtt.port().to_string()];
    let out = python_client("paho_v5_no_local.py", args, 30).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paho client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    assert_eq!(
        got["a"],
        serde_json::json!([]),
        "No Local spares the publisher"
    );
    assert_eq!(
        got["b"],
        serde_json::json!([
            ["paho/no-local", 0],
            ["paho/no-local", 1],
            ["paho/no-local", 2]
        ]),
        "the other subscriber gets every message, the QoS 2 one through a short PUBREL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_delay_holds_the_will_until_it_passes() {
    let d = Deployment::open_broker("").await;
    let (watch, mut wev) = v5::connect(open_v5(&d, "watcher")).await;
    watch.subscribe("wills/#", QoS::AtLeastOnce).await.unwrap();
    v5::suback(&mut wev).await;
    let mut opts = open_v5(&d, "delayed");
    let delay = LastWillProperties {
        delay_interval: Some(3),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    };
    opts.set_clean_start(false)
        .set_session_expiry_interval(Some(600))
        .set_last_will(LastWill::new(
            "wills/delayed",
            "gone",
            QoS::AtLeastOnce,
            false,
            Some(delay),
        ));
    let (client, ev) = v5::connect(opts).await;
    // The connection breaks without a DISCONNECT: the will is due 3 s later.
    drop(ev);
    drop(client);
    assert!(
        v5::next_publish_within(&mut wev, Duration::from_secs(1))
            .await
            .is_none(),
        "not before the delay"
    );
    let will = v5::next_publish_within(&mut wev, Duration::from_secs(10))
        .await
        .expect("the will after its delay");
    assert_eq!(will.topic.as_ref(), b"wills/delayed");
    assert_eq!(will.payload.as_ref(), b"gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_use_topic_aliases_the_client_accepts() {
    let d = Deployment::open_broker("").await;
    let mut opts = open_v5(&d, "alias-taker");
    opts.set_topic_alias_max(Some(1));
    let (taker, mut tev) = v5::connect(opts).await;
    let (plain, mut pev) = v5::connect(open_v5(&d, "alias-less")).await;
    for (c, ev) in [(&taker, &mut tev), (&plain, &mut pev)] {
        c.subscribe("alias/#", QoS::AtMostOnce).await.unwrap();
        v5::suback(ev).await;
    }
    let (p, mut sev) = v5::connect(open_v5(&d, "alias-sender")).await;
    tokio::spawn(async move { while sev.poll().await.is_ok() {} });
    for topic in ["alias/a", "alias/a", "alias/b"] {
        p.publish(topic, QoS::AtMostOnce, false, "x").await.unwrap();
    }
    let mut taken = Vec::new();
    let mut plain_got = Vec::new();
    for _ in 0..3 {
        let m = v5::next_publish(&mut tev).await;
        let alias = m.properties.as_ref().and_then(|p| p.topic_alias);
        // The packet as it came: rumqttc 0.25 hands it over before resolving the alias.
        taken.push((String::from_utf8_lossy(&m.topic).into_owned(), alias));
        let m = v5::next_publish(&mut pev).await;
        plain_got.push(m.properties.as_ref().and_then(|p| p.topic_alias));
    }
    assert_eq!(
        taken,
        [
            ("alias/a".to_owned(), Some(1)),
            (String::new(), Some(1)),
            ("alias/b".to_owned(), None),
        ],
        "the first topic is named with the one alias the client takes, then sent by alias \
         alone; the next topic goes by name"
    );
    assert_eq!(
        plain_got,
        [None, None, None],
        "no alias for a client that takes none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_report_the_broker_to_those_the_rules_allow() {
    let d = Deployment::start(
        "[hub.open_broker]\nenabled = true\nsys_interval_secs = 1\n\
         rules = [ { filter = \"$SYS/broker/clients/#\", access = \"subscribe\", allow = false } ]",
    )
    .await;
    let (c, mut ev) = v5::connect(open_v5(&d, "watcher")).await;
    c.subscribe("$SYS/#", QoS::AtMostOnce).await.unwrap();
    v5::suback(&mut ev).await;
    let mut seen = std::collections::BTreeMap::new();
    let (mut uptimes, mut sent) = (Vec::new(), Vec::new());
    // The first round comes as retained messages at subscribe; the second live, and the third
    // counts the second's deliveries.
    while sent.len() < 3 {
        let p = v5::next_publish(&mut ev).await;
        let topic = String::from_utf8(p.topic.to_vec()).unwrap();
        let value = String::from_utf8(p.payload.to_vec()).unwrap();
        if topic == "$SYS/broker/uptime" {
            uptimes.push(value.trim_end_matches(" seconds").parse::<u64>().unwrap());
        }
        if topic == "$SYS/broker/messages/sent" {
            sent.push(value.parse::<u64>().unwrap());
        }
        seen.insert(topic, value);
    }
    assert!(uptimes[1] > uptimes[0], "uptime moves on: {uptimes:?}");
    assert!(seen["$SYS/broker/version"].starts_with("ironhub "));
    assert!(sent[2] > sent[1], "live deliveries are counted: {sent:?}");
    assert!(seen.contains_key("$SYS/broker/messages/received"));
    assert!(
        !seen.contains_key("$SYS/broker/clients/connected"),
        "a subscribe rule keeps part of $SYS from clients: {seen:?}"
    );
    // Leading wildcards never match $SYS (MQTT-4.7.2-1), and no client publishes there.
    let (w, mut wev) = v5::connect(open_v5(&d, "wide")).await;
    w.subscribe("#", QoS::AtMostOnce).await.unwrap();
    v5::suback(&mut wev).await;
    let (p, mut pev) = v5::connect(open_v5(&d, "forger")).await;
    p.publish("$SYS/broker/uptime", QoS::AtLeastOnce, false, "0 seconds")
        .await
        .unwrap();
    assert_eq!(v5::puback(&mut pev).await, PubAckReason::NotAuthorized);
    assert!(
        v5::next_publish_within(&mut wev, Duration::from_millis(1500))
            .await
            .is_none(),
        "# saw nothing of $SYS"
    );
    // A client that may read all of it sees the clients connected.
    let d = Deployment::start("[hub.open_broker]\nenabled = true\nsys_interval_secs = 1\n").await;
    let (c, mut ev) = v5::connect(open_v5(&d, "watcher")).await;
    c.subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await
        .unwrap();
    v5::suback(&mut ev).await;
    // The retained value predates this client; the next counts it.
    v5::next_publish(&mut ev).await;
    let p = v5::next_publish(&mut ev).await;
    assert!(
        String::from_utf8(p.payload.to_vec())
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_shared_members_unacknowledged_messages_go_to_another_member() {
    use ironhub_conformance::wire::{Wire, filter5};
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAck, Publish};
    let d = Deployment::unlimited_open_broker().await;
    let mut a = Wire::v5_clean(&d, "member-a").await;
    let mut b = Wire::v5_clean(&d, "member-b").await;
    for w in [&mut a, &mut b] {
        w.subscribe5(1, vec![filter5("$share/g/job/#", QoS::AtLeastOnce)], None)
            .await;
    }
    let mut p = Wire::v5_clean(&d, "producer").await;
    for (i, payload) in ["one", "two"].into_iter().enumerate() {
        let mut m = Publish::new("job/x", QoS::AtLeastOnce, payload, None);
        m.pkid = i as u16 + 1;
        p.send5(Packet::Publish(m)).await;
        assert!(matches!(p.recv5().await, Packet::PubAck(_)));
    }
    // Each member holds one, unacknowledged; a leaves without acknowledging its own.
    let kept_by_a = a.publish5().await;
    let with_b = b.publish5().await;
    assert_ne!(kept_by_a.payload, with_b.payload);
    drop(a);
    let handed = b.publish5().await;
    assert_eq!(handed.payload, kept_by_a.payload, "a's message went to b");
    for got in [with_b, handed] {
        b.send5(Packet::PubAck(PubAck::new(got.pkid, None))).await;
    }
    b.quiet(Duration::from_millis(500)).await;
}
