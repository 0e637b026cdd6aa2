//! Thing models in Alibaba's document format, in and out: `schema`, `profile` (with
//! `functionBlockId` for a custom module), and the features with their `method`s, including the
//! ones Alibaba generates for every model (the `post` event, the `set` and `get` services),
//! which an import skips and an export writes.

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::{ModelError, Module, Property, ThingModel, bound, bounds};
use crate::limits::LimitId;

/// The schema Alibaba's exports name.
pub const SCHEMA: &str = "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json";

/// A number written as a number or a string (`"min": "0"` in Alibaba's exports).
pub(super) fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| serde::de::Error::custom("not a number")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a number"))),
        other => Err(serde::de::Error::custom(format!("{other} is not a number"))),
    }
}

/// A count written as a number or a string (`"length": "2048"`).
pub(super) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = number(d)?;
    if n < 0.0 || n.fract() != 0.0 {
        return Err(serde::de::Error::custom(format!("{n} is not a count")));
    }
    // Past usize it saturates: the model's bounds refuse it by name.
    Ok(n as usize)
}

/// What an imported document holds: the default module's features, or a custom module's.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The custom module (`profile.functionBlockId`), None for the default one.
    pub module: Option<String>,
    /// Its properties, services and events.
    pub features: Module,
}

fn invalid(message: String) -> ModelError {
    ModelError {
        limit: None,
        message,
    }
}

/// Whether a feature is one Alibaba generates for every model (by its `method`).
fn generated(feature: &Value) -> bool {
    matches!(
        feature["method"].as_str(),
        Some(
            "thing.event.property.post"
                | "thing.service.property.set"
                | "thing.service.property.get"
        )
    )
}

/// Reads a document (L-102 size, L-103 valid characters); the model's own bounds are checked
/// where it is saved.
pub fn import(document: &[u8]) -> Result<Imported, ModelError> {
    if document.len() > bounds::IMPORT_BYTES {
        return Err(bound(
            LimitId::TslImportSize,
            format!("a document is at most {} bytes", bounds::IMPORT_BYTES),
        ));
    }
    let doc: Value = serde_json::from_slice(document)
        .map_err(|e| invalid(format!("not a thing model document (JSON): {e}")))?;
    let valid = doc.to_string().len();
    if valid > bounds::VALID_CHARACTERS {
        return Err(bound(
            LimitId::TslValidCharacters,
            format!(
                "{valid} valid characters: at most {}",
                bounds::VALID_CHARACTERS
            ),
        ));
    }
    if !doc.is_object() {
        return Err(invalid("a thing model document is a JSON object".into()));
    }
    let module = doc["profile"]["functionBlockId"]
        .as_str()
        .filter(|m| !m.is_empty())
        .map(str::to_owned);
    let list = |name: &str| -> Result<Vec<Value>, ModelError> {
        match &doc[name] {
            Value::Null => Ok(Vec::new()),
            Value::Array(l) => Ok(l.iter().filter(|f| !generated(f)).cloned().collect()),
            _ => Err(invalid(format!("{name} is a list"))),
        }
    };
    let features = json!({
        "properties": list("properties")?,
        "services": list("services")?,
        "events": list("events")?,
    });
    let features: Module = serde_json::from_value(features)
        .map_err(|e| invalid(format!("a feature does not read as a thing model's: {e}")))?;
    Ok(Imported { module, features })
}

/// A module of `model` (the default one, or the custom `module`) as Alibaba's document for
/// product `pk`; None when the model has no such module.
pub fn export(model: &ThingModel, pk: &str, module: Option<&str>) -> Option<Value> {
    let (features, prefix) = match module {
        None => (model.default_module(), String::new()),
        Some(id) => (
            model.modules.iter().find(|m| m.identifier == id)?.clone(),
            format!("{id}:"),
        ),
    };
    let mut profile = json!({ "version": "1.0", "productKey": pk });
    if let Some(id) = module {
        profile["functionBlockId"] = json!(id);
    }
    let as_params = |properties: &[Property]| -> Vec<Value> {
        properties
            .iter()
            .map(|p| serde_json::to_value(&p.param).expect("params serialize"))
            .collect()
    };
    let writable: Vec<Property> = features
        .properties
        .iter()
        .filter(|p| p.access_mode != "r")
        .cloned()
        .collect();
    let properties: Vec<Value> = features
        .properties
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).expect("properties serialize");
            v["required"] = json!(false);
            v
        })
        .collect();
    let mut events = vec![json!({
        "identifier": "post", "name": "post", "type": "info", "required": true,
        "desc": "property post", "method": "thing.event.property.post",
        "outputData": as_params(&features.properties),
    })];
    events.extend(features.events.iter().map(|e| {
        let mut v = serde_json::to_value(e).expect("events serialize");
        v["required"] = json!(false);
        v["method"] = json!(format!("thing.event.{prefix}{}.post", e.identifier));
        v
    }));
    let mut services = vec![
        json!({
            "identifier": "set", "name": "set", "required": true, "callType": "async",
            "desc": "property set", "method": "thing.service.property.set",
            "inputData": as_params(&writable), "outputData": [],
        }),
        json!({
            "identifier": "get", "name": "get", "required": true, "callType": "async",
            "desc": "property get", "method": "thing.service.property.get",
            "inputData": features.properties.iter().map(|p| p.param.identifier.clone()).collect::<Vec<_>>(),
            "outputData": as_params(&features.properties),
        }),
    ];
    services.extend(features.services.iter().map(|s| {
        let mut v = serde_json::to_value(s).expect("services serialize");
        v["required"] = json!(false);
        v["method"] = json!(format!("thing.service.{prefix}{}", s.identifier));
        v
    }));
    Some(json!({
        "schema": SCHEMA,
        "profile": profile,
        "properties": properties,
        "events": events,
        "services": services,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "schema": SCHEMA,
            "profile": { "version": "1.0", "productKey": "a1" },
            "properties": [
                { "identifier": "temp", "name": "Temperature", "accessMode": "r", "required": false,
                  "dataType": { "type": "float", "specs": { "min": "-40", "max": "85", "step": "0.1", "unit": "°C" } } },
                { "identifier": "target", "name": "Target", "accessMode": "rw", "required": false,
                  "dataType": { "type": "int", "specs": { "min": "5", "max": "35" } } },
                { "identifier": "label", "name": "Label", "accessMode": "rw", "required": false,
                  "dataType": { "type": "text", "specs": { "length": "64" } } }
            ],
            "events": [
                { "identifier": "post", "name": "post", "type": "info", "required": true,
                  "method": "thing.event.property.post", "outputData": [] },
                { "identifier": "overheat", "name": "Overheat", "type": "alert", "required": false,
                  "method": "thing.event.overheat.post",
                  "outputData": [{ "identifier": "temp", "name": "t",
                                   "dataType": { "type": "float", "specs": { "min": "-40", "max": "200" } } }] }
            ],
            "services": [
                { "identifier": "set", "name": "set", "required": true, "callType": "async",
                  "method": "thing.service.property.set", "inputData": [], "outputData": [] },
                { "identifier": "get", "name": "get", "required": true, "callType": "async",
                  "method": "thing.service.property.get", "inputData": ["temp"], "outputData": [] },
                { "identifier": "reboot", "name": "Reboot", "required": false, "callType": "async",
                  "method": "thing.service.reboot", "inputData": [], "outputData": [] }
            ]
        })
    }

    #[test]
    fn an_alibaba_export_imports_without_its_generated_features_and_exports_back() {
        let imported = import(sample().to_string().as_bytes()).expect("imports");
        assert_eq!(imported.module, None);
        let f = &imported.features;
        assert_eq!(f.properties.len(), 3);
        assert_eq!(
            f.events
                .iter()
                .map(|e| e.identifier.as_str())
                .collect::<Vec<_>>(),
            ["overheat"]
        );
        assert_eq!(
            f.services
                .iter()
                .map(|s| s.identifier.as_str())
                .collect::<Vec<_>>(),
            ["reboot"]
        );
        let model = ThingModel {
            properties: f.properties.clone(),
            services: f.services.clone(),
            events: f.events.clone(),
            modules: Vec::new(),
        };
        model.check().expect("a valid model");
        let out = export(&model, "a1", None).expect("the default module");
        assert_eq!(out["profile"]["productKey"], "a1");
        assert_eq!(out["events"][0]["method"], "thing.event.property.post");
        assert_eq!(out["events"][1]["method"], "thing.event.overheat.post");
        let set_inputs: Vec<&str> = out["services"][0]["inputData"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["identifier"].as_str().unwrap())
            .collect();
        assert_eq!(
            set_inputs,
            ["target", "label"],
            "only writable properties are set"
        );
        let again = import(out.to_string().as_bytes()).expect("its own export imports");
        assert_eq!(again.features, imported.features);
        assert!(export(&model, "a1", Some("nope")).is_none());
    }

    #[test]
    fn documents_are_bounded_and_must_read_as_models() {
        let big = format!(
            "{{\"properties\":[],\"x\":\"{}\"}}",
            "a".repeat(bounds::IMPORT_BYTES)
        );
        let e = import(big.as_bytes()).unwrap_err();
        assert_eq!(e.limit.map(|l| l.limit), Some(LimitId::TslImportSize));
        let spaced = format!(
            "{{\"properties\":[],\"x\":\"{}\"{}}}",
            "a".repeat(bounds::VALID_CHARACTERS),
            " ".repeat(1000)
        );
        let e = import(spaced.as_bytes()).unwrap_err();
        assert_eq!(e.limit.map(|l| l.limit), Some(LimitId::TslValidCharacters));
        let padded = format!("{}{{\"properties\":[]}}", " ".repeat(300 * 1024));
        assert!(
            import(padded.as_bytes()).is_ok(),
            "whitespace is not valid characters"
        );
        assert!(import(b"[1]").is_err());
        assert!(import(br#"{"properties":3}"#).is_err());
        assert!(import(br#"{"properties":[{"identifier":"x"}]}"#).is_err());
        let block = json!({ "profile": { "functionBlockId": "lamp" }, "properties": [] });
        assert_eq!(
            import(block.to_string().as_bytes())
                .unwrap()
                .module
                .as_deref(),
            Some("lamp")
        );
    }
}
