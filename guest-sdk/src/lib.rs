//! The SDK for writing weir jobs in Rust.
//!
//! A job is a plain struct that derives `Serialize`/`Deserialize` and
//! implements [`Job`]; the struct *is* the job's state. [`export_job!`] turns it
//! into a component of the `weir:job/job` world: the SDK encodes snapshots,
//! unrolls the host's batches into one [`Job::process`] call per event, and
//! provides [`CountWindow`] and [`TumblingWindow`].
//!
//! ```ignore
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter { window: CountWindow<i64> }
//!
//! impl Job for Counter {
//!     fn process(&mut self, event: Event, out: &mut Emitter) {
//!         if let Event::Int(n) = event {
//!             if let Some(sum) = self.window.add(100, |acc| *acc += n) {
//!                 out.emit(Event::Int(sum));
//!             }
//!         }
//!     }
//! }
//! weir_guest::export_job!(Counter);
//! ```

extern crate alloc;

mod windows;

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::any::Any;
use core::cell::RefCell;

pub use serde;
pub use windows::{CountWindow, Late, TumblingWindow};

/// Bindings generated from `wit/job.wit`; used by [`export_job!`].
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "job",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "weir_guest::bindings",
        additional_derives: [PartialEq],
    });
}

pub use bindings::weir::job::types::Level;
use bindings::weir::job::types::{Batch, Event as OwnedEvent, Texts};

/// One record in a stream, as a job sees it and emits it. Texts are borrowed
/// from the batch that brought them, so reading one costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A number.
    Int(i64),
    /// A line of text.
    Text(&'a str),
}

impl<'a> From<&'a OwnedEvent> for Event<'a> {
    fn from(event: &'a OwnedEvent) -> Self {
        match event {
            OwnedEvent::Int(n) => Event::Int(*n),
            OwnedEvent::Text(text) => Event::Text(text),
        }
    }
}

impl From<Event<'_>> for OwnedEvent {
    fn from(event: Event<'_>) -> Self {
        match event {
            Event::Int(n) => OwnedEvent::Int(n),
            Event::Text(text) => OwnedEvent::Text(text.into()),
        }
    }
}

/// Settings given at deploy time with `--config key=value`.
pub type Config = [(String, String)];

/// Looks up a setting and parses it, for use in [`Job::init`].
///
/// Returns `Ok(None)` when the key is absent, and an error naming the key
/// when its value does not parse.
pub fn config_value<T: core::str::FromStr>(config: &Config, key: &str) -> Result<Option<T>, String> {
    match config.iter().find(|(k, _)| k == key) {
        None => Ok(None),
        Some((_, v)) => v
            .parse()
            .map(Some)
            .map_err(|_| alloc::format!("config `{key}`: cannot parse {v:?}")),
    }
}

/// A stream job: its fields are its state, snapshotted at every checkpoint.
pub trait Job: Default + serde::Serialize + serde::de::DeserializeOwned + 'static {
    /// Applies the deploy-time settings. Runs before the first event, and
    /// again after a restore, so it must configure without clearing state.
    fn init(&mut self, _config: &Config) -> Result<(), String> {
        Ok(())
    }

    /// Handles one event, emitting zero or more events through `out`.
    fn process(&mut self, event: Event<'_>, out: &mut Emitter);
}

/// Collects the events a job emits while it processes one batch, packed as
/// they come into the batch that crosses back to the host (numbers in one
/// list, texts in one buffer), so emitting costs no second pass or copy.
pub struct Emitter {
    packed: Packed,
}

/// What a batch's output holds so far.
enum Packed {
    Empty,
    Ints(Vec<i64>),
    Texts(Texts),
    /// Numbers and texts both: kept as events, in order.
    Mixed(Vec<OwnedEvent>),
}

impl Emitter {
    fn new() -> Emitter {
        Emitter { packed: Packed::Empty }
    }

    /// Queues an event for the job's sink (a text is copied into the batch).
    /// Never inlined: a job's per-event loop runs fastest with only a call
    /// here (the counter: about 730 M events/s with the call, 153 M inlined).
    #[inline(never)]
    pub fn emit(&mut self, event: Event<'_>) {
        match (&mut self.packed, event) {
            (Packed::Ints(ints), Event::Int(n)) => ints.push(n),
            (Packed::Texts(texts), Event::Text(text)) => push_text(texts, text),
            (Packed::Mixed(events), event) => events.push(event.into()),
            (Packed::Empty, Event::Int(n)) => {
                // Room for a window's worth of output from the first emit on:
                // growing from one element cost the counter 2%.
                let mut ints = Vec::with_capacity(64);
                ints.push(n);
                self.packed = Packed::Ints(ints);
            }
            (Packed::Empty, Event::Text(text)) => {
                let mut texts = Texts {
                    data: Vec::new(),
                    ends: Vec::new(),
                };
                push_text(&mut texts, text);
                self.packed = Packed::Texts(texts);
            }
            (_, event) => {
                let mut events: Vec<OwnedEvent> = match core::mem::replace(&mut self.packed, Packed::Empty) {
                    Packed::Ints(ints) => ints.into_iter().map(OwnedEvent::Int).collect(),
                    Packed::Texts(texts) => glue::unpack(&texts)
                        .map(|text| OwnedEvent::Text(text.into_owned()))
                        .collect(),
                    Packed::Empty | Packed::Mixed(_) => Vec::new(),
                };
                events.push(event.into());
                self.packed = Packed::Mixed(events);
            }
        }
    }

    /// The batch for the host.
    fn finish(self) -> Batch {
        match self.packed {
            Packed::Empty => Batch::Ints(Vec::new()),
            Packed::Ints(ints) => Batch::Ints(ints),
            Packed::Texts(texts) => Batch::Texts(texts),
            Packed::Mixed(events) => Batch::Mixed(events),
        }
    }
}

fn push_text(texts: &mut Texts, text: &str) {
    texts.data.extend_from_slice(text.as_bytes());
    texts.ends.push(texts.data.len() as u32);
}

/// Writes a line to the supervisor's log, tagged with the job's name. In a
/// native test (no host), to standard error.
pub fn log(level: Level, message: &str) {
    #[cfg(target_family = "wasm")]
    bindings::weir::job::host::log(level, message);
    #[cfg(not(target_family = "wasm"))]
    std::eprintln!("[{level:?}] {message}");
}

/// Wall-clock time in milliseconds since the Unix epoch, from the host. In
/// a native test (no host), the machine's clock.
pub fn now_millis() -> u64 {
    #[cfg(target_family = "wasm")]
    return bindings::weir::job::host::now_millis();
    #[cfg(not(target_family = "wasm"))]
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

thread_local! {
    /// The one instance of the exported job. A component instance is
    /// single-threaded, so a thread-local is the whole of its memory.
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn with_job<J: Job, R>(f: impl FnOnce(&mut J) -> R) -> R {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let job = slot.get_or_insert_with(|| Box::new(J::default()));
        f(job.downcast_mut::<J>().expect("one job type per component"))
    })
}

/// The glue [`export_job!`] wires to the component's exports.
#[doc(hidden)]
pub mod glue {
    use super::*;

    pub fn init<J: Job>(config: Vec<(String, String)>) -> Result<(), String> {
        with_job::<J, _>(|job| job.init(&config))
    }

    pub fn process<J: Job>(input: Batch) -> Batch {
        let mut out = Emitter::new();
        with_job::<J, _>(|job| match &input {
            Batch::Ints(ints) => process_ints(job, ints, &mut out),
            Batch::Texts(texts) => unpack(texts).for_each(|text| job.process(Event::Text(&text), &mut out)),
            Batch::Mixed(events) => events.iter().for_each(|event| job.process(event.into(), &mut out)),
        });
        out.finish()
    }

    /// Feeds numbers to the job from fixed 16-element arrays, which LLVM
    /// unrolls with constant offsets: wasmtime's compiler then keeps the
    /// job's state in registers and checks the CPU deadline once per 16
    /// events, not once per event (the counter: 396 M -> about 730 M events/s;
    /// 16-element slices without the array type got 650 M).
    fn process_ints<J: Job>(job: &mut J, ints: &[i64], out: &mut Emitter) {
        let (chunks, rest) = ints.as_chunks::<16>();
        for chunk in chunks {
            for &n in chunk {
                job.process(Event::Int(n), out);
            }
        }
        for &n in rest {
            job.process(Event::Int(n), out);
        }
    }

    /// The texts of a packed batch, borrowed from it. The host sends UTF-8;
    /// anything else is replaced, never a trap.
    pub(crate) fn unpack(texts: &Texts) -> impl Iterator<Item = Cow<'_, str>> + '_ {
        let starts = core::iter::once(0).chain(texts.ends.iter().copied());
        starts.zip(texts.ends.iter().copied()).map(|(start, end)| {
            let bytes = texts.data.get(start as usize..end as usize).unwrap_or_default();
            String::from_utf8_lossy(bytes)
        })
    }

    /// Packs events into the cheapest batch that holds them in order.
    #[cfg(test)]
    pub(crate) fn pack(events: &[Event<'_>]) -> Batch {
        let mut out = Emitter::new();
        events.iter().for_each(|event| out.emit(*event));
        out.finish()
    }

    pub fn snapshot<J: Job>() -> Vec<u8> {
        with_job::<J, _>(|job| postcard::to_allocvec(job).expect("job state must serialize"))
    }

    pub fn restore<J: Job>(state: Vec<u8>) -> Result<(), String> {
        let restored: J = postcard::from_bytes(&state).map_err(|e| alloc::format!("cannot decode snapshot: {e}"))?;
        with_job::<J, _>(|job| *job = restored);
        Ok(())
    }
}

/// Exports a [`Job`] type as the component's `weir:job/job` world.
#[macro_export]
macro_rules! export_job {
    ($job:ty) => {
        struct __WeirExportedJob;

        impl $crate::bindings::Guest for __WeirExportedJob {
            fn init(config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> ::core::result::Result<(), ::std::string::String> {
                $crate::glue::init::<$job>(config)
            }
            fn process(input: $crate::bindings::weir::job::types::Batch) -> $crate::bindings::weir::job::types::Batch {
                $crate::glue::process::<$job>(input)
            }
            fn snapshot() -> ::std::vec::Vec<u8> {
                $crate::glue::snapshot::<$job>()
            }
            fn restore(state: ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::std::string::String> {
                $crate::glue::restore::<$job>(state)
            }
        }

        $crate::bindings::export_world!(__WeirExportedJob with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::bindings::weir::job::types::{Batch, Texts};

    #[derive(Default, Serialize, Deserialize)]
    struct Probe {
        counts: HashMap<String, u64>,
        window: CountWindow<i64>,
    }

    impl Job for Probe {
        fn process(&mut self, event: Event, out: &mut Emitter) {
            if let Event::Int(n) = event {
                *self.counts.entry(n.to_string()).or_default() += 1;
                if let Some(sum) = self.window.add(2, |acc| *acc += n) {
                    out.emit(Event::Int(sum));
                }
            }
        }
    }

    fn ints(ns: &[i64]) -> Batch {
        Batch::Ints(ns.to_vec())
    }

    #[test]
    fn the_host_calls_work_in_a_native_test() {
        log(Level::Info, "from a native test");
        assert!(now_millis() > 1_700_000_000_000);
    }

    #[test]
    fn state_survives_snapshot_and_restore() {
        assert_eq!(glue::process::<Probe>(ints(&[1])), ints(&[]));
        let snapshot = glue::snapshot::<Probe>();
        assert_eq!(glue::process::<Probe>(ints(&[2])), ints(&[3]));
        glue::restore::<Probe>(snapshot).unwrap();
        assert_eq!(
            glue::process::<Probe>(ints(&[5])),
            ints(&[6]),
            "the open window came back"
        );
    }

    #[test]
    fn texts_and_mixed_batches_keep_their_order() {
        let texts = Texts {
            data: b"onetwo".to_vec(),
            ends: vec![3, 6],
        };
        assert_eq!(glue::unpack(&texts).collect::<Vec<_>>(), vec!["one", "two"]);
        let bad = Texts {
            data: b"x".to_vec(),
            ends: vec![5],
        };
        assert_eq!(
            glue::unpack(&bad).collect::<Vec<_>>(),
            vec![""],
            "bad bounds give an empty text, not a trap"
        );
        for mixed in [
            vec![Event::Text("a"), Event::Int(1)],
            vec![Event::Int(1), Event::Int(2), Event::Text("b"), Event::Int(3)],
        ] {
            let owned = mixed.iter().map(|&event| OwnedEvent::from(event)).collect();
            assert_eq!(glue::pack(&mixed), Batch::Mixed(owned));
        }
        assert_eq!(glue::pack(&[]), Batch::Ints(vec![]));
        assert_eq!(glue::pack(&[Event::Int(4), Event::Int(5)]), Batch::Ints(vec![4, 5]));
        assert_eq!(
            glue::pack(&[Event::Text("ab"), Event::Text("c")]),
            Batch::Texts(Texts {
                data: b"abc".to_vec(),
                ends: vec![2, 3]
            })
        );
    }

    #[test]
    fn every_number_of_a_batch_is_processed_once_in_order() {
        // 37 is two unrolled chunks of 16 and a remainder of 5.
        let batch: Vec<i64> = (0..37).collect();
        let sums: Vec<i64> = batch.chunks_exact(2).map(|pair| pair[0] + pair[1]).collect();
        assert_eq!(glue::process::<Probe>(ints(&batch)), ints(&sums));
        assert_eq!(
            glue::process::<Probe>(ints(&[100])),
            ints(&[136]),
            "the 37th number waited in its window"
        );
    }

    proptest::proptest! {
        #[test]
        fn restoring_any_bytes_is_an_error_or_a_state_never_a_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)
        ) {
            let _ = glue::restore::<Probe>(bytes);
        }
    }
}
