//! The chaos soak (run by `scripts/chaos`, ignored in the normal suite): for
//! a given duration, keep killing, pausing and stopping supervisors and
//! ZooKeeper nodes at random while a job of six tasks runs across them,
//! then check each task's output against its share of the failure-free
//! sequence and print what happened.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::{read_lines, wait_for, Cluster, ZooKeeper};
use crate::scale::{deploy_parallel, TASKS};

/// A pause of `from..to` milliseconds.
fn millis(rng: &mut fastrand::Rng, from: u64, to: u64) -> Duration {
    Duration::from_millis(rng.u64(from..to))
}

const FAULTS: [&str; 7] = [
    "kill -9 leader",
    "kill -9 follower",
    "SIGSTOP leader",
    "SIGSTOP follower",
    "SIGTERM leader",
    "drain a supervisor",
    "kill zookeeper node",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Numbers that are missing from, and repeated in, task `task`'s output
/// (its share: `task, task + TASKS, ...`).
fn lost_and_duplicated(lines: &[String], task: usize) -> (usize, usize) {
    let ks: Vec<i64> = lines
        .iter()
        .filter_map(|l| l.parse::<i64>().ok())
        .map(|v| (v - task as i64) / TASKS as i64)
        .collect();
    let distinct: std::collections::BTreeSet<i64> = ks.iter().copied().collect();
    let expected = ks.iter().max().map_or(0, |m| m + 1) as usize;
    (expected - distinct.len(), ks.len() - distinct.len())
}

/// The leader's pid, once it is a live process: a leader killed a moment
/// ago stays the leader until its session expires, while the tasks on the
/// other supervisors (whose output the soak waits for) carry on.
fn live_leader(cluster: &mut Cluster) -> u32 {
    let leader = cluster.leader_pid();
    if cluster.is_alive(leader) {
        leader
    } else {
        cluster.leader_pid_after(Some(leader))
    }
}

fn median(sorted: &[Duration]) -> Duration {
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

#[test]
#[ignore = "a soak: run it with scripts/chaos"]
fn chaos() {
    let seconds = env_u64("WEIR_CHAOS_SECONDS", 120);
    let seed = env_u64("WEIR_CHAOS_SEED", std::process::id() as u64 * 2654435761 + 1);
    let mut rng = fastrand::Rng::with_seed(seed);
    println!("chaos: {seconds} s, seed {seed} (WEIR_CHAOS_SEED={seed} replays the choices)");

    let mut cluster = Cluster::with(ZooKeeper::ensemble(3), "2s");
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    let files = deploy_parallel(&cluster);
    let total = || files.iter().map(|f| read_lines(f).len()).sum::<usize>();
    let followers = |cluster: &mut Cluster| -> Vec<u32> {
        let status = cluster.status();
        status["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["role"] == "follower")
            .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
            .collect::<Vec<_>>()
            .into_iter()
            // One killed a moment ago stays listed until its session expires.
            .filter(|pid| cluster.is_alive(*pid))
            .collect()
    };
    let mut drained: Option<String> = None;
    let mut injected: BTreeMap<&str, usize> = BTreeMap::new();
    let mut recoveries = Vec::new();
    let mut epochs = std::collections::BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        let seen = total();
        wait_for("output", Duration::from_secs(60), || {
            (total() >= seen + 5).then_some(())
        });
        epochs.insert(cluster.status()["leader"]["epoch"].as_u64());
        let fault = FAULTS[rng.usize(..FAULTS.len())];
        let before = total();
        let at = Instant::now();
        match fault {
            "kill -9 leader" => {
                let leader = live_leader(&mut cluster);
                cluster.signal(leader, "KILL");
                cluster.start_supervisor();
            }
            "kill -9 follower" => {
                let followers = followers(&mut cluster);
                let Some(&pid) = followers.get(rng.usize(..followers.len().max(1))) else {
                    continue;
                };
                cluster.signal(pid, "KILL");
                cluster.start_supervisor();
            }
            "SIGSTOP follower" => {
                let followers = followers(&mut cluster);
                let Some(&pid) = followers.get(rng.usize(..followers.len().max(1))) else {
                    continue;
                };
                cluster.signal(pid, "STOP");
                std::thread::sleep(millis(&mut rng, 500, 4000));
                cluster.signal(pid, "CONT");
            }
            "drain a supervisor" => match drained.take() {
                Some(id) => {
                    cluster.weir_ok(&["drain", &id, "--undo"]);
                    cluster.weir_ok(&["rebalance"]);
                }
                None => {
                    let status = cluster.status();
                    let ids: Vec<String> = status["replicas"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r["id"].as_str().map(str::to_string))
                        .collect();
                    let Some(id) = ids.get(rng.usize(..ids.len().max(1))) else {
                        continue;
                    };
                    // A supervisor killed a moment ago is refused: not live.
                    if cluster.weir(&["drain", id]).status.success() {
                        drained = Some(id.clone());
                    }
                }
            },
            "SIGSTOP leader" => {
                let leader = live_leader(&mut cluster);
                cluster.signal(leader, "STOP");
                std::thread::sleep(millis(&mut rng, 500, 4000));
                cluster.signal(leader, "CONT");
            }
            "SIGTERM leader" => {
                let leader = live_leader(&mut cluster);
                cluster.signal(leader, "TERM");
                cluster.wait_exit(leader);
                cluster.start_supervisor();
            }
            _ => {
                let node = rng.usize(..3);
                cluster.zk.kill(node);
                std::thread::sleep(millis(&mut rng, 500, 3000));
                cluster.zk.restart(node);
                cluster.zk.wait_serving();
            }
        }
        *injected.entry(fault).or_default() += 1;
        wait_for(&format!("output after {fault}"), Duration::from_secs(60), || {
            (total() > before).then_some(())
        });
        recoveries.push(at.elapsed());
    }
    epochs.insert(cluster.status()["leader"]["epoch"].as_u64());
    let per_task: Vec<(usize, usize, usize)> = files
        .iter()
        .enumerate()
        .map(|(task, file)| {
            let lines = read_lines(file);
            let (lost, duplicated) = lost_and_duplicated(&lines, task);
            (lines.len(), lost, duplicated)
        })
        .collect();
    let (lost, duplicated): (usize, usize) = per_task.iter().fold((0, 0), |(l, d), t| (l + t.1, d + t.2));
    recoveries.sort();

    println!("\n| fault | injected |\n| --- | --- |");
    for (fault, n) in &injected {
        println!("| {fault} | {n} |");
    }
    println!("\n| measure | value |\n| --- | --- |");
    println!("| faults injected | {} |", recoveries.len());
    println!(
        "| failovers (leader epochs seen - 1) | {} |",
        epochs.len().saturating_sub(1)
    );
    println!("| fault to next output, median | {:?} |", median(&recoveries));
    println!(
        "| fault to next output, max | {:?} |",
        recoveries.last().copied().unwrap_or_default()
    );
    println!("| outputs checked | {} |", per_task.iter().map(|t| t.0).sum::<usize>());
    println!("| lost outputs | {lost} |");
    println!("| duplicated outputs | {duplicated} |");
    println!("\n| task | outputs | lost | duplicated |\n| --- | --- | --- | --- |");
    for (task, (n, lost, duplicated)) in per_task.iter().enumerate() {
        println!("| {task} | {n} | {lost} | {duplicated} |");
    }
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "the output is not exactly-once\n{}",
        cluster.logs()
    );
    crate::scale::assert_each_task_exactly_once(&files);
}
