//! `weir jobs`: every job with its state and last checkpoint.

use clap::Args;
use serde::Serialize;
use zookeeper_client::Client;

use super::{age, print_table, say, ClusterArgs, OutputFormat};
use crate::checkpoint::Pointer;
use crate::clock::now_ms;
use crate::coord::zookeeper::hint;
use crate::ha::Layout;
use crate::spec::{Cidr, Desired, DirGrant, JobSpec, JobState, JobStatus};

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value = "table")]
    output: OutputFormat,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// One job as `weir jobs --output json` prints it. Field names are stable.
#[derive(Debug, Serialize)]
pub struct JobView {
    /// Job name.
    pub name: String,
    /// CREATED, RUNNING, RESTARTING or CANCELED.
    pub state: JobState,
    /// `running` or `canceled`.
    pub desired: Desired,
    /// Supervisor running it, if any.
    pub supervisor: Option<String>,
    /// Failed attempts so far.
    pub restarts: u32,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The newest committed checkpoint.
    pub last_checkpoint: Option<CheckpointView>,
    /// Source spec.
    pub source: String,
    /// Sink spec.
    pub sink: String,
    /// What becomes of a record the job refuses: `fail` or `skip`.
    pub on_error: String,
    /// sha256 of the module.
    pub module_sha256: String,
    /// What the job's sandbox is granted.
    pub grants: GrantsView,
}

/// A job's grants as `weir jobs` shows them: environment variable names
/// only, since their values may be secrets.
#[derive(Debug, Serialize)]
pub struct GrantsView {
    /// Names of the environment variables the guest sees.
    pub env: Vec<String>,
    /// Host directories the guest may read, and where it sees them.
    pub dirs: Vec<DirGrant>,
    /// Whether the guest may use the network.
    pub network: bool,
    /// The address ranges it is limited to (empty: all but loopback and link-local).
    pub network_to: Vec<Cidr>,
}

/// A committed checkpoint as `weir jobs` shows it.
#[derive(Debug, Serialize)]
pub struct CheckpointView {
    /// Checkpoint id.
    pub id: u64,
    /// Epoch of the leader that committed it.
    pub epoch: u64,
    /// Milliseconds since its barrier.
    pub age_ms: u64,
}

async fn read_job(client: &Client, layout: &Layout, name: &str) -> Option<JobView> {
    let (spec, _) = client.get_data(&layout.job(name)).await.ok()?;
    let spec: JobSpec = serde_json::from_slice(&spec).ok()?;
    let status: Option<JobStatus> = match client.get_data(&layout.job_status(name)).await {
        Ok((data, _)) => serde_json::from_slice(&data).ok(),
        Err(_) => None,
    };
    let pointer = match client.get_data(&layout.job_checkpoint(name)).await {
        Ok((data, _)) => Pointer::decode(&data).unwrap_or_default(),
        Err(_) => Pointer::default(),
    };
    let now = now_ms();
    Some(JobView {
        name: spec.name,
        state: status.as_ref().map_or(JobState::Created, |s| s.state),
        desired: spec.desired,
        supervisor: status.as_ref().and_then(|s| s.supervisor.clone()),
        restarts: status.as_ref().map_or(0, |s| s.restarts),
        error: status.and_then(|s| s.error),
        last_checkpoint: pointer.latest().map(|c| CheckpointView {
            id: c.id,
            epoch: c.epoch,
            age_ms: now.saturating_sub(c.created_ms),
        }),
        source: spec.source.to_string(),
        sink: spec.sink.to_string(),
        on_error: spec.on_error.to_string(),
        module_sha256: spec.module_sha256,
        grants: GrantsView {
            env: spec.grants.env.into_iter().map(|(key, _)| key).collect(),
            dirs: spec.grants.dirs,
            network: spec.grants.network,
            network_to: spec.grants.network_to,
        },
    })
}

pub async fn run(args: JobsArgs) -> anyhow::Result<()> {
    let layout = args.cluster.layout()?;
    let client = args.cluster.connect().await?;
    let mut names = match client.list_children(&layout.jobs()).await {
        Ok(names) => names,
        Err(zookeeper_client::Error::NoNode) => Vec::new(),
        Err(e) => anyhow::bail!("cannot list {}: {e}{}", layout.jobs(), hint(&e)),
    };
    names.sort();
    let mut views = Vec::with_capacity(names.len());
    for name in &names {
        if let Some(view) = read_job(&client, &layout, name).await {
            views.push(view);
        }
    }
    match args.output {
        OutputFormat::Json => say!("{}", serde_json::to_string_pretty(&views)?)?,
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|v| {
                    let (checkpoint, checkpoint_age) = match &v.last_checkpoint {
                        Some(c) => (c.id.to_string(), age(c.age_ms)),
                        None => ("-".into(), "-".into()),
                    };
                    vec![
                        v.name.clone(),
                        v.state.to_string(),
                        v.restarts.to_string(),
                        checkpoint,
                        checkpoint_age,
                        v.supervisor.clone().unwrap_or_else(|| "-".into()),
                        v.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "STATE",
                    "RESTARTS",
                    "CHECKPOINT",
                    "AGE",
                    "SUPERVISOR",
                    "LAST ERROR",
                ],
                &rows,
            )?;
            if views.iter().any(|v| v.state == JobState::Canceled) {
                say!("(cancelled jobs stay listed, with their checkpoints, until `weir delete NAME` removes them)")?;
            }
        }
    }
    Ok(())
}
