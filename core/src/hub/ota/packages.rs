//! Firmware packages: uploaded as a stream (size and digests computed on the way), listed,
//! deleted, and served to devices from expiring signed URLs.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::Md5;
use sha2::{Digest, Sha256};

use super::{DOWNLOAD_STEP, Ota, PackageSpec, check_name, not_found};
use crate::data::ota::{OtaPackage, SignMethod};
use crate::hub::HubError;
use crate::hub::downloads::{Download, DownloadError};
use crate::limits::LimitId;
use crate::store::{self, records, transact};

impl Ota<'_> {
    /// A signed download URL of a package.
    pub(crate) fn download_url(&self, package: &OtaPackage) -> Result<String, HubError> {
        self.hub
            .signed_url(&format!("/ota/{}/{}", package.tenant, package.id))
    }

    /// A package's size and bytes, for [`Hub::download`](crate::Hub::download).
    pub(crate) async fn open_package(
        &self,
        tenant: &str,
        package: &str,
    ) -> Result<Download, DownloadError> {
        let found = self
            .find_package(tenant, package)
            .await?
            .ok_or(DownloadError::NotFound)?;
        let hub = self.hub.clone();
        let (name, size) = (found.id.clone(), found.size);
        let chunks = futures_util::stream::try_unfold(0u64, move |at| {
            let hub = hub.clone();
            let name = name.clone();
            async move {
                if at >= size {
                    return Ok(None);
                }
                let bytes = hub.inner.blobs.read(&name, at, DOWNLOAD_STEP).await?;
                if bytes.is_empty() {
                    return Err(store::StoreError::Backend(format!(
                        "package {name} ends at {at} of {size} bytes"
                    )));
                }
                let next = at + bytes.len() as u64;
                Ok(Some((bytes, next)))
            }
        });
        Ok(Download {
            size,
            body: Box::pin(chunks),
        })
    }

    /// Uploads a package for product `pk` of `tenant`: `body` is streamed to the blob store
    /// while its size (L-092) and digests are computed; the tenant may hold L-091 packages.
    pub async fn upload<S, E>(
        &self,
        tenant: &str,
        pk: &str,
        spec: PackageSpec,
        mut body: S,
    ) -> Result<OtaPackage, HubError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let product = self.hub.registry().product(pk).await?;
        if product.tenant != tenant {
            return Err(not_found("product", pk));
        }
        check_name("version", &spec.version)?;
        let module = spec
            .module
            .unwrap_or_else(|| crate::hub::device_info::DEFAULT_MODULE.to_owned());
        check_name("module", &module)?;
        let entities = self.hub.profile_of(tenant).entities.clone();
        let count_key = records::package_count_key(tenant);
        let held = store::read(&**self.hub.store(), |t| {
            let k = count_key.clone();
            Box::pin(async move { Ok(t.get(&k).await?.map_or(0, |v| store::decode_counter(&v))) })
        })
        .await?;
        let too_many = || {
            self.hub.limited(
                LimitId::OtaPackages,
                format!(
                    "at most {} packages per tenant (L-091, profile entities.ota_packages)",
                    entities.ota_packages
                ),
            )
        };
        if entities.ota_packages > 0 && u64::try_from(held).unwrap_or(0) >= entities.ota_packages {
            return Err(too_many());
        }
        let id = format!("fw{}", self.hub.next_seq());
        let max = entities.ota_package_bytes;
        let mut writer = self.hub.inner.blobs.create(&id);
        let (mut md5, mut sha256, mut size) = (Md5::new(), Sha256::new(), 0u64);
        let streamed: Result<(), HubError> = async {
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| HubError::Invalid(format!("upload interrupted: {e}")))?;
                size += chunk.len() as u64;
                if max > 0 && size > max {
                    return Err(self.hub.limited(
                        LimitId::OtaPackageSize,
                        format!(
                            "a package is at most {max} bytes (L-092, profile entities.ota_package_bytes)"
                        ),
                    ));
                }
                md5.update(&chunk);
                sha256.update(&chunk);
                writer.write(&chunk).await?;
            }
            if size == 0 {
                return Err(HubError::Invalid("the package is empty".into()));
            }
            writer.finish().await?;
            Ok(())
        }
        .await;
        let package = OtaPackage {
            id: id.clone(),
            tenant: tenant.to_owned(),
            product_key: pk.to_owned(),
            module,
            version: spec.version,
            size,
            md5: hex::encode(md5.finalize()),
            sha256: hex::encode(sha256.finalize()),
            sign_method: spec.sign_method.unwrap_or(SignMethod::Md5),
            created_at_ms: self.hub.now_ms(),
        };
        let expected = [
            ("MD5", &spec.md5, &package.md5),
            ("SHA-256", &spec.sha256, &package.sha256),
        ];
        let streamed = streamed.and_then(|()| {
            match expected
                .iter()
                .find(|(_, want, got)| want.as_ref().is_some_and(|w| !w.eq_ignore_ascii_case(got)))
            {
                Some((name, want, got)) => Err(HubError::Invalid(format!(
                    "the upload's {name} is {got}, not {} as expected: nothing was kept",
                    want.as_deref().unwrap_or_default()
                ))),
                None => Ok(()),
            }
        });
        let kept = match streamed {
            Ok(()) => {
                let limit = entities.ota_packages;
                transact(&**self.hub.store(), |t| {
                    let (package, k) = (package.clone(), count_key.clone());
                    Box::pin(async move {
                        let held = t.get(&k).await?.map_or(0, |v| store::decode_counter(&v));
                        if limit > 0 && u64::try_from(held).unwrap_or(0) >= limit {
                            return Ok(false);
                        }
                        records::put_package(t, &package);
                        t.add(&k, 1);
                        Ok(true)
                    })
                })
                .await
                .map_err(HubError::from)
                .and_then(|kept| if kept { Ok(()) } else { Err(too_many()) })
            }
            Err(e) => Err(e),
        };
        if let Err(e) = kept {
            if let Err(gone) = self.hub.inner.blobs.delete(&id).await {
                tracing::warn!(package = %id, error = %gone, "a refused upload's bytes stay in the store");
            }
            return Err(e);
        }
        Ok(package)
    }

    /// A tenant's package.
    pub async fn package(&self, tenant: &str, id: &str) -> Result<OtaPackage, HubError> {
        self.find_package(tenant, id)
            .await?
            .ok_or_else(|| not_found("package", id))
    }

    async fn find_package(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<OtaPackage>, store::StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        store::read(&**self.hub.store(), |t| {
            let (tenant, id) = (tenant.clone(), id.clone());
            Box::pin(async move { records::get_package(t, &tenant, &id).await })
        })
        .await
    }

    /// A tenant's packages, of one product when `pk` is given.
    pub async fn packages(
        &self,
        tenant: &str,
        pk: Option<&str>,
    ) -> Result<Vec<OtaPackage>, HubError> {
        let owner = tenant.to_owned();
        let all = store::read(&**self.hub.store(), |t| {
            let tenant = owner.clone();
            Box::pin(async move { records::list_packages(t, &tenant).await })
        })
        .await?;
        Ok(all
            .into_iter()
            .filter(|p| pk.is_none_or(|pk| p.product_key == pk))
            .collect())
    }

    /// Deletes a package; refused while a batch rolling it out has open jobs.
    pub async fn delete_package(&self, tenant: &str, id: &str) -> Result<(), HubError> {
        self.package(tenant, id).await?;
        let in_use = self
            .hub
            .inner
            .ota
            .open()
            .values()
            .any(|(b, _)| b.tenant == tenant && b.package_id == id);
        if in_use {
            return Err(HubError::Conflict(format!(
                "package {id} is being rolled out: cancel its batches first"
            )));
        }
        let count_key = records::package_count_key(tenant);
        let (owner, name) = (tenant.to_owned(), id.to_owned());
        let deleted = transact(&**self.hub.store(), |t| {
            let (k, tenant, id) = (count_key.clone(), owner.clone(), name.clone());
            Box::pin(async move {
                if records::get_package(t, &tenant, &id).await?.is_none() {
                    return Ok(false);
                }
                records::delete_package(t, &tenant, &id);
                t.add(&k, -1);
                Ok(true)
            })
        })
        .await?;
        if deleted {
            self.hub.inner.blobs.delete(id).await?;
        }
        Ok(())
    }
}
