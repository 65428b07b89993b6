//! Running one task of a job on the worker it is assigned to: attempts
//! that restore from the task's latest readable checkpoint, a batch loop
//! that takes barriers between batches, and a committer that makes each
//! barrier a checkpoint (storage, then the fenced pointer, then the sink).
//! A failed attempt restarts with a backoff; one that ZooKeeper left
//! unanswered resumes once it answers, spending no restart. Neither ever
//! affects another task.

mod attempt;
mod committer;
pub mod control;
mod error;
mod executor;
mod group_commit;
mod runner;
mod watermark;

pub use control::{Control, ControlReceiver, ControlSender};
pub use error::AttemptError;
pub use executor::{BatchLoop, Executor, LoopEnded, WasmExecutor};
pub use group_commit::GroupCommit;
pub use runner::{Barrier, GuestSnapshot, RunEnd, MAX_BATCH};

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::now_ms;
use crate::connectors::SinkOwner;
use crate::coord::{FenceError, FencedOp, Session};
use crate::ha::Layout;
use crate::history::{AttemptEnd, History};
use crate::metrics::Metrics;
use crate::spec::{JobSpec, JobState, JobStatus, Share};
use crate::storage::Storage;

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// Stopped on request.
    Stopped,
    /// Finished after a final checkpoint.
    Finished,
    /// A fenced write found this worker's node gone (its session ended).
    Deposed,
    /// The restart strategy gave up; the task is marked FAILED.
    Failed,
}

/// What every task on this worker shares.
#[derive(Clone)]
pub struct WorkerContext {
    /// This worker's session: every read and write of its tasks.
    pub session: Arc<dyn Session>,
    /// This worker's node, `workers/<session>`: every write of its tasks
    /// checks that it still exists.
    pub node: String,
    /// Where the cluster's znodes are.
    pub layout: Layout,
    /// The storage dir.
    pub storage: Storage,
    /// What runs the jobs' code.
    pub executor: Arc<dyn Executor>,
    /// This supervisor's id, recorded in job statuses.
    pub supervisor_id: String,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The tasks' recent checkpoints and attempts, for the REST API.
    pub history: Arc<History>,
    /// Writes the tasks' checkpoint pointers in batches, if it is on.
    pub group_commit: Option<GroupCommit>,
}

/// One task as this worker runs it: its job's spec and the version of
/// the spec's znode it was read at, which share of the job it is, and the
/// assignment that gave it here. Every write for it checks both versions
/// as well as the worker's node, so once the job is cancelled or deployed
/// again, or the task given to another worker, nothing it still has in
/// flight can land, not even a pointer or a status.
#[derive(Debug, Clone)]
pub struct Task {
    /// The job's spec.
    pub spec: JobSpec,
    /// The version of `jobs/<name>` it was read at.
    pub version: i32,
    /// Which task of the job.
    pub share: Share,
    /// The version of `jobs/<name>/tasks/<i>` that assigned it here.
    pub assignment: i32,
    /// That assignment's generation: in the paths of its checkpoints.
    pub generation: u64,
}

impl Task {
    /// `job` for a job of one task, `job/i` otherwise: for logs.
    pub fn label(&self) -> String {
        if self.share.of == 1 {
            self.spec.name.clone()
        } else {
            format!("{}/{}", self.spec.name, self.share.index)
        }
    }

    /// Where this task's deployment keeps its checkpoints: `<uid>/<i>`.
    pub fn deployment(&self) -> String {
        format!("{}/{}", self.spec.uid, self.share.index)
    }

    /// Whose progress the sinks of task `index` of this job keep (`suffix`
    /// tells the job's outputs apart): its own deployment's, or, started
    /// from a savepoint, the one the savepoint came from, task for task.
    pub fn sink_owner(&self, index: u32, suffix: &str) -> SinkOwner {
        let lineage = self.spec.lineage();
        SinkOwner {
            job: lineage.job,
            deployment: format!("{}/{index}{suffix}", lineage.uid),
        }
    }
}

impl WorkerContext {
    /// Carries out `ops` for `task`, if this worker's node still exists and
    /// the task's spec and assignment are still the ones it runs; returns
    /// the version of each node written or checked.
    pub async fn write_task(&self, task: &Task, ops: &[FencedOp<'_>]) -> Result<Vec<i32>, AttemptError> {
        let spec = self.layout.job(&task.spec.name);
        let assignment = self.layout.task(&task.spec.name, task.share.index);
        let guards = [
            FencedOp::Check {
                path: &spec,
                version: task.version,
            },
            FencedOp::Check {
                path: &assignment,
                version: task.assignment,
            },
        ];
        let guarded: Vec<FencedOp<'_>> = guards.into_iter().chain(ops.iter().copied()).collect();
        match self.session.fenced(&self.node, &guarded).await {
            Ok(versions) => Ok(versions[guards.len()..].to_vec()),
            Err(FenceError::Conflict { path, .. }) if path == spec || path == assignment => {
                Err(AttemptError::Superseded)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sets `task`'s checkpoint pointer at `path` to `data` if it is at
    /// version `expected`, guarded like [`WorkerContext::write_task`] (with
    /// the pointers of other tasks, if group commit is on); returns its new
    /// version.
    pub async fn write_pointer(
        &self,
        task: &Task,
        path: &str,
        data: Vec<u8>,
        expected: i32,
    ) -> Result<i32, AttemptError> {
        let Some(group) = &self.group_commit else {
            let op = FencedOp::Set {
                path,
                data: &data,
                expected: Some(expected),
            };
            self.metrics.pointer_writes.inc();
            let version = self.write_task(task, &[op]).await?[0];
            self.metrics.pointers_written.inc();
            return Ok(version);
        };
        let spec = (self.layout.job(&task.spec.name), task.version);
        let assignment = (self.layout.task(&task.spec.name, task.share.index), task.assignment);
        group.write(spec, assignment, path, data, expected).await
    }

    /// Writes a task's status, fenced and guarded like [`WorkerContext::write_task`].
    pub async fn write_status(
        &self,
        task: &Task,
        state: JobState,
        restarts: u32,
        error: Option<String>,
    ) -> Result<(), AttemptError> {
        let status = JobStatus {
            state,
            supervisor: (state != JobState::Canceled).then(|| self.supervisor_id.clone()),
            epoch: task.generation,
            restarts,
            error,
            since_ms: crate::clock::now_ms(),
        };
        let data = serde_json::to_vec(&status).expect("status serializes");
        let path = self.layout.task_status(&task.spec.name, task.share.index);
        let op = FencedOp::Set {
            path: &path,
            data: &data,
            expected: None,
        };
        self.write_task(task, &[op]).await.map(drop)
    }
}

/// An attempt that lasted this long ends a streak of failures (resetting
/// an exponential backoff).
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// How long a job interrupted by ZooKeeper waits before it tries again (then
/// also until the leader resumes its jobs): long enough not to hammer a
/// server that answers nothing, short next to a session timeout.
const INTERRUPTED_RETRY: Duration = Duration::from_millis(100);

/// Runs a task's attempts until it is told to stop, deposed, or its
/// restart strategy gives up.
pub async fn supervise(ctx: Arc<WorkerContext>, task: Task, mut restarts: u32, mut control: ControlReceiver) -> JobEnd {
    let spec = &task.spec;
    let label = task.label();
    // Held while the task is here, so its job's gauges stay across restarts.
    let metrics = ctx.metrics.job(&spec.name);
    let mut streak = 0;
    let index = task.share.index;
    let ended = |end: AttemptEnd, error: Option<String>| {
        ctx.history.attempt_ended(&spec.name, index, now_ms(), end, error);
    };
    loop {
        let started = Instant::now();
        ctx.history
            .attempt_started(&spec.name, index, &ctx.supervisor_id, now_ms());
        let error = match attempt::run(&ctx, &task, restarts, control.clone()).await {
            Ok(end) => {
                ended(
                    match end {
                        JobEnd::Finished => AttemptEnd::Finished,
                        JobEnd::Deposed => AttemptEnd::Deposed,
                        JobEnd::Stopped | JobEnd::Failed => AttemptEnd::Stopped,
                    },
                    None,
                );
                return end;
            }
            Err(AttemptError::Deposed) => {
                ended(AttemptEnd::Deposed, None);
                return JobEnd::Deposed;
            }
            Err(AttemptError::Superseded) => {
                ended(AttemptEnd::Stopped, None);
                tracing::info!(job = %label, "the job was cancelled or deployed again, or the task given to another worker: it stops here");
                return JobEnd::Stopped;
            }
            Err(AttemptError::Interrupted(error)) => {
                ended(AttemptEnd::Interrupted, Some(format!("{error:#}")));
                tracing::warn!(
                    job = %label,
                    "attempt interrupted, ZooKeeper did not answer: {error:#}; resuming from the last \
                     checkpoint once it does (no restart counted)"
                );
                if !sleep_unless_stopped(INTERRUPTED_RETRY, &mut control).await || !resumed(&mut control).await {
                    return JobEnd::Stopped;
                }
                continue;
            }
            Err(AttemptError::Failed(error)) => {
                let error = format!("{error:#}");
                ended(AttemptEnd::Failed, Some(error.clone()));
                error
            }
        };
        streak = if started.elapsed() >= HEALTHY_RUN {
            1
        } else {
            streak + 1
        };
        let Some(delay) = spec.restart.delay(restarts + 1, streak) else {
            tracing::error!(job = %label, restarts, strategy = %spec.restart, "job failed for good: {error}");
            return match ctx.write_status(&task, JobState::Failed, restarts, Some(error)).await {
                Err(AttemptError::Deposed) => JobEnd::Deposed,
                _ => JobEnd::Failed,
            };
        };
        restarts += 1;
        metrics.restarts.inc();
        tracing::warn!(job = %label, restarts, "attempt failed: {error}; restarting from the last checkpoint in {delay:?}");
        match ctx
            .write_status(&task, JobState::Restarting, restarts, Some(error))
            .await
        {
            Err(AttemptError::Deposed) => return JobEnd::Deposed,
            Err(AttemptError::Superseded) => return JobEnd::Stopped,
            _ => {}
        }
        if !sleep_unless_stopped(delay, &mut control).await {
            return JobEnd::Stopped;
        }
    }
}

/// Returns once the job is asked to stop or finish (or its handle is gone).
async fn stop_requested(control: &mut ControlReceiver) {
    let _ = control
        .wait_for(|c| matches!(c, Control::Stop | Control::Finish))
        .await
        .map(|_| ());
}

/// Sleeps for `delay`; false if the job is told to stop or finish first.
async fn sleep_unless_stopped(delay: Duration, control: &mut ControlReceiver) -> bool {
    tokio::select! {
        biased;
        () = stop_requested(control) => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// Waits while the leader holds its jobs still (it does while cut off from
/// ZooKeeper); true once they may run again, false if told to stop instead.
async fn resumed(control: &mut ControlReceiver) -> bool {
    matches!(control.wait_for(|c| c != Control::Pause).await, Ok(Control::Run))
}
