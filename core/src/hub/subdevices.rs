//! Sub-devices online through their gateway: the Alink session requests a gateway makes on
//! `/ext/session/{pk}/{dn}/combine/login|batch_login|logout|batch_logout` (the gateway's own
//! names in the topic, the sub-devices' in the payload), answered on `..._reply`, and the
//! `/thing/topo/change` notice a gateway gets when one of its sub-devices is disabled, enabled
//! or deleted. The sessions themselves are in `session::gateway`.
//!
//! A batch succeeds or fails whole, as on Alibaba: every entry is checked (fields, topology,
//! signature, the device enabled, the limits) before any sub-device comes online; a refusal's
//! `data` lists the entries it is about.

use bytes::Bytes;
use serde_json::{Value, json};

use super::session::{ClientIdentity, alink_answer, alink_request};
use super::{Hub, device_session_key};
use crate::auth::{self, SignMethod};
use crate::data::message::{Message, QoS};
use crate::limits::{LimitId, Limited};

/// An Alink session request of a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionOp {
    Login,
    BatchLogin,
    Logout,
    BatchLogout,
}

impl SessionOp {
    /// The request of a topic `/ext/session/{pk}/{dn}/combine/...` of gateway `pk`/`dn`.
    pub(crate) fn of(topic: &str, pk: &str, dn: &str) -> Option<SessionOp> {
        let op = crate::topic::after_device(topic, "/ext/session/", pk, dn)?
            .strip_prefix("/combine/")?;
        match op {
            "login" => Some(SessionOp::Login),
            "batch_login" => Some(SessionOp::BatchLogin),
            "logout" => Some(SessionOp::Logout),
            "batch_logout" => Some(SessionOp::BatchLogout),
            _ => None,
        }
    }

    fn is_login(self) -> bool {
        matches!(self, SessionOp::Login | SessionOp::BatchLogin)
    }

    fn is_batch(self) -> bool {
        matches!(self, SessionOp::BatchLogin | SessionOp::BatchLogout)
    }

    fn method(self) -> &'static str {
        match self {
            SessionOp::Login => "combine.login",
            SessionOp::BatchLogin => "combine.batch.login",
            SessionOp::Logout => "combine.logout",
            SessionOp::BatchLogout => "combine.batch.logout",
        }
    }
}

/// Alink answer codes of session requests (docs/protocols/mqtt.md, "Sub-devices").
mod code {
    pub const OK: u16 = 200;
    pub const TOO_MANY_ONLINE: u16 = 428;
    pub const TOO_MANY_REQUESTS: u16 = 429;
    pub const BAD_REQUEST: u16 = 460;
    pub const UNAVAILABLE: u16 = 500;
    pub const NOT_LOGGED_IN: u16 = 520;
    pub const NOT_FOUND: u16 = 6100;
    pub const DISABLED: u16 = 6204;
    pub const BAD_SIGNATURE: u16 = 6206;
    pub const NO_TOPOLOGY: u16 = 6401;
}

/// A refused request: its code, what it says, and the entries it is about.
struct Refusal {
    code: u16,
    message: String,
    about: Vec<Value>,
}

impl Refusal {
    fn new(code: u16, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            about: Vec::new(),
        }
    }

    fn about(mut self, entry: &Entry) -> Self {
        self.about.push(entry.name());
        self
    }
}

/// One sub-device of a request.
struct Entry {
    pk: String,
    dn: String,
    fields: Value,
}

impl Entry {
    fn field(&self, key: &str) -> &str {
        self.fields.get(key).and_then(Value::as_str).unwrap_or("")
    }

    fn name(&self) -> Value {
        json!({ "productKey": self.pk, "deviceName": self.dn })
    }

    fn key(&self) -> String {
        device_session_key(&self.pk, &self.dn)
    }
}

/// The entries of a request's `params`: one object (`login`, `logout`), a `deviceList` (a
/// `batch_login`, whose `signMethod` may be given once for all), or a list (`batch_logout`).
fn entries(op: SessionOp, params: &Value) -> Result<Vec<Entry>, Refusal> {
    let shared_method = params.get("signMethod").cloned();
    let list: Vec<Value> = match (params, op.is_batch()) {
        (Value::Object(_), false) => vec![params.clone()],
        (Value::Array(list), true) => list.clone(),
        (Value::Object(o), true) => match o.get("deviceList") {
            Some(Value::Array(list)) => list.clone(),
            _ => {
                return Err(Refusal::new(
                    code::BAD_REQUEST,
                    "params.deviceList must be a list",
                ));
            }
        },
        _ => {
            return Err(Refusal::new(
                code::BAD_REQUEST,
                "params are missing or malformed",
            ));
        }
    };
    if list.is_empty() {
        return Err(Refusal::new(
            code::BAD_REQUEST,
            "no sub-device in the request",
        ));
    }
    list.into_iter()
        .map(|mut fields| {
            let text = |k: &str| {
                fields
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let (pk, dn) = (text("productKey"), text("deviceName"));
            if pk.is_empty() || dn.is_empty() {
                let message = "each sub-device needs productKey and deviceName";
                return Err(Refusal::new(code::BAD_REQUEST, message));
            }
            if let (Some(method), Some(map)) = (&shared_method, fields.as_object_mut()) {
                map.entry("signMethod").or_insert_with(|| method.clone());
            }
            Ok(Entry { pk, dn, fields })
        })
        .collect()
}

impl Hub {
    /// Answers a gateway's session request (the reply's payload).
    pub(crate) async fn sub_session_request(
        &self,
        gateway: &ClientIdentity,
        op: SessionOp,
        payload: &[u8],
    ) -> Bytes {
        let (id, params) = alink_request(payload);
        let outcome = match entries(op, &params) {
            Ok(entries) if op.is_login() => self.log_in(gateway, &entries).await.map(|()| entries),
            Ok(entries) => self.log_out(gateway, &entries).await.map(|()| entries),
            Err(refusal) => Err(refusal),
        };
        match outcome {
            Ok(entries) => {
                let names: Vec<Value> = entries.iter().map(Entry::name).collect();
                let data = match op.is_batch() {
                    true => Value::Array(names),
                    false => names.into_iter().next().unwrap_or(Value::Null),
                };
                alink_answer(&id, code::OK, data, "success", op.method())
            }
            Err(r) => alink_answer(&id, r.code, Value::Array(r.about), &r.message, op.method()),
        }
    }

    async fn log_in(&self, gateway: &ClientIdentity, entries: &[Entry]) -> Result<(), Refusal> {
        let Some(link) = self.gateway_link(gateway).await else {
            let message = "sub-devices log in over their gateway's MQTT connection";
            return Err(Refusal::new(code::BAD_REQUEST, message));
        };
        let Some(gw) = gateway.device.as_ref() else {
            return Err(Refusal::new(
                code::BAD_REQUEST,
                "only a device carries sub-devices",
            ));
        };
        let profile = self.profile_of(&gateway.tenant);
        let per_request = profile.entities.sub_devices_per_login;
        if per_request > 0 && entries.len() as u64 > per_request {
            self.inner.stats.limited(LimitId::SubDevicesPerLogin);
            let message = format!(
                "at most {per_request} sub-devices per request (L-009, profile entities.sub_devices_per_login)"
            );
            return Err(Refusal::new(code::BAD_REQUEST, message));
        }
        let new = entries.iter().filter(|e| !link.carries(&e.key())).count();
        let online_max = profile.entities.sub_devices_online_per_gateway;
        if online_max > 0 && (link.carried() + new) as u64 > online_max {
            self.inner.stats.limited(LimitId::SubDevicesOnline);
            let message = format!(
                "at most {online_max} sub-devices online per gateway (L-007, profile entities.sub_devices_online_per_gateway)"
            );
            return Err(Refusal::new(code::TOO_MANY_ONLINE, message));
        }
        let now = self.now_ms();
        self.inner
            .limiter
            .sub_device_logins(&profile, &gateway.key, new as u64, now)
            .map_err(|l| self.login_limited(l))?;
        let mut identities = Vec::with_capacity(entries.len());
        for entry in entries {
            let identity = self
                .check_login(gw, &gateway.tenant, entry)
                .await
                .map_err(|r| r.about(entry))?;
            identities.push(identity);
        }
        for (identity, _) in &identities {
            if !link.carries(&identity.key) {
                self.admit_connection(identity)
                    .map_err(|l| self.login_limited(l))?;
            }
        }
        for (identity, first_time) in identities {
            if let (true, Some((pk, dn))) = (first_time, &identity.device) {
                self.record_activation(pk, dn).await;
            }
            self.open_sub_session(&link, identity)
                .await
                .map_err(|e| Refusal::new(code::UNAVAILABLE, e.to_string()))?;
        }
        Ok(())
    }

    fn login_limited(&self, limited: Limited) -> Refusal {
        let limited = self.counted(limited);
        Refusal::new(code::TOO_MANY_REQUESTS, limited.to_string())
    }

    /// Checks one login entry: the device exists in the gateway's tenant, is the gateway's
    /// sub-device, is enabled, and the entry is signed with its secret as the Link SDK signs it.
    /// Returns its identity and whether this is its first login (it activates).
    async fn check_login(
        &self,
        gateway: &(String, String),
        tenant: &str,
        entry: &Entry,
    ) -> Result<(ClientIdentity, bool), Refusal> {
        let unavailable =
            |e: crate::store::StoreError| Refusal::new(code::UNAVAILABLE, e.to_string());
        let device = self
            .device_record(&entry.pk, &entry.dn)
            .await
            .map_err(unavailable)?
            .filter(|d| d.tenant == tenant)
            .ok_or_else(|| Refusal::new(code::NOT_FOUND, "sub-device not found"))?;
        let sub = (entry.pk.clone(), entry.dn.clone());
        let parent = self
            .gateway_of((&entry.pk, &entry.dn))
            .await
            .map_err(unavailable)?;
        if parent.as_ref() != Some(gateway) {
            let message = "no topology: add the sub-device to this gateway first (thing/topo/add)";
            return Err(Refusal::new(code::NO_TOPOLOGY, message));
        }
        let method = SignMethod::parse(entry.field("signMethod")).ok_or_else(|| {
            Refusal::new(
                code::BAD_REQUEST,
                "signMethod must be hmacSha256, hmacSha1 or hmacMd5",
            )
        })?;
        let timestamp = Some(entry.field("timestamp")).filter(|t| !t.is_empty());
        let expected = auth::mqtt_password(
            method,
            &device.device_secret,
            entry.field("clientId"),
            &entry.dn,
            &entry.pk,
            timestamp,
        );
        if !auth::signature_matches(&expected, entry.field("sign").as_bytes()) {
            return Err(Refusal::new(
                code::BAD_SIGNATURE,
                "sub-device signature mismatch",
            ));
        }
        if !device.enabled {
            return Err(Refusal::new(code::DISABLED, "sub-device disabled"));
        }
        let identity = ClientIdentity {
            tenant: device.tenant,
            key: device_session_key(&entry.pk, &entry.dn).into(),
            device: Some(sub),
        };
        Ok((identity, !device.activated))
    }

    async fn log_out(&self, gateway: &ClientIdentity, entries: &[Entry]) -> Result<(), Refusal> {
        let per_request = self
            .profile_of(&gateway.tenant)
            .entities
            .sub_devices_per_login;
        if per_request > 0 && entries.len() as u64 > per_request {
            self.inner.stats.limited(LimitId::SubDevicesPerLogin);
            let message = format!("at most {per_request} sub-devices per request (L-009)");
            return Err(Refusal::new(code::BAD_REQUEST, message));
        }
        let link = self.link_of(&gateway.key);
        let missing: Vec<Value> = entries
            .iter()
            .filter(|e| !link.as_ref().is_some_and(|l| l.carries(&e.key())))
            .map(Entry::name)
            .collect();
        if !missing.is_empty() {
            let mut refusal =
                Refusal::new(code::NOT_LOGGED_IN, "not logged in through this gateway");
            refusal.about = missing;
            return Err(refusal);
        }
        if let Some(link) = link {
            for entry in entries {
                self.close_sub_session(&link, &entry.key()).await;
            }
        }
        Ok(())
    }

    /// Tells a gateway that one of its sub-devices was disabled (`status` 8), enabled (2) or
    /// deleted (1), on `/sys/{gw}/thing/topo/change`, as Alibaba does (0 and 1 are also sent
    /// when the admin API adds or removes the topology).
    pub(crate) async fn notify_topo_change(&self, tenant: &str, sub: (&str, &str), status: u8) {
        if let Ok(Some((gw_pk, gw_dn))) = self.gateway_of(sub).await {
            self.topo_change_notice(tenant, (&gw_pk, &gw_dn), sub, status)
                .await;
        }
    }

    /// Sends `/sys/{gw}/thing/topo/change` about `sub` with `status` to `gateway`.
    pub(crate) async fn topo_change_notice(
        &self,
        tenant: &str,
        (gw_pk, gw_dn): (&str, &str),
        sub: (&str, &str),
        status: u8,
    ) {
        let now = self.now_ms();
        let body = json!({
            "id": self.next_seq().to_string(), "version": "1.0", "method": "thing.topo.change",
            "params": { "status": status, "subList": [{ "productKey": sub.0, "deviceName": sub.1 }] },
        });
        let topic = format!("/sys/{gw_pk}/{gw_dn}/thing/topo/change");
        let notice = Message::from_hub(
            tenant,
            topic,
            Bytes::from(body.to_string()),
            QoS::AtMostOnce,
            now,
        );
        if let Err(e) = self.accept(notice).await {
            tracing::warn!(gateway = %format!("{gw_pk}/{gw_dn}"), error = %e, "topo/change notice not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_topics_name_the_gateway() {
        let op = |t| SessionOp::of(t, "gpk", "gw");
        assert_eq!(
            op("/ext/session/gpk/gw/combine/login"),
            Some(SessionOp::Login)
        );
        assert_eq!(
            op("/ext/session/gpk/gw/combine/batch_login"),
            Some(SessionOp::BatchLogin)
        );
        assert_eq!(
            op("/ext/session/gpk/gw/combine/logout"),
            Some(SessionOp::Logout)
        );
        assert_eq!(
            op("/ext/session/gpk/gw/combine/batch_logout"),
            Some(SessionOp::BatchLogout)
        );
        assert_eq!(op("/ext/session/gpk/other/combine/login"), None);
        assert_eq!(op("/ext/session/gpk/gw/combine/login_reply"), None);
    }

    #[test]
    fn batch_entries_take_the_shared_sign_method() {
        let params = json!({
            "signMethod": "hmacSha256",
            "deviceList": [
                { "productKey": "p", "deviceName": "a", "sign": "x" },
                { "productKey": "p", "deviceName": "b", "signMethod": "hmacMd5" },
            ],
        });
        let list = entries(SessionOp::BatchLogin, &params)
            .ok()
            .expect("entries");
        assert_eq!(list[0].field("signMethod"), "hmacSha256");
        assert_eq!(list[1].field("signMethod"), "hmacMd5");
        let bad = json!([{ "productKey": "p" }]);
        let refused = entries(SessionOp::BatchLogout, &bad)
            .err()
            .expect("refused");
        assert_eq!(refused.code, code::BAD_REQUEST);
        assert!(entries(SessionOp::Login, &json!([])).is_err());
    }
}
