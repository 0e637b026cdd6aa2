//! Rules, black-box: a device publishes JSON over MQTT; a rule filters and reshapes it and fans
//! it out to a consumer group on RabbitMQ and to another device's topic; a failing destination
//! is retried (1, 3, 10 s) and then reported to the error destination, also when the hub is
//! killed (SIGKILL) while a retry waits.

use std::time::Duration;

use hyper::Method;
use ironhub_conformance::amqp::{self, GroupConsumer, SHARED_NODE};
use ironhub_conformance::{Deployment, DeviceCreds, sqs, v3};
use rumqttc::QoS;
use serde_json::{Value, json};

async fn deployment() -> (Deployment, String) {
    let url = amqp::rabbitmq(SHARED_NODE);
    let endpoint = sqs::moto();
    let config = format!("{}{}", amqp::config(SHARED_NODE), sqs::config(&endpoint));
    (Deployment::start(&config).await, url)
}

/// A tenant with a device that publishes (dev-1) and one that watches (watcher).
async fn devices(d: &Deployment) -> (DeviceCreds, DeviceCreds) {
    let tenant = Deployment::unique_tenant("rules");
    let profile = json!({ "rates": { "device_messages_qos0": "", "device_messages_qos1": "" } });
    let dev = d.tenant_with_profile(&tenant, profile).await;
    let watcher = d.add_device(&dev.product_key, "watcher").await;
    (dev, watcher)
}

async fn create_rule(d: &Deployment, tenant: &str, rule: Value) -> (u16, Value) {
    d.api(
        Method::POST,
        &format!("/api/v1/tenants/{tenant}/rules"),
        Some(rule),
    )
    .await
}

/// Collects what `watcher` receives on `topic` until nothing arrives for `quiet`.
async fn watch(
    d: &Deployment,
    watcher: &DeviceCreds,
    topic: &str,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (c, mut ev) = v3::connect(watcher.v3_options(d)).await;
    c.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    v3::suback(&mut ev).await;
    (c, ev)
}

async fn received(ev: &mut rumqttc::EventLoop, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(quiet, ev.poll()).await {
        if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = e {
            out.push(serde_json::from_slice(&p.payload).unwrap_or(Value::Null));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_filters_reshapes_and_fans_out_to_two_destinations() {
    let (d, url) = deployment().await;
    let (dev, watcher) = devices(&d).await;
    let tenant = &dev.tenant;
    let (s, g) = d
        .api(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/consumer-groups"),
            Some(json!({ "name": "alerts" })),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let alerts = watcher.user_topic("alerts");
    let sql = format!(
        "SELECT temp AS t, temp * 9 / 5 + 32 AS f, deviceName() AS device FROM '/{}/+/user/data' WHERE temp > 30",
        dev.product_key
    );
    let (s, rule) = create_rule(
        &d,
        tenant,
        json!({ "name": "hot", "sql": sql, "destinations": [
            { "kind": "consumer_group", "group": g["id"] },
            { "kind": "topic", "topic": alerts },
        ]}),
    )
    .await;
    assert_eq!(s, 201, "{rule}");
    let mut consumer = GroupConsumer::start(&url, g["queue"].as_str().unwrap()).await;
    let (_wc, mut wev) = watch(&d, &watcher, &alerts).await;

    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    for payload in [
        r#"{"temp":20}"#,
        r#"{"temp":35}"#,
        "not json",
        r#"{"temp":40}"#,
    ] {
        c.publish(dev.user_topic("data"), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        v3::acked(&mut ev).await;
    }
    let expected = [
        json!({"t": 35, "f": 95, "device": "dev-1"}),
        json!({"t": 40, "f": 104, "device": "dev-1"}),
    ];
    // Each output is delivered on its own (with its own retries): compare without order.
    let by_t = |mut v: Vec<Value>| {
        v.sort_by_key(|o| o["t"].as_i64());
        v
    };
    let at_watcher = by_t(received(&mut wev, Duration::from_secs(2)).await);
    assert_eq!(at_watcher, expected, "the topic destination");
    let from_group: Vec<Value> = consumer
        .drain(Duration::from_secs(2))
        .await
        .iter()
        .filter(|m| m.kind == "rule")
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(by_t(from_group), expected, "the consumer group destination");

    let path = format!(
        "/api/v1/tenants/{tenant}/rules/{}",
        rule["id"].as_str().unwrap()
    );
    let (_, r) = d.api(Method::GET, &path, None).await;
    assert_eq!(r["counters"]["matched"], 2, "{r}");
    assert_eq!(r["counters"]["forwarded"], 4, "{r}");
    assert_eq!(r["counters"]["failed"], 0, "{r}");

    // Disabled, it stops.
    let (s, _) = d.api(Method::POST, &format!("{path}/disable"), None).await;
    assert_eq!(s, 200);
    c.publish(
        dev.user_topic("data"),
        QoS::AtLeastOnce,
        false,
        r#"{"temp":50}"#,
    )
    .await
    .unwrap();
    v3::acked(&mut ev).await;
    assert!(received(&mut wev, Duration::from_secs(1)).await.is_empty());
}

/// A rule of `dev`'s tenant whose SQS queue every attempt fails (SQS refuses queue names with
/// dots, as with a misconfigured queue), reporting to `errors`; returns the rule and the queue.
async fn rule_to_a_failing_queue(
    d: &Deployment,
    dev: &DeviceCreds,
    errors: &str,
) -> (Value, String) {
    let queue = format!("{}-not.a.valid.name", dev.tenant);
    let (s, rule) = create_rule(
        d,
        &dev.tenant,
        json!({ "name": "to-sqs", "sql": "SELECT * FROM '/+/+/user/data'",
                "destinations": [ { "kind": "sqs_queue", "queue": queue } ],
                "error_destination": { "kind": "topic", "topic": errors } }),
    )
    .await;
    assert_eq!(s, 201, "{rule}");
    (rule, queue)
}

/// Publishes `payload` on `dev`'s `user/data` at QoS 1 and waits for the PUBACK; returns when
/// it was sent.
async fn publish_acked(d: &Deployment, dev: &DeviceCreds, payload: &str) -> std::time::Instant {
    let (c, mut ev) = v3::connect(dev.v3_options(d)).await;
    let started = std::time::Instant::now();
    c.publish(
        dev.user_topic("data"),
        QoS::AtLeastOnce,
        false,
        payload.to_owned(),
    )
    .await
    .unwrap();
    v3::acked(&mut ev).await;
    started
}

/// The next message on the watcher's subscription as JSON, within `within`.
async fn next_report(wev: &mut rumqttc::EventLoop, within: Duration) -> Option<Value> {
    tokio::time::timeout(within, async {
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = wev.poll().await {
                return serde_json::from_slice::<Value>(&p.payload).unwrap();
            }
        }
    })
    .await
    .ok()
}

/// A rule's counters as the API shows them.
async fn counters(d: &Deployment, tenant: &str, rule: &Value) -> Value {
    let path = format!(
        "/api/v1/tenants/{tenant}/rules/{}",
        rule["id"].as_str().unwrap()
    );
    d.api(Method::GET, &path, None).await.1["counters"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_is_retried_then_reported_to_the_error_destination() {
    let (d, _url) = deployment().await;
    let (dev, watcher) = devices(&d).await;
    let errors = watcher.user_topic("errors");
    let (rule, queue) = rule_to_a_failing_queue(&d, &dev, &errors).await;
    let (_wc, mut wev) = watch(&d, &watcher, &errors).await;
    let started = publish_acked(&d, &dev, r#"{"v":1}"#).await;
    let report = next_report(&mut wev, Duration::from_secs(30))
        .await
        .expect("a failure report");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(14),
        "reported after the 1 + 3 + 10 s retries, not {waited:?}"
    );
    assert_eq!(report["ruleId"], rule["id"]);
    assert_eq!(report["attempts"], 4);
    assert_eq!(report["destination"]["queue"], json!(queue));
    assert_eq!(report["payload"], json!({"v": 1}));
    assert_eq!(report["deviceName"], "dev-1");
    assert!(
        report["error"].as_str().unwrap().contains("queue"),
        "{report}"
    );
    let counters = counters(&d, &dev.tenant, &rule).await;
    assert_eq!(counters["failed"], 1, "{counters}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waiting_when_the_hub_is_killed_is_made_after_the_restart() {
    let (mut d, _url) = deployment().await;
    let (dev, watcher) = devices(&d).await;
    let errors = watcher.user_topic("errors");
    let (rule, _) = rule_to_a_failing_queue(&d, &dev, &errors).await;
    let started = publish_acked(&d, &dev, r#"{"v":2}"#).await;
    // The first attempt (at once) and the first retry (1 s) have failed; the second retry is
    // due at 4 s. The hub dies in between, as in a crash.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    d.kill();
    d.restart().await;
    let (_wc, mut wev) = watch(&d, &watcher, &errors).await;
    let report = next_report(&mut wev, Duration::from_secs(40))
        .await
        .unwrap_or_else(|| panic!("the retries went on after the restart; log:\n{}", d.log()));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(14),
        "reported after the 1 + 3 + 10 s retries, not {waited:?}"
    );
    assert_eq!(report["ruleId"], rule["id"]);
    assert_eq!(report["attempts"], 4);
    assert_eq!(report["payload"], json!({"v": 2}));
    let counters = counters(&d, &dev.tenant, &rule).await;
    assert_eq!(
        counters["failed"], 1,
        "counted by the process that gave up: {counters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rules_are_refused_with_the_reason() {
    let (d, _url) = deployment().await;
    let (dev, _) = devices(&d).await;
    let topic = json!([{ "kind": "topic", "topic": "/x/y/user/z" }]);
    let cases = [
        (
            json!({ "name": "r", "sql": "SELECT a FROM nowhere", "destinations": topic }),
            400,
            "quotes",
        ),
        (
            json!({ "name": "r", "sql": "SELECT a FROM '/#'", "destinations": [] }),
            400,
            "destination",
        ),
        (
            json!({ "name": "r", "sql": "SELECT a FROM '/#'",
                 "destinations": [{ "kind": "consumer_group", "group": "nope" }] }),
            404,
            "consumer group",
        ),
        (
            json!({ "name": "r", "sql": "SELECT a FROM '/#'",
                 "destinations": [{ "kind": "webhook", "url": "x" }] }),
            400,
            "unknown variant `webhook`",
        ),
    ];
    for (body, status, says) in cases {
        let (s, v) = create_rule(&d, &dev.tenant, body.clone()).await;
        assert_eq!(s, status, "{body} -> {v}");
        assert!(
            v["message"].as_str().unwrap_or("").contains(says),
            "{body} -> {v}"
        );
    }
}

/// A rule reaches only its own tenant: a topic destination naming another tenant's device
/// delivers nothing there, and SQS destinations live under the tenant's own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_cannot_reach_another_tenants_devices_or_queues() {
    let (d, _url) = deployment().await;
    let (dev, _watcher) = devices(&d).await;
    let other = d.provision(&Deployment::unique_tenant("victim")).await;
    let target = format!(
        "/sys/{}/{}/thing/service/property/set",
        other.product_key, other.device_name
    );
    let (s, rule) = create_rule(
        &d,
        &dev.tenant,
        json!({ "name": "cross", "sql": "SELECT * FROM '/+/+/user/data'",
                "destinations": [ { "kind": "topic", "topic": target } ] }),
    )
    .await;
    assert_eq!(s, 201, "{rule}");
    // The other tenant's device listens on its own /sys/ topics (no subscription needed).
    let (_oc, mut oev) = v3::connect(other.v3_options(&d)).await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    c.publish(
        dev.user_topic("data"),
        QoS::AtLeastOnce,
        false,
        r#"{"cmd":"open"}"#,
    )
    .await
    .unwrap();
    v3::acked(&mut ev).await;
    assert!(
        received(&mut oev, Duration::from_secs(1)).await.is_empty(),
        "another tenant's device got a rule's output"
    );
    for queue in [format!("{}-orders", other.tenant), "ih-anything".to_owned()] {
        let (s, v) = create_rule(
            &d,
            &dev.tenant,
            json!({ "name": "q", "sql": "SELECT * FROM '/+/+/user/data'",
                    "destinations": [ { "kind": "sqs_queue", "queue": queue } ] }),
        )
        .await;
        assert_eq!(s, 400, "{queue}: {v}");
    }
}
