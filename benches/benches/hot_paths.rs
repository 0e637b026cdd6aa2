//! Micro-benchmarks of the per-message hot paths: MQTT decode and encode, topic matching against
//! many subscriptions, rate-limit buckets and the hourly window, signature verification at
//! connect, and a store transaction on each backend.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ironhub_core::auth::{SignMethod, mqtt_password, signature_matches};
use ironhub_core::topic::TopicTree;

/// 10^5 subscriptions shaped like a fleet: each device subscribes to its own user topics, plus a
/// few wildcard listeners.
fn subscription_tree() -> TopicTree<u32> {
    let mut tree = TopicTree::default();
    for i in 0..100_000u32 {
        let filter = format!("/pk{}/dev{}/user/#", i % 100, i);
        tree.insert(&filter, i, |v| *v == i);
    }
    tree.insert("/+/+/user/alarm", 1_000_001, |v| *v == 1_000_001);
    tree.insert("#", 1_000_002, |v| *v == 1_000_002);
    tree
}

fn topic_matching(c: &mut Criterion) {
    let tree = subscription_tree();
    c.bench_function("match one topic against 1e5 subscriptions", |b| {
        b.iter(|| {
            let mut n = 0;
            tree.for_each_match(black_box("/pk42/dev4242/user/alarm"), |_| n += 1);
            assert_eq!(n, 3);
        })
    });
}

fn signatures(c: &mut Criterion) {
    let expected = mqtt_password(
        SignMethod::HmacSha256,
        "secret",
        "id",
        "dev",
        "pk",
        Some("1"),
    );
    c.bench_function("verify hmacsha256 connect signature", |b| {
        b.iter(|| {
            let sig = mqtt_password(
                SignMethod::HmacSha256,
                "secret",
                "id",
                "dev",
                "pk",
                Some("1"),
            );
            assert!(signature_matches(black_box(&expected), sig.as_bytes()));
        })
    });
}

fn one_key_transactions(c: &mut Criterion, name: &str, store: &dyn ironhub_core::store::Store) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut n = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            n += 1;
            let key = n.to_be_bytes();
            runtime
                .block_on(ironhub_core::store::write(store, |t| t.set(&key, b"v")))
                .expect("commit")
        })
    });
}

fn store_writes(c: &mut Criterion) {
    one_key_transactions(
        c,
        "memory store: one-key transaction",
        &ironhub_core::store::memory::memory_store(),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded =
        ironhub_store_embedded::open(dir.path(), ironhub_store_embedded::DEFAULT_CACHE_BYTES)
            .expect("redb");
    one_key_transactions(
        c,
        "embedded (redb) store: one-key durable transaction",
        &embedded,
    );
}

fn mqtt_codec(c: &mut Criterion) {
    use ironhub_mqtt::codec::{Codec, Outbound, QoS, publish_packet};
    // A v3.1.1 CONNECT, then a QoS 1 PUBLISH of 64 bytes.
    let connect: &[u8] = &[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'c', b'1',
    ];
    let mut publish = vec![0x32, 0, 0, 9];
    publish.extend_from_slice(b"/a/b/user");
    publish.extend_from_slice(&[0, 1]);
    publish.extend_from_slice(&[b'x'; 64]);
    publish[1] = (publish.len() - 2) as u8;
    let mut codec = Codec::new(256 * 1024);
    codec
        .decode(&mut bytes::BytesMut::from(connect))
        .expect("connect")
        .expect("packet");
    c.bench_function("mqtt: decode a 64-byte QoS 1 PUBLISH", |b| {
        b.iter(|| {
            let mut buf = bytes::BytesMut::from(&publish[..]);
            black_box(codec.decode(&mut buf).expect("decodes").expect("packet"));
        })
    });
    let payload = bytes::Bytes::from_static(&[b'x'; 64]);
    let mut out = bytes::BytesMut::with_capacity(4096);
    c.bench_function("mqtt: encode a 64-byte QoS 0 PUBLISH", |b| {
        b.iter(|| {
            out.clear();
            let p = publish_packet(
                "/a/b/user",
                payload.clone(),
                QoS::AtMostOnce,
                false,
                None,
                None,
            );
            codec
                .encode(Outbound::Publish(Box::new(p)), &mut out)
                .expect("encodes");
            black_box(out.len());
        })
    });
}

fn limits(c: &mut Criterion) {
    use ironhub_core::limits::rate::{Buckets, RateSpec};
    use ironhub_core::limits::window::Window;
    let spec: RateSpec = "100:1,1000:60".parse().expect("spec");
    let mut buckets = Buckets::new(&spec, 0);
    let mut now = 0u64;
    c.bench_function("limits: take from two token buckets", |b| {
        b.iter(|| {
            now += 100; // 10 per second: always allowed
            black_box(buckets.try_take(now, 1)).expect("allowed");
        })
    });
    let mut window = Window::new(u64::MAX / 2, 0);
    let mut t = 0u64;
    c.bench_function("limits: charge the hourly data-point window", |b| {
        b.iter(|| {
            t += 1000;
            black_box(window.charge(t, 5));
        })
    });
    let json =
        br#"{"id":"1","version":"1.0","params":{"temperature":21.5,"humidity":40,"state":"on"}}"#;
    c.bench_function("limits: count the data points of an Alink post", |b| {
        b.iter(|| black_box(ironhub_core::limits::datapoints::count(black_box(json))))
    });
}

/// The console's recent-message view on the publish path: a message kept (the device's first in
/// 100 ms) and one skipped (under load), with 10,000 devices remembered.
fn recent_messages(c: &mut Criterion) {
    use ironhub_core::QoS;
    use ironhub_core::hub::Recent;
    let recent = Recent::new(10, 100_000);
    for d in 0..10_000 {
        recent.record(
            &format!("pk/dev{d}"),
            "/pk/dev/user/data",
            b"{}",
            QoS::AtMostOnce,
            0,
        );
    }
    let payload = [b'x'; 64];
    let mut at = 1_000_000u64;
    c.bench_function("recent: keep a 64-byte message of a device", |b| {
        b.iter(|| {
            at += ironhub_core::hub::RECENT_MIN_GAP_MS;
            recent.record(
                black_box("pk/dev42"),
                "/pk/dev42/user/data",
                &payload,
                QoS::AtMostOnce,
                at,
            )
        })
    });
    c.bench_function(
        "recent: skip a message within 100 ms of the last kept",
        |b| {
            b.iter(|| {
                recent.record(
                    black_box("pk/dev42"),
                    "/pk/dev42/user/data",
                    &payload,
                    QoS::AtMostOnce,
                    at,
                )
            })
        },
    );
}

/// What every message of a tenant on the built-in profile cost until the hub kept one copy:
/// building the default profile.
fn default_profile(c: &mut Criterion) {
    c.bench_function("limits: build the default profile", |b| {
        b.iter(|| black_box(ironhub_core::limits::Profile::default()))
    });
}

// criterion's macro generates an undocumented function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(
        benches,
        mqtt_codec,
        topic_matching,
        limits,
        signatures,
        store_writes,
        recent_messages,
        default_profile
    );
}
criterion_main!(group::benches);
