//! The worker: runs the tasks whose assignment names this supervisor's
//! worker node, and stops those that no longer do. Every supervisor is
//! one, the leader included.
//!
//! Stopping a task only tells it to stop, and the task is collected once
//! it says it has ended; a pass's reads and writes are cut short by the
//! session loop on any change of the session's state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zookeeper_client as zkc;

use super::standby::read_specs;
use crate::coord::read_all;
use crate::ha::assign::Handoff;
use crate::ha::Assignment;
use crate::job::{self, control, AttemptError, Control, ControlSender, JobEnd, Task, WorkerContext};
use crate::spec::{Desired, JobSpec, JobState, JobStatus, Share};

/// A task by job name and index.
pub type TaskKey = (String, u32);

/// Whether the leader asked `task`'s current assignment to hand it off.
async fn handoff_asked(ctx: &WorkerContext, task: &Task) -> bool {
    let path = ctx.layout.task_handoff(&task.spec.name, task.share.index);
    match ctx.session.get_data(&path).await {
        Ok((data, _)) => serde_json::from_slice::<Handoff>(&data).is_ok_and(|h| h.generation == task.generation),
        Err(_) => false,
    }
}

/// How long a planned handoff waits for the tasks' final checkpoints.
const FINISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

struct RunningTask {
    /// What it was started as: any other spec or assignment version means
    /// cancelled, deployed again or moved.
    task: Task,
    control: ControlSender,
    handle: JoinHandle<JobEnd>,
    /// Which start of the task this is: its end says so.
    id: u64,
    /// The leader asked for a handoff: the task is finishing, and says
    /// RELEASED once its final checkpoint is published.
    handing_off: bool,
}

/// A task's write found this worker's node gone.
pub struct Unregistered(pub String);

/// The tasks running here.
pub struct Worker {
    ctx: Arc<WorkerContext>,
    /// The worker node's name (the last segment of `ctx.node`).
    node: String,
    /// Tasks running here (ordered, so every pass goes the same way).
    tasks: BTreeMap<TaskKey, RunningTask>,
    /// Tasks told to stop that have not yet: none of the same key starts
    /// until its predecessor has, or both would write one sink.
    stopping: BTreeMap<TaskKey, (u64, JoinHandle<JobEnd>)>,
    /// Tasks handed off whose release is yet to be written.
    releasing: BTreeMap<TaskKey, Task>,
    /// Where every task says it ended, so the loop collects it at once (a
    /// handoff's release, a successor's start) rather than at its next pass.
    ended: mpsc::UnboundedSender<(TaskKey, u64, JobEnd)>,
    /// The id the next task started gets.
    next_id: u64,
    /// What every task is told: Run, or Pause while the session is in doubt.
    mode: Control,
}

impl Worker {
    /// A worker with no tasks yet; tasks that stop are reported on the receiver.
    pub fn new(ctx: Arc<WorkerContext>, mode: Control) -> (Worker, mpsc::UnboundedReceiver<(TaskKey, u64, JobEnd)>) {
        let node = ctx.node.rsplit('/').next().unwrap_or_default().to_string();
        let (ended, ends) = mpsc::unbounded_channel();
        let worker = Worker {
            ctx,
            node,
            tasks: BTreeMap::new(),
            stopping: BTreeMap::new(),
            releasing: BTreeMap::new(),
            ended,
            next_id: 0,
            mode,
        };
        (worker, ends)
    }

    /// Tells every task what to do (one handing off goes on finishing
    /// where the others run).
    pub fn set_mode(&mut self, mode: Control) {
        self.mode = mode;
        for task in self.tasks.values() {
            let told = match mode {
                Control::Run if task.handing_off => Control::Finish,
                mode => mode,
            };
            task.control.send_replace(told);
        }
    }

    /// Hears that start `id` of a task ended, and collects it (the end is
    /// sent as the task's last act, so its handle resolves at once); a
    /// deposed one means the worker node is gone.
    pub async fn ended(&mut self, key: &TaskKey, id: u64, end: &JobEnd) -> Result<(), Unregistered> {
        if self.stopping.get(key).is_some_and(|(started, _)| *started == id) {
            let (_, handle) = self.stopping.remove(key).expect("just seen");
            let _ = handle.await;
        } else if self.tasks.get(key).is_some_and(|t| t.id == id) {
            let task = self.tasks.remove(key).expect("just seen");
            let _ = task.handle.await;
            if *end == JobEnd::Finished && task.handing_off {
                self.releasing.insert(key.clone(), task.task);
            }
        }
        if *end == JobEnd::Deposed {
            return Err(Unregistered(format!(
                "task {}/{} found the worker node gone",
                key.0, key.1
            )));
        }
        Ok(())
    }

    /// Brings the tasks running here in line with the assignments. Fails
    /// only if a fenced write found this worker's node gone; anything else
    /// that fails is logged and tried again at the next pass.
    pub async fn reconcile(&mut self) -> Result<(), Unregistered> {
        // Removed by a peer that took this process for dead, the session
        // lives on, but nothing would assign it a task again.
        if let Ok(false) = self.ctx.session.exists(&self.ctx.node).await {
            return Err(Unregistered("the worker node was removed by a peer".into()));
        }
        self.reap().await?;
        self.release().await?;
        let session = self.ctx.session.as_ref();
        let specs = match read_specs(session, &self.ctx.layout).await {
            Ok(specs) => specs,
            Err(e) => {
                tracing::warn!("cannot read the job specs, changing nothing until they read: {e}");
                return Ok(());
            }
        };
        let mut wanted: BTreeMap<TaskKey, Task> = BTreeMap::new();
        let mut cancelled: Vec<Task> = Vec::new();
        for (spec, version) in &specs {
            let mine = match self.assigned_here(spec, *version).await {
                Ok(mine) => mine,
                Err(e) => {
                    tracing::warn!(job = %spec.name, "cannot read the job's tasks, changing nothing for it: {e}");
                    // What runs keeps running until they read.
                    for (key, running) in self.tasks.range((spec.name.clone(), 0)..=(spec.name.clone(), u32::MAX)) {
                        wanted.insert(key.clone(), running.task.clone());
                    }
                    continue;
                }
            };
            for (task, current) in mine {
                if spec.desired == Desired::Running && current {
                    wanted.insert((spec.name.clone(), task.share.index), task);
                } else {
                    cancelled.push(task);
                }
            }
        }
        let unwanted: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(key, running)| {
                wanted
                    .get(*key)
                    .is_none_or(|t| (t.version, t.assignment) != (running.task.version, running.task.assignment))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in unwanted {
            tracing::info!(task = %self.tasks[&key].task.label(), "task cancelled, deployed again or moved: stopping it here");
            self.stop(&key);
        }
        for task in cancelled {
            let key = (task.spec.name.clone(), task.share.index);
            if self.tasks.contains_key(&key) || self.stopping.contains_key(&key) {
                continue;
            }
            self.confirm_cancelled(&task).await?;
        }
        // Whether the leader asked a handoff of each task running here.
        let asked: Vec<&Task> = wanted
            .iter()
            .filter(|(key, _)| self.tasks.get(*key).is_some_and(|r| !r.handing_off))
            .map(|(_, task)| task)
            .collect();
        let answers = read_all(&asked, |task| handoff_asked(&self.ctx, task).boxed()).await;
        let asked: BTreeSet<TaskKey> = asked
            .iter()
            .zip(answers)
            .filter(|(_, asked)| *asked)
            .map(|(task, _)| (task.spec.name.clone(), task.share.index))
            .collect();
        for (key, task) in wanted {
            if let Some(running) = self.tasks.get_mut(&key) {
                if !running.handing_off && asked.contains(&key) {
                    tracing::info!(task = %task.label(), "handing the task off: a final checkpoint, then release");
                    running.handing_off = true;
                    if self.mode == Control::Run {
                        running.control.send_replace(Control::Finish);
                    }
                }
                continue;
            }
            if self.stopping.contains_key(&key) || self.releasing.contains_key(&key) {
                continue;
            }
            let restarts = match self.status(&task).await {
                Ok(Some(status))
                    if status.epoch == task.generation
                        && matches!(status.state, JobState::Failed | JobState::Released) =>
                {
                    continue
                }
                Ok(status) => status.map_or(0, |s| s.restarts),
                Err(e) => {
                    tracing::warn!(task = %task.label(), "cannot read the task's status, starting it later: {e}");
                    continue;
                }
            };
            let (control, receiver) = control::channel(self.mode);
            let (ctx, ended, run) = (self.ctx.clone(), self.ended.clone(), task.clone());
            let id = self.next_id;
            self.next_id += 1;
            let handle = tokio::spawn({
                let key = key.clone();
                async move {
                    let end = job::supervise(ctx, run, restarts, receiver).await;
                    let _ = ended.send((key, id, end.clone()));
                    end
                }
            });
            let running = RunningTask {
                task,
                control,
                handle,
                id,
                handing_off: false,
            };
            self.tasks.insert(key, running);
        }
        Ok(())
    }

    /// The tasks of `spec`'s job assigned to this worker node, with
    /// whether they belong to its current deployment; none of it if the
    /// job has failed for good.
    async fn assigned_here(&self, spec: &JobSpec, version: i32) -> Result<Vec<(Task, bool)>, zkc::Error> {
        let session = self.ctx.session.as_ref();
        let layout = &self.ctx.layout;
        if spec.desired == Desired::Running {
            match session.get_data(&layout.job_status(&spec.name)).await {
                Ok((data, _)) => {
                    if serde_json::from_slice::<JobStatus>(&data).is_ok_and(|s| s.state == JobState::Failed) {
                        return Ok(Vec::new());
                    }
                }
                Err(zkc::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        let mut mine = Vec::new();
        // A deployment that had more tasks left the ones past this one's
        // count: they are looked at too, to be stopped and confirmed.
        let stale = match session.list_children(&layout.job_tasks(&spec.name)).await {
            Ok(listed) => listed.iter().filter_map(|i| i.parse::<u32>().ok()).collect(),
            Err(zkc::Error::NoNode) => Vec::new(),
            Err(e) => return Err(e),
        };
        let of = spec.parallelism.max(1);
        let stale = stale
            .into_iter()
            .filter(|index| *index >= of)
            .map(|index| Share { index, of });
        let shares: Vec<Share> = spec.shares().chain(stale).collect();
        let paths: Vec<String> = shares.iter().map(|s| layout.task(&spec.name, s.index)).collect();
        let reads = read_all(&paths, |path| session.get_data(path)).await;
        for (share, read) in shares.into_iter().zip(reads) {
            let (data, assignment) = match read {
                Ok(found) => found,
                Err(zkc::Error::NoNode) => continue,
                Err(e) => return Err(e),
            };
            let Ok(a) = serde_json::from_slice::<Assignment>(&data) else {
                continue;
            };
            if a.worker == self.node {
                let task = Task {
                    spec: spec.clone(),
                    version,
                    share,
                    assignment,
                    generation: a.generation,
                };
                mine.push((task, a.uid == spec.uid && share.index < of));
            }
        }
        Ok(mine)
    }

    /// Tells the leader a task of this worker's that was cancelled, or
    /// belongs to a deployment since replaced, has stopped.
    async fn confirm_cancelled(&self, task: &Task) -> Result<(), Unregistered> {
        match self.status(task).await {
            Ok(Some(s)) if s.epoch == task.generation && matches!(s.state, JobState::Canceled | JobState::Failed) => {
                return Ok(())
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(task = %task.label(), "cannot read the task's status, trying again later: {e}");
                return Ok(());
            }
        }
        match self.ctx.write_status(task, JobState::Canceled, 0, None).await {
            Ok(()) => {
                tracing::info!(task = %task.label(), "task cancelled and stopped");
                Ok(())
            }
            Err(AttemptError::Deposed) => Err(Unregistered("a fenced status write was refused".into())),
            Err(e) => {
                tracing::warn!(task = %task.label(), "cannot mark the task cancelled, trying again later: {e}");
                Ok(())
            }
        }
    }

    /// A task's status; `None` if it has none (or an unreadable one).
    async fn status(&self, task: &Task) -> Result<Option<JobStatus>, zkc::Error> {
        let path = self.ctx.layout.task_status(&task.spec.name, task.share.index);
        match self.ctx.session.get_data(&path).await {
            Ok((data, _)) => Ok(serde_json::from_slice(&data).ok()),
            Err(zkc::Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Collects tasks that ended on their own (and stopped ones a panic
    /// kept from saying so); a deposed one means the worker node is gone.
    async fn reap(&mut self) -> Result<(), Unregistered> {
        self.stopping.retain(|_, (_, handle)| !handle.is_finished());
        let ended: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.handle.is_finished())
            .map(|(key, _)| key.clone())
            .collect();
        let mut deposed = Ok(());
        for key in ended {
            let task = self.tasks.remove(&key).expect("listed above");
            match task.handle.await {
                Ok(JobEnd::Deposed) => {
                    deposed = Err(Unregistered(format!(
                        "task {} found the worker node gone",
                        task.task.label()
                    )));
                }
                Ok(JobEnd::Finished) if task.handing_off => {
                    self.releasing.insert(key, task.task);
                }
                _ => {}
            }
        }
        deposed
    }

    /// Says the tasks handed off have published their final checkpoints,
    /// so the leader gives them to their next workers. A release
    /// ZooKeeper left unanswered may have landed, so it is written again
    /// (the same fenced write) at each pass until answered, and the task
    /// is not started here meanwhile.
    async fn release(&mut self) -> Result<(), Unregistered> {
        let keys: Vec<TaskKey> = self.releasing.keys().cloned().collect();
        for key in keys {
            let task = &self.releasing[&key];
            let restarts = match self.status(task).await {
                Ok(status) => status.map_or(0, |s| s.restarts),
                Err(_) => 0,
            };
            match self.ctx.write_status(task, JobState::Released, restarts, None).await {
                Ok(()) => tracing::info!(task = %task.label(), "task handed off"),
                Err(AttemptError::Superseded) => {}
                Err(AttemptError::Deposed) => return Err(Unregistered("a fenced status write was refused".into())),
                Err(e) => {
                    tracing::warn!(task = %task.label(), "cannot release the task yet, asking again: {e}");
                    continue;
                }
            }
            self.releasing.remove(&key);
        }
        Ok(())
    }

    /// Tells a task to stop, without waiting: the loop hears on `ended`
    /// once it has.
    fn stop(&mut self, key: &TaskKey) {
        if let Some(task) = self.tasks.remove(key) {
            task.control.send_replace(Control::Stop);
            self.stopping.insert(key.clone(), (task.id, task.handle));
        }
    }

    /// Stops every task at once and waits until all have.
    pub async fn stop_all(&mut self) {
        self.set_mode(Control::Stop);
        let handles = std::mem::take(&mut self.tasks).into_values().map(|t| t.handle);
        futures::future::join_all(handles).await;
        futures::future::join_all(std::mem::take(&mut self.stopping).into_values().map(|(_, h)| h)).await;
    }

    /// Planned handoff: every task takes a final checkpoint and publishes
    /// it; any that has not within [`FINISH_TIMEOUT`] is stopped.
    pub async fn finish_all(&mut self) {
        self.set_mode(Control::Finish);
        let tasks = std::mem::take(&mut self.tasks);
        let (controls, handles): (Vec<_>, Vec<_>) = tasks.into_values().map(|t| (t.control, t.handle)).unzip();
        let stopping = std::mem::take(&mut self.stopping).into_values().map(|(_, h)| h);
        let all = async {
            futures::future::join_all(handles).await;
            futures::future::join_all(stopping).await;
        };
        if tokio::time::timeout(FINISH_TIMEOUT, all).await.is_err() {
            tracing::warn!("tasks did not finish within {FINISH_TIMEOUT:?}; stopping them");
            for control in controls {
                control.send_replace(Control::Stop);
            }
        }
    }
}
