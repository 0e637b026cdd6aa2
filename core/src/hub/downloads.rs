//! Files devices download over HTTP(S) from the hub (firmware packages, remote configuration):
//! URLs under the base the HTTP device transport offers (or `[hub.ota] download_url`), signed
//! with a secret kept in the store (so every node of a cluster accepts them) and valid for
//! `[hub.ota] url_ttl_secs`. The transport hands each `GET` to [`Hub::download`], which checks
//! the link and opens the file of whichever service owns its path.

use std::pin::Pin;
use std::sync::RwLock;

use bytes::Bytes;
use futures_util::Stream;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Hub, HubError};
use crate::store::{StoreError, records, transact};

/// The store's metadata key of the secret that signs download URLs.
const URL_KEY: &str = "ota_url_key";

/// The bytes of a download, as they are read from the store.
pub type DownloadBody = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// A file to send: its size and its bytes.
pub struct Download {
    /// Bytes in all (the `Content-Length`).
    pub size: u64,
    /// The bytes.
    pub body: DownloadBody,
}

/// Why a download is refused.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The URL's signature is wrong (or the URL was altered).
    #[error("the download link is not valid")]
    BadSignature,
    /// The URL's time is past.
    #[error("the download link expired")]
    Expired,
    /// The file is gone (a package deleted, a configuration replaced).
    #[error("no such file")]
    NotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The URL secret and the offered base.
#[derive(Default)]
pub(crate) struct DownloadLinks {
    key: RwLock<Vec<u8>>,
    offered_base: RwLock<Option<String>>,
}

impl Hub {
    /// Loads the URL secret, making it on the first start.
    pub(crate) async fn load_download_key(&self) -> Result<(), HubError> {
        let fresh: [u8; 32] = rand::random();
        let key = transact(&**self.store(), |t| {
            Box::pin(async move {
                if let Some(key) = records::get_meta(t, URL_KEY).await? {
                    return Ok(key.to_vec());
                }
                records::put_meta(t, URL_KEY, &fresh);
                Ok(fresh.to_vec())
            })
        })
        .await?;
        *self.inner.downloads.key.write().expect("downloads lock") = key;
        Ok(())
    }

    /// Takes the base URL of the downloads the HTTP device transport serves
    /// (`http(s)://host:port`), unless the configuration names one.
    pub fn offer_downloads(&self, base: &str) {
        *self
            .inner
            .downloads
            .offered_base
            .write()
            .expect("downloads lock") = Some(base.to_owned());
    }

    fn url_mac(&self, path: &str, expires: u64) -> Hmac<Sha256> {
        let key = self.inner.downloads.key.read().expect("downloads lock");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
        mac.update(format!("{path}\n{expires}").as_bytes());
        mac
    }

    /// A signed URL of `path` (`/ota/...`, `/config/...`), valid for the configured time; a
    /// conflict when no transport serves downloads.
    pub(crate) fn signed_url(&self, path: &str) -> Result<String, HubError> {
        let configured = self.inner.config.ota.download_url.clone();
        let offered = || {
            let base = self.inner.downloads.offered_base.read();
            base.expect("downloads lock").clone()
        };
        let base = configured.or_else(offered).ok_or_else(|| {
            HubError::Conflict(
                "downloads are served by the HTTP device transport: enable [http] \
                 (or set [hub.ota] download_url)"
                    .into(),
            )
        })?;
        let expires = self.now_ms() / 1000 + self.inner.config.ota.url_ttl_secs;
        let signature = hex::encode(self.url_mac(path, expires).finalize().into_bytes());
        Ok(format!(
            "{}{path}?expires={expires}&signature={signature}",
            base.trim_end_matches('/')
        ))
    }

    /// Opens the file of a download URL's `path`, when `signature` signs it with `expires`
    /// (seconds since the epoch) and that time is not past.
    pub async fn download(
        &self,
        path: &str,
        expires: u64,
        signature: &str,
    ) -> Result<Download, DownloadError> {
        let given = hex::decode(signature).map_err(|_| DownloadError::BadSignature)?;
        self.url_mac(path, expires)
            .verify_slice(&given)
            .map_err(|_| DownloadError::BadSignature)?;
        if expires < self.now_ms() / 1000 {
            return Err(DownloadError::Expired);
        }
        let mut levels = path.split('/').skip(1);
        match (levels.next(), levels.next(), levels.next(), levels.next()) {
            (Some("ota"), Some(tenant), Some(package), None) => {
                self.ota().open_package(tenant, package).await
            }
            (Some("config"), Some(pk), Some(config), None) => {
                self.remote_configs().open_file(pk, config).await
            }
            _ => Err(DownloadError::NotFound),
        }
    }
}
