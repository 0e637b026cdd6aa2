//! The route table's shape: a route is a method, a path pattern, who may call it and a typed
//! handler. The handler's input ([`Extract`]) and output ([`Respond`]) types are what the router
//! parses and serializes *and* what the OpenAPI document describes, so the two cannot drift.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use ironhub_core::Hub;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use super::openapi::Schemas;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone (probes, this document).
    Open,
    /// The admin token only.
    Admin,
    /// The admin token, or a tenant's API key for what belongs to its tenant: a `{tenant}` in
    /// the path must be its own, a `{pk}` one of its products (anything else answers 404, as if
    /// it did not exist).
    Tenant,
    /// A tenant's API key (the business API), rate-limited per tenant (L-076).
    Business,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// No credentials were needed.
    Anonymous,
    /// The admin token.
    Admin,
    /// A tenant's API key.
    Tenant(String),
}

impl Principal {
    /// The tenant a tenant's key acts for; None for the admin.
    pub(crate) fn tenant(&self) -> Option<&str> {
        match self {
            Principal::Tenant(t) => Some(t),
            _ => None,
        }
    }
}

/// What a handler gets: the hub, the caller and the request's parts.
pub(crate) struct Ctx {
    pub(crate) hub: Hub,
    pub(crate) principal: Principal,
    /// `(name, value)` of each `{name}` segment of the route's path.
    pub(crate) params: Vec<(&'static str, String)>,
    pub(crate) query: String,
    pub(crate) body: Bytes,
    /// The request's body unread, for routes that stream it ([`Upload`]).
    pub(crate) upload: Option<hyper::body::Incoming>,
}

impl Ctx {
    /// The value of the path's `{name}` segment (every route's handler names its own path's).
    pub(crate) fn param(&self, name: &str) -> &str {
        let value = self.params.iter().find(|(n, _)| *n == name);
        debug_assert!(value.is_some(), "the route has no {{{name}}} segment");
        value.map_or("", |(_, v)| v)
    }
}

/// What a handler takes from the request, and how the document describes it.
pub(crate) trait Extract: Sized + Send + 'static {
    /// Whether the handler streams the body itself (the router leaves it unread).
    const STREAMS_BODY: bool = false;
    fn extract(ctx: &Ctx) -> Result<Self, ApiError>;
    /// Adds its part (request body, query parameters) to an OpenAPI operation.
    fn describe(operation: &mut Value, schemas: &mut Schemas);
}

impl Extract for () {
    fn extract(_: &Ctx) -> Result<Self, ApiError> {
        Ok(())
    }

    fn describe(_: &mut Value, _: &mut Schemas) {}
}

/// A JSON request body of type `T` (an empty body is read as `{}`).
pub(crate) struct Json<T>(pub T);

impl<T: DeserializeOwned + JsonSchema + Send + 'static> Extract for Json<T> {
    fn extract(ctx: &Ctx) -> Result<Self, ApiError> {
        let body: &[u8] = if ctx.body.is_empty() {
            b"{}"
        } else {
            &ctx.body
        };
        serde_json::from_slice(body)
            .map(Json)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }

    fn describe(operation: &mut Value, schemas: &mut Schemas) {
        // A body that may be left out is one whose empty form is accepted.
        let required = serde_json::from_slice::<T>(b"{}").is_err();
        operation["requestBody"] = serde_json::json!({
            "required": required,
            "content": { "application/json": { "schema": schemas.request::<T>() } },
        });
    }
}

/// Query parameters, the fields of `T`.
pub(crate) struct Query<T>(pub T);

impl<T: DeserializeOwned + JsonSchema + Send + 'static> Extract for Query<T> {
    fn extract(ctx: &Ctx) -> Result<Self, ApiError> {
        serde_urlencoded::from_str(&ctx.query)
            .map(Query)
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))
    }

    fn describe(operation: &mut Value, schemas: &mut Schemas) {
        let parameters = operation["parameters"]
            .as_array_mut()
            .expect("operations start with their path parameters");
        parameters.extend(schemas.query::<T>());
    }
}

/// A request body of any bytes (`application/octet-stream`), streamed by the handler from
/// [`Ctx::upload`] rather than read whole.
pub(crate) struct Upload;

impl Extract for Upload {
    const STREAMS_BODY: bool = true;

    fn extract(_: &Ctx) -> Result<Self, ApiError> {
        Ok(Upload)
    }

    fn describe(operation: &mut Value, _: &mut Schemas) {
        operation["requestBody"] = serde_json::json!({
            "required": true,
            "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } },
        });
    }
}

/// A JSON document of any shape as the request's body, kept byte for byte (a configuration
/// file), streamed by the handler from [`Ctx::upload`] like [`Upload`].
pub(crate) struct JsonFile;

impl Extract for JsonFile {
    const STREAMS_BODY: bool = true;

    fn extract(_: &Ctx) -> Result<Self, ApiError> {
        Ok(JsonFile)
    }

    fn describe(operation: &mut Value, _: &mut Schemas) {
        operation["requestBody"] = serde_json::json!({
            "required": true,
            "content": { "application/json": { "schema": {} } },
        });
    }
}

/// A script as the request's body (JavaScript text), streamed to the handler.
pub(crate) struct ScriptFile;

impl Extract for ScriptFile {
    const STREAMS_BODY: bool = true;

    fn extract(_: &Ctx) -> Result<Self, ApiError> {
        Ok(ScriptFile)
    }

    fn describe(operation: &mut Value, _: &mut Schemas) {
        operation["requestBody"] = serde_json::json!({
            "required": true,
            "content": { "text/plain": { "schema": { "type": "string" } } },
        });
    }
}

impl<A: Extract, B: Extract> Extract for (A, B) {
    const STREAMS_BODY: bool = A::STREAMS_BODY || B::STREAMS_BODY;

    fn extract(ctx: &Ctx) -> Result<Self, ApiError> {
        Ok((A::extract(ctx)?, B::extract(ctx)?))
    }

    fn describe(operation: &mut Value, schemas: &mut Schemas) {
        A::describe(operation, schemas);
        B::describe(operation, schemas);
    }
}

/// A handler's answer on success.
pub(crate) enum Reply {
    /// JSON, with this status.
    Json(StatusCode, Value),
    /// Text of this content type.
    Text(&'static str, String),
    /// 204.
    Empty,
}

/// What a handler answers, and how the document describes it.
pub(crate) trait Respond: Send + 'static {
    fn into_reply(self) -> Result<Reply, ApiError>;
    /// `(status, response object)` for the document.
    fn describe(schemas: &mut Schemas) -> (StatusCode, Value);
}

fn json_reply<T: Serialize>(status: StatusCode, value: &T) -> Result<Reply, ApiError> {
    serde_json::to_value(value)
        .map(|v| Reply::Json(status, v))
        .map_err(|e| ApiError::internal(format!("could not serialize the answer: {e}")))
}

fn json_response(schema: Value) -> Value {
    serde_json::json!({
        "description": "success",
        "content": { "application/json": { "schema": schema } },
    })
}

impl<T: Serialize + JsonSchema + Send + 'static> Respond for T {
    fn into_reply(self) -> Result<Reply, ApiError> {
        json_reply(StatusCode::OK, &self)
    }

    fn describe(schemas: &mut Schemas) -> (StatusCode, Value) {
        (StatusCode::OK, json_response(schemas.response::<T>()))
    }
}

/// 201 with the created thing.
pub(crate) struct Created<T>(pub T);

impl<T: Serialize + JsonSchema + Send + 'static> Respond for Created<T> {
    fn into_reply(self) -> Result<Reply, ApiError> {
        json_reply(StatusCode::CREATED, &self.0)
    }

    fn describe(schemas: &mut Schemas) -> (StatusCode, Value) {
        (StatusCode::CREATED, json_response(schemas.response::<T>()))
    }
}

/// 204, no body.
pub(crate) struct NoContent;

impl Respond for NoContent {
    fn into_reply(self) -> Result<Reply, ApiError> {
        Ok(Reply::Empty)
    }

    fn describe(_: &mut Schemas) -> (StatusCode, Value) {
        (
            StatusCode::NO_CONTENT,
            serde_json::json!({ "description": "done" }),
        )
    }
}

/// Prometheus' text format.
pub(crate) struct Metrics(pub String);

/// Prometheus' text exposition format, version 0.0.4.
const METRICS_TYPE: &str = "text/plain; version=0.0.4";

impl Respond for Metrics {
    fn into_reply(self) -> Result<Reply, ApiError> {
        Ok(Reply::Text(METRICS_TYPE, self.0))
    }

    fn describe(_: &mut Schemas) -> (StatusCode, Value) {
        let response = serde_json::json!({
            "description": "Prometheus metrics",
            "content": { METRICS_TYPE: { "schema": { "type": "string" } } },
        });
        (StatusCode::OK, response)
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Reply, ApiError>> + Send>>;
type Handler = Box<dyn Fn(Ctx) -> Answer + Send + Sync>;
type Describe = fn(&mut Value, &mut Schemas);
type DescribeResponse = fn(&mut Schemas) -> (StatusCode, Value);

/// One operation of the API.
pub(crate) struct Route {
    pub(crate) method: Method,
    /// `/api/v1/products/{pk}`: `{name}` matches any one non-empty segment.
    pub(crate) path: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) access: Access,
    /// Whether success changes what the hub caches (tenants' profiles, groups, rules, keys,
    /// models, categories, upgrade batches), so every node reloads its configuration.
    pub(crate) reloads: bool,
    /// Whether the handler streams the body itself.
    pub(crate) streams_body: bool,
    pub(crate) describe_input: Describe,
    pub(crate) describe_output: DescribeResponse,
    handler: Handler,
}

impl Route {
    /// A route whose handler takes `I` and answers `R`; admin token only, and a success that is
    /// not a GET reloads the configuration, until said otherwise.
    pub(crate) fn new<I, R, F, Fut>(
        method: Method,
        path: &'static str,
        summary: &'static str,
        handler: F,
    ) -> Route
    where
        I: Extract,
        R: Respond,
        F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ApiError>> + Send + 'static,
    {
        let reloads = method != Method::GET;
        let handler: Handler = Box::new(move |ctx| -> Answer {
            match I::extract(&ctx) {
                Ok(input) => {
                    let answer = handler(ctx, input);
                    Box::pin(async move { answer.await?.into_reply() })
                }
                Err(e) => Box::pin(async move { Err(e) }),
            }
        });
        Route {
            method,
            path,
            summary,
            access: Access::Admin,
            reloads,
            streams_body: I::STREAMS_BODY,
            describe_input: I::describe,
            describe_output: R::describe,
            handler,
        }
    }

    /// Who may call it.
    pub(crate) fn access(mut self, access: Access) -> Route {
        self.access = access;
        self
    }

    /// Its success changes nothing the hub caches (devices, messages: read from the store).
    pub(crate) fn keeps_config(mut self) -> Route {
        self.reloads = false;
        self
    }

    /// The `(name, value)` pairs of the path's `{name}` segments when `segments` match it.
    pub(crate) fn matches(&self, segments: &[&str]) -> Option<Vec<(&'static str, String)>> {
        let pattern = self.path.split('/').skip(1);
        if pattern.clone().count() != segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (p, s) in pattern.zip(segments) {
            match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if !s.is_empty() => params.push((name, (*s).to_owned())),
                None if p == *s => {}
                _ => return None,
            }
        }
        Some(params)
    }

    pub(crate) fn call(&self, ctx: Ctx) -> Answer {
        (self.handler)(ctx)
    }
}

/// `get`, `post`, `put` and `delete`: a route of that method, answered by `handler`.
macro_rules! method_routes {
    ($($name:ident => $method:ident),*) => {$(
        pub(crate) fn $name<I, R, F, Fut>(
            path: &'static str,
            summary: &'static str,
            handler: F,
        ) -> Route
        where
            I: Extract,
            R: Respond,
            F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<R, ApiError>> + Send + 'static,
        {
            Route::new(Method::$method, path, summary, handler)
        }
    )*};
}

method_routes!(get => GET, post => POST, put => PUT, delete => DELETE);
