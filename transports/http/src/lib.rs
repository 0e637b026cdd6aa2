//! ironhub-http: devices that cannot hold a connection publish over HTTPS (or plain HTTP), with
//! the public Alibaba Cloud HTTPS device scheme: `POST /auth` with a signed JSON body returns a token;
//! `POST /topic/<topic>` with the token in the `password` header publishes the body. ACL, limits
//! and metering are the hub's, as for MQTT. Every answer is JSON `{"code", "message", "info"}`
//! (`code` 0 on success) with a precise HTTP status; limits add `"limit": "L-xxx"` and
//! `Retry-After`. It also serves the files devices download, firmware packages
//! (`GET /ota/{tenant}/{package}`) and remote configuration (`GET /config/{pk}/{id}`), with the
//! expiring signature the hub put in their URLs.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ironhub_core::Hub;
use ironhub_core::admission::{Cause, Refusal, Stage};
use ironhub_core::data::message::{Properties, QoS};
use ironhub_core::hub::{AuthRequest, DownloadError, PublishRequest, TransportKind};
use ironhub_core::limits::{LimitKind, Limited as Limit};
use ironhub_core::store::StoreError;
use ironhub_core::transport::{BoxError, Transport};
use ironhub_tcp::listen::Listener;
use ironhub_tcp::tls::TlsAcceptor;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// This transport's label in the hub's counters.
const LABEL: &str = "http";
use tokio_util::task::TaskTracker;

/// How long shutdown waits for requests in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `/auth` body.
const MAX_AUTH_BODY: usize = 4096;

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP device transport, plain or HTTPS.
pub struct HttpTransport {
    listener: Listener,
    token_ttl_secs: u64,
    tls: Option<TlsAcceptor>,
}

impl HttpTransport {
    /// Binds; tokens live `token_ttl_secs` (Alibaba: 48 hours); with `tls`, HTTPS.
    pub async fn bind(
        addr: SocketAddr,
        token_ttl_secs: u64,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Self> {
        Ok(HttpTransport {
            listener: Listener::bind(addr).await?,
            token_ttl_secs,
            tls,
        })
    }
}

/// Serves HTTP/1.1 on one accepted stream until it closes or shutdown.
async fn serve_stream<S>(
    stream: S,
    hub: Hub,
    kind: TransportKind,
    ttl: u64,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let hub = hub.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(hub, kind, req, ttl).await) }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// An answer: status, Alibaba-style code, message, info, and for limits the id and retry time.
struct Answer {
    status: StatusCode,
    code: u32,
    message: String,
    info: Value,
    limit: Option<&'static str>,
    retry_after_secs: Option<u64>,
}

impl Answer {
    fn ok(info: Value) -> Self {
        Answer {
            status: StatusCode::OK,
            code: 0,
            message: "success".into(),
            info,
            limit: None,
            retry_after_secs: None,
        }
    }

    fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Answer {
            status,
            code,
            message: message.into(),
            info: Value::Null,
            limit: None,
            retry_after_secs: None,
        }
    }

    fn limited(l: &Limit) -> Self {
        let status = match l.limit.kind() {
            LimitKind::Rate | LimitKind::Quota => StatusCode::TOO_MANY_REQUESTS,
            LimitKind::Malformed => StatusCode::BAD_REQUEST,
        };
        let mut a = Answer::error(status, 40000, l.to_string());
        a.limit = Some(l.limit.id());
        if status == StatusCode::TOO_MANY_REQUESTS {
            a.retry_after_secs = Some(
                l.retry_after_ms
                    .map_or(60, |ms| ms.div_ceil(1000).clamp(1, 3600)),
            );
        }
        a
    }

    fn into_response(self) -> Response<Body> {
        let mut body = json!({ "code": self.code, "message": self.message, "info": self.info });
        if let Some(limit) = self.limit {
            body["limit"] = json!(limit);
        }
        let mut r = Response::builder()
            .status(self.status)
            .header(CONTENT_TYPE, "application/json");
        if let Some(secs) = self.retry_after_secs {
            r = r.header(RETRY_AFTER, secs.to_string());
        }
        r.body(full(Bytes::from(body.to_string())))
            .expect("static response parts are valid")
    }
}

/// A response body: JSON answers, or a package streamed from the store.
type Body = UnsyncBoxBody<Bytes, StoreError>;

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Serves a file devices download (`GET /ota/{tenant}/{package}` or `/config/{pk}/{id}`, with
/// `?expires={secs}&signature={hex}` as the hub signed it): its bytes when the link is the hub's
/// and not past (403 otherwise, 404 for a file gone since).
async fn download(hub: &Hub, path: &str, query: Option<&str>) -> Result<Response<Body>, Answer> {
    let mut expires = None;
    let mut signature = None;
    for pair in query.unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("expires", v)) => expires = v.parse::<u64>().ok(),
            Some(("signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(expires), Some(signature)) = (expires, signature) else {
        return Err(Answer::error(
            StatusCode::FORBIDDEN,
            20002,
            "the download link needs its expires and signature",
        ));
    };
    match hub.download(path, expires, signature).await {
        Ok(file) => Ok(Response::builder()
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, file.size)
            .body(StreamBody::new(file.body.map_ok(Frame::data)).boxed_unsync())
            .expect("static response parts are valid")),
        Err(e @ (DownloadError::BadSignature | DownloadError::Expired)) => {
            Err(Answer::error(StatusCode::FORBIDDEN, 20002, e.to_string()))
        }
        Err(e @ DownloadError::NotFound) => {
            Err(Answer::error(StatusCode::NOT_FOUND, 10000, e.to_string()))
        }
        Err(e @ DownloadError::Store(_)) => Err(Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            10000,
            e.to_string(),
        )),
    }
}

/// The one mapping of the hub's refusals to HTTP: status, Alibaba's code, message.
fn refused(r: &Refusal) -> Answer {
    match (&r.cause, r.stage) {
        (Cause::BadCredentials, _) => Answer::error(
            StatusCode::UNAUTHORIZED,
            20000,
            format!("authentication failed: {}", r.detail),
        ),
        (Cause::Disabled, _) => Answer::error(StatusCode::FORBIDDEN, 20001, "device is disabled"),
        (Cause::NotAuthorized, Stage::Connect) => {
            Answer::error(StatusCode::FORBIDDEN, 20001, r.detail.clone())
        }
        (Cause::NotAuthorized, _) => Answer::error(StatusCode::FORBIDDEN, 20002, r.message.clone()),
        (Cause::Malformed, Stage::Connect) => {
            Answer::error(StatusCode::BAD_REQUEST, 10000, r.message.clone())
        }
        (Cause::Malformed, _) => Answer::error(
            StatusCode::BAD_REQUEST,
            10000,
            format!("invalid topic: {}", r.detail),
        ),
        (Cause::Limited(l), _) => Answer::limited(l),
        (Cause::Unavailable, _) => Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            10000,
            format!("server unavailable: {}", r.detail),
        ),
    }
}

async fn collect(req: Request<Incoming>, max: usize) -> Result<Bytes, Answer> {
    Limited::new(req.into_body(), max)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| {
            Answer::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                10000,
                format!("body larger than {max} bytes"),
            )
        })
}

async fn auth(hub: &Hub, kind: TransportKind, req: Request<Incoming>, ttl: u64) -> Answer {
    let body = match collect(req, MAX_AUTH_BODY).await {
        Ok(b) => b,
        Err(a) => return a,
    };
    let request = match AuthRequest::from_json(&body) {
        Ok(r) => r,
        Err(message) => return Answer::error(StatusCode::BAD_REQUEST, 10000, message),
    };
    match hub.tokens().issue(kind, &request, ttl).await {
        Ok((token, _)) => Answer::ok(json!({ "token": token, "expires_in": ttl })),
        Err(r) => refused(&Refusal::from(&r)),
    }
}

async fn publish(hub: &Hub, kind: TransportKind, req: Request<Incoming>, topic: String) -> Answer {
    let token = req
        .headers()
        .get("password")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let identity = match token.as_deref() {
        Some(t) => hub.tokens().identity(t).await,
        None => None,
    };
    let Some(identity) = identity else {
        return Answer::error(
            StatusCode::UNAUTHORIZED,
            20001,
            "token is missing, invalid or expired: POST /auth for a new one",
        );
    };
    let payload = match collect(req, hub.config().max_packet_size as usize).await {
        Ok(b) => b,
        Err(a) => return a,
    };
    let request = PublishRequest {
        transport: kind,
        topic,
        payload,
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
        message_expiry_secs: None,
    };
    match hub.publish_from(&identity, request).await {
        Ok(delivered) => Answer::ok(json!({ "delivered_to": delivered })),
        Err(r) => refused(&Refusal::from(&r)),
    }
}

async fn handle(hub: Hub, kind: TransportKind, req: Request<Incoming>, ttl: u64) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let answer = match (req.method(), path.as_str()) {
        (&Method::GET, p) if p.starts_with("/ota/") || p.starts_with("/config/") => {
            match download(&hub, p, req.uri().query()).await {
                Ok(response) => return response,
                Err(answer) => answer,
            }
        }
        (&Method::POST, "/auth") => auth(&hub, kind, req, ttl).await,
        (&Method::POST, p) if p.starts_with("/topic/") => {
            let topic = p["/topic".len()..].to_owned();
            publish(&hub, kind, req, topic).await
        }
        (_, "/auth") => Answer::error(StatusCode::METHOD_NOT_ALLOWED, 10000, "use POST"),
        (_, p) if p.starts_with("/topic/") => {
            Answer::error(StatusCode::METHOD_NOT_ALLOWED, 10000, "use POST")
        }
        _ => Answer::error(
            StatusCode::NOT_FOUND,
            10000,
            format!(
                "no route {path}: POST /auth, POST /topic/<topic>, GET /ota/... or /config/..."
            ),
        ),
    };
    answer.into_response()
}

#[async_trait]
impl Transport for HttpTransport {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn serve(
        mut self: Box<Self>,
        hub: Hub,
        shutdown: CancellationToken,
    ) -> Result<(), BoxError> {
        let tracker = TaskTracker::new();
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, tls = self.tls.is_some(), "HTTP devices listening");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let host = if addr.ip().is_unspecified() {
            tracing::warn!(
                "firmware download URLs name 127.0.0.1: set [hub.ota] download_url to the address devices reach"
            );
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        hub.offer_downloads(&format!("{scheme}://{host}"));
        let ttl = self.token_ttl_secs;
        let kind = hub.transport(LABEL);
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let (hub, shutdown) = (hub.clone(), shutdown.clone());
            match &self.tls {
                None => {
                    tracker.spawn(serve_stream(stream, hub, kind, ttl, shutdown));
                }
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    tracker.spawn(async move {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                            Ok(Ok(tls)) => serve_stream(tls, hub, kind, ttl, shutdown).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "HTTPS handshake failed"),
                            Err(_) => tracing::debug!("HTTPS handshake timed out"),
                        }
                    });
                }
            }
        }
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("HTTP requests did not finish in time");
        }
        Ok(())
    }
}
