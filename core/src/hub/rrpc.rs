//! Synchronous calls to devices (RRPC) from the business API, in the forms devices answer:
//! `/sys/{pk}/{dn}/rrpc/request/{id}`, the Link SDK's user RRPC and synchronous service calls
//! on `/ext/rrpc/{id}/...`, and property sets answered on `.../property/set_reply`. A call waits here, by (session key, request id), for the device's
//! answer, which the session engine hands over (from another node too).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;

use super::business::Business;
use super::{Hub, HubError, device_session_key};
use crate::data::message::{Message, QoS};
use crate::limits::LimitId;
use crate::topic;

/// RRPC timeouts accepted, ms (seed 000: 8 s at most, the default).
pub const RRPC_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1_000..=8_000;

/// Calls waiting for a device's RRPC response, by (session key, request id).
#[derive(Default)]
pub(crate) struct PendingRrpc {
    calls: Mutex<HashMap<(String, u64), oneshot::Sender<Bytes>>>,
}

impl PendingRrpc {
    fn wait(&self, key: &str, id: u64, answer: oneshot::Sender<Bytes>) {
        let mut calls = self.calls.lock().expect("rrpc lock");
        calls.insert((key.to_owned(), id), answer);
    }

    /// The call waiting for `id` from `key`, no longer waiting.
    fn take(&self, key: &str, id: u64) -> Option<oneshot::Sender<Bytes>> {
        let mut calls = self.calls.lock().expect("rrpc lock");
        calls.remove(&(key.to_owned(), id))
    }
}

/// Which of the device's topics an RRPC call goes on (its answer comes back on the matching one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RrpcForm {
    /// `/sys/{pk}/{dn}/rrpc/request/{id}`, answered on `/sys/{pk}/{dn}/rrpc/response/{id}`.
    Sys,
    /// The Link SDK's user RRPC: `/ext/rrpc/{id}{topic}` to a device that subscribed
    /// `/ext/rrpc/+{topic}`, `topic` one of its own `/{pk}/{dn}/user/...` topics; answered on
    /// the same topic.
    Topic(String),
    /// The Link SDK's synchronous service call: `/ext/rrpc/{id}/sys/{pk}/{dn}/thing/service/
    /// {identifier}`, the payload (the service's input parameters, a JSON object) wrapped in
    /// Alink JSON; answered on the same topic.
    Service(String),
    /// A property set: `/sys/{pk}/{dn}/thing/service/property/set`, the payload (the properties
    /// to set, a JSON object) wrapped in Alink JSON; answered on `..._reply` with the same id.
    PropertySet,
}

/// An Alink request id (property sets, service calls) from the hub's sequence: within 0 to
/// 2147483647, which devices reading ids as uint32 (Alink's range) and parsing scripts reading
/// them as int32 (as Alibaba's samples do) both read back.
pub(crate) fn alink_call_id(seq: u64) -> u64 {
    seq & u64::from(i32::MAX.unsigned_abs())
}

impl RrpcForm {
    /// The form a device of `pk`/`dn` subscribing to `filters` answers: user RRPC on its one
    /// `/ext/rrpc/+/{pk}/{dn}/user/...` filter (the Link SDK's `subscribe_rrpc_topic`), the
    /// `/sys/.../rrpc/request/{id}` form when it subscribed none or that form's own filter
    /// (which a device needs not: `/sys` topics reach it anyway). Several user RRPC topics
    /// and no `/sys` filter leave the choice to the caller.
    pub fn from_filters(pk: &str, dn: &str, filters: &[String]) -> Result<RrpcForm, HubError> {
        let own = format!("/{pk}/{dn}/user/");
        let sys = format!("/sys/{pk}/{dn}/rrpc/request/");
        if filters.iter().any(|f| f.starts_with(&sys)) {
            return Ok(RrpcForm::Sys);
        }
        let mut user: Vec<&str> = filters
            .iter()
            .filter_map(|f| f.strip_prefix("/ext/rrpc/+"))
            .filter(|t| t.starts_with(&own) && !t.contains(['+', '#']))
            .collect();
        user.sort_unstable();
        match user.as_slice() {
            [] => Ok(RrpcForm::Sys),
            [topic] => Ok(RrpcForm::Topic((*topic).to_owned())),
            several => Err(HubError::Invalid(format!(
                "the device subscribed user RRPC on {}: name the one to call in topic",
                several.join(", ")
            ))),
        }
    }

    /// The call id taken from the hub's sequence.
    fn call_id(&self, seq: u64) -> u64 {
        match self {
            RrpcForm::PropertySet | RrpcForm::Service(_) => alink_call_id(seq),
            RrpcForm::Sys | RrpcForm::Topic(_) => seq,
        }
    }

    /// The request's topic and payload for call `id` to device `pk`/`dn`.
    fn request(
        &self,
        pk: &str,
        dn: &str,
        id: u64,
        payload: Bytes,
    ) -> Result<(String, Bytes), HubError> {
        match self {
            RrpcForm::Sys => Ok((format!("/sys/{pk}/{dn}/rrpc/request/{id}"), payload)),
            RrpcForm::Topic(topic) => {
                let own = topic.strip_prefix(&format!("/{pk}/{dn}/user/"));
                if own.is_none_or(str::is_empty) || topic::validate_name(topic).is_err() {
                    return Err(HubError::Invalid(format!(
                        "topic must be one of the device's own /{pk}/{dn}/user/... topics, \
                         without wildcards"
                    )));
                }
                Ok((format!("/ext/rrpc/{id}{topic}"), payload))
            }
            RrpcForm::PropertySet => {
                let params = json_object(&payload, "the properties to set: a JSON object")?;
                let call = serde_json::json!({
                    "id": id.to_string(), "version": "1.0", "params": params,
                    "method": "thing.service.property.set",
                });
                Ok((
                    format!("/sys/{pk}/{dn}/thing/service/property/set"),
                    Bytes::from(call.to_string()),
                ))
            }
            RrpcForm::Service(identifier) => {
                let valid = !identifier.is_empty()
                    && identifier.len() <= 50
                    && identifier
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid {
                    return Err(HubError::Invalid(
                        "service must be a thing-model identifier: 1 to 50 letters, digits or _"
                            .into(),
                    ));
                }
                let params = json_object(
                    &payload,
                    "a service call's payload is its input parameters: a JSON object",
                )?;
                let call = serde_json::json!({
                    "id": id.to_string(), "version": "1.0", "params": params,
                    "method": format!("thing.service.{identifier}"),
                });
                Ok((
                    format!("/ext/rrpc/{id}/sys/{pk}/{dn}/thing/service/{identifier}"),
                    Bytes::from(call.to_string()),
                ))
            }
        }
    }
}

fn json_object(
    payload: &[u8],
    expected: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, HubError> {
    serde_json::from_slice(payload).map_err(|_| HubError::Invalid(expected.to_owned()))
}

/// How an RRPC call ended.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rrpc_code", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RrpcOutcome {
    /// The device answered: its payload.
    Success {
        /// The device's response, as text when it is UTF-8 (base64 otherwise, see `encoding`).
        payload: String,
        /// `base64` when the payload is not UTF-8.
        #[serde(skip_serializing_if = "Option::is_none")]
        encoding: Option<&'static str>,
        /// The request id (the last topic level).
        message_id: String,
    },
    /// The device is connected but did not answer in time.
    Timeout {
        /// The request id.
        message_id: String,
    },
    /// The device is not connected: nothing was sent.
    Offline,
}

impl Hub {
    /// A device's answer to call `id` (on `.../rrpc/response/{id}` or `/ext/rrpc/{id}/...`):
    /// completes the call waiting here for it; false when none does.
    pub(crate) fn rrpc_response(&self, device_key: &str, id: &str, payload: &Bytes) -> bool {
        let Ok(id) = id.parse::<u64>() else {
            return false;
        };
        match self.inner.rrpc.take(device_key, id) {
            Some(tx) => {
                let _ = tx.send(payload.clone());
                true
            }
            None => false,
        }
    }
}

impl Business<'_> {
    /// Calls a device synchronously: publishes the request on the topic `form` names (None: the
    /// form its subscriptions name, [`RrpcForm::from_filters`]) and waits up to `timeout_ms`
    /// (1 to 8 s, L-025) for the device's answer.
    pub async fn rrpc(
        &self,
        (tenant, pk, dn): (&str, &str, &str),
        form: Option<RrpcForm>,
        payload: Bytes,
        timeout_ms: u64,
    ) -> Result<RrpcOutcome, HubError> {
        if !RRPC_TIMEOUT_MS.contains(&timeout_ms) {
            self.hub.inner.stats.limited(LimitId::RrpcTimeout);
            return Err(HubError::Invalid(format!(
                "timeout_ms must be {} to {} (L-025)",
                RRPC_TIMEOUT_MS.start(),
                RRPC_TIMEOUT_MS.end()
            )));
        }
        self.hub.tenant_device(tenant, pk, dn).await?;
        let key = device_session_key(pk, dn);
        let form = match form {
            Some(form) => form,
            None => match self.hub.online_filters(&key).await? {
                Some(filters) => RrpcForm::from_filters(pk, dn, &filters)?,
                None => return Ok(RrpcOutcome::Offline),
            },
        };
        let id = form.call_id(self.hub.next_seq());
        let (request, payload) = form.request(pk, dn, id, payload)?;
        if !self.hub.online_anywhere(&key).await? {
            return Ok(RrpcOutcome::Offline);
        }
        self.admit_downlink(tenant, &key)?;
        let (request, payload) = self
            .hub
            .downlink_form(tenant, (pk, dn), (request, payload))
            .await?;
        let (tx, rx) = oneshot::channel();
        self.hub.inner.rrpc.wait(&key, id, tx);
        let msg = Message::from_hub(tenant, request, payload, QoS::AtMostOnce, self.hub.now_ms());
        let sent = self.hub.accept(msg).await;
        let answer = match sent {
            Ok(_) => tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await,
            Err(e) => {
                self.hub.inner.rrpc.take(&key, id);
                return Err(e.into());
            }
        };
        self.hub.inner.rrpc.take(&key, id);
        let message_id = id.to_string();
        Ok(match answer {
            Ok(Ok(reply)) => {
                let (payload, encoding) = match std::str::from_utf8(&reply) {
                    Ok(text) => (text.to_owned(), None),
                    Err(_) => (
                        base64::engine::general_purpose::STANDARD.encode(&reply),
                        Some("base64"),
                    ),
                };
                RrpcOutcome::Success {
                    payload,
                    encoding,
                    message_id,
                }
            }
            _ => RrpcOutcome::Timeout { message_id },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(filters: &[&str]) -> Result<RrpcForm, HubError> {
        let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        RrpcForm::from_filters("pk", "dn", &filters)
    }

    #[test]
    fn the_form_follows_what_the_device_subscribed() {
        assert_eq!(form(&[]).unwrap(), RrpcForm::Sys);
        assert_eq!(form(&["/pk/dn/user/get"]).unwrap(), RrpcForm::Sys);
        assert_eq!(
            form(&["/pk/dn/user/get", "/ext/rrpc/+/pk/dn/user/cmd"]).unwrap(),
            RrpcForm::Topic("/pk/dn/user/cmd".into())
        );
        // An explicit /sys RRPC subscription says the device speaks that form.
        assert_eq!(
            form(&["/ext/rrpc/+/pk/dn/user/cmd", "/sys/pk/dn/rrpc/request/+"]).unwrap(),
            RrpcForm::Sys
        );
        // Another device's topic, or a wildcard in the wrapped topic, names no call.
        assert_eq!(
            form(&["/ext/rrpc/+/pk/other/user/cmd", "/ext/rrpc/+/pk/dn/user/#"]).unwrap(),
            RrpcForm::Sys
        );
        let several = form(&["/ext/rrpc/+/pk/dn/user/b", "/ext/rrpc/+/pk/dn/user/a"]);
        match several {
            Err(HubError::Invalid(why)) => {
                assert!(why.contains("/pk/dn/user/a, /pk/dn/user/b"), "{why}");
            }
            other => panic!("several user RRPC topics: {other:?}"),
        }
    }
}
