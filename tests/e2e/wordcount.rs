//! The keyed example: running counts per word from a file source, kept
//! across a failover.

use std::io::Write;
use std::time::Duration;

use crate::harness::{read_lines, wait_for, Cluster};

/// What wordcount must emit for `lines`: `word count` per word, counts running.
fn expected(lines: &[&str]) -> Vec<String> {
    let mut counts = std::collections::HashMap::new();
    let mut out = Vec::new();
    for word in lines.iter().flat_map(|l| l.split_whitespace()) {
        let count = counts.entry(word.to_lowercase()).or_insert(0);
        *count += 1;
        out.push(format!("{} {count}", word.to_lowercase()));
    }
    out
}

#[test]
fn wordcount_keeps_its_counts_across_a_failover() {
    let mut cluster = Cluster::new();
    cluster.start_supervisor();
    cluster.start_supervisor();
    let input = cluster.path("words.txt");
    let first = ["the quick brown fox", "jumps over the lazy dog", "The End"];
    std::fs::write(&input, first.join("\n") + "\n").unwrap();
    let source = format!("file:{}", input.display());
    let out = cluster.deploy("wordcount", "words", &["--source", &source]);

    let want = expected(&first);
    wait_for("the first counts", Duration::from_secs(30), || {
        (read_lines(&out) == want).then_some(())
    });

    let runner = cluster.runner_pid("words");
    cluster.signal(runner, "KILL");
    let second = ["the fox again", "and THE dog"];
    let mut file = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
    file.write_all((second.join("\n") + "\n").as_bytes()).unwrap();
    wait_for("the job to move", Duration::from_secs(30), || {
        (cluster.runner_pid("words") != runner).then_some(())
    });

    let want = expected(&[&first[..], &second[..]].concat());
    wait_for(
        "the counts to carry on after the failover",
        Duration::from_secs(30),
        || (read_lines(&out) == want).then_some(()),
    );
}
