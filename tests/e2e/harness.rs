//! Shared test parts: a real ZooKeeper on a free loopback port with a temp
//! data dir, real `weir` processes, and waiting on conditions with deadlines.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub use crate::zookeeper::ZooKeeper;

/// Session timeout the test supervisors use unless a test sets its own:
/// short, so failovers are quick.
pub const SESSION_TIMEOUT: &str = "2s";

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free port on loopback (free when asked; servers bind it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .unwrap()
        .port()
}

/// Where the build put the `weir` binary and the example jobs.
/// A test server `scripts/setup` installs (on the PATH, or in cargo's bin
/// dir); fails loudly when it is not there.
pub fn installed(name: &str) -> PathBuf {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .map(|home| home.join("bin").join(name));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    on_path
        .chain(cargo_bin)
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: run `scripts/setup`"))
}

pub fn weir_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weir"))
}

/// A job component built by `scripts/build-jobs`.
pub fn job_wasm(name: &str) -> PathBuf {
    // CARGO_BIN_EXE_weir is <target>/<profile>/weir; jobs are in <target>/wasm32-wasip2/release.
    let target = weir_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let path = target.join("wasm32-wasip2/release").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the jobs first with `scripts/build-jobs`",
        path.display()
    );
    path
}

/// One weir cluster: a ZooKeeper, a storage dir, and supervisor processes.
pub struct Cluster {
    /// The ensemble.
    pub zk: ZooKeeper,
    /// Scratch space: storage dir, logs, sink files.
    pub dir: TempDir,
    supervisors: Vec<Child>,
    session_timeout: &'static str,
    /// Environment every `weir` process of this cluster gets.
    env: Vec<(String, String)>,
}

impl Cluster {
    /// A ZooKeeper and an empty storage dir; no supervisor yet.
    pub fn new() -> Cluster {
        Cluster::with_session_timeout(SESSION_TIMEOUT)
    }

    /// Like [`Cluster::new`], with another ZooKeeper session timeout.
    pub fn with_session_timeout(session_timeout: &'static str) -> Cluster {
        Cluster::with(ZooKeeper::start(), session_timeout)
    }

    /// A cluster on a given ZooKeeper (an ensemble, say).
    pub fn with(zk: ZooKeeper, session_timeout: &'static str) -> Cluster {
        Cluster {
            zk,
            dir: tempfile::tempdir().unwrap(),
            supervisors: Vec::new(),
            session_timeout,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for every `weir` process started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Puts the storage dir on `s3`, under `prefix`, for every `weir`
    /// process started from now on.
    pub fn use_s3(&mut self, s3: &crate::s3::S3Server, prefix: &str) {
        for (key, value) in s3.env() {
            self.set_env(key, &value);
        }
        self.set_env("WEIR_STORAGE_DIR", &format!("s3://{}/{prefix}", crate::s3::BUCKET));
    }

    /// A path in the cluster's scratch dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Gives `command` this cluster's settings, as every `weir` it runs has them.
    pub fn env(&self, command: &mut Command) {
        command
            .env("WEIR_ZOOKEEPER", &self.zk.connect)
            .env("WEIR_STORAGE_DIR", format!("file://{}", self.path("storage").display()))
            .env("WEIR_CLUSTER_ID", "test")
            .env("WEIR_SESSION_TIMEOUT", self.session_timeout)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
    }

    /// Starts a supervisor; returns its pid.
    pub fn start_supervisor(&mut self) -> u32 {
        self.start_supervisor_on(None)
    }

    /// Starts a supervisor, pinned to CPU `core` if given (`taskset`,
    /// which execs it, so the pid is the supervisor's); returns its pid.
    pub fn start_supervisor_on(&mut self, core: Option<usize>) -> u32 {
        match core {
            Some(core) => self.start_supervisor_through(&["taskset", "-c", &core.to_string()]),
            None => self.start_supervisor_through(&[]),
        }
    }

    /// Starts a supervisor in network namespace `netns` (`ip netns exec`,
    /// which execs it, so the pid is the supervisor's); returns its pid.
    pub fn start_supervisor_in(&mut self, netns: &str) -> u32 {
        self.start_supervisor_through(&["ip", "netns", "exec", netns])
    }

    /// Starts a supervisor through `launcher` (a program and its arguments,
    /// which execs the `weir` given after them), or directly if it is empty.
    fn start_supervisor_through(&mut self, launcher: &[&str]) -> u32 {
        let n = self.supervisors.len();
        let log = std::fs::File::create(self.path(&format!("supervisor-{n}.log"))).unwrap();
        let mut command = match launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(installed(program));
                command.args(args).arg(weir_bin());
                command
            }
            None => Command::new(weir_bin()),
        };
        self.env(&mut command);
        command
            .args(["supervisor", "--id", &format!("s{n}")])
            .env("RUST_LOG", "info,zookeeper_client=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command.spawn().expect("start weir supervisor");
        let pid = child.id();
        self.supervisors.push(child);
        pid
    }

    /// Runs a `weir` CLI command to completion.
    pub fn weir(&self, args: &[&str]) -> Output {
        let mut command = Command::new(weir_bin());
        self.env(&mut command);
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run weir")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn weir_ok(&self, args: &[&str]) -> String {
        let out = self.weir(args);
        assert!(
            out.status.success(),
            "weir {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Deploys the job component `wasm` as `name` with a file sink `<name>.out`
    /// in the scratch dir, a 5000/s sequence source and 200 ms checkpoints;
    /// `extra` flags come last and so win. Returns the sink's path.
    pub fn deploy(&self, wasm: &str, name: &str, extra: &[&str]) -> PathBuf {
        let out = self.path(&format!("{name}.out"));
        let sink = format!("file:{}", out.display());
        let wasm = job_wasm(wasm);
        let mut args = vec![
            "deploy",
            wasm.to_str().unwrap(),
            "--name",
            name,
            "--sink",
            &sink,
            "--source",
            "sequence:rate=5000",
            "--checkpoint-interval",
            "200ms",
        ];
        args.extend_from_slice(extra);
        self.weir_ok(&args);
        out
    }

    /// `weir status --output json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.weir_ok(&["status", "--output", "json"])).unwrap()
    }

    /// `weir jobs --output json`, as a list.
    pub fn jobs(&self) -> Vec<Value> {
        serde_json::from_str(&self.weir_ok(&["jobs", "--output", "json"])).unwrap()
    }

    /// One job from `weir jobs`.
    pub fn job(&self, name: &str) -> Option<Value> {
        self.jobs().into_iter().find(|j| j["name"] == name)
    }

    /// Waits for job `name` to reach `state` and checks that its error
    /// names `error`; returns the job.
    pub fn wait_for_job_error(&self, name: &str, state: &str, error: &str) -> Value {
        let job = wait_for(&format!("job {name} to be {state}"), Duration::from_secs(30), || {
            self.job(name).filter(|j| j["state"] == state)
        });
        assert!(
            job["error"].as_str().unwrap_or_default().contains(error),
            "expected {error:?} in {job}"
        );
        job
    }

    /// The supervisor (`--id`) each task of job `name` is assigned to.
    pub fn task_workers(&self, name: &str) -> Vec<Option<String>> {
        let job = self.job(name).unwrap_or_default();
        let tasks = job["tasks"].as_array().cloned().unwrap_or_default();
        tasks.iter().map(|t| t["worker"].as_str().map(str::to_string)).collect()
    }

    /// The pid of the live supervisor with `--id` `id`.
    pub fn pid_of(&self, id: &str) -> Option<u32> {
        let status = self.status();
        let replicas = status["replicas"].as_array().cloned().unwrap_or_default();
        replicas
            .iter()
            .find(|r| r["id"] == id)
            .and_then(|r| r["pid"].as_u64())
            .map(|pid| pid as u32)
    }

    /// The pid of the supervisor running task 0 of job `name`, once it runs.
    pub fn runner_pid(&self, name: &str) -> u32 {
        wait_for(&format!("job {name} to run"), Duration::from_secs(30), || {
            let job = self.job(name)?;
            let worker = job["tasks"][0]["worker"].as_str()?.to_string();
            (job["tasks"][0]["state"] == "RUNNING").then_some(())?;
            self.pid_of(&worker)
        })
    }

    /// `kill -9` of the supervisor running job `name` (its task 0), a
    /// supervisor started in its place, and a wait for the task to run
    /// elsewhere; returns the pid it runs on now.
    pub fn replace_runner(&mut self, name: &str) -> u32 {
        let runner = self.runner_pid(name);
        self.signal(runner, "KILL");
        self.start_supervisor();
        wait_for(&format!("job {name} to move"), Duration::from_secs(30), || {
            let pid = self.runner_pid(name);
            (pid != runner).then_some(pid)
        })
    }

    /// The pid of the leader, once one has taken the lead (epoch set).
    pub fn leader_pid(&self) -> u32 {
        self.leader_pid_after(None)
    }

    /// The pid of a leader other than `old`, waiting for `old`'s session to expire.
    pub fn leader_pid_after(&self, old: Option<u32>) -> u32 {
        wait_for("a new leader", Duration::from_secs(30), || {
            let status = self.status();
            let leader = &status["leader"];
            let pid = leader["epoch"].as_u64().and_then(|_| leader["pid"].as_u64());
            pid.map(|pid| pid as u32).filter(|pid| Some(*pid) != old)
        })
    }

    /// Whether a supervisor process is still alive.
    pub fn is_alive(&mut self, pid: u32) -> bool {
        self.supervisors
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits for a supervisor to exit; returns whether it exited successfully.
    pub fn wait_exit(&mut self, pid: u32) -> bool {
        let child = self
            .supervisors
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("a supervisor of this cluster");
        wait_for("the supervisor to exit", Duration::from_secs(30), || {
            child.try_wait().ok().flatten()
        })
        .success()
    }

    /// A supervisor's `/metrics`, found through `weir status`.
    pub fn metrics(&self, pid: u32) -> String {
        metrics_at(&self.http_address(pid))
    }

    /// A supervisor's HTTP address (it keeps it for life), from `weir status`.
    pub fn http_address(&self, pid: u32) -> String {
        let status = self.status();
        let replicas = status["replicas"].as_array().cloned().unwrap_or_default();
        let replica = replicas
            .iter()
            .find(|r| r["pid"] == pid)
            .expect("the supervisor is in `weir status`");
        let address = replica["address"].as_str().expect("the supervisor has an HTTP address");
        address.to_string()
    }

    /// One value from a supervisor's `/metrics`, e.g. `weir_leader`.
    pub fn metric(&self, pid: u32, series: &str) -> Option<f64> {
        metric_in(&self.metrics(pid), series)
    }

    /// One supervisor's log.
    pub fn log_of(&self, pid: u32) -> String {
        let n = self
            .supervisors
            .iter()
            .position(|c| c.id() == pid)
            .expect("a supervisor of this cluster");
        std::fs::read_to_string(self.path(&format!("supervisor-{n}.log"))).unwrap_or_default()
    }

    /// Sends a signal to a supervisor.
    pub fn signal(&mut self, pid: u32, signal: &str) {
        send_signal(pid, signal);
        if signal == "KILL" {
            if let Some(child) = self.supervisors.iter_mut().find(|c| c.id() == pid) {
                let _ = child.wait();
            }
        }
    }

    /// Waits until `replicas` supervisors are up and each holds a liveness
    /// connection to every other one.
    pub fn wait_watching(&self, replicas: usize) {
        wait_for("the supervisors to watch each other", Duration::from_secs(30), || {
            let status = self.status();
            let pids: Vec<u32> = (status["replicas"].as_array().cloned().unwrap_or_default())
                .iter()
                .filter_map(|r| r["pid"].as_u64().map(|pid| pid as u32))
                .collect();
            let watched = |pid: u32| self.metric(pid, "weir_peers_watched") == Some(replicas as f64 - 1.0);
            (pids.len() == replicas && pids.iter().all(|&pid| watched(pid))).then_some(())
        });
    }

    /// Runs `work` with a ZooKeeper client of this cluster's ensemble, on a
    /// runtime of its own.
    pub fn with_zk<T>(&self, work: impl AsyncFnOnce(&zookeeper_client::Client) -> T) -> T {
        let io = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        io.block_on(async {
            let client = zookeeper_client::Client::connect(&self.zk.connect).await.unwrap();
            work(&client).await
        })
    }

    /// Deletes supervisor `pid`'s worker node, then the latch nodes of its
    /// session, from another session: what its peers do when they take it
    /// for dead.
    pub fn remove_from_cluster(&self, pid: u32) {
        let layout = weir::ha::Layout::new("/weir", "test");
        self.with_zk(async |client| {
            let mut session = None;
            for node in client.list_children(&layout.workers()).await.unwrap() {
                let path = layout.worker(&node);
                let Ok((data, stat)) = client.get_data(&path).await else {
                    continue;
                };
                if serde_json::from_slice::<weir::ha::SupervisorInfo>(&data).is_ok_and(|info| info.pid == pid) {
                    client.delete(&path, None).await.unwrap();
                    session = Some(stat.ephemeral_owner);
                }
            }
            let session = session.unwrap_or_else(|| panic!("supervisor {pid} has no worker node"));
            let dir = layout.latch_dir();
            for latch in client.list_children(&dir).await.unwrap() {
                let path = format!("{dir}/{latch}");
                if let Ok(Some(stat)) = client.check_stat(&path).await {
                    if stat.ephemeral_owner == session {
                        match client.delete(&path, None).await {
                            Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
                            Err(e) => panic!("cannot delete {path}: {e}"),
                        }
                    }
                }
            }
        });
    }

    /// The supervisors' logs, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.supervisors.len())
            .map(|n| {
                let log = std::fs::read_to_string(self.path(&format!("supervisor-{n}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                format!("--- supervisor-{n}.log (tail)\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.supervisors {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `/metrics` served at `address`.
pub fn metrics_at(address: &str) -> String {
    http_get(address, "/metrics")
}

/// The whole response (status line, headers, body) to a GET of `path`.
pub fn http_get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: weir\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// One value from a `/metrics` text, for reading several from one scrape.
pub fn metric_in(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Sends a signal (`KILL`, `STOP`, `CONT`, `TERM`) to any process.
pub fn send_signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// The complete lines of a sink file (a line still being written is left out).
pub fn read_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_string).collect()
}

/// Waits until the sink at `out` holds at least `more` complete lines beyond
/// `than`; returns how many it holds.
pub fn wait_for_lines(out: &Path, than: usize, more: usize) -> usize {
    wait_for(
        &format!("output past {} lines", than + more),
        Duration::from_secs(60),
        || {
            let n = read_lines(out).len();
            (n >= than + more).then_some(n)
        },
    )
}

/// Asserts that the counter's output is exactly the failure-free sequence:
/// the k-th line is `10000*k + 4950`, no gap, no duplicate.
pub fn assert_counter_sequence(lines: &[String]) {
    for (k, line) in lines.iter().enumerate() {
        let expected = 10000 * k as i64 + 4950;
        assert_eq!(
            line.parse::<i64>().ok(),
            Some(expected),
            "line {k} of the counter's output is {line:?}, expected {expected}"
        );
    }
}
