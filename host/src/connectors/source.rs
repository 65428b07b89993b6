//! Sources: where events come from, each resumable from an offset.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::time::{Duration, Instant};

use crate::runtime::{Batch, Texts};
use crate::spec::SourceSpec;

/// A replayable stream of events.
pub trait Source: Send {
    /// Up to `max` events, waiting until `until` at most for the first one.
    /// The batch is empty when none came in time.
    fn next_batch(&mut self, max: usize, until: Instant) -> io::Result<Batch>;

    /// The position just after the last event returned: where a restore resumes.
    fn offset(&self) -> u64;
}

/// Opens the source a spec names, positioned at `offset`.
pub fn open_source(spec: &SourceSpec, offset: u64) -> Box<dyn Source> {
    match spec {
        SourceSpec::Sequence { start, rate } => Box::new(Sequence::new(*start, *rate, offset)),
        SourceSpec::File { path } => Box::new(FileLines {
            path: path.clone(),
            reader: None,
            offset,
        }),
    }
}

/// Shortest sleep between two throttled batches. Output leaves only when a
/// checkpoint commits, so waking more often buys no latency; it only makes
/// smaller batches and, with many jobs, costs the supervisor its CPU in
/// wakeups (1,000 jobs at 100 events/s each saturated 2 cores at 5 ms).
const MIN_WAIT: Duration = Duration::from_millis(50);

/// Sleeps until `when` or `until`, whichever is first; false if `until` came.
fn wait_until(when: Instant, until: Instant) -> bool {
    let now = Instant::now();
    let wake = when.max(now + MIN_WAIT).min(until);
    if wake > now {
        std::thread::sleep(wake - now);
    }
    wake < until
}

/// `start, start+1, ...` at `rate` per second, the offset being the count emitted.
struct Sequence {
    start: i64,
    rate: u64,
    offset: u64,
    /// When this run began, and the offset it began at: the throttle's origin.
    origin: (Instant, u64),
}

impl Sequence {
    fn new(start: i64, rate: u64, offset: u64) -> Self {
        Sequence {
            start,
            rate,
            offset,
            origin: (Instant::now(), offset),
        }
    }

    fn due(&self) -> u64 {
        let (t0, base) = self.origin;
        base + (t0.elapsed().as_secs_f64() * self.rate as f64) as u64
    }
}

impl Source for Sequence {
    fn next_batch(&mut self, max: usize, until: Instant) -> io::Result<Batch> {
        let n = loop {
            if self.rate == 0 {
                break max as u64;
            }
            let due = self.due();
            if due > self.offset {
                break (due - self.offset).min(max as u64);
            }
            let (t0, base) = self.origin;
            let next = t0 + Duration::from_secs_f64((self.offset + 1 - base) as f64 / self.rate as f64);
            if !wait_until(next, until) {
                break 0;
            }
        };
        let first = self.start + self.offset as i64;
        self.offset += n;
        Ok(Batch::Ints((first..first + n as i64).collect()))
    }

    fn offset(&self) -> u64 {
        self.offset
    }
}

/// The lines of a file, tailed; the offset is the byte position after the last whole line.
struct FileLines {
    path: String,
    reader: Option<BufReader<File>>,
    offset: u64,
}

const POLL: Duration = Duration::from_millis(50);

impl FileLines {
    fn reader(&mut self) -> io::Result<Option<&mut BufReader<File>>> {
        if self.reader.is_none() {
            let mut file = match File::open(&self.path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io::Error::new(e.kind(), format!("file source {}: {e}", self.path))),
            };
            file.seek(SeekFrom::Start(self.offset))?;
            self.reader = Some(BufReader::new(file));
        }
        Ok(self.reader.as_mut())
    }
}

impl Source for FileLines {
    fn next_batch(&mut self, max: usize, until: Instant) -> io::Result<Batch> {
        let mut texts = Texts {
            data: Vec::new(),
            ends: Vec::new(),
        };
        loop {
            let offset = self.offset;
            if let Some(reader) = self.reader()? {
                let mut read = 0u64;
                while texts.ends.len() < max {
                    let before = texts.data.len();
                    let n = reader.read_until(b'\n', &mut texts.data)?;
                    if n == 0 || texts.data.last() != Some(&b'\n') {
                        // End of file, or a line still being written: read it again later.
                        texts.data.truncate(before);
                        reader.seek(SeekFrom::Start(offset + read))?;
                        break;
                    }
                    read += n as u64;
                    texts.data.pop();
                    if texts.data.last() == Some(&b'\r') {
                        texts.data.pop();
                    }
                    texts.ends.push(texts.data.len() as u32);
                }
                self.offset += read;
            }
            if !texts.ends.is_empty() || !wait_until(Instant::now() + POLL, until) {
                return Ok(Batch::Texts(texts));
            }
        }
    }

    fn offset(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::runtime::batch_len;

    fn ints(batch: Batch) -> Vec<i64> {
        match batch {
            Batch::Ints(ints) => ints,
            other => panic!("{other:?}"),
        }
    }

    fn texts(batch: Batch) -> Vec<String> {
        let Batch::Texts(texts) = batch else {
            panic!("{batch:?}")
        };
        crate::runtime::texts(&texts)
            .map(|text| String::from_utf8_lossy(text).into_owned())
            .collect()
    }

    #[test]
    fn unthrottled_sequence_resumes_from_its_offset() {
        let mut source = open_source(&SourceSpec::Sequence { start: 10, rate: 0 }, 5);
        assert_eq!(ints(source.next_batch(3, Instant::now()).unwrap()), vec![15, 16, 17]);
        assert_eq!(source.offset(), 8);
    }

    #[test]
    fn throttled_sequence_emits_at_most_what_is_due() {
        let mut source = open_source(&SourceSpec::Sequence { start: 0, rate: 100 }, 0);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline {
            seen.extend(ints(source.next_batch(1000, deadline).unwrap()));
        }
        assert!(
            (10..=30).contains(&seen.len()),
            "{} events in 200 ms at 100/s",
            seen.len()
        );
        assert_eq!(seen, (0..seen.len() as i64).collect::<Vec<_>>());
    }

    #[test]
    fn file_source_reads_whole_lines_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"a b\r\nc\npartial").unwrap();
        let spec = SourceSpec::File {
            path: path.display().to_string(),
        };
        let mut source = open_source(&spec, 0);
        let batch = source.next_batch(10, Instant::now()).unwrap();
        assert_eq!(batch_len(&batch), 2);
        assert_eq!(texts(batch), vec!["a b", "c"]);
        assert_eq!(source.offset(), 7);

        file.write_all(b" line\n").unwrap();
        let mut resumed = open_source(&spec, 7);
        assert_eq!(
            texts(resumed.next_batch(10, Instant::now()).unwrap()),
            vec!["partial line"]
        );
    }
}
