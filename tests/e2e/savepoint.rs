//! Savepoints from the CLI: taken of a running job, taken as a job is
//! cancelled, listed, kept in another storage dir, and deployed from, with
//! the output carrying on exactly once across the change and across a
//! `kill -9` of the leader afterwards.

use std::path::PathBuf;

use serde_json::Value;

use crate::deploy::assert_refused;
use crate::harness::{job_wasm, read_lines, Cluster};
use crate::scale::{assert_each_task_exactly_once, wait_for_growth};

const TASKS: usize = 2;
const ALL: [usize; TASKS] = [0, 1];

/// The counter with a window of one as `TASKS` tasks writing `sp-<i>.out`,
/// from `savepoint` if given; returns the files.
fn deploy_counter(cluster: &Cluster, savepoint: Option<&str>) -> Vec<PathBuf> {
    let template = cluster.path("sp-{task}.out");
    let sink = format!("file:{}", template.display());
    let mut extra = vec![
        "--parallelism",
        "2",
        "--config",
        "window=1",
        "--source",
        "sequence:rate=400",
        "--sink",
        &sink,
    ];
    if let Some(path) = savepoint {
        extra.extend(["--from-savepoint", path]);
    }
    cluster.deploy("counter", "sp", &extra);
    (0..TASKS).map(|i| cluster.path(&format!("sp-{i}.out"))).collect()
}

/// Two supervisors running the counter of `deploy_counter`, its output
/// under way; returns them and the files.
fn running_counter() -> (Cluster, Vec<PathBuf>) {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    cluster.start_supervisor();
    let files = deploy_counter(&cluster, None);
    wait_for_growth(&files, &ALL, "the first deployment's output");
    (cluster, files)
}

/// `weir cancel NAME --savepoint`; returns the savepoint's path it printed.
pub fn cancel_with_savepoint(cluster: &Cluster, name: &str) -> String {
    let said = cluster.weir_ok(&["cancel", name, "--savepoint", "--wait", "30s"]);
    said.split_whitespace()
        .find(|w| w.starts_with(&format!("savepoints/{name}/")))
        .unwrap_or_else(|| panic!("no savepoint in {said:?}"))
        .trim_end_matches(':')
        .to_string()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_job_cancelled_with_a_savepoint_carries_on_from_it_exactly_once() {
    let (mut cluster, files) = running_counter();

    // A savepoint of the running job, kept in another storage dir.
    let elsewhere = cluster.path("elsewhere");
    let to = format!("file://{}", elsewhere.display());
    let taken = json(&cluster.weir_ok(&["savepoint", "sp", "--to", &to, "--output", "json"]));
    let kept = taken["path"].as_str().unwrap().to_string();
    assert!(kept.starts_with(&format!("{to}/savepoints/sp/savepoint-")), "{kept}");
    assert_eq!(taken["tasks"].as_array().unwrap().len(), TASKS);
    assert!(elsewhere.join(&kept[to.len() + 1..]).join("savepoint.json").is_file());

    // Cancelled with a savepoint: where each task stopped.
    let dir = cancel_with_savepoint(&cluster, "sp");
    let stopped: Vec<usize> = files.iter().map(|f| read_lines(f).len()).collect();
    let listed = json(&cluster.weir_ok(&["savepoints", "sp", "--output", "json"]));
    let paths: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![dir.as_str()],
        "the --to savepoint is not in the cluster's storage dir"
    );
    assert!(cluster.weir_ok(&["savepoints", "sp"]).contains(&dir));

    // Refused: another task count, other sinks, no savepoint there.
    let counter = job_wasm("counter");
    let wasm = counter.to_str().unwrap();
    let template = format!("file:{}", cluster.path("sp-{task}.out").display());
    let other = format!("file:{}", cluster.path("other-{task}.out").display());
    let refused = |sink: &str, extra: &[&str], expected: &str| {
        let mut args = vec!["deploy", wasm, "--name", "sp", "--sink", sink];
        args.extend_from_slice(extra);
        assert_refused(&cluster, &args, expected);
    };
    refused(
        &template,
        &["--parallelism", "3", "--from-savepoint", &dir],
        "has 2 tasks, and only a Kafka topic's partitions can be regrouped",
    );
    refused(&other, &["--from-savepoint", &dir], "give it the same --sink");
    refused(
        &template,
        &["--from-savepoint", "savepoints/sp/none"],
        "no savepoint at savepoints/sp/none",
    );

    // Deployed again from it: the output carries on where it stopped.
    deploy_counter(&cluster, Some(&dir));
    wait_for_growth(&files, &ALL, "the output from the savepoint");
    assert_each_task_exactly_once(&files);
    let job = cluster.job("sp").unwrap();
    assert!(job["tasks"].as_array().unwrap().iter().all(|t| t["state"] == "RUNNING"));

    // The tasks then fail over from checkpoints of their own.
    let leader = cluster.leader_pid();
    cluster.signal(leader, "KILL");
    cluster.start_supervisor();
    wait_for_growth(&files, &ALL, "the output after the leader's kill");
    assert_each_task_exactly_once(&files);
    for (file, at_stop) in files.iter().zip(&stopped) {
        assert!(read_lines(file).len() > at_stop + 20, "{file:?} did not carry on");
    }

    // The savepoint kept elsewhere starts a job too, copied in first.
    // It is older than where the job stopped: the files are cut back to it
    // and carry on from there, as a restore from a checkpoint does.
    cluster.weir_ok(&["cancel", "sp", "--wait", "30s"]);
    deploy_counter(&cluster, Some(&kept));
    assert_eq!(
        json(&cluster.weir_ok(&["savepoints", "sp", "--output", "json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    wait_for_growth(&files, &ALL, "the output from the savepoint kept elsewhere");
    assert_each_task_exactly_once(&files);
    let imported = &kept[to.len() + 1..];
    assert!(
        cluster.logs().contains(&format!("savepoint={imported}")),
        "no task said it started from {imported}"
    );

    // A savepoint is deleted once no job starts from it: here a job whose
    // tasks will not checkpoint within the test still does.
    cluster.weir_ok(&["cancel", "sp", "--wait", "30s"]);
    let waiting = [
        "deploy",
        wasm,
        "--name",
        "sp",
        "--parallelism",
        "2",
        "--source",
        "sequence:rate=400",
        "--sink",
        &template,
        "--checkpoint-interval",
        "1h",
        "--from-savepoint",
        &dir,
    ];
    cluster.weir_ok(&waiting);
    assert_refused(
        &cluster,
        &["savepoints", "sp", "--delete", &dir],
        "holds the state of task 0 of job `sp`, which has no checkpoint of its own; delete it once it has",
    );
    assert_refused(
        &cluster,
        &["savepoints", "sp", "--delete", "../x"],
        "--delete ../x: give a savepoint of job `sp`",
    );
    let id = imported.rsplit('/').next().unwrap();
    assert!(cluster
        .weir_ok(&["savepoints", "sp", "--delete", id])
        .contains("deleted"));
    let listed = json(&cluster.weir_ok(&["savepoints", "sp", "--output", "json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["path"], dir.as_str());
    assert!(!cluster.path("storage").join(imported).exists());
    assert_refused(
        &cluster,
        &["savepoints", "sp", "--delete", imported],
        &format!("no savepoint at {imported}"),
    );
}

/// Like [`assert_each_task_exactly_once`], for output of windows of 1,
/// then of 3: task i's k-th record is `i + k * tasks`, and each line is
/// one record, or the sum of the next three. A window's first records
/// lost or read twice across a change breaks the sums.
fn assert_each_task_exactly_once_in_windows(files: &[PathBuf]) {
    let stride = files.len() as i64;
    for (i, file) in files.iter().enumerate() {
        let mut next = i as i64;
        for (k, line) in read_lines(file).iter().enumerate() {
            let value: i64 = line
                .parse()
                .unwrap_or_else(|_| panic!("line {k} of {file:?}: {line:?}"));
            next += if value == next {
                stride
            } else if value == 3 * next + 3 * stride {
                3 * stride
            } else {
                panic!("line {k} of task {i}'s {file:?} is {value}: neither {next} nor the sum of 3 from it")
            };
        }
    }
}

#[test]
fn upgrades_keep_and_migrate_the_state_and_failing_ones_roll_back_exactly_once() {
    let (cluster, files) = running_counter();
    let module = |cluster: &Cluster| {
        cluster.job("sp").unwrap()["module_sha256"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let counter = module(&cluster);

    // A change of settings: the same module, from a savepoint of itself.
    let said = cluster.weir_ok(&["configure", "sp", "window=1", "--wait", "30s"]);
    assert!(said.contains("runs module"), "{said}");
    assert_eq!(module(&cluster), counter, "configure changed the module");
    wait_for_growth(&files, &ALL, "the output after configure");
    assert_each_task_exactly_once(&files);

    // A module that refuses every record (it reads the counter's state,
    // its own field defaulted) fails before its first checkpoint: the job
    // is rolled back to the counter from the same savepoint.
    let faulty = job_wasm("faulty");
    let out = cluster.weir(&[
        "upgrade",
        "sp",
        faulty.to_str().unwrap(),
        "--config",
        "reject_every=1",
        "--wait",
        "30s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the failing upgrade succeeded");
    assert!(stderr.contains("rolled back to module"), "{stderr}");
    assert!(stderr.contains("failed in task"), "the reason is not named: {stderr}");
    assert_eq!(module(&cluster), counter);
    wait_for_growth(&files, &ALL, "the output after the rollback");
    assert_each_task_exactly_once(&files);

    // A new version of the state: a field renamed through a migration, one
    // added with a default. Windows of 3 first, so that an open window (a
    // sum of one or two numbers) is what the migration must carry over.
    cluster.weir_ok(&["configure", "sp", "window=3", "--wait", "30s"]);
    let v2 = job_wasm("counter_v2");
    let said = cluster.weir_ok(&["upgrade", "sp", v2.to_str().unwrap(), "--wait", "30s"]);
    assert!(said.contains("runs module"), "{said}");
    let counter_v2 = module(&cluster);
    assert_ne!(counter_v2, counter);
    wait_for_growth(&files, &ALL, "the output after the upgrade to state version 2");
    assert_each_task_exactly_once_in_windows(&files);

    // The first version refuses the second's state: rolled back again.
    let v1 = job_wasm("counter");
    let out = cluster.weir(&["upgrade", "sp", v1.to_str().unwrap(), "--wait", "30s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the downgrade succeeded");
    assert!(stderr.contains("rolled back to module"), "{stderr}");
    assert!(
        stderr.contains("newer than this module's 1"),
        "the refusal is not named: {stderr}"
    );
    assert_eq!(module(&cluster), counter_v2);
    wait_for_growth(&files, &ALL, "the output after the refused downgrade");
    assert_each_task_exactly_once_in_windows(&files);
    let job = cluster.job("sp").unwrap();
    assert_eq!(job["state"], "RUNNING", "{job}");
}
