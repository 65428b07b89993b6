//! Sinks: where a checkpoint's output goes once the checkpoint is committed.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use crate::runtime::{texts, Batch, Event};
use crate::spec::SinkSpec;

/// Publishes committed output.
pub trait Sink: Send {
    /// Where the next output goes on a fresh start (no checkpoint yet).
    fn initial_position(&self) -> io::Result<u64>;

    /// Publishes one committed checkpoint's `output` at `position`. Doing it
    /// twice with the same arguments leaves the same result.
    fn publish(&mut self, position: u64, output: &[u8]) -> io::Result<()>;

    /// After a restore: publishes the restored checkpoint's output and drops
    /// anything after it, which belonged to no committed checkpoint.
    fn recover(&mut self, position: u64, output: &[u8]) -> io::Result<()>;
}

/// Opens the sink a spec names.
pub fn open_sink(spec: &SinkSpec) -> Box<dyn Sink> {
    match spec {
        SinkSpec::Stdout => Box::new(Stdout),
        SinkSpec::File { path } => Box::new(FileSink { path: path.clone() }),
    }
}

/// Renders a batch as the sinks write it: one line per event, numbers in
/// decimal, text as is (a newline inside text is written as `\n`).
pub fn encode_batch(batch: &Batch, out: &mut Vec<u8>) {
    match batch {
        Batch::Ints(ints) => ints.iter().for_each(|n| encode_int(*n, out)),
        Batch::Texts(packed) => texts(packed).for_each(|text| encode_text(text, out)),
        Batch::Mixed(events) => events.iter().for_each(|event| match event {
            Event::Int(n) => encode_int(*n, out),
            Event::Text(text) => encode_text(text.as_bytes(), out),
        }),
    }
}

fn encode_int(n: i64, out: &mut Vec<u8>) {
    let _ = writeln!(out, "{n}");
}

fn encode_text(text: &[u8], out: &mut Vec<u8>) {
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\\n");
        }
        out.extend_from_slice(line);
    }
    out.push(b'\n');
}

/// The supervisor's standard output: at-least-once (a restored checkpoint's
/// output is printed again).
struct Stdout;

impl Sink for Stdout {
    fn initial_position(&self) -> io::Result<u64> {
        Ok(0)
    }

    fn publish(&mut self, _position: u64, output: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(output)?;
        out.flush()
    }

    fn recover(&mut self, position: u64, output: &[u8]) -> io::Result<()> {
        self.publish(position, output)
    }
}

/// A file that only ever holds output of committed checkpoints, each event once.
struct FileSink {
    path: String,
}

impl FileSink {
    fn open(&self) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .map_err(|e| io::Error::new(e.kind(), format!("file sink {}: {e}", self.path)))
    }
}

impl Sink for FileSink {
    fn initial_position(&self) -> io::Result<u64> {
        match std::fs::metadata(&self.path) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io::Error::new(e.kind(), format!("file sink {}: {e}", self.path))),
        }
    }

    fn publish(&mut self, position: u64, output: &[u8]) -> io::Result<()> {
        let file = self.open()?;
        file.write_all_at(output, position)?;
        file.sync_data()
    }

    fn recover(&mut self, position: u64, output: &[u8]) -> io::Result<()> {
        let file = self.open()?;
        file.write_all_at(output, position)?;
        file.set_len(position + output.len() as u64)?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_lines() {
        let mut out = Vec::new();
        encode_batch(
            &Batch::Mixed(vec![
                Event::Int(-4950),
                Event::Text("a\nb".into()),
                Event::Text("w 2".into()),
            ]),
            &mut out,
        );
        assert_eq!(out, b"-4950\na\\nb\nw 2\n");
        out.clear();
        encode_batch(
            &Batch::Texts(crate::runtime::Texts {
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
    fn file_sink_publishing_is_idempotent_and_recovery_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut sink = open_sink(&SinkSpec::File {
            path: path.display().to_string(),
        });
        assert_eq!(sink.initial_position().unwrap(), 0);
        sink.publish(0, b"1\n2\n").unwrap();
        sink.publish(4, b"3\n").unwrap();
        sink.publish(0, b"1\n2\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"1\n2\n3\n");
        sink.recover(2, b"2\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"1\n2\n");
        assert_eq!(sink.initial_position().unwrap(), 4);
    }
}
