//! CoAP messages (RFC 7252) to and from the transport's own request and response types, free of
//! IO so it can be tested on bytes and fuzzed. coap-lite does the wire format.

use coap_lite::{
    CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType, ResponseType,
};

/// Response codes (coap-lite's), for building [`Response`]s.
pub use coap_lite::ResponseType as ResponseCode;

/// The option that carries the device token (Alibaba Cloud's CoAP scheme).
pub const TOKEN_OPTION: u16 = 2088;

/// Why a datagram is not a request the transport serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a CoAP message at all (too short, wrong version): dropped silently.
    #[error("not a CoAP message")]
    Garbage,
    /// A CoAP message with a format error (RFC 7252 4.2: rejected with a Reset when confirmable).
    #[error("malformed CoAP message {message_id}")]
    Malformed {
        /// Its message id, for the Reset.
        message_id: u16,
        /// Whether it was confirmable.
        confirmable: bool,
    },
    /// An empty confirmable message: a CoAP ping, answered with a Reset (RFC 7252 4.3).
    #[error("CoAP ping {message_id}")]
    Ping {
        /// Its message id, for the Reset.
        message_id: u16,
    },
    /// A response, an ACK or a Reset: nothing to answer.
    #[error("not a request")]
    NotARequest,
}

/// How the client sent the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Confirmable: answered with an ACK (piggybacked or empty, then a separate response).
    Confirmable,
    /// Non-confirmable: answered with a non-confirmable response.
    NonConfirmable,
}

/// A request as the transport sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// CON or NON.
    pub kind: Kind,
    /// Message id (duplicate detection, the ACK).
    pub message_id: u16,
    /// Token (matches the response to the request).
    pub token: Vec<u8>,
    /// Method.
    pub method: RequestType,
    /// Uri-Path segments joined with `/`, with a leading `/`.
    pub path: String,
    /// The device token of option 2088, if present.
    pub auth_token: Option<String>,
    /// Whether the request is one block of a block-wise transfer (RFC 7959 Block1): its payload
    /// does not fit one datagram, so it is over the size limit.
    pub block_wise: bool,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Decodes one datagram.
pub fn decode(datagram: &[u8]) -> Result<Request, DecodeError> {
    if datagram.len() < 4 || datagram[0] >> 6 != 1 {
        return Err(DecodeError::Garbage);
    }
    let message_id = u16::from_be_bytes([datagram[2], datagram[3]]);
    let confirmable = (datagram[0] >> 4) & 0b11 == 0;
    let packet = Packet::from_bytes(datagram).map_err(|_| DecodeError::Malformed {
        message_id,
        confirmable,
    })?;
    let kind = match packet.header.get_type() {
        MessageType::Confirmable => Kind::Confirmable,
        MessageType::NonConfirmable => Kind::NonConfirmable,
        MessageType::Acknowledgement | MessageType::Reset => return Err(DecodeError::NotARequest),
    };
    let method = match packet.header.code {
        MessageClass::Request(method) => method,
        MessageClass::Empty if kind == Kind::Confirmable => {
            return Err(DecodeError::Ping { message_id });
        }
        _ => return Err(DecodeError::NotARequest),
    };
    let segments: Vec<String> = packet
        .get_option(CoapOption::UriPath)
        .map(|values| {
            values
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let auth_token = packet
        .get_option(CoapOption::Unknown(TOKEN_OPTION))
        .and_then(|values| values.front())
        .map(|v| String::from_utf8_lossy(v).into_owned());
    Ok(Request {
        kind,
        message_id,
        token: packet.get_token().to_vec(),
        method,
        path: format!("/{}", segments.join("/")),
        auth_token,
        block_wise: packet.get_option(CoapOption::Block1).is_some(),
        payload: packet.payload,
    })
}

/// A response to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Response code.
    pub code: ResponseType,
    /// JSON body.
    pub payload: Vec<u8>,
    /// Max-Age in seconds (sent with 4.29: when to retry).
    pub max_age: Option<u32>,
}

fn packet(response: &Response, token: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(response.code);
    p.set_token(token.to_vec());
    if !response.payload.is_empty() {
        p.set_content_format(ContentFormat::ApplicationJSON);
        p.payload = response.payload.clone();
    }
    if let Some(secs) = response.max_age {
        let bytes = secs.to_be_bytes();
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(3);
        p.add_option(CoapOption::MaxAge, bytes[first..].to_vec());
    }
    p
}

fn bytes(p: &Packet) -> Vec<u8> {
    p.to_bytes_unlimited()
        .expect("responses are built from valid parts")
}

/// The piggybacked answer to a request: an ACK with the response for CON, a NON response with
/// `new_message_id` for NON.
pub fn encode_response(request: &Request, response: &Response, new_message_id: u16) -> Vec<u8> {
    let mut p = packet(response, &request.token);
    match request.kind {
        Kind::Confirmable => {
            p.header.set_type(MessageType::Acknowledgement);
            p.header.message_id = request.message_id;
        }
        Kind::NonConfirmable => {
            p.header.set_type(MessageType::NonConfirmable);
            p.header.message_id = new_message_id;
        }
    }
    bytes(&p)
}

/// An empty ACK: the request arrived, its response follows separately.
pub fn encode_empty_ack(message_id: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Acknowledgement);
    p.header.code = MessageClass::Empty;
    p.header.message_id = message_id;
    bytes(&p)
}

/// A separate response (after an empty ACK), non-confirmable, matched by the request's token.
pub fn encode_separate(request: &Request, response: &Response, message_id: u16) -> Vec<u8> {
    let mut p = packet(response, &request.token);
    p.header.set_type(MessageType::NonConfirmable);
    p.header.message_id = message_id;
    bytes(&p)
}

/// A Reset for a malformed confirmable message.
pub fn encode_reset(message_id: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Reset);
    p.header.code = MessageClass::Empty;
    p.header.message_id = message_id;
    bytes(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(kind: MessageType, path: &[&str], token: Option<&str>, body: &[u8]) -> Vec<u8> {
        let mut p = Packet::new();
        p.header.set_type(kind);
        p.header.code = MessageClass::Request(RequestType::Post);
        p.header.message_id = 0x1234;
        p.set_token(vec![7, 8]);
        for s in path {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        if let Some(t) = token {
            p.add_option(CoapOption::Unknown(TOKEN_OPTION), t.as_bytes().to_vec());
        }
        p.payload = body.to_vec();
        p.to_bytes_unlimited().unwrap()
    }

    #[test]
    fn a_publish_decodes_with_its_path_and_token() {
        let bytes = post(
            MessageType::Confirmable,
            &["topic", "pk", "dn", "user", "data"],
            Some("tok"),
            b"{}",
        );
        let r = decode(&bytes).unwrap();
        assert_eq!(r.kind, Kind::Confirmable);
        assert_eq!(r.message_id, 0x1234);
        assert_eq!(r.token, [7, 8]);
        assert_eq!(r.path, "/topic/pk/dn/user/data");
        assert_eq!(r.auth_token.as_deref(), Some("tok"));
        assert_eq!(r.payload, b"{}");
    }

    #[test]
    fn responses_are_piggybacked_on_the_ack_or_sent_non() {
        let request = decode(&post(MessageType::Confirmable, &["auth"], None, b"")).unwrap();
        let response = Response {
            code: ResponseType::TooManyRequests,
            payload: b"{\"code\":1}".to_vec(),
            max_age: Some(3),
        };
        let ack = Packet::from_bytes(&encode_response(&request, &response, 9)).unwrap();
        assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(ack.header.message_id, 0x1234);
        assert_eq!(
            ack.header.code,
            MessageClass::Response(ResponseType::TooManyRequests)
        );
        assert_eq!(ack.get_token(), &[7, 8]);
        assert_eq!(
            ack.get_option(CoapOption::MaxAge).unwrap().front().unwrap(),
            &[3]
        );
        let non = decode(&post(MessageType::NonConfirmable, &["auth"], None, b"")).unwrap();
        let answer = Packet::from_bytes(&encode_response(&non, &response, 9)).unwrap();
        assert_eq!(answer.header.get_type(), MessageType::NonConfirmable);
        assert_eq!(answer.header.message_id, 9);
        let empty = Packet::from_bytes(&encode_empty_ack(5)).unwrap();
        assert_eq!(empty.header.code, MessageClass::Empty);
        assert_eq!(empty.header.message_id, 5);
    }

    #[test]
    fn garbage_and_malformed_messages_are_told_apart() {
        assert_eq!(decode(b"\x00\x01"), Err(DecodeError::Garbage));
        assert_eq!(
            decode(b"\x80\x01\x00\x01"),
            Err(DecodeError::Garbage),
            "version 2"
        );
        // Version 1, CON, token length 9 (invalid).
        assert_eq!(
            decode(b"\x49\x02\x00\x07"),
            Err(DecodeError::Malformed {
                message_id: 7,
                confirmable: true
            })
        );
        let reset = Packet::from_bytes(&encode_reset(7)).unwrap();
        assert_eq!(reset.header.get_type(), MessageType::Reset);
        // An empty CON is a CoAP ping; an empty NON is nothing.
        assert_eq!(
            decode(b"\x40\x00\x00\x08"),
            Err(DecodeError::Ping { message_id: 8 })
        );
        assert_eq!(decode(b"\x50\x00\x00\x08"), Err(DecodeError::NotARequest));
    }
}
