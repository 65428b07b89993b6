//! The leader's loop: reconcile the jobs that run here against the specs in
//! ZooKeeper, and act on the session's state the way Curator does:
//! disconnected pauses every job until the session is confirmed; expired
//! stops them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use zookeeper_client::{AddWatchMode, EventType, PersistentWatcher, SessionState, StateWatcher};

use super::standby::read_specs;
use crate::ha::{self, Action, Event, Role};
use crate::job::{self, Control, JobEnd, LeaderContext};
use crate::spec::{Desired, JobSpec, JobState, JobStatus};

/// Why the leader loop ended.
#[derive(Debug)]
pub enum LeaderEnd {
    /// Leadership is gone (session expired, latch deleted, a fenced write refused).
    Lost(String),
    /// A signal asked to stop; a connected leader finished its jobs and
    /// released its latch first.
    Shutdown,
}

/// How often the leader re-reads every job spec without a watch event: a
/// safety net, since a spec change triggers a reconcile at once.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);
/// How long spec changes must pause before the leader reconciles them.
const SPEC_QUIET: Duration = Duration::from_millis(20);
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

/// Leads until leadership is lost or a shutdown is asked for. `role` is
/// the leader role just won; every session event and signal goes through
/// [`ha::step`], and this loop only carries out the actions it returns.
pub async fn lead(
    ctx: Arc<LeaderContext>,
    mut role: Role,
    states: &mut StateWatcher,
    shutdown: &mut watch::Receiver<bool>,
) -> LeaderEnd {
    let jobs_dir = ctx.layout.jobs();
    let mut specs = match ctx
        .fence
        .client()
        .watch(&jobs_dir, AddWatchMode::PersistentRecursive)
        .await
    {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!("cannot watch {jobs_dir}, reconciling every {RECONCILE_INTERVAL:?} only: {e}");
            None
        }
    };
    let mut leader = Leader {
        ctx,
        jobs: HashMap::new(),
        mode: Control::Run,
    };
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    loop {
        let event = tokio::select! {
            () = spec_changed(&mut specs, &jobs_dir), if leader.mode == Control::Run => {
                leader.reconcile().await.map(|reason| (Event::Deposed, reason))
            }
            _ = tick.tick(), if leader.mode == Control::Run => {
                leader.reconcile().await.map(|reason| (Event::Deposed, reason))
            }
            state = states.changed() => leader.session_event(state).await,
            _ = shutdown.changed() => Some((Event::ShutdownRequested, "shutdown requested".to_string())),
        };
        let Some((event, why)) = event else { continue };
        let (next, actions) = ha::step(role, event);
        role = next;
        for action in actions {
            match action {
                Action::RunJobs => {}
                Action::PauseJobs => {
                    tracing::warn!("disconnected from ZooKeeper: pausing every job until the session is confirmed");
                    leader.set_mode(Control::Pause);
                }
                Action::ResumeJobs => {
                    tracing::info!("reconnected to ZooKeeper with the session intact: resuming jobs");
                    leader.set_mode(Control::Run);
                }
                Action::StopJobs => leader.stop_all().await,
                Action::FinishJobs => leader.finish_all().await,
                Action::ReleaseLatch => leader.release_latch().await,
                Action::Rejoin => return LeaderEnd::Lost(why),
                Action::Exit => return LeaderEnd::Shutdown,
            }
        }
    }
}

/// Resolves when a job spec (`jobs/<name>` itself, not a job's status or
/// pointer) was created, changed or deleted, once such events pause for
/// [`SPEC_QUIET`]: a burst of deploys costs one reconcile, not one each.
/// Never resolves without a watch.
async fn spec_changed(watch: &mut Option<PersistentWatcher>, jobs_dir: &str) {
    let mut changed = false;
    loop {
        let Some(watcher) = watch else {
            return std::future::pending().await;
        };
        let event = if changed {
            match tokio::time::timeout(SPEC_QUIET, watcher.changed()).await {
                Ok(event) => event,
                Err(_) => return,
            }
        } else {
            watcher.changed().await
        };
        if event.event_type == EventType::Session {
            if event.session_state.is_terminated() {
                // No more events will come; the state watcher ends the leadership.
                *watch = None;
            }
            continue;
        }
        let name = event
            .path
            .strip_prefix(jobs_dir)
            .and_then(|rest| rest.strip_prefix('/'));
        changed |= name.is_some_and(|name| !name.contains('/'));
    }
}

impl Leader {
    fn set_mode(&mut self, mode: Control) {
        self.mode = mode;
        for job in self.jobs.values() {
            job.control.send_replace(mode);
        }
    }

    /// Translates a session state into a role event, with a reason for the log.
    async fn session_event(&self, state: SessionState) -> Option<(Event, String)> {
        match state {
            SessionState::Disconnected => Some((Event::ConnectionLost, "disconnected".into())),
            SessionState::SyncConnected => {
                let latch = self.ctx.fence.latch().path();
                let (latch_held, why) = match self.ctx.fence.client().check_stat(latch).await {
                    Ok(Some(_)) => (true, "reconnected".to_string()),
                    Ok(None) => (false, "the latch node is gone".to_string()),
                    Err(e) => (false, format!("cannot confirm the latch node: {e}")),
                };
                Some((Event::Reconnected { latch_held }, why))
            }
            state if state.is_terminated() => Some((Event::SessionEnded, format!("ZooKeeper session {state:?}"))),
            _ => None,
        }
    }

    /// Deletes our latch node so the next contender leads at once.
    async fn release_latch(&self) {
        tracing::info!(epoch = self.ctx.fence.epoch(), "handing off leadership");
        if let Err(e) = self
            .ctx
            .fence
            .client()
            .delete(self.ctx.fence.latch().path(), None)
            .await
        {
            tracing::warn!("could not delete the latch node, the next leader waits for session expiry: {e}");
        }
    }

    /// Brings the jobs running here in line with the specs. Returns why
    /// this supervisor is deposed, if a fenced write found it so.
    async fn reconcile(&mut self) -> Option<String> {
        if let Some(reason) = self.reap().await {
            return Some(reason);
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
                    return Some(e.to_string());
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
    async fn reap(&mut self) -> Option<String> {
        let ended: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.task.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in ended {
            let job = self.jobs.remove(&name).expect("listed above");
            if let Ok(JobEnd::Deposed) = job.task.await {
                return Some(format!("job {name} found this supervisor deposed"));
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
