//! The glue [`crate::export_job!`] wires to the component's exports, and
//! that [`crate::testing`] drives natively: batches in, records to the job
//! one at a time, batches out.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::any::Any;
use core::cell::{Cell, RefCell};

use crate::bindings::weir::job::types::{Batch, Output, Rejection, Texts};
use crate::state;
use crate::timers::Timers;
use crate::{Context, Error, Job, Record};

thread_local! {
    /// The one instance of the exported job. A component instance is
    /// single-threaded, so a thread-local is the whole of its memory.
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    /// The newest watermark this instance has passed to the job.
    static WATERMARK: Cell<Option<i64>> = const { Cell::new(None) };
    /// The job's pending timers (part of its snapshot).
    static TIMERS: RefCell<Timers> = RefCell::new(Timers::default());
}

/// What the SDK keeps for a job beside the job's own state.
pub(crate) struct Instance<'a> {
    pub last_watermark: &'a mut Option<i64>,
    pub timers: &'a mut Timers,
}

fn with_job<J: Job, R>(f: impl FnOnce(&mut J) -> R) -> R {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let job = slot.get_or_insert_with(|| Box::new(J::default()));
        f(job.downcast_mut::<J>().expect("one job type per component"))
    })
}

pub fn init<J: Job>(config: Vec<(String, String)>) -> Result<(), String> {
    with_job::<J, _>(|job| job.init(&config))
}

pub fn process<J: Job>(input: Batch, watermark: Option<i64>) -> Output {
    let mut last = WATERMARK.get();
    let out = TIMERS.with_borrow_mut(|timers| {
        let instance = Instance {
            last_watermark: &mut last,
            timers,
        };
        with_job::<J, _>(|job| process_batch(job, &input, watermark, instance))
    });
    WATERMARK.set(last);
    out
}

pub fn snapshot<J: Job>() -> Vec<u8> {
    TIMERS.with_borrow(|timers| with_job::<J, _>(|job| state::encode(job, timers, WATERMARK.get())))
}

pub fn restore<J: Job>(state: Vec<u8>) -> Result<(), String> {
    let (restored, sdk) = state::decode::<J>(&state)?;
    with_job::<J, _>(|job| *job = restored);
    TIMERS.set(sdk.timers);
    WATERMARK.set(sdk.watermark);
    Ok(())
}

/// Runs one batch through `job`, record by record, collecting what it
/// emits and what it refuses; then, if the batch moved the watermark on
/// from `last`, tells the job. While it handles the batch's records the
/// job sees the watermark before the batch (what is late is late by that).
pub(crate) fn process_batch<J: Job>(job: &mut J, input: &Batch, watermark: Option<i64>, sdk: Instance<'_>) -> Output {
    let Instance {
        last_watermark: last,
        timers,
    } = sdk;
    let mut ctx = Context::new(*last);
    let mut rejected = Vec::new();
    match input {
        Batch::Ints(ints) => process_ints(job, ints, &mut ctx, &mut rejected),
        Batch::Texts(texts) => {
            for (i, text) in unpack(texts).enumerate() {
                if let Err(e) = job.process(Record::from_bytes(text), &mut ctx) {
                    reject(&mut rejected, i, e);
                }
            }
        }
        Batch::Records(records) => {
            for i in 0..records.len() {
                if let Err(e) = job.process(records.get(i), &mut ctx) {
                    reject(&mut rejected, i, e);
                }
            }
        }
    }
    if let Some(watermark) = watermark.filter(|w| last.is_none_or(|l| *w > l)) {
        *last = Some(watermark);
        ctx.set_watermark(watermark);
        job.on_watermark(watermark, &mut ctx);
    }
    // The timers due now; those they set fire on a later call.
    ctx.timers.drain(..).for_each(|t| timers.set(t));
    for timer in timers.due(crate::now_millis(), *last) {
        job.on_timer(timer, &mut ctx);
    }
    ctx.timers.drain(..).for_each(|t| timers.set(t));
    Output {
        wake_at: timers.wake_at(),
        batch: ctx.finish(),
        rejected,
    }
}

/// Feeds numbers to the job from fixed 16-element arrays, which LLVM
/// unrolls with constant offsets: wasmtime's compiler then keeps the job's
/// state in registers and checks the CPU deadline once per 16 records, not
/// once per record (the counter: 396 M -> about 730 M events/s; 16-element
/// slices without the array type got 650 M).
fn process_ints<J: Job>(job: &mut J, ints: &[i64], ctx: &mut Context, rejected: &mut Vec<Rejection>) {
    let (chunks, rest) = ints.as_chunks::<16>();
    for (c, chunk) in chunks.iter().enumerate() {
        for (i, &n) in chunk.iter().enumerate() {
            if let Err(e) = job.process(Record::from_int(n), ctx) {
                reject(rejected, c * 16 + i, e);
            }
        }
    }
    for (i, &n) in rest.iter().enumerate() {
        if let Err(e) = job.process(Record::from_int(n), ctx) {
            reject(rejected, chunks.len() * 16 + i, e);
        }
    }
}

#[cold]
fn reject(rejected: &mut Vec<Rejection>, index: usize, e: Error) {
    rejected.push(Rejection {
        index: index as u32,
        reason: e.reason().into(),
        late: e.is_late(),
    });
}

/// The texts of a packed batch, borrowed from it. Offsets out of bounds
/// give an empty text, never a trap.
pub(crate) fn unpack(texts: &Texts) -> impl Iterator<Item = &[u8]> + '_ {
    let starts = core::iter::once(0).chain(texts.ends.iter().copied());
    starts
        .zip(texts.ends.iter().copied())
        .map(|(start, end)| texts.data.get(start as usize..end as usize).unwrap_or_default())
}
