//! A simulated ZooKeeper ensemble behind the real [`Connector`] and
//! [`Session`] traits: a tree of znodes with versions, sessions whose
//! ephemeral nodes go when they end, the latch recipe's ordering, watches,
//! and fenced multi-ops, with the faults a real ensemble shows (requests
//! cut off by a dropped connection, timed-out reads, writes applied but
//! reported lost, expiry while paused).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use zookeeper_client as zkc;

use super::world::{SessionRecord, State, World, Znode};
use crate::coord::{Connector, FenceError, FencedOp, Session, SessionEvents, SessionState, ZkError};

/// The session timeout every simulated session gets.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens sessions for one supervisor process.
pub struct SimConnector {
    pub world: Arc<World>,
    pub node: usize,
}

#[async_trait::async_trait]
impl Connector for SimConnector {
    async fn connect(&self) -> Result<(Arc<dyn Session>, SessionEvents), ZkError> {
        self.world.latency(self.node).await;
        let mut state = self.world.lock();
        if state.processes[self.node].disconnected.is_some() {
            return Err(ZkError::op("connect", zkc::Error::ConnectionLoss));
        }
        let id = state.next_session;
        state.next_session += 1;
        let (tx, events) = SessionEvents::channel();
        let alarms_at_start = state.processes[self.node].false_alarms;
        state.sessions.insert(
            id,
            SessionRecord {
                node: self.node,
                alarms_at_start,
                alive: true,
                events: Some(tx),
                watches: Vec::new(),
                expiry_unheard: false,
            },
        );
        let session = SimSession {
            world: self.world.clone(),
            node: self.node,
            id,
        };
        Ok((Arc::new(session), events))
    }
}

/// One simulated session. Dropping it closes the session, as dropping the
/// last zookeeper-client handle does.
pub struct SimSession {
    world: Arc<World>,
    node: usize,
    id: u64,
}

impl Drop for SimSession {
    fn drop(&mut self) {
        let mut state = self.world.lock();
        // A supervisor drops its session to rejoin the election: never
        // while the session lives and still leads, unless asked to stop,
        // or removed by a peer while it could not reach ZooKeeper to give
        // its latch up (it expires with the session, as in ZooKeeper).
        let process = &state.processes[self.node];
        let registered = (state.tree.iter()).any(|(path, z)| path.contains("/workers/") && z.owner == Some(self.id));
        let withdrawn = !registered && process.disconnected.is_some();
        let leads = state.sessions[&self.id].alive && state.leader_session() == Some(self.id);
        if leads && !withdrawn && !process.shutting_down && !process.killed {
            let what = format!("node {}: dropped a live session that still led", self.node);
            state.violations.push(what);
        }
        state.end_session(self.id);
        state.tell(self.id, SessionState::Closed);
        drop(state);
        self.world.changed.notify_waiters();
    }
}

/// A latch node whose contender has yet to win: removed if it gives up.
struct Candidacy<'a> {
    session: &'a SimSession,
    path: Option<String>,
}

impl Drop for Candidacy<'_> {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else {
            return;
        };
        let mut state = self.session.world.lock();
        if state.tree.get(&path).is_some_and(|z| z.owner == Some(self.session.id)) {
            state.tree.remove(&path);
            state.notify_watchers(&path);
            drop(state);
            self.session.world.changed.notify_waiters();
        }
    }
}

/// Makes `dir` and its ancestors, empty, where they are missing.
fn make_dirs(state: &mut State, dir: &str) {
    let mut ancestor = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        ancestor = format!("{ancestor}/{part}");
        state.tree.entry(ancestor.clone()).or_insert(Znode {
            data: Vec::new(),
            version: 0,
            owner: None,
        });
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

impl SimSession {
    /// Waits until `ready` says the world is as this session waits for it
    /// (`SessionExpired` once the session has ended), re-checking at every
    /// change of the world.
    async fn until<T>(&self, mut ready: impl FnMut(&State) -> Option<T>) -> Result<T, zkc::Error> {
        loop {
            let notified = self.world.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.world.lock();
                if !state.sessions[&self.id].alive {
                    return Err(zkc::Error::SessionExpired);
                }
                if let Some(done) = ready(&state) {
                    return Ok(done);
                }
            }
            notified.await;
        }
    }

    /// Waits out the request's latency, then checks that it can reach the
    /// ensemble at all; returns the locked state to carry it out in. A
    /// request made while cut off waits, as zookeeper-client queues it,
    /// until the connection is back or the session has ended; one in
    /// flight when the connection drops fails with `ConnectionLoss`.
    async fn request(&self) -> Result<std::sync::MutexGuard<'_, State>, zkc::Error> {
        self.until(|state| state.processes[self.node].disconnected.is_none().then_some(()))
            .await?;
        self.world.latency(self.node).await;
        let state = self.world.lock();
        let session = &state.sessions[&self.id];
        if !session.alive {
            return Err(zkc::Error::SessionExpired);
        }
        if state.processes[self.node].disconnected.is_some() {
            return Err(zkc::Error::ConnectionLoss);
        }
        Ok(state)
    }

    /// Like [`SimSession::request`], for a read, which may also time out.
    async fn read(&self) -> Result<std::sync::MutexGuard<'_, State>, zkc::Error> {
        if self.world.strikes(|r| r.read_failure) {
            self.world.latency(self.node).await;
            return Err(zkc::Error::Timeout);
        }
        self.request().await
    }
}

#[async_trait::async_trait]
impl Session for SimSession {
    fn timeout(&self) -> Duration {
        SESSION_TIMEOUT
    }

    async fn get_data(&self, path: &str) -> Result<(Vec<u8>, i32), zkc::Error> {
        let state = self.read().await?;
        let node = state.tree.get(path).ok_or(zkc::Error::NoNode)?;
        Ok((node.data.clone(), node.version))
    }

    async fn list_children(&self, path: &str) -> Result<Vec<String>, zkc::Error> {
        let state = self.read().await?;
        if !state.tree.contains_key(path) {
            return Err(zkc::Error::NoNode);
        }
        Ok(state
            .tree
            .keys()
            .filter(|p| parent(p) == path)
            .map(|p| p[path.len() + 1..].to_string())
            .collect())
    }

    async fn exists(&self, path: &str) -> Result<bool, zkc::Error> {
        Ok(self.read().await?.tree.contains_key(path))
    }

    async fn owner(&self, path: &str) -> Result<Option<u64>, zkc::Error> {
        Ok(self.read().await?.tree.get(path).ok_or(zkc::Error::NoNode)?.owner)
    }

    async fn delete(&self, path: &str) -> Result<(), zkc::Error> {
        let mut state = self.request().await?;
        let owner = state.tree.get(path).ok_or(zkc::Error::NoNode)?.owner;
        match owner {
            // Unfenced, a delete is only for an ephemeral node: one's own
            // latch or worker node, or those of a peer seen dead.
            None => {
                let what = format!("node {}: deleted {path}, which is not an ephemeral node", self.node);
                state.violations.push(what);
            }
            Some(id) if id != self.id => {
                let (peer, alarms_at_start) = (state.sessions[&id].node, state.sessions[&id].alarms_at_start);
                let process = &state.processes[peer];
                if !process.killed && process.false_alarms == alarms_at_start {
                    let what = format!(
                        "node {}: deleted {path} of session {id:x}, whose process neither died nor was taken for dead since it opened",
                        self.node
                    );
                    state.violations.push(what);
                }
                // Removed by a peer: a reason for that process to stop its tasks.
                state.fault(peer);
            }
            Some(_) => {}
        }
        state.tree.remove(path);
        state.notify_watchers(path);
        drop(state);
        self.world.changed.notify_waiters();
        Ok(())
    }

    async fn create(&self, path: &str, data: &[u8]) -> Result<(), zkc::Error> {
        let mut state = self.request().await?;
        if state.tree.contains_key(path) {
            return Err(zkc::Error::NodeExists);
        }
        make_dirs(&mut state, parent(path));
        let node = Znode {
            data: data.to_vec(),
            version: 0,
            owner: None,
        };
        state.tree.insert(path.to_string(), node);
        Ok(())
    }

    async fn contend(&self, dir: &str, data: &[u8]) -> Result<String, zkc::Error> {
        let path = {
            let mut state = self.request().await?;
            make_dirs(&mut state, dir);
            let sequence = state.next_sequence;
            state.next_sequence += 1;
            let path = format!("{dir}/_c_{:016x}-latch-{sequence:010}", self.id);
            let node = Znode {
                data: data.to_vec(),
                version: 0,
                owner: Some(self.id),
            };
            state.tree.insert(path.clone(), node);
            path
        };
        // Dropped while it waits, the candidacy is withdrawn, as the real
        // recipe's is.
        let mut candidacy = Candidacy {
            session: self,
            path: Some(path.clone()),
        };
        // The lowest sequence leads; wait until no lower one is left.
        let won = self
            .until(|state| {
                let sequence = |p: &str| p.rsplit('-').next().unwrap_or_default().to_string();
                let lowest = state
                    .tree
                    .keys()
                    .filter(|p| parent(p) == dir)
                    .min_by_key(|p| sequence(p));
                (lowest == Some(&path) && !state.processes[self.node].paused).then(|| path.clone())
            })
            .await;
        candidacy.path = None;
        won
    }

    async fn register(&self, dir: &str, data: &[u8]) -> Result<String, zkc::Error> {
        let mut state = self.request().await?;
        make_dirs(&mut state, dir);
        let path = format!("{dir}/{:016x}", self.id);
        if !state.tree.contains_key(&path) {
            let node = Znode {
                data: data.to_vec(),
                version: 0,
                owner: Some(self.id),
            };
            state.tree.insert(path.clone(), node);
            state.notify_watchers(&path);
        }
        drop(state);
        self.world.changed.notify_waiters();
        Ok(path)
    }

    async fn fenced(&self, latch: &str, ops: &[FencedOp<'_>]) -> Result<Vec<i32>, FenceError> {
        let paths = ops.iter().map(|op| op.path()).collect::<Vec<_>>().join(", ");
        let mut state = self.request().await.map_err(|source| FenceError::Zk {
            path: paths.clone(),
            source,
        })?;
        if !state.tree.contains_key(latch) {
            return Err(FenceError::Deposed);
        }
        let percent = state.rates.write_timeout;
        if percent > 0 && state.rng.u64(0..100) < percent {
            // zookeeper-client's own "no response from connection in ...".
            state.fault(self.node);
            return Err(FenceError::Zk {
                path: paths,
                source: zkc::Error::Timeout,
            });
        }
        // All or none: carry the ops out on a copy, keep it if every one passed.
        let mut tree = state.tree.clone();
        let mut versions = Vec::with_capacity(ops.len());
        for op in ops {
            let conflict = |source| FenceError::Conflict {
                path: op.path().to_string(),
                source,
            };
            versions.push(match *op {
                FencedOp::Set { path, data, expected } => {
                    let node = tree.get_mut(path).ok_or_else(|| conflict(zkc::Error::NoNode))?;
                    if expected.is_some_and(|v| v != node.version) {
                        return Err(conflict(zkc::Error::BadVersion));
                    }
                    node.data = data.to_vec();
                    node.version += 1;
                    node.version
                }
                FencedOp::Create { path, data } => {
                    if tree.contains_key(path) {
                        return Err(conflict(zkc::Error::NodeExists));
                    }
                    if !tree.contains_key(parent(path)) {
                        return Err(conflict(zkc::Error::NoNode));
                    }
                    let node = Znode {
                        data: data.to_vec(),
                        version: 0,
                        owner: None,
                    };
                    tree.insert(path.to_string(), node);
                    0
                }
                FencedOp::Check { path, version } => {
                    let node = tree.get(path).ok_or_else(|| conflict(zkc::Error::NoNode))?;
                    if node.version != version {
                        return Err(conflict(zkc::Error::BadVersion));
                    }
                    version
                }
            });
        }
        state.tree = tree;
        let node = self.node;
        for op in ops {
            if let FencedOp::Set { path, data, .. } | FencedOp::Create { path, data } = *op {
                if path.ends_with("/status") && String::from_utf8_lossy(data).contains("\"RELEASED\"") {
                    state.handoffs += 1;
                }
                state.note(|| format!("node {node}: {path} = {}", String::from_utf8_lossy(data)));
                state.notify_watchers(path);
            }
        }
        let percent = state.rates.ambiguous_write;
        let written = ops.iter().any(|op| !matches!(op, FencedOp::Check { .. }));
        if written && percent > 0 && state.rng.u64(0..100) < percent {
            // Applied, but the answer is lost with the connection.
            disconnect(&mut state, self.node);
            return Err(FenceError::Zk {
                path: paths,
                source: zkc::Error::ConnectionLoss,
            });
        }
        Ok(versions)
    }

    async fn watch_tree(&self, dir: &str) -> Result<mpsc::UnboundedReceiver<String>, zkc::Error> {
        let mut state = self.request().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        state
            .sessions
            .get_mut(&self.id)
            .expect("own session")
            .watches
            .push((dir.to_string(), tx));
        Ok(rx)
    }
}

/// Process `node`'s connection drops: its session, if any, hears Disconnected.
pub fn disconnect(state: &mut State, node: usize) {
    if state.processes[node].disconnected.is_some() {
        return;
    }
    state.processes[node].disconnected = Some(tokio::time::Instant::now());
    state.fault(node);
    if let Some(id) = state.session_of(node) {
        state.tell(id, SessionState::Disconnected);
    }
}

/// Process `node`'s connection is back: its session hears SyncConnected,
/// or Expired if it ended meanwhile.
pub fn reconnect(state: &mut State, node: usize) {
    if state.processes[node].disconnected.take().is_none() {
        return;
    }
    state.fault(node);
    hear(state, node);
    if let Some(id) = state.session_of(node) {
        state.tell(id, SessionState::SyncConnected);
    }
}

/// ZooKeeper expires process `node`'s session, as it does once the process
/// has been silent (paused or cut off) for the session timeout.
pub fn expire(state: &mut State, node: usize) {
    let Some(id) = state.session_of(node) else { return };
    state.end_session(id);
    state.fault(node);
    state.sessions.get_mut(&id).expect("listed").expiry_unheard = true;
    hear(state, node);
}

/// Delivers an expiry the process could not hear before (it was paused or
/// cut off), now that it can: its client reports Expired.
pub fn hear(state: &mut State, node: usize) {
    let process = &state.processes[node];
    if process.paused || process.killed {
        return;
    }
    let unheard: Vec<u64> = state
        .sessions
        .iter()
        .filter(|(_, s)| s.node == node && s.expiry_unheard)
        .map(|(id, _)| *id)
        .collect();
    for id in unheard {
        state.sessions.get_mut(&id).expect("listed").expiry_unheard = false;
        state.tell(id, SessionState::Expired);
    }
}
