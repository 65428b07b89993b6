//! One running guest: its store, its limits, and calls that turn every
//! guest failure into a [`GuestError`] naming the cause.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::memory::{self, MemoryView, Tracker};
use super::{Cause, EPOCH_TICK};
use crate::checkpoint::image::Pages;
use crate::spec::Grants;
use crate::wit::bindings::weir::job::{host, types};
use crate::wit::bindings::Job;
use crate::wit::{Batch, Output};

/// Caps on one guest.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest linear memory the guest may grow to, in bytes.
    pub memory_bytes: u64,
    /// Longest one call may run before it is interrupted.
    pub call_timeout: Duration,
}

/// Why a guest call failed. Every variant fails the job's current attempt only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuestError {
    /// The guest trapped (a panic, an unreachable, a bad memory access).
    #[error("the job trapped in `{call}`")]
    Trap {
        /// The export called.
        call: &'static str,
        /// wasmtime's account of the trap.
        #[source]
        cause: Cause,
    },
    /// The guest ran past its CPU deadline (an endless loop?).
    #[error("the job ran longer than its call timeout of {timeout:?} in `{call}` (an endless loop?); raise it with `weir deploy --call-timeout`")]
    Timeout {
        /// The export called.
        call: &'static str,
        /// The deadline it missed.
        timeout: Duration,
    },
    /// The guest tried to grow its memory past the cap.
    #[error(
        "the job exceeded its memory limit of {limit} bytes in `{call}`; raise it with `weir deploy --memory-limit`"
    )]
    MemoryLimit {
        /// The export called.
        call: &'static str,
        /// The cap.
        limit: u64,
    },
    /// The guest returned an error from `init` or `restore`.
    #[error("the job refused `{call}`: {reason}")]
    Refused {
        /// The export called.
        call: &'static str,
        /// The guest's message.
        reason: String,
    },
    /// The module could not be instantiated.
    #[error("cannot instantiate the job")]
    Instantiate(#[source] Cause),
    /// A directory the spec grants is not there to open.
    #[error("granted directory {dir} cannot be opened on this supervisor (create it or deploy with another --dir)")]
    Dir {
        /// The host directory.
        dir: String,
        /// Why it did not open.
        #[source]
        cause: Cause,
    },
    /// The module was not compiled on this supervisor before instantiating.
    #[error("module {sha256} is not compiled")]
    NotCompiled {
        /// Its digest.
        sha256: String,
    },
}

/// A store's data: the WASI context (empty unless granted), the limiter, the job's name.
pub(super) struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    job: String,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for GuestState {}

impl host::Host for GuestState {
    fn log(&mut self, level: types::Level, message: String) {
        let job = &self.job;
        match level {
            types::Level::Trace => tracing::trace!(job, "{message}"),
            types::Level::Debug => tracing::debug!(job, "{message}"),
            types::Level::Info => tracing::info!(job, "{message}"),
            types::Level::Warn => tracing::warn!(job, "{message}"),
            types::Level::Error => tracing::error!(job, "{message}"),
        }
    }

    fn now_millis(&mut self) -> u64 {
        crate::clock::now_ms()
    }
}

/// Refuses memory growth past the cap, and remembers that it did so the
/// resulting trap can be reported as what it is.
struct MemoryLimiter {
    limit: u64,
    hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.hit = true;
            return Err(wasmtime::format_err!("memory limit of {} bytes reached", self.limit));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The linker every job shares: weir's host interface and WASI, whose reach
/// each store's context decides (a Rust guest built with `std` imports `wasi:cli` and `wasi:io`).
pub(super) fn linker(engine: &Engine) -> wasmtime::Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Job::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// A live guest instance of one job.
pub struct Instance {
    /// Finds the pages written between checkpoints, once asked to; it
    /// reads the store's memory, so it goes first.
    tracker: Option<Tracker>,
    /// Whether the tracker's protection stands for an image already taken
    /// (or restored): until then the next image is whole.
    tracked_since_image: bool,
    memories: Vec<Arc<MemoryView>>,
    /// Mutable globals its modules define: with more than one, its state
    /// is not all in its memory.
    mutable_globals: usize,
    store: Store<GuestState>,
    job: Job,
    limits: Limits,
}

/// Why a guest's state cannot be checkpointed as its memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The module has no memory of its own, or more than one.
    #[error("the job has {0} linear memories (memory checkpoints need exactly one)")]
    Memories(usize),
    /// The guest holds host resources (an open file, a stream) between calls,
    /// which a memory image cannot bring back.
    #[error(
        "the job holds WASI resources (an open file or stream) between calls, which a memory image cannot restore"
    )]
    Resources,
    /// The guest keeps state outside its memory (see `runtime::globals`).
    #[error("the job's modules define {0} mutable globals, whose values a memory image does not hold (it holds the whole state only of a job with at most one, a Rust job's stack pointer)")]
    Globals(usize),
    /// The kernel does not track writes for us.
    #[error("cannot track the job's memory writes: {0}")]
    Tracking(#[source] std::io::Error),
    /// A restored image is larger than the memory could be made.
    #[error("the restored memory image is {image} bytes, the job's memory {memory} bytes")]
    Size {
        /// The image's length.
        image: usize,
        /// The memory's.
        memory: usize,
    },
}

/// Refuses memory images of a module whose state is not all in its
/// memory: one with more than one mutable global (`runtime::globals`).
pub(super) fn memory_images_hold_all(mutable_globals: usize) -> Result<(), ImageError> {
    match mutable_globals {
        0 | 1 => Ok(()),
        n => Err(ImageError::Globals(n)),
    }
}

impl Instance {
    pub(super) async fn new(
        engine: &Engine,
        compiled: &super::Compiled,
        job: &str,
        limits: Limits,
        grants: &Grants,
        memory_len: usize,
    ) -> Result<Instance, GuestError> {
        let state = GuestState {
            wasi: super::sandbox::wasi_ctx(grants)?,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: limits.memory_bytes,
                hit: false,
            },
            job: job.to_string(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        // A snapshot or a batch's output can be as large as the guest's memory;
        // the default cap on what one call hands the host (128 MiB) is not.
        store.set_hostcall_fuel(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX));
        store.set_epoch_deadline(deadline_ticks(limits.call_timeout));
        // The memories this instantiation makes are this instance's, each
        // made at least `memory_len` bytes (a restored image's length).
        let mut memories = Vec::new();
        let instantiated = {
            let mut instantiating = std::pin::pin!(compiled.pre.instantiate_async(&mut store));
            std::future::poll_fn(|cx| {
                memory::creating(memory_len, &mut memories, || {
                    std::future::Future::poll(instantiating.as_mut(), cx)
                })
            })
            .await
        };
        let job = match instantiated {
            Ok(job) => job,
            Err(_) if store.data().limiter.hit => {
                return Err(GuestError::MemoryLimit {
                    call: "instantiate",
                    limit: limits.memory_bytes,
                })
            }
            Err(e) => return Err(GuestError::Instantiate(e.into())),
        };
        Ok(Instance {
            tracker: None,
            tracked_since_image: false,
            memories,
            mutable_globals: compiled.mutable_globals,
            store,
            job,
            limits,
        })
    }

    /// The guest's one linear memory.
    fn memory(&self) -> Result<&Arc<MemoryView>, ImageError> {
        match &self.memories[..] {
            [memory] => Ok(memory),
            other => Err(ImageError::Memories(other.len())),
        }
    }

    /// Whether [`Instance::image`] can be asked for.
    pub fn tracks_memory(&self) -> bool {
        self.tracker.is_some()
    }

    /// Starts tracking the pages the guest writes, for [`Instance::image`].
    pub fn track_memory(&mut self) -> Result<(), ImageError> {
        memory_images_hold_all(self.mutable_globals)?;
        let tracker = Tracker::new(self.memory()?.clone()).map_err(ImageError::Tracking)?;
        self.tracker = Some(tracker);
        Ok(())
    }

    /// Overwrites the guest's memory with a restored `image` (taken of
    /// this module, after its `init`), so that the guest carries on as it
    /// was; pages are tracked from here on where the kernel can (else the
    /// job's checkpoints are the SDK's snapshots, and the log says why).
    /// Call before any other export.
    pub fn restore_memory(&mut self, image: &[u8]) -> Result<(), ImageError> {
        // An image is written only of a module whose memory holds all its
        // state; an older weir did not check.
        memory_images_hold_all(self.mutable_globals)?;
        let memory = self.memory()?;
        if image.len() > memory.len() {
            return Err(ImageError::Size {
                image: image.len(),
                memory: memory.len(),
            });
        }
        // SAFETY: between calls, with the store alive; nothing else reads the memory.
        let bytes = unsafe { memory.bytes_mut() };
        bytes[..image.len()].copy_from_slice(image);
        bytes[image.len()..].fill(0);
        match self.track_memory() {
            Ok(()) => self.tracked_since_image = true,
            Err(e) => tracing::warn!(job = %self.store.data().job, "checkpoints keep the SDK's snapshot: {e}"),
        }
        Ok(())
    }

    /// The pages of the guest's memory written since the last image, or
    /// all of them (true) when there is none to write them over. Refused
    /// while the guest holds host resources.
    pub fn image(&mut self) -> Result<(Pages, bool), ImageError> {
        if !self.store.data().table.is_empty() {
            // The image after this barrier's snapshot has nothing under it.
            self.tracked_since_image = false;
            return Err(ImageError::Resources);
        }
        let memory = self.memory()?.clone();
        let tracker = self
            .tracker
            .as_mut()
            .ok_or_else(|| ImageError::Tracking(std::io::Error::other("not asked to track them")))?;
        let written = tracker.written().map_err(ImageError::Tracking)?;
        // SAFETY: between calls, with the store alive.
        let bytes = unsafe { memory.bytes() };
        let whole = !std::mem::replace(&mut self.tracked_since_image, true);
        Ok(match whole {
            true => (Pages::whole(bytes), true),
            false => (Pages::copy(bytes, written), false),
        })
    }

    /// Runs one export, arming its CPU deadline first.
    async fn call<R>(
        &mut self,
        call: &'static str,
        f: impl AsyncFnOnce(&Job, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestError> {
        self.store.set_epoch_deadline(deadline_ticks(self.limits.call_timeout));
        let result = f(&self.job, &mut self.store).await;
        result.map_err(|err| {
            if std::mem::take(&mut self.store.data_mut().limiter.hit) {
                return GuestError::MemoryLimit {
                    call,
                    limit: self.limits.memory_bytes,
                };
            }
            match err.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => GuestError::Timeout {
                    call,
                    timeout: self.limits.call_timeout,
                },
                _ => GuestError::Trap {
                    call,
                    cause: err.into(),
                },
            }
        })
    }

    /// Configures the job (`init`).
    pub async fn init(&mut self, config: &[(String, String)]) -> Result<(), GuestError> {
        let result = self
            .call("init", async |job, store| job.call_init(store, config).await)
            .await?;
        result.map_err(|reason| GuestError::Refused { call: "init", reason })
    }

    /// Runs one batch through the job and returns what it emits and which
    /// records it refused. `watermark` is the input's, if it has one.
    pub async fn process(&mut self, batch: &Batch, watermark: Option<i64>) -> Result<Output, GuestError> {
        self.call("process", async |job, store| {
            job.call_process(store, batch, watermark).await
        })
        .await
    }

    /// Takes the job's snapshot at a barrier.
    pub async fn snapshot(&mut self) -> Result<Vec<u8>, GuestError> {
        self.call("snapshot", async |job, store| job.call_snapshot(store).await)
            .await
    }

    /// Restores the job's state from a snapshot.
    pub async fn restore(&mut self, snapshot: &[u8]) -> Result<(), GuestError> {
        let result = self
            .call("restore", async |job, store| job.call_restore(store, snapshot).await)
            .await?;
        result.map_err(|reason| GuestError::Refused {
            call: "restore",
            reason,
        })
    }
}

fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}
