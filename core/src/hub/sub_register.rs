//! Sub-device registration through a gateway, answered on `..._reply` of the gateway's topics:
//! `/sys/{pk}/{dn}/thing/sub/register` (the gateway names sub-devices and receives their
//! DeviceSecrets, creating those that do not exist yet) and
//! `/sys/{pk}/{dn}/thing/proxy/provisioning/product_register` (each sub-device proven with its
//! product's ProductSecret, as a device's own dynamic registration is). Either needs the
//! sub-devices' product to allow dynamic registration. A request succeeds or fails whole.

use bytes::Bytes;
use serde_json::{Value, json};

use super::session::{ClientIdentity, alink_answer, alink_request};
use super::{Hub, HubError, device_session_key};
use crate::auth::{self, SignMethod};
use crate::data::model::{Device, NodeType};
use crate::limits::LimitKind;

/// A registration request of a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegisterOp {
    /// `thing/sub/register`.
    Sub,
    /// `thing/proxy/provisioning/product_register`.
    Product,
}

impl RegisterOp {
    /// The request of a `/sys/{pk}/{dn}` topic suffix, if it is one.
    pub(crate) fn from_suffix(suffix: &str) -> Option<RegisterOp> {
        match suffix {
            "/thing/sub/register" => Some(RegisterOp::Sub),
            "/thing/proxy/provisioning/product_register" => Some(RegisterOp::Product),
            _ => None,
        }
    }

    fn method(self) -> &'static str {
        match self {
            RegisterOp::Sub => "thing.sub.register",
            RegisterOp::Product => "thing.proxy.provisioning.product_register",
        }
    }
}

/// Alink answer codes of registration requests (docs/protocols/mqtt.md, "Sub-devices").
mod code {
    pub const OK: u16 = 200;
    pub const FORBIDDEN: u16 = 403;
    pub const ALREADY_ACTIVE: u16 = 409;
    pub const TOO_MANY_REQUESTS: u16 = 429;
    pub const BAD_REQUEST: u16 = 460;
    pub const UNAVAILABLE: u16 = 500;
    pub const NOT_FOUND: u16 = 6100;
    pub const BAD_SIGNATURE: u16 = 6206;
    pub const NOT_A_SUB_DEVICE: u16 = 6402;
}

/// A refused request: its code, what it says, and the entry it is about.
struct Refusal(u16, String, Value);

fn refusal(code: u16, message: impl Into<String>) -> Refusal {
    Refusal(code, message.into(), Value::Null)
}

fn of_hub_error(e: HubError) -> Refusal {
    let code = match &e {
        HubError::Limited { limited, .. } if limited.limit.kind() == LimitKind::Rate => {
            code::TOO_MANY_REQUESTS
        }
        HubError::Limited { .. } => code::FORBIDDEN,
        HubError::NotFound { .. } => code::NOT_FOUND,
        HubError::Invalid(_) => code::BAD_REQUEST,
        _ => code::UNAVAILABLE,
    };
    refusal(code, e.to_string())
}

impl Hub {
    /// Answers a gateway's registration request (the reply's payload).
    pub(crate) async fn sub_register_request(
        &self,
        gateway: &ClientIdentity,
        op: RegisterOp,
        payload: &[u8],
    ) -> Bytes {
        let (id, params) = alink_request(payload);
        let entries = match (op, &params) {
            (RegisterOp::Sub, Value::Array(list)) => Some(list.clone()),
            (RegisterOp::Product, p) => p.get("proxieds").and_then(Value::as_array).cloned(),
            _ => None,
        };
        let outcome = match entries.filter(|l| !l.is_empty()) {
            Some(list) => self.register_subs(gateway, op, &list).await,
            None => Err(refusal(code::BAD_REQUEST, "no sub-device in the request")),
        };
        let (code, data, message) = match outcome {
            Ok(done) if op == RegisterOp::Product => {
                (code::OK, json!({ "proxieds": done }), "success".to_owned())
            }
            Ok(done) => (code::OK, Value::Array(done), "success".to_owned()),
            Err(Refusal(code, message, about)) => (code, json!([about]), message),
        };
        alink_answer(&id, code, data, &message, op.method())
    }

    async fn register_subs(
        &self,
        gateway: &ClientIdentity,
        op: RegisterOp,
        list: &[Value],
    ) -> Result<Vec<Value>, Refusal> {
        let Some((gw_pk, gw_dn)) = gateway.device.as_ref() else {
            return Err(refusal(
                code::BAD_REQUEST,
                "only a device registers sub-devices",
            ));
        };
        let gateway_product = self.registry().product(gw_pk).await.map_err(of_hub_error)?;
        if gateway_product.node_type != NodeType::Gateway {
            let message = "only a device of a gateway product registers sub-devices";
            return Err(refusal(code::NOT_A_SUB_DEVICE, message));
        }
        // Every entry is checked before any device is made: the request succeeds or fails whole.
        let mut checked = Vec::with_capacity(list.len());
        for entry in list {
            let text = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
            let (pk, dn) = (text("productKey"), text("deviceName"));
            let about = json!({ "productKey": pk, "deviceName": dn });
            let checked_entry = self
                .check_registration(gateway, (gw_pk, gw_dn), op, entry)
                .await
                .map_err(|Refusal(code, message, _)| Refusal(code, message, about))?;
            checked.push(checked_entry);
        }
        let mut done = Vec::with_capacity(checked.len());
        for (pk, dn, existing) in checked {
            let device = match existing {
                Some(d) => d,
                None => self
                    .registry()
                    .create_device(&pk, Some(&dn))
                    .await
                    .map_err(of_hub_error)?,
            };
            done.push(json!({
                "iotId": format!("{pk}/{dn}"), "productKey": pk, "deviceName": dn,
                "deviceSecret": device.device_secret,
            }));
        }
        Ok(done)
    }

    /// Checks one entry; returns its names and the device when it exists already.
    async fn check_registration(
        &self,
        gateway: &ClientIdentity,
        gateway_names: (&str, &str),
        op: RegisterOp,
        entry: &Value,
    ) -> Result<(String, String, Option<Device>), Refusal> {
        let text = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
        let (pk, dn) = (text("productKey"), text("deviceName"));
        if pk.is_empty() || dn.is_empty() {
            let message = "each sub-device needs productKey and deviceName";
            return Err(refusal(code::BAD_REQUEST, message));
        }
        if (pk, dn) == gateway_names {
            return Err(refusal(
                code::NOT_A_SUB_DEVICE,
                "a gateway cannot be its own sub-device",
            ));
        }
        let product = self
            .registry()
            .product(pk)
            .await
            .ok()
            .filter(|p| p.tenant == gateway.tenant)
            .ok_or_else(|| refusal(code::NOT_FOUND, format!("product {pk} not found")))?;
        if product.node_type == NodeType::Gateway {
            return Err(refusal(
                code::NOT_A_SUB_DEVICE,
                "a gateway cannot be a sub-device",
            ));
        }
        if op == RegisterOp::Product {
            let method = SignMethod::parse(text("signMethod")).ok_or_else(|| {
                refusal(
                    code::BAD_REQUEST,
                    "signMethod must be hmacSha256, hmacSha1 or hmacMd5",
                )
            })?;
            let expected =
                auth::register_password(method, &product.product_secret, dn, pk, text("random"));
            if text("random").is_empty()
                || !auth::signature_matches(&expected, text("sign").as_bytes())
            {
                return Err(refusal(code::BAD_SIGNATURE, "signature mismatch"));
            }
        }
        if !product.dynamic_registration {
            let message = format!("dynamic registration is off for product {pk}");
            return Err(refusal(code::FORBIDDEN, message));
        }
        let existing = self
            .device_record(pk, dn)
            .await
            .map_err(|e| refusal(code::UNAVAILABLE, e.to_string()))?;
        // Activations are written in batches: a device online now is active already.
        let active = match &existing {
            Some(device) if device.activated => true,
            Some(_) => self
                .online_anywhere(&device_session_key(pk, dn))
                .await
                .map_err(|e| refusal(code::UNAVAILABLE, e.to_string()))?,
            None => false,
        };
        if active {
            // Its secret goes only to the gateway that carries it already.
            let parent = self
                .gateway_of((pk, dn))
                .await
                .map_err(|e| refusal(code::UNAVAILABLE, e.to_string()))?;
            let ours = parent
                .as_ref()
                .is_some_and(|(p, d)| (p.as_str(), d.as_str()) == gateway_names);
            if !ours {
                let message = "device is already activated (and is not this gateway's)";
                return Err(refusal(code::ALREADY_ACTIVE, message));
            }
        }
        Ok((pk.to_owned(), dn.to_owned(), existing))
    }
}
