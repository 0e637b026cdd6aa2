//! Asynchronous service calls (Alibaba's async `InvokeThingService`): the business API sends
//! `/sys/{pk}/{dn}/thing/service/{identifier}` and answers at once with the call's id; the
//! device answers on `..._reply`, which goes to consumer groups like any message and is kept
//! with the call for the API to poll. Calls and answers are also history (series kind
//! `service`), kept and swept as property values are.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::session::{ClientIdentity, alink_request};
use super::{Hub, HubError, device_session_key};
use crate::data::message::{Message, QoS};
use crate::data::model::{ServiceCall, ServiceReply};
use crate::store::records::{self, SeriesKind};
use crate::store::{self, StoreError, transact};

/// Calls read per transaction by the sweep.
const SWEEP_PAGE: usize = 1_000;

/// What an asynchronous call did.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum InvokeOutcome {
    /// Sent to the device: poll it by `message_id`, or wait for the answer in a consumer group.
    Sent {
        /// The call's Alink id.
        message_id: String,
    },
    /// The device is not online: nothing was sent.
    Offline,
}

/// A service's name as calls give it: a thing-model identifier (a custom module's as
/// `{module}:{service}`), 64 characters at most, not `property` (property sets have their own
/// call).
pub(crate) fn check_service_name(service: &str) -> Result<(), HubError> {
    let identifier =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let valid = service.len() <= 64
        && match service.split_once(':') {
            Some((module, name)) => identifier(module) && identifier(name),
            None => identifier(service),
        };
    if !valid || service == "property" {
        return Err(HubError::Invalid(
            "service: a thing-model identifier (letters, digits, _; {module}:{service})".into(),
        ));
    }
    Ok(())
}

/// Asynchronous service calls.
#[derive(Clone, Copy)]
pub struct ServiceCalls<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Asynchronous service calls.
    pub fn service_calls(&self) -> ServiceCalls<'_> {
        ServiceCalls { hub: self }
    }

    /// A device's answer on `/sys/{pk}/{dn}/thing/service/{service}_reply`: kept with the call
    /// it answers (when it is one the API made) and in history.
    pub(crate) async fn service_reply(
        &self,
        identity: &ClientIdentity,
        service: &str,
        payload: &[u8],
        now: u64,
    ) -> Result<(), StoreError> {
        let Some((pk, dn)) = identity.device.as_ref() else {
            return Ok(());
        };
        let mut answer: Value = serde_json::from_slice(payload).unwrap_or_default();
        let (id, _) = alink_request(payload);
        let id = match &id {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Ok(()),
        };
        let reply = ServiceReply {
            code: answer["code"].as_i64().unwrap_or_default(),
            message: answer["message"].as_str().unwrap_or_default().to_owned(),
            data: answer["data"].take(),
            replied_at_ms: now,
        };
        let point = json!({ "id": id, "code": reply.code, "data": reply.data });
        self.keep_service_point(identity, service, point, now).await;
        let (tenant, pk, dn, service) = (
            identity.tenant.clone(),
            pk.clone(),
            dn.clone(),
            service.to_owned(),
        );
        transact(&**self.store(), |t| {
            let (tenant, pk, dn, id, service, reply) = (
                tenant.clone(),
                pk.clone(),
                dn.clone(),
                id.clone(),
                service.clone(),
                reply.clone(),
            );
            Box::pin(async move {
                if let Some(mut call) =
                    records::get_service_call(t, &tenant, (&pk, &dn), &id).await?
                    && call.service == service
                {
                    call.reply = Some(reply);
                    records::put_service_call(t, &call);
                }
                Ok(())
            })
        })
        .await
    }

    /// Queues one point of a device's service series (a call or an answer); history that
    /// cannot be queued is logged, not fatal to the call.
    async fn keep_service_point(
        &self,
        identity: &ClientIdentity,
        service: &str,
        value: Value,
        now: u64,
    ) {
        let queued = self
            .record_points(
                identity,
                vec![(SeriesKind::Service, service.to_owned(), now, value)],
            )
            .await;
        if queued.is_none() {
            tracing::warn!(device = %identity.key, "service history not kept: the writer stopped");
        }
    }

    /// Deletes asynchronous calls older than their tenant's retention; returns how many were
    /// looked at.
    pub(crate) async fn sweep_service_calls(&self, now: u64) -> Result<usize, StoreError> {
        let mut after: Option<Vec<u8>> = None;
        let mut seen = 0;
        loop {
            let page = store::read(&**self.store(), |t| {
                let after = after.clone();
                Box::pin(async move {
                    records::service_call_page(t, after.as_deref(), SWEEP_PAGE).await
                })
            })
            .await?;
            let Some((last, _)) = page.last() else {
                return Ok(seen);
            };
            after = Some(last.clone());
            seen += page.len();
            let expired: Vec<ServiceCall> = page
                .into_iter()
                .map(|(_, call)| call)
                .filter(|call| {
                    let days = self.profile_of(&call.tenant).history_retention_days;
                    call.sent_at_ms < now.saturating_sub(days * 86_400_000)
                })
                .collect();
            if !expired.is_empty() {
                store::write(&**self.store(), |t| {
                    for call in &expired {
                        records::delete_service_call(t, call);
                    }
                })
                .await?;
            }
        }
    }
}

impl ServiceCalls<'_> {
    /// Calls a device's service asynchronously (checked against the product's thing model when
    /// it has one; the downlink rates apply as for Pub).
    pub async fn invoke(
        &self,
        (tenant, pk, dn): (&str, &str, &str),
        service: &str,
        params: Map<String, Value>,
    ) -> Result<InvokeOutcome, HubError> {
        check_service_name(service)?;
        self.hub.tenant_device(tenant, pk, dn).await?;
        if let Some(model) = self.hub.model_of(pk) {
            model
                .check_service(service, &params)
                .map_err(HubError::Invalid)?;
        }
        let key = device_session_key(pk, dn);
        if !self.hub.online_anywhere(&key).await? {
            return Ok(InvokeOutcome::Offline);
        }
        let business = self.hub.business();
        business.admit_downlink(tenant, &key)?;
        let id = super::rrpc::alink_call_id(self.hub.next_seq()).to_string();
        let now = self.hub.now_ms();
        let call = ServiceCall {
            message_id: id.clone(),
            tenant: tenant.to_owned(),
            product_key: pk.to_owned(),
            device_name: dn.to_owned(),
            service: service.to_owned(),
            params: Value::Object(params.clone()),
            sent_at_ms: now,
            reply: None,
        };
        store::write(&**self.hub.store(), |t| records::put_service_call(t, &call)).await?;
        let identity = ClientIdentity {
            tenant: tenant.to_owned(),
            key: key.clone().into(),
            device: Some((pk.to_owned(), dn.to_owned())),
        };
        let point = json!({ "id": id, "params": params });
        self.hub
            .keep_service_point(&identity, service, point, now)
            .await;
        let request = json!({
            "id": id, "version": "1.0", "params": params,
            "method": format!("thing.service.{service}"),
        });
        let topic = format!("/sys/{pk}/{dn}/thing/service/{service}");
        let (topic, payload) = self
            .hub
            .downlink_form(tenant, (pk, dn), (topic, Bytes::from(request.to_string())))
            .await?;
        let msg = Message::from_hub(tenant, topic, payload, QoS::AtMostOnce, now);
        self.hub.accept(msg).await?;
        Ok(InvokeOutcome::Sent { message_id: id })
    }

    /// A call the API made, with the device's answer once it came.
    pub async fn get(
        &self,
        (tenant, pk, dn): (&str, &str, &str),
        id: &str,
    ) -> Result<ServiceCall, HubError> {
        self.hub.tenant_device(tenant, pk, dn).await?;
        let (owner, pk_owned, dn_owned, id_owned) = (
            tenant.to_owned(),
            pk.to_owned(),
            dn.to_owned(),
            id.to_owned(),
        );
        store::read(&**self.hub.store(), |t| {
            let (tenant, pk, dn, id) = (
                owner.clone(),
                pk_owned.clone(),
                dn_owned.clone(),
                id_owned.clone(),
            );
            Box::pin(async move { records::get_service_call(t, &tenant, (&pk, &dn), &id).await })
        })
        .await?
        .ok_or(HubError::NotFound {
            what: "service call",
            id: id.to_owned(),
        })
    }
}
