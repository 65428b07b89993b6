//! The batch loop, on the job's own thread: source -> guest -> staged
//! output, with a barrier (a snapshot between two batches) every checkpoint
//! interval. It is a future (guest calls are wasmtime async calls) so that
//! dropping it drops a guest blocked in a host call, store and all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;

use tokio::sync::mpsc;

use super::watermark::Watermark;
use super::{Control, ControlReceiver};
use crate::checkpoint::image::Pages;
use crate::checkpoint::{EventTimes, SourcePosition};
use crate::connectors::{OutputFormat, Source, TableShape, Unfit};
use crate::runtime::Instance;
use crate::spec::OnError;
use crate::wit::{batch_len, Batch, Rejection, Texts};

/// Most events handed to the guest in one call: large enough that the cost
/// of crossing into the guest (about 1 µs a call) is spread thin, small
/// enough that a batch stays a few tens of KiB. 4096 rather than 1024 took
/// the counter from 193 M to 314 M events/s (native Rust in the same loop
/// gained as much).
pub const MAX_BATCH: usize = 4096;

/// The guest's state at a barrier.
pub enum GuestSnapshot {
    /// What the SDK serialized.
    Serialized(Vec<u8>),
    /// The pages of its memory written since the barrier before, or all
    /// of them (`whole`) when there is no image to write them over.
    Pages {
        /// The pages.
        pages: Pages,
        /// Whether they need no image under them.
        whole: bool,
    },
}

/// What a barrier hands the committer.
pub struct Barrier {
    /// The guest's state after the last batch before the barrier.
    pub state: GuestSnapshot,
    /// The source position matching that state.
    pub source_position: SourcePosition,
    /// How far each source partition's end was past it, where known.
    pub source_lag: BTreeMap<u32, i64>,
    /// Where the watermark stands, if the job has one.
    pub event_times: EventTimes,
    /// Sink lines produced since the previous barrier.
    pub output: Vec<u8>,
    /// Dead letters produced since the previous barrier.
    pub dead_letters: Vec<u8>,
    /// What records went through since the previous barrier.
    pub counts: RecordCounts,
    /// When the barrier was taken (ms since the Unix epoch), as the
    /// checkpoint records it.
    pub created_ms: u64,
    /// The same moment on the monotonic clock, for measuring the commit.
    pub taken: tokio::time::Instant,
}

/// How the loop ended when it did not fail.
pub enum RunEnd {
    /// Told to stop, or the committer gave up.
    Stopped,
    /// Took its final barrier.
    Finished,
}

/// The shortest wait before waking a job for its timers with no records.
const WAKE_MIN: Duration = Duration::from_millis(10);

/// How long a paused loop sleeps before looking at its control again.
const PAUSE_POLL: Duration = Duration::from_millis(50);

/// Runs batches until stopped. Errors are the guest's or the source's.
/// The source reads block (up to the next barrier's deadline), which is
/// why this runs on a thread of its own and not on a shared runtime.
pub async fn run(
    mut instance: Instance,
    mut source: Box<dyn Source>,
    mut control: ControlReceiver,
    barriers: mpsc::Sender<Barrier>,
    settings: Settings<'_>,
    mut watermark: Option<Watermark>,
) -> anyhow::Result<RunEnd> {
    let Settings {
        interval,
        on_error,
        table,
        formats,
    } = settings;
    let mut staged = Staged::new(formats);
    let mut next_barrier = Instant::now() + interval;
    // An attempt checkpoints as soon as it has output, then every interval:
    // output only shows once a checkpoint commits, so a deploy or a failover
    // would otherwise show nothing for a whole interval.
    let mut first_output = true;
    // When the job wants a call with no records (its next processing-time
    // timer). Unknown after a restore until the first call: make one.
    let mut wake_at = Some(0);
    // The watermark the job was last given.
    let mut given = None;
    // Whether a barrier found the guest's memory could not be its image.
    let mut image_refused = false;
    loop {
        let now_control = control.get();
        match now_control {
            Control::Stop => return Ok(RunEnd::Stopped),
            Control::Pause => {
                tokio::time::sleep(PAUSE_POLL).await;
                continue;
            }
            Control::Finish => {
                // The final checkpoint is what a savepoint or an upgrade
                // takes: the SDK's portable state, never an image.
                image_refused = true;
                barrier(
                    &mut image_refused,
                    &mut instance,
                    source.as_ref(),
                    watermark.as_ref(),
                    &mut staged,
                    &barriers,
                )
                .await?;
                return Ok(RunEnd::Finished);
            }
            Control::Run => {}
        }
        let position = source.position();
        let until = wake_at.map_or(next_barrier, |at| next_barrier.min(instant_of(at)));
        let batch = source.next_batch(MAX_BATCH, until).context("reading the source")?;
        let woken = wake_at.is_some_and(|at| crate::clock::now_ms() >= at);
        let now = Instant::now();
        let current = watermark.as_mut().and_then(|w| {
            w.expect(position.partitions.keys().copied(), now);
            w.observe(&batch, now);
            if source.ended() {
                w.end();
            }
            w.current(now)
        });
        // A watermark moves with no record too, when a slow partition goes
        // idle: the job hears of it, or its windows would wait for a record.
        if batch_len(&batch) > 0 || woken || current > given {
            given = current;
            let out = instance.process(&batch, current).await?;
            staged.counts.records_in += batch_len(&batch) as u64;
            staged.counts.records_out += batch_len(&out.batch) as u64;
            // A job that asks to be woken now, again and again, is woken
            // at most every WAKE_MIN: never a busy loop.
            let soonest = crate::clock::now_ms() + WAKE_MIN.as_millis() as u64;
            wake_at = out.wake_at.map(|at| at.max(soonest));
            let from = staged.output.len();
            staged.formats.output.stage(&out.batch, &mut staged.output);
            staged.refused(&batch, &out.rejected, on_error, &position)?;
            if let Some(table) = table {
                let unfit = table.take_unfit(&mut staged.output, from);
                // Refused by the table: counted as rejected, not as out.
                staged.counts.records_out -= unfit.len() as u64;
                staged.unfit(unfit, on_error)?;
            }
        }
        if first_output && !(staged.output.is_empty() && staged.dead_letters.is_empty()) {
            first_output = false;
            next_barrier = Instant::now();
        }
        if Instant::now() >= next_barrier {
            if !barrier(
                &mut image_refused,
                &mut instance,
                source.as_ref(),
                watermark.as_ref(),
                &mut staged,
                &barriers,
            )
            .await?
            {
                return Ok(RunEnd::Stopped);
            }
            next_barrier = Instant::now() + interval;
        }
    }
}

/// The monotonic instant of wall-clock time `at_ms` (ms since the Unix epoch).
fn instant_of(at_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(at_ms.saturating_sub(crate::clock::now_ms()))
}

/// How many records went through a task, counted in the metrics once
/// the checkpoint they are part of commits (so a replay is not counted twice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounts {
    /// Records read from the source.
    pub records_in: u64,
    /// Records the job emitted.
    pub records_out: u64,
    /// Records the job refused that its `--on-error` skipped or sent to
    /// the dead-letter sink.
    pub rejected: u64,
    /// Records that came late (dropped, or sent to the dead-letter sink).
    pub late: u64,
}

impl std::ops::AddAssign for RecordCounts {
    fn add_assign(&mut self, other: RecordCounts) {
        self.records_in += other.records_in;
        self.records_out += other.records_out;
        self.rejected += other.rejected;
        self.late += other.late;
    }
}

/// What the loop takes from the job's spec.
pub struct Settings<'a> {
    /// Time between two barriers.
    pub interval: Duration,
    /// Where refused records go.
    pub on_error: &'a OnError,
    /// What the sink's table takes, when it writes one: output rows that
    /// do not fit are refused like records the job refuses.
    pub table: Option<&'a TableShape>,
    /// How the outputs are staged.
    pub formats: Formats,
}

/// How each of a job's outputs is staged: as its sink reads it.
#[derive(Debug, Clone, Copy)]
pub struct Formats {
    /// The `--sink`'s.
    pub output: OutputFormat,
    /// The dead-letter sink's.
    pub dead_letters: OutputFormat,
}

/// What the loop has produced since its last barrier.
struct Staged {
    formats: Formats,
    output: Vec<u8>,
    dead_letters: Vec<u8>,
    counts: RecordCounts,
}

impl Staged {
    fn new(formats: Formats) -> Staged {
        Staged {
            formats,
            output: Vec::new(),
            dead_letters: Vec::new(),
            counts: RecordCounts::default(),
        }
    }

    /// What was staged, leaving the stage empty.
    fn take(&mut self) -> Staged {
        std::mem::replace(self, Staged::new(self.formats))
    }

    /// Routes the records the job refused in `input`, read from source
    /// position `position`, as the job's `--on-error` says; late records
    /// go to the dead-letter sink if there is one, else they are dropped.
    /// Either way they are counted.
    fn refused(
        &mut self,
        input: &Batch,
        rejected: &[Rejection],
        on_error: &OnError,
        position: &SourcePosition,
    ) -> anyhow::Result<()> {
        if rejected.is_empty() {
            return Ok(());
        }
        let late = rejected.iter().filter(|r| r.late).count() as u64;
        let refused = rejected.len() as u64 - late;
        if let (OnError::Fail, Some(first)) = (on_error, rejected.iter().find(|r| !r.late)) {
            anyhow::bail!(
                "the job refused record {} of the batch read from source position {position}: {}; \
                 deploy it with --on-error skip or --on-error dead-letter:SINK to pass over such records",
                first.index,
                first.reason
            );
        }
        self.counts.late += late;
        self.counts.rejected += refused;
        match on_error {
            OnError::DeadLetter { .. } => {
                for rejection in rejected {
                    self.formats
                        .dead_letters
                        .stage_dead_letter(input, rejection, &mut self.dead_letters);
                }
            }
            OnError::Fail | OnError::Skip if refused > 0 => {
                let first = rejected.iter().find(|r| !r.late).map_or("", |r| r.reason.as_str());
                tracing::warn!(
                    "skipped {refused} records the job refused in the batch read from source position {position}; the first: {first}"
                );
            }
            OnError::Fail | OnError::Skip => {}
        }
        Ok(())
    }

    /// Sends output rows that do not fit the sink's table where the job's
    /// `--on-error` says, as dead letters of the output record.
    fn unfit(&mut self, unfit: Vec<Unfit>, on_error: &OnError) -> anyhow::Result<()> {
        let Some(Unfit { index, reason, .. }) = unfit.first() else {
            return Ok(());
        };
        match on_error {
            OnError::Fail => anyhow::bail!(
                "output record {index} of a batch does not fit the sink: {reason}; change the table or the job, \
                 or deploy it with --on-error skip or --on-error dead-letter:SINK to pass over such records"
            ),
            OnError::Skip => tracing::warn!(
                "skipped {} output records that do not fit the sink; the first: {reason}",
                unfit.len()
            ),
            OnError::DeadLetter { .. } => {
                let mut rows = Texts {
                    data: Vec::new(),
                    ends: Vec::new(),
                };
                let mut rejections = Vec::new();
                for (i, unfit) in unfit.iter().enumerate() {
                    rows.data.extend_from_slice(&unfit.row);
                    rows.ends.push(rows.data.len() as u32);
                    rejections.push(Rejection {
                        index: i as u32,
                        reason: unfit.reason.clone(),
                        late: false,
                    });
                }
                let rows = Batch::Texts(rows);
                for rejection in &rejections {
                    self.formats
                        .dead_letters
                        .stage_dead_letter(&rows, rejection, &mut self.dead_letters);
                }
            }
        }
        self.counts.rejected += unfit.len() as u64;
        Ok(())
    }
}

/// Takes a barrier and hands it on; false when the committer has gone.
/// The guest's state is its memory's pages if it tracks them and can,
/// else the SDK's snapshot (the first refusal, `refused`, is logged).
async fn barrier(
    refused: &mut bool,
    instance: &mut Instance,
    source: &dyn Source,
    watermark: Option<&Watermark>,
    staged: &mut Staged,
    barriers: &mpsc::Sender<Barrier>,
) -> anyhow::Result<bool> {
    let (created_ms, taken) = (crate::clock::now_ms(), tokio::time::Instant::now());
    let image = match instance.tracks_memory() {
        true if *refused => None,
        true => match instance.image() {
            Ok(image) => Some(image),
            Err(e) => {
                tracing::warn!("this checkpoint and later ones keep the SDK's snapshot: {e}");
                *refused = true;
                None
            }
        },
        false => None,
    };
    let state = match image {
        Some((pages, whole)) => GuestSnapshot::Pages { pages, whole },
        None => GuestSnapshot::Serialized(instance.snapshot().await?),
    };
    let staged = staged.take();
    let barrier = Barrier {
        state,
        source_position: source.position(),
        source_lag: source.lag(),
        event_times: watermark.map(Watermark::event_times).unwrap_or_default(),
        output: staged.output,
        dead_letters: staged.dead_letters,
        counts: staged.counts,
        created_ms,
        taken,
    };
    Ok(barriers.send(barrier).await.is_ok())
}
