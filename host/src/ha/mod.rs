//! High availability through ZooKeeper: the znode layout, the leader latch,
//! the epoch, and fenced writes. This module decides *whether* this process
//! leads; it never looks inside a job.
//!
//! Layout under `<root>/<cluster-id>`:
//! - `leader-latch/_c_<uuid>-latch-<seq>`: one ephemeral-sequential node per
//!   live supervisor (Curator's LeaderLatch layout); the lowest one leads.
//! - `leader`: the [`LeaderRecord`] of the latest leader; its `epoch` is the
//!   fencing token, bumped by every new leader.
//! - `workers/<session>`: one ephemeral node per live supervisor session
//!   (every supervisor is a worker), holding its [`SupervisorInfo`].
//! - `jobs/<name>`: a job's [`JobSpec`](crate::spec::JobSpec), written by the CLI;
//!   `jobs/<name>/status` is written by the leader.
//! - `jobs/<name>/tasks/<i>`: task `i`'s [`Assignment`], written by the
//!   leader (with `.../handoff`, its requests to move the task); `.../checkpoint`
//!   and `.../status` are written by the worker it names, fenced by the
//!   assignment's version.
//! - `drains/<id>` and `rebalance`: the CLI's requests to the leader.

pub mod assign;
mod fence;
mod latch;
mod role;

pub use assign::Assignment;
pub use fence::Fence;
pub use latch::{candidates, contend, contender_named};
pub use role::{step, Action, Event, Role};

use crate::coord::{Session, ZkError};

/// Why a supervisor may not join its cluster with the storage dir it was given.
#[derive(Debug, thiserror::Error)]
pub enum StorageRecordError {
    /// The cluster records another storage dir.
    #[error(
        "this cluster's storage dir is {recorded} (recorded in ZooKeeper at {path}), not {given}: \
         every replica and the CLI must use the same --storage-dir"
    )]
    Mismatch {
        /// The znode holding the record.
        path: String,
        /// What it holds.
        recorded: String,
        /// What this process was given.
        given: String,
    },
    /// ZooKeeper failed; try again.
    #[error(transparent)]
    Zk(#[from] ZkError),
}

/// Records `url` as the cluster's storage dir if none is yet, and refuses
/// another: a replica with its own storage dir would win elections and find
/// no module or checkpoint of any job.
pub async fn check_storage(session: &dyn Session, layout: &Layout, url: &str) -> Result<(), StorageRecordError> {
    let path = layout.storage();
    loop {
        match session.get_data(&path).await {
            Ok((recorded, _)) => {
                let recorded = String::from_utf8_lossy(&recorded).into_owned();
                return if recorded == url {
                    Ok(())
                } else {
                    Err(StorageRecordError::Mismatch {
                        path,
                        recorded,
                        given: url.to_string(),
                    })
                };
            }
            Err(zookeeper_client::Error::NoNode) => match session.create(&path, url.as_bytes()).await {
                Ok(()) => return Ok(()),
                // Another replica recorded one first: compare with it.
                Err(zookeeper_client::Error::NodeExists) => continue,
                Err(e) => return Err(ZkError::op(format!("record the storage dir in {path}"), e).into()),
            },
            Err(e) => return Err(ZkError::op(format!("read {path}"), e).into()),
        }
    }
}

/// The live workers, by node name, with what each says about itself (an
/// unreadable one as the default).
pub async fn workers(
    session: &dyn Session,
    layout: &Layout,
) -> Result<std::collections::BTreeMap<String, SupervisorInfo>, zookeeper_client::Error> {
    let nodes = match session.list_children(&layout.workers()).await {
        Ok(nodes) => nodes,
        Err(zookeeper_client::Error::NoNode) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut workers = std::collections::BTreeMap::new();
    for node in nodes {
        match session.get_data(&layout.worker(&node)).await {
            Ok((data, _)) => {
                workers.insert(node, serde_json::from_slice(&data).unwrap_or_default());
            }
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(workers)
}

use serde::{Deserialize, Serialize};

/// Paths of one cluster's znodes.
#[derive(Debug, Clone)]
pub struct Layout {
    base: String,
}

impl Layout {
    /// The layout of cluster `cluster_id` under `root` (e.g. `/weir`).
    pub fn new(root: &str, cluster_id: &str) -> Self {
        Layout {
            base: format!("{}/{}", root.trim_end_matches('/'), cluster_id),
        }
    }

    /// The cluster's own znode.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Parent of the latch nodes.
    pub fn latch_dir(&self) -> String {
        format!("{}/leader-latch", self.base)
    }

    /// The leader record, whose version guards the epoch bump.
    pub fn leader(&self) -> String {
        format!("{}/leader", self.base)
    }

    /// The storage dir every replica of the cluster must use, recorded by the first.
    pub fn storage(&self) -> String {
        format!("{}/storage", self.base)
    }

    /// Parent of the job specs.
    pub fn jobs(&self) -> String {
        format!("{}/jobs", self.base)
    }

    /// A job's spec.
    pub fn job(&self, name: &str) -> String {
        format!("{}/jobs/{name}", self.base)
    }

    /// A job's runtime status, written by the leader.
    pub fn job_status(&self, name: &str) -> String {
        format!("{}/jobs/{name}/status", self.base)
    }

    /// Parent of the live workers' nodes.
    pub fn workers(&self) -> String {
        format!("{}/workers", self.base)
    }

    /// A worker's node.
    pub fn worker(&self, node: &str) -> String {
        format!("{}/workers/{node}", self.base)
    }

    /// Parent of a job's tasks.
    pub fn job_tasks(&self, name: &str) -> String {
        format!("{}/jobs/{name}/tasks", self.base)
    }

    /// A task's assignment, written by the leader.
    pub fn task(&self, name: &str, index: u32) -> String {
        format!("{}/jobs/{name}/tasks/{index}", self.base)
    }

    /// A task's pointer to its latest committed checkpoint, written by its worker.
    pub fn task_checkpoint(&self, name: &str, index: u32) -> String {
        format!("{}/jobs/{name}/tasks/{index}/checkpoint", self.base)
    }

    /// A task's runtime status, written by its worker.
    pub fn task_status(&self, name: &str, index: u32) -> String {
        format!("{}/jobs/{name}/tasks/{index}/status", self.base)
    }

    /// The leader's request that a task's owner hand it off.
    pub fn task_handoff(&self, name: &str, index: u32) -> String {
        format!("{}/jobs/{name}/tasks/{index}/handoff", self.base)
    }

    /// Parent of the drain requests, one per supervisor `--id` (`weir drain`).
    pub fn drains(&self) -> String {
        format!("{}/drains", self.base)
    }

    /// The drain request of supervisor `id`.
    pub fn drain(&self, id: &str) -> String {
        format!("{}/drains/{id}", self.base)
    }

    /// `weir rebalance`'s request: each change asks the leader to even
    /// the tasks out now, cooldown or not.
    pub fn rebalance(&self) -> String {
        format!("{}/rebalance", self.base)
    }
}

/// What a supervisor says about itself in its latch node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorInfo {
    /// Stable name of the replica (`--id`, default `<host>-<pid>`).
    pub id: String,
    /// Operating-system process id.
    pub pid: u32,
    /// Host name the replica runs on.
    pub host: String,
    /// When the replica started (ms since the Unix epoch).
    pub started_ms: u64,
    /// Where its HTTP endpoint (`/metrics`, `/healthz`) listens.
    #[serde(default)]
    pub address: Option<String>,
}

/// The latest leader and its epoch, kept in the `leader` znode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// Fencing token: strictly increases with every leadership.
    pub epoch: u64,
    /// Who won it.
    pub supervisor: SupervisorInfo,
    /// The latch node the leader holds; it leads only while this node exists.
    pub latch: String,
    /// When it took over (ms since the Unix epoch).
    pub since_ms: u64,
}
