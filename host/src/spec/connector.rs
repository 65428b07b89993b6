//! The user-facing source and sink specs (`--source`, `--sink`): what a
//! job reads and writes, parsed and printed back.

use std::fmt;
use std::str::FromStr;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{millis, parse_params, spec_error, SpecError};

/// How `--source nexmark` writes an event into its record's value (README,
/// "Nexmark"; `jobs/nexmark`'s `model::read` takes either).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventEncoding {
    /// `{"bid":{...}}`: readable anywhere, parsed by the job.
    #[default]
    Json,
    /// Numbers little-endian and length-prefixed strings, read in place
    /// with no parsing, as an engine's own rows are: what the benchmark
    /// measures.
    Binary,
}

impl EventEncoding {
    fn is_json(&self) -> bool {
        *self == EventEncoding::Json
    }
}

/// Where a job's input comes from. Every source is replayable from an offset,
/// which is what makes restoring from a checkpoint exactly-once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceSpec {
    /// The integers `start, start+1, ...` at `rate` events per second (0: unthrottled).
    Sequence {
        start: i64,
        rate: u64,
        /// The event timestamps the numbers get, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<Timestamps>,
    },
    /// The lines of a file, tailed as it grows; the offset is a byte position.
    File {
        path: String,
        /// The event timestamps the lines get, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<Timestamps>,
    },
    /// The Nexmark benchmark's auction events (persons, auctions and bids,
    /// 1:3:46), generated as its generator makes them: event `n` is the
    /// same on every replay, stamped with its event time, as records keyed
    /// by the id they are about.
    Nexmark {
        /// Events per second over all tasks (0: unthrottled).
        rate: u64,
        /// Events per second of event time (Nexmark's `first-event.rate`):
        /// event `n` happens `n / event_rate` s after the first. None: as
        /// `rate`, or 10 M/s (the Nexmark suite's) when unthrottled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_rate: Option<u64>,
        /// Mixed into every event's random numbers: another seed, other events.
        seed: u64,
        /// How many events in all; none: without end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        events: Option<u64>,
        /// How each event is written into its record's value.
        #[serde(default, skip_serializing_if = "EventEncoding::is_json")]
        encoding: EventEncoding,
    },
    /// Every partition of a Kafka topic, `read_committed`, from per-partition
    /// offsets kept in weir's checkpoints; records keep their key,
    /// timestamp, headers, partition and offset.
    Kafka {
        /// `HOST:PORT[,HOST:PORT]...`.
        brokers: String,
        topic: String,
        /// Where a job with no checkpoint starts in each partition.
        #[serde(default)]
        start: KafkaStart,
        /// A consumer group that gets the offsets of each committed
        /// checkpoint, for lag monitoring (weir itself never reads them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
}

/// Where a Kafka source with no checkpoint starts reading a partition (a
/// partition that appears later is read from its start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KafkaStart {
    /// The oldest record the broker keeps.
    #[default]
    Earliest,
    /// The end of the partition when the job starts.
    Latest,
    /// The first record at or after this time (ms since the Unix epoch).
    Timestamp { ms: i64 },
}

/// Where a source's records get their event timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timestamps {
    /// The wall clock when the source read the record. Simple, but a replay
    /// after a failover stamps the same records anew.
    Ingest,
    /// Number `n` of a sequence at `n` times `step` (from the Unix epoch):
    /// the same on every replay.
    Every {
        #[serde(with = "millis")]
        step: Duration,
    },
    /// A line's JSON field holding ms since the Unix epoch (a line without
    /// it gets none, and a job that needs one refuses the record).
    Field { name: String },
}

impl SourceSpec {
    /// Where its records get their event timestamps, if weir stamps them
    /// (a Kafka record has its own).
    pub fn timestamp(&self) -> Option<&Timestamps> {
        match self {
            SourceSpec::Sequence { timestamp, .. } | SourceSpec::File { timestamp, .. } => timestamp.as_ref(),
            SourceSpec::Kafka { .. } | SourceSpec::Nexmark { .. } => None,
        }
    }

    /// Whether its records have event timestamps, which a watermark needs.
    pub fn has_event_times(&self) -> bool {
        matches!(self, SourceSpec::Kafka { .. } | SourceSpec::Nexmark { .. }) || self.timestamp().is_some()
    }
}

impl FromStr for Timestamps {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s.split_once(':') {
            None if s == "ingest" => Ok(Timestamps::Ingest),
            Some(("every", step)) => humantime::parse_duration(step)
                .ok()
                .filter(|d| d.as_millis() >= 1 && i64::try_from(d.as_millis()).is_ok())
                .map(|step| Timestamps::Every { step })
                .ok_or_else(|| {
                    spec_error(format!(
                        "timestamp={s}: `{step}` is not a duration of 1 ms or more, e.g. 10ms"
                    ))
                }),
            Some(("json", name)) if !name.is_empty() => Ok(Timestamps::Field { name: name.to_string() }),
            _ => Err(spec_error(format!(
                "unknown timestamp `{s}`; expected `ingest`, `every:D` (sequence) or `json:FIELD` (file)"
            ))),
        }
    }
}

impl fmt::Display for Timestamps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timestamps::Ingest => f.write_str("ingest"),
            Timestamps::Every { step } => write!(f, "every:{}", humantime::format_duration(*step)),
            Timestamps::Field { name } => write!(f, "json:{name}"),
        }
    }
}

/// Where a job's output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkSpec {
    /// The supervisor's standard output, written when a checkpoint commits
    /// (at-least-once across failovers).
    Stdout,
    /// A file holding only output of committed checkpoints, each event once.
    File { path: String },
    /// A PostgreSQL table: each record's value is a JSON object whose
    /// fields are columns. A checkpoint's rows and the sink's progress go in
    /// one transaction, so each row is written once.
    Postgres {
        /// `postgresql://USER[:PASSWORD]@HOST:PORT/DB`.
        url: String,
        /// The table, `NAME` or `SCHEMA.NAME`.
        table: String,
        /// Append every record, or upsert on key columns.
        #[serde(default)]
        mode: TableMode,
    },
    /// A Kafka topic, written in one transaction per checkpoint (or, at
    /// least once, without): records keep their key, timestamp and headers.
    Kafka {
        /// `HOST:PORT[,HOST:PORT]...`.
        brokers: String,
        topic: String,
        /// Exactly-once (transactions) or at-least-once.
        #[serde(default)]
        delivery: Delivery,
    },
}

/// What a Kafka sink promises a `read_committed` reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Each record once: a transaction per checkpoint, with the sink's
    /// position committed in it.
    #[default]
    ExactlyOnce,
    /// Each record at least once: no transactions, a restore writes the
    /// restored checkpoint's output again.
    AtLeastOnce,
}

/// How a PostgreSQL sink writes its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TableMode {
    /// `INSERT` each record as a row.
    #[default]
    Append,
    /// `INSERT ... ON CONFLICT (key) DO UPDATE`: the table holds the newest
    /// record per key (the last of a checkpoint, when one has several).
    Upsert {
        /// The columns of a unique index of the table.
        key: Vec<String>,
    },
}

const SOURCE_FORMS: &str = "expected `sequence[:start=N,rate=R,timestamp=T]`, `file:PATH`, \
     `file:timestamp=T,path=PATH`, `nexmark[:rate=R,event-rate=E,seed=S,events=N,encoding=json|binary]` or `kafka:brokers=HOST:PORT[,HOST:PORT],topic=T[,start=earliest|latest|timestamp=MS][,group=G]`";
const SINK_FORMS: &str = "expected `stdout`, `file:PATH`, \
     `postgres:url=postgresql://USER@HOST:PORT/DB,table=T[,mode=append|upsert,key=COL[,COL]...]` or \
     `kafka:brokers=HOST:PORT[,HOST:PORT],topic=T[,delivery=exactly-once|at-least-once]`";

impl FromStr for SourceSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        match kind {
            "sequence" => {
                let (mut start, mut rate, mut timestamp) = (0i64, 1000u64, None);
                for (key, value) in parse_params(rest, SOURCE_FORMS)? {
                    let bad = || spec_error(format!("sequence source: `{key}={value}` is not a number"));
                    match key {
                        "start" => start = value.parse().map_err(|_| bad())?,
                        "rate" => rate = value.parse().map_err(|_| bad())?,
                        "timestamp" => timestamp = Some(value.parse()?),
                        _ => {
                            return Err(spec_error(format!(
                                "sequence source: unknown setting `{key}`; expected start, rate or timestamp"
                            )))
                        }
                    }
                }
                if matches!(timestamp, Some(Timestamps::Field { .. })) {
                    return Err(spec_error(
                        "sequence source: its numbers have no JSON fields; use timestamp=every:D or timestamp=ingest",
                    ));
                }
                Ok(SourceSpec::Sequence { start, rate, timestamp })
            }
            // `file:PATH` (any path), or settings and then `path=PATH` last,
            // which takes the rest of the spec (commas included).
            "file" if rest.starts_with("path=") || rest.contains(",path=") => {
                let (settings, path) = match rest.strip_prefix("path=") {
                    Some(path) => ("", path),
                    None => rest.split_once(",path=").expect("just checked"),
                };
                let mut timestamp = None;
                for (key, value) in parse_params(settings, SOURCE_FORMS)? {
                    match key {
                        "timestamp" => timestamp = Some(value.parse()?),
                        _ => {
                            return Err(spec_error(format!(
                                "file source: unknown setting `{key}`; expected `file:timestamp=T,path=PATH`"
                            )))
                        }
                    }
                }
                if matches!(timestamp, Some(Timestamps::Every { .. })) {
                    return Err(spec_error(
                        "file source: timestamp=every is for sequences; use timestamp=json:FIELD or timestamp=ingest",
                    ));
                }
                if path.is_empty() {
                    return Err(spec_error("file source needs a path: `file:timestamp=T,path=PATH`"));
                }
                Ok(SourceSpec::File {
                    path: path.to_string(),
                    timestamp,
                })
            }
            "file" if !rest.is_empty() => Ok(SourceSpec::File {
                path: rest.to_string(),
                timestamp: None,
            }),
            "file" => Err(spec_error("file source needs a path: `file:PATH`")),
            "kafka" => parse_kafka(rest),
            "nexmark" => {
                let (mut rate, mut event_rate, mut seed, mut events) = (10_000u64, None, 0u64, None);
                let mut encoding = EventEncoding::Json;
                for (key, value) in parse_params(rest, SOURCE_FORMS)? {
                    let number = || {
                        value
                            .parse::<u64>()
                            .map_err(|_| spec_error(format!("nexmark source: `{key}={value}` is not a whole number")))
                    };
                    match key {
                        "rate" => rate = number()?,
                        "event-rate" => {
                            match number()? {
                                0 => return Err(spec_error(
                                    "nexmark source: event-rate=0: give events per second of event time, e.g. 10000",
                                )),
                                n => event_rate = Some(n),
                            }
                        }
                        "seed" => seed = number()?,
                        "events" => events = Some(number()?),
                        "encoding" => {
                            encoding = match value {
                                "json" => EventEncoding::Json,
                                "binary" => EventEncoding::Binary,
                                _ => {
                                    return Err(spec_error(format!(
                                        "nexmark source: `encoding={value}`: give encoding=json or encoding=binary"
                                    )))
                                }
                            }
                        }
                        _ => {
                            return Err(spec_error(format!(
                                "nexmark source: unknown setting `{key}`; expected rate, event-rate, seed, events or encoding"
                            )))
                        }
                    }
                }
                Ok(SourceSpec::Nexmark {
                    rate,
                    event_rate,
                    seed,
                    events,
                    encoding,
                })
            }
            _ => Err(spec_error(format!("unknown source `{s}`; {SOURCE_FORMS}"))),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Sequence { start, rate, timestamp } => {
                write!(f, "sequence:start={start},rate={rate}")?;
                match timestamp {
                    Some(t) => write!(f, ",timestamp={t}"),
                    None => Ok(()),
                }
            }
            SourceSpec::Nexmark {
                rate,
                event_rate,
                seed,
                events,
                encoding,
            } => {
                write!(f, "nexmark:rate={rate}")?;
                if let Some(event_rate) = event_rate {
                    write!(f, ",event-rate={event_rate}")?;
                }
                write!(f, ",seed={seed}")?;
                if let Some(n) = events {
                    write!(f, ",events={n}")?;
                }
                match encoding {
                    EventEncoding::Json => Ok(()),
                    EventEncoding::Binary => write!(f, ",encoding=binary"),
                }
            }
            SourceSpec::File { path, timestamp: None } => write!(f, "file:{path}"),
            SourceSpec::File {
                path,
                timestamp: Some(t),
            } => write!(f, "file:timestamp={t},path={path}"),
            SourceSpec::Kafka {
                brokers,
                topic,
                start,
                group,
            } => {
                write!(f, "kafka:brokers={brokers},topic={topic}")?;
                match start {
                    KafkaStart::Earliest => {}
                    KafkaStart::Latest => f.write_str(",start=latest")?,
                    KafkaStart::Timestamp { ms } => write!(f, ",start=timestamp={ms}")?,
                }
                match group {
                    Some(group) => write!(f, ",group={group}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl FromStr for SinkSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s.split_once(':') {
            None if s == "stdout" => Ok(SinkSpec::Stdout),
            Some(("file", path)) if !path.is_empty() => Ok(SinkSpec::File { path: path.to_string() }),
            Some(("file", _)) => Err(spec_error("file sink needs a path: `file:PATH`")),
            Some(("postgres", rest)) => parse_postgres(rest),
            Some(("kafka", rest)) => parse_kafka_sink(rest),
            _ => Err(spec_error(format!("unknown sink `{s}`; {SINK_FORMS}"))),
        }
    }
}

impl SinkSpec {
    /// The file it writes, if it writes one.
    pub fn file(&self) -> Option<&str> {
        match self {
            SinkSpec::File { path } => Some(path),
            SinkSpec::Stdout | SinkSpec::Postgres { .. } | SinkSpec::Kafka { .. } => None,
        }
    }

    /// The sink task `index` writes: a file's `{task}` is its number.
    pub fn for_task(&self, index: u32) -> SinkSpec {
        match self {
            SinkSpec::File { path } => SinkSpec::File {
                path: path.replace(super::TASK_PLACEHOLDER, &index.to_string()),
            },
            other => other.clone(),
        }
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkSpec::Stdout => f.write_str("stdout"),
            SinkSpec::File { path } => write!(f, "file:{path}"),
            SinkSpec::Postgres { url, table, mode } => {
                write!(f, "postgres:url={},table={table}", redacted(url))?;
                match mode {
                    TableMode::Append => Ok(()),
                    TableMode::Upsert { key } => write!(f, ",mode=upsert,key={}", key.join(",")),
                }
            }
            SinkSpec::Kafka {
                brokers,
                topic,
                delivery,
            } => {
                write!(f, "kafka:brokers={brokers},topic={topic}")?;
                match delivery {
                    Delivery::ExactlyOnce => Ok(()),
                    Delivery::AtLeastOnce => f.write_str(",delivery=at-least-once"),
                }
            }
        }
    }
}

/// Splits `name=value,...` where an item without `=` continues the list
/// of the setting before it when that setting takes a list (`brokers=a,b`).
fn settings<'a>(rest: &'a str, lists: &[&str], forms: &str) -> Result<Vec<(&'a str, Vec<&'a str>)>, SpecError> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for item in rest.split(',').filter(|i| !i.is_empty()) {
        match (item.split_once('='), out.last_mut()) {
            (Some((name, value)), _) => out.push((name, vec![value])),
            (None, Some((name, values))) if lists.contains(name) => values.push(item),
            (None, _) => return Err(spec_error(format!("`{item}` is not key=value; {forms}"))),
        }
    }
    Ok(out)
}

/// A topic's `brokers=` and `topic=`, checked.
fn kafka_topic(
    brokers: Option<String>,
    topic: Option<String>,
    kafka: impl Fn(String) -> SpecError,
) -> Result<(String, String), SpecError> {
    let brokers = brokers.ok_or_else(|| kafka("needs brokers=".into()))?;
    if brokers
        .split(',')
        .any(|b| b.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()))
    {
        return Err(kafka(format!("brokers={brokers} is not a list of HOST:PORT")));
    }
    let topic = topic
        .filter(|t| !t.is_empty())
        .ok_or_else(|| kafka("needs topic=".into()))?;
    Ok((brokers, topic))
}

/// Parses the settings of a `kafka:...` sink.
fn parse_kafka_sink(rest: &str) -> Result<SinkSpec, SpecError> {
    let kafka = |msg: String| spec_error(format!("kafka sink: {msg}; {SINK_FORMS}"));
    let (mut brokers, mut topic, mut delivery) = (None, None, Delivery::default());
    for (name, values) in settings(rest, &["brokers"], SINK_FORMS)? {
        let value = values.join(",");
        match name {
            "brokers" => brokers = Some(value),
            "topic" => topic = Some(value),
            "delivery" => {
                delivery = match value.as_str() {
                    "exactly-once" => Delivery::ExactlyOnce,
                    "at-least-once" => Delivery::AtLeastOnce,
                    _ => return Err(kafka(format!("unknown delivery `{value}`"))),
                }
            }
            _ => return Err(kafka(format!("unknown setting `{name}`"))),
        }
    }
    let (brokers, topic) = kafka_topic(brokers, topic, kafka)?;
    Ok(SinkSpec::Kafka {
        brokers,
        topic,
        delivery,
    })
}

/// Parses the settings of a `kafka:...` source.
fn parse_kafka(rest: &str) -> Result<SourceSpec, SpecError> {
    let kafka = |msg: String| spec_error(format!("kafka source: {msg}; {SOURCE_FORMS}"));
    let (mut brokers, mut topic, mut start, mut group) = (None, None, KafkaStart::default(), None);
    for (name, values) in settings(rest, &["brokers"], SOURCE_FORMS)? {
        let value = values.join(",");
        match name {
            "brokers" => brokers = Some(value),
            "topic" => topic = Some(value),
            "group" => group = Some(value),
            "start" => {
                start = match value.split_once('=') {
                    None if value == "earliest" => KafkaStart::Earliest,
                    None if value == "latest" => KafkaStart::Latest,
                    Some(("timestamp", ms)) => KafkaStart::Timestamp {
                        ms: ms
                            .parse()
                            .map_err(|_| kafka(format!("start=timestamp={ms} is not ms since the epoch")))?,
                    },
                    _ => return Err(kafka(format!("unknown start `{value}`"))),
                }
            }
            _ => return Err(kafka(format!("unknown setting `{name}`"))),
        }
    }
    let (brokers, topic) = kafka_topic(brokers, topic, kafka)?;
    Ok(SourceSpec::Kafka {
        brokers,
        topic,
        start,
        group,
    })
}

/// A URL with its password, if it has one, as `***`: what is printed of a
/// spec (the spec itself keeps it).
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// Parses the settings of `postgres:...`. `key=` takes every following
/// item without an `=` as another column (`key=a,b`).
fn parse_postgres(rest: &str) -> Result<SinkSpec, SpecError> {
    let postgres = |msg: String| spec_error(format!("postgres sink: {msg}; {SINK_FORMS}"));
    let (mut url, mut table, mut mode, mut key) = (None, None, None, Vec::new());
    for (name, values) in settings(rest, &["key"], SINK_FORMS)? {
        match name {
            "url" => url = Some(values.join(",")),
            "table" => table = Some(values.join(",")),
            "mode" => mode = Some(values.join(",")),
            "key" => key.extend(values.iter().map(|v| v.to_string())),
            _ => return Err(postgres(format!("unknown setting `{name}`"))),
        }
    }
    let url = url.ok_or_else(|| postgres("needs url=".into()))?;
    if !url.starts_with("postgresql://") && !url.starts_with("postgres://") {
        return Err(postgres(format!("url={} is not a postgresql:// URL", redacted(&url))));
    }
    let table = table.ok_or_else(|| postgres("needs table=".into()))?;
    let identifier = |s: &str| !s.is_empty() && s.split('.').all(|p| !p.is_empty() && !p.contains('"'));
    if !identifier(&table) || table.split('.').count() > 2 {
        return Err(postgres(format!("table={table} is not NAME or SCHEMA.NAME")));
    }
    if key.iter().any(|k| k.is_empty() || k.contains('"')) {
        return Err(postgres(format!("key={} is not a list of columns", key.join(","))));
    }
    let mode = match (mode.as_deref(), key.is_empty()) {
        (None | Some("append"), true) => TableMode::Append,
        (Some("upsert"), false) => TableMode::Upsert { key },
        (Some("upsert"), true) => return Err(postgres("mode=upsert needs key=COL[,COL]".into())),
        (None | Some("append"), false) => return Err(postgres("key= is for mode=upsert".into())),
        (Some(other), _) => return Err(postgres(format!("unknown mode `{other}`; expected append or upsert"))),
    };
    Ok(SinkSpec::Postgres { url, table, mode })
}

/// What becomes of a record the job refuses (an error from its `process`,
/// a record it cannot decode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OnError {
    /// Fail the attempt, naming the record and the reason; the restart
    /// strategy decides what follows (Flink's default).
    #[default]
    Fail,
    /// Count it (`weir_records_rejected_total`), log it, and go on.
    Skip,
    /// Write it, with the reason, to a sink of its own (once, like any
    /// output), count it, and go on. Late records go there too.
    DeadLetter {
        /// Where refused and late records go.
        sink: SinkSpec,
    },
}

impl OnError {
    /// The dead-letter sink, if the job has one.
    pub fn dead_letters(&self) -> Option<&SinkSpec> {
        match self {
            OnError::DeadLetter { sink } => Some(sink),
            OnError::Fail | OnError::Skip => None,
        }
    }
}

const ON_ERROR_FORMS: &str = "expected `fail`, `skip` or `dead-letter:SINK` (e.g. dead-letter:file:/var/weir/bad)";

impl FromStr for OnError {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "fail" => Ok(OnError::Fail),
            "skip" => Ok(OnError::Skip),
            _ if s.starts_with("dead-letter:") => {
                let sink = s["dead-letter:".len()..]
                    .parse()
                    .map_err(|e: SpecError| spec_error(format!("--on-error dead-letter: {}", e.0)))?;
                Ok(OnError::DeadLetter { sink })
            }
            _ => Err(spec_error(format!("unknown --on-error `{s}`; {ON_ERROR_FORMS}"))),
        }
    }
}

impl fmt::Display for OnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnError::Fail => f.write_str("fail"),
            OnError::Skip => f.write_str("skip"),
            OnError::DeadLetter { sink } => write!(f, "dead-letter:{sink}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_print_back() {
        for s in [
            "sequence:start=5,rate=0",
            "file:/tmp/in.txt",
            "sequence:start=0,rate=10,timestamp=every:10ms",
            "sequence:start=0,rate=10,timestamp=ingest",
            "file:timestamp=json:ts,path=/tmp/in.txt",
            "file:timestamp=ingest,path=/tmp/a,b=c.txt",
            "nexmark:rate=0,seed=7,events=1000",
            "nexmark:rate=0,event-rate=10000,seed=7",
            "nexmark:rate=10000,seed=0",
            "nexmark:rate=0,seed=1,events=5,encoding=binary",
        ] {
            assert_eq!(s.parse::<SourceSpec>().unwrap().to_string(), s);
        }
        assert_eq!(
            "nexmark".parse::<SourceSpec>().unwrap(),
            SourceSpec::Nexmark {
                rate: 10_000,
                event_rate: None,
                seed: 0,
                events: None,
                encoding: EventEncoding::Json,
            }
        );
        assert_eq!(
            "sequence".parse::<SourceSpec>().unwrap(),
            SourceSpec::Sequence {
                start: 0,
                rate: 1000,
                timestamp: None
            }
        );
        for bad in [
            "sequence:timestamp=json:ts",
            "sequence:timestamp=every:0s",
            "sequence:timestamp=every:500us",
            "file:timestamp=every:1s,path=/x",
            "file:timestamp=ingest,path=",
            "file:speed=1,path=/x",
            "sequence:timestamp=soon",
            "nexmark:rate=-1",
            "nexmark:events=many",
            "nexmark:speed=1",
            "nexmark:event-rate=0",
            "nexmark:encoding=avro",
        ] {
            assert!(bad.parse::<SourceSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_sources_and_sinks_name_the_accepted_forms() {
        assert!("kafka:topic"
            .parse::<SourceSpec>()
            .unwrap_err()
            .0
            .contains("expected `sequence"));
        assert!("sequence:rate=fast"
            .parse::<SourceSpec>()
            .unwrap_err()
            .0
            .contains("not a number"));
        assert!("sequence:speed=1"
            .parse::<SourceSpec>()
            .unwrap_err()
            .0
            .contains("unknown setting"));
        assert!("file:".parse::<SourceSpec>().is_err());
        assert!("s3:bucket"
            .parse::<SinkSpec>()
            .unwrap_err()
            .0
            .contains("expected `stdout`"));
        assert_eq!(
            "file:/x".parse::<SinkSpec>().unwrap(),
            SinkSpec::File { path: "/x".into() }
        );
    }

    #[test]
    fn kafka_sources_parse_and_print_back() {
        for s in [
            "kafka:brokers=127.0.0.1:9092,topic=in",
            "kafka:brokers=a:1,b:2,topic=in,start=latest,group=g",
            "kafka:brokers=a:1,topic=in,start=timestamp=1700000000000",
        ] {
            assert_eq!(s.parse::<SourceSpec>().unwrap().to_string(), s);
        }
        assert!("kafka:brokers=a:1,topic=t"
            .parse::<SourceSpec>()
            .unwrap()
            .has_event_times());
        for (bad, why) in [
            ("kafka:topic=t", "needs brokers="),
            ("kafka:brokers=a:1", "needs topic="),
            ("kafka:brokers=a,topic=t", "not a list of HOST:PORT"),
            ("kafka:brokers=a:1,topic=t,start=soon", "unknown start"),
            ("kafka:brokers=a:1,topic=t,start=timestamp=x", "not ms since the epoch"),
            ("kafka:brokers=a:1,topic=t,speed=1", "unknown setting"),
            ("kafka:brokers=a:1,topic=t,x", "not key=value"),
        ] {
            let err = bad.parse::<SourceSpec>().unwrap_err().0;
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn kafka_sinks_parse_and_print_back() {
        for s in [
            "kafka:brokers=a:1,b:2,topic=out",
            "kafka:brokers=a:1,topic=out,delivery=at-least-once",
        ] {
            assert_eq!(s.parse::<SinkSpec>().unwrap().to_string(), s);
        }
        for (bad, why) in [
            ("kafka:topic=t", "kafka sink: needs brokers="),
            ("kafka:brokers=a:1,topic=t,delivery=maybe", "unknown delivery"),
        ] {
            let err = bad.parse::<SinkSpec>().unwrap_err().0;
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn postgres_sinks_parse_and_print_back() {
        for s in [
            "postgres:url=postgresql://weir@127.0.0.1:5432/db,table=out",
            "postgres:url=postgresql://weir@h:1/db?sslmode=disable,table=s.t,mode=upsert,key=a,b",
        ] {
            assert_eq!(s.parse::<SinkSpec>().unwrap().to_string(), s);
        }
        let secret: SinkSpec = "postgres:url=postgresql://u:hunter2@h:1/d,table=t".parse().unwrap();
        assert_eq!(
            secret.to_string(),
            "postgres:url=postgresql://u:***@h:1/d,table=t",
            "never print a password"
        );
        let spec: SinkSpec = "postgres:table=t,mode=upsert,key=id,url=postgres://u@h/d"
            .parse()
            .unwrap();
        assert_eq!(
            spec,
            SinkSpec::Postgres {
                url: "postgres://u@h/d".into(),
                table: "t".into(),
                mode: TableMode::Upsert { key: vec!["id".into()] },
            }
        );
        for (bad, why) in [
            ("postgres:table=t", "needs url="),
            ("postgres:url=http://h/d,table=t", "not a postgresql:// URL"),
            ("postgres:url=postgres://h/d", "needs table="),
            ("postgres:url=postgres://h/d,table=a.b.c", "not NAME or SCHEMA.NAME"),
            ("postgres:url=postgres://h/d,table=t,mode=upsert", "needs key="),
            ("postgres:url=postgres://h/d,table=t,key=a", "key= is for mode=upsert"),
            ("postgres:url=postgres://h/d,table=t,mode=merge", "unknown mode"),
            ("postgres:url=postgres://h/d,table=t,speed=1", "unknown setting"),
            ("postgres:url=postgres://h/d,t", "not key=value"),
        ] {
            let err = bad.parse::<SinkSpec>().unwrap_err().0;
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn error_routes_parse_and_print_back() {
        for s in ["fail", "skip", "dead-letter:file:/tmp/bad", "dead-letter:stdout"] {
            assert_eq!(s.parse::<OnError>().unwrap().to_string(), s);
        }
        assert!("retry".parse::<OnError>().unwrap_err().0.contains("expected `fail`"));
        let err = "dead-letter:kafka".parse::<OnError>().unwrap_err().0;
        assert!(err.contains("--on-error dead-letter: unknown sink"), "{err}");
        assert_eq!(
            "dead-letter:file:/x".parse::<OnError>().unwrap().dead_letters(),
            Some(&SinkSpec::File { path: "/x".into() })
        );
        assert_eq!(OnError::default(), OnError::Fail);
    }
}
