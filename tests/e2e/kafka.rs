//! The Kafka source against a real broker (tansu) and a real librdkafka
//! producer: every partition read, each record once, across `kill -9` of
//! the leader.

use std::time::Duration;

use crate::harness::{read_lines, wait_for, Cluster};
use crate::kafka_broker::{Input, Kafka};

pub const PARTITIONS: i32 = 3;

/// Numbers `from..to`, number n to partition n % PARTITIONS, keyed by
/// itself, at `timestamp(n)`.
pub fn numbers(from: i64, to: i64, timestamp: impl Fn(i64) -> Option<i64>) -> impl Iterator<Item = Input> {
    (from..to).map(move |n| Input {
        partition: (n % PARTITIONS as i64) as i32,
        key: format!("k{n}"),
        value: n.to_string(),
        timestamp: timestamp(n),
    })
}

/// The numbers `0..count`, each once, in order within each partition.
fn assert_each_once_in_partition_order(lines: &[String], count: i64) {
    let output: Vec<i64> = lines.iter().map(|l| l.parse().unwrap()).collect();
    let mut sorted = output.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..count).collect::<Vec<_>>(), "each record once, none lost");
    for p in 0..PARTITIONS as i64 {
        let partition: Vec<i64> = output.iter().copied().filter(|n| n % PARTITIONS as i64 == p).collect();
        assert!(partition.is_sorted(), "partition {p} out of order");
    }
}

#[test]
fn a_kafka_source_reads_every_partition_once_across_leader_kills() {
    let kafka = Kafka::start();
    kafka.create_topic("numbers", PARTITIONS);
    kafka.produce("numbers", numbers(0, 3000, |_| None));
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    // faulty with no faults configured passes every number through.
    let source = format!("kafka:brokers={},topic=numbers,group=monitor", kafka.brokers());
    let out = cluster.deploy("faulty", "from-kafka", &["--source", &source]);
    let mut seen = 0;
    for round in 0..2 {
        seen = wait_for(
            &format!("output to pass {} lines (round {round})", seen + 100),
            Duration::from_secs(60),
            || {
                let n = read_lines(&out).len();
                (n >= seen + 100).then_some(n)
            },
        );
        cluster.replace_runner("from-kafka");
        // Records produced while the job runs are read too.
        kafka.produce("numbers", numbers(3000 + 1000 * round, 4000 + 1000 * round, |_| None));
    }
    let lines = wait_for("every record in the output", Duration::from_secs(60), || {
        let lines = read_lines(&out);
        (lines.len() >= 5000).then_some(lines)
    });
    assert_each_once_in_partition_order(&lines, 5000);
    let job = cluster.job("from-kafka").unwrap();
    assert_eq!(job["state"], "RUNNING", "{job}");
    // The named group gets each committed checkpoint's offsets, and the lag drops to nothing.
    let ends: Vec<i64> = (0..PARTITIONS as i64)
        .map(|p| (0..5000).filter(|n| n % PARTITIONS as i64 == p).count() as i64)
        .collect();
    wait_for("the group's offsets to reach the ends", Duration::from_secs(30), || {
        (kafka.committed("monitor", "numbers", PARTITIONS) == ends).then_some(())
    });
    let leader = cluster.runner_pid("from-kafka");
    wait_for(
        "the lag metric to show every partition read",
        Duration::from_secs(30),
        || {
            let metrics = cluster.metrics(leader);
            (0..PARTITIONS)
                .all(|p| {
                    let series = format!("weir_source_lag_records{{job=\"from-kafka\",partition=\"{p}\"}}");
                    crate::harness::metric_in(&metrics, &series) == Some(0.0)
                })
                .then_some(())
        },
    );
}

#[test]
fn a_missing_topic_is_refused_at_deploy_and_unreachable_brokers_are_waited_for() {
    let kafka = Kafka::start();
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    let faulty = crate::harness::job_wasm("faulty");
    let faulty = faulty.to_str().unwrap();
    let absent = format!("kafka:brokers={},topic=absent", kafka.brokers());
    for (flag, what) in [("--source", "kafka source"), ("--sink", "kafka sink")] {
        crate::deploy::assert_refused(
            &cluster,
            &["deploy", faulty, "--name", "no-topic", flag, &absent],
            &format!("{what}: Kafka topic absent does not exist on {}", kafka.brokers()),
        );
    }
    // Brokers that do not answer at deploy: noted, and the job waits for them.
    let away = format!("kafka:brokers=127.0.0.1:{},topic=later", crate::harness::free_port());
    let out = cluster.weir(&["deploy", faulty, "--name", "away", "--source", &away]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("do not answer now"),
        "{out:?}"
    );
}

/// Deploys faulty (a pass-through) from a sequence into topic `out`.
fn deploy_into_kafka(cluster: &Cluster, kafka: &Kafka, name: &str) {
    let sink = format!("kafka:brokers={},topic=out", kafka.brokers());
    cluster.deploy("faulty", name, &["--sink", &sink, "--source", "sequence:rate=2000"]);
}

#[test]
fn a_kafka_sink_writes_each_record_once_through_a_handoff_and_a_cancel() {
    let kafka = Kafka::start();
    kafka.create_topic("out", 1);
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    cluster.start_supervisor();
    deploy_into_kafka(&cluster, &kafka, "to-kafka");
    kafka.read_committed("out", 300);
    let runner = cluster.runner_pid("to-kafka");
    cluster.signal(runner, "TERM");
    wait_for("the job to move", Duration::from_secs(30), || {
        (cluster.runner_pid("to-kafka") != runner).then_some(())
    });
    // Well past what the old runner wrote (2000 records a second).
    kafka.read_committed("out", 8000);
    cluster.weir_ok(&["cancel", "to-kafka", "--wait", "15s"]);
    // No abort on these paths: a read_committed reader sees exactly the sequence.
    let records = kafka.read_committed("out", 0);
    let values: Vec<i64> = records.iter().map(|r| r.value.parse().unwrap()).collect();
    assert_eq!(values, (0..values.len() as i64).collect::<Vec<_>>());
    let writers: std::collections::BTreeSet<&str> = records.iter().map(|r| r.headers["weir-writer"].as_str()).collect();
    assert_eq!(writers.len(), 2, "the handoff moved the writing to another supervisor");
}

#[test]
fn a_kafka_sink_under_kill_9_has_every_record_and_extra_copies_only_from_aborted_transactions() {
    let kafka = Kafka::start();
    kafka.create_topic("out", 1);
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    deploy_into_kafka(&cluster, &kafka, "to-kafka");
    let mut seen = 0;
    for _ in 0..2 {
        seen = kafka.read_committed("out", seen + 300).len();
        cluster.replace_runner("to-kafka");
    }
    kafka.read_committed("out", seen + 300);
    cluster.weir_ok(&["cancel", "to-kafka", "--wait", "15s"]);
    let records = kafka.read_committed("out", 0);
    // tansu shows aborted transactions' records to read_committed readers
    // (Kafka does not): tell them apart by the headers.
    let last_transaction = |writer: &str| {
        records
            .iter()
            .filter(|r| r.headers["weir-writer"] == writer)
            .map(|r| r.headers["weir-transaction"].parse::<u64>().unwrap())
            .max()
            .unwrap()
    };
    let newest_writer = records.last().unwrap().headers["weir-writer"].clone();
    let mut by_position: std::collections::BTreeMap<u64, Vec<&crate::kafka_broker::Consumed>> = Default::default();
    for r in &records {
        by_position
            .entry(r.headers["weir-position"].parse().unwrap())
            .or_default()
            .push(r);
    }
    let values: Vec<i64> = by_position
        .values()
        .map(|copies| copies[0].value.parse().unwrap())
        .collect();
    assert_eq!(
        values,
        (0..values.len() as i64).collect::<Vec<_>>(),
        "every record at least once, in order"
    );
    for (position, copies) in &by_position {
        assert!(
            copies.iter().all(|c| c.value == copies[0].value),
            "copies of {position} differ"
        );
        let aborted = copies
            .iter()
            .filter(|c| {
                let writer = &c.headers["weir-writer"];
                *writer != newest_writer
                    && c.headers["weir-transaction"].parse::<u64>().unwrap() == last_transaction(writer)
            })
            .count();
        assert!(
            aborted >= copies.len() - 1,
            "position {position} has {} copies, only {aborted} from a killed writer's last transaction",
            copies.len()
        );
    }
}

#[test]
fn a_broker_killed_and_restarted_mid_stream_loses_and_duplicates_nothing() {
    // tansu keeps its topics in S3 (s3s-fs), so they outlive the broker.
    let s3 = crate::s3::S3Server::start();
    let mut env = s3.env();
    env.push(("AWS_ENDPOINT", env[0].1.clone()));
    let mut kafka = Kafka::start_on(&format!("s3://{}/", crate::s3::BUCKET), env);
    kafka.create_topic("numbers", PARTITIONS);
    kafka.produce("numbers", numbers(0, 2000, |_| None));
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    let source = format!("kafka:brokers={},topic=numbers", kafka.brokers());
    let out = cluster.deploy("faulty", "from-kafka", &["--source", &source]);
    wait_for("the file to pass 500 lines", Duration::from_secs(60), || {
        (read_lines(&out).len() >= 500).then_some(())
    });
    kafka.kill_and_restart(|| {});
    kafka.produce("numbers", numbers(2000, 3000, |_| None));
    wait_for("every record in the file", Duration::from_secs(120), || {
        (read_lines(&out).len() >= 3000).then_some(())
    });
    // Two more checkpoints: a copy the restart would have caused has landed by then.
    let leader = cluster.runner_pid("from-kafka");
    let committed = || {
        let series = "weir_checkpoints_committed_total{job=\"from-kafka\"}";
        crate::harness::metric_in(&cluster.metrics(leader), series).unwrap_or_default()
    };
    let now = committed();
    wait_for("two more checkpoints", Duration::from_secs(30), || {
        (committed() >= now + 2.0).then_some(())
    });
    assert_each_once_in_partition_order(&read_lines(&out), 3000);
    assert_eq!(cluster.job("from-kafka").unwrap()["state"], "RUNNING");
}
