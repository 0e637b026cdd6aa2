//! The OpenAPI 3.0 document, served at `/openapi.json`, built from the route table: paths and
//! methods from the routes, request and response schemas from the Rust types their handlers
//! parse and answer (through `schemars`), so the document and the API cannot drift apart.

use ironhub_core::data::model::{DEVICE_NAME_PATTERN, TENANT_ID_PATTERN};
use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::error::ErrorBody;
use super::route::{Access, Route};

/// Where definitions live in the document.
const DEFINITIONS: &str = "#/components/schemas/";

/// Path parameters with a syntax of their own: a request with another value is refused (400)
/// where the value names something to create, so the document says it.
const PARAMETER_PATTERNS: &[(&str, &str)] = &[
    ("tenant", TENANT_ID_PATTERN),
    ("name", TENANT_ID_PATTERN),
    ("dn", DEVICE_NAME_PATTERN),
    ("subDn", DEVICE_NAME_PATTERN),
];

/// Schema generators: what requests accept (serde's deserializing view of a type) and what
/// responses carry (its serializing view) can differ for one type, so each has its own.
pub(crate) struct Schemas {
    request: SchemaGenerator,
    response: SchemaGenerator,
    query: SchemaGenerator,
}

impl Schemas {
    fn new() -> Schemas {
        let settings =
            SchemaSettings::openapi3().with_transform(RecursiveTransform(bound_integers));
        Schemas {
            request: settings.clone().for_deserialize().into_generator(),
            response: settings.clone().for_serialize().into_generator(),
            query: settings
                .for_deserialize()
                .with(|s| s.inline_subschemas = true)
                .into_generator(),
        }
    }

    fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
        let mut schema = generator.subschema_for::<T>();
        for transform in generator.transforms_mut() {
            transform.transform(&mut schema);
        }
        schema.to_value()
    }

    /// The schema of a request body of type `T`.
    pub(crate) fn request<T: JsonSchema>(&mut self) -> Value {
        Self::schema::<T>(&mut self.request)
    }

    /// The schema of a response body of type `T`.
    pub(crate) fn response<T: JsonSchema>(&mut self) -> Value {
        Self::schema::<T>(&mut self.response)
    }

    /// Query parameters: one per field of `T`.
    pub(crate) fn query<T: JsonSchema>(&mut self) -> Vec<Value> {
        let schema = Self::schema::<T>(&mut self.query);
        let required: Vec<&Value> = schema["required"]
            .as_array()
            .map(|r| r.iter().collect())
            .unwrap_or_default();
        let Some(properties) = schema["properties"].as_object() else {
            return Vec::new();
        };
        properties
            .iter()
            .map(|(name, property)| {
                let mut property = property.clone();
                let description = property
                    .as_object_mut()
                    .and_then(|p| {
                        // An absent parameter is how a query says None.
                        p.remove("nullable");
                        p.remove("description")
                    })
                    .unwrap_or(Value::Null);
                let mut parameter = json!({
                    "name": name,
                    "in": "query",
                    "required": required.contains(&&Value::String(name.clone())),
                    "schema": property,
                });
                if !description.is_null() {
                    parameter["description"] = description;
                }
                parameter
            })
            .collect()
    }
}

/// Integer schemas carry their type's range: JSON has no 64-bit integers of its own, and a
/// client (or a fuzzer) should learn that 2^64 is not a `u64` from the document.
fn bound_integers(schema: &mut Schema) {
    let range = match schema.get("format").and_then(Value::as_str) {
        Some("uint64" | "uint") => (json!(0), json!(u64::MAX)),
        Some("uint32") => (json!(0), json!(u32::MAX)),
        Some("int64" | "int") => (json!(i64::MIN), json!(i64::MAX)),
        Some("int32") => (json!(i32::MIN), json!(i32::MAX)),
        _ => return,
    };
    if schema.get("minimum").is_none() {
        schema.insert("minimum".into(), range.0);
    }
    if schema.get("maximum").is_none() {
        schema.insert("maximum".into(), range.1);
    }
}

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let mut schema = json!({ "type": "string", "minLength": 1 });
            if let Some((_, pattern)) = PARAMETER_PATTERNS.iter().find(|(n, _)| *n == name) {
                schema["pattern"] = json!(pattern);
            }
            json!({ "name": name, "in": "path", "required": true, "schema": schema })
        })
        .collect()
}

fn operation(route: &Route, schemas: &mut Schemas, error: &Value) -> Value {
    let (status, success) = (route.describe_output)(schemas);
    let mut operation = json!({
        "summary": route.summary,
        "parameters": path_parameters(route.path),
        "responses": {
            status.as_str(): success,
            "4XX": { "description": "refused: the body names the problem (and the limit)",
                "content": { "application/json": { "schema": error } } },
            "5XX": { "description": "the store or a sink is unavailable",
                "content": { "application/json": { "schema": error } } },
        },
    });
    (route.describe_input)(&mut operation, schemas);
    operation["security"] = match route.access {
        Access::Open => json!([]),
        Access::Admin => json!([{ "admin": [] }]),
        Access::Tenant => json!([{ "admin": [] }, { "apiKey": [] }]),
        Access::Business => json!([{ "apiKey": [] }]),
    };
    operation
}

/// Renames the `$ref`s to the definitions in `renamed` (each gets `suffix`), everywhere in `value`.
fn rename_refs(value: &mut Value, renamed: &[String], suffix: &str) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref")
                && let Some(name) = target.strip_prefix(DEFINITIONS)
                && renamed.iter().any(|r| r == name)
            {
                *target = format!("{target}{suffix}");
            }
            map.values_mut()
                .for_each(|v| rename_refs(v, renamed, suffix));
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| rename_refs(v, renamed, suffix)),
        _ => {}
    }
}

/// The document of `routes`.
pub(crate) fn document(routes: &[Route]) -> Value {
    let mut schemas = Schemas::new();
    let error = schemas.response::<ErrorBody>();
    let mut operations: Vec<(&Route, Value)> = routes
        .iter()
        .map(|r| (r, operation(r, &mut schemas, &error)))
        .collect();
    let mut responses = schemas.response.take_definitions(true);
    let mut requests = schemas.request.take_definitions(true);
    // A type both read and written gets two definitions where its two views may differ: the
    // request's is renamed `{name}Input`.
    let shared: Vec<String> = requests
        .keys()
        .filter(|k| responses.contains_key(*k))
        .cloned()
        .collect();
    for (_, op) in &mut operations {
        if let Some(body) = op.get_mut("requestBody") {
            rename_refs(body, &shared, "Input");
        }
    }
    let requests: Map<String, Value> = std::mem::take(&mut requests)
        .into_iter()
        .map(|(name, mut schema)| {
            rename_refs(&mut schema, &shared, "Input");
            let name = if shared.contains(&name) {
                format!("{name}Input")
            } else {
                name
            };
            (name, schema)
        })
        .collect();
    responses.extend(requests);
    let mut paths = Map::new();
    for (route, op) in operations {
        let item = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        item[route.method.as_str().to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ironhub",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The admin API (admin token; a tenant's API key for its own tenant's \
                products, devices, groups, rules, keys and usage) and the business API (a \
                tenant's API key). \
                Field-level documentation: docs/operations.md, docs/business-api.md, docs/rules.md, \
                docs/protocols/amqp.md.",
        },
        "components": {
            "securitySchemes": {
                "admin": { "type": "http", "scheme": "bearer", "description": "the admin token" },
                "apiKey": { "type": "http", "scheme": "bearer",
                            "description": "a tenant's API key: {id}.{secret}" },
            },
            "schemas": responses,
        },
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ROUTES;

    #[test]
    fn every_route_is_in_the_document_once() {
        let doc = document(&ROUTES);
        assert_eq!(doc["openapi"], "3.0.3");
        let operations: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(
            operations,
            ROUTES.len(),
            "two routes share a method and path"
        );
        let rrpc = &doc["paths"]["/api/v1/business/rrpc"]["post"];
        assert_eq!(rrpc["security"][0]["apiKey"], json!([]));
        let device = &doc["paths"]["/api/v1/products/{pk}/devices/{dn}"]["get"];
        assert_eq!(device["parameters"].as_array().unwrap().len(), 2);
        assert_eq!(
            device["parameters"][1]["schema"]["pattern"],
            DEVICE_NAME_PATTERN
        );
    }

    #[test]
    fn schemas_come_from_the_handlers_types() {
        let doc = document(&ROUTES);
        let create = &doc["paths"]["/api/v1/tenants"]["post"];
        let body = &create["requestBody"]["content"]["application/json"]["schema"];
        let name = body["$ref"]
            .as_str()
            .unwrap()
            .trim_start_matches(DEFINITIONS);
        let schema = &doc["components"]["schemas"][name];
        assert_eq!(schema["required"], json!(["id"]));
        assert_eq!(schema["additionalProperties"], json!(false));
        assert_eq!(schema["properties"]["id"]["pattern"], TENANT_ID_PATTERN);
        let list = &doc["paths"]["/api/v1/tenants"]["get"]["responses"]["200"];
        assert_eq!(
            list["content"]["application/json"]["schema"]["type"],
            "array"
        );
        let deleted = &doc["paths"]["/api/v1/tenants/{tenant}"]["delete"]["responses"];
        assert!(deleted["204"].get("content").is_none());
        let metrics = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
        assert!(metrics.get("text/plain; version=0.0.4").is_some());
        let devices = &doc["paths"]["/api/v1/business/devices"]["get"]["parameters"];
        let page_size = devices
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "page_size")
            .unwrap();
        assert_eq!(page_size["in"], "query");
        assert_eq!(page_size["schema"]["maximum"], json!(1000));
    }

    #[test]
    fn a_type_read_and_written_has_an_input_definition() {
        let doc = document(&ROUTES);
        let put = &doc["paths"]["/api/v1/profiles/{name}"]["put"];
        let body = &put["requestBody"]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(body, "#/components/schemas/ProfileInput");
        let get = &doc["paths"]["/api/v1/profiles/{name}"]["get"]["responses"]["200"];
        assert_eq!(
            get["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Profile"
        );
        assert!(doc["components"]["schemas"]["ProfileInput"].is_object());
    }
}
