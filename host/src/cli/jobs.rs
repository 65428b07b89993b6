//! `weir jobs`: every job with its state and last checkpoint, and each of
//! its tasks with the worker running it.

use clap::Args;
use futures::FutureExt;
use serde::Serialize;
use zookeeper_client::Client;

use super::{age, print_table, say, ClusterArgs, OutputFormat};
use crate::checkpoint::Pointer;
use crate::clock::now_ms;
use crate::coord::read_all;
use crate::coord::zookeeper::hint;
use crate::ha::{Assignment, Layout};
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
    /// CREATED, RUNNING, RESTARTING, FAILED or CANCELED: FAILED and
    /// CANCELED as the leader marked the job, else the least advanced of
    /// its tasks' states (RESTARTING if any task is).
    pub state: JobState,
    /// `running` or `canceled`.
    pub desired: Desired,
    /// The supervisor running task 0, if any.
    pub supervisor: Option<String>,
    /// Failed attempts so far, over all its tasks.
    pub restarts: u32,
    /// Why the job failed, or else the error of the first task that has one.
    pub error: Option<String>,
    /// Task 0's newest committed checkpoint.
    pub last_checkpoint: Option<CheckpointView>,
    /// How many tasks run it.
    pub parallelism: u32,
    /// Its tasks, in order.
    pub tasks: Vec<TaskView>,
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

/// One task of a job as `weir jobs --output json` prints it.
#[derive(Debug, Serialize)]
pub struct TaskView {
    /// Its number, from 0.
    pub task: u32,
    /// CREATED (assigned, not yet running), RUNNING, RESTARTING, RELEASED
    /// (handed off, its next worker not yet given it), FAILED or CANCELED.
    pub state: JobState,
    /// The supervisor (`--id`) it is assigned to, if any.
    pub worker: Option<String>,
    /// Bumped each time it is assigned: the epoch of its checkpoints.
    pub generation: u64,
    /// Its failed attempts so far.
    pub restarts: u32,
    /// Why its last attempt failed.
    pub error: Option<String>,
    /// Its newest committed checkpoint.
    pub last_checkpoint: Option<CheckpointView>,
}

/// A committed checkpoint as `weir jobs` shows it.
#[derive(Debug, Serialize)]
pub struct CheckpointView {
    /// Checkpoint id.
    pub id: u64,
    /// The generation of the task's assignment that committed it.
    pub epoch: u64,
    /// Milliseconds since its barrier.
    pub age_ms: u64,
}

/// A node's JSON content, `None` if it is missing or unreadable.
async fn read_json<T: serde::de::DeserializeOwned>(client: &Client, path: &str) -> Option<T> {
    let (data, _) = client.get_data(path).await.ok()?;
    serde_json::from_slice(&data).ok()
}

async fn read_task(client: &Client, layout: &Layout, spec: &JobSpec, task: u32) -> TaskView {
    let name = &spec.name;
    let assignment = read_json::<Assignment>(client, &layout.task(name, task))
        .await
        .filter(|a| a.uid == spec.uid);
    let status = match &assignment {
        Some(_) => read_json::<JobStatus>(client, &layout.task_status(name, task)).await,
        None => None,
    };
    let pointer = match client.get_data(&layout.task_checkpoint(name, task)).await {
        Ok((data, _)) if assignment.is_some() => Pointer::decode(&data).unwrap_or_default(),
        _ => Pointer::default(),
    };
    let now = now_ms();
    TaskView {
        task,
        state: status.as_ref().map_or(JobState::Created, |s| s.state),
        worker: assignment.as_ref().map(|a| a.supervisor.clone()),
        generation: assignment.as_ref().map_or(0, |a| a.generation),
        restarts: status.as_ref().map_or(0, |s| s.restarts),
        error: status.and_then(|s| s.error),
        last_checkpoint: pointer.latest().map(|c| CheckpointView {
            id: c.id,
            epoch: c.epoch,
            age_ms: now.saturating_sub(c.created_ms),
        }),
    }
}

/// A job's state from its own status and its tasks'.
fn job_state(status: Option<&JobStatus>, tasks: &[TaskView]) -> JobState {
    if let Some(state @ (JobState::Failed | JobState::Canceled)) = status.map(|s| s.state) {
        return state;
    }
    if tasks.iter().any(|t| t.state == JobState::Restarting) {
        return JobState::Restarting;
    }
    if !tasks.is_empty() && tasks.iter().all(|t| t.state == JobState::Running) {
        return JobState::Running;
    }
    JobState::Created
}

pub(super) async fn read_job(client: &Client, layout: &Layout, name: &str) -> Option<JobView> {
    let spec: JobSpec = read_json(client, &layout.job(name)).await?;
    let status: Option<JobStatus> = read_json(client, &layout.job_status(name)).await;
    let tasks = read_all(spec.shares(), |share| {
        read_task(client, layout, &spec, share.index).boxed()
    })
    .await;
    let first = tasks.first();
    let error = status
        .as_ref()
        .and_then(|s| s.error.clone())
        .or_else(|| tasks.iter().find_map(|t| t.error.clone()));
    Some(JobView {
        name: spec.name.clone(),
        state: job_state(status.as_ref(), &tasks),
        desired: spec.desired,
        supervisor: first.and_then(|t| t.worker.clone()),
        restarts: tasks.iter().map(|t| t.restarts).sum(),
        error,
        last_checkpoint: first.and_then(|t| t.last_checkpoint.as_ref()).map(|c| CheckpointView {
            id: c.id,
            epoch: c.epoch,
            age_ms: c.age_ms,
        }),
        parallelism: spec.parallelism,
        source: spec.source.to_string(),
        sink: spec.sink.to_string(),
        on_error: spec.on_error.to_string(),
        module_sha256: spec.module_sha256,
        tasks,
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
            let mut rows: Vec<Vec<String>> = Vec::new();
            for v in &views {
                let checkpoint = |c: &Option<CheckpointView>| match c {
                    Some(c) => (c.id.to_string(), age(c.age_ms)),
                    None => ("-".into(), "-".into()),
                };
                let (id, checkpoint_age) = checkpoint(&v.last_checkpoint);
                let worker = match v.parallelism {
                    1 => v.supervisor.clone().unwrap_or_else(|| "-".into()),
                    n => format!("{n} tasks"),
                };
                rows.push(vec![
                    v.name.clone(),
                    v.state.to_string(),
                    v.restarts.to_string(),
                    id,
                    checkpoint_age,
                    worker,
                    v.error.clone().unwrap_or_default(),
                ]);
                if v.parallelism > 1 {
                    for t in &v.tasks {
                        let (id, checkpoint_age) = checkpoint(&t.last_checkpoint);
                        rows.push(vec![
                            format!("  {}/{}", v.name, t.task),
                            t.state.to_string(),
                            t.restarts.to_string(),
                            id,
                            checkpoint_age,
                            t.worker.clone().unwrap_or_else(|| "-".into()),
                            t.error.clone().unwrap_or_default(),
                        ]);
                    }
                }
            }
            print_table(
                &["NAME", "STATE", "RESTARTS", "CHECKPOINT", "AGE", "WORKER", "LAST ERROR"],
                &rows,
            )?;
            if views.iter().any(|v| v.state == JobState::Canceled) {
                say!("(cancelled jobs stay listed, with their checkpoints, until `weir delete NAME` removes them)")?;
            }
        }
    }
    Ok(())
}
