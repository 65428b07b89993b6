//! The simulated world every simulated supervisor shares: the ZooKeeper
//! tree and sessions, the storage dir's objects (as the checker sees them),
//! the sink files, what each supervisor process is suffering (paused,
//! disconnected, killed), the fault rates, and the one seeded random
//! source. One lock, never held across an await.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::coord::SessionState;

/// A znode.
#[derive(Debug, Clone)]
pub struct Znode {
    pub data: Vec<u8>,
    pub version: i32,
    /// The session owning an ephemeral node.
    pub owner: Option<u64>,
}

/// A session with the simulated ensemble.
#[derive(Debug)]
pub struct SessionRecord {
    /// The supervisor process it belongs to.
    pub node: usize,
    /// Its process's false alarms when it opened: its nodes may be removed
    /// by a peer only after another (or once the process is killed).
    pub alarms_at_start: u32,
    /// Still valid: not expired, not closed.
    pub alive: bool,
    /// Where its state changes go; `None` once the session has ended and said so.
    pub events: Option<mpsc::UnboundedSender<SessionState>>,
    /// Its watches: a directory and where to send changed paths.
    pub watches: Vec<(String, mpsc::UnboundedSender<String>)>,
    /// The session expired while its process could not hear it (paused or
    /// cut off); it hears once it can.
    pub expiry_unheard: bool,
}

/// What one supervisor process is going through.
#[derive(Debug, Default, Clone)]
pub struct Process {
    pub paused: bool,
    /// Killed with `kill -9`: it never does anything again.
    pub killed: bool,
    /// Killed in a way its peers cannot see (its host lost, say): only
    /// its session's expiry tells.
    pub silently: bool,
    /// Its connection to ZooKeeper is down, since when.
    pub disconnected: Option<Instant>,
    /// Asked to shut down (SIGTERM).
    pub shutting_down: bool,
    /// How many times its peers wrongly took it for dead (a connection
    /// reset and a port refused, say, by a firewall's reject rule).
    pub false_alarms: u32,
    /// When it last suffered or recovered from a fault that gives it a
    /// reason to stop or restart a job (a pause, a lost connection or
    /// session, a signal): a job that ends long after had no reason to.
    pub last_fault: Option<Instant>,
}

/// How often each kind of fault strikes, in percent of requests.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rates {
    /// A ZooKeeper read fails with a timeout (the session lives on).
    pub read_failure: u64,
    /// A fenced write is applied but reported lost, and the connection drops.
    pub ambiguous_write: u64,
    /// A fenced write gets no answer in time and is not applied; the
    /// connection and the session live on.
    pub write_timeout: u64,
    /// A storage request fails.
    pub storage_failure: u64,
    /// A storage write hangs past every deadline.
    pub storage_hang: u64,
    /// A job asked to stop is blocked in a host call and takes seconds to.
    pub slow_stop: u64,
}

/// Everything under the lock.
pub struct State {
    pub rng: fastrand::Rng,
    pub tree: BTreeMap<String, Znode>,
    pub sessions: BTreeMap<u64, SessionRecord>,
    pub next_session: u64,
    pub next_sequence: u64,
    pub processes: Vec<Process>,
    pub rates: Rates,
    /// Objects under this prefix cannot be read (the store fails the request).
    pub unreadable: Option<String>,
    /// Objects under this prefix take an hour to read (as a storage dir
    /// that accepts the connection and never answers).
    pub hanging: Option<String>,
    /// The storage dir's objects, as written (the checker reads them here).
    pub objects: BTreeMap<String, Vec<u8>>,
    /// Sink files by path, and what a `read_committed` reader sees of
    /// each topic by its name.
    pub sinks: BTreeMap<String, Vec<u8>>,
    /// Topics' transactional state by name.
    pub topics: BTreeMap<String, super::kafka::Topic>,
    /// Tasks released by a handoff.
    pub handoffs: u64,
    /// Rules found broken, with the seed's story so far.
    pub violations: Vec<String>,
    /// Every fault has healed and no more strike.
    pub healed: bool,
    /// What happened, in order, when `WEIR_SIM_TRACE` is set.
    pub trace: Option<Vec<String>>,
}

/// The shared world.
pub struct World {
    state: Mutex<State>,
    /// Notified on every change a waiter may care about (a latch node gone,
    /// a process resumed).
    pub changed: Notify,
}

impl World {
    /// An empty world whose randomness comes from `seed`.
    pub fn new(seed: u64) -> Arc<World> {
        Arc::new(World {
            state: Mutex::new(State {
                rng: fastrand::Rng::with_seed(seed),
                tree: BTreeMap::new(),
                sessions: BTreeMap::new(),
                next_session: 1,
                next_sequence: 0,
                processes: Vec::new(),
                rates: Rates::default(),
                unreadable: None,
                hanging: None,
                objects: BTreeMap::new(),
                sinks: BTreeMap::new(),
                topics: BTreeMap::new(),
                handoffs: 0,
                violations: Vec::new(),
                healed: false,
                trace: std::env::var_os("WEIR_SIM_TRACE").map(|_| Vec::new()),
            }),
            changed: Notify::new(),
        })
    }

    /// The state, locked.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("sim world lock")
    }

    /// Waits until process `node` is as `ready` says.
    async fn until(&self, node: usize, ready: impl Fn(&Process) -> bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready(&self.lock().processes[node]) {
                return;
            }
            notified.await;
        }
    }

    /// Waits while process `node` is paused; never returns once it is killed.
    pub async fn running(&self, node: usize) {
        self.until(node, |process| !process.paused && !process.killed).await;
    }

    /// Resolves once process `node` is killed where its peers see it, or
    /// they next take it for dead: what [`Liveness`](crate::liveness::Liveness) sees.
    pub async fn died(&self, node: usize) {
        let alarms = self.lock().processes[node].false_alarms;
        (self.until(node, |process| {
            (process.killed && !process.silently) || process.false_alarms > alarms
        }))
        .await;
    }

    /// A request's time on the wire: a few random milliseconds, during which
    /// the process may be paused (then it waits until resumed).
    pub async fn latency(&self, node: usize) {
        self.running(node).await;
        let ms = self.lock().rng.u64(0..4);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.running(node).await;
    }

    /// Whether a fault of this rate strikes now.
    pub fn strikes(&self, rate: fn(&Rates) -> u64) -> bool {
        let mut state = self.lock();
        let percent = rate(&state.rates);
        percent > 0 && state.rng.u64(0..100) < percent
    }

    /// Records a broken rule.
    pub fn violation(&self, what: String) {
        self.lock().violations.push(what);
    }
}

impl State {
    /// Notes an event in the trace, if one is kept.
    pub fn note(&mut self, what: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{:?} {}", tokio::time::Instant::now(), what()));
        }
    }

    /// Sends `state` to session `id`, if it still listens.
    pub fn tell(&mut self, id: u64, state: SessionState) {
        if let Some(session) = self.sessions.get_mut(&id) {
            if let Some(events) = &session.events {
                let _ = events.send(state);
            }
            if state.is_terminated() {
                session.events = None;
                session.watches.clear();
            }
        }
    }

    /// The live session of process `node`, if any.
    pub fn session_of(&self, node: usize) -> Option<u64> {
        self.sessions
            .iter()
            .find(|(_, s)| s.node == node && s.alive)
            .map(|(id, _)| *id)
    }

    /// Ends session `id`: its ephemeral nodes go at once.
    pub fn end_session(&mut self, id: u64) -> bool {
        let Some(session) = self.sessions.get_mut(&id) else {
            return false;
        };
        if !session.alive {
            return false;
        }
        session.alive = false;
        let ephemeral: Vec<String> = self
            .tree
            .iter()
            .filter(|(_, z)| z.owner == Some(id))
            .map(|(path, _)| path.clone())
            .collect();
        for path in ephemeral {
            self.tree.remove(&path);
            self.notify_watchers(&path);
        }
        true
    }

    /// The session holding the lowest latch node: the leader's.
    pub fn leader_session(&self) -> Option<u64> {
        self.tree
            .iter()
            .filter(|(path, z)| path.contains("/leader-latch/") && z.owner.is_some())
            .min_by_key(|(path, _)| path.rsplit('-').next().unwrap_or_default().to_string())?
            .1
            .owner
    }

    /// The process whose session holds the lowest latch node: the leader.
    pub fn leader(&self) -> Option<usize> {
        let session = self.leader_session()?;
        self.sessions.get(&session).map(|s| s.node)
    }

    /// Tells every live watch over `path` that it changed.
    pub fn notify_watchers(&mut self, path: &str) {
        for session in self.sessions.values().filter(|s| s.alive) {
            for (dir, tx) in &session.watches {
                if path
                    .strip_prefix(dir.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
                {
                    let _ = tx.send(path.to_string());
                }
            }
        }
    }

    /// Notes a fault (or its healing) on process `node`: its jobs may now stop or restart.
    pub fn fault(&mut self, node: usize) {
        self.processes[node].last_fault = Some(Instant::now());
        let process = self.processes[node].clone();
        self.note(|| format!("node {node}: {process:?}"));
    }
}
