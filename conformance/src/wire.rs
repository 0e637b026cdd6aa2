//! One MQTT connection at the packet level, for the specification tests: packets are written
//! and read with rumqttc's codecs (a third party's reading of the specification), and raw bytes
//! go where a well-formed packet cannot (malformed or forbidden ones).

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Deployment, WAIT};

/// Largest packet a test reads.
const MAX_READ: usize = 1 << 20;

/// A raw connection to a deployment's MQTT listener.
pub struct Wire {
    stream: TcpStream,
    read: BytesMut,
}

/// What a read found instead of a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The server closed the connection.
    Closed,
    /// Nothing arrived in the time given.
    Silent,
}

impl Wire {
    /// Opens a TCP connection; nothing is sent.
    pub async fn open(d: &Deployment) -> Wire {
        Wire {
            stream: TcpStream::connect(d.mqtt).await.expect("MQTT listener"),
            read: BytesMut::new(),
        }
    }

    /// Opens a connection and sends `connect` (3.1.1); returns it with the CONNACK.
    pub async fn v3(d: &Deployment, connect: v4::Connect) -> (Wire, v4::ConnAck) {
        let mut w = Wire::open(d).await;
        w.send3(v4::Packet::Connect(connect)).await;
        match w.recv3().await {
            v4::Packet::ConnAck(ack) => (w, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Opens a connection and sends `connect` (5.0); returns it with the CONNACK.
    pub async fn v5(d: &Deployment, connect: v5::Connect) -> (Wire, v5::ConnAck) {
        let mut w = Wire::open(d).await;
        w.send5(v5::Packet::Connect(connect, None, None)).await;
        match w.recv5().await {
            v5::Packet::ConnAck(ack) => (w, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// A 3.1.1 connection with a clean session that was accepted.
    pub async fn v3_clean(d: &Deployment, client_id: &str) -> Wire {
        let mut connect = v4::Connect::new(client_id);
        connect.keep_alive = 60;
        let (w, ack) = Wire::v3(d, connect).await;
        assert_eq!(
            ack.code,
            v4::ConnectReturnCode::Success,
            "{client_id} accepted"
        );
        w
    }

    /// A 5.0 connection with a clean start that was accepted.
    pub async fn v5_clean(d: &Deployment, client_id: &str) -> Wire {
        let (w, ack) = Wire::v5(d, v5_connect(client_id)).await;
        assert_eq!(
            ack.code,
            v5::ConnectReturnCode::Success,
            "{client_id} accepted"
        );
        w
    }

    /// Writes bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // The server may already have closed: a later read says so.
        let _ = self.stream.write_all(bytes).await;
    }

    /// Writes a 3.1.1 packet.
    pub async fn send3(&mut self, packet: v4::Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, MAX_READ).expect("encodable packet");
        self.send_raw(&out).await;
    }

    /// Writes a 5.0 packet.
    pub async fn send5(&mut self, packet: v5::Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, None).expect("encodable packet");
        self.send_raw(&out).await;
    }

    /// Reads the next frame within `wait`: its bytes, fixed header included.
    pub async fn frame_within(&mut self, wait: Duration) -> Result<BytesMut, Ended> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(len) = frame_len(&self.read) {
                return Ok(self.read.split_to(len));
            }
            let mut buf = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return Err(Ended::Silent),
                Ok(Ok(0) | Err(_)) => return Err(Ended::Closed),
                Ok(Ok(n)) => self.read.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Reads the next 3.1.1 packet; panics when none comes.
    pub async fn recv3(&mut self) -> v4::Packet {
        let mut frame = self
            .frame_within(WAIT)
            .await
            .unwrap_or_else(|e| panic!("expected a packet: {e:?}"));
        v4::Packet::read(&mut frame, MAX_READ).expect("a well-formed 3.1.1 packet")
    }

    /// Reads the next 5.0 packet; panics when none comes.
    pub async fn recv5(&mut self) -> v5::Packet {
        let mut frame = self
            .frame_within(WAIT)
            .await
            .unwrap_or_else(|e| panic!("expected a packet: {e:?}"));
        v5::Packet::read(&mut frame, None).expect("a well-formed 5.0 packet")
    }

    /// Reads the next 3.1.1 packet within `wait`, if one comes.
    pub async fn try_recv3(&mut self, wait: Duration) -> Result<v4::Packet, Ended> {
        let mut frame = self.frame_within(wait).await?;
        Ok(v4::Packet::read(&mut frame, MAX_READ).expect("a well-formed 3.1.1 packet"))
    }

    /// Reads the next 5.0 packet within `wait`, if one comes.
    pub async fn try_recv5(&mut self, wait: Duration) -> Result<v5::Packet, Ended> {
        let mut frame = self.frame_within(wait).await?;
        Ok(v5::Packet::read(&mut frame, None).expect("a well-formed 5.0 packet"))
    }

    /// The next 3.1.1 PUBLISH.
    pub async fn publish3(&mut self) -> v4::Publish {
        match self.recv3().await {
            v4::Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// The next 5.0 PUBLISH.
    pub async fn publish5(&mut self) -> v5::Publish {
        match self.recv5().await {
            v5::Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Asserts the server closes the connection (within [`WAIT`]) without sending more than
    /// `allowed` frames first; returns those frames.
    pub async fn closed(&mut self, allowed: usize) -> Vec<BytesMut> {
        let mut frames = Vec::new();
        loop {
            match self.frame_within(WAIT).await {
                Ok(f) => {
                    frames.push(f);
                    assert!(
                        frames.len() <= allowed,
                        "expected the connection closed, got {frames:?}"
                    );
                }
                Err(Ended::Closed) => return frames,
                Err(Ended::Silent) => panic!("the server did not close the connection"),
            }
        }
    }

    /// Asserts nothing arrives for `wait` and the connection stays open.
    pub async fn quiet(&mut self, wait: Duration) {
        match self.frame_within(wait).await {
            Err(Ended::Silent) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Subscribes (3.1.1) and returns the SUBACK's return codes.
    pub async fn subscribe3(&mut self, pkid: u16, filters: &[(&str, rumqttc::QoS)]) -> Vec<u8> {
        let filters = filters
            .iter()
            .map(|(f, q)| v4::SubscribeFilter::new((*f).to_owned(), *q));
        let mut sub = v4::Subscribe::new_many(filters);
        sub.pkid = pkid;
        self.send3(v4::Packet::Subscribe(sub)).await;
        match self.recv3().await {
            v4::Packet::SubAck(ack) => {
                assert_eq!(ack.pkid, pkid, "SUBACK carries the SUBSCRIBE's id");
                ack.return_codes
                    .iter()
                    .map(|c| match c {
                        v4::SubscribeReasonCode::Success(q) => *q as u8,
                        v4::SubscribeReasonCode::Failure => 0x80,
                    })
                    .collect()
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Subscribes (5.0) and returns the SUBACK.
    pub async fn subscribe5(
        &mut self,
        pkid: u16,
        filters: Vec<v5::Filter>,
        properties: Option<v5::SubscribeProperties>,
    ) -> v5::SubAck {
        let mut sub = v5::Subscribe::new_many(filters, properties);
        sub.pkid = pkid;
        self.send5(v5::Packet::Subscribe(sub)).await;
        match self.recv5().await {
            v5::Packet::SubAck(ack) => {
                assert_eq!(ack.pkid, pkid, "SUBACK carries the SUBSCRIBE's id");
                ack
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

/// A 5.0 CONNECT with a clean start, keep-alive 60 and no properties.
pub fn v5_connect(client_id: &str) -> v5::Connect {
    v5::Connect {
        keep_alive: 60,
        client_id: client_id.to_owned(),
        clean_start: true,
        properties: None,
    }
}

/// A 5.0 subscription filter with the given options.
pub fn filter5(path: &str, qos: rumqttc::v5::mqttbytes::QoS) -> v5::Filter {
    v5::Filter::new(path, qos)
}

/// The length of the first whole frame in `buf`, if it holds one.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for (i, b) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let total = 1 + i + 1 + len;
            return (buf.len() >= total).then_some(total);
        }
    }
    None
}
