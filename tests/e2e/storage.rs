//! Storage dir faults: a missing checkpoint object is noticed, a corrupt one
//! is caught by its checksum, and
//! the restore falls back to the previous one; a job whose checkpoints are
//! all unreadable never silently starts from nothing.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{assert_counter_sequence, read_lines, wait_for, wait_for_lines, Cluster};

/// The snapshot files of a job's retained checkpoints, newest first.
fn retained_snapshots(cluster: &Cluster, job: &str) -> Vec<PathBuf> {
    let pointer = cluster.job(job).expect("job listed")["last_checkpoint"].clone();
    let newest = pointer["id"].as_u64().expect("a committed checkpoint");

    let deployments = cluster.path("storage/checkpoints").join(job);
    let uid = std::fs::read_dir(&deployments).unwrap().next().unwrap().unwrap().path();
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(&uid)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|dir| {
            let id = dir.file_name()?.to_str()?.split('-').next()?.parse().ok()?;
            // A deleted checkpoint may leave its empty directory behind.
            Some((id, dir.join("snapshot"))).filter(|(_, snapshot)| snapshot.exists())
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    assert_eq!(
        found.first().map(|f| f.0),
        Some(newest),
        "the pointer names the newest checkpoint on disk"
    );
    found.into_iter().map(|(_, path)| path).collect()
}

#[test]
fn corrupt_checkpoints_fall_back_and_never_restart_from_nothing() {
    let mut cluster = Cluster::new();
    let first = cluster.start_supervisor();
    let out = cluster.deploy("counter", "counter", &[]);
    wait_for_lines(&out, 0, 50);
    cluster.signal(first, "KILL");

    let snapshots = retained_snapshots(&cluster, "counter");
    assert_eq!(snapshots.len(), 3, "three checkpoints are retained: {snapshots:?}");
    // The newest checkpoint's snapshot goes missing: the pointer names an object that is not there.
    std::fs::remove_file(&snapshots[0]).unwrap();
    let seen = read_lines(&out).len();
    let second = cluster.start_supervisor();
    wait_for_lines(&out, seen, 50);
    assert_counter_sequence(&read_lines(&out));
    assert!(
        cluster.log_of(second).contains("falling back to the previous one"),
        "{}",
        cluster.log_of(second)
    );
    cluster.signal(second, "KILL");

    for snapshot in retained_snapshots(&cluster, "counter") {
        std::fs::write(snapshot, b"bit rot").unwrap();
    }
    let before = std::fs::read(&out).unwrap();
    cluster.start_supervisor();
    let job = wait_for("the job to refuse to start", Duration::from_secs(30), || {
        cluster.job("counter").filter(|j| j["state"] == "RESTARTING")
    });
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("no retained checkpoint is readable"),
        "{job}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), before, "the job restarted from nothing");
}

#[test]
fn unwritable_storage_fails_checkpoints_while_the_job_runs_on() {
    let mut cluster = Cluster::new();
    let supervisor = cluster.start_supervisor();
    let out = cluster.deploy("counter", "counter", &[]);
    wait_for_lines(&out, 0, 20);
    assert_eq!(cluster.metric(supervisor, "weir_leader"), Some(1.0));

    // Root ignores permissions, so make the job's checkpoint directory
    // unwritable by putting a plain file where it should be.
    let deployments = cluster.path("storage/checkpoints/counter");
    let uid = std::fs::read_dir(&deployments).unwrap().next().unwrap().unwrap().path();
    let aside = deployments.join("aside");
    std::fs::rename(&uid, &aside).unwrap();
    std::fs::write(&uid, b"not a directory").unwrap();
    let failed = r#"weir_checkpoints_failed_total{job="counter"}"#;
    wait_for("checkpoints to fail", Duration::from_secs(30), || {
        (cluster.metric(supervisor, failed)? >= 3.0).then_some(())
    });
    let job = cluster.job("counter").unwrap();
    assert_eq!(
        (job["state"].as_str(), job["restarts"].as_u64()),
        (Some("RUNNING"), Some(0)),
        "{job}"
    );
    assert!(cluster
        .log_of(supervisor)
        .contains("checkpoint failed, the job keeps running"));

    std::fs::remove_file(&uid).unwrap();
    std::fs::rename(&aside, &uid).unwrap();
    let stalled = read_lines(&out).len();
    wait_for_lines(&out, stalled, 20);
    // The failed checkpoints' output was carried into the next one: nothing lost.
    assert_counter_sequence(&read_lines(&out));
}

#[test]
fn a_damaged_module_is_refused_by_its_digest() {
    let mut cluster = Cluster::new();
    cluster.deploy("counter", "counter", &[]);
    for module in std::fs::read_dir(cluster.path("storage/modules")).unwrap() {
        std::fs::write(module.unwrap().path(), b"\0asm\x0d\0\x01\0 tampered").unwrap();
    }
    cluster.start_supervisor();
    let job = wait_for("the job to refuse its module", Duration::from_secs(30), || {
        cluster.job("counter").filter(|j| j["state"] == "RESTARTING")
    });
    assert!(
        job["error"].as_str().unwrap().contains("module digest mismatch"),
        "{job}"
    );
}

#[test]
fn a_snapshot_the_job_rejects_fails_the_job_with_the_reason() {
    let mut cluster = Cluster::new();
    let first = cluster.start_supervisor();
    let out = cluster.deploy("counter", "counter", &["--restart", "fixed:attempts=2,delay=100ms"]);
    wait_for_lines(&out, 0, 20);
    cluster.signal(first, "KILL");

    // A snapshot that passes its checksum but that the job cannot decode:
    // the storage is fine, the state is not.
    for snapshot in retained_snapshots(&cluster, "counter") {
        std::fs::write(&snapshot, [0xff; 3]).unwrap();
        let meta_path = snapshot.with_file_name("meta.json");
        let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
        meta["snapshot_sha256"] = weir::storage::sha256_hex(&[0xff; 3]).into();
        std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    }
    let before = std::fs::read(&out).unwrap();
    cluster.start_supervisor();
    let job = wait_for("the job to fail", Duration::from_secs(30), || {
        cluster.job("counter").filter(|j| j["state"] == "FAILED")
    });
    assert!(
        job["error"].as_str().unwrap().contains("the job refused `restore`"),
        "{job}"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "a job that cannot restore published something"
    );
}
