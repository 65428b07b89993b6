//! What a supervisor remembers of the tasks it ran, for the REST API and
//! the dashboard: their recent checkpoints (duration, size, and failures,
//! which ZooKeeper never sees) and attempts (when each started and ended,
//! and why). In memory and bounded: like a Flink JobManager's history it
//! goes with the process, while what a restore needs is in ZooKeeper and
//! the storage dir. Each replica serves what it saw; the dashboard merges
//! them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// Checkpoints kept per job on one supervisor.
pub const CHECKPOINTS_KEPT: usize = 100;
/// Attempts kept per job on one supervisor.
pub const ATTEMPTS_KEPT: usize = 50;

/// One checkpoint of a task, committed or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointRecord {
    /// The task it is of.
    pub task: u32,
    /// Checkpoint id.
    pub id: u64,
    /// The generation of the task's assignment that took it.
    pub epoch: u64,
    /// When its barrier was taken (ms since the Unix epoch).
    pub started_ms: u64,
    /// From its barrier until it committed (its output published) or failed.
    pub duration_ms: u64,
    /// What it wrote to the storage dir: snapshot and output.
    pub bytes: u64,
    /// `committed` or `failed`.
    pub result: &'static str,
    /// Why it failed.
    pub error: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptEnd {
    /// It failed, and was restarted or failed the task.
    Failed,
    /// ZooKeeper stopped answering; it resumed from its last checkpoint.
    Interrupted,
    /// It was cancelled, or its job deployed again, or its task given to
    /// another worker without a final checkpoint.
    Stopped,
    /// This supervisor lost its lead or its worker node.
    Deposed,
    /// It took a final checkpoint and published it, as it does when
    /// handed off to another worker or when its supervisor shuts down.
    Finished,
}

/// One attempt of a task on this supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    /// The task it ran.
    pub task: u32,
    /// This supervisor's id.
    pub worker: String,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// When it ended; `null` while it runs.
    pub ended_ms: Option<u64>,
    /// How it ended; `null` while it runs.
    pub end: Option<AttemptEnd>,
    /// Why it failed or was interrupted.
    pub error: Option<String>,
}

/// One job's history on this supervisor, newest last.
#[derive(Debug, Default)]
struct JobHistory {
    checkpoints: VecDeque<CheckpointRecord>,
    attempts: VecDeque<AttemptRecord>,
}

/// Every job's history on this supervisor.
#[derive(Debug, Default)]
pub struct History {
    jobs: Mutex<BTreeMap<String, JobHistory>>,
}

/// Appends to a bounded queue, dropping the oldest item `done` says is
/// done (an attempt still running stays), else the oldest.
fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, kept: usize, done: impl Fn(&T) -> bool) {
    if queue.len() >= kept {
        let oldest = queue.iter().position(done).unwrap_or(0);
        queue.remove(oldest);
    }
    queue.push_back(item);
}

impl History {
    fn with_job<R>(&self, job: &str, f: impl FnOnce(&mut JobHistory) -> R) -> R {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        f(jobs.entry(job.to_string()).or_default())
    }

    /// Records a checkpoint that committed or failed.
    pub fn checkpoint(&self, job: &str, record: CheckpointRecord) {
        self.with_job(job, |h| {
            push_bounded(&mut h.checkpoints, record, CHECKPOINTS_KEPT, |_| true)
        });
    }

    /// Records that an attempt of `task` started now.
    pub fn attempt_started(&self, job: &str, task: u32, worker: &str, now_ms: u64) {
        let record = AttemptRecord {
            task,
            worker: worker.to_string(),
            started_ms: now_ms,
            ended_ms: None,
            end: None,
            error: None,
        };
        self.with_job(job, |h| {
            push_bounded(&mut h.attempts, record, ATTEMPTS_KEPT, |a: &AttemptRecord| {
                a.ended_ms.is_some()
            })
        });
    }

    /// Records how the running attempt of `task` ended.
    pub fn attempt_ended(&self, job: &str, task: u32, now_ms: u64, end: AttemptEnd, error: Option<String>) {
        self.with_job(job, |h| {
            let running = h
                .attempts
                .iter_mut()
                .rev()
                .find(|a| a.task == task && a.ended_ms.is_none());
            if let Some(attempt) = running {
                attempt.ended_ms = Some(now_ms);
                attempt.end = Some(end);
                attempt.error = error;
            }
        });
    }

    /// Reads a job's history, if this supervisor has one (a read never
    /// adds a job, whatever name it asks for).
    fn read<T>(&self, job: &str, f: impl FnOnce(&JobHistory) -> Vec<T>) -> Vec<T> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get(job).map(f).unwrap_or_default()
    }

    /// A job's checkpoints, newest first.
    pub fn checkpoints(&self, job: &str) -> Vec<CheckpointRecord> {
        self.read(job, |h| h.checkpoints.iter().rev().cloned().collect())
    }

    /// A job's attempts, newest first.
    pub fn attempts(&self, job: &str) -> Vec<AttemptRecord> {
        self.read(job, |h| h.attempts.iter().rev().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(id: u64) -> CheckpointRecord {
        CheckpointRecord {
            task: 0,
            id,
            epoch: 1,
            started_ms: id * 1000,
            duration_ms: 5,
            bytes: 10,
            result: "committed",
            error: None,
        }
    }

    #[test]
    fn keeps_the_newest_checkpoints_newest_first() {
        let history = History::default();
        for id in 0..CHECKPOINTS_KEPT as u64 + 5 {
            history.checkpoint("a", checkpoint(id));
        }
        let kept = history.checkpoints("a");
        assert_eq!(kept.len(), CHECKPOINTS_KEPT);
        assert_eq!(kept[0].id, CHECKPOINTS_KEPT as u64 + 4);
        assert_eq!(kept.last().unwrap().id, 5);
        assert!(history.checkpoints("b").is_empty());
        assert_eq!(history.jobs.lock().unwrap().len(), 1, "a read added a job");
    }

    #[test]
    fn an_attempt_ends_the_running_one_of_its_task() {
        let history = History::default();
        history.attempt_started("a", 0, "s1", 10);
        history.attempt_started("a", 1, "s1", 11);
        history.attempt_ended("a", 0, 20, AttemptEnd::Failed, Some("trap".into()));
        history.attempt_started("a", 0, "s1", 30);
        let attempts = history.attempts("a");
        assert_eq!(attempts.len(), 3);
        assert_eq!((attempts[0].task, attempts[0].ended_ms), (0, None));
        assert_eq!((attempts[1].task, attempts[1].ended_ms), (1, None));
        assert_eq!(attempts[2].end, Some(AttemptEnd::Failed));
        assert_eq!(attempts[2].error.as_deref(), Some("trap"));
        // A task failing over and over does not push out another's running attempt.
        for at in 0..ATTEMPTS_KEPT as u64 * 2 {
            history.attempt_started("a", 0, "s1", 100 + at);
            history.attempt_ended("a", 0, 100 + at, AttemptEnd::Failed, None);
        }
        let attempts = history.attempts("a");
        assert_eq!(attempts.len(), ATTEMPTS_KEPT);
        assert!(
            attempts.iter().any(|a| a.task == 1 && a.ended_ms.is_none()),
            "{attempts:?}"
        );
    }
}
