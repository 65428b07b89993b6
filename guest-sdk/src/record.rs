//! A record as a job reads it, borrowed from the batch that brought it.

use alloc::borrow::Cow;
use alloc::format;

use crate::bindings::weir::job::types::Header;
use crate::Error;

/// What a record carries as its value: a number (from a source of numbers,
/// which travel unboxed) or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// A number.
    Int(i64),
    /// Bytes: a line of text, a JSON document, a Kafka message.
    Bytes(&'a [u8]),
}

/// One record of a stream: an optional key, a value, an event timestamp,
/// and where the source had it from. Everything is borrowed from the batch,
/// so reading a record allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Value<'a>,
    pub(crate) timestamp: Option<i64>,
    pub(crate) partition: Option<u32>,
    pub(crate) offset: Option<i64>,
    pub(crate) headers: &'a [Header],
}

impl<'a> Record<'a> {
    /// A record of a number, with nothing else (build on it with
    /// [`Record::with_key`] and [`Record::at`]).
    pub const fn from_int(n: i64) -> Record<'a> {
        Record::of(Value::Int(n))
    }

    /// A record of bytes (a text's UTF-8), with nothing else.
    pub const fn from_bytes(value: &'a [u8]) -> Record<'a> {
        Record::of(Value::Bytes(value))
    }

    const fn of(value: Value<'a>) -> Record<'a> {
        Record {
            key: None,
            value,
            timestamp: None,
            partition: None,
            offset: None,
            headers: &[],
        }
    }

    /// The key, if the record has one.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The key as UTF-8 text, if the record has one; an error if it is not text.
    pub fn key_text(&self) -> Result<Option<&'a str>, Error> {
        self.key
            .map(|key| core::str::from_utf8(key).map_err(|e| Error::new(format!("the key is not UTF-8: {e}"))))
            .transpose()
    }

    /// The value as it came.
    pub fn value(&self) -> Value<'a> {
        self.value
    }

    /// The value as a number: a number as is, bytes parsed as decimal text.
    /// Inlined, with the parse out of line: a job's loop over numbers then
    /// compiles to what it did with bare numbers.
    #[inline(always)]
    pub fn int(&self) -> Result<i64, Error> {
        match self.value {
            Value::Int(n) => Ok(n),
            Value::Bytes(bytes) => parse_int(bytes),
        }
    }

    /// The value as UTF-8 text; a number in decimal.
    pub fn text(&self) -> Result<Cow<'a, str>, Error> {
        match self.value {
            Value::Int(n) => Ok(Cow::Owned(format!("{n}"))),
            Value::Bytes(bytes) => core::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|e| Error::new(format!("the value is not UTF-8: {e}"))),
        }
    }

    /// The value's bytes (a number's in decimal).
    pub fn value_bytes(&self) -> Cow<'a, [u8]> {
        match self.value {
            Value::Int(n) => Cow::Owned(format!("{n}").into_bytes()),
            Value::Bytes(bytes) => Cow::Borrowed(bytes),
        }
    }

    /// The value decoded from JSON into `T` (borrowing from the record
    /// where `T` borrows, as `&str` fields do).
    pub fn json<T: serde::Deserialize<'a>>(&self) -> Result<T, Error> {
        match self.value {
            Value::Bytes(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| Error::new(format!("the value is not the JSON expected: {e}"))),
            Value::Int(n) => {
                use serde::de::IntoDeserializer;
                T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(n))
                    .map_err(|e| Error::new(format!("the value {n} is not the JSON expected: {e}")))
            }
        }
    }

    /// Its event time, in ms since the Unix epoch, if its source gave one.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The source partition it came from, if the source has partitions.
    pub fn partition(&self) -> Option<u32> {
        self.partition
    }

    /// Its offset in its partition, if the source has offsets.
    pub fn offset(&self) -> Option<i64> {
        self.offset
    }

    /// Its headers, as (name, bytes), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        self.headers.iter().map(|h| (h.key.as_str(), h.value.as_slice()))
    }

    /// The same record with `key`.
    pub fn with_key(self, key: &'a [u8]) -> Record<'a> {
        Record { key: Some(key), ..self }
    }

    /// The same record at event time `timestamp_ms`.
    pub fn at(self, timestamp_ms: i64) -> Record<'a> {
        Record {
            timestamp: Some(timestamp_ms),
            ..self
        }
    }
}

#[cold]
#[inline(never)]
fn parse_int(bytes: &[u8]) -> Result<i64, Error> {
    let text = core::str::from_utf8(bytes).map_err(|_| Error::new("the value is not a number"))?;
    text.trim()
        .parse()
        .map_err(|_| Error::new(format!("the value {text:?} is not a number")))
}
