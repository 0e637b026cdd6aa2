//! Device shadows, black-box: a device (rumqttc) reports and reads its shadow over MQTT, a
//! business server (API key) reads it and sets desired state, which reaches the device at once,
//! or when it reconnects.

use hyper::Method;
use ironhub_conformance::{Deployment, DeviceCreds, v3};
use rumqttc::QoS;
use serde_json::{Value, json};

async fn api_key(d: &Deployment, tenant: &str) -> String {
    format!("Bearer {}", d.api_key(tenant, "shadow").await)
}

/// Sends a shadow request and returns the hub's answer on `/shadow/get/...`.
async fn request(
    c: &rumqttc::AsyncClient,
    ev: &mut rumqttc::EventLoop,
    dev: &DeviceCreds,
    body: Value,
) -> Value {
    let topic = format!("/shadow/update/{}/{}", dev.product_key, dev.device_name);
    c.publish(topic, QoS::AtLeastOnce, false, body.to_string())
        .await
        .unwrap();
    next_shadow(ev, dev).await
}

async fn next_shadow(ev: &mut rumqttc::EventLoop, dev: &DeviceCreds) -> Value {
    let topic = format!("/shadow/get/{}/{}", dev.product_key, dev.device_name);
    loop {
        let p = v3::next_publish(ev).await;
        if p.topic == topic {
            return serde_json::from_slice(&p.payload).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_round_trips_and_an_offline_device_gets_its_delta_on_reconnect() {
    let mut d = Deployment::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("shadow")).await;
    let auth = api_key(&d, &dev.tenant).await;
    let path = format!(
        "/api/v1/business/shadows/{}/{}",
        dev.product_key, dev.device_name
    );

    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let update =
        json!({ "method": "update", "state": { "reported": { "color": "red" } }, "version": 1 });
    let reply = request(&c, &mut ev, &dev, update.clone()).await;
    assert_eq!(reply["payload"]["status"], "success", "{reply}");
    assert_eq!(reply["payload"]["version"], 1);
    let conflict = request(&c, &mut ev, &dev, update).await;
    assert_eq!(
        conflict["payload"]["content"]["errorcode"], 409,
        "same version: {conflict}"
    );

    let (s, _, shadow) = d.api_as(Method::GET, &path, None, &auth).await;
    assert_eq!(s, 200);
    assert_eq!(shadow["state"]["reported"]["color"], "red");
    assert!(
        shadow["metadata"]["reported"]["color"]["timestamp"]
            .as_u64()
            .is_some()
    );

    // Desired while online: the device gets a control message at once.
    let desired = json!({ "state": { "desired": { "color": "green" } } });
    let (s, _, v) = d.api_as(Method::PUT, &path, Some(desired), &auth).await;
    assert_eq!(s, 200, "{v}");
    let control = next_shadow(&mut ev, &dev).await;
    assert_eq!(control["method"], "control");
    assert_eq!(control["payload"]["state"]["desired"]["color"], "green");
    let got = request(&c, &mut ev, &dev, json!({ "method": "get" })).await;
    assert_eq!(got["payload"]["state"]["reported"]["color"], "red");
    assert_eq!(got["payload"]["state"]["desired"]["color"], "green");

    // Offline: the delta waits for the next connection (a clean session, no subscription).
    c.disconnect().await.unwrap();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while ev.poll().await.is_ok() {}
    })
    .await;
    let desired = json!({ "state": { "desired": { "brightness": 80 } } });
    let (s, _, _) = d.api_as(Method::PUT, &path, Some(desired), &auth).await;
    assert_eq!(s, 200);
    let (_c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let control = next_shadow(&mut ev, &dev).await;
    assert_eq!(control["method"], "control", "{control}");
    assert_eq!(control["payload"]["state"]["desired"]["brightness"], 80);
    assert_eq!(control["payload"]["state"]["desired"]["color"], "green");
    drop((_c, ev));

    // Still pending after a restart of the hub.
    d.restart().await;
    let (_c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let control = next_shadow(&mut ev, &dev).await;
    assert_eq!(
        control["payload"]["state"]["desired"]["brightness"], 80,
        "{control}"
    );

    // Another tenant's key sees nothing.
    let other = d.provision(&Deployment::unique_tenant("shadow-b")).await;
    let other_auth = api_key(&d, &other.tenant).await;
    let (s, _, _) = d.api_as(Method::GET, &path, None, &other_auth).await;
    assert_eq!(s, 404);
    let desired = json!({ "state": { "desired": { "x": 1 } } });
    let (s, _, _) = d
        .api_as(Method::PUT, &path, Some(desired), &other_auth)
        .await;
    assert_eq!(s, 404);
}
