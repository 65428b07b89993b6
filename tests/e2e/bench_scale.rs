//! Scale-out benchmarks against real processes (run by `scripts/bench`,
//! ignored in the normal suite): throughput of one parallel job on one
//! and on two supervisors pinned to a core each, the longest pause of the
//! surviving tasks' output when the leader is killed, and the time a dead
//! worker's tasks take to commit output again. Each prints Markdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::bench::{env_u64, spread};
use crate::harness::{metric_in, metrics_at, read_lines, wait_for, Cluster};
use crate::scale::{deploy_parallel, TASKS};

/// Records each line of the throughput job's output stands for.
const WINDOW: u64 = 1000;

/// Every task of job `name` runs; returns the supervisor of each.
fn running(cluster: &Cluster, name: &str) -> Vec<String> {
    wait_for("every task to run", Duration::from_secs(60), || {
        let job = cluster.job(name)?;
        let tasks = job["tasks"].as_array()?.clone();
        let all = !tasks.is_empty() && tasks.iter().all(|t| t["state"] == "RUNNING");
        all.then(|| {
            tasks
                .iter()
                .map(|t| t["worker"].as_str().unwrap().to_string())
                .collect()
        })
    })
}

/// Lines in each file, counted without keeping them: the harness reads
/// these files while the supervisors it measures share its cores.
fn lines(files: &[PathBuf]) -> Vec<usize> {
    let count = |f: &PathBuf| std::fs::read(f).map_or(0, |bytes| bytes.iter().filter(|b| **b == b'\n').count());
    files.iter().map(count).collect()
}

/// CPU seconds a process has used (user and system), from `/proc`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime, fields 14 and 15 of the line: 11 and 12 past the name; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

/// Records per second of a 2-task counter with an unthrottled source on
/// `supervisors` supervisors, each pinned to its own core, and records per
/// CPU second the supervisors used.
fn throughput(supervisors: usize, seconds: u64) -> (f64, f64) {
    let mut cluster = Cluster::new();
    let pids: Vec<u32> = (0..supervisors)
        .map(|core| cluster.start_supervisor_on(Some(core)))
        .collect();
    let template = cluster.path("tput-{task}.out");
    cluster.deploy(
        "counter",
        "tput",
        &[
            "--parallelism",
            "2",
            "--config",
            &format!("window={WINDOW}"),
            "--source",
            "sequence:rate=0",
            "--checkpoint-interval",
            "1s",
            "--sink",
            &format!("file:{}", template.display()),
        ],
    );
    let files: Vec<PathBuf> = (0..2).map(|i| cluster.path(&format!("tput-{i}.out"))).collect();
    let workers = running(&cluster, "tput");
    let distinct: std::collections::BTreeSet<&String> = workers.iter().collect();
    assert_eq!(distinct.len(), supervisors, "one task per supervisor: {workers:?}");
    std::thread::sleep(Duration::from_secs(3));
    let cpu = || pids.iter().map(|pid| cpu_seconds(*pid)).sum::<f64>();
    let (start, at, cpu_start) = (lines(&files).iter().sum::<usize>(), Instant::now(), cpu());
    std::thread::sleep(Duration::from_secs(seconds));
    let end = lines(&files).iter().sum::<usize>();
    let records = (end - start) as f64 * WINDOW as f64;
    (records / at.elapsed().as_secs_f64(), records / (cpu() - cpu_start))
}

#[test]
#[ignore = "a benchmark: run it with scripts/bench"]
fn scale_out() {
    let seconds = env_u64("SECONDS_PER_RUN", 10);
    let rounds = env_u64("WEIR_BENCH_ROUNDS", 5).min(10);
    println!("\n### Scale out\n");
    println!("\n#### One job of 2 tasks on 1 and on 2 supervisors, each pinned to one core\n");
    println!("The counter with a window of {WINDOW}, unthrottled source, checkpoints every 1 s; {seconds} s after 3 s of warm-up.\n");
    let (one, one_per_cpu) = throughput(1, seconds);
    let (two, two_per_cpu) = throughput(2, seconds);
    println!("| supervisors | records/s | records per supervisor CPU second |\n| --- | --- | --- |");
    println!("| 1 (core 0) | {:.1} M | {:.1} M |", one / 1e6, one_per_cpu / 1e6);
    println!("| 2 (cores 0, 1) | {:.1} M | {:.1} M |", two / 1e6, two_per_cpu / 1e6);
    println!("| 2 / 1 | {:.2}x | {:.2} |", two / one, two_per_cpu / one_per_cpu);
    println!("METRIC\tscale-out 2/1 supervisors\t{:.3}", two / one);

    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    let files = deploy_parallel(&cluster);
    let (mut leader_pauses, mut moved_output) = (Vec::new(), Vec::new());
    for round in 0..rounds * 2 {
        let workers = running(&cluster, "par");
        wait_for("every task's output", Duration::from_secs(30), || {
            files.iter().all(|f| read_lines(f).len() >= 5).then_some(())
        });
        let status = cluster.status();
        let leader_id = status["leader"]["id"].as_str().unwrap().to_string();
        // Even rounds kill the leader, odd ones a worker that does not lead.
        let victim_id = if round % 2 == 0 {
            leader_id.clone()
        } else {
            let Some(id) = workers.iter().find(|w| **w != leader_id) else {
                continue;
            };
            id.clone()
        };
        let victim = cluster.pid_of(&victim_id).unwrap();
        let (moved, stayed): (Vec<usize>, Vec<usize>) = (0..TASKS as usize).partition(|&i| workers[i] == victim_id);
        let mut last: BTreeMap<usize, (usize, Instant)> = (0..TASKS as usize)
            .map(|i| (i, (read_lines(&files[i]).len(), Instant::now())))
            .collect();
        let base: BTreeMap<usize, usize> = last.iter().map(|(i, (n, _))| (*i, *n)).collect();
        let killed = Instant::now();
        cluster.signal(victim, "KILL");
        let mut longest = Duration::ZERO;
        let mut resumed: BTreeMap<usize, Duration> = BTreeMap::new();
        while resumed.len() < moved.len() {
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "the moved tasks never resumed"
            );
            std::thread::sleep(Duration::from_millis(5));
            for (&i, (n, at)) in &mut last {
                let now = read_lines(&files[i]).len();
                if now > *n {
                    (*n, *at) = (now, Instant::now());
                    if moved.contains(&i) && now > base[&i] && killed.elapsed() > Duration::from_millis(100) {
                        resumed.entry(i).or_insert_with(|| killed.elapsed());
                    }
                }
                if stayed.contains(&i) {
                    longest = longest.max(at.elapsed());
                }
            }
        }
        if round % 2 == 0 {
            leader_pauses.push(longest.as_secs_f64() * 1e3);
        }
        moved_output.push(resumed.values().max().copied().unwrap_or_default().as_secs_f64() * 1e3);
        cluster.start_supervisor();
    }
    let (median, min, max) = spread(&leader_pauses);
    println!("\n#### kill -9 during a job of {TASKS} tasks on 3 supervisors (session timeout 2 s, checkpoints every 200 ms)\n");
    println!("| measure | median | min | max | rounds |\n| --- | --- | --- | --- | --- |");
    println!(
        "| leader killed: longest pause of a surviving task's committed output (ms) | {median:.0} | {min:.0} | {max:.0} | {} |",
        leader_pauses.len()
    );
    let (median, min, max) = spread(&moved_output);
    println!(
        "| a supervisor killed: its tasks' next committed output elsewhere (ms from the kill) | {median:.0} | {min:.0} | {max:.0} | {} |",
        moved_output.len()
    );
    println!(
        "METRIC\tleader kill: surviving tasks' pause ms\t{}",
        crate::bench::median(&leader_pauses)
    );
    println!(
        "METRIC\tworker kill: moved tasks' output ms\t{}",
        crate::bench::median(&moved_output)
    );
}

/// One job of many tasks (`WEIR_BENCH_TASKS`, default 10,000) over three
/// supervisors, each task checkpointing every `WEIR_BENCH_INTERVAL`
/// seconds (default: a second per thousand tasks), with group commit
/// and with one ZooKeeper write per pointer: the supervisors' memory, the
/// tasks' checkpoint lag, and ZooKeeper's write load.
#[test]
#[ignore = "a benchmark: run it with scripts/bench"]
fn many_tasks() {
    let tasks = env_u64("WEIR_BENCH_TASKS", 10_000);
    let seconds = env_u64("SECONDS_PER_RUN", 10);
    // Two cores take about 1,000 checkpoints a second (the density bench).
    let interval = env_u64("WEIR_BENCH_INTERVAL", tasks.div_ceil(1000));
    println!("\n#### {tasks} tasks of one job over 3 supervisors\n");
    println!(
        "The counter at 1 event/s per task, checkpoints every {interval} s, each task its own file sink; after every task has"
    );
    println!("checkpointed and 5 s more, {seconds} s of ZooKeeper transactions (its zxid) and CPU. Checkpoint lag: how long ago");
    println!("each task's last checkpoint was taken, as `weir jobs` read it.\n");
    println!("| pointer writes | all running after | RSS per supervisor | checkpoint lag, median | p99 | max | ZooKeeper writes/s | pointers/s | ZooKeeper CPU | supervisors' CPU | sessions lost |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    // `WEIR_BENCH_GROUP_COMMIT=0` runs one of the two.
    let windows = std::env::var("WEIR_BENCH_GROUP_COMMIT").unwrap_or_else(|_| "10ms,0".into());
    for window in windows.split(',') {
        let label = match window {
            "0" => "one per pointer".to_string(),
            window => format!("group commit ({window})"),
        };
        // The default session timeout: two cores this busy miss a 2 s one.
        let mut cluster = Cluster::with_session_timeout("6s");
        cluster.set_env("WEIR_GROUP_COMMIT", window);
        let pids: Vec<u32> = (0..3).map(|_| cluster.start_supervisor()).collect();
        let template = cluster.path("many-{task}.out");
        let started = Instant::now();
        cluster.deploy(
            "counter",
            "many",
            &[
                "--parallelism",
                &tasks.to_string(),
                "--source",
                &format!("sequence:rate={tasks}"),
                "--checkpoint-interval",
                &format!("{interval}s"),
                "--sink",
                &format!("file:{}", template.display()),
            ],
        );
        wait_for("every task to run and checkpoint", Duration::from_secs(1200), || {
            let job = cluster.job("many")?;
            let all = job["tasks"]
                .as_array()?
                .iter()
                .all(|t| t["state"] == "RUNNING" && !t["last_checkpoint"].is_null());
            all.then_some(())
        });
        let all_running = started.elapsed();
        std::thread::sleep(Duration::from_secs(5));
        let zk_pid = cluster.zk.pid(0);
        // Found once: a supervisor whose session the load ends may be
        // missing from `weir status` for a moment, but keeps its address.
        let addresses: Vec<String> = pids.iter().map(|pid| cluster.http_address(*pid)).collect();
        let pointers = |_: &Cluster| -> f64 {
            addresses
                .iter()
                .filter_map(|address| metric_in(&metrics_at(address), "weir_pointers_written_total"))
                .sum()
        };
        let cpu = || pids.iter().map(|pid| cpu_seconds(*pid)).sum::<f64>();
        // Each reading timed at its middle: scraping busy supervisors takes a while.
        let reading = |cluster: &Cluster| {
            let before = Instant::now();
            let values = [cluster.zk.zxid() as f64, pointers(cluster), cpu_seconds(zk_pid), cpu()];
            (before + before.elapsed() / 2, values)
        };
        let (start, first) = reading(&cluster);
        std::thread::sleep(Duration::from_secs(seconds));
        let (end, last) = reading(&cluster);
        let elapsed = end.duration_since(start).as_secs_f64();
        let rate = |i: usize| (last[i] - first[i]) / elapsed;
        let (writes, pointers_per_s, zk_cpu, supervisors_cpu) = (rate(0), rate(1), rate(2), rate(3));
        let rss: Vec<f64> = pids.iter().map(|pid| crate::bench::rss_mib(*pid)).collect();
        let job = cluster.job("many").expect("the job");
        let mut lags: Vec<f64> = job["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["last_checkpoint"]["age_ms"].as_f64())
            .collect();
        lags.sort_by(f64::total_cmp);
        let (median, p99, max) = (lags[lags.len() / 2], lags[lags.len() * 99 / 100], lags[lags.len() - 1]);
        let (rss_median, rss_min, rss_max) = spread(&rss);
        println!(
            "| {label} | {:.0} s | {rss_median:.0} MiB ({rss_min:.0}-{rss_max:.0}) | {median:.0} ms | {p99:.0} ms | {max:.0} ms | {writes:.0} | {pointers_per_s:.0} | {:.0} % | {:.0} % | {} |",
            all_running.as_secs_f64(),
            zk_cpu * 100.0,
            supervisors_cpu * 100.0,
            pids.iter()
                .map(|pid| cluster.log_of(*pid).matches("joining again with a new session").count())
                .sum::<usize>()
        );
        println!("METRIC\t{tasks} tasks, {label}: ZooKeeper writes/s\t{writes:.0}");
    }
}
