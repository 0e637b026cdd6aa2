//! MQTT over QUIC, black-box: a quinn client (ALPN `mqtt`, trusting the certificate the server
//! generated on its first start) speaks MQTT on the first bidirectional stream, next to TCP
//! clients on the same hub.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::Method;
use ironhub_conformance::{Deployment, WAIT, amqp, free_port, open_v3, raw, v3, v5};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

async fn quic_deployment(extra: &str) -> (Deployment, SocketAddr) {
    let port = free_port();
    let d = Deployment::start(&format!(
        "[quic]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n{extra}"
    ))
    .await;
    (d, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Opens a QUIC connection and its MQTT stream.
async fn quic_stream(
    d: &Deployment,
    addr: SocketAddr,
) -> (quinn::Endpoint, quinn::SendStream, quinn::RecvStream) {
    let cert = CertificateDer::from_pem_file(d.data_dir().join("quic-cert.pem"))
        .expect("generated certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"mqtt".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connection = tokio::time::timeout(WAIT, endpoint.connect(addr, "localhost").unwrap())
        .await
        .unwrap()
        .unwrap();
    let (send, recv) = connection.open_bi().await.unwrap();
    (endpoint, send, recv)
}

async fn next(recv: &mut quinn::RecvStream) -> (u8, Vec<u8>) {
    tokio::time::timeout(WAIT, raw::read_packet(recv))
        .await
        .expect("a packet in time")
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_and_tcp_clients_publish_and_subscribe_to_each_other_across_a_migration() {
    let (d, addr) = quic_deployment("[hub.open_broker]\nenabled = true\n").await;
    let (tcp, mut tcp_ev) = v3::connect(open_v3(&d, "tcp-1")).await;
    tcp.subscribe("mix/#", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    v3::suback(&mut tcp_ev).await;

    let (endpoint, mut send, mut recv) = quic_stream(&d, addr).await;
    send.write_all(&raw::connect("quic-1", 60, None))
        .await
        .unwrap();
    assert_eq!(
        next(&mut recv).await,
        (0x20, vec![0, 0]),
        "CONNACK over QUIC"
    );

    send.write_all(&raw::publish("mix/from-quic", b"hello tcp"))
        .await
        .unwrap();
    let got = v3::next_publish(&mut tcp_ev).await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("mix/from-quic", &b"hello tcp"[..])
    );

    // Connection migration: the client moves to a new UDP socket (a new address, as after NAT
    // rebinding); the QUIC connection, and so the MQTT session, carries on.
    endpoint
        .rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .unwrap();
    send.write_all(&raw::subscribe(1, "back/#", 0))
        .await
        .unwrap();
    assert_eq!(
        next(&mut recv).await,
        (0x90, vec![0, 1, 0]),
        "SUBACK over QUIC after migrating"
    );
    tcp.publish(
        "back/from-tcp",
        rumqttc::QoS::AtMostOnce,
        false,
        "hello quic",
    )
    .await
    .unwrap();
    let (first, body) = loop {
        tokio::select! {
            p = next(&mut recv) => break p,
            _ = tcp_ev.poll() => {}
        }
    };
    assert_eq!(first & 0xF0, 0x30);
    assert_eq!(
        raw::publish_parts(&body),
        ("back/from-tcp".to_string(), b"hello quic".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_device_over_quic_takes_over_its_tcp_connection() {
    let (d, addr) = quic_deployment(&amqp::config(amqp::SHARED_NODE)).await;
    let dev = d.provision("acme").await;
    // A consumer group of the device's product: QUIC messages reach it like any other.
    let (s, g) = d
        .api(
            Method::POST,
            "/api/v1/tenants/acme/consumer-groups",
            Some(serde_json::json!({ "name": "backend" })),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let path = format!(
        "/api/v1/tenants/acme/consumer-groups/{}/products/{}",
        g["id"].as_str().unwrap(),
        dev.product_key
    );
    assert_eq!(d.api(Method::PUT, &path, None).await.0, 200);
    let url = amqp::url_as(
        amqp::SHARED_NODE,
        g["credentials"]["username"].as_str().unwrap(),
        g["credentials"]["password"].as_str().unwrap(),
    );
    let mut consumer = amqp::GroupConsumer::start(&url, g["queue"].as_str().unwrap()).await;
    let (_tcp, mut tcp_ev) = v5::connect(dev.v5_options(&d)).await;

    let c = dev.mqtt();
    let (_endpoint, mut send, mut recv) = quic_stream(&d, addr).await;
    send.write_all(&raw::connect(
        &c.client_id,
        60,
        Some((&c.username, &c.password)),
    ))
    .await
    .unwrap();
    assert_eq!(
        next(&mut recv).await,
        (0x20, vec![0, 0]),
        "signed CONNECT accepted over QUIC"
    );
    let reason = v5::closed(&mut tcp_ev).await;
    assert_eq!(
        reason.map(|r| r as u8),
        Some(0x8E),
        "the TCP connection was taken over"
    );

    // And the QUIC session works: the device's own topic round-trips.
    send.write_all(&raw::subscribe(1, &dev.user_topic("q"), 0))
        .await
        .unwrap();
    assert_eq!(next(&mut recv).await.0, 0x90);
    send.write_all(&raw::publish(&dev.user_topic("q"), b"via quic"))
        .await
        .unwrap();
    let (_, body) = next(&mut recv).await;
    assert_eq!(raw::publish_parts(&body).1, b"via quic");
    let upstream: Vec<Vec<u8>> = consumer
        .drain(std::time::Duration::from_secs(2))
        .await
        .into_iter()
        .filter(|m| m.kind == "upstream")
        .map(|m| m.payload)
        .collect();
    assert_eq!(
        upstream,
        [b"via quic".to_vec()],
        "the consumer group got it"
    );
}
