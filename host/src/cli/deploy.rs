//! `weir deploy`: validate the component and the specs here, where the user
//! can fix them, store the module, then write the job's spec to ZooKeeper.
//! No leader is needed: the next one to reconcile starts the job.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use zookeeper_client::{self as zkc, CreateMode};

use super::{rand_u64, say, ClusterArgs, StorageArgs, STORAGE_FIX};
use crate::clock::now_ms;
use crate::coord::zookeeper::hint;
use crate::ha::candidates;
use crate::runtime::{GuestError, Limits, Runtime};
use crate::savepoint::Manifest;
use crate::spec::{
    parse_config_pair, validate_job_name, Cidr, Desired, DirGrant, Grants, JobSpec, JobState, JobStatus, Lineage,
    OnError, RestartStrategy, SinkSpec, SourceSpec, StateFormat, WatermarkSpec,
};
use crate::storage::{sha256_hex, Storage};

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The job's component (`.wasm`, built for wasm32-wasip2).
    module: PathBuf,
    /// Job name (default: the module's file name without `.wasm`).
    #[arg(long)]
    name: Option<String>,
    /// Input: `sequence[:start=N,rate=R]` (R events/s, 0 = unthrottled; default 1000) or `file:PATH`.
    #[arg(long, default_value = "sequence")]
    source: SourceSpec,
    /// Output: `stdout` or `file:PATH` (exactly-once).
    #[arg(long, default_value = "stdout")]
    sink: SinkSpec,
    /// How many tasks run the job, spread over the supervisors: each has
    /// its own state and checkpoints and reads its share of the source (a
    /// Kafka topic's partitions, every N-th number of a sequence). A file
    /// sink's path then needs `{task}`, e.g. `file:/var/out-{task}.txt`.
    /// (default: 1, or the savepoint's task count).
    #[arg(long)]
    parallelism: Option<u32>,
    /// Time between checkpoints, e.g. `1s`, `500ms`.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    checkpoint_interval: Duration,
    /// A setting for the job's `init`, `key=value`; repeat for more.
    #[arg(long = "config", value_parser = parse_config_pair)]
    config: Vec<(String, String)>,
    /// Cap on the job's memory, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_limit: u64,
    /// What checkpoints keep of the job: `serialized`, the state the SDK
    /// serializes, whole each time; or `memory`, the pages of its memory
    /// written since the last checkpoint (a checkpoint costs what changed;
    /// it restores into the same module only, and a savepoint still needs
    /// the serialized state: take one with `weir cancel --savepoint`).
    #[arg(long, value_enum, default_value_t = StateFormat::Serialized)]
    checkpoint_state: StateFormat,
    /// Cap on the CPU time of one guest call, e.g. `5s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    call_timeout: Duration,
    /// After a failed attempt: `none`, `fixed:attempts=N,delay=D` or
    /// `exponential:initial=D,max=D[,attempts=N]`.
    #[arg(long, default_value = "exponential:initial=1s,max=30s")]
    restart: RestartStrategy,
    /// What becomes of a record the job refuses (an error from its
    /// `process`): `fail` the attempt, `skip` it (counted and logged), or
    /// `dead-letter:SINK` (written with the reason to SINK, e.g.
    /// `dead-letter:file:/var/weir/bad.jsonl`; late records go there too).
    #[arg(long, default_value = "fail")]
    on_error: OnError,
    /// Give the job a watermark that trails the newest event time by D,
    /// `max-delay=D`, per source partition; `,idle=D` leaves out a partition
    /// silent that long (needs a source with event timestamps).
    #[arg(long)]
    watermark: Option<WatermarkSpec>,
    /// Grant the job an environment variable, `KEY=VALUE`; repeat for more (default: none).
    #[arg(long = "env", value_parser = parse_config_pair)]
    env: Vec<(String, String)>,
    /// Grant the job read-only access to a host directory, `HOST[::GUEST]`; repeat for more.
    /// The directory must exist on every supervisor's machine.
    #[arg(long = "dir")]
    dirs: Vec<DirGrant>,
    /// Grant the job the network: sockets and host-name lookups, to any
    /// address but loopback and link-local ones (default: none).
    #[arg(long)]
    allow_network: bool,
    /// Grant the network to these addresses only, `ADDRESS[/PREFIX]`; repeat for more.
    #[arg(long = "allow-network-to")]
    network_to: Vec<Cidr>,
    /// Start from a savepoint: its path in the storage dir
    /// (`savepoints/JOB/ID`, as `weir savepoint` prints it) or its URL
    /// (`file:///...`, `s3://...`, copied into the storage dir first).
    /// Each task restores its state, source position and sink position, so
    /// the output carries on where the savepoint's job left it.
    #[arg(long)]
    from_savepoint: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    storage: StorageArgs,
}

/// Largest spec `weir deploy` writes: ZooKeeper refuses a request over
/// 1 MiB (`jute.maxbuffer`), and the deploy's request also carries the
/// status.
const MAX_SPEC_BYTES: usize = 1_000_000;

/// Largest module `weir deploy` accepts: far above any real job, low enough
/// that a wrong file cannot fill the storage dir or every replica's memory.
const MAX_MODULE_BYTES: u64 = 64 << 20;

/// Makes a path absolute against this shell's directory: supervisors run elsewhere.
fn absolute(path: &str) -> anyhow::Result<String> {
    Ok(std::path::absolute(path)
        .with_context(|| format!("bad path {path}"))?
        .display()
        .to_string())
}

pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .module
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    validate_job_name(&name)?;
    if args.checkpoint_interval < Duration::from_millis(10) {
        bail!(
            "--checkpoint-interval {:?} is too short: use 10ms or more",
            args.checkpoint_interval
        );
    }
    if args.memory_limit == 0 {
        bail!("--memory-limit must be at least 1 (MiB)");
    }
    if args.call_timeout.is_zero() {
        bail!("--call-timeout must be greater than zero, e.g. 10s");
    }
    if args.watermark.is_some() && !args.source.has_event_times() {
        bail!(
            "--watermark needs event timestamps: give the source one, e.g. `sequence:timestamp=every:10ms` or \
             `file:timestamp=json:FIELD,path=PATH`"
        );
    }
    refuse_duplicates("--config", &args.config)?;
    refuse_duplicates("--env", &args.env)?;
    let source = match args.source {
        SourceSpec::File { path, timestamp } => {
            let path = absolute(&path)?;
            if Path::new(&path).is_dir() {
                bail!("file source {path} is a directory; name the file to read");
            }
            SourceSpec::File { path, timestamp }
        }
        other => other,
    };
    let sink = local_sink(args.sink, "file sink")?;
    let on_error = match args.on_error {
        OnError::DeadLetter { sink: dead } => {
            let dead = local_sink(dead, "dead-letter file sink")?;
            if dead.file().is_some() && dead.file() == sink.file() {
                bail!(
                    "--on-error dead-letter:{dead} is also the job's --sink; give the dead letters a file of their own"
                );
            }
            OnError::DeadLetter { sink: dead }
        }
        other => other,
    };

    if let Some(dir) = args.dirs.iter().find(|d| !Path::new(&d.host).is_dir()) {
        bail!(
            "--dir {}: no such directory here; create it (on every supervisor's machine) or fix the path",
            dir.host
        );
    }
    let limits = Limits {
        memory_bytes: args.memory_limit * 1024 * 1024,
        call_timeout: args.call_timeout,
    };
    let grants = Grants {
        env: args.env,
        dirs: args.dirs,
        network: args.allow_network || !args.network_to.is_empty(),
        network_to: args.network_to,
    };
    let bytes = checked_module(&args.module, limits, &grants, args.checkpoint_state).await?;
    let sha256 = sha256_hex(&bytes);
    let storage = args.storage.open()?;
    let savepoint = match &args.from_savepoint {
        Some(path) => Some(resolve_savepoint(path, &storage).await?),
        None => None,
    };
    let parallelism = match (&savepoint, args.parallelism) {
        (Some(s), None) => s.manifest.tasks.len() as u32,
        (_, n) => n.unwrap_or(1),
    };
    let spec = JobSpec {
        name: name.clone(),
        uid: format!("{:016x}", rand_u64()),
        module_sha256: sha256.clone(),
        source,
        sink,
        checkpoint_interval: args.checkpoint_interval,
        config: args.config,
        memory_limit: args.memory_limit * 1024 * 1024,
        call_timeout: args.call_timeout,
        restart: args.restart,
        on_error,
        watermark: args.watermark,
        grants,
        state: args.checkpoint_state,
        parallelism,
        from_savepoint: savepoint.as_ref().map(|s| s.dir.clone()),
        lineage: savepoint.as_ref().map(|s| s.manifest.lineage.clone()),
        desired: Desired::Running,
        created_ms: now_ms(),
    };
    spec.check_parallelism()?;
    if let Some(s) = savepoint
        .as_ref()
        .filter(|s| s.manifest.tasks.len() != spec.parallelism as usize)
    {
        let tasks = s.manifest.tasks.len();
        let why = match check_regroup(&spec) {
            Err(why) => Some(why),
            Ok(()) => {
                let partitioned = crate::savepoint::is_regroupable(s.elsewhere.as_ref().unwrap_or(&storage), &s.dir)
                    .await
                    .with_context(|| format!("--from-savepoint {}", s.dir))?;
                (!partitioned).then_some(STATE_PER_TASK)
            }
        };
        if let Some(why) = why {
            bail!(
                "--parallelism {}: savepoint {} has {tasks} tasks, and {why}; give it --parallelism {tasks}",
                spec.parallelism,
                s.dir
            );
        }
    }
    if let Some(s) = savepoint.as_ref().filter(|s| s.manifest.sinks != spec.sinks()) {
        bail!(
            "--from-savepoint {}: its positions are in the sinks of job `{}` ({}), and a job started from it carries \
             that output on: give it the same --sink and --on-error",
            s.dir,
            s.manifest.job,
            s.manifest.sinks.join(", ")
        );
    }
    let (source, sink, on_error) = (&spec.source, &spec.sink, &spec.on_error);
    check_source(source).await?;
    check_sink("sink", sink).await?;
    if let Some(dead) = on_error.dead_letters() {
        check_sink("dead-letter sink", dead).await?;
    }

    let layout = args.cluster.layout()?;
    let client = args.cluster.connect().await?;

    let options = CreateMode::Persistent.with_acls(args.cluster.zk()?.acls());
    if let Err(e) = client.mkdir(layout.base(), &options).await {
        bail!("cannot create {}: {e}{}", layout.base(), hint(&e));
    }
    check_storage_record(&client, &layout, &storage, &args.cluster.cluster_id, Some(&options)).await?;
    storage
        .put_if_absent(&Storage::module_path(&sha256), bytes.into())
        .await
        .context(STORAGE_FIX)?;
    if let Err(e) = client.mkdir(&layout.jobs(), &options).await {
        bail!("cannot create {}: {e}{}", layout.jobs(), hint(&e));
    }
    let ours = sink
        .file()
        .into_iter()
        .chain(on_error.dead_letters().and_then(SinkSpec::file));
    for path in ours {
        if let Some(other) = job_writing(&client, &layout, path).await? {
            bail!("file {path} is already written by job `{other}`; give this job another file to write");
        }
    }
    if let Some(s) = &savepoint {
        refuse_shared_lineage(&client, &layout, &name, &s.manifest.lineage).await?;
    }
    if let Some(SavepointSource {
        dir,
        elsewhere: Some(from),
        ..
    }) = &savepoint
    {
        crate::savepoint::import(from, &storage, dir)
            .await
            .with_context(|| format!("cannot copy savepoint {dir} into the storage dir"))?;
    }

    write_spec(&client, &layout, &options, &spec).await?;
    let mut tasks = match spec.parallelism {
        1 => String::new(),
        n => format!(", {n} tasks"),
    };
    if let Some(s) = &savepoint {
        tasks.push_str(&format!(", from savepoint {} (of job `{}`)", s.dir, s.manifest.job));
    }
    say!(
        "deployed job `{name}`: module sha256 {}, source {}, sink {}, checkpoint every {}{tasks}",
        &sha256[..12],
        spec.source,
        spec.sink,
        humantime::format_duration(spec.checkpoint_interval)
    )?;
    if candidates(&client, &layout).await.is_ok_and(|c| c.is_empty()) {
        say!(
            "note: no supervisor is running in cluster `{}`; the job starts when one does (`weir supervisor`)",
            args.cluster.cluster_id
        )?;
    }
    Ok(())
}

/// The module at `path`, read and checked to be a weir job that starts
/// within `limits` with `grants`: refused here, with the reason, rather
/// than failing on every supervisor. Asked for checkpoints in `state`, it
/// is told here when they will be the SDK's snapshots.
pub(super) async fn checked_module(
    path: &Path,
    limits: Limits,
    grants: &Grants,
    state: StateFormat,
) -> anyhow::Result<Vec<u8>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_MODULE_BYTES {
        bail!(
            "{} is {} MiB, over weir's limit of {} MiB for a job module; build it in release mode with `strip = true`",
            path.display(),
            size >> 20,
            MAX_MODULE_BYTES >> 20
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let checked =
        Runtime::check_for_deploy(&bytes).with_context(|| format!("{} cannot be deployed", path.display()))?;
    if let (StateFormat::Memory, Err(why)) = (state, checked.memory_images()) {
        eprintln!("note: {why}; its checkpoints will be the SDK's snapshots");
    }
    // The granted directories are the supervisors' to have, not this
    // machine's: the check instantiates without them.
    let here = Grants {
        dirs: Vec::new(),
        ..grants.clone()
    };
    match checked.instantiate(limits, &here).await {
        Ok(()) => Ok(bytes),
        Err(GuestError::MemoryLimit { .. }) => bail!(
            "{} cannot start within --memory-limit {} MiB: its initial memory is larger; raise --memory-limit",
            path.display(),
            limits.memory_bytes >> 20
        ),
        Err(e) => Err(anyhow::Error::new(e).context(format!("{} cannot start", path.display()))),
    }
}

/// `spec` as its znode holds it, refused if ZooKeeper cannot hold it.
pub(super) fn encoded_spec(spec: &JobSpec) -> anyhow::Result<Vec<u8>> {
    let bytes = serde_json::to_vec(spec)?;
    if bytes.len() > MAX_SPEC_BYTES {
        bail!(
            "job `{}`'s spec is {} bytes, over the {MAX_SPEC_BYTES} ZooKeeper can hold in a znode \
             (its --config values are {} bytes): give large settings to the job as a file in a --dir instead",
            spec.name,
            bytes.len(),
            spec.config.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        );
    }
    Ok(bytes)
}

/// Writes `spec` to ZooKeeper with a CREATED status, over a cancelled job
/// of its name if there is one.
pub(super) async fn write_spec(
    client: &zkc::Client,
    layout: &crate::ha::Layout,
    options: &zkc::CreateOptions<'_>,
    spec: &JobSpec,
) -> anyhow::Result<()> {
    let name = &spec.name;
    let job_path = layout.job(name);
    // A cancelled job of this name is deployed over: its znodes are set,
    // not deleted and made again, so their versions only grow and nothing
    // its last deployment still has in flight can land. (`weir delete`
    // removes them only once the job is cancelled and stopped.)
    let cancelled_version = match client.get_data(&job_path).await {
        Ok((data, stat)) => {
            let running = serde_json::from_slice::<JobSpec>(&data).map_or(true, |s| s.desired == Desired::Running);
            if running {
                bail!("job `{name}` already exists; cancel it first (`weir cancel {name}`) or choose another --name");
            }
            Some(stat.version)
        }
        Err(zkc::Error::NoNode) => None,
        Err(e) => bail!("cannot read {job_path}: {e}{}", hint(&e)),
    };

    let status = JobStatus::created(now_ms());
    let spec_bytes = encoded_spec(spec)?;
    let status = serde_json::to_vec(&status)?;
    let mut writer = client.new_multi_writer();
    match cancelled_version {
        None => {
            writer.add_create(&job_path, &spec_bytes, options)?;
            writer.add_create(&layout.job_status(name), &status, options)?;
        }
        Some(version) => {
            writer.add_set_data(&job_path, &spec_bytes, Some(version))?;
            writer.add_set_data(&layout.job_status(name), &status, None)?;
        }
    }
    match writer.commit().await {
        Ok(_) => {}
        Err(zkc::MultiWriteError::OperationFailed {
            source: zkc::Error::NodeExists | zkc::Error::BadVersion,
            ..
        }) => {
            bail!("job `{name}` was deployed concurrently by someone else; check `weir jobs`")
        }
        Err(e) => bail!("cannot write job `{name}` to ZooKeeper: {e}{}", hint(&e.clone().into())),
    }
    Ok(())
}

/// Why `spec`'s source cannot be regrouped over another task count, if
/// it cannot: a Kafka topic's partitions can, over any count.
pub(super) fn check_regroup(spec: &JobSpec) -> Result<(), &'static str> {
    match spec.source {
        SourceSpec::Kafka { .. } => Ok(()),
        _ => Err("only a Kafka topic's partitions can be regrouped over another number of tasks"),
    }
}

/// Why state that is kept per task cannot be regrouped.
pub(super) const STATE_PER_TASK: &str = "its state is kept per task, not per source partition, so it cannot follow \
     its partitions (a job keeps it per partition when its Job impl sets `const PARTITIONED_STATE: bool = true`)";

/// The savepoint a deploy starts from.
struct SavepointSource {
    /// Its directory, in the storage dir once imported.
    dir: String,
    manifest: Manifest,
    /// The storage dir it is kept in, when not the cluster's: it is copied
    /// in once the cluster's is confirmed.
    elsewhere: Option<Storage>,
}

/// The savepoint `path` names: a path in the storage dir
/// (`savepoints/JOB/ID`), or the URL of one kept elsewhere.
async fn resolve_savepoint(path: &str, storage: &Storage) -> anyhow::Result<SavepointSource> {
    let marker = format!("{}/", crate::savepoint::SAVEPOINTS);
    let (dir, elsewhere) = if path.contains("://") {
        // The last three segments are savepoints/JOB/ID (a job may be named `savepoints`).
        let trimmed = path.trim_end_matches('/');
        let segments: Vec<&str> = trimmed.rsplitn(4, '/').collect();
        let [id, job, "savepoints", root] = segments[..] else {
            bail!("--from-savepoint {path}: a savepoint's URL ends in /{marker}JOB/ID, as `weir savepoint --to` prints it");
        };
        let root = Storage::open(root).with_context(|| format!("--from-savepoint {path}"))?;
        (
            &trimmed[trimmed.len() - id.len() - job.len() - marker.len() - 1..],
            Some(root),
        )
    } else {
        let dir = path.trim_matches('/');
        if !dir.starts_with(&marker) {
            bail!("--from-savepoint {path}: give the path `weir savepoint` printed, {marker}JOB/ID, or a URL");
        }
        (dir, None)
    };
    let manifest = crate::savepoint::manifest(elsewhere.as_ref().unwrap_or(storage), dir)
        .await
        .with_context(|| format!("--from-savepoint {path}"))?;
    Ok(SavepointSource {
        dir: dir.to_string(),
        manifest,
        elsewhere,
    })
}

/// Refuses a storage dir other than the one the cluster records and, given
/// `options` to create the record with, records this one if the cluster has
/// none yet, so a replica started later with another is refused too.
pub async fn check_storage_record(
    client: &zkc::Client,
    layout: &crate::ha::Layout,
    storage: &Storage,
    cluster_id: &str,
    options: Option<&zkc::CreateOptions<'_>>,
) -> anyhow::Result<()> {
    let path = layout.storage();
    let ours = storage.canonical_url();
    let recorded = match client.get_data(&path).await {
        Ok((recorded, _)) => String::from_utf8_lossy(&recorded).into_owned(),
        Err(zkc::Error::NoNode) => {
            let Some(options) = options else { return Ok(()) };
            match client.create(&path, ours.as_bytes(), options).await {
                Ok(_) => return Ok(()),
                Err(zkc::Error::NodeExists) => client
                    .get_data(&path)
                    .await
                    .map(|(recorded, _)| String::from_utf8_lossy(&recorded).into_owned())
                    .map_err(|e| anyhow::anyhow!("cannot read {path}: {e}{}", hint(&e)))?,
                Err(e) => bail!("cannot record the storage dir in {path}: {e}{}", hint(&e)),
            }
        }
        Err(e) => bail!("cannot read {path}: {e}{}", hint(&e)),
    };
    if recorded != ours {
        bail!("cluster `{cluster_id}` keeps its modules and checkpoints in {recorded}, not {ours}: use --storage-dir {recorded}");
    }
    Ok(())
}

/// Refuses settings that name a key twice: which would win is anyone's guess.
pub(super) fn refuse_duplicates(flag: &str, pairs: &[(String, String)]) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for (key, _) in pairs {
        if !seen.insert(key) {
            bail!("{flag} {key}=... is given twice; give each key once");
        }
    }
    Ok(())
}

/// The running job, if any, one of whose sinks writes `path`: two jobs
/// writing one file would interleave their output.
async fn job_writing(client: &zkc::Client, layout: &crate::ha::Layout, path: &str) -> anyhow::Result<Option<String>> {
    let found = job_where(client, layout, |s| {
        s.desired == Desired::Running && s.sink_files().any(|f| f == path)
    })
    .await?;
    Ok(found.map(|s| s.name))
}

/// The first job whose spec, as read, satisfies `holds`.
async fn job_where(
    client: &zkc::Client,
    layout: &crate::ha::Layout,
    holds: impl Fn(&JobSpec) -> bool,
) -> anyhow::Result<Option<JobSpec>> {
    let names = match client.list_children(&layout.jobs()).await {
        Ok(names) => names,
        Err(zkc::Error::NoNode) => return Ok(None),
        Err(e) => bail!("cannot list {}: {e}{}", layout.jobs(), hint(&e)),
    };
    for name in names {
        let spec = match client.get_data(&layout.job(&name)).await {
            Ok((data, _)) => serde_json::from_slice::<JobSpec>(&data).ok(),
            Err(zkc::Error::NoNode) => None,
            Err(e) => bail!("cannot read job `{name}`: {e}{}", hint(&e)),
        };
        if let Some(spec) = spec.filter(&holds) {
            return Ok(Some(spec));
        }
    }
    Ok(None)
}

/// Refuses a deploy from a savepoint while another job carries the same
/// sinks' progress on (its lineage): two deployments moving one progress
/// row, or fencing each other's Kafka producer, would lose or duplicate
/// output. A job of this name is deployed over only once cancelled, and
/// its tasks are waited for by the leader; another must have stopped.
pub(super) async fn refuse_shared_lineage(
    client: &zkc::Client,
    layout: &crate::ha::Layout,
    name: &str,
    lineage: &Lineage,
) -> anyhow::Result<()> {
    let Some(other) = job_where(client, layout, |s| s.name != name && s.lineage() == *lineage).await? else {
        return Ok(());
    };
    let stopped = match client.get_data(&layout.job_status(&other.name)).await {
        Ok((data, _)) => serde_json::from_slice::<JobStatus>(&data)
            .is_ok_and(|s| matches!(s.state, JobState::Canceled | JobState::Failed)),
        Err(_) => false,
    };
    if other.desired == Desired::Running || !stopped {
        bail!(
            "job `{}` carries this savepoint's sinks on already (it started from the same job's state, so it keeps \
             the same progress in them): cancel it and wait for it to stop first (`weir cancel {}`)",
            other.name,
            other.name
        );
    }
    Ok(())
}

/// A sink as the supervisors will open it: a file's path made absolute and
/// checked, here, to be one a supervisor can create.
fn local_sink(sink: SinkSpec, what: &str) -> anyhow::Result<SinkSpec> {
    let SinkSpec::File { path } = sink else {
        return Ok(sink);
    };
    let path = absolute(&path)?;
    if Path::new(&path).is_dir() {
        bail!("{what} {path} is a directory; name the file to write, e.g. {path}/out.txt");
    }
    let dir = Path::new(&path).parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        bail!(
            "{what} {path}: directory {} does not exist; create it first",
            dir.display()
        );
    }
    Ok(SinkSpec::File { path })
}

/// A Kafka source's topic, checked now if the brokers answer.
async fn check_source(source: &SourceSpec) -> anyhow::Result<()> {
    match source {
        SourceSpec::Kafka { brokers, topic, .. } => check_topic("kafka source", brokers, topic).await,
        _ => Ok(()),
    }
}

/// A PostgreSQL sink's table or a Kafka sink's topic, checked now if the
/// server answers: one that is missing or does not fit the mode is refused
/// here, not when the job first writes. A server that does not answer is
/// noted: the job waits for it. `what` names the sink in errors.
async fn check_sink(what: &str, sink: &SinkSpec) -> anyhow::Result<()> {
    match sink {
        SinkSpec::Postgres { url, table, mode } => match crate::connectors::postgres::check(url, table, mode).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                eprintln!("note: PostgreSQL for table {table} does not answer now; the job will wait for it");
                Ok(())
            }
            Err(e) => bail!("postgres {what}: {e}"),
        },
        SinkSpec::Kafka { brokers, topic, .. } => check_topic(&format!("kafka {what}"), brokers, topic).await,
        _ => Ok(()),
    }
}

/// How long deploy waits for Kafka brokers to say whether a topic exists.
const KAFKA_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

async fn check_topic(what: &str, brokers: &str, topic: &str) -> anyhow::Result<()> {
    let (b, t) = (brokers.to_string(), topic.to_string());
    let checked =
        tokio::task::spawn_blocking(move || crate::connectors::kafka::check_topic(&b, &t, KAFKA_CHECK_TIMEOUT))
            .await
            .context("the Kafka check stopped")?;
    match checked {
        Ok(None) => Ok(()),
        Ok(Some(why)) => {
            eprintln!("note: {what}: {why}; the job will wait for it");
            Ok(())
        }
        Err(e) => bail!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn repeated_config_accumulates_and_a_repeated_flag_takes_the_last() {
        let cli = Cli::try_parse_from([
            "weir", "deploy", "j.wasm", "--config", "a=1", "--config", "b=2", "--source", "sequence", "--source",
            "file:/in",
        ])
        .unwrap();
        let Command::Deploy(args) = cli.command else {
            panic!("not deploy")
        };
        assert_eq!(args.config, vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
        assert_eq!(
            args.source,
            crate::spec::SourceSpec::File {
                path: "/in".into(),
                timestamp: None
            }
        );
    }
}
