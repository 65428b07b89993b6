//! Leader failover: kill -9 of the leader, repeatedly, while the counter runs.

use std::time::Duration;

use crate::harness::{assert_counter_sequence, read_lines, wait_for, Cluster};

#[test]
fn counter_output_is_exactly_once_across_repeated_leader_kills() {
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    let out = cluster.deploy("counter", "counter", &[]);

    let mut seen = 0;
    for round in 0..3 {
        seen = wait_for(
            &format!("output to grow past {} lines (round {round})", seen + 20),
            Duration::from_secs(60),
            || {
                let n = read_lines(&out).len();
                (n >= seen + 20).then_some(n)
            },
        );
        let leader = cluster.leader_pid();
        cluster.signal(leader, "KILL");
        cluster.start_supervisor();
        cluster.leader_pid_after(Some(leader));
    }
    let lines = wait_for("output after the last failover", Duration::from_secs(60), || {
        let lines = read_lines(&out);
        (lines.len() >= seen + 20).then_some(lines)
    });
    assert_counter_sequence(&lines);
    let job = cluster.job("counter").expect("counter is listed");
    assert_eq!(job["state"], "RUNNING", "{job}");
    assert!(
        job["last_checkpoint"]["epoch"].as_u64().unwrap() >= 4,
        "three kills make at least epoch 4: {job}"
    );
}
