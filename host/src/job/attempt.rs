//! One attempt of a job: restore from the newest readable checkpoint, then
//! run the batch loop and commit its barriers until stopped or failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::committer::{Committer, PointerAt};
use super::runner::{self, Barrier, RunEnd};
use super::{stop_requested, Control, JobEnd, LeaderContext};
use crate::checkpoint::{Checkpoint, CheckpointStore, Pointer};
use crate::connectors::{open_sink, open_source};
use crate::ha::FenceError;
use crate::runtime::Limits;
use crate::spec::{JobSpec, JobState};
use crate::storage::Storage;

/// Why an attempt ended without a clean stop.
#[derive(Debug)]
pub enum AttemptError {
    /// This supervisor no longer leads: stop, do not retry.
    Deposed,
    /// ZooKeeper did not answer (connection lost, a request timed out), so
    /// whether this supervisor still leads is unknown. Not the job's fault:
    /// retry from the last checkpoint once ZooKeeper answers, and spend no
    /// restart (Curator's SUSPENDED, not a failure).
    Interrupted(String),
    /// Anything else: retry from the last checkpoint after a backoff.
    Failed(String),
}

impl AttemptError {
    /// A failed ZooKeeper request: an interruption if ZooKeeper left it
    /// unanswered, the job's failure if it refused it.
    fn zookeeper(error: String, unanswered: bool) -> Self {
        if unanswered {
            AttemptError::Interrupted(error)
        } else {
            AttemptError::Failed(error)
        }
    }
}

impl From<FenceError> for AttemptError {
    fn from(e: FenceError) -> Self {
        match e {
            FenceError::Deposed => AttemptError::Deposed,
            e => AttemptError::zookeeper(e.to_string(), e.is_unanswered()),
        }
    }
}

fn failed(e: impl std::fmt::Display) -> AttemptError {
    AttemptError::Failed(e.to_string())
}

/// Barriers in flight between the batch loop and the committer: a slow
/// storage dir holds processing back after this many.
const BARRIERS_IN_FLIGHT: usize = 2;

/// How long past its call timeout a job asked to stop may take to do so.
/// A guest blocked in a granted host call (a socket read, say) burns no CPU,
/// so its epoch deadline never fires; after this its thread is abandoned.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs one attempt to its end.
pub async fn run(
    ctx: &LeaderContext,
    spec: &JobSpec,
    restarts: u32,
    control: watch::Receiver<Control>,
) -> Result<JobEnd, AttemptError> {
    let name = spec.name.as_str();
    let pointer_path = ctx.layout.job_checkpoint(name);
    let (data, stat) = ctx
        .fence
        .client()
        .get_data(&pointer_path)
        .await
        .map_err(|e| AttemptError::zookeeper(format!("reading {pointer_path}: {e}"), crate::ha::unanswered(&e)))?;
    let pointer = Pointer::decode(&data).map_err(failed)?;
    let checkpoints = CheckpointStore::new(ctx.storage.clone(), name, &spec.uid);
    let restored = restore_point(&checkpoints, &pointer, name).await?;

    load_module(&ctx.storage, &ctx.runtime, &spec.module_sha256).await?;
    let mut sink = open_sink(&spec.sink);
    // Reading storage and compiling take time in which this leadership may
    // have ended and a successor published past this checkpoint: cutting the
    // sink back now would remove committed output. Confirm first.
    ctx.fence.confirm(&pointer_path, stat.version).await?;
    let position = match &restored {
        Some(c) => {
            sink.recover(c.meta.sink_offset, &c.output).map_err(failed)?;
            c.meta.sink_offset + c.output.len() as u64
        }
        None => sink.initial_position().map_err(failed)?,
    };

    let limits = Limits {
        memory_bytes: spec.memory_limit,
        call_timeout: spec.call_timeout,
    };
    let mut instance = ctx
        .runtime
        .instantiate(&spec.module_sha256, name, limits, &spec.grants)
        .map_err(failed)?;
    if let Some(c) = &restored {
        instance.restore(&c.snapshot).map_err(failed)?;
    }
    instance.init(&spec.config).map_err(failed)?;
    let source = open_source(&spec.source, restored.as_ref().map_or(0, |c| c.meta.source_offset));

    ctx.write_status(name, JobState::Running, restarts, None).await?;
    match &restored {
        Some(c) => tracing::info!(
            job = name,
            checkpoint = c.meta.checkpoint.id,
            epoch = c.meta.checkpoint.epoch,
            "restored job from checkpoint"
        ),
        None => tracing::info!(job = name, "started job with no checkpoint"),
    }

    let (barriers, mut received) = mpsc::channel::<Barrier>(BARRIERS_IN_FLIGHT);
    let abort = Arc::new(AtomicBool::new(false));
    let loop_abort = abort.clone();
    let interval = spec.checkpoint_interval;
    // A thread of its own, not tokio's blocking pool: that pool is capped
    // (512 threads) and a job's loop lives as long as the job.
    let (ended, batch_loop) = tokio::sync::oneshot::channel();
    let mut stop_request = control.clone();
    std::thread::Builder::new()
        .name(format!("job-{name}"))
        .spawn(move || {
            let _ = ended.send(runner::run(instance, source, control, barriers, interval, &loop_abort));
        })
        .map_err(|e| failed(format!("cannot start the job's thread: {e}")))?;

    let pointer = PointerAt {
        path: pointer_path,
        pointer,
        version: stat.version,
    };
    let mut committer = Committer::new(ctx, spec, checkpoints, pointer, sink, position);
    let mut commit_error = None;
    let grace = spec.call_timeout + STOP_GRACE;
    let mut stop_by: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            // Barriers first: one sent before a stop is committed, not dropped.
            biased;
            barrier = received.recv() => {
                let Some(barrier) = barrier else { break };
                if let Err(e) = committer.commit(barrier).await {
                    commit_error = Some(e);
                    abort.store(true, Ordering::Relaxed);
                    break;
                }
            }
            () = stop_requested(&mut stop_request), if stop_by.is_none() => {
                stop_by = Some(tokio::time::Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(stop_by.unwrap_or_else(tokio::time::Instant::now)), if stop_by.is_some() => {
                tracing::warn!(
                    job = name,
                    "the job did not stop within {grace:?}: its guest is blocked in a host call, \
                     where its CPU deadline does not reach; its thread is abandoned"
                );
                return Ok(JobEnd::Stopped);
            }
        }
    }
    drop(received);
    let end = batch_loop.await.map_err(|_| failed("the batch loop panicked"))?;
    if let Some(e) = commit_error {
        return Err(e);
    }
    match end {
        Ok(RunEnd::Stopped) => Ok(JobEnd::Stopped),
        Ok(RunEnd::Finished) => Ok(JobEnd::Finished),
        Err(e) => Err(AttemptError::Failed(e)),
    }
}

/// The newest retained checkpoint that reads back whole, warning about each
/// one skipped. A job that has checkpoints never silently starts from nothing.
async fn restore_point(
    store: &CheckpointStore,
    pointer: &Pointer,
    job: &str,
) -> Result<Option<Checkpoint>, AttemptError> {
    let mut problems = Vec::new();
    for c in &pointer.retained {
        match store.read(*c).await {
            Ok(checkpoint) => return Ok(Some(checkpoint)),
            Err(e) => {
                tracing::warn!(
                    job,
                    checkpoint = c.id,
                    "checkpoint unreadable, falling back to the previous one: {e}"
                );
                problems.push(format!("checkpoint {}: {e}", c.id));
            }
        }
    }
    if problems.is_empty() {
        Ok(None)
    } else {
        Err(AttemptError::Failed(format!(
            "no retained checkpoint is readable ({})",
            problems.join("; ")
        )))
    }
}

/// Fetches and compiles a module unless it is compiled already (hot standby).
pub async fn load_module(
    storage: &Storage,
    runtime: &crate::runtime::Runtime,
    sha256: &str,
) -> Result<(), AttemptError> {
    if runtime.is_compiled(sha256) {
        return Ok(());
    }
    let bytes = storage.get(&Storage::module_path(sha256)).await.map_err(failed)?;
    let runtime = runtime.clone();
    let sha256 = sha256.to_string();
    tokio::task::spawn_blocking(move || runtime.prepare(&sha256, &bytes))
        .await
        .map_err(failed)?
        .map_err(failed)
}
