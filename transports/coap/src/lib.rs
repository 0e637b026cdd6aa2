//! ironhub-coap: constrained devices over CoAP (RFC 7252, UDP), with the public Alibaba Cloud
//! CoAP device scheme: `POST /auth` with a signed JSON body returns a token; `POST /topic/<topic>`
//! with the token in option 2088 publishes the payload (a confirmable request as QoS 1, a
//! non-confirmable one as QoS 0). ACL, limits and metering are the hub's, as for MQTT.
//!
//! The message format is [`codec`] (sans IO, on coap-lite); this module is the UDP server:
//! duplicate detection by (peer, message id) for the exchange lifetime, piggybacked responses,
//! and an empty ACK followed by a separate response when handling takes longer than
//! `separate_after`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use coap_lite::{RequestType, ResponseType};
use ironhub_core::Hub;
use ironhub_core::admission::{Cause, Refusal, Stage};
use ironhub_core::data::message::{Properties, QoS};
use ironhub_core::hub::{AuthRequest, PublishRequest, TransportKind};
use ironhub_core::limits::{LimitId, LimitKind, Limited};
use ironhub_core::transport::{BoxError, Transport};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod codec;

use codec::{DecodeError, Kind, Request, Response};

/// This transport's label in the hub's counters.
const LABEL: &str = "coap";

/// How long a message id stays known for duplicate detection (RFC 7252 EXCHANGE_LIFETIME).
const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// Most exchanges remembered; beyond it the oldest are forgotten first.
const MAX_EXCHANGES: usize = 100_000;
/// Requests handled at once; beyond it new ones get 5.03.
const MAX_IN_FLIGHT: usize = 4096;
/// How long shutdown waits for requests in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the CoAP transport.
#[derive(Debug, Clone, Copy)]
pub struct CoapSettings {
    /// How long tokens live (Alibaba: 48 hours).
    pub token_ttl_secs: u64,
    /// How long a confirmable request may take before it is acknowledged with an empty ACK and
    /// answered by a separate response.
    pub separate_after: Duration,
}

/// The CoAP device transport.
pub struct CoapTransport {
    socket: Arc<UdpSocket>,
    settings: CoapSettings,
}

impl CoapTransport {
    /// Binds the UDP socket.
    pub async fn bind(addr: SocketAddr, settings: CoapSettings) -> std::io::Result<Self> {
        Ok(CoapTransport {
            socket: Arc::new(UdpSocket::bind(addr).await?),
            settings,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// What is known of an exchange: still being handled, or the datagram that answered it.
enum Exchange {
    InProgress,
    Answered(Vec<u8>),
}

/// Recent exchanges by (peer, message id), for duplicate detection.
#[derive(Default)]
struct Exchanges {
    map: HashMap<(SocketAddr, u16), (Instant, Exchange)>,
}

impl Exchanges {
    fn forget_old(&mut self, now: Instant) {
        self.map
            .retain(|_, (at, _)| now.duration_since(*at) < EXCHANGE_LIFETIME);
        if self.map.len() >= MAX_EXCHANGES {
            // Still full of live exchanges: drop the oldest half.
            let mut ages: Vec<Instant> = self.map.values().map(|(at, _)| *at).collect();
            ages.sort();
            let cut = ages[ages.len() / 2];
            self.map.retain(|_, (at, _)| *at > cut);
        }
    }
}

/// State shared by the receive loop and the request tasks.
struct Server {
    hub: Hub,
    /// This transport in the hub's counters.
    kind: TransportKind,
    socket: Arc<UdpSocket>,
    settings: CoapSettings,
    exchanges: Mutex<Exchanges>,
    next_message_id: AtomicU16,
    in_flight: Arc<tokio::sync::Semaphore>,
}

fn body(code: u32, message: &str, info: Value) -> Vec<u8> {
    json!({ "code": code, "message": message, "info": info })
        .to_string()
        .into_bytes()
}

fn answer(code: ResponseType, status: u32, message: impl AsRef<str>) -> Response {
    Response {
        code,
        payload: body(status, message.as_ref(), Value::Null),
        max_age: None,
    }
}

fn limited(l: &Limited) -> Response {
    let (code, max_age) = match l.limit.kind() {
        LimitKind::Rate | LimitKind::Quota => (
            ResponseType::TooManyRequests,
            Some(
                l.retry_after_ms
                    .map_or(60, |ms| ms.div_ceil(1000).clamp(1, 3600)) as u32,
            ),
        ),
        LimitKind::Malformed => (ResponseType::BadRequest, None),
    };
    let mut payload = json!({ "code": 40000, "message": l.to_string(), "limit": l.limit.id() });
    if let Some(secs) = max_age {
        payload["retry_after"] = json!(secs);
    }
    Response {
        code,
        payload: payload.to_string().into_bytes(),
        max_age,
    }
}

/// The one mapping of the hub's refusals to CoAP: response code, Alibaba's code, message.
fn refused(r: &Refusal) -> Response {
    match (&r.cause, r.stage) {
        (Cause::BadCredentials, _) => answer(
            ResponseType::Unauthorized,
            20000,
            format!("authentication failed: {}", r.detail),
        ),
        (Cause::Disabled, _) => answer(ResponseType::Forbidden, 20001, "device is disabled"),
        (Cause::NotAuthorized, Stage::Connect) => answer(ResponseType::Forbidden, 20001, &r.detail),
        (Cause::NotAuthorized, _) => answer(ResponseType::Forbidden, 20002, &r.message),
        (Cause::Malformed, Stage::Connect) => answer(ResponseType::BadRequest, 10000, &r.message),
        (Cause::Malformed, _) => answer(
            ResponseType::BadRequest,
            10000,
            format!("invalid topic: {}", r.detail),
        ),
        (Cause::Limited(l), _) => limited(l),
        (Cause::Unavailable, _) => answer(
            ResponseType::ServiceUnavailable,
            10000,
            format!("server unavailable: {}", r.detail),
        ),
    }
}

impl Server {
    async fn auth(&self, req: &Request) -> Response {
        let request = match AuthRequest::from_json(&req.payload) {
            Ok(r) => r,
            Err(message) => return answer(ResponseType::BadRequest, 10000, message),
        };
        let ttl = self.settings.token_ttl_secs;
        match self.hub.tokens().issue(self.kind, &request, ttl).await {
            Ok((token, _)) => Response {
                code: ResponseType::Content,
                payload: json!({ "token": token, "expires_in": ttl })
                    .to_string()
                    .into_bytes(),
                max_age: None,
            },
            Err(r) => refused(&Refusal::from(&r)),
        }
    }

    async fn publish(&self, req: &Request, topic: String) -> Response {
        let identity = match req.auth_token.as_deref() {
            Some(t) => self.hub.tokens().identity(t).await,
            None => None,
        };
        let Some(identity) = identity else {
            return answer(
                ResponseType::Unauthorized,
                20001,
                "token (option 2088) is missing, invalid or expired: POST /auth for a new one",
            );
        };
        // A block-wise transfer is a payload larger than one datagram: over L-023 (1 KB).
        let len = if req.block_wise {
            usize::MAX
        } else {
            req.payload.len()
        };
        let max = self.hub.config().max_coap_payload;
        if let Err(l) = self.hub.check_bound(LimitId::CoapMessageSize, len, max) {
            let message = format!("payload larger than {max} bytes");
            return Response {
                code: ResponseType::RequestEntityTooLarge,
                payload: json!({ "code": 40000, "message": message, "limit": l.limit.id() })
                    .to_string()
                    .into_bytes(),
                max_age: None,
            };
        }
        let qos = match req.kind {
            Kind::Confirmable => QoS::AtLeastOnce,
            Kind::NonConfirmable => QoS::AtMostOnce,
        };
        let request = PublishRequest {
            transport: self.kind,
            topic,
            payload: Bytes::from(req.payload.clone()),
            qos,
            retain: false,
            properties: Properties::default(),
            message_expiry_secs: None,
        };
        match self.hub.publish_from(&identity, request).await {
            Ok(delivered) => Response {
                code: ResponseType::Content,
                payload: body(0, "success", json!({ "delivered_to": delivered })),
                max_age: None,
            },
            Err(r) => refused(&Refusal::from(&r)),
        }
    }

    async fn handle(&self, req: &Request) -> Response {
        let path = req.path.as_str();
        match (req.method, path) {
            (RequestType::Post, "/auth") => self.auth(req).await,
            (RequestType::Post, p) if p.starts_with("/topic/") => {
                let topic = p["/topic".len()..].to_owned();
                self.publish(req, topic).await
            }
            (_, "/auth") => answer(ResponseType::MethodNotAllowed, 10000, "use POST"),
            (_, p) if p.starts_with("/topic/") => {
                answer(ResponseType::MethodNotAllowed, 10000, "use POST")
            }
            _ => answer(
                ResponseType::NotFound,
                10000,
                format!("no resource {path}: POST /auth or /topic/<topic>"),
            ),
        }
    }

    fn message_id(&self) -> u16 {
        self.next_message_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn send(&self, bytes: &[u8], peer: SocketAddr) {
        if let Err(e) = self.socket.send_to(bytes, peer).await {
            tracing::debug!(%peer, error = %e, "CoAP send failed");
        }
    }

    async fn remember(&self, peer: SocketAddr, message_id: u16, exchange: Exchange) {
        let mut exchanges = self.exchanges.lock().await;
        exchanges
            .map
            .insert((peer, message_id), (Instant::now(), exchange));
    }

    /// Answers one request: piggybacked when it is handled in time, otherwise (CON) an empty
    /// ACK now and a separate response later.
    async fn respond(self: Arc<Self>, req: Request, peer: SocketAddr) {
        let handling = self.handle(&req);
        tokio::pin!(handling);
        let wait = self.settings.separate_after;
        let timer = async move {
            // A zero wait answers separately at once (a zero sleep is not ready on first poll).
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        };
        let response = if req.kind == Kind::Confirmable {
            tokio::select! {
                biased;
                () = timer => {
                    let ack = codec::encode_empty_ack(req.message_id);
                    self.send(&ack, peer).await;
                    self.remember(peer, req.message_id, Exchange::Answered(ack)).await;
                    let response = handling.await;
                    let separate = codec::encode_separate(&req, &response, self.message_id());
                    self.send(&separate, peer).await;
                    return;
                }
                r = &mut handling => r,
            }
        } else {
            handling.await
        };
        let bytes = codec::encode_response(&req, &response, self.message_id());
        self.send(&bytes, peer).await;
        self.remember(peer, req.message_id, Exchange::Answered(bytes))
            .await;
    }

    /// Handles one datagram: duplicates are answered from memory, new requests in a task.
    async fn datagram(self: &Arc<Self>, data: &[u8], peer: SocketAddr, tasks: &TaskTracker) {
        let req = match codec::decode(data) {
            Ok(req) => req,
            Err(DecodeError::Malformed {
                message_id,
                confirmable: true,
            })
            | Err(DecodeError::Ping { message_id }) => {
                self.send(&codec::encode_reset(message_id), peer).await;
                return;
            }
            Err(_) => return,
        };
        {
            let mut exchanges = self.exchanges.lock().await;
            match exchanges.map.get(&(peer, req.message_id)) {
                Some((_, Exchange::Answered(bytes))) => {
                    let bytes = bytes.clone();
                    drop(exchanges);
                    self.send(&bytes, peer).await;
                    return;
                }
                // A retransmission of a request still being handled: its answer is coming.
                Some((_, Exchange::InProgress)) => return,
                None => {}
            }
            let now = Instant::now();
            if exchanges.map.len() >= MAX_EXCHANGES {
                exchanges.forget_old(now);
            }
            exchanges
                .map
                .insert((peer, req.message_id), (now, Exchange::InProgress));
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let busy = answer(ResponseType::ServiceUnavailable, 10000, "server busy");
            let bytes = codec::encode_response(&req, &busy, self.message_id());
            self.send(&bytes, peer).await;
            self.exchanges
                .lock()
                .await
                .map
                .remove(&(peer, req.message_id));
            return;
        };
        let server = self.clone();
        tasks.spawn(async move {
            server.respond(req, peer).await;
            drop(permit);
        });
    }
}

#[async_trait]
impl Transport for CoapTransport {
    fn name(&self) -> &'static str {
        "coap"
    }

    async fn serve(self: Box<Self>, hub: Hub, shutdown: CancellationToken) -> Result<(), BoxError> {
        tracing::info!(addr = %self.socket.local_addr()?, "CoAP devices listening");
        let server = Arc::new(Server {
            kind: hub.transport(LABEL),
            hub,
            socket: self.socket.clone(),
            settings: self.settings,
            exchanges: Mutex::new(Exchanges::default()),
            next_message_id: AtomicU16::new(rand_start()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        });
        let tasks = TaskTracker::new();
        let mut buf = vec![0u8; 65_536];
        let mut sweep = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sweep.tick() => server.exchanges.lock().await.forget_old(Instant::now()),
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, peer)) => server.datagram(&buf[..n], peer, &tasks).await,
                    Err(e) => {
                        // ICMP errors from earlier sends surface here on Linux: not fatal.
                        tracing::debug!(error = %e, "CoAP receive failed");
                    }
                },
            }
        }
        tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("CoAP requests did not finish in time");
        }
        Ok(())
    }
}

/// A message-id start that differs between restarts (RFC 7252 4.4: not predictable).
fn rand_start() -> u16 {
    (ironhub_core::now_ms() as u16).wrapping_mul(40_503)
}
