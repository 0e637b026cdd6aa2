//! ironhub-tcp: what the TCP transports (MQTT, HTTP) share: [`listen::Listener`], which keeps
//! accepting when the process runs out of file descriptors (refusing the excess at once, with
//! one warning a minute), and [`tls`], the TLS acceptor.

pub mod listen;
pub mod tls;
