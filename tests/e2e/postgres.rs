//! The PostgreSQL sink against a real server: each output row once across
//! `kill -9` of the leader and of the database, and bad tables refused.

use std::time::Duration;

use crate::deploy::assert_refused;
use crate::harness::{job_wasm, metric_in, wait_for, Cluster};
use crate::postgres_server::Postgres;

pub const WINDOWS: &str =
    "CREATE TABLE windows (window_start bigint NOT NULL, parity text NOT NULL, sum bigint NOT NULL)";

/// Deploys the event-time counter writing its windows as rows of `table`.
fn deploy_windows(cluster: &Cluster, pg: &Postgres, name: &str, table: &str, extra: &[&str]) {
    let sink = format!("postgres:url={},table={table}", pg.url());
    let mut args = vec![
        "--sink",
        &sink,
        "--source",
        "sequence:rate=2000,timestamp=every:10ms",
        "--watermark",
        "max-delay=0s",
        "--config",
        "format=json",
    ];
    args.extend_from_slice(extra);
    cluster.deploy("event_counter", name, &args);
}

pub fn rows(pg: &Postgres) -> usize {
    pg.sql("SELECT count(*) FROM windows")[0].parse().unwrap()
}

/// Table `windows`, a `window_start|parity|sum` line per row, in order.
pub fn windows(pg: &Postgres) -> Vec<String> {
    pg.sql("SELECT window_start, parity, sum FROM windows ORDER BY window_start, parity")
}

/// Window k of 1 s from `start` holds the numbers 100k..100k+99: every
/// window's two rows (even, odd) once, none missing, none extra.
pub fn assert_each_window_once(table: &[String], start: i64) {
    for (i, row) in table.iter().enumerate() {
        let (k, odd) = (i as i64 / 2, i % 2 == 1);
        let sum: i64 = (100 * k..100 * k + 100).filter(|n| (n % 2 != 0) == odd).sum();
        let parity = if odd { "odd" } else { "even" };
        assert_eq!(
            row,
            &format!("{}|{parity}|{sum}", start + k * 1000),
            "row {i} of {table:?}"
        );
    }
}

#[test]
fn a_table_holds_each_row_once_across_kills_of_the_leader_and_the_database() {
    let pg = Postgres::start();
    pg.sql(WINDOWS);
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    deploy_windows(&cluster, &pg, "windows", "windows", &[]);
    let mut seen = 0;
    for round in 0..3 {
        seen = wait_for(
            &format!("the table to pass {} rows (round {round})", seen + 10),
            Duration::from_secs(60),
            || {
                let n = rows(&pg);
                (n >= seen + 10).then_some(n)
            },
        );
        if round == 1 {
            // Mid-stream, between a checkpoint's pointer and its rows or not.
            pg.kill();
            // Down until a checkpoint's publish is seen waiting for it.
            let runner = cluster.runner_pid("windows");
            wait_for(
                "the sink-wait metric to show the publish waiting",
                Duration::from_secs(30),
                || {
                    let waited = metric_in(&cluster.metrics(runner), "weir_sink_wait_ms{job=\"windows\"}");
                    waited.filter(|ms| *ms > 0.0)
                },
            );
            pg.start_again();
        } else {
            cluster.replace_runner("windows");
        }
    }
    let n = wait_for("rows after the last kill", Duration::from_secs(60), || {
        let n = rows(&pg);
        (n >= seen + 10).then_some(n)
    });
    let table = windows(&pg);
    assert!(table.len() >= n, "the job runs on: the table only grows");
    assert_each_window_once(&table, 0);
    let progress = pg.sql("SELECT job FROM weir_progress");
    assert_eq!(progress, ["windows"], "one progress row for the one deployment");
    assert_eq!(cluster.job("windows").unwrap()["state"], "RUNNING");
    assert!(
        cluster.logs().contains("checkpoint output waits for PostgreSQL"),
        "the database's restart paused the checkpoints, with a warning"
    );
}

#[test]
fn an_upsert_keeps_the_newest_row_per_key() {
    let pg = Postgres::start();
    pg.sql("CREATE TABLE latest (parity text PRIMARY KEY, window_start bigint, sum bigint)");
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    let sink = "mode=upsert,key=parity";
    deploy_windows(&cluster, &pg, "latest", &format!("latest,{sink}"), &[]);
    let newest = wait_for("windows past 3 s", Duration::from_secs(60), || {
        let rows = pg.sql("SELECT parity, window_start, sum FROM latest ORDER BY parity");
        let past = rows.len() == 2
            && rows
                .iter()
                .all(|r| r.split('|').nth(1).unwrap().parse::<i64>().unwrap() >= 3000);
        past.then_some(rows)
    });
    for row in newest {
        let [parity, start, sum] = row.split('|').collect::<Vec<_>>()[..] else {
            panic!("{row}")
        };
        let k: i64 = start.parse::<i64>().unwrap() / 1000;
        let expected: i64 = (100 * k..100 * k + 100)
            .filter(|n| (n % 2 != 0) == (parity == "odd"))
            .sum();
        assert_eq!(sum.parse::<i64>().unwrap(), expected, "{row}");
    }
}

#[test]
fn tables_that_do_not_fit_are_refused_at_deploy_or_fail_the_job_naming_the_column() {
    let pg = Postgres::start();
    pg.sql("CREATE TABLE narrow (window_start bigint, parity text)");
    pg.sql("CREATE TABLE unkeyed (parity text, window_start bigint, sum bigint)");
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    let counter = job_wasm("event_counter");
    let counter = counter.to_str().unwrap();
    let deploy = |sink: String| {
        ["deploy", counter, "--name", "bad", "--sink"]
            .map(str::to_string)
            .into_iter()
            .chain([sink])
    };
    for (sink, expected) in [
        (
            format!("postgres:url={},table=missing", pg.url()),
            "table missing does not exist",
        ),
        (
            format!("postgres:url={},table=unkeyed,mode=upsert,key=parity", pg.url()),
            "has no unique index on (parity)",
        ),
        (
            format!("postgres:url={},table=unkeyed,mode=upsert,key=id", pg.url()),
            "key column id is not a column of table unkeyed",
        ),
        (
            format!("postgres:url={},table=narrow", pg.url().replace("postgres@", "nobody@")),
            "role \"nobody\" does not exist",
        ),
    ] {
        let args: Vec<String> = deploy(sink).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_refused(&cluster, &args, expected);
    }
    // A record with a field the table lacks: a job error naming the column.
    deploy_windows(&cluster, &pg, "narrow", "narrow", &["--restart", "none"]);
    let failed = cluster.wait_for_job_error("narrow", "FAILED", "field `sum` is not a column of table narrow");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("its columns: window_start, parity"),
        "{failed}"
    );
    assert_eq!(pg.sql("SELECT count(*) FROM narrow"), ["0"]);
    // With a dead-letter sink, such rows go there, each once, and the job runs on.
    let dead = cluster.path("narrow.dead");
    let route = format!("dead-letter:file:{}", dead.display());
    deploy_windows(&cluster, &pg, "narrow-dl", "narrow", &["--on-error", &route]);
    let letters = wait_for("dead letters of rows that do not fit", Duration::from_secs(60), || {
        let letters = crate::harness::read_lines(&dead);
        (letters.len() >= 4).then_some(letters)
    });
    for (i, letter) in letters.iter().enumerate() {
        let letter: serde_json::Value = serde_json::from_str(letter).unwrap();
        let row: serde_json::Value = serde_json::from_str(letter["value"].as_str().unwrap()).unwrap();
        assert_eq!(row["window_start"], (i as i64 / 2) * 1000, "{letter}");
        assert!(
            letter["reason"]
                .as_str()
                .unwrap()
                .contains("field `sum` is not a column of table narrow"),
            "{letter}"
        );
    }
    assert_eq!(cluster.job("narrow-dl").unwrap()["state"], "RUNNING");
}

#[test]
fn a_job_deployed_from_a_savepoint_carries_the_tables_progress_on() {
    let pg = Postgres::start();
    pg.sql(WINDOWS);
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    cluster.start_supervisor();
    deploy_windows(&cluster, &pg, "windows", "windows", &[]);
    let more_than = |seen: usize| {
        wait_for(
            &format!("the table to pass {seen} rows"),
            Duration::from_secs(60),
            || {
                let n = rows(&pg);
                (n > seen).then_some(n)
            },
        )
    };
    more_than(10);

    let savepoint = crate::savepoint::cancel_with_savepoint(&cluster, "windows");
    let stopped = rows(&pg);
    deploy_windows(&cluster, &pg, "windows", "windows", &["--from-savepoint", &savepoint]);
    more_than(stopped + 10);
    assert_each_window_once(&windows(&pg), 0);
    // The new deployment kept the old one's progress row rather than
    // starting one of its own (and writing the savepoint's rows again).
    let progress = pg.sql("SELECT job, deployment FROM weir_progress");
    assert_eq!(progress.len(), 1, "{progress:?}");
}
