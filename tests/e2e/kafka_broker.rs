//! A real Kafka-compatible broker for the tests: tansu (installed by
//! `scripts/setup` from a pinned wheel) on a free loopback port, in memory;
//! and a real librdkafka client (the `rdkafka` crate) to make topics,
//! produce the input and read the output.

use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::harness::{free_port, installed, wait_for};

/// A record to produce.
pub struct Input {
    pub partition: i32,
    pub key: String,
    pub value: String,
    /// Milliseconds since the epoch; none for the producer's clock.
    pub timestamp: Option<i64>,
}

/// A running tansu broker, killed on drop.
pub struct Kafka {
    process: Child,
    brokers: String,
    storage: String,
    env: Vec<(&'static str, String)>,
    dir: tempfile::TempDir,
}

impl Kafka {
    /// Starts a broker with no topics, in memory; fails loudly when tansu
    /// is not installed.
    pub fn start() -> Kafka {
        Kafka::start_on("memory://tansu/", Vec::new())
    }

    /// Starts a broker keeping its topics in `storage` (tansu's
    /// `--storage-engine`; an `s3://BUCKET/` outlives the broker), with
    /// `env` (how to reach the storage).
    pub fn start_on(storage: &str, env: Vec<(&'static str, String)>) -> Kafka {
        let dir = tempfile::tempdir().unwrap();
        let brokers = format!("127.0.0.1:{}", free_port());
        let process = spawn(&brokers, storage, &env, &dir);
        Kafka {
            process,
            brokers,
            storage: storage.to_string(),
            env,
            dir,
        }
    }

    /// Kills the broker with `kill -9` and starts it again on the same
    /// port and storage, once `down` has run.
    pub fn kill_and_restart(&mut self, down: impl FnOnce()) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
        down();
        self.process = spawn(&self.brokers, &self.storage, &self.env, &self.dir);
    }

    /// `HOST:PORT` of the broker.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    pub fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    /// Makes a topic of `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let made = futures::executor::block_on(admin.create_topics([&new], &AdminOptions::new())).unwrap();
        for result in made {
            result.unwrap_or_else(|(topic, e)| panic!("creating topic {topic}: {e}"));
        }
    }

    /// Produces `records`, idempotently, and waits until the broker has
    /// them all.
    pub fn produce(&self, topic: &str, records: impl IntoIterator<Item = Input>) {
        let producer: ThreadedProducer<DefaultProducerContext> =
            self.config().set("enable.idempotence", "true").create().unwrap();
        for input in records {
            let mut record = BaseRecord::to(topic)
                .partition(input.partition)
                .key(&input.key)
                .payload(&input.value);
            if let Some(ms) = input.timestamp {
                record = record.timestamp(ms);
            }
            // A full queue drains as the broker acknowledges.
            while let Err((e, back)) = producer.send(record) {
                assert_eq!(
                    e.rdkafka_error_code(),
                    Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    "producing to {topic}: {e}"
                );
                std::thread::sleep(Duration::from_millis(10));
                record = back;
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }
}

impl Kafka {
    /// The offsets `group` has committed in each of `partitions` of `topic`
    /// (-1 for none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = self.config().set("group.id", group).create().unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
        (0..partitions)
            .map(|p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(offset)) => offset,
                _ => -1,
            })
            .collect()
    }
}

/// A record as a `read_committed` consumer saw it.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub value: String,
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Kafka {
    /// A `read_committed` consumer of partition 0 of `topic`, from its
    /// start, in consumer group `group` (which commits nothing).
    pub fn reader(&self, topic: &str, group: &str) -> BaseConsumer {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", group)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
        consumer.assign(&list).unwrap();
        consumer
    }

    /// The records of partition 0 of `topic` a `read_committed` consumer
    /// sees from its start: as soon as there are `at_least`, or with
    /// `at_least` 0, all of them once nothing new comes for a second.
    pub fn read_committed(&self, topic: &str, at_least: usize) -> Vec<Consumed> {
        use rdkafka::message::{Headers, Message};
        let consumer = self.reader(topic, "e2e-reader");
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match consumer.poll(Duration::from_secs(1)) {
                Some(Ok(_)) if at_least > 0 && seen.len() >= at_least => return seen,
                Some(Ok(m)) => seen.push(Consumed {
                    value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_string(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None if seen.len() >= at_least => return seen,
                None => assert!(
                    std::time::Instant::now() < deadline,
                    "timed out with {} of {at_least} records of {topic}",
                    seen.len()
                ),
            }
        }
    }
}

/// Runs tansu on `brokers` until it listens.
fn spawn(brokers: &str, storage: &str, env: &[(&str, String)], dir: &tempfile::TempDir) -> Child {
    let url = format!("tcp://{brokers}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("tansu.log"))
        .unwrap();
    let process = Command::new(installed("tansu"))
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", storage])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start tansu");
    wait_for("tansu to listen", Duration::from_secs(10), || {
        TcpStream::connect(brokers).ok()
    });
    process
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
