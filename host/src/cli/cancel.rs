//! `weir cancel`: mark a job cancelled; the leader stops it and its output.
//! With `--savepoint`, once it has stopped, its tasks' last checkpoints
//! become a savepoint: a job deployed from it carries on exactly there.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use zookeeper_client as zkc;

use super::savepoint::{read_spec, take_savepoint};
use super::{say, ClusterArgs, StorageArgs};
use crate::coord::zookeeper::hint;
use crate::ha::{candidates, Layout};
use crate::spec::{Desired, JobSpec, JobState, JobStatus};

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job to cancel.
    name: String,
    /// How long to wait for the leader to confirm the job stopped (0: do not wait).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Once it has stopped, take a savepoint of where it stopped.
    #[arg(long)]
    savepoint: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    storage: StorageArgs,
}

pub async fn run(args: CancelArgs) -> anyhow::Result<()> {
    if args.savepoint && args.wait.is_zero() {
        bail!("--savepoint is taken once the job has stopped: give --wait a time to wait for that, e.g. 30s");
    }
    let layout = args.cluster.layout()?;
    let client = args.cluster.connect().await?;
    let name = &args.name;
    let storage = args.storage.open()?;
    if args.savepoint {
        // Before cancelling: a wrong --storage-dir must not leave the job
        // cancelled with no savepoint.
        super::deploy::check_storage_record(&client, &layout, &storage, &args.cluster.cluster_id, None).await?;
    }
    let spec = read_spec(&client, &layout, name).await?;
    if spec.desired == Desired::Canceled {
        say!("job `{name}` is already cancelled")?;
        // A savepoint still waits for it to have stopped.
        if !args.savepoint {
            return Ok(());
        }
    } else {
        mark_cancelled(&client, &layout, &spec).await?;
    }
    if args.wait.is_zero() {
        say!("job `{name}` cancelled; the leader stops it shortly")?;
        return Ok(());
    }
    match wait_stopped(&client, &layout, name, args.wait).await? {
        Stopped::Confirmed => say!("job `{name}` cancelled and stopped")?,
        Stopped::NothingRan => say!("job `{name}` cancelled (no supervisor is running, so nothing was running)")?,
    }
    if args.savepoint {
        let (dir, manifest) = take_savepoint(&client, &layout, &spec, &storage, &storage).await?;
        say!(
            "savepoint {dir}: where its {} task(s) stopped; carry on from it with `weir deploy MODULE --name {name} --from-savepoint {dir}`",
            manifest.tasks.len(),
        )?;
    }
    Ok(())
}

/// Writes `spec` back as cancelled, checked against any change since it
/// was read: the one spec cancelled is the one the caller read.
pub(super) async fn mark_cancelled(client: &zkc::Client, layout: &Layout, spec: &JobSpec) -> anyhow::Result<()> {
    let name = &spec.name;
    let path = layout.job(name);
    let (data, stat) = match client.get_data(&path).await {
        Ok(found) => found,
        Err(zkc::Error::NoNode) => bail!("no job named `{name}`; `weir jobs` lists them"),
        Err(e) => bail!("cannot read job `{name}`: {e}{}", hint(&e)),
    };
    if serde_json::from_slice::<JobSpec>(&data).ok().as_ref() != Some(spec) {
        bail!("job `{name}` changed while cancelling it; run the command again");
    }
    let cancelled = JobSpec {
        desired: Desired::Canceled,
        ..spec.clone()
    };
    match client
        .set_data(&path, &serde_json::to_vec(&cancelled)?, Some(stat.version))
        .await
    {
        Ok(_) => Ok(()),
        Err(zkc::Error::BadVersion) => bail!("job `{name}` changed while cancelling it; run the command again"),
        Err(e) => bail!("cannot cancel job `{name}`: {e}{}", hint(&e)),
    }
}

/// How a cancelled job came to a stop.
pub(super) enum Stopped {
    /// The leader marked it CANCELED: every task has stopped.
    Confirmed,
    /// No supervisor runs, so none of its tasks can be running.
    NothingRan,
}

/// Waits up to `wait` for the leader to confirm that cancelled job `name`
/// stopped; an error past it.
pub(super) async fn wait_stopped(
    client: &zkc::Client,
    layout: &Layout,
    name: &str,
    wait: Duration,
) -> anyhow::Result<Stopped> {
    if candidates(client, layout).await?.is_empty() {
        return Ok(Stopped::NothingRan);
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok((data, _)) = client.get_data(&layout.job_status(name)).await {
            if serde_json::from_slice::<JobStatus>(&data).is_ok_and(|s| s.state == JobState::Canceled) {
                return Ok(Stopped::Confirmed);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("job `{name}` is marked cancelled but the leader has not confirmed it stopped within {wait:?}; check `weir status`")
}
