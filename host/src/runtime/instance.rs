//! One running guest: its store, its limits, and calls that turn every
//! guest failure into a [`GuestError`] naming the cause.

use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{Cause, EPOCH_TICK};
use crate::spec::Grants;
use crate::wit::bindings::weir::job::{host, types};
use crate::wit::bindings::{Job, JobPre};
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
    store: Store<GuestState>,
    job: Job,
    limits: Limits,
}

impl Instance {
    pub(super) async fn new(
        engine: &Engine,
        pre: &JobPre<GuestState>,
        job: &str,
        limits: Limits,
        grants: &Grants,
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
        let job = match pre.instantiate_async(&mut store).await {
            Ok(job) => job,
            Err(_) if store.data().limiter.hit => {
                return Err(GuestError::MemoryLimit {
                    call: "instantiate",
                    limit: limits.memory_bytes,
                })
            }
            Err(e) => return Err(GuestError::Instantiate(e.into())),
        };
        Ok(Instance { store, job, limits })
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
