//! Micro-benchmarks of the per-message hot paths: topic matching against many subscriptions,
//! signature verification at connect, and the store's write path.

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

fn store_writes(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = ironhub_core::store::memory::memory_store();
    let mut n = 0u64;
    c.bench_function("memory store: one-key transaction", |b| {
        b.iter(|| {
            n += 1;
            runtime.block_on(async {
                ironhub_core::store::transact(&store, |t| {
                    Box::pin(async move {
                        t.set(&n.to_be_bytes(), b"v");
                        Ok(())
                    })
                })
                .await
                .expect("commit")
            })
        })
    });
}

// criterion's macro generates an undocumented function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, topic_matching, signatures, store_writes);
}
criterion_main!(group::benches);
