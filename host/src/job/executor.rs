//! Where an attempt's job comes from: its module made ready, its sink, and
//! its batch loop. The binary runs wasm components ([`WasmExecutor`]); the
//! deterministic simulation runs a scripted job on the async runtime, so
//! the attempt and the committer around it are the real ones either way.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};

use super::error::{failed, AttemptError};
use super::runner::{self, Barrier, RunEnd};
use super::ControlReceiver;
use crate::checkpoint::Checkpoint;
use crate::connectors::{open_sink, open_source, Sink, Source};
use crate::runtime::{Instance, Limits, Runtime};
use crate::spec::JobSpec;
use crate::storage::Storage;

/// How the batch loop ended, sent once it has.
pub type LoopEnded = oneshot::Receiver<anyhow::Result<RunEnd>>;

/// Makes jobs runnable on this supervisor.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// Whether the module with this digest is ready to run here.
    fn is_prepared(&self, module_sha256: &str) -> bool;

    /// Fetches and compiles the module unless it is ready already (hot standby).
    async fn prepare(&self, module_sha256: &str) -> Result<(), AttemptError>;

    /// The job's sink.
    fn open_sink(&self, spec: &JobSpec) -> Box<dyn Sink>;

    /// The job's instance, restored from `restored` (or fresh) and
    /// configured, with its source at the matching offset: ready to start.
    async fn load(&self, spec: &JobSpec, restored: Option<&Checkpoint>) -> Result<Box<dyn BatchLoop>, AttemptError>;
}

/// A loaded job, ready to run batches.
pub trait BatchLoop: Send {
    /// Starts running batches, taking a barrier every checkpoint interval
    /// and handing it to `barriers`, until `control` says stop or finish or
    /// `abort` is set.
    fn start(
        self: Box<Self>,
        control: ControlReceiver,
        barriers: mpsc::Sender<Barrier>,
        abort: Arc<AtomicBool>,
    ) -> Result<LoopEnded, AttemptError>;
}

/// Jobs as wasm components from the storage dir, reading and writing the
/// connectors their specs name.
pub struct WasmExecutor {
    storage: Storage,
    runtime: Runtime,
}

impl WasmExecutor {
    /// Modules come from `storage` and are compiled by `runtime`.
    pub fn new(storage: Storage, runtime: Runtime) -> Self {
        WasmExecutor { storage, runtime }
    }
}

#[async_trait::async_trait]
impl Executor for WasmExecutor {
    fn is_prepared(&self, module_sha256: &str) -> bool {
        self.runtime.is_compiled(module_sha256)
    }

    async fn prepare(&self, module_sha256: &str) -> Result<(), AttemptError> {
        if self.is_prepared(module_sha256) {
            return Ok(());
        }
        let bytes = self
            .storage
            .get(&Storage::module_path(module_sha256))
            .await
            .map_err(failed)?;
        let runtime = self.runtime.clone();
        let sha256 = module_sha256.to_string();
        tokio::task::spawn_blocking(move || runtime.prepare(&sha256, &bytes))
            .await
            .map_err(failed)?
            .map_err(failed)
    }

    fn open_sink(&self, spec: &JobSpec) -> Box<dyn Sink> {
        open_sink(&spec.sink)
    }

    async fn load(&self, spec: &JobSpec, restored: Option<&Checkpoint>) -> Result<Box<dyn BatchLoop>, AttemptError> {
        let runtime = self.runtime.clone();
        let spec = spec.clone();
        let snapshot = restored.map(|c| c.snapshot.clone());
        let offset = restored.map_or(0, |c| c.meta.source_offset);
        // Instantiating and restoring run guest code (a snapshot may be
        // hundreds of MiB): not on an async thread.
        let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<WasmLoop> {
            let limits = Limits {
                memory_bytes: spec.memory_limit,
                call_timeout: spec.call_timeout,
            };
            let mut instance = runtime.instantiate(&spec.module_sha256, &spec.name, limits, &spec.grants)?;
            if let Some(snapshot) = &snapshot {
                instance.restore(snapshot)?;
            }
            instance.init(&spec.config)?;
            Ok(WasmLoop {
                name: spec.name.clone(),
                instance,
                source: open_source(&spec.source, offset),
                interval: spec.checkpoint_interval,
            })
        })
        .await
        .map_err(failed)?
        .map_err(AttemptError::Failed)?;
        Ok(Box::new(loaded))
    }
}

/// A wasm instance and its source, run by [`runner::run`] on a thread of its own.
struct WasmLoop {
    name: String,
    instance: Instance,
    source: Box<dyn Source>,
    interval: Duration,
}

impl BatchLoop for WasmLoop {
    fn start(
        self: Box<Self>,
        control: ControlReceiver,
        barriers: mpsc::Sender<Barrier>,
        abort: Arc<AtomicBool>,
    ) -> Result<LoopEnded, AttemptError> {
        let (ended, loop_ended) = oneshot::channel();
        let WasmLoop {
            name,
            instance,
            source,
            interval,
        } = *self;
        // A thread of its own, not tokio's blocking pool: that pool is capped
        // (512 threads) and a job's loop lives as long as the job.
        std::thread::Builder::new()
            .name(format!("job-{name}"))
            .spawn(move || {
                let _ = ended.send(runner::run(instance, source, control, barriers, interval, &abort));
            })
            .context("cannot start the job's thread")
            .map_err(AttemptError::Failed)?;
        Ok(loop_ended)
    }
}
