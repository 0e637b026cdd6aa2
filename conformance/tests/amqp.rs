//! Server-side subscription through RabbitMQ, black-box: devices publish over MQTT, a business
//! server consumes its consumer group's queue with an AMQP client (lapin), as the docs tell it to.

use std::collections::BTreeSet;
use std::time::Duration;

use hyper::Method;
use ironhub_conformance::amqp::{self, GroupConsumer, Received, SHARED_NODE, group};
use ironhub_conformance::{Deployment, DeviceCreds, v3};
use rumqttc::QoS;
use serde_json::{Value, json};

/// Rates high enough that a test publishing quickly is never throttled.
fn fast_profile() -> Value {
    json!({ "rates": { "device_messages_qos0": "", "device_messages_qos1": "",
                       "tenant_messages": "", "device_connections": "" } })
}

async fn deployment(node: (&str, u16)) -> Deployment {
    Deployment::start(&amqp::config(node)).await
}

async fn second_product(d: &Deployment, tenant: &str) -> DeviceCreds {
    let (s, p) = d
        .api(
            Method::POST,
            "/api/v1/products",
            Some(json!({ "tenant": tenant, "name": "other" })),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    d.add_device(p["product_key"].as_str().unwrap(), "other-1")
        .await
}

fn json_of(m: &Received) -> Value {
    serde_json::from_slice(&m.payload).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_receives_its_products_messages_and_notifications_only() {
    let d = deployment(SHARED_NODE).await;
    let tenant = Deployment::unique_tenant("amqp");
    let dev = d.tenant_with_profile(&tenant, fast_profile()).await;
    let other = second_product(&d, &tenant).await;
    let g = group(&d, SHARED_NODE, &tenant, &[&dev.product_key]).await;
    let mut consumer = GroupConsumer::start(&g.url, &g.queue).await;

    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let (oc, mut oev) = v3::connect(other.v3_options(&d)).await;
    for i in 0..20 {
        let qos = if i % 2 == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        c.publish(dev.user_topic("data"), qos, false, format!("m{i}"))
            .await
            .unwrap();
        oc.publish(
            other.user_topic("data"),
            QoS::AtLeastOnce,
            false,
            "not yours",
        )
        .await
        .unwrap();
    }
    // Turn both event loops until every publish is out: the last of each is QoS 1.
    for _ in 0..10 {
        v3::acked(&mut ev).await;
    }
    for _ in 0..20 {
        v3::acked(&mut oev).await;
    }
    let created = d.add_device(&dev.product_key, "late-1").await;
    let path = format!(
        "/api/v1/products/{}/devices/{}/disable",
        created.product_key, created.device_name
    );
    let (s, _) = d.api(Method::POST, &path, None).await;
    assert_eq!(s, 200);
    drop(c);
    drop(ev);

    let got = consumer.drain(Duration::from_secs(3)).await;
    let upstream: Vec<&Received> = got.iter().filter(|m| m.kind == "upstream").collect();
    let payloads: Vec<String> = upstream
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads, expected, "every message of the product, in order");
    let first = upstream[0];
    assert_eq!(first.header("topic"), dev.user_topic("data"));
    assert_eq!(first.header("productKey"), dev.product_key);
    assert_eq!(first.header("deviceName"), dev.device_name);
    assert_eq!(first.header("tenant"), tenant);
    assert_eq!(first.header("messageId"), first.message_id);
    assert!(first.header("generateTime").parse::<u64>().unwrap() > 1_700_000_000_000);
    let ids: BTreeSet<&str> = upstream.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), upstream.len(), "message ids are unique");
    assert!(
        got.iter()
            .all(|m| m.header("productKey") == dev.product_key),
        "nothing from another product"
    );

    let status: Vec<Value> = got
        .iter()
        .filter(|m| m.kind == "status")
        .map(json_of)
        .collect();
    assert!(
        status
            .iter()
            .any(|s| s["status"] == "online" && s["deviceName"] == dev.device_name),
        "online notification: {status:?}"
    );
    let lifecycle: Vec<(String, String)> = got
        .iter()
        .filter(|m| m.kind == "lifecycle")
        .map(json_of)
        .map(|v| {
            (
                v["deviceName"].as_str().unwrap_or("").to_owned(),
                v["action"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        lifecycle.contains(&("late-1".into(), "create".into())),
        "{lifecycle:?}"
    );
    assert!(
        lifecycle.contains(&("late-1".into(), "disable".into())),
        "{lifecycle:?}"
    );
    drop(oc);
    drop(oev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_notification_follows_a_disconnect() {
    let d = deployment(SHARED_NODE).await;
    let tenant = Deployment::unique_tenant("amqp-status");
    let dev = d.tenant_with_profile(&tenant, fast_profile()).await;
    let g = group(&d, SHARED_NODE, &tenant, &[&dev.product_key]).await;
    let mut consumer = GroupConsumer::start(&g.url, &g.queue).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    c.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while ev.poll().await.is_ok() {}
    })
    .await;
    let got = consumer.drain(Duration::from_secs(2)).await;
    let statuses: Vec<String> = got
        .iter()
        .filter(|m| m.kind == "status")
        .map(|m| json_of(m)["status"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(statuses, ["online", "offline"]);
}

/// The node this test stops and starts, so that other tests keep theirs.
const RESTART_NODE: (&str, u16) = ("ironhub-restart", 5674);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_message_is_lost_while_rabbitmq_restarts() {
    let d = deployment(RESTART_NODE).await;
    let tenant = Deployment::unique_tenant("amqp-restart");
    let dev = d.tenant_with_profile(&tenant, fast_profile()).await;
    let g = group(&d, RESTART_NODE, &tenant, &[&dev.product_key]).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let mut acknowledged = Vec::new();
    for i in 0..150 {
        if i == 50 {
            amqp::rabbitmq_ctl(RESTART_NODE, "stop_app");
        }
        if i == 100 {
            amqp::rabbitmq_ctl(RESTART_NODE, "start_app");
        }
        c.publish(
            dev.user_topic("data"),
            QoS::AtLeastOnce,
            false,
            format!("{i}"),
        )
        .await
        .unwrap();
        v3::acked(&mut ev).await;
        acknowledged.push(i);
    }
    let mut consumer = GroupConsumer::start(&g.url, &g.queue).await;
    let mut seen = Vec::new();
    // The hub retries with back-off (at most 30 s between attempts).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.iter().collect::<BTreeSet<_>>().len() < acknowledged.len()
        && tokio::time::Instant::now() < deadline
    {
        if let Some(m) = consumer.next(Duration::from_secs(1)).await
            && m.kind == "upstream"
        {
            seen.push(String::from_utf8_lossy(&m.payload).parse::<u32>().unwrap());
        }
    }
    let unique: BTreeSet<u32> = seen.iter().copied().collect();
    let missing: Vec<u32> = acknowledged
        .iter()
        .copied()
        .filter(|i| !unique.contains(i))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let duplicates = seen.len() - unique.len();
    println!(
        "{} acknowledged, {} received, {duplicates} duplicates",
        acknowledged.len(),
        seen.len()
    );
    // The consumer may see the last resent batch before the hub has cleared it from its outbox.
    let mut amqp = Value::Null;
    for _ in 0..100 {
        let (s, sinks) = d.api(Method::GET, "/api/v1/sinks", None).await;
        assert_eq!(s, 200);
        amqp = sinks[0].clone();
        if amqp["outbox"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        amqp["stored"].as_u64().unwrap() > 0
            && amqp["resent"] == amqp["stored"]
            && amqp["outbox"] == 0,
        "the outage went through the outbox, which is empty again: {amqp}"
    );
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_tenant_scoped_and_need_the_tenants_own_products() {
    let d = deployment(SHARED_NODE).await;
    let a = Deployment::unique_tenant("amqp-a");
    let b = Deployment::unique_tenant("amqp-b");
    d.provision(&a).await;
    let b_dev = d.provision(&b).await;
    let (s, g) = d
        .api(
            Method::POST,
            &format!("/api/v1/tenants/{a}/consumer-groups"),
            Some(json!({ "name": "a" })),
        )
        .await;
    assert_eq!(s, 201);
    let id = g["id"].as_str().unwrap();
    let path = format!(
        "/api/v1/tenants/{a}/consumer-groups/{id}/products/{}",
        b_dev.product_key
    );
    let (s, v) = d.api(Method::PUT, &path, None).await;
    assert_eq!(s, 404, "another tenant's product: {v}");
    let (s, _) = d
        .api(
            Method::GET,
            &format!("/api/v1/tenants/{b}/consumer-groups/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 404, "another tenant's group");

    // On the broker, a group's credentials read its own queue and nothing else.
    let own = group(&d, SHARED_NODE, &a, &[]).await;
    let theirs = group(&d, SHARED_NODE, &b, &[]).await;
    assert!(amqp::try_consume(&own.url, &own.queue).await.is_ok());
    let refused = amqp::try_consume(&own.url, &theirs.queue).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("ACCESS_REFUSED")),
        "another tenant's queue: {:?}",
        refused.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_python_consumer_receives_device_messages() {
    let d = deployment(SHARED_NODE).await;
    let tenant = Deployment::unique_tenant("amqp-pika");
    let dev = d.tenant_with_profile(&tenant, fast_profile()).await;
    let g = group(&d, SHARED_NODE, &tenant, &[&dev.product_key]).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    for i in 0..3 {
        c.publish(
            dev.user_topic("data"),
            QoS::AtLeastOnce,
            false,
            format!("{{\"t\":{i}}}"),
        )
        .await
        .unwrap();
        v3::acked(&mut ev).await;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/amqp_consumer.py");
    // The hub runs in its own process: blocking this test's thread does not stall it.
    let out = std::process::Command::new("python3")
        .args([script, &g.url, &g.queue, "2"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let upstream: Vec<&Value> = lines.iter().filter(|l| l["type"] == "upstream").collect();
    let payloads: Vec<&str> = upstream
        .iter()
        .map(|l| l["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, [r#"{"t":0}"#, r#"{"t":1}"#, r#"{"t":2}"#]);
    assert_eq!(upstream[0]["topic"], dev.user_topic("data"));
    assert_eq!(upstream[0]["deviceName"], dev.device_name);
    assert!(lines.iter().any(|l| l["type"] == "status"));
}

/// An Alink topology request signed with the sub-device's secret, as the Link SDK sends it.
fn topo_entry(sub: &DeviceCreds, secret: &str) -> Value {
    let client_id = format!("{}&{}", sub.product_key, sub.device_name);
    let mut entry = ironhub_conformance::gateway::signed_entry(sub, secret, &client_id);
    entry["signMethod"] = json!("hmacSha256");
    entry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_topology_changes_are_answered_and_notified() {
    let d = deployment(SHARED_NODE).await;
    let tenant = Deployment::unique_tenant("amqp-topo");
    let sub = d.tenant_with_profile(&tenant, fast_profile()).await;
    let other = d.add_device(&sub.product_key, "sub-2").await;
    let gw = ironhub_conformance::gateway::gateway_device(&d, &tenant).await;
    let g = group(&d, SHARED_NODE, &tenant, &[&gw.product_key]).await;
    let mut consumer = GroupConsumer::start(&g.url, &g.queue).await;

    let (c, mut ev) = v3::connect(gw.v3_options(&d)).await;
    let sys = format!("/sys/{}/{}/thing/topo", gw.product_key, gw.device_name);
    let mut call = async |op: &str, params: Value| -> Value {
        let body = json!({ "id": "1", "version": "1.0", "params": params, "method": format!("thing.topo.{op}") });
        c.publish(
            format!("{sys}/{op}"),
            QoS::AtLeastOnce,
            false,
            body.to_string(),
        )
        .await
        .unwrap();
        loop {
            let p = v3::next_publish(&mut ev).await;
            if p.topic == format!("{sys}/{op}_reply") {
                return serde_json::from_slice(&p.payload).unwrap();
            }
        }
    };
    let added = call("add", json!([topo_entry(&sub, &sub.device_secret)])).await;
    assert_eq!(added["code"], 200, "{added}");
    assert_eq!(added["data"][0]["deviceName"], sub.device_name);
    let forged = call("add", json!([topo_entry(&other, "not-the-secret")])).await;
    assert_eq!(
        forged["code"], 6206,
        "a wrong signature is refused: {forged}"
    );
    let listed = call("get", json!({})).await;
    assert_eq!(
        listed["data"],
        json!([{ "productKey": sub.product_key, "deviceName": sub.device_name, "online": false }])
    );
    let removed = call(
        "delete",
        json!([{ "productKey": sub.product_key, "deviceName": sub.device_name, "online": false }]),
    )
    .await;
    assert_eq!(removed["code"], 200, "{removed}");
    let path = format!(
        "/api/v1/products/{}/devices/{}/sub-devices",
        gw.product_key, gw.device_name
    );
    assert_eq!(d.api(Method::GET, &path, None).await.1, json!([]));

    let actions: Vec<(String, String)> = consumer
        .drain(Duration::from_secs(2))
        .await
        .iter()
        .filter(|m| m.kind == "topology")
        .map(json_of)
        .map(|v| {
            (
                v["action"].as_str().unwrap_or("").to_owned(),
                v["devices"][0]["deviceName"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    let name = sub.device_name.clone();
    assert_eq!(
        actions,
        [
            ("add".to_owned(), name.clone()),
            ("remove".to_owned(), name)
        ]
    );
}
