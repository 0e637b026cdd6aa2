//! The OpenAPI 3 document of the REST surface, served at `/openapi.json`. It is built from the
//! route table below; a unit test reads the router's source and checks that every route it
//! matches is in the table, and nothing else is.

use serde_json::{Map, Value, json};

/// Who may call a route.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// The admin token.
    Admin,
    /// A tenant's API key (`{id}.{secret}`).
    ApiKey,
    /// No credentials (probes, metrics, this document).
    None,
}

struct Route {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    auth: Auth,
    /// The success status.
    status: u16,
}

const fn admin(method: &'static str, path: &'static str, summary: &'static str) -> Route {
    let status = match method.as_bytes()[0] {
        b'D' => 204,
        _ => 200,
    };
    Route {
        method,
        path,
        summary,
        auth: Auth::Admin,
        status,
    }
}

const fn created(path: &'static str, summary: &'static str) -> Route {
    Route {
        method: "POST",
        path,
        summary,
        auth: Auth::Admin,
        status: 201,
    }
}

const fn business(method: &'static str, path: &'static str, summary: &'static str) -> Route {
    Route {
        method,
        path,
        summary,
        auth: Auth::ApiKey,
        status: 200,
    }
}

const fn open(path: &'static str, summary: &'static str) -> Route {
    Route {
        method: "GET",
        path,
        summary,
        auth: Auth::None,
        status: 200,
    }
}

const ROUTES: &[Route] = &[
    open("/healthz", "The process answers"),
    open(
        "/readyz",
        "The store and every sink are usable (503 otherwise)",
    ),
    admin(
        "GET",
        "/metrics",
        "Prometheus metrics (text format; the admin token)",
    ),
    open("/openapi.json", "This document"),
    admin(
        "GET",
        "/api/v1/whoami",
        "Who the credentials are (admin or a tenant)",
    ),
    admin("GET", "/api/v1/stats", "Hub counters"),
    created("/api/v1/tenants", "Create a tenant"),
    admin("GET", "/api/v1/tenants", "List tenants"),
    admin("GET", "/api/v1/tenants/{tenant}", "A tenant"),
    admin(
        "DELETE",
        "/api/v1/tenants/{tenant}",
        "Delete a tenant without products",
    ),
    admin(
        "PUT",
        "/api/v1/tenants/{tenant}/profile",
        "Set a tenant's profile",
    ),
    admin(
        "GET",
        "/api/v1/tenants/{tenant}/usage",
        "A tenant's usage and monthly events",
    ),
    admin("GET", "/api/v1/profiles", "List profiles"),
    admin("GET", "/api/v1/profiles/{name}", "A profile"),
    admin(
        "PUT",
        "/api/v1/profiles/{name}",
        "Create or replace a profile",
    ),
    admin(
        "DELETE",
        "/api/v1/profiles/{name}",
        "Delete an unused profile",
    ),
    created(
        "/api/v1/products",
        "Create a product (its ProductSecret is shown once)",
    ),
    admin("GET", "/api/v1/products", "List products (?tenant=)"),
    admin("GET", "/api/v1/products/{pk}", "A product"),
    admin(
        "DELETE",
        "/api/v1/products/{pk}",
        "Delete a product and its devices",
    ),
    admin(
        "GET",
        "/api/v1/products/{pk}/topics",
        "A product's topic categories",
    ),
    admin(
        "PUT",
        "/api/v1/products/{pk}/topics",
        "Replace a product's topic categories",
    ),
    admin(
        "GET",
        "/api/v1/products/{pk}/tsl",
        "A product's thing model",
    ),
    admin(
        "PUT",
        "/api/v1/products/{pk}/tsl",
        "Set a product's thing model",
    ),
    created(
        "/api/v1/products/{pk}/devices",
        "Create a device (its DeviceSecret is shown once)",
    ),
    admin(
        "GET",
        "/api/v1/products/{pk}/devices",
        "List a product's devices (?limit=)",
    ),
    admin("GET", "/api/v1/products/{pk}/devices/{dn}", "A device"),
    admin(
        "DELETE",
        "/api/v1/products/{pk}/devices/{dn}",
        "Delete a device",
    ),
    admin(
        "POST",
        "/api/v1/products/{pk}/devices/{dn}/disable",
        "Disable a device",
    ),
    admin(
        "POST",
        "/api/v1/products/{pk}/devices/{dn}/enable",
        "Enable a device",
    ),
    admin(
        "GET",
        "/api/v1/products/{pk}/devices/{dn}/usage",
        "A device's usage (24-hour publishing status)",
    ),
    admin(
        "GET",
        "/api/v1/products/{pk}/devices/{dn}/messages",
        "The last messages a device sent (newest first, this node's memory)",
    ),
    admin(
        "GET",
        "/api/v1/products/{pk}/devices/{dn}/shadow",
        "A device's shadow",
    ),
    admin(
        "GET",
        "/api/v1/products/{pk}/devices/{dn}/sub-devices",
        "A gateway's sub-devices",
    ),
    admin(
        "PUT",
        "/api/v1/products/{pk}/devices/{dn}/sub-devices/{subPk}/{subDn}",
        "Attach a sub-device to a gateway",
    ),
    admin(
        "DELETE",
        "/api/v1/products/{pk}/devices/{dn}/sub-devices/{subPk}/{subDn}",
        "Detach a sub-device",
    ),
    admin("POST", "/api/v1/messages", "Publish a message as the hub"),
    created(
        "/api/v1/tenants/{tenant}/consumer-groups",
        "Create a consumer group (its credentials are shown once)",
    ),
    admin(
        "GET",
        "/api/v1/tenants/{tenant}/consumer-groups",
        "List consumer groups",
    ),
    admin(
        "GET",
        "/api/v1/tenants/{tenant}/consumer-groups/{id}",
        "A consumer group",
    ),
    admin(
        "DELETE",
        "/api/v1/tenants/{tenant}/consumer-groups/{id}",
        "Delete a consumer group",
    ),
    admin(
        "PUT",
        "/api/v1/tenants/{tenant}/consumer-groups/{id}/products/{pk}",
        "Associate a product",
    ),
    admin(
        "DELETE",
        "/api/v1/tenants/{tenant}/consumer-groups/{id}/products/{pk}",
        "Dissociate a product",
    ),
    admin("GET", "/api/v1/sinks", "Sink counters"),
    created("/api/v1/tenants/{tenant}/rules", "Create a rule"),
    admin(
        "GET",
        "/api/v1/tenants/{tenant}/rules",
        "List rules with counters",
    ),
    admin(
        "GET",
        "/api/v1/tenants/{tenant}/rules/{id}",
        "A rule with counters",
    ),
    admin(
        "PUT",
        "/api/v1/tenants/{tenant}/rules/{id}",
        "Replace a rule",
    ),
    admin(
        "DELETE",
        "/api/v1/tenants/{tenant}/rules/{id}",
        "Delete a rule",
    ),
    admin(
        "POST",
        "/api/v1/tenants/{tenant}/rules/{id}/enable",
        "Enable a rule",
    ),
    admin(
        "POST",
        "/api/v1/tenants/{tenant}/rules/{id}/disable",
        "Disable a rule",
    ),
    created(
        "/api/v1/tenants/{tenant}/api-keys",
        "Create a business API key (its token is shown once)",
    ),
    admin("GET", "/api/v1/tenants/{tenant}/api-keys", "List API keys"),
    admin(
        "DELETE",
        "/api/v1/tenants/{tenant}/api-keys/{id}",
        "Revoke an API key",
    ),
    business(
        "POST",
        "/api/v1/business/pub",
        "Send a message to one of a device's topics",
    ),
    business(
        "POST",
        "/api/v1/business/rrpc",
        "Call a device synchronously (SUCCESS, TIMEOUT or OFFLINE)",
    ),
    business(
        "POST",
        "/api/v1/business/broadcast",
        "Send a message to every online device of a product",
    ),
    business(
        "GET",
        "/api/v1/business/devices",
        "A page of a product's devices (?product_key=&state=&after=&page_size=)",
    ),
    business(
        "GET",
        "/api/v1/business/devices/{pk}/{dn}",
        "A device's status",
    ),
    business(
        "GET",
        "/api/v1/business/devices/{pk}/{dn}/history",
        "A device's online/offline changes of the last 7 days, newest first (?limit=)",
    ),
    business(
        "GET",
        "/api/v1/business/shadows/{pk}/{dn}",
        "A device's shadow",
    ),
    business(
        "PUT",
        "/api/v1/business/shadows/{pk}/{dn}",
        "Set desired shadow properties",
    ),
];

fn parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
        })
        .collect()
}

/// Admin routes a tenant's API key may call for its own tenant (the router's `tenant_may`):
/// its products and devices, and what lives under its tenant but the tenant and its profile.
fn tenant_key_may(r: &Route) -> bool {
    let own_tenant = r.path.starts_with("/api/v1/tenants/{tenant}")
        && !r.path.ends_with("/profile")
        && !(r.method == "DELETE" && r.path == "/api/v1/tenants/{tenant}");
    own_tenant
        || r.path.starts_with("/api/v1/products")
        || r.path == "/api/v1/whoami"
        || (r.method == "GET" && r.path == "/api/v1/tenants")
}

fn operation(r: &Route) -> Value {
    let mut op = json!({
        "summary": r.summary,
        "parameters": parameters(r.path),
        "responses": {
            r.status.to_string(): { "description": "success",
                "content": { "application/json": { "schema": { "type": "object" } } } },
            "4XX": { "description": "refused: the body names the error (and the limit)",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
        },
    });
    match r.auth {
        Auth::Admin if tenant_key_may(r) => {
            op["security"] = json!([{ "admin": [] }, { "apiKey": [] }]);
        }
        Auth::Admin => op["security"] = json!([{ "admin": [] }]),
        Auth::ApiKey => op["security"] = json!([{ "apiKey": [] }]),
        Auth::None => op["security"] = json!([]),
    }
    if matches!(r.method, "POST" | "PUT") && r.auth != Auth::None {
        op["requestBody"] = json!({ "required": false,
            "content": { "application/json": { "schema": { "type": "object" } } } });
    }
    op
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let item = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        item[r.method.to_ascii_lowercase()] = operation(r);
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
            "schemas": {
                "Error": { "type": "object", "required": ["error", "message"], "properties": {
                    "error": { "type": "string" }, "message": { "type": "string" },
                    "limit": { "type": "string", "description": "the limit id (docs/limits.md)" },
                } },
            },
        },
        "paths": paths,
    })
}

/// The methods the route table has for `path` (its `{...}` segments match any one segment):
/// empty when no route has the path, which is then a 404; otherwise a request with another
/// method is a 405 naming these.
pub(crate) fn allowed_methods(path: &str) -> Vec<&'static str> {
    let path = path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    let mut methods: Vec<&'static str> = ROUTES
        .iter()
        .filter(|r| {
            let pattern: Vec<&str> = r.path.split('/').collect();
            pattern.len() == segments.len()
                && pattern
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
        })
        .map(|r| r.method)
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(METHOD, /path/{}/...)` of every route the router matches, read from its source:
    /// literal segments stay, bindings become `{}`, `x @ ("a" | "b")` gives one route each.
    fn router_routes() -> BTreeSet<(String, String)> {
        let source: String = include_str!("admin.rs")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let mut out = BTreeSet::new();
        for part in source.split("(Method::").skip(1) {
            let Some((method, rest)) = part.split_once(",[\"api\",\"v1\"") else {
                continue;
            };
            let Some(end) = rest.find(']') else {
                continue;
            };
            let mut paths = vec![String::from("/api/v1")];
            for seg in rest[..end].split(',').filter(|s| !s.is_empty()) {
                let choices: Vec<String> = if let Some((_, alts)) = seg.split_once('@') {
                    alts.trim_matches(|c| c == '(' || c == ')')
                        .split('|')
                        .map(|a| a.trim_matches('"').to_owned())
                        .collect()
                } else if seg.starts_with('"') {
                    vec![seg.trim_matches('"').to_owned()]
                } else {
                    vec!["{}".to_owned()]
                };
                paths = paths
                    .iter()
                    .flat_map(|p| choices.iter().map(move |c| format!("{p}/{c}")))
                    .collect();
            }
            for p in paths {
                out.insert((method.to_owned(), p));
            }
        }
        out
    }

    fn documented() -> BTreeSet<(String, String)> {
        ROUTES
            .iter()
            .filter(|r| r.path.starts_with("/api/"))
            .map(|r| {
                let normal: Vec<&str> = r
                    .path
                    .split('/')
                    .map(|s| if s.starts_with('{') { "{}" } else { s })
                    .collect();
                (r.method.to_owned(), normal.join("/"))
            })
            .collect()
    }

    #[test]
    fn every_route_of_the_router_is_documented_and_nothing_else() {
        let routes = router_routes();
        assert!(routes.len() > 40, "the source parser found only {routes:?}");
        let docs = documented();
        let missing: Vec<_> = routes.difference(&docs).collect();
        let extra: Vec<_> = docs.difference(&routes).collect();
        assert!(
            missing.is_empty(),
            "routes missing from openapi.rs: {missing:#?}"
        );
        assert!(
            extra.is_empty(),
            "documented routes the router lacks: {extra:#?}"
        );
    }

    #[test]
    fn a_known_path_names_its_methods() {
        assert_eq!(allowed_methods("/api/v1/tenants"), ["GET", "POST"]);
        assert_eq!(
            allowed_methods("/api/v1/tenants/acme/"),
            ["DELETE", "GET"],
            "a trailing slash is the same path"
        );
        assert_eq!(allowed_methods("/healthz"), ["GET"]);
        assert!(allowed_methods("/api/v1/nothing-here").is_empty());
        assert!(allowed_methods("/api/v1/tenants//usage").is_empty());
    }

    #[test]
    fn the_document_is_openapi_3_with_every_path() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(
            paths
                .values()
                .map(|p| p.as_object().unwrap().len())
                .sum::<usize>(),
            ROUTES.len()
        );
        let rrpc = &doc["paths"]["/api/v1/business/rrpc"]["post"];
        assert_eq!(rrpc["security"][0]["apiKey"], json!([]));
        let device = &doc["paths"]["/api/v1/products/{pk}/devices/{dn}"]["get"];
        assert_eq!(device["parameters"].as_array().unwrap().len(), 2);
    }
}
