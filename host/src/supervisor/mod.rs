//! A supervisor replica: connect, contend for leadership, lead until the
//! session is lost or a signal asks for a handoff, then start over. While it
//! follows, it keeps the jobs' modules compiled (hot standby).

mod leader;
mod standby;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use zookeeper_client::SessionState;

use crate::ha::{self, Event, Fence, Layout, Role, SupervisorInfo, ZkSettings};
use crate::job::LeaderContext;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::storage::Storage;

pub use leader::LeaderEnd;

/// Everything a supervisor needs to run.
pub struct SupervisorSettings {
    /// ZooKeeper connection.
    pub zk: ZkSettings,
    /// Where this cluster's znodes live.
    pub layout: Layout,
    /// The storage dir.
    pub storage: Storage,
    /// Who this replica is.
    pub info: SupervisorInfo,
    /// Where to serve `/metrics` and `/healthz`.
    pub http: tokio::net::TcpListener,
}

/// Wait between two attempts to reach ZooKeeper.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Resolves when SIGTERM or SIGINT arrives.
fn shutdown_signal() -> watch::Receiver<bool> {
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

/// Waits until the session ends for good.
async fn session_lost(states: &mut zookeeper_client::StateWatcher) -> SessionState {
    loop {
        let state = states.changed().await;
        if state.is_terminated() {
            return state;
        }
    }
}

/// Runs the replica until SIGTERM/SIGINT.
pub async fn run(settings: SupervisorSettings) -> anyhow::Result<()> {
    let runtime = Runtime::new()?;
    let mut shutdown = shutdown_signal();
    let SupervisorSettings {
        zk,
        layout,
        storage,
        info,
        http,
    } = settings;
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(crate::http::serve(http, metrics.clone()));
    tracing::info!(id = %info.id, pid = info.pid, storage = storage.url(), zookeeper = %zk.connect, "supervisor starting");
    loop {
        let client = tokio::select! {
            client = ha::connect(&zk, zk.session_timeout) => match client {
                Ok(client) => client,
                Err(e) => {
                    tracing::error!("{e}; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RECONNECT_DELAY) => continue,
                        _ = shutdown.changed() => return Ok(()),
                    }
                }
            },
            _ = shutdown.changed() => return Ok(()),
        };
        let mut states = client.state_watcher();
        tracing::info!(session = ?client.session_id(), timeout = ?client.session_timeout(), "connected to ZooKeeper; following");

        let latch = tokio::select! {
            latch = ha::contend(&client, &layout, &info, zk.acls()) => latch,
            state = session_lost(&mut states) => {
                tracing::warn!(?state, "ZooKeeper session ended while following; reconnecting");
                continue;
            }
            () = standby::keep_warm(&client, &layout, &storage, &runtime) => unreachable!("keep_warm never returns"),
            _ = shutdown.changed() => return Ok(()),
        };
        let latch = match latch {
            Ok(latch) => latch,
            Err(e) => {
                tracing::warn!("{e}; rejoining the election");
                continue;
            }
        };
        let fence = match Fence::take_lead(latch, &layout, &info).await {
            Ok(fence) => fence,
            Err(e) => {
                tracing::warn!("could not take the lead: {e}; rejoining the election");
                continue;
            }
        };
        tracing::info!(epoch = fence.epoch(), latch = fence.latch().path(), "became leader");
        let ctx = Arc::new(LeaderContext {
            fence: fence.clone(),
            layout: layout.clone(),
            storage: storage.clone(),
            runtime: runtime.clone(),
            supervisor_id: info.id.clone(),
            metrics: metrics.clone(),
        });
        metrics.leader_epoch.store(fence.epoch(), Ordering::Relaxed);
        let (role, _) = ha::step(Role::Follower, Event::Elected { epoch: fence.epoch() });
        let end = leader::lead(ctx, role, &mut states, &mut shutdown).await;
        metrics.leader_epoch.store(0, Ordering::Relaxed);
        match end {
            LeaderEnd::Lost(reason) => {
                tracing::warn!(epoch = fence.epoch(), "stepped down: {reason}; rejoining as a follower");
            }
            LeaderEnd::Shutdown => return Ok(()),
        }
    }
}
