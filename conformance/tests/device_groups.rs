//! Device groups and tags, black-box: devices of two products tagged through the API and by
//! the device itself (`thing/deviceinfo/update`), found by tag and by group; a group across
//! both products with a sub-group, its tags and the products'; the group as the target of a
//! business message, a service call, a property set and an event query (rumqttc devices, one outside the group
//! that must get nothing) and of an upgrade batch; what a deleted group or device leaves behind.

use std::time::Duration;

use hyper::Method;
use ironhub_conformance::http::Http;
use ironhub_conformance::ota::{self, upload};
use ironhub_conformance::{Deployment, DeviceCreds, gateway, v3};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use serde_json::{Value, json};

async fn ok(d: &Deployment, method: Method, path: &str, body: Option<Value>) -> Value {
    let (s, v) = d.api(method.clone(), path, body).await;
    assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
    v
}

/// `pk/dn` of each device of a page.
fn names(page: &Value) -> Vec<String> {
    page["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["product_key"].as_str().unwrap(),
                d["device_name"].as_str().unwrap()
            )
        })
        .collect()
}

fn name(dev: &DeviceCreds) -> String {
    format!("{}/{}", dev.product_key, dev.device_name)
}

fn device_ref(dev: &DeviceCreds) -> Value {
    json!({ "product_key": dev.product_key, "device_name": dev.device_name })
}

/// Answers every property set the device gets with 200 until aborted; counts them.
fn answer_sets(c: AsyncClient, mut ev: EventLoop) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut answered = 0;
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = ev.poll().await
                && p.topic.ends_with("/thing/service/property/set")
            {
                let request: Value = serde_json::from_slice(&p.payload).expect("JSON");
                let reply = json!({ "id": request["id"], "code": 200, "data": {} });
                c.publish(
                    format!("{}_reply", p.topic),
                    QoS::AtMostOnce,
                    false,
                    reply.to_string(),
                )
                .await
                .expect("answer");
                answered += 1;
                if answered == 1 {
                    // Nothing else is expected: give the answer time to leave, then stop.
                    let _ = tokio::time::timeout(Duration::from_millis(300), async {
                        loop {
                            let _ = ev.poll().await;
                        }
                    })
                    .await;
                    return answered;
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_tags_find_devices_and_address_them_across_products() {
    let (d, _) = Http::start(ota::CONFIG).await;
    let tenant = Deployment::unique_tenant("groups");
    let a1 = d.provision(&tenant).await;
    let a2 = d.add_device(&a1.product_key, "dev-2").await;
    let a3 = d.add_device(&a1.product_key, "dev-3").await;
    let b1 = d.provision(&tenant).await;
    assert_ne!(a1.product_key, b1.product_key);

    // Tags from the API and from the device itself; the search follows every change.
    for (dev, site) in [
        (&a1, "greenhouse-3"),
        (&a2, "greenhouse-4"),
        (&b1, "greenhouse-3"),
    ] {
        let path = format!(
            "/api/v1/products/{}/devices/{}/tags",
            dev.product_key, dev.device_name
        );
        ok(&d, Method::PUT, &path, Some(json!({ "site": site }))).await;
    }
    let (c3, mut ev3) = v3::connect(a3.v3_options(&d)).await;
    let tag = |site: &str| json!([{ "attrKey": "site", "attrValue": site }]);
    let r = gateway::sys_call(
        &c3,
        &mut ev3,
        &a3,
        "/thing/deviceinfo/update",
        tag("greenhouse-3"),
    )
    .await;
    assert_eq!(r["code"], 200, "{r}");
    let search = format!("/api/v1/tenants/{tenant}/devices?tag=site:greenhouse-3");
    let mut expected = vec![name(&a1), name(&a3), name(&b1)];
    expected.sort();
    assert_eq!(names(&ok(&d, Method::GET, &search, None).await), expected);
    let r = gateway::sys_call(
        &c3,
        &mut ev3,
        &a3,
        "/thing/deviceinfo/update",
        tag("greenhouse-4"),
    )
    .await;
    assert_eq!(r["code"], 200, "{r}");
    let mut expected = vec![name(&a1), name(&b1)];
    expected.sort();
    assert_eq!(names(&ok(&d, Method::GET, &search, None).await), expected);
    let first = ok(&d, Method::GET, &format!("{search}&limit=1"), None).await;
    let next = first["next"].as_str().expect("a next page");
    let second = ok(
        &d,
        Method::GET,
        &format!("{search}&limit=1&after={next}"),
        None,
    )
    .await;
    assert_eq!([names(&first), names(&second)].concat(), expected);

    // A group across both products, with a sub-group; tags of groups and products.
    let groups = format!("/api/v1/tenants/{tenant}/device-groups");
    let (s, g) = d
        .api(
            Method::POST,
            &groups,
            Some(json!({ "name": "Greenhouse 3" })),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let gid = g["id"].as_str().expect("id").to_owned();
    let body = json!({ "devices": [device_ref(&a1), device_ref(&b1)] });
    let added = ok(
        &d,
        Method::POST,
        &format!("{groups}/{gid}/devices"),
        Some(body),
    )
    .await;
    assert_eq!(added["device_count"], 2, "{added}");
    let (s, row) = d
        .api(
            Method::POST,
            &groups,
            Some(json!({ "name": "Row 1", "parent_id": gid })),
        )
        .await;
    assert_eq!(s, 201, "{row}");
    let row_id = row["id"].as_str().expect("id").to_owned();
    let mut parent = row_id.clone();
    let mut nested = vec![row_id.clone()];
    for level in 3..=5 {
        let (s, v) = d
            .api(
                Method::POST,
                &groups,
                Some(json!({ "name": format!("level {level}"), "parent_id": parent })),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        parent = v["id"].as_str().expect("id").to_owned();
        nested.push(parent.clone());
    }
    let (s, too_deep) = d
        .api(
            Method::POST,
            &groups,
            Some(json!({ "name": "level 6", "parent_id": parent })),
        )
        .await;
    assert_eq!(s, 400, "five levels at most: {too_deep}");
    let (s, orphan) = d
        .api(
            Method::POST,
            &groups,
            Some(json!({ "name": "x", "parent_id": "nope" })),
        )
        .await;
    assert_eq!(s, 404, "{orphan}");
    let listed = ok(&d, Method::GET, &groups, None).await;
    let listed = listed.as_array().expect("groups");
    assert_eq!(listed.len(), 5);
    assert!(
        listed
            .iter()
            .any(|g| g["id"] == row_id && g["parent_id"] == gid.as_str())
    );
    let tagged = ok(
        &d,
        Method::PUT,
        &format!("{groups}/{gid}/tags"),
        Some(json!({ "crop": "tomato" })),
    )
    .await;
    assert_eq!(tagged["tags"], json!({ "crop": "tomato" }));
    let product_tags = format!("/api/v1/products/{}/tags", a1.product_key);
    ok(
        &d,
        Method::PUT,
        &product_tags,
        Some(json!({ "vendor": "acme", "model": "t1" })),
    )
    .await;
    assert_eq!(
        d.api(Method::DELETE, &format!("{product_tags}/model"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        ok(&d, Method::GET, &product_tags, None).await,
        json!({ "vendor": "acme" })
    );
    let of_a1 = format!(
        "/api/v1/products/{}/devices/{}/groups",
        a1.product_key, a1.device_name
    );
    assert_eq!(
        ok(&d, Method::GET, &of_a1, None).await[0]["id"],
        gid.as_str()
    );
    let members = ok(&d, Method::GET, &format!("{groups}/{gid}/devices"), None).await;
    let mut expected_members = vec![name(&a1), name(&b1)];
    expected_members.sort();
    assert_eq!(names(&members), expected_members);
    let in_group = format!("/api/v1/tenants/{tenant}/devices?tag=site:greenhouse-4&group={gid}");
    assert!(names(&ok(&d, Method::GET, &in_group, None).await).is_empty());

    // The business API addresses the group: a message, events, a property set.
    let auth = format!("Bearer {}", d.api_key(&tenant, "groups").await);
    let business = async |method: Method, path: &str, body: Option<Value>| -> Value {
        let (s, _, v) = d.api_as(method, path, body, &auth).await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    };
    let mut devices = Vec::new();
    for dev in [&a1, &b1, &a2] {
        let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
        c.subscribe(dev.user_topic("get"), QoS::AtMostOnce)
            .await
            .unwrap();
        v3::suback(&mut ev).await;
        devices.push((dev, c, ev));
    }
    let sent = business(
        Method::POST,
        &format!("/api/v1/business/groups/{gid}/pub"),
        Some(json!({ "topic": "/${productKey}/${deviceName}/user/get", "payload": "water now" })),
    )
    .await;
    assert_eq!(
        (&sent["devices"], &sent["delivered_to"]),
        (&json!(2), &json!(2)),
        "{sent}"
    );
    for (dev, _, ev) in &mut devices[..2] {
        let p = v3::next_publish(ev).await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..]),
            (dev.user_topic("get").as_str(), &b"water now"[..])
        );
    }
    let (_, _, outsider) = &mut devices[2];
    assert!(
        v3::next_publish_within(outsider, Duration::from_millis(500))
            .await
            .is_none(),
        "a device outside the group gets nothing"
    );

    for (i, (dev, c, ev)) in devices.iter_mut().enumerate() {
        let event = json!({ "value": { "level": i }, "time": ironhub_core::now_ms() - 1000 + i as u64 * 100 });
        let r = gateway::sys_call_at(
            c,
            ev,
            dev,
            ("/thing/event/dry/post", QoS::AtLeastOnce),
            event,
        )
        .await;
        assert_eq!(r["code"], 200, "{r}");
    }
    let events = business(
        Method::GET,
        &format!("/api/v1/business/groups/{gid}/events?identifier=dry"),
        None,
    )
    .await;
    let seen: Vec<(String, Value)> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                format!(
                    "{}/{}",
                    e["product_key"].as_str().unwrap(),
                    e["device_name"].as_str().unwrap()
                ),
                e["value"]["level"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [(name(&b1), json!(1)), (name(&a1), json!(0))],
        "newest first, members only"
    );

    let invoked = business(
        Method::POST,
        &format!("/api/v1/business/groups/{gid}/services/invoke"),
        Some(json!({ "service": "water", "params": { "duration": 5 } })),
    )
    .await;
    let sent: Vec<(String, Value)> = invoked
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let device = format!(
                "{}/{}",
                r["product_key"].as_str().unwrap(),
                r["device_name"].as_str().unwrap()
            );
            (device, r["result"]["outcome"].clone())
        })
        .collect();
    assert_eq!(
        sent,
        [
            (expected_members[0].clone(), json!("sent")),
            (expected_members[1].clone(), json!("sent"))
        ],
        "{invoked}"
    );

    let mut responders = Vec::new();
    for (_, c, ev) in devices {
        responders.push(answer_sets(c, ev));
    }
    let set = business(
        Method::POST,
        &format!("/api/v1/business/groups/{gid}/properties/set"),
        Some(json!({ "params": { "target": 21 }, "timeout_ms": 3000 })),
    )
    .await;
    let outcomes: Vec<(String, Value)> = set
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                format!(
                    "{}/{}",
                    r["product_key"].as_str().unwrap(),
                    r["device_name"].as_str().unwrap()
                ),
                r["result"]["code"].clone(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (expected_members[0].clone(), json!(200)),
            (expected_members[1].clone(), json!(200))
        ],
        "{set}"
    );
    let outsider = responders.pop().expect("the outsider");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !outsider.is_finished(),
        "a device outside the group is not set"
    );
    outsider.abort();
    for r in responders {
        assert_eq!(r.await.expect("responder"), 1);
    }

    // An upgrade batch for the group: its devices of the package's product.
    let query = format!("product_key={}&version=2.0", a1.product_key);
    let (s, package) = upload(&d, &tenant, &query, &ota::firmware(1000, 3)).await;
    assert_eq!(s, 201, "{package}");
    let made = ota::batch(
        &d,
        &tenant,
        json!({ "package_id": package["id"], "target": { "kind": "group", "group_id": gid } }),
    )
    .await;
    assert_eq!(
        made["devices"], 1,
        "only a1 is of the package's product: {made}"
    );

    // A group with sub-groups stays; deleted, its devices leave it. A deleted device leaves
    // its groups and the tag index.
    assert_eq!(
        d.api(Method::DELETE, &format!("{groups}/{gid}"), None)
            .await
            .0,
        409
    );
    assert_eq!(
        d.api(
            Method::DELETE,
            &format!(
                "/api/v1/products/{}/devices/{}",
                b1.product_key, b1.device_name
            ),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        names(&ok(&d, Method::GET, &search, None).await),
        [name(&a1)]
    );
    assert_eq!(
        ok(&d, Method::GET, &format!("{groups}/{gid}"), None).await["device_count"],
        1
    );
    // Deepest first: each deletion leaves its parent without sub-groups.
    for id in nested.iter().rev() {
        assert_eq!(
            d.api(Method::DELETE, &format!("{groups}/{id}"), None)
                .await
                .0,
            204
        );
    }
    assert_eq!(
        d.api(Method::DELETE, &format!("{groups}/{gid}"), None)
            .await
            .0,
        204
    );
    assert_eq!(ok(&d, Method::GET, &of_a1, None).await, json!([]));

    // The command line.
    let made = d
        .cli(&[
            "device-group",
            "create",
            "--tenant",
            &tenant,
            "--name",
            "cli",
        ])
        .await
        .expect("device-group create");
    let id = made["id"].as_str().expect("id");
    let a1_name = name(&a1);
    let added = d
        .cli(&[
            "device-group",
            "add",
            "--tenant",
            &tenant,
            "--id",
            id,
            "--devices",
            &a1_name,
        ])
        .await
        .expect("device-group add");
    assert_eq!(added["device_count"], 1);
    let found = d
        .cli(&[
            "device-group",
            "search",
            "--tenant",
            &tenant,
            "--tag",
            "site:greenhouse-3",
            "--group",
            id,
        ])
        .await
        .expect("device-group search");
    assert_eq!(names(&found), [a1_name]);
}
