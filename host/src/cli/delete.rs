//! `weir delete`: remove a cancelled job for good, its spec, status and
//! pointer from ZooKeeper and its checkpoints from the storage dir. What
//! its sink holds stays.

use anyhow::{bail, Context};
use clap::Args;
use zookeeper_client as zkc;

use super::{say, ClusterArgs, StorageArgs, STORAGE_FIX};
use crate::coord::zookeeper::hint;
use crate::ha::candidates;
use crate::spec::{Desired, JobSpec, JobState, JobStatus};

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The cancelled job to delete.
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    storage: StorageArgs,
}

/// Tasks whose nodes are deleted in one multi-op at most (five each at most).
const DELETE_CHUNK: usize = 100;

pub async fn run(args: DeleteArgs) -> anyhow::Result<()> {
    let layout = args.cluster.layout()?;
    let storage = args.storage.open().context(STORAGE_FIX)?;
    let client = args.cluster.connect().await?;
    super::deploy::check_storage_record(&client, &layout, &storage, &args.cluster.cluster_id, None).await?;
    let name = &args.name;
    let (data, stat) = match client.get_data(&layout.job(name)).await {
        Ok(found) => found,
        Err(zkc::Error::NoNode) => bail!("no job named `{name}`; `weir jobs` lists them"),
        Err(e) => bail!("cannot read job `{name}`: {e}{}", hint(&e)),
    };
    let spec: JobSpec =
        serde_json::from_slice(&data).with_context(|| format!("job `{name}` has an unreadable spec"))?;
    if spec.desired == Desired::Running {
        bail!("job `{name}` is running; cancel it first (`weir cancel {name}`), then delete it");
    }
    let stopped = match client.get_data(&layout.job_status(name)).await {
        Ok((data, _)) => serde_json::from_slice::<JobStatus>(&data).is_ok_and(|s| s.state == JobState::Canceled),
        Err(zkc::Error::NoNode) => true,
        Err(e) => bail!("cannot read job `{name}`'s status: {e}{}", hint(&e)),
    };
    if !stopped && !candidates(&client, &layout).await?.is_empty() {
        bail!("job `{name}` is cancelled but the leader has not confirmed it stopped; try again shortly (`weir jobs` shows CANCELED once it has)");
    }
    // Every deployment this name had left checkpoints; list them before the
    // spec goes, so a job deployed under the name right after keeps its own.
    let prefix = format!("checkpoints/{name}");
    let deployments = storage.list_dirs(&prefix).await.context(STORAGE_FIX)?;

    let mut writer = client.new_multi_writer();
    let tasks_dir = layout.job_tasks(name);
    let tasks = match client.list_children(&tasks_dir).await {
        Ok(tasks) => tasks,
        Err(zkc::Error::NoNode) => Vec::new(),
        Err(e) => bail!("cannot list {tasks_dir}: {e}{}", hint(&e)),
    };
    // Each task's nodes (its children, then itself) go together, never
    // split between two requests: a task left with its assignment but no
    // status would read as still running. A bounded number of tasks per
    // request (ZooKeeper refuses one over 1 MiB); the spec last, checked
    // at the version read.
    let mut doomed: Vec<Vec<String>> = Vec::new();
    for task in &tasks {
        let task = format!("{tasks_dir}/{task}");
        let mut nodes: Vec<String> = match client.list_children(&task).await {
            Ok(children) => children.iter().map(|c| format!("{task}/{c}")).collect(),
            Err(zkc::Error::NoNode) => Vec::new(),
            Err(e) => bail!("cannot list {task}: {e}{}", hint(&e)),
        };
        nodes.push(task);
        doomed.push(nodes);
    }
    for part in doomed.chunks(DELETE_CHUNK) {
        let mut tasks = client.new_multi_writer();
        for path in part.iter().flatten() {
            tasks.add_delete(path, None)?;
        }
        if let Err(e) = tasks.commit().await {
            bail!(
                "cannot delete job `{name}`'s tasks from ZooKeeper: {e}{}",
                hint(&e.clone().into())
            );
        }
    }
    if client.check_stat(&tasks_dir).await.ok().flatten().is_some() {
        writer.add_delete(&tasks_dir, None)?;
    }
    writer.add_delete(&layout.job_status(name), None)?;
    writer.add_delete(&layout.job(name), Some(stat.version))?;
    match writer.commit().await {
        Ok(_) => {}
        Err(zkc::MultiWriteError::OperationFailed {
            source: zkc::Error::BadVersion,
            ..
        }) => bail!("job `{name}` changed while deleting it (deployed again?); check `weir jobs`"),
        Err(e) => bail!(
            "cannot delete job `{name}` from ZooKeeper: {e}{}",
            hint(&e.clone().into())
        ),
    }
    for dir in &deployments {
        storage.delete_prefix(dir).await.context(STORAGE_FIX)?;
    }
    say!(
        "deleted job `{name}`: its spec, status, tasks and checkpoint pointers, and the checkpoints of {} deployment(s); its sink's output is kept",
        deployments.len()
    )?;
    Ok(())
}
