//! Failover and cold-start benchmarks against real processes (run by
//! `scripts/bench`, ignored in the normal suite). Each prints Markdown.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::harness::{metric_in, read_lines, wait_for, Cluster};

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The time of the last log line containing `what` (logs are RFC 3339 stamped).
pub fn logged_at(log: &str, what: &str) -> Option<SystemTime> {
    let line = log.lines().rev().find(|l| l.contains(what))?;
    humantime::parse_rfc3339(line.split_whitespace().next()?).ok()
}

fn since(start: SystemTime, at: Option<SystemTime>) -> f64 {
    at.and_then(|t| t.duration_since(start).ok())
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// Waits for the file to grow past `lines` lines, polling every millisecond.
fn next_output(out: &Path, lines: usize) -> SystemTime {
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_lines(out).len() <= lines {
        assert!(Instant::now() < deadline, "no output after the fault");
        std::thread::sleep(Duration::from_millis(1));
    }
    SystemTime::now()
}

pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Median, min and max.
pub fn spread(samples: &[f64]) -> (f64, f64, f64) {
    let (min, max) = samples.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &s| {
        (lo.min(s), hi.max(s))
    });
    (median(samples), min, max)
}

fn row(label: &str, samples: Vec<f64>) -> String {
    let (median, min, max) = spread(&samples);
    format!("| {label} | {median:.0} | {min:.0} | {max:.0} | {} |", samples.len())
}

/// What strikes the supervisor running the job in a failover round.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `kill -9`: its kernel resets its connections, and its peers see it.
    Kill,
    /// SIGSTOP: silent as a partitioned process is, so only its session's
    /// expiry tells (it is killed once measured).
    Stop,
    /// SIGTERM: a planned handoff.
    Term,
}

impl Fault {
    fn signal(self) -> &'static str {
        match self {
            Fault::Kill => "KILL",
            Fault::Stop => "STOP",
            Fault::Term => "TERM",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9",
            Fault::Stop => "SIGSTOP",
            Fault::Term => "SIGTERM",
        }
    }
}

/// Moves job `name`'s task onto supervisor `onto` (or off it, `off`) by
/// draining the others (or it) and undoing the drain once it moved.
fn place(cluster: &Cluster, name: &str, onto: u32, off: bool) {
    let moves = |pid: u32| (pid == onto) == off;
    if !moves(cluster.runner_pid(name)) {
        return;
    }
    let ids = |cluster: &Cluster| -> Vec<(u32, String)> {
        let status = cluster.status();
        let replicas = status["replicas"].as_array().cloned().unwrap_or_default();
        replicas
            .iter()
            .filter_map(|r| Some((r["pid"].as_u64()? as u32, r["id"].as_str()?.to_string())))
            .collect()
    };
    let drained: Vec<String> = ids(cluster)
        .into_iter()
        .filter(|(pid, _)| (*pid == onto) == off)
        .map(|(_, id)| id)
        .collect();
    for id in &drained {
        cluster.weir_ok(&["drain", id]);
    }
    wait_for("the job to move", Duration::from_secs(60), || {
        (!moves(cluster.runner_pid(name))).then_some(())
    });
    for id in &drained {
        cluster.weir_ok(&["drain", id, "--undo"]);
    }
}

/// `rounds` faults of one kind with one session timeout, each striking the
/// supervisor that runs the job, which leads too if `leads`; one table.
fn failover(session: &'static str, fault: Fault, leads: bool, rounds: u64) {
    let replicas = if leads { 2 } else { 3 };
    let mut cluster = Cluster::with_session_timeout(session);
    for _ in 0..replicas {
        cluster.start_supervisor();
    }
    let out = cluster.deploy("counter", "counter", &["--source", "sequence:rate=10000"]);
    let (mut leadership, mut restored, mut output) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        cluster.wait_watching(replicas);
        let leader = cluster.leader_pid();
        place(&cluster, "counter", leader, !leads);
        let old = cluster.runner_pid("counter");
        let seen = wait_for("output", Duration::from_secs(60), || {
            let n = read_lines(&out).len();
            (n >= 10).then_some(n)
        });
        let lines = read_lines(&out).len().max(seen);
        let struck = SystemTime::now();
        cluster.signal(old, fault.signal());
        let after = |at: Option<SystemTime>| at.filter(|at| *at > struck);
        let new = wait_for("the job to move", Duration::from_secs(60), || {
            Some(cluster.runner_pid("counter")).filter(|pid| *pid != old)
        });
        let restore = wait_for("the job to restore", Duration::from_secs(60), || {
            after(logged_at(&cluster.log_of(new), "restored job from checkpoint"))
        });
        // After a SIGTERM the old runner publishes its final checkpoint
        // first: count only what the new one commits.
        let lines = if fault == Fault::Term {
            cluster.wait_exit(old);
            read_lines(&out).len()
        } else {
            lines
        };
        let at_output = next_output(&out, lines);
        if leads {
            let led = wait_for("a new leader", Duration::from_secs(60), || {
                let pid = cluster.leader_pid();
                (pid != old).then_some(pid)
            });
            leadership.push(since(struck, after(logged_at(&cluster.log_of(led), "became leader"))));
        }
        restored.push(since(struck, Some(restore)));
        output.push(since(struck, Some(at_output)));
        if fault == Fault::Stop {
            cluster.signal(old, "KILL");
        }
        cluster.start_supervisor();
    }
    let who = if leads {
        "the leader, which runs the job"
    } else {
        "a worker running the job (another leads)"
    };
    let kind = match fault {
        Fault::Kill => "kill -9",
        Fault::Stop => "SIGSTOP (silent, as a partitioned process is)",
        Fault::Term => "SIGTERM (planned handoff)",
    };
    println!("\n#### {kind} of {who}, session timeout {session}\n");
    println!("Milliseconds from the signal.\n\n| to | median | min | max | rounds |\n| --- | --- | --- | --- | --- |");
    let samples: Vec<String> = output.iter().map(|ms| format!("{ms:.0}")).collect();
    let metrics = [("restored", median(&restored)), ("output", median(&output))];
    if leads {
        println!("{}", row("new leadership (log)", leadership));
    }
    println!("{}", row("job restored (log)", restored));
    println!("{}", row("next committed output (sink file)", output));
    // Samples for scripts/plot, which scripts/bench takes out of the Markdown.
    let role = if leads { "leader" } else { "worker" };
    let short = fault.name();
    println!(
        "PLOT\tfailover\tweir {short} of the {role}, session {session}\t{}",
        samples.join(",")
    );
    for (what, ms) in metrics {
        println!("METRIC\t{short} {role} {session} {what} ms\t{ms}");
    }
}

#[test]
#[ignore = "a benchmark: run it with scripts/bench"]
fn failover_times() {
    let rounds = env_u64("WEIR_BENCH_ROUNDS", 20);
    println!(
        "\n### Failover\n\nThe counter at 10,000 events/s, checkpoints every 200 ms, two supervisors \
         (three when a worker is struck; a replacement is started after each fault, and the job is \
         moved by `weir drain` where the round needs it). A crash is seen by the peers at once \
         (its connections reset, its port refuses); a silent process only by its session's expiry."
    );
    failover("6s", Fault::Kill, true, rounds);
    failover("6s", Fault::Kill, false, rounds);
    failover("1s", Fault::Stop, true, rounds);
    failover("2s", Fault::Stop, true, rounds);
    failover("2s", Fault::Term, true, rounds);
}

/// Busy loops, one per core, killed when dropped.
struct Burners(Vec<std::process::Child>);

impl Burners {
    fn start() -> Burners {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let spawn = |_| {
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("sh runs")
        };
        Burners((0..cores).map(spawn).collect())
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A cluster left alone with a short session while every core is busy
/// with other work: any leadership change, task move or removal of a peer
/// is a false failover.
#[test]
#[ignore = "a benchmark: run it with scripts/bench"]
fn soak() {
    let seconds = env_u64("WEIR_BENCH_SOAK_SECONDS", 600);
    let session = "500ms";
    let mut cluster = Cluster::with_session_timeout(session);
    let pids: Vec<u32> = (0..3).map(|_| cluster.start_supervisor()).collect();
    let out = cluster.deploy("counter", "counter", &["--source", "sequence:rate=10000"]);
    wait_for("output", Duration::from_secs(60), || {
        (read_lines(&out).len() >= 10).then_some(())
    });
    cluster.wait_watching(3);
    let epoch = || cluster.status()["leader"]["epoch"].as_u64();
    let first_epoch = epoch();
    let mut runner = cluster.runner_pid("counter");
    let burners = Burners::start();
    let (mut moves, started) = (0, Instant::now());
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        let now = cluster.runner_pid("counter");
        if now != runner {
            moves += 1;
            runner = now;
        }
    }
    drop(burners);
    let leaderships = epoch().zip(first_epoch).map_or(0, |(last, first)| last - first);
    let deposed: f64 = pids
        .iter()
        .filter_map(|&p| cluster.metric(p, "weir_peers_deposed_total"))
        .sum();
    let lines = read_lines(&out);
    crate::harness::assert_counter_sequence(&lines);
    println!("\n### Soak: no false failovers\n");
    println!(
        "Three supervisors, session timeout {session}, the counter at 10,000 events/s, every core \
         busy with a shell loop at the same priority, for {seconds} s.\n"
    );
    println!("| leaderships changed | task moves | peers removed as dead | output lines (exactly once) |");
    println!("| --- | --- | --- | --- |");
    println!("| {leaderships} | {moves} | {deposed} | {} |", lines.len());
    println!("METRIC\tsoak false failovers\t{}", leaderships + moves + deposed as u64);
}

#[test]
#[ignore = "a benchmark: run it with scripts/bench"]
fn cold_start() {
    let rounds = env_u64("WEIR_BENCH_ROUNDS", 20).min(10);
    let (mut ready, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut cluster = Cluster::new();
        let started = SystemTime::now();
        let pid = cluster.start_supervisor();
        wait_for("leadership", Duration::from_secs(30), || {
            logged_at(&cluster.log_of(pid), "became leader")
        });
        ready.push(since(started, logged_at(&cluster.log_of(pid), "became leader")));
        for (name, samples) in [("cold", &mut cold), ("warm", &mut warm)] {
            let deployed = SystemTime::now();
            let out = cluster.deploy("counter", name, &["--source", "sequence:rate=0"]);
            samples.push(since(deployed, Some(next_output(&out, 0))));
        }
    }
    for (what, samples) in [("ready", &ready), ("deploy cold", &cold), ("deploy warm", &warm)] {
        println!("METRIC\tcold start {what} ms\t{}", median(samples));
    }
    println!("\n### Cold start\n\nMilliseconds; {rounds} rounds, each on a fresh ZooKeeper and storage dir.\n");
    println!("| from -> to | median | min | max | rounds |\n| --- | --- | --- | --- | --- |");
    println!("{}", row("`weir supervisor` started -> leading (log)", ready));
    println!(
        "{}",
        row("`weir deploy` run -> first committed output, module cache cold", cold)
    );
    println!(
        "{}",
        row("`weir deploy` run -> first committed output, module cache warm", warm)
    );
}

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// Deploys `count - 1` copies of job `first`'s spec straight into ZooKeeper
/// (deploying through the CLI compiles the module each time, which would
/// measure the CLI, not the supervisor).
fn clone_jobs(cluster: &Cluster, first: &str, count: usize) {
    use zookeeper_client::{Acls, CreateMode};
    let layout = weir::ha::Layout::new("/weir", "test");
    cluster.with_zk(async |client| {
        let (data, _) = client.get_data(&layout.job(first)).await.unwrap();
        let spec: weir::spec::JobSpec = serde_json::from_slice(&data).unwrap();
        let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
        let (status, _) = client.get_data(&layout.job_status(first)).await.unwrap();
        for n in 1..count {
            let mut clone = spec.clone();
            clone.name = format!("{first}-{n}");
            clone.uid = format!("{}{n}", spec.uid);
            if let weir::spec::SinkSpec::File { path } = &spec.sink {
                clone.sink = weir::spec::SinkSpec::File {
                    path: format!("{path}-{n}"),
                };
            }
            let mut writer = client.new_multi_writer();
            writer
                .add_create(&layout.job(&clone.name), &serde_json::to_vec(&clone).unwrap(), &options)
                .unwrap();
            writer
                .add_create(&layout.job_status(&clone.name), &status, &options)
                .unwrap();
            writer.commit().await.unwrap();
        }
    });
}

#[test]
#[ignore = "a benchmark: run it with scripts/bench"]
fn density() {
    let counts: Vec<usize> = std::env::var("WEIR_BENCH_DENSITY")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .filter_map(|n| n.parse().ok())
        .collect();
    println!("\n### Density\n");
    println!("Jobs on one supervisor, each checkpointing every second to a `file://` storage dir and its own");
    println!("exactly-once file sink. Idle: a file source with no input. Light: the counter at 100 events/s.");
    println!("Checkpoint lag: how long ago each job's last checkpoint was taken, sampled once all run.\n");
    println!("| jobs | load | supervisor RSS | RSS per job | checkpoint age, median | checkpoint age, max | all running after |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for &count in &counts {
        for (load, job, source) in [
            ("idle", "counter", "file:/nonexistent/input"),
            ("light", "counter", "sequence:rate=100"),
        ] {
            let mut cluster = Cluster::new();
            let pid = cluster.start_supervisor();
            let started = Instant::now();
            cluster.deploy(job, "d", &["--source", source, "--checkpoint-interval", "1s"]);
            clone_jobs(&cluster, "d", count);
            let jobs = wait_for("every job to run and checkpoint", Duration::from_secs(600), || {
                let jobs = cluster.jobs();
                let ready = jobs
                    .iter()
                    .filter(|j| j["state"] == "RUNNING" && !j["last_checkpoint"].is_null())
                    .count();
                (ready == count).then_some(jobs)
            });
            let all_running = started.elapsed();
            std::thread::sleep(Duration::from_secs(3));
            let rss = rss_mib(pid);
            let mut ages: Vec<f64> = cluster
                .jobs()
                .iter()
                .filter_map(|j| j["last_checkpoint"]["age_ms"].as_f64())
                .collect();
            ages.sort_by(f64::total_cmp);
            assert_eq!(jobs.len(), count);
            println!(
                "| {count} | {load} | {rss:.0} MiB | {:.2} MiB | {:.0} ms | {:.0} ms | {:.1} s |",
                rss / count as f64,
                ages[ages.len() / 2],
                ages[ages.len() - 1],
                all_running.as_secs_f64()
            );
            println!("METRIC\tdensity {count} {load} rss mib\t{rss}");
        }
    }
}

/// Checkpoint cost in a running supervisor, by state size: barrier to
/// output published, which is the snapshot, any wait behind the previous
/// checkpoint, the upload to a `file://` storage dir, the fenced pointer
/// write to ZooKeeper and the sink's publish.
#[test]
#[ignore = "a benchmark: run it with scripts/bench"]
fn checkpoint_commit() {
    let samples = env_u64("WEIR_BENCH_ROUNDS", 20).clamp(1, 5) as usize;
    let mut cluster = Cluster::new();
    let pid = cluster.start_supervisor();
    println!("\n### Checkpoint commit in a supervisor\n");
    println!("`jobs/ballast` at 1,000 events/s with checkpoints every second, one supervisor, a `file://`");
    println!("storage dir; `weir_last_checkpoint_duration_ms` after each of {samples} commits per size.\n");
    println!("| guest state | barrier -> committed (ms), median | min | max | samples |");
    println!("| --- | --- | --- | --- | --- |");
    for (label, bytes) in [
        ("1 KiB", 1u64 << 10),
        ("1 MiB", 1 << 20),
        ("64 MiB", 64 << 20),
        ("256 MiB", 256 << 20),
    ] {
        let name = format!("ballast-{bytes}");
        let config = format!("bytes={bytes}");
        let memory_mib = bytes * 6 / (1 << 20) + 64;
        cluster.deploy(
            "ballast",
            &name,
            &[
                "--source",
                "sequence:rate=1000",
                "--checkpoint-interval",
                "1s",
                "--config",
                &config,
                "--memory-limit",
                &memory_mib.to_string(),
            ],
        );
        let committed = format!("weir_checkpoints_committed_total{{job=\"{name}\"}}");
        let duration = format!("weir_last_checkpoint_duration_ms{{job=\"{name}\"}}");
        let mut durations = Vec::new();
        let mut seen = 0.0;
        while durations.len() < samples {
            // Both from one scrape, so the duration is that commit's.
            let (now, took) = wait_for("the next checkpoint", Duration::from_secs(60), || {
                let text = cluster.metrics(pid);
                let now = metric_in(&text, &committed)?;
                (now > seen).then(|| (now, metric_in(&text, &duration).expect("the duration gauge")))
            });
            seen = now;
            durations.push(took);
        }
        cluster.weir_ok(&["cancel", &name]);
        let (median, min, max) = spread(&durations);
        println!("{}", row(label, durations));
        // Beside the pipeline bench's pause and write, in scripts/plot's chart.
        println!("PLOT\tcheckpoint\tbarrier -> committed\t{bytes}\t{median}\t{min}\t{max}");
    }
}
