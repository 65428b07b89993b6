//! The storage dir: one URL, through `object_store`. Modules live
//! content-addressed under `modules/`, checkpoints under `checkpoints/`.
//! Writes that must never clobber (modules, checkpoint objects) are
//! create-only, which is what fencing by path relies on.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
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

/// A handle on the storage dir. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    url: String,
}

impl Storage {
    /// Opens `file:///path` (created if missing), a plain absolute path, or
    /// `memory://` (tests only).
    pub fn open(url: &str) -> Result<Storage, StorageError> {
        let bad = |reason: String| StorageError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let store: Arc<dyn ObjectStore> = if url == "memory://" {
            Arc::new(InMemory::new())
        } else {
            let path = match url.strip_prefix("file://") {
                Some(rest) => rest.to_string(),
                None if url.starts_with('/') => url.to_string(),
                None => {
                    return Err(bad(
                        "unsupported scheme; use file:///absolute/path (or an absolute path)".to_string(),
                    ))
                }
            };
            if !path.starts_with('/') {
                return Err(bad("the path must be absolute, e.g. file:///var/lib/weir".to_string()));
            }
            std::fs::create_dir_all(&path).map_err(|e| bad(format!("cannot create {path}: {e}")))?;
            Arc::new(LocalFileSystem::new_with_prefix(&path).map_err(|e| bad(e.to_string()))?)
        };
        Ok(Storage {
            store,
            url: url.to_string(),
        })
    }

    /// A storage dir on a given store (tests inject faulty ones).
    #[cfg(test)]
    pub(crate) fn with_store(store: Arc<dyn ObjectStore>) -> Storage {
        Storage {
            store,
            url: "test://".to_string(),
        }
    }

    /// The URL this storage dir was opened with.
    pub fn url(&self) -> &str {
        &self.url
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn conformance(storage: Storage) {
        assert!(storage
            .put_if_absent("a/b/one", Bytes::from_static(b"1"))
            .await
            .unwrap());
        assert!(!storage
            .put_if_absent("a/b/one", Bytes::from_static(b"2"))
            .await
            .unwrap());
        assert_eq!(storage.get("a/b/one").await.unwrap(), Bytes::from_static(b"1"));
        assert!(matches!(
            storage.get("a/none").await,
            Err(StorageError::NotFound { .. })
        ));
        storage
            .put_if_absent("a/b/two", Bytes::from_static(b"2"))
            .await
            .unwrap();
        storage.delete_prefix("a/b").await.unwrap();
        assert!(matches!(
            storage.get("a/b/two").await,
            Err(StorageError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn local_filesystem_conforms() {
        let dir = tempfile::tempdir().unwrap();
        conformance(Storage::open(&format!("file://{}", dir.path().display())).unwrap()).await;
    }

    #[tokio::test]
    async fn memory_conforms() {
        conformance(Storage::open("memory://").unwrap()).await;
    }

    #[test]
    fn bad_urls_say_what_to_use() {
        let err = Storage::open("ftp://x").unwrap_err().to_string();
        assert!(err.contains("file:///"), "{err}");
        assert!(Storage::open("file://relative").is_err());
    }
}
