//! The admission pipeline's answer when it says no: one [`Refusal`] for a connection, a message
//! or a subscription, whatever the transport. The engine refuses with precise causes
//! (`ConnectRefusal`, `PublishRefusal`, `SubscribeRefusal`); each converts into this type, and
//! each transport maps this type (MQTT: its stage and cause, which need no allocation) to its
//! protocol's answer in one function.

mod checks;
mod refusals;

pub use checks::{keep_alive, publish, subscribe_count, subscription, will};
pub use refusals::{ConnectRefusal, PublishRefusal, SubscribeRefusal};

use crate::limits::Limited;

/// What was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A connection (MQTT CONNECT, HTTP/CoAP `/auth`).
    Connect,
    /// A message.
    Publish,
    /// A subscription.
    Subscribe,
}

/// Why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Credentials missing, malformed or wrong.
    BadCredentials,
    /// The device is disabled.
    Disabled,
    /// Authenticated, but not allowed (ACL, another device's topic).
    NotAuthorized,
    /// The request itself is out of bounds (a topic or filter, a keep-alive outside the range).
    Malformed,
    /// A documented limit: its id, its kind (rate, quota, bound) and when to retry.
    Limited(Limited),
    /// The hub cannot serve now (storage).
    Unavailable,
}

/// A refusal as transports answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was refused.
    pub stage: Stage,
    /// Why.
    pub cause: Cause,
    /// The part a transport quotes in its own sentence (why credentials failed or access was
    /// denied, what is wrong with a topic or filter); empty for the other causes.
    pub detail: String,
    /// The whole explanation (MQTT 5 reason strings, logs).
    pub message: String,
}

impl Refusal {
    /// A refusal at `stage` for `cause`.
    pub fn new(stage: Stage, cause: Cause, detail: String, message: String) -> Refusal {
        Refusal {
            stage,
            cause,
            detail,
            message,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
