//! Gateway topology: which sub-devices a gateway carries, managed by the gateway over Alink
//! (`/sys/{pk}/{dn}/thing/topo/add|delete|get`, answered on `..._reply`) or through the admin API.
//! Every change is a `topology` notification to the consumer groups of the gateway's product.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::session::{alink_answer, alink_request};
use super::{Hub, HubError, device_session_key};
use crate::auth::{self, SignMethod};
use crate::data::event::Event;
use crate::data::model::NodeType;
use crate::limits::LimitId;
use crate::store::{StoreError, records, transact};

/// A sub-device of a gateway.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SubDevice {
    /// ProductKey.
    #[serde(rename = "productKey")]
    pub product_key: String,
    /// DeviceName.
    #[serde(rename = "deviceName")]
    pub device_name: String,
    /// Whether it is online (through this gateway or by itself).
    pub online: bool,
}

/// An Alink topology request a gateway can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopoOp {
    Add,
    Delete,
    Get,
}

impl TopoOp {
    /// The request of a `/sys/{pk}/{dn}` topic suffix, if it is one.
    pub(crate) fn from_suffix(suffix: &str) -> Option<TopoOp> {
        match suffix {
            "/thing/topo/add" => Some(TopoOp::Add),
            "/thing/topo/delete" => Some(TopoOp::Delete),
            "/thing/topo/get" => Some(TopoOp::Get),
            _ => None,
        }
    }

    fn method(self) -> &'static str {
        match self {
            TopoOp::Add => "thing.topo.add",
            TopoOp::Delete => "thing.topo.delete",
            TopoOp::Get => "thing.topo.get",
        }
    }
}

/// Alink answer codes for topology requests (docs/protocols/mqtt.md).
mod code {
    pub const OK: u16 = 200;
    pub const BAD_REQUEST: u16 = 460;
    pub const NOT_FOUND: u16 = 6100;
    pub const OVER_LIMIT: u16 = 6203;
    pub const BAD_SIGNATURE: u16 = 6206;
    pub const WRONG_NODE_TYPE: u16 = 6401;
}

fn reply(id: &Value, op: TopoOp, code: u16, data: Value, message: &str) -> Bytes {
    alink_answer(id, code, data, message, op.method())
}

/// Why a topology change was refused, with its Alink code.
fn alink_code(e: &HubError) -> u16 {
    match e {
        HubError::NotFound { .. } => code::NOT_FOUND,
        HubError::Limited { .. } => code::OVER_LIMIT,
        HubError::Conflict(_) => code::WRONG_NODE_TYPE,
        _ => code::BAD_REQUEST,
    }
}

impl Hub {
    /// Answers a gateway's Alink topology request (the reply's payload).
    pub(crate) async fn topology_request(
        &self,
        gateway: (&str, &str),
        op: TopoOp,
        payload: &[u8],
    ) -> Bytes {
        let (id, params) = alink_request(payload);
        let entries: Vec<&Value> = match (&params, op) {
            (Value::Array(a), _) => a.iter().collect(),
            (Value::Object(_), TopoOp::Get) | (Value::Null, TopoOp::Get) => Vec::new(),
            (Value::Object(_), _) => vec![&params],
            _ => {
                return reply(
                    &id,
                    op,
                    code::BAD_REQUEST,
                    json!({}),
                    "params must be a list",
                );
            }
        };
        if op == TopoOp::Get {
            return match self.topology().list(gateway.0, gateway.1).await {
                Ok(list) => reply(&id, op, code::OK, json!(list), "success"),
                Err(e) => reply(&id, op, alink_code(&e), json!({}), &e.to_string()),
            };
        }
        let mut done = Vec::new();
        for entry in entries {
            let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
            let sub = (field("productKey"), field("deviceName"));
            if sub.0.is_empty() || sub.1.is_empty() {
                let message = "each entry needs productKey and deviceName";
                return reply(&id, op, code::BAD_REQUEST, json!(done), message);
            }
            let outcome = match op {
                TopoOp::Add => match self.check_sub_device_signature(sub, entry).await {
                    Ok(()) => self.topology().attach(gateway, sub).await,
                    Err(c) => {
                        let message = "sub-device signature mismatch";
                        return reply(&id, op, c, json!(done), message);
                    }
                },
                _ => self.topology().detach(gateway, sub).await,
            };
            if let Err(e) = outcome {
                return reply(&id, op, alink_code(&e), json!(done), &e.to_string());
            }
            done.push(json!({ "productKey": sub.0, "deviceName": sub.1 }));
        }
        reply(&id, op, code::OK, json!(done), "success")
    }

    /// A topo/add entry proves the gateway holds the sub-device's secret: `sign` is the HMAC of
    /// clientId, deviceName, productKey and timestamp, as for the sub-device's own MQTT login.
    async fn check_sub_device_signature(
        &self,
        sub: (&str, &str),
        entry: &Value,
    ) -> Result<(), u16> {
        let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
        // The Python Link SDK names the key `signmethod`, Alibaba's documentation `signMethod`.
        let method = [field("signMethod"), field("signmethod")]
            .into_iter()
            .find_map(SignMethod::parse)
            .ok_or(code::BAD_REQUEST)?;
        let device = self
            .device_record(sub.0, sub.1)
            .await
            .map_err(|_| code::BAD_REQUEST)?
            .ok_or(code::NOT_FOUND)?;
        let timestamp = Some(field("timestamp")).filter(|t| !t.is_empty());
        let expected = auth::mqtt_password(
            method,
            &device.device_secret,
            field("clientId"),
            sub.1,
            sub.0,
            timestamp,
        );
        if auth::signature_matches(&expected, field("sign").as_bytes()) {
            Ok(())
        } else {
            Err(code::BAD_SIGNATURE)
        }
    }

    /// Removes a deleted device from the topology, as a gateway or as a sub-device.
    pub(crate) async fn forget_topology(
        &self,
        tenant: &str,
        pk: &str,
        dn: &str,
    ) -> Result<(), HubError> {
        let me = (pk.to_owned(), dn.to_owned());
        let (subs, gateway) = transact(&**self.store(), |t| {
            let me = me.clone();
            Box::pin(async move {
                let me = (me.0.as_str(), me.1.as_str());
                let subs = records::list_sub_devices(t, me, 0).await?;
                for s in &subs {
                    records::delete_topology(t, me, (&s.0, &s.1));
                }
                let gateway = records::gateway_of(t, me).await?;
                if let Some(g) = &gateway {
                    records::delete_topology(t, (&g.0, &g.1), me);
                }
                Ok((subs, gateway))
            })
        })
        .await?;
        if !subs.is_empty() {
            self.notify_topology(tenant, (pk, dn), "remove", &subs);
        }
        if let Some(g) = gateway {
            self.notify_topology(tenant, (&g.0, &g.1), "remove", &[me]);
        }
        Ok(())
    }

    /// The gateway a sub-device is attached to, if any.
    pub(crate) async fn gateway_of(
        &self,
        sub: (&str, &str),
    ) -> Result<Option<(String, String)>, StoreError> {
        let sub = owned(sub);
        transact(&**self.store(), |t| {
            let sub = sub.clone();
            Box::pin(async move { records::gateway_of(t, (&sub.0, &sub.1)).await })
        })
        .await
    }

    fn notify_topology(
        &self,
        tenant: &str,
        gateway: (&str, &str),
        action: &str,
        devices: &[(String, String)],
    ) {
        self.notify_groups(gateway.0, |id, now| {
            Event::topology(id, tenant, gateway, action, devices, now)
        });
    }
}

fn owned(d: (&str, &str)) -> (String, String) {
    (d.0.to_owned(), d.1.to_owned())
}

/// Gateways and their sub-devices.
#[derive(Clone, Copy)]
pub struct Topology<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Gateways and their sub-devices.
    pub fn topology(&self) -> Topology<'_> {
        Topology { hub: self }
    }
}

impl Topology<'_> {
    /// Attaches `sub` to `gateway` (L-004). A sub-device has one gateway: attaching it to another
    /// detaches it from the first.
    pub async fn attach(&self, gateway: (&str, &str), sub: (&str, &str)) -> Result<(), HubError> {
        let tenant = self.check_topology(gateway, sub).await?;
        let max = self
            .hub
            .profile_of(&tenant)
            .entities
            .sub_devices_per_gateway;
        let (gw, sd) = (owned(gateway), owned(sub));
        let outcome = transact(&**self.hub.store(), |t| {
            let (gw, sd) = (gw.clone(), sd.clone());
            Box::pin(async move {
                let gw = (gw.0.as_str(), gw.1.as_str());
                let sd = (sd.0.as_str(), sd.1.as_str());
                let previous = records::gateway_of(t, sd).await?;
                if previous
                    .as_ref()
                    .is_some_and(|p| (p.0.as_str(), p.1.as_str()) == gw)
                {
                    return Ok(Ok(None));
                }
                let limit = if max > 0 { max as usize + 1 } else { 0 };
                let count = records::list_sub_devices(t, gw, limit).await?.len() as u64;
                if max > 0 && count >= max {
                    return Ok(Err(()));
                }
                if let Some(p) = &previous {
                    records::delete_topology(t, (&p.0, &p.1), sd);
                }
                records::put_topology(t, gw, sd);
                Ok(Ok(Some(previous)))
            })
        })
        .await?;
        let previous = match outcome {
            Err(()) => {
                return Err(self.hub.limited(
                    LimitId::SubDevicesPerGateway,
                    format!("at most {max} sub-devices per gateway"),
                ));
            }
            Ok(None) => return Ok(()),
            Ok(Some(previous)) => previous,
        };
        let devices = [owned(sub)];
        if let Some(p) = previous {
            if let Some(link) = self.hub.link_of(&device_session_key(&p.0, &p.1)) {
                let key = device_session_key(sub.0, sub.1);
                self.hub.close_sub_session(&link, &key).await;
            }
            self.hub
                .notify_topology(&tenant, (&p.0, &p.1), "remove", &devices);
        }
        self.hub.notify_topology(&tenant, gateway, "add", &devices);
        Ok(())
    }

    /// Detaches `sub` from `gateway`.
    pub async fn detach(&self, gateway: (&str, &str), sub: (&str, &str)) -> Result<(), HubError> {
        let gw = self.hub.registry().device(gateway.0, gateway.1).await?;
        let (g, sd) = (owned(gateway), owned(sub));
        let removed = transact(&**self.hub.store(), |t| {
            let (g, sd) = (g.clone(), sd.clone());
            Box::pin(async move {
                let sdr = (sd.0.as_str(), sd.1.as_str());
                let current = records::gateway_of(t, sdr).await?;
                if current.as_ref() != Some(&g) {
                    return Ok(false);
                }
                records::delete_topology(t, (&g.0, &g.1), sdr);
                Ok(true)
            })
        })
        .await?;
        if !removed {
            return Err(HubError::NotFound {
                what: "sub-device of this gateway",
                id: format!("{}/{}", sub.0, sub.1),
            });
        }
        // Without its topology a sub-device cannot stay online through the gateway.
        if let Some(link) = self.hub.link_of(&device_session_key(gateway.0, gateway.1)) {
            let key = device_session_key(sub.0, sub.1);
            self.hub.close_sub_session(&link, &key).await;
        }
        self.hub
            .notify_topology(&gw.tenant, gateway, "remove", &[owned(sub)]);
        Ok(())
    }

    /// Attaches `sub` to `gateway` from the cloud side (the admin API): as [`Topology::attach`],
    /// and the gateway hears of it on `/thing/topo/change` (status 0), as on Alibaba.
    pub async fn attach_from_cloud(
        &self,
        gateway: (&str, &str),
        sub: (&str, &str),
    ) -> Result<(), HubError> {
        self.attach(gateway, sub).await?;
        self.tell_gateway(gateway, sub, 0).await
    }

    /// Detaches `sub` from `gateway` from the cloud side: as [`Topology::detach`] (a sub-device
    /// online through it is logged out), and the gateway hears of it (status 1).
    pub async fn detach_from_cloud(
        &self,
        gateway: (&str, &str),
        sub: (&str, &str),
    ) -> Result<(), HubError> {
        self.detach(gateway, sub).await?;
        self.tell_gateway(gateway, sub, 1).await
    }

    async fn tell_gateway(
        &self,
        gateway: (&str, &str),
        sub: (&str, &str),
        status: u8,
    ) -> Result<(), HubError> {
        let tenant = self
            .hub
            .registry()
            .device(gateway.0, gateway.1)
            .await?
            .tenant;
        self.hub
            .topo_change_notice(&tenant, gateway, sub, status)
            .await;
        Ok(())
    }

    /// A gateway's sub-devices.
    pub async fn list(&self, pk: &str, dn: &str) -> Result<Vec<SubDevice>, HubError> {
        self.hub.registry().device(pk, dn).await?;
        let gw = (pk.to_owned(), dn.to_owned());
        let list = transact(&**self.hub.store(), |t| {
            let gw = gw.clone();
            Box::pin(async move { records::list_sub_devices(t, (&gw.0, &gw.1), 0).await })
        })
        .await?;
        let mut subs = Vec::with_capacity(list.len());
        for (product_key, device_name) in list {
            let key = device_session_key(&product_key, &device_name);
            subs.push(SubDevice {
                online: self.hub.online_anywhere(&key).await?,
                product_key,
                device_name,
            });
        }
        Ok(subs)
    }

    /// Checks that `gateway` is a device of a gateway product and `sub` a plain device of the
    /// same tenant; returns the tenant.
    async fn check_topology(
        &self,
        gateway: (&str, &str),
        sub: (&str, &str),
    ) -> Result<String, HubError> {
        let gw = self.hub.registry().device(gateway.0, gateway.1).await?;
        if self.hub.registry().product(gateway.0).await?.node_type != NodeType::Gateway {
            return Err(HubError::Conflict(format!(
                "{}/{} is not a gateway (its product's node_type is device)",
                gateway.0, gateway.1
            )));
        }
        let sub_device = self.hub.registry().device(sub.0, sub.1).await?;
        if sub_device.tenant != gw.tenant {
            return Err(HubError::NotFound {
                what: "device",
                id: format!("{}/{}", sub.0, sub.1),
            });
        }
        if self.hub.registry().product(sub.0).await?.node_type == NodeType::Gateway {
            return Err(HubError::Conflict(
                "a gateway cannot be a sub-device".into(),
            ));
        }
        Ok(gw.tenant)
    }
}
