//! The Kafka sink: a checkpoint's records go to the topic in one Kafka
//! transaction, which also commits the sink's position as the offset of a
//! consumer group of its own (`weir-sink-<job>-<deployment>`, on partition
//! 0 of the topic). A publish reads that position first and writes only
//! what comes after it, so a checkpoint published twice (a new leader
//! finishing what a dead one committed) lands once; and a new producer
//! with the job's transactional id fences the old one and aborts what it
//! left open, so no transaction stays open after a failover to stall
//! `read_committed` readers (FLINK-23854). A checkpoint with no output
//! opens no transaction (FLINK-31363). Every record carries headers naming
//! its place in the job's output and the producer and transaction that
//! wrote it, so a reader can tell copies apart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::staged::read_records;
use super::SinkOwner;
use crate::spec::Delivery;

/// How long one transactional call may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait between two tries while the brokers do not answer.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// How many times a checkpoint's publish is tried before the attempt fails
/// (and restarts, restoring the same checkpoint): about two minutes.
const MAX_TRIES: u32 = 30;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// The client failed; `retriable` when trying again can help.
    #[error("Kafka sink (topic {topic} on {brokers}): {what}: {source}")]
    Client {
        topic: String,
        brokers: String,
        what: &'static str,
        #[source]
        source: Box<KafkaError>,
        retriable: bool,
    },
    /// The topic's committed position does not fit the job's output.
    #[error("Kafka sink (topic {topic} on {brokers}): {why}")]
    Mismatch {
        topic: String,
        brokers: String,
        why: String,
    },
    /// Records were not delivered (at least once): to be written again.
    #[error("Kafka sink (topic {topic} on {brokers}): {why}")]
    Undelivered {
        topic: String,
        brokers: String,
        why: String,
    },
}

impl KafkaSinkError {
    fn retriable(&self) -> bool {
        matches!(
            self,
            KafkaSinkError::Client { retriable: true, .. } | KafkaSinkError::Undelivered { .. }
        )
    }

    /// The same failure, to be tried again.
    fn retry(self) -> KafkaSinkError {
        match self {
            KafkaSinkError::Mismatch { topic, brokers, why } => KafkaSinkError::Undelivered { topic, brokers, why },
            other => other,
        }
    }
}

/// Counts records the brokers did not take, which a flush does not report.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("a record was not delivered to Kafka: {e}");
        }
    }
}

/// A topic the job writes, with the clients that write it.
pub struct KafkaTopic {
    brokers: String,
    topic: String,
    delivery: Delivery,
    owner: SinkOwner,
    /// Names this producer in the records it writes.
    writer: u64,
    clients: Option<Arc<Clients>>,
    transactions: u64,
    /// Set when the caller stopped waiting: a publish retrying for brokers
    /// that do not answer then gives up, so the blocking thread it holds
    /// is freed and the next attempt's first call is not held up behind it.
    stopped: Arc<AtomicBool>,
}

struct Clients {
    producer: ThreadedProducer<Deliveries>,
    /// Of the sink's consumer group: reads its position, and lends the
    /// group to each transaction.
    consumer: BaseConsumer,
}

impl KafkaTopic {
    /// The topic `topic` on `brokers`, for `owner`; nothing is connected yet.
    pub fn new(brokers: &str, topic: &str, delivery: Delivery, owner: SinkOwner) -> KafkaTopic {
        KafkaTopic {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            delivery,
            owner,
            writer: writer_id(),
            clients: None,
            transactions: 0,
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag that makes a retrying publish give up.
    pub fn stopped(&self) -> Arc<AtomicBool> {
        self.stopped.clone()
    }

    fn error(&self, what: &'static str, source: KafkaError) -> KafkaSinkError {
        let retriable = match &source {
            KafkaError::Transaction(e) => e.is_retriable() || e.txn_requires_abort(),
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => true,
            e => e.rdkafka_error_code().is_some_and(|code| {
                matches!(
                    code,
                    RDKafkaErrorCode::BrokerTransportFailure
                        | RDKafkaErrorCode::AllBrokersDown
                        | RDKafkaErrorCode::OperationTimedOut
                        | RDKafkaErrorCode::RequestTimedOut
                        | RDKafkaErrorCode::CoordinatorNotAvailable
                        | RDKafkaErrorCode::NotCoordinator
                        | RDKafkaErrorCode::CoordinatorLoadInProgress
                )
            }),
        };
        KafkaSinkError::Client {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            what,
            source: Box::new(source),
            retriable,
        }
    }

    /// The clients, made on first use; with exactly-once delivery the
    /// producer's `init_transactions` fences every earlier producer of the
    /// job and aborts the transaction it left open.
    fn clients(&mut self) -> Result<Arc<Clients>, KafkaSinkError> {
        if let Some(clients) = &self.clients {
            return Ok(clients.clone());
        }
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        if self.delivery == Delivery::ExactlyOnce {
            config.set("transactional.id", self.group());
        }
        let producer: ThreadedProducer<Deliveries> = config
            .create_with_context(Deliveries::default())
            .map_err(|e| self.error("cannot create a producer", e))?;
        if self.delivery == Delivery::ExactlyOnce {
            producer
                .init_transactions(TXN_TIMEOUT)
                .map_err(|e| self.error("cannot start transactions", e))?;
        }
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", self.group())
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| self.error("cannot create a consumer", e))?;
        let clients = Arc::new(Clients { producer, consumer });
        self.clients = Some(clients.clone());
        Ok(clients)
    }

    /// The sink's consumer group, also its transactional id.
    fn group(&self) -> String {
        format!(
            "weir-sink-{}-{}",
            self.owner.job,
            self.owner.deployment.replace('/', "-")
        )
    }

    /// Where the topic's committed output of this job ends (0 before any).
    /// Blocking.
    pub fn position(&mut self) -> Result<u64, KafkaSinkError> {
        let clients = self.clients()?;
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, 0);
        let committed = clients
            .consumer
            .committed_offsets(list, TXN_TIMEOUT)
            .map_err(|e| self.error("cannot read the sink's position", e))?;
        match committed.find_partition(&self.topic, 0).map(|e| e.offset()) {
            Some(Offset::Offset(position)) if position >= 0 => Ok(position as u64),
            _ => Ok(0),
        }
    }

    /// Writes the records of `output` (staged at `at`) that the topic does
    /// not have yet, trying again while the brokers do not answer. Blocking.
    pub fn publish(&mut self, at: u64, output: &[u8]) -> Result<(), KafkaSinkError> {
        self.retrying(at, output, false)
    }

    /// After a restore: fences every earlier producer first, aborting a
    /// transaction a dead one left open (which would hold `read_committed`
    /// readers back until it timed out, FLINK-23854), even when the
    /// restored checkpoint has no output to publish; then publishes it.
    /// Blocking.
    pub fn recover(&mut self, at: u64, output: &[u8]) -> Result<(), KafkaSinkError> {
        self.retrying(at, output, true)
    }

    /// Publishes (after fencing, with `fence`), trying again while the
    /// brokers do not answer.
    fn retrying(&mut self, at: u64, output: &[u8], fence: bool) -> Result<(), KafkaSinkError> {
        let mut wait = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            tries += 1;
            let fenced = if fence { self.clients().map(drop) } else { Ok(()) };
            match fenced.and_then(|()| self.publish_once(at, output)) {
                // The brokers may be back any time; a transaction they
                // refuse again and again has something wrong with it.
                Err(e) if e.retriable() && tries < MAX_TRIES && !self.stopped.load(Ordering::Relaxed) => {
                    tracing::warn!(job = %self.owner.job, "checkpoint output waits for Kafka, trying again in {wait:?}: {e}");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(MAX_RETRY);
                }
                other => return other,
            }
        }
    }

    fn publish_once(&mut self, at: u64, output: &[u8]) -> Result<(), KafkaSinkError> {
        if output.is_empty() {
            return Ok(());
        }
        let end = at + output.len() as u64;
        // At least once: everything, every time.
        let position = match self.delivery {
            Delivery::ExactlyOnce => self.position()?,
            Delivery::AtLeastOnce => at,
        };
        if position >= end {
            return Ok(());
        }
        if position < at {
            return Err(self.mismatch(format!(
                "its position is byte {position} of the job's output but this checkpoint's starts at {at}: \
                 records are missing (was the group's offset changed by hand?)"
            )));
        }
        let records = read_records(output, 0).map_err(|e| self.mismatch(e))?;
        let skip = (position - at) as usize;
        if skip > 0 && !records.iter().any(|r| r.start == skip) {
            return Err(self.mismatch(format!(
                "its position {position} is inside a record of the job's output"
            )));
        }
        let clients = self.clients()?;
        let exactly_once = self.delivery == Delivery::ExactlyOnce;
        self.transactions += 1;
        if exactly_once {
            if let Err(e) = clients.producer.begin_transaction() {
                let _ = clients.producer.abort_transaction(TXN_TIMEOUT);
                return Err(self.error("cannot begin a transaction", e));
            }
        }
        let failed_before = clients.producer.context().failed.load(Ordering::Relaxed);
        let (writer, transaction) = (self.writer.to_string(), self.transactions.to_string());
        let sent = records.iter().filter(|r| r.start >= skip).try_for_each(|record| {
            let place = (at + record.start as u64).to_string();
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 3);
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(*value),
                });
            }
            for (key, value) in [
                ("weir-position", &place),
                ("weir-writer", &writer),
                ("weir-transaction", &transaction),
            ] {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let mut message = BaseRecord::<[u8], [u8]>::to(&self.topic)
                .payload(record.value)
                .headers(headers);
            if let Some(key) = record.key {
                message = message.key(key);
            }
            if let Some(t) = record.timestamp {
                message = message.timestamp(t);
            }
            send(&clients.producer, message)
        });
        let result = sent.map_err(|e| self.error("cannot send a record", e)).and_then(|()| {
            if !exactly_once {
                clients
                    .producer
                    .flush(TXN_TIMEOUT)
                    .map_err(|e| self.error("cannot flush the records", e))?;
                let failed = clients.producer.context().failed.load(Ordering::Relaxed) - failed_before;
                return match failed {
                    0 => Ok(()),
                    n => Err(self
                        .mismatch(format!(
                            "{n} records of the checkpoint were not delivered (see the log); writing it again"
                        ))
                        .retry()),
                };
            }
            let mut offsets = TopicPartitionList::new();
            offsets
                .add_partition_offset(&self.topic, 0, Offset::Offset(end as i64))
                .map_err(|e| self.error("cannot name the sink's position", e))?;
            let group = clients
                .consumer
                .group_metadata()
                .ok_or_else(|| self.mismatch("the sink's consumer has no group".into()))?;
            clients
                .producer
                .send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)
                .map_err(|e| self.error("cannot commit the sink's position", e))?;
            clients
                .producer
                .commit_transaction(TXN_TIMEOUT)
                .map_err(|e| self.error("cannot commit the transaction", e))
        });
        if result.is_err() && exactly_once {
            // Whatever it wrote is aborted, so readers are not held up; the
            // next try begins a new transaction.
            let _ = clients.producer.abort_transaction(TXN_TIMEOUT);
        }
        result
    }

    fn mismatch(&self, why: String) -> KafkaSinkError {
        KafkaSinkError::Mismatch {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            why,
        }
    }
}

/// Queues one record, waiting while the producer's queue is full.
fn send(producer: &ThreadedProducer<Deliveries>, mut message: BaseRecord<'_, [u8], [u8]>) -> Result<(), KafkaError> {
    loop {
        match producer.send(message) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                message = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// A number for this producer, different across processes and restarts
/// (the hasher's keys are random per process and per call).
fn writer_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}
