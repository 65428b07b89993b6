//! Network partitions: a supervisor in its own network namespace, cut off
//! from ZooKeeper by taking its link down while it runs, so its connection
//! falls silent (no reset) as in a real partition, then healed.

use crate::harness::{wait_for, Cluster, SESSION_TIMEOUT};
use crate::netns::Netns;
use crate::scale::{
    assert_each_task_exactly_once, deploy_parallel, longest_gap, running, wait_for_growth, MAX_GAP, TASKS,
};
use crate::zookeeper::ZooKeeper;
use std::time::Duration;

/// The leader, partitioned away with its tasks: the tasks elsewhere never
/// stall, the cut-off supervisor's tasks move once its session expires,
/// a new leader takes over, and once the link is back the old one writes
/// nothing for what moved, joins again, and every task's output is still
/// exactly once.
#[test]
fn a_leader_cut_off_by_a_partition_loses_its_tasks_and_writes_nothing_once_healed() {
    let netns = Netns::new();
    let mut cluster = Cluster::with(ZooKeeper::start_at(&netns.host_ip), SESSION_TIMEOUT);
    let cut_off = cluster.start_supervisor_in(&netns.name);
    wait_for(
        "the supervisor in the namespace to lead",
        Duration::from_secs(30),
        || (cluster.leader_pid() == cut_off).then_some(()),
    );
    cluster.start_supervisor();
    cluster.start_supervisor();
    let files = deploy_parallel(&cluster);
    let workers = running(&cluster);
    let cut_off_id = cluster.status()["leader"]["id"].as_str().unwrap().to_string();
    let (moved, stayed): (Vec<usize>, Vec<usize>) = (0..TASKS as usize).partition(|&i| workers[i] == cut_off_id);
    assert!(
        !moved.is_empty() && !stayed.is_empty(),
        "the leader runs some tasks, not all: {workers:?}"
    );
    wait_for_growth(&files, &(0..TASKS as usize).collect::<Vec<_>>(), "every task's output");

    netns.cut();
    let gap = longest_gap(&files, &stayed, || {
        let now = cluster.task_workers("par");
        moved
            .iter()
            .all(|&i| now[i].as_deref().is_some_and(|w| w != cut_off_id))
    });
    assert!(gap < MAX_GAP, "a task away from the partition stalled for {gap:?}");
    assert_ne!(cluster.leader_pid(), cut_off, "another supervisor leads");
    wait_for_growth(&files, &moved, "the moved tasks to run on elsewhere");

    netns.heal();
    wait_for(
        "the healed supervisor to give its tasks up",
        Duration::from_secs(30),
        || {
            cluster
                .log_of(cut_off)
                .contains("joining again with a new session")
                .then_some(())
        },
    );
    wait_for("the healed supervisor to join again", Duration::from_secs(30), || {
        let status = cluster.status();
        let replicas = status["replicas"].as_array()?;
        replicas.iter().any(|r| r["id"] == cut_off_id.as_str()).then_some(())
    });
    wait_for_growth(
        &files,
        &(0..TASKS as usize).collect::<Vec<_>>(),
        "more output after the heal",
    );
    assert_each_task_exactly_once(&files);
}
