//! ironhub-tcp: what the TCP transports (MQTT, HTTP) share: [`listen::Listener`], which keeps
//! accepting when the process runs out of file descriptors (refusing the excess at once, with
//! one warning a minute), [`quickack::QuickAck`], a stream that acknowledges what it reads at
//! once (for MQTT clients that leave Nagle's algorithm on), and [`tls`], the TLS acceptor.

pub mod listen;
pub mod quickack;
pub mod tls;
