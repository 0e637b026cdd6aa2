//! Time for devices without a clock source, as Alibaba's Link SDK asks for it: a device publishes
//! `{"deviceSendTime":"<ms>"}` on `/ext/ntp/{pk}/{dn}/request` and the hub answers on
//! `/ext/ntp/{pk}/{dn}/response` with `deviceSendTime` echoed, `serverRecvTime` and
//! `serverSendTime` (ms since the epoch, as strings like Alibaba's). The device then takes
//! `(serverRecvTime + serverSendTime + deviceRecvTime - deviceSendTime) / 2` as the time.

use bytes::Bytes;
use serde_json::{Value, json};

/// Whether `topic` is where device `pk`/`dn` asks for the time (checked on every message of a
/// device, so without allocating).
pub(crate) fn is_request(topic: &str, pk: &str, dn: &str) -> bool {
    crate::topic::after_device(topic, "/ext/ntp/", pk, dn) == Some("/request")
}

/// Where the hub answers device `pk`/`dn`.
pub(crate) fn response_topic(pk: &str, dn: &str) -> String {
    format!("/ext/ntp/{pk}/{dn}/response")
}

/// The answer to `request`, received at `received_ms` and sent at `sent_ms`. A request that is
/// not JSON or has no `deviceSendTime` still gets the server's times.
pub(crate) fn answer(request: &[u8], received_ms: u64, sent_ms: u64) -> Bytes {
    let mut answer = json!({
        "serverRecvTime": received_ms.to_string(),
        "serverSendTime": sent_ms.to_string(),
    });
    if let Some(sent) = serde_json::from_slice::<Value>(request)
        .ok()
        .and_then(|v| v.get("deviceSendTime").cloned())
    {
        answer["deviceSendTime"] = sent;
    }
    Bytes::from(answer.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_devices_own_request_topic_is_a_request() {
        assert!(is_request("/ext/ntp/pk/dn/request", "pk", "dn"));
        assert!(!is_request("/ext/ntp/pk/dn/response", "pk", "dn"));
        assert!(!is_request("/ext/ntp/pk/dn2/request", "pk", "dn"));
        assert!(!is_request("/ext/ntp/pk/dn/request/x", "pk", "dn"));
    }

    #[test]
    fn the_answer_echoes_the_device_time_and_gives_the_servers() {
        let a: Value =
            serde_json::from_slice(&answer(br#"{"deviceSendTime":"1571724098000"}"#, 10, 12))
                .unwrap();
        assert_eq!(
            a,
            json!({ "deviceSendTime": "1571724098000", "serverRecvTime": "10",
                    "serverSendTime": "12" })
        );
        let a: Value = serde_json::from_slice(&answer(b"not json", 10, 12)).unwrap();
        assert_eq!(a, json!({ "serverRecvTime": "10", "serverSendTime": "12" }));
    }
}
