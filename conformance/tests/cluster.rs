//! The cluster with real processes: three `ironhub serve` sharing one FoundationDB cluster (a key
//! prefix of their own), devices as rumqttc clients. The same scenarios as the in-process tests
//! (`server/src/cluster/tests.rs`, which share an in-memory store and run everywhere): a REST
//! downlink through another node, RRPC across nodes, takeover across nodes, a node killed with its
//! devices' QoS 1 messages kept for them, and a tenant rate limit held across nodes.
//!
//! Runs where FoundationDB is: `FDB_CLUSTER_FILE` names the cluster file and `IRONHUB_BIN` a
//! build with the store (`cargo build -p ironhub --features fdb`). Elsewhere it says why it
//! skipped and passes.

use std::time::Duration;

use hyper::Method;
use ironhub_conformance::{Deployment, DeviceCreds, free_port, v3};
use rumqttc::QoS;
use serde_json::{Value, json};

async fn node(id: &str, cluster_file: &str, prefix: &str) -> Deployment {
    Deployment::start(&format!(
        "[store]\nbackend = \"fdb\"\ncluster_file = {cluster_file:?}\nkey_prefix = \"{prefix}\"\n\
         [cluster]\nnode_id = \"{id}\"\nlisten = \"127.0.0.1:{}\"\nsecret = \"conformance\"\n\
         heartbeat_ms = 200\nlease_ms = 1000\n",
        free_port()
    ))
    .await
}

async fn business(d: &Deployment, key: &str, path: &str, body: Value) -> Value {
    let (status, _, v) = d
        .api_as(Method::POST, path, Some(body), &format!("Bearer {key}"))
        .await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// Waits until `d` counts `n` live nodes.
async fn until_nodes(d: &Deployment, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.api(Method::GET, "/api/v1/stats", None).await.1["cluster_nodes"] != json!(n) {
        assert!(std::time::Instant::now() < deadline, "{n} nodes not seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_sharing_foundationdb() {
    let Ok(cluster_file) = std::env::var("FDB_CLUSTER_FILE") else {
        eprintln!(
            "skipped: FDB_CLUSTER_FILE is not set (no FoundationDB cluster here; the in-process \
             cluster tests in server/src/cluster/tests.rs cover the same scenarios)"
        );
        return;
    };
    let prefix = format!(
        "conformance-{}/",
        ironhub_core::data::model::random_token(8)
    );
    let a = node("a", &cluster_file, &prefix).await;
    let mut b = node("b", &cluster_file, &prefix).await;
    let c = node("c", &cluster_file, &prefix).await;
    until_nodes(&a, 3).await;

    let tenant = Deployment::unique_tenant("cluster");
    let profile =
        json!({ "rates": { "tenant_messages": "30:3600", "device_messages_qos0": "1000:1" } });
    let dev1 = a.tenant_with_profile(&tenant, profile).await;
    let dev2 = a.add_device(&dev1.product_key, "dev-2").await;
    let dev3 = a.add_device(&dev1.product_key, "dev-3").await;
    let key = a.api_key(&tenant, "backend").await;
    // The configuration reaches the other nodes within a few heartbeats.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pub_to = |dev: &DeviceCreds, payload: &str| {
        json!({ "product_key": dev.product_key, "device_name": dev.device_name,
                "topic": dev.user_topic("get"), "payload": payload, "qos": 1 })
    };

    // A REST downlink sent to node c reaches the device on node a; RRPC the same way.
    let mut o = dev1.v3_options(&a);
    o.set_clean_session(false);
    let (client, mut ev) = v3::connect(o).await;
    client
        .subscribe(dev1.user_topic("get"), QoS::AtLeastOnce)
        .await
        .unwrap();
    v3::suback(&mut ev).await;
    let v = business(&c, &key, "/api/v1/business/pub", pub_to(&dev1, "via c")).await;
    assert_eq!(v["delivered_to"], 1, "{v}");
    assert_eq!(&v3::next_publish(&mut ev).await.payload[..], b"via c");

    // Takeover: the same device on node b; the session and its subscription move.
    let mut o = dev1.v3_options(&b);
    o.set_clean_session(false);
    let (_client_b, mut ev_b) = v3::connect(o).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while ev.poll().await.is_ok() {}
    })
    .await;
    assert!(closed.is_ok(), "the connection on node a was closed");
    let v = business(&c, &key, "/api/v1/business/pub", pub_to(&dev1, "to b")).await;
    assert_eq!(v["delivered_to"], 1, "{v}");
    assert_eq!(&v3::next_publish(&mut ev_b).await.payload[..], b"to b");

    // Node b killed: the message sent meanwhile waits in the stored queue; the device gets it on
    // node a.
    b.kill();
    business(&a, &key, "/api/v1/business/pub", pub_to(&dev1, "kept")).await;
    until_nodes(&a, 2).await;
    let mut o = dev1.v3_options(&a);
    o.set_clean_session(false);
    let (again, mut ev) = v3::connect(o).await;
    assert_eq!(&v3::next_publish(&mut ev).await.payload[..], b"kept");

    // RRPC through node c to the device on node a.
    let responder = v3::answer_rrpc(again, ev, |_| b"pong".to_vec());
    let call = json!({ "product_key": dev1.product_key, "device_name": dev1.device_name,
                       "payload": "ping", "timeout_ms": 5000 });
    let v = business(&c, &key, "/api/v1/business/rrpc", call).await;
    assert_eq!(
        (v["rrpc_code"].as_str(), v["payload"].as_str()),
        (Some("SUCCESS"), Some("pong")),
        "{v}"
    );
    responder.abort();

    // The tenant's rate (30 per hour) split between the two live nodes: at most 30 admitted.
    let mut admitted = 0;
    for (dev, d) in [(&dev2, &a), (&dev3, &c)] {
        let (client, mut ev) = v3::connect(dev.v3_options(d)).await;
        for i in 0..25 {
            client
                .publish(
                    dev.user_topic("data"),
                    QoS::AtMostOnce,
                    false,
                    format!("{i}"),
                )
                .await
                .unwrap();
        }
        client
            .publish(dev.user_topic("data"), QoS::AtLeastOnce, false, "end")
            .await
            .unwrap();
        v3::acked(&mut ev).await;
        let stats = d.api(Method::GET, "/api/v1/stats", None).await.1;
        let received = &stats["transports"]["mqtt"]["received"];
        admitted += received[0].as_u64().unwrap() + received[1].as_u64().unwrap();
    }
    assert!(
        admitted <= 30,
        "{admitted} admitted with a tenant limit of 30"
    );
}
