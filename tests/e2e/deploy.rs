//! Deploying, cancelling and refusing bad input, from the CLI as a user runs it.

use std::time::Duration;

use crate::harness::{job_wasm, wait_for_lines, Cluster};

#[test]
fn job_deployed_with_no_supervisor_runs_once_one_starts() {
    let mut cluster = Cluster::new();
    let out = cluster.deploy("counter", "early", &[]);
    assert_eq!(cluster.job("early").unwrap()["state"], "CREATED");
    assert!(cluster.status()["leader"].is_null());

    cluster.start_supervisor();
    wait_for_lines(&out, 0, 5);
    let job = cluster.job("early").unwrap();
    assert_eq!(job["state"], "RUNNING");
    assert_eq!(job["supervisor"], "s0");
}

#[test]
fn cancel_stops_the_job_and_its_output() {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    let out = cluster.deploy("counter", "doomed", &[]);
    wait_for_lines(&out, 0, 5);

    cluster.weir_ok(&["cancel", "doomed"]);
    assert_eq!(cluster.job("doomed").unwrap()["state"], "CANCELED");
    let after_cancel = std::fs::read(&out).unwrap();
    // The job checkpointed every 200 ms while it ran: five intervals without a
    // byte written show the output stopped.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        after_cancel,
        "output changed after cancel"
    );

    let again = cluster.weir(&["cancel", "nonexistent"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no job named `nonexistent`"));
}

/// Runs a command that must fail with one line on stderr containing `expected`.
pub fn assert_refused(cluster: &Cluster, args: &[&str], expected: &str) {
    let out = cluster.weir(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "weir {args:?} succeeded");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "weir {args:?} printed more than one line:\n{stderr}"
    );
    assert!(
        stderr.contains(expected),
        "weir {args:?}: expected {expected:?} in {stderr:?}"
    );
}

#[test]
fn bad_modules_and_flags_are_refused_with_one_clear_line() {
    let cluster = Cluster::new();
    let text = cluster.path("notes.txt");
    std::fs::write(&text, "not wasm at all").unwrap();
    let core = cluster.path("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let other_world = job_wasm("not-a-job");
    let counter = job_wasm("counter");

    assert_refused(
        &cluster,
        &["deploy", text.to_str().unwrap(), "--name", "a"],
        "not a WebAssembly file",
    );
    assert_refused(
        &cluster,
        &["configure", "a", "k=1", "k=2"],
        "setting k=... is given twice",
    );
    assert_refused(
        &cluster,
        &["upgrade", "a", counter.to_str().unwrap(), "--wait", "0s"],
        "--wait 0",
    );
    assert_refused(
        &cluster,
        &["deploy", core.to_str().unwrap(), "--name", "a"],
        "core WebAssembly module, not a component",
    );
    assert_refused(
        &cluster,
        &["deploy", other_world.to_str().unwrap(), "--name", "a"],
        "not a weir job",
    );
    assert_refused(
        &cluster,
        &["deploy", "/nonexistent.wasm"],
        "cannot read /nonexistent.wasm",
    );
    let counter = counter.to_str().unwrap();
    assert_refused(&cluster, &["deploy", counter, "--source", "pulsar:x"], "unknown source");
    assert_refused(
        &cluster,
        &["deploy", counter, "--source", "kafka:topic=t"],
        "kafka source: needs brokers=",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--sink", "kafka:brokers=b:1"],
        "kafka sink: needs topic=",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--sink", "file:/nonexistent-dir/out"],
        "does not exist",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--checkpoint-interval", "soon"],
        "--checkpoint-interval",
    );
    assert_refused(&cluster, &["deploy", counter, "--name", "a/b"], "invalid job name");
    assert_refused(
        &cluster,
        &["jobs", "--zookeeper", "127.0.0.1:1", "--connect-timeout", "1s"],
        "cannot reach ZooKeeper at 127.0.0.1:1",
    );
    let huge = cluster.path("huge.wasm");
    std::fs::File::create(&huge).unwrap().set_len(100 << 20).unwrap();
    assert_refused(
        &cluster,
        &["deploy", huge.to_str().unwrap()],
        "over weir's limit of 64 MiB",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--storage-dir", "ftp://host/x"],
        "unsupported scheme",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--storage-dir", "file:///proc/weir"],
        "cannot create /proc/weir",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--restart", "sometimes"],
        "unknown restart strategy",
    );
    assert!(cluster.jobs().is_empty(), "a refused deploy left a job behind");

    cluster.weir_ok(&["deploy", counter, "--name", "twice"]);
    assert_refused(&cluster, &["deploy", counter, "--name", "twice"], "already exists");
}
