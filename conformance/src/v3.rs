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

/// Serves a device's RRPC requests in the background: each request on
/// `/sys/{pk}/{dn}/rrpc/request/{id}` gets `answer(payload)` on the matching response topic.
pub fn answer_rrpc(
    client: AsyncClient,
    mut ev: EventLoop,
    answer: impl Fn(&[u8]) -> Vec<u8> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(e) = ev.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = e
                && p.topic.contains("/rrpc/request/")
            {
                let topic = p.topic.replace("/rrpc/request/", "/rrpc/response/");
                client
                    .publish(topic, rumqttc::QoS::AtMostOnce, false, answer(&p.payload))
                    .await
                    .unwrap();
            }
        }
    })
}
