//! The leader: reads the specs, the live workers and the tasks'
//! assignments and statuses, and carries out what [`ha::assign::plan`]
//! decides: tasks to workers, jobs failed or cancelled. It runs no task
//! itself (its supervisor's worker does, like any other), so losing the
//! leadership stops nothing but the assigning.
//!
//! Only a fenced refusal deposes it; a read or write that fails for any
//! other reason changes nothing and is tried again at the next pass.

use std::collections::BTreeMap;

use zookeeper_client as zkc;

use super::standby::read_specs;
use crate::coord::{FenceError, FencedOp, Session};
use crate::ha::assign::{self, Decision, JobView, TaskAssign, TaskView};
use crate::ha::{Fence, Layout, SupervisorInfo};
use crate::spec::{JobState, JobStatus};

/// This leader was found deposed, and why.
pub struct Deposed(pub String);

/// The assigning side of one leadership term.
pub struct Leader {
    fence: Fence,
    layout: Layout,
}

impl Leader {
    /// Leads with `fence`.
    pub fn new(fence: Fence, layout: Layout) -> Leader {
        Leader { fence, layout }
    }

    /// This leadership's epoch.
    pub fn epoch(&self) -> u64 {
        self.fence.epoch()
    }

    /// The latch node that proves it.
    pub fn latch(&self) -> &str {
        self.fence.latch()
    }

    /// Deletes our latch node so the next contender leads at once.
    pub async fn release_latch(&self) {
        tracing::info!(epoch = self.fence.epoch(), "handing off leadership");
        if let Err(e) = self.fence.session().delete(self.fence.latch()).await {
            tracing::warn!("could not delete the latch node, the next leader waits for session expiry: {e}");
        }
    }

    /// One pass: read, plan, write.
    pub async fn reconcile(&self) -> Result<(), Deposed> {
        let session = self.fence.session();
        let (jobs, workers) = match self.read(session).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!("cannot read the cluster's jobs and workers, assigning nothing until they read: {e}");
                return Ok(());
            }
        };
        for decision in assign::plan(&jobs, &workers, crate::clock::now_ms()) {
            self.carry_out(&decision).await?;
        }
        Ok(())
    }

    /// Every job with its tasks, and the live workers by node name.
    async fn read(
        &self,
        session: &dyn Session,
    ) -> Result<(Vec<JobView>, BTreeMap<String, SupervisorInfo>), zkc::Error> {
        let layout = &self.layout;
        let mut workers = BTreeMap::new();
        let nodes = match session.list_children(&layout.workers()).await {
            Ok(nodes) => nodes,
            Err(zkc::Error::NoNode) => Vec::new(),
            Err(e) => return Err(e),
        };
        for node in nodes {
            match session.get_data(&layout.worker(&node)).await {
                Ok((data, _)) => {
                    let info = serde_json::from_slice(&data).unwrap_or_default();
                    workers.insert(node, info);
                }
                Err(zkc::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        let mut jobs = Vec::new();
        for (spec, version) in read_specs(session, layout).await? {
            let name = spec.name.clone();
            let status = read_json::<JobStatus>(session, &layout.job_status(&name))
                .await?
                .map(|(s, _)| s);
            let has_tasks_dir = session.exists(&layout.job_tasks(&name)).await?;
            let mut tasks = Vec::new();
            for share in spec.shares() {
                let task = if has_tasks_dir {
                    TaskView {
                        assignment: read_json(session, &layout.task(&name, share.index)).await?,
                        status: read_json(session, &layout.task_status(&name, share.index))
                            .await?
                            .map(|(s, _)| s),
                    }
                } else {
                    TaskView::default()
                };
                tasks.push(task);
            }
            jobs.push(JobView {
                spec,
                version,
                status,
                has_tasks_dir,
                tasks,
            });
        }
        Ok((jobs, workers))
    }

    /// Makes one decision's writes, fenced by the latch and guarded by the
    /// job's spec version.
    async fn carry_out(&self, decision: &Decision) -> Result<(), Deposed> {
        let (job, version) = match decision {
            Decision::Assign { job, version, .. }
            | Decision::Fail { job, version, .. }
            | Decision::Cancel { job, version } => (job, *version),
        };
        let spec = self.layout.job(job);
        let dir = self.layout.job_tasks(job);
        let status_path = self.layout.job_status(job);
        // Every value a write holds, made before the ops that borrow them.
        let mut data: Vec<(String, Vec<u8>, Option<i32>, bool)> = Vec::new();
        match decision {
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
            Ok(_) => Ok(()),
            Err(FenceError::Deposed) => Err(Deposed("a fenced write found the latch node gone".into())),
            Err(e @ FenceError::Conflict { .. }) => {
                tracing::debug!(job = %job, "changed while assigning, planning again at the next pass: {e}");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(job = %job, "cannot write the job's assignments, trying again later: {e}");
                Ok(())
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
