//! The supervisor's role as a pure state machine: ZooKeeper and signal
//! events in, actions out. The rules that keep a deposed or doubtful leader
//! from emitting live here, apart from all I/O, so they can be tested
//! exhaustively; `supervisor` only carries the actions out.

/// What this supervisor is, as far as it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Has a session and contends for the latch.
    Follower,
    /// Holds the latch in `epoch`. `suspended` while the connection is lost
    /// and the session may or may not still live.
    Leader {
        /// The fencing token of this leadership.
        epoch: u64,
        /// The connection is lost: jobs hold still.
        suspended: bool,
    },
    /// Shutting down; nothing more happens.
    Stopped,
}

/// Something that happened to this supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Won the latch and bumped the epoch to `epoch`.
    Elected {
        /// The new epoch.
        epoch: u64,
    },
    /// The connection to ZooKeeper dropped; the session may still live.
    ConnectionLost,
    /// The connection is back on the same session; `latch_held` says
    /// whether our latch node still exists.
    Reconnected {
        /// Our latch node is still there.
        latch_held: bool,
    },
    /// The session expired or was closed.
    SessionEnded,
    /// A fenced write found our latch node gone.
    Deposed,
    /// SIGTERM or SIGINT.
    ShutdownRequested,
}

/// What the supervisor must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start reconciling and running jobs.
    RunJobs,
    /// Hold every job: no batch, no barrier, no commit.
    PauseJobs,
    /// Let held jobs go on.
    ResumeJobs,
    /// Stop every job at once, committing nothing more.
    StopJobs,
    /// Every job takes a final checkpoint, commits and publishes it, and stops.
    FinishJobs,
    /// Delete our latch node so a follower takes over without waiting for expiry.
    ReleaseLatch,
    /// Drop the session, open a new one and contend again.
    Rejoin,
    /// Exit the process.
    Exit,
}

/// The next role and the actions that get there.
pub fn step(role: Role, event: Event) -> (Role, Vec<Action>) {
    use Action::*;
    match (role, event) {
        (Role::Stopped, _) => (Role::Stopped, vec![]),
        (_, Event::ShutdownRequested) => match role {
            Role::Leader { suspended: false, .. } => (Role::Stopped, vec![FinishJobs, ReleaseLatch, Exit]),
            // In doubt nothing can commit: stop without waiting for it.
            Role::Leader { suspended: true, .. } => (Role::Stopped, vec![StopJobs, Exit]),
            _ => (Role::Stopped, vec![Exit]),
        },
        (Role::Follower, Event::Elected { epoch }) => (
            Role::Leader {
                epoch,
                suspended: false,
            },
            vec![RunJobs],
        ),
        (Role::Follower, Event::SessionEnded) => (Role::Follower, vec![Rejoin]),
        (Role::Follower, _) => (Role::Follower, vec![]),
        (Role::Leader { epoch, .. }, Event::ConnectionLost) => {
            (Role::Leader { epoch, suspended: true }, vec![PauseJobs])
        }
        (Role::Leader { epoch, suspended }, Event::Reconnected { latch_held: true }) => {
            let resume = if suspended { vec![ResumeJobs] } else { vec![] };
            (
                Role::Leader {
                    epoch,
                    suspended: false,
                },
                resume,
            )
        }
        (Role::Leader { .. }, Event::Reconnected { latch_held: false } | Event::SessionEnded | Event::Deposed) => {
            (Role::Follower, vec![StopJobs, Rejoin])
        }
        // A second election while leading cannot happen with one latch node; ignore it.
        (Role::Leader { .. }, Event::Elected { .. }) => (role, vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [Event; 7] = [
        Event::Elected { epoch: 7 },
        Event::ConnectionLost,
        Event::Reconnected { latch_held: true },
        Event::Reconnected { latch_held: false },
        Event::SessionEnded,
        Event::Deposed,
        Event::ShutdownRequested,
    ];

    /// What the jobs are doing, as the actions so far have left them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Jobs {
        None,
        Running,
        Paused,
    }

    fn apply(jobs: Jobs, action: Action) -> Jobs {
        match action {
            Action::RunJobs | Action::ResumeJobs => Jobs::Running,
            Action::PauseJobs => Jobs::Paused,
            Action::StopJobs | Action::FinishJobs => Jobs::None,
            Action::ReleaseLatch | Action::Rejoin | Action::Exit => jobs,
        }
    }

    /// Walks every sequence of `depth` events from a fresh follower.
    fn every_run(depth: usize, check: &mut impl FnMut(&[(Role, Event, Role, Vec<Action>)])) {
        fn walk(
            role: Role,
            trace: &mut Vec<(Role, Event, Role, Vec<Action>)>,
            depth: usize,
            check: &mut impl FnMut(&[(Role, Event, Role, Vec<Action>)]),
        ) {
            check(trace);
            if depth == 0 {
                return;
            }
            for event in EVENTS {
                let (next, actions) = step(role, event);
                trace.push((role, event, next, actions));
                walk(next, trace, depth - 1, check);
                trace.pop();
            }
        }
        walk(Role::Follower, &mut Vec::new(), depth, check);
    }

    #[test]
    fn jobs_run_only_on_a_connected_leader() {
        every_run(6, &mut |trace| {
            let mut jobs = Jobs::None;
            for (_, event, next, actions) in trace {
                for action in actions {
                    jobs = apply(jobs, *action);
                }
                let connected_leader = matches!(next, Role::Leader { suspended: false, .. });
                assert!(
                    jobs != Jobs::Running || connected_leader,
                    "jobs run as {next:?} after {event:?}: {trace:?}"
                );
                assert!(
                    jobs == Jobs::None || matches!(next, Role::Leader { .. }),
                    "jobs left over: {trace:?}"
                );
            }
        });
    }

    #[test]
    fn losing_the_session_or_the_latch_stops_jobs_and_rejoins() {
        every_run(5, &mut |trace| {
            if let Some((before @ Role::Leader { .. }, event, next, actions)) = trace.last() {
                let lost = matches!(
                    event,
                    Event::SessionEnded | Event::Deposed | Event::Reconnected { latch_held: false }
                );
                if lost {
                    assert_eq!(
                        (*next, actions.as_slice()),
                        (Role::Follower, &[Action::StopJobs, Action::Rejoin][..])
                    );
                }
                if *next == Role::Follower {
                    assert!(lost, "{before:?} stepped down on {event:?}");
                }
            }
        });
    }

    #[test]
    fn only_a_connected_leader_hands_off_and_it_finishes_first() {
        every_run(5, &mut |trace| {
            for (before, _, _, actions) in trace {
                if let Some(release) = actions.iter().position(|a| *a == Action::ReleaseLatch) {
                    assert!(matches!(before, Role::Leader { suspended: false, .. }), "{trace:?}");
                    assert_eq!(actions[..release], [Action::FinishJobs]);
                }
            }
        });
    }

    #[test]
    fn nothing_happens_after_stopping() {
        for event in EVENTS {
            assert_eq!(step(Role::Stopped, event), (Role::Stopped, vec![]));
        }
        for role in [
            Role::Follower,
            Role::Leader {
                epoch: 1,
                suspended: true,
            },
            Role::Leader {
                epoch: 1,
                suspended: false,
            },
        ] {
            let (next, actions) = step(role, Event::ShutdownRequested);
            assert_eq!((next, actions.last()), (Role::Stopped, Some(&Action::Exit)));
        }
    }
}
