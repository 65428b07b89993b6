//! Where an attempt's job comes from: its module made ready, its sink, and
//! its batch loop. The binary runs wasm components ([`WasmExecutor`]); the
//! deterministic simulation runs a scripted job on the async runtime, so
//! the attempt and the committer around it are the real ones either way.

use std::sync::OnceLock;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::error::{failed, AttemptError};
use super::runner::{self, Barrier, Formats, RunEnd, Settings};
use super::watermark::Watermark;
use super::ControlReceiver;
use crate::checkpoint::{Checkpoint, EventTimes, SourcePosition};
use crate::connectors::{open_sink, open_source, OutputFormat, Sink, SinkOwner, TableShape};
use crate::runtime::{Instance, Limits, Runtime};
use crate::spec::{JobSpec, Share, SinkSpec, StateFormat};
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

    /// A sink of the job's (its output, or its dead letters).
    fn open_sink(&self, spec: &SinkSpec, owner: SinkOwner) -> Box<dyn Sink>;

    /// Task `share`'s instance of the job, restored from `restored` (or
    /// fresh) and configured, with its share of the source at the matching
    /// offset: ready to start. `table` is what its sink's table takes, when
    /// the sink writes one.
    async fn load(
        &self,
        spec: &JobSpec,
        share: Share,
        restored: Option<&Checkpoint>,
        table: Option<TableShape>,
    ) -> Result<Box<dyn BatchLoop>, AttemptError>;
}

/// A loaded job, ready to run batches.
pub trait BatchLoop: Send {
    /// Starts running batches, taking a barrier every checkpoint interval
    /// and handing it to `barriers`, until `control` says stop or finish or
    /// `cancel` is sent or dropped. A cancelled loop drops its job where it
    /// is, even a guest blocked in a host call, and ends as stopped.
    fn start(
        self: Box<Self>,
        control: ControlReceiver,
        barriers: mpsc::Sender<Barrier>,
        cancel: oneshot::Receiver<()>,
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

    fn open_sink(&self, spec: &SinkSpec, owner: SinkOwner) -> Box<dyn Sink> {
        open_sink(spec, owner)
    }

    async fn load(
        &self,
        spec: &JobSpec,
        share: Share,
        restored: Option<&Checkpoint>,
        table: Option<TableShape>,
    ) -> Result<Box<dyn BatchLoop>, AttemptError> {
        if let Some(c) = restored.filter(|c| c.meta.image.is_some()) {
            let image = c.meta.image.as_ref().expect("filtered");
            if c.memory.is_none() || image.module_sha256 != spec.module_sha256 {
                return Err(failed(anyhow::anyhow!(
                    "checkpoint {} is an image of module {}'s memory, not read back for module {}",
                    c.meta.checkpoint.id,
                    image.module_sha256,
                    spec.module_sha256
                )));
            }
        }
        let (loaded_tx, loaded) = oneshot::channel();
        let (start, started) = oneshot::channel();
        let job = JobThread {
            runtime: self.runtime.clone(),
            spec: spec.clone(),
            share,
            snapshot: restored.filter(|c| c.meta.image.is_none()).map(|c| c.snapshot.clone()),
            memory: restored.and_then(|c| c.memory.clone()),
            position: restored.map(|c| c.meta.source_position()),
            event_times: restored.map(|c| c.meta.event_times.clone()).unwrap_or_default(),
            table,
        };
        job.spawn(loaded_tx, started).map_err(AttemptError::Failed)?;
        match loaded.await {
            Ok(Ok(())) => Ok(Box::new(WasmLoop { start })),
            Ok(Err(e)) => Err(AttemptError::Failed(e)),
            Err(_) => Err(failed(anyhow::anyhow!("the job's thread ended while loading"))),
        }
    }
}

/// What a loaded job's thread waits for before it runs batches.
struct Start {
    control: ControlReceiver,
    barriers: mpsc::Sender<Barrier>,
    cancel: oneshot::Receiver<()>,
    ended: oneshot::Sender<anyhow::Result<RunEnd>>,
}

/// A job's own thread, which instantiates, restores and configures the
/// guest (guest code, and a snapshot may be hundreds of MiB: not on an
/// async thread), then runs [`runner::run`]. A thread of its own, not
/// tokio's blocking pool: that pool is capped (512 threads) and a job's
/// loop lives as long as the job. The guest's calls run on this thread as
/// one future, which is what lets a call that never returns be dropped;
/// its WASI I/O is driven by [`guest_io`].
struct JobThread {
    runtime: Runtime,
    spec: JobSpec,
    share: Share,
    snapshot: Option<bytes::Bytes>,
    /// The guest memory its checkpoint holds instead, if it is an image.
    memory: Option<bytes::Bytes>,
    /// Where its checkpoint left the source (none: a fresh start).
    position: Option<SourcePosition>,
    event_times: EventTimes,
    table: Option<TableShape>,
}

/// The runtime that drives guests' WASI I/O (its reactor and timers, the
/// tasks wasmtime-wasi spawns, its blocking file operations) while each
/// guest runs on its job's thread: a runtime on the job's thread would turn
/// only while the batch loop awaits, not while it reads its source. One per
/// process, never dropped.
fn guest_io() -> anyhow::Result<tokio::runtime::Handle> {
    static GUEST_IO: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let built = GUEST_IO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-guest-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    match built {
        Ok(runtime) => Ok(runtime.handle().clone()),
        Err(e) => Err(anyhow::anyhow!("cannot start the runtime for guests' I/O: {e}")),
    }
}

impl JobThread {
    fn spawn(
        self,
        loaded: oneshot::Sender<anyhow::Result<()>>,
        started: oneshot::Receiver<Start>,
    ) -> anyhow::Result<()> {
        let io = guest_io()?;
        std::thread::Builder::new()
            .name(format!("job-{}", self.spec.name))
            .spawn(move || io.block_on(self.run(loaded, started)))
            .context("cannot start the job's thread")?;
        Ok(())
    }

    async fn run(mut self, mut loaded: oneshot::Sender<anyhow::Result<()>>, started: oneshot::Receiver<Start>) {
        // An attempt that stops while its job loads (an `init` blocked in a
        // host call, say) drops the load with it.
        let instance = tokio::select! {
            biased;
            () = loaded.closed() => return,
            instance = self.instance() => instance,
        };
        let instance = match instance {
            Ok(instance) => {
                let _ = loaded.send(Ok(()));
                instance
            }
            Err(e) => {
                let _ = loaded.send(Err(e));
                return;
            }
        };
        let Ok(Start {
            control,
            barriers,
            cancel,
            ended,
        }) = started.await
        else {
            return;
        };
        let source = open_source(&self.spec.source, self.position.as_ref(), &self.spec.name, self.share);
        let span = tracing::info_span!("job", name = %self.spec.name, task = self.share.index);
        let end = tokio::select! {
            biased;
            _ = cancel => Ok(RunEnd::Stopped),
            end = runner::run(
                instance,
                source,
                control,
                barriers,
                Settings {
                    interval: self.spec.checkpoint_interval,
                    on_error: &self.spec.on_error,
                    table: self.table.as_ref(),
                    formats: Formats {
                        output: OutputFormat::of(&self.spec.sink),
                        dead_letters: self.spec.on_error.dead_letters().map_or(OutputFormat::Lines, OutputFormat::of),
                    },
                },
                self.spec.watermark.map(|w| Watermark::new(w, self.event_times.clone(), std::time::Instant::now())),
            ).instrument(span) => end,
        };
        let _ = ended.send(end);
    }

    /// The guest, restored from the snapshot if there is one, and configured.
    async fn instance(&mut self) -> anyhow::Result<Instance> {
        let spec = &self.spec;
        let limits = Limits {
            memory_bytes: spec.memory_limit,
            call_timeout: spec.call_timeout,
        };
        // Taken: the guest's memory is the only copy kept once restored.
        let memory = self.memory.take();
        let memory_len = memory.as_ref().map_or(0, |m| m.len());
        if memory_len as u64 > spec.memory_limit {
            anyhow::bail!(
                "the checkpoint's memory image is {memory_len} bytes, past the job's memory limit of {} bytes",
                spec.memory_limit
            );
        }
        let mut instance = self
            .runtime
            .instantiate(&spec.module_sha256, &spec.name, limits, &spec.grants, memory_len)
            .await?;
        if let Some(memory) = &memory {
            instance
                .restore_memory(memory)
                .context("restoring the checkpoint's memory image")?;
        } else if let Some(snapshot) = &self.snapshot {
            instance.restore(snapshot).await?;
        }
        instance.init(&spec.config).await?;
        if spec.state == StateFormat::Memory && !instance.tracks_memory() {
            if let Err(e) = instance.track_memory() {
                tracing::warn!(job = %spec.name, "checkpoints keep the SDK's snapshot: {e}");
            }
        }
        Ok(instance)
    }
}

/// A loaded job on its thread, waiting to be started.
struct WasmLoop {
    start: oneshot::Sender<Start>,
}

impl BatchLoop for WasmLoop {
    fn start(
        self: Box<Self>,
        control: ControlReceiver,
        barriers: mpsc::Sender<Barrier>,
        cancel: oneshot::Receiver<()>,
    ) -> Result<LoopEnded, AttemptError> {
        let (ended, loop_ended) = oneshot::channel();
        let start = Start {
            control,
            barriers,
            cancel,
            ended,
        };
        self.start
            .send(start)
            .map_err(|_| failed(anyhow::anyhow!("the job's thread ended before it started")))?;
        Ok(loop_ended)
    }
}
