//! A supervisor replica: connect, contend for leadership, lead until the
//! session is lost or a signal asks for a handoff, then start over. While it
//! follows, it keeps the jobs' modules compiled (hot standby).
//!
//! Everything it asks of the world goes through its settings' seams (the
//! coordinator, the storage dir, the executor), so the deterministic
//! simulation runs this very code.

mod leader;
mod standby;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::coord::{Connector, SessionEvents, SessionState};
use crate::ha::{self, Event, Fence, Layout, Role, StorageRecordError, SupervisorInfo};
use crate::job::{Executor, LeaderContext};
use crate::metrics::Metrics;
use crate::storage::Storage;

pub use leader::LeaderEnd;

/// Everything a supervisor needs to run.
pub struct SupervisorSettings {
    /// Opens sessions with ZooKeeper.
    pub connector: Arc<dyn Connector>,
    /// Where this cluster's znodes live.
    pub layout: Layout,
    /// The storage dir.
    pub storage: Storage,
    /// What runs the jobs' code.
    pub executor: Arc<dyn Executor>,
    /// Who this replica is.
    pub info: SupervisorInfo,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// Wait between two attempts to bump the epoch when ZooKeeper did not answer.
const TAKE_LEAD_RETRY: Duration = Duration::from_millis(100);

/// Wait between two attempts to reach ZooKeeper.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Resolves when SIGTERM or SIGINT arrives.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        let _ = tx.send(true);
    });
    rx
}

/// Keeps `/healthz` and `weir_zookeeper_connected` true to the session's state.
fn note_connection(metrics: &Metrics, state: SessionState) {
    metrics
        .zookeeper_connected
        .set(i64::from(state == SessionState::SyncConnected));
}

/// Waits until the session ends for good.
async fn session_lost(events: &mut SessionEvents, metrics: &Metrics) -> SessionState {
    loop {
        let state = events.changed().await;
        note_connection(metrics, state);
        if state.is_terminated() {
            return state;
        }
    }
}

/// Runs the replica until `shutdown` turns true.
pub async fn run(settings: SupervisorSettings, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let SupervisorSettings {
        connector,
        layout,
        storage,
        executor,
        info,
        metrics,
    } = settings;
    tracing::info!(id = %info.id, pid = info.pid, storage = storage.url(), "supervisor starting");
    'session: loop {
        // Every select here is biased: the simulation replays a seed only
        // if nothing picks a branch at random.
        let (session, mut events) = tokio::select! {
            biased;
            _ = shutdown.changed() => return Ok(()),
            connected = connector.connect() => match connected {
                Ok(connected) => connected,
                Err(e) => {
                    tracing::error!("{e}; retrying");
                    tokio::select! {
                        biased;
                        _ = shutdown.changed() => return Ok(()),
                        _ = tokio::time::sleep(RECONNECT_DELAY) => continue,
                    }
                }
            },
        };
        match ha::check_storage(session.as_ref(), &layout, &storage.canonical_url()).await {
            Ok(()) => {}
            Err(e @ StorageRecordError::Mismatch { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!("cannot check the cluster's storage dir: {e}; reconnecting");
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return Ok(()),
                    _ = tokio::time::sleep(RECONNECT_DELAY) => continue,
                }
            }
        }
        if let Ok(Some(other)) = ha::contender_named(session.as_ref(), &layout, &info.id).await {
            tracing::warn!(
                id = %info.id,
                "another supervisor with this --id is registered (pid {}, host {}): unless it is an earlier run \
                 of this one whose session has yet to expire, give each replica its own --id",
                other.pid,
                other.host
            );
        }
        metrics.zookeeper_connected.set(1);
        tracing::info!("following");

        let latch = tokio::select! {
            biased;
            _ = shutdown.changed() => return Ok(()),
            state = session_lost(&mut events, &metrics) => {
                tracing::warn!(?state, "ZooKeeper session ended while following; reconnecting");
                continue;
            }
            latch = ha::contend(session.as_ref(), &layout, &info) => latch,
            () = standby::keep_warm(session.as_ref(), &layout, executor.as_ref()) => unreachable!("keep_warm never returns"),
        };
        let latch = match latch {
            Ok(latch) => latch,
            Err(e) => {
                tracing::warn!("{e}; rejoining the election");
                continue;
            }
        };
        // The latch is won; a ZooKeeper that does not answer the epoch bump
        // is asked again while the session lives, rather than the latch
        // thrown away with the session.
        let fence = loop {
            match Fence::take_lead(session.clone(), latch.clone(), &layout, &info).await {
                Ok(fence) => break fence,
                Err(e) if e.is_unanswered() => {
                    tracing::warn!("could not take the lead yet: {e}; asking again");
                    tokio::select! {
                        biased;
                        _ = shutdown.changed() => return Ok(()),
                        state = session_lost(&mut events, &metrics) => {
                            tracing::warn!(?state, "ZooKeeper session ended while taking the lead; reconnecting");
                            continue 'session;
                        }
                        () = tokio::time::sleep(TAKE_LEAD_RETRY) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!("could not take the lead: {e}; rejoining the election");
                    continue 'session;
                }
            }
        };
        tracing::info!(epoch = fence.epoch(), latch = fence.latch(), "became leader");
        let ctx = Arc::new(LeaderContext {
            fence: fence.clone(),
            layout: layout.clone(),
            storage: storage.clone(),
            executor: executor.clone(),
            supervisor_id: info.id.clone(),
            metrics: metrics.clone(),
        });
        metrics.leader.set(1);
        metrics.leader_epoch.set(fence.epoch() as i64);
        let (role, _) = ha::step(Role::Follower, Event::Elected { epoch: fence.epoch() });
        let end = leader::lead(ctx, role, &mut events, &mut shutdown).await;
        metrics.leader.set(0);
        metrics.leader_epoch.set(0);
        metrics.zookeeper_connected.set(0);
        match end {
            LeaderEnd::Lost(reason) => {
                tracing::warn!(epoch = fence.epoch(), "stepped down: {reason}; rejoining as a follower");
            }
            LeaderEnd::Shutdown => return Ok(()),
        }
    }
}
