//! ZooKeeper ensemble faults: one node down costs no failover; a lost quorum
//! pauses the leader and loses nothing; a restarted ensemble recovers every job.

use std::time::Duration;

use crate::harness::{assert_counter_sequence, read_lines, wait_for, wait_for_lines, Cluster, ZooKeeper};

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
