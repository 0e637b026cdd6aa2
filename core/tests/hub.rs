//! The hub engine on the in-memory store, driven through the API transports use: the
//! slow-subscriber policy, reclaiming expired sessions under churn, and takeover handing the
//! session over with nothing lost.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ironhub_core::clock::Clock;
use ironhub_core::hub::{Connected, KickReason};
use ironhub_core::store::{memory::memory_store, records, transact};
use ironhub_core::{Hub, HubConfig, QoS, now_ms};

mod support;
use support::{connect, open_hub, publish, request, subscribe};

async fn hub(tune: impl FnOnce(&mut HubConfig)) -> Hub {
    open_hub(Arc::new(memory_store()), Clock::system(), tune).await
}

#[tokio::test]
async fn a_full_subscriber_queue_holds_publishers_then_counts_the_drop() {
    let hub = hub(|c| {
        c.session_queue_capacity = 2;
        c.slow_subscriber_wait_ms = 50;
        c.slow_subscriber_wait_qos0_ms = 0;
    })
    .await;
    let mut slow = connect(&hub, request(&hub, "slow", true, None)).await;
    slow.session
        .subscribe(subscribe("t", QoS::AtLeastOnce))
        .await;
    let fast = connect(&hub, request(&hub, "fast", true, None)).await;

    for _ in 0..4 {
        fast.session
            .publish(publish(&hub, "t", QoS::AtMostOnce))
            .await
            .unwrap();
    }
    assert_eq!(
        hub.stats().dropped["qos0_queue_full"],
        2,
        "two fit, two dropped and counted"
    );

    fast.session
        .publish(publish(&hub, "t", QoS::AtLeastOnce))
        .await
        .unwrap();
    assert_eq!(
        hub.stats().dropped["qos12_slow_subscriber"],
        1,
        "QoS 1 dropped only after the wait"
    );

    // With a consumer draining meanwhile, the waiting QoS 1 publisher gets through.
    let drained = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut n = 0;
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(200), slow.deliveries.recv()).await
        {
            n += 1;
        }
        n
    });
    fast.session
        .publish(publish(&hub, "t", QoS::AtLeastOnce))
        .await
        .unwrap();
    assert_eq!(
        drained.await.unwrap(),
        3,
        "two queued QoS 0 and the delivered QoS 1"
    );
    assert_eq!(hub.stats().dropped["qos12_slow_subscriber"], 1);
}

#[tokio::test]
async fn qos0_publishers_wait_for_a_slow_subscriber_by_default() {
    let hub = hub(|c| c.session_queue_capacity = 1).await;
    let mut slow = connect(&hub, request(&hub, "slow", true, None)).await;
    slow.session
        .subscribe(subscribe("t", QoS::AtMostOnce))
        .await;
    let fast = connect(&hub, request(&hub, "fast", true, None)).await;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 50 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            slow.deliveries.recv().await.unwrap();
            n += 1;
        }
        n
    });
    for _ in 0..50 {
        fast.session
            .publish(publish(&hub, "t", QoS::AtMostOnce))
            .await
            .unwrap();
    }
    assert_eq!(
        reader.await.unwrap(),
        50,
        "a one-slot queue, yet nothing lost"
    );
    assert_eq!(hub.stats().dropped["qos0_queue_full"], 0);
}

#[tokio::test]
async fn session_churn_is_reclaimed_when_sessions_expire() {
    let hub = hub(|_| {}).await;
    for i in 0..200 {
        let c = connect(&hub, request(&hub, &format!("churn-{i}"), true, Some(1))).await;
        c.session
            .subscribe(subscribe(&format!("d/{i}/#"), QoS::AtLeastOnce))
            .await;
        c.session.close(true, Vec::new(), c.deliveries).await;
    }
    for i in 0..200 {
        let c = connect(&hub, request(&hub, &format!("clean-{i}"), true, None)).await;
        c.session.close(true, Vec::new(), c.deliveries).await;
    }
    assert_eq!(
        hub.stats().sessions,
        200,
        "clean sessions end with their connection"
    );
    assert_eq!(
        hub.sweep_sessions(now_ms()).await.unwrap(),
        0,
        "nothing expired yet"
    );
    assert_eq!(hub.sweep_sessions(now_ms() + 1_000).await.unwrap(), 200);
    assert_eq!(hub.stats().sessions, 0);
    assert_eq!(hub.stats().sessions_expired, 200);
    let stored = transact(&**hub.store(), |t| Box::pin(records::list_sessions(t)))
        .await
        .unwrap();
    assert!(stored.is_empty(), "stored sessions are reclaimed too");
    // The routes went with them: a publish reaches nobody.
    let p = connect(&hub, request(&hub, "p", true, None)).await;
    assert_eq!(
        p.session
            .publish(publish(&hub, "d/7/x", QoS::AtLeastOnce))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn takeover_hands_unacknowledged_messages_to_the_new_connection() {
    let hub = hub(|_| {}).await;
    let first = connect(&hub, request(&hub, "dev", false, None)).await;
    first
        .session
        .subscribe(subscribe("cmd/#", QoS::AtLeastOnce))
        .await;
    let producer = connect(&hub, request(&hub, "producer", true, None)).await;
    producer
        .session
        .publish(publish(&hub, "cmd/1", QoS::AtLeastOnce))
        .await
        .unwrap();
    producer
        .session
        .publish(publish(&hub, "cmd/2", QoS::AtLeastOnce))
        .await
        .unwrap();

    // The old connection "sent" cmd/1 without an acknowledgement; cmd/2 is still queued.
    let Connected {
        session,
        mut deliveries,
        kicked,
        ..
    } = first;
    let in_flight = deliveries.recv().await.unwrap();
    let old = tokio::spawn(async move {
        assert_eq!(kicked.await, Ok(KickReason::SessionTakenOver));
        session.close(false, vec![in_flight], deliveries).await;
    });
    let second = connect(&hub, request(&hub, "dev", false, None)).await;
    old.await.unwrap();
    assert!(second.session_present);
    let topics: Vec<&str> = second
        .backlog
        .iter()
        .map(|d| d.message.topic.as_str())
        .collect();
    assert_eq!(topics, vec!["cmd/1", "cmd/2"], "in order, nothing lost");
}

#[tokio::test]
async fn a_connected_session_follows_profile_changes_at_once() {
    let hub = hub(|_| {}).await;
    let c = connect(&hub, request(&hub, "sensor", true, None)).await;
    for _ in 0..5 {
        c.session
            .publish_deferred(publish(&hub, "plant/t", QoS::AtMostOnce))
            .await
            .expect("unlimited");
    }
    // Sessions keep their tenant's profile between messages: a change must reach them.
    let strict = serde_json::json!({ "name": "open", "rates": { "tenant_connections": "",
        "device_connections": "", "tenant_messages": "", "device_messages_qos0": "1:60",
        "device_messages_qos1": "" } });
    hub.limits()
        .put_profile(serde_json::from_value(strict).unwrap())
        .await
        .unwrap();
    c.session
        .publish_deferred(publish(&hub, "plant/t", QoS::AtMostOnce))
        .await
        .expect("the first of the new minute");
    let refused = c
        .session
        .publish_deferred(publish(&hub, "plant/t", QoS::AtMostOnce))
        .await
        .err()
        .expect("over the new rate");
    assert!(refused.to_string().contains("L-016"), "{refused}");
    let usage = hub.limits().tenant_usage("sandbox").await.unwrap();
    assert_eq!(usage.usage.hour["messages"], 7, "every message counted");
    assert_eq!(usage.usage.hour["discarded.L-016"], 1);
}

#[tokio::test]
async fn activations_still_queued_at_shutdown_are_written() {
    use ironhub_core::auth::{SignMethod, mqtt_password};
    let store = Arc::new(memory_store());
    let hub = Hub::start(HubConfig::default(), store.clone())
        .await
        .unwrap();
    let unlimited = serde_json::json!({ "name": "fleet", "rates": { "tenant_connections": "",
        "device_connections": "", "registry_operations": "" } });
    hub.limits()
        .put_profile(serde_json::from_value(unlimited).unwrap())
        .await
        .unwrap();
    hub.registry()
        .create_tenant("acme", "Acme", Some("fleet"))
        .await
        .unwrap();
    let product = hub
        .registry()
        .create_product("acme", "meters", Default::default(), false)
        .await
        .unwrap();
    let mut devices = Vec::new();
    for _ in 0..200 {
        devices.push(
            hub.registry()
                .create_device(&product.product_key, None)
                .await
                .unwrap(),
        );
    }
    // The store's single writer is busy: activations queue up behind it (the writer holding
    // the first one), connects go on.
    let busy = ironhub_core::store::Store::begin(&*store).await.unwrap();
    for (i, d) in devices.iter().enumerate() {
        if i == 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let password = mqtt_password(
            SignMethod::HmacSha256,
            &d.device_secret,
            "m",
            &d.device_name,
            &d.product_key,
            None,
        );
        let mut req = request(&hub, "m|securemode=2,signmethod=hmacsha256|", true, None);
        req.username = Some(format!("{}&{}", d.device_name, d.product_key));
        req.password = Some(Bytes::from(password));
        connect(&hub, req).await;
    }
    // Activations are written in batches in the background: a shutdown must not lose those
    // still queued.
    let stopping = tokio::spawn({
        let hub = hub.clone();
        async move { hub.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(busy);
    stopping.await.unwrap();
    for d in &devices {
        let (pk, dn) = (d.product_key.clone(), d.device_name.clone());
        let stored = ironhub_core::store::read(&*store, |t| {
            let (pk, dn) = (pk.clone(), dn.clone());
            Box::pin(async move { records::get_device(t, &pk, &dn).await })
        })
        .await
        .unwrap()
        .expect("device stored");
        assert!(stored.activated, "{dn} activated");
    }
}
