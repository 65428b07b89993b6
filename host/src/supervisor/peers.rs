//! Removing a peer proven dead from the cluster: its worker node, so the
//! leader gives its tasks away, and its latch node, so the next contender
//! leads if it did; both at once rather than when its session expires.
//! Every supervisor watches every other ([`Liveness`]), and whichever sees
//! a death first removes the nodes (the others then find them gone).
//!
//! The nodes belong to the dead process's session, which lives on in
//! ZooKeeper until it expires; ZooKeeper lets any client with the cluster's
//! credentials delete them. Nothing here writes on the dead one's behalf:
//! a supervisor wrongly taken for dead finds its own node gone at its next
//! fenced write, stops its tasks and joins again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{AbortHandle, Abortable};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use crate::coord::Session;
use crate::ha::{self, Layout, SupervisorInfo};
use crate::liveness::Liveness;
use crate::metrics::Metrics;

/// How often the list of peers is read again, to watch those that joined.
const RELIST: Duration = Duration::from_secs(1);

/// Watches every other worker of the cluster and removes each one that
/// dies, until dropped. `own` is the path of this session's worker node.
pub async fn guard(
    session: Arc<dyn Session>,
    layout: Layout,
    own: String,
    liveness: Arc<dyn Liveness>,
    metrics: Arc<Metrics>,
) {
    let mut watching: BTreeMap<String, AbortHandle> = BTreeMap::new();
    let mut deaths = FuturesUnordered::new();
    loop {
        match ha::workers(session.as_ref(), &layout).await {
            Ok(peers) => {
                watching.retain(|node, watch| {
                    let listed = peers.contains_key(node);
                    if !listed {
                        watch.abort();
                    }
                    listed
                });
                for (node, info) in peers {
                    if layout.worker(&node) == own || watching.contains_key(&node) {
                        continue;
                    }
                    let (handle, registration) = AbortHandle::new_pair();
                    let died = Abortable::new(liveness.died(&info), registration);
                    watching.insert(node.clone(), handle);
                    deaths.push(died.map(move |died| died.ok().map(|()| (node, info))));
                }
                metrics.peers_watched.set(watching.len() as i64);
            }
            Err(e) => tracing::debug!("cannot list the peers to watch: {e}"),
        }
        let relist = tokio::time::sleep(RELIST);
        tokio::pin!(relist);
        loop {
            tokio::select! {
                biased;
                Some(death) = deaths.next() => {
                    if let Some((node, info)) = death {
                        watching.remove(&node);
                        metrics.peers_watched.set(watching.len() as i64);
                        depose(session.as_ref(), &layout, &node, &info, &metrics).await;
                    }
                }
                () = &mut relist => break,
            }
        }
    }
}

/// Deletes the worker node `node` of the dead supervisor `info`, then its
/// latch nodes: in that order, so a follower that leads because the latch
/// went already finds the worker gone and gives its tasks away in its
/// first pass.
async fn depose(session: &dyn Session, layout: &Layout, node: &str, info: &SupervisorInfo, metrics: &Metrics) {
    let worker = layout.worker(node);
    let removed = match session.delete(&worker).await {
        Ok(()) => true,
        Err(zookeeper_client::Error::NoNode) => false,
        Err(e) => {
            tracing::warn!(
                "supervisor {} died, but its worker node {worker} could not be removed: {e}; its session's expiry will",
                info.id
            );
            return;
        }
    };
    let latches = match ha::contenders(session, layout).await {
        Ok(contenders) => contenders,
        Err(e) => {
            tracing::warn!("supervisor {} died, but the latch nodes could not be read: {e}; its session's expiry will remove its own", info.id);
            return;
        }
    };
    for (latch, owner) in latches {
        if owner == *info {
            match session.delete(&latch).await {
                Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
                Err(e) => tracing::warn!("cannot remove {latch} of the dead supervisor {}: {e}", info.id),
            }
        }
    }
    if removed {
        metrics.peers_deposed.inc();
        tracing::warn!(
            peer = %info.id,
            pid = info.pid,
            address = info.address.as_deref().unwrap_or("-"),
            "supervisor {} died (its connection was reset and its port refuses connections): \
             removed it from the cluster so that its tasks and leadership move now, not when its session expires",
            info.id
        );
    }
}
