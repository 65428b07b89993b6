//! Connector benchmarks against the real servers of the tests (run by
//! `scripts/bench`, ignored in the normal suite): Kafka -> job -> Kafka
//! beside a native consume-produce loop with the same client, end-to-end
//! latency, and the PostgreSQL sink's rows per second. Each prints Markdown.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::bench::{env_u64, logged_at, median, spread};
use crate::harness::{job_wasm, metric_in, wait_for, Cluster};
use crate::kafka_broker::{Input, Kafka};
use crate::postgres_server::Postgres;

/// Reads `topic` until it has `count` records; calls `seen` with each value.
fn read_all(kafka: &Kafka, topic: &str, count: u64, mut seen: impl FnMut(&[u8])) {
    let consumer = kafka.reader(topic, &format!("bench-{topic}"));
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut n = 0;
    while n < count {
        assert!(Instant::now() < deadline, "{topic}: {n} of {count} records");
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            seen(message.unwrap().payload().unwrap_or_default());
            n += 1;
        }
    }
}

/// The native twin of a Kafka -> Kafka job: consumes `from`
/// (`read_committed`) and produces each record's value to `to`, one
/// transaction per `interval`, with the sink's producer settings.
fn pass_through(kafka: &Kafka, from: &str, to: &str, count: u64, interval: Duration) {
    let consumer = kafka.reader(from, "bench-native");
    let producer: ThreadedProducer<DefaultProducerContext> = kafka
        .config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("transactional.id", "bench-native")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    let mut since = Instant::now();
    let mut n = 0;
    while n < count {
        if let Some(message) = consumer.poll(Duration::from_millis(10)) {
            let message = message.unwrap();
            let value = message.payload().unwrap_or_default();
            producer
                .send(BaseRecord::<[u8], [u8]>::to(to).partition(0).payload(value))
                .map_err(|(e, _)| e)
                .unwrap();
            n += 1;
        }
        if since.elapsed() >= interval || n == count {
            producer.commit_transaction(Duration::from_secs(30)).unwrap();
            producer.begin_transaction().unwrap();
            since = Instant::now();
        }
    }
    producer.abort_transaction(Duration::from_secs(30)).unwrap();
}

fn numbers(count: u64) -> impl Iterator<Item = Input> {
    (0..count as i64).map(|n| Input {
        partition: 0,
        key: String::new(),
        value: n.to_string(),
        timestamp: None,
    })
}

/// Deploys faulty (a pass-through) from topic `from` to topic `to`.
fn deploy_pass_through(cluster: &Cluster, kafka: &Kafka, name: &str, from: &str, to: &str, interval: &str) {
    let source = format!("kafka:brokers={},topic={from}", kafka.brokers());
    let sink = format!("kafka:brokers={},topic={to}", kafka.brokers());
    let faulty = job_wasm("faulty");
    cluster.weir_ok(&[
        "deploy",
        faulty.to_str().unwrap(),
        "--name",
        name,
        "--source",
        &source,
        "--sink",
        &sink,
        "--checkpoint-interval",
        interval,
    ]);
}

#[test]
#[ignore = "a benchmark: run it with scripts/bench"]
fn kafka_throughput() {
    let count = env_u64("WEIR_BENCH_KAFKA_RECORDS", 1_000_000);
    let kafka = Kafka::start();
    for topic in ["in", "native", "weir"] {
        kafka.create_topic(topic, 1);
    }
    kafka.produce("in", numbers(count));
    let mut rates = Vec::new();
    for round in 0..3 {
        // The native loop, then weir, each reading all of `in` and measured
        // by a read_committed reader of its output: start to the last record.
        let native = format!("native-{round}");
        let weir = format!("weir-{round}");
        kafka.create_topic(&native, 1);
        kafka.create_topic(&weir, 1);
        let started = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| pass_through(&kafka, "in", &native, count, Duration::from_secs(1)));
            read_all(&kafka, &native, count, |_| {});
        });
        let native_rate = count as f64 / started.elapsed().as_secs_f64();
        let mut cluster = Cluster::new();
        let leader = cluster.start_supervisor();
        deploy_pass_through(&cluster, &kafka, "through", "in", &weir, "1s");
        read_all(&kafka, &weir, count, |_| {});
        let done = SystemTime::now();
        let started = logged_at(&cluster.log_of(leader), "started job with no checkpoint").unwrap();
        let weir_rate = count as f64 / done.duration_since(started).unwrap().as_secs_f64();
        rates.push((weir_rate, native_rate));
    }
    let weir: Vec<f64> = rates.iter().map(|r| r.0).collect();
    let native: Vec<f64> = rates.iter().map(|r| r.1).collect();
    let ratios: Vec<f64> = rates.iter().map(|(w, n)| w / n).collect();
    let (w, wmin, wmax) = spread(&weir);
    let (n, nmin, nmax) = spread(&native);
    println!("\n### Kafka -> job -> Kafka\n");
    println!(
        "{count} records in one partition of a topic on tansu (in memory, loopback), read \
         `read_committed` and written to another in exactly-once transactions of 1 s: weir's \
         pass-through job (`jobs/faulty`, timed from the job's start in the supervisor's log) beside a native loop with the same librdkafka settings (a `BaseConsumer` \
         and a transactional `ThreadedProducer`, `linger.ms=5`, a commit each second). Each \
         is timed from its start to its last record seen by a `read_committed` reader; 3 rounds.\n"
    );
    println!("| | records/s, median (min-max) |\n| --- | --- |");
    println!("| weir, Kafka -> faulty -> Kafka | {w:.0} ({wmin:.0}-{wmax:.0}) |");
    println!("| native consume -> produce | {n:.0} ({nmin:.0}-{nmax:.0}) |");
    println!("| weir / native | {:.2} |", median(&ratios));
}

/// Now, in microseconds since the epoch.
fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// Produces `count` records to `from` at `rate` a second, each carrying
/// its produce time, and reads `to` until it has them all: milliseconds
/// from produce to read, sorted.
fn latencies(kafka: &Kafka, from: &str, to: &str, count: u64, rate: u64) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(count as usize);
    std::thread::scope(|s| {
        s.spawn(|| {
            let producer: ThreadedProducer<DefaultProducerContext> =
                kafka.config().set("linger.ms", "0").create().unwrap();
            let start = Instant::now();
            for i in 0..count {
                let due = start + Duration::from_micros(i * 1_000_000 / rate);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let value = now_us().to_string();
                producer
                    .send(BaseRecord::<str, str>::to(from).partition(0).payload(&value))
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
            producer.flush(Duration::from_secs(30)).unwrap();
        });
        read_all(kafka, to, count, |value| {
            let sent: i64 = std::str::from_utf8(value).unwrap().parse().unwrap();
            latencies.push((now_us() - sent) as f64 / 1e3);
        });
    });
    latencies.sort_by(f64::total_cmp);
    latencies
}

#[test]
#[ignore = "a benchmark: run it with scripts/bench"]
fn kafka_latency() {
    let seconds = env_u64("WEIR_BENCH_LATENCY_SECONDS", 20);
    let rate = 2000;
    let count = seconds * rate;
    let kafka = Kafka::start();
    println!("\n### Kafka -> job -> Kafka latency\n");
    println!(
        "Records produced at {rate}/s for {seconds} s, each carrying its produce time, to a \
         `read_committed` reader of the output topic, through weir's pass-through job \
         (exactly-once) and through the native loop committing at the same interval; \
         milliseconds from produce to read. A record shows only once its transaction commits, \
         so the interval bounds it from below.\n"
    );
    println!("| checkpoint interval | | p50 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- |");
    for (i, interval) in ["100ms", "1s"].into_iter().enumerate() {
        let every = humantime::parse_duration(interval).unwrap();
        let topics: Vec<String> = ["weir-in", "weir-out", "native-in", "native-out"]
            .iter()
            .map(|t| format!("{t}-{i}"))
            .collect();
        for topic in &topics {
            kafka.create_topic(topic, 1);
        }
        let mut cluster = Cluster::new();
        cluster.start_supervisor();
        deploy_pass_through(&cluster, &kafka, "through", &topics[0], &topics[1], interval);
        let weir = latencies(&kafka, &topics[0], &topics[1], count, rate);
        drop(cluster);
        let native = std::thread::scope(|s| {
            s.spawn(|| pass_through(&kafka, &topics[2], &topics[3], count, every));
            latencies(&kafka, &topics[2], &topics[3], count, rate)
        });
        for (who, sorted) in [("weir", weir), ("native", native)] {
            let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
            println!(
                "| {interval} | {who} | {:.0} | {:.0} | {:.0} |",
                at(0.5),
                at(0.99),
                at(1.0)
            );
        }
    }
}

#[test]
#[ignore = "a benchmark: run it with scripts/bench"]
fn postgres_rows() {
    let seconds = env_u64("WEIR_BENCH_PG_SECONDS", 20);
    let pg = Postgres::start();
    pg.sql("CREATE TABLE rows (window_start bigint, parity text, sum bigint)");
    let mut cluster = Cluster::new();
    let leader = cluster.start_supervisor();
    // One window per number: a row per record, as fast as the table takes them.
    let sink = format!("postgres:url={},table=rows", pg.url());
    let counter = job_wasm("event_counter");
    cluster.weir_ok(&[
        "deploy",
        counter.to_str().unwrap(),
        "--name",
        "rows",
        "--source",
        "sequence:rate=0,timestamp=every:10ms",
        "--watermark",
        "max-delay=0s",
        "--config",
        "window_ms=10",
        "--config",
        "format=json",
        "--sink",
        &sink,
        "--checkpoint-interval",
        "1s",
    ]);
    let count = |pg: &Postgres| pg.sql("SELECT count(*) FROM rows")[0].parse::<f64>().unwrap();
    wait_for("the first rows", Duration::from_secs(60), || {
        (count(&pg) > 0.0).then_some(())
    });
    let committed = || {
        metric_in(
            &cluster.metrics(leader),
            "weir_checkpoints_committed_total{job=\"rows\"}",
        )
        .unwrap_or_default()
    };
    let (start, rows_before, committed_before) = (Instant::now(), count(&pg), committed());
    let mut publishes = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        let metrics = cluster.metrics(leader);
        publishes.extend(metric_in(&metrics, "weir_last_publish_duration_ms{job=\"rows\"}"));
    }
    let rows = count(&pg) - rows_before;
    let per_checkpoint = rows / (committed() - committed_before).max(1.0);
    let rate = rows / start.elapsed().as_secs_f64();
    assert!(!publishes.is_empty(), "no publish duration in the metrics");
    let (p, pmin, pmax) = spread(&publishes);
    println!("\n### PostgreSQL sink\n");
    println!(
        "The event-time counter with 10 ms windows on an unthrottled sequence, so each record \
         makes a row, writing a PostgreSQL 15 table on loopback (the tests' server: `fsync=off`, no other load) \
         with checkpoints every 1 s, for {seconds} s after the first rows. The job stops reading \
         while two checkpoints wait for the table, so the rate is the sink's.\n"
    );
    println!("| rows/s | rows per checkpoint | checkpoint transaction, median (min-max) ms |\n| --- | --- | --- |");
    println!("| {rate:.0} | {per_checkpoint:.0} | {p:.0} ({pmin:.0}-{pmax:.0}) |");
}
