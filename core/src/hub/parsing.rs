//! Data parsing (seed 000): each product's JavaScript parsing script, kept in the store and
//! compiled by the script workers ([`crate::script`]). Devices of a product in the custom data
//! format send raw frames on `/sys/{pk}/{dn}/thing/model/up_raw`; `rawDataToProtocol` turns
//! them into Alink JSON, which then goes through the thing model, rules, history and consumer
//! groups as if the device had sent it, and the hub's answer goes back through
//! `protocolToRawData` on `up_raw_reply`. Property sets go out the same way on `down_raw`, and
//! the device's raw answer on `down_raw_reply` completes them. Every execution is charged to
//! the tenant's month (L-097); failures are counted per device (`script_errors`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Hub, HubError};
use crate::data::model::{DataFormat, ParsingScript};
use crate::limits::{LimitId, Limited};
use crate::metering::{self, Charge};
use crate::script::{self, Budget, Call, Output, ScriptError, Scripts};
use crate::store::{self, records};

/// Where raw thing-model frames travel, after `/sys/{pk}/{dn}`.
pub(crate) const UP_RAW: &str = "/thing/model/up_raw";
/// The device's raw answers to downlinks.
pub(crate) const DOWN_RAW_REPLY: &str = "/thing/model/down_raw_reply";
const UP_RAW_REPLY: &str = "/thing/model/up_raw_reply";
const DOWN_RAW: &str = "/thing/model/down_raw";

/// Alink codes of a raw frame the hub could not parse (docs/protocols/parsing-scripts.md).
mod code {
    /// The product has no parsing script.
    pub const NO_SCRIPT: u16 = 6200;
    /// The script threw, overran its budget, or returned no usable Alink JSON.
    pub const SCRIPT_FAILED: u16 = 6201;
}

/// A product's script as the workers run it.
pub(crate) struct ProductScript {
    pub(crate) format: DataFormat,
    pub(crate) code: Arc<script::Script>,
}

/// The script workers and every product's current script.
pub(crate) struct ScriptTable {
    engine: Scripts,
    by_product: RwLock<HashMap<String, Arc<ProductScript>>>,
}

impl ScriptTable {
    pub(crate) fn new(config: &crate::config::ScriptsConfig) -> ScriptTable {
        let budget = Budget {
            time: std::time::Duration::from_millis(config.time_budget_ms),
            memory_bytes: config.memory_mb << 20,
            cache_bytes: config.cache_mb << 20,
        };
        ScriptTable {
            engine: Scripts::start(config.workers, budget),
            by_product: RwLock::default(),
        }
    }

    fn get(&self, pk: &str) -> Option<Arc<ProductScript>> {
        self.by_product
            .read()
            .expect("scripts lock")
            .get(pk)
            .cloned()
    }

    fn set(&self, pk: &str, script: Option<ProductScript>) {
        let mut map = self.by_product.write().expect("scripts lock");
        match script {
            Some(s) => map.insert(pk.to_owned(), Arc::new(s)),
            None => map.remove(pk),
        };
    }
}

fn product_script(pk: &str, record: ParsingScript) -> ProductScript {
    ProductScript {
        format: record.data_format,
        code: Arc::new(script::Script {
            product_key: pk.to_owned(),
            version: record.version,
            source: record.source,
        }),
    }
}

/// Why a script execution gave no answer: the monthly quota, or the script itself.
#[derive(Debug)]
pub(crate) enum ScriptRefusal {
    Limited(Limited),
    Failed(ScriptError),
}

impl From<ScriptRefusal> for HubError {
    fn from(r: ScriptRefusal) -> HubError {
        match r {
            ScriptRefusal::Limited(limited) => HubError::Limited {
                limited,
                message: "the tenant's parsing script executions this month are used up".into(),
            },
            ScriptRefusal::Failed(e) => HubError::Invalid(format!("parsing script: {e}")),
        }
    }
}

impl Hub {
    pub(crate) async fn load_scripts(&self) -> Result<(), HubError> {
        let scripts = store::read(&**self.store(), |t| Box::pin(records::list_scripts(t))).await?;
        let map = scripts
            .into_iter()
            .map(|(pk, s)| (pk.clone(), Arc::new(product_script(&pk, s))))
            .collect();
        *self.inner.scripts.by_product.write().expect("scripts lock") = map;
        Ok(())
    }

    /// Whether the product's devices send raw thing-model frames.
    pub(crate) fn speaks_raw(&self, pk: &str) -> bool {
        self.inner
            .scripts
            .get(pk)
            .is_some_and(|s| s.format == DataFormat::Custom)
    }

    /// Runs an entry point of the product's script for a device (`device`: its session key),
    /// charged to the tenant's month; failures are counted.
    async fn run_script(
        &self,
        tenant: &str,
        device: Option<&str>,
        pk: &str,
        call: Call,
    ) -> Result<Output, ScriptRefusal> {
        let Some(script) = self.inner.scripts.get(pk) else {
            return Err(ScriptRefusal::Failed(ScriptError::Missing(call.function())));
        };
        let now = self.now_ms();
        let profile = self.profile_of(tenant);
        let events = self
            .inner
            .meter
            .charge_month(&profile, tenant, (Charge::ScriptExecution, 1), now)
            .map_err(|l| ScriptRefusal::Limited(self.counted(l)))?;
        if !events.is_empty() {
            Box::pin(self.save_usage_events(tenant, events)).await;
        }
        let result = self.inner.scripts.engine.run(&script.code, call).await;
        if let Err(e) = &result {
            if matches!(e, ScriptError::TimeBudget(_) | ScriptError::Memory(_)) {
                self.inner.stats.limited(LimitId::ScriptBudget);
            }
            tracing::debug!(tenant, product = pk, error = %e, "parsing script failed");
            self.inner
                .meter
                .add(tenant, device, &[(metering::SCRIPT_ERRORS, 1)], now);
        }
        result.map_err(ScriptRefusal::Failed)
    }

    /// A device's raw frame on `up_raw` (`answer: false`) or `down_raw_reply` (`true`) as the
    /// Alink message it stands for: its topic and JSON payload. Err: the refusal, or the
    /// answer to send the device on `up_raw_reply` (topic and payload).
    pub(crate) async fn parse_raw(
        &self,
        (tenant, key): (&str, &str),
        (pk, dn): (&str, &str),
        answer: bool,
        payload: &[u8],
    ) -> Result<(String, Bytes), RawFailure> {
        // An answer that cannot be parsed is dropped (the call waiting for it times out); a
        // post is answered with why.
        let fail = |code: u16, why: &str| match answer {
            true => RawFailure::Dropped,
            false => RawFailure::Answer(self.raw_failure(pk, dn, code, why)),
        };
        if self.inner.scripts.get(pk).is_none() {
            return Err(fail(
                code::NO_SCRIPT,
                &format!("product {pk} has no parsing script"),
            ));
        }
        let parsed = self
            .run_script(tenant, Some(key), pk, Call::Up(payload.to_vec()))
            .await;
        let alink = match parsed {
            Ok(Output::Json(Value::Object(alink))) => alink,
            Ok(_) => {
                let why = "rawDataToProtocol returned no JSON object";
                return Err(fail(code::SCRIPT_FAILED, why));
            }
            Err(ScriptRefusal::Limited(l)) => return Err(RawFailure::Limited(l)),
            Err(ScriptRefusal::Failed(e)) => return Err(fail(code::SCRIPT_FAILED, &e.to_string())),
        };
        let method = alink.get("method").and_then(Value::as_str).unwrap_or("");
        let suffix = if answer {
            match method.strip_prefix("thing.service.") {
                Some(service) if service != "property.set" && !service.is_empty() => {
                    format!("/thing/service/{service}_reply")
                }
                _ => "/thing/service/property/set_reply".to_owned(),
            }
        } else {
            match method {
                "thing.event.property.post" => "/thing/event/property/post".to_owned(),
                m => match m
                    .strip_prefix("thing.event.")
                    .and_then(|e| e.strip_suffix(".post"))
                    .filter(|e| !e.is_empty() && !e.contains(['.', '/', '+', '#']))
                {
                    Some(event) => format!("/thing/event/{event}/post"),
                    None => {
                        let why = format!(
                            "rawDataToProtocol returned method {m:?}: expected \
                             thing.event.property.post or thing.event.{{identifier}}.post"
                        );
                        return Err(fail(code::SCRIPT_FAILED, &why));
                    }
                },
            }
        };
        let mut alink = Value::Object(alink);
        // Alibaba's samples give the code as a string ("200"); Alink answers carry a number.
        if let Some(n) = alink["code"].as_str().and_then(|c| c.parse::<i64>().ok()) {
            alink["code"] = n.into();
        }
        Ok((
            format!("/sys/{pk}/{dn}{suffix}"),
            Bytes::from(alink.to_string()),
        ))
    }

    /// The answer to a raw frame that could not be parsed, on `up_raw_reply`: Alink JSON (the
    /// script could not be trusted to encode it).
    fn raw_failure(&self, pk: &str, dn: &str, code: u16, why: &str) -> (String, Bytes) {
        let answer = json!({
            "id": "", "code": code, "data": {}, "message": why,
            "method": "thing.model.up_raw", "version": "1.0",
        });
        (
            format!("/sys/{pk}/{dn}{UP_RAW_REPLY}"),
            Bytes::from(answer.to_string()),
        )
    }

    /// The hub's Alink answer to a parsed raw frame, as the device reads it: `protocolToRawData`
    /// of it on `up_raw_reply` (the Alink JSON itself when the script fails on it).
    pub(crate) async fn raw_answer(
        &self,
        (tenant, key): (&str, &str),
        (pk, dn): (&str, &str),
        answer: Bytes,
    ) -> (String, Bytes) {
        let topic = format!("/sys/{pk}/{dn}{UP_RAW_REPLY}");
        let json: Value = serde_json::from_slice(&answer).unwrap_or_default();
        match self
            .run_script(tenant, Some(key), pk, Call::Down(json))
            .await
        {
            Ok(Output::Bytes(raw)) => (topic, Bytes::from(raw)),
            _ => (topic, answer),
        }
    }

    /// A device's message on a custom topic marked `parse`, as rules and consumer groups see it:
    /// the JSON `transformPayload` makes of it, or the payload as sent when the script fails or
    /// the month's executions are used up (counted either way).
    pub(crate) async fn transform_payload(
        &self,
        (tenant, key): (&str, &str),
        pk: &str,
        topic: &str,
        payload: &Bytes,
    ) -> Bytes {
        let call = Call::Transform(topic.to_owned(), payload.to_vec());
        match self.run_script(tenant, Some(key), pk, call).await {
            Ok(Output::Json(json)) => Bytes::from(json.to_string()),
            _ => payload.clone(),
        }
    }

    /// A downlink to a device as its product's devices take it: a property set or a service
    /// call to a product in the custom format goes as `protocolToRawData` of it on `down_raw`;
    /// anything else as is.
    pub(crate) async fn downlink_form(
        &self,
        tenant: &str,
        (pk, dn): (&str, &str),
        (topic, payload): (String, Bytes),
    ) -> Result<(String, Bytes), HubError> {
        let thing_service = crate::topic::after_device(&topic, "/sys/", pk, dn)
            .is_some_and(|s| s.starts_with("/thing/service/"));
        if !thing_service || !self.speaks_raw(pk) {
            return Ok((topic, payload));
        }
        let json: Value = serde_json::from_slice(&payload).unwrap_or_default();
        match self.run_script(tenant, None, pk, Call::Down(json)).await? {
            Output::Bytes(raw) => Ok((format!("/sys/{pk}/{dn}{DOWN_RAW}"), Bytes::from(raw))),
            Output::Json(_) => Err(HubError::Invalid(
                "parsing script: protocolToRawData returned no bytes".into(),
            )),
        }
    }
}

/// A raw frame that was not parsed: stopped by a limit, answered on `up_raw_reply` (a post),
/// or dropped (an answer).
#[derive(Debug)]
pub(crate) enum RawFailure {
    Limited(Limited),
    Answer((String, Bytes)),
    Dropped,
}

/// What a script is tried on (`POST /api/v1/products/{pk}/script/test`).
#[derive(schemars::JsonSchema, Debug, Clone, Deserialize)]
#[serde(tag = "function", deny_unknown_fields)]
pub enum ScriptTest {
    /// `rawDataToProtocol(bytes)` on bytes given in hex.
    #[serde(rename = "rawDataToProtocol")]
    Up {
        /// The frame, hex (`0x` prefix optional).
        payload_hex: String,
    },
    /// `protocolToRawData(json)`.
    #[serde(rename = "protocolToRawData")]
    Down {
        /// The Alink JSON to encode.
        payload: Value,
    },
    /// `transformPayload(topic, bytes)` on bytes given in hex.
    #[serde(rename = "transformPayload")]
    Transform {
        /// The custom topic the payload came on.
        topic: String,
        /// The payload, hex (`0x` prefix optional).
        payload_hex: String,
    },
}

/// A script test's result.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ScriptTestOutcome {
    /// The entry point's JSON.
    Json {
        /// What it returned.
        output: Value,
    },
    /// The entry point's bytes.
    Bytes {
        /// What it returned, hex.
        output_hex: String,
    },
    /// The script failed.
    Error {
        /// Why, as the device's answer would say.
        message: String,
    },
}

/// What is saved with a script (`PUT /api/v1/products/{pk}/script`).
#[derive(schemars::JsonSchema, Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptUpdate {
    /// The JavaScript source.
    pub source: String,
    /// How the product's devices speak the thing model (default `custom`).
    #[serde(default)]
    pub data_format: DataFormat,
}

/// A product's script as the API shows it.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize)]
pub struct ScriptView {
    /// The stored script.
    #[serde(flatten)]
    pub script: ParsingScript,
    /// Alibaba's entry points the source does not define (each is needed only where it is
    /// used).
    pub missing_functions: Vec<&'static str>,
}

/// Products' data parsing scripts.
#[derive(Clone, Copy)]
pub struct ParsingScripts<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Products' data parsing scripts.
    pub fn parsing_scripts(&self) -> ParsingScripts<'_> {
        ParsingScripts { hub: self }
    }
}

impl ParsingScripts<'_> {
    /// Saves a product's script once it loads within its budget (L-096 size, L-098 budget).
    pub async fn put(&self, pk: &str, update: ScriptUpdate) -> Result<ScriptView, HubError> {
        let product = self.hub.registry().product(pk).await?;
        let max = self.hub.profile_of(&product.tenant).entities.script_bytes;
        if update.source.len() as u64 > max {
            return Err(HubError::Limited {
                limited: self.hub.counted(Limited::new(LimitId::ScriptSize)),
                message: format!(
                    "the script has {} bytes: at most {max}",
                    update.source.len()
                ),
            });
        }
        let record = ParsingScript {
            source: update.source,
            data_format: update.data_format,
            version: rand::random(),
            updated_at_ms: self.hub.now_ms(),
        };
        let candidate = product_script(pk, record.clone());
        let missing = match self.hub.inner.scripts.engine.check(&candidate.code).await {
            Ok(missing) => missing,
            Err(e @ (ScriptError::TimeBudget(_) | ScriptError::Memory(_))) => {
                return Err(HubError::Limited {
                    limited: self.hub.counted(Limited::new(LimitId::ScriptBudget)),
                    message: e.to_string(),
                });
            }
            Err(e) => return Err(HubError::Invalid(e.to_string())),
        };
        store::write(&**self.hub.store(), |t| records::put_script(t, pk, &record)).await?;
        self.hub.inner.scripts.set(pk, Some(candidate));
        Ok(ScriptView {
            script: record,
            missing_functions: missing,
        })
    }

    /// A product's script.
    pub async fn get(&self, pk: &str) -> Result<ScriptView, HubError> {
        self.hub.registry().product(pk).await?;
        let (Some(script), Some(record)) = (
            self.hub.inner.scripts.get(pk),
            store::read(&**self.hub.store(), |t| {
                let pk = pk.to_owned();
                Box::pin(async move { records::get_script(t, &pk).await })
            })
            .await?,
        ) else {
            return Err(HubError::NotFound {
                what: "parsing script of product",
                id: pk.to_owned(),
            });
        };
        let missing = self.hub.inner.scripts.engine.check(&script.code).await;
        Ok(ScriptView {
            script: record,
            missing_functions: missing.unwrap_or_default(),
        })
    }

    /// Removes a product's script: its devices' raw frames are refused (6200) from now on.
    pub async fn delete(&self, pk: &str) -> Result<(), HubError> {
        self.hub.registry().product(pk).await?;
        store::write(&**self.hub.store(), |t| records::delete_script(t, pk)).await?;
        self.hub.inner.scripts.set(pk, None);
        Ok(())
    }

    /// Runs the product's script on a sample (charged like any execution).
    pub async fn test(&self, pk: &str, test: ScriptTest) -> Result<ScriptTestOutcome, HubError> {
        let product = self.hub.registry().product(pk).await?;
        let call = match test {
            ScriptTest::Up { payload_hex } => Call::Up(from_hex(&payload_hex)?),
            ScriptTest::Down { payload } => Call::Down(payload),
            ScriptTest::Transform { topic, payload_hex } => {
                Call::Transform(topic, from_hex(&payload_hex)?)
            }
        };
        if self.hub.inner.scripts.get(pk).is_none() {
            return Err(HubError::NotFound {
                what: "parsing script of product",
                id: pk.to_owned(),
            });
        }
        Ok(
            match self.hub.run_script(&product.tenant, None, pk, call).await {
                Ok(Output::Json(output)) => ScriptTestOutcome::Json { output },
                Ok(Output::Bytes(raw)) => ScriptTestOutcome::Bytes {
                    output_hex: hex::encode(raw),
                },
                Err(ScriptRefusal::Failed(e)) => ScriptTestOutcome::Error {
                    message: e.to_string(),
                },
                Err(limited) => return Err(limited.into()),
            },
        )
    }
}

fn from_hex(text: &str) -> Result<Vec<u8>, HubError> {
    let digits = text.trim();
    let digits = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
        .unwrap_or(digits);
    hex::decode(digits).map_err(|e| HubError::Invalid(format!("payload_hex: {e}")))
}
