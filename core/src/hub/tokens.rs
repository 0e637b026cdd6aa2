//! Device tokens for request/response transports (HTTP, CoAP): a device authenticates once with
//! the signed `/auth` request and sends the token with each message, without holding a session.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Hub;
use super::session::{ClientIdentity, ConnectRefusal};
use crate::auth::SignMethod;
use crate::now_ms;

/// Most live tokens kept; beyond it the expired ones are dropped, then new tokens are refused.
const MAX_TOKENS: usize = 1_000_000;

/// A signed authentication request (the fields of HTTP's and CoAP's `/auth`).
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// ProductKey.
    pub product_key: String,
    /// DeviceName.
    pub device_name: String,
    /// The client id that was signed.
    pub client_id: String,
    /// Signed when present.
    pub timestamp: Option<String>,
    /// HMAC flavour.
    pub sign_method: SignMethod,
    /// Hex signature.
    pub sign: String,
}

/// Issued tokens and what they stand for.
#[derive(Default)]
pub(crate) struct Tokens {
    map: Mutex<HashMap<String, (ClientIdentity, u64)>>,
}

impl Hub {
    /// Authenticates a device request and issues a token valid for `ttl_secs`. The connection
    /// limits (L-011, L-012) and monthly quotas apply as to an MQTT CONNECT.
    pub async fn issue_token(
        &self,
        req: &AuthRequest,
        ttl_secs: u64,
    ) -> Result<(String, ClientIdentity), ConnectRefusal> {
        let identity = self
            .verify_device(
                &req.product_key,
                &req.device_name,
                &req.client_id,
                req.timestamp.as_deref(),
                req.sign_method,
                req.sign.as_bytes(),
            )
            .await?;
        self.admit_connection(&identity.tenant, &identity.key)
            .map_err(|l| ConnectRefusal::Limited(self.counted(l)))?;
        let now = now_ms();
        let token = crate::model::new_secret();
        let mut map = self.inner.tokens.map.lock().expect("tokens lock");
        if map.len() >= MAX_TOKENS {
            map.retain(|_, (_, expires)| *expires > now);
            if map.len() >= MAX_TOKENS {
                return Err(ConnectRefusal::Unavailable(
                    "too many live device tokens".into(),
                ));
            }
        }
        map.insert(token.clone(), (identity.clone(), now + ttl_secs * 1000));
        Ok((token, identity))
    }

    /// The device a token stands for, if it is known and not expired.
    pub fn token_identity(&self, token: &str) -> Option<ClientIdentity> {
        let map = self.inner.tokens.map.lock().expect("tokens lock");
        map.get(token)
            .filter(|(_, expires)| *expires > now_ms())
            .map(|(id, _)| id.clone())
    }

    /// Drops expired tokens (the session sweeper calls this).
    pub(crate) fn sweep_tokens(&self, now: u64) {
        self.inner
            .tokens
            .map
            .lock()
            .expect("tokens lock")
            .retain(|_, (_, expires)| *expires > now);
    }
}
