//! Device requests to the hub on a device's own topics: property and event posts checked
//! against the thing model, device info and firmware reports, topology changes, sub-device registrations and
//! logins, RRPC responses, shadow updates and the
//! time (NTP), each answered as Alink does.

use bytes::Bytes;

use super::{ClientIdentity, PublishRefusal};
use crate::data::message::{Message, QoS};
use crate::hub::device_info::{self, InfoOp};
use crate::hub::sub_register::RegisterOp;
use crate::hub::subdevices::SessionOp;
use crate::hub::topology::TopoOp;
use crate::hub::{Hub, ntp};

impl Hub {
    /// Handles a device's request to the hub on one of its own topics (boxed by the caller:
    /// most messages are not requests).
    pub(super) async fn answer_device_request(
        &self,
        identity: &ClientIdentity,
        (kind, topic, payload, qos): (DeviceRequest, String, Bytes, QoS),
        now: u64,
    ) -> Result<(), PublishRefusal> {
        if let Some((pk, dn)) = identity.device.as_ref() {
            let reply_topic = || format!("{topic}_reply");
            let answer = match kind {
                DeviceRequest::PropertyPost => {
                    let model = self.model_of(pk);
                    Some((reply_topic(), alink_reply(&payload, model.as_deref())))
                }
                DeviceRequest::EventPost(identifier) => {
                    let model = self.model_of(pk);
                    let reply = event_reply(&identifier, &payload, model.as_deref());
                    Some((reply_topic(), reply))
                }
                DeviceRequest::Topology(op) => Some((
                    reply_topic(),
                    self.topology_request((pk, dn), op, &payload).await,
                )),
                DeviceRequest::DeviceInfo(op) => Some((
                    reply_topic(),
                    self.device_info_request(identity, op, &payload).await,
                )),
                DeviceRequest::FirmwareReport => {
                    self.firmware_report(identity, &payload).await;
                    None
                }
                DeviceRequest::Register(op) => Some((
                    reply_topic(),
                    self.sub_register_request(identity, op, &payload).await,
                )),
                DeviceRequest::SubSession(op) => Some((
                    reply_topic(),
                    self.sub_session_request(identity, op, &payload).await,
                )),
                DeviceRequest::Ntp => Some((
                    ntp::response_topic(pk, dn),
                    ntp::answer(&payload, now, self.now_ms()),
                )),
                DeviceRequest::RrpcResponse
                | DeviceRequest::ExtRrpcResponse
                | DeviceRequest::PropertySetReply => {
                    let alink_id = || {
                        let reply: serde_json::Value =
                            serde_json::from_slice(&payload).unwrap_or_default();
                        reply["id"].as_str().unwrap_or_default().to_owned()
                    };
                    let id = match kind {
                        DeviceRequest::RrpcResponse => topic.rsplit('/').next().map(str::to_owned),
                        DeviceRequest::PropertySetReply => Some(alink_id()),
                        _ => crate::topic::rrpc_wrapped(&topic).map(|(id, _)| id.to_owned()),
                    }
                    .unwrap_or_default();
                    let id = id.as_str();
                    if !self.rrpc_response(&identity.key, id, &payload) {
                        self.rrpc_reply_elsewhere(&identity.key, id, &payload).await;
                    }
                    None
                }
                DeviceRequest::Shadow => {
                    self.shadow_request(&identity.tenant, pk, dn, &payload)
                        .await
                        .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
                    None
                }
            };
            if let Some((reply_topic, answer)) = answer {
                let reply = Message::from_hub(
                    &identity.tenant,
                    reply_topic,
                    answer,
                    qos.min(QoS::AtLeastOnce),
                    now,
                );
                self.accept(reply)
                    .await
                    .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// The Alink topic of property posts, answered on `..._reply`.
pub(super) const PROPERTY_POST: &str = "/thing/event/property/post";

/// What a device asks of the hub by publishing on one of its own topics.
pub(super) enum DeviceRequest {
    /// `/sys/{pk}/{dn}/thing/event/property/post`: answered on `..._reply` (checked by the TSL).
    PropertyPost,
    /// `/sys/{pk}/{dn}/thing/event/{identifier}/post`: answered on `..._reply` (checked by the
    /// TSL).
    EventPost(String),
    /// `/sys/{pk}/{dn}/thing/topo/add|delete|get`: answered on `..._reply`.
    Topology(TopoOp),
    /// `/sys/{pk}/{dn}/rrpc/response/{id}`: completes the RRPC call waiting for it.
    RrpcResponse,
    /// `/sys/{pk}/{dn}/thing/service/property/set_reply`: completes the property set waiting
    /// for it (by its Alink id), and is routed like any message.
    PropertySetReply,
    /// `/shadow/update/{pk}/{dn}`: answered on `/shadow/get/{pk}/{dn}`.
    Shadow,
    /// `/ext/ntp/{pk}/{dn}/request`: answered on `.../response` with the hub's time.
    Ntp,
    /// `/sys/{pk}/{dn}/thing/deviceinfo/update|delete`: answered on `..._reply`.
    DeviceInfo(InfoOp),
    /// `/ota/device/inform/{pk}/{dn}`: the firmware version, recorded; no answer.
    FirmwareReport,
    /// `/sys/{pk}/{dn}/thing/sub/register` or `.../thing/proxy/provisioning/product_register`
    /// of a gateway: answered on `..._reply`.
    Register(RegisterOp),
    /// `/ext/session/{pk}/{dn}/combine/login|batch_login|logout|batch_logout` of a gateway:
    /// answered on `..._reply`.
    SubSession(SessionOp),
    /// `/ext/rrpc/{id}/...` (the Link SDK's RRPC answer, on the topic of the request): completes
    /// the call waiting for it, and goes nowhere else.
    ExtRrpcResponse,
}

impl DeviceRequest {
    /// Whether the message is also routed like any other (an RRPC answer on the request's own
    /// topic is not: it would reach the device itself through the subscription that brought the
    /// request).
    pub(super) fn is_routed(&self) -> bool {
        !matches!(self, DeviceRequest::ExtRrpcResponse)
    }

    /// The request a device `pk`/`dn` makes by publishing on `topic`, if any (the ACL has
    /// checked that the topic is the device's own).
    pub(super) fn of(topic: &str, pk: &str, dn: &str) -> Option<DeviceRequest> {
        if crate::topic::rrpc_wrapped(topic).is_some() {
            return Some(DeviceRequest::ExtRrpcResponse);
        }
        if let Some(suffix) = topic
            .strip_prefix("/sys/")
            .and_then(|t| t.strip_prefix(pk))
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_prefix(dn))
        {
            if suffix == PROPERTY_POST {
                return Some(DeviceRequest::PropertyPost);
            }
            if let Some(identifier) = suffix
                .strip_prefix("/thing/event/")
                .and_then(|s| s.strip_suffix("/post"))
                .filter(|i| !i.is_empty() && !i.contains('/'))
            {
                return Some(DeviceRequest::EventPost(identifier.to_owned()));
            }
            if suffix.starts_with("/rrpc/response/") {
                return Some(DeviceRequest::RrpcResponse);
            }
            if suffix == "/thing/service/property/set_reply" {
                return Some(DeviceRequest::PropertySetReply);
            }
            if let Some(op) = InfoOp::from_suffix(suffix) {
                return Some(DeviceRequest::DeviceInfo(op));
            }
            if let Some(op) = RegisterOp::from_suffix(suffix) {
                return Some(DeviceRequest::Register(op));
            }
            return TopoOp::from_suffix(suffix).map(DeviceRequest::Topology);
        }
        let shadow = topic
            .strip_prefix("/shadow/update/")
            .and_then(|t| t.strip_prefix(pk))
            .and_then(|t| t.strip_prefix('/'))
            == Some(dn);
        if shadow {
            return Some(DeviceRequest::Shadow);
        }
        if device_info::is_firmware_report(topic, pk, dn) {
            return Some(DeviceRequest::FirmwareReport);
        }
        if let Some(op) = SessionOp::of(topic, pk, dn) {
            return Some(DeviceRequest::SubSession(op));
        }
        ntp::is_request(topic, pk, dn).then_some(DeviceRequest::Ntp)
    }
}

/// Alink reply to an event post on `/thing/event/{identifier}/post`: code 200, 460 when the
/// payload is not Alink JSON with `params.value`, and with a thing model 6304 (unknown event or
/// parameter) or 6306 (wrong type or out of range).
pub(super) fn event_reply(
    identifier: &str,
    payload: &[u8],
    model: Option<&crate::tsl::ThingModel>,
) -> Bytes {
    let request: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let params = request.get("params").and_then(|p| p.as_object());
    let outcome = match (params, model) {
        (None, _) => Err((
            460,
            "request parameter error: params must be a JSON object".to_owned(),
        )),
        (Some(params), Some(model)) => model.check_event(identifier, params),
        (Some(_), None) => Ok(()),
    };
    let (code, message) = outcome.map_or_else(|e| e, |()| (200, "success".to_owned()));
    let reply = serde_json::json!({
        "id": request.get("id").cloned().unwrap_or_default(), "code": code, "data": {},
        "message": message, "method": format!("thing.event.{identifier}.post"), "version": "1.0",
    });
    Bytes::from(reply.to_string())
}

/// Alink reply to a property post: `{"id","code","data","message","method","version"}`. Code 200
/// on success, 460 (request parameter error) when the payload is not Alink JSON, and with a
/// thing model 6304 (unknown property) or 6306 (wrong type or out of range).
pub(super) fn alink_reply(payload: &[u8], model: Option<&crate::tsl::ThingModel>) -> Bytes {
    let request: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    let id = request
        .as_ref()
        .and_then(|v| v.get("id"))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let params = request
        .as_ref()
        .and_then(|v| v.get("params"))
        .and_then(|p| p.as_object());
    let outcome = match (params, model) {
        (None, _) => Err((
            460,
            "request parameter error: params must be a JSON object".to_owned(),
        )),
        (Some(params), Some(model)) => model.check_post(params),
        (Some(_), None) => Ok(()),
    };
    let (code, message) = match outcome {
        Ok(()) => (200, "success".to_owned()),
        Err(e) => e,
    };
    let reply = serde_json::json!({
        "id": id, "code": code, "data": {}, "message": message,
        "method": "thing.event.property.post", "version": "1.0",
    });
    Bytes::from(reply.to_string())
}
