//! Removing a peer proven dead from the cluster: its worker node, so the
//! leader gives its tasks away, and its latch nodes, so the next contender
//! leads if it did; both at once rather than when its session expires.
//! Every supervisor watches every other ([`Liveness`]), and whichever sees
//! a death first removes the nodes (the others then find them gone).
//!
//! The nodes belong to the dead process's session, which lives on in
//! ZooKeeper until it expires; ZooKeeper lets any client with the cluster's
//! credentials delete them. Only that session's nodes go (a latch node is
//! matched by its ephemeral owner, never by what it says), so a process
//! that was wrongly taken for dead and has joined again with a new session
//! keeps its new ones. Nothing here writes on the dead one's behalf: a
//! supervisor wrongly taken for dead finds its own node gone, stops its
//! tasks and joins again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{AbortHandle, Abortable};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use zookeeper_client as zkc;

use crate::coord::Session;
use crate::ha::{Layout, SupervisorInfo};
use crate::liveness::Liveness;
use crate::metrics::Metrics;

/// How often the list of peers is read again, to watch those that joined
/// (and to retry a removal that failed).
const RELIST: Duration = Duration::from_secs(1);
/// How long one attempt to remove a dead peer may take; one that takes
/// longer is tried again at the next relist.
const DEPOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A watch on one peer, dropped (and its connection closed) with it.
struct Watch(AbortHandle);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches every other worker of the cluster and removes each one that
/// dies, until dropped. `own` is the path of this session's worker node.
pub async fn guard(
    session: Arc<dyn Session>,
    layout: Layout,
    own: String,
    liveness: Arc<dyn Liveness>,
    metrics: Arc<Metrics>,
) {
    let mut watching: BTreeMap<String, Watch> = BTreeMap::new();
    // Peers seen dead whose nodes are still to remove, by worker node.
    let mut dead: BTreeMap<String, SupervisorInfo> = BTreeMap::new();
    let mut deaths = FuturesUnordered::new();
    loop {
        let listed = match session.list_children(&layout.workers()).await {
            Ok(listed) => Some(listed),
            Err(zkc::Error::NoNode) => Some(Vec::new()),
            Err(e) => {
                tracing::debug!("cannot list the peers to watch: {e}");
                None
            }
        };
        if let Some(listed) = listed {
            watching.retain(|node, _| listed.contains(node));
            for node in listed {
                let path = layout.worker(&node);
                if path == own || watching.contains_key(&node) || dead.contains_key(&node) {
                    continue;
                }
                let info = match session.get_data(&path).await {
                    Ok((data, _)) => serde_json::from_slice::<SupervisorInfo>(&data).unwrap_or_default(),
                    Err(_) => continue,
                };
                let (handle, registration) = AbortHandle::new_pair();
                let died = Abortable::new(liveness.died(&info), registration);
                watching.insert(node.clone(), Watch(handle));
                deaths.push(died.map(move |died| died.ok().map(|()| (node, info))));
            }
        }
        // Removals that failed before are tried again now, once a relist.
        remove_dead(session.as_ref(), &layout, &mut dead, &metrics).await;
        let relist = tokio::time::sleep(RELIST);
        tokio::pin!(relist);
        loop {
            tokio::select! {
                biased;
                Some(death) = deaths.next() => {
                    if let Some((node, info)) = death {
                        watching.remove(&node);
                        let mut fresh = BTreeMap::from([(node, info)]);
                        remove_dead(session.as_ref(), &layout, &mut fresh, &metrics).await;
                        dead.append(&mut fresh);
                    }
                }
                () = &mut relist => break,
            }
        }
    }
}

/// Removes the nodes of every peer in `dead`, dropping each once done;
/// what fails stays, to be tried again.
async fn remove_dead(
    session: &dyn Session,
    layout: &Layout,
    dead: &mut BTreeMap<String, SupervisorInfo>,
    metrics: &Metrics,
) {
    let mut done = Vec::new();
    for (node, info) in dead.iter() {
        match tokio::time::timeout(DEPOSE_TIMEOUT, depose(session, layout, node)).await {
            Ok(Ok(removed)) => {
                metrics.peers_seen_dead.inc();
                if removed > 0 {
                    metrics.peers_deposed.inc();
                    tracing::warn!(
                        peer = %info.id,
                        pid = info.pid,
                        address = info.address.as_deref().unwrap_or("-"),
                        "supervisor {} died (its connection ended and its port refuses connections): \
                         removed it from the cluster so that its tasks and leadership move now, \
                         not when its session expires",
                        info.id
                    );
                }
                done.push(node.clone());
            }
            Ok(Err(e)) => tracing::warn!(
                "supervisor {} died, but its nodes could not be removed yet: {e}",
                info.id
            ),
            Err(_) => tracing::warn!(
                "supervisor {} died, but removing its nodes took over {DEPOSE_TIMEOUT:?}",
                info.id
            ),
        }
    }
    for node in done {
        dead.remove(&node);
    }
}

/// Deletes the worker node `node` of a dead supervisor, then the latch
/// nodes its session owns: in that order, so a follower that leads because
/// the latch went already finds the worker gone and gives its tasks away in
/// its first pass. Returns how many nodes it removed.
async fn depose(session: &dyn Session, layout: &Layout, node: &str) -> Result<usize, zkc::Error> {
    // A worker node is named after its session's id.
    let Ok(dead) = u64::from_str_radix(node, 16) else {
        return Ok(0);
    };
    let mut removed = 0;
    let mut delete = async |path: &str| match session.delete(path).await {
        Ok(()) => {
            removed += 1;
            Ok(())
        }
        Err(zkc::Error::NoNode) => Ok(()),
        Err(e) => Err(e),
    };
    delete(&layout.worker(node)).await?;
    let dir = layout.latch_dir();
    let latches = match session.list_children(&dir).await {
        Ok(latches) => latches,
        Err(zkc::Error::NoNode) => Vec::new(),
        Err(e) => return Err(e),
    };
    for latch in latches {
        let path = format!("{dir}/{latch}");
        match session.owner(&path).await {
            Ok(Some(owner)) if owner == dead => delete(&path).await?,
            Ok(_) | Err(zkc::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}
