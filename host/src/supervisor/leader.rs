//! The leader's loop: reconcile the jobs that run here against the specs in
//! ZooKeeper, and act on the session's state the way Curator does:
//! disconnected pauses every job until the session is confirmed; expired
//! stops them all.
//!
//! The loop never waits on long work, so a session event is acted on at
//! once: stopping a job only tells it to stop, and the job is collected
//! once it has. Only a fenced refusal deposes this leader; a read or write
//! that fails for any other reason changes nothing and is tried again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zookeeper_client as zkc;

use super::standby::read_specs;
use crate::coord::{unanswered, SessionEvents, SessionState};
use crate::ha::{self, Action, Event, Role};
use crate::job::{self, control, AttemptError, Control, ControlSender, Deployment, JobEnd, LeaderContext};
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
/// How soon a reconnected leader asks again whether its latch node exists
/// when ZooKeeper did not answer (its jobs stay paused meanwhile).
const LATCH_CHECK_RETRY: Duration = Duration::from_millis(100);
/// How long a planned handoff waits for the jobs' final checkpoints.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

struct RunningJob {
    /// The uid of its deployment.
    uid: String,
    /// The version of its spec it runs: any other means cancelled or deployed again.
    version: i32,
    control: ControlSender,
    task: JoinHandle<JobEnd>,
}

struct Leader {
    ctx: Arc<LeaderContext>,
    /// Jobs running here, by name (ordered, so every pass goes the same way).
    jobs: BTreeMap<String, RunningJob>,
    /// Jobs told to stop that have not yet, each awaited by a task of its
    /// own that reports on `stopped`: none of the same name starts until
    /// its predecessor has, or both would write one sink.
    stopping: BTreeMap<String, JoinHandle<()>>,
    stopped: mpsc::UnboundedSender<(String, JobEnd)>,
    /// What every job is told: Run, or Pause while the session is in doubt.
    mode: Control,
}

/// This leader was found deposed, and why.
struct Deposed(String);

/// Leads until leadership is lost or a shutdown is asked for. `role` is
/// the leader role just won; every session event and signal goes through
/// [`ha::step`], and this loop only carries out the actions it returns.
pub async fn lead(
    ctx: Arc<LeaderContext>,
    mut role: Role,
    events: &mut SessionEvents,
    shutdown: &mut watch::Receiver<bool>,
) -> LeaderEnd {
    let jobs_dir = ctx.layout.jobs();
    let spec_events = match ctx.fence.session().watch_tree(&jobs_dir).await {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!("cannot watch {jobs_dir}, reconciling every {RECONCILE_INTERVAL:?} only: {e}");
            None
        }
    };
    let mut specs = SpecWatch {
        events: spec_events,
        jobs_dir,
        due: None,
    };
    let (stopped, mut stops) = mpsc::unbounded_channel();
    let mut leader = Leader {
        ctx,
        jobs: BTreeMap::new(),
        stopping: BTreeMap::new(),
        stopped,
        mode: Control::Run,
    };
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    // A reconnection whose latch check went unanswered, to check again then.
    let mut recheck: Option<Instant> = None;
    loop {
        // Biased, session first: a disconnection is acted on before anything else.
        let event = tokio::select! {
            biased;
            state = events.changed() => {
                let event = leader.session_event(state).await;
                recheck = (state == SessionState::SyncConnected && event.is_none())
                    .then(|| Instant::now() + LATCH_CHECK_RETRY);
                event
            }
            _ = tokio::time::sleep_until(recheck.unwrap_or_else(Instant::now)), if recheck.is_some() => {
                let event = leader.session_event(SessionState::SyncConnected).await;
                recheck = event.is_none().then(|| Instant::now() + LATCH_CHECK_RETRY);
                event
            }
            _ = shutdown.changed() => Some((Event::ShutdownRequested, "shutdown requested".to_string())),
            Some((name, end)) = stops.recv() => {
                leader.stopping.remove(&name);
                if end == JobEnd::Deposed {
                    Some((Event::Deposed, format!("job {name} found this supervisor deposed")))
                } else if leader.mode == Control::Run {
                    // Its successor may start now, or its cancellation be confirmed.
                    leader.reconcile().await.err().map(|Deposed(reason)| (Event::Deposed, reason))
                } else {
                    None
                }
            }
            () = specs.changed(), if leader.mode == Control::Run => {
                leader.reconcile().await.err().map(|Deposed(reason)| (Event::Deposed, reason))
            }
            _ = tick.tick(), if leader.mode == Control::Run => {
                leader.reconcile().await.err().map(|Deposed(reason)| (Event::Deposed, reason))
            }
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

/// The watch on the job specs, and a change heard but not yet acted on:
/// kept here, across the loop's turns, because the loop's select drops the
/// waiting future whenever another branch wins.
struct SpecWatch {
    events: Option<mpsc::UnboundedReceiver<String>>,
    jobs_dir: String,
    /// When the last spec change heard is quiet enough to act on.
    due: Option<Instant>,
}

impl SpecWatch {
    /// Resolves once a job spec (`jobs/<name>` itself, not a status or a
    /// pointer, which change with every checkpoint) was created, changed or
    /// deleted and no other spec changed for [`SPEC_QUIET`]: a burst of
    /// deploys costs one reconcile, not one each. Never resolves without a watch.
    ///
    /// Cancel-safe.
    async fn changed(&mut self) {
        loop {
            let Some(events) = &mut self.events else {
                return std::future::pending().await;
            };
            let event = match self.due {
                Some(due) => match tokio::time::timeout_at(due, events.recv()).await {
                    Ok(event) => event,
                    Err(_) => {
                        self.due = None;
                        return;
                    }
                },
                None => events.recv().await,
            };
            let Some(path) = event else {
                // The session ended: no more events will come, and the
                // session's own state ends the leadership.
                self.events = None;
                continue;
            };
            let name = path
                .strip_prefix(&self.jobs_dir)
                .and_then(|rest| rest.strip_prefix('/'));
            if name.is_some_and(|name| !name.contains('/')) {
                self.due = Some(Instant::now() + SPEC_QUIET);
            }
        }
    }
}

impl Leader {
    fn set_mode(&mut self, mode: Control) {
        self.mode = mode;
        for job in self.jobs.values() {
            job.control.send_replace(mode);
        }
    }

    /// Translates a session state into a role event, with a reason for the
    /// log. A reconnection whose latch check ZooKeeper does not answer is
    /// no event yet (`None`): one unanswered read is no reason to give up a
    /// leadership, and the jobs stay paused until the check is answered.
    async fn session_event(&self, state: SessionState) -> Option<(Event, String)> {
        super::note_connection(&self.ctx.metrics, state);
        match state {
            SessionState::Disconnected => Some((Event::ConnectionLost, "disconnected".into())),
            SessionState::SyncConnected => {
                let (latch_held, why) = match self.ctx.fence.session().exists(self.ctx.fence.latch()).await {
                    Ok(true) => (true, "reconnected".to_string()),
                    Ok(false) => (false, "the latch node is gone".to_string()),
                    Err(e) if unanswered(&e) => {
                        tracing::warn!("reconnected, but the latch check went unanswered: {e}; asking again");
                        return None;
                    }
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
        if let Err(e) = self.ctx.fence.session().delete(self.ctx.fence.latch()).await {
            tracing::warn!("could not delete the latch node, the next leader waits for session expiry: {e}");
        }
    }

    /// Brings the jobs running here in line with the specs. Fails only if
    /// a fenced write found this supervisor deposed; anything else that
    /// fails is logged and tried again at the next pass.
    async fn reconcile(&mut self) -> Result<(), Deposed> {
        self.reap().await?;
        let specs = match read_specs(self.ctx.fence.session(), &self.ctx.layout).await {
            Ok(specs) => specs,
            Err(e) => {
                tracing::warn!("cannot read the job specs, changing nothing until they read: {e}");
                return Ok(());
            }
        };
        let wanted: BTreeMap<&str, (&JobSpec, i32)> = specs
            .iter()
            .filter(|(s, _)| s.desired == Desired::Running)
            .map(|(s, version)| (s.name.as_str(), (s, *version)))
            .collect();

        let unwanted: Vec<String> = self
            .jobs
            .iter()
            .filter(|(name, job)| {
                wanted
                    .get(name.as_str())
                    .is_none_or(|(_, version)| *version != job.version)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in unwanted {
            if wanted
                .get(name.as_str())
                .is_some_and(|(spec, _)| spec.uid != self.jobs[&name].uid)
            {
                tracing::info!(job = %name, "job deployed again: stopping its previous deployment");
            } else {
                tracing::info!(job = %name, "job cancelled: stopping it");
            }
            self.stop(&name);
        }
        for (spec, version) in specs.iter().filter(|(s, _)| s.desired == Desired::Canceled) {
            if self.stopping.contains_key(&spec.name) {
                continue;
            }
            match self.status(&spec.name).await {
                Ok(Some(status)) if status.state == JobState::Canceled => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job = %spec.name, "cannot read the job's status, trying again later: {e}");
                    continue;
                }
            }
            let cancelled = Deployment {
                spec: spec.clone(),
                version: *version,
            };
            match self.ctx.write_status(&cancelled, JobState::Canceled, 0, None).await {
                Ok(()) => tracing::info!(job = %spec.name, "job cancelled and stopped"),
                Err(AttemptError::Deposed) => return Err(Deposed("a fenced status write was refused".into())),
                Err(e) => tracing::warn!(job = %spec.name, "cannot mark the job cancelled, trying again later: {e}"),
            }
        }
        // `weir deploy` refuses a file another job writes, but two deploys
        // can race: the earlier deployed keeps the file.
        let mut sink_owners: BTreeMap<&str, &JobSpec> = BTreeMap::new();
        for (spec, _) in wanted.values() {
            for path in spec.sink_files() {
                let owner = sink_owners.entry(path).or_insert(spec);
                if (spec.created_ms, &spec.name) < (owner.created_ms, &owner.name) {
                    *owner = spec;
                }
            }
        }
        for (name, (spec, version)) in wanted {
            if self.jobs.contains_key(name) || self.stopping.contains_key(name) {
                continue;
            }
            let restarts = match self.status(name).await {
                Ok(Some(status)) if status.state == JobState::Failed => continue,
                Ok(status) => status.map_or(0, |s| s.restarts),
                Err(e) => {
                    tracing::warn!(job = %name, "cannot read the job's status, starting it later: {e}");
                    continue;
                }
            };
            let deployment = Deployment {
                spec: spec.clone(),
                version,
            };
            let taken = spec
                .sink_files()
                .filter_map(|path| sink_owners.get(path).map(|owner| (path, owner.name.as_str())))
                .find(|(_, owner)| *owner != name);
            if let Some((path, owner)) = taken {
                let why = format!(
                    "its file {path} is also written by job `{owner}`; cancel it and deploy it again with another file"
                );
                tracing::error!(job = %name, "not starting the job: {why}");
                match self
                    .ctx
                    .write_status(&deployment, JobState::Failed, restarts, Some(why))
                    .await
                {
                    Err(AttemptError::Deposed) => return Err(Deposed("a fenced status write was refused".into())),
                    Err(e) => tracing::warn!(job = %name, "cannot mark the job failed, trying again later: {e}"),
                    Ok(()) => {}
                }
                continue;
            }
            let (control, receiver) = control::channel(self.mode);
            let task = job::spawn(self.ctx.clone(), deployment, restarts, receiver);
            let job = RunningJob {
                uid: spec.uid.clone(),
                version,
                control,
                task,
            };
            self.jobs.insert(name.to_string(), job);
        }
        Ok(())
    }

    /// A job's status; `None` if it has none (or an unreadable one).
    async fn status(&self, name: &str) -> Result<Option<JobStatus>, zkc::Error> {
        match self
            .ctx
            .fence
            .session()
            .get_data(&self.ctx.layout.job_status(name))
            .await
        {
            Ok((data, _)) => Ok(serde_json::from_slice(&data).ok()),
            Err(zkc::Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Collects jobs whose tasks ended on their own; a deposed one ends the leadership.
    async fn reap(&mut self) -> Result<(), Deposed> {
        let ended: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.task.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        let mut deposed = Ok(());
        for name in ended {
            let job = self.jobs.remove(&name).expect("listed above");
            if let Ok(JobEnd::Deposed) = job.task.await {
                deposed = Err(Deposed(format!("job {name} found this supervisor deposed")));
            }
        }
        deposed
    }

    /// Tells a job to stop, without waiting: the loop hears on `stopped`
    /// once it has.
    fn stop(&mut self, name: &str) {
        if let Some(job) = self.jobs.remove(name) {
            job.control.send_replace(Control::Stop);
            let (stopped, name) = (self.stopped.clone(), name.to_string());
            let waiter = tokio::spawn({
                let name = name.clone();
                async move {
                    let end = job.task.await.unwrap_or(JobEnd::Stopped);
                    let _ = stopped.send((name, end));
                }
            });
            self.stopping.insert(name, waiter);
        }
    }

    /// Stops every job at once and waits until all have.
    async fn stop_all(&mut self) {
        self.set_mode(Control::Stop);
        let tasks = std::mem::take(&mut self.jobs).into_values().map(|job| job.task);
        futures::future::join_all(tasks).await;
        futures::future::join_all(std::mem::take(&mut self.stopping).into_values()).await;
    }

    /// Planned handoff: every job takes a final checkpoint and publishes it;
    /// any that has not within [`FINISH_TIMEOUT`] is stopped.
    async fn finish_all(&mut self) {
        self.set_mode(Control::Finish);
        let jobs = std::mem::take(&mut self.jobs);
        let (controls, tasks): (Vec<_>, Vec<_>) = jobs.into_values().map(|job| (job.control, job.task)).unzip();
        let stopping = std::mem::take(&mut self.stopping).into_values();
        let all = async {
            futures::future::join_all(tasks).await;
            futures::future::join_all(stopping).await;
        };
        if tokio::time::timeout(FINISH_TIMEOUT, all).await.is_err() {
            tracing::warn!("jobs did not finish within {FINISH_TIMEOUT:?}; stopping them");
            for control in controls {
                control.send_replace(Control::Stop);
            }
        }
    }
}
