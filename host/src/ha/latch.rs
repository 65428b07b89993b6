//! The leader latch, on zookeeper-client's Curator-compatible lock recipe:
//! ephemeral-sequential nodes `_c_<uuid>-latch-<seq>` under `leader-latch`,
//! each contender watching only its predecessor, the lowest leading.

use std::sync::Arc;

use zookeeper_client::{Acls, Client, CreateMode, LockOptions, LockPrefix, OwnedLockClient};

use super::{Layout, SupervisorInfo, ZkError};

/// A held latch node: proof of leadership for as long as the node exists.
///
/// Dropping the last clone deletes the node, which hands leadership to the
/// next contender at once (a planned handoff).
#[derive(Debug, Clone)]
pub struct Latch {
    lock: Arc<OwnedLockClient>,
    acls: Acls<'static>,
}

impl Latch {
    /// Path of the latch node this process holds.
    pub fn path(&self) -> &str {
        self.lock.lock_path()
    }

    /// The ACL for znodes created while holding the latch.
    pub fn acls(&self) -> Acls<'static> {
        self.acls
    }

    /// The session that holds the latch.
    pub fn client(&self) -> &Client {
        self.lock.client()
    }
}

/// Joins the election and waits until this process leads.
///
/// Cancel-safe: dropping the future withdraws the candidacy. Fails with
/// `SessionExpired` if the session ends first.
pub async fn contend(
    client: &Client,
    layout: &Layout,
    info: &SupervisorInfo,
    acls: Acls<'static>,
) -> Result<Latch, ZkError> {
    let latch_dir = layout.latch_dir();
    let data = serde_json::to_vec(info).expect("supervisor info serializes");
    let prefix = LockPrefix::new_curator(&latch_dir, "latch-").map_err(|e| ZkError::op("latch path", e))?;
    let options = LockOptions::new(acls)
        .with_ancestor_options(CreateMode::Persistent.with_acls(acls))
        .map_err(|e| ZkError::op("latch options", e))?;
    let lock = client
        .lock(prefix, &data, options)
        .await
        .map_err(|e| ZkError::op(format!("contend for leadership under {latch_dir}"), e))?;
    Ok(Latch {
        lock: Arc::new(lock.into_owned()),
        acls,
    })
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
