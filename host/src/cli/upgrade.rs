//! `weir upgrade`, `weir configure` and `weir rescale`: replace a running
//! job's module, settings or task count and keep its state. The job is cancelled with a savepoint
//! (where each task stopped) and deployed again from it, so its output
//! carries on with no gap and no duplicate. Until every task of the new
//! deployment has committed a checkpoint of its own the change is on
//! trial: a task that fails first (the module refuses the state, traps,
//! or refuses a record) rolls the job back to the old module and
//! settings, from the same savepoint. A rescale regroups the savepoint's
//! tasks (see `regroup`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use zookeeper_client::{self as zkc, CreateMode};

use super::cancel::{mark_cancelled, wait_stopped};
use super::deploy::{
    check_regroup, check_storage_record, checked_module, encoded_spec, refuse_duplicates, refuse_shared_lineage,
    write_spec, STATE_PER_TASK,
};
use super::savepoint::{read_spec, take_savepoint};
use super::{rand_u64, say, ClusterArgs, StorageArgs, STORAGE_FIX};
use crate::checkpoint::{CheckpointError, CheckpointStore, Pointer};
use crate::clock::now_ms;
use crate::coord::zookeeper::hint;
use crate::ha::{candidates, Layout};
use crate::runtime::Limits;
use crate::spec::{parse_config_pair, Desired, JobSpec, JobState, SinkSpec};
use crate::storage::{sha256_hex, Storage, StorageError};
use crate::views::{read_job, JobView};

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The running job.
    name: String,
    /// Its new component (`.wasm`).
    module: PathBuf,
    /// A setting to change or add for the job's `init`, `key=value`; repeat
    /// for more. The others stay as they were.
    #[arg(long = "config", value_parser = parse_config_pair)]
    config: Vec<(String, String)>,
    #[command(flatten)]
    trial: Trial,
}

#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// The running job.
    name: String,
    /// Settings to change or add, `key=value`; the others stay as they were.
    #[arg(required = true, value_parser = parse_config_pair)]
    settings: Vec<(String, String)>,
    #[command(flatten)]
    trial: Trial,
}

#[derive(Debug, Args)]
pub struct RescaleArgs {
    /// The running job: it must read a Kafka topic and keep its state per
    /// partition (`PARTITIONED_STATE` in its Job impl).
    name: String,
    /// How many tasks it runs from now on.
    tasks: u32,
    #[command(flatten)]
    trial: Trial,
}

/// What a replacement changes.
struct Change {
    /// A new module, or the same.
    module: Option<PathBuf>,
    /// Settings changed or added.
    settings: Vec<(String, String)>,
    /// A new task count, or the same.
    tasks: Option<u32>,
}

/// How the change is carried out, for every command.
#[derive(Debug, Args)]
struct Trial {
    /// How long each step may take: the old job stopping, and the new one
    /// committing its first checkpoints before it is rolled back.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    wait: Duration,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    storage: StorageArgs,
}

pub async fn upgrade(args: UpgradeArgs) -> anyhow::Result<()> {
    let UpgradeArgs {
        name,
        module,
        config,
        trial,
    } = args;
    refuse_duplicates("--config", &config)?;
    let change = Change {
        module: Some(module),
        settings: config,
        tasks: None,
    };
    replace(&name, change, trial).await
}

pub async fn configure(args: ConfigureArgs) -> anyhow::Result<()> {
    refuse_duplicates("setting", &args.settings)?;
    let change = Change {
        module: None,
        settings: args.settings,
        tasks: None,
    };
    replace(&args.name, change, args.trial).await
}

pub async fn rescale(args: RescaleArgs) -> anyhow::Result<()> {
    let change = Change {
        module: None,
        settings: Vec::new(),
        tasks: Some(args.tasks),
    };
    replace(&args.name, change, args.trial).await
}

/// `settings` over `config`: a key given replaces its value, a new one is added.
fn merged(config: &[(String, String)], settings: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut merged = config.to_vec();
    for (key, value) in settings {
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => merged.push((key, value)),
        }
    }
    merged
}

async fn replace(name: &str, change: Change, trial: Trial) -> anyhow::Result<()> {
    let Change {
        module,
        settings,
        tasks,
    } = change;
    if trial.wait.is_zero() {
        bail!("--wait 0: an upgrade waits for the job to stop and for the new module's first checkpoints; give it a time, e.g. 60s");
    }
    let layout = trial.cluster.layout()?;
    let client = trial.cluster.connect().await?;
    let storage = trial.storage.open()?;
    check_storage_record(&client, &layout, &storage, &trial.cluster.cluster_id, None).await?;
    let old = read_spec(&client, &layout, name).await?;
    if old.desired != Desired::Running {
        bail!("job `{name}` is cancelled; start it from a savepoint with `weir deploy MODULE --name {name} --from-savepoint PATH` (`weir savepoints {name}` lists them)");
    }
    let limits = Limits {
        memory_bytes: old.memory_limit,
        call_timeout: old.call_timeout,
    };
    let module_sha256 = match &module {
        Some(path) => {
            let bytes = checked_module(path, limits, &old.grants, old.state).await?;
            let sha256 = sha256_hex(&bytes);
            storage
                .put_if_absent(&Storage::module_path(&sha256), bytes.into())
                .await
                .context(STORAGE_FIX)?;
            sha256
        }
        None => old.module_sha256.clone(),
    };
    let config = merged(&old.config, settings);
    let parallelism = tasks.unwrap_or(old.parallelism);
    let lineage = old.lineage();
    let from = |module_sha256: String, config: Vec<(String, String)>, parallelism: u32, savepoint: &str| JobSpec {
        uid: format!("{:016x}", rand_u64()),
        module_sha256,
        config,
        parallelism,
        from_savepoint: Some(savepoint.to_string()),
        lineage: Some(lineage.clone()),
        desired: Desired::Running,
        created_ms: now_ms(),
        ..old.clone()
    };
    // Everything that can be refused is, before the job stops.
    let placeholder = crate::savepoint::dir(name, &crate::savepoint::new_id(now_ms(), 0));
    let planned = from(module_sha256.clone(), config.clone(), parallelism, &placeholder);
    encoded_spec(&planned)?;
    if parallelism != old.parallelism {
        if let Err(why) = check_regroup(&planned) {
            bail!("job `{name}` cannot be rescaled: {why}");
        }
        if !(1..=crate::spec::MAX_PARALLELISM).contains(&parallelism) {
            bail!(
                "weir rescale {name} {parallelism}: give 1 to {} tasks",
                crate::spec::MAX_PARALLELISM
            );
        }
        planned.check_parallelism().with_context(|| {
            format!(
                "job `{name}` cannot be rescaled to {}; deploy it again with a sink that can",
                plural(parallelism, "task")
            )
        })?;
        if !state_is_partitioned(&client, &layout, &storage, &old).await? {
            bail!("job `{name}` cannot be rescaled: {STATE_PER_TASK}");
        }
    } else if tasks.is_some() {
        bail!("job `{name}` runs {parallelism} tasks already");
    }
    if candidates(&client, &layout).await?.is_empty() {
        bail!(
            "no supervisor is running in cluster `{}`: an upgrade needs one to stop the job and start the new module",
            trial.cluster.cluster_id
        );
    }
    // A task that has not checkpointed since the job started from a
    // savepoint stands where that savepoint put it, unless that was a
    // regrouping: then its start is spread over the savepoint's tasks.
    let unchecked = read_job(&client, &layout, name)
        .await?
        .and_then(|job| job.tasks.into_iter().find(|t| t.last_checkpoint.is_none()));
    let started_whole = match (&unchecked, &old.from_savepoint) {
        (Some(_), Some(dir)) => {
            crate::savepoint::manifest(&storage, dir).await?.tasks.len() == old.parallelism as usize
        }
        _ => false,
    };
    match (unchecked.filter(|_| !started_whole), &old.from_savepoint) {
        (Some(task), Some(dir)) => bail!(
            "task {} of job `{name}` has not checkpointed since it was regrouped from savepoint {dir}, so its state is still spread over that savepoint's tasks: change the job once it has (`weir jobs`)",
            task.task
        ),
        (Some(task), None) => bail!(
            "task {} of job `{name}` has no checkpoint yet, so there is no state to carry over: change the job once it has one (`weir jobs`)",
            task.task
        ),
        (None, _) => {}
    }

    mark_cancelled(&client, &layout, &old).await?;
    let stopped = async {
        wait_stopped(&client, &layout, name, trial.wait).await?;
        take_savepoint(&client, &layout, &old, &storage, &storage).await
    };
    let (savepoint, _) = stopped.await.with_context(|| {
        format!("the upgrade of job `{name}` stopped with the job cancelled; once `weir jobs` shows it CANCELED, `weir cancel {name} --savepoint` makes its savepoint and `weir deploy` with --from-savepoint starts it again")
    })?;
    say!("job `{name}` stopped at savepoint {savepoint}")?;
    let recover = format!(
        "job `{name}` may be left cancelled: start it again from savepoint {savepoint} with `weir deploy MODULE --name {name} --from-savepoint {savepoint}` and the flags it had"
    );
    let options = CreateMode::Persistent.with_acls(trial.cluster.zk()?.acls());
    let new = from(module_sha256, config, parallelism, &savepoint);
    refuse_shared_lineage(&client, &layout, name, &lineage)
        .await
        .context(recover.clone())?;
    write_spec(&client, &layout, &options, &new)
        .await
        .context(recover.clone())?;
    // The trial waits for the first checkpoints, one interval after the start.
    let trial_end = first_checkpoints(&client, &layout, &new, trial.wait + 2 * new.checkpoint_interval).await;
    let why = match trial_end {
        TrialEnd::Committed => {
            say!(
                "job `{name}` runs module {} in {} with its state from savepoint {savepoint}",
                &new.module_sha256[..12],
                plural(new.parallelism, "task")
            )?;
            return Ok(());
        }
        TrialEnd::Replaced => bail!("job `{name}` was cancelled or deployed again by someone else while its upgrade was on trial; savepoint {savepoint} holds where the old module stopped"),
        TrialEnd::Failed { why, published } => match kept_output(&old, &new, &published) {
            Some(kept) => bail!(
                "the change of job `{name}` failed ({why}) after a task had published output {kept}, so it is not \
                 rolled back: the new deployment keeps running as its --restart says; fix it and try again"
            ),
            None => why,
        },
    };
    // Where the new deployment stopped, for when going back would write
    // its output again.
    let resume_new = format!(
        "once `weir jobs` shows job `{name}` CANCELED, `weir savepoint {name}` then `weir deploy MODULE --name {name} \
         --from-savepoint PATH --parallelism {}` (the new module, the job's flags) start the new deployment again where it stopped",
        new.parallelism
    );
    let every_task = (0..new.parallelism).collect();
    let stop_new = async {
        mark_cancelled(&client, &layout, &new).await?;
        wait_stopped(&client, &layout, name, trial.wait).await?;
        Ok::<_, anyhow::Error>(read_job(&client, &layout, name).await?)
    };
    let stopped = stop_new.await.with_context(|| {
        let advice = match kept_output(&old, &new, &every_task) {
            Some(_) => &resume_new,
            None => &recover,
        };
        format!("the new deployment {why}, and stopping it to roll it back failed; {advice}")
    })?;
    // Its tasks ran until they stopped: one may have published since the trial looked.
    let published = stopped.as_ref().map(committed).unwrap_or_default();
    if let Some(kept) = kept_output(&old, &new, &published) {
        let not_back = format!(
            "the change of job `{name}` failed ({why}), and a task published output {kept} while it was stopping, so it is not rolled back"
        );
        let tasks = stopped.iter().flat_map(|job| &job.tasks);
        if let Some(task) = tasks.into_iter().find(|t| t.state == JobState::Failed) {
            bail!(
                "{not_back}; task {} failed for good, so the job is left cancelled: fix the module, then {resume_new}",
                task.task
            );
        }
        // The same deployment again: its tasks carry on from their own checkpoints.
        write_spec(&client, &layout, &options, &new)
            .await
            .with_context(|| format!("{not_back}, and starting it again failed; {resume_new}"))?;
        bail!("{not_back}: the new deployment runs again from its tasks' own checkpoints; fix it and try again");
    }
    let rollback = async {
        refuse_shared_lineage(&client, &layout, name, &lineage).await?;
        let back = from(
            old.module_sha256.clone(),
            old.config.clone(),
            old.parallelism,
            &savepoint,
        );
        write_spec(&client, &layout, &options, &back).await
    };
    rollback
        .await
        .with_context(|| format!("the new deployment {why}, and rolling it back failed; {recover}"))?;
    bail!(
        "job `{name}` rolled back to module {}, its old settings and {} from savepoint {savepoint}: the new deployment {why}",
        &old.module_sha256[..12],
        plural(old.parallelism, "task")
    )
}

/// `1 task`, `3 tasks`.
fn plural(n: u32, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// Whether the job of `spec` keeps its state per source partition, as its
/// task 0's newest checkpoint (or the savepoint it started from) holds it.
async fn state_is_partitioned(
    client: &zkc::Client,
    layout: &Layout,
    storage: &Storage,
    spec: &JobSpec,
) -> anyhow::Result<bool> {
    let name = &spec.name;
    let path = layout.task_checkpoint(name, 0);
    let store = CheckpointStore::new(storage.clone(), name, &format!("{}/0", spec.uid));
    // Retention deletes what falls out of the pointer, maybe under the read.
    for _ in 0..3 {
        let data = match client.get_data(&path).await {
            Ok((data, _)) => data,
            Err(zkc::Error::NoNode) => {
                bail!("job `{name}` has not started yet; rescale it once it has checkpointed (`weir jobs`)")
            }
            Err(e) => bail!("cannot read {path}: {e}{}", hint(&e)),
        };
        let Some(newest) = Pointer::decode(&data)?.latest() else {
            let Some(started) = &spec.from_savepoint else {
                bail!("job `{name}` has no checkpoint yet, so there is no state to regroup: rescale it once it has one (`weir jobs`)");
            };
            return Ok(crate::savepoint::is_regroupable(storage, started).await?);
        };
        match store.read(newest).await {
            Ok(checkpoint) if checkpoint.meta.image.is_some() => {
                // A memory image: whether the SDK's state is kept per
                // partition shows once the job serializes it.
                let portable = crate::savepoint::Portable::new(storage, spec)
                    .await
                    .with_context(|| format!("cannot run job `{name}` to serialize its memory"))?;
                let serialized = portable
                    .serialized(checkpoint, &store)
                    .await
                    .with_context(|| format!("serializing job `{name}`'s checkpoint {}", newest.id))?;
                return Ok(crate::regroup::is_partitioned(&serialized.snapshot));
            }
            Ok(checkpoint) => return Ok(crate::regroup::is_partitioned(&checkpoint.snapshot)),
            Err(CheckpointError::Storage(StorageError::NotFound { .. })) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading job `{name}`'s checkpoint {}", newest.id)))
            }
        }
    }
    bail!("job `{name}` retired its checkpoints faster than they could be read; try again")
}

/// Why output the `published` tasks of `new`'s deployment wrote would
/// stay past a rollback to `old` and be written again, if it would: a file
/// is cut back to the savepoint's position, a table or a topic keeps what
/// it was given, and a task the old count does not have writes a file none
/// of the old tasks cut back.
fn kept_output(old: &JobSpec, new: &JobSpec, published: &BTreeSet<u32>) -> Option<&'static str> {
    let rewinds = |sink: &SinkSpec| matches!(sink, SinkSpec::File { .. } | SinkSpec::Stdout);
    if published.is_empty() {
        None
    } else if !(rewinds(&new.sink) && new.on_error.dead_letters().is_none_or(rewinds)) {
        Some("to a table or topic, which keeps what it holds")
    } else if published.iter().any(|&task| task >= old.parallelism) {
        Some("to the file of a task the old count does not have")
    } else {
        None
    }
}

/// The tasks of `job` that have committed (and so published) a checkpoint.
fn committed(job: &JobView) -> BTreeSet<u32> {
    job.tasks
        .iter()
        .filter(|t| t.last_checkpoint.is_some())
        .map(|t| t.task)
        .collect()
}

/// How a new deployment's trial ended.
enum TrialEnd {
    /// Every task committed a checkpoint of its own.
    Committed,
    /// A task failed first, or the wait ran out; `published`: the tasks
    /// that had committed (and so published) a checkpoint by then.
    Failed { why: String, published: BTreeSet<u32> },
    /// Someone else cancelled or replaced it meanwhile.
    Replaced,
}

/// Waits until every task of `spec`'s deployment has committed a
/// checkpoint of its own, one fails first, or `wait` passes.
async fn first_checkpoints(client: &zkc::Client, layout: &Layout, spec: &JobSpec, wait: Duration) -> TrialEnd {
    let deadline = Instant::now() + wait;
    // Each look reads three znodes a task: a job of thousands looks less often.
    let poll = (Duration::from_millis(100) + Duration::from_millis(5) * spec.parallelism).min(Duration::from_secs(1));
    let mut published = BTreeSet::new();
    while Instant::now() < deadline {
        let current = read_spec(client, layout, &spec.name).await.ok();
        if current
            .as_ref()
            .is_some_and(|s| s.uid != spec.uid || s.desired != Desired::Running)
        {
            return TrialEnd::Replaced;
        }
        if let Ok(Some(job)) = read_job(client, layout, &spec.name).await {
            published.extend(committed(&job));
            if job.state == JobState::Failed {
                let why = job.error.unwrap_or_else(|| "no reason given".into());
                return TrialEnd::Failed {
                    why: format!("failed: {why}"),
                    published,
                };
            }
            if let Some(task) = job.tasks.iter().find(|t| t.error.is_some() || t.restarts > 0) {
                let error = task.error.as_deref().unwrap_or("see the supervisors' logs");
                return TrialEnd::Failed {
                    why: format!("failed in task {}: {error}", task.task),
                    published,
                };
            }
            if job
                .tasks
                .iter()
                .all(|t| t.state == JobState::Running && t.last_checkpoint.is_some())
            {
                return TrialEnd::Committed;
            }
        }
        tokio::time::sleep(poll).await;
    }
    TrialEnd::Failed {
        why: format!("did not commit a checkpoint of every task within {wait:?}"),
        published,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_is_refused_only_for_output_it_cannot_cut_back() {
        let file = |parallelism| JobSpec {
            sink: SinkSpec::File {
                path: "/out-{task}".into(),
            },
            ..crate::spec::test_spec("j", parallelism)
        };
        let tasks = |t: &[u32]| t.iter().copied().collect::<BTreeSet<u32>>();
        let (two, three) = (file(2), file(3));
        assert_eq!(kept_output(&two, &three, &tasks(&[])), None);
        assert_eq!(
            kept_output(&two, &three, &tasks(&[0, 1])),
            None,
            "the old tasks cut their files back"
        );
        assert!(kept_output(&two, &three, &tasks(&[2])).is_some_and(|why| why.contains("old count does not have")));
        assert_eq!(kept_output(&three, &two, &tasks(&[0, 1])), None);
        let table = JobSpec {
            sink: SinkSpec::Postgres {
                url: "postgresql://u@h:5432/d".into(),
                table: "t".into(),
                mode: Default::default(),
            },
            ..file(2)
        };
        assert_eq!(kept_output(&two, &table, &tasks(&[])), None);
        assert!(kept_output(&two, &table, &tasks(&[0])).is_some_and(|why| why.contains("table or topic")));
    }

    #[test]
    fn settings_replace_their_keys_and_add_new_ones_in_order() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let config = vec![pair("window", "100"), pair("mode", "a")];
        assert_eq!(
            merged(&config, vec![pair("mode", "b"), pair("extra", "1")]),
            vec![pair("window", "100"), pair("mode", "b"), pair("extra", "1")]
        );
    }
}
