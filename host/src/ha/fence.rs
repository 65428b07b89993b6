//! Fenced writes: every write the leader makes to ZooKeeper is a multi-op
//! that first checks the leader's own latch node, so a deposed leader (paused,
//! partitioned, expired) can change nothing.

use std::sync::Arc;

use zookeeper_client as zkc;

use super::{Layout, LeaderRecord, SupervisorInfo};
use crate::clock::now_ms;
use crate::coord::{FenceError, FencedOp, Session};

/// Write access to ZooKeeper for one leadership term. Cheap to clone.
#[derive(Clone)]
pub struct Fence {
    session: Arc<dyn Session>,
    latch: String,
    epoch: u64,
}

impl Fence {
    /// Turns a won latch into a leadership term: bumps the epoch in the
    /// `leader` record, fenced by the latch itself.
    pub async fn take_lead(
        session: Arc<dyn Session>,
        latch: String,
        layout: &Layout,
        me: &SupervisorInfo,
    ) -> Result<Fence, FenceError> {
        let path = layout.leader();
        loop {
            let current = match session.get_data(&path).await {
                Ok((data, version)) => Some((serde_json::from_slice::<LeaderRecord>(&data).ok(), version)),
                Err(zkc::Error::NoNode) => None,
                Err(source) => return Err(FenceError::Zk { path, source }),
            };
            let previous_epoch = current.as_ref().and_then(|(r, _)| r.as_ref()).map_or(0, |r| r.epoch);
            let record = LeaderRecord {
                epoch: previous_epoch + 1,
                supervisor: me.clone(),
                latch: latch.clone(),
                since_ms: now_ms(),
            };
            let data = serde_json::to_vec(&record).expect("leader record serializes");
            let fence = Fence {
                session: session.clone(),
                latch: latch.clone(),
                epoch: record.epoch,
            };
            let written = match current {
                Some((_, version)) => fence.set(&path, &data, Some(version)).await,
                None => fence.create(&path, &data).await,
            };
            match written {
                Ok(()) => return Ok(fence),
                Err(FenceError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// This leadership's epoch: the fencing token put in every object path.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The session of this leadership, for reads.
    pub fn session(&self) -> &dyn Session {
        self.session.as_ref()
    }

    /// The latch node that proves this leadership.
    pub fn latch(&self) -> &str {
        &self.latch
    }

    /// Carries out `ops`, all or none, if we still lead; returns the
    /// version of each node written or checked.
    pub async fn write(&self, ops: &[FencedOp<'_>]) -> Result<Vec<i32>, FenceError> {
        self.session.fenced(&self.latch, ops).await
    }

    /// Sets `path` to `data` if we still lead (and if its version is `expected`).
    pub async fn set(&self, path: &str, data: &[u8], expected: Option<i32>) -> Result<(), FenceError> {
        self.write(&[FencedOp::Set { path, data, expected }]).await.map(drop)
    }

    /// Creates the persistent node `path` if we still lead.
    pub async fn create(&self, path: &str, data: &[u8]) -> Result<(), FenceError> {
        self.write(&[FencedOp::Create { path, data }]).await.map(drop)
    }
}
