//! MQTT 5 specifics, black-box with rumqttc's v5 client: properties forwarded end to end,
//! subscription identifiers, message expiry on a stored session, open-broker allow/deny rules, and
//! paho-mqtt 1.x (a widely deployed MQTT 5 client) getting No Local and QoS 2 right.

use std::time::Duration;

use ironhub_conformance::{Deployment, open_v5, python_client, v5};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    PubAckReason, PublishProperties, SubscribeProperties, SubscribeReasonCode,
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
    let (c, mut ev) = v5::connect(open_v5(&d, "guest")).await;
    c.subscribe("secret/#", QoS::AtMostOnce).await.unwrap();
    assert_eq!(
        v5::suback(&mut ev).await,
        vec![SubscribeReasonCode::NotAuthorized]
    );
    c.subscribe("#", QoS::AtMostOnce).await.unwrap();
    assert_eq!(
        v5::suback(&mut ev).await,
        vec![SubscribeReasonCode::NotAuthorized],
        "# would see secret/..."
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
    c.publish("secret/x", QoS::AtLeastOnce, false, "ok")
        .await
        .unwrap();
    assert_eq!(
        v5::puback(&mut ev).await,
        PubAckReason::Success,
        "publishing to secret/ is allowed"
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
