//! Asynchronous service calls with the stock Python Link SDK (`clients/linkkit_service.py`): the
//! business API invokes `water` and answers with the call's id; the SDK answers on
//! `.../thing/service/water_reply` by itself; the answer reaches the consumer group (RabbitMQ),
//! the API's poll and the device's service history. Calls the thing model refuses are 400s.
//! Desired property values (rumqttc, as the C SDK asks for them): set through the business API
//! with versions, read and cleared by the device on `thing/property/desired/get|delete`.

use std::time::Duration;

use hyper::Method;
use ironhub_conformance::amqp::{self, GroupConsumer, SHARED_NODE, group};
use ironhub_conformance::{Deployment, python_client, sdk_saw};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_device_answers_an_asynchronous_call_polled_and_forwarded() {
    let d = Deployment::start(&amqp::config(SHARED_NODE)).await;
    let dev = d.provision(&Deployment::unique_tenant("services")).await;
    let model = json!({ "services": [{ "identifier": "water", "callType": "async",
        "inputData": [{ "identifier": "duration",
                        "dataType": { "type": "int", "specs": { "min": 1, "max": 600 } } }] }] });
    let tsl = format!("/api/v1/products/{}/tsl", dev.product_key);
    let (s, v) = d.api(Method::PUT, &tsl, Some(model)).await;
    assert_eq!(s, 200, "{v}");
    let g = group(&d, SHARED_NODE, &dev.tenant, &[&dev.product_key]).await;
    let mut consumer = GroupConsumer::start(&g.url, &g.queue).await;
    let auth = format!("Bearer {}", d.api_key(&dev.tenant, "services").await);
    let invoke = async |service: &str, params: Value| -> (u16, Value) {
        let body = json!({ "product_key": dev.product_key, "device_name": dev.device_name,
                           "service": service, "params": params });
        let (s, _, v) = d
            .api_as(
                Method::POST,
                "/api/v1/business/services/invoke",
                Some(body),
                &auth,
            )
            .await;
        (s, v)
    };
    let poll = async |id: &str| -> Value {
        let path = format!(
            "/api/v1/business/devices/{}/{}/services/{id}",
            dev.product_key, dev.device_name
        );
        let (s, _, v) = d.api_as(Method::GET, &path, None, &auth).await;
        assert_eq!(s, 200, "{v}");
        v
    };

    // The model refuses what it does not declare.
    assert_eq!(invoke("fly", json!({})).await.0, 400);
    assert_eq!(invoke("water", json!({ "duration": 0 })).await.0, 400);
    assert_eq!(invoke("water", json!({ "speed": 1 })).await.0, 400);
    let (s, offline) = invoke("water", json!({ "duration": 30 })).await;
    assert_eq!(
        (s, &offline["outcome"]),
        (200, &json!("offline")),
        "{offline}"
    );

    // Sent once the SDK is online; a call made before it subscribed goes unanswered, so calls
    // are repeated until one is answered.
    let device = tokio::spawn(python_client("linkkit_service.py", dev.sdk_args(&d), 60));
    let mut answered = Value::Null;
    for _ in 0..60 {
        let (s, sent) = invoke("water", json!({ "duration": 30 })).await;
        assert_eq!(s, 200, "{sent}");
        if let Some(id) = sent["message_id"].as_str() {
            for _ in 0..10 {
                let call = poll(id).await;
                if call["reply"].is_object() {
                    answered = call;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if answered.is_object() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(answered["reply"]["code"], 200, "{answered}");
    assert_eq!(answered["reply"]["data"]["watered"], 30, "{answered}");
    assert_eq!(answered["service"], "water");
    let id = answered["message_id"].as_str().expect("id").to_owned();
    let seen = sdk_saw(&d, device.await.expect("the SDK's run"));
    assert_eq!(seen["service"]["identifier"], "water", "{seen}");
    assert_eq!(seen["service"]["request_id"], id.as_str(), "{seen}");

    // The consumer group gets the answer.
    let reply_topic = format!(
        "/sys/{}/{}/thing/service/water_reply",
        dev.product_key, dev.device_name
    );
    let forwarded = loop {
        let m = consumer
            .next(Duration::from_secs(10))
            .await
            .expect("the answer reaches the consumer group");
        if m.header("topic") == reply_topic {
            break m;
        }
    };
    let forwarded: Value = serde_json::from_slice(&forwarded.payload).expect("JSON");
    assert_eq!(forwarded["id"], id.as_str(), "{forwarded}");

    // History keeps the call and its answer.
    let path = format!(
        "/api/v1/products/{}/devices/{}/services/water?order=asc&limit=1000",
        dev.product_key, dev.device_name
    );
    let mut points = Vec::new();
    for _ in 0..50 {
        let (s, page) = d.api(Method::GET, &path, None).await;
        assert_eq!(s, 200, "{page}");
        points = page["points"].as_array().cloned().unwrap_or_default();
        if points.iter().any(|p| p["value"]["code"] == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let of_call: Vec<&Value> = points
        .iter()
        .filter(|p| p["value"]["id"] == id.as_str())
        .collect();
    assert_eq!(of_call.len(), 2, "the call and its answer: {points:?}");
    assert_eq!(of_call[0]["value"]["params"]["duration"], 30);
    assert_eq!(of_call[1]["value"]["data"]["watered"], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_values_are_set_versioned_read_and_cleared_by_the_device() {
    use ironhub_conformance::{gateway, v3};
    let d = Deployment::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("desired")).await;
    let model = json!({ "properties": [
        { "identifier": "target", "accessMode": "rw",
          "dataType": { "type": "int", "specs": { "min": 5, "max": 35 } } },
        { "identifier": "temp", "accessMode": "r",
          "dataType": { "type": "float", "specs": { "min": -40, "max": 85 } } } ] });
    let tsl = format!("/api/v1/products/{}/tsl", dev.product_key);
    assert_eq!(d.api(Method::PUT, &tsl, Some(model)).await.0, 200);
    let key = d.api_key(&dev.tenant, "desired").await;
    let auth = format!("Bearer {key}");
    let path = format!(
        "/api/v1/business/devices/{}/{}/desired",
        dev.product_key, dev.device_name
    );
    let set = async |body: Value| -> (u16, Value) {
        let (s, _, v) = d.api_as(Method::PUT, &path, Some(body), &auth).await;
        (s, v)
    };
    // The model decides what may be desired.
    assert_eq!(
        set(json!({ "params": { "temp": 20 } })).await.0,
        400,
        "read-only"
    );
    assert_eq!(
        set(json!({ "params": { "target": 99 } })).await.0,
        400,
        "out of range"
    );
    let (s, first) = set(json!({ "params": { "target": 22 } })).await;
    assert_eq!(
        (s, &first["target"]["version"]),
        (200, &json!(1)),
        "{first}"
    );
    // A stale version changes nothing; the current one moves it on.
    let (s, stale) = set(json!({ "params": { "target": 23 }, "versions": { "target": 0 } })).await;
    assert_eq!(s, 409, "{stale}");
    let (s, second) = set(json!({ "params": { "target": 24 }, "versions": { "target": 1 } })).await;
    assert_eq!(
        (s, &second["target"]["version"]),
        (200, &json!(2)),
        "{second}"
    );

    // The device reads them and clears what it took.
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let get = gateway::sys_call(
        &c,
        &mut ev,
        &dev,
        "/thing/property/desired/get",
        json!(["target"]),
    )
    .await;
    assert_eq!(get["code"], 200, "{get}");
    assert_eq!(
        get["data"]["target"],
        json!({ "value": 24, "version": 2 }),
        "{get}"
    );
    let stale = json!({ "target": { "version": 1 } });
    gateway::sys_call(&c, &mut ev, &dev, "/thing/property/desired/delete", stale).await;
    let still =
        gateway::sys_call(&c, &mut ev, &dev, "/thing/property/desired/get", json!([])).await;
    assert_eq!(
        still["data"]["target"]["version"], 2,
        "an older version deletes nothing: {still}"
    );
    let took = json!({ "target": { "version": 2 } });
    let deleted =
        gateway::sys_call(&c, &mut ev, &dev, "/thing/property/desired/delete", took).await;
    assert_eq!(deleted["code"], 200, "{deleted}");
    let (s, _, left) = d.api_as(Method::GET, &path, None, &auth).await;
    assert_eq!((s, left), (200, json!({})));
    let bad = gateway::sys_call(
        &c,
        &mut ev,
        &dev,
        "/thing/property/desired/get",
        json!({ "x": 1 }),
    )
    .await;
    assert_eq!(bad["code"], 460, "{bad}");

    // The command line, with the tenant's API key.
    let (pk, dn) = (dev.product_key.as_str(), dev.device_name.as_str());
    let with_key = |args: &[&'static str]| -> Vec<String> {
        ["thing", "--api-key", key.as_str()]
            .iter()
            .chain(args)
            .map(|a| a.to_string())
            .collect()
    };
    let run = async |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        d.cli(&args).await
    };
    let mut desired = with_key(&["desired", "--product"]);
    desired.extend([pk, "--name", dn, "--params", r#"{"target":30}"#].map(str::to_owned));
    let set = run(desired).await.expect("thing desired");
    assert_eq!(set["target"]["value"], 30, "{set}");
    let mut property = with_key(&["set", "--product"]);
    property.extend(
        [
            pk,
            "--name",
            dn,
            "--params",
            r#"{"target":20}"#,
            "--timeout-ms",
            "1000",
        ]
        .map(str::to_owned),
    );
    let outcome = run(property).await.expect("thing set");
    assert_eq!(
        outcome["outcome"], "timeout",
        "the device (not polled) does not answer: {outcome}"
    );
    let mut sync = with_key(&[
        "invoke",
        "--sync",
        "--timeout-ms",
        "1000",
        "--service",
        "reboot",
        "--product",
    ]);
    sync.extend([pk, "--name", dn].map(str::to_owned));
    let waited = run(sync).await.expect("thing invoke --sync");
    assert_eq!(
        waited["rrpc_code"], "TIMEOUT",
        "online, not answering: {waited}"
    );
}
