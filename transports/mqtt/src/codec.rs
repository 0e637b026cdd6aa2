//! The MQTT wire layer, free of IO: frames bytes into protocol-neutral packets and back.
//!
//! Parsing is rmqtt-codec's (3.1, 3.1.1 and 5.0, zero-copy topics and payloads, size limits
//! checked on the fixed header before the body is buffered). This module picks the version from
//! CONNECT, and maps both versions onto one set of types so the connection logic is written once.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use rmqtt_codec::error::{DecodeError, EncodeError};
use rmqtt_codec::types::Publish as WirePublish;
use rmqtt_codec::v5::ToReasonCode;
use rmqtt_codec::version::{ProtocolVersion, VersionCodec};
use rmqtt_codec::{v3, v5};
use tokio_util::codec::{Decoder, Encoder};

pub use rmqtt_codec::types::{Publish, QoS};
pub use rmqtt_codec::v5::{DisconnectReasonCode, PublishProperties};

/// The protocol version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1 or 3.1.1.
    V3,
    /// MQTT 5.0.
    V5,
}

/// A framing or parsing failure: the connection is closed with `reason` (sent in a v5
/// DISCONNECT when the version is known).
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct CodecError {
    /// MQTT 5 reason code for the DISCONNECT.
    pub reason: DisconnectReasonCode,
    /// What went wrong.
    pub detail: String,
    /// A refused first CONNECT the specification answers before closing: the CONNACK to send
    /// as it goes on the wire (the codec's version is not settled yet).
    pub connack: Option<&'static [u8]>,
}

impl CodecError {
    fn malformed(detail: &str) -> CodecError {
        CodecError {
            reason: DisconnectReasonCode::MalformedPacket,
            detail: detail.to_owned(),
            connack: None,
        }
    }

    fn protocol(detail: &str) -> CodecError {
        CodecError {
            reason: DisconnectReasonCode::ProtocolError,
            detail: detail.to_owned(),
            connack: None,
        }
    }
}

impl From<DecodeError> for CodecError {
    fn from(e: DecodeError) -> Self {
        // rmqtt-codec's codes where the specification names another: ill-formed UTF-8 and
        // reserved flags are malformed packets (MQTT-1.5.4-1, 2.1.3-1).
        let reason = match e {
            DecodeError::Utf8Error | DecodeError::UnsupportedPacketType => {
                DisconnectReasonCode::MalformedPacket
            }
            _ => e.to_reason_code(),
        };
        CodecError {
            reason,
            detail: e.to_string(),
            connack: None,
        }
    }
}

impl From<EncodeError> for CodecError {
    fn from(e: EncodeError) -> Self {
        CodecError {
            reason: e.to_reason_code(),
            detail: e.to_string(),
            connack: None,
        }
    }
}

/// A will as carried by CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillPacket {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain.
    pub retain: bool,
    /// MQTT 5 user properties.
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 content type.
    pub content_type: Option<String>,
    /// MQTT 5 response topic.
    pub response_topic: Option<String>,
    /// MQTT 5 correlation data.
    pub correlation_data: Option<Bytes>,
    /// MQTT 5 payload format indicator (true: UTF-8).
    pub payload_utf8: Option<bool>,
    /// MQTT 5 Will Delay Interval, seconds (0 in 3.1.1).
    pub delay_secs: u32,
}

/// CONNECT, either version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectPacket {
    /// Version.
    pub version: Version,
    /// Client identifier.
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean_start: bool,
    /// Keep-alive, seconds.
    pub keep_alive: u16,
    /// MQTT 5 session expiry interval; None for 3.1.1.
    pub session_expiry: Option<u32>,
    /// Will.
    pub will: Option<WillPacket>,
    /// How many QoS 1/2 publishes the client accepts in flight (65535 when unset).
    pub receive_max: u16,
    /// Largest packet the client accepts.
    pub max_packet_size: Option<u32>,
    /// MQTT 5: how many topic aliases the client accepts on the PUBLISHes it receives (0: none).
    pub topic_alias_max: u16,
    /// MQTT 5 Authentication Method (enhanced authentication, which ironhub does not offer).
    pub auth_method: Option<String>,
}

/// One filter of SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Filter.
    pub filter: String,
    /// Requested QoS.
    pub qos: QoS,
    /// No-local (5.0).
    pub no_local: bool,
    /// Retain-as-published (5.0).
    pub retain_as_published: bool,
    /// Retain handling (5.0): 0, 1 or 2.
    pub retain_handling: u8,
}

/// A packet from the client, either version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// CONNECT.
    Connect(Box<ConnectPacket>),
    /// PUBLISH.
    Publish(Box<Publish>),
    /// PUBACK.
    PubAck(NonZeroU16),
    /// PUBREC.
    PubRec(NonZeroU16, u8),
    /// PUBREL.
    PubRel(NonZeroU16),
    /// PUBCOMP.
    PubComp(NonZeroU16),
    /// SUBSCRIBE.
    Subscribe {
        /// Packet id.
        packet_id: NonZeroU16,
        /// Subscription identifier (5.0).
        id: Option<u32>,
        /// Filters.
        filters: Vec<SubscribeFilter>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet id.
        packet_id: NonZeroU16,
        /// Filters.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT, with the v5 reason (0 = normal, 4 = with will).
    Disconnect {
        /// Reason code (0 for 3.1.1).
        reason: u8,
        /// MQTT 5: the session's new expiry, seconds.
        session_expiry: Option<u32>,
    },
    /// A packet only a server sends, or AUTH (unsupported): a protocol error.
    Unexpected(&'static str),
}

/// How a CONNECT was answered, mapped to each version's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCode {
    /// Accepted.
    Accepted,
    /// v3 4 / v5 0x86.
    BadCredentials,
    /// v3 5 / v5 0x87.
    NotAuthorized,
    /// v3 5 / v5 0x83 (keep-alive out of range has no v3.1.1 code of its own).
    ImplementationSpecific,
    /// v3 3 / v5 0x88.
    ServerUnavailable,
    /// v3 3 / v5 0x9F (a connection rate limit).
    ConnectionRateExceeded,
    /// v3 3 / v5 0x97 (a quota, such as the monthly messages of the tenant).
    QuotaExceeded,
    /// v5 0x8C: an Authentication Method ironhub does not offer (3.1.1 has none).
    BadAuthenticationMethod,
}

impl ConnectCode {
    /// The code of a refused connection by its MQTT 5 reason code (the codec gives 3.1.1 clients
    /// their return code); unknown codes are implementation-specific errors.
    pub fn from_reason(code: u8) -> ConnectCode {
        match code {
            0x00 => ConnectCode::Accepted,
            0x86 => ConnectCode::BadCredentials,
            0x87 => ConnectCode::NotAuthorized,
            0x88 => ConnectCode::ServerUnavailable,
            0x9F => ConnectCode::ConnectionRateExceeded,
            0x97 => ConnectCode::QuotaExceeded,
            _ => ConnectCode::ImplementationSpecific,
        }
    }
}

/// CONNACK, either version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Outcome.
    pub code: ConnectCode,
    /// Whether a stored session was resumed.
    pub session_present: bool,
    /// 5.0: how many QoS 1/2 publishes we accept in flight.
    pub receive_max: u16,
    /// 5.0: largest packet we accept.
    pub max_packet_size: u32,
    /// 5.0: topic aliases we accept.
    pub topic_alias_max: u16,
    /// 5.0: session expiry granted, when it differs from the request.
    pub session_expiry: Option<u32>,
    /// 5.0: the keep-alive the client must use, when it differs from the request.
    pub server_keep_alive: Option<u16>,
    /// 5.0: client id we assigned.
    pub assigned_client_id: Option<String>,
    /// 5.0: human-readable reason.
    pub reason_string: Option<String>,
}

/// A packet to the client, either version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// CONNACK.
    ConnAck(Box<ConnAck>),
    /// PUBLISH.
    Publish(Box<Publish>),
    /// PUBACK with a v5 reason code and reason string.
    PubAck(NonZeroU16, u8, Option<String>),
    /// PUBREC with a v5 reason code and reason string.
    PubRec(NonZeroU16, u8, Option<String>),
    /// PUBREL.
    PubRel(NonZeroU16),
    /// PUBCOMP.
    PubComp(NonZeroU16),
    /// SUBACK: per filter the granted QoS, or a v5 reason code (sent as 0x80 in 3.1.1).
    SubAck(NonZeroU16, Vec<Result<QoS, u8>>),
    /// UNSUBACK: per filter whether a subscription existed (5.0 reason codes).
    UnsubAck(NonZeroU16, Vec<bool>),
    /// PINGRESP.
    PingResp,
    /// DISCONNECT (5.0 only; 3.1.1 connections are just closed): reason code, reason string,
    /// server reference (where to connect instead).
    Disconnect(DisconnectReasonCode, Option<String>, Option<String>),
}

impl Outbound {
    /// The same acknowledgement, CONNACK or DISCONNECT without its reason string; None for
    /// packets that carry none.
    fn without_reason_string(&self) -> Option<Outbound> {
        match self {
            Outbound::PubAck(id, code, Some(_)) => Some(Outbound::PubAck(*id, *code, None)),
            Outbound::PubRec(id, code, Some(_)) => Some(Outbound::PubRec(*id, *code, None)),
            Outbound::Disconnect(code, Some(_), reference) => {
                Some(Outbound::Disconnect(*code, None, reference.clone()))
            }
            Outbound::ConnAck(ack) if ack.reason_string.is_some() => {
                Some(Outbound::ConnAck(Box::new(ConnAck {
                    reason_string: None,
                    ..(**ack).clone()
                })))
            }
            _ => None,
        }
    }
}

enum State {
    AwaitVersion,
    V3(v3::Codec),
    V5(v5::Codec),
}

/// Frames one connection's bytes. Starts by reading the version from CONNECT.
pub struct Codec {
    state: State,
    max_inbound: u32,
}

fn s(b: ByteString) -> String {
    b.to_string()
}

impl Codec {
    /// A codec that refuses inbound packets larger than `max_inbound` bytes (remaining length).
    pub fn new(max_inbound: u32) -> Self {
        Codec {
            state: State::AwaitVersion,
            max_inbound,
        }
    }

    /// The version, once CONNECT has been seen.
    pub fn version(&self) -> Option<Version> {
        match self.state {
            State::AwaitVersion => None,
            State::V3(_) => Some(Version::V3),
            State::V5(_) => Some(Version::V5),
        }
    }

    /// Caps outbound packets at the client's Maximum Packet Size (5.0).
    pub fn set_max_outbound(&mut self, size: u32) {
        if let State::V5(c) = &mut self.state {
            c.set_max_outbound_size(size);
        }
    }

    /// Decodes the next packet; Ok(None) means more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        if !frame_ready(buf, self.max_inbound) {
            return Ok(None);
        }
        if let State::AwaitVersion = self.state {
            check_first_connect(buf)?;
            match VersionCodec.decode(buf)? {
                None => return Ok(None),
                Some(ProtocolVersion::MQTT3) => {
                    self.state = State::V3(v3::Codec::new(self.max_inbound))
                }
                Some(ProtocolVersion::MQTT5) => {
                    self.state = State::V5(v5::Codec::new(self.max_inbound, 0));
                }
            }
        }
        let packet = match &mut self.state {
            State::AwaitVersion => None,
            State::V3(c) => {
                check_v3_subscribe(buf)?;
                c.decode(buf)?.map(|(p, _)| from_v3(p))
            }
            State::V5(c) => {
                check_v5_filters_present(buf)?;
                c.decode(buf)?.map(|(p, _)| from_v5(p))
            }
        };
        if let Some(p) = &packet
            && has_null(p)
        {
            return Err(CodecError::malformed(
                "a string holds U+0000 (MQTT-1.5.3-2, MQTT-1.5.4-2)",
            ));
        }
        Ok(packet)
    }

    /// Encodes a packet for the negotiated version. Packets with no 3.1.1 form are skipped.
    pub fn encode(&mut self, packet: Outbound, buf: &mut BytesMut) -> Result<(), CodecError> {
        match &mut self.state {
            State::AwaitVersion => Err(CodecError {
                reason: DisconnectReasonCode::ProtocolError,
                detail: "no version negotiated".into(),
                connack: None,
            }),
            State::V3(c) => match to_v3(packet) {
                Some(p) => Ok(c.encode(p, buf)?),
                None => Ok(()),
            },
            State::V5(c) => {
                if let Some(short) = short_ack(&packet) {
                    buf.extend_from_slice(&short);
                    return Ok(());
                }
                // rmqtt-codec leaves reason strings off acknowledgements for a client that
                // asked for no problem information (MQTT-3.1.2-29).
                let bare = packet.without_reason_string();
                match (c.encode(to_v5(packet), buf), bare) {
                    // Too large for the client with its reason string: sent without
                    // (MQTT-3.2.2-19, 3.4.2-2, 3.5.2-2, 3.14.2-3).
                    (Err(_), Some(bare)) => Ok(c.encode(to_v5(bare), buf)?),
                    (result, _) => Ok(result?),
                }
            }
        }
    }
}

/// Whether `buf` holds a whole packet, or a fixed header rmqtt-codec refuses at once (a length
/// over the maximum, or not a length): rmqtt-codec consumes a packet's fixed header before its
/// body is in, so the checks below and rmqtt-codec are given whole packets only, however the
/// bytes arrive.
fn frame_ready(buf: &[u8], max_inbound: u32) -> bool {
    let Some(rest) = buf.get(1..) else {
        return false;
    };
    match variable_int(rest) {
        Some((len, header)) => len > max_inbound as usize || rest.len() >= header + len,
        None => rest.len() >= 4,
    }
}

/// What rmqtt-codec lets through in a first CONNECT, or refuses without the answer the
/// specification asks for: an unsupported protocol level gets CONNACK 0x01 (MQTT-3.1.2-2); a
/// zero-byte client id without a clean session CONNACK 0x02 in 3.1.1 (MQTT-3.1.3-8) and 0x85 in
/// 5.0 (refused as Mosquitto does: a fresh id has no session to resume); Will QoS or Retain
/// without a will, a 3.1.1 password without a user name, and bytes after the last field the
/// flags announce are malformed (MQTT-3.1.2-11, 3.1.2-13, 3.1.2-18 to 3.1.2-22; in 5.0
/// 3.1.2-16 to 3.1.2-19). Waits (Ok) for a whole packet;
/// what it cannot read is left to rmqtt-codec to refuse.
fn check_first_connect(buf: &[u8]) -> Result<(), CodecError> {
    let Some((&0x10, rest)) = buf.split_first() else {
        return Ok(());
    };
    let Some((len, header)) = variable_int(rest) else {
        return Ok(());
    };
    let Some(body) = rest.get(header..header + len) else {
        return Ok(());
    };
    let mut at = 0usize;
    let Some(name) = length_prefixed(body, &mut at) else {
        return Ok(());
    };
    let (Some(&level), Some(&flags)) = (body.get(at), body.get(at + 1)) else {
        return Ok(());
    };
    if !matches!(name, b"MQTT" | b"MQIsdp") {
        return Ok(());
    }
    let refuse = |connack: &'static [u8], detail: &str| CodecError {
        connack: Some(connack),
        ..CodecError::protocol(detail)
    };
    let v5 = match level {
        3 | 4 => false,
        5 => true,
        _ => {
            return Err(refuse(
                &[0x20, 2, 0, 1],
                "unsupported protocol level (MQTT-3.1.2-2)",
            ));
        }
    };
    let (will, user, password) = (flags & 0x04 != 0, flags & 0x80 != 0, flags & 0x40 != 0);
    if !will && flags & 0x38 != 0 {
        return Err(CodecError::malformed(
            "Will QoS or Will Retain without a will (MQTT-3.1.2-11, 3.1.2-13)",
        ));
    }
    if !v5 && password && !user {
        return Err(CodecError::malformed(
            "a password without a user name (MQTT-3.1.2-22)",
        ));
    }
    // Level, flags and keep-alive; then the properties (5.0).
    at += 4;
    if v5 && !skip_properties(body, &mut at) {
        return Ok(());
    }
    let Some(client_id) = length_prefixed(body, &mut at) else {
        return Ok(());
    };
    if client_id.is_empty() && flags & 0x02 == 0 {
        return Err(if v5 {
            refuse(
                &[0x20, 3, 0, 0x85, 0],
                "a zero-byte client id with Clean Start 0 is refused (MQTT-3.1.3-8 allows it)",
            )
        } else {
            refuse(
                &[0x20, 2, 0, 2],
                "a zero-byte client id needs a clean session (MQTT-3.1.3-8)",
            )
        });
    }
    let fields_read = (!will
        || ((!v5 || skip_properties(body, &mut at))
            && length_prefixed(body, &mut at).is_some()
            && length_prefixed(body, &mut at).is_some()))
        && (!user || length_prefixed(body, &mut at).is_some())
        && (!password || length_prefixed(body, &mut at).is_some());
    if fields_read && at != body.len() {
        return Err(CodecError::malformed(
            "bytes after the last field of CONNECT (fields the flags do not announce)",
        ));
    }
    Ok(())
}

/// A 16-bit length-prefixed field at `*at`, moving `*at` past it.
fn length_prefixed<'a>(body: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let len = usize::from(u16::from_be_bytes([*body.get(*at)?, *body.get(*at + 1)?]));
    let field = body.get(*at + 2..*at + 2 + len)?;
    *at += 2 + len;
    Some(field)
}

/// Moves `*at` past a 5.0 property block; false if it runs past the body.
fn skip_properties(body: &[u8], at: &mut usize) -> bool {
    match body.get(*at..).and_then(variable_int) {
        Some((len, header)) if *at + header + len <= body.len() => {
            *at += header + len;
            true
        }
        _ => false,
    }
}

/// A 5.0 SUBSCRIBE or UNSUBSCRIBE without a topic filter is a protocol error (MQTT-3.8.3-2,
/// 3.10.3-2); rmqtt-codec calls it an invalid filter. Waits (Ok) for a whole packet.
fn check_v5_filters_present(buf: &[u8]) -> Result<(), CodecError> {
    let Some((&(0x82 | 0xA2), rest)) = buf.split_first() else {
        return Ok(());
    };
    let Some((len, header)) = variable_int(rest) else {
        return Ok(());
    };
    let Some(body) = rest.get(header..header + len) else {
        return Ok(());
    };
    // Packet id, then the properties.
    let Some((props, props_header)) = body.get(2..).and_then(variable_int) else {
        return Ok(());
    };
    if body.len() == 2 + props_header + props {
        return Err(CodecError::protocol(
            "no topic filter (MQTT-3.8.3-2, 3.10.3-2)",
        ));
    }
    Ok(())
}

/// A variable byte integer at the start of `bytes`: its value and length.
fn variable_int(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, b) in bytes.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A 3.1.1 SUBSCRIBE whose requested QoS byte has reserved bits set is malformed
/// (MQTT-3.8.3-4): rmqtt-codec reads the QoS bits only. Waits (Ok) for a whole packet.
fn check_v3_subscribe(buf: &[u8]) -> Result<(), CodecError> {
    let Some((&0x82, rest)) = buf.split_first() else {
        return Ok(());
    };
    let Some((len, header)) = variable_int(rest) else {
        return Ok(());
    };
    if rest.len() < header + len {
        return Ok(());
    }
    // Packet id, then (filter, options) pairs.
    let mut body = rest.get(header + 2..header + len).unwrap_or_default();
    while let [hi, lo, tail @ ..] = body {
        let n = usize::from(u16::from_be_bytes([*hi, *lo]));
        match tail.get(n..) {
            Some([options, more @ ..]) => {
                if *options > 2 {
                    return Err(CodecError::malformed(
                        "reserved bits or QoS 3 in a SUBSCRIBE (MQTT-3.8.3-4)",
                    ));
                }
                body = more;
            }
            _ => break,
        }
    }
    Ok(())
}

/// Whether a string of the packet holds U+0000, which no MQTT string may (rmqtt-codec checks
/// well-formed UTF-8 only).
fn has_null(p: &Inbound) -> bool {
    let null = |s: &str| s.contains('\0');
    match p {
        Inbound::Connect(c) => {
            null(&c.client_id)
                || c.username.as_deref().is_some_and(null)
                || c.will.as_ref().is_some_and(|w| {
                    null(&w.topic)
                        || w.content_type.as_deref().is_some_and(null)
                        || w.response_topic.as_deref().is_some_and(null)
                        || w.user_properties.iter().any(|(k, v)| null(k) || null(v))
                })
        }
        Inbound::Publish(p) => {
            null(&p.topic)
                || p.properties.as_ref().is_some_and(|props| {
                    props.content_type.as_deref().is_some_and(null)
                        || props.response_topic.as_deref().is_some_and(null)
                        || props
                            .user_properties
                            .iter()
                            .any(|(k, v)| null(k) || null(v))
                })
        }
        Inbound::Subscribe { filters, .. } => filters.iter().any(|f| null(&f.filter)),
        Inbound::Unsubscribe { filters, .. } => filters.iter().any(|f| null(f)),
        _ => false,
    }
}

/// An MQTT 5 acknowledgement with reason 0x00 and no properties in its short form, remaining
/// length 2 (MQTT 5 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1 allow it; it is what Mosquitto sends):
/// rmqtt-codec always writes the reason code and a property length, which paho 1.x's MQTT 5
/// client cannot read in a PUBREL (it then drops the connection, and the QoS 2 message with it).
fn short_ack(packet: &Outbound) -> Option<[u8; 4]> {
    let (first, id) = match packet {
        Outbound::PubAck(id, 0, None) => (0x40, id),
        Outbound::PubRec(id, 0, None) => (0x50, id),
        Outbound::PubRel(id) => (0x62, id),
        Outbound::PubComp(id) => (0x70, id),
        _ => return None,
    };
    let [hi, lo] = id.get().to_be_bytes();
    Some([first, 2, hi, lo])
}

fn from_v3(p: v3::Packet) -> Inbound {
    match p {
        v3::Packet::Connect(c) => Inbound::Connect(Box::new(ConnectPacket {
            version: Version::V3,
            client_id: s(c.client_id),
            username: c.username.map(s),
            password: c.password,
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            session_expiry: None,
            will: c.last_will.map(|w| WillPacket {
                topic: s(w.topic),
                payload: w.message,
                qos: w.qos,
                retain: w.retain,
                user_properties: Vec::new(),
                content_type: None,
                response_topic: None,
                correlation_data: None,
                payload_utf8: None,
                delay_secs: 0,
            }),
            receive_max: u16::MAX,
            max_packet_size: None,
            topic_alias_max: 0,
            auth_method: None,
        })),
        v3::Packet::Publish(p) => Inbound::Publish(p),
        v3::Packet::PublishAck { packet_id } => Inbound::PubAck(packet_id),
        v3::Packet::PublishReceived { packet_id } => Inbound::PubRec(packet_id, 0),
        v3::Packet::PublishRelease { packet_id } => Inbound::PubRel(packet_id),
        v3::Packet::PublishComplete { packet_id } => Inbound::PubComp(packet_id),
        v3::Packet::Subscribe {
            packet_id,
            topic_filters,
        } => Inbound::Subscribe {
            packet_id,
            id: None,
            filters: topic_filters
                .into_iter()
                .map(|(f, qos)| SubscribeFilter {
                    filter: s(f),
                    qos,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                })
                .collect(),
        },
        v3::Packet::Unsubscribe {
            packet_id,
            topic_filters,
        } => Inbound::Unsubscribe {
            packet_id,
            filters: topic_filters.into_iter().map(s).collect(),
        },
        v3::Packet::PingRequest => Inbound::PingReq,
        v3::Packet::Disconnect => Inbound::Disconnect {
            reason: 0,
            session_expiry: None,
        },
        v3::Packet::ConnectAck(_) => Inbound::Unexpected("CONNACK"),
        v3::Packet::SubscribeAck { .. } => Inbound::Unexpected("SUBACK"),
        v3::Packet::UnsubscribeAck { .. } => Inbound::Unexpected("UNSUBACK"),
        v3::Packet::PingResponse => Inbound::Unexpected("PINGRESP"),
    }
}

fn from_v5(p: v5::Packet) -> Inbound {
    match p {
        v5::Packet::Connect(c) => Inbound::Connect(Box::new(ConnectPacket {
            version: Version::V5,
            client_id: s(c.client_id),
            username: c.username.map(s),
            password: c.password,
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            session_expiry: Some(c.session_expiry_interval_secs),
            will: c.last_will.map(|w| WillPacket {
                topic: s(w.topic),
                payload: w.message,
                qos: w.qos,
                retain: w.retain,
                user_properties: w
                    .user_properties
                    .into_iter()
                    .map(|(k, v)| (s(k), s(v)))
                    .collect(),
                content_type: w.content_type.map(s),
                response_topic: w.response_topic.map(s),
                correlation_data: w.correlation_data,
                payload_utf8: w.is_utf8_payload,
                delay_secs: w.will_delay_interval_sec.unwrap_or(0),
            }),
            receive_max: c.receive_max.map_or(u16::MAX, NonZeroU16::get),
            max_packet_size: c.max_packet_size.map(NonZeroU32::get),
            topic_alias_max: c.topic_alias_max,
            auth_method: c.auth_method.map(s),
        })),
        v5::Packet::Publish(p) => Inbound::Publish(p),
        v5::Packet::PublishAck(a) => Inbound::PubAck(a.packet_id),
        v5::Packet::PublishReceived(a) => Inbound::PubRec(a.packet_id, u8::from(a.reason_code)),
        v5::Packet::PublishRelease(a) => Inbound::PubRel(a.packet_id),
        v5::Packet::PublishComplete(a) => Inbound::PubComp(a.packet_id),
        v5::Packet::Subscribe(sub) => Inbound::Subscribe {
            packet_id: sub.packet_id,
            id: sub.id.map(NonZeroU32::get),
            filters: sub
                .topic_filters
                .into_iter()
                .map(|(f, o)| SubscribeFilter {
                    filter: s(f),
                    qos: o.qos,
                    no_local: o.no_local,
                    retain_as_published: o.retain_as_published,
                    retain_handling: o.retain_handling as u8,
                })
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            packet_id: u.packet_id,
            filters: u.topic_filters.into_iter().map(s).collect(),
        },
        v5::Packet::PingRequest => Inbound::PingReq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            reason: d.reason_code as u8,
            session_expiry: d.session_expiry_interval_secs,
        },
        v5::Packet::ConnectAck(_) => Inbound::Unexpected("CONNACK"),
        v5::Packet::SubscribeAck(_) => Inbound::Unexpected("SUBACK"),
        v5::Packet::UnsubscribeAck(_) => Inbound::Unexpected("UNSUBACK"),
        v5::Packet::PingResponse => Inbound::Unexpected("PINGRESP"),
        v5::Packet::Auth(_) => Inbound::Unexpected("AUTH"),
    }
}

fn to_v3(p: Outbound) -> Option<v3::Packet> {
    use v3::ConnectAckReason as R;
    Some(match p {
        Outbound::ConnAck(a) => v3::Packet::ConnectAck(v3::ConnectAck {
            session_present: a.session_present,
            return_code: match a.code {
                ConnectCode::Accepted => R::ConnectionAccepted,
                ConnectCode::BadCredentials => R::BadUserNameOrPassword,
                ConnectCode::NotAuthorized
                | ConnectCode::ImplementationSpecific
                | ConnectCode::BadAuthenticationMethod => R::NotAuthorized,
                ConnectCode::ServerUnavailable
                | ConnectCode::ConnectionRateExceeded
                | ConnectCode::QuotaExceeded => R::ServiceUnavailable,
            },
        }),
        Outbound::Publish(mut p) => {
            p.properties = None;
            v3::Packet::Publish(p)
        }
        Outbound::PubAck(packet_id, ..) => v3::Packet::PublishAck { packet_id },
        Outbound::PubRec(packet_id, ..) => v3::Packet::PublishReceived { packet_id },
        Outbound::PubRel(packet_id) => v3::Packet::PublishRelease { packet_id },
        Outbound::PubComp(packet_id) => v3::Packet::PublishComplete { packet_id },
        Outbound::SubAck(packet_id, codes) => v3::Packet::SubscribeAck {
            packet_id,
            status: codes
                .into_iter()
                .map(|c| match c {
                    Ok(q) => v3::SubscribeReturnCode::Success(q),
                    Err(_) => v3::SubscribeReturnCode::Failure,
                })
                .collect(),
        },
        Outbound::UnsubAck(packet_id, _) => v3::Packet::UnsubscribeAck { packet_id },
        Outbound::PingResp => v3::Packet::PingResponse,
        Outbound::Disconnect(..) => return None,
    })
}

fn to_v5(p: Outbound) -> v5::Packet {
    match p {
        Outbound::ConnAck(a) => {
            use v5::ConnectAckReason as R;
            v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
                session_present: a.session_present,
                reason_code: match a.code {
                    ConnectCode::Accepted => R::Success,
                    ConnectCode::BadCredentials => R::BadUserNameOrPassword,
                    ConnectCode::NotAuthorized => R::NotAuthorized,
                    ConnectCode::ImplementationSpecific => R::ImplementationSpecificError,
                    ConnectCode::ServerUnavailable => R::ServerUnavailable,
                    ConnectCode::ConnectionRateExceeded => R::ConnectionRateExceeded,
                    ConnectCode::QuotaExceeded => R::QuotaExceeded,
                    ConnectCode::BadAuthenticationMethod => R::BadAuthenticationMethod,
                },
                session_expiry_interval_secs: a.session_expiry,
                receive_max: NonZeroU16::new(a.receive_max).unwrap_or(NonZeroU16::MAX),
                max_packet_size: Some(a.max_packet_size),
                assigned_client_id: a.assigned_client_id.map(ByteString::from),
                server_keepalive_sec: a.server_keep_alive,
                topic_alias_max: a.topic_alias_max,
                reason_string: a.reason_string.map(ByteString::from),
                subscription_identifiers_available: true,
                ..v5::ConnectAck::default()
            }))
        }
        Outbound::Publish(p) => v5::Packet::Publish(p),
        Outbound::PubAck(packet_id, reason, text) => v5::Packet::PublishAck(v5::PublishAck {
            packet_id,
            reason_string: text.map(ByteString::from),
            reason_code: v5::PublishAckReason::try_from(reason)
                .unwrap_or(v5::PublishAckReason::UnspecifiedError),
            ..v5::PublishAck::default()
        }),
        Outbound::PubRec(packet_id, reason, text) => v5::Packet::PublishReceived(v5::PublishAck {
            packet_id,
            reason_string: text.map(ByteString::from),
            reason_code: v5::PublishAckReason::try_from(reason)
                .unwrap_or(v5::PublishAckReason::UnspecifiedError),
            ..v5::PublishAck::default()
        }),
        Outbound::PubRel(packet_id) => v5::Packet::PublishRelease(v5::PublishAck2 {
            packet_id,
            ..v5::PublishAck2::default()
        }),
        Outbound::PubComp(packet_id) => v5::Packet::PublishComplete(v5::PublishAck2 {
            packet_id,
            ..v5::PublishAck2::default()
        }),
        Outbound::SubAck(packet_id, codes) => v5::Packet::SubscribeAck(v5::SubscribeAck {
            packet_id,
            properties: Vec::new(),
            reason_string: None,
            status: codes
                .into_iter()
                .map(|c| match c {
                    Ok(QoS::AtMostOnce) => v5::SubscribeAckReason::GrantedQos0,
                    Ok(QoS::AtLeastOnce) => v5::SubscribeAckReason::GrantedQos1,
                    Ok(QoS::ExactlyOnce) => v5::SubscribeAckReason::GrantedQos2,
                    Err(r) => v5::SubscribeAckReason::try_from(r)
                        .unwrap_or(v5::SubscribeAckReason::UnspecifiedError),
                })
                .collect(),
        }),
        Outbound::UnsubAck(packet_id, existed) => v5::Packet::UnsubscribeAck(v5::UnsubscribeAck {
            packet_id,
            properties: Vec::new(),
            reason_string: None,
            status: existed
                .into_iter()
                .map(|e| {
                    if e {
                        v5::UnsubscribeAckReason::Success
                    } else {
                        v5::UnsubscribeAckReason::NoSubscriptionExisted
                    }
                })
                .collect(),
        }),
        Outbound::PingResp => v5::Packet::PingResponse,
        Outbound::Disconnect(reason_code, reason_string, server_reference) => {
            v5::Packet::Disconnect(v5::Disconnect {
                reason_code,
                reason_string: reason_string.map(ByteString::from),
                server_reference: server_reference.map(ByteString::from),
                ..v5::Disconnect::default()
            })
        }
    }
}

/// Builds a PUBLISH for a delivery (the payload is shared, not copied).
pub fn publish_packet(
    topic: &str,
    payload: Bytes,
    qos: QoS,
    retain: bool,
    packet_id: Option<NonZeroU16>,
    properties: Option<PublishProperties>,
) -> Publish {
    WirePublish {
        dup: false,
        retain,
        qos,
        topic: ByteString::from(topic),
        packet_id,
        payload,
        properties,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_v311(keep_alive: u16, client_id: &str) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b0000_0010];
        body.extend_from_slice(&keep_alive.to_be_bytes());
        body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
        body.extend_from_slice(client_id.as_bytes());
        let mut out = vec![0x10, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn decodes_v311_connect_and_switches_version() {
        let mut codec = Codec::new(1024);
        let bytes = connect_v311(60, "c1");
        // Byte by byte: a partial packet asks for more.
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = codec.decode(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert!(got.is_none(), "early packet at byte {i}");
            } else {
                let Some(Inbound::Connect(c)) = got else {
                    panic!("no connect")
                };
                assert_eq!(c.version, Version::V3);
                assert_eq!(c.client_id, "c1");
                assert_eq!(c.keep_alive, 60);
                assert!(c.clean_start);
            }
        }
        assert_eq!(codec.version(), Some(Version::V3));
    }

    #[test]
    fn oversize_packet_is_refused_from_its_header() {
        let mut codec = Codec::new(1024);
        let mut buf = BytesMut::from(&connect_v311(60, "c1")[..]);
        codec.decode(&mut buf).unwrap().unwrap();
        // PUBLISH announcing 2000 bytes: refused before the body arrives.
        let mut buf = BytesMut::from(&[0x30, 0xd0, 0x0f][..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert_eq!(err.reason, DisconnectReasonCode::PacketTooLarge);
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        let mut codec = Codec::new(1024);
        let mut buf = BytesMut::from(&[0x10, 0x08, 0, 3, b'X', b'Y', b'Z', 4, 0, 0][..]);
        assert!(
            codec.decode(&mut buf).is_err(),
            "protocol name must be MQTT"
        );
        let mut codec = Codec::new(1024);
        let mut buf = BytesMut::from(&[0x82, 0x00][..]);
        assert!(
            codec.decode(&mut buf).is_err(),
            "first packet must be CONNECT"
        );
    }

    #[test]
    fn round_trips_puback_and_suback_in_both_versions() {
        for (version_byte, version) in [(4u8, Version::V3), (5u8, Version::V5)] {
            let mut codec = Codec::new(1024);
            let mut connect = vec![
                0x10,
                0,
                0,
                4,
                b'M',
                b'Q',
                b'T',
                b'T',
                version_byte,
                2,
                0,
                60,
            ];
            if version == Version::V5 {
                connect.push(0); // no properties
            }
            connect.extend_from_slice(&[0, 1, b'c']);
            connect[1] = (connect.len() - 2) as u8;
            let mut buf = BytesMut::from(&connect[..]);
            codec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(codec.version(), Some(version));
            let pid = NonZeroU16::new(7).unwrap();
            let mut out = BytesMut::new();
            codec
                .encode(Outbound::PubAck(pid, 0x87, None), &mut out)
                .unwrap();
            let expected: &[u8] = if version == Version::V3 {
                &[0x40, 2, 0, 7]
            } else {
                &[0x40, 4, 0, 7, 0x87, 0]
            };
            assert_eq!(&out[..], expected);
            let mut out = BytesMut::new();
            codec
                .encode(
                    Outbound::SubAck(pid, vec![Ok(QoS::AtLeastOnce), Err(0x87)]),
                    &mut out,
                )
                .unwrap();
            let expected_tail: &[u8] = if version == Version::V3 {
                &[1, 0x80]
            } else {
                &[1, 0x87]
            };
            assert_eq!(&out[out.len() - 2..], expected_tail);
        }
    }

    #[test]
    fn checks_see_whole_packets_however_the_bytes_arrive() {
        let feed = |codec: &mut Codec, bytes: &[u8]| {
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for b in bytes {
                buf.extend_from_slice(&[*b]);
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(p)) => out.push(Ok(p)),
                        Ok(None) => break,
                        Err(e) => {
                            out.push(Err(e.detail));
                            return out;
                        }
                    }
                }
            }
            out
        };
        // An unsupported level, a byte at a time: still refused with its CONNACK.
        let mut codec = Codec::new(1 << 20);
        let mut v9 = connect_v311(60, "c");
        v9[8] = 9;
        let got = feed(&mut codec, &v9);
        assert!(
            matches!(&got[..], [Err(d)] if d.contains("protocol level")),
            "{got:?}"
        );
        // A SUBSCRIBE whose packet id starts with 0x82, then one with reserved option bits.
        let mut codec = Codec::new(1 << 20);
        let mut bytes = connect_v311(60, "c");
        bytes.extend_from_slice(&[0x82, 8, 0x82, 0x82, 0, 3, b'a', b'/', b'b', 1]);
        bytes.extend_from_slice(&[0x82, 8, 0, 9, 0, 3, b'a', b'/', b'b', 0x41]);
        let got = feed(&mut codec, &bytes);
        assert!(matches!(got[0], Ok(Inbound::Connect(_))), "{got:?}");
        assert!(
            matches!(&got[1], Ok(Inbound::Subscribe { packet_id, .. }) if packet_id.get() == 0x8282),
            "{got:?}"
        );
        assert!(
            matches!(&got[2], Err(d) if d.contains("MQTT-3.8.3-4")),
            "{got:?}"
        );
    }

    /// A codec that has read an MQTT 5 CONNECT.
    fn v5_codec() -> Codec {
        let mut codec = Codec::new(1 << 20);
        let mut connect = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0];
        connect.extend_from_slice(&[0, 1, b'c']);
        connect[1] = (connect.len() - 2) as u8;
        codec
            .decode(&mut BytesMut::from(&connect[..]))
            .unwrap()
            .unwrap();
        codec
    }

    #[test]
    fn lengths_take_the_fewest_bytes_and_reason_strings_yield_to_the_clients_maximum() {
        let mut codec = v5_codec();
        // Remaining lengths 127, 128, 16383 and 16384 (MQTT-1.5.5-1): 1, 2, 2 and 3 bytes.
        for (remaining, header) in [(127usize, 1usize), (128, 2), (16_383, 2), (16_384, 3)] {
            // Topic "t" (3 bytes) and an empty property block (1 byte) come first.
            let payload = Bytes::from(vec![0u8; remaining - 4]);
            let packet = publish_packet(
                "t",
                payload,
                QoS::AtMostOnce,
                false,
                None,
                Some(PublishProperties::default()),
            );
            let mut out = BytesMut::new();
            codec
                .encode(Outbound::Publish(Box::new(packet)), &mut out)
                .unwrap();
            assert_eq!(out.len(), 1 + header + remaining, "{remaining}");
        }
        // With a 12-byte maximum, a refusal's reason string is left off, not the refusal.
        codec.set_max_outbound(12);
        let pid = NonZeroU16::new(7).unwrap();
        let mut out = BytesMut::new();
        codec
            .encode(
                Outbound::PubAck(pid, 0x87, Some("not authorized here".into())),
                &mut out,
            )
            .unwrap();
        assert_eq!(&out[..], [0x40, 4, 0, 7, 0x87, 0]);
    }

    #[test]
    fn successful_v5_acknowledgements_take_the_short_form() {
        let mut codec = v5_codec();
        let pid = NonZeroU16::new(0x0102).unwrap();
        let encode = |codec: &mut Codec, packet| {
            let mut out = BytesMut::new();
            codec.encode(packet, &mut out).unwrap();
            out.to_vec()
        };
        assert_eq!(encode(&mut codec, Outbound::PubRel(pid)), [0x62, 2, 1, 2]);
        assert_eq!(encode(&mut codec, Outbound::PubComp(pid)), [0x70, 2, 1, 2]);
        assert_eq!(
            encode(&mut codec, Outbound::PubAck(pid, 0, None)),
            [0x40, 2, 1, 2]
        );
        assert_eq!(
            encode(&mut codec, Outbound::PubRec(pid, 0, None)),
            [0x50, 2, 1, 2]
        );
        let refused = encode(
            &mut codec,
            Outbound::PubAck(pid, 0x97, Some("L-017".into())),
        );
        assert_eq!(
            &refused[..5],
            [0x40, refused[1], 1, 2, 0x97],
            "a reason keeps the long form"
        );
        let mut decoded = BytesMut::from(&[0x62, 2, 1, 2][..]);
        assert!(matches!(
            codec.decode(&mut decoded).unwrap(),
            Some(Inbound::PubRel(id)) if id == pid
        ));
    }
}
