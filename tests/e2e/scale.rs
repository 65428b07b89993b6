//! Scale-out: a job's tasks spread over every supervisor, the leader only
//! assigning them; a worker's death moves its tasks alone, and the
//! leader's death moves nothing but the leader's own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::{metric_in, read_lines, wait_for, Cluster};

/// Tasks of the parallel job.
pub const TASKS: u32 = 6;

/// A gap in a surviving task's output longer than this would mean it
/// paused for the dead supervisor's session timeout (2 s, expired at 2.8 s).
pub const MAX_GAP: Duration = Duration::from_millis(1500);

/// Deploys the counter with a window of one (each number its own line) as
/// `TASKS` tasks, each writing `par-<task>.out`; returns the files.
pub fn deploy_parallel(cluster: &Cluster) -> Vec<PathBuf> {
    let template = cluster.path("par-{task}.out");
    cluster.deploy(
        "counter",
        "par",
        &[
            "--parallelism",
            &TASKS.to_string(),
            "--config",
            "window=1",
            "--source",
            "sequence:rate=600",
            "--sink",
            &format!("file:{}", template.display()),
        ],
    );
    (0..TASKS).map(|i| cluster.path(&format!("par-{i}.out"))).collect()
}

/// Task `i` of `n` (one file each) emits `i, i+n, ...`: each file holds
/// exactly a prefix of its task's share, so together they are the
/// failure-free sequence, each number once.
pub fn assert_each_task_exactly_once(files: &[PathBuf]) {
    for (i, file) in files.iter().enumerate() {
        for (k, line) in read_lines(file).iter().enumerate() {
            let expected = (i + k * files.len()) as i64;
            assert_eq!(
                line.parse::<i64>().ok(),
                Some(expected),
                "line {k} of task {i}'s {file:?}"
            );
        }
    }
}

/// Waits until every task runs, and returns the supervisor of each.
pub fn running(cluster: &Cluster) -> Vec<String> {
    wait_for("every task to run", Duration::from_secs(60), || {
        let job = cluster.job("par")?;
        let tasks = job["tasks"].as_array()?.clone();
        let all = tasks.len() == TASKS as usize && tasks.iter().all(|t| t["state"] == "RUNNING");
        all.then(|| {
            tasks
                .iter()
                .map(|t| t["worker"].as_str().unwrap().to_string())
                .collect()
        })
    })
}

/// Watches the files of `tasks` while `until` is false, and returns the
/// longest any of them went without growing.
pub fn longest_gap(files: &[PathBuf], tasks: &[usize], mut until: impl FnMut() -> bool) -> Duration {
    let mut last: BTreeMap<usize, (usize, Instant)> = tasks
        .iter()
        .map(|&i| (i, (read_lines(&files[i]).len(), Instant::now())))
        .collect();
    let mut longest = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !until() {
        assert!(Instant::now() < deadline, "gave up waiting");
        std::thread::sleep(Duration::from_millis(50));
        for (&i, (lines, at)) in &mut last {
            let now = read_lines(&files[i]).len();
            if now > *lines {
                (*lines, *at) = (now, Instant::now());
            }
            longest = longest.max(at.elapsed());
        }
    }
    longest
}

#[test]
fn tasks_spread_over_every_worker_and_only_a_dead_workers_tasks_move() {
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    let files = deploy_parallel(&cluster);
    let workers = running(&cluster);
    let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
    for w in &workers {
        *per_worker.entry(w).or_default() += 1;
    }
    assert_eq!(
        per_worker.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{workers:?}"
    );
    let status = cluster.status();
    for replica in status["replicas"].as_array().unwrap() {
        assert_eq!(replica["tasks"], 2, "{status}");
    }
    wait_for("every task's output", Duration::from_secs(30), || {
        files.iter().all(|f| read_lines(f).len() >= 10).then_some(())
    });

    // kill -9 of a worker that does not lead: its tasks move once its
    // session expires; the others never stop.
    let leader = cluster.leader_pid();
    let leader_id = status["leader"]["id"].as_str().unwrap().to_string();
    let victim = workers.iter().find(|w| **w != leader_id).unwrap().clone();
    kill_and_watch(&mut cluster, &files, &victim);
    // kill -9 of the leader: the tasks elsewhere keep committing; only
    // the leader's own move.
    assert_eq!(cluster.leader_pid(), leader);
    kill_and_watch(&mut cluster, &files, &leader_id);
    assert_each_task_exactly_once(&files);
}

/// `kill -9` of supervisor `victim`: its tasks move once its session
/// expires and resume there, while every other task's output goes on
/// growing and none of them moves.
fn kill_and_watch(cluster: &mut Cluster, files: &[PathBuf], victim: &str) {
    let workers = running(cluster);
    let (moved, stayed): (Vec<usize>, Vec<usize>) = (0..TASKS as usize).partition(|&i| workers[i] == victim);
    let pid = cluster.pid_of(victim).unwrap();
    cluster.signal(pid, "KILL");
    let gap = longest_gap(files, &stayed, || {
        let now = cluster.task_workers("par");
        moved.iter().all(|&i| now[i].as_deref().is_some_and(|w| w != victim))
    });
    assert!(gap < MAX_GAP, "a surviving task paused {gap:?} while {victim} died");
    let after = running(cluster);
    for &i in &stayed {
        assert_eq!(after[i], workers[i], "task {i} moved though its worker lives");
    }
    let grown: Vec<usize> = (0..TASKS as usize).map(|i| read_lines(&files[i]).len()).collect();
    wait_for("every task to carry on", Duration::from_secs(30), || {
        (0..TASKS as usize)
            .all(|i| read_lines(&files[i]).len() > grown[i] + 10)
            .then_some(())
    });
}

#[test]
fn a_worker_paused_past_its_session_writes_nothing_for_its_moved_tasks() {
    let mut cluster = Cluster::new();
    for _ in 0..2 {
        cluster.start_supervisor();
    }
    let files = deploy_parallel(&cluster);
    let workers = running(&cluster);
    let leader = cluster.leader_pid();
    let paused_id = workers
        .iter()
        .find(|w| cluster.pid_of(w) != Some(leader))
        .unwrap()
        .clone();
    let paused = cluster.pid_of(&paused_id).unwrap();
    let moved: Vec<usize> = (0..TASKS as usize).filter(|&i| workers[i] == paused_id).collect();
    assert!(!moved.is_empty(), "the paused worker has tasks: {workers:?}");
    cluster.signal(paused, "STOP");
    wait_for("its tasks to move", Duration::from_secs(30), || {
        let now = cluster.task_workers("par");
        moved
            .iter()
            .all(|&i| now[i].as_deref().is_some_and(|w| w != paused_id))
            .then_some(())
    });
    wait_for_growth(&files, &moved, "the moved tasks to run on");
    cluster.signal(paused, "CONT");
    // The woken worker finds its session expired: it stops its tasks
    // before they commit anything and joins again with a new session.
    wait_for("the woken worker to give its tasks up", Duration::from_secs(30), || {
        cluster
            .log_of(paused)
            .contains("joining again with a new session")
            .then_some(())
    });
    wait_for_growth(&files, &moved, "more output after the wake");
    assert_each_task_exactly_once(&files);
}

/// Waits (for `what`) until the file of each of `tasks` has grown by more
/// than 20 lines.
pub fn wait_for_growth(files: &[PathBuf], tasks: &[usize], what: &str) {
    let from: Vec<usize> = tasks.iter().map(|&i| read_lines(&files[i]).len()).collect();
    wait_for(what, Duration::from_secs(30), || {
        tasks
            .iter()
            .zip(&from)
            .all(|(&i, &n)| read_lines(&files[i]).len() > n + 20)
            .then_some(())
    });
}

/// How many tasks of the parallel job each supervisor runs, once every
/// task runs; `None` before. Asks once, waits for nothing.
fn counts(cluster: &Cluster) -> Option<BTreeMap<String, usize>> {
    let job = cluster.job("par")?;
    let tasks = job["tasks"].as_array()?.clone();
    let mut count = BTreeMap::new();
    for task in &tasks {
        if task["state"] != "RUNNING" {
            return None;
        }
        *count.entry(task["worker"].as_str()?.to_string()).or_default() += 1;
    }
    Some(count)
}

/// Like [`counts`], waiting until every task runs.
fn settled_counts(cluster: &Cluster) -> BTreeMap<String, usize> {
    wait_for("every task to run", Duration::from_secs(60), || counts(cluster))
}

#[test]
fn a_supervisor_that_joins_gets_tasks_by_handoff_and_drain_empties_one() {
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    let files = deploy_parallel(&cluster);
    running(&cluster);
    wait_for("every task's output", Duration::from_secs(30), || {
        files.iter().all(|f| read_lines(f).len() >= 10).then_some(())
    });
    let all: Vec<usize> = (0..TASKS as usize).collect();

    // A fourth joins: once it has been up for the cooldown, one task is
    // handed to it (6 over 4: 2, 2, 1, 1), and no task's output stalls.
    cluster.start_supervisor();
    let gap = longest_gap(&files, &all, || {
        counts(&cluster).is_some_and(|c| c.get("s3") == Some(&1))
    });
    assert!(
        gap < MAX_GAP,
        "a task's output stalled {gap:?} while a task was handed to the new supervisor"
    );
    let mut spread: Vec<usize> = settled_counts(&cluster).into_values().collect();
    spread.sort();
    assert_eq!(spread, [1, 1, 2, 2]);

    // Drain one: its tasks are handed off at once, no cooldown.
    let drained = settled_counts(&cluster).into_iter().find(|(_, n)| *n == 2).unwrap().0;
    let said = cluster.weir_ok(&["drain", &drained]);
    assert!(said.contains(&format!("draining supervisor `{drained}`")), "{said}");
    let gap = longest_gap(&files, &all, || {
        counts(&cluster).is_some_and(|c| !c.contains_key(&drained))
    });
    assert!(
        gap < MAX_GAP,
        "a task's output stalled {gap:?} while {drained} was drained"
    );
    let status = cluster.status();
    let replica = status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == drained.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (replica["tasks"].as_u64(), replica["draining"].as_bool()),
        (Some(0), Some(true)),
        "{status}"
    );
    let grown: Vec<usize> = all.iter().map(|&i| read_lines(&files[i]).len()).collect();
    wait_for("every task to carry on", Duration::from_secs(30), || {
        all.iter()
            .all(|&i| read_lines(&files[i]).len() > grown[i] + 10)
            .then_some(())
    });
    assert_each_task_exactly_once(&files);
    let refused = cluster.weir(&["drain", "nobody"]);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && error.contains("no live supervisor is called `nobody`"),
        "{error}"
    );
}

/// With group commit, the pointers of a worker's tasks share its
/// ZooKeeper writes, and each task's output is still exactly once.
#[test]
fn the_pointers_of_a_workers_tasks_share_its_zookeeper_writes() {
    let mut cluster = Cluster::new();
    // A window longer than the checkpoint interval: every task's next
    // pointer joins the batch.
    cluster.set_env("WEIR_GROUP_COMMIT", "1s");
    let pid = cluster.start_supervisor();
    let files = deploy_parallel(&cluster);
    let (writes, pointers, timed) = wait_for("30 pointers written", Duration::from_secs(60), || {
        // All from one scrape.
        let text = cluster.metrics(pid);
        let pointers = metric_in(&text, "weir_pointers_written_total")?;
        let writes = metric_in(&text, "weir_zookeeper_pointer_writes_total")?;
        let timed = metric_in(&text, "weir_zookeeper_request_seconds_count{request=\"multi\"}")?;
        (pointers >= 30.0).then_some((writes, pointers, timed))
    });
    // Every fenced write is timed: the pointer writes and the others (status, assignments).
    assert!(
        timed >= writes,
        "{timed} multi requests timed, {writes} pointer writes sent"
    );
    assert!(
        pointers >= 3.0 * writes,
        "{pointers} pointers took {writes} writes: they were not batched"
    );
    wait_for("every task's output", Duration::from_secs(30), || {
        files.iter().all(|f| read_lines(f).len() >= 10).then_some(())
    });
    assert_each_task_exactly_once(&files);
}
