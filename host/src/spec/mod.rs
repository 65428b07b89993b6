//! The records kept in ZooKeeper for a job: its spec, written by the CLI,
//! and its status, written by the leader; and the parsing of what users
//! type for them. Pure data: no I/O here.

mod connector;
mod grants;
mod restart;
mod status;
mod watermark;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use connector::{Delivery, EventEncoding, KafkaStart, OnError, SinkSpec, SourceSpec, TableMode, Timestamps};
pub use grants::{Cidr, DirGrant, Grants};
pub use restart::RestartStrategy;
pub use status::{JobState, JobStatus};
pub use watermark::WatermarkSpec;

/// Why a spec string was refused; the message names the accepted forms.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SpecError(String);

fn spec_error(msg: impl Into<String>) -> SpecError {
    SpecError(msg.into())
}

/// Splits `key=value,key=value` into pairs, refusing anything else.
fn parse_params<'a>(spec: &'a str, forms: &str) -> Result<Vec<(&'a str, &'a str)>, SpecError> {
    spec.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .ok_or_else(|| spec_error(format!("`{p}` is not key=value; {forms}")))
        })
        .collect()
}

/// Whether the job should run. The CLI flips it; the leader acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Run the job (and keep it running across failovers).
    Running,
    /// Stop the job for good (`weir cancel`). Specs written before the
    /// spelling matched `JobState::Canceled` say `cancelled`.
    #[serde(alias = "cancelled")]
    Canceled,
}

/// Everything needed to run a job, as stored in `jobs/<name>` in ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job's name, unique in the cluster.
    pub name: String,
    /// Random id of this deployment, so a job deployed again under the same
    /// name never reads the checkpoints of its predecessor.
    pub uid: String,
    /// sha256 of the component, which lives at `modules/<sha256>.wasm`.
    pub module_sha256: String,
    /// Input.
    pub source: SourceSpec,
    /// Output.
    pub sink: SinkSpec,
    /// Time between two checkpoint barriers.
    #[serde(with = "millis")]
    pub checkpoint_interval: Duration,
    /// Settings passed to the job's `init`.
    pub config: Vec<(String, String)>,
    /// Cap on the guest's linear memory, in bytes.
    pub memory_limit: u64,
    /// Cap on the CPU time of one guest call (one batch, a snapshot, a restore).
    #[serde(with = "millis")]
    pub call_timeout: Duration,
    /// What to do when an attempt fails.
    #[serde(default)]
    pub restart: RestartStrategy,
    /// What becomes of a record the job refuses.
    #[serde(default)]
    pub on_error: OnError,
    /// How the watermark follows the records' event times, if the job has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<WatermarkSpec>,
    /// What the guest's sandbox lets it reach: nothing unless granted here.
    #[serde(default)]
    pub grants: Grants,
    /// What its checkpoints keep of the guest (`--checkpoint-state`).
    #[serde(default, skip_serializing_if = "StateFormat::is_serialized")]
    pub state: StateFormat,
    /// How many tasks run the job (`--parallelism`), each with its own
    /// state, checkpoints and share of the source.
    #[serde(default = "one_task")]
    pub parallelism: u32,
    /// The savepoint its tasks start from (`savepoints/<job>/<id>` in the
    /// storage dir) until each has a checkpoint of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_savepoint: Option<String>,
    /// Whose sinks' progress this deployment carries on, if not its own:
    /// started from a savepoint, the deployment the savepoint came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    /// Run or stop.
    pub desired: Desired,
    /// When it was deployed (ms since the Unix epoch).
    pub created_ms: u64,
}

/// What a job's checkpoints keep of its guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum StateFormat {
    /// The state the SDK serializes (the job's `snapshot`), whole at every
    /// checkpoint: another build of the job can read it.
    #[default]
    Serialized,
    /// The pages of the guest's memory written since the checkpoint
    /// before, over a chain back to a whole image: a checkpoint costs what
    /// changed, and restores into the same module only (a savepoint, an
    /// upgrade and a job's final checkpoint still take the SDK's state).
    Memory,
}

impl StateFormat {
    fn is_serialized(&self) -> bool {
        *self == StateFormat::Serialized
    }
}

fn one_task() -> u32 {
    1
}

/// A deployment whose sinks' progress others may carry on. A sink that
/// keeps its own progress (PostgreSQL's progress row, Kafka's
/// transactional id and offsets) keys it by this, so a job started from
/// a savepoint of it publishes exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The job's name then.
    pub job: String,
    /// The deployment's uid.
    pub uid: String,
}

/// The most tasks one job may have.
pub const MAX_PARALLELISM: u32 = 10_000;

/// One task's part of its job: task `index` of `of`. A Kafka topic's
/// partition `p` is task `p % of`'s; a sequence's `n`-th number is task
/// `n % of`'s (Kafka Streams' task model: a task owns partitions, so
/// moving a task moves its checkpoint and re-keys nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Share {
    /// Which task, from 0.
    pub index: u32,
    /// Of how many.
    pub of: u32,
}

impl Share {
    /// The one task of a job that runs as one.
    pub const WHOLE: Share = Share { index: 0, of: 1 };

    /// Whether source partition `partition` is this task's.
    pub fn owns(&self, partition: u32) -> bool {
        partition % self.of.max(1) == self.index
    }
}

impl JobSpec {
    /// Whose sinks' progress this deployment's tasks keep.
    pub fn lineage(&self) -> Lineage {
        self.lineage.clone().unwrap_or_else(|| Lineage {
            job: self.name.clone(),
            uid: self.uid.clone(),
        })
    }

    /// The files its sinks write (the output and the dead letters), as
    /// templates (`{task}` stands for the task's number): no two jobs, and
    /// no two sinks of one job, may write the same file.
    pub fn sink_files(&self) -> impl Iterator<Item = &str> {
        let dead_letters = self.on_error.dead_letters().and_then(SinkSpec::file);
        self.sink.file().into_iter().chain(dead_letters)
    }

    /// Its sinks as `weir jobs` names them (a password left out): the
    /// output, then the dead letters' if it has one.
    pub fn sinks(&self) -> Vec<String> {
        std::iter::once(&self.sink)
            .chain(self.on_error.dead_letters())
            .map(ToString::to_string)
            .collect()
    }

    /// Its tasks' shares of it.
    pub fn shares(&self) -> impl Iterator<Item = Share> {
        let of = self.parallelism.max(1);
        (0..of).map(move |index| Share { index, of })
    }

    /// Refuses a parallelism its source or sinks cannot split. One line
    /// naming the fix.
    pub fn check_parallelism(&self) -> Result<(), SpecError> {
        let n = self.parallelism;
        if n == 0 || n > MAX_PARALLELISM {
            return Err(spec_error(format!(
                "--parallelism {n}: give 1 to {MAX_PARALLELISM} tasks"
            )));
        }
        if n == 1 {
            return Ok(());
        }
        if let SourceSpec::File { path, .. } = &self.source {
            return Err(spec_error(format!(
                "--parallelism {n}: a file source ({path}) is read by one task; use --parallelism 1, or a Kafka topic with partitions"
            )));
        }
        if let Some(path) = self.sink_files().find(|path| !path.contains(TASK_PLACEHOLDER)) {
            return Err(spec_error(format!(
                "--parallelism {n}: each task writes its own file, so {path} needs `{TASK_PLACEHOLDER}` in it (e.g. out-{TASK_PLACEHOLDER}.txt)"
            )));
        }
        Ok(())
    }
}

/// What a file sink's path holds for the number of the task writing it.
pub const TASK_PLACEHOLDER: &str = "{task}";

/// Durations as whole milliseconds, as the records store them.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Checks a job name: it becomes a znode name and a storage path segment.
pub fn validate_job_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(spec_error(format!(
            "invalid job name `{name}`: use 1-100 letters, digits, `-`, `_` or `.`, not starting with `.`"
        )))
    }
}

/// Parses a `key=value` pair given to `--config` or `--env`.
pub fn parse_config_pair(s: &str) -> Result<(String, String), SpecError> {
    match s.split_once('=') {
        Some(("", _)) => Err(spec_error(format!("`{s}` has no key: give key=value"))),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Err(spec_error(format!("`{s}` is not key=value"))),
    }
}

/// A running job of `parallelism` tasks from a sequence to stdout, for tests.
#[cfg(test)]
pub fn test_spec(name: &str, parallelism: u32) -> JobSpec {
    JobSpec {
        name: name.into(),
        uid: format!("uid-{name}"),
        module_sha256: "m".into(),
        source: SourceSpec::Sequence {
            start: 0,
            rate: 0,
            timestamp: None,
        },
        sink: SinkSpec::Stdout,
        checkpoint_interval: std::time::Duration::from_secs(1),
        config: Vec::new(),
        memory_limit: 1 << 20,
        call_timeout: std::time::Duration::from_secs(1),
        restart: Default::default(),
        on_error: OnError::default(),
        watermark: None,
        grants: Default::default(),
        state: Default::default(),
        parallelism,
        from_savepoint: None,
        lineage: None,
        desired: Desired::Running,
        created_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_must_be_path_safe() {
        assert!(validate_job_name("counter-1.v2").is_ok());
        for bad in ["", "a/b", ".hidden", "with space"] {
            assert!(validate_job_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn desired_is_spelled_as_the_state_and_reads_the_old_spelling() {
        assert_eq!(serde_json::to_string(&Desired::Canceled).unwrap(), "\"canceled\"");
        for old in ["\"canceled\"", "\"cancelled\""] {
            assert_eq!(serde_json::from_str::<Desired>(old).unwrap(), Desired::Canceled);
        }
    }
}
