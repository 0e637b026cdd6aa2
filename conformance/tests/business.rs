//! The business API, black-box: a business server with a tenant's API key drives devices that
//! are real MQTT clients (Pub, RRPC, broadcast, status), and can never reach another tenant's.

use std::time::Duration;

use hyper::Method;
use ironhub_conformance::{Deployment, DeviceCreds, v3};
use rumqttc::QoS;
use serde_json::{Value, json};

async fn call(
    d: &Deployment,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let (s, _, v) = d.api_as(method, path, body, &auth).await;
    (s, v)
}

/// A device that answers every RRPC request with `pong:` + the request.
fn rrpc_responder(c: rumqttc::AsyncClient, ev: rumqttc::EventLoop) -> tokio::task::JoinHandle<()> {
    v3::answer_rrpc(c, ev, |request| [b"pong:".as_slice(), request].concat())
}

struct Setup {
    d: Deployment,
    dev: DeviceCreds,
    key: String,
    other_key: String,
    other_dev: DeviceCreds,
}

async fn setup() -> Setup {
    let d = Deployment::start("").await;
    let a = Deployment::unique_tenant("biz-a");
    let b = Deployment::unique_tenant("biz-b");
    let dev = d.provision(&a).await;
    let other_dev = d.provision(&b).await;
    let key = d.api_key(&a, "backend").await;
    let other_key = d.api_key(&b, "backend").await;
    Setup {
        d,
        dev,
        key,
        other_key,
        other_dev,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_status_reach_the_device() {
    let s = setup().await;
    let (d, dev) = (&s.d, &s.dev);
    let (c, mut ev) = v3::connect(dev.v3_options(d)).await;
    c.subscribe(dev.user_topic("get"), QoS::AtLeastOnce)
        .await
        .unwrap();
    v3::suback(&mut ev).await;
    let body = json!({ "product_key": dev.product_key, "device_name": dev.device_name,
                       "topic": dev.user_topic("get"), "payload": "turn on", "qos": 1 });
    let (st, v) = call(d, &s.key, Method::POST, "/api/v1/business/pub", Some(body)).await;
    assert_eq!((st, &v["delivered_to"]), (200, &json!(1)), "{v}");
    let p = v3::next_publish(&mut ev).await;
    assert_eq!(&p.payload[..], b"turn on");
    let binary = json!({ "product_key": dev.product_key, "device_name": dev.device_name,
                         "topic": dev.user_topic("get"), "payload": "AAEC", "encoding": "base64" });
    call(
        d,
        &s.key,
        Method::POST,
        "/api/v1/business/pub",
        Some(binary),
    )
    .await;
    assert_eq!(&v3::next_publish(&mut ev).await.payload[..], &[0, 1, 2]);

    let wrong_topic = json!({ "product_key": dev.product_key, "device_name": dev.device_name,
                              "topic": "/elsewhere/x", "payload": "x" });
    let (st, v) = call(
        d,
        &s.key,
        Method::POST,
        "/api/v1/business/pub",
        Some(wrong_topic),
    )
    .await;
    assert_eq!(st, 400, "{v}");

    let path = format!(
        "/api/v1/business/devices/{}/{}",
        dev.product_key, dev.device_name
    );
    let (st, v) = call(d, &s.key, Method::GET, &path, None).await;
    assert_eq!((st, &v["state"]), (200, &json!("online")), "{v}");

    // Listing keys shows neither the secret nor its hash.
    let keys_path = format!("/api/v1/tenants/{}/api-keys", dev.tenant);
    let (st, keys) = d.api(Method::GET, &keys_path, None).await;
    assert_eq!(st, 200);
    let listed = keys.to_string();
    assert!(
        keys[0]["id"].is_string() && !listed.contains("secret"),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrpc_succeeds_times_out_or_finds_the_device_offline() {
    let s = setup().await;
    let (d, dev) = (&s.d, &s.dev);
    let call_rrpc = |dn: &str, timeout_ms: u64| {
        json!({ "product_key": dev.product_key, "device_name": dn, "payload": "ping",
                "timeout_ms": timeout_ms })
    };
    let offline = d.add_device(&dev.product_key, "sleeper").await;
    let (st, v) = call(
        d,
        &s.key,
        Method::POST,
        "/api/v1/business/rrpc",
        Some(call_rrpc(&offline.device_name, 8000)),
    )
    .await;
    assert_eq!((st, &v["rrpc_code"]), (200, &json!("OFFLINE")), "{v}");

    let (c, ev) = v3::connect(dev.v3_options(d)).await;
    let responder = rrpc_responder(c, ev);
    let (st, v) = call(
        d,
        &s.key,
        Method::POST,
        "/api/v1/business/rrpc",
        Some(call_rrpc(&dev.device_name, 8000)),
    )
    .await;
    assert_eq!((st, &v["rrpc_code"]), (200, &json!("SUCCESS")), "{v}");
    assert_eq!(v["payload"], "pong:ping");
    responder.abort();

    // Online but silent: TIMEOUT after the requested time.
    let silent = d.add_device(&dev.product_key, "silent").await;
    let (_c2, mut ev2) = v3::connect(silent.v3_options(d)).await;
    let keep = tokio::spawn(async move { while ev2.poll().await.is_ok() {} });
    let started = std::time::Instant::now();
    let (st, v) = call(
        d,
        &s.key,
        Method::POST,
        "/api/v1/business/rrpc",
        Some(call_rrpc(&silent.device_name, 1000)),
    )
    .await;
    assert_eq!((st, &v["rrpc_code"]), (200, &json!("TIMEOUT")), "{v}");
    assert!(started.elapsed() >= Duration::from_millis(1000));
    keep.abort();
}

/// A device that answers the Link SDK's RRPC requests (`/ext/rrpc/{id}/...`) on the request's
/// own topic with `answer(payload)`, and counts every message it receives.
fn ext_rrpc_responder(
    c: rumqttc::AsyncClient,
    mut ev: rumqttc::EventLoop,
    answer: impl Fn(&[u8]) -> Vec<u8> + Send + 'static,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = received.clone();
    let task = tokio::spawn(async move {
        while let Ok(e) = ev.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = e {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if p.topic.starts_with("/ext/rrpc/") {
                    c.publish(p.topic, QoS::AtMostOnce, false, answer(&p.payload))
                        .await
                        .unwrap();
                }
            }
        }
    });
    (task, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrpc_in_the_link_sdks_forms_user_topics_and_service_calls() {
    let s = setup().await;
    let (d, dev) = (&s.d, &s.dev);
    let (pk, dn) = (&dev.product_key, &dev.device_name);
    let rrpc = async |extra: Value| {
        let mut body = json!({ "product_key": pk, "device_name": dn, "timeout_ms": 4000 });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        call(d, &s.key, Method::POST, "/api/v1/business/rrpc", Some(body)).await
    };
    // User RRPC: the device subscribed /ext/rrpc/+{topic} and answers on the request's topic.
    let (c, mut ev) = v3::connect(dev.v3_options(d)).await;
    let user = format!("/{pk}/{dn}/user/cmd");
    c.subscribe(format!("/ext/rrpc/+{user}"), QoS::AtMostOnce)
        .await
        .unwrap();
    assert_eq!(
        v3::suback(&mut ev).await,
        [rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    let (responder, received) =
        ext_rrpc_responder(c, ev, |request| [b"pong:".as_slice(), request].concat());
    let (st, v) = rrpc(json!({ "topic": user, "payload": "ping" })).await;
    assert_eq!((st, &v["rrpc_code"]), (200, &json!("SUCCESS")), "{v}");
    assert_eq!(v["payload"], "pong:ping");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        received.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the device got the request and not its own answer back"
    );
    responder.abort();

    // A synchronous service call: Alink JSON with a string id, no subscription needed.
    let (c, ev) = v3::connect(dev.v3_options(d)).await;
    let (responder, _) = ext_rrpc_responder(c, ev, |request| {
        let call: Value = serde_json::from_slice(request).unwrap();
        assert!(call["id"].is_string(), "{call}");
        let data = json!({ "method": call["method"], "echo": call["params"]["color"] });
        json!({ "id": call["id"], "code": 200, "data": data })
            .to_string()
            .into_bytes()
    });
    let (st, v) = rrpc(json!({ "service": "setColor", "payload": r#"{"color":"red"}"# })).await;
    assert_eq!((st, &v["rrpc_code"]), (200, &json!("SUCCESS")), "{v}");
    let answer: Value = serde_json::from_str(v["payload"].as_str().unwrap()).unwrap();
    assert_eq!(answer["code"], 200);
    assert_eq!(answer["id"], v["message_id"]);
    assert_eq!(
        answer["data"],
        json!({ "method": "thing.service.setColor", "echo": "red" })
    );
    responder.abort();

    // Calls that cannot be made are refused with the reason.
    for (extra, says) in [
        (
            json!({ "topic": user, "service": "s", "payload": "x" }),
            "not both",
        ),
        (
            json!({ "topic": format!("/{pk}/other/user/cmd"), "payload": "x" }),
            "own",
        ),
        (
            json!({ "topic": format!("/{pk}/{dn}/user/+"), "payload": "x" }),
            "wildcards",
        ),
        (
            json!({ "service": "set color", "payload": "{}" }),
            "identifier",
        ),
        (
            json!({ "service": "setColor", "payload": "[1]" }),
            "JSON object",
        ),
    ] {
        let (st, v) = rrpc(extra.clone()).await;
        assert_eq!(st, 400, "{extra}: {v}");
        assert!(v.to_string().contains(says), "{extra}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_online_device_of_the_product_and_no_other() {
    let s = setup().await;
    let (d, dev) = (&s.d, &s.dev);
    let second = d.add_device(&dev.product_key, "dev-2").await;
    let (s2, p2) = d
        .api(
            Method::POST,
            "/api/v1/products",
            Some(json!({ "tenant": dev.tenant, "name": "other" })),
        )
        .await;
    assert_eq!(s2, 201);
    let elsewhere = d
        .add_device(p2["product_key"].as_str().unwrap(), "dev-x")
        .await;
    let mut loops = Vec::new();
    for device in [dev, &second, &elsewhere] {
        let (c, ev) = v3::connect(device.v3_options(d)).await;
        loops.push((c, ev));
    }
    let body = json!({ "product_key": dev.product_key, "payload": "firmware 1.2 is out" });
    let (st, v) = call(
        d,
        &s.key,
        Method::POST,
        "/api/v1/business/broadcast",
        Some(body),
    )
    .await;
    assert_eq!((st, &v["delivered_to"]), (200, &json!(2)), "{v}");
    let id = v["message_id"].as_str().unwrap().to_owned();
    let mut got = Vec::new();
    for (i, (_c, ev)) in loops.iter_mut().enumerate() {
        if let Some(p) =
            v3::next_publish_within(ev, Duration::from_secs(if i < 2 { 5 } else { 1 })).await
        {
            got.push((
                i,
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            ));
        }
    }
    let expected: Vec<(usize, String, String)> = [dev, &second]
        .iter()
        .enumerate()
        .map(|(i, x)| {
            (
                i,
                format!(
                    "/sys/{}/{}/broadcast/request/{id}",
                    x.product_key, x.device_name
                ),
                "firmware 1.2 is out".to_owned(),
            )
        })
        .collect();
    assert_eq!(got, expected, "the product's devices only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_never_reaches_another_tenants_devices() {
    let s = setup().await;
    let (d, dev) = (&s.d, &s.dev);
    let (_c, mut ev) = v3::connect(dev.v3_options(d)).await;
    let keep = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let target = json!({ "product_key": dev.product_key, "device_name": dev.device_name });
    let mut pub_body = target.clone();
    pub_body["topic"] = json!(dev.user_topic("get"));
    pub_body["payload"] = json!("x");
    let mut rrpc_body = target.clone();
    rrpc_body["payload"] = json!("x");
    let broadcast_body = json!({ "product_key": dev.product_key, "payload": "x" });
    let status = format!(
        "/api/v1/business/devices/{}/{}",
        dev.product_key, dev.device_name
    );
    let requests = [
        (Method::POST, "/api/v1/business/pub", Some(pub_body)),
        (Method::POST, "/api/v1/business/rrpc", Some(rrpc_body)),
        (
            Method::POST,
            "/api/v1/business/broadcast",
            Some(broadcast_body),
        ),
        (Method::GET, status.as_str(), None),
    ];
    for (method, path, body) in requests {
        let (st, v) = call(d, &s.other_key, method.clone(), path, body.clone()).await;
        assert_eq!(st, 404, "another tenant's key on {path}: {v}");
        let (st, _) = call(d, "ak-unknown.secret", method.clone(), path, body.clone()).await;
        assert_eq!(st, 401, "an unknown key on {path}");
        let forged = format!("{}x", s.key);
        let (st, _) = call(d, &forged, method.clone(), path, body).await;
        assert_eq!(st, 401, "a wrong secret on {path}");
    }
    // The other tenant's key works on its own device.
    let own = format!(
        "/api/v1/business/devices/{}/{}",
        s.other_dev.product_key, s.other_dev.device_name
    );
    let (st, v) = call(d, &s.other_key, Method::GET, &own, None).await;
    assert_eq!((st, &v["state"]), (200, &json!("inactive")), "{v}");
    keep.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_listed_by_page_and_state_with_their_history() {
    let s = setup().await;
    let (d, dev) = (&s.d, &s.dev);
    for i in 2..=5 {
        d.add_device(&dev.product_key, &format!("dev-{i}")).await;
    }
    let (c, mut ev) = v3::connect(dev.v3_options(d)).await;
    let list = |q: &str| {
        format!(
            "/api/v1/business/devices?product_key={}{q}",
            dev.product_key
        )
    };
    let names = |v: &Value| -> Vec<String> {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["device_name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (st, first) = call(d, &s.key, Method::GET, &list("&page_size=2"), None).await;
    assert_eq!(st, 200, "{first}");
    assert_eq!(names(&first), ["dev-1", "dev-2"]);
    let next = first["next"].as_str().unwrap().to_owned();
    let (_, second) = call(
        d,
        &s.key,
        Method::GET,
        &list(&format!("&page_size=2&after={next}")),
        None,
    )
    .await;
    assert_eq!(names(&second), ["dev-3", "dev-4"]);
    let (_, last) = call(
        d,
        &s.key,
        Method::GET,
        &list("&page_size=2&after=dev-4"),
        None,
    )
    .await;
    assert_eq!(
        (names(&last), &last["next"]),
        (vec!["dev-5".to_owned()], &Value::Null)
    );
    let (_, online) = call(d, &s.key, Method::GET, &list("&state=online"), None).await;
    assert_eq!(names(&online), ["dev-1"]);
    let (st, _) = call(d, &s.other_key, Method::GET, &list(""), None).await;
    assert_eq!(st, 404, "another tenant's product");

    c.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while ev.poll().await.is_ok() {}
    })
    .await;
    let history = format!(
        "/api/v1/business/devices/{}/{}/history",
        dev.product_key, dev.device_name
    );
    // Written in the background: wait for both changes.
    let mut statuses = Vec::new();
    for _ in 0..50 {
        let (_, v) = call(d, &s.key, Method::GET, &history, None).await;
        statuses = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["status"].as_str().unwrap().to_owned())
            .collect();
        if statuses.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses, ["offline", "online"], "newest first");
    let (st, _) = call(d, &s.other_key, Method::GET, &history, None).await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rules_models_and_categories_survive_a_restart() {
    let s = setup().await;
    let mut d = s.d;
    let dev = &s.dev;
    let rule = json!({ "name": "r", "sql": "SELECT * FROM '/#'",
                       "destinations": [{ "kind": "topic", "topic": "/copy/x" }] });
    let (st, r) = d
        .api(
            Method::POST,
            &format!("/api/v1/tenants/{}/rules", dev.tenant),
            Some(rule),
        )
        .await;
    assert_eq!(st, 201, "{r}");
    let model = json!({ "properties": [{ "identifier": "t",
        "dataType": { "type": "int", "specs": { "min": 0, "max": 9 } } }] });
    let tsl = format!("/api/v1/products/{}/tsl", dev.product_key);
    assert_eq!(d.api(Method::PUT, &tsl, Some(model)).await.0, 200);
    let topics = format!("/api/v1/products/{}/topics", dev.product_key);
    let categories =
        json!([{ "topic": "/${productKey}/${deviceName}/user/get", "operation": "all" }]);
    assert_eq!(d.api(Method::PUT, &topics, Some(categories)).await.0, 200);

    d.restart().await;

    let status = format!(
        "/api/v1/business/devices/{}/{}",
        dev.product_key, dev.device_name
    );
    let (st, _) = call(&d, &s.key, Method::GET, &status, None).await;
    assert_eq!(st, 200, "the API key still works");
    let rules = format!("/api/v1/tenants/{}/rules", dev.tenant);
    assert_eq!(d.api(Method::GET, &rules, None).await.1[0]["id"], r["id"]);
    assert_eq!(
        d.api(Method::GET, &tsl, None).await.1["properties"][0]["identifier"],
        "t"
    );
    assert_eq!(
        d.api(Method::GET, &topics, None).await.1[0]["operation"],
        "all"
    );
}

/// The admin API with a tenant's key (what the web console signs in with): the tenant's own
/// products, devices, recent messages, shadows and usage, nothing of another tenant (404) and
/// nothing hub-wide (403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_key_on_the_admin_api_reaches_its_own_tenant_only() {
    let s = setup().await;
    let (d, dev, key) = (&s.d, &s.dev, s.key.as_str());
    let (pk, tenant) = (&dev.product_key, &dev.tenant);

    let (st, who) = call(d, key, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(
        (st, who["role"].as_str(), who["tenant"].as_str()),
        (200, Some("tenant"), Some(tenant.as_str()))
    );
    let (st, tenants) = call(d, key, Method::GET, "/api/v1/tenants", None).await;
    assert_eq!(st, 200);
    let ids: Vec<&str> = tenants
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [tenant.as_str()], "only its own tenant");
    let (st, products) = call(d, key, Method::GET, "/api/v1/products", None).await;
    assert_eq!(st, 200);
    assert!(
        products
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["tenant"] == json!(tenant)),
        "{products}"
    );

    // Its own registry: create, disable, publish, read back.
    let (st, created) = call(
        d,
        key,
        Method::POST,
        &format!("/api/v1/products/{pk}/devices"),
        Some(json!({ "device_name": "by-key" })),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    assert!(
        created["device_secret"]
            .as_str()
            .is_some_and(|s| s.len() == 32),
        "the secret is shown once: {created}"
    );
    let (st, listed) = call(
        d,
        key,
        Method::GET,
        &format!("/api/v1/products/{pk}/devices/by-key"),
        None,
    )
    .await;
    assert_eq!(
        (st, listed.get("device_secret")),
        (200, None),
        "and never again: {listed}"
    );
    let (c, mut ev) = v3::connect(dev.v3_options(d)).await;
    c.publish(
        dev.user_topic("data"),
        QoS::AtLeastOnce,
        false,
        vec![0xffu8, 0x00],
    )
    .await
    .unwrap();
    v3::acked(&mut ev).await;
    // The view keeps at most one message per 100 ms of a device (docs/operations.md).
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.publish(
        dev.user_topic("data"),
        QoS::AtLeastOnce,
        false,
        "{\"t\":21.5}",
    )
    .await
    .unwrap();
    v3::acked(&mut ev).await;
    let path = format!("/api/v1/products/{pk}/devices/{}/messages", dev.device_name);
    let (st, recent) = call(d, key, Method::GET, &path, None).await;
    assert_eq!(st, 200, "{recent}");
    let m = recent["messages"].as_array().unwrap();
    assert_eq!(m.len(), 2, "{recent}");
    assert_eq!(
        (m[0]["preview"].as_str(), m[0]["encoding"].as_str()),
        (Some("{\"t\":21.5}"), Some("text")),
        "newest first"
    );
    assert_eq!(
        (m[1]["preview"].as_str(), m[1]["encoding"].as_str()),
        (Some("/wA="), Some("base64"))
    );
    assert_eq!(m[0]["topic"], json!(dev.user_topic("data")));
    let shadow = format!("/api/v1/products/{pk}/devices/{}/shadow", dev.device_name);
    assert_eq!(call(d, key, Method::GET, &shadow, None).await.0, 200);
    let (st, usage) = call(
        d,
        key,
        Method::GET,
        &format!("/api/v1/tenants/{tenant}/usage"),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(usage["monthly"][0]["used"], 2, "{usage}");
    assert_eq!(usage["monthly"][0]["state"], "ok");

    // Another tenant's things do not exist for it.
    let other_pk = &s.other_dev.product_key;
    for path in [
        format!("/api/v1/products/{other_pk}"),
        format!("/api/v1/products/{other_pk}/devices"),
        format!(
            "/api/v1/products/{other_pk}/devices/{}/messages",
            s.other_dev.device_name
        ),
        format!("/api/v1/tenants/{}/usage", s.other_dev.tenant),
        format!("/api/v1/tenants/{}/api-keys", s.other_dev.tenant),
    ] {
        let (st, v) = call(d, key, Method::GET, &path, None).await;
        assert_eq!(st, 404, "{path}: {v}");
    }
    let (st, v) = call(
        d,
        key,
        Method::POST,
        "/api/v1/products",
        Some(json!({ "tenant": s.other_dev.tenant, "name": "x" })),
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    // Hub-wide operations stay with the admin token.
    for (method, path, body) in [
        (Method::GET, "/api/v1/stats".to_owned(), None),
        (Method::GET, "/api/v1/profiles".to_owned(), None),
        (
            Method::POST,
            "/api/v1/tenants".to_owned(),
            Some(json!({ "id": "x" })),
        ),
        (
            Method::PUT,
            format!("/api/v1/tenants/{tenant}/profile"),
            Some(json!({ "profile": "default" })),
        ),
        (Method::DELETE, format!("/api/v1/tenants/{tenant}"), None),
    ] {
        let (st, v) = call(d, key, method.clone(), &path, body).await;
        assert_eq!(st, 403, "{method} {path}: {v}");
    }
    let (st, v) = call(d, "nope.nope", Method::GET, "/api/v1/products", None).await;
    assert_eq!((st, v["error"].as_str()), (401, Some("unauthorized")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_a_path_does_not_serve_is_405_naming_the_ones_it_does() {
    let d = Deployment::start("").await;
    for (method, path, allow) in [
        (Method::PATCH, "/api/v1/tenants", "GET, POST"),
        (Method::PUT, "/api/v1/tenants/acme/", "DELETE, GET"),
        (Method::GET, "/api/v1/business/pub", "POST"),
        (Method::POST, "/healthz", "GET"),
    ] {
        let (status, headers, body) = d.api_with_headers(method.clone(), path, None).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(headers["allow"], allow, "{method} {path}");
        assert_eq!(body["error"], "method_not_allowed");
    }
    let (status, _, body) = d
        .api_with_headers(Method::GET, "/api/v1/no-such-thing", None)
        .await;
    assert_eq!(status, 404, "an unknown path stays 404: {body}");
}
