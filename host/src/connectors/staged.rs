//! How output is staged between a barrier and its publish, which is what a
//! checkpoint carries and what sink positions count bytes of: lines of
//! values for the sinks that write only values (stdout, a file,
//! PostgreSQL), whole records for Kafka, which keeps keys, timestamps and
//! headers. A sink reads back the format it asked for.

use super::lines::{dead_letter, encode_batch};
use crate::spec::SinkSpec;
use crate::wit::{key, texts, value, Batch, Records, Rejection};

/// The staging format of a sink's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// One line per record: its value.
    Lines,
    /// Length-prefixed records: key, value, timestamp, headers.
    Records,
}

impl OutputFormat {
    /// The format `sink` publishes from.
    pub fn of(sink: &SinkSpec) -> OutputFormat {
        match sink {
            SinkSpec::Kafka { .. } => OutputFormat::Records,
            SinkSpec::Stdout | SinkSpec::File { .. } | SinkSpec::Postgres { .. } => OutputFormat::Lines,
        }
    }

    /// Appends a batch the job emitted.
    pub fn stage(self, batch: &Batch, out: &mut Vec<u8>) {
        match (self, batch) {
            (OutputFormat::Lines, _) => encode_batch(batch, out),
            (OutputFormat::Records, Batch::Records(records)) => {
                for i in 0..records.keyed.len() {
                    stage_record(records, i, out);
                }
            }
            (OutputFormat::Records, Batch::Ints(ints)) => {
                for n in ints {
                    push(out, None, n.to_string().as_bytes(), None, &[]);
                }
            }
            (OutputFormat::Records, Batch::Texts(packed)) => {
                for text in texts(packed) {
                    push(out, None, text, None, &[]);
                }
            }
        }
    }

    /// Appends the dead letter of a record refused in `input`.
    pub fn stage_dead_letter(self, input: &Batch, rejection: &Rejection, out: &mut Vec<u8>) {
        let letter = dead_letter(input, rejection);
        match self {
            OutputFormat::Lines => {
                out.extend_from_slice(&letter);
                out.push(b'\n');
            }
            OutputFormat::Records => push(out, None, &letter, None, &[]),
        }
    }
}

/// One staged record, borrowed from the staged bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedRecord<'a> {
    /// Its key, if it has one.
    pub key: Option<&'a [u8]>,
    /// Its value.
    pub value: &'a [u8],
    /// Its event time (ms since the Unix epoch), if it has one.
    pub timestamp: Option<i64>,
    /// Its headers.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// Where the record starts in the staged bytes.
    pub start: usize,
}

fn stage_record(records: &Records, i: usize, out: &mut Vec<u8>) {
    let value = value(records, i);
    let timestamp = records.timestamps.get(i).copied().filter(|t| *t != i64::MIN);
    let headers = match (records.header_ends.get(i), i.checked_sub(1)) {
        (Some(end), previous) => {
            let start = previous.and_then(|p| records.header_ends.get(p)).copied().unwrap_or(0);
            records.headers.get(start as usize..*end as usize).unwrap_or_default()
        }
        (None, _) => &[],
    };
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|h| (h.key.as_str(), h.value.as_slice())).collect();
    push(out, key(records, i), value, timestamp, &headers);
}

/// Appends one record: flags (1: keyed, 2: timed), then the key, the
/// value, the timestamp and the headers, each length-prefixed (u32 LE).
fn push(out: &mut Vec<u8>, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>, headers: &[(&str, &[u8])]) {
    out.push(u8::from(key.is_some()) | (u8::from(timestamp.is_some()) << 1));
    if let Some(key) = key {
        bytes(out, key);
    }
    bytes(out, value);
    if let Some(t) = timestamp {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        bytes(out, name.as_bytes());
        bytes(out, value);
    }
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Reads staged records back, from byte `from` on; an error names the
/// first malformed one (a checkpoint's checksum makes that a bug, never
/// a panic).
pub fn read_records(staged: &[u8], from: usize) -> Result<Vec<StagedRecord<'_>>, String> {
    let mut reader = Reader { staged, at: from };
    let mut records = Vec::new();
    while reader.at < staged.len() {
        let start = reader.at;
        let record = reader
            .record(start)
            .ok_or_else(|| format!("staged output is malformed at byte {start}"))?;
        records.push(record);
    }
    Ok(records)
}

struct Reader<'a> {
    staged: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.staged.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(taken)
    }

    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()?;
        self.take(len)
    }

    fn record(&mut self, start: usize) -> Option<StagedRecord<'a>> {
        let flags = *self.take(1)?.first()?;
        let key = if flags & 1 != 0 { Some(self.bytes()?) } else { None };
        let value = self.bytes()?;
        let timestamp = match flags & 2 != 0 {
            true => Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            false => None,
        };
        let count = self.u32()?;
        let mut headers = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let name = std::str::from_utf8(self.bytes()?).ok()?;
            headers.push((name, self.bytes()?));
        }
        Some(StagedRecord {
            key,
            value,
            timestamp,
            headers,
            start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::Header;

    #[test]
    fn records_stage_with_their_key_timestamp_and_headers_and_read_back() {
        let records = Records {
            data: b"kav".to_vec(),
            ends: vec![1, 2, 2, 3],
            keyed: vec![1, 0],
            timestamps: vec![7, i64::MIN],
            header_ends: vec![1, 1],
            headers: vec![Header {
                key: "h".into(),
                value: b"1".to_vec(),
            }],
            ..Records::default()
        };
        let mut out = Vec::new();
        OutputFormat::Records.stage(&Batch::Records(records), &mut out);
        OutputFormat::Records.stage(&Batch::Ints(vec![-5]), &mut out);
        let back = read_records(&out, 0).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(
            (back[0].key, back[0].value, back[0].timestamp),
            (Some(&b"k"[..]), &b"a"[..], Some(7))
        );
        assert_eq!(back[0].headers, vec![("h", &b"1"[..])]);
        assert_eq!((back[1].key, back[1].value, back[1].timestamp), (None, &b"v"[..], None));
        assert_eq!(back[2].value, b"-5");
        let from_second = read_records(&out, back[1].start).unwrap();
        assert_eq!(from_second[0], back[1]);
        assert!(
            read_records(&out[..out.len() - 1], 0).is_err(),
            "a cut record is an error"
        );
        assert!(
            read_records(&[7, 255, 255, 255, 255], 0).is_err(),
            "a length past the end is an error"
        );
    }

    #[test]
    fn lines_sinks_stage_values_as_lines() {
        let mut out = Vec::new();
        OutputFormat::Lines.stage(&Batch::Ints(vec![1, 2]), &mut out);
        assert_eq!(out, b"1\n2\n");
        assert_eq!(OutputFormat::of(&SinkSpec::Stdout), OutputFormat::Lines);
    }
}
