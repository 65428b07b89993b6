//! The coordination service as a supervisor sees it: a session with its
//! events, reads, the leader latch, a watch on the job specs, and fenced
//! writes. ZooKeeper in the binary ([`zookeeper`]); a simulated ensemble in
//! the deterministic simulation. Every request the supervisor, the leader,
//! job attempts and the committer make of ZooKeeper goes through
//! [`Session`], so the simulation runs their real code.
//!
//! This module carries requests out; it never decides whether to make them.
//! Errors are zookeeper-client's own: a simulated ensemble answers with the
//! same `ConnectionLoss`, `NoNode` or `SessionExpired` a real one does, so
//! the callers' one classification (refused or unanswered) is what is tested.

pub mod zookeeper;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use zookeeper_client as zkc;

/// How many reads of one sweep (every task of a job, say) are in flight at
/// once: the client pipelines them over its one connection, so a sweep of
/// thousands of nodes costs a few round trips' worth of waiting, not one
/// per node.
pub const READS_IN_FLIGHT: usize = 64;

/// Makes `read` of every item, [`READS_IN_FLIGHT`] at a time; the answers
/// in the items' order. The reads are made (not started) up front, as
/// boxed futures, so the sweep holds no closure across an await and stays
/// `Send` inside the supervisor's spawned tasks.
pub async fn read_all<'a, T, R>(
    items: impl IntoIterator<Item = T>,
    read: impl FnMut(T) -> futures::future::BoxFuture<'a, R>,
) -> Vec<R> {
    use futures::StreamExt;
    let reads: Vec<_> = items.into_iter().map(read).collect();
    futures::stream::iter(reads).buffered(READS_IN_FLIGHT).collect().await
}

pub use zkc::SessionState;

pub use zookeeper::ZkError;

/// Opens sessions with the coordination service.
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// Opens a session and the stream of its state changes.
    ///
    /// Cancel-safe: dropping the future drops the half-open session.
    async fn connect(&self) -> Result<(Arc<dyn Session>, SessionEvents), ZkError>;
}

/// One session. Dropping the last handle closes it, which removes its
/// ephemeral nodes at once (a planned handoff relies on that).
#[async_trait::async_trait]
pub trait Session: Send + Sync {
    /// The negotiated session timeout.
    fn timeout(&self) -> Duration;

    /// A node's data and version. `NoNode` if it does not exist.
    async fn get_data(&self, path: &str) -> Result<(Vec<u8>, i32), zkc::Error>;

    /// A node's children's names. `NoNode` if it does not exist.
    async fn list_children(&self, path: &str) -> Result<Vec<String>, zkc::Error>;

    /// Whether a node exists.
    async fn exists(&self, path: &str) -> Result<bool, zkc::Error>;

    /// The id of the session an ephemeral node belongs to (`None` for a
    /// persistent one). `NoNode` if it does not exist.
    async fn owner(&self, path: &str) -> Result<Option<u64>, zkc::Error>;

    /// Deletes a node, whatever its version.
    async fn delete(&self, path: &str) -> Result<(), zkc::Error>;

    /// Creates the persistent node `path` holding `data`, and any missing
    /// ancestors (empty). Unfenced: for cluster records written before
    /// leading. `NodeExists` if it is there already.
    async fn create(&self, path: &str, data: &[u8]) -> Result<(), zkc::Error>;

    /// Joins the election under `dir` (Curator's LeaderLatch: an
    /// ephemeral-sequential node carrying `data`, each contender watching
    /// only its predecessor) and returns the latch node's path once it is
    /// the lowest, which makes this session the leader.
    ///
    /// Cancel-safe: dropping the future withdraws the candidacy. Fails with
    /// `SessionExpired` if the session ends first.
    async fn contend(&self, dir: &str, data: &[u8]) -> Result<String, zkc::Error>;

    /// Creates this session's ephemeral node under `dir` (its name is the
    /// session's id, so a retry after a lost answer finds its own node) and
    /// returns its path: it lives exactly as long as the session.
    async fn register(&self, dir: &str, data: &[u8]) -> Result<String, zkc::Error>;

    /// Carries out `ops` in one multi-op, all or none, with a check that the
    /// node `latch` still exists; returns the version of each node written
    /// or checked, in order.
    async fn fenced(&self, latch: &str, ops: &[FencedOp<'_>]) -> Result<Vec<i32>, FenceError>;

    /// Watches every node below `dir`: yields the path of each node created,
    /// changed or deleted, until the session ends. Events may be missed
    /// while disconnected, so a reader also re-reads now and then.
    async fn watch_tree(&self, dir: &str) -> Result<mpsc::UnboundedReceiver<String>, zkc::Error>;
}

/// A write made only while the writer's latch node exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencedOp<'a> {
    /// Set `path` to `data`, if its version is `expected` (when given).
    Set {
        /// The node.
        path: &'a str,
        /// Its new content.
        data: &'a [u8],
        /// The version it must be at.
        expected: Option<i32>,
    },
    /// Create the persistent node `path` holding `data`.
    Create {
        /// The node.
        path: &'a str,
        /// Its content.
        data: &'a [u8],
    },
    /// Check that `path` is still at `version` (writes nothing).
    Check {
        /// The node.
        path: &'a str,
        /// The version it must be at.
        version: i32,
    },
}

impl FencedOp<'_> {
    /// The node the operation is on.
    pub fn path(&self) -> &str {
        match self {
            FencedOp::Set { path, .. } | FencedOp::Create { path, .. } | FencedOp::Check { path, .. } => path,
        }
    }
}

/// Why a fenced write did not happen.
#[derive(Debug, Clone, thiserror::Error)]
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
        #[source]
        source: zkc::Error,
    },
    /// The write failed for another reason (connection loss, ...): its outcome is unknown.
    #[error("ZooKeeper write to {path} failed: {source}")]
    Zk {
        /// The node written.
        path: String,
        /// What the client said.
        #[source]
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

/// A session's state changes, in order. After the session ends it yields
/// `Closed` forever.
#[derive(Debug)]
pub struct SessionEvents(mpsc::UnboundedReceiver<SessionState>);

impl SessionEvents {
    /// A sender of events and the stream it feeds.
    pub fn channel() -> (mpsc::UnboundedSender<SessionState>, SessionEvents) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, SessionEvents(rx))
    }

    /// The next state change.
    ///
    /// Cancel-safe: no event is lost when the future is dropped.
    pub async fn changed(&mut self) -> SessionState {
        self.0.recv().await.unwrap_or(SessionState::Closed)
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
