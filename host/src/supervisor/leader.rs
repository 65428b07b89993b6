//! The leader's loop: reconcile the jobs that run here against the specs in
//! ZooKeeper, and act on the session's state the way Curator does:
//! disconnected pauses every job until the session is confirmed; expired
//! stops them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use zookeeper_client::{SessionState, StateWatcher};

use super::standby::read_specs;
use crate::job::{self, Control, JobEnd, LeaderContext};
use crate::spec::{Desired, JobSpec, JobState, JobStatus};

/// Why the leader loop ended.
#[derive(Debug)]
pub enum LeaderEnd {
    /// Leadership is gone (session expired, latch deleted, a fenced write refused).
    Lost(String),
    /// A signal asked for a planned handoff; jobs took their final checkpoints.
    Shutdown,
}

/// How often the leader re-reads the job specs.
const RECONCILE_INTERVAL: Duration = Duration::from_millis(500);
/// How long a planned handoff waits for the jobs' final checkpoints.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

struct RunningJob {
    uid: String,
    control: watch::Sender<Control>,
    task: JoinHandle<JobEnd>,
}

struct Leader {
    ctx: Arc<LeaderContext>,
    jobs: HashMap<String, RunningJob>,
    /// What every job is told: Run, or Pause while the session is in doubt.
    mode: Control,
}

/// Leads until leadership is lost or a shutdown is asked for.
pub async fn lead(
    ctx: Arc<LeaderContext>,
    states: &mut StateWatcher,
    shutdown: &mut watch::Receiver<bool>,
) -> LeaderEnd {
    let mut leader = Leader {
        ctx,
        jobs: HashMap::new(),
        mode: Control::Run,
    };
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    let end = loop {
        tokio::select! {
            state = states.changed() => {
                if let Some(end) = leader.on_session(state).await {
                    break end;
                }
            }
            _ = tick.tick(), if leader.mode == Control::Run => {
                if let Some(end) = leader.reconcile().await {
                    break end;
                }
            }
            _ = shutdown.changed() => {
                leader.finish_all().await;
                return LeaderEnd::Shutdown;
            }
        }
    };
    leader.stop_all().await;
    end
}

impl Leader {
    fn set_mode(&mut self, mode: Control) {
        self.mode = mode;
        for job in self.jobs.values() {
            job.control.send_replace(mode);
        }
    }

    async fn on_session(&mut self, state: SessionState) -> Option<LeaderEnd> {
        match state {
            SessionState::Disconnected => {
                tracing::warn!("disconnected from ZooKeeper: pausing every job until the session is confirmed");
                self.set_mode(Control::Pause);
                None
            }
            SessionState::SyncConnected => {
                let latch = self.ctx.fence.latch().path().to_string();
                match self.ctx.fence.client().check_stat(&latch).await {
                    Ok(Some(_)) => {
                        tracing::info!("reconnected to ZooKeeper with the session intact: resuming jobs");
                        self.set_mode(Control::Run);
                        None
                    }
                    Ok(None) => Some(LeaderEnd::Lost("the latch node is gone".into())),
                    Err(e) => Some(LeaderEnd::Lost(format!("cannot confirm the latch node: {e}"))),
                }
            }
            state if state.is_terminated() => Some(LeaderEnd::Lost(format!("ZooKeeper session {state:?}"))),
            _ => None,
        }
    }

    /// Brings the jobs running here in line with the specs.
    async fn reconcile(&mut self) -> Option<LeaderEnd> {
        if let Some(end) = self.reap().await {
            return Some(end);
        }
        let specs = read_specs(self.ctx.fence.client(), &self.ctx.layout).await;
        let wanted: HashMap<&str, &JobSpec> = specs
            .iter()
            .filter(|s| s.desired == Desired::Running)
            .map(|s| (s.name.as_str(), s))
            .collect();

        let unwanted: Vec<String> = self
            .jobs
            .iter()
            .filter(|(name, job)| wanted.get(name.as_str()).is_none_or(|spec| spec.uid != job.uid))
            .map(|(name, _)| name.clone())
            .collect();
        for name in unwanted {
            self.stop(&name).await;
            tracing::info!(job = %name, "job cancelled");
        }
        for spec in specs.iter().filter(|s| s.desired == Desired::Cancelled) {
            if self
                .status(&spec.name)
                .await
                .is_some_and(|s| s.state != JobState::Canceled)
            {
                if let Err(e) = self.ctx.write_status(&spec.name, JobState::Canceled, 0, None).await {
                    return Some(LeaderEnd::Lost(e.to_string()));
                }
            }
        }
        for (name, spec) in wanted {
            if !self.jobs.contains_key(name) {
                let status = self.status(name).await;
                if status.as_ref().is_some_and(|s| s.state == JobState::Failed) {
                    continue;
                }
                let restarts = status.map_or(0, |s| s.restarts);
                let (control, watch) = watch::channel(self.mode);
                let task = job::spawn(self.ctx.clone(), spec.clone(), restarts, watch);
                self.jobs.insert(
                    name.to_string(),
                    RunningJob {
                        uid: spec.uid.clone(),
                        control,
                        task,
                    },
                );
            }
        }
        None
    }

    async fn status(&self, name: &str) -> Option<JobStatus> {
        let (data, _) = self
            .ctx
            .fence
            .client()
            .get_data(&self.ctx.layout.job_status(name))
            .await
            .ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Collects jobs whose tasks ended on their own; a deposed one ends the leadership.
    async fn reap(&mut self) -> Option<LeaderEnd> {
        let ended: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.task.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in ended {
            let job = self.jobs.remove(&name).expect("listed above");
            if let Ok(JobEnd::Deposed) = job.task.await {
                return Some(LeaderEnd::Lost(format!("job {name} found this supervisor deposed")));
            }
        }
        None
    }

    async fn stop(&mut self, name: &str) {
        if let Some(job) = self.jobs.remove(name) {
            job.control.send_replace(Control::Stop);
            let _ = job.task.await;
        }
    }

    async fn stop_all(&mut self) {
        self.set_mode(Control::Stop);
        for (_, job) in self.jobs.drain() {
            let _ = job.task.await;
        }
    }

    /// Planned handoff: every job takes a final checkpoint and publishes it.
    async fn finish_all(&mut self) {
        self.set_mode(Control::Finish);
        let tasks: Vec<_> = self.jobs.drain().map(|(_, job)| (job.control, job.task)).collect();
        for (control, task) in tasks {
            if tokio::time::timeout(FINISH_TIMEOUT, task).await.is_err() {
                control.send_replace(Control::Stop);
            }
        }
    }
}
