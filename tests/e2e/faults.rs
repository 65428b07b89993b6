//! Guest faults: a job that traps is restarted from its checkpoint; the
//! supervisor and the other jobs carry on.

use std::time::Duration;

use crate::harness::{job_wasm, read_lines, wait_for, Cluster};

#[test]
fn trapping_job_restarts_from_its_checkpoint_while_others_carry_on() {
    let mut cluster = Cluster::new();
    let supervisor = cluster.start_supervisor();
    let good = cluster.path("good.out");
    let bad = cluster.path("bad.out");
    let counter = job_wasm("counter");
    let faulty = job_wasm("faulty");
    let common = [
        "--source",
        "sequence:rate=2000",
        "--checkpoint-interval",
        "200ms",
    ];
    let good_sink = format!("file:{}", good.display());
    let bad_sink = format!("file:{}", bad.display());
    cluster.weir_ok(
        &[
            &[
                "deploy",
                counter.to_str().unwrap(),
                "--name",
                "good",
                "--sink",
                &good_sink,
            ][..],
            &common,
        ]
        .concat(),
    );
    cluster.weir_ok(
        &[
            &[
                "deploy",
                faulty.to_str().unwrap(),
                "--name",
                "bad",
                "--sink",
                &bad_sink,
                "--config",
                "trap_on=1500",
            ][..],
            &common,
        ]
        .concat(),
    );

    let job = wait_for(
        "the trapping job to restart twice",
        Duration::from_secs(60),
        || {
            cluster
                .job("bad")
                .filter(|j| j["restarts"].as_u64() >= Some(2))
        },
    );
    assert!(
        job["error"]
            .as_str()
            .unwrap_or_default()
            .contains("trapped"),
        "{job}"
    );

    let before = read_lines(&good).len();
    wait_for(
        "the good job to keep producing",
        Duration::from_secs(30),
        || (read_lines(&good).len() > before + 5).then_some(()),
    );
    assert!(
        cluster.is_alive(supervisor),
        "the supervisor died\n{}",
        cluster.logs()
    );

    // Every restart resumed from a checkpoint: the echoed numbers are 0, 1, 2, ...
    // with none repeated, and none at or past the trap.
    let echoed: Vec<i64> = read_lines(&bad)
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(
        !echoed.is_empty(),
        "the faulty job committed nothing before its trap"
    );
    assert_eq!(echoed, (0..echoed.len() as i64).collect::<Vec<_>>());
    assert!(echoed.len() <= 1500);
}
