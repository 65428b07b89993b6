//! `weir status`: the leader, its epoch, and the live replicas.

use clap::Args;
use serde::Serialize;

use super::{print_table, say, ClusterArgs, OutputFormat};
use crate::ha::{candidates, LeaderRecord};

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
    /// `leader` or `follower`.
    pub role: &'static str,
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
    let replicas: Vec<ReplicaView> = candidates(&client, &layout)
        .await?
        .into_iter()
        .enumerate()
        .map(|(i, (latch, info))| {
            let info = info.unwrap_or_default();
            ReplicaView {
                id: info.id,
                pid: info.pid,
                host: info.host,
                address: info.address,
                role: if i == 0 { "leader" } else { "follower" },
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
                        r.role.to_string(),
                        r.pid.to_string(),
                        r.host.clone(),
                        r.address.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(&["REPLICA", "ROLE", "PID", "HOST", "ADDRESS"], &rows)?;
        }
    }
    Ok(())
}
