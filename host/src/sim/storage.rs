//! The storage dir of one simulated supervisor process: an in-memory object
//! store shared by every process, behind a wrapper that stalls while the
//! process is paused, fails or hangs requests at the world's rates, and
//! mirrors every object into the world for the checker.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

use super::world::World;

/// One process's view of the shared store.
#[derive(Debug)]
pub struct SimStore {
    pub inner: Arc<InMemory>,
    pub world: Arc<World>,
    pub node: usize,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("World")
    }
}

impl std::fmt::Display for SimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimStore(node {})", self.node)
    }
}

fn injected(operation: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "sim",
        source: format!("injected {operation} failure").into(),
    }
}

impl SimStore {
    /// A request's latency, and a failure at the world's rate.
    async fn request(&self, operation: &str) -> Result<()> {
        self.world.latency(self.node).await;
        if self.world.strikes(|r| r.storage_failure) {
            return Err(injected(operation));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for SimStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.request("write").await?;
        if self.world.strikes(|r| r.storage_hang) {
            // Longer than any deadline: the caller's timeout must end it.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let bytes = Bytes::from(payload.clone());
        let result = self.inner.put_opts(location, payload, opts).await?;
        self.world.lock().objects.insert(location.to_string(), bytes.to_vec());
        Ok(result)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        Err(object_store::Error::NotImplemented {
            operation: format!("multipart upload of {location} ({opts:?})"),
            implementer: "SimStore".into(),
        })
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.request("read").await?;
        let (unreadable, hanging) = {
            let state = self.world.lock();
            (state.unreadable.clone(), state.hanging.clone())
        };
        let under = |prefix: Option<String>| prefix.is_some_and(|p| location.as_ref().starts_with(&p));
        if under(unreadable) {
            return Err(injected("read"));
        }
        if under(hanging) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let (gate, node) = (self.world.clone(), self.node);
        let gated = locations
            .then(move |location| {
                let world = gate.clone();
                async move {
                    world.running(node).await;
                    location
                }
            })
            .boxed();
        let world = self.world.clone();
        self.inner
            .delete_stream(gated)
            .map(move |deleted| {
                if let Ok(path) = &deleted {
                    world.lock().objects.remove(path.as_ref());
                }
                deleted
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.request("list").await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.request("copy").await?;
        self.inner.copy_opts(from, to, options).await
    }
}
