//! Fuzzes the CoAP decoder: any datagram must decode to a request or a clean error, never a
//! panic; a decoded request must be answerable (the response encodes).
#![no_main]

use ironhub_coap::codec::{self, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = codec::decode(data) {
        let response = Response {
            code: codec::ResponseCode::Content,
            payload: request.payload.clone(),
            max_age: Some(1),
        };
        let _ = codec::encode_response(&request, &response, 1);
        let _ = codec::encode_separate(&request, &response, 2);
    }
});
