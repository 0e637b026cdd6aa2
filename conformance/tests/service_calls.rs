//! Asynchronous service calls with the stock Python Link SDK (`clients/linkkit_service.py`): the
//! business API invokes `water` and answers with the call's id; the SDK answers on
//! `.../thing/service/water_reply` by itself; the answer reaches the consumer group (RabbitMQ),
//! the API's poll and the device's service history. Calls the thing model refuses are 400s.

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
