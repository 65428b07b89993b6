//! The fully checkable exactly-once pipeline: a Kafka topic -> the
//! event-time counter -> a PostgreSQL table, across `kill -9` of the
//! leader. The topic's partitions each carry part of the stream and one
//! stays silent, so the windows fire only on the per-partition watermark
//! with the silent partition left out as idle (3 s: long enough that a
//! partition slow to fetch after a restore is not taken for idle).

use std::time::Duration;

use crate::harness::{wait_for, Cluster};
use crate::kafka::{numbers, PARTITIONS};
use crate::kafka_broker::Kafka;
use crate::postgres::{assert_each_window_once, rows, windows, WINDOWS};
use crate::postgres_server::Postgres;

/// The first window's start: a whole second, in 2023.
const START: i64 = 1_700_000_000_000;

#[test]
fn kafka_to_postgres_holds_each_window_once_across_leader_kills() {
    let kafka = Kafka::start();
    // One partition more than the numbers use: it never brings a record.
    kafka.create_topic("readings", PARTITIONS + 1);
    let at = |n: i64| Some(START + 10 * n);
    kafka.produce("readings", numbers(0, 3000, at));
    let pg = Postgres::start();
    pg.sql(WINDOWS);
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    let source = format!("kafka:brokers={},topic=readings", kafka.brokers());
    let sink = format!("postgres:url={},table=windows", pg.url());
    cluster.weir_ok(&[
        "deploy",
        crate::harness::job_wasm("event_counter").to_str().unwrap(),
        "--name",
        "pipeline",
        "--source",
        &source,
        "--sink",
        &sink,
        "--watermark",
        "max-delay=0s,idle=3s",
        "--config",
        "format=json",
        "--checkpoint-interval",
        "200ms",
    ]);
    let mut seen = 0;
    let mut produced = 3000;
    for round in 0..3 {
        seen = wait_for(
            &format!("the table to pass {} rows (round {round})", seen + 4),
            Duration::from_secs(60),
            || {
                let n = rows(&pg);
                (n >= seen + 4).then_some(n)
            },
        );
        cluster.replace_runner("pipeline");
        kafka.produce("readings", numbers(produced, produced + 1000, at));
        produced += 1000;
    }
    // Every window but the last, which no later record closes.
    let expected = 2 * (produced as usize / 100 - 1);
    let table = wait_for("every closed window in the table", Duration::from_secs(60), || {
        let table = windows(&pg);
        (table.len() >= expected).then_some(table)
    });
    assert_eq!(table.len(), expected, "{table:?}");
    assert_each_window_once(&table, START);
    assert_eq!(cluster.job("pipeline").unwrap()["state"], "RUNNING");
}
