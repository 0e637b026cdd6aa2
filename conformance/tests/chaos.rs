//! Chaos: the hub or its broker dies the hard way (SIGKILL) under load, and nothing the hub
//! acknowledged is lost. Each scenario is a black-box run of the `ironhub` binary with real MQTT
//! and AMQP clients and a real RabbitMQ node of its own, bounded in time; it prints what it
//! counted (acknowledged, received, duplicates, lost) for the record.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use ironhub_conformance::amqp::{self, GroupConsumer};
use ironhub_conformance::{Deployment, DeviceCreds, open_v3, open_v5, v3};
use rumqttc::{Event, Packet, QoS};
use serde_json::json;

/// Publishers sending QoS 1 at once.
const PUBLISHERS: usize = 20;
/// How long they send before the kill.
const LOAD: Duration = Duration::from_secs(2);
/// A slow subscriber's pause per message: the hub holds a backlog for it when the kill comes.
const SLOW: Duration = Duration::from_millis(2);

fn persistent(d: &Deployment, client_id: &str) -> rumqttc::MqttOptions {
    let mut o = open_v3(d, client_id);
    o.set_clean_session(false);
    o
}

/// Connects a persistent subscriber to `chaos/#` (QoS 1) and, when `slow`, keeps reading
/// slowly into `received` until the connection breaks.
async fn subscriber(
    d: &Deployment,
    client_id: &str,
    received: Arc<Mutex<Vec<String>>>,
    slow: bool,
) {
    let (c, mut ev) = v3::connect(persistent(d, client_id)).await;
    c.subscribe("chaos/#", QoS::AtLeastOnce).await.unwrap();
    v3::suback(&mut ev).await;
    if !slow {
        c.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while ev.poll().await.is_ok() {}
        })
        .await;
        return;
    }
    tokio::spawn(async move {
        let _client = c;
        while let Ok(event) = ev.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                received
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&p.payload).into_owned());
                tokio::time::sleep(SLOW).await;
            }
        }
    });
}

/// Publishes QoS 1 messages one after another, each recorded once its PUBACK is in, until the
/// connection breaks.
async fn publisher(d: &Deployment, n: usize, acked: Arc<Mutex<Vec<String>>>) {
    let (c, mut ev) = v3::connect(open_v3(d, &format!("pub-{n}"))).await;
    tokio::spawn(async move {
        for seq in 0.. {
            let payload = format!("{n}-{seq}");
            if c.publish(
                format!("chaos/{n}"),
                QoS::AtLeastOnce,
                false,
                payload.clone(),
            )
            .await
            .is_err()
            {
                return;
            }
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => break,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            acked.lock().unwrap().push(payload);
        }
    });
}

/// Reads a persistent subscriber's messages after the restart until none has come for 3 s.
async fn drain(d: &Deployment, client_id: &str) -> Vec<String> {
    let (_c, mut ev) = v3::connect(persistent(d, client_id)).await;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(3), ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{client_id} lost its connection after the restart: {e}"),
            Err(_) => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_kill_under_load_loses_no_acknowledged_message() {
    let mut d = Deployment::unlimited_open_broker().await;
    let slow = ["slow-1", "slow-2"];
    let mut before: HashMap<&str, Arc<Mutex<Vec<String>>>> = HashMap::new();
    for id in slow {
        let got = Arc::new(Mutex::new(Vec::new()));
        subscriber(&d, id, got.clone(), true).await;
        before.insert(id, got);
    }
    subscriber(&d, "offline-1", Arc::default(), false).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    for n in 0..PUBLISHERS {
        publisher(&d, n, acked.clone()).await;
    }
    tokio::time::sleep(LOAD).await;
    d.kill();
    // What a publisher was told is safe: everything acknowledged before the kill.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(acked.len() > 100, "the load was too light: {}", acked.len());
    d.restart().await;
    for id in ["slow-1", "slow-2", "offline-1"] {
        let mut got = before
            .get(id)
            .map(|b| b.lock().unwrap().clone())
            .unwrap_or_default();
        let live = got.len();
        got.extend(drain(&d, id).await);
        let unique: HashSet<&String> = got.iter().collect();
        let lost: Vec<&String> = acked.iter().filter(|m| !unique.contains(m)).collect();
        println!(
            "{id}: acknowledged {}, received {} ({live} before the kill), duplicates {}, lost {}",
            acked.len(),
            got.len(),
            got.len() - unique.len(),
            lost.len()
        );
        assert!(
            lost.is_empty(),
            "{id} never got {} acknowledged messages, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
}

/// The RabbitMQ node these scenarios stop and kill, apart from the other tests' nodes.
const CHAOS_NODE: (&str, u16) = ("ironhub-chaos", 5675);

/// A device of a new tenant whose messages go to a consumer group on [`CHAOS_NODE`], and the
/// group.
async fn device_with_group(d: &Deployment, prefix: &str) -> (DeviceCreds, amqp::Group) {
    let tenant = Deployment::unique_tenant(prefix);
    // No rate and no hourly data-point limit: a 3.1.1 device's discarded message is
    // acknowledged too (it has no negative acknowledgement), which would hide a loss.
    let unlimited = json!({ "rates": { "device_messages_qos0": "", "device_messages_qos1": "",
        "tenant_messages": "", "device_connections": "" }, "data_points_per_hour": 0 });
    let dev = d.tenant_with_profile(&tenant, unlimited).await;
    let group = amqp::group(d, CHAOS_NODE, &tenant, &[&dev.product_key]).await;
    (dev, group)
}

/// Consumes the group's queue until every acknowledged payload came (or a minute passed);
/// returns (received, missing).
async fn consume_all(
    url: &str,
    queue: &str,
    acked: &HashSet<String>,
) -> (Vec<String>, Vec<String>) {
    let mut consumer = GroupConsumer::start(url, queue).await;
    let mut got = Vec::new();
    let mut unique = HashSet::new();
    // The hub resends its outbox with back-off (at most 30 s between attempts).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !acked.iter().all(|m| unique.contains(m)) && Instant::now() < deadline {
        if let Some(m) = consumer.next(Duration::from_secs(1)).await
            && m.kind == "upstream"
        {
            let payload = String::from_utf8_lossy(&m.payload).into_owned();
            unique.insert(payload.clone());
            got.push(payload);
        }
    }
    let missing = acked
        .iter()
        .filter(|m| !unique.contains(*m))
        .cloned()
        .collect();
    (got, missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_kill_with_events_in_the_outbox_loses_none() {
    let mut d = Deployment::start(&amqp::config(CHAOS_NODE)).await;
    let (dev, group) = device_with_group(&d, "chaos-outbox").await;
    amqp::rabbitmq_ctl(CHAOS_NODE, "stop_app");
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let mut acked = HashSet::new();
    for i in 0..100 {
        let payload = format!("outbox-{i}");
        c.publish(
            dev.user_topic("data"),
            QoS::AtLeastOnce,
            false,
            payload.clone(),
        )
        .await
        .unwrap();
        v3::acked(&mut ev).await;
        acked.insert(payload);
    }
    // Acknowledged with the broker down: in the outbox. The hub dies, the broker comes back.
    d.kill();
    amqp::rabbitmq_ctl(CHAOS_NODE, "start_app");
    d.restart().await;
    let (got, missing) = consume_all(&group.url, &group.queue, &acked).await;
    println!(
        "outbox across kill -9: acknowledged {}, received {}, duplicates {}, lost {}",
        acked.len(),
        got.len(),
        got.len() - got.iter().collect::<HashSet<_>>().len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_killed_under_load_loses_nothing_acknowledged() {
    let d = Deployment::start(&amqp::config(CHAOS_NODE)).await;
    let (dev, group) = device_with_group(&d, "chaos-broker").await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = tokio::spawn({
        let (acked, stop, topic) = (acked.clone(), stop.clone(), dev.user_topic("data"));
        async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let payload = format!("load-{i}");
                c.publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                    .await
                    .unwrap();
                v3::acked(&mut ev).await;
                acked.lock().unwrap().push(payload);
                i += 1;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A crash of the broker, not a stop: whatever it had not confirmed is gone from it.
    amqp::rabbitmq_ctl(CHAOS_NODE, "kill");
    tokio::time::sleep(Duration::from_secs(2)).await;
    amqp::rabbitmq_ctl(CHAOS_NODE, "start");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publishing.await.unwrap();
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(acked.len() > 50, "the load was too light: {}", acked.len());
    let (got, missing) = consume_all(&group.url, &group.queue, &acked).await;
    let (_, sinks) = d.api(Method::GET, "/api/v1/sinks", None).await;
    assert!(
        sinks[0]["send_failures"].as_u64() > Some(0),
        "the kill was felt: {sinks}"
    );
    println!(
        "RabbitMQ SIGKILL under load: acknowledged {}, received {}, duplicates {}, lost {}",
        acked.len(),
        got.len(),
        got.len() - got.iter().collect::<HashSet<_>>().len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but lost: {} of {}, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Posts `body` to the API at `path` with `key` over a raw HTTP/1.1 connection; returns what
/// came back (empty when the connection broke before an answer).
async fn post_raw(api: &str, path: &str, key: &str, body: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = api.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_when_the_hub_dies_are_kept_or_refused() {
    let mut d = Deployment::start("").await;
    let dev = d.provision(&Deployment::unique_tenant("inflight")).await;
    let key = d.api_key(&dev.tenant, "chaos").await;
    let (c, mut ev) = v3::connect(dev.v3_options(&d)).await;
    // A shadow report the device was told is safe (PUBACK).
    let update = json!({ "method": "update", "state": { "reported": { "color": "red" } },
                         "version": 1 });
    let shadow_topic = format!("/shadow/update/{}/{}", dev.product_key, dev.device_name);
    c.publish(shadow_topic, QoS::AtLeastOnce, false, update.to_string())
        .await
        .unwrap();
    v3::acked(&mut ev).await;
    // An RRPC call the device has received and not answered yet.
    let call = json!({ "product_key": dev.product_key, "device_name": dev.device_name,
                       "payload": "ping", "timeout_ms": 8000 });
    let caller = tokio::spawn({
        let (api, key) = (d.api.clone(), key.clone());
        async move { post_raw(&api, "/api/v1/business/rrpc", &key, call.to_string()).await }
    });
    // (The shadow's answer on /shadow/get comes first.)
    while !v3::next_publish(&mut ev)
        .await
        .topic
        .contains("/rrpc/request/")
    {}
    d.kill();
    let answer = tokio::time::timeout(Duration::from_secs(5), caller)
        .await
        .expect("the caller learns at once")
        .unwrap();
    println!("RRPC caller when the hub died: {answer:?}");
    assert!(
        !answer.contains("SUCCESS"),
        "an unanswered call was not reported as answered: {answer}"
    );
    d.restart().await;
    let path = format!(
        "/api/v1/business/shadows/{}/{}",
        dev.product_key, dev.device_name
    );
    let (s, _, shadow) = d
        .api_as(Method::GET, &path, None, &format!("Bearer {key}"))
        .await;
    assert_eq!(
        (s, &shadow["state"]["reported"]["color"]),
        (200, &json!("red")),
        "{shadow}"
    );
}

/// Round trips of QoS 1 messages from `publisher` to `subscriber` (one at a time): their
/// p99 in ms.
async fn round_trips_p99(
    publisher: &rumqttc::AsyncClient,
    pev: &mut rumqttc::EventLoop,
    sev: &mut rumqttc::EventLoop,
    n: usize,
) -> f64 {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let sent = Instant::now();
        publisher
            .publish("regular/1", QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
        v3::acked(pev).await;
        let got = v3::next_publish(sev).await;
        assert_eq!(got.payload, i.to_string().as_bytes());
        took.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    took[n * 99 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_open_connections_are_closed_and_slow_no_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = Deployment::unlimited_open_broker().await;
    let (sub, mut sev) = v3::connect(open_v3(&d, "regular-sub")).await;
    sub.subscribe("regular/#", QoS::AtLeastOnce).await.unwrap();
    v3::suback(&mut sev).await;
    let (publisher, mut pev) = v3::connect(open_v3(&d, "regular-pub")).await;
    let before = round_trips_p99(&publisher, &mut pev, &mut sev, 200).await;
    // 4,000 connections that never send CONNECT, and 1,000 that stop in the middle of one.
    let connect = ironhub_conformance::raw::connect("half-open", 60, None);
    let mut idle = Vec::new();
    let opening = Instant::now();
    for i in 0..5_000 {
        let mut s = tokio::net::TcpStream::connect(d.mqtt).await.unwrap();
        if i >= 4_000 {
            s.write_all(&connect[..connect.len() / 2]).await.unwrap();
        }
        idle.push(s);
    }
    // Meanwhile the regular clients keep their round trips.
    let during = round_trips_p99(&publisher, &mut pev, &mut sev, 200).await;
    println!(
        "round trips p99: {before:.2} ms before, {during:.2} ms with 5,000 idle connections \
         (opened in {:?})",
        opening.elapsed()
    );
    // Each idle connection is closed by the hub at its CONNECT deadline (10 s after it opened).
    let mut closed = 0;
    for mut s in idle {
        let mut buf = [0u8; 16];
        let left = Duration::from_secs(25).saturating_sub(opening.elapsed());
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(left, s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 5_000, "every idle connection was closed by the hub");
    // And the regular clients were not.
    let after = round_trips_p99(&publisher, &mut pev, &mut sev, 200).await;
    println!("round trips p99: {after:.2} ms after the idle connections were closed");
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts `mb` MiB at `dir`; None (with the reason printed) where mounting is not allowed.
    fn mount(dir: &std::path::Path, mb: u32) -> Option<Tmpfs> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            println!(
                "skipped: cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs(dir.to_owned()))
    }

    /// Fills the file system but `free_kib`, with a file that [`Tmpfs::make_room`] removes.
    fn fill(&self, free_kib: u64) {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
        let full = std::fs::metadata(&path).unwrap().len();
        f.set_len(full.saturating_sub(free_kib * 1024)).unwrap();
    }

    fn make_room(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_what_it_cannot_store_and_recovers_by_itself() {
    use ironhub_conformance::Launch;
    use ironhub_conformance::http::Http;
    use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PubAckReason};
    use rumqttc::v5::{Event as Event5, mqttbytes::QoS as QoS5};

    let mount: Arc<Mutex<Option<Tmpfs>>> = Arc::default();
    let (http_config, http) = Http::plain();
    let mut d = Deployment::launch(Launch {
        config: format!("[hub]\n[hub.open_broker]\nenabled = true\n{http_config}"),
        prepare_data: Some(Box::new({
            let mount = mount.clone();
            move |dir| *mount.lock().unwrap() = Tmpfs::mount(dir, 32)
        })),
        ..Launch::default()
    })
    .await;
    let Some(disk) = mount.lock().unwrap().take() else {
        return;
    };
    d.unlimit_sandbox().await;
    let dev = d.provision(&Deployment::unique_tenant("full")).await;
    // A persistent subscriber away: what it is sent must be stored.
    subscriber(&d, "keeper", Arc::default(), false).await;
    let (publisher, mut ev) = ironhub_conformance::v5::connect(open_v5(&d, "filler")).await;
    let publish = async |ev: &mut rumqttc::v5::EventLoop, seq: usize| {
        publisher
            .publish(
                format!("chaos/{seq}"),
                QoS5::AtLeastOnce,
                false,
                format!("{seq:0>2048}"),
            )
            .await
            .unwrap();
        loop {
            match ev.poll().await {
                Ok(Event5::Incoming(Packet5::PubAck(a))) => {
                    let reason = a.properties.and_then(|p| p.reason_string);
                    return (a.reason, reason);
                }
                Ok(_) => {}
                Err(e) => panic!("the publisher lost its connection: {e}"),
            }
        }
    };

    disk.fill(512);
    let mut acked = Vec::new();
    let mut refusal = None;
    for seq in 0..5_000 {
        match publish(&mut ev, seq).await {
            (PubAckReason::Success, _) => acked.push(format!("{seq:0>2048}")),
            other => {
                refusal = Some(other);
                break;
            }
        }
    }
    let (code, reason) = refusal.expect("a publish was refused once the disk was full");
    println!(
        "disk full after {} acknowledged messages: {code:?} {reason:?}",
        acked.len()
    );
    assert!(
        matches!(
            code,
            PubAckReason::UnspecifiedError | PubAckReason::QuotaExceeded
        ),
        "{code:?}"
    );
    let reason = reason.expect("the refusal says why");
    assert!(
        reason.contains("No space left") || reason.contains("closed after an I/O error"),
        "{reason}"
    );
    // An HTTP device cannot be given a token it would lose in a restart.
    let (status, _, body) = http.auth(&dev, &dev.device_secret).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unavailable"),
        "{body}"
    );

    // Space returns: publishers are accepted again without a restart.
    disk.make_room();
    let recovered = Instant::now();
    let mut seq = 10_000;
    loop {
        seq += 1;
        if let (PubAckReason::Success, _) = publish(&mut ev, seq).await {
            acked.push(format!("{seq:0>2048}"));
            break;
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(20),
            "still refused 20 s after space returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "accepted again {:?} after space returned",
        recovered.elapsed()
    );
    let (status, _, body) = http.auth(&dev, &dev.device_secret).await;
    assert_eq!(status, 200, "{body}");

    // Everything acknowledged was stored: the subscriber gets all of it.
    let got: HashSet<String> = drain(&d, "keeper").await.into_iter().collect();
    let lost = acked.iter().filter(|m| !got.contains(*m)).count();
    println!(
        "acknowledged {}, received {}, lost {lost}",
        acked.len(),
        got.len()
    );
    assert_eq!(lost, 0, "acknowledged but lost");
    let log = d.log();
    for warning in ["store write failed", "stored-queue commits fail"] {
        assert_eq!(
            log.matches(warning).count(),
            1,
            "one warning for the outage:\n{log}"
        );
    }
    d.kill();
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_the_open_file_limit_is_refused_cleanly() {
    use ironhub_conformance::Launch;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// The hub's open-file limit here (20,000 on this machine; lower keeps the test light).
    const LIMIT: u64 = 1_024;
    const FLOOD: usize = 1_500;
    let d = Deployment::launch(Launch {
        config: "[hub]\n[hub.open_broker]\nenabled = true\n".into(),
        open_files: Some(LIMIT),
        ..Launch::default()
    })
    .await;
    d.unlimit_sandbox().await;
    let (sub, mut sev) = v3::connect(open_v3(&d, "regular-sub")).await;
    sub.subscribe("regular/#", QoS::AtLeastOnce).await.unwrap();
    v3::suback(&mut sev).await;
    let (publisher, mut pev) = v3::connect(open_v3(&d, "regular-pub")).await;

    // MQTT clients that connect and stay, more than the hub has descriptors for.
    let mut flood = Vec::new();
    for i in 0..FLOOD {
        let mut s = tokio::net::TcpStream::connect(d.mqtt).await.unwrap();
        s.write_all(&ironhub_conformance::raw::connect(
            &format!("flood-{i}"),
            60,
            None,
        ))
        .await
        .unwrap();
        flood.push(tokio::spawn(async move {
            let mut ack = [0u8; 4];
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut ack)).await {
                Ok(Ok(n)) if n > 0 && ack[0] == 0x20 => Some(Some(s)),
                Ok(_) => Some(None),
                Err(_) => None,
            }
        }));
    }
    let (mut served, mut refused, mut hanging) = (Vec::new(), 0, 0);
    for f in flood {
        match f.await.unwrap() {
            Some(Some(s)) => served.push(s),
            Some(None) => refused += 1,
            None => hanging += 1,
        }
    }
    println!(
        "flood of {FLOOD} with {LIMIT} descriptors: {} served, {refused} refused, {hanging} left hanging",
        served.len()
    );
    assert_eq!(hanging, 0, "every connection is served or refused at once");
    assert!(refused > 0, "the flood went past the limit");
    assert!(served.len() > 900, "the hub serves up to its limit");
    // The clients it had are served throughout.
    publisher
        .publish("regular/1", QoS::AtLeastOnce, false, "during")
        .await
        .unwrap();
    v3::acked(&mut pev).await;
    assert_eq!(&v3::next_publish(&mut sev).await.payload[..], b"during");
    let warnings = d.log().matches("out of file descriptors").count();
    assert_eq!(warnings, 1, "one warning, not one per refusal");

    // The flood goes: new clients are served again.
    drop(served);
    let gone = Instant::now();
    loop {
        let mut o = open_v3(&d, "after-flood");
        o.set_keep_alive(Duration::from_secs(30));
        let (c, mut ev) = rumqttc::AsyncClient::new(o, 8);
        let acked = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
        .await;
        drop(c);
        if acked == Ok(true) {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(15),
            "not served again after the flood"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("served again {:?} after the flood went", gone.elapsed());
}
