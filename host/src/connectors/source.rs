//! Sources: where events come from, each resumable from an offset.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use super::kafka::KafkaSource;
use super::nexmark::{Generator, Nexmark};
use crate::checkpoint::SourcePosition;
use crate::spec::{Share, SourceSpec, Timestamps};
use crate::wit::{Batch, Records, Texts};

/// A replayable stream of events.
pub trait Source: Send {
    /// Up to `max` events, waiting until `until` at most for the first one.
    /// The batch is empty when none came in time.
    fn next_batch(&mut self, max: usize, until: Instant) -> io::Result<Batch>;

    /// The position just after the last event returned: where a restore resumes.
    fn position(&self) -> SourcePosition;

    /// How many records each partition holds past the position, where the
    /// source can tell (Kafka's lag).
    fn lag(&self) -> BTreeMap<u32, i64> {
        BTreeMap::new()
    }

    /// Whether it has given all it ever will (a bounded source): the
    /// watermark then goes to the end of time, as Flink's does at the end
    /// of a bounded source, so every window fires.
    fn ended(&self) -> bool {
        false
    }
}

/// Opens the share `share` of the source a spec names for job `job`,
/// positioned at `restored`, where a checkpoint left it (none: a fresh
/// start, where a Kafka source's `start=` applies).
pub fn open_source(spec: &SourceSpec, restored: Option<&SourcePosition>, job: &str, share: Share) -> Box<dyn Source> {
    let offset = restored.map_or(0, |p| p.offset);
    let source: Box<dyn Source> = match spec {
        SourceSpec::Sequence { start, rate, .. } => Box::new(Sequence::new(*start, *rate, share, offset)),
        SourceSpec::File { path, .. } => Box::new(FileLines {
            path: path.clone(),
            reader: None,
            head: Vec::new(),
            offset,
        }),
        SourceSpec::Nexmark {
            rate,
            event_rate,
            seed,
            events,
            encoding,
        } => {
            let generator = Generator::new(event_rate.unwrap_or(*rate), *seed);
            Box::new(Nexmark::new(generator, *rate, *events, *encoding, share, offset))
        }
        SourceSpec::Kafka {
            brokers,
            topic,
            start,
            group,
        } => Box::new(KafkaSource::new(
            brokers,
            topic,
            *start,
            group.as_deref(),
            job,
            share,
            restored.map(|p| p.partitions.clone()),
        )),
    };
    match spec.timestamp() {
        Some(timestamps) => Box::new(Timestamped {
            inner: source,
            timestamps: timestamps.clone(),
            share,
        }),
        None => source,
    }
}

/// A source whose records get event timestamps: its batches become
/// records (a number's value in decimal), stamped as the spec says.
struct Timestamped {
    inner: Box<dyn Source>,
    timestamps: Timestamps,
    /// The task's share: a sequence's `n`-th record of this task is number
    /// `index + n * of` of the whole, and stamped as that.
    share: Share,
}

impl Source for Timestamped {
    fn next_batch(&mut self, max: usize, until: Instant) -> io::Result<Batch> {
        let first = self.inner.position().offset;
        let batch = self.inner.next_batch(max, until)?;
        let mut records = Records::default();
        let now = crate::clock::now_ms() as i64;
        let step_ms = match &self.timestamps {
            Timestamps::Every { step } => i64::try_from(step.as_millis()).unwrap_or(i64::MAX),
            Timestamps::Ingest | Timestamps::Field { .. } => 0,
        };
        let share = self.share;
        let mut push = |nth: u64, value: &[u8]| {
            let index = u64::from(share.index) + nth * u64::from(share.of);
            records.ends.push(records.data.len() as u32);
            records.data.extend_from_slice(value);
            records.ends.push(records.data.len() as u32);
            records.keyed.push(0);
            records.timestamps.push(match &self.timestamps {
                Timestamps::Ingest => now,
                Timestamps::Every { .. } => (index as i64).saturating_mul(step_ms),
                Timestamps::Field { name } => json_millis(value, name).unwrap_or(i64::MIN),
            });
        };
        match &batch {
            Batch::Ints(ints) => {
                // One buffer for every number's digits, not a String each.
                let mut digits = String::new();
                for (i, n) in ints.iter().enumerate() {
                    digits.clear();
                    let _ = write!(digits, "{n}");
                    push(first + i as u64, digits.as_bytes());
                }
            }
            Batch::Texts(texts) => {
                for (i, text) in crate::wit::texts(texts).enumerate() {
                    push(first + i as u64, text);
                }
            }
            Batch::Records(_) => return Ok(batch),
        }
        Ok(Batch::Records(records))
    }

    fn position(&self) -> SourcePosition {
        self.inner.position()
    }

    fn lag(&self) -> BTreeMap<u32, i64> {
        self.inner.lag()
    }

    fn ended(&self) -> bool {
        self.inner.ended()
    }
}

/// The whole milliseconds in a JSON object's field `name`, if it has them.
fn json_millis(line: &[u8], name: &str) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let field = value.get(name)?;
    field.as_i64().or_else(|| field.as_f64().map(|ms| ms as i64))
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

/// A generated source's pace: `rate` events per second from when it
/// started (0: as fast as asked).
pub(super) struct Throttle {
    rate: u64,
    /// When this run began, and the offset it began at.
    origin: (Instant, u64),
}

impl Throttle {
    pub(super) fn new(rate: u64, offset: u64) -> Self {
        Throttle {
            rate,
            origin: (Instant::now(), offset),
        }
    }

    /// How many events past `offset` are due, at most `max`, waiting for
    /// the first until `until` at most.
    pub(super) fn allowed(&self, offset: u64, max: usize, until: Instant) -> u64 {
        if self.rate == 0 {
            return max as u64;
        }
        let (t0, base) = self.origin;
        loop {
            let due = base + (t0.elapsed().as_secs_f64() * self.rate as f64) as u64;
            if due > offset {
                return (due - offset).min(max as u64);
            }
            let next = t0 + Duration::from_secs_f64((offset + 1 - base) as f64 / self.rate as f64);
            if !wait_until(next, until) {
                return 0;
            }
        }
    }
}

/// `start, start+1, ...` at `rate` per second, the offset being the count
/// emitted; task `i` of `n` emits `start+i, start+i+n, ...` at `rate/n`
/// (rounded up), so the tasks together emit the whole sequence.
struct Sequence {
    start: i64,
    stride: i64,
    throttle: Throttle,
    offset: u64,
}

impl Sequence {
    fn new(start: i64, rate: u64, share: Share, offset: u64) -> Self {
        Sequence {
            start: start + i64::from(share.index),
            stride: i64::from(share.of.max(1)),
            throttle: Throttle::new(rate.div_ceil(u64::from(share.of.max(1))), offset),
            offset,
        }
    }
}

impl Source for Sequence {
    fn next_batch(&mut self, max: usize, until: Instant) -> io::Result<Batch> {
        let n = self.throttle.allowed(self.offset, max, until);
        let first = self.start + self.offset as i64 * self.stride;
        self.offset += n;
        Ok(Batch::Ints((0..n as i64).map(|k| first + k * self.stride).collect()))
    }

    fn position(&self) -> SourcePosition {
        SourcePosition::at(self.offset)
    }
}

/// The lines of a file, tailed; the offset is the byte position after the
/// last whole line. Like Vector's file source it follows a file that is
/// truncated, rewritten or replaced while tailed: at the end of what it has,
/// it reads the old file to its end, then the file now at the path from its
/// start (a smaller size, other first bytes or another inode tell), and says
/// so in the log.
struct FileLines {
    path: String,
    reader: Option<BufReader<File>>,
    /// The first bytes of the open file, as first read: other bytes there
    /// later mean it was rewritten.
    head: Vec<u8>,
    offset: u64,
}

/// How many of a file's first bytes tell whether it was rewritten.
const HEAD_BYTES: usize = 256;

const POLL: Duration = Duration::from_millis(50);

/// Longest line a file source reads: past it the job fails with an error
/// naming the file and the byte, rather than buffering without end (a file
/// with no newline, `/dev/zero`, would otherwise fill the supervisor's memory,
/// where no job's memory limit reaches).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A batch stops growing past this many bytes of text, whatever its count.
const MAX_BATCH_BYTES: usize = 4 << 20;

impl FileLines {
    fn reader(&mut self) -> io::Result<Option<&mut BufReader<File>>> {
        if self.reader.is_none() {
            let mut file = match File::open(&self.path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io::Error::new(e.kind(), format!("file source {}: {e}", self.path))),
            };
            let len = file.metadata()?.len();
            if len < self.offset {
                tracing::warn!(
                    file = %self.path,
                    "the file holds {len} bytes, fewer than the {} already read: it was truncated or replaced; \
                     reading it from its start",
                    self.offset
                );
                self.offset = 0;
            }
            self.head = head(&file)?;
            file.seek(SeekFrom::Start(self.offset))?;
            self.reader = Some(BufReader::new(file));
        }
        Ok(self.reader.as_mut())
    }

    /// Whether the open file was truncated or rewritten, or (`at_end`, once
    /// it is read to its end) the path names another file now (replaced,
    /// rotated); if so the next read starts the file at the path from its start.
    fn follow(&mut self, at_end: bool) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let Some(reader) = &self.reader else { return Ok(()) };
        let open = reader.get_ref().metadata()?;
        let first = head(reader.get_ref())?;
        let replaced = || match std::fs::metadata(&self.path) {
            Ok(now) => Ok((now.dev(), now.ino()) != (open.dev(), open.ino())),
            // Moved away and not replaced yet: the open file may still grow.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io::Error::new(e.kind(), format!("file source {}: {e}", self.path))),
        };
        let what = if open.len() < self.offset {
            "was truncated"
        } else if !first.starts_with(&self.head) {
            "was rewritten"
        } else if at_end && replaced()? {
            "was replaced (rotated?)"
        } else {
            // A short file's first bytes grow with it.
            self.head = first;
            return Ok(());
        };
        tracing::warn!(
            file = %self.path,
            "the file {what} after {} bytes were read; reading the file now there from its start",
            self.offset
        );
        self.reader = None;
        self.offset = 0;
        Ok(())
    }
}

/// A file's first bytes (all of a short one).
fn head(file: &File) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; HEAD_BYTES];
    let n = file.read_at(&mut buf, 0)?;
    buf.truncate(n);
    Ok(buf)
}

impl Source for FileLines {
    fn next_batch(&mut self, max: usize, until: Instant) -> io::Result<Batch> {
        let mut texts = Texts {
            data: Vec::new(),
            ends: Vec::new(),
        };
        loop {
            self.follow(false)?;
            let offset = self.offset;
            if let Some(reader) = self.reader()? {
                let mut read = 0u64;
                while texts.ends.len() < max && texts.data.len() < MAX_BATCH_BYTES {
                    let before = texts.data.len();
                    let n = reader
                        .by_ref()
                        .take(MAX_LINE_BYTES as u64 + 1)
                        .read_until(b'\n', &mut texts.data)?;
                    if n > MAX_LINE_BYTES && texts.data.last() != Some(&b'\n') {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "file source {}: the line at byte {} is longer than {MAX_LINE_BYTES} bytes; \
                                 weir reads newline-separated text (is this a binary file?)",
                                self.path,
                                offset + read
                            ),
                        ));
                    }
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
                if read == 0 {
                    self.follow(true)?;
                }
            }
            if !texts.ends.is_empty() || !wait_until(Instant::now() + POLL, until) {
                return Ok(Batch::Texts(texts));
            }
        }
    }

    fn position(&self) -> SourcePosition {
        SourcePosition::at(self.offset)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    use crate::wit::batch_len;

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
        crate::wit::texts(&texts)
            .map(|text| String::from_utf8_lossy(text).into_owned())
            .collect()
    }

    #[test]
    fn unthrottled_sequence_resumes_from_its_offset() {
        let mut source = open_source(
            &SourceSpec::Sequence {
                start: 10,
                rate: 0,
                timestamp: None,
            },
            Some(&SourcePosition::at(5)),
            "job",
            Share::WHOLE,
        );
        assert_eq!(ints(source.next_batch(3, Instant::now()).unwrap()), vec![15, 16, 17]);
        assert_eq!(source.position().offset, 8);
    }

    #[test]
    fn the_tasks_of_a_sequence_emit_it_whole_between_them() {
        let spec = SourceSpec::Sequence {
            start: 10,
            rate: 0,
            timestamp: Some(Timestamps::Every {
                step: Duration::from_millis(1000),
            }),
        };
        let mut all = Vec::new();
        for index in 0..3 {
            let share = Share { index, of: 3 };
            let mut source = open_source(&spec, Some(&SourcePosition::at(2)), "job", share);
            let Batch::Records(records) = source.next_batch(4, Instant::now()).unwrap() else {
                panic!("stamped numbers are records")
            };
            for (i, value) in records
                .ends
                .chunks(2)
                .map(|e| &records.data[e[0] as usize..e[1] as usize])
                .enumerate()
            {
                let n: i64 = std::str::from_utf8(value).unwrap().parse().unwrap();
                assert_eq!(
                    records.timestamps[i],
                    (n - 10) * 1000,
                    "stamped as the whole sequence's"
                );
                all.push(n);
            }
            assert_eq!(source.position().offset, 6);
        }
        all.sort();
        assert_eq!(
            all,
            (16..28).collect::<Vec<_>>(),
            "past the offset of each, nothing twice"
        );
    }

    #[test]
    fn throttled_sequence_emits_at_most_what_is_due() {
        let mut source = open_source(
            &SourceSpec::Sequence {
                start: 0,
                rate: 100,
                timestamp: None,
            },
            Some(&SourcePosition::at(0)),
            "job",
            Share::WHOLE,
        );
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

    fn read_all(source: &mut Box<dyn Source>) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let batch = texts(source.next_batch(100, Instant::now()).unwrap());
            if batch.is_empty() {
                return lines;
            }
            lines.extend(batch);
        }
    }

    #[test]
    fn a_file_truncated_rewritten_or_replaced_while_tailed_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "a\nb\n").unwrap();
        let spec = SourceSpec::File {
            path: path.display().to_string(),
            timestamp: None,
        };
        let mut source = open_source(&spec, Some(&SourcePosition::at(0)), "job", Share::WHOLE);
        assert_eq!(read_all(&mut source), ["a", "b"]);

        // Truncated and written again, longer than before: no line skipped.
        std::fs::write(&path, "c\nd\ne\n").unwrap();
        assert_eq!(read_all(&mut source), ["c", "d", "e"]);

        // Rotated: the old file's last lines, then the new file's.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"f\n")
            .unwrap();
        std::fs::rename(&path, dir.path().join("in.txt.1")).unwrap();
        std::fs::write(&path, "g\n").unwrap();
        assert_eq!(read_all(&mut source), ["f"]);
        assert_eq!(read_all(&mut source), ["g"]);

        // Shorter than the offset a restore resumes at: from its start.
        let mut resumed = open_source(&spec, Some(&SourcePosition::at(100)), "job", Share::WHOLE);
        assert_eq!(read_all(&mut resumed), ["g"]);
    }

    #[test]
    fn a_line_without_end_fails_the_source_instead_of_filling_memory() {
        let spec = SourceSpec::File {
            path: "/dev/zero".into(),
            timestamp: None,
        };
        let err = open_source(&spec, Some(&SourcePosition::at(0)), "job", Share::WHOLE)
            .next_batch(10, Instant::now())
            .unwrap_err();
        assert!(err.to_string().contains("longer than 1048576 bytes"), "{err}");
        assert!(err.to_string().contains("/dev/zero"), "{err}");
    }

    #[test]
    fn file_source_reads_whole_lines_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"a b\r\nc\npartial").unwrap();
        let spec = SourceSpec::File {
            path: path.display().to_string(),
            timestamp: None,
        };
        let mut source = open_source(&spec, Some(&SourcePosition::at(0)), "job", Share::WHOLE);
        let batch = source.next_batch(10, Instant::now()).unwrap();
        assert_eq!(batch_len(&batch), 2);
        assert_eq!(texts(batch), vec!["a b", "c"]);
        assert_eq!(source.position().offset, 7);

        file.write_all(b" line\n").unwrap();
        let mut resumed = open_source(&spec, Some(&SourcePosition::at(7)), "job", Share::WHOLE);
        assert_eq!(
            texts(resumed.next_batch(10, Instant::now()).unwrap()),
            vec!["partial line"]
        );
    }
}
