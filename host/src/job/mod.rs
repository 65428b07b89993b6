//! Running one job on the leader: attempts that restore from the latest
//! readable checkpoint, a batch loop that takes barriers between batches, and
//! a committer that makes each barrier a checkpoint (storage, then the fenced
//! pointer, then the sink). A failed attempt restarts with a backoff; one
//! that ZooKeeper left unanswered resumes once it answers, spending no
//! restart. Neither ever affects another job.

mod attempt;
mod committer;
pub mod control;
mod error;
mod executor;
mod runner;
mod watermark;

pub use control::{Control, ControlReceiver, ControlSender};
pub use error::AttemptError;
pub use executor::{BatchLoop, Executor, LoopEnded, WasmExecutor};
pub use runner::{Barrier, RunEnd, MAX_BATCH};

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::coord::{FenceError, FencedOp};
use crate::ha::{Fence, Layout};
use crate::metrics::Metrics;
use crate::spec::{JobSpec, JobState, JobStatus};
use crate::storage::Storage;

/// How a job's task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// Stopped on request.
    Stopped,
    /// Finished after a final checkpoint.
    Finished,
    /// A fenced write found this supervisor deposed.
    Deposed,
    /// The restart strategy gave up; the job is marked FAILED.
    Failed,
}

/// What every job on this leader shares.
#[derive(Clone)]
pub struct LeaderContext {
    /// Write access for this leadership term.
    pub fence: Fence,
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
}

/// One deployment of a job, as this leader runs it: its spec and the
/// version of the spec's znode it was read at. Every write for it is
/// guarded by that version as well as by the leader's latch, so once the
/// job is cancelled or deployed again (each changes the spec) nothing it
/// still has in flight can land, not even a pointer or a status.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The spec.
    pub spec: JobSpec,
    /// The version of `jobs/<name>` it was read at.
    pub version: i32,
}

impl LeaderContext {
    /// Carries out `ops` for `deployment`, if this supervisor still leads
    /// and the deployment is still the one its spec names; returns the
    /// version of each node written or checked.
    pub async fn write_job(&self, deployment: &Deployment, ops: &[FencedOp<'_>]) -> Result<Vec<i32>, AttemptError> {
        let spec = self.layout.job(&deployment.spec.name);
        let guard = FencedOp::Check {
            path: &spec,
            version: deployment.version,
        };
        let guarded: Vec<FencedOp<'_>> = std::iter::once(guard).chain(ops.iter().copied()).collect();
        match self.fence.write(&guarded).await {
            Ok(versions) => Ok(versions[1..].to_vec()),
            Err(FenceError::Conflict { path, .. }) if path == spec => Err(AttemptError::Superseded),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a deployment's status, fenced and guarded like [`LeaderContext::write_job`].
    pub async fn write_status(
        &self,
        deployment: &Deployment,
        state: JobState,
        restarts: u32,
        error: Option<String>,
    ) -> Result<(), AttemptError> {
        let status = JobStatus {
            state,
            supervisor: (state != JobState::Canceled).then(|| self.supervisor_id.clone()),
            epoch: self.fence.epoch(),
            restarts,
            error,
            since_ms: crate::clock::now_ms(),
        };
        let data = serde_json::to_vec(&status).expect("status serializes");
        let path = self.layout.job_status(&deployment.spec.name);
        let op = FencedOp::Set {
            path: &path,
            data: &data,
            expected: None,
        };
        self.write_job(deployment, &[op]).await.map(drop)
    }
}

/// An attempt that lasted this long ends a streak of failures (resetting
/// an exponential backoff).
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// How long a job interrupted by ZooKeeper waits before it tries again (then
/// also until the leader resumes its jobs): long enough not to hammer a
/// server that answers nothing, short next to a session timeout.
const INTERRUPTED_RETRY: Duration = Duration::from_millis(100);

/// Starts a job's task; it runs attempts until told to stop, deposed, or
/// its restart strategy gives up.
pub fn spawn(
    ctx: Arc<LeaderContext>,
    deployment: Deployment,
    restarts: u32,
    control: ControlReceiver,
) -> JoinHandle<JobEnd> {
    tokio::spawn(supervise(ctx, deployment, restarts, control))
}

async fn supervise(
    ctx: Arc<LeaderContext>,
    deployment: Deployment,
    mut restarts: u32,
    mut control: ControlReceiver,
) -> JobEnd {
    let spec = &deployment.spec;
    let mut streak = 0;
    loop {
        let started = Instant::now();
        let error = match attempt::run(&ctx, &deployment, restarts, control.clone()).await {
            Ok(end) => return end,
            Err(AttemptError::Deposed) => return JobEnd::Deposed,
            Err(AttemptError::Superseded) => {
                tracing::info!(job = %spec.name, "the job was cancelled or deployed again: this deployment stops");
                return JobEnd::Stopped;
            }
            Err(AttemptError::Interrupted(error)) => {
                tracing::warn!(
                    job = %spec.name,
                    "attempt interrupted, ZooKeeper did not answer: {error:#}; resuming from the last \
                     checkpoint once it does (no restart counted)"
                );
                if !sleep_unless_stopped(INTERRUPTED_RETRY, &mut control).await || !resumed(&mut control).await {
                    return JobEnd::Stopped;
                }
                continue;
            }
            Err(AttemptError::Failed(error)) => format!("{error:#}"),
        };
        streak = if started.elapsed() >= HEALTHY_RUN {
            1
        } else {
            streak + 1
        };
        let Some(delay) = spec.restart.delay(restarts + 1, streak) else {
            tracing::error!(job = %spec.name, restarts, strategy = %spec.restart, "job failed for good: {error}");
            return match ctx
                .write_status(&deployment, JobState::Failed, restarts, Some(error))
                .await
            {
                Err(AttemptError::Deposed) => JobEnd::Deposed,
                _ => JobEnd::Failed,
            };
        };
        restarts += 1;
        ctx.metrics.job(&spec.name).restarts.inc();
        tracing::warn!(job = %spec.name, restarts, "attempt failed: {error}; restarting from the last checkpoint in {delay:?}");
        match ctx
            .write_status(&deployment, JobState::Restarting, restarts, Some(error))
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
