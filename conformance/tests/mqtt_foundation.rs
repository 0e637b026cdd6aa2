//! The foundation's MQTT behaviour, black-box: the real `ironhub` binary, real clients (rumqttc
//! for 3.1.1 and 5.0, raw sockets where a well-behaved client cannot go).

use std::time::{Duration, Instant};

use hyper::Method;
use ironhub_conformance::{Deployment, WAIT, open_v3, open_v5, raw, v3, v5};
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, Packet, QoS};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_device_connects_goes_online_and_receives_downlink() {
    let d = Deployment::start("").await;
    let dev = d.provision("acme").await;
    let device_path = format!(
        "/api/v1/products/{}/devices/{}",
        dev.product_key, dev.device_name
    );
    assert_eq!(
        d.api(Method::GET, &device_path, None).await.1["state"],
        "inactive"
    );
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    assert_eq!(
        d.api(Method::GET, &device_path, None).await.1["state"],
        "online"
    );
    c.subscribe(dev.user_topic("get"), QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(
        v3::suback(&mut ev).await,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let body = json!({ "tenant": dev.tenant, "topic": dev.user_topic("get"), "payload": "turn on", "qos": 1 });
    let (status, v) = d.api(Method::POST, "/api/v1/messages", Some(body)).await;
    assert_eq!((status, v["delivered_to"].as_u64()), (200, Some(1)));
    let p = v3::next_publish(&mut ev).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos),
        (
            dev.user_topic("get").as_str(),
            &b"turn on"[..],
            QoS::AtLeastOnce
        )
    );
    c.disconnect().await.unwrap();
    let _ = tokio::time::timeout(WAIT, ev.poll()).await;
    drop(ev);
    let deadline = Instant::now() + WAIT;
    while d.api(Method::GET, &device_path, None).await.1["state"] != "offline" {
        assert!(Instant::now() < deadline, "device never went offline");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_unknown_and_disabled_devices_are_refused() {
    let d = Deployment::start("").await;
    let dev = d.provision("acme").await;

    let mut bad = dev.v3_options(&d);
    let c = dev.mqtt();
    bad.set_credentials(c.username.clone(), "0".repeat(64));
    assert_eq!(
        v3::refusal(bad).await,
        ConnectReturnCode::BadUserNamePassword
    );

    let mut unknown = dev.clone();
    unknown.device_name = "ghost-1".into();
    assert_eq!(
        v5::refusal(unknown.v5_options(&d)).await,
        p5::ConnectReturnCode::BadUserNamePassword
    );
    assert_eq!(
        v3::refusal(unknown.v3_options(&d)).await,
        ConnectReturnCode::BadUserNamePassword
    );

    let path = format!(
        "/api/v1/products/{}/devices/{}",
        dev.product_key, dev.device_name
    );
    let (s, v) = d.api(Method::POST, &format!("{path}/disable"), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("disabled")));
    assert_eq!(
        v3::refusal(dev.v3_options(&d)).await,
        ConnectReturnCode::NotAuthorized
    );
    assert_eq!(
        v5::refusal(dev.v5_options(&d)).await,
        p5::ConnectReturnCode::NotAuthorized
    );

    d.api(Method::POST, &format!("{path}/enable"), None).await;
    v3::connect(dev.v3_options(&d)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_connected_device_closes_its_connection() {
    let d = Deployment::start("").await;
    let dev = d.provision("acme").await;
    let (_c, mut ev) = v5::connect(dev.v5_options(&d)).await;
    let path = format!(
        "/api/v1/products/{}/devices/{}/disable",
        dev.product_key, dev.device_name
    );
    d.api(Method::POST, &path, None).await;
    assert_eq!(
        v5::closed(&mut ev).await,
        Some(p5::DisconnectReasonCode::AdministrativeAction)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_violations_get_reason_codes_or_a_disconnect() {
    let d = Deployment::start("").await;
    let dev = d.provision("acme").await;
    let other = d.add_device(&dev.product_key, "dev-2").await;

    let (c5, mut ev5) = v5::connect(dev.v5_options(&d)).await;
    c5.subscribe(
        other.user_topic("#"),
        rumqttc::v5::mqttbytes::QoS::AtMostOnce,
    )
    .await
    .unwrap();
    assert_eq!(
        v5::suback(&mut ev5).await,
        vec![p5::SubscribeReasonCode::NotAuthorized]
    );
    c5.publish(
        other.user_topic("x"),
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        "spoof",
    )
    .await
    .unwrap();
    let reason = v5::until(&mut ev5, |e| match e {
        Ok(rumqttc::v5::Event::Incoming(p5::Packet::PubAck(a))) => Some(a.reason),
        Err(e) => panic!("connection lost: {e}"),
        _ => None,
    })
    .await;
    assert_eq!(reason, p5::PubAckReason::NotAuthorized);
    c5.disconnect().await.unwrap();
    drop(ev5);

    let (c3, mut ev3) = v3::connect(other.v3_options(&d)).await;
    c3.subscribe("#", QoS::AtMostOnce).await.unwrap();
    assert_eq!(
        v3::suback(&mut ev3).await,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    c3.publish(dev.user_topic("x"), QoS::AtMostOnce, false, "spoof")
        .await
        .unwrap();
    // MQTT 3.1.1 has no negative acknowledgement: the connection is closed.
    v3::until(&mut ev3, |e| e.is_err().then_some(())).await;
    assert!(
        d.log().contains("ACL: publish refused"),
        "violation is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_takes_the_device_over() {
    let d = Deployment::start("").await;
    let dev = d.provision("acme").await;
    let (_first, mut first_ev) = v5::connect(dev.v5_options(&d)).await;
    let (second, mut second_ev) = v3::connect(dev.v3_options(&d)).await;
    assert_eq!(
        v5::closed(&mut first_ev).await,
        Some(p5::DisconnectReasonCode::SessionTakenOver)
    );
    drop(first_ev);
    second
        .subscribe(dev.user_topic("t"), QoS::AtMostOnce)
        .await
        .unwrap();
    assert_eq!(
        v3::suback(&mut second_ev).await.len(),
        1,
        "the new connection works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_post_is_answered_on_reply_without_a_subscription() {
    let d = Deployment::start("").await;
    let dev = d.provision("acme").await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let topic = format!(
        "/sys/{}/{}/thing/event/property/post",
        dev.product_key, dev.device_name
    );
    c.publish(
        &topic,
        QoS::AtLeastOnce,
        false,
        r#"{"id":"42","version":"1.0","params":{"t":21.5},"method":"thing.event.property.post"}"#,
    )
    .await
    .unwrap();
    let reply = v3::next_publish(&mut ev).await;
    assert_eq!(reply.topic, format!("{topic}_reply"));
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        (v["id"].as_str(), v["code"].as_i64()),
        (Some("42"), Some(200))
    );
    c.publish(&topic, QoS::AtMostOnce, false, "not json")
        .await
        .unwrap();
    let reply = v3::next_publish(&mut ev).await;
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        v["code"].as_i64(),
        Some(460),
        "invalid posts get an error code, not silence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_registration_issues_the_device_secret() {
    let d = Deployment::start("").await;
    let dev = d.provision("acme").await;
    let pk = &dev.product_key;
    let password = ironhub_core::auth::register_password(
        ironhub_core::auth::SignMethod::HmacSha256,
        &dev.product_secret,
        "fresh-1",
        pk,
        "r4nd0m",
    );
    let mut o = rumqttc::MqttOptions::new(
        "fresh-1|securemode=2,authType=register,random=r4nd0m,signmethod=hmacsha256|",
        d.mqtt.ip().to_string(),
        d.mqtt.port(),
    );
    o.set_credentials(format!("fresh-1&{pk}"), password)
        .set_keep_alive(Duration::from_secs(60));
    let (_c, mut ev) = AsyncClient::new(o.clone(), 8);
    let p = v3::next_publish(&mut ev).await;
    assert_eq!(p.topic, "/ext/register");
    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
    let secret = v["deviceSecret"].as_str().expect("deviceSecret").to_owned();
    drop(ev);
    let mut fresh = dev.clone();
    fresh.device_name = "fresh-1".into();
    fresh.device_secret = secret;
    let (c, ev) = v3::connect(fresh.v3_options(&d)).await;
    // The first connection activates the device (written off the connect path): once it is
    // stored, the device shows offline (not inactive) when it leaves, and the ProductSecret no
    // longer fetches its secret.
    c.disconnect().await.unwrap();
    drop(ev);
    let path = format!("/api/v1/products/{pk}/devices/fresh-1");
    let deadline = Instant::now() + WAIT;
    while d.api(Method::GET, &path, None).await.1["state"] != "offline" {
        assert!(Instant::now() < deadline, "the activation was not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        v3::refusal(o).await,
        ConnectReturnCode::NotAuthorized,
        "no registration for an activated device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_reaches_a_late_subscriber() {
    let d = Deployment::open_broker("").await;
    let (publisher, mut pev) = v3::connect(open_v3(&d, "pub")).await;
    publisher
        .publish("lamp/state", QoS::AtLeastOnce, true, "on")
        .await
        .unwrap();
    v3::acked(&mut pev).await;
    let (sub, mut sev) = v5::connect(open_v5(&d, "late")).await;
    sub.subscribe("lamp/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    let p = v5::next_publish(&mut sev).await;
    assert_eq!(
        (&p.topic[..], &p.payload[..], p.retain),
        (&b"lamp/state"[..], &b"on"[..], true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_and_qos2_flow_end_to_end_between_v311_and_v5() {
    let d = Deployment::open_broker("").await;
    let (s5, mut s5ev) = v5::connect(open_v5(&d, "sub5")).await;
    s5.subscribe("x/#", rumqttc::v5::mqttbytes::QoS::ExactlyOnce)
        .await
        .unwrap();
    v5::suback(&mut s5ev).await;
    let (s3, mut s3ev) = v3::connect(open_v3(&d, "sub3")).await;
    s3.subscribe("y/#", QoS::ExactlyOnce).await.unwrap();
    v3::suback(&mut s3ev).await;

    let (p3, mut p3ev) = v3::connect(open_v3(&d, "pub3")).await;
    p3.publish("x/2", QoS::ExactlyOnce, false, "two")
        .await
        .unwrap();
    v3::acked(&mut p3ev).await;
    p3.publish("x/1", QoS::AtLeastOnce, false, "one")
        .await
        .unwrap();
    v3::acked(&mut p3ev).await;
    let a = v5::next_publish(&mut s5ev).await;
    let b = v5::next_publish(&mut s5ev).await;
    assert_eq!(
        (&a.topic[..], a.qos),
        (&b"x/2"[..], rumqttc::v5::mqttbytes::QoS::ExactlyOnce)
    );
    assert_eq!(
        (&b.topic[..], b.qos),
        (&b"x/1"[..], rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
    );

    let (p5c, mut p5ev) = v5::connect(open_v5(&d, "pub5")).await;
    p5c.publish(
        "y/2",
        rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
        false,
        "from v5",
    )
    .await
    .unwrap();
    let got = loop {
        tokio::select! {
            p = v3::next_publish(&mut s3ev) => break p,
            _ = p5ev.poll() => {}
        }
    };
    assert_eq!(
        (got.topic.as_str(), &got.payload[..], got.qos),
        ("y/2", &b"from v5"[..], QoS::ExactlyOnce)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_gives_each_message_to_one_member() {
    let d = Deployment::open_broker("").await;
    let mut members = Vec::new();
    for i in 0..2 {
        let (c, mut ev) = v5::connect(open_v5(&d, &format!("m{i}"))).await;
        c.subscribe(
            "$share/workers/jobs/#",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
        v5::suback(&mut ev).await;
        members.push((c, ev));
    }
    let (p, mut pev) = v3::connect(open_v3(&d, "producer")).await;
    for i in 0..10 {
        p.publish(format!("jobs/{i}"), QoS::AtLeastOnce, false, "job")
            .await
            .unwrap();
        v3::acked(&mut pev).await;
    }
    let mut counts = [0usize; 2];
    let deadline = Instant::now() + WAIT;
    while counts.iter().sum::<usize>() < 10 && Instant::now() < deadline {
        for (i, (_, ev)) in members.iter_mut().enumerate() {
            if let Ok(Ok(rumqttc::v5::Event::Incoming(p5::Packet::Publish(_)))) =
                tokio::time::timeout(Duration::from_millis(50), ev.poll()).await
            {
                counts[i] += 1;
            }
        }
    }
    assert_eq!(
        counts.iter().sum::<usize>(),
        10,
        "every message delivered once: {counts:?}"
    );
    assert!(
        counts.iter().all(|c| *c > 0),
        "both members get work: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_receives_what_was_published_offline_even_across_a_restart() {
    let mut d = Deployment::open_broker("").await;
    let mut keeper = open_v3(&d, "keeper");
    keeper.set_clean_session(false);
    {
        let (c, mut ev) = v3::connect(keeper.clone()).await;
        c.subscribe("q/#", QoS::AtLeastOnce).await.unwrap();
        v3::suback(&mut ev).await;
        c.disconnect().await.unwrap();
        let _ = tokio::time::timeout(WAIT, ev.poll()).await;
    }
    let (p, mut pev) = v3::connect(open_v3(&d, "producer")).await;
    p.publish("q/1", QoS::AtLeastOnce, false, "before restart")
        .await
        .unwrap();
    v3::acked(&mut pev).await;
    drop(pev);
    d.restart().await;
    let (p, mut pev) = v3::connect(open_v3(&d, "producer")).await;
    p.publish("q/2", QoS::AtLeastOnce, false, "after restart")
        .await
        .unwrap();
    v3::acked(&mut pev).await;

    let (_c, mut ev) = AsyncClient::new(keeper, 64);
    let present = v3::until(&mut ev, |e| match e {
        Ok(Event::Incoming(Packet::ConnAck(a))) => Some(a.session_present),
        Err(e) => panic!("reconnect failed: {e}"),
        _ => None,
    })
    .await;
    assert!(present, "the session survived the restart");
    let first = v3::next_publish(&mut ev).await;
    let second = v3::next_publish(&mut ev).await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..]),
        ("q/1", &b"before restart"[..])
    );
    assert_eq!(
        (second.topic.as_str(), &second.payload[..]),
        ("q/2", &b"after restart"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_abrupt_disconnect_only() {
    let d = Deployment::open_broker("").await;
    let (s, mut sev) = v3::connect(open_v3(&d, "watcher")).await;
    s.subscribe("will/#", QoS::AtLeastOnce).await.unwrap();
    v3::suback(&mut sev).await;

    let mut polite = open_v3(&d, "polite");
    polite.set_last_will(rumqttc::LastWill::new(
        "will/polite",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (pc, mut pev) = v3::connect(polite).await;
    pc.disconnect().await.unwrap();
    let _ = tokio::time::timeout(WAIT, pev.poll()).await;

    let mut rude = open_v3(&d, "rude");
    rude.set_last_will(rumqttc::LastWill::new(
        "will/rude",
        "vanished",
        QoS::AtLeastOnce,
        false,
    ));
    let (_rc, rev) = v3::connect(rude).await;
    drop(rev); // the socket closes without DISCONNECT
    let p = v3::next_publish(&mut sev).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("will/rude", &b"vanished"[..]),
        "only the abrupt client's will"
    );
}

async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("server closes the connection in time")
        {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_out_of_range_is_refused_and_silence_closes_the_connection() {
    let d = Deployment::open_broker("keepalive_min_secs = 1\n").await;
    let mut s = TcpStream::connect(d.mqtt).await.unwrap();
    s.write_all(&raw::connect("too-long", 1201, None))
        .await
        .unwrap();
    let answer = read_until_closed(&mut s).await;
    assert_eq!(
        answer,
        vec![0x20, 2, 0, 5],
        "CONNACK 'not authorized', then close"
    );

    let mut s = TcpStream::connect(d.mqtt).await.unwrap();
    s.write_all(&raw::connect("quiet", 2, None)).await.unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut s).await;
    assert_eq!(&answer[..4], &[0x20, 2, 0, 0], "accepted");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "closed only after 1.5 x keep-alive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_malformed_packets_close_only_their_connection() {
    let d = Deployment::open_broker("max_packet_size = 1024\n").await;
    let (watcher, mut wev) = v3::connect(open_v3(&d, "bystander")).await;
    watcher.subscribe("ok/#", QoS::AtLeastOnce).await.unwrap();
    v3::suback(&mut wev).await;

    let mut big = TcpStream::connect(d.mqtt).await.unwrap();
    big.write_all(&raw::connect("big", 60, None)).await.unwrap();
    big.write_all(&raw::publish("ok/big", &[7u8; 2000]))
        .await
        .unwrap();
    let answer = read_until_closed(&mut big).await;
    assert_eq!(
        &answer[..4],
        &[0x20, 2, 0, 0],
        "connected, then closed for the oversize packet"
    );

    let mut garbage = TcpStream::connect(d.mqtt).await.unwrap();
    garbage
        .write_all(&raw::connect("garbage", 60, None))
        .await
        .unwrap();
    garbage
        .write_all(&[0x30, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    read_until_closed(&mut garbage).await;

    let (p, mut pev) = v3::connect(open_v3(&d, "fine")).await;
    p.publish("ok/1", QoS::AtLeastOnce, false, "still here")
        .await
        .unwrap();
    v3::acked(&mut pev).await;
    let got = v3::next_publish(&mut wev).await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("ok/1", &b"still here"[..]),
        "others are undisturbed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_talk_over_tls_with_signed_device_credentials() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = ironhub_conformance::self_signed(certs.path());
    let tls_port = ironhub_conformance::free_port();
    let d = Deployment::start(&format!(
        "[mqtt.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = {cert:?}\nkey = {key:?}\n"
    ))
    .await;
    let dev = d.provision("acme").await;
    let creds = dev.mqtt();
    let topic = dev.user_topic("tls");
    let port = tls_port.to_string();
    let common = |cmd: &mut std::process::Command| {
        cmd.args(["-h", "127.0.0.1", "-p", &port, "--cafile"])
            .arg(&cert)
            .args([
                "-V",
                "mqttv5",
                "-k",
                "60",
                "-i",
                &creds.client_id,
                "-u",
                &creds.username,
                "-P",
                &creds.password,
                "-t",
                &topic,
            ]);
    };
    let mut sub = std::process::Command::new("mosquitto_sub");
    common(&mut sub);
    sub.args(["-C", "1", "-W", "10", "-q", "1"])
        .stdout(std::process::Stdio::piped());
    let sub = sub.spawn().expect("mosquitto_sub runs");
    // The subscriber is the device itself (its own user topic); wait until it is online, then
    // send through the admin API so the subscriber is not taken over.
    let path = format!(
        "/api/v1/products/{}/devices/{}",
        dev.product_key, dev.device_name
    );
    let deadline = Instant::now() + WAIT;
    while d.api(Method::GET, &path, None).await.1["state"] != "online" {
        assert!(
            Instant::now() < deadline,
            "TLS client never connected; log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // SUBACK before the publish
    let body = json!({ "tenant": dev.tenant, "topic": topic, "payload": "over tls", "qos": 1 });
    assert_eq!(
        d.api(Method::POST, "/api/v1/messages", Some(body)).await.1["delivered_to"],
        1
    );
    let out = tokio::task::spawn_blocking(move || sub.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "mosquitto_sub failed");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over tls");

    let mut plain_on_tls = TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
    plain_on_tls
        .write_all(&raw::connect("plain", 60, None))
        .await
        .unwrap();
    let answer = read_until_closed(&mut plain_on_tls).await;
    assert_ne!(
        answer.first(),
        Some(&0x20),
        "plain MQTT on the TLS port gets no CONNACK"
    );
}

/// Runs the paho WebSocket clients against `port` (with TLS when `tls`) and checks what each
/// subscriber received.
async fn paho_over_websocket(d: &Deployment, port: u16, tls: bool) {
    d.unlimit_sandbox().await;
    let mut args = vec!["127.0.0.1".to_owned(), port.to_string()];
    if tls {
        args.push("tls".into());
    }
    let out = ironhub_conformance::python_client("paho_websocket.py", args, 30).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paho over WebSocket (tls: {tls}) failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON");
    for version in ["v3", "v5"] {
        assert_eq!(
            got[version],
            json!([
                ["ws/retained", 1, 1, 1],
                ["ws/live", 0, 70000, 0],
                ["ws/live", 1, 70000, 0],
                ["ws/live", 2, 70000, 0]
            ]),
            "{version} (tls: {tls}): {got}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_clients_speak_mqtt_over_websocket() {
    let port = ironhub_conformance::free_port();
    let d = Deployment::start(&format!(
        "[mqtt.websocket]\nlisten = \"127.0.0.1:{port}\"\n[hub.open_broker]\nenabled = true\n"
    ))
    .await;
    paho_over_websocket(&d, port, false).await;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = ironhub_conformance::self_signed(certs.path());
    let port = ironhub_conformance::free_port();
    let d = Deployment::start(&format!(
        "[mqtt.websocket]\nlisten = \"127.0.0.1:{port}\"\ncert = {cert:?}\nkey = {key:?}\n\
         [hub.open_broker]\nenabled = true\n"
    ))
    .await;
    paho_over_websocket(&d, port, true).await;
}
