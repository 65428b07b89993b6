//! `weir status`: the leader, its epoch, and the live replicas with the
//! number of tasks each runs.

use clap::Args;
use futures::FutureExt;
use serde::Serialize;

use std::collections::BTreeMap;

use zookeeper_client::{self as zkc, Client};

use super::{print_table, say, ClusterArgs, OutputFormat};
use crate::coord::read_all;
use crate::coord::zookeeper::hint;
use crate::ha::{candidates, Assignment, Layout, LeaderRecord};
use crate::spec::{Desired, JobSpec};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value = "table")]
    output: OutputFormat,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// The cluster as `weir status --output json` prints it. Field names are stable.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// The cluster's name.
    pub cluster_id: String,
    /// The current leader, if any replica is alive.
    pub leader: Option<LeaderView>,
    /// Every live replica, in election order (the first leads).
    pub replicas: Vec<ReplicaView>,
}

/// The leader: who, and its fencing epoch.
#[derive(Debug, Serialize)]
pub struct LeaderView {
    /// Replica id.
    pub id: String,
    /// Its process id.
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// Its HTTP endpoint (`/metrics`, `/healthz`).
    pub address: Option<String>,
    /// Its epoch; `null` while it is still taking the lead.
    pub epoch: Option<u64>,
    /// When it took the lead (ms since the Unix epoch).
    pub since_ms: Option<u64>,
}

/// One live replica.
#[derive(Debug, Serialize)]
pub struct ReplicaView {
    /// Replica id.
    pub id: String,
    /// Its process id.
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// Its HTTP endpoint (`/metrics`, `/healthz`).
    pub address: Option<String>,
    /// `leader` or `follower` (every replica is also a worker).
    pub role: &'static str,
    /// How many tasks of running jobs are assigned to it.
    pub tasks: usize,
    /// `weir drain` asked that it run no task.
    pub draining: bool,
    /// Its latch node.
    pub latch: String,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let layout = args.cluster.layout()?;
    let client = args.cluster.connect().await?;
    let record: Option<LeaderRecord> = match client.get_data(&layout.leader()).await {
        Ok((data, _)) => serde_json::from_slice(&data).ok(),
        Err(_) => None,
    };
    let tasks = tasks_per_supervisor(&client, &layout).await?;
    let drains: Vec<String> = client.list_children(&layout.drains()).await.unwrap_or_default();
    let replicas: Vec<ReplicaView> = candidates(&client, &layout)
        .await?
        .into_iter()
        .enumerate()
        .map(|(i, (latch, info))| {
            let info = info.unwrap_or_default();
            ReplicaView {
                pid: info.pid,
                host: info.host,
                address: info.address,
                role: if i == 0 { "leader" } else { "follower" },
                tasks: tasks.get(&info.id).copied().unwrap_or(0),
                draining: drains.contains(&info.id),
                id: info.id,
                latch,
            }
        })
        .collect();
    let leader = replicas.first().map(|r| {
        let current = record.as_ref().filter(|rec| rec.latch == r.latch);
        LeaderView {
            id: r.id.clone(),
            pid: r.pid,
            host: r.host.clone(),
            address: r.address.clone(),
            epoch: current.map(|rec| rec.epoch),
            since_ms: current.map(|rec| rec.since_ms),
        }
    });
    let view = ClusterView {
        cluster_id: args.cluster.cluster_id.clone(),
        leader,
        replicas,
    };
    match args.output {
        OutputFormat::Json => say!("{}", serde_json::to_string_pretty(&view)?)?,
        OutputFormat::Table => {
            match &view.leader {
                Some(l) => say!(
                    "cluster {}: leader {} (pid {}, host {}, epoch {})",
                    view.cluster_id,
                    l.id,
                    l.pid,
                    l.host,
                    l.epoch.map_or("pending".into(), |e| e.to_string())
                )?,
                None => say!("cluster {}: no supervisor is running", view.cluster_id)?,
            }
            let rows: Vec<Vec<String>> = view
                .replicas
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        if r.draining {
                            format!("{} (draining)", r.role)
                        } else {
                            r.role.to_string()
                        },
                        r.tasks.to_string(),
                        r.pid.to_string(),
                        r.host.clone(),
                        r.address.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(&["REPLICA", "ROLE", "TASKS", "PID", "HOST", "ADDRESS"], &rows)?;
        }
    }
    Ok(())
}

/// How many tasks of running jobs each supervisor (by `--id`) is assigned.
async fn tasks_per_supervisor(client: &Client, layout: &Layout) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut count = BTreeMap::new();
    let names = match client.list_children(&layout.jobs()).await {
        Ok(names) => names,
        Err(zkc::Error::NoNode) => return Ok(count),
        Err(e) => anyhow::bail!("cannot list {}: {e}{}", layout.jobs(), hint(&e)),
    };
    for name in names {
        let Ok((data, _)) = client.get_data(&layout.job(&name)).await else {
            continue;
        };
        let Ok(spec) = serde_json::from_slice::<JobSpec>(&data) else {
            continue;
        };
        if spec.desired != Desired::Running {
            continue;
        }
        let paths: Vec<String> = spec.shares().map(|share| layout.task(&name, share.index)).collect();
        for read in read_all(&paths, |path| client.get_data(path).boxed()).await {
            let Ok((data, _)) = read else {
                continue;
            };
            if let Ok(a) = serde_json::from_slice::<Assignment>(&data) {
                if a.uid == spec.uid {
                    *count.entry(a.supervisor).or_default() += 1;
                }
            }
        }
    }
    Ok(count)
}
