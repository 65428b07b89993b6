//! The storage dir: one URL, through `object_store`. Modules live
//! content-addressed under `modules/`, checkpoints under `checkpoints/`.
//! Writes that must never clobber (modules, checkpoint objects) are
//! create-only, which is what fencing by path relies on: on S3 that is a
//! conditional put (`If-None-Match: *`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientConfigKey, ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutMode, PutOptions, PutPayload, RetryConfig,
};
use sha2::{Digest, Sha256};

/// Failures of the storage dir, each naming the object involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The URL cannot be used.
    #[error("storage dir `{url}`: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it cannot be used, and what to give instead.
        reason: String,
    },
    /// The object does not exist.
    #[error("{path} is missing from the storage dir")]
    NotFound {
        /// The object asked for.
        path: String,
    },
    /// Any other failure of the store.
    #[error("storage dir: {what} {path}: {source}")]
    Store {
        /// What we were doing.
        what: &'static str,
        /// The object involved.
        path: String,
        /// What the store said.
        source: object_store::Error,
    },
}

/// The sha256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Removes `dir` and every directory below it that holds no file.
fn remove_empty_dirs(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

const ROOT_REFUSED: &str = "the storage dir cannot be the filesystem root: name a directory, e.g. file:///var/lib/weir";

/// The directory a local storage dir URL names: a `file://` URL, parsed
/// (and percent-decoded) as object_store parses it, or a plain absolute
/// path. Never the filesystem root, where weir would scatter its objects.
fn local_dir(url: &str) -> Result<PathBuf, String> {
    const FORMS: &str = "use file:///absolute/path, an absolute path or s3://bucket/prefix";
    let path = if url.starts_with('/') {
        PathBuf::from(url)
    } else {
        let parsed = url::Url::parse(url).map_err(|e| format!("{e}; {FORMS}"))?;
        match ObjectStoreScheme::parse(&parsed) {
            Ok((ObjectStoreScheme::Local, _)) => parsed
                .to_file_path()
                .map_err(|()| format!("not an absolute local path; {FORMS}, e.g. file:///var/lib/weir"))?,
            Ok(_) | Err(_) => return Err(format!("unsupported scheme; {FORMS}")),
        }
    };
    if path.components().count() <= 1 {
        return Err(ROOT_REFUSED.into());
    }
    Ok(path)
}

/// Largest input hashed on the calling thread (about half a millisecond);
/// anything larger is hashed on a blocking thread, since a 256 MiB snapshot
/// takes a second and an async thread must never stall that long.
const INLINE_HASH_BYTES: usize = 256 << 10;

/// Runs `work`, which goes over `bytes` bytes, on the calling thread if
/// that is little (as hashing [`INLINE_HASH_BYTES`]), else on a blocking
/// thread. Small work staying where its caller is also keeps the
/// simulation's schedule its own.
pub async fn cpu_bound<T: Send + 'static>(
    bytes: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if bytes <= INLINE_HASH_BYTES {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work).await
}

/// [`sha256_hex`], off the async threads when `bytes` is large.
pub async fn sha256_hex_of(bytes: Bytes) -> String {
    let hashed = bytes.clone();
    match cpu_bound(bytes.len(), move || sha256_hex(&hashed)).await {
        Ok(digest) => digest,
        // The runtime is shutting down: hash here rather than give a wrong digest.
        Err(_) => sha256_hex(&bytes),
    }
}

/// How long an S3 request is retried before its error surfaces. Short,
/// because every caller has a deadline of its own (a checkpoint's upload, a
/// CLI command) and an operator waiting on a wrong endpoint wants the answer.
const S3_RETRY: RetryConfig = RetryConfig {
    backoff: object_store::BackoffConfig {
        init_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        base: 2.0,
    },
    max_retries: 3,
    retry_timeout: Duration::from_secs(10),
};

/// A handle on the storage dir. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// The directory of a local storage dir, whose emptied checkpoint
    /// directories are removed (object stores have no directories).
    local_root: Option<PathBuf>,
}

impl Storage {
    /// Opens `file:///path` (created if missing), a plain absolute path,
    /// `s3://bucket[/prefix]` (endpoint and credentials from the standard
    /// `AWS_*` environment variables), or `memory://` (tests only).
    pub fn open(url: &str) -> Result<Storage, StorageError> {
        let vars =
            std::env::vars_os().filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)));
        Storage::open_with(url, vars)
    }

    /// Like [`Storage::open`], with the `AWS_*` settings taken from `vars`
    /// rather than from the process environment.
    pub fn open_with(
        url: &str,
        vars: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
    ) -> Result<Storage, StorageError> {
        let bad = |reason: String| StorageError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let mut local_root = None;
        let store: Arc<dyn ObjectStore> = if url == "memory://" {
            Arc::new(InMemory::new())
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("name a bucket, e.g. s3://my-bucket/weir".to_string()));
            }
            let settings = vars.into_iter().filter_map(|(key, value)| {
                let key = key.as_ref().to_ascii_lowercase();
                let key = key.starts_with("aws_").then(|| key.parse().ok()).flatten()?;
                Some((key, value.as_ref().to_string()))
            });
            // A request may carry a large snapshot: the checkpoint's own
            // deadline bounds it, not the client's 30 s default (a setting
            // in the environment still wins).
            let timeout = AmazonS3ConfigKey::Client(ClientConfigKey::Timeout);
            let s3 = settings
                .fold(
                    AmazonS3Builder::new().with_config(timeout, "10m"),
                    |builder, (key, value)| builder.with_config(key, value),
                )
                .with_bucket_name(bucket)
                .with_retry(S3_RETRY)
                .build()
                .map_err(|e| bad(format!("{e} (set AWS_ENDPOINT_URL, AWS_REGION and the access keys)")))?;
            match prefix.trim_matches('/') {
                "" => Arc::new(s3),
                prefix => Arc::new(PrefixStore::new(s3, prefix)),
            }
        } else {
            let path = local_dir(url).map_err(bad)?;
            std::fs::create_dir_all(&path).map_err(|e| bad(format!("cannot create {}: {e}", path.display())))?;
            // One spelling per directory (no `.`, `..`, doubled or trailing
            // `/`, links resolved): what the cluster's record is compared in.
            let path =
                std::fs::canonicalize(&path).map_err(|e| bad(format!("cannot resolve {}: {e}", path.display())))?;
            if path.parent().is_none() {
                return Err(bad(ROOT_REFUSED.to_string()));
            }
            let store = LocalFileSystem::new_with_prefix(&path).map_err(|e| bad(e.to_string()))?;
            local_root = Some(path);
            Arc::new(store)
        };
        Ok(Storage {
            store,
            url: url.to_string(),
            local_root,
        })
    }

    /// A storage dir on a given store (tests inject faulty ones).
    #[cfg(test)]
    pub(crate) fn with_store(store: Arc<dyn ObjectStore>) -> Storage {
        Storage {
            store,
            url: "test://".to_string(),
            local_root: None,
        }
    }

    /// Checks that the storage dir can be listed and written, and that it
    /// refuses a second create-only write of one object (fencing relies on
    /// it): a wrong endpoint, bucket or key, or a store without conditional
    /// writes, shows here, at start, rather than at the first checkpoint.
    pub async fn probe(&self) -> Result<(), StorageError> {
        self.store
            .list_with_delimiter(Some(&Path::from("modules")))
            .await
            .map_err(|source| StorageError::Store {
                what: "list",
                path: "modules/".to_string(),
                source,
            })?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = format!("probe/{}-{nanos}", std::process::id());
        let first = self.put_if_absent(&path, Bytes::from_static(b"1")).await?;
        let second = self.put_if_absent(&path, Bytes::from_static(b"2")).await?;
        let _ = self.store.delete(&Path::from(path.as_str())).await;
        if !first || second {
            return Err(StorageError::BadUrl {
                url: self.url.clone(),
                reason: "the store does not refuse a second create-only write (If-None-Match: *); \
                         weir needs conditional writes to fence deposed leaders: use AWS S3, MinIO, R2 or a local path"
                    .to_string(),
            });
        }
        Ok(())
    }

    /// The URL this storage dir was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL in one spelling per storage dir (`file://` and the resolved
    /// absolute path for a local one; an S3 URL without a trailing `/`),
    /// for comparing two.
    pub fn canonical_url(&self) -> String {
        match &self.local_root {
            Some(root) => format!("file://{}", root.display()),
            None => self.url.trim_end_matches('/').to_string(),
        }
    }

    /// Where the module with this digest lives.
    pub fn module_path(sha256: &str) -> String {
        format!("modules/{sha256}.wasm")
    }

    /// Stores `bytes` at `path` unless an object is already there.
    /// Returns whether this call wrote it.
    pub async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<bool, StorageError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&Path::from(path), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(source) => Err(StorageError::Store {
                what: "write",
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        let result = match self.store.get(&Path::from(path)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(StorageError::NotFound { path: path.to_string() }),
            Err(source) => {
                return Err(StorageError::Store {
                    what: "read",
                    path: path.to_string(),
                    source,
                })
            }
        };
        result.bytes().await.map_err(|source| StorageError::Store {
            what: "read",
            path: path.to_string(),
            source,
        })
    }

    /// The "directories" right under `prefix`, as paths.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let listed = self
            .store
            .list_with_delimiter(Some(&Path::from(prefix)))
            .await
            .map_err(|source| StorageError::Store {
                what: "list",
                path: prefix.to_string(),
                source,
            })?;
        Ok(listed.common_prefixes.iter().map(|p| p.to_string()).collect())
    }

    /// Deletes one object; one already gone is no error.
    pub async fn delete(&self, path: &str) -> Result<(), StorageError> {
        match self.store.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StorageError::Store {
                what: "delete",
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Deletes every object under `prefix` (a "directory").
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let err = |source| StorageError::Store {
            what: "delete",
            path: prefix.to_string(),
            source,
        };
        let objects: Vec<_> = self
            .store
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await
            .map_err(err)?;
        for object in objects {
            match self.store.delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => return Err(err(source)),
            }
        }
        if let Some(root) = &self.local_root {
            // Object stores have no directories; a local one leaves them
            // behind, empty. Best effort: one not empty stays as it is.
            let dir = root.join(prefix);
            let _ = tokio::task::spawn_blocking(move || remove_empty_dirs(&dir)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_say_what_to_use() {
        let err = Storage::open("ftp://x").unwrap_err().to_string();
        assert!(err.contains("file:///") && err.contains("s3://"), "{err}");
        assert!(Storage::open("file://relative").is_err());
        for root in ["file:///", "/", "file:///..", "//", "/.."] {
            let err = Storage::open(root).unwrap_err().to_string();
            assert!(err.contains("cannot be the filesystem root"), "{root}: {err}");
        }
        assert!(Storage::open("s3://")
            .unwrap_err()
            .to_string()
            .contains("name a bucket"));
    }

    #[test]
    fn file_urls_are_percent_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/a%20b", dir.path().display());
        Storage::open(&url).unwrap();
        assert!(dir.path().join("a b").is_dir(), "a%20b names `a b`");
        assert!(!dir.path().join("a%20b").exists());
        let spellings = [
            format!("file://{}/a%20b", dir.path().display()),
            format!("{}/a b/", dir.path().display()),
            format!("{}//a b/./", dir.path().display()),
            format!("file://{}/x/../a%20b/", dir.path().display()),
        ];
        let canonical: Vec<String> = spellings
            .iter()
            .map(|u| Storage::open(u).unwrap().canonical_url())
            .collect();
        assert!(canonical.iter().all(|c| *c == canonical[0]), "{canonical:?}");
    }
}
