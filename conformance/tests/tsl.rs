//! Thing models, black-box: a product's model is set through the admin API and a device's
//! property and event posts (rumqttc, Alink JSON) are answered 200, 460, 6304 or 6306 on
//! `..._reply`.

use hyper::Method;
use ironhub_conformance::{Deployment, v3};
use rumqttc::QoS;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_and_event_posts_are_validated_against_the_thing_model() {
    let d = Deployment::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("tsl")).await;
    let model = json!({ "properties": [
        { "identifier": "temp", "name": "Temperature",
          "dataType": { "type": "float", "specs": { "min": -40, "max": 85, "unit": "°C" } } },
        { "identifier": "power", "accessMode": "rw",
          "dataType": { "type": "bool", "specs": { "0": "off", "1": "on" } } } ],
        "services": [ { "identifier": "reboot", "callType": "async" } ],
        "events": [ { "identifier": "overheat", "type": "alert", "outputData": [
            { "identifier": "temp", "dataType": { "type": "float", "specs": { "min": -40, "max": 200 } } } ] } ] });
    let path = format!("/api/v1/products/{}/tsl", dev.product_key);
    let (s, v) = d.api(Method::PUT, &path, Some(model)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        d.api(Method::GET, &path, None).await.1["properties"][0]["identifier"],
        "temp"
    );

    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let topic = format!(
        "/sys/{}/{}/thing/event/property/post",
        dev.product_key, dev.device_name
    );
    let mut post = async |params: Value| -> Value {
        let body = json!({ "id": "7", "version": "1.0", "params": params,
                           "method": "thing.event.property.post" });
        c.publish(&topic, QoS::AtLeastOnce, false, body.to_string())
            .await
            .unwrap();
        loop {
            let p = v3::next_publish(&mut ev).await;
            if p.topic.ends_with("/property/post_reply") {
                return serde_json::from_slice(&p.payload).unwrap();
            }
        }
    };
    let ok = post(json!({ "temp": 21.5, "power": 1 })).await;
    assert_eq!(
        (ok["code"].clone(), ok["id"].clone()),
        (json!(200), json!("7")),
        "{ok}"
    );
    let unknown = post(json!({ "humidity": 40 })).await;
    assert_eq!(unknown["code"], 6304, "{unknown}");
    let out_of_range = post(json!({ "temp": 120 })).await;
    assert_eq!(out_of_range["code"], 6306, "{out_of_range}");
    assert!(out_of_range["message"].as_str().unwrap().contains("temp"));
    let wrong_type = post(json!({ "power": "yes" })).await;
    assert_eq!(wrong_type["code"], 6306, "{wrong_type}");

    // Events: checked against the model's events and answered on their own post_reply.
    let mut event = async |identifier: &str, params: Value| -> Value {
        let topic = format!(
            "/sys/{}/{}/thing/event/{identifier}/post",
            dev.product_key, dev.device_name
        );
        let body = json!({ "id": "8", "version": "1.0", "params": params,
                           "method": format!("thing.event.{identifier}.post") });
        c.publish(&topic, QoS::AtMostOnce, false, body.to_string())
            .await
            .unwrap();
        loop {
            let p = v3::next_publish(&mut ev).await;
            if p.topic == format!("{topic}_reply") {
                return serde_json::from_slice(&p.payload).unwrap();
            }
        }
    };
    let raised = event("overheat", json!({ "value": { "temp": 150.5 }, "time": 1 })).await;
    assert_eq!(
        (&raised["code"], &raised["id"]),
        (&json!(200), &json!("8")),
        "{raised}"
    );
    assert_eq!(raised["method"], "thing.event.overheat.post");
    let unknown_event = event("flood", json!({ "value": {} })).await;
    assert_eq!(unknown_event["code"], 6304, "{unknown_event}");
    let unknown_param = event("overheat", json!({ "value": { "humidity": 1 } })).await;
    assert_eq!(unknown_param["code"], 6304, "{unknown_param}");
    let too_hot = event("overheat", json!({ "value": { "temp": 250 } })).await;
    assert_eq!(too_hot["code"], 6306, "{too_hot}");
    let no_value = event("overheat", json!({ "temp": 150 })).await;
    assert_eq!(no_value["code"], 460, "{no_value}");

    let bad = json!({ "properties": [ { "identifier": "x",
        "dataType": { "type": "int", "specs": { "min": 5, "max": 1 } } } ] });
    let (s, v) = d.api(Method::PUT, &path, Some(bad)).await;
    assert_eq!(s, 400, "min above max: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_categories_restrict_a_products_user_topics() {
    use ironhub_conformance::v5;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode as Sr5};

    let d = Deployment::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("topics")).await;
    let path = format!("/api/v1/products/{}/topics", dev.product_key);
    let categories = json!([
        { "topic": "/${productKey}/${deviceName}/user/update", "operation": "pub" },
        { "topic": "/${productKey}/${deviceName}/user/get", "operation": "sub" },
        { "topic": "/${productKey}/${deviceName}/user/data/+", "operation": "all" } ]);
    let (s, v) = d.api(Method::PUT, &path, Some(categories)).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = d
        .api(
            Method::PUT,
            &path,
            Some(json!([{ "topic": "/elsewhere/x", "operation": "pub" }])),
        )
        .await;
    assert_eq!(s, 400, "a category outside the user space: {v}");

    let (c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let mut publish = async |leaf: &str| -> PubAckReason {
        c.publish(dev.user_topic(leaf), Q5::AtLeastOnce, false, "x")
            .await
            .unwrap();
        v5::puback(&mut ev).await
    };
    assert_eq!(publish("update").await, PubAckReason::Success);
    assert_eq!(publish("data/temp").await, PubAckReason::Success);
    assert_eq!(
        publish("get").await,
        PubAckReason::NotAuthorized,
        "get is sub only"
    );
    assert_eq!(
        publish("other").await,
        PubAckReason::NotAuthorized,
        "not a category"
    );
    let mut codes = Vec::new();
    for leaf in ["get", "update", "data/+"] {
        c.subscribe(dev.user_topic(leaf), Q5::AtMostOnce)
            .await
            .unwrap();
        codes.extend(v5::suback(&mut ev).await);
    }
    assert_eq!(
        codes,
        [
            Sr5::Success(Q5::AtMostOnce),
            Sr5::NotAuthorized,
            Sr5::Success(Q5::AtMostOnce)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_sets_are_checked_sent_and_answered_with_the_devices_code() {
    let d = Deployment::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("tsl-set")).await;
    let model = json!({ "properties": [
        { "identifier": "target", "accessMode": "rw",
          "dataType": { "type": "float", "specs": { "min": 5, "max": 35 } } },
        { "identifier": "temp", "accessMode": "r",
          "dataType": { "type": "float", "specs": { "min": -40, "max": 85 } } } ] });
    let path = format!("/api/v1/products/{}/tsl", dev.product_key);
    let (s, v) = d.api(Method::PUT, &path, Some(model)).await;
    assert_eq!(s, 200, "{v}");
    let auth = format!("Bearer {}", d.api_key(&dev.tenant, "set").await);
    let set = async |params: Value, timeout_ms: u64| -> (u16, Value) {
        let body = json!({ "product_key": dev.product_key, "device_name": dev.device_name,
                           "params": params, "timeout_ms": timeout_ms });
        let (s, _, v) = d
            .api_as(
                Method::POST,
                "/api/v1/business/properties/set",
                Some(body),
                &auth,
            )
            .await;
        (s, v)
    };
    let (s, offline) = set(json!({ "target": 21 }), 1000).await;
    assert_eq!(
        (s, &offline["outcome"]),
        (200, &json!("offline")),
        "{offline}"
    );
    for (params, why) in [
        (json!({ "target": 50 }), "target"),
        (json!({ "humidity": 1 }), "humidity"),
        (json!({ "temp": 20 }), "read-only"),
    ] {
        let (s, v) = set(params, 1000).await;
        assert_eq!(s, 400, "{v}");
        assert!(v["message"].as_str().unwrap().contains(why), "{v}");
    }

    // A device that answers with code 6313 for one set and stays silent for the next.
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let answer = tokio::spawn(async move {
        let p = v3::next_publish(&mut ev).await;
        let request: Value = serde_json::from_slice(&p.payload).unwrap();
        let reply = json!({ "id": request["id"], "code": 6313, "data": {}, "message": "busy" });
        c.publish(
            format!("{}_reply", p.topic),
            QoS::AtLeastOnce,
            false,
            reply.to_string(),
        )
        .await
        .unwrap();
        v3::acked(&mut ev).await;
        (p.topic, request, c, ev)
    });
    let (s, replied) = set(json!({ "target": 21.5 }), 2000).await;
    let (topic, request, _c, mut ev) = answer.await.unwrap();
    assert_eq!(s, 200, "{replied}");
    assert_eq!(
        topic,
        format!(
            "/sys/{}/{}/thing/service/property/set",
            dev.product_key, dev.device_name
        )
    );
    assert_eq!(request["params"], json!({ "target": 21.5 }));
    assert_eq!(request["method"], "thing.service.property.set");
    assert_eq!(
        (&replied["outcome"], &replied["code"]),
        (&json!("replied"), &json!(6313)),
        "{replied}"
    );
    assert_eq!(replied["message_id"], request["id"]);
    let polling = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let (_, silent) = set(json!({ "target": 22 }), 1000).await;
    assert_eq!(silent["outcome"], "timeout", "{silent}");
    polling.abort();
}
