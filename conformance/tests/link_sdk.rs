//! A stock Alibaba Cloud Link SDK device (Python `aliyun-iot-linkkit`, unmodified) connects with
//! its own signing (hmacsha1, unsigned extra client-id parameters), posts a property through the
//! thing model and gets the Alink reply without subscribing, and round-trips a custom topic.
//! `.ci/run` installs the SDK.

use ironhub_conformance::{Deployment, python_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_link_sdk_device_connects_posts_and_receives() {
    let d = Deployment::start("").await;
    let dev = d.provision("acme").await;
    let args = vec![
        "127.0.0.1".into(),
        d.mqtt.port().to_string(),
        dev.product_key.clone(),
        dev.device_name.clone(),
        dev.device_secret.clone(),
    ];
    let out = python_client("linkkit_device.py", args, 60).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK device failed: {stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let seen: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    assert_eq!(seen["reply"]["code"], 200);
    assert_eq!(seen["reply"]["request_id"], seen["posted_request_id"]);
    assert_eq!(seen["granted_qos"], serde_json::json!([1]));
    assert_eq!(seen["echo"]["payload"], "hello from linkkit");
    assert!(
        d.log()
            .contains(&format!("{}/{}", dev.product_key, dev.device_name)),
        "the session was the device's"
    );
}
