//! Sub-devices online through their gateway: a stock Link SDK gateway (Python, unmodified) logs
//! its sub-device in and its data reaches a consumer group; a gateway with 200 sub-devices logs
//! them in in batches, carries their traffic on one connection and takes them offline when it
//! goes silent; logins that must fail fail with Alibaba's codes; a disabled or deleted sub-device
//! is logged out with a `topo/change` notice; downlinks, RRPC in both forms, property sets and
//! shadow deltas reach a sub-device through its gateway, and each sub-device is held to its own
//! message rate.

use std::collections::HashSet;
use std::time::Duration;

use hyper::Method;
use ironhub_conformance::amqp::{self, GroupConsumer, SHARED_NODE, group};
use ironhub_conformance::gateway::{
    batch_login, batch_logout, fleet, log_all_in, login_entry, session_call, state, sys_call,
    until_state,
};
use ironhub_conformance::{Deployment, python_client, sdk_saw, v3};
use rumqttc::{Event, Packet, QoS};
use serde_json::{Value, json};

/// No rate gets in a test's way (each limit has its own test in limits.rs).
fn unthrottled() -> Value {
    json!({ "rates": { "tenant_connections": "", "device_connections": "", "tenant_messages": "",
                       "device_messages_qos0": "", "device_messages_qos1": "",
                       "registry_operations": "", "api_requests": "", "sub_device_logins": "" } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_link_sdk_gateway_brings_its_sub_device_online_and_its_data_reaches_a_consumer_group()
 {
    let d = Deployment::start(&amqp::config(SHARED_NODE)).await;
    let tenant = Deployment::unique_tenant("gw-sdk");
    let f = fleet(&d, &tenant, unthrottled(), 1).await;
    let (gw, sub) = (&f.gateway, &f.subs[0]);
    let g = group(&d, SHARED_NODE, &tenant, &[&sub.product_key]).await;
    let mut consumer = GroupConsumer::start(&g.url, &g.queue).await;

    let args = [
        "127.0.0.1".to_owned(),
        d.mqtt.port().to_string(),
        gw.product_key.clone(),
        gw.device_name.clone(),
        gw.device_secret.clone(),
        sub.product_key.clone(),
        sub.device_name.clone(),
        sub.device_secret.clone(),
        sub.product_secret.clone(),
    ];
    let seen = sdk_saw(
        &d,
        python_client("linkkit_gateway.py", args.to_vec(), 90).await,
    );
    // Both registrations made a device whose secret connects it.
    let registered = &seen["register"]["data"][0];
    let provisioned = &seen["provision"]["data"]["proxieds"][0];
    for (made, name) in [
        (registered, "sdk-registered"),
        (provisioned, "sdk-provisioned"),
    ] {
        assert_eq!(made["deviceName"], name, "{seen}");
        let creds = ironhub_conformance::DeviceCreds {
            device_name: name.into(),
            device_secret: made["deviceSecret"].as_str().expect("a secret").into(),
            ..sub.clone()
        };
        v3::connect(creds.v3_options(&d)).await;
    }
    assert_eq!(seen["topo"]["code"], 200, "{seen}");
    assert_eq!(seen["login"]["code"], 200, "{seen}");
    assert_eq!(seen["login"]["data"][0]["deviceName"], sub.device_name);
    assert_eq!(seen["reply"]["code"], 200, "{seen}");
    assert_eq!(seen["reply"]["id"], "7");
    assert_eq!(seen["echo"]["payload"], "hello via the gateway");
    assert_eq!(seen["logout"]["code"], 200, "{seen}");
    until_state(&d, sub, "offline").await;

    let events = consumer.drain(Duration::from_secs(2)).await;
    let mine = |e: &&amqp::Received| e.header("deviceName") == sub.device_name;
    let upstream: Vec<String> = events
        .iter()
        .filter(mine)
        .filter(|e| e.kind == "upstream")
        .map(|e| e.header("topic").to_owned())
        .collect();
    let post = format!(
        "/sys/{}/{}/thing/event/property/post",
        sub.product_key, sub.device_name
    );
    assert!(upstream.contains(&post), "{upstream:?}");
    assert!(upstream.contains(&sub.user_topic("get")), "{upstream:?}");
    let statuses: Vec<String> = events
        .iter()
        .filter(mine)
        .filter(|e| e.kind == "status")
        .map(|e| {
            let body: Value = serde_json::from_slice(&e.payload).unwrap_or(Value::Null);
            body["status"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    assert_eq!(statuses, ["online", "offline"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sub_devices_log_in_in_batches_share_one_connection_and_leave_with_it() {
    const KEEP_ALIVE_SECS: u64 = 4;
    let d = Deployment::start("[hub]\nkeepalive_min_secs = 1\n").await;
    let tenant = Deployment::unique_tenant("gw-fleet");
    let f = fleet(&d, &tenant, unthrottled(), 200).await;
    let mut opts = f.gateway.v3_options(&d);
    opts.set_keep_alive(Duration::from_secs(KEEP_ALIVE_SECS));
    // A batch of 50 signed entries is about 12 KB, past rumqttc's default of 10 KB.
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (c, mut ev) = v3::connect(opts).await;

    for batch in f.subs.chunks(50) {
        let reply = session_call(
            &c,
            &mut ev,
            &f.gateway,
            "batch_login",
            batch_login(batch),
            |_| {},
        )
        .await;
        assert_eq!(reply["code"], 200, "{reply}");
        assert_eq!(reply["data"].as_array().map(Vec::len), Some(50));
    }
    for sub in [&f.subs[0], &f.subs[199]] {
        assert_eq!(state(&d, sub).await, "online");
    }
    // 200 sub-devices online, one connection open.
    let stats = d.api(Method::GET, "/api/v1/stats", None).await.1;
    assert_eq!(stats["sub_devices_online"], 200, "{stats}");
    assert_eq!(stats["connections_open"], 1, "{stats}");

    // Each sub-device subscribes through the gateway and publishes to itself: 200 messages in
    // and 200 out on the one connection.
    for sub in &f.subs {
        c.subscribe(sub.user_topic("get"), QoS::AtLeastOnce)
            .await
            .unwrap();
        v3::suback(&mut ev).await;
    }
    let mut echoed = HashSet::new();
    for (i, sub) in f.subs.iter().enumerate() {
        c.publish(
            sub.user_topic("get"),
            QoS::AtLeastOnce,
            false,
            format!("m{i}"),
        )
        .await
        .unwrap();
        echoed.insert(v3::next_publish(&mut ev).await.topic);
    }
    let expected: HashSet<String> = f.subs.iter().map(|s| s.user_topic("get")).collect();
    assert_eq!(echoed, expected);

    // The gateway goes silent (its client no longer reads, writes or pings): the hub drops
    // it at 1.5 x its keep-alive, and its sub-devices with it.
    let silent_at = ironhub_core::now_ms();
    let mut offline = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        offline = 0;
        for sub in f.subs.iter().step_by(20) {
            offline += usize::from(state(&d, sub).await == "offline");
        }
        if offline == 10 {
            break;
        }
    }
    assert_eq!(offline, 10, "sampled sub-devices offline");
    // 1.5 x the keep-alive from its last packet (before `silent_at`), and 250 ms for the hub
    // to end 200 sessions and record their events.
    let deadline = silent_at + KEEP_ALIVE_SECS * 1500 + 250;
    let key = d.api_key(&tenant, "history").await;
    let mut latest = 0;
    for sub in &f.subs {
        let path = format!(
            "/api/v1/business/devices/{}/{}/history",
            sub.product_key, sub.device_name
        );
        let (s, _, v) = d
            .api_as(Method::GET, &path, None, &format!("Bearer {key}"))
            .await;
        assert_eq!(s, 200, "{v}");
        let newest = &v["events"][0];
        assert_eq!(newest["status"], "offline", "{}: {v}", sub.device_name);
        let at = newest["time"].as_u64().unwrap();
        latest = latest.max(at);
        assert!(
            at <= deadline,
            "{} offline {} ms after the gateway went silent (keep-alive {KEEP_ALIVE_SECS} s)",
            sub.device_name,
            at - silent_at
        );
    }
    eprintln!(
        "all 200 sub-devices offline {} ms after the gateway went silent (keep-alive {KEEP_ALIVE_SECS} s)",
        latest.saturating_sub(silent_at)
    );
    drop((c, ev));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_and_registrations_answer_with_alibabas_codes() {
    let d = Deployment::start("").await;
    let tenant = Deployment::unique_tenant("gw-refusals");
    let f = fleet(&d, &tenant, unthrottled(), 2).await;
    let stray = d.add_device(&f.subs[0].product_key, "stray").await;
    let (c, mut ev) = v3::connect(f.gateway.v3_options(&d)).await;
    let login = async |c: &rumqttc::AsyncClient, ev: &mut rumqttc::EventLoop, params: Value| {
        session_call(c, ev, &f.gateway, "batch_login", params, |_| {}).await
    };

    // One bad entry refuses the whole batch, and names the entry.
    let refused = login(
        &c,
        &mut ev,
        batch_login(&[f.subs[0].clone(), stray.clone()]),
    )
    .await;
    assert_eq!(refused["code"], 6401, "no topology: {refused}");
    assert_eq!(refused["data"][0]["deviceName"], "stray");
    assert_eq!(state(&d, &f.subs[0]).await, "inactive", "nothing logged in");

    let forged = json!({ "signMethod": "hmacSha256",
                         "deviceList": [login_entry(&f.subs[0], "not-the-secret")] });
    assert_eq!(login(&c, &mut ev, forged).await["code"], 6206);

    let path = format!(
        "/api/v1/products/{}/devices/{}",
        f.subs[1].product_key, f.subs[1].device_name
    );
    let (s, v) = d.api(Method::POST, &format!("{path}/disable"), None).await;
    assert_eq!(s, 200, "{v}");
    let disabled = login(&c, &mut ev, batch_login(&f.subs[1..2])).await;
    assert_eq!(disabled["code"], 6204, "{disabled}");

    // A single login (`combine/login`) answers with the one device.
    let one = session_call(
        &c,
        &mut ev,
        &f.gateway,
        "login",
        json!(login_entry(&f.subs[0], &f.subs[0].device_secret))
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.insert("signMethod".into(), json!("hmacSha256"));
                Value::Object(o)
            })
            .unwrap(),
        |_| {},
    )
    .await;
    assert_eq!(one["code"], 200, "{one}");
    assert_eq!(one["data"]["deviceName"], f.subs[0].device_name);
    assert_eq!(state(&d, &f.subs[0]).await, "online");

    // Logging out what is not logged in names it; then the real logout.
    let not_in = session_call(
        &c,
        &mut ev,
        &f.gateway,
        "batch_logout",
        batch_logout(&f.subs),
        |_| {},
    )
    .await;
    assert_eq!(not_in["code"], 520, "{not_in}");
    assert_eq!(not_in["data"][0]["deviceName"], f.subs[1].device_name);
    let out = session_call(
        &c,
        &mut ev,
        &f.gateway,
        "batch_logout",
        batch_logout(&f.subs[..1]),
        |_| {},
    )
    .await;
    assert_eq!(out["code"], 200, "{out}");
    until_state(&d, &f.subs[0], "offline").await;

    // Registration: the secret of a device active elsewhere is not handed out, and a gateway
    // registers no gateway.
    let _stray_online = v3::connect(stray.v3_options(&d)).await;
    let names = |pk: &str, dn: &str| json!([{ "productKey": pk, "deviceName": dn }]);
    let active = sys_call(
        &c,
        &mut ev,
        &f.gateway,
        "/thing/sub/register",
        names(&stray.product_key, "stray"),
    )
    .await;
    assert_eq!(active["code"], 409, "{active}");
    assert_eq!(active["data"][0]["deviceName"], "stray");
    let ours = sys_call(
        &c,
        &mut ev,
        &f.gateway,
        "/thing/sub/register",
        names(&stray.product_key, &f.subs[0].device_name),
    )
    .await;
    assert_eq!(ours["code"], 200, "its own sub-device's secret: {ours}");
    assert_eq!(ours["data"][0]["deviceSecret"], f.subs[0].device_secret);
    let gateway = sys_call(
        &c,
        &mut ev,
        &f.gateway,
        "/thing/sub/register",
        names(&f.gateway.product_key, "gw-2"),
    )
    .await;
    assert_eq!(gateway["code"], 6402, "{gateway}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_sub_device_is_logged_out_with_a_topo_change_notice() {
    let d = Deployment::start("").await;
    let tenant = Deployment::unique_tenant("gw-disable");
    let f = fleet(&d, &tenant, unthrottled(), 1).await;
    let sub = &f.subs[0];
    let (c, mut ev) = v3::connect(f.gateway.v3_options(&d)).await;
    log_all_in(&c, &mut ev, &f).await;
    assert_eq!(state(&d, sub).await, "online");

    let path = format!(
        "/api/v1/products/{}/devices/{}",
        sub.product_key, sub.device_name
    );
    let (s, v) = d.api(Method::POST, &format!("{path}/disable"), None).await;
    assert_eq!(s, 200, "{v}");
    let notice = topo_change(&mut ev, &f.gateway).await;
    assert_eq!(notice["method"], "thing.topo.change");
    assert_eq!(notice["params"]["status"], 8, "{notice}");
    assert_eq!(
        notice["params"]["subList"][0]["deviceName"],
        sub.device_name
    );
    let state_now = state(&d, sub).await;
    assert_eq!(state_now, "disabled");
    // The sub-device is no longer carried: publishing as it is an ACL violation, which closes
    // an MQTT 3.1.1 connection.
    c.publish(sub.user_topic("get"), QoS::AtLeastOnce, false, "late")
        .await
        .unwrap();
    let closed = tokio::time::timeout(ironhub_conformance::WAIT, async {
        loop {
            match ev.poll().await {
                Err(_) => return true,
                Ok(Event::Incoming(Packet::PubAck(_))) => return false,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("an answer");
    assert!(
        closed,
        "the publish for a logged-out sub-device was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_sub_device_is_logged_out_with_a_topo_change_notice() {
    let d = Deployment::start("").await;
    let f = fleet(
        &d,
        &Deployment::unique_tenant("gw-delete"),
        unthrottled(),
        2,
    )
    .await;
    let (gone, kept) = (&f.subs[0], &f.subs[1]);
    let (c, mut ev) = v3::connect(f.gateway.v3_options(&d)).await;
    log_all_in(&c, &mut ev, &f).await;
    let path = format!(
        "/api/v1/products/{}/devices/{}",
        gone.product_key, gone.device_name
    );
    let (s, v) = d.api(Method::DELETE, &path, None).await;
    assert_eq!(s, 204, "{v}");
    let notice = topo_change(&mut ev, &f.gateway).await;
    assert_eq!(notice["params"]["status"], 1, "{notice}");
    assert_eq!(
        notice["params"]["subList"][0]["deviceName"],
        gone.device_name
    );
    assert_eq!(d.api(Method::GET, &path, None).await.0, 404);
    let stats = d.api(Method::GET, "/api/v1/stats", None).await.1;
    assert_eq!(stats["sub_devices_online"], 1, "{stats}");
    // The other sub-device is still carried: its publish is acknowledged.
    c.publish(
        kept.user_topic("update"),
        QoS::AtLeastOnce,
        false,
        "still here",
    )
    .await
    .unwrap();
    v3::acked(&mut ev).await;
    assert_eq!(state(&d, kept).await, "online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sub_device_is_held_to_its_own_message_rate() {
    let d = Deployment::start("").await;
    let mut profile = unthrottled();
    profile["rates"]["device_messages_qos1"] = json!("2:60");
    let f = fleet(&d, &Deployment::unique_tenant("gw-rates"), profile, 2).await;
    let (c, mut ev) = v3::connect(f.gateway.v3_options(&d)).await;
    log_all_in(&c, &mut ev, &f).await;
    for sub in &f.subs {
        c.subscribe(sub.user_topic("get"), QoS::AtMostOnce)
            .await
            .unwrap();
        v3::suback(&mut ev).await;
    }
    // Three QoS 1 messages from each sub-device: MQTT 3.1.1 acknowledges all of them, and each
    // sub-device's first two go through (charged to the gateway, only two would in all).
    for sub in &f.subs {
        for i in 0..3 {
            c.publish(
                sub.user_topic("get"),
                QoS::AtLeastOnce,
                false,
                format!("{i}"),
            )
            .await
            .unwrap();
        }
    }
    let (mut acks, mut delivered) = (0, std::collections::HashMap::new());
    loop {
        let quiet = if acks < 6 {
            ironhub_conformance::WAIT
        } else {
            Duration::from_secs(1)
        };
        match tokio::time::timeout(quiet, ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acks += 1,
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                *delivered.entry(p.topic).or_insert(0) += 1;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("the gateway's connection failed: {e}"),
            Err(_) => break,
        }
    }
    assert_eq!(acks, 6);
    for sub in &f.subs {
        assert_eq!(
            delivered.get(&sub.user_topic("get")),
            Some(&2),
            "{delivered:?}"
        );
        let usage = usage(&d, sub).await;
        assert_eq!(usage["discarded.L-017"], 1, "{}: {usage}", sub.device_name);
    }
    let usage = usage(&d, &f.gateway).await;
    assert!(usage["discarded.L-017"].is_null(), "the gateway's: {usage}");
}

/// This hour's usage of a device.
async fn usage(d: &Deployment, dev: &ironhub_conformance::DeviceCreds) -> Value {
    let path = format!(
        "/api/v1/products/{}/devices/{}/usage",
        dev.product_key, dev.device_name
    );
    let (s, v) = d.api(Method::GET, &path, None).await;
    assert_eq!(s, 200, "usage: {v}");
    v["usage"]["hour"].clone()
}

/// Answers the next request on the gateway's connection whose topic `is_request` accepts with
/// the topic and payload `answer` gives, once written; returns the request.
async fn answer_next(
    c: &rumqttc::AsyncClient,
    ev: &mut rumqttc::EventLoop,
    is_request: impl Fn(&str) -> bool,
    answer: impl Fn(&rumqttc::Publish) -> (String, Vec<u8>),
) -> rumqttc::Publish {
    loop {
        let p = v3::next_publish(ev).await;
        if is_request(&p.topic) {
            let (topic, payload) = answer(&p);
            c.publish(topic, QoS::AtMostOnce, false, payload)
                .await
                .unwrap();
            // The client writes it when polled.
            loop {
                if let Event::Outgoing(rumqttc::Outgoing::Publish(_)) = ev.poll().await.unwrap() {
                    return p;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_device_gets_downlinks_rrpc_shadow_deltas_and_property_sets_through_its_gateway() {
    let d = Deployment::start("").await;
    let tenant = Deployment::unique_tenant("gw-down");
    let f = fleet(&d, &tenant, unthrottled(), 1).await;
    let sub = &f.subs[0];
    let auth = format!("Bearer {}", d.api_key(&tenant, "down").await);
    let (c, mut ev) = v3::connect(f.gateway.v3_options(&d)).await;
    log_all_in(&c, &mut ev, &f).await;
    let device = json!({ "product_key": sub.product_key, "device_name": sub.device_name });
    let with = |extra: Value| {
        let mut body = device.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let business = |path: &'static str, body: Value| {
        let (d, auth) = (&d, &auth);
        async move {
            let (s, _, v) = d.api_as(Method::POST, path, Some(body), auth).await;
            assert_eq!(s, 200, "{path}: {v}");
            v
        }
    };

    // A downlink to a topic the gateway subscribed for the sub-device.
    c.subscribe(sub.user_topic("get"), QoS::AtLeastOnce)
        .await
        .unwrap();
    v3::suback(&mut ev).await;
    let sent = business(
        "/api/v1/business/pub",
        with(json!({ "topic": sub.user_topic("get"), "payload": "to the sub-device", "qos": 1 })),
    )
    .await;
    assert_eq!(sent["delivered_to"], 1, "{sent}");
    let got = v3::next_publish(&mut ev).await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        (
            sub.user_topic("get").as_str(),
            b"to the sub-device".as_slice()
        )
    );

    // RRPC on /sys: the gateway answers for the sub-device.
    let rrpc = with(json!({ "payload": "ping", "timeout_ms": 5000 }));
    let (answer, request) = tokio::join!(
        business("/api/v1/business/rrpc", rrpc.clone()),
        answer_next(
            &c,
            &mut ev,
            |t| t.contains("/rrpc/request/"),
            |p| (
                p.topic.replace("/rrpc/request/", "/rrpc/response/"),
                b"sys pong".to_vec()
            ),
        )
    );
    let sys_prefix = format!("/sys/{}/{}/rrpc/request/", sub.product_key, sub.device_name);
    assert!(request.topic.starts_with(&sys_prefix), "{}", request.topic);
    assert_eq!(
        (&answer["rrpc_code"], &answer["payload"]),
        (&json!("SUCCESS"), &json!("sys pong")),
        "{answer}"
    );

    // User RRPC: once the gateway subscribed it for the sub-device, the call takes that form.
    let wrapped = format!("/ext/rrpc/+{}", sub.user_topic("cmd"));
    c.subscribe(wrapped, QoS::AtMostOnce).await.unwrap();
    v3::suback(&mut ev).await;
    let (answer, request) = tokio::join!(
        business("/api/v1/business/rrpc", rrpc),
        answer_next(
            &c,
            &mut ev,
            |t| t.starts_with("/ext/rrpc/"),
            |p| (p.topic.to_string(), b"user pong".to_vec()),
        )
    );
    assert!(
        request.topic.ends_with(&sub.user_topic("cmd")),
        "{}",
        request.topic
    );
    assert_eq!(answer["payload"], "user pong", "{answer}");

    // A property set, answered with the sub-device's set_reply.
    let set = with(json!({ "params": { "temperature": 25.5 }, "timeout_ms": 5000 }));
    let set_topic = format!(
        "/sys/{}/{}/thing/service/property/set",
        sub.product_key, sub.device_name
    );
    let (outcome, request) = tokio::join!(
        business("/api/v1/business/properties/set", set),
        answer_next(
            &c,
            &mut ev,
            |t| t == set_topic,
            |p| {
                let call: Value = serde_json::from_slice(&p.payload).unwrap();
                let reply = json!({ "id": call["id"], "code": 200, "data": {} });
                (format!("{}_reply", p.topic), reply.to_string().into_bytes())
            },
        )
    );
    let call: Value = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(call["params"]["temperature"], 25.5, "{call}");
    assert_eq!(
        (&outcome["outcome"], &outcome["code"]),
        (&json!("replied"), &json!(200)),
        "{outcome}"
    );

    // A shadow's desired state reaches the sub-device as a control message.
    let path = format!(
        "/api/v1/business/shadows/{}/{}",
        sub.product_key, sub.device_name
    );
    let desired = json!({ "state": { "desired": { "color": "green" } } });
    let (s, _, v) = d.api_as(Method::PUT, &path, Some(desired), &auth).await;
    assert_eq!(s, 200, "{v}");
    let shadow_topic = format!("/shadow/get/{}/{}", sub.product_key, sub.device_name);
    let delta = loop {
        let p = v3::next_publish(&mut ev).await;
        if p.topic == shadow_topic {
            break serde_json::from_slice::<Value>(&p.payload).unwrap();
        }
    };
    assert_eq!(delta["method"], "control", "{delta}");
    assert_eq!(
        delta["payload"]["state"]["desired"]["color"], "green",
        "{delta}"
    );
}

/// The next `/thing/topo/change` notice of `gateway` (other messages are skipped).
async fn topo_change(
    ev: &mut rumqttc::EventLoop,
    gateway: &ironhub_conformance::DeviceCreds,
) -> Value {
    let change = format!(
        "/sys/{}/{}/thing/topo/change",
        gateway.product_key, gateway.device_name
    );
    loop {
        let p = v3::next_publish(ev).await;
        if p.topic == change {
            return serde_json::from_slice(&p.payload).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_changed_through_the_api_is_told_to_the_gateway() {
    let d = Deployment::start("").await;
    let f = fleet(&d, &Deployment::unique_tenant("gw-cloud"), unthrottled(), 1).await;
    let sub = &f.subs[0];
    let (c, mut ev) = v3::connect(f.gateway.v3_options(&d)).await;
    log_all_in(&c, &mut ev, &f).await;

    let path = format!(
        "/api/v1/products/{}/devices/{}/sub-devices/{}/{}",
        f.gateway.product_key, f.gateway.device_name, sub.product_key, sub.device_name
    );
    assert_eq!(d.api(Method::DELETE, &path, None).await.0, 204);
    let removed = topo_change(&mut ev, &f.gateway).await;
    assert_eq!(removed["params"]["status"], 1, "{removed}");
    assert_eq!(
        removed["params"]["subList"][0]["deviceName"],
        sub.device_name
    );
    until_state(&d, sub, "offline").await;

    assert_eq!(d.api(Method::PUT, &path, None).await.0, 200);
    let added = topo_change(&mut ev, &f.gateway).await;
    assert_eq!(added["params"]["status"], 0, "{added}");
}
