//! `weir drain` and `weir rebalance`: requests to the leader to move tasks
//! by handoff (final checkpoint, publish, release; the new owner restores
//! at once), never by waiting for a session to expire.

use anyhow::bail;
use clap::Args;
use zookeeper_client::{self as zkc, CreateMode};

use super::{say, ClusterArgs};
use crate::coord::zookeeper::hint;
use crate::ha::candidates;

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The supervisor (its `--id`) to move every task off.
    supervisor: String,
    /// Let it run tasks again (the tasks come back as the cluster rebalances).
    #[arg(long)]
    undo: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct RebalanceArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub async fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let layout = args.cluster.layout()?;
    let client = args.cluster.connect().await?;
    let id = &args.supervisor;
    let path = layout.drain(id);
    if args.undo {
        match client.delete(&path, None).await {
            Ok(()) | Err(zkc::Error::NoNode) => {}
            Err(e) => bail!("cannot undo the drain of `{id}`: {e}{}", hint(&e)),
        }
        say!("supervisor `{id}` may run tasks again; they move back to it as the cluster rebalances")?;
        return Ok(());
    }
    let live = candidates(&client, &layout).await?;
    if !live.iter().any(|(_, info)| info.as_ref().is_some_and(|i| &i.id == id)) {
        let ids: Vec<String> = live.into_iter().filter_map(|(_, info)| info.map(|i| i.id)).collect();
        bail!(
            "no live supervisor is called `{id}` (live: {}); `weir status` lists them",
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        );
    }
    let options = CreateMode::Persistent.with_acls(args.cluster.zk()?.acls());
    if let Err(e) = client.mkdir(&layout.drains(), &options).await {
        bail!("cannot create {}: {e}{}", layout.drains(), hint(&e));
    }
    match client.create(&path, b"", &options).await {
        Ok(_) | Err(zkc::Error::NodeExists) => {}
        Err(e) => bail!("cannot drain `{id}`: {e}{}", hint(&e)),
    }
    say!("draining supervisor `{id}`: the leader hands its tasks to the others (`weir status` shows its task count); `weir drain {id} --undo` lets it run tasks again")?;
    Ok(())
}

pub async fn rebalance(args: RebalanceArgs) -> anyhow::Result<()> {
    let layout = args.cluster.layout()?;
    let client = args.cluster.connect().await?;
    let path = layout.rebalance();
    let options = CreateMode::Persistent.with_acls(args.cluster.zk()?.acls());
    // Each write changes the node's version, which is what the leader watches for.
    match client.set_data(&path, b"", None).await {
        Ok(_) => {}
        Err(zkc::Error::NoNode) => match client.create(&path, b"", &options).await {
            Ok(_) => {}
            Err(zkc::Error::NodeExists) => {
                client
                    .set_data(&path, b"", None)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot ask for a rebalance: {e}{}", hint(&e)))?;
            }
            Err(e) => bail!("cannot ask for a rebalance: {e}{}", hint(&e)),
        },
        Err(e) => bail!("cannot ask for a rebalance: {e}{}", hint(&e)),
    }
    say!("asked the leader to even the tasks out now, by handoff (`weir status` shows each replica's task count)")?;
    Ok(())
}
