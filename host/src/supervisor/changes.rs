//! One watch over the cluster's znodes, telling the worker and the leader
//! when something they act on changed: a spec, an assignment or a handoff
//! asked for the worker (and a job failed for good, or its own node
//! removed by a peer), a spec, an
//! assignment, a task's status, a worker or a request of the CLI's
//! (drain, rebalance) for the leader. Checkpoint pointers, which change
//! with every checkpoint, wake neither.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::ha::Layout;

/// How long changes must pause before they are acted on: a burst of
/// deploys, or of a leader's assignments, costs one pass, not one each.
const QUIET: Duration = Duration::from_millis(20);

/// Who should look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wake {
    /// The worker's tasks may have changed.
    pub worker: bool,
    /// The leader's assignments may need to.
    pub leader: bool,
}

/// The watch, and changes heard but not yet acted on: kept here, across
/// the session loop's turns, because its select drops the waiting future
/// whenever another branch wins.
pub struct Changes {
    events: Option<mpsc::UnboundedReceiver<String>>,
    jobs_dir: String,
    /// This session's worker node: gone, the worker must join again.
    own: String,
    /// Where changes concern the leader alone: workers, drains, rebalance.
    leader_only: [String; 3],
    heard: Wake,
    due: Option<Instant>,
}

impl Changes {
    /// Changes heard on `events` (none if there is no watch: the loop's
    /// periodic pass is then all there is).
    pub fn new(events: Option<mpsc::UnboundedReceiver<String>>, layout: &Layout, own: &str) -> Changes {
        Changes {
            events,
            jobs_dir: format!("{}/", layout.jobs()),
            own: own.to_string(),
            leader_only: [
                format!("{}/", layout.workers()),
                format!("{}/", layout.drains()),
                layout.rebalance(),
            ],
            heard: Wake::default(),
            due: None,
        }
    }

    /// Who a change of `path` concerns.
    fn concerns(&self, path: &str) -> Wake {
        if path == self.own {
            return Wake {
                worker: true,
                leader: true,
            };
        }
        if self.leader_only.iter().any(|prefix| path.starts_with(prefix.as_str())) {
            return Wake {
                worker: false,
                leader: true,
            };
        }
        let Some(rest) = path.strip_prefix(&self.jobs_dir) else {
            return Wake::default();
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            // A spec, or a task's assignment (its `tasks` dir too).
            [_] | [_, "tasks", _] => Wake {
                worker: true,
                leader: true,
            },
            [_, "status"] => Wake {
                worker: true,
                leader: false,
            },
            [_, "tasks", _, "status"] => Wake {
                worker: false,
                leader: true,
            },
            [_, "tasks", _, "handoff"] => Wake {
                worker: true,
                leader: false,
            },
            _ => Wake::default(),
        }
    }

    /// Resolves once something changed and nothing more for [`QUIET`].
    /// Never resolves without a watch.
    ///
    /// Cancel-safe.
    pub async fn changed(&mut self) -> Wake {
        loop {
            let Some(events) = &mut self.events else {
                return std::future::pending().await;
            };
            let event = match self.due {
                Some(due) => match tokio::time::timeout_at(due, events.recv()).await {
                    Ok(event) => event,
                    Err(_) => {
                        self.due = None;
                        return std::mem::take(&mut self.heard);
                    }
                },
                None => events.recv().await,
            };
            let Some(path) = event else {
                // The session ended: no more events will come, and the
                // session's own state says what happens next.
                self.events = None;
                continue;
            };
            let wake = self.concerns(&path);
            if wake != Wake::default() {
                self.heard.worker |= wake.worker;
                self.heard.leader |= wake.leader;
                self.due = Some(Instant::now() + QUIET);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_wake_nobody_and_the_rest_wakes_whom_it_concerns() {
        let layout = Layout::new("/weir", "c");
        let changes = Changes::new(None, &layout, "/weir/c/workers/00cd");
        let both = Wake {
            worker: true,
            leader: true,
        };
        assert_eq!(changes.concerns("/weir/c/jobs/a"), both);
        assert_eq!(changes.concerns("/weir/c/jobs/a/tasks/3"), both);
        assert_eq!(changes.concerns("/weir/c/jobs/a/tasks/3/checkpoint"), Wake::default());
        assert!(changes.concerns("/weir/c/jobs/a/tasks/3/status").leader);
        assert!(!changes.concerns("/weir/c/jobs/a/tasks/3/status").worker);
        assert!(changes.concerns("/weir/c/jobs/a/status").worker);
        assert!(changes.concerns("/weir/c/workers/00ab").leader);
        assert!(!changes.concerns("/weir/c/workers/00ab").worker);
        assert!(changes.concerns("/weir/c/workers/00cd").worker);
        assert!(changes.concerns("/weir/c/drains/s1").leader);
        assert!(changes.concerns("/weir/c/rebalance").leader);
        assert!(changes.concerns("/weir/c/jobs/a/tasks/3/handoff").worker);
        assert_eq!(changes.concerns("/weir/c/leader"), Wake::default());
    }
}
