//! The Kafka source: every partition of a topic, assigned by weir (no
//! consumer-group rebalancing: the job owns them all), read
//! `read_committed` from the per-partition offsets of the checkpoint it
//! restored. Records keep their key, timestamp, headers, partition and
//! offset. Partitions that appear later are found by a metadata poll and
//! read from their start. It blocks, which is why it runs on the job's
//! own thread like every source.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::Source;
use crate::checkpoint::SourcePosition;
use crate::spec::{KafkaStart, Share};
use crate::wit::{Batch, Header, Records};

/// How long a metadata or offset request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the topic is asked for partitions that appeared since, and
/// each partition for its end (the lag).
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// How often a failing read is logged while it goes on failing.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Whether `topic` exists on `brokers`, asked at deploy: an error when the
/// brokers say it does not; `Ok(Some(why))` when they cannot tell now
/// (they do not answer within `timeout`, or the topic is not ready yet),
/// and the job will wait. Blocking.
pub fn check_topic(brokers: &str, topic: &str, timeout: Duration) -> Result<Option<String>, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|e| format!("cannot create a Kafka client for {brokers}: {e}"))?;
    let metadata = match consumer.fetch_metadata(Some(topic), timeout) {
        Ok(metadata) => metadata,
        Err(e) => return Ok(Some(format!("brokers {brokers} do not answer now ({e})"))),
    };
    if topic_partitions(&metadata, topic).is_some() {
        return Ok(None);
    }
    match metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| t.error())
    {
        Some(e) if RDKafkaErrorCode::from(e) != RDKafkaErrorCode::UnknownTopicOrPartition => Ok(Some(format!(
            "topic {topic} is not ready on {brokers} ({})",
            RDKafkaErrorCode::from(e)
        ))),
        _ => Err(missing_topic(brokers, topic)),
    }
}

/// The partitions of `topic` in `metadata`, if it exists.
fn topic_partitions(metadata: &Metadata, topic: &str) -> Option<Vec<u32>> {
    let topic = metadata.topics().iter().find(|t| t.name() == topic)?;
    (topic.error().is_none() && !topic.partitions().is_empty())
        .then(|| topic.partitions().iter().map(|p| p.id() as u32).collect())
}

fn missing_topic(brokers: &str, topic: &str) -> String {
    format!("Kafka topic {topic} does not exist on {brokers}; create it, or fix the topic's name")
}

/// A topic's partitions, read from weir's own offsets.
pub struct KafkaSource {
    brokers: String,
    topic: String,
    start: KafkaStart,
    group: String,
    /// The task's share: it reads the partitions that are its own.
    share: Share,
    /// Whether no checkpoint started it: only then does `start` apply (a
    /// restored task, a regrouped one that holds no partition yet among
    /// them, reads a partition its checkpoint does not know from its start).
    fresh: bool,
    /// The next offset to read, per partition: the position a checkpoint records.
    next: BTreeMap<u32, i64>,
    consumer: Option<BaseConsumer>,
    refreshed: Instant,
    /// Records past `next` in each partition, as of the last refresh.
    lag: BTreeMap<u32, i64>,
    warned: Option<Instant>,
}

impl KafkaSource {
    /// A source of `topic` for job `job`'s task `share`, resuming at
    /// `restored`, the next offset of each partition a checkpoint knew
    /// (none: a fresh start, per `start`).
    pub fn new(
        brokers: &str,
        topic: &str,
        start: KafkaStart,
        group: Option<&str>,
        job: &str,
        share: Share,
        restored: Option<BTreeMap<u32, i64>>,
    ) -> KafkaSource {
        KafkaSource {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            start,
            group: group.map_or_else(|| format!("weir-{job}"), str::to_string),
            share,
            fresh: restored.is_none(),
            next: restored.unwrap_or_default(),
            consumer: None,
            refreshed: Instant::now(),
            lag: BTreeMap::new(),
            warned: None,
        }
    }

    /// The consumer, created and assigned every partition on first use.
    fn consumer(&mut self) -> io::Result<&BaseConsumer> {
        if self.consumer.is_none() {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &self.brokers)
                .set("group.id", &self.group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("isolation.level", "read_committed")
                .set("enable.partition.eof", "false")
                // An offset the broker no longer has (retention) resumes at
                // the oldest it has, never past records at the end.
                .set("auto.offset.reset", "earliest")
                .set("allow.auto.create.topics", "false")
                .create()
                .map_err(|e| self.error("cannot create a Kafka consumer", e))?;
            let partitions = self.partitions(&consumer, REQUEST_TIMEOUT)?;
            // `start` is for a job with no checkpoint; a restored job reads
            // partitions its checkpoint does not know (new since) from their start.
            let first = if self.fresh { self.start } else { KafkaStart::Earliest };
            self.assign(&consumer, &partitions, first)?;
            self.consumer = Some(consumer);
            self.refreshed = Instant::now();
        }
        Ok(self.consumer.as_ref().expect("just created"))
    }

    /// The topic's partitions that are this task's, as the brokers know them now.
    fn partitions(&self, consumer: &BaseConsumer, timeout: Duration) -> io::Result<Vec<u32>> {
        let metadata = consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|e| self.error("cannot read the topic's metadata", e))?;
        let all = topic_partitions(&metadata, &self.topic)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, missing_topic(&self.brokers, &self.topic)))?;
        Ok(all.into_iter().filter(|p| self.share.owns(*p)).collect())
    }

    /// Adds `partitions` to the assignment: those with a checkpointed
    /// offset from it, the others from `start`, resolved to an offset now
    /// so that a checkpoint taken before their first record resumes there.
    fn assign(&mut self, consumer: &BaseConsumer, partitions: &[u32], start: KafkaStart) -> io::Result<()> {
        let mut list = TopicPartitionList::new();
        for &p in partitions {
            let offset = match self.next.get(&p) {
                Some(next) => *next,
                None => self.resolve(consumer, p, start)?,
            };
            self.next.insert(p, offset);
            list.add_partition_offset(&self.topic, p as i32, Offset::Offset(offset))
                .map_err(|e| self.error("cannot assign a partition", e))?;
        }
        consumer
            .incremental_assign(&list)
            .map_err(|e| self.error("cannot assign the topic's partitions", e))
    }

    /// The offset `start` names in partition `p`.
    fn resolve(&self, consumer: &BaseConsumer, p: u32, start: KafkaStart) -> io::Result<i64> {
        let partition = p as i32;
        let watermarks = || {
            consumer
                .fetch_watermarks(&self.topic, partition, REQUEST_TIMEOUT)
                .map_err(|e| self.error("cannot read a partition's offsets", e))
        };
        match start {
            KafkaStart::Earliest => Ok(watermarks()?.0),
            KafkaStart::Latest => Ok(watermarks()?.1),
            KafkaStart::Timestamp { ms } => {
                let mut list = TopicPartitionList::new();
                list.add_partition_offset(&self.topic, partition, Offset::Offset(ms))
                    .map_err(|e| self.error("cannot look up an offset by time", e))?;
                let found = consumer
                    .offsets_for_times(list, REQUEST_TIMEOUT)
                    .map_err(|e| self.error("cannot look up an offset by time", e))?;
                match found.find_partition(&self.topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(offset)) => Ok(offset),
                    // No record at or after the time: from the end.
                    _ => Ok(watermarks()?.1),
                }
            }
        }
    }

    /// Assigns partitions that appeared since the last look, from their
    /// start, and measures each partition's lag.
    fn refresh(&mut self, until: Instant) -> io::Result<()> {
        if self.refreshed.elapsed() < REFRESH_INTERVAL {
            return Ok(());
        }
        self.refreshed = Instant::now();
        let Some(consumer) = self.consumer.take() else {
            return Ok(());
        };
        for (p, next) in &self.next {
            if let Some(end) = fetched_end(&consumer, &self.topic, *p) {
                self.lag.insert(*p, (end - next).max(0));
            }
        }
        let timeout = until
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(100), REQUEST_TIMEOUT);
        let found = self.partitions(&consumer, timeout).map(|all| {
            all.into_iter()
                .filter(|p| !self.next.contains_key(p))
                .collect::<Vec<_>>()
        });
        let assigned = match found {
            Ok(new) if !new.is_empty() => {
                tracing::info!(topic = %self.topic, partitions = ?new, "reading new partitions of the topic from their start");
                self.assign(&consumer, &new, KafkaStart::Earliest)
            }
            Ok(_) => Ok(()),
            // The brokers are away: the read below says so, and this is tried again.
            Err(_) => Ok(()),
        };
        self.consumer = Some(consumer);
        assigned
    }

    fn error(&self, what: &str, e: rdkafka::error::KafkaError) -> io::Error {
        io::Error::other(format!("{what} (topic {} on {}): {e}", self.topic, self.brokers))
    }
}

impl Source for KafkaSource {
    fn next_batch(&mut self, max: usize, until: Instant) -> io::Result<Batch> {
        self.consumer()?;
        self.refresh(until)?;
        let consumer = self.consumer.as_ref().expect("connected above");
        let mut records = Records::default();
        let mut wait = until.saturating_duration_since(Instant::now());
        while records.keyed.len() < max {
            let message = match consumer.poll(wait) {
                None => break,
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    // librdkafka reconnects by itself: say so now and then, and go on.
                    if self.warned.is_none_or(|at| at.elapsed() >= WARN_INTERVAL) {
                        tracing::warn!(topic = %self.topic, "reading Kafka: {e}; trying on");
                        self.warned = Some(Instant::now());
                    }
                    break;
                }
            };
            wait = Duration::ZERO;
            push(&mut records, &message);
            self.next.insert(message.partition() as u32, message.offset() + 1);
        }
        Ok(Batch::Records(records))
    }

    fn position(&self) -> SourcePosition {
        SourcePosition {
            offset: 0,
            partitions: self.next.clone(),
        }
    }

    fn lag(&self) -> BTreeMap<u32, i64> {
        self.lag.clone()
    }
}

/// The consumer group a Kafka source names: it gets the offsets of each
/// committed checkpoint, for lag monitoring by Kafka's own tools. weir
/// never reads them back (its checkpoints hold the offsets).
pub struct GroupOffsets {
    consumer: BaseConsumer,
    topic: String,
}

impl GroupOffsets {
    /// A committer of `group`'s offsets in `topic`. Makes no connection yet.
    pub fn new(brokers: &str, topic: &str, group: &str) -> io::Result<GroupOffsets> {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| io::Error::other(format!("cannot create a Kafka client for group {group}: {e}")))?;
        Ok(GroupOffsets {
            consumer,
            topic: topic.to_string(),
        })
    }

    /// Commits `next` (the next offset per partition) without waiting for
    /// the broker: a commit that fails is only a monitoring gap, and the
    /// next checkpoint's replaces it.
    pub fn commit(&self, next: &BTreeMap<u32, i64>) {
        let mut list = TopicPartitionList::new();
        for (p, offset) in next {
            if list
                .add_partition_offset(&self.topic, *p as i32, Offset::Offset(*offset))
                .is_err()
            {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::warn!(topic = %self.topic, "cannot commit the checkpoint's offsets to the consumer group: {e}");
        }
        // Serve the answers to earlier commits, so they do not pile up.
        while let Some(Err(e)) = self.consumer.poll(Duration::ZERO) {
            tracing::debug!(topic = %self.topic, "consumer group: {e}");
        }
    }
}

/// The end of partition `p` as the last fetch from it saw (the high
/// watermark in its answer): no request, so it costs nothing and cannot
/// block. (A ListOffsets request would ask the broker, and tansu answers
/// "latest" wrongly.) None before the first fetch.
fn fetched_end(consumer: &BaseConsumer, topic: &str, p: u32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is live for as long as `consumer` is, the
    // topic is a NUL-terminated string that outlives the call, and the
    // offsets are written through valid pointers; librdkafka only reads its
    // own cached state here.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            p as i32,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// Appends a Kafka message to the record columns.
fn push(records: &mut Records, message: &impl Message) {
    let key = message.key();
    records.data.extend_from_slice(key.unwrap_or_default());
    records.ends.push(records.data.len() as u32);
    records.data.extend_from_slice(message.payload().unwrap_or_default());
    records.ends.push(records.data.len() as u32);
    records.keyed.push(u8::from(key.is_some()));
    records
        .timestamps
        .push(message.timestamp().to_millis().unwrap_or(i64::MIN));
    records.partitions.push(message.partition() as u32);
    records.offsets.push(message.offset());
    if let Some(headers) = message.headers() {
        records.headers.extend(headers.iter().map(|h| Header {
            key: h.key.to_string(),
            value: h.value.unwrap_or_default().to_vec(),
        }));
    }
    records.header_ends.push(records.headers.len() as u32);
}
