//! TSL thing models (Alibaba's Thing Specification Language, simplified): a product's properties,
//! services and events with typed data, the model's bounds (L-046 to L-049) and the validation of
//! the property posts devices send (`thing.event.property.post`), answered with Alink codes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::limits::{LimitId, Limited};

pub mod alibaba;

/// A data type and its specs.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "specs", rename_all = "lowercase")]
pub enum DataType {
    /// 32-bit integer within `min..=max`.
    Int(NumberSpecs),
    /// Single-precision number within `min..=max`.
    Float(NumberSpecs),
    /// Double-precision number within `min..=max`.
    Double(NumberSpecs),
    /// A string of at most `length` characters (L-048: 10,240).
    Text(TextSpecs),
    /// 0 or 1 (or true/false), with names.
    Bool(Map<String, Value>),
    /// One of the listed integer values (L-047: 100 items), with names.
    Enum(Map<String, Value>),
    /// A UTC time in ms, as a string or a number.
    Date(Map<String, Value>),
    /// Named fields (L-047: 50).
    Struct(Vec<Param>),
    /// Up to `size` items of one type (L-047: 512).
    Array(ArraySpecs),
}

/// Specs of numbers (Alibaba's exports write them as strings: both are read).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumberSpecs {
    /// Smallest value.
    #[serde(deserialize_with = "alibaba::number")]
    pub min: f64,
    /// Largest value.
    #[serde(deserialize_with = "alibaba::number")]
    pub max: f64,
    /// Unit, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// Specs of text.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSpecs {
    /// Longest value, characters.
    #[serde(deserialize_with = "alibaba::count")]
    #[schemars(range(max = 10_240))]
    pub length: usize,
}

/// Specs of arrays.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArraySpecs {
    /// Most items.
    #[serde(deserialize_with = "alibaba::count")]
    #[schemars(range(max = 512))]
    pub size: usize,
    /// The items' type.
    pub item: Box<DataType>,
}

/// A named, typed value: a property, a struct field or a service/event parameter.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// Identifier (the JSON key devices use).
    pub identifier: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// The type.
    #[serde(rename = "dataType")]
    pub data_type: DataType,
}

/// A property of the model.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Property {
    /// The value's definition.
    #[serde(flatten)]
    pub param: Param,
    /// `rw` or `r`.
    #[serde(rename = "accessMode", default = "rw")]
    pub access_mode: String,
}

fn rw() -> String {
    "rw".into()
}

/// A service devices offer.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Identifier.
    pub identifier: String,
    /// `async` or `sync`.
    #[serde(rename = "callType", default)]
    pub call_type: String,
    /// Input parameters.
    #[serde(rename = "inputData", default)]
    pub input: Vec<Param>,
    /// Output parameters.
    #[serde(rename = "outputData", default)]
    pub output: Vec<Param>,
}

/// An event devices raise.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDef {
    /// Identifier.
    pub identifier: String,
    /// `info`, `alert` or `error`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Its parameters.
    #[serde(rename = "outputData", default)]
    pub output: Vec<Param>,
}

/// A set of properties, services and events: the default module of a model, or a custom one.
#[derive(schemars::JsonSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Module {
    /// Identifier of a custom module; devices post its properties as `{module}:{property}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identifier: String,
    /// Properties.
    #[serde(default)]
    pub properties: Vec<Property>,
    /// Services.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Events.
    #[serde(default)]
    pub events: Vec<EventDef>,
}

/// A product's thing model: the default module and up to 20 custom ones (L-045).
#[derive(schemars::JsonSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThingModel {
    /// Properties of the default module.
    #[serde(default)]
    pub properties: Vec<Property>,
    /// Services of the default module.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Events of the default module.
    #[serde(default)]
    pub events: Vec<EventDef>,
    /// Custom modules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<Module>,
}

/// Bounds of thing models (seed 000).
pub mod bounds {
    /// Custom modules of a model (L-045).
    pub const MODULES: usize = 20;
    /// Properties, services and events of one module (L-046).
    pub const FEATURES: usize = 300;
    /// Fields of a struct (L-047).
    pub const STRUCT_FIELDS: usize = 50;
    /// Items of an enum (L-047).
    pub const ENUM_ITEMS: usize = 100;
    /// Elements of an array (L-047).
    pub const ARRAY_SIZE: usize = 512;
    /// Length of a text (L-048).
    pub const TEXT_LENGTH: usize = 10_240;
    /// Input or output parameters of one service or event (L-049).
    pub const PARAMS_EACH: usize = 100;
    /// Parameters of all services and events of a product (L-049).
    pub const PARAMS_ALL: usize = 300;
    /// How deep structs and arrays nest (L-104): an array of structs, not deeper.
    pub const NESTING: usize = 2;
    /// Largest model document imported, bytes (L-102).
    pub const IMPORT_BYTES: usize = 512 * 1024;
    /// Valid characters of a model: its JSON without whitespace, bytes (L-103).
    pub const VALID_CHARACTERS: usize = 256 * 1024;
    /// Versions of a product's model kept (L-105): the oldest goes.
    pub const VERSIONS: usize = 10;
}

/// Why a model was refused: the limit (if a bound) and what.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    /// The bound it exceeds, if any.
    pub limit: Option<Limited>,
    /// What is wrong.
    pub message: String,
}

fn bound(limit: LimitId, message: String) -> ModelError {
    ModelError {
        limit: Some(Limited::new(limit)),
        message,
    }
}

fn check_type(t: &DataType, at: &str) -> Result<(), ModelError> {
    check_nested(t, at, 0)
}

/// [`check_type`] of a type `depth` structs and arrays deep (L-104: 2 at most).
fn check_nested(t: &DataType, at: &str, depth: usize) -> Result<(), ModelError> {
    let compound = matches!(t, DataType::Struct(_) | DataType::Array(_));
    if compound && depth >= bounds::NESTING {
        return Err(bound(
            LimitId::TslNesting,
            format!(
                "{at}: structs and arrays nest {} levels deep at most",
                bounds::NESTING
            ),
        ));
    }
    match t {
        DataType::Int(s) | DataType::Float(s) | DataType::Double(s) if s.min > s.max => {
            Err(ModelError {
                limit: None,
                message: format!("{at}: min is above max"),
            })
        }
        DataType::Text(s) if s.length > bounds::TEXT_LENGTH => Err(bound(
            LimitId::TslTextLength,
            format!("{at}: text length at most {}", bounds::TEXT_LENGTH),
        )),
        DataType::Enum(items) if items.len() > bounds::ENUM_ITEMS => Err(bound(
            LimitId::TslTypeSize,
            format!("{at}: at most {} enum items", bounds::ENUM_ITEMS),
        )),
        DataType::Struct(fields) => {
            if fields.len() > bounds::STRUCT_FIELDS {
                return Err(bound(
                    LimitId::TslTypeSize,
                    format!("{at}: at most {} struct fields", bounds::STRUCT_FIELDS),
                ));
            }
            fields.iter().try_for_each(|f| {
                check_nested(&f.data_type, &format!("{at}.{}", f.identifier), depth + 1)
            })
        }
        DataType::Array(a) => {
            if a.size > bounds::ARRAY_SIZE {
                return Err(bound(
                    LimitId::TslTypeSize,
                    format!("{at}: at most {} array elements", bounds::ARRAY_SIZE),
                ));
            }
            check_nested(&a.item, &format!("{at}[]"), depth + 1)
        }
        _ => Ok(()),
    }
}

impl Module {
    /// Checks one module's feature count (L-046) and its types; returns its service and event
    /// parameters, which count towards the product's total (L-049).
    fn check(&self) -> Result<usize, ModelError> {
        let features = self.properties.len() + self.services.len() + self.events.len();
        if features > bounds::FEATURES {
            return Err(bound(
                LimitId::TslFeatures,
                format!(
                    "at most {} properties, services and events per module",
                    bounds::FEATURES
                ),
            ));
        }
        let mut all_params = 0;
        let lists = self
            .services
            .iter()
            .flat_map(|s| [(&s.identifier, &s.input), (&s.identifier, &s.output)])
            .chain(self.events.iter().map(|e| (&e.identifier, &e.output)));
        for (id, params) in lists {
            if params.len() > bounds::PARAMS_EACH {
                return Err(bound(
                    LimitId::TslParams,
                    format!("{id}: at most {} parameters", bounds::PARAMS_EACH),
                ));
            }
            all_params += params.len();
            params
                .iter()
                .try_for_each(|p| check_type(&p.data_type, &format!("{id}.{}", p.identifier)))?;
        }
        self.properties
            .iter()
            .try_for_each(|p| check_type(&p.param.data_type, &p.param.identifier))?;
        Ok(all_params)
    }
}

impl ThingModel {
    fn default_module(&self) -> Module {
        Module {
            identifier: String::new(),
            properties: self.properties.clone(),
            services: self.services.clone(),
            events: self.events.clone(),
        }
    }

    /// Checks the model's bounds (L-045 to L-049) and types.
    pub fn check(&self) -> Result<(), ModelError> {
        if self.modules.len() > bounds::MODULES {
            return Err(bound(
                LimitId::TslModules,
                format!("at most {} custom modules", bounds::MODULES),
            ));
        }
        if let Some(m) = self
            .modules
            .iter()
            .find(|m| m.identifier.is_empty() || m.identifier.contains(':'))
        {
            return Err(ModelError {
                limit: None,
                message: format!(
                    "module identifier {:?} must be non-empty and without ':'",
                    m.identifier
                ),
            });
        }
        let mut all_params = self.default_module().check()?;
        for m in &self.modules {
            all_params += m.check()?;
        }
        if all_params > bounds::PARAMS_ALL {
            return Err(bound(
                LimitId::TslParams,
                format!(
                    "at most {} service and event parameters in all",
                    bounds::PARAMS_ALL
                ),
            ));
        }
        Ok(())
    }

    /// Validates properties the business sets (a property set, desired values): as
    /// [`ThingModel::check_post`], and each writable. Err says what is wrong.
    pub fn check_set(&self, params: &Map<String, Value>) -> Result<(), String> {
        self.check_post(params).map_err(|(_, why)| why)?;
        match params
            .keys()
            .find(|k| self.property(k).is_some_and(|p| p.access_mode == "r"))
        {
            Some(key) => Err(format!("property {key} is read-only")),
            None => Ok(()),
        }
    }

    /// Its properties, services and events, all modules together.
    pub fn features(&self) -> usize {
        std::iter::once(self.default_module())
            .chain(self.modules.iter().cloned())
            .map(|m| m.properties.len() + m.services.len() + m.events.len())
            .sum()
    }

    /// The property `key` names (a custom module's as `{module}:{property}`).
    pub fn property(&self, key: &str) -> Option<&Property> {
        let (properties, name) = match key.split_once(':') {
            Some((module, name)) => (
                &self
                    .modules
                    .iter()
                    .find(|m| m.identifier == module)?
                    .properties,
                name,
            ),
            None => (&self.properties, key),
        };
        properties.iter().find(|p| p.param.identifier == name)
    }

    /// Validates the `params` of a property post: every key a property of the model (a custom
    /// module's as `{module}:{property}`), every value of its type and range. Err is the Alink
    /// code and message of the reply.
    pub fn check_post(&self, params: &Map<String, Value>) -> Result<(), (u16, String)> {
        for (key, value) in params {
            let (value, _) = posted_value(value);
            let (properties, name) = match key.split_once(':') {
                Some((module, name)) => {
                    match self.modules.iter().find(|m| m.identifier == module) {
                        Some(m) => (&m.properties, name),
                        None => {
                            return Err((
                                6304,
                                format!("module {module} is not in the product's model"),
                            ));
                        }
                    }
                }
                None => (&self.properties, key.as_str()),
            };
            let Some(p) = properties.iter().find(|p| p.param.identifier == name) else {
                return Err((
                    6304,
                    format!("property {key} is not in the product's model"),
                ));
            };
            check_value(&p.param.data_type, value)
                .map_err(|why| (6306, format!("property {key}: {why}")))?;
        }
        Ok(())
    }
}

impl ThingModel {
    /// Validates the `params` of an event post, `{"value":{..},"time"?}`: the event is in the
    /// model (a custom module's as `{module}:{event}`), every key of `value` is one of its
    /// parameters, of its type and range. Err is the Alink code and message of the reply.
    pub fn check_event(
        &self,
        identifier: &str,
        params: &Map<String, Value>,
    ) -> Result<(), (u16, String)> {
        let (events, name) = match identifier.split_once(':') {
            Some((module, name)) => match self.modules.iter().find(|m| m.identifier == module) {
                Some(m) => (&m.events, name),
                None => {
                    let message = format!("module {module} is not in the product's model");
                    return Err((6304, message));
                }
            },
            None => (&self.events, identifier),
        };
        let Some(event) = events.iter().find(|e| e.identifier == name) else {
            let message = format!("event {identifier} is not in the product's model");
            return Err((6304, message));
        };
        let Some(Value::Object(values)) = params.get("value") else {
            let message = "request parameter error: params.value must be a JSON object";
            return Err((460, message.to_owned()));
        };
        for (key, value) in values {
            let Some(param) = event.output.iter().find(|p| p.identifier == *key) else {
                let message = format!("event {identifier} has no parameter {key}");
                return Err((6304, message));
            };
            check_value(&param.data_type, value)
                .map_err(|why| (6306, format!("event {identifier}, {key}: {why}")))?;
        }
        Ok(())
    }
}

impl ThingModel {
    /// Validates a service call's input: the service is in the model (a custom module's as
    /// `{module}:{service}`), every key of `params` one of its input parameters, of its type and
    /// range. Err says what is wrong.
    pub fn check_service(
        &self,
        identifier: &str,
        params: &Map<String, Value>,
    ) -> Result<(), String> {
        let (services, name) = match identifier.split_once(':') {
            Some((module, name)) => match self.modules.iter().find(|m| m.identifier == module) {
                Some(m) => (&m.services, name),
                None => return Err(format!("module {module} is not in the product's model")),
            },
            None => (&self.services, identifier),
        };
        let Some(service) = services.iter().find(|s| s.identifier == name) else {
            return Err(format!(
                "service {identifier} is not in the product's model"
            ));
        };
        for (key, value) in params {
            let Some(param) = service.input.iter().find(|p| p.identifier == *key) else {
                return Err(format!("service {identifier} has no input parameter {key}"));
            };
            check_value(&param.data_type, value)
                .map_err(|why| format!("service {identifier}, {key}: {why}"))?;
        }
        Ok(())
    }
}

fn check_value(t: &DataType, v: &Value) -> Result<(), String> {
    let range = |s: &NumberSpecs, x: f64| {
        if x < s.min || x > s.max {
            Err(format!("{x} is outside {}..{}", s.min, s.max))
        } else {
            Ok(())
        }
    };
    match t {
        DataType::Int(s) => match v.as_i64() {
            Some(x) => range(s, x as f64),
            None => Err("expected an integer".into()),
        },
        DataType::Float(s) | DataType::Double(s) => match v.as_f64() {
            Some(x) => range(s, x),
            None => Err("expected a number".into()),
        },
        DataType::Text(s) => match v.as_str() {
            Some(text) if text.chars().count() <= s.length => Ok(()),
            Some(_) => Err(format!("longer than {} characters", s.length)),
            None => Err("expected text".into()),
        },
        DataType::Bool(_) => match v {
            Value::Bool(_) => Ok(()),
            Value::Number(n) if n.as_i64().is_some_and(|x| x == 0 || x == 1) => Ok(()),
            _ => Err("expected 0 or 1".into()),
        },
        DataType::Enum(items) => match v.as_i64() {
            Some(x) if items.contains_key(&x.to_string()) => Ok(()),
            _ => Err(format!(
                "expected one of {:?}",
                items.keys().collect::<Vec<_>>()
            )),
        },
        DataType::Date(_) => match v {
            Value::Number(n) if n.as_u64().is_some() => Ok(()),
            Value::String(s) if s.parse::<u64>().is_ok() => Ok(()),
            _ => Err("expected a UTC time in ms".into()),
        },
        DataType::Struct(fields) => {
            let Some(obj) = v.as_object() else {
                return Err("expected an object".into());
            };
            for (k, field_value) in obj {
                let Some(f) = fields.iter().find(|f| f.identifier == *k) else {
                    return Err(format!("no field {k}"));
                };
                check_value(&f.data_type, field_value).map_err(|e| format!("{k}: {e}"))?;
            }
            Ok(())
        }
        DataType::Array(a) => {
            let Some(items) = v.as_array() else {
                return Err("expected an array".into());
            };
            if items.len() > a.size {
                return Err(format!("more than {} items", a.size));
            }
            items.iter().try_for_each(|i| check_value(&a.item, i))
        }
    }
}

/// A posted property's value and the time the device gave it: Alink allows
/// `{"value": v, "time": ms}` as well as the bare value.
pub fn posted_value(posted: &Value) -> (&Value, Option<&Value>) {
    match (posted.get("value"), posted.get("time")) {
        (Some(value), Some(time)) => (value, Some(time)),
        _ => (posted, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model() -> ThingModel {
        serde_json::from_value(json!({ "properties": [
            { "identifier": "temp", "dataType": { "type": "float", "specs": { "min": -40, "max": 85 } } },
            { "identifier": "mode", "dataType": { "type": "enum", "specs": { "0": "off", "1": "eco" } } },
            { "identifier": "label", "dataType": { "type": "text", "specs": { "length": 4 } } },
            { "identifier": "pos", "dataType": { "type": "struct", "specs": [
                { "identifier": "x", "dataType": { "type": "int", "specs": { "min": 0, "max": 9 } } } ] } },
            { "identifier": "samples", "dataType": { "type": "array", "specs": { "size": 2,
                "item": { "type": "int", "specs": { "min": 0, "max": 100 } } } } }
        ] }))
        .unwrap()
    }

    fn post(params: Value) -> Result<(), (u16, String)> {
        model().check_post(params.as_object().unwrap())
    }

    #[test]
    fn posts_are_checked_against_types_and_ranges() {
        assert!(
            post(
                json!({ "temp": 21.5, "mode": 1, "label": "abcd", "pos": { "x": 3 },
                             "samples": [1, 2] })
            )
            .is_ok()
        );
        assert!(post(json!({ "temp": { "value": 20, "time": 1 } })).is_ok());
        assert_eq!(post(json!({ "humidity": 1 })).unwrap_err().0, 6304);
        for bad in [
            json!({ "temp": 90 }),
            json!({ "mode": 2 }),
            json!({ "label": "abcde" }),
            json!({ "pos": { "x": 10 } }),
            json!({ "samples": [1, 2, 3] }),
            json!({ "temp": "hot" }),
        ] {
            assert_eq!(post(bad.clone()).unwrap_err().0, 6306, "{bad}");
        }
    }

    #[test]
    fn model_bounds_name_their_limit() {
        let long_text = json!({ "properties": [ { "identifier": "t",
            "dataType": { "type": "text", "specs": { "length": 10_241 } } } ] });
        let m: ThingModel = serde_json::from_value(long_text).unwrap();
        assert_eq!(
            m.check().unwrap_err().limit.unwrap().limit,
            LimitId::TslTextLength
        );
        let props: Vec<Value> = (0..301)
            .map(|i| json!({ "identifier": format!("p{i}"), "dataType": { "type": "bool", "specs": {} } }))
            .collect();
        let m: ThingModel = serde_json::from_value(json!({ "properties": props })).unwrap();
        assert_eq!(
            m.check().unwrap_err().limit.unwrap().limit,
            LimitId::TslFeatures
        );
        assert!(model().check().is_ok());
        let modules: Vec<Value> = (0..21)
            .map(|i| json!({ "identifier": format!("m{i}") }))
            .collect();
        let m: ThingModel = serde_json::from_value(json!({ "modules": modules })).unwrap();
        assert_eq!(
            m.check().unwrap_err().limit.unwrap().limit,
            LimitId::TslModules
        );
        // An array of structs nests two levels; a struct in it, three.
        let nested = |inner: Value| -> ThingModel {
            serde_json::from_value(json!({ "properties": [ { "identifier": "a", "dataType": {
                "type": "array", "specs": { "size": "4", "item": { "type": "struct", "specs": [
                    { "identifier": "s", "dataType": inner } ] } } } } ] }))
            .unwrap()
        };
        assert!(
            nested(json!({ "type": "int", "specs": { "min": 0, "max": 1 } }))
                .check()
                .is_ok()
        );
        let deep = nested(json!({ "type": "struct", "specs": [] }));
        assert_eq!(
            deep.check().unwrap_err().limit.unwrap().limit,
            LimitId::TslNesting
        );
    }

    #[test]
    fn custom_module_properties_are_posted_with_their_module() {
        let m: ThingModel = serde_json::from_value(json!({ "modules": [ { "identifier": "light",
            "properties": [ { "identifier": "level",
                "dataType": { "type": "int", "specs": { "min": 0, "max": 10 } } } ] } ] }))
        .unwrap();
        let post = |p: Value| m.check_post(p.as_object().unwrap());
        assert!(post(json!({ "light:level": 5 })).is_ok());
        assert_eq!(post(json!({ "light:level": 11 })).unwrap_err().0, 6306);
        assert_eq!(
            post(json!({ "level": 5 })).unwrap_err().0,
            6304,
            "not in the default module"
        );
        assert_eq!(post(json!({ "dark:level": 5 })).unwrap_err().0, 6304);
    }
}
