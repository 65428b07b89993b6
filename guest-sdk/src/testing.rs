//! Runs a job natively, in plain `cargo test`: no ZooKeeper, no supervisor,
//! no wasm. The records go through the same batching and unbatching as on
//! a supervisor, and a snapshot round trip goes through the same encoding.
//!
//! ```ignore
//! use weir_guest::testing::{Harness, Input};
//!
//! let mut job = Harness::<Counter>::with_config(&[("window", "2")]).unwrap();
//! let out = job.process(&[Input::int(1), Input::int(2), Input::int(3)]);
//! assert_eq!(out.ints(), vec![3]);
//! job.snapshot_and_restore().unwrap();
//! assert_eq!(job.process(&[Input::int(4)]).ints(), vec![7]);
//! ```

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::bindings::weir::job::types::{Batch, Header, Records, Rejection, Texts};
use crate::instance::{unpack, Instance};
use crate::{Job, Record, Value};

std::thread_local! {
    /// The processing time a harness on this thread set, if one did.
    static NOW: core::cell::Cell<Option<u64>> = const { core::cell::Cell::new(None) };
}

/// The processing time a harness set, which `now_millis` gives in a test.
#[cfg(not(target_family = "wasm"))]
pub(crate) fn now() -> Option<u64> {
    NOW.get()
}

/// A job under test, with the settings it was configured with.
pub struct Harness<J: Job> {
    pub(crate) instance: Instance<J>,
    config: Vec<(String, String)>,
    watermark: Option<i64>,
    /// When the job last asked to be woken.
    wake_at: Option<u64>,
}

impl<J: Job> Harness<J> {
    /// The job configured with no settings.
    pub fn new() -> Result<Harness<J>, String> {
        Harness::with_config(&[])
    }

    /// The job configured with `config`, as `--config key=value` gives it.
    pub fn with_config(config: &[(&str, &str)]) -> Result<Harness<J>, String> {
        Harness::with_instance(Instance::default(), config)
    }

    fn with_instance(mut instance: Instance<J>, config: &[(&str, &str)]) -> Result<Harness<J>, String> {
        let config: Vec<(String, String)> = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        instance.init(&config)?;
        Ok(Harness {
            instance,
            config,
            watermark: None,
            wake_at: None,
        })
    }

    /// Sets the watermark the next batches carry (as `--watermark` would
    /// compute it from their event times).
    pub fn set_watermark(&mut self, watermark: Option<i64>) {
        self.watermark = watermark;
    }

    /// Moves the watermark to `watermark` with no records, as a supervisor
    /// does when time passes: windows due fire.
    pub fn advance_watermark(&mut self, watermark: i64) -> Output {
        self.watermark = Some(watermark);
        self.process(&[])
    }

    /// Sets the processing time the job sees (`now_millis`, and what its
    /// processing-time timers are due by) from now on, on this thread.
    pub fn set_processing_time(&mut self, now_ms: u64) {
        NOW.set(Some(now_ms));
    }

    /// Moves processing time to `now_ms` and, if the job asked to be woken
    /// by then, wakes it with no records, as a supervisor does.
    pub fn advance_processing_time(&mut self, now_ms: u64) -> Output {
        self.set_processing_time(now_ms);
        match self.wake_at {
            Some(at) if at <= now_ms => self.process(&[]),
            _ => Output::default(),
        }
    }

    /// When the job asked to be woken with no records: its earliest
    /// processing-time timer.
    pub fn wake_at(&self) -> Option<u64> {
        self.wake_at
    }

    /// Runs one batch of `inputs` through the job.
    pub fn process(&mut self, inputs: &[Input]) -> Output {
        let out = self.instance.process_batch(&batch(inputs), self.watermark);
        self.wake_at = out.wake_at;
        let (late, rejected) = out.rejected.into_iter().partition::<Vec<_>, _>(|r| r.late);
        let by_index = |r: Vec<Rejection>| r.into_iter().map(|r| (r.index as usize, r.reason)).collect();
        Output {
            emitted: emitted(&out.batch),
            rejected: by_index(rejected),
            late: by_index(late),
        }
    }

    /// Snapshots the job and replaces it with a fresh instance restored from
    /// the snapshot and configured again, as a supervisor does on failover.
    pub fn snapshot_and_restore(&mut self) -> Result<(), String> {
        let config: Vec<(&str, &str)> = self.config.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        *self = self.upgrade(&config)?;
        Ok(())
    }

    /// Snapshots the job and restores the snapshot into a new version of
    /// it, `N`, configured with `config`, as `weir upgrade` does: a test
    /// that [`Job::migrate`] reads the old state, or that `N` refuses it.
    pub fn upgrade<N: Job>(&self, config: &[(&str, &str)]) -> Result<Harness<N>, String> {
        let restored = Instance::<N>::restore(&self.instance.snapshot())?;
        let mut upgraded = Harness::<N>::with_instance(restored, config)?;
        upgraded.watermark = self.watermark;
        upgraded.wake_at = upgraded.instance.wake_at();
        Ok(upgraded)
    }

    /// The job's state: its one instance, or, with
    /// [`Job::PARTITIONED_STATE`], the instance of the lowest partition
    /// seen (see [`Harness::partition`]); a partitioned job that has seen
    /// no record has none, and this panics.
    pub fn job(&self) -> &J {
        let first = self.instance.slots().values().next();
        &first
            .expect("a job with PARTITIONED_STATE has no state before its first record")
            .job
    }

    /// With [`Job::PARTITIONED_STATE`], the state of the instance that
    /// keeps `partition`'s records, once one came.
    pub fn partition(&self, partition: u32) -> Option<&J> {
        self.instance.slots().get(&partition).map(|slot| &slot.job)
    }
}

/// A record to feed a job under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    key: Option<Vec<u8>>,
    value: InputValue,
    timestamp: Option<i64>,
    partition: Option<u32>,
    offset: Option<i64>,
    headers: Vec<Header>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InputValue {
    Int(i64),
    Bytes(Vec<u8>),
}

impl Input {
    fn of(value: InputValue) -> Input {
        Input {
            key: None,
            value,
            timestamp: None,
            partition: None,
            offset: None,
            headers: Vec::new(),
        }
    }

    /// A number, as the `sequence` source gives.
    pub fn int(n: i64) -> Input {
        Input::of(InputValue::Int(n))
    }

    /// A text, as the `file` source gives a line.
    pub fn text(text: &str) -> Input {
        Input::of(InputValue::Bytes(text.as_bytes().to_vec()))
    }

    /// Raw bytes.
    pub fn bytes(bytes: &[u8]) -> Input {
        Input::of(InputValue::Bytes(bytes.to_vec()))
    }

    /// `value` as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Input {
        Input::of(InputValue::Bytes(
            serde_json::to_vec(value).expect("test input serializes"),
        ))
    }

    /// With a key.
    pub fn key(mut self, key: &[u8]) -> Input {
        self.key = Some(key.to_vec());
        self
    }

    /// At event time `timestamp_ms`.
    pub fn at(mut self, timestamp_ms: i64) -> Input {
        self.timestamp = Some(timestamp_ms);
        self
    }

    /// From source partition `partition` at `offset`.
    pub fn from_partition(mut self, partition: u32, offset: i64) -> Input {
        self.partition = Some(partition);
        self.offset = Some(offset);
        self
    }

    /// With one more header.
    pub fn header(mut self, key: &str, value: &[u8]) -> Input {
        self.headers.push(Header {
            key: key.to_string(),
            value: value.to_vec(),
        });
        self
    }

    fn is_plain(&self) -> bool {
        self.key.is_none()
            && self.timestamp.is_none()
            && self.partition.is_none()
            && self.offset.is_none()
            && self.headers.is_empty()
    }
}

/// The cheapest batch that carries `inputs`, as a source would send them.
fn batch(inputs: &[Input]) -> Batch {
    if inputs
        .iter()
        .all(|i| i.is_plain() && matches!(i.value, InputValue::Int(_)))
    {
        return Batch::Ints(
            inputs
                .iter()
                .filter_map(|i| match i.value {
                    InputValue::Int(n) => Some(n),
                    InputValue::Bytes(_) => None,
                })
                .collect(),
        );
    }
    if inputs
        .iter()
        .all(|i| i.is_plain() && matches!(i.value, InputValue::Bytes(_)))
    {
        let mut texts = Texts {
            data: Vec::new(),
            ends: Vec::new(),
        };
        for input in inputs {
            if let InputValue::Bytes(bytes) = &input.value {
                texts.data.extend_from_slice(bytes);
                texts.ends.push(texts.data.len() as u32);
            }
        }
        return Batch::Texts(texts);
    }
    let mut records = Records::default();
    for input in inputs {
        let value = match &input.value {
            InputValue::Int(n) => Value::Int(*n),
            InputValue::Bytes(bytes) => Value::Bytes(bytes),
        };
        records.push(Record {
            key: input.key.as_deref(),
            value,
            timestamp: input.timestamp,
            partition: None,
            offset: None,
            headers: &input.headers,
        });
    }
    if inputs.iter().any(|i| i.partition.is_some() || i.offset.is_some()) {
        records.partitions = inputs.iter().map(|i| i.partition.unwrap_or(0)).collect();
        records.offsets = inputs.iter().map(|i| i.offset.unwrap_or(-1)).collect();
    }
    Batch::Records(records)
}

/// What one batch gave back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The records emitted, in order.
    pub emitted: Vec<Emitted>,
    /// The inputs refused: their index in the batch and the reason.
    pub rejected: Vec<(usize, String)>,
    /// The inputs that came too late for their window (the side output):
    /// their index in the batch and the reason.
    pub late: Vec<(usize, String)>,
}

impl Output {
    /// The emitted values as numbers (panics on one that is not).
    pub fn ints(&self) -> Vec<i64> {
        self.emitted
            .iter()
            .map(|e| e.text().trim().parse().expect("an emitted number"))
            .collect()
    }

    /// The emitted values as texts.
    pub fn texts(&self) -> Vec<String> {
        self.emitted.iter().map(|e| e.text().to_string()).collect()
    }
}

/// One emitted record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// Its key, if it has one.
    pub key: Option<Vec<u8>>,
    /// Its value (a number in decimal, as sinks write it).
    pub value: Vec<u8>,
    /// Its event time, if it has one.
    pub timestamp: Option<i64>,
    /// Its headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Emitted {
    /// The value as text (replacing what is not UTF-8).
    pub fn text(&self) -> alloc::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }

    /// The value decoded from JSON.
    pub fn json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.value)
    }
}

fn emitted(batch: &Batch) -> Vec<Emitted> {
    let plain = |value: Vec<u8>| Emitted {
        key: None,
        value,
        timestamp: None,
        headers: Vec::new(),
    };
    match batch {
        Batch::Ints(ints) => ints.iter().map(|n| plain(alloc::format!("{n}").into_bytes())).collect(),
        Batch::Texts(texts) => unpack(texts).map(|t| plain(t.to_vec())).collect(),
        Batch::Records(records) => (0..records.len())
            .map(|i| {
                let r = records.get(i);
                Emitted {
                    key: r.key().map(<[u8]>::to_vec),
                    value: r.value_bytes().into_owned(),
                    timestamp: r.timestamp(),
                    headers: r.headers().map(|(k, v)| (k.to_string(), v.to_vec())).collect(),
                }
            })
            .collect(),
    }
}
