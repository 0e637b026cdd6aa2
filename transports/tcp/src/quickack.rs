//! A TCP stream that acknowledges what it has read at once.
//!
//! Linux delays a TCP acknowledgement (up to 40 ms) while it expects to send one with data, and a
//! broker that answers a QoS 1 message only once the message is stored does not send that data at
//! once. A client that leaves Nagle's algorithm on (rumqttc's default, and most device SDKs')
//! holds its next packets until that acknowledgement: one busy connection, a gateway's, then
//! carried about 5,400 msg/s where it offered 10,000 (benches/notes.md, Gateways). Quick-ack mode
//! is not permanent (the kernel leaves it as soon as the connection looks interactive), so it is
//! asked for again after each read of a busy connection: from a burst of at least [`BUSY_BURST`]
//! bytes (read without the socket running dry: what a client held back by its own Nagle's
//! algorithm sends in one go) until [`QUICK_READS`] reads later, the small ones between included,
//! since the client's next packets may wait behind any of them. A device sending a packet now and
//! then has its acknowledgement carried by the broker's answer, as before: acknowledging every
//! read at once cost direct devices 12-20 % more CPU per message in the same benchmark.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read in one burst from which the peer is taken to be held back by unacknowledged data:
/// about 80 small QoS 1 messages.
pub const BUSY_BURST: usize = 8192;

/// Reads acknowledged at once after a busy burst.
pub const QUICK_READS: u32 = 256;

/// A [`TcpStream`] that acknowledges its reads at once while it is busy.
pub struct QuickAck {
    stream: TcpStream,
    /// Reads still to be acknowledged at once.
    quick_reads: u32,
    /// Bytes read since the socket last had nothing to read.
    burst: usize,
}

impl QuickAck {
    /// Wraps an accepted stream.
    pub fn new(stream: TcpStream) -> QuickAck {
        QuickAck {
            stream,
            quick_reads: 0,
            burst: 0,
        }
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if read.is_pending() {
            self.burst = 0;
        }
        if matches!(read, Poll::Ready(Ok(()))) && n > 0 {
            self.burst += n;
            if self.burst >= BUSY_BURST {
                self.burst = 0;
                self.quick_reads = QUICK_READS;
            }
            if self.quick_reads > 0 {
                self.quick_reads -= 1;
                // Best effort: a socket that refuses it only acknowledges later.
                let _ = SockRef::from(&self.stream).set_tcp_quickack(true);
            }
        }
        read
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, QuickAck) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, QuickAck::new(server))
    }

    /// Reads what `client` sent until `want` bytes have arrived.
    async fn read(server: &mut QuickAck, want: usize) {
        let mut buf = vec![0; 64 * 1024];
        let mut got = 0;
        while got < want {
            got += server.read(&mut buf).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_quiet_peer_is_acknowledged_as_the_kernel_chooses() {
        let (mut client, mut server) = pair().await;
        for _ in 0..20 {
            client.write_all(&[0; 100]).await.unwrap();
            read(&mut server, 100).await;
        }
        assert_eq!(server.quick_reads, 0);
    }

    #[tokio::test]
    async fn a_burst_turns_quick_acknowledgements_on_for_the_reads_after_it() {
        let (mut client, mut server) = pair().await;
        client.write_all(&vec![0; BUSY_BURST]).await.unwrap();
        read(&mut server, BUSY_BURST).await;
        let left = server.quick_reads;
        assert!(left > 0 && left < QUICK_READS, "{left}");
        client.write_all(&[0; 100]).await.unwrap();
        read(&mut server, 100).await;
        assert_eq!(server.quick_reads, left - 1);
        assert!(
            SockRef::from(&server.stream).tcp_quickack().unwrap(),
            "the socket is in quick-ack mode"
        );
        // The same bytes spread over quiet reads are no burst.
        let (mut client, mut server) = pair().await;
        for _ in 0..BUSY_BURST / 512 + 1 {
            client.write_all(&[0; 512]).await.unwrap();
            read(&mut server, 512).await;
        }
        assert_eq!(server.quick_reads, 0);
    }
}
