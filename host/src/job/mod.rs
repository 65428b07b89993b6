//! Running one job on the leader: attempts that restore from the latest
//! readable checkpoint, a batch loop that takes barriers between batches, and
//! a committer that makes each barrier a checkpoint (storage, then the fenced
//! pointer, then the sink). A failed attempt restarts with a backoff; one
//! that ZooKeeper left unanswered resumes once it answers, spending no
//! restart. Neither ever affects another job.

mod attempt;
mod committer;
mod runner;

pub use attempt::load_module;
pub use runner::MAX_BATCH;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ha::{Fence, Layout};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::spec::{JobSpec, JobState, JobStatus};
use crate::storage::Storage;

/// What the leader wants a running job to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Process and checkpoint.
    Run,
    /// Hold still: ZooKeeper is unreachable and we may no longer lead.
    Pause,
    /// Stop now, committing nothing more.
    Stop,
    /// Take a final checkpoint, commit and publish it, then stop (planned handoff).
    Finish,
}

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
    /// The wasm runtime.
    pub runtime: Runtime,
    /// This supervisor's id, recorded in job statuses.
    pub supervisor_id: String,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
}

impl LeaderContext {
    /// Writes a job's status, fenced. A deposed leader's write is refused.
    pub async fn write_status(
        &self,
        job: &str,
        state: JobState,
        restarts: u32,
        error: Option<String>,
    ) -> Result<(), crate::ha::FenceError> {
        let status = JobStatus {
            state,
            supervisor: (state != JobState::Canceled).then(|| self.supervisor_id.clone()),
            epoch: self.fence.epoch(),
            restarts,
            error,
            since_ms: crate::ha::now_ms(),
        };
        let data = serde_json::to_vec(&status).expect("status serializes");
        self.fence
            .set(&self.layout.job_status(job), &data, None)
            .await
            .map(drop)
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
    spec: JobSpec,
    restarts: u32,
    control: watch::Receiver<Control>,
) -> JoinHandle<JobEnd> {
    tokio::spawn(supervise(ctx, spec, restarts, control))
}

async fn supervise(
    ctx: Arc<LeaderContext>,
    spec: JobSpec,
    mut restarts: u32,
    mut control: watch::Receiver<Control>,
) -> JobEnd {
    let mut streak = 0;
    loop {
        let started = Instant::now();
        let error = match attempt::run(&ctx, &spec, restarts, control.clone()).await {
            Ok(end) => return end,
            Err(attempt::AttemptError::Deposed) => return JobEnd::Deposed,
            Err(attempt::AttemptError::Interrupted(error)) => {
                tracing::warn!(
                    job = %spec.name,
                    "attempt interrupted, ZooKeeper did not answer: {error}; resuming from the last \
                     checkpoint once it does (no restart counted)"
                );
                if !sleep_unless_stopped(INTERRUPTED_RETRY, &mut control).await || !resumed(&mut control).await {
                    return JobEnd::Stopped;
                }
                continue;
            }
            Err(attempt::AttemptError::Failed(error)) => error,
        };
        streak = if started.elapsed() >= HEALTHY_RUN {
            1
        } else {
            streak + 1
        };
        let Some(delay) = spec.restart.delay(restarts + 1, streak) else {
            tracing::error!(job = %spec.name, restarts, strategy = %spec.restart, "job failed for good: {error}");
            return match ctx
                .write_status(&spec.name, JobState::Failed, restarts, Some(error))
                .await
            {
                Err(crate::ha::FenceError::Deposed) => JobEnd::Deposed,
                _ => JobEnd::Failed,
            };
        };
        restarts += 1;
        ctx.metrics
            .job(&spec.name)
            .restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(job = %spec.name, restarts, "attempt failed: {error}; restarting from the last checkpoint in {delay:?}");
        if let Err(crate::ha::FenceError::Deposed) = ctx
            .write_status(&spec.name, JobState::Restarting, restarts, Some(error))
            .await
        {
            return JobEnd::Deposed;
        }
        if !sleep_unless_stopped(delay, &mut control).await {
            return JobEnd::Stopped;
        }
    }
}

/// Returns once the job is asked to stop or finish (or its handle is gone).
async fn stop_requested(control: &mut watch::Receiver<Control>) {
    let _ = control
        .wait_for(|c| matches!(c, Control::Stop | Control::Finish))
        .await
        .map(|_| ());
}

/// Sleeps for `delay`; false if the job is told to stop or finish first.
async fn sleep_unless_stopped(delay: Duration, control: &mut watch::Receiver<Control>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = stop_requested(control) => false,
    }
}

/// Waits while the leader holds its jobs still (it does while cut off from
/// ZooKeeper); true once they may run again, false if told to stop instead.
async fn resumed(control: &mut watch::Receiver<Control>) -> bool {
    matches!(
        control.wait_for(|c| *c != Control::Pause).await.map(|c| *c),
        Ok(Control::Run)
    )
}
