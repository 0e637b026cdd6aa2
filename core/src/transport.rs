//! The `Transport` trait: a protocol front end (MQTT, HTTP, CoAP, QUIC).

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// Error type transports return from `serve`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A protocol front end. It turns frames into hub calls and hub deliveries back into frames, and
/// owns no business rule: ACL, limits and routing live in the hub so every transport agrees.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Short name for logs and metrics ("mqtt", "coap").
    fn name(&self) -> &'static str;

    /// Serves until `shutdown` is cancelled, then closes its connections gracefully and returns.
    async fn serve(self: Box<Self>, hub: Hub, shutdown: CancellationToken) -> Result<(), BoxError>;
}
