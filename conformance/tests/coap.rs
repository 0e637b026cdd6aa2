//! The CoAP transport, black-box with clients that are not ours: libcoap's `coap-client`
//! (Debian libcoap3-bin) and Python aiocoap (`conformance/clients/coap_device.py`).

use std::time::Duration;

use hyper::Method;
use ironhub_conformance::amqp::{self, GroupConsumer, SHARED_NODE};
use ironhub_conformance::coap::{Coap, auth_body, topic_path};
use ironhub_conformance::{Deployment, v3};
use rumqttc::QoS;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_client_publishes_to_an_mqtt_subscriber_and_a_consumer_group() {
    let (d, coap) = Coap::start(&amqp::config(SHARED_NODE)).await;
    let dev = d.provision(&Deployment::unique_tenant("coap")).await;
    let (s, g) = d
        .api(
            Method::POST,
            &format!("/api/v1/tenants/{}/consumer-groups", dev.tenant),
            Some(json!({ "name": "backend" })),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let path = format!(
        "/api/v1/tenants/{}/consumer-groups/{}/products/{}",
        dev.tenant,
        g["id"].as_str().unwrap(),
        dev.product_key
    );
    assert_eq!(d.api(Method::PUT, &path, None).await.0, 200);
    let url = amqp::url_as(
        SHARED_NODE,
        g["credentials"]["username"].as_str().unwrap(),
        g["credentials"]["password"].as_str().unwrap(),
    );
    let mut consumer = GroupConsumer::start(&url, g["queue"].as_str().unwrap()).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    c.subscribe(dev.user_topic("data"), QoS::AtLeastOnce)
        .await
        .unwrap();
    v3::suback(&mut ev).await;

    let token = coap.token(&dev);
    let out = coap.post(&topic_path(&dev), Some(&token), r#"{"temp":21}"#, &[]);
    assert!(out.contains(r#""code":0"#), "{out}");
    let p = v3::next_publish(&mut ev).await;
    assert_eq!(&p.payload[..], br#"{"temp":21}"#);
    let got = consumer.drain(Duration::from_secs(2)).await;
    let upstream: Vec<&[u8]> = got
        .iter()
        .filter(|m| m.kind == "upstream")
        .map(|m| &m.payload[..])
        .collect();
    assert_eq!(
        upstream,
        [br#"{"temp":21}"#],
        "the consumer group got it too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_errors_have_their_response_codes() {
    let (d, coap) = Coap::start("").await;
    let dev = d
        .tenant_with_profile(
            &Deployment::unique_tenant("coap-err"),
            json!({ "rates": { "device_messages_qos1": "1:60" } }),
        )
        .await;
    let mut forged: Value = serde_json::from_str(&auth_body(&dev)).unwrap();
    forged["sign"] = json!("00");
    let bad_sign = coap.post("/auth", None, &forged.to_string(), &[]);
    assert!(bad_sign.starts_with("4.01"), "bad signature: {bad_sign}");
    let token = coap.token(&dev);
    let path = topic_path(&dev);
    let no_token = coap.post(&path, Some("not-a-token"), "{}", &[]);
    assert!(no_token.starts_with("4.01"), "bad token: {no_token}");
    let other = format!("/topic/{}/someone-else/user/data", dev.product_key);
    let forbidden = coap.post(&other, Some(&token), "{}", &[]);
    assert!(
        forbidden.starts_with("4.03"),
        "another device's topic: {forbidden}"
    );
    let unknown = coap.post("/nowhere", Some(&token), "{}", &[]);
    assert!(unknown.starts_with("4.04"), "unknown resource: {unknown}");
    let big = "x".repeat(1100);
    let too_large = coap.post(&path, Some(&token), &big, &[]);
    assert!(too_large.starts_with("4.13"), "over 1 KB: {too_large}");
    let first = coap.post(&path, Some(&token), "{}", &[]);
    assert!(first.contains(r#""code":0"#), "{first}");
    let throttled = coap.post(&path, Some(&token), "{}", &["-v", "6"]);
    assert!(
        throttled.contains("c:4.29"),
        "over the QoS 1 rate: {throttled}"
    );
    assert!(throttled.contains("Max-Age:"), "with Max-Age: {throttled}");
    assert!(throttled.contains("L-017"), "naming the limit: {throttled}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiocoap_authenticates_publishes_and_a_retransmitted_con_is_handled_once() {
    let (d, coap) = Coap::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("coap-dup")).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    c.subscribe(dev.user_topic("data"), QoS::AtLeastOnce)
        .await
        .unwrap();
    v3::suback(&mut ev).await;
    let auth = coap.aiocoap(&["auth", &coap.uri("/auth"), &auth_body(&dev)]);
    assert_eq!(auth["code"], "2.05", "{auth}");
    let token: Value = serde_json::from_str(auth["payload"].as_str().unwrap()).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let uri = coap.uri(&topic_path(&dev));
    let bad = coap.aiocoap(&["publish", &uri, "not-a-token", "{}"]);
    assert_eq!(bad["code"], "4.01", "a bad token: {bad}");
    let big = "x".repeat(1100);
    let too_large = coap.aiocoap(&["publish", &uri, &token, &big]);
    assert_eq!(too_large["code"], "4.13", "over 1 KB: {too_large}");
    let con = coap.aiocoap(&["publish", &uri, &token, r#"{"n":1}"#]);
    assert_eq!(con["code"], "2.05", "{con}");
    let non = coap.aiocoap(&["publish", &uri, &token, r#"{"n":2}"#, "non"]);
    assert_eq!(non["code"], "2.05", "{non}");
    let port = coap.port.to_string();
    let twice = coap.aiocoap(&[
        "retransmit",
        "127.0.0.1",
        &port,
        &topic_path(&dev),
        &token,
        r#"{"n":3}"#,
    ]);
    assert_eq!(twice["first"]["code"], "2.05", "{twice}");
    assert_eq!(
        twice["identical"], true,
        "the duplicate gets the same ACK: {twice}"
    );
    let ping = coap.aiocoap(&["ping", "127.0.0.1", &port]);
    assert_eq!(ping["type"], "RST", "a CoAP ping gets a Reset: {ping}");

    let mut payloads = Vec::new();
    while let Some(p) = v3::next_publish_within(&mut ev, Duration::from_secs(2)).await {
        payloads.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    assert_eq!(
        payloads,
        [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#],
        "the retransmitted message went out once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_get_an_empty_ack_then_a_separate_response() {
    let (d, coap) = Coap::start("separate_after_ms = 0\n").await;
    let dev = d.provision(&Deployment::unique_tenant("coap-sep")).await;
    let token = coap.token(&dev);
    let out = coap.post(&topic_path(&dev), Some(&token), "{}", &["-v", "7"]);
    assert!(out.contains("t:ACK c:0.00"), "an empty ACK first: {out}");
    assert!(
        out.contains("t:NON c:2.05") && out.contains(r#""code":0"#),
        "then the response on its own: {out}"
    );
}
