//! The API's one error shape: a status and a JSON body naming the problem (and the limit).

use hyper::StatusCode;
use ironhub_core::HubError;
use ironhub_core::limits::{LimitId, LimitKind, Limited};
use schemars::JsonSchema;
use serde::Serialize;

/// An API error: status, stable code, message for the caller.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    code: &'static str,
    message: String,
    /// For limits: the limit id (docs/limits.md) and when to retry.
    limit: Option<&'static str>,
    pub(crate) retry_after_secs: Option<u64>,
}

/// The body of every error answer.
#[derive(Serialize, JsonSchema)]
pub(crate) struct ErrorBody {
    /// A stable code: `invalid_request`, `not_found`, `rate_limited`, ...
    error: &'static str,
    /// What is wrong, for a person.
    message: String,
    /// The limit refused at, its id in docs/limits.md.
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            limit: None,
            retry_after_secs: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The hub refused at a limit.
    pub(crate) fn limited(limited: Limited, message: impl Into<String>) -> Self {
        ApiError::from(HubError::Limited {
            limited,
            message: message.into(),
        })
    }

    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code,
            message: self.message.clone(),
            limit: self.limit,
        }
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::NotFound { .. } => ApiError::not_found(e.to_string()),
            HubError::AlreadyExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", e.to_string())
            }
            HubError::Invalid(m) => ApiError::bad_request(m),
            HubError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            HubError::Limited { limited, message } => {
                let (status, code) = match limited.limit.kind() {
                    _ if matches!(
                        limited.limit,
                        LimitId::BroadcastSize
                            | LimitId::ShadowSize
                            | LimitId::OtaPackageSize
                            | LimitId::RemoteConfigSize
                            | LimitId::ScriptSize
                            | LimitId::TslImportSize
                            | LimitId::TslValidCharacters
                    ) =>
                    {
                        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
                    }
                    LimitKind::Rate => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
                    LimitKind::Quota => (StatusCode::FORBIDDEN, "limit_exceeded"),
                    LimitKind::Malformed => (StatusCode::BAD_REQUEST, "invalid_request"),
                };
                let mut e = ApiError::new(status, code, format!("{limited} ({message})"));
                e.limit = Some(limited.limit.id());
                e.retry_after_secs = limited.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1));
                e
            }
            HubError::Unavailable(m) => ApiError::unavailable(m),
            HubError::Store(err) => {
                // Details go to the log, not to the caller.
                tracing::error!(error = %err, "store failure in admin API");
                ApiError::unavailable("storage is unavailable")
            }
        }
    }
}
