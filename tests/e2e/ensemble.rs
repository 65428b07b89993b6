//! ZooKeeper faults: one node down costs no failover; a lost quorum pauses
//! the leader and loses nothing; a restarted ensemble recovers every job; a
//! stalled server costs no restart.

use std::time::Duration;

use crate::harness::{assert_counter_sequence, read_lines, send_signal, wait_for, wait_for_lines, Cluster, ZooKeeper};

#[test]
fn jobs_survive_node_quorum_and_ensemble_faults() {
    let mut cluster = Cluster::with(ZooKeeper::ensemble(3), "2s");
    cluster.start_supervisor();
    cluster.start_supervisor();
    let out = cluster.deploy("counter", "counter", &[]);
    let mut seen = wait_for_lines(&out, 0, 20);
    let leader = cluster.leader_pid();
    let epoch = cluster.status()["leader"]["epoch"].clone();

    // Each node in turn, so the one the leader talks to is among them.
    for n in 0..3 {
        cluster.zk.kill(n);
        seen = wait_for_lines(&out, seen, 10);
        cluster.zk.restart(n);
        cluster.zk.wait_serving();
    }
    let status = cluster.status();
    assert_eq!(
        status["leader"]["pid"], leader,
        "a single ZooKeeper node down caused a failover: {status}"
    );
    assert_eq!(status["leader"]["epoch"], epoch, "{status}");

    cluster.zk.kill(1);
    cluster.zk.kill(2);
    // Without a quorum no checkpoint can commit, so no output can be published.
    let stalled = wait_for("the output to stall without a quorum", Duration::from_secs(30), || {
        let before = read_lines(&out).len();
        std::thread::sleep(Duration::from_secs(1));
        (read_lines(&out).len() == before).then_some(before)
    });
    // Hold the outage past the session timeout, so sessions expire client-side.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(read_lines(&out).len(), stalled, "output published without a quorum");
    cluster.zk.restart(1);
    cluster.zk.restart(2);
    cluster.zk.wait_serving();
    seen = wait_for_lines(&out, stalled.max(seen), 20);

    for n in 0..3 {
        cluster.zk.kill(n);
    }
    for n in 0..3 {
        cluster.zk.restart(n);
    }
    cluster.zk.wait_serving();
    let seen = wait_for_lines(&out, seen, 20);
    assert_counter_sequence(&read_lines(&out)[..seen]);
    assert_eq!(cluster.job("counter").unwrap()["state"], "RUNNING");
}

/// ZooKeeper stops answering for less than the session timeout, with a
/// pointer write in flight (checkpoints every 200 ms). The leader pauses,
/// keeps its lead and resumes; the interrupted attempt is not the job's
/// fault, so it spends no restart: a job deployed with `--restart none`
/// carries on.
#[test]
fn a_zookeeper_stall_shorter_than_the_session_spends_no_restart() {
    let mut cluster = Cluster::with_session_timeout("4s");
    let leader = cluster.start_supervisor();
    let out = cluster.deploy("counter", "counter", &["--restart", "none"]);
    let seen = wait_for_lines(&out, 0, 20);
    let epoch = cluster.status()["leader"]["epoch"].clone();

    send_signal(cluster.zk.pid(0), "STOP");
    wait_for("the leader to pause its jobs", Duration::from_secs(10), || {
        cluster.log_of(leader).contains("pausing every task").then_some(())
    });
    send_signal(cluster.zk.pid(0), "CONT");

    let seen = wait_for_lines(&out, seen, 20);
    assert_counter_sequence(&read_lines(&out)[..seen]);
    let job = cluster.job("counter").unwrap();
    assert_eq!(
        (job["state"].as_str(), job["restarts"].as_u64()),
        (Some("RUNNING"), Some(0)),
        "{job}"
    );
    assert_eq!(
        cluster.status()["leader"]["epoch"],
        epoch,
        "the stall caused a failover"
    );
}
