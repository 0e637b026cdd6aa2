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

/// An Alibaba export of a thermostat's default module, as its console writes it (numbers as
/// strings, the generated `post` event and `set`/`get` services included).
fn alibaba_document(pk: &str) -> Value {
    json!({
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": { "version": "1.0", "productKey": pk },
        "properties": [
            { "identifier": "temp", "name": "Temperature", "accessMode": "r", "required": false,
              "dataType": { "type": "float", "specs": { "min": "-40", "max": "85", "step": "0.1", "unit": "°C", "unitName": "Celsius" } } },
            { "identifier": "target", "name": "Target", "accessMode": "rw", "required": false,
              "dataType": { "type": "int", "specs": { "min": "5", "max": "35", "step": "1" } } }
        ],
        "events": [
            { "identifier": "post", "name": "post", "type": "info", "required": true,
              "desc": "property post", "method": "thing.event.property.post", "outputData": [] },
            { "identifier": "overheat", "name": "Overheat", "type": "alert", "required": false,
              "method": "thing.event.overheat.post",
              "outputData": [{ "identifier": "temp", "name": "t",
                               "dataType": { "type": "float", "specs": { "min": "-40", "max": "200" } } }] }
        ],
        "services": [
            { "identifier": "set", "name": "set", "required": true, "callType": "async",
              "method": "thing.service.property.set", "inputData": [], "outputData": [] },
            { "identifier": "get", "name": "get", "required": true, "callType": "async",
              "method": "thing.service.property.get", "inputData": ["temp", "target"], "outputData": [] },
            { "identifier": "reboot", "name": "Reboot", "required": false, "callType": "async",
              "method": "thing.service.reboot", "inputData": [], "outputData": [] }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_import_and_export_in_alibabas_format_and_keep_their_versions() {
    use ironhub_conformance::ota::send_file;
    let d = Deployment::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("tsl-import")).await;
    let base = format!("/api/v1/products/{}/tsl", dev.product_key);
    let doc = alibaba_document(&dev.product_key).to_string();
    let (s, imported) = send_file(&d, "POST", &format!("{base}/import"), doc.as_bytes()).await;
    assert_eq!(s, 200, "{imported}");
    assert_eq!(imported["version"], 1);
    let (_, model) = d.api(Method::GET, &base, None).await;
    assert_eq!(
        model["properties"][0]["dataType"]["specs"]["max"], 85.0,
        "{model}"
    );
    assert_eq!(
        model["events"].as_array().map(Vec::len),
        Some(1),
        "post is generated: {model}"
    );
    assert_eq!(model["services"][0]["identifier"], "reboot", "{model}");

    // A custom module imports beside the default one.
    let block = json!({ "profile": { "productKey": dev.product_key, "functionBlockId": "fan" },
        "properties": [{ "identifier": "speed", "accessMode": "rw",
                         "dataType": { "type": "int", "specs": { "min": "0", "max": "3" } } }] });
    let (s, v) = send_file(
        &d,
        "POST",
        &format!("{base}/import"),
        block.to_string().as_bytes(),
    )
    .await;
    assert_eq!((s, &v["version"]), (200, &json!(2)), "{v}");
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let reply = ironhub_conformance::gateway::sys_call(
        &c,
        &mut ev,
        &dev,
        "/thing/event/property/post",
        json!({ "temp": 21.5, "fan:speed": 2 }),
    )
    .await;
    assert_eq!(
        reply["code"], 200,
        "the imported model checks posts: {reply}"
    );

    // Exported in the same format: it imports again to the same model.
    let (s, exported) = d.api(Method::GET, &format!("{base}/export"), None).await;
    assert_eq!(s, 200, "{exported}");
    assert_eq!(exported["profile"]["productKey"], dev.product_key.as_str());
    let methods: Vec<&str> = exported["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["method"].as_str())
        .collect();
    assert_eq!(
        methods,
        [
            "thing.service.property.set",
            "thing.service.property.get",
            "thing.service.reboot"
        ]
    );
    let (s, fan) = d
        .api(Method::GET, &format!("{base}/export?module=fan"), None)
        .await;
    assert_eq!(
        (s, &fan["profile"]["functionBlockId"]),
        (200, &json!("fan")),
        "{fan}"
    );
    assert_eq!(
        d.api(Method::GET, &format!("{base}/export?module=nope"), None)
            .await
            .0,
        404
    );
    let (s, again) = send_file(
        &d,
        "POST",
        &format!("{base}/import"),
        exported.to_string().as_bytes(),
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["model"], d.api(Method::GET, &base, None).await.1);

    // Versions: the newest first; an old one restored becomes the newest.
    let (_, versions) = d.api(Method::GET, &format!("{base}/versions"), None).await;
    let numbers: Vec<u64> = versions
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2, 1]);
    let (s, restored) = d
        .api(Method::POST, &format!("{base}/versions/1/restore"), None)
        .await;
    assert_eq!((s, &restored["version"]), (200, &json!(4)), "{restored}");
    let (_, now) = d.api(Method::GET, &base, None).await;
    assert!(
        now.get("modules").is_none(),
        "version 1 had no custom module: {now}"
    );
    assert_eq!(
        d.api(Method::GET, &format!("{base}/versions/99"), None)
            .await
            .0,
        404
    );
    let (s, bad) = send_file(
        &d,
        "POST",
        &format!("{base}/import"),
        b"{\"properties\": 3}",
    )
    .await;
    assert_eq!(s, 400, "{bad}");

    // The command line.
    let pk = dev.product_key.as_str();
    let versions = d
        .cli(&["tsl", "versions", "--product", pk])
        .await
        .expect("tsl versions");
    assert_eq!(versions[0]["version"], 4, "{versions}");
    let fan = d
        .cli(&["tsl", "export", "--product", pk, "--module", "fan"])
        .await;
    assert!(
        fan.is_err(),
        "version 4 (version 1 again) has no fan module"
    );
    let restored = d
        .cli(&["tsl", "restore", "--product", pk, "--version", "3"])
        .await
        .expect("tsl restore");
    assert_eq!(restored["version"], 5);
    let fan = d
        .cli(&["tsl", "export", "--product", pk, "--module", "fan"])
        .await
        .expect("tsl export");
    assert_eq!(fan["profile"]["functionBlockId"], "fan");
}
