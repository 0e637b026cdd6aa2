//! The RabbitMQ management HTTP API, used to give each consumer group its own RabbitMQ user: it
//! may only read the group's queue, with at most N connections and channels (L-062).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ironhub_core::sink::SinkError;
use serde_json::{Value, json};

/// How long one management request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Management {
    base: String,
    authorization: String,
    vhost: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Unavailable(format!("RabbitMQ management, {what}: {e}"))
}

/// A path segment with everything but unreserved characters percent-encoded (vhost "/" is
/// "%2F").
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A regular expression matching exactly `name` (RabbitMQ permissions are PCRE over names).
fn exactly(name: &str) -> String {
    let escaped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect();
    format!("^{escaped}$")
}

impl Management {
    /// A client of the API at `base` (`http://host:15672`), authenticating as `user`.
    pub(crate) fn new(base: &str, user: &str, password: &str, vhost: &str) -> Management {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Management {
            base: base.trim_end_matches('/').to_owned(),
            authorization: format!("Basic {token}"),
            vhost: vhost.to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(), SinkError> {
        let uri = format!("{}/api/{path}", self.base);
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| unavailable("request", e))?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unavailable(&uri, "timed out"))?
            .map_err(|e| unavailable(&uri, e))?;
        let status = response.status();
        let text = response
            .into_body()
            .collect()
            .await
            .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
            .unwrap_or_default();
        if status.is_success() || (method == Method::DELETE && status == StatusCode::NOT_FOUND) {
            Ok(())
        } else {
            Err(unavailable(
                &format!("{method} {uri}"),
                format!("{status} {text}"),
            ))
        }
    }

    /// Creates (or resets) `user` with `password`: read-only on `queue`, at most `max`
    /// connections and channels (0: unlimited).
    pub(crate) async fn create_consumer(
        &self,
        user: &str,
        password: &str,
        queue: &str,
        max: u64,
    ) -> Result<(), SinkError> {
        let u = segment(user);
        let body = json!({ "password": password, "tags": "" });
        self.call(Method::PUT, &format!("users/{u}"), Some(body))
            .await?;
        let permissions = json!({ "configure": "^$", "write": "^$", "read": exactly(queue) });
        let path = format!("permissions/{}/{u}", segment(&self.vhost));
        self.call(Method::PUT, &path, Some(permissions)).await?;
        if max > 0 {
            for limit in ["max-connections", "max-channels"] {
                let path = format!("user-limits/{u}/{limit}");
                self.call(Method::PUT, &path, Some(json!({ "value": max })))
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes `user` (already gone is fine).
    pub(crate) async fn delete_consumer(&self, user: &str) -> Result<(), SinkError> {
        self.call(Method::DELETE, &format!("users/{}", segment(user)), None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_for_paths_and_permissions() {
        assert_eq!(segment("/"), "%2F");
        assert_eq!(segment("ironhub.acme.Xq3"), "ironhub.acme.Xq3");
        assert_eq!(exactly("ironhub.acme-1.Xq3"), "^ironhub\\.acme\\-1\\.Xq3$");
    }
}
