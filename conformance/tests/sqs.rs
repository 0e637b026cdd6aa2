//! Consumer groups on SQS, black-box: devices publish over MQTT, a business server reads the
//! group's SQS queue with boto3 (the documented consumer) from a real SQS endpoint (moto).

use hyper::Method;
use ironhub_conformance::{Deployment, sqs, v3};
use rumqttc::QoS;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_on_sqs_receives_every_message_in_batches() {
    let endpoint = sqs::moto();
    let d = Deployment::start(&sqs::config(&endpoint)).await;
    let tenant = Deployment::unique_tenant("sqs");
    let profile = json!({ "rates": { "device_messages_qos0": "", "device_messages_qos1": "" } });
    let dev = d.tenant_with_profile(&tenant, profile).await;
    let (s, g) = d
        .api(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/consumer-groups"),
            Some(json!({ "name": "backend", "sink": "sqs" })),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let queue = g["queue"].as_str().unwrap().to_owned();
    assert!(queue.starts_with("ih-"), "{queue}");
    let path = format!(
        "/api/v1/tenants/{tenant}/consumer-groups/{}/products/{}",
        g["id"].as_str().unwrap(),
        dev.product_key
    );
    assert_eq!(d.api(Method::PUT, &path, None).await.0, 200);

    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    // QoS 0 messages queue up behind each other, so they reach the sink in batches.
    for i in 0..39 {
        c.publish(
            dev.user_topic("data"),
            QoS::AtMostOnce,
            false,
            format!("{{\"n\":{i}}}"),
        )
        .await
        .unwrap();
    }
    c.publish(
        dev.user_topic("data"),
        QoS::AtLeastOnce,
        false,
        vec![0u8, 159, 146, 150],
    )
    .await
    .unwrap();
    v3::acked(&mut ev).await;

    let lines = sqs::consume(&endpoint, &queue, 3);
    let upstream: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["type"] == "upstream").collect();
    let texts: Vec<&str> = upstream
        .iter()
        .filter(|l| l["encoding"].is_null())
        .map(|l| l["payload"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..39).map(|i| format!("{{\"n\":{i}}}")).collect();
    let mut sorted = texts.clone();
    sorted.sort_by_key(|t| t[5..t.len() - 1].parse::<u32>().unwrap());
    assert_eq!(
        sorted, expected,
        "every text message (a standard queue may reorder)"
    );
    let binary: Vec<&serde_json::Value> = upstream
        .iter()
        .copied()
        .filter(|l| l["encoding"] == "base64")
        .collect();
    assert_eq!(binary.len(), 1);
    assert_eq!(
        binary[0]["payload"], "009f9296",
        "binary payloads arrive intact"
    );
    assert_eq!(upstream[0]["topic"], dev.user_topic("data"));
    assert_eq!(upstream[0]["deviceName"], dev.device_name);
    assert!(
        lines.iter().any(|l| l["type"] == "status"),
        "status notification"
    );

    let (_, sinks) = d.api(Method::GET, "/api/v1/sinks", None).await;
    let stats = sinks
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sink"] == "sqs")
        .unwrap();
    let confirmed = stats["confirmed"].as_u64().unwrap();
    let batches = stats["batches"].as_u64().unwrap();
    assert!(confirmed >= 41, "{stats}");
    assert!(batches < confirmed, "sent in batches: {stats}");
    drop(c);
}
