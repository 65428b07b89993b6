//! What `weir status`, `weir jobs` and the REST API show: the cluster and
//! its jobs as ZooKeeper holds them, with stable JSON field names. Read
//! with a plain session, outside any supervisor's seam: reading never
//! changes what runs.

use std::collections::BTreeMap;

use futures::FutureExt;
use serde::Serialize;
use zookeeper_client::{self as zkc, Client};

use crate::checkpoint::Pointer;
use crate::clock::now_ms;
use crate::coord::read_all;
use crate::coord::zookeeper::ZkError;
use crate::ha::{candidates, Assignment, Layout, LeaderRecord};
use crate::savepoint::Manifest;
use crate::spec::{Cidr, Desired, DirGrant, JobSpec, JobState, JobStatus};

/// The cluster as `weir status --output json` prints it. Field names are stable.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// The cluster's name.
    pub cluster_id: String,
    /// The current leader, if any replica is alive.
    pub leader: Option<LeaderView>,
    /// Every live replica, in election order (the first leads).
    pub replicas: Vec<ReplicaView>,
}

/// The leader: who, and its fencing epoch.
#[derive(Debug, Serialize)]
pub struct LeaderView {
    /// Replica id.
    pub id: String,
    /// Its process id.
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// Its HTTP endpoint (`/metrics`, `/healthz`).
    pub address: Option<String>,
    /// Its epoch; `null` while it is still taking the lead.
    pub epoch: Option<u64>,
    /// When it took the lead (ms since the Unix epoch).
    pub since_ms: Option<u64>,
}

/// One live replica.
#[derive(Debug, Serialize)]
pub struct ReplicaView {
    /// Replica id.
    pub id: String,
    /// Its process id.
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// Its HTTP endpoint (`/metrics`, `/healthz`).
    pub address: Option<String>,
    /// `leader` or `follower` (every replica is also a worker).
    pub role: &'static str,
    /// How many tasks of running jobs are assigned to it.
    pub tasks: usize,
    /// `weir drain` asked that it run no task.
    pub draining: bool,
    /// Its latch node.
    pub latch: String,
}

/// The cluster: the leader and every live replica.
pub async fn read_cluster(client: &Client, layout: &Layout, cluster_id: &str) -> Result<ClusterView, ZkError> {
    let record: Option<LeaderRecord> = match client.get_data(&layout.leader()).await {
        Ok((data, _)) => serde_json::from_slice(&data).ok(),
        Err(_) => None,
    };
    let tasks = tasks_per_supervisor(client, layout).await?;
    let drains: Vec<String> = client.list_children(&layout.drains()).await.unwrap_or_default();
    let replicas: Vec<ReplicaView> = candidates(client, layout)
        .await?
        .into_iter()
        .enumerate()
        .map(|(i, (latch, info))| {
            let info = info.unwrap_or_default();
            ReplicaView {
                pid: info.pid,
                host: info.host,
                address: info.address,
                role: if i == 0 { "leader" } else { "follower" },
                tasks: tasks.get(&info.id).copied().unwrap_or(0),
                draining: drains.contains(&info.id),
                id: info.id,
                latch,
            }
        })
        .collect();
    let leader = replicas.first().map(|r| {
        let current = record.as_ref().filter(|rec| rec.latch == r.latch);
        LeaderView {
            id: r.id.clone(),
            pid: r.pid,
            host: r.host.clone(),
            address: r.address.clone(),
            epoch: current.map(|rec| rec.epoch),
            since_ms: current.map(|rec| rec.since_ms),
        }
    });
    Ok(ClusterView {
        cluster_id: cluster_id.to_string(),
        leader,
        replicas,
    })
}

/// How many tasks of running jobs each supervisor (by `--id`) is assigned.
async fn tasks_per_supervisor(client: &Client, layout: &Layout) -> Result<BTreeMap<String, usize>, ZkError> {
    let mut count = BTreeMap::new();
    let names = match client.list_children(&layout.jobs()).await {
        Ok(names) => names,
        Err(zkc::Error::NoNode) => return Ok(count),
        Err(e) => return Err(ZkError::op(format!("list {}", layout.jobs()), e)),
    };
    for name in names {
        let Ok((data, _)) = client.get_data(&layout.job(&name)).await else {
            continue;
        };
        let Ok(spec) = serde_json::from_slice::<JobSpec>(&data) else {
            continue;
        };
        if spec.desired != Desired::Running {
            continue;
        }
        let paths: Vec<String> = spec.shares().map(|share| layout.task(&name, share.index)).collect();
        for read in read_all(&paths, |path| client.get_data(path).boxed()).await {
            let Ok((data, _)) = read else {
                continue;
            };
            if let Ok(a) = serde_json::from_slice::<Assignment>(&data) {
                if a.uid == spec.uid {
                    *count.entry(a.supervisor).or_default() += 1;
                }
            }
        }
    }
    Ok(count)
}

/// One job as `weir jobs --output json` prints it. Field names are stable.
#[derive(Debug, Serialize)]
pub struct JobView {
    /// Job name.
    pub name: String,
    /// CREATED, RUNNING, RESTARTING, FAILED or CANCELED: FAILED and
    /// CANCELED as the leader marked the job, else the least advanced of
    /// its tasks' states (RESTARTING if any task is).
    pub state: JobState,
    /// `running` or `canceled`.
    pub desired: Desired,
    /// The supervisor running task 0, if any.
    pub supervisor: Option<String>,
    /// Failed attempts so far, over all its tasks.
    pub restarts: u32,
    /// Why the job failed, or else the error of the first task that has one.
    pub error: Option<String>,
    /// Task 0's newest committed checkpoint.
    pub last_checkpoint: Option<CheckpointView>,
    /// How many tasks run it.
    pub parallelism: u32,
    /// Its tasks, in order.
    pub tasks: Vec<TaskView>,
    /// Source spec.
    pub source: String,
    /// Sink spec.
    pub sink: String,
    /// What becomes of a record the job refuses: `fail`, `skip` or
    /// `dead-letter:SINK`.
    pub on_error: String,
    /// sha256 of the module.
    pub module_sha256: String,
    /// What the job's sandbox is granted.
    pub grants: GrantsView,
}

/// A job's grants as `weir jobs` shows them: environment variable names
/// only, since their values may be secrets.
#[derive(Debug, Serialize)]
pub struct GrantsView {
    /// Names of the environment variables the guest sees.
    pub env: Vec<String>,
    /// Host directories the guest may read, and where it sees them.
    pub dirs: Vec<DirGrant>,
    /// Whether the guest may use the network.
    pub network: bool,
    /// The address ranges it is limited to (empty: all but loopback and link-local).
    pub network_to: Vec<Cidr>,
}

/// One task of a job as `weir jobs --output json` prints it.
#[derive(Debug, Serialize)]
pub struct TaskView {
    /// Its number, from 0.
    pub task: u32,
    /// CREATED (assigned, not yet running), RUNNING, RESTARTING, RELEASED
    /// (handed off, its next worker not yet given it), FAILED or CANCELED.
    pub state: JobState,
    /// The supervisor (`--id`) it is assigned to, if any.
    pub worker: Option<String>,
    /// Bumped each time it is assigned: the epoch of its checkpoints.
    pub generation: u64,
    /// Its failed attempts so far.
    pub restarts: u32,
    /// Why its last attempt failed.
    pub error: Option<String>,
    /// Its newest committed checkpoint.
    pub last_checkpoint: Option<CheckpointView>,
}

/// A committed checkpoint as `weir jobs` shows it.
#[derive(Debug, Serialize)]
pub struct CheckpointView {
    /// Checkpoint id.
    pub id: u64,
    /// The generation of the task's assignment that committed it.
    pub epoch: u64,
    /// Milliseconds since its barrier.
    pub age_ms: u64,
}

/// A node's content, `None` if it is missing; an error only when
/// ZooKeeper did not answer (or refused), never for a node that is gone.
async fn read_node(client: &Client, path: &str) -> Result<Option<Vec<u8>>, ZkError> {
    match client.get_data(path).await {
        Ok((data, _)) => Ok(Some(data)),
        Err(zkc::Error::NoNode) => Ok(None),
        Err(e) => Err(ZkError::op(format!("read {path}"), e)),
    }
}

/// A node's JSON content, `None` if it is missing or not what it should be.
async fn read_json<T: serde::de::DeserializeOwned>(client: &Client, path: &str) -> Result<Option<T>, ZkError> {
    Ok(read_node(client, path)
        .await?
        .and_then(|data| serde_json::from_slice(&data).ok()))
}

async fn read_task(client: &Client, layout: &Layout, spec: &JobSpec, task: u32) -> Result<TaskView, ZkError> {
    let name = &spec.name;
    let assignment = read_json::<Assignment>(client, &layout.task(name, task))
        .await?
        .filter(|a| a.uid == spec.uid);
    let status = match &assignment {
        Some(_) => read_json::<JobStatus>(client, &layout.task_status(name, task)).await?,
        None => None,
    };
    let pointer = match read_node(client, &layout.task_checkpoint(name, task)).await? {
        Some(data) if assignment.is_some() => Pointer::decode(&data).unwrap_or_default(),
        _ => Pointer::default(),
    };
    let now = now_ms();
    Ok(TaskView {
        task,
        state: status.as_ref().map_or(JobState::Created, |s| s.state),
        worker: assignment.as_ref().map(|a| a.supervisor.clone()),
        generation: assignment.as_ref().map_or(0, |a| a.generation),
        restarts: status.as_ref().map_or(0, |s| s.restarts),
        error: status.and_then(|s| s.error),
        last_checkpoint: pointer.latest().map(|c| CheckpointView {
            id: c.id,
            epoch: c.epoch,
            age_ms: now.saturating_sub(c.created_ms),
        }),
    })
}

/// A job's state from its own status and its tasks'.
fn job_state(status: Option<&JobStatus>, tasks: &[TaskView]) -> JobState {
    if let Some(state @ (JobState::Failed | JobState::Canceled)) = status.map(|s| s.state) {
        return state;
    }
    if tasks.iter().any(|t| t.state == JobState::Restarting) {
        return JobState::Restarting;
    }
    if !tasks.is_empty() && tasks.iter().all(|t| t.state == JobState::Running) {
        return JobState::Running;
    }
    JobState::Created
}

/// A job, `None` if there is none of that name; an error when ZooKeeper
/// did not answer a read, so that "no job" always means no job.
pub async fn read_job(client: &Client, layout: &Layout, name: &str) -> Result<Option<JobView>, ZkError> {
    let Some(spec) = read_json::<JobSpec>(client, &layout.job(name)).await? else {
        return Ok(None);
    };
    let status: Option<JobStatus> = read_json(client, &layout.job_status(name)).await?;
    let tasks = read_all(spec.shares(), |share| {
        read_task(client, layout, &spec, share.index).boxed()
    })
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    let first = tasks.first();
    let error = status
        .as_ref()
        .and_then(|s| s.error.clone())
        .or_else(|| tasks.iter().find_map(|t| t.error.clone()));
    Ok(Some(JobView {
        name: spec.name.clone(),
        state: job_state(status.as_ref(), &tasks),
        desired: spec.desired,
        supervisor: first.and_then(|t| t.worker.clone()),
        restarts: tasks.iter().map(|t| t.restarts).sum(),
        error,
        last_checkpoint: first.and_then(|t| t.last_checkpoint.as_ref()).map(|c| CheckpointView {
            id: c.id,
            epoch: c.epoch,
            age_ms: c.age_ms,
        }),
        parallelism: spec.parallelism,
        source: spec.source.to_string(),
        sink: spec.sink.to_string(),
        on_error: spec.on_error.to_string(),
        module_sha256: spec.module_sha256,
        tasks,
        grants: GrantsView {
            env: spec.grants.env.into_iter().map(|(key, _)| key).collect(),
            dirs: spec.grants.dirs,
            network: spec.grants.network,
            network_to: spec.grants.network_to,
        },
    }))
}

/// Every job, by name.
pub async fn read_jobs(client: &Client, layout: &Layout) -> Result<Vec<JobView>, ZkError> {
    let mut names = match client.list_children(&layout.jobs()).await {
        Ok(names) => names,
        Err(zkc::Error::NoNode) => Vec::new(),
        Err(e) => return Err(ZkError::op(format!("list {}", layout.jobs()), e)),
    };
    names.sort();
    let mut views = Vec::with_capacity(names.len());
    for name in &names {
        if let Some(view) = read_job(client, layout, name).await? {
            views.push(view);
        }
    }
    Ok(views)
}

/// One savepoint as `weir savepoints --output json` prints it.
#[derive(Debug, Serialize)]
pub struct SavepointView {
    /// What to give `weir deploy --from-savepoint`.
    pub path: String,
    /// Its manifest's fields.
    #[serde(flatten)]
    pub manifest: Manifest,
}
