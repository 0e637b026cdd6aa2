//! Device requests to the hub on a device's own topics: property and event posts checked
//! against the thing model, device info and firmware reports, firmware upgrades (pull and
//! progress), remote configuration, topology changes, sub-device registrations and
//! logins, desired property values, service answers, RRPC responses, shadow updates and the
//! time (NTP), each answered as Alink does.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{ClientIdentity, PublishRefusal};
use crate::data::message::{Message, QoS};
use crate::egress::{Confirmation, ForwardError};
use crate::hub::desired::DesiredOp;
use crate::hub::device_info::{self, InfoOp};
use crate::hub::ota::{self, OtaRequest};
use crate::hub::sub_register::RegisterOp;
use crate::hub::subdevices::SessionOp;
use crate::hub::topology::TopoOp;
use crate::hub::{Hub, ntp};
use crate::tsl::ThingModel;

impl Hub {
    /// Handles a device's request to the hub on one of its own topics (boxed by the caller:
    /// most messages are not requests). A QoS 1 post comes back with the storing of its values
    /// to wait for before it is acknowledged. A request parsed from a raw frame
    /// (`raw_answer`) is answered as a raw frame on `up_raw_reply`.
    pub(super) async fn answer_device_request(
        &self,
        identity: &ClientIdentity,
        ((kind, topic, payload, qos), raw_answer): ((DeviceRequest, String, Bytes, QoS), bool),
        now: u64,
    ) -> Result<Option<Confirmation>, PublishRefusal> {
        let mut stored = None;
        if let Some((pk, dn)) = identity.device.as_ref() {
            let reply_topic = || format!("{topic}_reply");
            let answer = match kind {
                DeviceRequest::PropertyPost => {
                    let model = self.model_of(pk);
                    let method = "thing.event.property.post";
                    let (reply, accepted) =
                        post_reply(&payload, method, model.as_deref(), |m, params| {
                            m.check_post(params)
                        });
                    if let Some(params) = accepted {
                        stored = self.keep_history(identity, None, &params, now, qos).await?;
                    }
                    Some((reply_topic(), reply))
                }
                DeviceRequest::EventPost(identifier) => {
                    let model = self.model_of(pk);
                    let method = format!("thing.event.{identifier}.post");
                    let (reply, accepted) =
                        post_reply(&payload, &method, model.as_deref(), |m, params| {
                            m.check_event(&identifier, params)
                        });
                    if let Some(params) = accepted {
                        let event = Some(identifier.as_str());
                        stored = self
                            .keep_history(identity, event, &params, now, qos)
                            .await?;
                    }
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
                DeviceRequest::Ota(op) => Some((
                    reply_topic(),
                    self.ota_request(identity, op, &payload).await,
                )),
                DeviceRequest::ConfigGet => {
                    Some((reply_topic(), self.config_request(identity, &payload).await))
                }
                DeviceRequest::OtaProgress => {
                    self.ota_progress(identity, &payload).await;
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
                    let id = match kind {
                        DeviceRequest::RrpcResponse => topic.rsplit('/').next().map(str::to_owned),
                        DeviceRequest::PropertySetReply => {
                            alink_request(&payload).0.as_str().map(str::to_owned)
                        }
                        _ => crate::topic::rrpc_wrapped(&topic).map(|(id, _)| id.to_owned()),
                    }
                    .unwrap_or_default();
                    let id = id.as_str();
                    if !self.rrpc_response(&identity.key, id, &payload) {
                        self.rrpc_reply_elsewhere(&identity.key, id, &payload).await;
                    }
                    None
                }
                DeviceRequest::Desired(op) => Some((
                    reply_topic(),
                    self.desired_request(identity, op, &payload).await,
                )),
                DeviceRequest::ServiceReply(service) => {
                    self.service_reply(identity, &service, &payload, now)
                        .await
                        .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
                    None
                }
                DeviceRequest::Shadow => {
                    self.shadow_request(&identity.tenant, pk, dn, &payload)
                        .await
                        .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
                    None
                }
            };
            if let Some((mut reply_topic, mut answer)) = answer {
                if raw_answer {
                    let who = (identity.tenant.as_str(), &*identity.key);
                    (reply_topic, answer) = self.raw_answer(who, (pk, dn), answer).await;
                }
                let reply = Message::from_hub(
                    &identity.tenant,
                    reply_topic,
                    answer,
                    qos.min(QoS::AtLeastOnce),
                    now,
                );
                // A post whose values are being stored is answered once they are, as it is
                // acknowledged: what the reply says is then true of the store.
                if let Some(values) = stored.take() {
                    let hub = self.clone();
                    stored = Some(Box::pin(async move {
                        values.await?;
                        hub.accept(reply).await?;
                        Ok(())
                    }));
                } else {
                    self.accept(reply)
                        .await
                        .map_err(|e| PublishRefusal::Unavailable(e.to_string()))?;
                }
            }
        }
        Ok(stored)
    }
}

impl Hub {
    /// Queues an accepted post's values; a QoS 1 post gets their storing to wait for before
    /// it is acknowledged.
    async fn keep_history(
        &self,
        identity: &ClientIdentity,
        event: Option<&str>,
        params: &Map<String, Value>,
        now: u64,
        qos: QoS,
    ) -> Result<Option<Confirmation>, PublishRefusal> {
        let wait = qos != QoS::AtMostOnce;
        let queued = self
            .record_history(identity, event, params, now, wait)
            .await;
        let unavailable = || PublishRefusal::Unavailable("history is not being written".into());
        match queued.ok_or_else(unavailable)? {
            Some(stored) => Ok(Some(Box::pin(async move {
                match stored.await {
                    Ok(true) => Ok(()),
                    _ => Err(ForwardError::NotKept(
                        "the post's values could not be stored".into(),
                    )),
                }
            }))),
            None => Ok(None),
        }
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
    /// `/sys/{pk}/{dn}/thing/service/{service}_reply`: the answer to an asynchronous service
    /// call, kept with it; routed like any message.
    ServiceReply(String),
    /// `/sys/{pk}/{dn}/thing/property/desired/get|delete`: answered on `..._reply`.
    Desired(DesiredOp),
    /// `/shadow/update/{pk}/{dn}`: answered on `/shadow/get/{pk}/{dn}`.
    Shadow,
    /// `/ext/ntp/{pk}/{dn}/request`: answered on `.../response` with the hub's time.
    Ntp,
    /// `/sys/{pk}/{dn}/thing/deviceinfo/update|delete`: answered on `..._reply`.
    DeviceInfo(InfoOp),
    /// `/ota/device/inform/{pk}/{dn}`: the firmware version, recorded (it may end an upgrade);
    /// no answer.
    FirmwareReport,
    /// `/sys/{pk}/{dn}/thing/ota/firmware/get`: answered on `..._reply` with the upgrade waiting.
    Ota(OtaRequest),
    /// `/ota/device/progress/{pk}/{dn}`: an upgrade's progress, recorded; no answer.
    OtaProgress,
    /// `/sys/{pk}/{dn}/thing/config/get`: answered on `..._reply` with the product's
    /// configuration file.
    ConfigGet,
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
        if let Some(suffix) = crate::topic::after_device(topic, "/sys/", pk, dn) {
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
            if let Some(service) = suffix
                .strip_prefix("/thing/service/")
                .and_then(|s| s.strip_suffix("_reply"))
                .filter(|s| !s.is_empty() && !s.contains('/'))
            {
                return Some(DeviceRequest::ServiceReply(service.to_owned()));
            }
            if let Some(op) = InfoOp::from_suffix(suffix) {
                return Some(DeviceRequest::DeviceInfo(op));
            }
            if let Some(op) = DesiredOp::from_suffix(suffix) {
                return Some(DeviceRequest::Desired(op));
            }
            if let Some(op) = RegisterOp::from_suffix(suffix) {
                return Some(DeviceRequest::Register(op));
            }
            if let Some(op) = OtaRequest::from_suffix(suffix) {
                return Some(DeviceRequest::Ota(op));
            }
            if suffix == "/thing/config/get" {
                return Some(DeviceRequest::ConfigGet);
            }
            return TopoOp::from_suffix(suffix).map(DeviceRequest::Topology);
        }
        if crate::topic::after_device(topic, "/shadow/update/", pk, dn) == Some("") {
            return Some(DeviceRequest::Shadow);
        }
        if device_info::is_firmware_report(topic, pk, dn) {
            return Some(DeviceRequest::FirmwareReport);
        }
        if ota::is_progress(topic, pk, dn) {
            return Some(DeviceRequest::OtaProgress);
        }
        if let Some(op) = SessionOp::of(topic, pk, dn) {
            return Some(DeviceRequest::SubSession(op));
        }
        ntp::is_request(topic, pk, dn).then_some(DeviceRequest::Ntp)
    }
}

/// An Alink request's `id` and `params` (`null` each when the payload is not JSON or lacks it).
pub(crate) fn alink_request(payload: &[u8]) -> (Value, Value) {
    let mut request: Value = serde_json::from_slice(payload).unwrap_or_default();
    (request["id"].take(), request["params"].take())
}

/// An Alink answer: `{"id","code","data","message","method","version":"1.0"}`.
pub(crate) fn alink_answer(
    id: &Value,
    code: u16,
    data: Value,
    message: &str,
    method: &str,
) -> Bytes {
    let body = serde_json::json!({
        "id": id, "code": code, "data": data, "message": message, "method": method,
        "version": "1.0",
    });
    Bytes::from(body.to_string())
}

/// Alink reply to a property post (`method` `thing.event.property.post`, checked with
/// [`ThingModel::check_post`]) or an event post (`thing.event.{identifier}.post`, checked with
/// [`ThingModel::check_event`]): code 200, 460 when `params` is not a JSON object, and with a
/// thing model what `check` says (6304 unknown, 6306 wrong type or out of range); with the
/// `params` when they were accepted.
pub(super) fn post_reply(
    payload: &[u8],
    method: &str,
    model: Option<&ThingModel>,
    check: impl FnOnce(&ThingModel, &Map<String, Value>) -> Result<(), (u16, String)>,
) -> (Bytes, Option<Map<String, Value>>) {
    let (id, params) = alink_request(payload);
    let outcome = match (params.as_object(), model) {
        (None, _) => Err((
            460,
            "request parameter error: params must be a JSON object".to_owned(),
        )),
        (Some(params), Some(model)) => check(model, params),
        (Some(_), None) => Ok(()),
    };
    let accepted = outcome.is_ok();
    let (code, message) = outcome.map_or_else(|e| e, |()| (200, "success".to_owned()));
    let reply = alink_answer(&id, code, serde_json::json!({}), &message, method);
    let params = match params {
        Value::Object(params) if accepted => Some(params),
        _ => None,
    };
    (reply, params)
}
