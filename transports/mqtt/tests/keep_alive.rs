//! The keep-alive deadline in virtual time: a client that goes silent after CONNECT is closed
//! one and a half keep-alive periods later (MQTT 3.1.1 section 3.1.2.10), not earlier; a PINGREQ
//! moves the deadline; keep-alive 0 turns it off where the configured minimum is 0; an MQTT 5
//! client asking for less than the minimum is given the minimum as Server Keep Alive. The
//! connection is served over an in-memory duplex stream on tokio's paused clock, so the 45 s are
//! measured without being waited for.

use std::sync::Arc;
use std::time::Duration;

use ironhub_core::clock::Clock;
use ironhub_core::store::memory::memory_store;
use ironhub_core::{Hub, HubConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

/// CONNECT, MQTT 3.1.1, clean session, keep-alive 30 s, client id "ka".
const CONNECT: [u8; 16] = [
    0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 2, b'k', b'a',
];
const CONNACK: [u8; 4] = [0x20, 2, 0, 0];
const PINGREQ: [u8; 2] = [0xC0, 0];
const PINGRESP: [u8; 2] = [0xD0, 0];

async fn connected_client() -> DuplexStream {
    client_with(&CONNECT, |_| {}).await
}

async fn client_with(connect: &[u8], tune: impl FnOnce(&mut HubConfig)) -> DuplexStream {
    let (client, connack) = connack_for(connect, tune).await;
    assert_eq!(connack, CONNACK);
    client
}

/// Serves one connection; sends `connect` and returns the stream and the CONNACK's bytes.
async fn connack_for(connect: &[u8], tune: impl FnOnce(&mut HubConfig)) -> (DuplexStream, Vec<u8>) {
    let mut config = HubConfig::default();
    config.open_broker.enabled = true;
    tune(&mut config);
    let hub = Hub::start_with_clock(config, Arc::new(memory_store()), Clock::tokio(0))
        .await
        .unwrap();
    let (mut client, server) = tokio::io::duplex(1024);
    tokio::spawn(ironhub_mqtt::conn::serve_connection(
        server,
        "127.0.0.1:1".parse().unwrap(),
        hub.transport("mqtt"),
        hub,
        Default::default(),
    ));
    client.write_all(connect).await.unwrap();
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await.unwrap();
    let mut rest = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut rest).await.unwrap();
    (client, [&head[..], &rest].concat())
}

/// Reads until the server closes the stream; returns how long that took in virtual time.
async fn time_until_closed(client: &mut DuplexStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_after_one_and_a_half_keep_alives() {
    let mut client = connected_client().await;
    let waited = time_until_closed(&mut client).await;
    assert!(
        (Duration::from_secs(45)..Duration::from_millis(45_500)).contains(&waited),
        "closed after {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_ping_moves_the_deadline() {
    let mut client = connected_client().await;
    tokio::time::advance(Duration::from_secs(40)).await;
    client.write_all(&PINGREQ).await.unwrap();
    let mut pong = [0u8; 2];
    client.read_exact(&mut pong).await.unwrap();
    assert_eq!(pong, PINGRESP);
    let waited = time_until_closed(&mut client).await;
    assert!(
        (Duration::from_secs(45)..Duration::from_millis(45_500)).contains(&waited),
        "closed {waited:?} after the ping"
    );
}

#[tokio::test(start_paused = true)]
async fn keep_alive_zero_turns_the_deadline_off_where_the_minimum_allows_it() {
    let mut connect = CONNECT;
    connect[10..12].copy_from_slice(&[0, 0]);
    let mut client = client_with(&connect, |c| c.keepalive_min_secs = 0).await;
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(3 * 3600)).await;
    }
    client.write_all(&PINGREQ).await.unwrap();
    let mut pong = [0u8; 2];
    client.read_exact(&mut pong).await.unwrap();
    assert_eq!(pong, PINGRESP, "still open after nine silent hours");
}

/// CONNECT, MQTT 5, clean start, keep-alive 5 s (under the default minimum of 30), no
/// properties, client id "k5".
const CONNECT_V5_KEEP_ALIVE_5: [u8; 17] = [
    0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 5, 0, 0, 2, b'k', b'5',
];

#[tokio::test(start_paused = true)]
async fn an_mqtt5_keep_alive_under_the_minimum_becomes_the_minimum_as_server_keep_alive() {
    let (mut client, connack) = connack_for(&CONNECT_V5_KEEP_ALIVE_5, |_| {}).await;
    assert_eq!(connack[0], 0x20);
    assert_eq!(connack[3], 0x00, "accepted, not refused: {connack:02x?}");
    let server_keep_alive = connack
        .windows(3)
        .find(|w| w[0] == 0x13)
        .map(|w| u16::from_be_bytes([w[1], w[2]]));
    assert_eq!(server_keep_alive, Some(30), "CONNACK {connack:02x?}");
    let waited = time_until_closed(&mut client).await;
    assert!(
        (Duration::from_secs(45)..Duration::from_millis(45_500)).contains(&waited),
        "the granted 30 s is what counts: closed after {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_mqtt311_keep_alive_under_the_minimum_is_still_refused() {
    let mut connect = CONNECT;
    connect[10..12].copy_from_slice(&[0, 5]);
    let (_client, connack) = connack_for(&connect, |_| {}).await;
    assert_eq!(
        connack,
        [0x20, 2, 0, 5],
        "3.1.1 keeps the seed's refusal (not authorized)"
    );
}
