//! A job's runtime status, `jobs/<name>/status`, as the leader writes it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a job is in its life, as `weir jobs` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Deployed (or a task assigned); not started yet.
    Created,
    /// Processing.
    Running,
    /// A task handed off: stopped after a final checkpoint, to be started
    /// by the worker the leader gives it to next.
    Released,
    /// Its last attempt failed; it will restart from its last checkpoint.
    Restarting,
    /// Its restart strategy gave up; it stays stopped until deployed again.
    Failed,
    /// Stopped by `weir cancel`.
    Canceled,
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            JobState::Created => "CREATED",
            JobState::Running => "RUNNING",
            JobState::Released => "RELEASED",
            JobState::Restarting => "RESTARTING",
            JobState::Failed => "FAILED",
            JobState::Canceled => "CANCELED",
        };
        f.write_str(name)
    }
}

impl JobStatus {
    /// The status of a job just deployed (at `since_ms`), which no leader has started yet.
    pub fn created(since_ms: u64) -> JobStatus {
        JobStatus {
            state: JobState::Created,
            supervisor: None,
            epoch: 0,
            restarts: 0,
            error: None,
            since_ms,
        }
    }
}

/// A job's runtime status, in `jobs/<name>/status`, written by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Where the job is.
    pub state: JobState,
    /// The supervisor running it, if any.
    pub supervisor: Option<String>,
    /// Epoch of the leader that wrote this status.
    pub epoch: u64,
    /// Failed attempts since the job was deployed.
    pub restarts: u32,
    /// Why the last attempt failed, if it did.
    pub error: Option<String>,
    /// When this status was written (ms since the Unix epoch).
    pub since_ms: u64,
}
