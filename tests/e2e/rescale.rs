//! `weir rescale` against a real broker: a job that keeps its state per
//! Kafka partition (key-count) regrouped from 1 task to 3, down by one
//! and up by one again, with `kill -9`s between and during, every key's count carrying on
//! across each change with no gap and no duplicate; and the rescales that
//! cannot keep the state refused before the job stops.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{read_lines, wait_for, Cluster};
use crate::kafka_broker::{Input, Kafka};

const PARTITIONS: i32 = 4;
const KEYS: i64 = 10;
/// Records produced in each round.
const ROUND: i64 = 300;

/// Records `from..to`: record n has key `k{n % KEYS}`, and a key always
/// goes to the same partition, as Kafka's partitioner sends it.
fn records(from: i64, to: i64) -> impl Iterator<Item = Input> {
    (from..to).map(|n| Input {
        partition: ((n % KEYS) % PARTITIONS as i64) as i32,
        key: format!("k{}", n % KEYS),
        value: n.to_string(),
        timestamp: None,
    })
}

/// Waits until `files` hold `total` lines together, then checks that each
/// key's counts are 1, 2, ... up to how often it was produced, each once,
/// in order within each file.
fn assert_counted_once(files: &[PathBuf], total: i64) {
    // Not fewer, and (checked below) not more: no key counted twice.
    let files: Vec<Vec<String>> = wait_for(
        &format!("{total} counts in the output"),
        Duration::from_secs(90),
        || {
            let files: Vec<Vec<String>> = files.iter().map(|f| read_lines(f)).collect();
            (files.iter().map(Vec::len).sum::<usize>() as i64 >= total).then_some(files)
        },
    );
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (i, lines) in files.iter().enumerate() {
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for line in lines {
            let (key, count) = line.split_once(' ').unwrap_or_else(|| panic!("line {line:?}"));
            let count: u64 = count.parse().unwrap();
            let before = last.insert(key, count).unwrap_or(0);
            assert!(count > before, "file {i}: {key} {count} after {key} {before}");
            counts.entry(key.to_string()).or_default().push(count);
        }
    }
    assert_eq!(counts.len(), KEYS as usize, "{counts:?}");
    for (key, mut seen) in counts {
        let k: i64 = key[1..].parse().unwrap();
        let produced = (0..total).filter(|n| n % KEYS == k).count() as u64;
        seen.sort_unstable();
        assert_eq!(seen, (1..=produced).collect::<Vec<_>>(), "key {key}'s counts");
    }
}

fn wait_for_checkpoint(cluster: &Cluster, name: &str) {
    wait_for(&format!("a checkpoint of {name}"), Duration::from_secs(30), || {
        cluster.job(name)?["tasks"][0]["last_checkpoint"].as_object().map(drop)
    });
}

fn tasks(cluster: &Cluster, name: &str) -> usize {
    cluster.job(name).unwrap()["tasks"].as_array().unwrap().len()
}

#[test]
fn a_rescaled_job_keeps_each_keys_state_with_its_partition_exactly_once() {
    let kafka = Kafka::start();
    kafka.create_topic("keys", PARTITIONS);
    kafka.produce("keys", records(0, ROUND));
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    let source = format!("kafka:brokers={},topic=keys", kafka.brokers());
    let template = cluster.path("kc-{task}.out");
    let sink = format!("file:{}", template.display());
    cluster.deploy("key_count", "kc", &["--source", &source, "--sink", &sink]);
    let files: Vec<PathBuf> = (0..3).map(|i| cluster.path(&format!("kc-{i}.out"))).collect();
    assert_counted_once(&files, ROUND);
    wait_for_checkpoint(&cluster, "kc");

    let said = cluster.weir_ok(&["rescale", "kc", "3", "--wait", "60s"]);
    assert!(said.contains("in 3 tasks"), "{said}");
    assert_eq!(tasks(&cluster, "kc"), 3);
    kafka.produce("keys", records(ROUND, 2 * ROUND));
    assert_counted_once(&files, 2 * ROUND);

    let leader = cluster.leader_pid();
    cluster.signal(leader, "KILL");
    cluster.start_supervisor();
    kafka.produce("keys", records(2 * ROUND, 3 * ROUND));
    cluster.leader_pid_after(Some(leader));
    assert_counted_once(&files, 3 * ROUND);

    // Down to 2, with the supervisor running the new task 0 killed while
    // the rescale is on trial: it either commits, or rolls back to 3 tasks
    // from the same savepoint; either way no count is lost or doubled.
    let out = std::thread::scope(|s| {
        let rescale = s.spawn(|| cluster.weir(&["rescale", "kc", "2", "--wait", "60s"]));
        let worker = wait_for("the 2-task deployment to run", Duration::from_secs(60), || {
            let job = cluster.job("kc")?;
            let task = &job["tasks"][0];
            (job["parallelism"] == 2 && task["state"] == "RUNNING").then_some(())?;
            cluster.pid_of(task["worker"].as_str()?)
        });
        crate::harness::send_signal(worker, "KILL");
        rescale.join().unwrap()
    });
    cluster.start_supervisor();
    let said = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let now = if out.status.success() { 2 } else { 3 };
    assert!(
        (now == 2 && said.contains("in 2 tasks")) || stderr.contains("rolled back to module"),
        "{said}{stderr}"
    );
    eprintln!(
        "the rescale under a kill -9 {}",
        if now == 2 { "committed" } else { "rolled back" }
    );
    kafka.produce("keys", records(3 * ROUND, 4 * ROUND));
    assert_counted_once(&files, 4 * ROUND);
    assert_eq!(tasks(&cluster, "kc"), now);
    // And up by one: the new last task carries its old file on from its end.
    let last = if now == 3 { "2" } else { "3" };
    let said = cluster.weir_ok(&["rescale", "kc", last, "--wait", "60s"]);
    assert!(said.contains("tasks with its state"), "{said}");
    kafka.produce("keys", records(4 * ROUND, 5 * ROUND));
    assert_counted_once(&files, 5 * ROUND);
    // Nothing more comes after two more checkpoints of every task.
    let checkpoints = || -> Vec<u64> {
        let job = cluster.job("kc").unwrap();
        let tasks = job["tasks"].as_array().unwrap().clone();
        tasks
            .iter()
            .map(|t| t["last_checkpoint"]["id"].as_u64().unwrap_or(0))
            .collect()
    };
    let before = checkpoints();
    wait_for("two more checkpoints of every task", Duration::from_secs(30), || {
        checkpoints()
            .iter()
            .zip(&before)
            .all(|(now, then)| *now >= then + 2)
            .then_some(())
    });
    assert_counted_once(&files, 5 * ROUND);

    let refused = |args: &[&str], expected: &str| {
        let out = cluster.weir(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{args:?}: {stderr}");
    };
    refused(&["rescale", "kc", last], &format!("runs {last} tasks already"));
    refused(&["rescale", "kc", "0"], "give 1 to 10000 tasks");
    // wordcount keeps one state per task: it cannot tell whose a count is.
    let words = format!("file:{}", cluster.path("words-{task}.out").display());
    cluster.deploy("wordcount", "per-task", &["--source", &source, "--sink", &words]);
    wait_for_checkpoint(&cluster, "per-task");
    refused(&["rescale", "per-task", "2"], "its state is kept per task");
    // Nothing was stopped by the refusals.
    for name in ["kc", "per-task"] {
        assert_eq!(cluster.job(name).unwrap()["state"], "RUNNING");
    }

    // A deploy from a savepoint with another count regroups it too.
    let savepoint = crate::savepoint::cancel_with_savepoint(&cluster, "kc");
    cluster.deploy(
        "key_count",
        "kc",
        &[
            "--source",
            &source,
            "--sink",
            &sink,
            "--from-savepoint",
            &savepoint,
            "--parallelism",
            "1",
        ],
    );
    kafka.produce("keys", records(5 * ROUND, 6 * ROUND));
    assert_counted_once(&files, 6 * ROUND);
    assert_eq!(tasks(&cluster, "kc"), 1);
}
