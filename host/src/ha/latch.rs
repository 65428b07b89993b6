//! The leader latch: Curator's LeaderLatch layout, ephemeral-sequential
//! nodes `_c_<uuid>-latch-<seq>` under `leader-latch`, each contender
//! watching only its predecessor, the lowest leading. The session carries
//! the recipe out (zookeeper-client's own, for ZooKeeper).

use zookeeper_client::Client;

use super::{Layout, SupervisorInfo};
use crate::coord::{Session, ZkError};

/// Joins the election and waits until this process leads; returns the
/// latch node, proof of leadership for as long as it exists.
///
/// Cancel-safe: dropping the future withdraws the candidacy. Fails with
/// `SessionExpired` if the session ends first.
pub async fn contend(session: &dyn Session, layout: &Layout, info: &SupervisorInfo) -> Result<String, ZkError> {
    let latch_dir = layout.latch_dir();
    let data = serde_json::to_vec(info).expect("supervisor info serializes");
    session
        .contend(&latch_dir, &data)
        .await
        .map_err(|e| ZkError::op(format!("contend for leadership under {latch_dir}"), e))
}

/// Another live contender that calls itself `id`, if any.
pub async fn contender_named(
    session: &dyn Session,
    layout: &Layout,
    id: &str,
) -> Result<Option<SupervisorInfo>, zookeeper_client::Error> {
    let contenders = contenders(session, layout).await?;
    Ok(contenders.into_iter().map(|(_, info)| info).find(|info| info.id == id))
}

/// Every latch node with a readable owner, in no particular order.
async fn contenders(
    session: &dyn Session,
    layout: &Layout,
) -> Result<Vec<(String, SupervisorInfo)>, zookeeper_client::Error> {
    let dir = layout.latch_dir();
    let children = match session.list_children(&dir).await {
        Ok(children) => children,
        Err(zookeeper_client::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(children.len());
    for child in children {
        let path = format!("{dir}/{child}");
        match session.get_data(&path).await {
            Ok((data, _)) => {
                if let Ok(info) = serde_json::from_slice::<SupervisorInfo>(&data) {
                    out.push((path, info));
                }
            }
            Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Latch nodes in election order (lowest sequence first), with their owners.
pub async fn candidates(client: &Client, layout: &Layout) -> Result<Vec<(String, Option<SupervisorInfo>)>, ZkError> {
    let dir = layout.latch_dir();
    let mut children = match client.list_children(&dir).await {
        Ok(children) => children,
        Err(zookeeper_client::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(ZkError::op(format!("list {dir}"), e)),
    };
    children.sort_by_key(|name| name.rsplit('-').next().unwrap_or_default().to_string());
    let mut out = Vec::with_capacity(children.len());
    for child in children {
        let path = format!("{dir}/{child}");
        let info = match client.get_data(&path).await {
            Ok((data, _)) => serde_json::from_slice(&data).ok(),
            Err(zookeeper_client::Error::NoNode) => continue,
            Err(e) => return Err(ZkError::op(format!("read {path}"), e)),
        };
        out.push((path, info));
    }
    Ok(out)
}
