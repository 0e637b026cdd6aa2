//! The shared store test suite: every backend's tests call [`run`] (and [`reopen`] when the
//! backend persists), so FoundationDB, redb and the in-memory store are held to the same behaviour.

use bytes::Bytes;

use super::records::{self, SessionRecord, SubscriptionRecord};
use super::{self as store, KeyRange, Store, StoreError, transact};
use crate::data::message::{Message, Origin, Properties, QoS};
use crate::data::model::{Device, Tenant};

/// Runs every behaviour check against a fresh, empty store.
pub async fn run(store: &dyn Store) {
    reads_see_own_writes(store).await;
    ranges_are_ordered_and_limited(store).await;
    ranges_read_backwards(store).await;
    clear_range_removes_only_its_range(store).await;
    add_is_a_counter(store).await;
    uncommitted_writes_are_discarded(store).await;
    transact_commits_the_body(store).await;
    typed_records_round_trip(store).await;
    queue_keeps_publication_order(store).await;
    status_history_is_newest_first_and_trimmed(store).await;
    retries_come_back_in_due_order(store).await;
    cluster_records_round_trip(store).await;
    read_only_transactions_do_not_wait_and_cannot_write(store).await;
    blobs_read_back_from_any_offset(store).await;
    upgrade_records_round_trip(store).await;
}

/// Checks that committed data survives closing and reopening the backend. `open` opens the same
/// underlying data each time it is called.
pub async fn reopen<S: Store>(open: impl Fn() -> S) {
    {
        let store = open();
        transact(&store, |t| {
            Box::pin(async move {
                t.set(b"durable/a", b"1");
                t.add(b"durable/n", 7);
                Ok(())
            })
        })
        .await
        .expect("commit");
    }
    let store = open();
    let mut t = store.begin().await.expect("begin");
    assert_eq!(
        t.get(b"durable/a").await.unwrap(),
        Some(Bytes::from_static(b"1"))
    );
    let n = t.get(b"durable/n").await.unwrap().expect("counter");
    assert_eq!(super::decode_counter(&n), 7);
}

async fn reads_see_own_writes(store: &dyn Store) {
    let mut t = store.begin().await.unwrap();
    assert_eq!(t.get(b"k1").await.unwrap(), None);
    t.set(b"k1", b"v1");
    assert_eq!(t.get(b"k1").await.unwrap(), Some(Bytes::from_static(b"v1")));
    t.clear(b"k1");
    assert_eq!(t.get(b"k1").await.unwrap(), None);
    t.set(b"k1", b"v2");
    t.commit().await.unwrap();
    drop(t);
    let mut t = store.begin().await.unwrap();
    assert_eq!(t.get(b"k1").await.unwrap(), Some(Bytes::from_static(b"v2")));
    t.clear(b"k1");
    t.commit().await.unwrap();
}

async fn ranges_are_ordered_and_limited(store: &dyn Store) {
    let mut t = store.begin().await.unwrap();
    for k in ["r/c", "r/a", "r/b", "s/a"] {
        t.set(k.as_bytes(), k.as_bytes());
    }
    t.commit().await.unwrap();
    drop(t);
    let mut t = store.begin().await.unwrap();
    t.set(b"r/bb", b"own");
    let all = t.range(&KeyRange::prefix(b"r/"), 0).await.unwrap();
    let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(keys, vec![&b"r/a"[..], b"r/b", b"r/bb", b"r/c"]);
    let two = t.range(&KeyRange::prefix(b"r/"), 2).await.unwrap();
    assert_eq!(two.len(), 2);
    t.clear_range(&KeyRange::prefix(b"r/"));
    t.clear_range(&KeyRange::prefix(b"s/"));
    t.commit().await.unwrap();
}

async fn clear_range_removes_only_its_range(store: &dyn Store) {
    let mut t = store.begin().await.unwrap();
    for k in ["c/1", "c/2", "c0", "d/1"] {
        t.set(k.as_bytes(), b"x");
    }
    t.commit().await.unwrap();
    drop(t);
    let mut t = store.begin().await.unwrap();
    t.clear_range(&KeyRange::prefix(b"c/"));
    assert!(
        t.range(&KeyRange::prefix(b"c/"), 0)
            .await
            .unwrap()
            .is_empty()
    );
    t.commit().await.unwrap();
    drop(t);
    let mut t = store.begin().await.unwrap();
    assert!(
        t.range(&KeyRange::prefix(b"c/"), 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(t.get(b"c0").await.unwrap().is_some());
    assert!(t.get(b"d/1").await.unwrap().is_some());
    t.clear(b"c0");
    t.clear(b"d/1");
    t.commit().await.unwrap();
}

async fn add_is_a_counter(store: &dyn Store) {
    for delta in [5, -2, 10] {
        let mut t = store.begin().await.unwrap();
        t.add(b"counter", delta);
        t.commit().await.unwrap();
    }
    let mut t = store.begin().await.unwrap();
    t.add(b"counter", 1);
    let v = t.get(b"counter").await.unwrap().unwrap();
    assert_eq!(super::decode_counter(&v), 14);
    t.clear(b"counter");
    t.commit().await.unwrap();
}

async fn uncommitted_writes_are_discarded(store: &dyn Store) {
    {
        let mut t = store.begin().await.unwrap();
        t.set(b"ghost", b"boo");
    }
    let mut t = store.begin().await.unwrap();
    assert_eq!(t.get(b"ghost").await.unwrap(), None);
}

async fn transact_commits_the_body(store: &dyn Store) {
    let value = transact(store, |t| {
        Box::pin(async move {
            t.set(b"tx/a", b"1");
            Ok::<_, StoreError>(42)
        })
    })
    .await
    .unwrap();
    assert_eq!(value, 42);
    let got = transact(store, |t| {
        Box::pin(async move {
            let v = t.get(b"tx/a").await?;
            t.clear(b"tx/a");
            Ok(v)
        })
    })
    .await
    .unwrap();
    assert_eq!(got, Some(Bytes::from_static(b"1")));
}

fn message(topic: &str, payload: &'static [u8]) -> Message {
    Message {
        tenant: "t1".into(),
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties {
            user: vec![("k".into(), "v".into())],
            ..Properties::default()
        },
        expires_at_ms: None,
        origin: Origin::Client("c1".into()),
        received_at_ms: 1,
    }
}

async fn typed_records_round_trip(store: &dyn Store) {
    let tenant = Tenant {
        id: "t1".into(),
        name: "T".into(),
        profile: "default".into(),
        created_at_ms: 1,
    };
    let device = Device {
        product_key: "pk1".into(),
        device_name: "dev1".into(),
        tenant: "t1".into(),
        device_secret: "s".into(),
        enabled: true,
        activated: false,
        created_at_ms: 2,
    };
    let session = SessionRecord {
        key: "pk1/dev1".into(),
        tenant: "t1".into(),
        expiry_secs: 60,
        disconnected_at_ms: Some(1000),
        subscriptions: vec![SubscriptionRecord {
            filter: "/pk1/dev1/user/#".into(),
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: true,
            subscription_id: Some(3),
        }],
    };
    let mut retained = message("a/b", b"r");
    retained.retain = true;
    let mut t = store.begin().await.unwrap();
    records::put_tenant(&mut *t, &tenant);
    records::put_device(&mut *t, &device);
    records::put_session(&mut *t, &session);
    records::put_retained(&mut *t, &retained);
    records::count_devices(&mut *t, "t1", "pk1", 2);
    records::count_devices(&mut *t, "t1", "pk1", -1);
    let mut profile = crate::limits::Profile {
        name: "small".into(),
        ..Default::default()
    };
    profile.entities.products = 3;
    records::put_profile(&mut *t, &profile);
    t.commit().await.unwrap();
    drop(t);
    let mut t = store.begin().await.unwrap();
    assert_eq!(
        records::get_tenant(&mut *t, "t1").await.unwrap(),
        Some(tenant)
    );
    assert_eq!(
        records::get_device(&mut *t, "pk1", "dev1").await.unwrap(),
        Some(device)
    );
    assert_eq!(
        records::list_devices(&mut *t, "pk1", 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        records::list_sessions(&mut *t).await.unwrap(),
        vec![session.clone()]
    );
    assert!(!session.expired(1000 + 59_999));
    assert!(session.expired(1000 + 60_000));
    assert_eq!(
        records::list_retained(&mut *t).await.unwrap(),
        vec![retained]
    );
    records::delete_tenant(&mut *t, "t1");
    records::delete_device(&mut *t, "pk1", "dev1");
    records::delete_session(&mut *t, "pk1/dev1");
    records::delete_retained(&mut *t, "t1", "a/b");
    t.commit().await.unwrap();
}

async fn queue_keeps_publication_order(store: &dyn Store) {
    // Three commits; in the first, the places given out of order: commit order first, then the
    // place within a commit, whatever the order of the calls.
    store::write(store, |t| {
        records::push_queued(t, "s1", 1, &message("q/2", b"2"));
        records::push_queued(t, "s1", 0, &message("q/1", b"1"));
        records::push_queued(t, "s10", 0, &message("other", b"x"));
    })
    .await
    .unwrap();
    store::write(store, |t| {
        records::push_queued(t, "s1", 0, &message("q/3", b"3"))
    })
    .await
    .unwrap();
    store::write(store, |t| {
        records::push_queued(t, "s1", 0, &message("q/4", b"4"))
    })
    .await
    .unwrap();
    let mut t = store.begin().await.unwrap();
    let q = records::read_queue(&mut *t, "s1", 0).await.unwrap();
    let topics: Vec<&str> = q.iter().map(|(_, m)| m.topic.as_str()).collect();
    assert_eq!(topics, vec!["q/1", "q/2", "q/3", "q/4"]);
    assert!(q.windows(2).all(|w| w[0].0 < w[1].0), "places increase");
    assert_eq!(q[0].0[..10], q[1].0[..10], "one commit, one versionstamp");
    assert_eq!(records::count_queued(&mut *t, "s1", 100).await.unwrap(), 4);
    records::remove_queued(&mut *t, "s1", &q[0].0);
    let first = records::read_queue(&mut *t, "s1", 1).await.unwrap();
    assert_eq!(first[0].1.topic, "q/2");
    records::delete_session(&mut *t, "s1");
    assert_eq!(records::count_queued(&mut *t, "s1", 100).await.unwrap(), 0);
    t.commit().await.unwrap();
    drop(t);
    // A writer learns the places of the rows it wrote from the commit's stamp.
    let stamp = store::write_stamped(store, |t| {
        records::push_queued(t, "s2", 0, &message("q/a", b"a"));
        records::push_queued(t, "s2", 1, &message("q/b", b"b"));
    })
    .await
    .unwrap()
    .expect("a commit with versionstamped keys has a stamp");
    assert_eq!(
        store::write_stamped(store, |t| records::delete_session(t, "s3"))
            .await
            .unwrap(),
        None,
        "no versionstamped key, no stamp"
    );
    let mut t = store.begin().await.unwrap();
    let q = records::read_queue(&mut *t, "s2", 0).await.unwrap();
    let expected: Vec<records::QueueId> = [0u32, 1]
        .iter()
        .map(|order| records::queue_id(&stamp, *order))
        .collect();
    assert_eq!(q.iter().map(|(id, _)| *id).collect::<Vec<_>>(), expected);
    records::delete_session(&mut *t, "s2");
    assert_eq!(records::count_queued(&mut *t, "s10", 100).await.unwrap(), 1);
    records::delete_session(&mut *t, "s10");
    t.commit().await.unwrap();
}

async fn cluster_records_round_trip(store: &dyn Store) {
    let node = |id: &str, lease| records::NodeRecord {
        id: id.into(),
        cluster_addr: format!("{id}.example:7000"),
        mqtt_addr: None,
        lease_until_ms: lease,
        started_at_ms: 1,
    };
    let entry = records::RegistryEntry {
        node: "b".into(),
        online: true,
        since_ms: 5,
    };
    store::write(store, |t| {
        records::put_node(t, &node("b", 20));
        records::put_node(t, &node("a", 10));
        records::put_registry(t, "pk/dev", &entry);
        records::bump_config_version(t);
        records::bump_config_version(t);
    })
    .await
    .unwrap();
    let mut t = store.begin().await.unwrap();
    let nodes = records::list_nodes(&mut *t).await.unwrap();
    assert_eq!(nodes, vec![node("a", 10), node("b", 20)], "in id order");
    assert_eq!(
        records::get_registry(&mut *t, "pk/dev").await.unwrap(),
        Some(entry)
    );
    assert_eq!(
        records::get_registry(&mut *t, "pk/other").await.unwrap(),
        None
    );
    assert_eq!(records::config_version(&mut *t).await.unwrap(), 2);
    records::delete_node(&mut *t, "a");
    records::delete_node(&mut *t, "b");
    records::delete_registry(&mut *t, "pk/dev");
    assert!(records::list_nodes(&mut *t).await.unwrap().is_empty());
    assert_eq!(
        records::get_registry(&mut *t, "pk/dev").await.unwrap(),
        None
    );
    t.commit().await.unwrap();
}

async fn status_history_is_newest_first_and_trimmed(store: &dyn Store) {
    let event = |status: &str, time| records::StatusEvent {
        status: status.into(),
        time,
    };
    let events = [
        event("online", 1_000),
        event("offline", 2_000),
        event("online", 3_000),
    ];
    store::write(store, |t| {
        for (seq, e) in events.iter().enumerate() {
            records::put_status_event(t, "pk", "dn", seq as u64, e);
        }
        // Another device's history stays apart.
        records::put_status_event(t, "pk", "dn2", 9, &event("online", 2_500));
    })
    .await
    .expect("write");
    let read = |limit| {
        transact(store, move |t| {
            Box::pin(async move { records::list_status_events(t, "pk", "dn", limit).await })
        })
    };
    let newest: Vec<u64> = read(10)
        .await
        .expect("read")
        .iter()
        .map(|e| e.time)
        .collect();
    assert_eq!(newest, [3_000, 2_000, 1_000]);
    assert_eq!(read(1).await.expect("read")[0].time, 3_000);
    store::write(store, |t| records::trim_status_events(t, "pk", "dn", 2_000))
        .await
        .expect("trim");
    let kept: Vec<u64> = read(10)
        .await
        .expect("read")
        .iter()
        .map(|e| e.time)
        .collect();
    assert_eq!(kept, [3_000, 2_000], "older than the cutoff is gone");
    let other = transact(store, |t| {
        Box::pin(async move { records::list_status_events(t, "pk", "dn2", 10).await })
    })
    .await
    .expect("read");
    assert_eq!(other.len(), 1);
}

async fn retries_come_back_in_due_order(store: &dyn Store) {
    let retry = |attempt, body: &[u8]| records::RetryRecord {
        attempt,
        body: body.to_vec(),
    };
    store::write(store, |t| {
        // Written out of order; ids break ties between retries due at the same time.
        records::put_retry(t, 5_000, 2, &retry(2, b"late"));
        records::put_retry(t, 1_000, 7, &retry(1, b"first"));
        records::put_retry(t, 1_000, 9, &retry(1, b"second"));
        records::put_retry(t, u64::MAX - 1, 1, &retry(3, b"far"));
    })
    .await
    .expect("write");
    let due = |now| {
        transact(store, move |t| {
            Box::pin(async move { records::due_retries(t, now, 10).await })
        })
    };
    let bodies = |rows: &[records::RetryRow]| -> Vec<Vec<u8>> {
        rows.iter().map(|r| r.record.body.clone()).collect()
    };
    assert!(due(999).await.expect("read").is_empty(), "nothing due yet");
    let at_1000 = due(1_000).await.expect("read");
    assert_eq!(bodies(&at_1000), [b"first".to_vec(), b"second".to_vec()]);
    assert_eq!((at_1000[0].due_ms, at_1000[0].id), (1_000, 7));
    let at_5000 = due(5_000).await.expect("read");
    assert_eq!(at_5000.len(), 3);
    assert_eq!(at_5000[2].record, retry(2, b"late"));
    let next = || {
        transact(store, |t| {
            Box::pin(async move { records::next_retry_due(t).await })
        })
    };
    assert_eq!(next().await.expect("read"), Some(1_000));
    store::write(store, |t| {
        for row in &at_5000 {
            records::delete_retry(t, &row.key);
        }
    })
    .await
    .expect("clear");
    assert_eq!(next().await.expect("read"), Some(u64::MAX - 1));
    let last = due(u64::MAX).await.expect("read");
    assert_eq!(bodies(&last), [b"far".to_vec()]);
    store::write(store, |t| records::delete_retry(t, &last[0].key))
        .await
        .expect("clear");
    assert_eq!(next().await.expect("read"), None);
}

async fn read_only_transactions_do_not_wait_and_cannot_write(store: &dyn Store) {
    store::write(store, |t| t.set(b"ro/k", b"old"))
        .await
        .unwrap();
    // A writer keeps its transaction open (on single-writer backends it holds their one lock).
    let mut writer = store.begin().await.unwrap();
    writer.set(b"ro/k", b"new");
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut r = store.begin_read().await.unwrap();
        r.get(b"ro/k").await.unwrap()
    })
    .await
    .expect("a read-only transaction does not wait for an open writer");
    assert_eq!(
        seen,
        Some(Bytes::from_static(b"old")),
        "committed data only"
    );
    writer.commit().await.unwrap();
    drop(writer);
    fn get(t: &mut dyn super::Txn) -> super::TxnFuture<'_, Option<Bytes>> {
        Box::pin(async move { t.get(b"ro/k").await })
    }
    let now = store::read(store, get).await.unwrap();
    assert_eq!(now, Some(Bytes::from_static(b"new")), "sees the commit");
    let mut r = store.begin_read().await.unwrap();
    r.set(b"ro/k", b"written");
    r.add(b"ro/n", 1);
    assert!(
        r.commit().await.is_err(),
        "a read-only commit with writes fails"
    );
    drop(r);
    assert_eq!(
        store::read(store, get).await.unwrap(),
        now,
        "nothing written"
    );
}

async fn blobs_read_back_from_any_offset(store: &dyn Store) {
    use super::blobs::{BlobWriter, CHUNK, Chunks};
    let blobs = Chunks(store);
    let data: Vec<u8> = (0..CHUNK * 17 + 123).map(|i| (i % 251) as u8).collect();
    // The second blob of the name is shorter, and whole chunks: nothing of the first is left.
    let second = &data[1..=CHUNK * 5];
    for blob in [&data[..], second] {
        let mut writer = Box::new(blobs.writer("fw"));
        for part in blob.chunks(10_000) {
            writer.write(part).await.expect("write");
        }
        assert_eq!(writer.finish().await.expect("finish"), blob.len() as u64);
    }
    let mut got = Vec::new();
    loop {
        let part = blobs
            .read("fw", got.len() as u64, 300_000)
            .await
            .expect("read");
        if part.is_empty() {
            break;
        }
        got.extend_from_slice(&part);
    }
    assert_eq!(got, second);
    let middle = blobs.read("fw", CHUNK as u64 - 5, 10).await.expect("read");
    assert_eq!(&middle[..], &data[CHUNK - 4..CHUNK + 6]);
    blobs.delete("fw").await.expect("delete");
    assert!(blobs.read("fw", 0, 10).await.expect("read").is_empty());
}

async fn upgrade_records_round_trip(store: &dyn Store) {
    use crate::data::ota::{OtaBatch, OtaJob, OtaPackage, OtaState, OtaTarget, SignMethod};
    let package = OtaPackage {
        id: "fw1".into(),
        tenant: "acme".into(),
        product_key: "pk".into(),
        module: "default".into(),
        version: "2.0".into(),
        size: 3,
        md5: "m".into(),
        sha256: "s".into(),
        sign_method: SignMethod::Sha256,
        created_at_ms: 1,
    };
    let batch = OtaBatch {
        id: "ob1".into(),
        tenant: "acme".into(),
        package_id: "fw1".into(),
        product_key: "pk".into(),
        target: OtaTarget::Versions {
            versions: vec!["1.0".into()],
        },
        rate_per_minute: 10,
        start_at_ms: 2,
        timeout_minutes: 5,
        created_at_ms: 2,
        canceled: false,
    };
    let job = |dn: &str| OtaJob {
        device_name: dn.into(),
        state: OtaState::Queued,
        source_version: Some("1.0".into()),
        step: 0,
        desc: String::new(),
        updated_at_ms: 2,
        retries: 0,
    };
    transact(store, |t| {
        let (package, batch) = (package.clone(), batch.clone());
        let (a, b) = (job("b-dev"), job("a-dev"));
        Box::pin(async move {
            records::put_package(t, &package);
            records::put_batch(t, &batch);
            records::put_job(t, &batch.id, &a);
            records::put_job(t, &batch.id, &b);
            records::set_open_job(t, "pk", "a-dev", "default", &batch.id);
            records::set_open_job(t, "pk", "a-dev", "mcu", "ob0");
            Ok(())
        })
    })
    .await
    .unwrap();
    let mut t = store.begin().await.unwrap();
    assert_eq!(
        records::get_package(&mut *t, "acme", "fw1").await.unwrap(),
        Some(package.clone())
    );
    assert_eq!(
        records::list_packages(&mut *t, "acme").await.unwrap(),
        [package]
    );
    assert_eq!(
        records::get_batch(&mut *t, "acme", "ob1").await.unwrap(),
        Some(batch.clone())
    );
    assert_eq!(records::all_batches(&mut *t).await.unwrap(), [batch]);
    let names: Vec<String> = records::list_jobs(&mut *t, "ob1", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.device_name)
        .collect();
    assert_eq!(names, ["a-dev", "b-dev"], "jobs by DeviceName");
    assert_eq!(
        records::open_jobs(&mut *t, "pk", "a-dev").await.unwrap(),
        [
            ("default".to_owned(), "ob1".to_owned()),
            ("mcu".to_owned(), "ob0".to_owned())
        ]
    );
    records::clear_open_job(&mut *t, "pk", "a-dev", "mcu");
    assert_eq!(
        records::open_job_batch(&mut *t, "pk", "a-dev", "mcu")
            .await
            .unwrap(),
        None
    );
    records::delete_open_jobs(&mut *t, "pk", "a-dev");
    assert!(
        records::open_jobs(&mut *t, "pk", "a-dev")
            .await
            .unwrap()
            .is_empty()
    );
    records::delete_package(&mut *t, "acme", "fw1");
    assert!(
        records::list_packages(&mut *t, "acme")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn ranges_read_backwards(store: &dyn Store) {
    transact(store, |t| {
        Box::pin(async move {
            for k in ["rev/a", "rev/b", "rev/c", "rev/d"] {
                t.set(k.as_bytes(), b"1");
            }
            Ok(())
        })
    })
    .await
    .unwrap();
    let keys = |rows: Vec<(Bytes, Bytes)>| {
        rows.into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect::<Vec<_>>()
    };
    let range = KeyRange::prefix(b"rev/");
    let mut t = store.begin().await.unwrap();
    assert_eq!(
        keys(t.range_reverse(&range, 0).await.unwrap()),
        ["rev/d", "rev/c", "rev/b", "rev/a"]
    );
    assert_eq!(
        keys(t.range_reverse(&range, 2).await.unwrap()),
        ["rev/d", "rev/c"]
    );
    let below_c = KeyRange {
        start: b"rev/".to_vec(),
        end: b"rev/c".to_vec(),
    };
    assert_eq!(keys(t.range_reverse(&below_c, 1).await.unwrap()), ["rev/b"]);
    // Own writes count, in order: a new last key first, a cleared one gone.
    t.set(b"rev/e", b"2");
    t.clear(b"rev/d");
    assert_eq!(
        keys(t.range_reverse(&range, 3).await.unwrap()),
        ["rev/e", "rev/c", "rev/b"]
    );
}
