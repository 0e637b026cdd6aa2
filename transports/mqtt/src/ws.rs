//! MQTT over WebSocket (MQTT 3.1.1 and 5.0, section 6): the handshake, which selects the
//! `mqtt` subprotocol, and the connection's bytes carried in binary frames, so that the
//! connection driver reads and writes a plain byte stream. A packet may span frames and a frame
//! may hold several packets: the driver frames packets itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The subprotocol MQTT clients offer and the server selects (MQTT-6.0.0-3, 6.0.0-4).
const SUBPROTOCOL: &str = "mqtt";

/// Room a frame or message gets beyond one packet of the largest size accepted (a frame may
/// carry the end of one packet and the start of the next).
const FRAME_SLACK: usize = 64 * 1024;

/// Completes the WebSocket handshake on `stream`: a client that does not offer the `mqtt`
/// subprotocol is answered 400 with the reason. Frames and messages are bounded by the largest
/// packet accepted (`max_packet`) and some slack: the packet-size limit holds over WebSocket
/// too, before anything is buffered past it.
pub async fn accept<S>(stream: S, max_packet: usize) -> Result<WsBytes<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = max_packet + FRAME_SLACK;
    // tungstenite's read buffer is allocated up front (128 KiB by default): small, as the
    // connection's own read buffer is, for the many idle connections a hub holds.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_frame_size(Some(limit))
        .max_message_size(Some(limit));
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, select_mqtt, Some(config)).await?;
    Ok(WsBytes {
        ws,
        unread: Bytes::new(),
    })
}

#[expect(
    clippy::result_large_err,
    reason = "the signature of tungstenite's handshake callback"
)]
fn select_mqtt(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offered = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if !offered {
        let mut refusal = ErrorResponse::new(Some(
            "MQTT over WebSocket needs the \"mqtt\" subprotocol (Sec-WebSocket-Protocol: mqtt)"
                .to_owned(),
        ));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    response.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

/// A WebSocket connection as the byte stream MQTT runs on: binary frames in, one binary frame
/// per write out. A text frame is a protocol violation that ends the stream (MQTT-6.0.0-1).
pub struct WsBytes<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary frame read.
    unread: Bytes,
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.unread.is_empty() {
                let n = self.unread.len().min(buf.remaining());
                buf.put_slice(&self.unread[..n]);
                self.unread.advance(n);
                return Poll::Ready(Ok(()));
            }
            // Pings are answered by tungstenite itself as the stream is polled.
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(bytes))) => self.unread = bytes,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(Message::Text(_) | Message::Frame(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a WebSocket frame that is not binary (MQTT-6.0.0-1)",
                    )));
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(io_error)?;
        ws.start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_error)
    }
}
