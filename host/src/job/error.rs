//! How an attempt ends when it does not stop cleanly, and what that means
//! for the job: the committer and the attempt both end attempts with it.

use crate::coord::{unanswered, FenceError};

/// Why an attempt ended without a clean stop. The causes keep their chain:
/// the job's status shows it whole.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// This supervisor no longer leads: stop, do not retry.
    #[error("this supervisor no longer leads")]
    Deposed,
    /// The job was cancelled or deployed again since this deployment
    /// started: stop, do not retry.
    #[error("the job was cancelled or deployed again")]
    Superseded,
    /// ZooKeeper did not answer (connection lost, a request timed out), so
    /// whether this supervisor still leads is unknown. Not the job's fault:
    /// retry from the last checkpoint once ZooKeeper answers, and spend no
    /// restart (Curator's SUSPENDED, not a failure).
    #[error("ZooKeeper did not answer: {0:#}")]
    Interrupted(anyhow::Error),
    /// Anything else: retry from the last checkpoint after a backoff.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl AttemptError {
    /// A failed ZooKeeper request: an interruption if ZooKeeper left it
    /// unanswered, the job's failure if it refused it.
    pub fn zookeeper(what: String, error: zookeeper_client::Error) -> Self {
        let unanswered = unanswered(&error);
        let error = anyhow::Error::new(error).context(what);
        if unanswered {
            AttemptError::Interrupted(error)
        } else {
            AttemptError::Failed(error)
        }
    }
}

impl From<FenceError> for AttemptError {
    fn from(e: FenceError) -> Self {
        match e {
            FenceError::Deposed => AttemptError::Deposed,
            e if e.is_unanswered() => AttemptError::Interrupted(e.into()),
            e => AttemptError::Failed(e.into()),
        }
    }
}

/// The job's own failure (its guest, its source or sink, the storage dir).
pub fn failed(e: impl Into<anyhow::Error>) -> AttemptError {
    AttemptError::Failed(e.into())
}
