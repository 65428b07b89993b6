//! The line encoding the stdout, file and PostgreSQL sinks take: one line
//! per record, its value; and dead letters as JSON objects.

use std::io::Write;

use crate::wit::{key, texts, value, values, Batch, Records, Rejection};

/// Renders a batch as the line sinks write it: one line per record, its
/// value (numbers in decimal, a newline inside a value written as `\n`);
/// keys and timestamps stay behind.
pub fn encode_batch(batch: &Batch, out: &mut Vec<u8>) {
    match batch {
        Batch::Ints(ints) => ints.iter().for_each(|n| encode_int(*n, out)),
        Batch::Texts(packed) => texts(packed).for_each(|text| encode_text(text, out)),
        Batch::Records(records) => values(records).for_each(|value| encode_text(value, out)),
    }
}

fn encode_int(n: i64, out: &mut Vec<u8>) {
    let _ = writeln!(out, "{n}");
}

/// One line: a newline in the text becomes `\n` (found with memchr, as
/// most texts have none and a byte-by-byte split was a tenth of a
/// pass-through job's time).
fn encode_text(text: &[u8], out: &mut Vec<u8>) {
    let mut rest = text;
    while let Some(newline) = memchr::memchr(b'\n', rest) {
        out.extend_from_slice(&rest[..newline]);
        out.extend_from_slice(b"\\n");
        rest = &rest[newline + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'\n');
}

/// Renders a record the job refused (or that came late) as a dead letter:
/// a JSON object with the reason and the record as it came in (its value
/// as text when it is UTF-8, else `value_hex`).
pub fn dead_letter(input: &Batch, rejection: &Rejection) -> Vec<u8> {
    let mut letter = serde_json::Map::new();
    letter.insert("reason".into(), rejection.reason.clone().into());
    letter.insert("late".into(), rejection.late.into());
    let i = rejection.index as usize;
    match input {
        Batch::Ints(ints) => {
            if let Some(n) = ints.get(i) {
                letter.insert("value".into(), n.to_string().into());
            }
        }
        Batch::Texts(packed) => {
            if let Some(text) = texts(packed).nth(i) {
                insert_bytes(&mut letter, "value", text);
            }
        }
        Batch::Records(records) => record_fields(records, i, &mut letter),
    }
    serde_json::to_vec(&letter).expect("a JSON map writes to a Vec")
}

/// Record `i`'s key, value, event time, partition and offset, as they exist.
fn record_fields(records: &Records, i: usize, letter: &mut serde_json::Map<String, serde_json::Value>) {
    if i >= records.keyed.len() {
        return;
    }
    let value = value(records, i);
    if let Some(key) = key(records, i) {
        insert_bytes(letter, "key", key);
    }
    insert_bytes(letter, "value", value);
    if let Some(at) = records.timestamps.get(i).filter(|t| **t != i64::MIN) {
        letter.insert("timestamp".into(), (*at).into());
    }
    if let Some(partition) = records.partitions.get(i) {
        letter.insert("partition".into(), (*partition).into());
    }
    if let Some(offset) = records.offsets.get(i) {
        letter.insert("offset".into(), (*offset).into());
    }
}

/// `bytes` as `name` when they are UTF-8, else hex-encoded as `name_hex`.
fn insert_bytes(letter: &mut serde_json::Map<String, serde_json::Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => letter.insert(name.into(), text.into()),
        Err(_) => letter.insert(format!("{name}_hex"), hex::encode(bytes).into()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_lines_of_their_values() {
        let mut out = Vec::new();
        let records = crate::wit::Records {
            data: b"-4950ka\nbw 2".to_vec(),
            ends: vec![0, 5, 6, 9, 9, 12],
            keyed: vec![0, 1, 0],
            timestamps: vec![i64::MIN, 7, i64::MIN],
            ..crate::wit::Records::default()
        };
        encode_batch(&Batch::Records(records), &mut out);
        assert_eq!(out, b"-4950\na\\nb\nw 2\n");
        out.clear();
        encode_batch(
            &Batch::Texts(crate::wit::Texts {
                data: b"x\nyz".to_vec(),
                ends: vec![3, 4],
            }),
            &mut out,
        );
        assert_eq!(out, b"x\\ny\nz\n");
        out.clear();
        encode_batch(&Batch::Ints(vec![1, -2]), &mut out);
        assert_eq!(out, b"1\n-2\n");
    }

    #[test]
    fn a_dead_letter_is_json_with_the_reason_and_the_record() {
        let records = crate::wit::Records {
            data: b"ka\x00\xffv".to_vec(),
            ends: vec![1, 2, 2, 5],
            keyed: vec![1, 0],
            timestamps: vec![7, i64::MIN],
            partitions: vec![3, 4],
            offsets: vec![10, 11],
            ..crate::wit::Records::default()
        };
        let reject = |index, late| Rejection {
            index,
            reason: "bad \"x\"".into(),
            late,
        };
        let mut out = Vec::new();
        let encode_dead_letter = |input: &Batch, rejection: &Rejection, out: &mut Vec<u8>| {
            out.extend(dead_letter(input, rejection));
            out.push(b'\n');
        };
        encode_dead_letter(&Batch::Records(records), &reject(0, false), &mut out);
        encode_dead_letter(
            &Batch::Records(crate::wit::Records {
                data: b"\xffv".to_vec(),
                ends: vec![0, 2],
                keyed: vec![0],
                timestamps: vec![i64::MIN],
                ..crate::wit::Records::default()
            }),
            &reject(0, true),
            &mut out,
        );
        encode_dead_letter(&Batch::Ints(vec![5, -6]), &reject(1, false), &mut out);
        let lines: Vec<serde_json::Value> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                serde_json::json!({"reason": "bad \"x\"", "late": false, "key": "k", "value": "a",
                    "timestamp": 7, "partition": 3, "offset": 10}),
                serde_json::json!({"reason": "bad \"x\"", "late": true, "value_hex": "ff76"}),
                serde_json::json!({"reason": "bad \"x\"", "late": false, "value": "-6"}),
            ]
        );
    }
}
