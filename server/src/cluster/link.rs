//! The node-to-node link: TCP, one connection per peer in each direction, frames of a u32
//! big-endian length and a postcard [`Frame`]. The dialing node says who it is and presents the
//! cluster secret first; requests are numbered and answered in any order, so a slow one (a
//! takeover waits for a connection to close) does not hold up the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::api::{hashes_equal, token_hash};
use ironhub_core::Hub;
use ironhub_core::hub::{PeerError, PeerReply, PeerRequest};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, oneshot};
use tokio_util::sync::CancellationToken;

/// Largest frame (a message of 256 KB and its envelope fit with room).
const MAX_FRAME: usize = 4 * 1024 * 1024;
/// How long a request may take: a takeover waits up to 6 s for a connection to close.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection has to present itself.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed dial, calls to that node fail at once for this long (its lease tells the
/// others soon whether it is gone).
const REDIAL_AFTER: Duration = Duration::from_millis(500);

/// What travels on the link.
#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    /// First frame of a dialing node: its id and the SHA-256 of the cluster secret.
    Hello {
        node: String,
        secret_sha256: [u8; 32],
    },
    /// A request, numbered by the caller.
    Request { id: u64, request: Box<PeerRequest> },
    /// The answer to request `id`.
    Reply {
        id: u64,
        reply: Result<PeerReply, String>,
    },
}

async fn read_frame(rd: &mut OwnedReadHalf) -> std::io::Result<Frame> {
    let len = rd.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut buf = vec![0; len];
    rd.read_exact(&mut buf).await?;
    postcard::from_bytes(&buf).map_err(std::io::Error::other)
}

async fn write_frame(wr: &mut OwnedWriteHalf, frame: &Frame) -> std::io::Result<()> {
    let bytes = postcard::to_stdvec(frame).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(bytes.len() + 4);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    wr.write_all(&out).await
}

/// Serves the link: answers the requests of other nodes with `hub`.
pub async fn serve(listener: TcpListener, hub: Hub, secret: String, shutdown: CancellationToken) {
    let expected = token_hash(&secret);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster link accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (hub, shutdown) = (hub.clone(), shutdown.clone());
        tokio::spawn(async move {
            let (mut rd, wr) = stream.into_split();
            let node = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut rd)).await {
                Ok(Ok(Frame::Hello {
                    node,
                    secret_sha256,
                })) if hashes_equal(&secret_sha256, &expected) => node,
                _ => {
                    tracing::warn!(%peer, "cluster link: refused a connection without the cluster secret");
                    return;
                }
            };
            tracing::debug!(%peer, %node, "cluster link: node connected");
            let wr = Arc::new(Mutex::new(wr));
            loop {
                let frame = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    f = read_frame(&mut rd) => f,
                };
                let Ok(Frame::Request { id, request }) = frame else {
                    return;
                };
                let (hub, wr) = (hub.clone(), wr.clone());
                tokio::spawn(async move {
                    let reply = hub.peer_request(*request).await.map_err(|e| e.to_string());
                    let mut wr = wr.lock().await;
                    if let Err(e) = write_frame(&mut wr, &Frame::Reply { id, reply }).await {
                        tracing::debug!(error = %e, "cluster link: reply not sent");
                    }
                });
            }
        });
    }
}

type Waiting = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Result<PeerReply, String>>>>>;

/// A connection to one peer.
struct Conn {
    writer: Mutex<OwnedWriteHalf>,
    waiting: Waiting,
    closed: CancellationToken,
}

/// The connection to one address: the live one, or when the last attempt failed.
#[derive(Default)]
struct Peer {
    conn: Option<Arc<Conn>>,
    failed_at: Option<tokio::time::Instant>,
}

/// Calls other nodes, keeping one connection to each.
pub struct Dialer {
    node_id: String,
    secret_sha256: [u8; 32],
    next_id: AtomicU64,
    /// One entry per address, each behind its own lock: dialing a node that does not answer
    /// holds up calls to that node only.
    peers: std::sync::Mutex<HashMap<String, Arc<Mutex<Peer>>>>,
}

impl Dialer {
    /// A dialer for node `node_id` presenting `secret`.
    pub fn new(node_id: &str, secret: &str) -> Dialer {
        Dialer {
            node_id: node_id.to_owned(),
            secret_sha256: token_hash(secret),
            next_id: AtomicU64::new(1),
            peers: std::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn conn(&self, addr: &str) -> std::io::Result<Arc<Conn>> {
        let peer = self
            .peers
            .lock()
            .expect("link lock")
            .entry(addr.to_owned())
            .or_default()
            .clone();
        let mut peer = peer.lock().await;
        if let Some(c) = peer.conn.as_ref().filter(|c| !c.closed.is_cancelled()) {
            return Ok(c.clone());
        }
        if peer.failed_at.is_some_and(|at| at.elapsed() < REDIAL_AFTER) {
            return Err(std::io::Error::other("the last attempt failed moments ago"));
        }
        match self.dial(addr).await {
            Ok(conn) => {
                peer.conn = Some(conn.clone());
                peer.failed_at = None;
                Ok(conn)
            }
            Err(e) => {
                peer.conn = None;
                peer.failed_at = Some(tokio::time::Instant::now());
                Err(e)
            }
        }
    }

    async fn dial(&self, addr: &str) -> std::io::Result<Arc<Conn>> {
        let stream = tokio::time::timeout(HELLO_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let hello = Frame::Hello {
            node: self.node_id.clone(),
            secret_sha256: self.secret_sha256,
        };
        write_frame(&mut wr, &hello).await?;
        let conn = Arc::new(Conn {
            writer: Mutex::new(wr),
            waiting: Arc::default(),
            closed: CancellationToken::new(),
        });
        let (waiting, closed) = (conn.waiting.clone(), conn.closed.clone());
        tokio::spawn(async move {
            while let Ok(Frame::Reply { id, reply }) = read_frame(&mut rd).await {
                if let Some(tx) = waiting.lock().expect("link lock").remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            // Closed: callers still waiting get an error (their senders drop here).
            closed.cancel();
            waiting.lock().expect("link lock").clear();
        });
        Ok(conn)
    }

    /// Sends `request` to the node at `addr` and waits for the answer, all within
    /// [`CALL_TIMEOUT`].
    pub async fn call(
        &self,
        node: &str,
        addr: &str,
        request: PeerRequest,
    ) -> Result<PeerReply, PeerError> {
        tokio::time::timeout(CALL_TIMEOUT, self.call_inner(node, addr, request))
            .await
            .unwrap_or_else(|_| {
                Err(PeerError::Unreachable {
                    node: node.to_owned(),
                    reason: "no answer in time".into(),
                })
            })
    }

    async fn call_inner(
        &self,
        node: &str,
        addr: &str,
        request: PeerRequest,
    ) -> Result<PeerReply, PeerError> {
        let unreachable = |reason: String| PeerError::Unreachable {
            node: node.to_owned(),
            reason,
        };
        let conn = self
            .conn(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.waiting.lock().expect("link lock").insert(id, tx);
        let sent = {
            let mut wr = conn.writer.lock().await;
            write_frame(
                &mut wr,
                &Frame::Request {
                    id,
                    request: Box::new(request),
                },
            )
            .await
        };
        if let Err(e) = sent {
            conn.closed.cancel();
            conn.waiting.lock().expect("link lock").remove(&id);
            return Err(unreachable(e.to_string()));
        }
        // When `call`'s deadline drops this future, the waiting entry goes with the answer or
        // the connection, whichever comes first.
        match rx.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(reason)) => Err(PeerError::Failed {
                node: node.to_owned(),
                reason,
            }),
            Err(_) => Err(unreachable("connection closed".into())),
        }
    }
}
