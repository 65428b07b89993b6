//! Failover: kill -9 of the leader, repeatedly, while the counter runs; a
//! killed supervisor removed by its peers before its session expires; a
//! live one wrongly removed; a paused leader deposed.

use std::time::Duration;

use crate::harness::{assert_counter_sequence, read_lines, wait_for, wait_for_lines, Cluster};

#[test]
fn counter_output_is_exactly_once_across_repeated_leader_kills() {
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    let out = cluster.deploy("counter", "counter", &[]);

    let mut seen = 0;
    for round in 0..3 {
        seen = wait_for(
            &format!("output to grow past {} lines (round {round})", seen + 20),
            Duration::from_secs(60),
            || {
                let n = read_lines(&out).len();
                (n >= seen + 20).then_some(n)
            },
        );
        cluster.replace_runner("counter");
    }
    let lines = wait_for("output after the last failover", Duration::from_secs(60), || {
        let lines = read_lines(&out);
        (lines.len() >= seen + 20).then_some(lines)
    });
    assert_counter_sequence(&lines);
    let job = cluster.job("counter").expect("counter is listed");
    assert_eq!(job["state"], "RUNNING", "{job}");
    assert!(
        job["last_checkpoint"]["epoch"].as_u64().unwrap() >= 4,
        "three kills make at least epoch 4: {job}"
    );
}

/// The sum of the even or odd numbers of window `k` (numbers 100k..100k+99).
fn window_sum(k: i64, odd: bool) -> i64 {
    (100 * k..100 * k + 100).filter(|n| (n % 2 != 0) == odd).sum()
}

#[test]
fn event_time_windows_fire_exactly_once_across_leader_kills() {
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    let out = cluster.deploy(
        "event_counter",
        "windows",
        &[
            "--source",
            "sequence:rate=2000,timestamp=every:10ms",
            "--watermark",
            "max-delay=0s",
        ],
    );
    let mut seen = 0;
    for round in 0..2 {
        seen = wait_for(
            &format!("windows to pass {} lines (round {round})", seen + 10),
            Duration::from_secs(60),
            || {
                let n = read_lines(&out).len();
                (n >= seen + 10).then_some(n)
            },
        );
        cluster.replace_runner("windows");
    }
    let lines = wait_for("windows after the last failover", Duration::from_secs(60), || {
        let lines = read_lines(&out);
        (lines.len() >= seen + 10).then_some(lines)
    });
    // Window k of 1 s holds the numbers 100k..100k+99, even then odd: each
    // window once, in order, none missing, whatever the kills cut.
    for (i, line) in lines.iter().enumerate() {
        let (k, odd) = (i as i64 / 2, i % 2 == 1);
        let parity = if odd { "odd" } else { "even" };
        assert_eq!(
            line,
            &format!("{} {parity} {}", k * 1000, window_sum(k, odd)),
            "line {i} of {lines:?}"
        );
    }
}

#[test]
fn the_last_window_of_a_quiet_stream_is_emitted_by_a_timer() {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    // 150 readings 10 ms of event time apart: window 0 closes when 1000
    // comes; window 1000 would wait for a watermark that never comes.
    let input = cluster.path("readings.jsonl");
    let lines: String = (0..150)
        .map(|n| format!("{{\"n\": {n}, \"ts\": {}}}\n", n * 10))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let out = cluster.deploy(
        "event_counter",
        "quiet",
        &[
            "--source",
            &format!("file:timestamp=json:ts,path={}", input.display()),
            "--watermark",
            "max-delay=0s",
            "--config",
            "idle_flush_ms=500",
        ],
    );
    let lines = wait_for(
        "both windows, the last by the idle timer",
        Duration::from_secs(30),
        || {
            let lines = read_lines(&out);
            (lines.len() >= 4).then_some(lines)
        },
    );
    let sum = |range: std::ops::Range<i64>, odd: bool| -> i64 { range.filter(|n| (n % 2 != 0) == odd).sum() };
    assert_eq!(
        lines,
        vec![
            format!("0 even {}", sum(0..100, false)),
            format!("0 odd {}", sum(0..100, true)),
            format!("1000 even {}", sum(100..150, false)),
            format!("1000 odd {}", sum(100..150, true)),
        ]
    );
}

#[test]
fn dead_letters_are_exactly_once_across_leader_kills() {
    let mut cluster = Cluster::new();
    for _ in 0..3 {
        cluster.start_supervisor();
    }
    let dead = cluster.path("refused.jsonl");
    let out = cluster.deploy(
        "faulty",
        "refusing",
        &[
            "--source",
            "sequence:rate=3000",
            "--config",
            "reject_every=7",
            "--on-error",
            &format!("dead-letter:file:{}", dead.display()),
        ],
    );
    let mut seen = 0;
    for round in 0..2 {
        seen = wait_for(
            &format!("dead letters to pass {} (round {round})", seen + 20),
            Duration::from_secs(60),
            || {
                let n = read_lines(&dead).len();
                (n >= seen + 20).then_some(n)
            },
        );
        cluster.replace_runner("refusing");
    }
    let letters = wait_for("dead letters after the last failover", Duration::from_secs(60), || {
        let lines = read_lines(&dead);
        (lines.len() >= seen + 20).then_some(lines)
    });
    // Every multiple of 7 once, in order, with its reason; every other number once in the output.
    for (i, line) in letters.iter().enumerate() {
        let letter: serde_json::Value = serde_json::from_str(line).unwrap();
        let n = 7 * i as i64;
        assert_eq!(letter["value"], n.to_string(), "dead letter {i}: {line}");
        assert_eq!(letter["late"], false, "{line}");
        let reason = letter["reason"].as_str().unwrap();
        assert!(reason.contains(&format!("{n} is a multiple of reject_every")), "{line}");
    }
    let output: Vec<i64> = read_lines(&out).iter().map(|l| l.parse().unwrap()).collect();
    let expected: Vec<i64> = (0..).filter(|n| n % 7 != 0).take(output.len()).collect();
    assert_eq!(output, expected);
}

#[test]
fn a_late_record_goes_to_the_dead_letters_and_is_counted() {
    let mut cluster = Cluster::new();
    let supervisor = cluster.start_supervisor();
    // Window 0 closes at the reading at 1000; a reading at 5 after that is late.
    let input = cluster.path("readings.jsonl");
    let lines: String = (0..=100)
        .map(|n| format!("{{\"n\": {n}, \"ts\": {}}}\n", n * 10))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let dead = cluster.path("late.jsonl");
    let out = cluster.deploy(
        "event_counter",
        "late",
        &[
            "--source",
            &format!("file:timestamp=json:ts,path={}", input.display()),
            "--watermark",
            "max-delay=0s",
            "--on-error",
            &format!("dead-letter:file:{}", dead.display()),
        ],
    );
    wait_for_lines(&out, 0, 2);
    let mut file = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
    std::io::Write::write_all(&mut file, b"{\"n\": 9999, \"ts\": 5}\n").unwrap();
    let letters = wait_for("the late reading's dead letter", Duration::from_secs(30), || {
        let lines = read_lines(&dead);
        (!lines.is_empty()).then_some(lines)
    });
    let letter: serde_json::Value = serde_json::from_str(&letters[0]).unwrap();
    assert_eq!(letter["late"], true, "{letter}");
    assert_eq!(letter["timestamp"], 5, "{letter}");
    assert_eq!(letter["value"], "{\"n\": 9999, \"ts\": 5}", "{letter}");
    assert!(
        letter["reason"].as_str().unwrap().contains("window starting at 0 ms"),
        "{letter}"
    );
    let sum = |odd: bool| -> i64 { (0..100).filter(|n| (n % 2 != 0) == odd).sum() };
    assert_eq!(
        read_lines(&out),
        vec![format!("0 even {}", sum(false)), format!("0 odd {}", sum(true))],
        "window 0 fired once, without the late reading"
    );
    let series = "weir_records_late_total{job=\"late\"}";
    wait_for("the late record to be counted", Duration::from_secs(10), || {
        (cluster.metric(supervisor, series) == Some(1.0)).then_some(())
    });
    assert_eq!(cluster.job("late").unwrap()["state"], "RUNNING");
}

#[test]
fn paused_leader_is_deposed_and_writes_nothing_when_it_wakes() {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    cluster.start_supervisor();
    let out = cluster.deploy("counter", "counter", &[]);
    let seen = wait_for_lines(&out, 0, 20);

    let old = cluster.leader_pid();
    cluster.signal(old, "STOP");
    let new = cluster.leader_pid_after(Some(old));
    let seen = wait_for_lines(&out, seen, 20);

    cluster.signal(old, "CONT");
    wait_for(
        "the old leader to rejoin as a follower",
        Duration::from_secs(30),
        || {
            let status = cluster.status();
            let replicas = status["replicas"].as_array().cloned().unwrap_or_default();
            replicas
                .iter()
                .any(|r| r["pid"] == old && r["role"] == "follower")
                .then_some(())
        },
    );
    assert_eq!(cluster.leader_pid(), new, "the woken leader took the lead back");
    let seen = wait_for_lines(&out, seen, 20);
    assert_counter_sequence(&read_lines(&out)[..seen]);
    assert!(cluster.log_of(old).contains("stepped down"), "{}", cluster.log_of(old));
    // A stopped process keeps its connections and its port: nobody took it for dead.
    assert!(!cluster.logs().contains("refuses connections"), "{}", cluster.logs());
}

#[test]
fn sigterm_hands_off_without_waiting_for_session_expiry() {
    // A takeover faster than the session did not wait for it to expire
    // (nobody takes a process that exits for dead before it closed its session).
    let session = Duration::from_secs(4);
    let mut cluster = Cluster::with_session_timeout("4s");
    cluster.start_supervisor();
    cluster.start_supervisor();
    let out = cluster.deploy("counter", "counter", &[]);
    let seen = wait_for_lines(&out, 0, 20);

    let old = cluster.leader_pid();
    let asked = std::time::Instant::now();
    cluster.signal(old, "TERM");
    cluster.leader_pid_after(Some(old));
    let took = asked.elapsed();
    assert!(
        took < session,
        "handoff took {took:?}, as long as a session expiry\n{}",
        cluster.logs()
    );
    assert!(
        cluster.wait_exit(old),
        "the old leader did not exit cleanly\n{}",
        cluster.log_of(old)
    );
    assert!(cluster.log_of(old).contains("handing off leadership"));
    // It left no node behind for its peers to remove once its port closed
    // (whether they saw it go depends on when they last listed the workers).
    let new = cluster.leader_pid();
    assert_eq!(cluster.metric(new, "weir_peers_deposed_total"), Some(0.0));

    let seen = wait_for_lines(&out, seen, 20);
    assert_counter_sequence(&read_lines(&out)[..seen]);
}

/// Output past `seen + 20` lines within `within`.
fn lines_within(out: &std::path::Path, seen: usize, within: Duration, after: &str) -> usize {
    wait_for(&format!("output to carry on after {after}"), within, || {
        let n = read_lines(out).len();
        (n >= seen + 20).then_some(n)
    })
}

#[test]
fn a_killed_leader_or_worker_is_replaced_before_its_session_could_expire() {
    // Sessions far longer than the waits below: the job moves in time only
    // if the dead supervisor's peers removed it at once.
    let session = Duration::from_secs(20);
    let within = session / 2;
    let mut cluster = Cluster::with_session_timeout("20s");
    let mut pids: Vec<u32> = (0..3).map(|_| cluster.start_supervisor()).collect();
    let mut started = pids.clone();
    let out = cluster.deploy("counter", "counter", &[]);
    wait_for_lines(&out, 0, 20);
    cluster.wait_watching(3);

    let leader = cluster.leader_pid();
    let epoch = cluster.status()["leader"]["epoch"].as_u64().unwrap();
    let mut seen = read_lines(&out).len();
    cluster.signal(leader, "KILL");
    pids.retain(|&p| p != leader);
    wait_for("a new leader", within, || {
        let status = cluster.status();
        (status["leader"]["epoch"].as_u64()? > epoch && status["leader"]["pid"] != leader).then_some(())
    });
    lines_within(&out, seen, within, "the leader's kill -9");

    // Now the supervisor that runs the job, leader or not.
    pids.push(cluster.start_supervisor());
    started.push(*pids.last().unwrap());
    cluster.wait_watching(3);
    let runner = cluster.runner_pid("counter");
    seen = read_lines(&out).len();
    cluster.signal(runner, "KILL");
    pids.retain(|&p| p != runner);
    seen = lines_within(&out, seen, within, "the runner's kill -9");

    assert_counter_sequence(&read_lines(&out)[..seen]);
    // Each kill was seen and acted on (the first perhaps by the runner
    // killed second, whose counter went with it).
    let removals: usize = (started.iter())
        .map(|&p| cluster.log_of(p).matches("died (its connection ended").count())
        .sum();
    assert!(removals >= 2, "{removals} removals logged\n{}", cluster.logs());
    let deposed: f64 = (pids.iter())
        .filter_map(|&p| cluster.metric(p, "weir_peers_deposed_total"))
        .sum();
    assert!(deposed >= 1.0, "no survivor counted a removal\n{}", cluster.logs());
}

/// Waits until both `pids` are replicas again (each with a latch node).
fn wait_both_listed(cluster: &Cluster, pids: &[u32], who: &str) {
    wait_for(&format!("{who} to join again"), Duration::from_secs(30), || {
        let status = cluster.status();
        let replicas = status["replicas"].as_array().cloned().unwrap_or_default();
        (replicas.len() == 2 && pids.iter().all(|pid| replicas.iter().any(|r| r["pid"] == *pid))).then_some(())
    });
}

#[test]
fn a_supervisor_wrongly_taken_for_dead_hands_its_work_off_and_loses_nothing() {
    let mut cluster = Cluster::new();
    let pids: Vec<u32> = (0..2).map(|_| cluster.start_supervisor()).collect();
    let out = cluster.deploy("counter", "counter", &[]);
    let seen = wait_for_lines(&out, 0, 20);

    // What a peer fooled by a firewall's reset would do. First to the
    // supervisor with nothing to write, which must notice by itself.
    let runner = cluster.runner_pid("counter");
    let idle = *pids.iter().find(|&&pid| pid != runner).unwrap();
    cluster.remove_from_cluster(idle);
    wait_both_listed(&cluster, &pids, "the idle supervisor");
    assert!(
        cluster.log_of(idle).contains("the worker node was removed by a peer"),
        "{}",
        cluster.log_of(idle)
    );
    // Then to the runner, which is likely the leader too.
    cluster.remove_from_cluster(runner);
    let seen = wait_for_lines(&out, seen, 20);
    wait_both_listed(&cluster, &pids, "the runner");
    let seen = wait_for_lines(&out, seen, 20);
    assert_counter_sequence(&read_lines(&out)[..seen]);
    assert!(cluster.is_alive(runner), "{}", cluster.log_of(runner));
}
