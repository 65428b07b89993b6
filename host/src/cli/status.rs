//! `weir status`: the leader, its epoch, and the live replicas with the
//! number of tasks each runs.

use clap::Args;

use super::{print_table, say, ClusterArgs, OutputFormat};
use crate::views::read_cluster;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value = "table")]
    output: OutputFormat,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let layout = args.cluster.layout()?;
    let client = args.cluster.connect().await?;
    let view = read_cluster(&client, &layout, &args.cluster.cluster_id).await?;
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
