//! Remote configuration as the Link SDK (C) does it, with rumqttc: a product's JSON file set
//! through the admin API, fetched by a device with `thing/config/get`, pushed to it on
//! `thing/config/push`, and downloaded with curl from the signed URL both carry, checked against
//! `sha256sum`; a replaced file's old link is gone, an altered one refused.

use hyper::Method;
use ironhub_conformance::http::Http;
use ironhub_conformance::ota::{download, send_file};
use ironhub_conformance::{Deployment, gateway, v3};
use serde_json::json;

/// A device's `thing/config/get`, as the C SDK sends it; its reply.
async fn config_get(
    c: &rumqttc::AsyncClient,
    ev: &mut rumqttc::EventLoop,
    dev: &ironhub_conformance::DeviceCreds,
) -> serde_json::Value {
    let params = json!({ "configScope": "product", "getType": "file" });
    gateway::sys_call(c, ev, dev, "/thing/config/get", params).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_fetches_and_is_pushed_its_products_configuration_file() {
    let (d, _) = Http::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("config")).await;
    let (pk, dn) = (&dev.product_key, &dev.device_name);
    let path = format!("/api/v1/products/{pk}/config");
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;

    // Nothing set yet: the API says 404, the device gets Alibaba's 6713.
    assert_eq!(d.api(Method::GET, &path, None).await.0, 404);
    let none = config_get(&c, &mut ev, &dev).await;
    assert_eq!(none["code"], 6713, "{none}");

    let (s, refused) = send_file(&d, "PUT", &path, b"interval=30").await;
    assert_eq!(s, 400, "not JSON: {refused}");
    let file = br#"{"sampling":{"interval_s":30},"site":"greenhouse-3"}"#;
    let (s, set) = send_file(&d, "PUT", &path, file).await;
    assert_eq!(s, 200, "{set}");
    assert_eq!(set["size"], file.len());
    assert_eq!(set["content"]["site"], "greenhouse-3");

    let reply = config_get(&c, &mut ev, &dev).await;
    assert_eq!(reply["code"], 200, "{reply}");
    let data = &reply["data"];
    assert_eq!(data["configId"], set["config_id"], "{reply}");
    assert_eq!(data["configSize"], file.len());
    assert_eq!(data["signMethod"], "Sha256");
    assert_eq!(data["getType"], "file");
    let url = data["url"].as_str().expect("url").to_owned();
    let (status, _, sha256, size) = download(&url, None).await;
    assert_eq!((status, size), (200, file.len() as u64));
    assert_eq!(sha256, data["sign"].as_str().expect("sign"));
    assert_eq!(sha256, set["sha256"].as_str().expect("sha256"));

    // A push reaches the online device without a subscription.
    let (s, pushed) = d.api(Method::POST, &format!("{path}/push"), None).await;
    assert_eq!(s, 200, "{pushed}");
    assert_eq!(pushed["pushed_to"], 1);
    let push = v3::next_publish(&mut ev).await;
    assert_eq!(push.topic, format!("/sys/{pk}/{dn}/thing/config/push"));
    let push: serde_json::Value = serde_json::from_slice(&push.payload).expect("JSON");
    assert_eq!(push["method"], "thing.config.push");
    assert_eq!(push["params"]["configId"], set["config_id"], "{push}");

    // A new file has a new id; the old link is gone, an altered one refused.
    let (_, changed) = send_file(&d, "PUT", &path, br#"{"sampling":{"interval_s":10}}"#).await;
    assert_ne!(changed["config_id"], set["config_id"]);
    assert_eq!(download(&url, None).await.0, 404);
    let altered = url.replace("signature=", "signature=00");
    assert_eq!(download(&altered, None).await.0, 403);
    assert_eq!(d.api(Method::DELETE, &path, None).await.0, 204);
    assert_eq!(config_get(&c, &mut ev, &dev).await["code"], 6713);
}
