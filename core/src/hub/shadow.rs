//! Device shadows (Alibaba's format): a JSON document per device with the state the device
//! reported and the state the business server desires, per-property timestamps and a version.
//! Devices use `/shadow/update/{pk}/{dn}` (update, get, delete) and receive answers and desired
//! changes on `/shadow/get/{pk}/{dn}`; business servers use the business API. A desired change
//! reaches the device at once, or when it next connects.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{Hub, HubError};
use crate::data::message::{Message, QoS};
use crate::data::shadow::Shadow;
use crate::limits::{LimitId, Limited};
use crate::store::{records, transact};

/// Alibaba's shadow error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowErrorCode {
    /// 400: not JSON.
    BadJson = 400,
    /// 401: no method.
    NoMethod = 401,
    /// 402: no state.
    NoState = 402,
    /// 403: version is not a number.
    BadVersion = 403,
    /// 404: no reported (update) or nothing to delete.
    NoReported = 404,
    /// 406: unknown method.
    BadMethod = 406,
    /// 408: too many properties (L-042), too deep (L-040) or too large (L-041).
    TooLarge = 408,
    /// 409: version conflict (optimistic versioning).
    VersionConflict = 409,
    /// 429: the device's shadow request rate (L-043).
    TooManyRequests = 429,
}

/// Why a shadow request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowError {
    /// The code.
    pub code: ShadowErrorCode,
    /// What is wrong.
    pub message: String,
    /// The limit, when one refused it.
    pub limit: Option<LimitId>,
}

fn error(code: ShadowErrorCode, message: impl Into<String>) -> ShadowError {
    ShadowError {
        code,
        message: message.into(),
        limit: None,
    }
}

fn limit_error(limit: LimitId, message: String) -> ShadowError {
    ShadowError {
        code: ShadowErrorCode::TooLarge,
        message,
        limit: Some(limit),
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Which side of the state an update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Reported,
    Desired,
}

impl Shadow {
    fn side(&mut self, side: Side) -> (&mut Map<String, Value>, &mut Map<String, Value>) {
        match side {
            Side::Reported => (&mut self.state.reported, &mut self.metadata.reported),
            Side::Desired => (&mut self.state.desired, &mut self.metadata.desired),
        }
    }

    /// Merges `props` into one side (a `null` value, or the string "null" as Alibaba's devices
    /// send it, removes the property).
    fn merge(&mut self, side: Side, props: &Map<String, Value>, now: u64) {
        let (state, metadata) = self.side(side);
        for (k, v) in props {
            if v.is_null() || v == "null" {
                state.remove(k);
                metadata.remove(k);
            } else {
                state.insert(k.clone(), v.clone());
                metadata.insert(k.clone(), json!({ "timestamp": now }));
            }
        }
    }

    fn document(&self) -> Value {
        json!({ "state": self.state, "metadata": self.metadata })
    }
}

/// The shadow bounds of a profile (L-040 to L-042), checked on the would-be shadow.
fn check_bounds(shadow: &Shadow, limits: &crate::limits::ShadowLimits) -> Result<(), ShadowError> {
    let props = (shadow.state.reported.len() + shadow.state.desired.len()) as u64;
    if limits.properties > 0 && props > limits.properties {
        return Err(limit_error(
            LimitId::ShadowProperties,
            format!("at most {} properties", limits.properties),
        ));
    }
    // Levels count from the properties: a flat `reported` object is one level.
    let levels = [&shadow.state.reported, &shadow.state.desired]
        .iter()
        .map(|m| depth(&Value::Object((*m).clone())))
        .max()
        .unwrap_or(0);
    if limits.levels > 0 && levels as u64 > limits.levels {
        return Err(limit_error(
            LimitId::ShadowLevels,
            format!("at most {} JSON levels", limits.levels),
        ));
    }
    let size = shadow.document().to_string().len() as u64;
    if limits.bytes > 0 && size > limits.bytes {
        return Err(limit_error(
            LimitId::ShadowSize,
            format!("at most {} bytes", limits.bytes),
        ));
    }
    Ok(())
}

impl Hub {
    async fn read_shadow(&self, pk: &str, dn: &str) -> Result<Shadow, HubError> {
        let (pk, dn) = (pk.to_owned(), dn.to_owned());
        Ok(transact(&**self.store(), |t| {
            let (pk, dn) = (pk.clone(), dn.clone());
            Box::pin(async move { records::get_shadow(t, &pk, &dn).await })
        })
        .await?
        .unwrap_or_default())
    }

    /// Applies an update to one side with optimistic versioning: `version`, when given, must be
    /// greater than the stored one. Returns the new shadow.
    async fn update_shadow(
        &self,
        tenant: &str,
        pk: &str,
        dn: &str,
        side: Side,
        props: &Map<String, Value>,
        version: Option<u64>,
    ) -> Result<Result<Shadow, ShadowError>, HubError> {
        let limits = self.profile_of(tenant).shadow.clone();
        let (pk2, dn2, props2) = (pk.to_owned(), dn.to_owned(), props.clone());
        let now = self.now_ms();
        let outcome = transact(&**self.store(), |t| {
            let (pk, dn, props, limits) =
                (pk2.clone(), dn2.clone(), props2.clone(), limits.clone());
            Box::pin(async move {
                let mut shadow = records::get_shadow(t, &pk, &dn).await?.unwrap_or_default();
                if let Some(v) = version
                    && v <= shadow.version
                {
                    return Ok(Err(error(
                        ShadowErrorCode::VersionConflict,
                        format!("version {v} is not newer than {}", shadow.version),
                    )));
                }
                shadow.merge(side, &props, now);
                if let Err(e) = check_bounds(&shadow, &limits) {
                    return Ok(Err(e));
                }
                shadow.version = version.unwrap_or(shadow.version + 1);
                shadow.timestamp = now;
                records::put_shadow(t, &pk, &dn, &shadow);
                Ok(Ok(shadow))
            })
        })
        .await?;
        if let Ok(shadow) = &outcome {
            self.note_desired(pk, dn, shadow);
        }
        Ok(outcome)
    }

    /// Sends a shadow message to the device on `/shadow/get/{pk}/{dn}`.
    async fn to_device(
        &self,
        tenant: &str,
        pk: &str,
        dn: &str,
        body: Value,
    ) -> Result<(), HubError> {
        let topic = format!("/shadow/get/{pk}/{dn}");
        let msg = Message::from_hub(
            tenant,
            topic,
            Bytes::from(body.to_string()),
            QoS::AtLeastOnce,
            self.now_ms(),
        );
        self.accept(msg).await?;
        Ok(())
    }

    fn control(shadow: &Shadow) -> Value {
        let mut payload = shadow.document();
        payload["status"] = json!("success");
        json!({ "method": "control", "payload": payload, "version": shadow.version,
                "timestamp": shadow.timestamp })
    }

    /// Handles a device's request on `/shadow/update/{pk}/{dn}` and answers it on
    /// `/shadow/get/{pk}/{dn}`.
    pub(crate) async fn shadow_request(
        &self,
        tenant: &str,
        pk: &str,
        dn: &str,
        payload: &[u8],
    ) -> Result<(), HubError> {
        let answer = match self.shadow_request_inner(tenant, pk, dn, payload).await? {
            Ok(answer) => answer,
            Err(e) => {
                let mut content = json!({ "errorcode": e.code as u16, "errormessage": e.message });
                if let Some(limit) = e.limit {
                    content["limit"] = json!(limit.id());
                }
                json!({ "method": "reply",
                        "payload": { "status": "error", "content": content },
                        "timestamp": self.now_ms() })
            }
        };
        self.to_device(tenant, pk, dn, answer).await
    }

    async fn shadow_request_inner(
        &self,
        tenant: &str,
        pk: &str,
        dn: &str,
        payload: &[u8],
    ) -> Result<Result<Value, ShadowError>, HubError> {
        let profile = self.profile_of(tenant);
        let key = super::device_session_key(pk, dn);
        if let Err(l) = self
            .inner
            .limiter
            .shadow_request(&profile, &key, self.now_ms())
        {
            let l: Limited = self.counted(l);
            return Ok(Err(ShadowError {
                code: ShadowErrorCode::TooManyRequests,
                message: l.to_string(),
                limit: Some(l.limit),
            }));
        }
        let Ok(request) = serde_json::from_slice::<Value>(payload) else {
            return Ok(Err(error(ShadowErrorCode::BadJson, "not JSON")));
        };
        let version = match request.get("version") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(v) => Some(v),
                None => {
                    return Ok(Err(error(
                        ShadowErrorCode::BadVersion,
                        "version must be a number",
                    )));
                }
            },
        };
        let Some(method) = request.get("method").and_then(Value::as_str) else {
            return Ok(Err(error(ShadowErrorCode::NoMethod, "method is missing")));
        };
        match method {
            "get" => {
                let shadow = self.read_shadow(pk, dn).await?;
                let mut payload = shadow.document();
                payload["status"] = json!("success");
                Ok(Ok(json!({ "method": "reply", "payload": payload,
                              "version": shadow.version, "timestamp": self.now_ms() })))
            }
            "update" | "delete" => {
                let Some(state) = request.get("state").and_then(Value::as_object) else {
                    return Ok(Err(error(ShadowErrorCode::NoState, "state is missing")));
                };
                let mut props = match state.get("reported") {
                    Some(Value::Object(r)) => r.clone(),
                    Some(Value::String(s)) if s == "null" && method == "delete" => {
                        let shadow = self.read_shadow(pk, dn).await?;
                        shadow
                            .state
                            .reported
                            .keys()
                            .map(|k| (k.clone(), Value::Null))
                            .collect()
                    }
                    _ => {
                        return Ok(Err(error(
                            ShadowErrorCode::NoReported,
                            "state.reported is missing",
                        )));
                    }
                };
                if method == "delete" {
                    props.values_mut().for_each(|v| *v = Value::Null);
                }
                Ok(self
                    .update_shadow(tenant, pk, dn, Side::Reported, &props, version)
                    .await?
                    .map(|shadow| {
                        json!({ "method": "reply",
                                "payload": { "status": "success", "version": shadow.version },
                                "version": shadow.version, "timestamp": self.now_ms() })
                    }))
            }
            other => Ok(Err(error(
                ShadowErrorCode::BadMethod,
                format!("unknown method {other}"),
            ))),
        }
    }

    /// Remembers which devices have desired properties, so that connecting devices without any
    /// cost no store read.
    pub(crate) async fn load_pending_desired(&self) -> Result<(), HubError> {
        let devices = transact(&**self.store(), |t| {
            Box::pin(async move { records::devices_with_desired(t).await })
        })
        .await?;
        let mut pending = self.inner.desired_pending.write().expect("desired lock");
        pending.extend(
            devices
                .iter()
                .map(|(pk, dn)| super::device_session_key(pk, dn)),
        );
        Ok(())
    }

    fn note_desired(&self, pk: &str, dn: &str, shadow: &Shadow) {
        let key = super::device_session_key(pk, dn);
        let mut pending = self.inner.desired_pending.write().expect("desired lock");
        if shadow.state.desired.is_empty() {
            pending.remove(&key);
        } else {
            pending.insert(key);
        }
    }

    /// Whether a device's shadow has desired properties to deliver at connect.
    pub(crate) fn has_pending_desired(&self, device_key: &str) -> bool {
        // Another node may have set desired properties: in a cluster every connect looks.
        self.peers().is_some()
            || self
                .inner
                .desired_pending
                .read()
                .expect("desired lock")
                .contains(device_key)
    }

    /// On connect: a device with desired properties pending gets them.
    pub(crate) async fn shadow_on_connect(&self, tenant: &str, pk: &str, dn: &str) {
        let shadow = match self.read_shadow(pk, dn).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "could not read a shadow at connect");
                return;
            }
        };
        if shadow.state.desired.is_empty() {
            return;
        }
        if let Err(e) = self.to_device(tenant, pk, dn, Self::control(&shadow)).await {
            tracing::warn!(error = %e, "could not send a shadow's desired state at connect");
        }
    }
}

/// Device shadows as the business API reads and sets them.
#[derive(Clone, Copy)]
pub struct Shadows<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Device shadows as the business API reads and sets them.
    pub fn shadows(&self) -> Shadows<'_> {
        Shadows { hub: self }
    }
}

impl Shadows<'_> {
    /// A device's shadow, for the business API.
    pub async fn get(&self, tenant: &str, pk: &str, dn: &str) -> Result<Shadow, HubError> {
        self.hub.tenant_device(tenant, pk, dn).await?;
        self.hub.read_shadow(pk, dn).await
    }

    /// Sets desired properties from the business API (`null` removes one) and sends the change to
    /// the device (now if online, else when it connects). `version`, when given, must be newer.
    pub async fn set_desired(
        &self,
        tenant: &str,
        pk: &str,
        dn: &str,
        desired: &Map<String, Value>,
        version: Option<u64>,
    ) -> Result<Shadow, HubError> {
        self.hub.tenant_device(tenant, pk, dn).await?;
        let shadow = match self
            .hub
            .update_shadow(tenant, pk, dn, Side::Desired, desired, version)
            .await?
        {
            Ok(shadow) => shadow,
            Err(e) => {
                return Err(match e.limit {
                    Some(limit) => HubError::Limited {
                        limited: self.hub.counted(Limited::new(limit)),
                        message: e.message,
                    },
                    None if e.code == ShadowErrorCode::VersionConflict => {
                        HubError::Conflict(e.message)
                    }
                    None => HubError::Invalid(e.message),
                });
            }
        };
        let key = super::device_session_key(pk, dn);
        if self.hub.online_anywhere(&key).await? {
            self.hub
                .to_device(tenant, pk, dn, Hub::control(&shadow))
                .await?;
        }
        Ok(shadow)
    }
}
