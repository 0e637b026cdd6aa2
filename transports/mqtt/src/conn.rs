//! The tokio driver of one MQTT connection: reads frames, calls the hub, writes frames.
//!
//! One task per connection selects between the socket, the session's delivery queue, the
//! keep-alive deadline, a takeover or administrative kick, and server shutdown.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32};
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use ironhub_core::admission::{Cause, Stage};
use ironhub_core::data::message::{Properties, QoS as HubQoS};
use ironhub_core::hub::queue::DeliveryReceiver;
use ironhub_core::hub::{
    ConnectOutcome, ConnectRequest, Connected, Delivery, KickReason, PublishRequest, Session,
    SubscribeRequest, TransportKind, Unacknowledged, Will,
};
use ironhub_core::limits::rate::ByteRate;
use ironhub_core::limits::{LimitId, LimitKind};
use ironhub_core::store::records::QueueId;
use ironhub_core::{Hub, now_ms};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codec::{
    Codec, CodecError, ConnAck, ConnectCode, ConnectPacket, DisconnectReasonCode, Inbound,
    Outbound, PublishProperties, QoS, Version, publish_packet,
};
use crate::state::{Alias, AliasError, InboundQos2, OutboundAliases, Outflight, TopicAliases};

/// How long a new connection may take to send CONNECT: idle sockets would otherwise hold
/// connection slots forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dynamic-registration connection stays open after the secret was sent.
const REGISTER_LINGER: Duration = Duration::from_secs(5);
/// QoS 1/2 publishes we accept in flight per connection (seed 000: 100 unacknowledged requests).
pub const RECEIVE_MAXIMUM: u16 = 100;
/// Topic aliases a client may set.
pub const TOPIC_ALIAS_MAXIMUM: u16 = 32;
/// Read-buffer space bounds: idle connections keep the smallest, busy ones grow to the largest
/// (doubling when a read fills the space, halving when reads stay small).
const READ_HINT_MIN: usize = 512;
const READ_HINT_MAX: usize = 64 * 1024;
/// Deliveries written per wake-up before the socket is flushed.
const WRITE_BATCH: usize = 64;
/// Acknowledgements a connection may owe at once while their messages wait for their sinks
/// (consumer groups); at the bound it stops reading until the oldest is confirmed. The receive
/// maximum bounds this for MQTT 5 clients; MQTT 3.1.1 has none.
const MAX_OWED_ACKS: usize = RECEIVE_MAXIMUM as usize;

/// An acknowledgement owed to the client, sent once its message is safe (in order).
enum Owed {
    /// PUBACK or PUBREC as decided at once.
    Ack(Outbound),
    /// The message could not be kept after all (the sink's store failed): 0x80 for MQTT 5,
    /// a closed connection for 3.1.1.
    Failed {
        id: NonZeroU16,
        exactly_once: bool,
        text: String,
    },
}

fn hub_qos(q: QoS) -> HubQoS {
    match q {
        QoS::AtMostOnce => HubQoS::AtMostOnce,
        QoS::AtLeastOnce => HubQoS::AtLeastOnce,
        QoS::ExactlyOnce => HubQoS::ExactlyOnce,
    }
}

fn wire_qos(q: HubQoS) -> QoS {
    match q {
        HubQoS::AtMostOnce => QoS::AtMostOnce,
        HubQoS::AtLeastOnce => QoS::AtLeastOnce,
        HubQoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// How often the timer of a connection without keep-alive wakes (it has nothing to check).
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// How the connection ended, which decides the will.
enum End {
    /// DISCONNECT with reason 0: no will.
    Normal,
    /// Anything else: the will is published.
    Abnormal,
}

/// Serves one accepted connection to its end.
pub async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    transport: TransportKind,
    hub: Hub,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    // Two steps, so that the task holds the state of one at a time: what CONNECT needed is
    // gone while the connection lives.
    if let Some((driver, connected)) = open(stream, peer, transport, &hub).await {
        driver.run(connected, shutdown).await;
    }
}

/// Reads CONNECT and opens the session; None when the connection ends here (refused, a
/// registration, nothing in time).
async fn open<S>(
    stream: S,
    peer: SocketAddr,
    transport: TransportKind,
    hub: &Hub,
) -> Option<(Box<Driver<S>>, Box<Connected>)>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let mut codec = Codec::new(hub.config().max_packet_size);
    let mut rbuf = BytesMut::with_capacity(4096);
    let first =
        tokio::time::timeout(CONNECT_TIMEOUT, read_first(&mut rd, &mut codec, &mut rbuf)).await;
    let connect = match first {
        Ok(Ok(Some(Inbound::Connect(c)))) => c,
        Ok(Ok(_)) => return None,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "bad first packet");
            if let Some(connack) = e.connack {
                // Boxed: rare, and every connection's task is sized for its largest state.
                let mut wr = wr;
                Box::pin(async move {
                    let _ = wr.write_all(connack).await;
                    let _ = wr.flush().await;
                })
                .await;
            }
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT in time");
            return None;
        }
    };
    let mut conn = Writer {
        wr,
        // Grows to what the connection writes; idle connections keep it small.
        wbuf: BytesMut::new(),
        codec,
    };
    let version = connect.version;
    // Every packet from the CONNACK on fits the client's Maximum Packet Size (MQTT-3.2.2-19).
    if let Some(max) = connect.max_packet_size {
        conn.codec.set_max_outbound(max);
    }
    if let Some(method) = &connect.auth_method {
        // No enhanced authentication here (MQTT-4.12.0-1): refused, then closed.
        conn.send(Outbound::ConnAck(Box::new(connack(
            hub,
            ConnectCode::BadAuthenticationMethod,
            false,
            Some(format!("authentication method {method:?} is not supported")),
        ))));
        let _ = Box::pin(conn.flush()).await;
        return None;
    }
    // Boxed: large futures that run once (or rarely) would otherwise size every idle
    // connection's task for their worst case.
    let outcome = Box::pin(hub.connect(connect_request(&connect, transport))).await;
    let mut connected = match outcome {
        Err(refusal) => {
            tracing::info!(%peer, client_id = %connect.client_id, %refusal, "connection refused");
            let (reason, _) = refused(Stage::Connect, &refusal.cause());
            let code = ConnectCode::from_reason(reason);
            conn.send(Outbound::ConnAck(Box::new(connack(
                hub,
                code,
                false,
                Some(refusal.to_string()),
            ))));
            let _ = conn.flush().await;
            return None;
        }
        Ok(ConnectOutcome::Registered { topic, payload }) => {
            conn.send(Outbound::ConnAck(Box::new(connack(
                hub,
                ConnectCode::Accepted,
                false,
                None,
            ))));
            conn.send(Outbound::Publish(Box::new(publish_packet(
                &topic,
                payload,
                QoS::AtMostOnce,
                false,
                None,
                (version == Version::V5).then(PublishProperties::default),
            ))));
            let _ = conn.flush().await;
            // Give the device time to read its secret before the server closes (it usually
            // disconnects itself once it has it).
            let mut sink = [0u8; 256];
            let _ = tokio::time::timeout(REGISTER_LINGER, async {
                while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            return None;
        }
        // Kept boxed, as the driver below: the connection's task holds both while it lives.
        Ok(ConnectOutcome::Connected(c)) => c,
    };
    let mut ack = connack(hub, ConnectCode::Accepted, connected.session_present, None);
    if connect
        .session_expiry
        .is_some_and(|s| s != connected.session_expiry_secs)
    {
        ack.session_expiry = Some(connected.session_expiry_secs);
    }
    ack.assigned_client_id = connected.assigned_client_id.clone();
    if connected.keep_alive_secs != connect.keep_alive {
        ack.server_keep_alive = Some(connected.keep_alive_secs);
    }
    conn.send(Outbound::ConnAck(Box::new(ack)));
    let keep_alive = Duration::from_secs(u64::from(connected.keep_alive_secs));
    let driver = Box::new(Driver {
        conn,
        rd,
        rbuf,
        version,
        keep_alive_limit: keep_alive + keep_alive / 2,
        outflight: {
            let mut outflight = Outflight::new(connect.receive_max);
            outflight.reserve(connected.resend.values().map(|u| u.packet_id));
            outflight
        },
        inbound_qos2: InboundQos2::new(RECEIVE_MAXIMUM),
        aliases: TopicAliases::new(TOPIC_ALIAS_MAXIMUM),
        outbound_aliases: OutboundAliases::new(connect.topic_alias_max.min(TOPIC_ALIAS_MAXIMUM)),
        pending: VecDeque::new(),
        resend: std::mem::take(&mut connected.resend),
        bandwidth: hub.connection_bandwidth(),
        read_hint: READ_HINT_MIN,
        transport,
        owed: FuturesOrdered::new(),
    });
    Some((driver, connected))
}

async fn read_first<R: AsyncRead + Unpin>(
    rd: &mut R,
    codec: &mut Codec,
    rbuf: &mut BytesMut,
) -> Result<Option<Inbound>, CodecError> {
    loop {
        if let Some(p) = codec.decode(rbuf)? {
            return Ok(Some(p));
        }
        match rd.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

fn connect_request(c: &ConnectPacket, transport: TransportKind) -> ConnectRequest {
    ConnectRequest {
        transport,
        client_id: c.client_id.clone(),
        username: c.username.clone(),
        password: c.password.clone(),
        clean_start: c.clean_start,
        session_expiry_secs: c.session_expiry,
        keep_alive_secs: c.keep_alive,
        server_keep_alive: c.version == Version::V5,
        will: c.will.as_ref().map(|w| Will {
            topic: w.topic.clone(),
            payload: w.payload.clone(),
            qos: hub_qos(w.qos),
            retain: w.retain,
            properties: Properties {
                user: w.user_properties.clone(),
                content_type: w.content_type.clone(),
                response_topic: w.response_topic.clone(),
                correlation_data: w.correlation_data.clone(),
                payload_utf8: w.payload_utf8.unwrap_or(false),
            },
            delay_secs: w.delay_secs,
        }),
    }
}

fn connack(
    hub: &Hub,
    code: ConnectCode,
    session_present: bool,
    reason_string: Option<String>,
) -> ConnAck {
    ConnAck {
        code,
        session_present,
        receive_max: RECEIVE_MAXIMUM,
        // The limit applies to the remaining length; the property counts the whole packet
        // (1-byte type and up to 4 bytes of length).
        max_packet_size: hub.config().max_packet_size.saturating_add(5),
        topic_alias_max: TOPIC_ALIAS_MAXIMUM,
        session_expiry: None,
        server_keep_alive: None,
        assigned_client_id: None,
        reason_string,
    }
}

struct Writer<W> {
    wr: W,
    wbuf: BytesMut,
    codec: Codec,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Encodes into the write buffer; false if the packet could not be encoded (too large for
    /// the client), in which case it was not sent.
    fn send(&mut self, packet: Outbound) -> bool {
        match self.codec.encode(packet, &mut self.wbuf) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "packet not sent");
                false
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.wr.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            self.wr.flush().await?;
        }
        Ok(())
    }
}

struct Driver<S> {
    conn: Writer<WriteHalf<S>>,
    rd: ReadHalf<S>,
    rbuf: BytesMut,
    version: Version,
    keep_alive_limit: Duration,
    outflight: Outflight,
    inbound_qos2: InboundQos2,
    aliases: TopicAliases,
    /// The aliases this connection's deliveries use (MQTT 5 clients that accept some).
    outbound_aliases: Option<Box<OutboundAliases>>,
    /// Deliveries to send before new ones from the queue: the stored backlog, then retained
    /// messages for new subscriptions.
    pending: VecDeque<Delivery>,
    /// Of the backlog, what the session's previous connection sent without the acknowledgement
    /// completing: sent again under the same packet id, with DUP set (MQTT-4.4.0-1).
    resend: HashMap<QueueId, Unacknowledged>,
    /// The connection's read allowance (L-019).
    bandwidth: Option<ByteRate>,
    /// How much free space to give the next read.
    read_hint: usize,
    /// TCP, TLS or QUIC (for the hub's counters).
    transport: TransportKind,
    /// Acknowledgements waiting for their messages' sinks, in the order they are owed.
    owed: FuturesOrdered<Pin<Box<dyn Future<Output = Owed> + Send>>>,
}

/// Removes the stored copy of a delivery the client acknowledged (or that can never be sent).
async fn forget_stored(session: &Session, d: &Delivery) {
    if let Some(seq) = d.stored_seq.as_deref()
        && let Err(e) = Box::pin(session.acknowledged(*seq)).await
    {
        tracing::warn!(error = %e, "could not remove a stored delivery");
    }
}

/// What handling an inbound packet decided.
enum Flow {
    Continue,
    Stop(End),
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Driver<S> {
    async fn run(mut self: Box<Self>, connected: Box<Connected>, shutdown: CancellationToken) {
        let Connected {
            session,
            mut deliveries,
            backlog,
            mut kicked,
            ..
        } = *connected;
        self.pending.extend(backlog);
        // Packets that arrived together with CONNECT are already buffered.
        let end = match self.handle_input(&session).await {
            Flow::Stop(end) => end,
            Flow::Continue => {
                self.serve(&session, &mut deliveries, &mut kicked, &shutdown)
                    .await
            }
        };
        let _ = self.conn.flush().await;
        let sent = self.outflight.into_unacked();
        // What was owed again and not sent yet stays owed.
        let mut again: Vec<_> = self.resend.drain().collect();
        let mut unacked = Vec::with_capacity(sent.len());
        for (packet_id, released, d) in sent {
            if let Some(seq) = d.stored_seq.as_deref() {
                again.push((
                    *seq,
                    Unacknowledged {
                        packet_id,
                        released,
                    },
                ));
            }
            unacked.push(d);
        }
        unacked.extend(self.pending.into_iter().filter(|d| d.stored_seq.is_none()));
        Box::pin(async move {
            if !again.is_empty() {
                session.keep_unacknowledged(again).await;
            }
            session
                .close(matches!(end, End::Normal), unacked, deliveries)
                .await;
        })
        .await;
    }

    async fn serve(
        &mut self,
        session: &Session,
        deliveries: &mut DeliveryReceiver,
        kicked: &mut tokio::sync::oneshot::Receiver<KickReason>,
        shutdown: &CancellationToken,
    ) -> End {
        // The keep-alive deadline moves with every read; the one timer (for it and the end of a
        // bandwidth pause) is re-armed only when it fires early: a timer reset per read cost ~3 %
        // of a message's CPU time.
        let mut deadline = Instant::now() + self.keep_alive_limit;
        // Set while reads are paused by the bandwidth limit (L-019).
        let mut resume: Option<Instant> = None;
        // Both boxed: they live across every await of this loop, which would make each
        // connection's task larger.
        let mut timer = Box::pin(tokio::time::sleep_until(deadline));
        // Polled across iterations: registering with the shared token anew on every wake-up
        // locked its waiter list once per message.
        let mut cancelled = Box::pin(shutdown.cancelled());
        if self.rbuf.is_empty() {
            // CONNECT needed a few KB; an idle connection needs much less.
            self.rbuf = BytesMut::with_capacity(READ_HINT_MIN);
        }
        loop {
            self.send_pending(session).await;
            let spare = self.rbuf.capacity() - self.rbuf.len();
            if spare < self.read_hint {
                self.rbuf.reserve(self.read_hint);
            }
            let offered = self.rbuf.capacity() - self.rbuf.len();
            if self.conn.flush().await.is_err() {
                return End::Abnormal;
            }
            let can_take = self.outflight.has_room() && self.pending.is_empty();
            tokio::select! {
                _ = &mut cancelled => {
                    match session.hub().handover_reference() {
                        // A cluster node leaving: the others serve this device (MQTT 5
                        // "use another server", with one of them as the server reference).
                        Some(reference) => {
                            self.conn.send(Outbound::Disconnect(
                                DisconnectReasonCode::UseAnotherServer,
                                Some("this node is leaving the cluster: connect to another".into()),
                                Some(reference),
                            ));
                            let _ = self.conn.flush().await;
                        }
                        None => {
                            self.disconnect(DisconnectReasonCode::ServerShuttingDown, "server shutting down").await;
                        }
                    }
                    return End::Abnormal;
                }
                reason = &mut *kicked => {
                    let (code, text) = match reason {
                        Ok(KickReason::SessionTakenOver) | Err(_) =>
                            (DisconnectReasonCode::SessionTakenOver, "session taken over by another connection"),
                        Ok(KickReason::AdministrativeAction) =>
                            (DisconnectReasonCode::AdministrativeAction, "closed by an administrator"),
                    };
                    self.disconnect(code, text).await;
                    return End::Abnormal;
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if resume.is_some_and(|until| until <= now) {
                        resume = None;
                    }
                    // Keep-alive 0 turns the mechanism off (MQTT 3.1.2.10), where the configured
                    // minimum allows it: the timer then only serves bandwidth pauses.
                    let keep_alive_off = self.keep_alive_limit.is_zero();
                    if now < deadline || keep_alive_off {
                        let next = if keep_alive_off { now + IDLE_WAKE } else { deadline };
                        timer.as_mut().reset(resume.unwrap_or(next));
                        continue;
                    }
                    tracing::info!(session = %session.identity().key, "keep-alive expired");
                    self.disconnect(DisconnectReasonCode::KeepAliveTimeout, "keep-alive timeout").await;
                    return End::Abnormal;
                }
                Some(owed) = self.owed.next(), if !self.owed.is_empty() => {
                    match owed {
                        Owed::Ack(ack) => {
                            self.conn.send(ack);
                        }
                        Owed::Failed { text, .. } if self.version == Version::V3 => {
                            // No negative acknowledgement in 3.1.1: close, the client resends.
                            tracing::warn!(session = %session.identity().key, %text, "message not kept");
                            return End::Abnormal;
                        }
                        Owed::Failed { id, exactly_once: false, text } => {
                            self.conn.send(Outbound::PubAck(id, 0x80, Some(text)));
                        }
                        Owed::Failed { id, exactly_once: true, text } => {
                            self.inbound_qos2.release(id);
                            self.conn.send(Outbound::PubRec(id, 0x80, Some(text)));
                        }
                    }
                }
                read = self.rd.read_buf(&mut self.rbuf), if resume.is_none() && self.owed.len() < MAX_OWED_ACKS => {
                    let n = match read {
                        Ok(0) | Err(_) => return End::Abnormal,
                        Ok(n) => n,
                    };
                    self.read_hint = if n == offered {
                        (self.read_hint * 2).min(READ_HINT_MAX)
                    } else if n < self.read_hint / 4 {
                        (self.read_hint / 2).max(READ_HINT_MIN)
                    } else {
                        self.read_hint
                    };
                    // Keep-alive counts from the pause's end: the client did send.
                    let now = Instant::now();
                    deadline = now + self.keep_alive_limit;
                    if let Some(pause) = self.bandwidth.as_mut().map(|b| b.charge(n as u64, now_ms())).filter(|p| *p > 0) {
                        let until = now + Duration::from_millis(pause);
                        deadline = until + self.keep_alive_limit;
                        resume = Some(until);
                        timer.as_mut().reset(until);
                    }
                    if let Flow::Stop(end) = self.handle_input(session).await {
                        return end;
                    }
                }
                true = deliveries.recv_many(&mut self.pending, WRITE_BATCH), if can_take => {}
            }
        }
    }

    async fn disconnect(&mut self, code: DisconnectReasonCode, text: &str) {
        self.conn
            .send(Outbound::Disconnect(code, Some(text.to_owned()), None));
        let _ = self.conn.flush().await;
    }

    /// Writes pending deliveries while the client's in-flight window has room.
    async fn send_pending(&mut self, session: &Session) {
        if self.pending.is_empty() {
            return;
        }
        let now = now_ms();
        while let Some(d) = self.pending.front() {
            if d.qos != HubQoS::AtMostOnce && !self.outflight.has_room() {
                break;
            }
            let d = self.pending.pop_front().expect("front exists");
            let again = d
                .stored_seq
                .as_deref()
                .and_then(|seq| self.resend.remove(seq));
            if let Some(again) = again.filter(|a| a.released) {
                // The client has the message: only the release is owed.
                self.outflight
                    .register_again(again.packet_id, d, true, true);
                self.conn.send(Outbound::PubRel(again.packet_id));
                continue;
            }
            // A message sent before is not expired on its way again (MQTT-4.3.3-7).
            if again.is_none() && d.message.expired(now) {
                forget_stored(session, &d).await;
                continue;
            }
            let alias = self
                .outbound_aliases
                .as_ref()
                .and_then(|a| a.lookup(&d.message.topic));
            let properties = (self.version == Version::V5).then(|| {
                let p = &d.message.properties;
                PublishProperties {
                    topic_alias: alias.map(|(Alias::Known(a) | Alias::New(a))| a),
                    is_utf8_payload: p.payload_utf8,
                    correlation_data: p.correlation_data.clone(),
                    message_expiry_interval: d
                        .message
                        .remaining_expiry_secs(now)
                        .and_then(NonZeroU32::new),
                    content_type: p.content_type.clone().map(ByteString::from),
                    user_properties: p
                        .user
                        .iter()
                        .map(|(k, v)| (ByteString::from(k.as_str()), ByteString::from(v.as_str())))
                        .collect(),
                    response_topic: p.response_topic.clone().map(ByteString::from),
                    subscription_ids: d
                        .subscription_ids
                        .iter()
                        .filter_map(|i| NonZeroU32::new(*i))
                        .collect(),
                }
            });
            let qos = wire_qos(d.qos);
            let (topic, payload, retain) =
                (d.message.topic.clone(), d.message.payload.clone(), d.retain);
            let exactly_once = qos == QoS::ExactlyOnce;
            let packet_id = match (qos, again) {
                (QoS::AtMostOnce, _) => None,
                (_, Some(again)) => {
                    let id = again.packet_id;
                    self.outflight
                        .register_again(id, d.clone(), exactly_once, false);
                    Some(id)
                }
                (_, None) => Some(self.outflight.register(d.clone(), exactly_once)),
            };
            let name = match alias {
                Some(Alias::Known(_)) => "",
                _ => topic.as_str(),
            };
            let mut packet = publish_packet(name, payload, qos, retain, packet_id, properties);
            packet.dup = again.is_some();
            if !self.conn.send(Outbound::Publish(Box::new(packet))) {
                // Larger than the client accepts (MQTT-3.1.2-25): it is discarded, not retried.
                session.discarded_too_large();
                if let Some(id) = packet_id {
                    self.outflight.forget(id);
                }
                forget_stored(session, &d).await;
            } else if let (Some(Alias::New(a)), Some(aliases)) =
                (alias, self.outbound_aliases.as_mut())
            {
                aliases.assigned(&topic, a);
            }
        }
    }

    async fn handle_input(&mut self, session: &Session) -> Flow {
        loop {
            let packet = match self.conn.codec.decode(&mut self.rbuf) {
                Ok(Some(p)) => p,
                Ok(None) => return Flow::Continue,
                Err(e) => {
                    tracing::info!(session = %session.identity().key, error = %e, "protocol error");
                    self.disconnect(e.reason, &e.detail).await;
                    return Flow::Stop(End::Abnormal);
                }
            };
            if let Flow::Stop(end) = self.handle_packet(session, packet).await {
                return Flow::Stop(end);
            }
        }
    }

    async fn handle_packet(&mut self, session: &Session, packet: Inbound) -> Flow {
        match packet {
            Inbound::Publish(p) => return self.handle_publish(session, *p).await,
            Inbound::PubAck(id) => {
                if let Some(d) = self.outflight.puback(id) {
                    forget_stored(session, &d).await;
                }
            }
            Inbound::PubRec(id, reason) if reason >= 0x80 => {
                // The client refused the message: it is done, nothing more is sent for it
                // (MQTT-4.3.3-4, 4.4.0-2).
                if let Some(d) = self.outflight.refused(id) {
                    forget_stored(session, &d).await;
                }
            }
            Inbound::PubRec(id, _) => {
                self.outflight.pubrec(id);
                self.conn.send(Outbound::PubRel(id));
            }
            Inbound::PubComp(id) => {
                if let Some(d) = self.outflight.pubcomp(id) {
                    forget_stored(session, &d).await;
                }
            }
            Inbound::PubRel(id) => {
                self.inbound_qos2.release(id);
                self.conn.send(Outbound::PubComp(id));
            }
            Inbound::Subscribe {
                packet_id,
                id,
                filters,
            } => {
                if filters
                    .iter()
                    .any(|f| f.no_local && f.filter.starts_with("$share/"))
                {
                    self.disconnect(
                        DisconnectReasonCode::ProtocolError,
                        "No Local on a shared subscription (MQTT-3.8.3-4)",
                    )
                    .await;
                    return Flow::Stop(End::Abnormal);
                }
                let requests = filters
                    .into_iter()
                    .map(|f| SubscribeRequest {
                        filter: f.filter,
                        qos: hub_qos(f.qos),
                        no_local: f.no_local,
                        retain_as_published: f.retain_as_published,
                        retain_handling: f.retain_handling,
                        subscription_id: id,
                    })
                    .collect();
                let (results, retained) = Box::pin(session.subscribe(requests)).await;
                let codes = results
                    .into_iter()
                    .map(|r| match r {
                        Ok(q) => Ok(wire_qos(q)),
                        Err(refusal) => Err(refused(Stage::Subscribe, &refusal.cause()).0),
                    })
                    .collect();
                self.conn.send(Outbound::SubAck(packet_id, codes));
                self.pending.extend(retained);
            }
            Inbound::Unsubscribe { packet_id, filters } => {
                let existed = Box::pin(session.unsubscribe(filters)).await;
                self.conn.send(Outbound::UnsubAck(packet_id, existed));
            }
            Inbound::PingReq => {
                self.conn.send(Outbound::PingResp);
            }
            Inbound::Disconnect {
                reason,
                session_expiry,
            } => {
                if let Some(secs) = session_expiry
                    && session.set_session_expiry(secs).await.is_err()
                {
                    // MQTT-3.14.2-2: a session that began without expiry cannot get one now.
                    self.disconnect(
                        DisconnectReasonCode::ProtocolError,
                        "session expiry set at DISCONNECT after 0 at CONNECT",
                    )
                    .await;
                    return Flow::Stop(End::Abnormal);
                }
                // 0x04: disconnect with will message.
                return Flow::Stop(if reason == 0x04 {
                    End::Abnormal
                } else {
                    End::Normal
                });
            }
            Inbound::Connect(_) => {
                self.disconnect(
                    DisconnectReasonCode::ProtocolError,
                    "second CONNECT (MQTT-3.1.0-2)",
                )
                .await;
                return Flow::Stop(End::Abnormal);
            }
            Inbound::Unexpected(what) => {
                self.disconnect(
                    DisconnectReasonCode::ProtocolError,
                    &format!("unexpected {what} from a client"),
                )
                .await;
                return Flow::Stop(End::Abnormal);
            }
        }
        Flow::Continue
    }

    async fn handle_publish(&mut self, session: &Session, p: crate::codec::Publish) -> Flow {
        let alias = p.properties.as_ref().and_then(|pp| pp.topic_alias);
        let topic = match self.aliases.resolve(&p.topic, alias) {
            Ok(t) => t,
            Err(e) => {
                // An alias out of range is 0x94; one never set is a protocol error
                // (MQTT-3.3.2-7: aliases do not outlive their connection).
                let code = match e {
                    AliasError::OutOfRange(_) => DisconnectReasonCode::TopicAliasInvalid,
                    AliasError::Unknown(_) => DisconnectReasonCode::ProtocolError,
                };
                self.disconnect(code, &e.to_string()).await;
                return Flow::Stop(End::Abnormal);
            }
        };
        if p.qos == QoS::ExactlyOnce {
            let Some(id) = p.packet_id else {
                self.disconnect(
                    DisconnectReasonCode::ProtocolError,
                    "QoS 2 PUBLISH without a packet id",
                )
                .await;
                return Flow::Stop(End::Abnormal);
            };
            if self.inbound_qos2.is_pending(id) {
                // Retransmission of a message already accepted: acknowledge again only, and
                // not before the acknowledgements owed (the original may still wait for its
                // sinks).
                let again = Outbound::PubRec(id, 0, None);
                if self.owed.is_empty() {
                    self.conn.send(again);
                } else {
                    self.owed
                        .push_back(Box::pin(std::future::ready(Owed::Ack(again))));
                }
                return Flow::Continue;
            }
            if !self.inbound_qos2.has_room() {
                self.disconnect(
                    DisconnectReasonCode::ReceiveMaximumExceeded,
                    "more than 100 QoS 2 in flight",
                )
                .await;
                return Flow::Stop(End::Abnormal);
            }
        }
        let props = p.properties.unwrap_or_default();
        if props
            .response_topic
            .as_ref()
            .is_some_and(|t| t.contains(['+', '#']))
        {
            self.disconnect(
                DisconnectReasonCode::ProtocolError,
                "a Response Topic with a wildcard (MQTT-3.3.2-14)",
            )
            .await;
            return Flow::Stop(End::Abnormal);
        }
        let request = PublishRequest {
            transport: self.transport,
            topic: topic.clone(),
            payload: p.payload,
            qos: hub_qos(p.qos),
            retain: p.retain,
            properties: Properties {
                user: props
                    .user_properties
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                content_type: props.content_type.map(|c| c.to_string()),
                response_topic: props.response_topic.map(|c| c.to_string()),
                correlation_data: props.correlation_data,
                payload_utf8: props.is_utf8_payload,
            },
            message_expiry_secs: props.message_expiry_interval.map(NonZeroU32::get),
        };
        let (outcome, confirmation) = match Box::pin(session.publish_deferred(request)).await {
            Ok((delivered, confirmation)) => (Ok(delivered), confirmation),
            Err(refusal) => (Err(refusal), None),
        };
        let (reason, discarded) = match &outcome {
            Ok(_) => (0x00, false),
            Err(refusal) => refused(Stage::Publish, &refusal.cause()),
        };
        let text = outcome.as_ref().err().map(ToString::to_string);
        if let Some(text) = &text
            && !discarded
        {
            // A refused message: MQTT 3.1.1 has no negative acknowledgement, so the connection
            // is closed; MQTT 5 answers QoS 1/2 with the reason code and disconnects QoS 0.
            let disconnect = self.version == Version::V3 || p.qos == QoS::AtMostOnce;
            if disconnect {
                let code = DisconnectReasonCode::try_from(reason)
                    .unwrap_or(DisconnectReasonCode::UnspecifiedError);
                self.disconnect(code, text).await;
                return Flow::Stop(End::Abnormal);
            }
        }
        let reason = if discarded && self.version == Version::V3 {
            0
        } else {
            reason
        };
        let (ack, id, exactly_once) = match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => (Outbound::PubAck(id, reason, text), id, false),
            (QoS::ExactlyOnce, Some(id)) => {
                if outcome.is_ok() {
                    self.inbound_qos2.insert(id);
                }
                (Outbound::PubRec(id, reason, text), id, true)
            }
            _ => return Flow::Continue,
        };
        match confirmation {
            // Nothing owed before it: acknowledge now.
            None if self.owed.is_empty() => {
                self.conn.send(ack);
            }
            None => self
                .owed
                .push_back(Box::pin(std::future::ready(Owed::Ack(ack)))),
            Some(confirmation) => self.owed.push_back(Box::pin(async move {
                match confirmation.await {
                    Ok(()) => Owed::Ack(ack),
                    Err(e) => Owed::Failed {
                        id,
                        exactly_once,
                        text: e.to_string(),
                    },
                }
            })),
        }
        Flow::Continue
    }
}
/// The one mapping of the hub's refusals to MQTT, by an `admission::Refusal`'s stage and cause
/// (taken straight from the engine's refusal, so a throttled message costs no string): the MQTT 5
/// reason code for the refused CONNECT (see [`ConnectCode::from_reason`] for 3.1.1), PUBLISH or
/// SUBSCRIBE, and whether a refused message is discarded (throttled or over quota: counted, and
/// acknowledged to 3.1.1 clients, which have no negative acknowledgement) rather than refused.
fn refused(stage: Stage, cause: &Cause) -> (u8, bool) {
    match (cause, stage) {
        (Cause::BadCredentials, _) => (0x86, false),
        (Cause::Disabled | Cause::NotAuthorized, _) => (0x87, false),
        (Cause::Malformed, Stage::Connect) => (0x83, false),
        (Cause::Malformed, Stage::Publish) => (0x90, false),
        (Cause::Malformed, Stage::Subscribe) => (0x8F, false),
        (Cause::Limited(l), Stage::Connect) => match l.limit.kind() {
            LimitKind::Rate => (0x9F, false),
            LimitKind::Quota | LimitKind::Malformed => (0x97, false),
        },
        // PUBACK has no "rate too high" code: 0x97 with a reason string naming the limit.
        (Cause::Limited(l), Stage::Publish) => match l.limit.kind() {
            LimitKind::Rate | LimitKind::Quota => (0x97, true),
            LimitKind::Malformed => match l.limit {
                LimitId::TopicLength | LimitId::TopicLevels => (0x90, false),
                _ => (0x83, false),
            },
        },
        (Cause::Limited(l), Stage::Subscribe) => match l.limit.kind() {
            LimitKind::Malformed => (0x8F, false),
            LimitKind::Rate | LimitKind::Quota => (0x97, false),
        },
        (Cause::Unavailable, Stage::Connect) => (0x88, false),
        (Cause::Unavailable, _) => (0x80, false),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    /// Every connection's task is as large as the largest state of this future, idle or not:
    /// rarely used large futures (connect, close, subscribe, publish) are boxed, the driver and
    /// the session are boxed, and CONNECT's state is gone before the connection's begins. With
    /// tokio's task header, 1,600 bytes keep the task in jemalloc's 2 KiB size class (it was 5
    /// KiB at 4,128 bytes).
    #[tokio::test]
    async fn an_idle_connection_task_stays_small() {
        let hub = ironhub_core::Hub::start(
            Default::default(),
            Arc::new(ironhub_core::store::memory::memory_store()),
        )
        .await
        .unwrap();
        let (stream, _peer) = tokio::io::duplex(64);
        let task = super::serve_connection(
            stream,
            "127.0.0.1:1".parse().unwrap(),
            hub.transport("mqtt"),
            hub,
            Default::default(),
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1600, "connection future is {size} bytes");
        // Queues hold up to a thousand of them under load.
        assert!(std::mem::size_of::<ironhub_core::hub::Delivery>() <= 40);
    }

    #[test]
    fn refusals_get_the_reason_codes_of_their_packet() {
        use ironhub_core::admission::{Cause, Stage};
        use ironhub_core::limits::{LimitId, Limited};
        let code = |stage, cause| super::refused(stage, &cause);
        let limited = |id| Cause::Limited(Limited::new(id));
        assert_eq!(code(Stage::Connect, Cause::BadCredentials), (0x86, false));
        assert_eq!(code(Stage::Connect, Cause::Disabled), (0x87, false));
        assert_eq!(code(Stage::Connect, Cause::Malformed), (0x83, false));
        assert_eq!(
            code(Stage::Connect, limited(LimitId::DeviceConnections)),
            (0x9F, false)
        );
        assert_eq!(
            code(Stage::Connect, limited(LimitId::MonthlyMessages)),
            (0x97, false)
        );
        assert_eq!(code(Stage::Connect, Cause::Unavailable), (0x88, false));
        assert_eq!(code(Stage::Publish, Cause::NotAuthorized), (0x87, false));
        assert_eq!(code(Stage::Publish, Cause::Malformed), (0x90, false));
        assert_eq!(
            code(Stage::Publish, limited(LimitId::DeviceMessagesQos1)),
            (0x97, true)
        );
        assert_eq!(
            code(Stage::Publish, limited(LimitId::TopicLevels)),
            (0x90, false)
        );
        assert_eq!(
            code(Stage::Publish, limited(LimitId::UserProperties)),
            (0x83, false)
        );
        assert_eq!(code(Stage::Publish, Cause::Unavailable), (0x80, false));
        assert_eq!(code(Stage::Subscribe, Cause::Malformed), (0x8F, false));
        assert_eq!(
            code(Stage::Subscribe, limited(LimitId::TopicLength)),
            (0x8F, false)
        );
        assert_eq!(
            code(Stage::Subscribe, limited(LimitId::SubscriptionsPerDevice)),
            (0x97, false)
        );
    }
}
