//! Device tokens for request/response transports (HTTP, CoAP): a device authenticates once with
//! the signed `/auth` request and sends the token with each message, without holding a session.
//! A token is in the store (as the SHA-256 of its text) before the device gets it, so a restart
//! or another node of a cluster knows it; each node keeps the tokens it has seen in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Hub;
use super::session::{ClientIdentity, ConnectRefusal, TransportKind};
use crate::auth::SignMethod;
use crate::store::{self, StoreError, records, transact};

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

/// The JSON body of `/auth` (Alibaba's field names).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthBody {
    product_key: String,
    device_name: String,
    client_id: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    signmethod: Option<String>,
    sign: String,
}

impl AuthRequest {
    /// Parses the JSON body of HTTP's and CoAP's `/auth` (`signmethod` hmacmd5 when absent);
    /// Err says what is wrong, for a 400 / 4.00 answer.
    pub fn from_json(body: &[u8]) -> Result<AuthRequest, String> {
        let b: AuthBody =
            serde_json::from_slice(body).map_err(|e| format!("invalid auth request: {e}"))?;
        let method = b.signmethod.as_deref().unwrap_or("hmacmd5");
        let sign_method = SignMethod::parse(method)
            .ok_or("signmethod must be hmacsha256, hmacsha1 or hmacmd5")?;
        Ok(AuthRequest {
            product_key: b.product_key,
            device_name: b.device_name,
            client_id: b.client_id,
            timestamp: b.timestamp,
            sign_method,
            sign: b.sign,
        })
    }
}

/// Issued tokens and what they stand for.
#[derive(Default)]
pub(crate) struct TokenTable {
    map: Mutex<HashMap<String, (ClientIdentity, u64)>>,
}

impl Hub {
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

/// Device tokens of the HTTP and CoAP transports: issued on authentication, stored before they are answered.
#[derive(Clone, Copy)]
pub struct Tokens<'a> {
    hub: &'a Hub,
}

impl Hub {
    /// Device tokens of the HTTP and CoAP transports: issued on authentication, stored before they are answered.
    pub fn tokens(&self) -> Tokens<'_> {
        Tokens { hub: self }
    }
}

impl Tokens<'_> {
    /// Authenticates a device request and issues a token valid for `ttl_secs`. The connection
    /// limits (L-011, L-012) and monthly quotas apply as to an MQTT CONNECT.
    pub async fn issue(
        &self,
        transport: TransportKind,
        req: &AuthRequest,
        ttl_secs: u64,
    ) -> Result<(String, ClientIdentity), ConnectRefusal> {
        let issued = self.issue_token_inner(req, ttl_secs).await;
        self.hub
            .inner
            .stats
            .connect(transport, issued.as_ref().err());
        issued
    }

    /// The device a token stands for, if it is known and not expired (also a token issued
    /// before a restart, or by another node of a cluster).
    pub async fn identity(&self, token: &str) -> Option<ClientIdentity> {
        let now = self.hub.now_ms();
        let cached = {
            let map = self.hub.inner.tokens.map.lock().expect("tokens lock");
            map.get(token)
                .filter(|(_, expires)| *expires > now)
                .map(|(id, _)| id.clone())
        };
        if cached.is_some() {
            return cached;
        }
        let hash = super::business::hash(token);
        let stored = transact(&**self.hub.store(), |t| {
            let hash = hash.clone();
            Box::pin(async move { records::get_token(t, &hash).await })
        })
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "token lookup failed"))
        .ok()
        .flatten()
        .filter(|r| r.expires_at_ms > now)?;
        let identity = ClientIdentity {
            key: Arc::from(super::device_session_key(
                &stored.product_key,
                &stored.device_name,
            )),
            tenant: stored.tenant,
            device: Some((stored.product_key, stored.device_name)),
        };
        self.hub
            .inner
            .tokens
            .map
            .lock()
            .expect("tokens lock")
            .insert(token.to_owned(), (identity.clone(), stored.expires_at_ms));
        Some(identity)
    }

    /// Drops the stored tokens that expired, a page at a time (the session sweeper of a single
    /// node calls it; in a cluster, one node for all).
    pub async fn sweep_stored(&self, now: u64) -> Result<usize, StoreError> {
        let mut after: Option<String> = None;
        let mut dropped = 0;
        loop {
            let page = transact(&**self.hub.store(), |t| {
                let after = after.clone();
                Box::pin(async move {
                    records::list_tokens_after(t, after.as_deref(), super::cluster::SWEEP_PAGE)
                        .await
                })
            })
            .await?;
            let expired: Vec<&String> = page
                .iter()
                .filter(|(_, r)| r.expires_at_ms <= now)
                .map(|(h, _)| h)
                .collect();
            if !expired.is_empty() {
                store::write(&**self.hub.store(), |t| {
                    for hash in &expired {
                        records::delete_token(t, hash);
                    }
                })
                .await?;
                dropped += expired.len();
            }
            if page.len() < super::cluster::SWEEP_PAGE {
                return Ok(dropped);
            }
            after = page.last().map(|(h, _)| h.clone());
        }
    }

    async fn issue_token_inner(
        &self,
        req: &AuthRequest,
        ttl_secs: u64,
    ) -> Result<(String, ClientIdentity), ConnectRefusal> {
        let identity = self
            .hub
            .verify_device(
                &req.product_key,
                &req.device_name,
                &req.client_id,
                req.timestamp.as_deref(),
                req.sign_method,
                req.sign.as_bytes(),
            )
            .await?;
        self.hub
            .admit_connection(&identity)
            .map_err(|l| ConnectRefusal::Limited(self.hub.counted(l)))?;
        let now = self.hub.now_ms();
        let token = crate::data::model::new_secret();
        let expires_at_ms = now + ttl_secs * 1000;
        {
            let mut map = self.hub.inner.tokens.map.lock().expect("tokens lock");
            if map.len() >= MAX_TOKENS {
                map.retain(|_, (_, expires)| *expires > now);
                if map.len() >= MAX_TOKENS {
                    return Err(ConnectRefusal::Unavailable(
                        "too many live device tokens".into(),
                    ));
                }
            }
            map.insert(token.clone(), (identity.clone(), expires_at_ms));
        }
        if let Some((pk, dn)) = &identity.device {
            // The next request may come after a restart, or reach another node.
            let record = records::TokenRecord {
                tenant: identity.tenant.clone(),
                product_key: pk.clone(),
                device_name: dn.clone(),
                expires_at_ms,
            };
            let hash = super::business::hash(&token);
            store::write(&**self.hub.store(), |t| {
                records::put_token(t, &hash, &record)
            })
            .await?;
        }
        Ok((token, identity))
    }
}
