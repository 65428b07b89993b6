//! The chaos soak (run by `scripts/chaos`, ignored in the normal suite): for
//! a given duration, keep killing, pausing and stopping supervisors and
//! ZooKeeper nodes at random, then check the counter's output against the
//! failure-free sequence and print what happened.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::{read_lines, wait_for, wait_for_lines, Cluster, ZooKeeper};

/// A pause of `from..to` milliseconds.
fn millis(rng: &mut fastrand::Rng, from: u64, to: u64) -> Duration {
    Duration::from_millis(rng.u64(from..to))
}

const FAULTS: [&str; 5] = [
    "kill -9 leader",
    "kill -9 follower",
    "SIGSTOP leader",
    "SIGTERM leader",
    "kill zookeeper node",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Lines that are missing from, and repeated in, the counter's output.
fn lost_and_duplicated(lines: &[String]) -> (usize, usize) {
    let ks: Vec<i64> = lines
        .iter()
        .filter_map(|l| l.parse::<i64>().ok())
        .map(|v| (v - 4950) / 10000)
        .collect();
    let distinct: std::collections::BTreeSet<i64> = ks.iter().copied().collect();
    let expected = ks.iter().max().map_or(0, |m| m + 1) as usize;
    (expected - distinct.len(), ks.len() - distinct.len())
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
    let out = cluster.deploy("counter", "counter", &[]);
    let mut injected: BTreeMap<&str, usize> = BTreeMap::new();
    let mut recoveries = Vec::new();
    let mut epochs = std::collections::BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        let seen = read_lines(&out).len();
        wait_for_lines(&out, seen, 5);
        epochs.insert(cluster.status()["leader"]["epoch"].as_u64());
        let fault = FAULTS[rng.usize(..FAULTS.len())];
        let before = read_lines(&out).len();
        let at = Instant::now();
        match fault {
            "kill -9 leader" => {
                let leader = cluster.leader_pid();
                cluster.signal(leader, "KILL");
                cluster.start_supervisor();
            }
            "kill -9 follower" => {
                let status = cluster.status();
                let followers: Vec<u32> = status["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["role"] == "follower")
                    .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
                    // A follower killed a moment ago stays listed until its session expires.
                    .filter(|pid| cluster.is_alive(*pid))
                    .collect();
                let Some(&pid) = followers.get(rng.usize(..followers.len().max(1))) else {
                    continue;
                };
                cluster.signal(pid, "KILL");
                cluster.start_supervisor();
            }
            "SIGSTOP leader" => {
                let leader = cluster.leader_pid();
                cluster.signal(leader, "STOP");
                std::thread::sleep(millis(&mut rng, 500, 4000));
                cluster.signal(leader, "CONT");
            }
            "SIGTERM leader" => {
                let leader = cluster.leader_pid();
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
            (read_lines(&out).len() > before).then_some(())
        });
        recoveries.push(at.elapsed());
    }
    epochs.insert(cluster.status()["leader"]["epoch"].as_u64());
    let lines = read_lines(&out);
    let (lost, duplicated) = lost_and_duplicated(&lines);
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
    println!("| outputs checked | {} |", lines.len());
    println!("| lost outputs | {lost} |");
    println!("| duplicated outputs | {duplicated} |");
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "the output is not exactly-once\n{}",
        cluster.logs()
    );
    crate::harness::assert_counter_sequence(&lines);
}
