//! Checkpoints of guest memory (`--checkpoint-state memory`): each one
//! the pages written since the one before, restored after a `kill -9`
//! exactly where the job was, and savepoints still taken in the SDK's
//! portable state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{read_lines, wait_for, Cluster};
use crate::savepoint::cancel_with_savepoint;

/// Every `meta.json` under `dir`, with the size of its snapshot.
fn checkpoints(dir: &Path) -> Vec<(Value, u64)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(checkpoints(&path));
        } else if path.file_name().is_some_and(|n| n == "meta.json") {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(meta) = serde_json::from_str(&text) else {
                continue;
            };
            let snapshot = path.with_file_name("snapshot");
            found.push((meta, std::fs::metadata(snapshot).map_or(0, |m| m.len())));
        }
    }
    found
}

/// The ballast job's output must be 1, 2, 3, ...: the count of events it
/// has seen, so a restore that lost or replayed state shows.
fn assert_counts_exactly_once(out: &PathBuf) {
    for (k, line) in read_lines(out).iter().enumerate() {
        assert_eq!(line.parse::<usize>().ok(), Some(k + 1), "line {k} of {out:?}");
    }
}

#[test]
fn a_job_checkpointed_as_memory_pages_carries_on_exactly_once_after_a_kill() {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    cluster.start_supervisor();
    let ballast = [
        "--config",
        "bytes=4194304",
        "--config",
        "every=1",
        "--source",
        "sequence:rate=2000",
    ];
    let out = cluster.deploy(
        "ballast",
        "mem",
        &[&ballast[..], &["--checkpoint-state", "memory"]].concat(),
    );
    let storage = cluster.path("storage/checkpoints/mem");
    // Pages over a whole image, each far smaller than it.
    let (whole, delta) = wait_for("a checkpoint of pages over another", Duration::from_secs(30), || {
        let found = checkpoints(&storage);
        let whole = found
            .iter()
            .find(|(m, _)| m["image"].is_object() && m["image"]["over"].is_null())?;
        let delta = found.iter().find(|(m, _)| !m["image"]["over"].is_null())?;
        Some((whole.1, delta.1))
    });
    assert!(
        whole > 4 << 20,
        "the whole image holds the 4 MiB of ballast: {whole} bytes"
    );
    assert!(delta * 20 < whole, "pages over it: {delta} bytes of {whole}");
    assert!(
        checkpoints(&storage).iter().all(|(m, _)| m["image"].is_object()),
        "every checkpoint of the running job is an image"
    );

    let before = read_lines(&out).len();
    cluster.replace_runner("mem");
    wait_for("the output to carry on after the kill", Duration::from_secs(30), || {
        (read_lines(&out).len() > before + 500).then_some(())
    });
    assert_counts_exactly_once(&out);

    // Savepoints keep the SDK's state, serialized from the image: a job
    // deployed from one (here with the SDK's snapshots) carries on.
    cluster.weir_ok(&["savepoint", "mem"]);
    let dir = cancel_with_savepoint(&cluster, "mem");
    let kept = checkpoints(&cluster.path("storage").join(&dir));
    assert_eq!(kept.len(), 1, "one task's checkpoint in {dir}");
    assert!(
        kept[0].0["image"].is_null(),
        "a savepoint keeps the SDK's state: {}",
        kept[0].0
    );
    let stopped = read_lines(&out).len();
    cluster.deploy("ballast", "mem", &[&ballast[..], &["--from-savepoint", &dir]].concat());
    wait_for(
        "the output to carry on from the savepoint",
        Duration::from_secs(30),
        || (read_lines(&out).len() > stopped + 500).then_some(()),
    );
    assert_counts_exactly_once(&out);
}
