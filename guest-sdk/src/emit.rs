//! What a job emits, packed as it comes into the batch that crosses back
//! to the host (numbers in one list, texts in one buffer, records in
//! columns), so emitting costs no second pass or copy.

use alloc::vec::Vec;

use crate::bindings::weir::job::types::{Batch, Records, Texts};
use crate::record::{Record, Value};
use crate::timers::Timer;

/// What a job has while it handles one batch: where its output goes, and
/// the input's watermark.
pub struct Context {
    packed: Packed,
    watermark: Option<i64>,
    /// Timers set while handling this batch.
    pub(crate) timers: Vec<Timer>,
}

/// What a batch's output holds so far.
enum Packed {
    Empty,
    Ints(Vec<i64>),
    Texts(Texts),
    /// Records with a key, a timestamp or headers, or numbers and texts
    /// both: in columns, in order.
    Records(Records),
}

impl Context {
    pub(crate) fn new(watermark: Option<i64>) -> Context {
        Context {
            packed: Packed::Empty,
            watermark,
            timers: Vec::new(),
        }
    }

    /// Sets a processing-time timer: [`crate::Job::on_timer`] gets
    /// `Timer::Processing(at_ms)` once the supervisor's clock reaches
    /// `at_ms` (ms since the Unix epoch), whether or not records come. A
    /// timer already set for that time is set once.
    pub fn timer_at(&mut self, at_ms: u64) {
        self.timers.push(Timer::Processing(at_ms));
    }

    /// Sets an event-time timer: [`crate::Job::on_timer`] gets
    /// `Timer::Event(at)` once the watermark reaches `at`.
    pub fn event_timer_at(&mut self, at: i64) {
        self.timers.push(Timer::Event(at));
    }

    pub(crate) fn set_watermark(&mut self, watermark: i64) {
        self.watermark = Some(watermark);
    }

    /// The event time up to which the input is complete (no record with an
    /// older timestamp will come, but late ones), if the source has one.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Emits a number. Never inlined: a job's per-record loop runs fastest
    /// with only a call here (the counter: about 730 M events/s with the
    /// call, 153 M inlined).
    #[inline(never)]
    pub fn emit_int(&mut self, n: i64) {
        match &mut self.packed {
            Packed::Ints(ints) => ints.push(n),
            Packed::Empty => {
                // Room for a window's worth of output from the first emit on:
                // growing from one element cost the counter 2%.
                let mut ints = Vec::with_capacity(64);
                ints.push(n);
                self.packed = Packed::Ints(ints);
            }
            _ => self.records().push(Record::from_int(n)),
        }
    }

    /// Emits a text (copied into the batch).
    #[inline(never)]
    pub fn emit_text(&mut self, text: &str) {
        match &mut self.packed {
            Packed::Texts(texts) => push_text(texts, text.as_bytes()),
            Packed::Empty => {
                let mut texts = Texts {
                    data: Vec::new(),
                    ends: Vec::new(),
                };
                push_text(&mut texts, text.as_bytes());
                self.packed = Packed::Texts(texts);
            }
            _ => self.records().push(Record::from_bytes(text.as_bytes())),
        }
    }

    /// Emits a record: its key, value, timestamp and headers (its
    /// partition and offset are the source's, and stay behind). Build one
    /// with `Record::from_bytes(value).with_key(key).at(timestamp)`.
    pub fn emit(&mut self, record: Record<'_>) {
        let plain = record.key.is_none() && record.timestamp.is_none() && record.headers.is_empty();
        match record.value {
            Value::Int(n) if plain => self.emit_int(n),
            Value::Bytes(bytes) if plain && !matches!(self.packed, Packed::Ints(_)) => match &mut self.packed {
                Packed::Texts(texts) => push_text(texts, bytes),
                Packed::Records(records) => records.push(record),
                _ => {
                    let mut texts = Texts {
                        data: Vec::new(),
                        ends: Vec::new(),
                    };
                    push_text(&mut texts, bytes);
                    self.packed = Packed::Texts(texts);
                }
            },
            _ => self.records().push(record),
        }
    }

    /// Emits `value` as JSON, with no key.
    pub fn emit_json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), crate::Error> {
        let bytes = serde_json::to_vec(value)?;
        self.emit(Record::from_bytes(&bytes));
        Ok(())
    }

    /// The output as records, converting what was packed more cheaply.
    fn records(&mut self) -> &mut Records {
        if !matches!(self.packed, Packed::Records(_)) {
            let mut records = Records::default();
            match core::mem::replace(&mut self.packed, Packed::Empty) {
                Packed::Ints(ints) => ints.into_iter().for_each(|n| records.push(Record::from_int(n))),
                Packed::Texts(texts) => {
                    crate::instance::unpack(&texts).for_each(|text| records.push(Record::from_bytes(text)))
                }
                Packed::Empty | Packed::Records(_) => {}
            }
            self.packed = Packed::Records(records);
        }
        match &mut self.packed {
            Packed::Records(records) => records,
            _ => unreachable!("just made records"),
        }
    }

    /// The batch for the host.
    pub(crate) fn finish(self) -> Batch {
        match self.packed {
            Packed::Empty => Batch::Ints(Vec::new()),
            Packed::Ints(ints) => Batch::Ints(ints),
            Packed::Texts(texts) => Batch::Texts(texts),
            Packed::Records(records) => Batch::Records(records),
        }
    }
}

fn push_text(texts: &mut Texts, text: &[u8]) {
    texts.data.extend_from_slice(text);
    texts.ends.push(texts.data.len() as u32);
}

// By hand: the bindings' derives apply to every generated type, and their
// enums cannot derive `Default`.
#[allow(clippy::derivable_impls)]
impl Default for Records {
    fn default() -> Records {
        Records {
            data: Vec::new(),
            ends: Vec::new(),
            keyed: Vec::new(),
            timestamps: Vec::new(),
            partitions: Vec::new(),
            offsets: Vec::new(),
            header_ends: Vec::new(),
            headers: Vec::new(),
        }
    }
}

impl Records {
    /// Appends a record (its key, value, timestamp and headers).
    pub(crate) fn push(&mut self, record: Record<'_>) {
        let count = self.keyed.len();
        self.data.extend_from_slice(record.key.unwrap_or_default());
        self.ends.push(self.data.len() as u32);
        match record.value {
            Value::Int(n) => self.data.extend_from_slice(alloc::format!("{n}").as_bytes()),
            Value::Bytes(bytes) => self.data.extend_from_slice(bytes),
        }
        self.ends.push(self.data.len() as u32);
        self.keyed.push(u8::from(record.key.is_some()));
        self.timestamps.push(record.timestamp.unwrap_or(i64::MIN));
        if !record.headers.is_empty() || !self.header_ends.is_empty() {
            // The column is empty until a record has headers; then it holds
            // one end per record, those before included.
            self.header_ends.resize(count, 0);
            self.headers.extend(record.headers.iter().cloned());
            self.header_ends.push(self.headers.len() as u32);
        }
    }

    /// How many records it holds.
    pub(crate) fn len(&self) -> usize {
        self.keyed.len()
    }

    /// Record `i`, borrowed. Bounds that do not fit give empty parts, never a trap.
    pub(crate) fn get(&self, i: usize) -> Record<'_> {
        let end = |j: usize| self.ends.get(j).map_or(0, |e| *e as usize);
        let key_start = if i == 0 { 0 } else { end(2 * i - 1) };
        let slice = |start: usize, end: usize| self.data.get(start..end).unwrap_or_default();
        let key = slice(key_start, end(2 * i));
        let value = slice(end(2 * i), end(2 * i + 1));
        let header_start = if i == 0 {
            0
        } else {
            self.header_ends.get(i - 1).map_or(0, |e| *e as usize)
        };
        let header_end = self.header_ends.get(i).map_or(0, |e| *e as usize);
        Record {
            key: (self.keyed.get(i) == Some(&1)).then_some(key),
            value: Value::Bytes(value),
            timestamp: self.timestamps.get(i).copied().filter(|t| *t != i64::MIN),
            partition: self.partitions.get(i).copied(),
            offset: self.offsets.get(i).copied(),
            headers: self.headers.get(header_start..header_end).unwrap_or_default(),
        }
    }
}
