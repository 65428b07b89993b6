//! Fenced writes: every write the leader makes to ZooKeeper is a multi-op
//! that first checks the leader's own latch node, so a deposed leader (paused,
//! partitioned, expired) can change nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use zookeeper_client::{self as zkc, CheckWriteError, CreateMode, Stat};

use super::{Latch, Layout, LeaderRecord, SupervisorInfo};

/// Why a fenced write did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FenceError {
    /// Our latch node is gone: another supervisor leads now. Fatal for this leadership.
    #[error("this supervisor no longer leads (its latch node is gone)")]
    Deposed,
    /// The target changed since we read it (a version mismatch or a node
    /// that exists, or does not). Re-read and decide again.
    #[error("{path} changed concurrently: {source}")]
    Conflict {
        /// The node written.
        path: String,
        /// BadVersion, NodeExists or NoNode.
        source: zkc::Error,
    },
    /// The write failed for another reason (connection loss, ...): its outcome is unknown.
    #[error("ZooKeeper write to {path} failed: {source}")]
    Zk {
        /// The node written.
        path: String,
        /// What the client said.
        source: zkc::Error,
    },
}

impl FenceError {
    /// Whether ZooKeeper failed to answer rather than refused: the write
    /// may or may not have happened, and whether we still lead is unknown
    /// until the session's state says.
    pub fn is_unanswered(&self) -> bool {
        matches!(self, FenceError::Zk { source, .. } if unanswered(source))
    }

    fn from_check(path: &str, err: CheckWriteError) -> Self {
        match err {
            CheckWriteError::CheckFailed { .. } => FenceError::Deposed,
            CheckWriteError::OperationFailed {
                source: source @ (zkc::Error::BadVersion | zkc::Error::NodeExists | zkc::Error::NoNode),
                ..
            } => FenceError::Conflict {
                path: path.to_string(),
                source,
            },
            CheckWriteError::OperationFailed { source, .. } | CheckWriteError::RequestFailed { source } => {
                FenceError::Zk {
                    path: path.to_string(),
                    source,
                }
            }
        }
    }
}

/// Whether a request failed because ZooKeeper did not answer it (the
/// connection dropped or stalled, the session ended) rather than because
/// it refused it: only the latter is worth reporting as the caller's fault.
pub fn unanswered(error: &zkc::Error) -> bool {
    matches!(
        error,
        zkc::Error::ConnectionLoss
            | zkc::Error::Timeout
            | zkc::Error::Throttled
            | zkc::Error::NoHosts
            | zkc::Error::SessionMoved
            | zkc::Error::SessionExpired
            | zkc::Error::ClientClosed
            // The client's own "no response from connection in ..." errors.
            | zkc::Error::Custom(_)
    )
}

/// Write access to ZooKeeper for one leadership term. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fence {
    latch: Latch,
    epoch: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Fence {
    /// Turns a won latch into a leadership term: bumps the epoch in the
    /// `leader` record, fenced by the latch itself.
    pub async fn take_lead(latch: Latch, layout: &Layout, me: &SupervisorInfo) -> Result<Fence, FenceError> {
        let path = layout.leader();
        loop {
            let current = match latch.client().get_data(&path).await {
                Ok((data, stat)) => Some((serde_json::from_slice::<LeaderRecord>(&data).ok(), stat)),
                Err(zkc::Error::NoNode) => None,
                Err(source) => return Err(FenceError::Zk { path, source }),
            };
            let previous_epoch = current.as_ref().and_then(|(r, _)| r.as_ref()).map_or(0, |r| r.epoch);
            let record = LeaderRecord {
                epoch: previous_epoch + 1,
                supervisor: me.clone(),
                latch: latch.path().to_string(),
                since_ms: now_ms(),
            };
            let data = serde_json::to_vec(&record).expect("leader record serializes");
            let fence = Fence {
                latch: latch.clone(),
                epoch: record.epoch,
            };
            let written = match current {
                Some((_, stat)) => fence.set(&path, &data, Some(stat.version)).await.map(drop),
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
    pub fn client(&self) -> &zkc::Client {
        self.latch.client()
    }

    /// The latch node that proves this leadership.
    pub fn latch(&self) -> &Latch {
        &self.latch
    }

    fn writer(&self) -> zkc::CheckWriter<'_> {
        self.client()
            .new_check_writer(self.latch.path(), None)
            .expect("latch path is valid")
    }

    /// Runs the operation `add` puts on `path` in one multi-op with a check
    /// that our latch node still exists.
    async fn fenced(
        &self,
        path: &str,
        add: impl FnOnce(&mut zkc::CheckWriter<'_>) -> Result<(), zkc::Error>,
    ) -> Result<Vec<zkc::MultiWriteResult>, FenceError> {
        let mut writer = self.writer();
        add(&mut writer).map_err(|source| FenceError::Zk {
            path: path.into(),
            source,
        })?;
        writer.commit().await.map_err(|e| FenceError::from_check(path, e))
    }

    /// Sets `path` to `data` if we still lead (and if its version is `expected`).
    pub async fn set(&self, path: &str, data: &[u8], expected: Option<i32>) -> Result<Stat, FenceError> {
        let results = self.fenced(path, |w| w.add_set_data(path, data, expected)).await?;
        match results.into_iter().next() {
            Some(zkc::MultiWriteResult::SetData { stat }) => Ok(stat),
            other => Err(FenceError::Zk {
                path: path.into(),
                source: zkc::Error::UnexpectedError(format!("set_data answered {other:?}")),
            }),
        }
    }

    /// Confirms that we still lead and that `path` is still at `version`:
    /// the guard before a step that has effects outside ZooKeeper (cutting a
    /// sink back to a checkpoint) and was planned from something read earlier.
    pub async fn confirm(&self, path: &str, version: i32) -> Result<(), FenceError> {
        self.fenced(path, |w| w.add_check_version(path, version)).await?;
        Ok(())
    }

    /// Creates the persistent node `path` if we still lead.
    pub async fn create(&self, path: &str, data: &[u8]) -> Result<(), FenceError> {
        let options = CreateMode::Persistent.with_acls(self.latch.acls());
        self.fenced(path, |w| w.add_create(path, data, &options)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_write_zookeeper_left_unanswered_is_an_interruption() {
        let zk = |source| FenceError::Zk {
            path: "/p".into(),
            source,
        };
        assert!(zk(zkc::Error::ConnectionLoss).is_unanswered());
        assert!(zk(zkc::Error::Timeout).is_unanswered());
        assert!(
            !zk(zkc::Error::NoAuth).is_unanswered(),
            "a refusal is the caller's fault"
        );
        assert!(!FenceError::Deposed.is_unanswered());
        let conflict = FenceError::Conflict {
            path: "/p".into(),
            source: zkc::Error::BadVersion,
        };
        assert!(!conflict.is_unanswered());
    }
}
