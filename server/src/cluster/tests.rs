//! Three nodes in one process, each on its own runtime (so one can be killed: its runtime stops
//! at once, its sockets close, nothing of it runs again), sharing one in-memory store and talking
//! over real loopback sockets; devices are rumqttc clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ironhub_conformance::v3;
use ironhub_core::store::Store;
use ironhub_core::store::memory::memory_store;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use crate::config::{ClusterConfig, Config, StoreBackend};
use crate::serve::Node;

const TOKEN: &str = "cluster-test-admin";
const HEARTBEAT_MS: u64 = 200;
const LEASE_MS: u64 = 1000;
/// Every wait in these tests ends by then.
const WAIT: Duration = Duration::from_secs(10);

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ironhub_conformance::free_port()))
}

/// One node: its own runtime, its addresses.
struct TestNode {
    id: &'static str,
    runtime: Option<Runtime>,
    node: Option<Node>,
    mqtt: SocketAddr,
    api: SocketAddr,
    http: SocketAddr,
}

/// One HTTP/1.1 exchange: the status and the JSON body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(request.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("an answer in time")
        .expect("reachable");
    let text = String::from_utf8_lossy(&raw);
    let status = text[9..12].parse().expect("status code");
    let json = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| serde_json::from_str(b).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    (status, json)
}

impl TestNode {
    async fn start(id: &'static str, store: Arc<dyn Store>) -> TestNode {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        // Another test may take a free port before the node binds it: then try new ones.
        for _ in 0..5 {
            let (mqtt, api, link, http) = (free_addr(), free_addr(), free_addr(), free_addr());
            let mut config = Config::default();
            config.store.backend = StoreBackend::Memory;
            config.admin.listen = api;
            config.admin.token = Some(TOKEN.into());
            config.mqtt.listen = mqtt;
            config.http.enabled = true;
            config.http.listen = http;
            config.hub.session_sweep_interval_secs = 1;
            config.hub.open_broker.enabled = true;
            config.cluster = Some(ClusterConfig {
                node_id: id.into(),
                listen: link,
                advertise: None,
                mqtt_advertise: Some(mqtt.to_string()),
                secret: "cluster-secret".into(),
                heartbeat_ms: HEARTBEAT_MS,
                lease_ms: LEASE_MS,
            });
            let store = store.clone();
            let started = runtime
                .spawn(async move { Node::start(&config, store).await })
                .await
                .expect("node task");
            match started {
                Ok(node) => {
                    return TestNode {
                        id,
                        runtime: Some(runtime),
                        node: Some(node),
                        mqtt,
                        api,
                        http,
                    };
                }
                Err(e) if format!("{e:#}").contains("Address already in use") => continue,
                Err(e) => panic!("node starts: {e:#}"),
            }
        }
        panic!("node {id} did not start: no free ports after 5 tries")
    }

    /// Stops the node at once, as a crash would: nothing is persisted, its lease just runs out.
    fn kill(&mut self) {
        drop(self.node.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Stops the node gracefully (it leaves the cluster and hands its devices over).
    async fn stop(&mut self) {
        if let (Some(node), Some(rt)) = (self.node.take(), self.runtime.as_ref()) {
            rt.spawn(node.stop()).await.expect("stop");
        }
        self.kill();
    }

    /// Calls the node's admin or business API; the status and JSON body.
    async fn api(&self, method: &str, path: &str, auth: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = format!("Authorization: Bearer {auth}\r\n");
        http(self.api, method, path, &auth, &body).await
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.api(method, path, TOKEN, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} on {}: {status} {v}",
            self.id
        );
        v
    }

    async fn stats(&self) -> Value {
        self.admin("GET", "/api/v1/stats", None).await
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Cluster3 {
    nodes: Vec<TestNode>,
    store: Arc<dyn Store>,
}

impl Cluster3 {
    async fn start() -> Cluster3 {
        let store: Arc<dyn Store> = Arc::new(memory_store());
        let mut nodes = Vec::new();
        for id in ["a", "b", "c"] {
            nodes.push(TestNode::start(id, store.clone()).await);
        }
        let c = Cluster3 { nodes, store };
        c.until_nodes(3).await;
        c
    }

    fn node(&self, id: &str) -> &TestNode {
        self.nodes.iter().find(|n| n.id == id).expect("node")
    }

    fn node_mut(&mut self, id: &str) -> &mut TestNode {
        self.nodes.iter_mut().find(|n| n.id == id).expect("node")
    }

    /// Waits until every running node counts `n` live nodes.
    async fn until_nodes(&self, n: u64) {
        for node in self.nodes.iter().filter(|n| n.node.is_some()) {
            until(&format!("{} to see {n} nodes", node.id), || async {
                node.stats().await["cluster_nodes"] == json!(n)
            })
            .await;
        }
    }

    /// A tenant (with `profile` when given), a product and `devices`, created on node a; waits
    /// until the configuration has reached every node.
    async fn provision(&self, tenant: &str, profile: Option<Value>, devices: &[&str]) -> Fleet {
        let a = self.node("a");
        let mut body = json!({ "id": tenant });
        if let Some(p) = profile {
            a.admin("PUT", &format!("/api/v1/profiles/{tenant}"), Some(p))
                .await;
            body["profile"] = json!(tenant);
        }
        a.admin("POST", "/api/v1/tenants", Some(body)).await;
        let p = a
            .admin(
                "POST",
                "/api/v1/products",
                Some(json!({ "tenant": tenant, "name": "p" })),
            )
            .await;
        let pk = p["product_key"].as_str().unwrap().to_owned();
        let mut secrets = Vec::new();
        for dn in devices {
            let d = a
                .admin(
                    "POST",
                    &format!("/api/v1/products/{pk}/devices"),
                    Some(json!({ "device_name": dn })),
                )
                .await;
            secrets.push((
                dn.to_string(),
                d["device_secret"].as_str().unwrap().to_owned(),
            ));
        }
        let key = a
            .admin(
                "POST",
                &format!("/api/v1/tenants/{tenant}/api-keys"),
                Some(json!({ "name": "backend" })),
            )
            .await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        // Every node has reloaded the configuration once it accepts the key created on a.
        for node in &self.nodes {
            until(&format!("the API key on {}", node.id), || async {
                node.api("GET", "/api/v1/whoami", &key, None).await.0 == 200
            })
            .await;
        }
        Fleet { pk, secrets, key }
    }
}

struct Fleet {
    pk: String,
    secrets: Vec<(String, String)>,
    key: String,
}

impl Fleet {
    fn options(&self, dn: &str, node: &TestNode, clean: bool) -> MqttOptions {
        let secret = &self
            .secrets
            .iter()
            .find(|(d, _)| d == dn)
            .expect("device")
            .1;
        let c =
            ironhub_core::auth::device_credentials(&self.pk, dn, secret, ironhub_core::now_ms());
        let mut o = MqttOptions::new(c.client_id, node.mqtt.ip().to_string(), node.mqtt.port());
        o.set_credentials(c.username, c.password)
            .set_keep_alive(Duration::from_secs(60))
            .set_clean_session(clean);
        o
    }

    fn topic(&self, dn: &str, leaf: &str) -> String {
        format!("/{}/{dn}/user/{leaf}", self.pk)
    }
}

/// Polls `check` until it holds; panics after [`WAIT`].
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects; returns the client, its event loop and whether a session was present.
async fn connect(opts: MqttOptions) -> (AsyncClient, EventLoop, bool) {
    let (c, mut ev) = AsyncClient::new(opts, 64);
    let present = tokio::time::timeout(WAIT, async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    assert_eq!(a.code, rumqttc::ConnectReturnCode::Success);
                    return a.session_present;
                }
                Err(e) => panic!("connect failed: {e}"),
                _ => {}
            }
        }
    })
    .await
    .expect("CONNACK in time");
    (c, ev, present)
}

async fn subscribe(c: &AsyncClient, ev: &mut EventLoop, topic: &str) {
    c.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    v3::suback(ev).await;
}

/// Keeps polling a client in the background (answers RRPC requests with `pong:<request>`).
fn serve_rrpc(c: AsyncClient, ev: EventLoop) -> tokio::task::JoinHandle<()> {
    v3::answer_rrpc(c, ev, |request| [b"pong:".as_slice(), request].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downlink_sent_to_node_c_reaches_a_device_on_node_a() {
    let cluster = Cluster3::start().await;
    let fleet = cluster.provision("downlink", None, &["dev1"]).await;
    let (a, c) = (cluster.node("a"), cluster.node("c"));
    let (client, mut ev, _) = connect(fleet.options("dev1", a, true)).await;
    subscribe(&client, &mut ev, &fleet.topic("dev1", "get")).await;
    let body = json!({ "product_key": fleet.pk, "device_name": "dev1",
        "topic": fleet.topic("dev1", "get"), "payload": "from c", "qos": 1 });
    let (status, v) = c
        .api("POST", "/api/v1/business/pub", &fleet.key, Some(body))
        .await;
    assert_eq!((status, &v["delivered_to"]), (200, &json!(1)), "{v}");
    let got = v3::next_publish(&mut ev).await;
    assert_eq!(&got.payload[..], b"from c");
    // The device's state is the same seen from any node.
    let path = format!("/api/v1/business/devices/{}/dev1", fleet.pk);
    let (_, status_c) = c.api("GET", &path, &fleet.key, None).await;
    assert_eq!(status_c["state"], "online", "{status_c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrpc_across_nodes_succeeds_or_finds_the_device_offline() {
    let cluster = Cluster3::start().await;
    let fleet = cluster
        .provision("rrpc", None, &["dev1", "dev2", "dev3"])
        .await;
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    let (client, ev, _) = connect(fleet.options("dev1", a, true)).await;
    let responder = serve_rrpc(client, ev);
    // dev3, on node b, takes user RRPC (`/ext/rrpc/+/{pk}/dev3/user/cmd`) and answers on the
    // topic of the request: node c learns that from b and calls it so.
    let (client3, mut ev3, _) = connect(fleet.options("dev3", b, true)).await;
    let wrapped = format!("/ext/rrpc/+{}", fleet.topic("dev3", "cmd"));
    subscribe(&client3, &mut ev3, &wrapped).await;
    let user_responder = tokio::spawn(async move {
        while let Ok(e) = ev3.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = e
                && p.topic.starts_with("/ext/rrpc/")
            {
                let answer = [b"user:".as_slice(), &p.payload].concat();
                let topic = p.topic.to_string();
                client3
                    .publish(topic, QoS::AtMostOnce, false, answer)
                    .await
                    .unwrap();
            }
        }
    });
    let call = |dn: &str| json!({ "product_key": fleet.pk, "device_name": dn, "payload": "ping", "timeout_ms": 5000 });
    let (status, v) = c
        .api(
            "POST",
            "/api/v1/business/rrpc",
            &fleet.key,
            Some(call("dev1")),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["rrpc_code"].as_str(), v["payload"].as_str()),
        (Some("SUCCESS"), Some("pong:ping")),
        "{v}"
    );
    let (_, v) = c
        .api(
            "POST",
            "/api/v1/business/rrpc",
            &fleet.key,
            Some(call("dev2")),
        )
        .await;
    assert_eq!(v["rrpc_code"], "OFFLINE", "{v}");
    let (_, v) = c
        .api(
            "POST",
            "/api/v1/business/rrpc",
            &fleet.key,
            Some(call("dev3")),
        )
        .await;
    assert_eq!(
        (v["rrpc_code"].as_str(), v["payload"].as_str()),
        (Some("SUCCESS"), Some("user:ping")),
        "{v}"
    );
    responder.abort();
    user_responder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_on_another_node_takes_the_session_over() {
    let cluster = Cluster3::start().await;
    let fleet = cluster.provision("takeover", None, &["dev1"]).await;
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    let (first, mut first_ev, _) = connect(fleet.options("dev1", a, false)).await;
    subscribe(&first, &mut first_ev, &fleet.topic("dev1", "get")).await;
    let (_second, mut second_ev, present) = connect(fleet.options("dev1", b, false)).await;
    assert!(
        present,
        "the session (and its subscription) moved with the device"
    );
    // The first connection was closed by node a.
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if first_ev.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection on node a was closed");
    let body = json!({ "product_key": fleet.pk, "device_name": "dev1",
        "topic": fleet.topic("dev1", "get"), "payload": "to b", "qos": 1 });
    let (status, v) = c
        .api("POST", "/api/v1/business/pub", &fleet.key, Some(body))
        .await;
    assert_eq!((status, &v["delivered_to"]), (200, &json!(1)), "{v}");
    assert_eq!(&v3::next_publish(&mut second_ev).await.payload[..], b"to b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_of_a_killed_node_reconnect_elsewhere_and_get_their_queued_messages() {
    let mut cluster = Cluster3::start().await;
    let fleet = cluster.provision("failover", None, &["dev1", "dev2"]).await;
    for dn in ["dev1", "dev2"] {
        let (client, mut ev, _) = connect(fleet.options(dn, cluster.node("b"), false)).await;
        subscribe(&client, &mut ev, &fleet.topic(dn, "get")).await;
        // The connections die with the node.
        tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    }
    cluster.node_mut("b").kill();
    // Sent while b is gone, some before its lease ran out: all are kept for the sessions.
    for (i, dn) in ["dev1", "dev2", "dev1"].iter().enumerate() {
        let body = json!({ "product_key": fleet.pk, "device_name": dn,
            "topic": fleet.topic(dn, "get"), "payload": format!("m{i}"), "qos": 1 });
        let (status, v) = cluster
            .node("a")
            .api("POST", "/api/v1/business/pub", &fleet.key, Some(body))
            .await;
        assert_eq!(status, 200, "{v}");
    }
    cluster.nodes.retain(|n| n.id != "b");
    cluster.until_nodes(2).await;
    for (dn, node, expected) in [("dev1", "a", vec!["m0", "m2"]), ("dev2", "c", vec!["m1"])] {
        let (_c, mut ev, present) = connect(fleet.options(dn, cluster.node(node), false)).await;
        assert!(present, "{dn}'s session survived the node");
        let mut got = Vec::new();
        for _ in &expected {
            got.push(
                String::from_utf8_lossy(&v3::next_publish(&mut ev).await.payload).into_owned(),
            );
        }
        assert_eq!(got, expected, "{dn} on {node}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_rate_limit_holds_across_nodes() {
    const LIMIT: u64 = 30;
    let cluster = Cluster3::start().await;
    let profile = json!({ "rates": { "tenant_messages": format!("{LIMIT}:3600"), "device_messages_qos0": "1000:1" } });
    let fleet = cluster
        .provision("limits", Some(profile), &["dev1", "dev2", "dev3"])
        .await;
    let mut sent = Vec::new();
    for (dn, node) in [("dev1", "a"), ("dev2", "b"), ("dev3", "c")] {
        let (client, mut ev, _) = connect(fleet.options(dn, cluster.node(node), true)).await;
        for i in 0..20 {
            client
                .publish(
                    fleet.topic(dn, "data"),
                    QoS::AtMostOnce,
                    false,
                    format!("{i}"),
                )
                .await
                .unwrap();
        }
        // Sent once the client's queue drained; then a QoS 1 round trip proves it reached the hub.
        client
            .publish(fleet.topic(dn, "data"), QoS::AtLeastOnce, false, "end")
            .await
            .unwrap();
        v3::acked(&mut ev).await;
        sent.push(client);
    }
    let mut admitted = 0;
    for node in &cluster.nodes {
        let received = &node.stats().await["transports"]["mqtt"]["received"];
        admitted += received[0].as_u64().unwrap() + received[1].as_u64().unwrap();
    }
    // 63 sent; each node admits its third of the tenant's rate (docs/operations.md).
    assert!(
        admitted <= LIMIT,
        "{admitted} admitted across the cluster, limit {LIMIT}"
    );
    assert!(
        admitted >= LIMIT - 3,
        "{admitted} admitted: each node's share is used"
    );
}

/// An MQTT 5 CONNECT with user name and password, clean start, no properties.
fn connect_v5(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let string = |s: &str| {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    };
    let mut body = string("MQTT");
    body.extend_from_slice(&[5, 0xC2, 0, 60, 0]);
    for s in [client_id, username, password] {
        body.extend(string(s));
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

/// Reads MQTT packets until a DISCONNECT: its reason code and Server Reference (rumqttc does not
/// show the properties of a DISCONNECT, so this test reads the bytes itself).
async fn read_disconnect(stream: &mut tokio::net::TcpStream) -> (u8, Option<String>) {
    loop {
        let kind = stream.read_u8().await.expect("a packet");
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = stream.read_u8().await.expect("length");
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await.expect("body");
        if kind != 0xE0 {
            continue;
        }
        let reason = body[0];
        // Properties: a one-byte length here (they are short), then id/value pairs.
        let mut props = &body[2..2 + usize::from(body[1])];
        let mut reference = None;
        while let [id, hi, lo, rest @ ..] = props {
            let n = usize::from(u16::from_be_bytes([*hi, *lo]));
            let value = String::from_utf8_lossy(&rest[..n]).into_owned();
            if *id == 0x1C {
                reference = Some(value);
            }
            props = &rest[n..];
        }
        return (reason, reference);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaving_sends_its_mqtt5_devices_to_another() {
    let mut cluster = Cluster3::start().await;
    let fleet = cluster.provision("handover", None, &["dev1"]).await;
    let secret = &fleet.secrets[0].1;
    let creds =
        ironhub_core::auth::device_credentials(&fleet.pk, "dev1", secret, ironhub_core::now_ms());
    let mut stream = tokio::net::TcpStream::connect(cluster.node("c").mqtt)
        .await
        .unwrap();
    stream
        .write_all(&connect_v5(
            &creds.client_id,
            &creds.username,
            &creds.password,
        ))
        .await
        .unwrap();
    let mut connack = [0u8; 2];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack[0], 0x20, "CONNACK");
    let mut rest = vec![0; usize::from(connack[1])];
    stream.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest[1], 0, "connection accepted");
    let others = [
        cluster.node("a").mqtt.to_string(),
        cluster.node("b").mqtt.to_string(),
    ];
    let stopping = tokio::spawn(async move {
        cluster.node_mut("c").stop().await;
        cluster
    });
    let (reason, reference) = tokio::time::timeout(WAIT, read_disconnect(&mut stream))
        .await
        .expect("a DISCONNECT in time");
    assert_eq!(reason, 0x9C, "use another server");
    let reference = reference.expect("a server reference");
    assert!(
        others.contains(&reference),
        "{reference} is another node's MQTT address"
    );
    let mut cluster = stopping.await.unwrap();
    cluster.nodes.retain(|n| n.id != "c");
    cluster.until_nodes(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_downlink_reaches_the_device_on_whichever_node_it_subscribes() {
    let cluster = Cluster3::start().await;
    let fleet = cluster.provision("retained", None, &["dev1"]).await;
    let body = json!({ "tenant": "retained", "topic": fleet.topic("dev1", "config"),
        "payload": "v42", "qos": 1, "retain": true });
    cluster
        .node("c")
        .admin("POST", "/api/v1/messages", Some(body))
        .await;
    let (client, mut ev, _) = connect(fleet.options("dev1", cluster.node("a"), true)).await;
    client
        .subscribe(fleet.topic("dev1", "config"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = v3::next_publish(&mut ev).await;
    assert_eq!((&got.payload[..], got.retain), (&b"v42"[..], true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_of_a_killed_node_expire_in_the_store() {
    let mut cluster = Cluster3::start().await;
    let fleet = cluster.provision("expiry", None, &["dev1"]).await;
    let secret = &fleet.secrets[0].1;
    let creds =
        ironhub_core::auth::device_credentials(&fleet.pk, "dev1", secret, ironhub_core::now_ms());
    let b = cluster.node("b");
    let mut o =
        rumqttc::v5::MqttOptions::new(creds.client_id, b.mqtt.ip().to_string(), b.mqtt.port());
    o.set_credentials(creds.username, creds.password)
        .set_keep_alive(Duration::from_secs(60))
        .set_clean_start(false)
        .set_session_expiry_interval(Some(1));
    let (_client, mut ev) = rumqttc::v5::AsyncClient::new(o, 16);
    tokio::time::timeout(WAIT, async {
        loop {
            if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_)) =
                ev.poll().await.expect("connects")
            {
                return;
            }
        }
    })
    .await
    .expect("CONNACK");
    let key = format!("{}/dev1", fleet.pk);
    let stored = |store: Arc<dyn Store>, key: String| async move {
        ironhub_core::store::transact(&*store, |t| {
            let key = key.clone();
            Box::pin(async move { ironhub_core::store::records::get_session(t, &key).await })
        })
        .await
        .unwrap()
    };
    assert!(stored(cluster.store.clone(), key.clone()).await.is_some());
    cluster.node_mut("b").kill();
    drop(ev);
    // Node a leads once b is gone; the session (expiry 1 s, never disconnected cleanly) is
    // reclaimed once b's lease and the session's expiry have passed.
    until("the stored session reclaimed", || {
        let (store, key) = (cluster.store.clone(), key.clone());
        async move { stored(store, key).await.is_none() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_token_from_one_node_works_on_another() {
    let cluster = Cluster3::start().await;
    let fleet = cluster.provision("httptoken", None, &["dev1"]).await;
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    // The same device over MQTT on node c watches its own topic.
    let (client, mut ev, _) = connect(fleet.options("dev1", c, true)).await;
    subscribe(&client, &mut ev, &fleet.topic("dev1", "update")).await;
    let secret = &fleet.secrets[0].1;
    let ts = ironhub_core::now_ms().to_string();
    let client_id = format!("{}.dev1", fleet.pk);
    let sign = ironhub_core::auth::mqtt_password(
        ironhub_core::auth::SignMethod::HmacSha1,
        secret,
        &client_id,
        "dev1",
        &fleet.pk,
        Some(&ts),
    );
    let auth = json!({ "productKey": fleet.pk, "deviceName": "dev1", "clientId": client_id,
        "timestamp": ts, "signmethod": "hmacsha1", "sign": sign });
    let (status, v) = http(a.http, "POST", "/auth", "", &auth.to_string()).await;
    assert_eq!(status, 200, "{v}");
    let token = v["info"]["token"].as_str().expect("token").to_owned();
    let path = format!("/topic{}", fleet.topic("dev1", "update"));
    let (status, v) = http(
        b.http,
        "POST",
        &path,
        &format!("password: {token}\r\n"),
        "t=21",
    )
    .await;
    assert_eq!(status, 200, "node b accepts node a's token: {v}");
    assert_eq!(
        &v3::next_publish(&mut ev).await.payload[..],
        b"t=21",
        "routed to node c"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_on_the_same_node_stays_online_for_the_others() {
    let cluster = Cluster3::start().await;
    let fleet = cluster.provision("sameconn", None, &["dev1"]).await;
    let (a, c) = (cluster.node("a"), cluster.node("c"));
    let (_first, mut first_ev, _) = connect(fleet.options("dev1", a, false)).await;
    let (_second, mut second_ev, present) = connect(fleet.options("dev1", a, false)).await;
    assert!(present);
    let closed = tokio::time::timeout(WAIT, async { while first_ev.poll().await.is_ok() {} }).await;
    assert!(closed.is_ok(), "the first connection was taken over");
    let path = format!("/api/v1/business/devices/{}/dev1", fleet.pk);
    let (_, status) = c.api("GET", &path, &fleet.key, None).await;
    assert_eq!(status["state"], "online", "seen from node c: {status}");
    let body = json!({ "product_key": fleet.pk, "device_name": "dev1",
        "payload": "ping", "timeout_ms": 2000 });
    let (_, v) = c
        .api("POST", "/api/v1/business/rrpc", &fleet.key, Some(body))
        .await;
    assert_eq!(
        v["rrpc_code"], "TIMEOUT",
        "reached the device (which does not answer): {v}"
    );
    let request = v3::next_publish(&mut second_ev).await;
    assert!(
        request.topic.contains("/rrpc/request/"),
        "{}",
        request.topic
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_device_online_through_its_gateway_on_node_a_gets_a_downlink_sent_to_node_c() {
    use ironhub_conformance::DeviceCreds;
    use ironhub_conformance::gateway::{batch_login, session_call};
    let cluster = Cluster3::start().await;
    let fleet = cluster.provision("gateways", None, &["sub-1"]).await;
    let (a, c) = (cluster.node("a"), cluster.node("c"));
    let product = a
        .admin(
            "POST",
            "/api/v1/products",
            Some(json!({ "tenant": "gateways", "name": "gw", "node_type": "gateway" })),
        )
        .await;
    let gw_pk = product["product_key"].as_str().unwrap().to_owned();
    let made = a
        .admin(
            "POST",
            &format!("/api/v1/products/{gw_pk}/devices"),
            Some(json!({ "device_name": "gw-1" })),
        )
        .await;
    let creds = |pk: &str, dn: &str, secret: &str| DeviceCreds {
        tenant: "gateways".into(),
        product_key: pk.into(),
        device_name: dn.into(),
        device_secret: secret.into(),
        product_secret: String::new(),
    };
    let gw = creds(&gw_pk, "gw-1", made["device_secret"].as_str().unwrap());
    let sub = creds(&fleet.pk, "sub-1", &fleet.secrets[0].1);
    let attach = format!(
        "/api/v1/products/{gw_pk}/devices/gw-1/sub-devices/{}/sub-1",
        fleet.pk
    );
    a.admin("PUT", &attach, None).await;

    let c_ = ironhub_core::auth::device_credentials(
        &gw_pk,
        "gw-1",
        &gw.device_secret,
        ironhub_core::now_ms(),
    );
    let mut o = MqttOptions::new(c_.client_id, a.mqtt.ip().to_string(), a.mqtt.port());
    o.set_credentials(c_.username, c_.password)
        .set_keep_alive(Duration::from_secs(60));
    let (client, mut ev, _) = connect(o).await;
    let login = batch_login(std::slice::from_ref(&sub));
    let reply = session_call(&client, &mut ev, &gw, "batch_login", login, |_| {}).await;
    assert_eq!(reply["code"], 200, "{reply}");
    subscribe(&client, &mut ev, &fleet.topic("sub-1", "get")).await;

    let body = json!({ "product_key": fleet.pk, "device_name": "sub-1",
        "topic": fleet.topic("sub-1", "get"), "payload": "to the sub-device", "qos": 1 });
    let (status, v) = c
        .api("POST", "/api/v1/business/pub", &fleet.key, Some(body))
        .await;
    assert_eq!((status, &v["delivered_to"]), (200, &json!(1)), "{v}");
    let got = v3::next_publish(&mut ev).await;
    assert_eq!(got.topic, fleet.topic("sub-1", "get"));
    assert_eq!(&got.payload[..], b"to the sub-device");
    let path = format!("/api/v1/business/devices/{}/sub-1", fleet.pk);
    let (_, seen_from_c) = c.api("GET", &path, &fleet.key, None).await;
    assert_eq!(seen_from_c["state"], "online", "{seen_from_c}");

    // The gateway leaves: the sub-device is offline for every node.
    drop((client, ev));
    until("the sub-device offline as node c sees it", || async {
        c.api("GET", &path, &fleet.key, None).await.1["state"] == "offline"
    })
    .await;
}

/// An anonymous (open-broker) client of `node`.
fn open_client(id: &str, node: &TestNode) -> MqttOptions {
    let mut o = MqttOptions::new(id, node.mqtt.ip().to_string(), node.mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Collects the payloads `ev` receives (acknowledging them) until `quiet` passes without one.
async fn payloads_until_quiet(ev: &mut EventLoop, quiet: Duration) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(p) = v3::next_publish_within(ev, quiet).await {
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_gives_each_message_to_one_member_in_the_whole_cluster() {
    let cluster = Cluster3::start().await;
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    let (ma, mut ma_ev, _) = connect(open_client("member-a", a)).await;
    subscribe(&ma, &mut ma_ev, "$share/workers/jobs/#").await;
    let (mb, mut mb_ev, _) = connect(open_client("member-b", b)).await;
    subscribe(&mb, &mut mb_ev, "$share/workers/jobs/#").await;
    let (watch, mut watch_ev, _) = connect(open_client("watcher", a)).await;
    subscribe(&watch, &mut watch_ev, "jobs/#").await;
    let (p, mut p_ev, _) = connect(open_client("producer", c)).await;
    for i in 0..6 {
        p.publish("jobs/x", QoS::AtLeastOnce, false, format!("job-{i}"))
            .await
            .unwrap();
        v3::acked(&mut p_ev).await;
    }
    let quiet = Duration::from_millis(800);
    let (got_a, got_b, watched) = tokio::join!(
        payloads_until_quiet(&mut ma_ev, quiet),
        payloads_until_quiet(&mut mb_ev, quiet),
        payloads_until_quiet(&mut watch_ev, quiet)
    );
    let mut all: Vec<String> = got_a.iter().chain(&got_b).cloned().collect();
    all.sort();
    let expected: Vec<String> = (0..6).map(|i| format!("job-{i}")).collect();
    assert_eq!(
        all, expected,
        "each job once, in the whole cluster: a {got_a:?}, b {got_b:?}"
    );
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "members on both nodes take turns: a {got_a:?}, b {got_b:?}"
    );
    assert_eq!(watched.len(), 6, "a plain subscription gets every job");
}
