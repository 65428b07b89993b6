//! The records kept in ZooKeeper for a job (its spec, written by the CLI, and
//! its status, written by the leader), and the parsing
//! of the user-facing source and sink specs. Pure data: no I/O here.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a spec string was refused; the message names the accepted forms.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SpecError(String);

fn spec_error(msg: impl Into<String>) -> SpecError {
    SpecError(msg.into())
}

/// Where a job's input comes from. Every source is replayable from an offset,
/// which is what makes restoring from a checkpoint exactly-once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceSpec {
    /// The integers `start, start+1, ...` at `rate` events per second (0: unthrottled).
    Sequence { start: i64, rate: u64 },
    /// The lines of a file, tailed as it grows; the offset is a byte position.
    File { path: String },
}

/// Where a job's output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkSpec {
    /// The supervisor's standard output, written when a checkpoint commits
    /// (at-least-once across failovers).
    Stdout,
    /// A file holding only output of committed checkpoints, each event once.
    File { path: String },
}

const SOURCE_FORMS: &str = "expected `sequence[:start=N,rate=R]` or `file:PATH`";
const SINK_FORMS: &str = "expected `stdout` or `file:PATH`";

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

impl FromStr for SourceSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        match kind {
            "sequence" => {
                let (mut start, mut rate) = (0i64, 1000u64);
                for (key, value) in parse_params(rest, SOURCE_FORMS)? {
                    let bad = || spec_error(format!("sequence source: `{key}={value}` is not a number"));
                    match key {
                        "start" => start = value.parse().map_err(|_| bad())?,
                        "rate" => rate = value.parse().map_err(|_| bad())?,
                        _ => {
                            return Err(spec_error(format!(
                                "sequence source: unknown setting `{key}`; expected start or rate"
                            )))
                        }
                    }
                }
                Ok(SourceSpec::Sequence { start, rate })
            }
            "file" if !rest.is_empty() => Ok(SourceSpec::File { path: rest.to_string() }),
            "file" => Err(spec_error("file source needs a path: `file:PATH`")),
            _ => Err(spec_error(format!("unknown source `{s}`; {SOURCE_FORMS}"))),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Sequence { start, rate } => write!(f, "sequence:start={start},rate={rate}"),
            SourceSpec::File { path } => write!(f, "file:{path}"),
        }
    }
}

impl FromStr for SinkSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s.split_once(':') {
            None if s == "stdout" => Ok(SinkSpec::Stdout),
            Some(("file", path)) if !path.is_empty() => Ok(SinkSpec::File { path: path.to_string() }),
            Some(("file", _)) => Err(spec_error("file sink needs a path: `file:PATH`")),
            _ => Err(spec_error(format!("unknown sink `{s}`; {SINK_FORMS}"))),
        }
    }
}

impl SinkSpec {
    /// The file it writes, if it writes one.
    pub fn file(&self) -> Option<&str> {
        match self {
            SinkSpec::File { path } => Some(path),
            SinkSpec::Stdout => None,
        }
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkSpec::Stdout => f.write_str("stdout"),
            SinkSpec::File { path } => write!(f, "file:{path}"),
        }
    }
}

/// Whether the job should run. The CLI flips it; the leader acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Run the job (and keep it running across failovers).
    Running,
    /// Stop the job for good.
    Cancelled,
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
    /// What the guest's sandbox lets it reach: nothing unless granted here.
    #[serde(default)]
    pub grants: Grants,
    /// Run or stop.
    pub desired: Desired,
    /// When it was deployed (ms since the Unix epoch).
    pub created_ms: u64,
}

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

/// How a job comes back after a failed attempt (Flink's restart strategies).
/// Attempts count every restart since the job was deployed, across failovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RestartStrategy {
    /// Never restart: the first failure marks the job FAILED.
    None,
    /// Restart up to `attempts` times, waiting `delay` each time.
    Fixed {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each.
        #[serde(with = "millis")]
        delay: Duration,
    },
    /// Wait `initial`, doubling up to `max` while failures follow each other
    /// closely; `attempts` caps the restarts (none: unlimited).
    Exponential {
        /// First wait.
        #[serde(with = "millis")]
        initial: Duration,
        /// Longest wait.
        #[serde(with = "millis")]
        max: Duration,
        /// Restarts allowed, if capped.
        attempts: Option<u32>,
    },
}

impl Default for RestartStrategy {
    fn default() -> Self {
        RestartStrategy::Exponential {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            attempts: None,
        }
    }
}

impl RestartStrategy {
    /// The wait before restart number `restart` (1-based, counted since
    /// deploy), the `streak`-th failure in a row; `None` when the job must fail.
    pub fn delay(&self, restart: u32, streak: u32) -> Option<Duration> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::Fixed { attempts, delay } => (restart <= attempts).then_some(delay),
            RestartStrategy::Exponential { initial, max, attempts } => {
                if attempts.is_some_and(|a| restart > a) {
                    return None;
                }
                let doublings = streak.saturating_sub(1).min(31);
                Some(initial.saturating_mul(1 << doublings).min(max))
            }
        }
    }
}

const RESTART_FORMS: &str = "expected `none`, `fixed:attempts=N,delay=D` or `exponential:initial=D,max=D[,attempts=N]`";

impl FromStr for RestartStrategy {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let params = parse_params(rest, RESTART_FORMS)?;
        let duration = |key: &str, value: &str| {
            humantime::parse_duration(value).map_err(|e| spec_error(format!("restart {key}={value}: {e}")))
        };
        let count = |key: &str, value: &str| {
            value
                .parse::<u32>()
                .map_err(|_| spec_error(format!("restart {key}={value}: not a whole number")))
        };
        let unknown = |key: &str| {
            spec_error(format!(
                "restart strategy `{kind}`: unknown setting `{key}`; {RESTART_FORMS}"
            ))
        };
        match kind {
            "none" if params.is_empty() => Ok(RestartStrategy::None),
            "fixed" => {
                let (mut attempts, mut delay) = (3, Duration::from_secs(1));
                for (key, value) in params {
                    match key {
                        "attempts" => attempts = count(key, value)?,
                        "delay" => delay = duration(key, value)?,
                        _ => return Err(unknown(key)),
                    }
                }
                Ok(RestartStrategy::Fixed { attempts, delay })
            }
            "exponential" => {
                let RestartStrategy::Exponential {
                    mut initial,
                    mut max,
                    mut attempts,
                } = RestartStrategy::default()
                else {
                    unreachable!("the default is exponential")
                };
                for (key, value) in params {
                    match key {
                        "initial" => initial = duration(key, value)?,
                        "max" => max = duration(key, value)?,
                        "attempts" => attempts = Some(count(key, value)?),
                        _ => return Err(unknown(key)),
                    }
                }
                Ok(RestartStrategy::Exponential { initial, max, attempts })
            }
            _ => Err(spec_error(format!("unknown restart strategy `{s}`; {RESTART_FORMS}"))),
        }
    }
}

impl fmt::Display for RestartStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        match *self {
            RestartStrategy::None => f.write_str("none"),
            RestartStrategy::Fixed { attempts, delay } => write!(f, "fixed:attempts={attempts},delay={}", d(delay)),
            RestartStrategy::Exponential { initial, max, attempts } => {
                write!(f, "exponential:initial={},max={}", d(initial), d(max))?;
                match attempts {
                    Some(a) => write!(f, ",attempts={a}"),
                    None => Ok(()),
                }
            }
        }
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

/// Access a job's guest is given beyond computing on its input. Every
/// replica gives the same, since it lives in the spec, not in a replica's setup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Environment variables the guest sees (and no others).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Host directories the guest may read.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Whether the guest may open sockets and resolve host names.
    #[serde(default)]
    pub network: bool,
    /// The addresses it may reach, when the grant names them; otherwise any
    /// address but loopback and link-local ones.
    #[serde(default)]
    pub network_to: Vec<Cidr>,
}

impl Grants {
    /// Whether a granted network reaches `ip`. Without a list, loopback and
    /// link-local addresses stay closed: they hold the supervisor's own
    /// endpoints, often ZooKeeper, and the cloud metadata service (169.254.169.254).
    pub fn reaches(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        if !self.network {
            return false;
        }
        if !self.network_to.is_empty() {
            return self.network_to.iter().any(|cidr| cidr.contains(ip));
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
            IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80),
        }
    }
}

/// An address range, `ADDRESS[/PREFIX]` (`10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let (net, ip, bits) = match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => (u32::from(net) as u128, u32::from(ip) as u128, 32),
            (IpAddr::V6(net), IpAddr::V6(ip)) => (u128::from(net), u128::from(ip), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (net >> shift) == (ip >> shift)
    }
}

impl FromStr for Cidr {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let bad = || {
            spec_error(format!(
                "`{s}` is not an address range; expected e.g. 10.0.0.0/8 or 192.0.2.7"
            ))
        };
        let (address, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let network: std::net::IpAddr = address.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl TryFrom<String> for Cidr {
    type Error = SpecError;

    fn try_from(s: String) -> Result<Self, SpecError> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(cidr: Cidr) -> String {
        cidr.to_string()
    }
}

/// A host directory shown read-only to the guest at a path of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    /// The directory on the supervisor's machine (absolute).
    pub host: String,
    /// Where the guest sees it.
    pub guest: String,
}

impl FromStr for DirGrant {
    type Err = SpecError;

    /// `HOST[::GUEST]`, as wasmtime's `--dir`; the guest path defaults to the host's.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (host, guest) = s.split_once("::").unwrap_or((s, s));
        if !host.starts_with('/') || !guest.starts_with('/') || guest.contains("::") {
            return Err(spec_error(format!(
                "`{s}`: expected an absolute directory, `HOST[::GUEST]`, e.g. /srv/data::/data"
            )));
        }
        Ok(DirGrant {
            host: host.to_string(),
            guest: guest.to_string(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_print_back() {
        for s in ["sequence:start=5,rate=0", "file:/tmp/in.txt"] {
            assert_eq!(s.parse::<SourceSpec>().unwrap().to_string(), s);
        }
        assert_eq!(
            "sequence".parse::<SourceSpec>().unwrap(),
            SourceSpec::Sequence { start: 0, rate: 1000 }
        );
    }

    #[test]
    fn bad_sources_and_sinks_name_the_accepted_forms() {
        assert!("kafka:topic"
            .parse::<SourceSpec>()
            .unwrap_err()
            .0
            .contains("expected `sequence"));
        assert!("sequence:rate=fast"
            .parse::<SourceSpec>()
            .unwrap_err()
            .0
            .contains("not a number"));
        assert!("sequence:speed=1"
            .parse::<SourceSpec>()
            .unwrap_err()
            .0
            .contains("unknown setting"));
        assert!("file:".parse::<SourceSpec>().is_err());
        assert!("s3:bucket"
            .parse::<SinkSpec>()
            .unwrap_err()
            .0
            .contains("expected `stdout`"));
        assert_eq!(
            "file:/x".parse::<SinkSpec>().unwrap(),
            SinkSpec::File { path: "/x".into() }
        );
    }

    #[test]
    fn restart_strategies_parse_print_back_and_give_up_when_due() {
        for s in [
            "none",
            "fixed:attempts=2,delay=500ms",
            "exponential:initial=1s,max=30s,attempts=5",
        ] {
            assert_eq!(s.parse::<RestartStrategy>().unwrap().to_string(), s);
        }
        assert!("fixed:tries=2"
            .parse::<RestartStrategy>()
            .unwrap_err()
            .0
            .contains("unknown setting"));
        assert!("sometimes".parse::<RestartStrategy>().is_err());

        let fixed: RestartStrategy = "fixed:attempts=2,delay=1s".parse().unwrap();
        assert_eq!(fixed.delay(2, 2), Some(Duration::from_secs(1)));
        assert_eq!(fixed.delay(3, 3), None);
        assert_eq!(RestartStrategy::None.delay(1, 1), None);
        let exp = RestartStrategy::default();
        let waits: Vec<_> = (1..=7).map(|n| exp.delay(n, n).unwrap().as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(
            exp.delay(100, 1),
            Some(Duration::from_secs(1)),
            "a healthy run resets the streak"
        );
    }

    #[test]
    fn dir_grants_are_absolute_and_default_to_the_same_path() {
        assert_eq!(
            "/srv/data::/data".parse::<DirGrant>().unwrap(),
            DirGrant {
                host: "/srv/data".into(),
                guest: "/data".into()
            }
        );
        assert_eq!("/srv".parse::<DirGrant>().unwrap().guest, "/srv");
        for bad in ["data", "/srv::data", "::/data", "/a::/b::/c"] {
            assert!(bad.parse::<DirGrant>().unwrap_err().0.contains("absolute"), "{bad}");
        }
    }

    #[test]
    fn a_network_grant_keeps_loopback_and_metadata_closed_unless_named() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let open = Grants {
            network: true,
            ..Grants::default()
        };
        for closed in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!open.reaches(ip(closed)), "{closed}");
        }
        for reachable in ["10.1.2.3", "192.0.2.7", "2001:db8::1"] {
            assert!(open.reaches(ip(reachable)), "{reachable}");
        }
        let listed = Grants {
            network: true,
            network_to: vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
            ..Grants::default()
        };
        assert!(listed.reaches(ip("127.0.0.1")) && listed.reaches(ip("10.200.0.1")));
        assert!(!listed.reaches(ip("11.0.0.1")) && !listed.reaches(ip("127.0.0.2")));
        assert!(!Grants::default().reaches(ip("10.1.2.3")), "no grant, no network");
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let cidr: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            serde_json::from_value::<Cidr>(serde_json::to_value(cidr).unwrap()).unwrap(),
            cidr
        );
    }

    #[test]
    fn specs_without_grants_read_as_granting_nothing() {
        let grants: Grants = serde_json::from_str("{}").unwrap();
        assert_eq!(grants, Grants::default());
        assert!(!grants.network && grants.env.is_empty() && grants.dirs.is_empty());
    }

    #[test]
    fn job_names_must_be_path_safe() {
        assert!(validate_job_name("counter-1.v2").is_ok());
        for bad in ["", "a/b", ".hidden", "with space"] {
            assert!(validate_job_name(bad).is_err(), "{bad}");
        }
    }
}

/// Where a job is in its life, as `weir jobs` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Deployed; no leader has started it yet.
    Created,
    /// Processing on the leader.
    Running,
    /// Its last attempt failed; it will restart from its last checkpoint.
    Restarting,
    /// Its restart strategy gave up; it stays stopped until deployed again.
    Failed,
    /// Stopped by `weir cancel`.
    Canceled,
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            JobState::Created => "CREATED",
            JobState::Running => "RUNNING",
            JobState::Restarting => "RESTARTING",
            JobState::Failed => "FAILED",
            JobState::Canceled => "CANCELED",
        };
        f.write_str(name)
    }
}

impl JobStatus {
    /// The status of a job just deployed (at `since_ms`), which no leader has started yet.
    pub fn created(since_ms: u64) -> JobStatus {
        JobStatus {
            state: JobState::Created,
            supervisor: None,
            epoch: 0,
            restarts: 0,
            error: None,
            since_ms,
        }
    }
}

/// A job's runtime status, in `jobs/<name>/status`, written by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Where the job is.
    pub state: JobState,
    /// The supervisor running it, if any.
    pub supervisor: Option<String>,
    /// Epoch of the leader that wrote this status.
    pub epoch: u64,
    /// Failed attempts since the job was deployed.
    pub restarts: u32,
    /// Why the last attempt failed, if it did.
    pub error: Option<String>,
    /// When this status was written (ms since the Unix epoch).
    pub since_ms: u64,
}
