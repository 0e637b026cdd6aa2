//! The REST API (JSON over HTTP/1.1): the admin API (tenants, products, devices, groups, rules,
//! keys, counters; the admin token, or a tenant's API key for its own things), the business API
//! (a tenant's API key), probes, metrics and the console's files. Every error is a status with a
//! JSON body `{"error": "<code>", "message": "<what is wrong>"}`.
//!
//! The API is a table of [`route::Route`]s, one file per resource; the router dispatches on it
//! and the OpenAPI document at `/openapi.json` is built from it.

mod business;
mod device_groups;
mod devices;
mod error;
mod groups;
mod history;
mod keys;
mod openapi;
mod ota;
mod products;
mod profiles;
mod remote_config;
mod route;
mod rules;
mod scripts;
mod services;
mod system;
mod tenants;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ironhub_core::{Hub, HubError};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
use route::{Access, Ctx, Principal, Reply, Route};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Most items one list request returns.
const MAX_LIST: usize = 1000;

/// Every route, in the order the document lists them.
static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
    [
        system::routes(),
        tenants::routes(),
        profiles::routes(),
        products::routes(),
        remote_config::routes(),
        scripts::routes(),
        services::routes(),
        device_groups::routes(),
        devices::routes(),
        history::routes(),
        groups::routes(),
        rules::routes(),
        keys::routes(),
        ota::routes(),
        business::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
});

/// The OpenAPI document, built once.
static DOCUMENT: LazyLock<Value> = LazyLock::new(|| openapi::document(&ROUTES));

/// SHA-256 of a token, as kept in the store.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two token hashes byte by byte without early exit.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Shared state of the API.
pub struct Api {
    hub: Hub,
    token_sha256: [u8; 32],
}

impl Api {
    /// An API over `hub` accepting the admin token whose SHA-256 is `token_sha256`.
    pub fn new(hub: Hub, token_sha256: [u8; 32]) -> Arc<Api> {
        Arc::new(Api { hub, token_sha256 })
    }

    /// Serves on `listener` until `shutdown`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        continue;
                    }
                },
            };
            let api = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, std::convert::Infallible>(api.handle(req, peer).await) }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        if path == "/" || path == "/console" {
            return Response::builder()
                .status(StatusCode::FOUND)
                .header(LOCATION, "/console/")
                .body(Full::new(Bytes::new()))
                .expect("static response parts are valid");
        }
        if let Some((content_type, body)) = crate::console::asset(&path) {
            return Response::builder()
                .header(CONTENT_TYPE, content_type)
                .header(CACHE_CONTROL, "no-cache")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .expect("static response parts are valid");
        }
        let result = self.dispatch(req, &method, &path).await;
        tracing::debug!(%peer, %method, %path, ok = result.is_ok(), "api request");
        render(result)
    }

    /// Finds the route, checks who calls, reads the body and runs the handler.
    async fn dispatch(
        &self,
        req: Request<Incoming>,
        method: &Method,
        path: &str,
    ) -> Result<Reply, Refused> {
        let (route, params) = match find(method, path) {
            Found::Route(route, params) => (route, params),
            Found::OtherMethods(allowed) => {
                let allowed = allowed.join(", ");
                let message = format!("{method} is not served on {path}: {allowed}");
                return Err(Refused::MethodNotAllowed(
                    allowed,
                    ApiError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method_not_allowed",
                        message,
                    ),
                ));
            }
            Found::Nothing => return Err(ApiError::not_found(format!("no route {path}")).into()),
        };
        let principal = self.principal(&req, route.access)?;
        if let Principal::Tenant(own) = &principal
            && route.access == Access::Tenant
        {
            self.owns(own, &params).await?;
        }
        let query = req.uri().query().unwrap_or("").to_owned();
        let (body, upload) = if route.streams_body {
            (Bytes::new(), Some(req.into_body()))
        } else {
            (read_body(req).await?, None)
        };
        let ctx = Ctx {
            hub: self.hub.clone(),
            principal,
            params,
            query,
            body,
            upload,
        };
        let reply = route.call(ctx).await?;
        if route.reloads
            && let Err(e) = self.hub.config_changed().await
        {
            // The other nodes pick the change up at the next one, or when they restart.
            tracing::warn!(error = %e, "could not mark the configuration as changed");
        }
        Ok(reply)
    }

    /// Who is calling, as far as `access` needs to know.
    fn principal(&self, req: &Request<Incoming>, access: Access) -> Result<Principal, ApiError> {
        if access == Access::Open {
            return Ok(Principal::Anonymous);
        }
        let presented = bearer(req);
        if access != Access::Business
            && presented.is_some_and(|t| hashes_equal(&token_hash(t), &self.token_sha256))
        {
            return Ok(Principal::Admin);
        }
        let tenant = match presented.and_then(|t| self.hub.business_tenant(t)) {
            Some(Ok(tenant)) => tenant,
            Some(Err(limited)) => return Err(ApiError::limited(limited, "business API requests")),
            None if access == Access::Business => {
                return Err(ApiError::unauthorized(
                    "missing or wrong API key (Authorization: Bearer <keyId>.<secret>)",
                ));
            }
            None => {
                return Err(ApiError::unauthorized(
                    "missing or wrong token (Authorization: Bearer <admin token> or <keyId>.<secret>)",
                ));
            }
        };
        match access {
            Access::Admin => Err(ApiError::forbidden("this operation needs the admin token")),
            _ => Ok(Principal::Tenant(tenant)),
        }
    }

    /// A tenant's key reaches its own tenant and products only; anything else is as if it did
    /// not exist.
    async fn owns(&self, own: &str, params: &[(&'static str, String)]) -> Result<(), ApiError> {
        for (name, value) in params {
            let owner = match *name {
                "tenant" => value.clone(),
                "pk" => self.hub.registry().product(value).await?.tenant,
                _ => continue,
            };
            if owner != own {
                let what = if *name == "pk" { "product" } else { "tenant" };
                return Err(HubError::NotFound {
                    what,
                    id: value.clone(),
                }
                .into());
            }
        }
        Ok(())
    }
}

/// What the table has for a request.
enum Found {
    /// This route, with the values of its path's `{name}` segments.
    Route(&'static Route, Vec<(&'static str, String)>),
    /// The path exists, with these methods only (a 405).
    OtherMethods(Vec<&'static str>),
    /// No such path (a 404). A trailing slash is the same path.
    Nothing,
}

fn find(method: &Method, path: &str) -> Found {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let mut methods = Vec::new();
    for route in ROUTES.iter() {
        if let Some(params) = route.matches(&segments) {
            if route.method == method {
                return Found::Route(route, params);
            }
            methods.push(route.method.as_str());
        }
    }
    if methods.is_empty() {
        return Found::Nothing;
    }
    methods.sort_unstable();
    methods.dedup();
    Found::OtherMethods(methods)
}

/// Why a request got no handler's answer.
enum Refused {
    /// The path exists with other methods (these).
    MethodNotAllowed(String, ApiError),
    Error(ApiError),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused::Error(e)
    }
}

fn render(result: Result<Reply, Refused>) -> Response<Full<Bytes>> {
    let response = Response::builder();
    let (response, error) = match result {
        Ok(Reply::Empty) => {
            return response
                .status(StatusCode::NO_CONTENT)
                .body(Full::new(Bytes::new()))
                .expect("static response parts are valid");
        }
        Ok(Reply::Text(content_type, text)) => {
            return response
                .header(CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(text)))
                .expect("static response parts are valid");
        }
        Ok(Reply::Json(status, body)) => {
            return response
                .status(status)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("static response parts are valid");
        }
        Err(Refused::MethodNotAllowed(allow, e)) => (response.header(ALLOW, allow), e),
        Err(Refused::Error(e)) => (response, e),
    };
    let mut response = response
        .status(error.status)
        .header(CONTENT_TYPE, "application/json");
    if let Some(secs) = error.retry_after_secs {
        response = response.header(RETRY_AFTER, secs.to_string());
    }
    let body = serde_json::to_vec(&error.body()).expect("an error body serializes");
    response
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    read_limited(req.into_body(), MAX_BODY).await
}

/// A request body of at most `max` bytes (413 beyond).
pub(crate) async fn read_limited(body: Incoming, max: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {max} bytes"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn methods(path: &str) -> Vec<&'static str> {
        match find(&Method::PATCH, path) {
            Found::OtherMethods(m) => m,
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_known_path_names_its_methods() {
        assert_eq!(methods("/api/v1/tenants"), ["GET", "POST"]);
        assert_eq!(
            methods("/api/v1/tenants/acme/"),
            ["DELETE", "GET"],
            "a trailing slash is the same path"
        );
        assert_eq!(methods("/healthz"), ["GET"]);
        assert!(methods("/api/v1/nothing-here").is_empty());
        assert!(methods("/api/v1/tenants//usage").is_empty());
    }

    #[test]
    fn a_route_gets_the_values_of_its_path() {
        let Found::Route(route, params) = find(
            &Method::PUT,
            "/api/v1/products/a1x/devices/gw-1/sub-devices/a1y/s-01",
        ) else {
            panic!("no route");
        };
        assert_eq!(
            route.path,
            "/api/v1/products/{pk}/devices/{dn}/sub-devices/{subPk}/{subDn}"
        );
        let values: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(
            values,
            [
                ("pk", "a1x"),
                ("dn", "gw-1"),
                ("subPk", "a1y"),
                ("subDn", "s-01")
            ]
        );
        assert!(matches!(
            find(&Method::POST, "/api/v1/tenants/acme/rules/r1/enable"),
            Found::Route(r, _) if r.summary == "Enable a rule"
        ));
    }
}
