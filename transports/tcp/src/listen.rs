//! Accepting TCP connections through file-descriptor exhaustion.
//!
//! When the process is out of file descriptors, `accept` fails and the connection stays in the
//! kernel's backlog: a loop that retries spins (or, with a pause, leaves clients hanging in the
//! backlog until they time out) and logs every attempt. Instead the listener keeps one spare
//! descriptor: out of descriptors, it closes the spare, accepts the waiting connection and closes
//! it at once (the client sees the connection end and may retry later), then takes the spare
//! back. Connections already served are not touched, and one warning a minute says how many were
//! refused.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// How often the "out of file descriptors" warning may repeat.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A TCP listener that survives file-descriptor exhaustion.
pub struct Listener {
    listener: TcpListener,
    /// Held so that one descriptor can be freed to refuse a connection.
    spare: Option<File>,
    /// Connections refused since the last warning.
    refused: u64,
    warned_at: Option<Instant>,
}

impl Listener {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> io::Result<Listener> {
        Ok(Listener {
            listener: TcpListener::bind(addr).await?,
            spare: spare(),
            refused: 0,
            warned_at: None,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, with Nagle's algorithm off. Errors are handled here: a connection
    /// that failed before it was accepted is skipped, one that cannot be given a descriptor is
    /// refused (closed at once).
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, peer);
                }
                Err(e) if out_of_descriptors(&e) => self.refuse_one().await,
                Err(e) if per_connection(&e) => {
                    tracing::debug!(error = %e, "a connection failed before it was accepted");
                }
                Err(e) => {
                    // Out of memory or buffers and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Frees the spare descriptor to accept and close one waiting connection.
    async fn refuse_one(&mut self) {
        self.spare = None;
        let refused = self.listener.accept().await.is_ok();
        self.spare = spare();
        if refused {
            self.refused += 1;
        } else {
            // Another thread took the freed descriptor: let the process release some first.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                refused = self.refused,
                "out of file descriptors: refusing new connections (serving those open)"
            );
            self.warned_at = Some(Instant::now());
            self.refused = 0;
        }
    }
}

fn spare() -> Option<File> {
    File::open("/dev/null").ok()
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Errors of one connection (not of the listener): the next accept may well succeed.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
