//! `weir cancel`: mark a job cancelled; the leader stops it and its output.
//! With `--savepoint`, once it has stopped, its tasks' last checkpoints
//! become a savepoint: a job deployed from it carries on exactly there.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use zookeeper_client as zkc;

use super::savepoint::take_savepoint;
use super::{say, ClusterArgs, StorageArgs};
use crate::coord::zookeeper::hint;
use crate::ha::candidates;
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
    let storage = args.storage.open()?;
    if args.savepoint {
        // Before cancelling: a wrong --storage-dir must not leave the job
        // cancelled with no savepoint.
        let client = args.cluster.connect().await?;
        let layout = args.cluster.layout()?;
        super::deploy::check_storage_record(&client, &layout, &storage, &args.cluster.cluster_id, None).await?;
    }
    stop(&args).await?;
    if args.savepoint {
        let layout = args.cluster.layout()?;
        let client = args.cluster.connect().await?;
        let spec = super::savepoint::read_spec(&client, &layout, &args.name).await?;
        let (dir, manifest) = take_savepoint(&client, &layout, &spec, &storage, &storage).await?;
        say!(
            "savepoint {dir}: where its {} task(s) stopped; carry on from it with `weir deploy MODULE --name {} --from-savepoint {dir}`",
            manifest.tasks.len(),
            args.name
        )?;
    }
    Ok(())
}

/// Marks the job cancelled and waits, up to `--wait`, for the leader to
/// confirm it stopped.
async fn stop(args: &CancelArgs) -> anyhow::Result<()> {
    let layout = args.cluster.layout()?;
    let client = args.cluster.connect().await?;
    let name = &args.name;
    let path = layout.job(name);
    let (data, stat) = match client.get_data(&path).await {
        Ok(found) => found,
        Err(zkc::Error::NoNode) => bail!("no job named `{name}`; `weir jobs` lists them"),
        Err(e) => bail!("cannot read job `{name}`: {e}{}", hint(&e)),
    };
    let mut spec: JobSpec =
        serde_json::from_slice(&data).with_context(|| format!("job `{name}` has an unreadable spec"))?;
    if spec.desired == Desired::Canceled {
        say!("job `{name}` is already cancelled")?;
        // A savepoint still waits for it to have stopped.
        if !args.savepoint {
            return Ok(());
        }
    } else {
        spec.desired = Desired::Canceled;
        match client
            .set_data(&path, &serde_json::to_vec(&spec)?, Some(stat.version))
            .await
        {
            Ok(_) => {}
            Err(zkc::Error::BadVersion) => {
                bail!("job `{name}` changed while cancelling it; run the command again")
            }
            Err(e) => bail!("cannot cancel job `{name}`: {e}{}", hint(&e)),
        }
    }
    if args.wait.is_zero() {
        say!("job `{name}` cancelled; the leader stops it shortly")?;
        return Ok(());
    }
    if candidates(&client, &layout).await?.is_empty() {
        say!("job `{name}` cancelled (no supervisor is running, so nothing was running)")?;
        return Ok(());
    }
    let deadline = Instant::now() + args.wait;
    while Instant::now() < deadline {
        if let Ok((data, _)) = client.get_data(&layout.job_status(name)).await {
            if serde_json::from_slice::<JobStatus>(&data).is_ok_and(|s| s.state == JobState::Canceled) {
                say!("job `{name}` cancelled and stopped")?;
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "job `{name}` is marked cancelled but the leader has not confirmed it stopped within {:?}; check `weir status`",
        args.wait
    )
}
