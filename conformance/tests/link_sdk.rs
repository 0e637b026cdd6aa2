//! A stock Alibaba Cloud Link SDK device (Python `aliyun-iot-linkkit`, unmodified) connects with
//! its own signing (hmacsha1, unsigned extra client-id parameters), posts a property through the
//! thing model and gets the Alink reply without subscribing, and round-trips a custom topic.
//! `.ci/run` installs the SDK. It also answers RRPC calls in both of the SDK's forms, and registers
//! itself without pre-registration (`regnwl`, then `connwl` with its token). Link SDK
//! topics the Python SDK does not implement (NTP, from the
//! C SDK) are driven with rumqttc as the C SDK sends them.

use ironhub_conformance::{Deployment, python_client, sdk_saw, v3};
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_link_sdk_device_connects_posts_and_receives() {
    let d = Deployment::start("").await;
    let dev = d.provision("acme").await;
    let args = dev.sdk_args(&d);
    let seen = sdk_saw(&d, python_client("linkkit_device.py", args, 60).await);
    assert_eq!(seen["reply"]["code"], 200);
    assert_eq!(seen["reply"]["request_id"], seen["posted_request_id"]);
    assert_eq!(seen["event_reply"]["event"], "overheat", "{seen}");
    assert_eq!(seen["event_reply"]["code"], 200, "{seen}");
    assert_eq!(seen["granted_qos"], json!([1]));
    assert_eq!(seen["echo"]["payload"], "hello from linkkit");
    assert!(
        d.log()
            .contains(&format!("{}/{}", dev.product_key, dev.device_name)),
        "the session was the device's"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_requests_are_answered_with_the_hubs_time() {
    let d = Deployment::start("").await;
    let dev = d.provision("acme").await;
    let (pk, dn) = (&dev.product_key, &dev.device_name);
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    // The answer reaches the device whether or not it subscribed first.
    let sent = now_ms();
    let request = json!({ "deviceSendTime": sent.to_string() }).to_string();
    c.publish(
        format!("/ext/ntp/{pk}/{dn}/request"),
        QoS::AtMostOnce,
        false,
        request,
    )
    .await
    .unwrap();
    let answer = v3::next_publish(&mut ev).await;
    let received = now_ms();
    assert_eq!(answer.topic, format!("/ext/ntp/{pk}/{dn}/response"));
    let v: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(v["deviceSendTime"], sent.to_string());
    let time = |key: &str| -> u64 { v[key].as_str().unwrap().parse().unwrap() };
    let (server_recv, server_send) = (time("serverRecvTime"), time("serverSendTime"));
    assert!(
        sent <= server_recv && server_recv <= server_send && server_send <= received,
        "device sent {sent}, hub received {server_recv} and answered {server_send}, device \
         received {received}"
    );
    // Subscribing to its own response topic is allowed, to another device's is not.
    c.subscribe(format!("/ext/ntp/{pk}/{dn}/response"), QoS::AtMostOnce)
        .await
        .unwrap();
    assert_eq!(
        v3::suback(&mut ev).await,
        [SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    c.subscribe(format!("/ext/ntp/{pk}/other/response"), QoS::AtMostOnce)
        .await
        .unwrap();
    assert_eq!(v3::suback(&mut ev).await, [SubscribeReasonCode::Failure]);
    c.publish(
        format!("/ext/ntp/{pk}/{dn}/request"),
        QoS::AtMostOnce,
        false,
        "{}",
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_slice(&v3::next_publish(&mut ev).await.payload).unwrap();
    assert!(
        v["serverSendTime"].is_string() && v.get("deviceSendTime").is_none(),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_link_sdk_device_registers_without_pre_registration_and_connects_with_its_token() {
    use hyper::Method;
    let d = Deployment::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("sdk-regnwl")).await;
    let (pk, dn) = (dev.product_key.clone(), "made-by-regnwl");
    let args = vec![
        "127.0.0.1".to_owned(),
        d.mqtt.port().to_string(),
        pk.clone(),
        dn.to_owned(),
        dev.product_secret.clone(),
    ];
    let seen = sdk_saw(&d, python_client("linkkit_regnwl.py", args, 60).await);
    assert_eq!(seen["register"]["code"], 0, "{seen}");
    assert_eq!(seen["register"]["username"], format!("{dn}&{pk}"), "{seen}");
    assert_eq!(seen["register"]["token_length"], 64, "{seen}");
    assert_eq!(seen["published"], true, "{seen}");
    // The device was made by its registration, and its connection activated it.
    let path = format!("/api/v1/products/{pk}/devices/{dn}");
    let deadline = tokio::time::Instant::now() + ironhub_conformance::WAIT;
    loop {
        let (s, v) = d.api(Method::GET, &path, None).await;
        assert_eq!(s, 200, "{v}");
        if v["state"] != "inactive" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never activated: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A token made with another device's secret is refused.
    let refused = |client_id: &str, token: String| {
        let mut o = rumqttc::MqttOptions::new(
            format!("{client_id}|authType=connwl,securemode=-2,_ss=1|"),
            "127.0.0.1",
            d.mqtt.port(),
        );
        o.set_credentials(format!("{dn}&{pk}"), token);
        v3::refusal(o)
    };
    let forged = ironhub_core::auth::device_token(&dev.device_secret, &format!("{pk}.{dn}"));
    assert_eq!(
        refused(&format!("{pk}.{dn}"), forged).await,
        rumqttc::ConnectReturnCode::BadUserNamePassword
    );
    // Once active, the ProductSecret no longer registers it (as the SDK asks, signed).
    let random = "0123456789abcde";
    let mut o = rumqttc::MqttOptions::new(
        format!("{dn}.{pk}|random={random},authType=regnwl,securemode=2,signmethod=hmacsha256|"),
        "127.0.0.1",
        d.mqtt.port(),
    );
    let password = ironhub_core::auth::register_password(
        ironhub_core::auth::SignMethod::HmacSha256,
        &dev.product_secret,
        dn,
        &pk,
        random,
    );
    o.set_credentials(format!("{dn}&{pk}"), password);
    assert_eq!(
        v3::refusal(o).await,
        rumqttc::ConnectReturnCode::NotAuthorized
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_link_sdk_device_answers_user_rrpc_synchronous_service_calls_and_property_sets() {
    use hyper::Method;
    let d = Deployment::start("").await;
    let dev = d.provision("acme").await;
    let auth = format!("Bearer {}", d.api_key(&dev.tenant, "rrpc").await);
    let args = dev.sdk_args(&d);
    let device = tokio::spawn(python_client("linkkit_rrpc.py", args, 60));
    let call = async |extra: Value| {
        let mut body = json!({ "product_key": dev.product_key, "device_name": dev.device_name,
                               "timeout_ms": 1000 });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (s, _, v) = d
            .api_as(Method::POST, "/api/v1/business/rrpc", Some(body), &auth)
            .await;
        assert_eq!(s, 200, "{v}");
        v
    };
    // OFFLINE until the SDK has connected, TIMEOUT until it has subscribed (the /sys form,
    // which the SDK does not answer): then the user RRPC form, chosen from its subscription.
    let mut answer = Value::Null;
    for _ in 0..40 {
        answer = call(json!({ "payload": "ping" })).await;
        if answer["rrpc_code"] == "SUCCESS" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(answer["payload"], "pong:ping", "{answer}");
    // The same form named by the call.
    let user = format!("/{}/{}/user/cmd", dev.product_key, dev.device_name);
    let answer = call(json!({ "topic": user, "payload": "again" })).await;
    assert_eq!(answer["payload"], "pong:again", "{answer}");
    let answer =
        call(json!({ "service": "calibrate", "payload": r#"{"temperature":21.5}"# })).await;
    assert_eq!(answer["rrpc_code"], "SUCCESS", "{answer}");
    let reply: Value = serde_json::from_str(answer["payload"].as_str().unwrap()).unwrap();
    assert_eq!(
        (
            &reply["code"],
            &reply["id"],
            &reply["data"]["echo"]["temperature"]
        ),
        (&json!(200), &answer["message_id"], &json!(21.5)),
        "{reply}"
    );
    // A property set: the SDK answers set_reply by itself.
    let body = json!({ "product_key": dev.product_key, "device_name": dev.device_name,
                       "params": { "temperature": 25.0 }, "timeout_ms": 2000 });
    let (s, _, set) = d
        .api_as(
            Method::POST,
            "/api/v1/business/properties/set",
            Some(body),
            &auth,
        )
        .await;
    assert_eq!(s, 200, "{set}");
    assert_eq!(
        (&set["outcome"], &set["code"]),
        (&json!("replied"), &json!(200)),
        "{set}"
    );
    let seen = sdk_saw(&d, device.await.unwrap());
    assert_eq!(seen["set"], json!({ "temperature": 25.0 }));
    assert_eq!(seen["service"]["identifier"], "calibrate");
    assert_eq!(seen["user"]["payload"], "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_link_sdk_device_tags_itself_and_reports_its_firmware() {
    let d = Deployment::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("sdk-info")).await;
    let seen = sdk_saw(
        &d,
        python_client("linkkit_info.py", dev.sdk_args(&d), 60).await,
    );
    assert_eq!(seen["update"]["code"], 200, "{seen}");
    assert_eq!(seen["delete"]["code"], 200, "{seen}");
    let path = format!(
        "/api/v1/products/{}/devices/{}/info",
        dev.product_key, dev.device_name
    );
    // The firmware report has no reply: wait until it is recorded.
    let mut info = Value::Null;
    for _ in 0..50 {
        info = d.api(hyper::Method::GET, &path, None).await.1;
        if info["firmware"] != json!({}) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(info["tags"], json!({ "room": "greenhouse-3" }), "{info}");
    assert_eq!(info["firmware"], json!({ "default": "1.0.7" }), "{info}");
}
