//! The `weir` command line: argument parsing and dispatch. Every failure
//! reaches the user as one line naming the cause and the fix.

mod balance;
mod cancel;
mod config_file;
mod delete;
mod deploy;
mod jobs;
mod savepoint;
mod status;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::coord::zookeeper::{self, ZkSettings, ZooKeeper};
use crate::ha::{Layout, SupervisorInfo};
use crate::history::History;
use crate::http::{ClusterReader, HttpState};
use crate::job::WasmExecutor;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::storage::Storage;
use crate::supervisor::{self, SupervisorSettings};

/// weir: stateful stream jobs as WebAssembly components, highly available through ZooKeeper.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a supervisor replica: run the tasks assigned to it, and contend
    /// for leadership, which assigns them.
    Supervisor(SupervisorArgs),
    /// Deploy a job: store its module and write its spec; the leader starts it.
    Deploy(Box<deploy::DeployArgs>),
    /// List the jobs with their state and last checkpoint.
    Jobs(jobs::JobsArgs),
    /// Show the cluster: leader, epoch, live replicas and their task counts.
    Status(status::StatusArgs),
    /// Move every task off a supervisor, by handoff (`--undo` to let it run tasks again).
    Drain(balance::DrainArgs),
    /// Even the tasks out over the supervisors now, by handoff.
    Rebalance(balance::RebalanceArgs),
    /// Cancel a job: the leader stops it and its output.
    Cancel(cancel::CancelArgs),
    /// Delete a cancelled job: its spec, status and checkpoints (not its output).
    Delete(delete::DeleteArgs),
    /// Copy each task's newest checkpoint of a job into a savepoint, to
    /// start a job from later (`weir deploy --from-savepoint`).
    Savepoint(savepoint::SavepointArgs),
    /// List a job's savepoints, or delete one.
    Savepoints(savepoint::ListArgs),
    /// Replace a running job's module, keeping its state and output
    /// (savepoint, stop, start the new module from it; rolled back if it fails).
    Upgrade(upgrade::UpgradeArgs),
    /// Change a running job's settings, keeping its state: an upgrade to the same module.
    Configure(upgrade::ConfigureArgs),
    /// Run a job in another number of tasks, its state following its Kafka partitions.
    Rescale(upgrade::RescaleArgs),
    /// Print a shell completion script: `weir completions bash > /etc/bash_completion.d/weir`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// The command line's grammar: every command and flag, and `--config-file`.
fn command() -> clap::Command {
    Cli::command().arg(config_file::flag())
}

impl Cli {
    /// Parses `args` (the program's name first), with the settings of the
    /// config file they or `WEIR_CONFIG` name as the flags' defaults.
    pub fn parse_with_config_file(args: Vec<std::ffi::OsString>) -> Result<Cli, clap::Error> {
        let command = match config_file::named(&args) {
            Some(path) => config_file::apply(command(), path)
                .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n")))?,
            None => command(),
        };
        Cli::from_arg_matches(&command.try_get_matches_from(args)?)
    }
}

/// Where the cluster's coordination lives.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// ZooKeeper connect string.
    #[arg(long, env = "WEIR_ZOOKEEPER", default_value = "127.0.0.1:2181")]
    zookeeper: String,
    /// Cluster name: clusters sharing an ensemble are kept apart by it.
    #[arg(long, env = "WEIR_CLUSTER_ID", default_value = "default")]
    cluster_id: String,
    /// Root znode under which weir keeps its clusters.
    #[arg(long, env = "WEIR_ZK_ROOT", default_value = "/weir")]
    zk_root: String,
    /// ZooKeeper session timeout: how long a dead leader keeps its lead.
    #[arg(long, env = "WEIR_SESSION_TIMEOUT", default_value = "6s", value_parser = humantime::parse_duration)]
    session_timeout: Duration,
    /// `user:password` for ZooKeeper digest authentication; every znode weir
    /// creates is then readable and writable only with the same credentials.
    #[arg(long, env = "WEIR_ZK_AUTH", hide_env_values = true)]
    zk_auth: Option<String>,
    /// `user:password` for SASL DIGEST-MD5 authentication to ZooKeeper (a
    /// user of the servers' JAAS `Server` section); every znode weir
    /// creates is then open only to that user.
    #[arg(long, env = "WEIR_ZK_SASL", hide_env_values = true)]
    zk_sasl: Option<String>,
    /// PEM file of the CA whose certificates the ZooKeeper servers present:
    /// connects over TLS (to the servers' secureClientPort).
    #[arg(long, env = "WEIR_ZK_TLS_CA", value_name = "PEM", value_parser = Pem::certificates)]
    zk_tls_ca: Option<Pem>,
    /// PEM certificate this client presents to ZooKeeper (mutual TLS; with --zk-tls-key).
    #[arg(long, env = "WEIR_ZK_TLS_CERT", value_name = "PEM", value_parser = Pem::certificates)]
    zk_tls_cert: Option<Pem>,
    /// PEM private key of --zk-tls-cert.
    #[arg(long, env = "WEIR_ZK_TLS_KEY", value_name = "PEM", value_parser = Pem::private_key)]
    zk_tls_key: Option<Pem>,
    /// How long to wait for ZooKeeper to answer before giving up.
    #[arg(long, env = "WEIR_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
}

impl ClusterArgs {
    fn zk(&self) -> anyhow::Result<ZkSettings> {
        Ok(ZkSettings {
            connect: self.zookeeper.clone(),
            session_timeout: self.session_timeout,
            auth: self.zk_auth.clone(),
            sasl: match self.zk_sasl.as_deref().map(|sasl| sasl.split_once(':')) {
                Some(Some((user, password))) if !user.is_empty() && !password.is_empty() => {
                    Some((user.to_string(), password.to_string()))
                }
                Some(_) => anyhow::bail!("--zk-sasl must be `user:password`"),
                None => None,
            },
            tls: self.zk_tls()?,
        })
    }

    /// What the `--zk-tls-*` files say, checked here so that a bad one is
    /// one line naming it, not a handshake that never ends. (The files
    /// themselves were read as the command line was parsed.)
    fn zk_tls(&self) -> anyhow::Result<Option<zookeeper_client::TlsOptions>> {
        let identity = match (&self.zk_tls_cert, &self.zk_tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => anyhow::bail!("--zk-tls-cert and --zk-tls-key go together: give both, or neither"),
        };
        let Some(ca) = &self.zk_tls_ca else {
            anyhow::ensure!(
                identity.is_none(),
                "--zk-tls-cert needs --zk-tls-ca, the CA of the ZooKeeper servers' certificates"
            );
            return Ok(None);
        };
        let mut tls = zookeeper_client::TlsOptions::new()
            .with_pem_ca(&ca.text)
            .map_err(|e| anyhow::anyhow!("--zk-tls-ca {}: {e} (expected PEM certificates)", ca.path))?;
        if let Some((cert, key)) = identity {
            tls = tls.with_pem_identity(&cert.text, &key.text).map_err(|e| {
                anyhow::anyhow!(
                    "--zk-tls-cert {} with --zk-tls-key {}: {e} (expected a PEM certificate and its PEM private key)",
                    cert.path,
                    key.path
                )
            })?;
        }
        Ok(Some(tls))
    }

    fn layout(&self) -> anyhow::Result<Layout> {
        anyhow::ensure!(
            self.zk_auth.as_deref().is_none_or(|a| a.contains(':')),
            "--zk-auth must be `user:password`"
        );
        anyhow::ensure!(
            self.zk_root.starts_with('/') && !self.zk_root.contains("//"),
            "--zk-root `{}` must be an absolute znode path such as /weir",
            self.zk_root
        );
        anyhow::ensure!(
            !self.cluster_id.is_empty() && !self.cluster_id.contains('/'),
            "--cluster-id `{}` must be a non-empty name without `/`",
            self.cluster_id
        );
        Ok(Layout::new(&self.zk_root, &self.cluster_id))
    }

    /// Opens a session for a one-shot command.
    async fn connect(&self) -> anyhow::Result<zookeeper_client::Client> {
        Ok(zookeeper::connect(&self.zk()?, self.connect_timeout, "--connect-timeout").await?)
    }
}

/// A PEM file, read as the command line is parsed (before any async
/// thread runs), and checked to hold what its flag wants.
#[derive(Debug, Clone)]
struct Pem {
    path: String,
    text: String,
}

impl Pem {
    fn read(path: &str, wanted: &str, what: &str) -> Result<Pem, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        if !text.contains(wanted) {
            return Err(format!("{path} holds no {what} (no `{wanted}` line)"));
        }
        Ok(Pem {
            path: path.to_string(),
            text,
        })
    }

    fn certificates(path: &str) -> Result<Pem, String> {
        Pem::read(path, "-----BEGIN CERTIFICATE-----", "PEM certificate")
    }

    fn private_key(path: &str) -> Result<Pem, String> {
        Pem::read(path, "PRIVATE KEY-----", "PEM private key")
    }
}

/// What to check when the storage dir cannot be reached.
const STORAGE_FIX: &str =
    "cannot use the storage dir (check --storage-dir and, for s3://, AWS_ENDPOINT_URL, AWS_REGION, the access keys, and AWS_ALLOW_HTTP=true for an http:// endpoint)";

/// Where checkpoints and modules live.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Storage dir URL shared by all replicas: `file:///path` or `s3://bucket/prefix`
    /// (S3 endpoint and credentials from the standard `AWS_*` variables).
    #[arg(long, env = "WEIR_STORAGE_DIR", default_value = "file:///var/lib/weir")]
    storage_dir: String,
}

impl StorageArgs {
    fn open(&self) -> anyhow::Result<Storage> {
        Ok(Storage::open(&self.storage_dir)?)
    }
}

/// Output format of the inspection commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document with stable field names, for scripts.
    Json,
}

#[derive(Debug, Args)]
struct SupervisorArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    storage: StorageArgs,
    /// This replica's name in `weir status` (default: `<host>-<pid>`).
    #[arg(long, env = "WEIR_SUPERVISOR_ID")]
    id: Option<String>,
    /// Address of the HTTP endpoint (`/metrics`, `/healthz`); port 0 picks a free one.
    #[arg(long, env = "WEIR_HTTP", default_value = "127.0.0.1:0")]
    http: std::net::SocketAddr,
    /// `HOST:PORT` where browsers and the other replicas reach that
    /// endpoint, as `weir status` and the dashboard show it (default: the
    /// bound address, with this host's name for 0.0.0.0 or ::).
    #[arg(long, env = "WEIR_ADVERTISE_HTTP", value_parser = parse_advertised)]
    advertise_http: Option<String>,
    /// How long a task's checkpoint pointer waits for the pointers of other
    /// tasks on this replica, to go to ZooKeeper in one write; 0 writes each
    /// alone. Longer: fewer ZooKeeper writes, later output.
    #[arg(long, env = "WEIR_GROUP_COMMIT", default_value = "10ms", value_parser = humantime::parse_duration)]
    group_commit: Duration,
}

/// Where others reach an endpoint bound at `bound` on host `host`: an
/// address that means every interface names none they could dial.
fn advertised(bound: std::net::SocketAddr, host: &str) -> String {
    if bound.ip().is_unspecified() {
        format!("{host}:{}", bound.port())
    } else {
        bound.to_string()
    }
}

/// `--advertise-http`: a host (or IP, an IPv6 one in brackets) and a port.
fn parse_advertised(value: &str) -> Result<String, String> {
    let host_port = value.rsplit_once(':').filter(|(host, _)| {
        let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        match bracketed {
            Some(ip) => ip.parse::<std::net::Ipv6Addr>().is_ok(),
            None => !host.is_empty() && !host.contains([':', '/', '[', ']', '@', ' ']),
        }
    });
    match host_port.map(|(_, port)| port.parse::<u16>()) {
        Some(Ok(port)) if port != 0 => Ok(value.to_string()),
        _ => Err(format!(
            "{value:?}: give HOST:PORT (e.g. weir-1.example.com:8080, or [fd00::1]:8080 for an IPv6 address), the address browsers and the other replicas reach this one's --http at"
        )),
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Supervisor(args) => {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            let pid = std::process::id();
            let http = tokio::net::TcpListener::bind(args.http)
                .await
                .with_context(|| format!("cannot listen on --http {}", args.http))?;
            let address = match args.advertise_http {
                Some(address) => address,
                None => advertised(http.local_addr()?, &host),
            };
            let info = SupervisorInfo {
                address: Some(address),
                id: args.id.unwrap_or_else(|| format!("{host}-{pid}")),
                pid,
                host,
                started_ms: crate::clock::now_ms(),
            };
            let layout = args.cluster.layout()?;
            let storage = args.storage.open().context(STORAGE_FIX)?;
            storage.probe().await.context(STORAGE_FIX)?;
            let metrics = Arc::new(Metrics::default());
            let history = Arc::new(History::default());
            let cluster = ClusterReader::new(
                args.cluster.zk()?,
                layout.clone(),
                args.cluster.cluster_id.clone(),
                storage.clone(),
            );
            let served = HttpState {
                metrics: metrics.clone(),
                history: history.clone(),
                cluster,
                identity: crate::liveness::identity(&info),
                peers: Arc::new(tokio::sync::Semaphore::new(crate::http::PEER_CONNECTIONS)),
            };
            tokio::spawn(crate::http::serve(http, served));
            let liveness = Arc::new(crate::liveness::TcpLiveness::new(metrics.peers_watched.clone()));
            let settings = SupervisorSettings {
                connector: Arc::new(ZooKeeper::new(args.cluster.zk()?, metrics.clone())),
                layout,
                executor: Arc::new(WasmExecutor::new(storage.clone(), Runtime::new()?)),
                storage,
                info,
                metrics,
                history,
                group_commit: args.group_commit,
                liveness,
            };
            supervisor::run(settings, supervisor::shutdown_signal()).await
        }
        Command::Deploy(args) => deploy::run(*args).await,
        Command::Jobs(args) => jobs::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Drain(args) => balance::drain(args).await,
        Command::Rebalance(args) => balance::rebalance(args).await,
        Command::Cancel(args) => cancel::run(args).await,
        Command::Delete(args) => delete::run(args).await,
        Command::Savepoint(args) => savepoint::take(args).await,
        Command::Savepoints(args) => savepoint::list(args).await,
        Command::Upgrade(args) => upgrade::upgrade(args).await,
        Command::Configure(args) => upgrade::configure(args).await,
        Command::Rescale(args) => upgrade::rescale(args).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "weir", &mut script);
            say!("{}", String::from_utf8_lossy(&script).trim_end())?;
            Ok(())
        }
    }
}

/// Formats a duration as a short age: `850ms`, `12s`, `5m`.
fn age(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=119_999 => format!("{}s", ms / 1000),
        _ => format!("{}m", ms / 60_000),
    }
}

/// Writes one line to standard output. Unlike `println!` it fails rather
/// than panics when the reader has gone (`weir jobs | head -1`); the binary
/// takes that failure as a quiet end.
pub fn write_line(line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(line)?;
    out.write_all(b"\n")
}

/// `println!` through [`write_line`]: `say!("...")?`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::write_line(format_args!($($arg)*))
    };
}
use say;

/// Prints rows as aligned columns.
fn print_table(header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        say!("{}", padded.join("  ").trim_end())
    };
    line(header.to_vec())?;
    for row in rows {
        line(row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

/// A random number for deployment ids, from the OS's hasher seed.
pub(super) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_on_every_interface_is_advertised_by_the_hosts_name() {
        let bound = |a: &str| a.parse().unwrap();
        assert_eq!(advertised(bound("0.0.0.0:8080"), "weir-1"), "weir-1:8080");
        assert_eq!(advertised(bound("[::]:81"), "weir-1"), "weir-1:81");
        assert_eq!(advertised(bound("10.0.0.5:8080"), "weir-1"), "10.0.0.5:8080");
        assert_eq!(parse_advertised("weir-1.example:8080").unwrap(), "weir-1.example:8080");
        assert_eq!(parse_advertised("[fd00::1]:8080").unwrap(), "[fd00::1]:8080");
        for bad in [
            "weir-1",
            ":8080",
            "weir-1:0",
            "weir-1:http",
            "weir-1:70000",
            "fd00::1:8080",
            "[weir-1]:8080",
            "http://weir-1:8080",
            "weir-1/ui:8080",
        ] {
            let err = parse_advertised(bad).unwrap_err();
            assert!(err.contains("give HOST:PORT"), "{bad}: {err}");
        }
    }
}
