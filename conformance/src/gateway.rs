//! Gateways and their sub-devices as the Link SDK drives them: a fleet (a gateway product and
//! device, sub-devices attached to it), login entries signed as the SDK signs them, and the
//! `/ext/session/.../combine/...` and `/sys/...` requests answered on `..._reply`.

use hyper::Method;
use rumqttc::{AsyncClient, EventLoop, QoS};
use serde_json::{Value, json};

use crate::{Deployment, DeviceCreds, v3};

/// A gateway and its sub-devices, attached through the admin API.
pub struct Fleet {
    /// The gateway.
    pub gateway: DeviceCreds,
    /// Its sub-devices, of one product.
    pub subs: Vec<DeviceCreds>,
}

/// Creates a gateway product of `tenant` and its device `gw-1`.
pub async fn gateway_device(d: &Deployment, tenant: &str) -> DeviceCreds {
    let (s, p) = d
        .api(
            Method::POST,
            "/api/v1/products",
            Some(json!({ "tenant": tenant, "name": "gw", "node_type": "gateway" })),
        )
        .await;
    assert_eq!(s, 201, "gateway product: {p}");
    d.add_device(p["product_key"].as_str().expect("product_key"), "gw-1")
        .await
}

/// Creates a tenant with `profile`, a gateway and `subs` sub-devices attached to it.
pub async fn fleet(d: &Deployment, tenant: &str, profile: Value, subs: usize) -> Fleet {
    let first = d.tenant_with_profile(tenant, profile).await;
    let gateway = gateway_device(d, tenant).await;
    let mut all = vec![first.clone()];
    for i in 1..subs {
        all.push(d.add_device(&first.product_key, &format!("sub-{i}")).await);
    }
    for sub in &all {
        attach(d, &gateway, sub).await;
    }
    Fleet { gateway, subs: all }
}

/// Attaches `sub` to `gateway` through the admin API.
pub async fn attach(d: &Deployment, gateway: &DeviceCreds, sub: &DeviceCreds) {
    let path = format!(
        "/api/v1/products/{}/devices/{}/sub-devices/{}/{}",
        gateway.product_key, gateway.device_name, sub.product_key, sub.device_name
    );
    let (s, v) = d.api(Method::PUT, &path, None).await;
    assert!(s == 200 || s == 204, "attach: {s} {v}");
}

/// An entry naming `sub` with `clientId` = `client_id`, a millisecond timestamp and `sign`: the
/// HMAC-SHA256 keyed by `secret` over clientId, deviceName, productKey and timestamp, as the Link
/// SDK signs topology and login entries.
pub fn signed_entry(sub: &DeviceCreds, secret: &str, client_id: &str) -> Value {
    let ts = ironhub_core::now_ms().to_string();
    let sign = ironhub_core::auth::sign(
        ironhub_core::auth::SignMethod::HmacSha256,
        secret,
        &[
            ("clientId", client_id),
            ("deviceName", &sub.device_name),
            ("productKey", &sub.product_key),
            ("timestamp", &ts),
        ],
    );
    json!({ "productKey": sub.product_key, "deviceName": sub.device_name, "clientId": client_id,
            "timestamp": ts, "sign": sign })
}

/// A `batch_login` entry for `sub`, signed with `secret` as the Python Link SDK signs it (its
/// client id, `cleanSession` as it sends it).
pub fn login_entry(sub: &DeviceCreds, secret: &str) -> Value {
    let client_id = format!(
        "{}.{}|lan=Python,_v=2.2.1,_ss=1|",
        sub.product_key, sub.device_name
    );
    let mut entry = signed_entry(sub, secret, &client_id);
    entry["cleanSession"] = json!("false");
    entry
}

/// The `params` of a `batch_login` of `subs`, each signed with its own secret.
pub fn batch_login(subs: &[DeviceCreds]) -> Value {
    let list: Vec<Value> = subs
        .iter()
        .map(|s| login_entry(s, &s.device_secret))
        .collect();
    json!({ "signMethod": "hmacSha256", "deviceList": list })
}

/// The `params` of a `batch_logout` of `subs`.
pub fn batch_logout(subs: &[DeviceCreds]) -> Value {
    let list: Vec<Value> = subs
        .iter()
        .map(|s| json!({ "productKey": s.product_key, "deviceName": s.device_name }))
        .collect();
    Value::Array(list)
}

/// Sends a session request (`op` is `login`, `batch_login`, `logout` or `batch_logout`) on the
/// gateway's connection and returns its reply; other messages meanwhile are passed to `other`.
pub async fn session_call(
    c: &AsyncClient,
    ev: &mut EventLoop,
    gateway: &DeviceCreds,
    op: &str,
    params: Value,
    mut other: impl FnMut(rumqttc::Publish),
) -> Value {
    let topic = format!(
        "/ext/session/{}/{}/combine/{op}",
        gateway.product_key, gateway.device_name
    );
    call(c, ev, (&topic, QoS::AtMostOnce), params, &mut other).await
}

/// Sends an Alink request on a device's `/sys/{pk}/{dn}{suffix}` and returns its reply.
pub async fn sys_call(
    c: &AsyncClient,
    ev: &mut EventLoop,
    dev: &DeviceCreds,
    suffix: &str,
    params: Value,
) -> Value {
    sys_call_at(c, ev, dev, (suffix, QoS::AtMostOnce), params).await
}

/// As [`sys_call`], published at `qos` (a QoS 1 post is answered once it is stored).
pub async fn sys_call_at(
    c: &AsyncClient,
    ev: &mut EventLoop,
    dev: &DeviceCreds,
    (suffix, qos): (&str, QoS),
    params: Value,
) -> Value {
    let topic = format!("/sys/{}/{}{suffix}", dev.product_key, dev.device_name);
    call(c, ev, (&topic, qos), params, &mut |_| {}).await
}

/// Logs every sub-device of the fleet in with one `batch_login` and checks that it succeeded.
pub async fn log_all_in(c: &AsyncClient, ev: &mut EventLoop, f: &Fleet) {
    let reply = session_call(
        c,
        ev,
        &f.gateway,
        "batch_login",
        batch_login(&f.subs),
        |_| {},
    )
    .await;
    assert_eq!(reply["code"], 200, "{reply}");
}

async fn call(
    c: &AsyncClient,
    ev: &mut EventLoop,
    (topic, qos): (&str, QoS),
    params: Value,
    other: &mut impl FnMut(rumqttc::Publish),
) -> Value {
    let body = json!({ "id": "1", "version": "1.0", "params": params });
    c.publish(topic, qos, false, body.to_string())
        .await
        .expect("publish");
    let reply = format!("{topic}_reply");
    loop {
        let p = v3::next_publish(ev).await;
        if p.topic == reply {
            return serde_json::from_slice(&p.payload).expect("a JSON reply");
        }
        other(p);
    }
}

/// A device's state as the admin API shows it (`online`, `offline`, ...).
pub async fn state(d: &Deployment, dev: &DeviceCreds) -> String {
    let path = format!(
        "/api/v1/products/{}/devices/{}",
        dev.product_key, dev.device_name
    );
    let (s, v) = d.api(Method::GET, &path, None).await;
    assert_eq!(s, 200, "{v}");
    v["state"].as_str().unwrap_or_default().to_owned()
}

/// Waits (up to [`crate::WAIT`]) until a device's state is `expected`: a first login's
/// activation reaches the store in a batch, so a device that just went offline may show
/// `inactive` for a moment.
pub async fn until_state(d: &Deployment, dev: &DeviceCreds, expected: &str) {
    let deadline = tokio::time::Instant::now() + crate::WAIT;
    loop {
        let now = state(d, dev).await;
        if now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} is {now}, not {expected}",
            dev.device_name
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
