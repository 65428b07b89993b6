//! Throughput and checkpoint cost of the job path, in one process: source ->
//! guest -> sink encoding, with a barrier (snapshot, written to disk off the
//! hot path) every second. The same logic runs as native Rust in the same
//! loop, so the wasm/native ratio comes from one run on one machine.
//!
//! `cargo bench -p weir --bench pipeline -- [--seconds S] [--runs N] [--only JOB|checkpoints]` prints
//! Markdown tables; `scripts/bench` puts them in docs/BENCHMARKS.md.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use weir::connectors::{encode_batch, open_source, Source, SourcePosition};
use weir::runtime::{Instance, Limits, Runtime};
use weir::spec::{EventEncoding, SourceSpec};
use weir::storage::sha256_hex;
use weir::wit::{batch_len, Batch, Texts};
use weir_guest::{Assigner, CountWindow, EventTimeWindows};

/// The job under test, wasm or native.
trait Job {
    fn process(&mut self, batch: &Batch, out: &mut Vec<u8>);
    fn snapshot(&mut self) -> Vec<u8>;
}

/// A wasm job and the runtime its async calls run on, as on a job's thread.
struct WasmJob {
    instance: Instance,
    io: tokio::runtime::Runtime,
}

/// The watermark after a batch of stamped records, as `--watermark
/// max-delay=0s` makes it: just before the newest event time.
fn batch_watermark(batch: &Batch) -> Option<i64> {
    let Batch::Records(records) = batch else { return None };
    records.timestamps.iter().max().map(|t| t - 1)
}

impl Job for WasmJob {
    fn process(&mut self, batch: &Batch, out: &mut Vec<u8>) {
        let watermark = batch_watermark(batch);
        let emitted = self
            .io
            .block_on(self.instance.process(batch, watermark))
            .expect("guest process");
        encode_batch(&emitted.batch, out);
    }

    fn snapshot(&mut self) -> Vec<u8> {
        self.io.block_on(self.instance.snapshot()).expect("guest snapshot")
    }
}

/// `jobs/counter` as native Rust: countWindowAll(size).sum(). With `FIXED`
/// 0 the size is read at run time, as the job reads it from its settings;
/// otherwise it is the constant `FIXED`, which LLVM folds into the loop.
struct NativeCounter<const FIXED: u64> {
    size: u64,
    window: CountWindow<i64>,
}

impl<const FIXED: u64> NativeCounter<FIXED> {
    fn new() -> Self {
        NativeCounter {
            size: std::hint::black_box(100),
            window: CountWindow::default(),
        }
    }
}

impl<const FIXED: u64> Job for NativeCounter<FIXED> {
    fn process(&mut self, batch: &Batch, out: &mut Vec<u8>) {
        let Batch::Ints(ints) = batch else { return };
        // Two loops, not one with the size in a variable: LLVM folds only a
        // literal at the call (one loop ran both cases at 0.82 G events/s).
        let sums = if FIXED > 0 {
            ints.iter()
                .filter_map(|n| self.window.add(FIXED, |acc| *acc += n))
                .collect()
        } else {
            ints.iter()
                .filter_map(|n| self.window.add(self.size, |acc| *acc += n))
                .collect()
        };
        encode_batch(&Batch::Ints(sums), out);
    }

    fn snapshot(&mut self) -> Vec<u8> {
        format!("{:?}", self.window).into_bytes()
    }
}

/// `jobs/wordcount` as native Rust: a running count per word.
#[derive(Default)]
struct NativeWordCount {
    counts: HashMap<String, u64>,
}

impl Job for NativeWordCount {
    fn process(&mut self, batch: &Batch, out: &mut Vec<u8>) {
        let Batch::Texts(texts) = batch else { return };
        let mut emitted = Texts {
            data: Vec::new(),
            ends: Vec::new(),
        };
        for line in weir::wit::texts(texts) {
            let line = String::from_utf8_lossy(line);
            for word in line.split_whitespace() {
                let word = word.to_lowercase();
                let count = match self.counts.get_mut(&word) {
                    Some(count) => count,
                    None => self.counts.entry(word.clone()).or_default(),
                };
                *count += 1;
                emitted.data.extend_from_slice(format!("{word} {count}").as_bytes());
                emitted.ends.push(emitted.data.len() as u32);
            }
        }
        encode_batch(&Batch::Texts(emitted), out);
    }

    fn snapshot(&mut self) -> Vec<u8> {
        self.counts
            .iter()
            .flat_map(|(k, v)| [k.as_bytes(), &v.to_le_bytes()].concat())
            .collect()
    }
}

/// `jobs/window-count` as native Rust: a count per key per 1 s tumbling
/// event-time window over JSON records, with the SDK's windows.
#[derive(Default)]
struct NativeWindowCount {
    windows: EventTimeWindows<String, u64>,
}

#[derive(serde::Deserialize)]
struct Keyed<'a> {
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
}

impl Job for NativeWindowCount {
    fn process(&mut self, batch: &Batch, out: &mut Vec<u8>) {
        let Batch::Records(records) = batch else { return };
        let tumbling = Assigner::tumbling(Duration::from_secs(1));
        for (value, at) in weir::wit::values(records).zip(&records.timestamps) {
            let keyed: Keyed = serde_json::from_slice(value).expect("bench records are JSON");
            let _ = self.windows.add(tumbling, 0, keyed.key.as_ref(), *at, |n| *n += 1);
        }
        let mut emitted = Texts {
            data: Vec::new(),
            ends: Vec::new(),
        };
        let mut line = String::new();
        for window in self.windows.fire(batch_watermark(batch).unwrap_or(i64::MIN), 0) {
            line.clear();
            let _ = write!(line, "{} {} {}", window.start, window.key, window.value);
            emitted.data.extend_from_slice(line.as_bytes());
            emitted.ends.push(emitted.data.len() as u32);
        }
        encode_batch(&Batch::Texts(emitted), out);
    }

    fn snapshot(&mut self) -> Vec<u8> {
        format!("{:?}", self.windows).into_bytes()
    }
}

/// `jobs/nexmark` as native Rust: the same query code, over the same
/// records, parsed with the same serde types.
struct NativeNexmark {
    query: nexmark::Query,
    state: nexmark::State,
}

impl NativeNexmark {
    /// Runs the query over a batch's events, as the job's `process` does.
    fn events(&mut self, records: &weir::wit::Records, emit: &mut impl FnMut(&str)) {
        for value in weir::wit::values(records) {
            if !self.query.reads(nexmark::model::kind(value)) {
                continue;
            }
            let event = nexmark::model::read(value).expect("the source makes Nexmark events");
            // A late event is left out, as the job's side output takes it.
            let _ = self.state.on_event(self.query, &event, emit);
        }
    }
}

impl Job for NativeNexmark {
    fn process(&mut self, batch: &Batch, out: &mut Vec<u8>) {
        let Batch::Records(records) = batch else { return };
        let mut emitted = Texts {
            data: Vec::new(),
            ends: Vec::new(),
        };
        let mut emit = |line: &str| {
            emitted.data.extend_from_slice(line.as_bytes());
            emitted.ends.push(emitted.data.len() as u32);
        };
        self.events(records, &mut emit);
        if let Some(watermark) = batch_watermark(batch) {
            self.state.on_watermark(self.query, watermark, &mut emit);
        }
        encode_batch(&Batch::Texts(emitted), out);
    }

    fn snapshot(&mut self) -> Vec<u8> {
        serde_json::to_vec(&self.state).expect("state serializes")
    }
}

/// JSON records `{"key":"kN","ts":T}` over `keys` keys, one ms of event
/// time apart (so 1,000 to a 1 s window), stamped, unthrottled.
struct Clicks {
    keys: u64,
    offset: u64,
}

impl Source for Clicks {
    fn next_batch(&mut self, max: usize, _until: Instant) -> std::io::Result<Batch> {
        let mut records = weir::wit::Records {
            keyed: vec![0; max],
            ..weir::wit::Records::default()
        };
        for _ in 0..max {
            let ts = self.offset as i64;
            records.ends.push(records.data.len() as u32);
            let key = (self.offset * 2654435761) % self.keys;
            records
                .data
                .extend_from_slice(format!("{{\"key\":\"k{key}\",\"ts\":{ts}}}").as_bytes());
            records.ends.push(records.data.len() as u32);
            records.timestamps.push(ts);
            self.offset += 1;
        }
        Ok(Batch::Records(records))
    }

    fn position(&self) -> SourcePosition {
        SourcePosition::at(self.offset)
    }
}

/// One word per event from a vocabulary of `keys` words, unthrottled.
struct Words {
    keys: u64,
    offset: u64,
}

impl Source for Words {
    fn next_batch(&mut self, max: usize, _until: Instant) -> std::io::Result<Batch> {
        let mut texts = Texts {
            data: Vec::new(),
            ends: Vec::with_capacity(max),
        };
        for _ in 0..max {
            texts
                .data
                .extend_from_slice(format!("w{}", (self.offset * 2654435761) % self.keys).as_bytes());
            texts.ends.push(texts.data.len() as u32);
            self.offset += 1;
        }
        Ok(Batch::Texts(texts))
    }

    fn position(&self) -> SourcePosition {
        SourcePosition::at(self.offset)
    }
}

struct Run {
    events_per_s: f64,
    max_pause: Duration,
}

/// Runs the loop for `seconds`, with a barrier every second whose snapshot
/// is written to disk by another thread, as the committer does.
fn run(job: &mut dyn Job, source: &mut dyn Source, seconds: u64, dir: &std::path::Path) -> Run {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let dir = dir.to_path_buf();
    let writer = std::thread::spawn(move || {
        for (i, snapshot) in rx.into_iter().enumerate() {
            std::fs::write(dir.join(format!("snapshot-{i}")), snapshot).expect("write snapshot");
        }
    });
    let mut out = Vec::new();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut next_barrier = start + Duration::from_secs(1);
    let mut max_pause = Duration::ZERO;
    let mut events = 0u64;
    while Instant::now() < end {
        let batch = source.next_batch(weir::job::MAX_BATCH, next_barrier).unwrap();
        events += batch_len(&batch) as u64;
        job.process(&batch, &mut out);
        out.clear();
        if Instant::now() >= next_barrier {
            let pause = Instant::now();
            let snapshot = job.snapshot();
            max_pause = max_pause.max(pause.elapsed());
            tx.send(snapshot).unwrap();
            next_barrier += Duration::from_secs(1);
        }
    }
    let elapsed = start.elapsed();
    drop(tx);
    writer.join().unwrap();
    Run {
        events_per_s: events as f64 / elapsed.as_secs_f64(),
        max_pause,
    }
}

fn target_dir() -> PathBuf {
    // This binary is <target>/release/deps/pipeline-*.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

fn instance(runtime: &Runtime, name: &str, memory_bytes: u64, config: &[(String, String)]) -> WasmJob {
    let path = target_dir().join("wasm32-wasip2/release").join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-jobs", path.display()));
    let sha = sha256_hex(&bytes);
    runtime.prepare(&sha, &bytes).unwrap();
    let limits = Limits {
        memory_bytes,
        call_timeout: Duration::from_secs(60),
    };
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut instance = io
        .block_on(runtime.instantiate(&sha, name, limits, &Default::default(), 0))
        .unwrap();
    io.block_on(instance.init(config)).unwrap();
    WasmJob { instance, io }
}

fn stats(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The barrier's pause (the guest's snapshot, taken between two batches) and
/// the write of the snapshot to a `file://` storage dir, by state size.
fn checkpoint_cost(runtime: &Runtime, dir: &std::path::Path, runs: usize) {
    let storage = weir::storage::Storage::open(&format!("file://{}", dir.display())).unwrap();
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("\n### Checkpoint cost by state size\n");
    println!("{runs} snapshots per size (`jobs/ballast`); milliseconds as median (min-max).\n");
    println!(
        "| guest state | barrier pause (snapshot) | write to the storage dir | throughput lost at a 1 s interval |"
    );
    println!("| --- | --- | --- | --- |");
    for (label, bytes) in [
        ("1 KiB", 1u64 << 10),
        ("1 MiB", 1 << 20),
        ("64 MiB", 64 << 20),
        ("256 MiB", 256 << 20),
    ] {
        let mut job = instance(
            runtime,
            "ballast",
            bytes * 6 + (64 << 20),
            &[("bytes".to_string(), bytes.to_string())],
        );
        let (mut pauses, mut writes) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let taken = Instant::now();
            let snapshot = Job::snapshot(&mut job);
            pauses.push(millis(taken.elapsed()));
            let written = Instant::now();
            let path = format!("cost/{label}-{i}");
            io.block_on(storage.put_if_absent(&path, snapshot.into())).unwrap();
            writes.push(millis(written.elapsed()));
        }
        let (p, pmin, pmax) = stats(pauses);
        let (w, wmin, wmax) = stats(writes);
        println!(
            "| {label} | {p:.3} ({pmin:.3}-{pmax:.3}) | {w:.3} ({wmin:.3}-{wmax:.3}) | {:.3} % |",
            p / 1000.0 * 100.0
        );
        // Samples for scripts/plot, which scripts/bench takes out of the Markdown.
        println!("PLOT\tcheckpoint\tbarrier pause (snapshot)\t{bytes}\t{p}\t{pmin}\t{pmax}");
        println!("PLOT\tcheckpoint\twrite to the storage dir\t{bytes}\t{w}\t{wmin}\t{wmax}");
    }
}

/// Checkpoints of guest memory (`--checkpoint-state memory`) beside the
/// SDK's snapshots, by state size, with 1 % of the memory's pages written
/// between two barriers: the barrier's pause (finding and copying the
/// pages written), the bytes written, and a restore from the chain.
fn memory_checkpoint_cost(runtime: &Runtime, dir: &std::path::Path, rounds: usize) {
    use weir::runtime::Pages;
    let storage = weir::storage::Storage::open(&format!("file://{}", dir.display())).unwrap();
    println!("\n### Checkpoints of guest memory\n");
    println!("`jobs/ballast` with `spread=true` (each event bumps a byte at a pseudo-random place), 1 % of its");
    println!("pages' worth of events between two barriers; {rounds} barriers per size after the first (whole)");
    println!("image. Barrier pause: the SDK's snapshot, or finding the pages written (userfaultfd write");
    println!("protection, one PAGEMAP_SCAN) and copying them; bytes: what the checkpoint writes. Restore: the");
    println!("chain (one whole image and {rounds} sets of pages) read from a `file://` storage dir and put back");
    println!("into a new instance, beside a restore from the SDK's snapshot. Milliseconds as median (min-max).\n");
    println!("| guest state | barrier pause, snapshot | barrier pause, memory pages | bytes, snapshot | bytes, pages (changed) | restore, snapshot | restore, chain of pages |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (label, bytes) in [("1 MiB", 1u64 << 20), ("64 MiB", 64 << 20), ("256 MiB", 256 << 20)] {
        let config = [
            ("bytes", bytes.to_string()),
            ("spread", "true".to_string()),
            ("every", "1000000000".to_string()),
        ];
        let config: Vec<(String, String)> = config.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let memory_limit = bytes * 6 + (64 << 20);
        let mut job = instance(runtime, "ballast", memory_limit, &config);
        job.instance
            .track_memory()
            .expect("this kernel tracks memory writes (Linux 6.7+)");
        let (whole, _) = job.instance.image().unwrap();
        let mut chain = vec![whole.encode()];
        let events = (bytes as usize / weir::runtime::PAGE / 100).max(1);
        let (mut page_pauses, mut page_bytes, mut changed) = (vec![], vec![], vec![]);
        for _ in 0..rounds {
            let batch = Batch::Texts(Texts {
                data: Vec::new(),
                ends: vec![0; events],
            });
            job.process(&batch, &mut Vec::new());
            let taken = Instant::now();
            let (pages, _) = job.instance.image().unwrap();
            page_pauses.push(millis(taken.elapsed()));
            changed.push((pages.count() * weir::runtime::PAGE) as f64);
            let encoded = pages.encode();
            page_bytes.push(encoded.len() as f64);
            chain.push(encoded);
        }
        // The SDK's snapshots of the same state (which write the guest's
        // memory too: after the chain is taken).
        let (mut snapshot_pauses, mut snapshot_bytes) = (vec![], vec![]);
        let mut snapshot = Vec::new();
        for _ in 0..rounds.div_ceil(4) {
            let taken = Instant::now();
            snapshot = Job::snapshot(&mut job);
            snapshot_pauses.push(millis(taken.elapsed()));
            snapshot_bytes.push(snapshot.len() as f64);
        }
        let limits = Limits {
            memory_bytes: memory_limit,
            call_timeout: Duration::from_secs(60),
        };
        let sha = sha256_hex(&std::fs::read(target_dir().join("wasm32-wasip2/release/ballast.wasm")).unwrap());
        for (i, object) in chain.iter().enumerate() {
            io.block_on(storage.put_if_absent(&format!("chain/{label}/{i}"), object.clone().into()))
                .unwrap();
        }
        io.block_on(storage.put_if_absent(&format!("chain/{label}/snapshot"), snapshot.into()))
            .unwrap();
        let (mut from_chain, mut from_snapshot) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let started = Instant::now();
            let mut memory = Vec::new();
            for i in 0..chain.len() {
                let object = io.block_on(storage.get(&format!("chain/{label}/{i}"))).unwrap();
                Pages::decode(&object).unwrap().apply(&mut memory);
            }
            let mut restored = io
                .block_on(runtime.instantiate(&sha, "ballast", limits, &Default::default(), memory.len()))
                .unwrap();
            restored.restore_memory(&memory).unwrap();
            from_chain.push(millis(started.elapsed()));
            let started = Instant::now();
            let object = io.block_on(storage.get(&format!("chain/{label}/snapshot"))).unwrap();
            let mut restored = io
                .block_on(runtime.instantiate(&sha, "ballast", limits, &Default::default(), 0))
                .unwrap();
            io.block_on(restored.restore(&object)).unwrap();
            io.block_on(restored.init(&config)).unwrap();
            from_snapshot.push(millis(started.elapsed()));
        }
        let cell = |xs: Vec<f64>| {
            let (m, min, max) = stats(xs);
            format!("{m:.3} ({min:.3}-{max:.3})")
        };
        let mib = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64 / (1 << 20) as f64;
        let (pause, ..) = stats(page_pauses.clone());
        println!(
            "| {label} | {} | {} | {:.2} MiB | {:.3} MiB ({:.3} MiB) | {} | {} |",
            cell(snapshot_pauses),
            cell(page_pauses),
            mib(&snapshot_bytes),
            mib(&page_bytes),
            mib(&changed),
            cell(from_snapshot),
            cell(from_chain)
        );
        println!("METRIC\tmemory checkpoint {label} barrier pause ms\t{pause}");
        println!(
            "METRIC\tmemory checkpoint {label} bytes per changed byte\t{}",
            mib(&page_bytes) / mib(&changed)
        );
    }
}

/// Writes each Nexmark query's lines, from its native twin, for the
/// events `bench/flink-nexmark/check.sh` gives Flink (200,000 of them, at
/// 10,000 a second of event time, seed 7), windows fired up to the
/// watermark the last event brings (4 s behind it): the cross-check's
/// expected files.
fn nexmark_expected(dir: &std::path::Path) {
    let spec = SourceSpec::Nexmark {
        rate: 0,
        event_rate: Some(10_000),
        seed: 7,
        events: Some(200_000),
        encoding: EventEncoding::Json,
    };
    std::fs::create_dir_all(dir).unwrap();
    for query in ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8"] {
        let mut source = open_source(&spec, None, "check", weir::spec::Share::WHOLE);
        let mut twin = NativeNexmark {
            query: query.parse().unwrap(),
            state: nexmark::State::default(),
        };
        let mut lines = String::new();
        let mut emit = |line: &str| {
            lines.push_str(line);
            lines.push('\n');
        };
        let mut newest = i64::MIN;
        loop {
            let Batch::Records(records) = source.next_batch(weir::job::MAX_BATCH, Instant::now()).unwrap() else {
                unreachable!("the source makes records")
            };
            if records.timestamps.is_empty() {
                break;
            }
            newest = newest.max(records.timestamps.iter().copied().max().unwrap_or(i64::MIN));
            twin.events(&records, &mut emit);
        }
        twin.state.on_watermark(twin.query, newest - 4_001, &mut emit);
        std::fs::write(dir.join(format!("{query}.txt")), lines).unwrap();
    }
}

fn main() {
    if let Some(dir) = std::env::args().skip_while(|a| a != "--nexmark-expected").nth(1) {
        return nexmark_expected(std::path::Path::new(&dir));
    }
    let seconds = arg("--seconds", 5);
    let runs = arg("--runs", 3) as usize;
    let runtime = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();

    println!("### Throughput (one core, unthrottled source, discarding sink, barrier every 1 s)\n");
    println!("{runs} runs of {seconds} s each; events/s as median (min-max).\n");
    println!("| job | wasm events/s | native events/s | wasm/native | max barrier pause (wasm) |");
    println!("| --- | --- | --- | --- | --- |");
    type Make<'a> = Box<dyn Fn() -> (Box<dyn Job + 'a>, Box<dyn Source>) + 'a>;
    let sequence = || {
        open_source(
            &SourceSpec::Sequence {
                start: 0,
                rate: 0,
                timestamp: None,
            },
            None,
            "bench",
            weir::spec::Share::WHOLE,
        )
    };
    let counter =
        || -> (Box<dyn Job>, Box<dyn Source>) { (Box::new(instance(&runtime, "counter", 64 << 20, &[])), sequence()) };
    let native_counter = |job: Box<dyn Job>| -> (Box<dyn Job>, Box<dyn Source>) { (job, sequence()) };
    // Nexmark's events, unthrottled, 100,000 a second of event time: a run
    // of a few seconds spans tens of seconds, so the windows fire in it.
    let nexmark_source = || {
        let spec = SourceSpec::Nexmark {
            rate: 0,
            event_rate: Some(100_000),
            seed: 0,
            events: None,
            encoding: EventEncoding::Binary,
        };
        open_source(&spec, None, "bench", weir::spec::Share::WHOLE)
    };
    let shared = &runtime;
    let nexmark_case = |query: &'static str| -> (Make, Make) {
        let config = vec![("query".to_string(), query.to_string())];
        let wasm: Make = Box::new(move || {
            let job: Box<dyn Job> = Box::new(instance(shared, "nexmark", 256 << 20, &config));
            (job, nexmark_source())
        });
        let native: Make = Box::new(move || {
            let job = NativeNexmark {
                query: query.parse().expect("a query the job knows"),
                state: nexmark::State::default(),
            };
            (Box::new(job), nexmark_source())
        });
        (wasm, native)
    };
    let mut cases: Vec<(&str, Make, Make)> = vec![
        (
            "counter (countWindowAll(100).sum())",
            Box::new(counter),
            Box::new(|| native_counter(Box::new(NativeCounter::<0>::new()))),
        ),
        (
            "counter, the native twin's window size a constant",
            Box::new(counter),
            Box::new(|| native_counter(Box::new(NativeCounter::<100>::new()))),
        ),
        (
            "keyed event-time windows (count per key per 1 s tumbling window, JSON records, 1,000 keys)",
            Box::new(|| {
                let job: Box<dyn Job> = Box::new(instance(&runtime, "window_count", 256 << 20, &[]));
                (job, Box::new(Clicks { keys: 1_000, offset: 0 }))
            }),
            Box::new(|| {
                let job: Box<dyn Job> = Box::new(NativeWindowCount::default());
                (job, Box::new(Clicks { keys: 1_000, offset: 0 }))
            }),
        ),
        (
            "wordcount (10,000 keys)",
            Box::new(|| {
                let job: Box<dyn Job> = Box::new(instance(&runtime, "wordcount", 256 << 20, &[]));
                (
                    job,
                    Box::new(Words {
                        keys: 10_000,
                        offset: 0,
                    }),
                )
            }),
            Box::new(|| {
                let job: Box<dyn Job> = Box::new(NativeWordCount::default());
                (
                    job,
                    Box::new(Words {
                        keys: 10_000,
                        offset: 0,
                    }),
                )
            }),
        ),
    ];
    for (name, query) in [
        ("nexmark q0 (pass-through)", "q0"),
        ("nexmark q1 (currency conversion)", "q1"),
        ("nexmark q2 (selection)", "q2"),
        ("nexmark q3 (local item suggestion: join)", "q3"),
        ("nexmark q4 (average price per category: join, aggregate)", "q4"),
        ("nexmark q5 (hot items: sliding window)", "q5"),
        ("nexmark q7 (highest bid: tumbling window)", "q7"),
        ("nexmark q8 (monitor new users: windowed join)", "q8"),
    ] {
        let (wasm, native) = nexmark_case(query);
        cases.push((name, wasm, native));
    }
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    for (name, wasm, native) in cases
        .iter()
        .filter(|(name, ..)| only.as_ref().is_none_or(|o| name.starts_with(o.as_str())))
    {
        let mut wasm_runs = Vec::new();
        let mut native_runs = Vec::new();
        let mut pause = Duration::ZERO;
        for _ in 0..runs {
            let (mut job, mut source) = wasm();
            let r = run(job.as_mut(), source.as_mut(), seconds, dir.path());
            wasm_runs.push(r.events_per_s);
            pause = pause.max(r.max_pause);
            let (mut job, mut source) = native();
            native_runs.push(run(job.as_mut(), source.as_mut(), seconds, dir.path()).events_per_s);
        }
        let (w, wmin, wmax) = stats(wasm_runs);
        let (n, nmin, nmax) = stats(native_runs);
        println!(
            "| {name} | {:.2} M ({:.2}-{:.2}) | {:.2} M ({:.2}-{:.2}) | {:.2} | {:.2} ms |",
            w / 1e6,
            wmin / 1e6,
            wmax / 1e6,
            n / 1e6,
            nmin / 1e6,
            nmax / 1e6,
            w / n,
            millis(pause)
        );
        // Headline figures for scripts/compare (weir beside Flink).
        println!("METRIC\t{name}\t{w}");
    }
    if only.as_ref().is_none_or(|o| o == "checkpoints") {
        checkpoint_cost(&runtime, dir.path(), runs.max(5));
        memory_checkpoint_cost(&runtime, dir.path(), runs.max(5) * 4);
    }
}
