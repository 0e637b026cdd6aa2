//! The engine's precise refusals, one enum per stage; each converts into the one [`Refusal`]
//! transports map to their protocol.

use super::{Cause, Refusal, Stage};
use crate::limits::Limited;
use crate::topic;

/// Why a connection was refused. Transports map each to their protocol's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    /// Unknown device, malformed credentials or wrong signature.
    #[error("bad credentials: {0}")]
    BadCredentials(&'static str),
    /// The device is disabled.
    #[error("device is disabled")]
    Disabled,
    /// Credentials are fine but the request is not allowed.
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    /// Keep-alive outside the accepted range (seed 000: 30 to 1200 s).
    #[error("keep-alive {got} s outside {min}..={max} s")]
    KeepAliveOutOfRange {
        /// Requested.
        got: u16,
        /// Smallest accepted.
        min: u16,
        /// Largest accepted.
        max: u16,
    },
    /// A documented limit refused the connection (connection rate, monthly quota).
    #[error("{0}")]
    Limited(Limited),
    /// The hub cannot serve now (storage failure).
    #[error("server unavailable: {0}")]
    Unavailable(String),
}

impl ConnectRefusal {
    /// How many kinds of refusal there are.
    pub const KINDS: usize = 6;
    /// The kinds' names in metrics, indexed by [`ConnectRefusal::kind`].
    pub const KIND_LABELS: [&'static str; ConnectRefusal::KINDS] = [
        "bad_credentials",
        "disabled",
        "not_authorized",
        "keep_alive",
        "limited",
        "unavailable",
    ];

    /// Index of this refusal's kind in [`ConnectRefusal::KIND_LABELS`].
    pub fn kind(&self) -> usize {
        match self {
            ConnectRefusal::BadCredentials(_) => 0,
            ConnectRefusal::Disabled => 1,
            ConnectRefusal::NotAuthorized(_) => 2,
            ConnectRefusal::KeepAliveOutOfRange { .. } => 3,
            ConnectRefusal::Limited(_) => 4,
            ConnectRefusal::Unavailable(_) => 5,
        }
    }
}

impl ConnectRefusal {
    /// Why, as every transport classifies it (no allocation: MQTT answers with this alone).
    pub fn cause(&self) -> Cause {
        match self {
            ConnectRefusal::BadCredentials(_) => Cause::BadCredentials,
            ConnectRefusal::Disabled => Cause::Disabled,
            ConnectRefusal::NotAuthorized(_) => Cause::NotAuthorized,
            ConnectRefusal::KeepAliveOutOfRange { .. } => Cause::Malformed,
            ConnectRefusal::Limited(l) => Cause::Limited(*l),
            ConnectRefusal::Unavailable(_) => Cause::Unavailable,
        }
    }
}

impl From<&ConnectRefusal> for Refusal {
    fn from(r: &ConnectRefusal) -> Refusal {
        let detail = match r {
            ConnectRefusal::BadCredentials(why) => (*why).to_owned(),
            ConnectRefusal::NotAuthorized(why) => why.clone(),
            _ => String::new(),
        };
        Refusal::new(Stage::Connect, r.cause(), detail, r.to_string())
    }
}

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishRefusal {
    /// The topic is outside what this client may publish to.
    #[error("not authorized to publish to {0}")]
    NotAuthorized(String),
    /// The topic name is invalid.
    #[error("invalid topic name: {0}")]
    TopicInvalid(topic::TopicError),
    /// A documented limit discarded (rate, quota) or refused (bounds) the message.
    #[error("{0}")]
    Limited(Limited),
    /// Storage failed: the message was not accepted.
    #[error("server unavailable: {0}")]
    Unavailable(String),
}

/// Why one filter of a subscribe was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeRefusal {
    /// Malformed filter.
    #[error("invalid topic filter: {0}")]
    FilterInvalid(topic::TopicError),
    /// Outside what this client may subscribe to.
    #[error("not authorized to subscribe to {0}")]
    NotAuthorized(String),
    /// A documented limit refused it (filters per request, subscriptions per device, bounds).
    #[error("{0}")]
    Limited(Limited),
    /// Storage failed.
    #[error("server unavailable: {0}")]
    Unavailable(String),
}

impl PublishRefusal {
    /// Why, as every transport classifies it (no allocation: throttled messages answer with
    /// this alone).
    pub fn cause(&self) -> Cause {
        match self {
            PublishRefusal::NotAuthorized(_) => Cause::NotAuthorized,
            PublishRefusal::TopicInvalid(_) => Cause::Malformed,
            PublishRefusal::Limited(l) => Cause::Limited(*l),
            PublishRefusal::Unavailable(_) => Cause::Unavailable,
        }
    }
}

impl From<&PublishRefusal> for Refusal {
    fn from(r: &PublishRefusal) -> Refusal {
        let detail = match r {
            PublishRefusal::NotAuthorized(topic) => topic.clone(),
            PublishRefusal::TopicInvalid(e) => e.to_string(),
            _ => String::new(),
        };
        Refusal::new(Stage::Publish, r.cause(), detail, r.to_string())
    }
}

impl SubscribeRefusal {
    /// Why, as every transport classifies it.
    pub fn cause(&self) -> Cause {
        match self {
            SubscribeRefusal::FilterInvalid(_) => Cause::Malformed,
            SubscribeRefusal::NotAuthorized(_) => Cause::NotAuthorized,
            SubscribeRefusal::Limited(l) => Cause::Limited(*l),
            SubscribeRefusal::Unavailable(_) => Cause::Unavailable,
        }
    }
}

impl From<&SubscribeRefusal> for Refusal {
    fn from(r: &SubscribeRefusal) -> Refusal {
        let detail = match r {
            SubscribeRefusal::FilterInvalid(e) => e.to_string(),
            SubscribeRefusal::NotAuthorized(filter) => filter.clone(),
            _ => String::new(),
        };
        Refusal::new(Stage::Subscribe, r.cause(), detail, r.to_string())
    }
}
