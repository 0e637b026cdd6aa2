//! Chaos: the hub dies the hard way (SIGKILL) under load and nothing it acknowledged is lost.
//! Each scenario is a black-box run of the `ironhub` binary with real MQTT clients, bounded in
//! time; it prints what it counted (acknowledged, received, duplicates) for the record.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use ironhub_conformance::{Deployment, open_v3, v3};
use rumqttc::{Event, Packet, QoS};
use serde_json::json;

/// Publishers sending QoS 1 at once.
const PUBLISHERS: usize = 20;
/// How long they send before the kill.
const LOAD: Duration = Duration::from_secs(2);
/// A slow subscriber's pause per message: the hub holds a backlog for it when the kill comes.
const SLOW: Duration = Duration::from_millis(2);

/// An open broker whose sandbox tenant has no rate limits (the load is the point).
async fn unlimited_open_broker() -> Deployment {
    let d = Deployment::open_broker("").await;
    let profile = json!({ "rates": { "tenant_connections": "", "device_connections": "",
        "tenant_messages": "", "device_messages_qos0": "", "device_messages_qos1": "" },
        "data_points_per_hour": 0 });
    let (s, v) = d
        .api(Method::PUT, "/api/v1/profiles/chaos", Some(profile))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = d
        .api(
            Method::PUT,
            "/api/v1/tenants/sandbox/profile",
            Some(json!({ "profile": "chaos" })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    d
}

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
    let mut d = unlimited_open_broker().await;
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
