//! The storage dir, local and on a real S3-compatible server: what weir
//! needs of it, jobs failing over on it, and its faults. A missing checkpoint
//! object is noticed, a corrupt one is caught by its checksum, and the
//! restore falls back to the previous one; a job whose checkpoints are all
//! unreadable never silently starts from nothing; a hung or unwritable
//! storage dir fails checkpoints while the job runs on.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use weir::storage::{Storage, StorageError};

use crate::deploy::assert_refused;
use crate::harness::{assert_counter_sequence, job_wasm, read_lines, send_signal, wait_for, wait_for_lines, Cluster};
use crate::s3::{S3Server, BUCKET};

/// What weir relies on: create-only writes that never clobber, reads,
/// a clear "missing", and deletion of a checkpoint's directory.
async fn conformance(storage: Storage) {
    assert!(storage
        .put_if_absent("a/b/one", Bytes::from_static(b"1"))
        .await
        .unwrap());
    assert!(
        !storage
            .put_if_absent("a/b/one", Bytes::from_static(b"2"))
            .await
            .unwrap(),
        "a create-only write replaced an object"
    );
    assert_eq!(storage.get("a/b/one").await.unwrap(), Bytes::from_static(b"1"));
    assert!(matches!(
        storage.get("a/none").await,
        Err(StorageError::NotFound { .. })
    ));
    storage
        .put_if_absent("a/b/two", Bytes::from_static(b"2"))
        .await
        .unwrap();
    storage
        .put_if_absent("a/c/three", Bytes::from_static(b"3"))
        .await
        .unwrap();
    storage.delete_prefix("a/b").await.unwrap();
    assert!(matches!(
        storage.get("a/b/two").await,
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(storage.get("a/c/three").await.unwrap(), Bytes::from_static(b"3"));
    storage.probe().await.unwrap();
}

#[tokio::test]
async fn local_and_s3_storage_dirs_conform() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Storage::open(&format!("file://{}", dir.path().display())).unwrap()).await;
    assert!(
        !dir.path().join("a/b").exists(),
        "a deleted checkpoint left its directory behind"
    );

    let s3 = S3Server::start();
    conformance(Storage::open_with(&format!("s3://{BUCKET}/conformance"), s3.env()).unwrap()).await;
    assert!(
        s3.bucket_dir().join("conformance/a/c/three").exists(),
        "the prefix is not used"
    );
}

#[test]
fn a_wrong_s3_setting_is_one_clear_line_from_deploy_and_supervisor() {
    let s3 = S3Server::start();
    let mut cluster = Cluster::new();
    cluster.use_s3(&s3, "");
    cluster.set_env("AWS_SECRET_ACCESS_KEY", "wrong");
    let counter = job_wasm("counter");
    assert_refused(
        &cluster,
        &["deploy", counter.to_str().unwrap()],
        "cannot use the storage dir",
    );
    let supervisor = cluster.start_supervisor();
    assert!(
        !cluster.wait_exit(supervisor),
        "a supervisor ran on a storage dir it cannot use"
    );
    assert!(
        cluster.log_of(supervisor).contains("cannot use the storage dir"),
        "{}",
        cluster.log_of(supervisor)
    );
}

#[test]
fn jobs_fail_over_with_their_checkpoints_on_s3() {
    let s3 = S3Server::start();
    let mut cluster = Cluster::new();
    cluster.use_s3(&s3, "prod");
    let first = cluster.start_supervisor();
    cluster.start_supervisor();
    let out = cluster.deploy("counter", "counter", &[]);
    wait_for_lines(&out, 0, 30);
    let modules = std::fs::read_dir(s3.bucket_dir().join("prod/modules")).unwrap().count();
    assert_eq!(modules, 1, "the module is stored in the bucket under the prefix");
    assert!(s3.bucket_dir().join("prod/checkpoints/counter").is_dir());

    cluster.signal(first, "KILL");
    let seen = read_lines(&out).len();
    wait_for_lines(&out, seen, 30);
    assert_counter_sequence(&read_lines(&out));
}

#[test]
fn a_hung_s3_server_fails_checkpoints_while_the_job_runs_on() {
    let s3 = S3Server::start();
    let mut cluster = Cluster::new();
    cluster.use_s3(&s3, "");
    let supervisor = cluster.start_supervisor();
    let out = cluster.deploy("counter", "counter", &[]);
    wait_for_lines(&out, 0, 20);

    // The server stops answering mid-stream: uploads hang until their deadline.
    send_signal(s3.pid(), "STOP");
    assert_checkpoints_fail_while_the_job_runs(&cluster, supervisor, 1);

    send_signal(s3.pid(), "CONT");
    let committed = r#"weir_checkpoints_committed_total{job="counter"}"#;
    let before = cluster.metric(supervisor, committed).unwrap();
    wait_for("checkpoints to commit again", Duration::from_secs(60), || {
        (cluster.metric(supervisor, committed)? > before).then_some(())
    });
    let size = cluster.metric(supervisor, r#"weir_last_checkpoint_bytes{job="counter"}"#);
    assert!(size > Some(0.0), "the newest checkpoint's size is reported: {size:?}");
    let seen = read_lines(&out).len();
    wait_for_lines(&out, seen, 20);
    assert_counter_sequence(&read_lines(&out));
}

/// Waits for `failures` failed checkpoints of the counter job and checks
/// that they were reported and that the job ran on through them.
fn assert_checkpoints_fail_while_the_job_runs(cluster: &Cluster, supervisor: u32, failures: u32) {
    let failed = r#"weir_checkpoints_failed_total{job="counter"}"#;
    wait_for("checkpoints to fail", Duration::from_secs(60), || {
        (cluster.metric(supervisor, failed)? >= f64::from(failures)).then_some(())
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
}

/// The snapshot files of a job's retained checkpoints, newest first.
fn retained_snapshots(cluster: &Cluster, job: &str) -> Vec<PathBuf> {
    let pointer = cluster.job(job).expect("job listed")["last_checkpoint"].clone();
    let newest = pointer["id"].as_u64().expect("a committed checkpoint");

    let deployments = cluster.path("storage/checkpoints").join(job);
    let uid = std::fs::read_dir(&deployments).unwrap().next().unwrap().unwrap().path();
    let task = uid.join("0");
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(&task)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|dir| {
            let id = dir.file_name()?.to_str()?.split('-').next()?.parse().ok()?;
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
    // What the pointer no longer names goes once the restored job commits.
    let skipped = snapshots[0].parent().unwrap().to_path_buf();
    wait_for("the skipped checkpoint's deletion", Duration::from_secs(20), || {
        let left = std::fs::read_dir(&skipped).map_or(0, |files| files.count());
        (left == 0).then_some(())
    });
    cluster.signal(second, "KILL");

    for snapshot in retained_snapshots(&cluster, "counter") {
        std::fs::write(snapshot, b"bit rot").unwrap();
    }
    let before = std::fs::read(&out).unwrap();
    cluster.start_supervisor();
    cluster.wait_for_job_error("counter", "RESTARTING", "no retained checkpoint is readable");
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
    assert_checkpoints_fail_while_the_job_runs(&cluster, supervisor, 3);

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
    cluster.wait_for_job_error("counter", "RESTARTING", "module digest mismatch");
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
    cluster.wait_for_job_error("counter", "FAILED", "the job refused `restore`");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "a job that cannot restore published something"
    );
}
