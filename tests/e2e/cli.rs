//! What a new user found at the command line (issue 9), each as they ran it:
//! the refusals deploy owes them, output into a closed pipe, the status
//! table, a replica with the wrong storage dir, and deleting a cancelled job.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::deploy::assert_refused;
use crate::harness::{job_wasm, wait_for, wait_for_lines, weir_bin, Cluster};

#[test]
fn deploy_refuses_what_would_fail_later_with_one_line_naming_the_fix() {
    let cluster = Cluster::new();
    let counter = job_wasm("counter");
    let counter = counter.to_str().unwrap();
    let dir = cluster.path("a-dir");
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.to_str().unwrap();

    assert_refused(
        &cluster,
        &["deploy", counter, "--memory-limit", "1"],
        "cannot start within --memory-limit 1 MiB",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--memory-limit", "0"],
        "--memory-limit must be at least 1",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--call-timeout", "0s"],
        "--call-timeout must be greater than zero",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--source", &format!("file:{dir}")],
        "is a directory",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--sink", &format!("file:{dir}")],
        "is a directory",
    );
    assert_refused(&cluster, &["deploy", counter, "--config", "=v"], "has no key");
    assert_refused(
        &cluster,
        &["deploy", counter, "--config", "a=1", "--config", "a=2"],
        "--config a=... is given twice",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--cluster-id", "a/b"],
        "--cluster-id `a/b` must be",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--zk-root", "weir"],
        "--zk-root `weir` must be",
    );
    assert_refused(
        &cluster,
        &["deploy", counter, "--storage-dir", "file:///"],
        "cannot be the filesystem root",
    );
    // Ten settings of 120 KB: more than a znode holds.
    let mut big = vec!["deploy".to_string(), counter.to_string()];
    for i in 0..10 {
        big.extend(["--config".to_string(), format!("k{i}={}", "x".repeat(120_000))]);
    }
    let keyed: Vec<&str> = big.iter().map(String::as_str).collect();
    assert_refused(&cluster, &keyed, "over the 1000000 ZooKeeper can hold in a znode");
    assert_refused(&cluster, &["deploy"], "<MODULE>");
    assert_refused(&cluster, &["cancel"], "<NAME>");

    let out = cluster.weir(&[
        "deploy",
        counter,
        "--name",
        "first",
        "--sink",
        &format!("file:{}", cluster.path("shared.out").display()),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no supervisor is running"),
        "a deploy to a cluster with no supervisor says so"
    );
    assert_refused(
        &cluster,
        &[
            "deploy",
            counter,
            "--name",
            "second",
            "--sink",
            &format!("file:{}", cluster.path("shared.out").display()),
        ],
        "is already written by job `first`",
    );
    let shared = format!("dead-letter:file:{}", cluster.path("shared.out").display());
    assert_refused(
        &cluster,
        &["deploy", counter, "--name", "second", "--on-error", &shared],
        "is already written by job `first`",
    );
    let own = cluster.path("own.out").display().to_string();
    assert_refused(
        &cluster,
        &[
            "deploy",
            counter,
            "--name",
            "second",
            "--sink",
            &format!("file:{own}"),
            "--on-error",
            &format!("dead-letter:file:{own}"),
        ],
        "is also the job's --sink",
    );
    assert_refused(
        &cluster,
        &[
            "deploy",
            counter,
            "--name",
            "second",
            "--on-error",
            "dead-letter:nowhere",
        ],
        "--on-error dead-letter: unknown sink `nowhere`",
    );
    assert!(cluster.job("second").is_none(), "a refused deploy left a job behind");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let cluster = Cluster::new();
    let counter = job_wasm("counter");
    for i in 0..40 {
        cluster.weir_ok(&["deploy", counter.to_str().unwrap(), "--name", &format!("j{i}")]);
    }
    // `weir jobs | head -1`: the reader goes after one line.
    let mut jobs = Command::new(weir_bin())
        .args(["jobs", "--zookeeper", &cluster.zk.connect, "--cluster-id", "test"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    jobs.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = jobs.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn status_shows_each_replicas_address() {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    let status = wait_for("a leader", Duration::from_secs(30), || {
        let status = cluster.status();
        status["replicas"][0]["address"].as_str().map(str::to_string)
    });
    let table = cluster.weir_ok(&["status"]);
    assert!(table.lines().nth(1).unwrap().contains("ADDRESS"), "{table}");
    assert!(table.contains(&status), "{table}");

    // Bound to every interface, a replica names its host; told where it
    // is reached, it says that.
    cluster.set_env("WEIR_HTTP", "0.0.0.0:0");
    cluster.start_supervisor();
    cluster.set_env("WEIR_ADVERTISE_HTTP", "weir-3.example:8080");
    cluster.start_supervisor();
    let addresses = wait_for("three replicas", Duration::from_secs(30), || {
        let status = cluster.status();
        let replicas = status["replicas"].as_array()?.clone();
        let addresses: Vec<String> = replicas
            .iter()
            .filter_map(|r| r["address"].as_str().map(str::to_string))
            .collect();
        (addresses.len() == 3).then_some(addresses)
    });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let named = format!("{}:", host.trim());
    assert!(addresses.iter().any(|a| a.starts_with(&named)), "{addresses:?}");
    assert!(addresses.iter().any(|a| a == "weir-3.example:8080"), "{addresses:?}");
    assert!(!addresses.iter().any(|a| a.starts_with("0.0.0.0")), "{addresses:?}");
    let out = cluster.weir(&["supervisor", "--advertise-http", "weir-3.example"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("give HOST:PORT"), "{stderr}");
}

#[test]
fn a_replica_given_another_storage_dir_is_refused() {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    let out = cluster.deploy("counter", "c", &[]);
    wait_for_lines(&out, 0, 5);
    let other = format!("file://{}", cluster.path("elsewhere").display());
    let replica = cluster.weir(&["supervisor", "--id", "stray", "--storage-dir", &other]);
    assert!(!replica.status.success());
    let stderr = String::from_utf8_lossy(&replica.stderr);
    assert!(
        stderr.contains("every replica and the CLI must use the same --storage-dir"),
        "{stderr}"
    );
    assert_refused(
        &cluster,
        &[
            "deploy",
            job_wasm("counter").to_str().unwrap(),
            "--name",
            "d",
            "--storage-dir",
            &other,
        ],
        "keeps its modules and checkpoints in",
    );
    assert_eq!(
        cluster.job("c").unwrap()["restarts"],
        0,
        "the stray replica cost the job nothing"
    );
}

#[test]
fn delete_removes_a_cancelled_job_and_its_checkpoints_but_not_its_output() {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    let out = cluster.deploy("counter", "gone", &[]);
    wait_for_lines(&out, 0, 5);
    assert_refused(&cluster, &["delete", "gone"], "cancel it first");
    cluster.weir_ok(&["cancel", "gone"]);
    assert!(
        cluster.weir_ok(&["jobs"]).contains("weir delete NAME"),
        "weir jobs says how to remove it"
    );
    let checkpoints = cluster.path("storage/checkpoints/gone");
    assert!(checkpoints.is_dir());
    let said = cluster.weir_ok(&["delete", "gone"]);
    assert!(said.contains("deleted job `gone`"), "{said}");
    assert!(cluster.job("gone").is_none(), "weir jobs still lists it");
    assert!(
        std::fs::read_dir(&checkpoints).map_or(true, |mut d| d.next().is_none()),
        "its checkpoints are gone"
    );
    assert!(!std::fs::read(&out).unwrap().is_empty(), "its output stays");
    assert_refused(&cluster, &["delete", "gone"], "no job named `gone`");
}

/// One HTTP request to `address`; returns the status line.
fn http(address: &str, request: &str) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .write_all(format!("{request}\r\nHost: weir\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

#[test]
fn healthz_says_whether_the_supervisor_reaches_zookeeper() {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    let address = wait_for("the supervisor's address", Duration::from_secs(30), || {
        cluster.status()["replicas"][0]["address"].as_str().map(str::to_string)
    });
    let healthy = |request: &str| {
        let request = request.to_string();
        let address = address.clone();
        move || (http(&address, &request).contains(" 200 ")).then_some(())
    };
    wait_for(
        "/healthz to answer 200",
        Duration::from_secs(10),
        healthy("GET /healthz HTTP/1.1"),
    );
    assert!(
        http(&address, "GET /healthz?probe=1 HTTP/1.1").contains(" 200 "),
        "a query changes nothing"
    );
    assert!(http(&address, "POST /healthz HTTP/1.1").contains(" 405 "), "only GET");
    assert!(http(&address, "GET /nope HTTP/1.1").contains(" 404 "));
    assert!(http(&address, "GET /metrics HTTP/1.1").contains(" 200 "));

    crate::harness::send_signal(cluster.zk.pid(0), "STOP");
    wait_for(
        "/healthz to answer 503 while ZooKeeper is stopped",
        Duration::from_secs(20),
        || http(&address, "GET /healthz HTTP/1.1").contains(" 503 ").then_some(()),
    );
    crate::harness::send_signal(cluster.zk.pid(0), "CONT");
    wait_for(
        "/healthz to answer 200 again",
        Duration::from_secs(20),
        healthy("GET /healthz HTTP/1.1"),
    );
}

#[test]
fn a_config_file_gives_settings_that_env_vars_and_flags_override() {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    cluster.leader_pid_after(None);
    let file = cluster.path("weir.toml");
    std::fs::write(
        &file,
        format!("zookeeper = \"{}\"\ncluster-id = \"test\"\n", cluster.zk.connect),
    )
    .unwrap();
    // `weir status` of the cluster the settings name: `test` has a leader.
    let status = |args: &[&str], env: &[(&str, &str)]| -> serde_json::Value {
        let out = Command::new(weir_bin())
            .args(["status", "--output", "json"])
            .args(args)
            .env_remove("WEIR_ZOOKEEPER")
            .env_remove("WEIR_CLUSTER_ID")
            .env_remove("WEIR_CONFIG")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let file = file.to_str().unwrap();
    let from_file = status(&[], &[("WEIR_CONFIG", file)]);
    assert_eq!(from_file["cluster_id"], "test", "the file is not read");
    assert!(from_file["leader"].is_object(), "{from_file}");
    let from_env = status(&["--config-file", file], &[("WEIR_CLUSTER_ID", "other")]);
    assert_eq!(from_env["cluster_id"], "other", "the file beat the env var");
    assert!(from_env["leader"].is_null(), "{from_env}");
    let from_flag = status(
        &["--cluster-id", "test", "--config-file", file],
        &[("WEIR_CLUSTER_ID", "other")],
    );
    assert_eq!(from_flag["cluster_id"], "test", "the env var beat the flag");

    std::fs::write(cluster.path("bad.toml"), "zookeper = \"x\"\n").unwrap();
    let out = Command::new(weir_bin())
        .args(["jobs", "--config-file"])
        .arg(cluster.path("bad.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`zookeper` is not a setting"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, mark) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef weir"),
        ("fish", "complete -c weir"),
    ] {
        let out = Command::new(weir_bin()).args(["completions", shell]).output().unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && script.contains(mark), "{shell}: {script}");
        assert!(
            script.contains("savepoint") && script.contains("config-file"),
            "{shell}"
        );
    }
}
