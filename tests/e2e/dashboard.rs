//! The REST API and the dashboard against a running cluster: the API's
//! answers, and the page in a real headless browser (Debian's chromium)
//! following a `kill -9` of the leader.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{http_get, installed, metric_in, wait_for, Cluster};

/// A GET's status code and JSON body.
fn get_json(address: &str, path: &str) -> (u16, Value) {
    let response = http_get(address, path);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {response}"));
    assert!(
        response.to_ascii_lowercase().contains("access-control-allow-origin: *"),
        "GET {path} cannot be read from another replica's page: {response}"
    );
    (status, json)
}

/// Runs headless chromium on `url` with `flag` (`--dump-dom`, or
/// `--screenshot=PATH`), giving the page's script 5 s of virtual time.
fn chromium(url: &str, flag: &str, profile: &Path) -> String {
    let out = Command::new(installed("chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1280,900",
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", profile.display()),
            flag,
            url,
        ])
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The leader's id as the page at `address` shows it, and the page.
fn page_leader(address: &str, profile: &Path) -> (String, String) {
    let dom = chromium(&format!("http://{address}/"), "--dump-dom", profile);
    let leader = dom
        .split_once("id=\"leader\"")
        .and_then(|(_, rest)| rest.split_once('>'))
        .and_then(|(_, rest)| rest.split_once('<'))
        .map_or(String::new(), |(id, _)| id.to_string());
    (leader, dom)
}

#[test]
fn the_api_and_the_dashboard_show_the_cluster_and_follow_a_leader_failover() {
    let mut cluster = Cluster::with_session_timeout("2s");
    let pids = [cluster.start_supervisor(), cluster.start_supervisor()];
    let sink = format!("file:{}", cluster.path("shown-{task}.out").display());
    cluster.deploy("counter", "shown", &["--parallelism", "2", "--sink", &sink]);
    let leader = cluster.leader_pid_after(None);
    let follower = *pids.iter().find(|p| **p != leader).unwrap();
    let addresses: Vec<String> = pids.iter().map(|pid| cluster.http_address(*pid)).collect();
    let follower_address = cluster.http_address(follower);

    // Any replica answers for the whole cluster, as the CLI would.
    let status = cluster.status();
    let (code, api) = get_json(&follower_address, "/api/v1/cluster");
    assert_eq!(code, 200);
    assert_eq!(api["leader"]["id"], status["leader"]["id"], "{api}");
    assert_eq!(api["replicas"].as_array().unwrap().len(), 2, "{api}");
    wait_for("both tasks to run", Duration::from_secs(30), || {
        let (_, job) = get_json(&follower_address, "/api/v1/jobs/shown");
        (job["state"] == "RUNNING").then_some(())
    });
    let (_, jobs) = get_json(&follower_address, "/api/v1/jobs");
    assert_eq!(jobs[0]["name"], "shown", "{jobs}");
    assert_eq!(jobs[0]["tasks"].as_array().unwrap().len(), 2, "{jobs}");
    let (code, missing) = get_json(&follower_address, "/api/v1/jobs/nope");
    assert_eq!(code, 404);
    assert!(
        missing["error"].as_str().unwrap().contains("no job named `nope`"),
        "{missing}"
    );
    let (code, _) = get_json(&follower_address, "/api/v1/nope");
    assert_eq!(code, 404);
    let (code, refused) = get_json(&follower_address, "/api/v1/jobs/..%2Fx/savepoints");
    assert_eq!(code, 400, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("invalid job name"),
        "{refused}"
    );

    // Each replica tells the checkpoints and attempts of the tasks it ran;
    // together, both tasks'.
    let committed = wait_for("committed checkpoints of both tasks", Duration::from_secs(30), || {
        let mut tasks = Vec::new();
        for address in &addresses {
            let (_, history) = get_json(address, "/api/v1/jobs/shown/checkpoints");
            for c in history.as_array().unwrap() {
                if c["result"] == "committed" && c["bytes"].as_u64() > Some(0) {
                    tasks.push(c["task"].as_u64().unwrap());
                }
            }
        }
        tasks.sort();
        tasks.dedup();
        (tasks == [0, 1]).then_some(tasks)
    });
    assert_eq!(committed, [0, 1]);
    let running: usize = addresses
        .iter()
        .map(|address| {
            let (_, attempts) = get_json(address, "/api/v1/jobs/shown/attempts");
            let attempts = attempts.as_array().unwrap().clone();
            attempts.iter().filter(|a| a["ended_ms"].is_null()).count()
        })
        .sum();
    assert_eq!(running, 2, "one running attempt per task");
    let records_in: f64 = addresses
        .iter()
        .flat_map(|address| {
            let text = crate::harness::metrics_at(address);
            [0, 1].map(|task| {
                metric_in(
                    &text,
                    &format!("weir_records_in_total{{job=\"shown\",task=\"{task}\"}}"),
                )
            })
        })
        .flatten()
        .sum();
    assert!(records_in > 0.0, "no records counted in");
    cluster.weir_ok(&["savepoint", "shown"]);
    let (_, savepoints) = get_json(&follower_address, "/api/v1/jobs/shown/savepoints");
    let path = savepoints[0]["path"].as_str().unwrap_or_default();
    assert!(path.starts_with("savepoints/shown/"), "{savepoints}");

    // The page, in a browser: the leader and the job, then a screenshot.
    let profile = tempfile::tempdir().unwrap();
    let leader_id = status["leader"]["id"].as_str().unwrap().to_string();
    let (shown, dom) = page_leader(&follower_address, profile.path());
    assert_eq!(shown, leader_id, "the page does not show the leader: {dom}");
    assert!(dom.contains("data-job=\"shown\""), "the page does not list the job");
    assert!(dom.contains("RUNNING"), "the page does not show the job running");
    let screenshot = cluster.path("dashboard.png");
    chromium(
        &format!("http://{follower_address}/"),
        &format!("--screenshot={}", screenshot.display()),
        profile.path(),
    );
    assert!(
        std::fs::metadata(&screenshot).map_or(0, |m| m.len()) > 10_000,
        "no screenshot"
    );
    if let Some(keep) = std::env::var_os("WEIR_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&screenshot, keep).unwrap();
    }

    // kill -9 of the leader: the page the survivor serves shows the new one.
    cluster.signal(leader, "KILL");
    let new_leader = cluster.leader_pid_after(Some(leader));
    assert_eq!(new_leader, follower);
    let new_id = cluster.status()["leader"]["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, leader_id);
    wait_for("the page to show the new leader", Duration::from_secs(30), || {
        (page_leader(&follower_address, profile.path()).0 == new_id).then_some(())
    });
}
