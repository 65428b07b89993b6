//! The supervisor's role as a pure state machine: ZooKeeper and signal
//! events in, actions out. Every supervisor is a worker that runs the tasks
//! assigned to it; one of them also leads, which only means it assigns
//! tasks. The rules that keep a doubtful worker from emitting, and that
//! keep a lost leadership from touching the tasks, live here, apart from
//! all I/O, so they can be tested exhaustively; `supervisor` only carries
//! the actions out.

/// What this supervisor is, as far as it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Has a session but no worker node yet.
    Joining,
    /// Its worker node exists: it runs the tasks assigned to it.
    Worker {
        /// The connection is lost and the session may or may not live:
        /// tasks hold still and nothing is assigned.
        suspended: bool,
        /// The epoch of its leadership, while it also leads.
        leader: Option<u64>,
    },
    /// Shutting down; nothing more happens.
    Stopped,
}

/// Something that happened to this supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Its worker node was created.
    Registered,
    /// Won the latch and bumped the epoch to `epoch`.
    Elected {
        /// The new epoch.
        epoch: u64,
    },
    /// The connection to ZooKeeper dropped; the session may still live.
    ConnectionLost,
    /// The connection is back on the same session.
    Reconnected {
        /// Our worker node is still there.
        registered: bool,
        /// Our latch node is still there (true when not leading).
        latch_held: bool,
    },
    /// The session expired or was closed.
    SessionEnded,
    /// A task's fenced write found our worker node gone.
    Unregistered,
    /// A leader's fenced write found our latch node gone.
    Deposed,
    /// SIGTERM or SIGINT.
    ShutdownRequested,
}

/// What the supervisor must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start running the tasks assigned here.
    RunTasks,
    /// Hold every task: no batch, no barrier, no commit.
    PauseTasks,
    /// Let held tasks go on.
    ResumeTasks,
    /// Withdraw from the election, then stop every task at once,
    /// committing nothing more.
    StopTasks,
    /// Every task takes a final checkpoint, commits and publishes it, and stops.
    FinishTasks,
    /// Start assigning tasks.
    Lead,
    /// Stop assigning tasks (the tasks themselves run on).
    StopLeading,
    /// Join the election again on the same session.
    Contend,
    /// Delete our latch node so a follower takes over without waiting for expiry.
    ReleaseLatch,
    /// Drop the session, open a new one and join again.
    Rejoin,
    /// Exit the process (closing the session removes the worker node, so
    /// the leader gives its tasks away at once).
    Exit,
}

/// The next role and the actions that get there.
pub fn step(role: Role, event: Event) -> (Role, Vec<Action>) {
    use Action::*;
    match (role, event) {
        (Role::Stopped, _) => (Role::Stopped, vec![]),
        (_, Event::ShutdownRequested) => match role {
            Role::Worker {
                suspended: false,
                leader,
            } => {
                let release = leader.map(|_| ReleaseLatch);
                let actions = [Some(FinishTasks), release, Some(Exit)];
                (Role::Stopped, actions.into_iter().flatten().collect())
            }
            // In doubt nothing can commit: stop without waiting for it.
            Role::Worker { suspended: true, .. } => (Role::Stopped, vec![StopTasks, Exit]),
            _ => (Role::Stopped, vec![Exit]),
        },
        (Role::Joining, Event::Registered) => (
            Role::Worker {
                suspended: false,
                leader: None,
            },
            vec![RunTasks],
        ),
        (Role::Joining, Event::SessionEnded) => (Role::Joining, vec![Rejoin]),
        (Role::Joining, _) => (Role::Joining, vec![]),
        (
            Role::Worker {
                suspended,
                leader: None,
            },
            Event::Elected { epoch },
        ) => (
            Role::Worker {
                suspended,
                leader: Some(epoch),
            },
            vec![Lead],
        ),
        // A second election while leading cannot happen with one latch node; ignore it.
        (Role::Worker { leader: Some(_), .. }, Event::Elected { .. }) => (role, vec![]),
        (Role::Worker { leader, .. }, Event::ConnectionLost) => (
            Role::Worker {
                suspended: true,
                leader,
            },
            vec![PauseTasks],
        ),
        (
            Role::Worker { suspended, leader },
            Event::Reconnected {
                registered: true,
                latch_held,
            },
        ) => {
            let mut actions = Vec::new();
            if suspended {
                actions.push(ResumeTasks);
            }
            let leader = match leader {
                Some(_) if !latch_held => {
                    actions.extend([StopLeading, Contend]);
                    None
                }
                leader => leader,
            };
            (
                Role::Worker {
                    suspended: false,
                    leader,
                },
                actions,
            )
        }
        (
            Role::Worker { leader, .. },
            Event::Reconnected { registered: false, .. } | Event::SessionEnded | Event::Unregistered,
        ) => {
            // The leadership goes first: a session that lives on (its
            // worker node removed by a peer) must not hold the election
            // back while its tasks stop.
            let stop_leading = leader.map(|_| StopLeading);
            let actions = [stop_leading, Some(StopTasks), Some(Rejoin)];
            (Role::Joining, actions.into_iter().flatten().collect())
        }
        (
            Role::Worker {
                suspended,
                leader: Some(_),
            },
            Event::Deposed,
        ) => (
            Role::Worker {
                suspended,
                leader: None,
            },
            vec![StopLeading, Contend],
        ),
        (Role::Worker { leader: None, .. }, Event::Deposed) => (role, vec![]),
        (Role::Worker { .. }, Event::Registered) => (role, vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [Event; 10] = [
        Event::Registered,
        Event::Elected { epoch: 7 },
        Event::ConnectionLost,
        Event::Reconnected {
            registered: true,
            latch_held: true,
        },
        Event::Reconnected {
            registered: true,
            latch_held: false,
        },
        Event::Reconnected {
            registered: false,
            latch_held: true,
        },
        Event::SessionEnded,
        Event::Unregistered,
        Event::Deposed,
        Event::ShutdownRequested,
    ];

    /// What the tasks and the assigning are doing, as the actions so far have left them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Doing {
        tasks: Tasks,
        leading: bool,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Tasks {
        None,
        Running,
        Paused,
    }

    fn apply(doing: Doing, action: Action) -> Doing {
        let tasks = match action {
            Action::RunTasks | Action::ResumeTasks => Tasks::Running,
            Action::PauseTasks => Tasks::Paused,
            Action::StopTasks | Action::FinishTasks => Tasks::None,
            _ => doing.tasks,
        };
        let leading = match action {
            Action::Lead => true,
            Action::StopLeading | Action::Exit => false,
            _ => doing.leading,
        };
        Doing { tasks, leading }
    }

    type Trace = [(Role, Event, Role, Vec<Action>)];

    /// Walks every sequence of `depth` events from a fresh session.
    fn every_run(depth: usize, check: &mut impl FnMut(&Trace)) {
        fn walk(
            role: Role,
            trace: &mut Vec<(Role, Event, Role, Vec<Action>)>,
            depth: usize,
            check: &mut impl FnMut(&Trace),
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
        walk(Role::Joining, &mut Vec::new(), depth, check);
    }

    #[test]
    fn tasks_run_only_on_a_connected_worker_and_only_a_leader_assigns() {
        every_run(6, &mut |trace| {
            let mut doing = Doing {
                tasks: Tasks::None,
                leading: false,
            };
            for (_, event, next, actions) in trace {
                for action in actions {
                    doing = apply(doing, *action);
                }
                assert!(
                    doing.tasks != Tasks::Running || matches!(next, Role::Worker { suspended: false, .. }),
                    "tasks run as {next:?} after {event:?}: {trace:?}"
                );
                assert!(
                    doing.tasks == Tasks::None || matches!(next, Role::Worker { .. }),
                    "tasks left over: {trace:?}"
                );
                assert_eq!(
                    doing.leading,
                    matches!(next, Role::Worker { leader: Some(_), .. }),
                    "assigning as {next:?}: {trace:?}"
                );
            }
        });
    }

    #[test]
    fn losing_the_session_stops_everything_and_rejoins() {
        every_run(5, &mut |trace| {
            if let Some((before @ Role::Worker { .. }, event, next, actions)) = trace.last() {
                let lost = matches!(
                    event,
                    Event::SessionEnded | Event::Unregistered | Event::Reconnected { registered: false, .. }
                );
                if lost {
                    assert_eq!(*next, Role::Joining);
                    let first_task_action = actions.iter().find(|a| **a != Action::StopLeading);
                    assert_eq!(first_task_action, Some(&Action::StopTasks));
                    // The leadership goes before the tasks are stopped.
                    assert!(!actions.contains(&Action::StopLeading) || actions[0] == Action::StopLeading);
                    assert_eq!(actions.last(), Some(&Action::Rejoin));
                }
                if *next == Role::Joining {
                    assert!(lost, "{before:?} stopped working on {event:?}");
                }
            }
        });
    }

    #[test]
    fn losing_the_leadership_leaves_the_tasks_alone() {
        every_run(5, &mut |trace| {
            if let Some((Role::Worker { leader: Some(_), .. }, event, next, actions)) = trace.last() {
                if matches!(next, Role::Worker { leader: None, .. }) {
                    assert!(
                        matches!(
                            event,
                            Event::Deposed
                                | Event::Reconnected {
                                    registered: true,
                                    latch_held: false
                                }
                        ),
                        "{trace:?}"
                    );
                    assert!(
                        !actions
                            .iter()
                            .any(|a| matches!(a, Action::StopTasks | Action::PauseTasks)),
                        "{trace:?}"
                    );
                    assert_eq!(actions[actions.len() - 2..], [Action::StopLeading, Action::Contend]);
                }
            }
        });
    }

    #[test]
    fn only_a_connected_worker_hands_off_and_it_finishes_first() {
        every_run(5, &mut |trace| {
            for (before, _, _, actions) in trace {
                if actions.contains(&Action::FinishTasks) {
                    assert!(matches!(before, Role::Worker { suspended: false, .. }), "{trace:?}");
                    assert_eq!(actions[0], Action::FinishTasks);
                }
                if actions.contains(&Action::ReleaseLatch) {
                    assert!(matches!(before, Role::Worker { leader: Some(_), .. }), "{trace:?}");
                }
            }
        });
    }

    #[test]
    fn nothing_happens_after_stopping() {
        for event in EVENTS {
            assert_eq!(step(Role::Stopped, event), (Role::Stopped, vec![]));
        }
        for suspended in [false, true] {
            for leader in [None, Some(1)] {
                let (next, actions) = step(Role::Worker { suspended, leader }, Event::ShutdownRequested);
                assert_eq!((next, actions.last()), (Role::Stopped, Some(&Action::Exit)));
            }
        }
    }
}
