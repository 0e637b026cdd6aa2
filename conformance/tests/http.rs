//! The HTTP device transport, black-box with curl (a client that is not ours): the Alibaba
//! `/auth` and `/topic/...` scheme, its errors, tokens that survive a crash, and the same limits
//! as MQTT.

use std::time::Duration;

use ironhub_conformance::http::Http;
use ironhub_conformance::{Deployment, v3};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_authenticates_and_publishes_over_http_to_an_mqtt_subscriber() {
    let (d, http) = Http::start("").await;
    let dev = d.provision("acme").await;
    // The same device holds an MQTT session meanwhile: HTTP does not take it over.
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    c.subscribe(dev.user_topic("#"), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    v3::suback(&mut ev).await;

    let token = http.token(&dev).await;
    let (status, _, v) = http
        .publish(
            Some(&token),
            &dev.user_topic("update"),
            b"{\"t\":21}".to_vec(),
        )
        .await;
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    let got = v3::next_publish(&mut ev).await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        (dev.user_topic("update").as_str(), &b"{\"t\":21}"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_outlives_a_crash_of_the_hub() {
    let (mut d, http) = Http::start("").await;
    let dev = d.provision("acme").await;
    let token = http.token(&dev).await;
    d.kill();
    d.restart().await;
    let (status, _, v) = http
        .publish(Some(&token), &dev.user_topic("update"), b"{}".to_vec())
        .await;
    assert_eq!(
        (status, v["code"].as_i64()),
        (200, Some(0)),
        "the token issued before the crash still admits: {v}"
    );
    let (status, _, v) = http
        .publish(
            Some("not-a-token"),
            &dev.user_topic("update"),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, 401, "an unknown token stays refused: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_precise() {
    let (d, http) = Http::start("token_ttl_secs = 1\n").await;
    let dev = d.provision("acme").await;
    let other = d.add_device(&dev.product_key, "dev-2").await;

    let (bad, _, v) = http.auth(&dev, "0123456789abcdef0123456789abcdef").await;
    assert_eq!(
        (bad, v["code"].as_i64()),
        (401, Some(20000)),
        "wrong signature: {v}"
    );
    let (missing, _, _) = http
        .publish(None, &dev.user_topic("x"), b"x".to_vec())
        .await;
    assert_eq!(missing, 401, "no token");

    let token = http.token(&dev).await;
    let (acl, _, v) = http
        .publish(Some(&token), &other.user_topic("x"), b"x".to_vec())
        .await;
    assert_eq!(acl, 403, "another device's topic: {v}");
    let (big, _, _) = http
        .publish(Some(&token), &dev.user_topic("x"), vec![b'x'; 300 * 1024])
        .await;
    assert_eq!(big, 413, "over the 256 KB message size");
    let (bad_topic, _, _) = http
        .publish(Some(&token), &dev.user_topic("a/b/c/d/e/f"), b"x".to_vec())
        .await;
    assert_eq!(bad_topic, 400, "more than 7 levels");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (expired, _, v) = http
        .publish(Some(&token), &dev.user_topic("x"), b"x".to_vec())
        .await;
    assert_eq!(expired, 401, "expired token: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_publishes_meet_the_same_rate_limits_with_429_and_retry_after() {
    let (d, http) = Http::start("").await;
    let profile = json!({ "rates": { "device_messages_qos1": "1:60" } });
    let dev = d
        .tenant_with_profile(&Deployment::unique_tenant("http"), profile)
        .await;
    let token = http.token(&dev).await;
    let (first, _, _) = http
        .publish(Some(&token), &dev.user_topic("x"), b"1".to_vec())
        .await;
    let (second, head, v) = http
        .publish(Some(&token), &dev.user_topic("x"), b"2".to_vec())
        .await;
    assert_eq!(first, 200);
    assert_eq!((second, v["limit"].as_str()), (429, Some("L-017")), "{v}");
    assert!(head.contains("retry-after:"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_configured_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (d, https) = Http::start_https(certs.path(), "").await;
    let dev = d.provision("acme").await;
    let token = https.token(&dev).await;
    let (status, _, v) = https
        .publish(
            Some(&token),
            &dev.user_topic("secure"),
            b"over https".to_vec(),
        )
        .await;
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{v}");
    let plain = format!("http{}", &https.base["https".len()..]);
    let (status, _, _) = Http::at(plain).auth(&dev, &dev.device_secret).await;
    assert_ne!(status, 200, "plain HTTP is not served on the HTTPS port");
}
