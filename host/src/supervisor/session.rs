//! One ZooKeeper session of a supervisor, registered as a worker: run the
//! tasks assigned here, contend for the leadership and, while leading,
//! assign tasks; act on the session's state the way Curator does
//! (disconnected pauses every task until the session is confirmed; expired
//! stops them all). Every session event and signal goes through
//! [`ha::step`], and this loop only carries out the actions it returns.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::changes::{Changes, Wake};
use super::leader::{Deposed, Leader};
use super::standby;
use super::worker::{Unregistered, Worker};
use crate::coord::{unanswered, SessionEvents, SessionState};
use crate::ha::{self, Action, Event, Fence, Role, SupervisorInfo};
use crate::job::{Control, WorkerContext};

/// Why a session's loop ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The session (or the worker node) is gone.
    Lost(String),
    /// A signal asked to stop; a connected worker finished its tasks (and
    /// a leader released its latch) first.
    Shutdown,
}

/// How often the worker and the leader look again without a watch event:
/// a safety net, since a change triggers a pass at once.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);
/// How soon a reconnected supervisor asks again whether its nodes exist
/// when ZooKeeper did not answer (its tasks stay paused meanwhile).
const NODE_CHECK_RETRY: Duration = Duration::from_millis(100);
/// Wait between two attempts to bump the epoch when ZooKeeper did not answer.
const TAKE_LEAD_RETRY: Duration = Duration::from_millis(100);
/// Wait before joining the election again after it failed.
const CONTEND_RETRY: Duration = Duration::from_secs(1);

/// Runs the session registered as `ctx.node` until it is lost or a
/// shutdown is asked for.
pub async fn run(
    ctx: Arc<WorkerContext>,
    info: &SupervisorInfo,
    events: &mut SessionEvents,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let session = ctx.session.clone();
    let layout = ctx.layout.clone();
    let metrics = ctx.metrics.clone();
    let watch = match session.watch_tree(layout.base()).await {
        Ok(watch) => Some(watch),
        Err(e) => {
            tracing::warn!(
                "cannot watch {}, looking every {RECONCILE_INTERVAL:?} only: {e}",
                layout.base()
            );
            None
        }
    };
    let mut changes = Changes::new(watch, &layout, &ctx.node);
    let (mut worker, mut ends) = Worker::new(ctx.clone(), Control::Run);
    let mut leader: Option<Leader> = None;
    let contend = || {
        Box::pin(async {
            match ha::contend(session.as_ref(), &layout, info).await {
                Ok(latch) => Some(latch),
                Err(e) => {
                    tracing::warn!("{e}; joining the election again shortly");
                    tokio::time::sleep(CONTEND_RETRY).await;
                    None
                }
            }
        })
    };
    let mut election = Some(contend());
    // A won latch whose epoch bump went unanswered, and when to ask again.
    let mut won: Option<(String, Instant)> = None;
    let warm = standby::keep_warm(session.as_ref(), &layout, ctx.executor.as_ref());
    tokio::pin!(warm);
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    // A reconnection whose node check went unanswered, to check again then.
    let mut recheck: Option<Instant> = None;
    let mut role = Role::Joining;
    let mut next_event = Some((Event::Registered, String::new()));
    // A session state that came while a pass ran, which it cut short.
    let mut cut_short: Option<SessionState> = None;
    // Passes cut short, or asked for while suspended: made once the worker runs again.
    let mut pending = Wake::default();
    loop {
        if next_event.is_none() {
            // Biased, session first: a disconnection is acted on before anything else.
            let runs = matches!(role, Role::Worker { suspended: false, .. });
            let turn = match cut_short.take() {
                Some(state) => Turn::State(state),
                None if runs && pending != Wake::default() => Turn::Pass(std::mem::take(&mut pending)),
                None => tokio::select! {
                biased;
                state = events.changed() => Turn::State(state),
                _ = tokio::time::sleep_until(recheck.unwrap_or_else(Instant::now)), if recheck.is_some() => {
                    let event = session_event(&ctx, leader.as_ref(), SessionState::SyncConnected).await;
                    recheck = event.is_none().then(|| Instant::now() + NODE_CHECK_RETRY);
                    Turn::Event(event)
                }
                _ = shutdown.changed() => Turn::Event(Some((Event::ShutdownRequested, "shutdown requested".to_string()))),
                Some((key, id, end)) = ends.recv() => match worker.ended(&key, id, &end).await {
                    Err(Unregistered(why)) => Turn::Event(Some((Event::Unregistered, why))),
                    // A task ended: collect it (releasing a handoff), start its successor or confirm its cancellation.
                    Ok(()) => Turn::Pass(Wake { worker: true, leader: false }),
                },
                latch = async { election.as_mut().expect("guarded").await }, if election.is_some() => {
                    election = None;
                    match latch {
                        Some(latch) => won = Some((latch, Instant::now())),
                        None => election = Some(contend()),
                    }
                    Turn::Event(None)
                }
                _ = tokio::time::sleep_until(won.as_ref().map_or_else(Instant::now, |(_, at)| *at)), if won.is_some() => {
                    let (latch, _) = won.take().expect("guarded");
                    Turn::TakeLead(latch)
                }
                wake = changes.changed() => Turn::Pass(wake),
                _ = tick.tick() => Turn::Pass(Wake { worker: true, leader: true }),
                () = &mut warm => unreachable!("keep_warm never returns"),
                },
            };
            next_event = match turn {
                Turn::Event(event) => event,
                Turn::TakeLead(latch) => {
                    // Raced against the session as a pass is: a bump
                    // waiting on a lost connection must not hold its pause
                    // back. Cut short, it is asked again (with the same
                    // latch, a landed bump is bumped once more).
                    let taken = tokio::select! {
                        biased;
                        state = events.changed() => Err(state),
                        taken = Fence::take_lead(session.clone(), latch.clone(), &layout, info) => Ok(taken),
                    };
                    match taken {
                        Err(state) => {
                            won = Some((latch, Instant::now()));
                            cut_short = Some(state);
                            None
                        }
                        Ok(Ok(fence)) => {
                            let epoch = fence.epoch();
                            tracing::info!(epoch, latch = fence.latch(), "became leader");
                            leader = Some(Leader::new(fence, layout.clone()));
                            Some((Event::Elected { epoch }, "elected".to_string()))
                        }
                        Ok(Err(e)) if e.is_unanswered() => {
                            tracing::warn!("could not take the lead yet: {e}; asking again");
                            won = Some((latch, Instant::now() + TAKE_LEAD_RETRY));
                            None
                        }
                        Ok(Err(e)) => {
                            tracing::warn!("could not take the lead: {e}; joining the election again");
                            abandon(session.as_ref(), &latch).await;
                            election = Some(contend());
                            None
                        }
                    }
                }
                Turn::State(state) => {
                    let event = session_event(&ctx, leader.as_ref(), state).await;
                    recheck = (state == SessionState::SyncConnected && event.is_none())
                        .then(|| Instant::now() + NODE_CHECK_RETRY);
                    event
                }
                Turn::Pass(wake) if !runs => {
                    pending.worker |= wake.worker;
                    pending.leader |= wake.leader;
                    None
                }
                Turn::Pass(wake) => match pass_or_state(events, &mut worker, leader.as_mut(), role, wake).await {
                    Ok(event) => event,
                    Err(state) => {
                        pending.worker |= wake.worker;
                        pending.leader |= wake.leader;
                        cut_short = Some(state);
                        None
                    }
                },
            };
        }
        let Some((event, why)) = next_event.take() else {
            continue;
        };
        let (next, actions) = ha::step(role, event);
        role = next;
        let tasks_go_on = !actions
            .iter()
            .any(|a| matches!(a, Action::StopTasks | Action::FinishTasks));
        for action in actions {
            match action {
                Action::RunTasks => {
                    tracing::info!(node = %ctx.node, "working");
                    worker.set_mode(Control::Run);
                    let only = Wake {
                        worker: true,
                        leader: false,
                    };
                    match pass_or_state(events, &mut worker, None, role, only).await {
                        Ok(event) => next_event = event,
                        Err(state) => {
                            pending.worker = true;
                            cut_short = Some(state);
                        }
                    }
                }
                Action::PauseTasks => {
                    tracing::warn!("disconnected from ZooKeeper: pausing every task until the session is confirmed");
                    worker.set_mode(Control::Pause);
                }
                Action::ResumeTasks => {
                    tracing::info!("reconnected to ZooKeeper with the session intact: resuming tasks");
                    worker.set_mode(Control::Run);
                }
                Action::StopTasks => {
                    // Always on the way out of the session: a candidacy
                    // left waiting, or a won latch, would hold the election
                    // back for as long as the tasks take to stop.
                    election = None;
                    if let Some((latch, _)) = won.take() {
                        abandon(session.as_ref(), &latch).await;
                    }
                    worker.stop_all().await;
                }
                Action::FinishTasks => worker.finish_all().await,
                Action::Lead => {
                    let epoch = leader.as_ref().map_or(0, Leader::epoch);
                    metrics.leader.set(1);
                    metrics.leader_epoch.set(epoch as i64);
                    let only = Wake {
                        worker: false,
                        leader: true,
                    };
                    match pass_or_state(events, &mut worker, leader.as_mut(), role, only).await {
                        Ok(event) => next_event = event,
                        Err(state) => {
                            pending.leader = true;
                            cut_short = Some(state);
                        }
                    }
                }
                Action::StopLeading => {
                    if let Some(lost) = leader.take() {
                        if tasks_go_on {
                            tracing::warn!(epoch = lost.epoch(), "stepped down: {why}; the tasks here run on");
                        } else {
                            tracing::warn!(epoch = lost.epoch(), "stepped down: {why}");
                        }
                        // Our latch node may outlive the leadership (a check
                        // refused rather than unanswered): gone, it no longer
                        // holds back the next election, ours included.
                        abandon(session.as_ref(), lost.latch()).await;
                    }
                    metrics.leader.set(0);
                    metrics.leader_epoch.set(0);
                }
                Action::Contend => election = Some(contend()),
                Action::ReleaseLatch => {
                    if let Some(leader) = &leader {
                        tracing::info!(epoch = leader.epoch(), "handing off leadership");
                        abandon(session.as_ref(), leader.latch()).await;
                    }
                }
                Action::Rejoin => {
                    metrics.leader.set(0);
                    metrics.leader_epoch.set(0);
                    return SessionEnd::Lost(why);
                }
                Action::Exit => {
                    metrics.leader.set(0);
                    metrics.leader_epoch.set(0);
                    // The worker node goes now, so the leader gives this
                    // supervisor's tasks away at once, not a session
                    // timeout later (tasks that outlived their finish may
                    // hold the session open).
                    abandon(session.as_ref(), &ctx.node).await;
                    return SessionEnd::Shutdown;
                }
            }
        }
    }
}

/// What one turn of the session loop has to do.
enum Turn {
    /// Act on the session's state.
    State(SessionState),
    /// Act on this event, if any.
    Event(Option<(Event, String)>),
    /// Look again, as `wake` says.
    Pass(Wake),
    /// Turn this won latch into a leadership.
    TakeLead(String),
}

/// How long the removal of a node of ours may take: a supervisor that
/// cannot reach ZooKeeper leaves it to expire with the session.
const ABANDON_TIMEOUT: Duration = Duration::from_secs(1);

/// Deletes a node of this session's (its latch, its worker node), if it
/// still exists and ZooKeeper answers soon.
async fn abandon(session: &dyn crate::coord::Session, path: &str) {
    match tokio::time::timeout(ABANDON_TIMEOUT, session.delete(path)).await {
        Ok(Ok(()) | Err(zookeeper_client::Error::NoNode)) => {}
        Ok(Err(e)) => tracing::debug!("could not delete {path}: {e}"),
        Err(_) => tracing::debug!("could not delete {path} within {ABANDON_TIMEOUT:?}"),
    }
}

/// A pass, cut short by a change of the session's state, which is
/// returned to act on at once: every read and write of a pass is made
/// again at the next, so dropping one half done loses nothing, while a
/// pass waiting on a ZooKeeper that went away would hold a disconnection
/// back from the tasks it must pause.
async fn pass_or_state(
    events: &mut SessionEvents,
    worker: &mut Worker,
    leader: Option<&mut Leader>,
    role: Role,
    wake: Wake,
) -> Result<Option<(Event, String)>, SessionState> {
    tokio::select! {
        biased;
        state = events.changed() => Err(state),
        event = pass(worker, leader, role, wake) => Ok(event),
    }
}

/// One pass of the worker and (when leading) the leader, each if `wake`
/// asks and the role lets it: both act only while connected.
async fn pass(worker: &mut Worker, leader: Option<&mut Leader>, role: Role, wake: Wake) -> Option<(Event, String)> {
    let Role::Worker { suspended: false, .. } = role else {
        return None;
    };
    if wake.worker {
        if let Err(Unregistered(why)) = worker.reconcile().await {
            return Some((Event::Unregistered, why));
        }
    }
    if let (true, Some(leader)) = (wake.leader, leader) {
        if let Err(Deposed(why)) = leader.reconcile().await {
            return Some((Event::Deposed, why));
        }
    }
    None
}

/// Translates a session state into a role event, with a reason for the
/// log. A reconnection whose node checks ZooKeeper does not answer is no
/// event yet (`None`): one unanswered read is no reason to give anything
/// up, and the tasks stay paused until the check is answered.
async fn session_event(ctx: &WorkerContext, leader: Option<&Leader>, state: SessionState) -> Option<(Event, String)> {
    super::note_connection(&ctx.metrics, state);
    match state {
        SessionState::Disconnected => Some((Event::ConnectionLost, "disconnected".into())),
        SessionState::SyncConnected => {
            let registered = match ctx.session.exists(&ctx.node).await {
                Ok(found) => found,
                Err(e) if unanswered(&e) => {
                    tracing::warn!("reconnected, but the worker node check went unanswered: {e}; asking again");
                    return None;
                }
                Err(e) => {
                    return Some((
                        Event::Reconnected {
                            registered: false,
                            latch_held: false,
                        },
                        format!("cannot confirm the worker node: {e}"),
                    ))
                }
            };
            let latch_held = match leader {
                None => true,
                Some(leader) => match ctx.session.exists(leader.latch()).await {
                    Ok(found) => found,
                    Err(e) if unanswered(&e) => {
                        tracing::warn!("reconnected, but the latch check went unanswered: {e}; asking again");
                        return None;
                    }
                    Err(_) => false,
                },
            };
            let why = match (registered, latch_held) {
                (false, _) => "the worker node is gone",
                (true, false) => "the latch node is gone",
                (true, true) => "reconnected",
            };
            Some((Event::Reconnected { registered, latch_held }, why.to_string()))
        }
        state if state.is_terminated() => Some((Event::SessionEnded, format!("ZooKeeper session {state:?}"))),
        _ => None,
    }
}
