//! A supervisor replica: connect, register as a worker, run the tasks
//! assigned here and contend for the leadership (which assigns them) until
//! the session is lost or a signal asks for a handoff, then start over. It
//! keeps every running job's module compiled, so a task moved here starts
//! without a cold compile, and removes the peers it sees die, so their
//! tasks move here or elsewhere without waiting for their sessions.
//!
//! Everything it asks of the world goes through its settings' seams (the
//! coordinator, the storage dir, the executor), so the deterministic
//! simulation runs this very code.

mod changes;
mod leader;
mod peers;
mod session;
mod standby;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::coord::{Connector, SessionState};
use crate::ha::{self, Layout, StorageRecordError, SupervisorInfo};
use crate::history::History;
use crate::job::{Executor, GroupCommit, WorkerContext};
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::storage::Storage;

use session::SessionEnd;

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
    /// The tasks' recent checkpoints and attempts, for the REST API.
    pub history: Arc<History>,
    /// How long a task's checkpoint pointer waits for others to share its
    /// ZooKeeper write; zero writes each alone.
    pub group_commit: Duration,
    /// Tells when another supervisor's process died.
    pub liveness: Arc<dyn Liveness>,
}

/// Wait between two attempts to register when ZooKeeper did not answer.
const REGISTER_RETRY: Duration = Duration::from_millis(100);

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

/// Runs the replica until `shutdown` turns true.
pub async fn run(settings: SupervisorSettings, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let SupervisorSettings {
        connector,
        layout,
        storage,
        executor,
        info,
        metrics,
        history,
        group_commit,
        liveness,
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
        let record = serde_json::to_vec(&info).expect("supervisor info serializes");
        let workers_dir = layout.workers();
        // Whether the connection was up when last heard of: tasks start only on one that is.
        let mut connected = true;
        let node = loop {
            let registered = tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(()),
                state = events.changed() => {
                    note_connection(&metrics, state);
                    if state.is_terminated() {
                        tracing::warn!(?state, "ZooKeeper session ended while registering; reconnecting");
                        continue 'session;
                    }
                    connected = state == SessionState::SyncConnected;
                    continue;
                }
                registered = session.register(&workers_dir, &record) => registered,
            };
            match registered {
                Ok(node) => break node,
                Err(e) => {
                    tracing::warn!("cannot register as a worker: {e}; asking again");
                    tokio::select! {
                        biased;
                        _ = shutdown.changed() => return Ok(()),
                        () = tokio::time::sleep(REGISTER_RETRY) => {}
                    }
                }
            }
        };
        while !connected {
            let state = tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(()),
                state = events.changed() => state,
            };
            note_connection(&metrics, state);
            if state.is_terminated() {
                tracing::warn!(?state, "ZooKeeper session ended while registering; reconnecting");
                continue 'session;
            }
            connected = state == SessionState::SyncConnected;
        }
        let guard = tokio::spawn(peers::guard(
            session.clone(),
            layout.clone(),
            node.clone(),
            liveness.clone(),
            metrics.clone(),
        ));
        let group_commit = (!group_commit.is_zero())
            .then(|| GroupCommit::start(session.clone(), node.clone(), group_commit, metrics.clone()));
        let ctx = Arc::new(WorkerContext {
            session: session.clone(),
            group_commit,
            node,
            layout: layout.clone(),
            storage: storage.clone(),
            executor: executor.clone(),
            supervisor_id: info.id.clone(),
            metrics: metrics.clone(),
            history: history.clone(),
        });
        let end = session::run(ctx, &info, &mut events, &mut shutdown).await;
        guard.abort();
        metrics.zookeeper_connected.set(0);
        match end {
            SessionEnd::Lost(reason) => tracing::warn!("{reason}; joining again with a new session"),
            SessionEnd::Shutdown => return Ok(()),
        }
    }
}
