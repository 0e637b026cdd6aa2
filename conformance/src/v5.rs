//! MQTT 5 client helpers over rumqttc: every wait is bounded by [`crate::WAIT`].

use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, DisconnectReasonCode, Packet, PubAckReason, Publish, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};

common_helpers!("MQTT 5");

/// Connects and returns the CONNACK properties (receive maximum, granted session expiry...).
pub async fn connect_with_ack(
    opts: MqttOptions,
) -> (
    AsyncClient,
    Option<rumqttc::v5::mqttbytes::v5::ConnAckProperties>,
) {
    let (c, mut ev) = AsyncClient::new(opts, 64);
    let props = until(&mut ev, |e| match e {
        Ok(Event::Incoming(Packet::ConnAck(a))) => {
            assert_eq!(a.code, ConnectReturnCode::Success);
            Some(a.properties)
        }
        Err(e) => panic!("connect failed: {e}"),
        _ => None,
    })
    .await;
    (c, props)
}

/// Waits for a PUBACK and returns its reason.
pub async fn puback(ev: &mut EventLoop) -> PubAckReason {
    until(ev, |e| match e {
        Ok(Event::Incoming(Packet::PubAck(a))) => Some(a.reason),
        Err(e) => panic!("connection lost: {e}"),
        _ => None,
    })
    .await
}

/// Waits until the connection ends; returns the server's DISCONNECT reason if it sent one.
pub async fn closed(ev: &mut EventLoop) -> Option<DisconnectReasonCode> {
    until(ev, |e| match e {
        Err(ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. })) => {
            Some(Some(reason_code))
        }
        Err(_) => Some(None),
        _ => None,
    })
    .await
}
