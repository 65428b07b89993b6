//! `weir savepoint` and `weir savepoints`: copy each task's newest
//! committed checkpoint of a job into a savepoint, and list (or delete) a
//! job's savepoints. The copy needs no supervisor: the checkpoints are in
//! the storage dir and their pointers in ZooKeeper.

use anyhow::{bail, Context};
use clap::Args;
use zookeeper_client as zkc;

use super::deploy::check_storage_record;
use super::{age, print_table, rand_u64, say, ClusterArgs, OutputFormat, StorageArgs, STORAGE_FIX};
use crate::checkpoint::{CheckpointError, CheckpointRef, CheckpointStore, Pointer};
use crate::clock::now_ms;
use crate::coord::zookeeper::hint;
use crate::ha::Layout;
use crate::savepoint::{self, Manifest, Portable, SavepointError};
use crate::spec::{Desired, JobSpec, Share, StateFormat};
use crate::storage::{Storage, StorageError};
use crate::views::SavepointView;

/// What `weir savepoints` takes, and `weir savepoint` with `--to`.
#[derive(Debug, Args)]
pub struct SavepointsArgs {
    /// The job (for a savepoint: running, or cancelled with its checkpoints kept).
    name: String,
    /// `table` or `json`.
    #[arg(long, value_enum, default_value = "table")]
    output: OutputFormat,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    job: SavepointsArgs,
    /// Delete this savepoint of the job (its path as listed, or its id)
    /// instead of listing them.
    #[arg(long, value_name = "SAVEPOINT")]
    delete: Option<String>,
}

#[derive(Debug, Args)]
pub struct SavepointArgs {
    #[command(flatten)]
    job: SavepointsArgs,
    /// Keep it in another storage dir (`file:///path`, `s3://bucket/prefix`)
    /// rather than the cluster's; deploy from it with the URL it prints.
    #[arg(long)]
    to: Option<String>,
}

/// How often a task's newest checkpoint may be retired under the copy
/// before the copy gives up.
const COPY_TRIES: usize = 5;

pub async fn take(args: SavepointArgs) -> anyhow::Result<()> {
    let job = &args.job;
    let layout = job.cluster.layout()?;
    let client = job.cluster.connect().await?;
    let spec = read_spec(&client, &layout, &job.name).await?;
    let storage = job.storage.open()?;
    check_storage_record(&client, &layout, &storage, &job.cluster.cluster_id, None).await?;
    let to = match &args.to {
        Some(url) => Storage::open(url).with_context(|| format!("--to {url}"))?,
        None => storage.clone(),
    };
    let (dir, manifest) = take_savepoint(&client, &layout, &spec, &storage, &to).await?;
    let path = match &args.to {
        Some(_) => format!("{}/{dir}", to.canonical_url()),
        None => dir,
    };
    match job.output {
        OutputFormat::Json => say!(
            "{}",
            serde_json::to_string_pretty(&SavepointView {
                path,
                manifest: manifest.clone()
            })?
        )?,
        OutputFormat::Table => say!(
            "savepoint {path} of job `{}`: {} task(s) at checkpoint(s) {}; start a job from it with `weir deploy MODULE --name {} --from-savepoint {path}`",
            spec.name,
            manifest.tasks.len(),
            checkpoint_ids(&manifest.tasks),
            spec.name,
        )?,
    }
    Ok(())
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    if let Some(savepoint) = &args.delete {
        return delete(&args.job, savepoint).await;
    }
    let args = args.job;
    let storage = args.storage.open()?;
    let found = savepoint::list(&storage, &args.name).await.context(STORAGE_FIX)?;
    match args.output {
        OutputFormat::Json => {
            let views: Vec<SavepointView> = found
                .iter()
                .map(|(path, manifest)| SavepointView {
                    path: path.clone(),
                    manifest: manifest.clone(),
                })
                .collect();
            say!("{}", serde_json::to_string_pretty(&views)?)?;
        }
        OutputFormat::Table if found.is_empty() => {
            say!(
                "job `{}` has no savepoints; take one with `weir savepoint {}`",
                args.name,
                args.name
            )?;
        }
        OutputFormat::Table => {
            let now = now_ms();
            let rows: Vec<Vec<String>> = found
                .iter()
                .map(|(path, m)| {
                    vec![
                        path.clone(),
                        format!("{} ago", age(now.saturating_sub(m.created_ms))),
                        m.tasks.len().to_string(),
                        checkpoint_ids(&m.tasks),
                        m.module_sha256.chars().take(12).collect(),
                    ]
                })
                .collect();
            print_table(&["SAVEPOINT", "TAKEN", "TASKS", "CHECKPOINTS", "MODULE"], &rows)?;
        }
    }
    Ok(())
}

/// Deletes savepoint `savepoint` of job `args.name`, unless a job (running,
/// or cancelled and not deleted: a savepoint of it copies such a task from
/// here) still starts a task from it: one with no checkpoint of its own.
async fn delete(args: &SavepointsArgs, savepoint: &str) -> anyhow::Result<()> {
    let name = &args.name;
    let id = savepoint.strip_prefix(&savepoint::dir(name, "")).unwrap_or(savepoint);
    let dir = match id {
        id if id.starts_with("savepoint-") && !id.contains('/') => savepoint::dir(name, id),
        _ => bail!(
            "--delete {savepoint}: give a savepoint of job `{name}` as `weir savepoints {name}` lists it (savepoints/{name}/ID), or its ID"
        ),
    };
    let storage = args.storage.open()?;
    let layout = args.cluster.layout()?;
    let client = args.cluster.connect().await?;
    check_storage_record(&client, &layout, &storage, &args.cluster.cluster_id, None).await?;
    savepoint::manifest(&storage, &dir).await?;
    for job in crate::views::read_jobs(&client, &layout).await? {
        let Some(task) = job.tasks.iter().find(|t| t.last_checkpoint.is_none()) else {
            continue;
        };
        if read_spec(&client, &layout, &job.name).await?.from_savepoint.as_deref() != Some(&dir) {
            continue;
        }
        let once = match job.desired {
            Desired::Running => "delete it once it has (`weir jobs`)".to_string(),
            Desired::Canceled => format!("delete it once `weir delete {}` has removed that job", job.name),
        };
        bail!(
            "savepoint {dir} holds the state of task {} of job `{}`, which has no checkpoint of its own; {once}",
            task.task,
            job.name
        );
    }
    savepoint::delete(&storage, &dir).await.context(STORAGE_FIX)?;
    say!("savepoint {dir} deleted")?;
    Ok(())
}

fn checkpoint_ids(tasks: &[CheckpointRef]) -> String {
    let ids: Vec<String> = tasks.iter().map(|c| c.id.to_string()).collect();
    ids.join(",")
}

/// The spec of job `name`, or a one-line error naming the fix.
pub(super) async fn read_spec(client: &zkc::Client, layout: &Layout, name: &str) -> anyhow::Result<JobSpec> {
    let path = layout.job(name);
    let data = match client.get_data(&path).await {
        Ok((data, _)) => data,
        Err(zkc::Error::NoNode) => bail!("no job named `{name}`; `weir jobs` lists them"),
        Err(e) => bail!("cannot read job `{name}`: {e}{}", hint(&e)),
    };
    serde_json::from_slice(&data).with_context(|| format!("job `{name}` has an unreadable spec"))
}

/// Copies each task's newest committed checkpoint of `spec`'s deployment,
/// read from the cluster's storage dir `from`, into a new savepoint in
/// `to`; returns its directory and manifest.
pub(super) async fn take_savepoint(
    client: &zkc::Client,
    layout: &Layout,
    spec: &JobSpec,
    from: &Storage,
    to: &Storage,
) -> anyhow::Result<(String, Manifest)> {
    let created_ms = now_ms();
    let dir = savepoint::dir(&spec.name, &savepoint::new_id(created_ms, rand_u64()));
    // A job checkpointing its memory is run here to serialize it.
    let portable = match spec.state {
        StateFormat::Memory => Some(
            Portable::new(from, spec)
                .await
                .with_context(|| format!("cannot run job `{}` to serialize its memory", spec.name))?,
        ),
        StateFormat::Serialized => None,
    };
    let taking = Taking {
        from,
        to,
        dir: &dir,
        portable: portable.as_ref(),
    };
    let mut tasks = Vec::new();
    for share in spec.shares() {
        tasks.push(copy_newest(client, layout, spec, share, &taking).await?);
    }
    let manifest = Manifest {
        job: spec.name.clone(),
        uid: spec.uid.clone(),
        module_sha256: spec.module_sha256.clone(),
        lineage: spec.lineage(),
        sinks: spec.sinks(),
        created_ms,
        tasks,
    };
    savepoint::finish(to, &dir, &manifest).await.context(STORAGE_FIX)?;
    Ok((dir, manifest))
}

/// A savepoint being taken: from the cluster's storage dir into `dir` in
/// `to`, memory images made the SDK's state by `portable`.
struct Taking<'a> {
    from: &'a Storage,
    to: &'a Storage,
    dir: &'a str,
    portable: Option<&'a Portable>,
}

/// Copies task `share`'s newest committed checkpoint into the savepoint.
/// The task goes on committing meanwhile, and retention deletes what falls
/// out of its pointer: a checkpoint gone under the copy is taken again
/// from the pointer as it is then.
async fn copy_newest(
    client: &zkc::Client,
    layout: &Layout,
    spec: &JobSpec,
    share: Share,
    taking: &Taking<'_>,
) -> anyhow::Result<CheckpointRef> {
    let Taking {
        from,
        to,
        dir,
        portable,
    } = *taking;
    let (name, task) = (&spec.name, share.index);
    let store = CheckpointStore::new(from.clone(), name, &format!("{}/{task}", spec.uid));
    let path = layout.task_checkpoint(name, task);
    let mut tried = None;
    for _ in 0..COPY_TRIES {
        let data = match client.get_data(&path).await {
            Ok((data, _)) => data,
            Err(zkc::Error::NoNode) => bail!(
                "task {task} of job `{name}` has not started yet; take the savepoint once it has checkpointed (`weir jobs`)"
            ),
            Err(e) => bail!("cannot read {path}: {e}{}", hint(&e)),
        };
        let pointer = Pointer::decode(&data)?;
        let Some(newest) = pointer.latest() else {
            if let Some(started) = &spec.from_savepoint {
                return Ok(savepoint::carry_task(name, from, started, share, to, dir).await?);
            }
            bail!(
                "task {task} of job `{name}` has no checkpoint yet; take the savepoint once it has one (`weir jobs`)"
            );
        };
        match savepoint::copy_task(&store, newest, to, dir, task as usize, portable).await {
            // Kept as the SDK's state, whole.
            Ok(()) => {
                return Ok(CheckpointRef {
                    image_base: None,
                    ..newest
                })
            }
            // Retired under the copy, unless the pointer still names it.
            Err(SavepointError::Task {
                source: CheckpointError::Storage(StorageError::NotFound { .. }),
                ..
            }) if tried != Some(newest) => tried = Some(newest),
            Err(e) => return Err(e.into()),
        }
    }
    bail!(
        "task {task} of job `{name}` retired {COPY_TRIES} checkpoints in a row while they were copied; \
         the storage dir is slower than its checkpoint interval: try again, or lengthen --checkpoint-interval"
    )
}
