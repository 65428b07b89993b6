//! The Nexmark queries from the CLI: `jobs/nexmark` deployed over
//! `--source nexmark`, one job per query, each file of results exactly
//! what the same query code gives natively over the same events (the
//! generator's, for the same seed), a leader `kill -9` in between. Half
//! the queries read JSON events, half binary ones.

use std::time::Duration;

use weir::connectors::nexmark::Generator;
use weir::spec::{EventEncoding, SourceSpec};

use crate::harness::{read_lines, wait_for, Cluster};

/// What the source makes.
const EVENTS: u64 = 200_000;
const EVENT_RATE: u64 = 10_000;
const SEED: u64 = 7;

/// The lines `query` gives natively over the source's events, every
/// window fired: a source that ends takes the watermark to the end of time.
fn native(query: &str, events: u64, encoding: EventEncoding) -> Vec<String> {
    let generator = Generator::new(EVENT_RATE, SEED);
    let query: nexmark::Query = query.parse().unwrap();
    let mut state = nexmark::State::default();
    let mut lines = Vec::new();
    for n in 0..events {
        let mut value = Vec::new();
        generator.event(n).encode(encoding, &mut value);
        if !query.reads(nexmark::model::kind(&value)) {
            continue;
        }
        let event = nexmark::model::read(&value).unwrap();
        // The generator is in order: nothing is late.
        state
            .on_event(query, &event, &mut |line| lines.push(line.to_string()))
            .unwrap();
    }
    // The source ended: its watermark went to the end of time, firing every window.
    state.on_watermark(query, i64::MAX, &mut |line| lines.push(line.to_string()));
    lines
}

#[test]
fn nexmark_queries_give_what_their_native_twins_give_across_a_failover() {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    cluster.start_supervisor();
    // Fewer events for the queries that emit per bid.
    let (json, binary) = (EventEncoding::Json, EventEncoding::Binary);
    let queries = [
        ("q0", 60_000, json),
        ("q1", 60_000, binary),
        ("q2", EVENTS, binary),
        ("q3", EVENTS, json),
        ("q4", EVENTS, binary),
        ("q5", EVENTS, json),
        ("q7", EVENTS, binary),
        ("q8", EVENTS, binary),
    ];
    let mut outs = Vec::new();
    for (query, events, encoding) in queries {
        let source = SourceSpec::Nexmark {
            rate: 20_000,
            event_rate: Some(EVENT_RATE),
            seed: SEED,
            events: Some(events),
            encoding,
        }
        .to_string();
        let config = format!("query={query}");
        let out = cluster.deploy(
            "nexmark",
            query,
            &["--source", &source, "--config", &config, "--watermark", "max-delay=4s"],
        );
        outs.push((query, events, encoding, out));
    }
    // Once the jobs are under way (about a second into the source's events), the leader dies.
    wait_for("the jobs to be under way", Duration::from_secs(60), || {
        cluster.job("q3")?["last_checkpoint"].as_object().map(drop)
    });
    let leader = cluster.leader_pid();
    cluster.signal(leader, "KILL");
    cluster.start_supervisor();
    for (query, events, encoding, out) in &outs {
        let expected = native(query, *events, *encoding);
        assert!(
            !expected.is_empty(),
            "{query} gives nothing natively: the test would prove nothing"
        );
        eprintln!("{query}: {} lines, as natively", expected.len());
        let got = wait_for(
            &format!("{query}'s {} lines", expected.len()),
            Duration::from_secs(120),
            || {
                let lines = read_lines(out);
                (lines.len() >= expected.len()).then_some(lines)
            },
        );
        assert_eq!(got.len(), expected.len(), "{query}: more lines than natively");
        assert_eq!(got, expected, "{query}: other lines than natively");
    }
}
