//! One attempt of a job: restore from the newest readable checkpoint, then
//! run the batch loop and commit its barriers until stopped or failed.

use anyhow::anyhow;
use tokio::sync::{mpsc, oneshot};

use super::committer::{Committer, PointerAt};
use super::error::{failed, AttemptError};
use super::executor::BatchLoop;
use super::runner::{Barrier, RunEnd};
use super::{stop_requested, Control, ControlReceiver, JobEnd, Task, WorkerContext};
use crate::checkpoint::image::ChainEnd;
use crate::checkpoint::SinkPositions;
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointRef, CheckpointStore, Pointer};
use crate::connectors::Outputs;
use crate::coord::FencedOp;
use crate::regroup::TaskStart;
use crate::spec::JobState;
use crate::storage::StorageError;

/// Barriers in flight between the batch loop and the committer: a slow
/// storage dir holds processing back after this many.
const BARRIERS_IN_FLIGHT: usize = 2;

/// How long past its call timeout a job asked to stop may take to do so.
/// A guest blocked in a granted host call (a socket read, say) burns no CPU,
/// so its epoch deadline never fires; after this it is dropped where it is.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs one attempt to its end.
pub async fn run(
    ctx: &WorkerContext,
    task: &Task,
    restarts: u32,
    control: ControlReceiver,
) -> Result<JobEnd, AttemptError> {
    let spec = &task.spec;
    let label = task.label();
    let name = label.as_str();
    // Restoring waits on the storage dir, which may not answer for minutes:
    // a stop takes effect meanwhile (nothing has run, nothing to commit),
    // once a sink write the restore began (cutting the sink back) is done,
    // so that it cannot land on a successor's output.
    let index = task.share.index;
    let mut sink = outputs_of(ctx, task, index);
    let mut stop_early = control.clone();
    let started = tokio::select! {
        biased;
        started = start(ctx, task, restarts, &mut sink) => Some(started?),
        _ = stop_early.wait_for(|c| c == Control::Stop) => None,
    };
    let Some(Started {
        pointer,
        version,
        image,
        restored_at,
        checkpoints,
        position,
        batch_loop,
    }) = started
    else {
        sink.settle().await;
        return Ok(JobEnd::Stopped);
    };
    let pointer_path = ctx.layout.task_checkpoint(&spec.name, index);

    let (barriers, mut received) = mpsc::channel::<Barrier>(BARRIERS_IN_FLIGHT);
    // Dropping `cancel` (on any return from here) drops the job where it is.
    let (cancel, cancelled) = oneshot::channel::<()>();
    let mut stop_request = control.clone();
    let mut stop_now = control.clone();
    let batch_loop = batch_loop.start(control, barriers, cancelled)?;

    let pointer = PointerAt {
        path: pointer_path,
        pointer,
        restored_at,
        version,
        image,
    };
    let mut committer = Committer::new(ctx, task, checkpoints, pointer, sink, position);
    let mut commit_error = None;
    let grace = spec.call_timeout + STOP_GRACE;
    let mut stop_by: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            // Barriers first: one sent before a finish is committed, not
            // dropped (a stop abandons it, below).
            biased;
            barrier = received.recv() => {
                let Some(barrier) = barrier else { break };
                // A stop commits nothing more: it does not wait for a
                // checkpoint stuck on a slow storage dir (a planned
                // handoff's finish does).
                let committed = tokio::select! {
                    biased;
                    committed = committer.commit(barrier) => Some(committed),
                    _ = stop_now.wait_for(|c| c == Control::Stop) => None,
                };
                let Some(committed) = committed else {
                    committer.settle().await;
                    return Ok(JobEnd::Stopped);
                };
                if let Err(e) = committed {
                    commit_error = Some(e);
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
                     where its CPU deadline does not reach; it is dropped there"
                );
                return Ok(JobEnd::Stopped);
            }
        }
    }
    drop(received);
    drop(cancel);
    // A cancelled loop ends at its next await; a source read blocked on a
    // hung filesystem may hold it longer, and the attempt is over anyway.
    let end = match tokio::time::timeout(grace, batch_loop).await {
        Ok(end) => end.map_err(|_| failed(anyhow!("the batch loop panicked")))?,
        Err(_) => {
            tracing::warn!(
                job = name,
                "the job did not end within {grace:?} of its attempt's end; left to end on its own"
            );
            Ok(RunEnd::Stopped)
        }
    };
    if let Some(e) = commit_error {
        return Err(e);
    }
    match end.map_err(AttemptError::Failed)? {
        RunEnd::Stopped => Ok(JobEnd::Stopped),
        RunEnd::Finished => Ok(JobEnd::Finished),
    }
}

/// The outputs (sink and dead letters) of task `index` of `task`'s job.
fn outputs_of(ctx: &WorkerContext, task: &Task, index: u32) -> Outputs {
    let spec = &task.spec;
    let dead_letters = spec.on_error.dead_letters().map(|s| {
        ctx.executor
            .open_sink(&s.for_task(index), task.sink_owner(index, "/dead-letters"))
    });
    Outputs::new(
        ctx.executor
            .open_sink(&spec.sink.for_task(index), task.sink_owner(index, "")),
        dead_letters,
    )
}

/// An attempt restored and loaded, not yet running.
struct Started {
    pointer: Pointer,
    version: i32,
    /// The restored checkpoint's chain, if it is a memory image.
    image: Option<ChainEnd>,
    restored_at: usize,
    checkpoints: CheckpointStore,
    position: SinkPositions,
    batch_loop: Box<dyn BatchLoop>,
}

/// Restores the job from its newest readable checkpoint (or starts it
/// fresh), cuts the sink back to that checkpoint, loads the guest and
/// marks the job running.
async fn start(ctx: &WorkerContext, task: &Task, restarts: u32, sink: &mut Outputs) -> Result<Started, AttemptError> {
    let spec = &task.spec;
    let label = task.label();
    let name = label.as_str();
    let pointer_path = ctx.layout.task_checkpoint(&spec.name, task.share.index);
    let (data, version) = ctx
        .session
        .get_data(&pointer_path)
        .await
        .map_err(|e| AttemptError::zookeeper(format!("reading {pointer_path}"), e))?;
    let pointer = Pointer::decode(&data).map_err(failed)?;
    let checkpoints = CheckpointStore::new(ctx.storage.clone(), &spec.name, &task.deployment());
    let (restored_at, restored) = match restore_point(&checkpoints, &pointer, name).await? {
        Some((index, checkpoint)) => (index, Some(TaskStart::whole(checkpoint))),
        None => (0, from_savepoint(ctx, task).await?),
    };

    ctx.executor.prepare(&spec.module_sha256).await?;
    // Reading storage and compiling take time in which the task may have
    // been given to another worker that published past this checkpoint:
    // cutting the sink back now would remove committed output. Confirm first.
    let confirm = FencedOp::Check {
        path: &pointer_path,
        version,
    };
    ctx.write_task(task, &[confirm]).await?;
    // Old tasks a rescale left no room for: their last output lands
    // before this task's first checkpoint, after which no restore
    // brings it back.
    for orphan in restored.iter().flat_map(|r| &r.orphans) {
        outputs_of(ctx, task, orphan.task)
            .recover(orphan.positions, orphan.output.clone())
            .await
            .map_err(|e| {
                failed(anyhow::Error::new(e).context(format!("publishing old task {}'s last output", orphan.task)))
            })?;
    }
    let position = match &restored {
        Some(TaskStart {
            checkpoint: c,
            carries_sink: true,
            ..
        }) => {
            sink.recover(c.meta.sink_positions(), c.output.clone())
                .await
                .map_err(failed)?;
            c.meta.sink_positions() + c.output.len()
        }
        _ => sink.initial_position().await.map_err(failed)?,
    };
    let restored = restored.map(|r| r.checkpoint);
    let table = sink.table_shape();
    let batch_loop = ctx.executor.load(spec, task.share, restored.as_ref(), table).await?;

    ctx.write_status(task, JobState::Running, restarts, None).await?;
    match &restored {
        Some(c) => tracing::info!(
            job = name,
            checkpoint = c.meta.checkpoint.id,
            epoch = c.meta.checkpoint.epoch,
            "restored job from checkpoint"
        ),
        None => tracing::info!(job = name, "started job with no checkpoint"),
    }
    Ok(Started {
        pointer,
        version,
        image: restored.as_ref().and_then(|c| ChainEnd::of(&c.meta)),
        restored_at,
        checkpoints,
        position,
        batch_loop,
    })
}

/// Where the savepoint starts this task, for a job deployed from one
/// whose task has no checkpoint of its own yet (regrouped if the job has
/// another task count). One that cannot be read fails the attempt:
/// starting from nothing would replay the whole source into a sink that
/// already holds its output.
async fn from_savepoint(ctx: &WorkerContext, task: &Task) -> Result<Option<TaskStart>, AttemptError> {
    let Some(dir) = &task.spec.from_savepoint else {
        return Ok(None);
    };
    let checkpoint = crate::savepoint::read_start(&ctx.storage, dir, task.share)
        .await
        .map_err(|e| failed(anyhow::Error::new(e)))?;
    tracing::info!(job = task.label(), savepoint = %dir, "starting from the savepoint");
    Ok(Some(checkpoint))
}

/// A checkpoint read back, and if it is pages of guest memory, the
/// memory its chain stands for.
async fn read_whole(store: &CheckpointStore, c: CheckpointRef) -> Result<Checkpoint, CheckpointError> {
    let mut checkpoint = store.read(c).await?;
    if checkpoint.meta.image.is_some() {
        checkpoint.memory = Some(store.read_memory(&checkpoint.meta, &checkpoint.snapshot).await?.into());
    }
    Ok(checkpoint)
}

/// The newest retained checkpoint that reads back whole, and its place in
/// the pointer, warning about each one skipped. Only a checkpoint that is
/// missing or corrupt is skipped: one the storage dir failed to serve may
/// read next time, and falling back past it would cut committed output off
/// the sink, so the attempt fails instead. A job that has checkpoints never
/// silently starts from nothing.
async fn restore_point(
    store: &CheckpointStore,
    pointer: &Pointer,
    job: &str,
) -> Result<Option<(usize, Checkpoint)>, AttemptError> {
    let mut problems = Vec::new();
    for (index, c) in pointer.retained.iter().enumerate() {
        match read_whole(store, *c).await {
            Ok(checkpoint) => return Ok(Some((index, checkpoint))),
            Err(e @ (CheckpointError::Storage(StorageError::Store { .. }) | CheckpointError::Timeout { .. })) => {
                return Err(failed(
                    anyhow::Error::new(e).context(format!("reading checkpoint {}", c.id)),
                ));
            }
            Err(e) => {
                tracing::warn!(
                    job,
                    checkpoint = c.id,
                    "checkpoint unreadable, falling back to the previous one (this one is deleted once the job commits again): {e}"
                );
                problems.push(format!("checkpoint {}: {e}", c.id));
            }
        }
    }
    if problems.is_empty() {
        Ok(None)
    } else {
        Err(failed(anyhow!(
            "no retained checkpoint is readable ({})",
            problems.join("; ")
        )))
    }
}
