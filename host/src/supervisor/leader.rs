//! The leader: reads the specs, the live workers and the tasks'
//! assignments and statuses, and carries out what [`ha::assign::plan`]
//! decides: tasks to workers, handoffs that even them out or empty a
//! draining worker, jobs failed or cancelled. It runs no task
//! itself (its supervisor's worker does, like any other), so losing the
//! leadership stops nothing but the assigning.
//!
//! Only a fenced refusal deposes it; a read or write that fails for any
//! other reason changes nothing and is tried again at the next pass.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;
use zookeeper_client as zkc;

use super::standby::read_specs;
use futures::FutureExt;

use crate::coord::{read_all, FenceError, FencedOp, Session};
use crate::ha::assign::{self, Decision, JobView, TaskAssign, TaskView, WorkerView};
use crate::ha::{self, Fence, Layout};
use crate::spec::{JobState, JobStatus};

/// How long a worker must have been live before tasks are moved to it,
/// and how long a task that moved stays put: a worker that flaps draws no
/// task back and forth. `weir rebalance` skips the wait.
pub const COOLDOWN: Duration = Duration::from_secs(10);

/// This leader was found deposed, and why.
pub struct Deposed(pub String);

/// The assigning side of one leadership term.
pub struct Leader {
    fence: Fence,
    layout: Layout,
    /// When this leader first saw each worker node.
    seen: BTreeMap<String, Instant>,
    /// Tasks it asked to move, and when.
    moved: BTreeMap<(String, u32), Instant>,
    /// The version of the rebalance request when last read (`-1`: none),
    /// once read at all.
    rebalance: Option<i32>,
}

impl Leader {
    /// Leads with `fence`.
    pub fn new(fence: Fence, layout: Layout) -> Leader {
        Leader {
            fence,
            layout,
            seen: BTreeMap::new(),
            moved: BTreeMap::new(),
            rebalance: None,
        }
    }

    /// This leadership's epoch.
    pub fn epoch(&self) -> u64 {
        self.fence.epoch()
    }

    /// The latch node that proves it.
    pub fn latch(&self) -> &str {
        self.fence.latch()
    }

    /// One pass: read, plan, write.
    pub async fn reconcile(&mut self) -> Result<(), Deposed> {
        let fence = self.fence.clone();
        let session = fence.session();
        let (jobs, workers) = match self.read(session).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!("cannot read the cluster's jobs and workers, assigning nothing until they read: {e}");
                return Ok(());
            }
        };
        let settling: BTreeSet<(String, u32)> = self.moved.keys().cloned().collect();
        for decision in assign::plan(&jobs, &workers, &settling, crate::clock::now_ms()) {
            for part in in_parts(decision) {
                if self.carry_out(&part).await? {
                    if let Decision::Handoff { job, task, .. } = &part {
                        self.moved.insert((job.clone(), *task), Instant::now());
                    }
                }
            }
        }
        Ok(())
    }

    /// Every job with its tasks, and the live workers by node name.
    async fn read(
        &mut self,
        session: &dyn Session,
    ) -> Result<(Vec<JobView>, BTreeMap<String, WorkerView>), zkc::Error> {
        let layout = self.layout.clone();
        let nodes = ha::workers(session, &layout).await?;
        let drains: BTreeSet<String> = list(session, &layout.drains()).await?.into_iter().collect();
        let rebalance = match session.get_data(&layout.rebalance()).await {
            Ok((_, version)) => version,
            Err(zkc::Error::NoNode) => -1,
            Err(e) => return Err(e),
        };
        // A new leader takes the request as read: only a change asks again.
        let asked = self.rebalance.is_some_and(|seen| seen != rebalance);
        self.rebalance = Some(rebalance);
        let now = Instant::now();
        self.seen.retain(|node, _| nodes.contains_key(node));
        self.moved.retain(|_, at| now.duration_since(*at) < COOLDOWN);
        if asked {
            tracing::info!("rebalancing now, as asked");
            self.moved.clear();
            for at in self.seen.values_mut() {
                *at = now.checked_sub(COOLDOWN).unwrap_or(*at);
            }
        }
        let mut workers = BTreeMap::new();
        for (node, info) in nodes {
            let first_seen = *self.seen.entry(node.clone()).or_insert(now);
            let worker = WorkerView {
                draining: drains.contains(&info.id),
                settled: now.duration_since(first_seen) >= COOLDOWN,
                info,
            };
            workers.insert(node, worker);
        }
        let mut jobs = Vec::new();
        for (spec, version) in read_specs(session, &layout).await? {
            let name = spec.name.clone();
            let status = read_json::<JobStatus>(session, &layout.job_status(&name))
                .await?
                .map(|(s, _)| s);
            let listed = match session.list_children(&layout.job_tasks(&name)).await {
                Ok(listed) => Some(listed),
                Err(zkc::Error::NoNode) => None,
                Err(e) => return Err(e),
            };
            let has_tasks_dir = listed.is_some();
            let tasks: Vec<TaskView> = if has_tasks_dir {
                read_all(spec.shares(), |share| {
                    read_task(session, &layout, &name, share.index).boxed()
                })
                .await
                .into_iter()
                .collect::<Result<_, _>>()?
            } else {
                spec.shares().map(|_| TaskView::default()).collect()
            };
            let mut stale = Vec::new();
            for index in listed.iter().flatten().filter_map(|i| i.parse::<u32>().ok()) {
                if index >= spec.parallelism {
                    stale.push(read_task(session, &layout, &name, index).await?);
                }
            }
            jobs.push(JobView {
                spec,
                version,
                status,
                has_tasks_dir,
                tasks,
                stale,
            });
        }
        Ok((jobs, workers))
    }

    /// Makes one decision's writes, fenced by the latch and guarded by the
    /// job's spec version; whether they were made.
    async fn carry_out(&self, decision: &Decision) -> Result<bool, Deposed> {
        let (job, version) = match decision {
            Decision::Assign { job, version, .. }
            | Decision::Handoff { job, version, .. }
            | Decision::Fail { job, version, .. }
            | Decision::Cancel { job, version } => (job, *version),
        };
        let spec = self.layout.job(job);
        let dir = self.layout.job_tasks(job);
        let status_path = self.layout.job_status(job);
        // Every value a write holds, made before the ops that borrow them.
        let mut data: Vec<(String, Vec<u8>, Option<i32>, bool)> = Vec::new();
        let mut checked = None;
        match decision {
            Decision::Handoff {
                task,
                assignment,
                handoff,
                create,
                ..
            } => {
                tracing::info!(task = %format!("{job}/{task}"), to = %handoff.to, "asking for a handoff");
                checked = Some((self.layout.task(job, *task), *assignment));
                let request = serde_json::to_vec(handoff).expect("handoff serializes");
                data.push((self.layout.task_handoff(job, *task), request, None, *create));
            }
            Decision::Assign { create_dir, tasks, .. } => {
                if *create_dir {
                    data.push((dir.clone(), Vec::new(), None, true));
                }
                for task in tasks {
                    self.assign_writes(job, task, &mut data);
                    tracing::info!(
                        task = %format!("{job}/{}", task.index),
                        worker = %task.assignment.supervisor,
                        generation = task.assignment.generation,
                        "task assigned"
                    );
                }
            }
            Decision::Fail { error, .. } => {
                tracing::error!(job = %job, "job failed for good: {error}");
                let status = self.status(JobState::Failed, Some(error.clone()));
                data.push((status_path.clone(), status, None, false));
            }
            Decision::Cancel { .. } => {
                tracing::info!(job = %job, "job cancelled and stopped");
                let status = self.status(JobState::Canceled, None);
                data.push((status_path.clone(), status, None, false));
            }
        }
        let mut ops = vec![FencedOp::Check { path: &spec, version }];
        if let Some((path, version)) = &checked {
            ops.push(FencedOp::Check {
                path,
                version: *version,
            });
        }
        for (path, bytes, expected, create) in &data {
            ops.push(if *create {
                FencedOp::Create { path, data: bytes }
            } else {
                FencedOp::Set {
                    path,
                    data: bytes,
                    expected: *expected,
                }
            });
        }
        match self.fence.write(&ops).await {
            Ok(_) => Ok(true),
            Err(FenceError::Deposed) => Err(Deposed("a fenced write found the latch node gone".into())),
            Err(e @ FenceError::Conflict { .. }) => {
                tracing::debug!(job = %job, "changed while assigning, planning again at the next pass: {e}");
                Ok(false)
            }
            Err(e) => {
                tracing::warn!(job = %job, "cannot write the job's assignments, trying again later: {e}");
                Ok(false)
            }
        }
    }

    /// The writes that give `task` of `job` to its new worker: the
    /// assignment, checked at the version read, and a fresh status (and,
    /// for a new deployment, an empty pointer).
    fn assign_writes(&self, job: &str, task: &TaskAssign, data: &mut Vec<(String, Vec<u8>, Option<i32>, bool)>) {
        let create = task.expected.is_none();
        let assignment = serde_json::to_vec(&task.assignment).expect("assignment serializes");
        data.push((self.layout.task(job, task.index), assignment, task.expected, create));
        let status = JobStatus {
            epoch: task.assignment.generation,
            restarts: task.restarts,
            ..JobStatus::created(task.assignment.since_ms)
        };
        let status = serde_json::to_vec(&status).expect("status serializes");
        data.push((self.layout.task_status(job, task.index), status, None, create));
        if task.fresh {
            data.push((self.layout.task_checkpoint(job, task.index), Vec::new(), None, create));
        }
    }

    /// A job-level status in this leadership.
    fn status(&self, state: JobState, error: Option<String>) -> Vec<u8> {
        let status = JobStatus {
            state,
            supervisor: None,
            epoch: self.fence.epoch(),
            restarts: 0,
            error,
            since_ms: crate::clock::now_ms(),
        };
        serde_json::to_vec(&status).expect("status serializes")
    }
}

/// Tasks assigned in one multi-op at most: three writes each, so a job of
/// thousands of tasks stays far below ZooKeeper's 1 MiB request limit
/// (`jute.maxbuffer`), past which the server drops the connection.
const ASSIGN_CHUNK: usize = 100;

/// A decision as the multi-ops that carry it out: each part's tasks are
/// checked on their own, so the parts are independent.
fn in_parts(decision: Decision) -> Vec<Decision> {
    let Decision::Assign {
        job,
        version,
        create_dir,
        tasks,
    } = decision
    else {
        return vec![decision];
    };
    tasks
        .chunks(ASSIGN_CHUNK)
        .enumerate()
        .map(|(i, part)| Decision::Assign {
            job: job.clone(),
            version,
            create_dir: create_dir && i == 0,
            tasks: part.to_vec(),
        })
        .collect()
}

/// Task `index` of job `name` as it stands.
async fn read_task(session: &dyn Session, layout: &Layout, name: &str, index: u32) -> Result<TaskView, zkc::Error> {
    let handoff = read_json(session, &layout.task_handoff(name, index)).await?;
    Ok(TaskView {
        assignment: read_json(session, &layout.task(name, index)).await?,
        status: read_json(session, &layout.task_status(name, index))
            .await?
            .map(|(s, _)| s),
        has_handoff_node: handoff.is_some(),
        handoff: handoff.map(|(h, _)| h),
    })
}

/// A node's children; none if it does not exist.
async fn list(session: &dyn Session, path: &str) -> Result<Vec<String>, zkc::Error> {
    match session.list_children(path).await {
        Ok(children) => Ok(children),
        Err(zkc::Error::NoNode) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// A node's JSON content and version; `None` if it is missing or unreadable.
async fn read_json<T: serde::de::DeserializeOwned>(
    session: &dyn Session,
    path: &str,
) -> Result<Option<(T, i32)>, zkc::Error> {
    match session.get_data(path).await {
        Ok((data, version)) => Ok(serde_json::from_slice(&data).ok().map(|t| (t, version))),
        Err(zkc::Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}
