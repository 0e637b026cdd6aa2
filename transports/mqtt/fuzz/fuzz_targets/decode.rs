//! Fuzzes the MQTT decoder: any bytes, fed in two pieces split at a fuzzer-chosen point, must
//! decode to packets or a clean error, never a panic or a hang. The first byte picks the split.
#![no_main]

use bytes::BytesMut;
use ironhub_mqtt::codec::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let cut = usize::from(split).min(rest.len());
    let mut codec = Codec::new(64 * 1024);
    let mut buf = BytesMut::new();
    for piece in [&rest[..cut], &rest[cut..]] {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
