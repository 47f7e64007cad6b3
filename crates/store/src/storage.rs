//! Storage locations as URLs, through `object_store`. Every stage reads and writes here.
//!
//! A [`Location`] is `file:///abs/dir`, a plain path (absolute, or relative to a base folder
//! — the config file's), or `s3://bucket/prefix`. [`Store`] is that location opened: keys are
//! relative to it. Writes are atomic: the local backend writes a temporary file and renames
//! it, and an S3 `PUT` is atomic by nature, so a crash never leaves a half-written object.
//!
//! S3 credentials come from the AWS default credential chain (environment, shared profile
//! files and SSO, web identity, ECS, the instance role), through `aws-config` — `object_store`
//! alone reads no profile files, so [`AwsChainCredentials`] bridges the two. Credentials are
//! cached until five minutes before they expire, and never logged.
//! `endpoint_url` points at an emulator (moto, MinIO) and allows plain HTTP for it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use aws_credential_types::provider::ProvideCredentials;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::CredentialProvider;
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

pub use flagship_core::location::{Location, LocationError, S3Options};

use crate::records::{self, RecordError};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Location(#[from] LocationError),
    #[error("{location}: {source}")]
    Store {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{location}: cannot create folder: {source}")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: {source}")]
    Records {
        location: String,
        #[source]
        source: RecordError,
    },
}

/// The AWS default credential chain as an `object_store` credential provider.
#[derive(Default)]
pub struct AwsChainCredentials {
    chain:
        tokio::sync::OnceCell<aws_config::default_provider::credentials::DefaultCredentialsChain>,
    cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl fmt::Debug for AwsChainCredentials {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("AwsChainCredentials")
    }
}

#[async_trait::async_trait]
impl CredentialProvider for AwsChainCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((c, expiry)) = cached.as_ref()
            && expiry.is_none_or(|e| e > SystemTime::now() + Duration::from_secs(300))
        {
            return Ok(c.clone());
        }
        let chain = self
            .chain
            .get_or_init(|| async {
                // The shared client on ring (see `crate::aws`): no second TLS stack.
                let conf = aws_config::provider_config::ProviderConfig::default()
                    .with_http_client(crate::aws::http_client());
                aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .configure(conf)
                    .build()
                    .await
            })
            .await;
        let creds =
            chain
                .provide_credentials()
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "S3",
                    source: format!("no AWS credentials from the default chain: {e}").into(),
                })?;
        let c = Arc::new(AwsCredential {
            key_id: creds.access_key_id().to_owned(),
            secret_key: creds.secret_access_key().to_owned(),
            token: creds.session_token().map(str::to_owned),
        });
        *cached = Some((c.clone(), creds.expiry()));
        Ok(c)
    }
}

/// An object in a [`Store`], its key relative to the store's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    pub e_tag: Option<String>,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// An opened [`Location`].
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    root: Path,
    location: Location,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Store({})", self.location)
    }
}

impl Store {
    pub fn open(location: &Location, s3: &S3Options) -> Result<Store, StorageError> {
        let err = |source| StorageError::Store {
            location: location.to_string(),
            source,
        };
        let (inner, root): (Arc<dyn ObjectStore>, Path) = match location {
            Location::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
                    location: location.to_string(),
                    source,
                })?;
                let fs = LocalFileSystem::new_with_prefix(dir)
                    .map_err(err)?
                    .with_automatic_cleanup(true);
                (Arc::new(fs), Path::default())
            }
            Location::S3 { bucket, prefix } => {
                let region = crate::aws::region(s3.region.as_deref());
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_credentials(Arc::new(AwsChainCredentials::default()));
                if let Some(ep) = &s3.endpoint_url {
                    b = b
                        .with_endpoint(ep)
                        .with_allow_http(true)
                        .with_virtual_hosted_style_request(false);
                }
                (
                    Arc::new(b.build().map_err(err)?),
                    Path::from(prefix.as_str()),
                )
            }
        };
        Ok(Store {
            inner,
            root,
            location: location.clone(),
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The underlying object store and the URL DataFusion knows it by (`file:///` or
    /// `s3://bucket`), for registering with a query engine.
    pub fn object_store(&self) -> (Url, Arc<dyn ObjectStore>) {
        let url = match &self.location {
            Location::Local(_) => Url::parse("file:///").expect("valid url"),
            Location::S3 { bucket, .. } => {
                Url::parse(&format!("s3://{bucket}")).expect("valid bucket url")
            }
        };
        (url, self.inner.clone())
    }

    /// The URL of `key` as a query engine reads it (`file:///abs/dir/key`, `s3://bucket/prefix/key`).
    pub fn url(&self, key: &str) -> String {
        match &self.location {
            Location::Local(dir) => {
                let abs = std::path::absolute(dir.join(key)).unwrap_or_else(|_| dir.join(key));
                Url::from_file_path(&abs)
                    .map(|u| u.to_string())
                    .unwrap_or_else(|_| format!("file://{}", abs.display()))
            }
            Location::S3 { bucket, .. } => format!("s3://{bucket}/{}", self.path(key)),
        }
    }

    fn path(&self, key: &str) -> Path {
        let mut p = self.root.clone();
        for part in key.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    fn err(&self, key: &str) -> impl Fn(object_store::Error) -> StorageError {
        let location = self.location.join(key).to_string();
        move |source| StorageError::Store {
            location: location.clone(),
            source,
        }
    }

    /// Writes `bytes` at `key`, atomically.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.inner
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(self.err(key))
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let r = self
            .inner
            .get(&self.path(key))
            .await
            .map_err(self.err(key))?;
        r.bytes().await.map_err(self.err(key))
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match self.inner.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(key)(e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner
            .delete(&self.path(key))
            .await
            .map_err(self.err(key))
    }

    /// Every object under `prefix` (all pages), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StorageError> {
        let base = self.path(prefix);
        let root_parts = self.root.parts().count();
        let mut out: Vec<Entry> = self
            .inner
            .list(Some(&base))
            .map_ok(|m| Entry {
                key: m
                    .location
                    .parts()
                    .skip(root_parts)
                    .map(|p| p.as_ref().to_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
                size: m.size,
                e_tag: m.e_tag,
                last_modified: m.last_modified,
            })
            .try_collect()
            .await
            .map_err(self.err(prefix))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Writes batches as one Parquet file at `key`, atomically.
    pub async fn write_parquet(
        &self,
        key: &str,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<(), StorageError> {
        // Encoding is CPU work: on a blocking thread, so hours written concurrently use
        // every core and the runtime's workers stay free.
        let (schema, batches) = (schema.clone(), batches.to_vec());
        let bytes = tokio::task::spawn_blocking(move || records::to_parquet(&schema, &batches))
            .await
            .map_err(|e| StorageError::Io {
                location: self.location.join(key).to_string(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| StorageError::Records {
                location: self.location.join(key).to_string(),
                source,
            })?;
        self.put(key, bytes).await
    }

    pub async fn read_parquet(
        &self,
        key: &str,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), StorageError> {
        let bytes = self.get(key).await?;
        records::from_parquet(bytes).map_err(|source| StorageError::Records {
            location: self.location.join(key).to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_roundtrip_atomic_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::Local(dir.path().join("out"));
        let store = Store::open(&loc, &S3Options::default()).unwrap();
        store
            .put("2022/01/01/00/a", Bytes::from_static(b"one\n"))
            .await
            .unwrap();
        store
            .put("2022/01/01/01/b", Bytes::from_static(b"two\n"))
            .await
            .unwrap();
        assert_eq!(store.get("2022/01/01/00/a").await.unwrap(), "one\n");
        let keys: Vec<_> = store
            .list("2022")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["2022/01/01/00/a", "2022/01/01/01/b"]);
        // No temporary files left beside the objects.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("out/2022/01/01/00"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a"]);
        assert!(store.exists("2022/01/01/00/a").await.unwrap());
        store.delete("2022/01/01/00/a").await.unwrap();
        assert!(!store.exists("2022/01/01/00/a").await.unwrap());
        let e = store.get("nope").await.unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
