//! The admin REST API (JSON over HTTP/1.1): tenants, products, devices, an admin downlink and
//! counters. Every request needs `Authorization: Bearer <admin token>`; every error is a status
//! with a JSON body `{"error": "<code>", "message": "<what is wrong>"}`.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ironhub_core::data::model::NodeType;
use ironhub_core::data::topic_category::TopicCategory;
use ironhub_core::hub::{RRPC_TIMEOUT_MS, RuleSpec};
use ironhub_core::limits::{LimitId, LimitKind, Limited as Limit, Profile};
use ironhub_core::store::{records, transact};
use ironhub_core::tsl::ThingModel;
use ironhub_core::{Hub, HubError, QoS};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Most devices one list request returns.
const MAX_LIST: usize = 1000;

/// An API error: status, stable code, message for the caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// For limits: the limit id (docs/limits.md) and when to retry.
    limit: Option<&'static str>,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            limit: None,
            retry_after_secs: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            HubError::AlreadyExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", e.to_string())
            }
            HubError::Invalid(m) => ApiError::bad_request(m),
            HubError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            HubError::Limited { limited, message } => {
                let (status, code) = match limited.limit.kind() {
                    _ if matches!(limited.limit, LimitId::BroadcastSize | LimitId::ShadowSize) => {
                        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
                    }
                    LimitKind::Rate => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
                    LimitKind::Quota => (StatusCode::FORBIDDEN, "limit_exceeded"),
                    LimitKind::Malformed => (StatusCode::BAD_REQUEST, "invalid_request"),
                };
                let mut e = ApiError::new(status, code, format!("{limited} ({message})"));
                e.limit = Some(limited.limit.id());
                e.retry_after_secs = limited.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1));
                e
            }
            HubError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            HubError::Store(err) => {
                // Details go to the log, not to the caller.
                tracing::error!(error = %err, "store failure in admin API");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "storage is unavailable",
                )
            }
        }
    }
}

type ApiResult = Result<(StatusCode, Value), ApiError>;

/// Who called the admin API.
enum Principal {
    /// The admin token: everything.
    Admin,
    /// A tenant's API key: that tenant's things only.
    Tenant(String),
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong token (Authorization: Bearer <admin token> or <keyId>.<secret>)",
    )
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// Shared state of the admin API.
pub struct Admin {
    hub: Hub,
    token_sha256: [u8; 32],
}

/// SHA-256 of a token, as kept in the store.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two token hashes byte by byte without early exit.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Admin {
    /// An API over `hub` accepting the token whose SHA-256 is `token_sha256`.
    pub fn new(hub: Hub, token_sha256: [u8; 32]) -> Arc<Admin> {
        Arc::new(Admin { hub, token_sha256 })
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
            let admin = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, std::convert::Infallible>(admin.handle(req, peer).await) }
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
        if path == "/openapi.json" {
            return Response::builder()
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(
                    crate::openapi::document().to_string(),
                )))
                .expect("static response parts are valid");
        }
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
        let allowed = crate::openapi::allowed_methods(&path);
        if !allowed.is_empty() && !allowed.contains(&method.as_str()) {
            let body = json!({
                "error": "method_not_allowed",
                "message": format!("{method} is not served on {path}: {}", allowed.join(", ")),
            });
            return Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header(CONTENT_TYPE, "application/json")
                .header(ALLOW, allowed.join(", "))
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("static response parts are valid");
        }
        let result = if path == "/metrics" {
            // Per-tenant figures: the admin token only (tenants reach this listener too, for
            // the console).
            if matches!(self.principal(&req), Ok(Principal::Admin)) {
                return Response::builder()
                    .header(CONTENT_TYPE, "text/plain; version=0.0.4")
                    .body(Full::new(Bytes::from(crate::metrics::render(
                        &self.hub.stats(),
                        &self.hub.sink_stats(),
                    ))))
                    .expect("static response parts are valid");
            }
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "/metrics needs the admin token (Authorization: Bearer <token>)",
            ))
        } else {
            self.route(req).await
        };
        // What the hub caches (tenants' profiles, groups, rules, keys, models, categories):
        // device records are read from the store and need no reload.
        let changes_config = method != Method::GET
            && path.starts_with("/api/v1/")
            && !path.starts_with("/api/v1/business/")
            && !path.contains("/devices")
            && path != "/api/v1/messages";
        if changes_config
            && result.is_ok()
            && let Err(e) = self.hub.config_changed().await
        {
            // The other nodes pick the change up at the next one, or when they restart.
            tracing::warn!(error = %e, "could not mark the configuration as changed");
        }
        let mut retry_after = None;
        let (status, body) = match result {
            Ok((status, body)) => (status, body),
            Err(e) => {
                retry_after = e.retry_after_secs;
                let mut body = json!({ "error": e.code, "message": e.message });
                if let Some(limit) = e.limit {
                    body["limit"] = json!(limit);
                }
                (e.status, body)
            }
        };
        tracing::debug!(%peer, %method, %path, status = status.as_u16(), "admin request");
        let bytes = if status == StatusCode::NO_CONTENT {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let mut response = Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json");
        if let Some(secs) = retry_after {
            response = response.header(RETRY_AFTER, secs.to_string());
        }
        response
            .body(Full::new(bytes))
            .expect("static response parts are valid")
    }

    /// Who is calling: the admin token, or a tenant's API key (rate-limited like the business
    /// API, L-076).
    fn principal(&self, req: &Request<Incoming>) -> Result<Principal, ApiError> {
        let presented = bearer(req);
        let is_admin = |t: &str| hashes_equal(&token_hash(t), &self.token_sha256);
        match presented {
            Some(t) if is_admin(t) => Ok(Principal::Admin),
            Some(t) => match self.hub.business_tenant(t) {
                Some(Ok(tenant)) => Ok(Principal::Tenant(tenant)),
                Some(Err(limited)) => Err(limited_error(limited)),
                None => Err(unauthorized()),
            },
            None => Err(unauthorized()),
        }
    }

    /// What a tenant's API key may do on the admin API: read and manage what belongs to its
    /// tenant (products, devices, consumer groups, rules, API keys, usage); tenants, profiles,
    /// hub-wide counters and publishing as the hub stay with the admin token. Another tenant's
    /// things answer 404, as if they did not exist.
    async fn tenant_may(
        &self,
        own: &str,
        method: &Method,
        segments: &[&str],
    ) -> Result<(), ApiError> {
        match segments {
            ["api", "v1", "whoami"] => Ok(()),
            ["api", "v1", "tenants"] if method == Method::GET => Ok(()),
            ["api", "v1", "tenants", id, rest @ ..] => {
                if id != &own {
                    return Err(HubError::NotFound {
                        what: "tenant",
                        id: (*id).to_owned(),
                    }
                    .into());
                }
                match (method, rest) {
                    (&Method::DELETE, []) | (_, ["profile"]) => Err(forbidden(
                        "changing a tenant or its profile needs the admin token",
                    )),
                    _ => Ok(()),
                }
            }
            ["api", "v1", "products"] => Ok(()),
            ["api", "v1", "products", pk, ..] => {
                let product = self.hub.product(pk).await?;
                if product.tenant == own {
                    Ok(())
                } else {
                    Err(HubError::NotFound {
                        what: "product",
                        id: (*pk).to_owned(),
                    }
                    .into())
                }
            }
            _ => Err(forbidden("this operation needs the admin token")),
        }
    }

    async fn route(&self, req: Request<Incoming>) -> ApiResult {
        if req.uri().path() == "/healthz" {
            return Ok((StatusCode::OK, json!({ "status": "ok" })));
        }
        if req.uri().path() == "/readyz" {
            // Ready when the store answers a read.
            let store = self.hub.store().clone();
            if let Err(e) = transact(&*store, |t| {
                Box::pin(records::get_meta(t, "admin_token_sha256"))
            })
            .await
            {
                tracing::error!(error = %e, "readiness: store unavailable");
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "storage is unavailable",
                ));
            }
            // Sinks keep what they cannot send in the store, so a broker outage does not stop
            // the hub; readiness still reports it for operators and load balancers.
            return match self.hub.sinks_ready().await {
                Ok(()) => Ok((StatusCode::OK, json!({ "status": "ready" }))),
                Err(e) => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e,
                )),
            };
        }
        if req.uri().path().starts_with("/api/v1/business/") {
            return self.business(req).await;
        }
        let principal = self.principal(&req)?;
        let method = req.method().clone();
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let mut query = req.uri().query().unwrap_or("").to_owned();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        if let Principal::Tenant(own) = &principal {
            self.tenant_may(own, &method, &segments).await?;
            if segments == ["api", "v1", "products"] {
                // A tenant lists its own products, whatever the query asks.
                query = format!("tenant={own}");
            }
        }
        let body = read_body(req).await?;
        let hub = &self.hub;
        match (method, segments.as_slice()) {
            (Method::GET, ["api", "v1", "whoami"]) => Ok((
                StatusCode::OK,
                match &principal {
                    Principal::Admin => json!({ "role": "admin" }),
                    Principal::Tenant(t) => json!({ "role": "tenant", "tenant": t }),
                },
            )),
            (Method::GET, ["api", "v1", "stats"]) => Ok((StatusCode::OK, json!(hub.stats()))),
            (Method::POST, ["api", "v1", "tenants"]) => {
                let r: CreateTenant = parse(&body)?;
                let name = r.name.as_deref().unwrap_or(&r.id);
                let t = hub.create_tenant(&r.id, name, r.profile.as_deref()).await?;
                Ok((StatusCode::CREATED, json!(t)))
            }
            (Method::PUT, ["api", "v1", "tenants", id, "profile"]) => {
                let r: SetProfile = parse(&body)?;
                Ok((
                    StatusCode::OK,
                    json!(hub.set_tenant_profile(id, &r.profile).await?),
                ))
            }
            (Method::GET, ["api", "v1", "tenants", id, "usage"]) => {
                Ok((StatusCode::OK, json!(hub.tenant_usage(id).await?)))
            }
            (Method::GET, ["api", "v1", "profiles"]) => Ok((StatusCode::OK, json!(hub.profiles()))),
            (Method::GET, ["api", "v1", "profiles", name]) => {
                Ok((StatusCode::OK, json!(*hub.profile_named(name)?)))
            }
            (Method::PUT, ["api", "v1", "profiles", name]) => {
                let mut p: Profile = parse(&body)?;
                p.name = (*name).to_owned();
                Ok((StatusCode::OK, json!(hub.put_profile(p).await?)))
            }
            (Method::DELETE, ["api", "v1", "profiles", name]) => {
                hub.delete_profile(name).await?;
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            (Method::GET, ["api", "v1", "tenants"]) => match &principal {
                Principal::Admin => Ok((StatusCode::OK, json!(hub.tenants().await?))),
                Principal::Tenant(own) => Ok((StatusCode::OK, json!([hub.tenant(own).await?]))),
            },
            (Method::GET, ["api", "v1", "tenants", id]) => {
                Ok((StatusCode::OK, json!(hub.tenant(id).await?)))
            }
            (Method::DELETE, ["api", "v1", "tenants", id]) => {
                hub.delete_tenant(id).await?;
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            (Method::POST, ["api", "v1", "products"]) => {
                let r: CreateProduct = parse(&body)?;
                if let Principal::Tenant(own) = &principal
                    && *own != r.tenant
                {
                    return Err(forbidden(
                        "a tenant's API key creates products of its tenant only",
                    ));
                }
                let p = hub
                    .create_product(
                        &r.tenant,
                        &r.name,
                        r.node_type.unwrap_or_default(),
                        r.dynamic_registration,
                    )
                    .await?;
                // The ProductSecret is shown here, once.
                Ok((StatusCode::CREATED, json!(p)))
            }
            (Method::GET, ["api", "v1", "products"]) => {
                let tenant = query_param(&query, "tenant");
                Ok((
                    StatusCode::OK,
                    json!(hub.products(tenant.as_deref()).await?),
                ))
            }
            (Method::GET, ["api", "v1", "products", pk]) => {
                let p = hub.product(pk).await?;
                Ok((
                    StatusCode::OK,
                    json!(ironhub_core::hub::ProductView::from(&p)),
                ))
            }
            (Method::DELETE, ["api", "v1", "products", pk]) => {
                hub.delete_product(pk).await?;
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            (Method::POST, ["api", "v1", "products", pk, "devices"]) => {
                let r: CreateDevice = if body.is_empty() {
                    CreateDevice::default()
                } else {
                    parse(&body)?
                };
                let d = hub.create_device(pk, r.device_name.as_deref()).await?;
                // The DeviceSecret is shown here, once.
                Ok((StatusCode::CREATED, json!(d)))
            }
            (Method::PUT, ["api", "v1", "products", pk, "topics"]) => {
                let categories: Vec<TopicCategory> = parse(&body)?;
                Ok((
                    StatusCode::OK,
                    json!(hub.put_topic_categories(pk, categories).await?),
                ))
            }
            (Method::GET, ["api", "v1", "products", pk, "topics"]) => {
                Ok((StatusCode::OK, json!(hub.topic_categories(pk).await?)))
            }
            (Method::PUT, ["api", "v1", "products", pk, "tsl"]) => {
                let model: ThingModel = parse(&body)?;
                hub.put_thing_model(pk, model).await?;
                Ok((StatusCode::OK, json!(hub.thing_model(pk).await?)))
            }
            (Method::GET, ["api", "v1", "products", pk, "tsl"]) => {
                Ok((StatusCode::OK, json!(hub.thing_model(pk).await?)))
            }
            (Method::GET, ["api", "v1", "products", pk, "devices"]) => {
                let limit = match query_param(&query, "limit") {
                    Some(l) => l
                        .parse::<usize>()
                        .map_err(|_| ApiError::bad_request("limit must be a number"))?,
                    None => MAX_LIST,
                };
                Ok((
                    StatusCode::OK,
                    json!(hub.devices(pk, limit.min(MAX_LIST)).await?),
                ))
            }
            (Method::GET, ["api", "v1", "products", pk, "devices", dn]) => {
                Ok((StatusCode::OK, json!(hub.device(pk, dn).await?)))
            }
            (Method::GET, ["api", "v1", "products", pk, "devices", dn, "usage"]) => {
                Ok((StatusCode::OK, json!(hub.device_usage(pk, dn).await?)))
            }
            (Method::GET, ["api", "v1", "products", pk, "devices", dn, "messages"]) => Ok((
                StatusCode::OK,
                json!({ "messages": hub.recent_messages(pk, dn).await? }),
            )),
            (Method::GET, ["api", "v1", "products", pk, "devices", dn, "shadow"]) => {
                let device = hub.device(pk, dn).await?;
                Ok((
                    StatusCode::OK,
                    json!(hub.shadow(&device.tenant, pk, dn).await?),
                ))
            }
            (
                Method::POST,
                [
                    "api",
                    "v1",
                    "products",
                    pk,
                    "devices",
                    dn,
                    action @ ("disable" | "enable"),
                ],
            ) => {
                let d = hub.set_device_enabled(pk, dn, *action == "enable").await?;
                Ok((StatusCode::OK, json!(d)))
            }
            (Method::GET, ["api", "v1", "products", pk, "devices", dn, "sub-devices"]) => {
                Ok((StatusCode::OK, json!(hub.sub_devices(pk, dn).await?)))
            }
            (
                Method::PUT,
                [
                    "api",
                    "v1",
                    "products",
                    pk,
                    "devices",
                    dn,
                    "sub-devices",
                    spk,
                    sdn,
                ],
            ) => {
                hub.add_sub_device((pk, dn), (spk, sdn)).await?;
                Ok((StatusCode::OK, json!(hub.sub_devices(pk, dn).await?)))
            }
            (
                Method::DELETE,
                [
                    "api",
                    "v1",
                    "products",
                    pk,
                    "devices",
                    dn,
                    "sub-devices",
                    spk,
                    sdn,
                ],
            ) => {
                hub.remove_sub_device((pk, dn), (spk, sdn)).await?;
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            (Method::DELETE, ["api", "v1", "products", pk, "devices", dn]) => {
                hub.delete_device(pk, dn).await?;
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            (Method::POST, ["api", "v1", "tenants", tenant, "consumer-groups"]) => {
                let r: CreateGroup = parse(&body)?;
                let (g, credentials) = hub
                    .create_consumer_group(tenant, &r.name, r.sink.as_deref())
                    .await?;
                let mut body = json!(g);
                body["credentials"] = json!(credentials);
                Ok((StatusCode::CREATED, body))
            }
            (Method::GET, ["api", "v1", "tenants", tenant, "consumer-groups"]) => {
                Ok((StatusCode::OK, json!(hub.consumer_groups(tenant).await?)))
            }
            (Method::GET, ["api", "v1", "tenants", tenant, "consumer-groups", id]) => {
                Ok((StatusCode::OK, json!(hub.consumer_group(tenant, id).await?)))
            }
            (Method::DELETE, ["api", "v1", "tenants", tenant, "consumer-groups", id]) => {
                hub.delete_consumer_group(tenant, id).await?;
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            (
                Method::PUT,
                [
                    "api",
                    "v1",
                    "tenants",
                    tenant,
                    "consumer-groups",
                    id,
                    "products",
                    pk,
                ],
            ) => {
                let g = hub.associate_product(tenant, id, pk).await?;
                Ok((StatusCode::OK, json!(g)))
            }
            (
                Method::DELETE,
                [
                    "api",
                    "v1",
                    "tenants",
                    tenant,
                    "consumer-groups",
                    id,
                    "products",
                    pk,
                ],
            ) => {
                let g = hub.dissociate_product(tenant, id, pk).await?;
                Ok((StatusCode::OK, json!(g)))
            }
            (Method::POST, ["api", "v1", "tenants", tenant, "rules"]) => {
                let spec: RuleSpec = parse(&body)?;
                Ok((
                    StatusCode::CREATED,
                    json!(hub.create_rule(tenant, spec).await?),
                ))
            }
            (Method::GET, ["api", "v1", "tenants", tenant, "rules"]) => {
                Ok((StatusCode::OK, json!(hub.rules(tenant).await?)))
            }
            (Method::GET, ["api", "v1", "tenants", tenant, "rules", id]) => {
                Ok((StatusCode::OK, json!(hub.rule(tenant, id).await?)))
            }
            (Method::PUT, ["api", "v1", "tenants", tenant, "rules", id]) => {
                let spec: RuleSpec = parse(&body)?;
                Ok((
                    StatusCode::OK,
                    json!(hub.update_rule(tenant, id, spec).await?),
                ))
            }
            (
                Method::POST,
                [
                    "api",
                    "v1",
                    "tenants",
                    tenant,
                    "rules",
                    id,
                    action @ ("enable" | "disable"),
                ],
            ) => {
                let r = hub
                    .set_rule_enabled(tenant, id, *action == "enable")
                    .await?;
                Ok((StatusCode::OK, json!(r)))
            }
            (Method::DELETE, ["api", "v1", "tenants", tenant, "rules", id]) => {
                hub.delete_rule(tenant, id).await?;
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            (Method::POST, ["api", "v1", "tenants", tenant, "api-keys"]) => {
                let r: CreateApiKey = parse(&body)?;
                let (key, secret) = hub.create_api_key(tenant, &r.name).await?;
                let mut v = json!(key);
                v["token"] = json!(format!("{}.{secret}", key.id));
                Ok((StatusCode::CREATED, v))
            }
            (Method::GET, ["api", "v1", "tenants", tenant, "api-keys"]) => {
                hub.tenant(tenant).await?;
                Ok((StatusCode::OK, json!(hub.api_keys(tenant))))
            }
            (Method::DELETE, ["api", "v1", "tenants", tenant, "api-keys", id]) => {
                hub.delete_api_key(tenant, id).await?;
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            (Method::GET, ["api", "v1", "sinks"]) => Ok((StatusCode::OK, json!(hub.sink_stats()))),
            (Method::POST, ["api", "v1", "messages"]) => {
                let r: PublishMessage = parse(&body)?;
                let qos = QoS::from_u8(r.qos)
                    .ok_or_else(|| ApiError::bad_request("qos must be 0, 1 or 2"))?;
                let n = hub
                    .publish_as_hub(&r.tenant, &r.topic, Bytes::from(r.payload), qos, r.retain)
                    .await?;
                Ok((StatusCode::OK, json!({ "delivered_to": n })))
            }
            (_, ["api", "v1", ..]) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route {path}"),
            )),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route {path}"),
            )),
        }
    }
}

impl Admin {
    /// The business API: authenticated by a tenant's API key, scoped to that tenant.
    async fn business(&self, req: Request<Incoming>) -> ApiResult {
        let hub = &self.hub;
        let tenant = match bearer(&req).and_then(|t| hub.business_tenant(t)) {
            Some(Ok(tenant)) => tenant,
            Some(Err(limited)) => return Err(limited_error(limited)),
            None => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong API key (Authorization: Bearer <keyId>.<secret>)",
                ));
            }
        };
        let method = req.method().clone();
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let body = read_body(req).await?;
        match (method, segments.as_slice()) {
            (Method::POST, ["api", "v1", "business", "pub"]) => {
                let r: BusinessPub = parse(&body)?;
                let qos = match r.qos {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(ApiError::bad_request("qos must be 0 or 1")),
                };
                let payload = r.payload.decode()?;
                let n = hub
                    .pub_to_device(
                        &tenant,
                        &r.product_key,
                        &r.device_name,
                        &r.topic,
                        payload,
                        qos,
                    )
                    .await?;
                Ok((StatusCode::OK, json!({ "delivered_to": n })))
            }
            (Method::POST, ["api", "v1", "business", "rrpc"]) => {
                let r: BusinessRrpc = parse(&body)?;
                let payload = r.payload.decode()?;
                let timeout = r.timeout_ms.unwrap_or(*RRPC_TIMEOUT_MS.end());
                let outcome = hub
                    .rrpc(&tenant, &r.product_key, &r.device_name, payload, timeout)
                    .await?;
                Ok((StatusCode::OK, json!(outcome)))
            }
            (Method::POST, ["api", "v1", "business", "broadcast"]) => {
                let r: BusinessBroadcast = parse(&body)?;
                let payload = r.payload.decode()?;
                let (id, n) = hub.broadcast(&tenant, &r.product_key, payload).await?;
                Ok((
                    StatusCode::OK,
                    json!({ "message_id": id, "delivered_to": n }),
                ))
            }
            (Method::GET, ["api", "v1", "business", "devices"]) => {
                let pk = query_param(&query, "product_key")
                    .ok_or_else(|| ApiError::bad_request("product_key is required"))?;
                let state = match query_param(&query, "state") {
                    None => None,
                    Some(s) => Some(serde_json::from_value(json!(s)).map_err(|_| {
                        ApiError::bad_request("state: inactive, online, offline or disabled")
                    })?),
                };
                let page_size = match query_param(&query, "page_size") {
                    None => 50,
                    Some(n) => n
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIST).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad_request(format!("page_size must be 1 to {MAX_LIST}"))
                        })?,
                };
                let after = query_param(&query, "after");
                let page = hub
                    .device_page(&tenant, &pk, state, after.as_deref(), page_size)
                    .await?;
                Ok((StatusCode::OK, json!(page)))
            }
            (Method::GET, ["api", "v1", "business", "devices", pk, dn, "history"]) => {
                let limit = query_param(&query, "limit")
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(100)
                    .clamp(1, 1000);
                let events = hub.status_history(&tenant, pk, dn, limit).await?;
                Ok((StatusCode::OK, json!({ "events": events })))
            }
            (Method::GET, ["api", "v1", "business", "shadows", pk, dn]) => {
                Ok((StatusCode::OK, json!(hub.shadow(&tenant, pk, dn).await?)))
            }
            (Method::PUT, ["api", "v1", "business", "shadows", pk, dn]) => {
                let r: DesiredUpdate = parse(&body)?;
                let shadow = hub
                    .set_desired(&tenant, pk, dn, &r.state.desired, r.version)
                    .await?;
                Ok((StatusCode::OK, json!(shadow)))
            }
            (Method::GET, ["api", "v1", "business", "devices", pk, dn]) => Ok((
                StatusCode::OK,
                json!(hub.device_status(&tenant, pk, dn).await?),
            )),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route {path}"),
            )),
        }
    }
}

fn limited_error(limited: Limit) -> ApiError {
    ApiError::from(HubError::Limited {
        limited,
        message: "business API requests".into(),
    })
}

/// A payload in a JSON body: text, or base64 with `"encoding": "base64"`.
#[derive(Deserialize)]
struct Payload {
    payload: String,
    #[serde(default)]
    encoding: Option<String>,
}

impl Payload {
    fn decode(self) -> Result<Bytes, ApiError> {
        match self.encoding.as_deref() {
            None | Some("text") => Ok(Bytes::from(self.payload)),
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(&self.payload)
                .map(Bytes::from)
                .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}"))),
            Some(other) => Err(ApiError::bad_request(format!(
                "encoding must be text or base64, not {other}"
            ))),
        }
    }
}

// No deny_unknown_fields: serde does not support it with `flatten`.
#[derive(Deserialize)]
struct BusinessPub {
    product_key: String,
    device_name: String,
    topic: String,
    #[serde(flatten)]
    payload: Payload,
    #[serde(default)]
    qos: u8,
}

// No deny_unknown_fields: serde does not support it with `flatten`.
#[derive(Deserialize)]
struct BusinessRrpc {
    product_key: String,
    device_name: String,
    #[serde(flatten)]
    payload: Payload,
    timeout_ms: Option<u64>,
}

// No deny_unknown_fields: serde does not support it with `flatten`.
#[derive(Deserialize)]
struct BusinessBroadcast {
    product_key: String,
    #[serde(flatten)]
    payload: Payload,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DesiredUpdate {
    state: DesiredState,
    version: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DesiredState {
    desired: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApiKey {
    name: String,
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {MAX_BODY} bytes"),
        )),
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    id: String,
    name: Option<String>,
    profile: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetProfile {
    profile: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProduct {
    tenant: String,
    name: String,
    node_type: Option<NodeType>,
    #[serde(default)]
    dynamic_registration: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateDevice {
    device_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGroup {
    name: String,
    /// "amqp" (default) or "sqs".
    sink: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishMessage {
    tenant: String,
    topic: String,
    payload: String,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
}
