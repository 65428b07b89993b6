//! Access: with digest authentication on, every znode weir creates is
//! closed to sessions without the cluster's credentials; with SASL
//! required by the server, only its users get a session, and another user
//! none of weir's znodes; over mutual TLS to ZooKeeper, a client without
//! the certificate gets nowhere; a guest
//! reaches no environment, file or socket its spec does not grant.

use std::time::Duration;

use crate::deploy::assert_refused;
use crate::harness::{
    assert_counter_sequence, job_wasm, read_lines, wait_for, wait_for_lines, weir_bin, Cluster, SESSION_TIMEOUT,
};
use crate::zookeeper::ZooKeeper;

#[test]
fn digest_auth_closes_every_znode_to_other_credentials() {
    let mut cluster = Cluster::new();
    cluster.set_env("WEIR_ZK_AUTH", "weir:s3cret");
    cluster.start_supervisor();
    let out = cluster.deploy("counter", "guarded", &[]);
    wait_for_lines(&out, 0, 5);
    assert_eq!(cluster.job("guarded").unwrap()["state"], "RUNNING");

    for args in [&["jobs"][..], &["cancel", "guarded"], &["status"]] {
        let intruder = cluster.weir(&[args, &["--zk-auth", "intruder:guess"]].concat());
        let stderr = String::from_utf8_lossy(&intruder.stderr);
        assert!(
            !intruder.status.success(),
            "weir {args:?} with other credentials succeeded"
        );
        assert!(stderr.contains("set --zk-auth"), "weir {args:?}: {stderr}");
    }
    assert_eq!(
        cluster.job("guarded").unwrap()["desired"],
        "running",
        "the intruder cancelled the job"
    );

    let malformed = cluster.weir(&["jobs", "--zk-auth", "no-colon"]);
    assert!(String::from_utf8_lossy(&malformed.stderr).contains("--zk-auth must be `user:password`"));
}

/// Two supervisors run the counter as `name` and carry it on across a
/// `kill -9` of the leader, its counts exact.
fn fails_over_a_leader_kill(cluster: &mut Cluster, name: &str) {
    cluster.start_supervisor();
    cluster.start_supervisor();
    let out = cluster.deploy("counter", name, &[]);
    let before = wait_for_lines(&out, 0, 5);
    let leader = cluster.leader_pid_after(None);
    cluster.signal(leader, "KILL");
    cluster.leader_pid_after(Some(leader));
    wait_for_lines(&out, before, 5);
    assert_counter_sequence(&read_lines(&out));
}

#[test]
fn a_cluster_authenticated_by_sasl_fails_over_and_other_users_get_nowhere() {
    let zk = ZooKeeper::start_sasl(&[("weir", "s3cret"), ("other", "pass")]);
    let mut cluster = Cluster::with(zk, SESSION_TIMEOUT);
    cluster.set_env("WEIR_ZK_SASL", "weir:s3cret");
    fails_over_a_leader_kill(&mut cluster, "sasl");

    let attempt = |sasl: Option<&str>| {
        let mut command = std::process::Command::new(weir_bin());
        cluster.env(&mut command);
        command
            .args(["cancel", "sasl", "--connect-timeout", "2s"])
            .env_remove("WEIR_ZK_SASL");
        if let Some(sasl) = sasl {
            command.env("WEIR_ZK_SASL", sasl);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success(), "weir cancel got through with {sasl:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let wrong = attempt(Some("weir:guess"));
    assert!(
        wrong.contains("rejected the --zk-auth or --zk-sasl credentials"),
        "{wrong}"
    );
    let other = attempt(Some("other:pass"));
    assert!(other.contains("set --zk-auth"), "{other}");
    let anonymous = attempt(None);
    assert!(
        anonymous.contains("require authentication: set --zk-sasl user:password"),
        "{anonymous}"
    );
    let malformed = attempt(Some("no-colon"));
    assert!(malformed.contains("--zk-sasl must be `user:password`"), "{malformed}");
    assert_eq!(cluster.job("sasl").unwrap()["desired"], "running");
}

#[test]
fn a_cluster_over_mutual_tls_to_zookeeper_fails_over_and_clients_without_the_certificate_get_nowhere() {
    let zk = ZooKeeper::start_tls();
    let tls = zk.tls.clone().expect("a TLS server");
    let mut cluster = Cluster::with(zk, SESSION_TIMEOUT);
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    cluster.set_env("WEIR_ZK_TLS_CA", &path(&tls.ca));
    cluster.set_env("WEIR_ZK_TLS_CERT", &path(&tls.cert));
    cluster.set_env("WEIR_ZK_TLS_KEY", &path(&tls.key));
    fails_over_a_leader_kill(&mut cluster, "sealed");

    // Without the client certificate, and in plaintext, the TLS port lets nothing through.
    let attempt = |tls_env: &[(&str, String)]| {
        let out = std::process::Command::new(weir_bin())
            .args(["jobs", "--connect-timeout", "2s", "--zookeeper", &cluster.zk.connect])
            .env_remove("WEIR_ZK_TLS_CA")
            .env_remove("WEIR_ZK_TLS_CERT")
            .env_remove("WEIR_ZK_TLS_KEY")
            .envs(tls_env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(!out.status.success(), "weir jobs got through with {tls_env:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let no_certificate = attempt(&[("WEIR_ZK_TLS_CA", path(&tls.ca))]);
    assert!(no_certificate.contains("secureClientPort"), "{no_certificate}");
    let plaintext = attempt(&[]);
    assert!(plaintext.contains("cannot reach ZooKeeper"), "{plaintext}");
    let no_ca = attempt(&[
        ("WEIR_ZK_TLS_CERT", path(&tls.cert)),
        ("WEIR_ZK_TLS_KEY", path(&tls.key)),
    ]);
    assert!(no_ca.contains("--zk-tls-cert needs --zk-tls-ca"), "{no_ca}");
    let unreadable = attempt(&[("WEIR_ZK_TLS_CA", path(&cluster.path("storage")))]);
    assert!(
        unreadable.contains("--zk-tls-ca") && unreadable.contains("cannot read"),
        "{unreadable}"
    );
    let swapped = attempt(&[
        ("WEIR_ZK_TLS_CA", path(&tls.ca)),
        ("WEIR_ZK_TLS_CERT", path(&tls.key)),
        ("WEIR_ZK_TLS_KEY", path(&tls.key)),
    ]);
    assert!(swapped.contains("holds no PEM certificate"), "{swapped}");
    let half = attempt(&[("WEIR_ZK_TLS_CA", path(&tls.ca)), ("WEIR_ZK_TLS_CERT", path(&tls.cert))]);
    assert!(half.contains("go together"), "{half}");
}

#[test]
fn guests_get_no_environment_filesystem_or_network() {
    let mut cluster = Cluster::new();
    cluster.set_env("WEIR_PROBE_SECRET", "visible-to-the-host-only");
    cluster.start_supervisor();
    // ZooKeeper listens on loopback: a guest with network access could reach it.
    let zookeeper = cluster.zk.connect.split(',').next().unwrap().to_string();
    let out = cluster.deploy("faulty", "probe", &["--config", &format!("probe={zookeeper}")]);
    let report = wait_for("the probe's report", Duration::from_secs(30), || {
        read_lines(&out).into_iter().next()
    });
    assert_eq!(report, "env=0 fs=denied net=denied");
}

#[test]
fn granted_environment_directory_and_network_are_reachable_and_nothing_else() {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    let zookeeper = cluster.zk.connect.split(',').next().unwrap().to_string();
    let data = cluster.path("reference-data");
    std::fs::create_dir(&data).unwrap();
    let out = cluster.deploy(
        "faulty",
        "probe",
        &[
            "--config",
            &format!("probe={zookeeper}"),
            "--config",
            "probe_dir=/data",
            "--env",
            "REGION=eu",
            "--dir",
            &format!("{}::/data", data.display()),
            "--allow-network-to",
            "127.0.0.1",
        ],
    );
    let report = wait_for("the probe's report", Duration::from_secs(30), || {
        read_lines(&out).into_iter().next()
    });
    assert_eq!(report, "env=1 fs=readable net=connected");
    let grants = &cluster.job("probe").unwrap()["grants"];
    assert_eq!(
        grants["env"],
        serde_json::json!(["REGION"]),
        "values stay out of `weir jobs`: {grants}"
    );
    assert_eq!(grants["dirs"][0]["guest"], "/data");
    assert_eq!(grants["network_to"], serde_json::json!(["127.0.0.1/32"]));

    // The network granted without a list leaves loopback (here: ZooKeeper) closed.
    let out = cluster.deploy(
        "faulty",
        "probe-open-network",
        &["--config", &format!("probe={zookeeper}"), "--allow-network"],
    );
    let report = wait_for("the second probe's report", Duration::from_secs(30), || {
        read_lines(&out).into_iter().next()
    });
    assert_eq!(report, "env=0 fs=denied net=denied");

    let faulty = job_wasm("faulty");
    let faulty = faulty.to_str().unwrap();
    assert_refused(
        &cluster,
        &["deploy", faulty, "--dir", "/nonexistent::/data"],
        "--dir /nonexistent: no such directory",
    );
    assert_refused(
        &cluster,
        &["deploy", faulty, "--dir", "data"],
        "expected an absolute directory",
    );
}
