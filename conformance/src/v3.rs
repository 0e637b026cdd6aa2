//! MQTT 3.1.1 client helpers over rumqttc: every wait is bounded by [`crate::WAIT`].

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet,
    Publish, SubscribeReasonCode,
};

common_helpers!("MQTT 3.1.1");

/// Waits for the acknowledgement of a QoS 1 (PUBACK) or QoS 2 (PUBCOMP) publish.
pub async fn acked(ev: &mut EventLoop) {
    until(ev, |e| match e {
        Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => Some(()),
        Err(e) => panic!("connection lost: {e}"),
        _ => None,
    })
    .await
}
