//! Guest faults: a job that traps, loops forever or eats memory is stopped by
//! its own limit, restarted from its checkpoint, and reported; the supervisor
//! and the other jobs carry on. A job blocked in a host call, where no CPU
//! limit reaches, still stops when told to.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{assert_counter_sequence, read_lines, wait_for, Cluster};

fn wait_for_restart_with(cluster: &Cluster, name: &str, error: &str) -> Value {
    let job = wait_for(&format!("job {name} to restart"), Duration::from_secs(60), || {
        cluster
            .job(name)
            .filter(|j| j["restarts"].as_u64() >= Some(1) && !j["error"].is_null())
    });
    assert!(
        job["error"].as_str().unwrap().contains(error),
        "expected {error:?} in {job}"
    );
    job
}

#[test]
fn faulty_jobs_are_stopped_by_their_limits_while_others_carry_on() {
    let mut cluster = Cluster::new();
    let supervisor = cluster.start_supervisor();
    let good = cluster.deploy("counter", "good", &[]);
    let trap = cluster.deploy("faulty", "trap", &["--config", "trap_on=3000"]);
    cluster.deploy(
        "faulty",
        "spin",
        &["--config", "spin_on=100", "--call-timeout", "300ms"],
    );
    cluster.deploy("faulty", "grow", &["--config", "grow_on=100", "--memory-limit", "16"]);

    cluster.deploy(
        "faulty",
        "doomed",
        &["--config", "trap_on=10", "--restart", "fixed:attempts=2,delay=100ms"],
    );

    wait_for_restart_with(&cluster, "spin", "call timeout of 300ms");
    wait_for_restart_with(&cluster, "grow", "memory limit of 16777216 bytes");
    let trapped = wait_for("the trapping job to restart twice", Duration::from_secs(60), || {
        cluster.job("trap").filter(|j| j["restarts"].as_u64() >= Some(2))
    });
    // The error names the call and keeps wasmtime's account of the trap as its cause.
    let error = trapped["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("trapped in `process`") && error.contains("unreachable"),
        "{trapped}"
    );

    let failed = cluster.wait_for_job_error("doomed", "FAILED", "trapped");
    assert_eq!(failed["restarts"], 2, "{failed}");

    let before = read_lines(&good).len();
    wait_for("the good job to keep producing", Duration::from_secs(30), || {
        (read_lines(&good).len() > before + 5).then_some(())
    });
    assert!(cluster.is_alive(supervisor), "the supervisor died\n{}", cluster.logs());
    assert_counter_sequence(&read_lines(&good));

    // Every restart resumed from a checkpoint: the echoed numbers are 0, 1, 2, ...
    // with none repeated, and none at or past the trap.
    let echoed: Vec<i64> = read_lines(&trap).iter().map(|l| l.parse().unwrap()).collect();
    assert!(!echoed.is_empty(), "the trapping job committed nothing before its trap");
    assert_eq!(echoed, (0..echoed.len() as i64).collect::<Vec<_>>());
    assert!(echoed.len() <= 3000);
}

#[test]
fn a_refused_record_fails_the_job_or_is_skipped_as_its_deploy_says() {
    let mut cluster = Cluster::new();
    let supervisor = cluster.start_supervisor();
    let failing = cluster.deploy(
        "faulty",
        "strict",
        &["--config", "reject_on=50", "--restart", "fixed:attempts=1,delay=100ms"],
    );
    let skipping = cluster.deploy("faulty", "lenient", &["--config", "reject_on=50", "--on-error", "skip"]);

    // Refused by default: the job fails naming the record, the reason and the way past it.
    let failed = cluster.wait_for_job_error("strict", "FAILED", "reject_on=50 reached");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("refused record") && error.contains("--on-error skip"),
        "{failed}"
    );
    let strict: Vec<i64> = read_lines(&failing).iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(strict, (0..strict.len() as i64).collect::<Vec<_>>());
    assert!(strict.len() <= 50, "nothing past the refused record was published");

    // Skipped: the output goes on past it, without it, and the metric counts it once committed.
    wait_for("the lenient job to pass 100", Duration::from_secs(60), || {
        (read_lines(&skipping).len() > 100).then_some(())
    });
    let lenient: Vec<i64> = read_lines(&skipping).iter().map(|l| l.parse().unwrap()).collect();
    let expected: Vec<i64> = (0..=lenient.len() as i64).filter(|n| *n != 50).collect();
    assert_eq!(lenient, expected[..lenient.len()]);
    let series = "weir_records_rejected_total{job=\"lenient\"}";
    assert_eq!(
        cluster.metric(supervisor, series),
        Some(1.0),
        "{}",
        cluster.metrics(supervisor)
    );
    assert!(cluster.log_of(supervisor).contains("skipped 1 records the job refused"));
}

#[test]
fn a_guest_blocked_in_a_host_call_is_dropped_when_cancelled() {
    let mut cluster = Cluster::new();
    let supervisor = cluster.start_supervisor();
    // Accepts connections into its backlog and never sends a byte.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    silent.set_nonblocking(true).unwrap();
    let address = silent.local_addr().unwrap().to_string();
    cluster.deploy(
        "faulty",
        "stuck",
        &[
            "--source",
            "sequence:rate=10",
            "--config",
            &format!("block_on={address}"),
            "--allow-network-to",
            "127.0.0.1",
            "--call-timeout",
            "1s",
        ],
    );
    let (mut guest, _) = wait_for("the guest to connect and block", Duration::from_secs(30), || {
        silent.accept().ok()
    });
    assert!(job_thread_runs(supervisor, "stuck"));

    // `cancel` fails unless the leader confirms the stop within --wait.
    cluster.weir_ok(&["cancel", "stuck", "--wait", "15s"]);
    assert_eq!(cluster.job("stuck").unwrap()["state"], "CANCELED");
    assert!(
        cluster.log_of(supervisor).contains("it is dropped there"),
        "{}",
        cluster.log_of(supervisor)
    );
    // Dropped, not abandoned: its store goes, and with it the socket it
    // was blocked on (the peer reads end of stream) and its thread.
    guest.set_nonblocking(false).unwrap();
    guest.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let read = std::io::Read::read(&mut guest, &mut [0u8; 1]);
    assert!(matches!(read, Ok(0)), "the guest's socket is still open: {read:?}");
    wait_for("the job's thread to end", Duration::from_secs(10), || {
        (!job_thread_runs(supervisor, "stuck")).then_some(())
    });
    assert!(cluster.is_alive(supervisor));
}

/// Whether the supervisor `pid` has a thread running job `name`.
fn job_thread_runs(pid: u32, name: &str) -> bool {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the supervisor's threads");
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == format!("job-{name}"))
    })
}
