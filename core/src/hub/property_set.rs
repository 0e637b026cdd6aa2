//! Setting a device's properties from the business API: checked against the product's thing
//! model (each property in it, writable, of its type and range), sent on
//! `/sys/{pk}/{dn}/thing/service/property/set`, and answered with the device's `set_reply` of
//! the same id, or a timeout (the RRPC machinery waits for it, across nodes too).

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use super::HubError;
use super::business::Business;
use super::rrpc::{RrpcForm, RrpcOutcome};

/// How a property set ended.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PropertySetOutcome {
    /// The device answered on `set_reply`.
    Replied {
        /// The device's Alink code (200: set).
        code: i64,
        /// The device's message, if it sent one.
        message: String,
        /// The device's `data`.
        data: Value,
        /// The request's Alink id.
        message_id: String,
    },
    /// The device is online but did not answer in time.
    Timeout {
        /// The request's Alink id.
        message_id: String,
    },
    /// The device is not online: nothing was sent.
    Offline,
}

impl Business<'_> {
    /// Sets properties of a device and waits up to `timeout_ms` (1 to 8 s, L-025) for its
    /// answer.
    pub async fn set_properties(
        &self,
        device: (&str, &str, &str),
        params: Map<String, Value>,
        timeout_ms: u64,
    ) -> Result<PropertySetOutcome, HubError> {
        if params.is_empty() {
            return Err(HubError::Invalid("params: no property to set".into()));
        }
        if let Some(model) = self.hub.model_of(device.1) {
            model.check_set(&params).map_err(HubError::Invalid)?;
        }
        let payload = Bytes::from(Value::Object(params).to_string());
        Ok(
            match self
                .rrpc(device, Some(RrpcForm::PropertySet), payload, timeout_ms)
                .await?
            {
                RrpcOutcome::Success {
                    payload,
                    message_id,
                    ..
                } => {
                    let reply: Value = serde_json::from_str(&payload).unwrap_or_default();
                    PropertySetOutcome::Replied {
                        code: reply["code"].as_i64().unwrap_or_default(),
                        message: reply["message"].as_str().unwrap_or_default().to_owned(),
                        data: reply.get("data").cloned().unwrap_or_default(),
                        message_id,
                    }
                }
                RrpcOutcome::Timeout { message_id } => PropertySetOutcome::Timeout { message_id },
                RrpcOutcome::Offline => PropertySetOutcome::Offline,
            },
        )
    }
}
