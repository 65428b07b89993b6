//! The SDK for writing weir jobs in Rust.
//!
//! A job is a plain struct that derives `Serialize`/`Deserialize` and
//! implements [`Job`]; the struct *is* the job's state. [`export_job!`] turns it
//! into a component of the `weir:job/job` world: the SDK encodes snapshots,
//! versions them for migration ([`Job::STATE_VERSION`]), unrolls the host's batches into one [`Job::process`] call per [`Record`],
//! tells the job of watermarks ([`Job::on_watermark`]) and timers
//! ([`Job::on_timer`]), and provides [`CountWindow`], [`TumblingWindow`] and
//! keyed [`EventTimeWindows`]. [`testing`] runs a job natively, in plain
//! `cargo test`.
//!
//! ```ignore
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter { window: CountWindow<i64> }
//!
//! impl Job for Counter {
//!     fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
//!         let n = record.int()?;
//!         if let Some(sum) = self.window.add(100, |acc| *acc += n) {
//!             ctx.emit_int(sum);
//!         }
//!         Ok(())
//!     }
//! }
//! weir_guest::export_job!(Counter);
//! ```

extern crate alloc;

mod emit;
mod error;
#[doc(hidden)]
pub mod glue;
mod instance;
mod record;
mod state;
pub mod testing;
mod timers;
mod windows;

use alloc::string::String;

pub use emit::Context;
pub use error::Error;
pub use record::{Record, Value};
pub use serde;
pub use state::StoredState;
pub use timers::Timer;
pub use windows::{Assigner, CountWindow, EventTimeWindows, Fired, Late, SessionWindows, TumblingWindow};

/// Bindings generated from `wit/job.wit`; used by [`export_job!`].
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "job",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "weir_guest::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::weir::job::types::Level;

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
    /// The version of the state's type. A snapshot records it, so that a
    /// newer module restoring it (`weir upgrade`, `weir deploy
    /// --from-savepoint`) knows what it reads. Fields are stored by name:
    /// adding one with `#[serde(default)]`, or removing one, needs no new
    /// version. Raise it when old state cannot be read as the new type (a
    /// field renamed or its type changed), and convert in [`Job::migrate`].
    /// A module refuses state of a version newer than its own.
    const STATE_VERSION: u32 = 1;

    /// Whether the job keeps one instance of its state per source
    /// partition, rather than one per task. Each record goes to the
    /// instance of its partition (`Record::partition`; records without one
    /// to partition 0's), with its own timers; watermarks go to every
    /// instance. The state of a partition then moves with it, so `weir
    /// rescale` can regroup a Kafka topic's partitions over another number
    /// of tasks and keep each one's state: Kafka Streams keeps its stores
    /// per partition for the same reason. Turn it on for state kept per
    /// key (a key stays in its partition); leave it off for a total over
    /// every record a task reads, which would become one per partition.
    /// Changing it makes old state unreadable: the restore refuses it.
    const PARTITIONED_STATE: bool = false;

    /// Builds the job's state from state an older version stored
    /// (`from_version` < [`Job::STATE_VERSION`]), typically by decoding the
    /// old type (kept in the job's code) and converting it. By default, it
    /// reads the old state as the current type. An error refuses the
    /// state: the restore fails, and `weir upgrade` rolls back.
    fn migrate(from_version: u32, state: StoredState<'_>) -> Result<Self, String> {
        let _ = from_version;
        state.decode()
    }

    /// Applies the deploy-time settings. Runs before the first record, and
    /// again after a restore, so it must configure without clearing state.
    fn init(&mut self, _config: &Config) -> Result<(), String> {
        Ok(())
    }

    /// Handles one record, emitting zero or more through `ctx`. An error
    /// refuses the record: it goes to the job's `--on-error` route with the
    /// reason (by default the job fails), and the job carries on with the
    /// next record. What it emitted before the error stays emitted.
    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error>;

    /// Called after a batch that moved the watermark on, with the new one:
    /// the input is complete up to `watermark`, so windows that end at or
    /// before it can fire (see [`EventTimeWindows::fire`]).
    fn on_watermark(&mut self, _watermark: i64, _ctx: &mut Context) {}

    /// Called when a timer set through `ctx` comes due: a processing-time
    /// one even when no record has come (the supervisor wakes the job for
    /// it), an event-time one when the watermark reaches it.
    fn on_timer(&mut self, _timer: Timer, _ctx: &mut Context) {}
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
/// a native test (no host), the machine's clock, or the time a
/// [`testing::Harness`] set.
pub fn now_millis() -> u64 {
    #[cfg(target_family = "wasm")]
    return bindings::weir::job::host::now_millis();
    #[cfg(not(target_family = "wasm"))]
    testing::now().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
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
            fn process(
                input: $crate::bindings::weir::job::types::Batch,
                watermark: ::core::option::Option<i64>,
            ) -> $crate::bindings::weir::job::types::Output {
                $crate::glue::process::<$job>(input, watermark)
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
    use crate::testing::{Harness, Input};

    /// Sums pairs of numbers, counts them by value, and refuses -13.
    #[derive(Default, Serialize, Deserialize)]
    struct Probe {
        counts: HashMap<String, u64>,
        window: CountWindow<i64>,
    }

    impl Job for Probe {
        fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            let n = record.int()?;
            if n == -13 {
                return Err(Error::new("unlucky"));
            }
            *self.counts.entry(n.to_string()).or_default() += 1;
            if let Some(sum) = self.window.add(2, |acc| *acc += n) {
                ctx.emit_int(sum);
            }
            Ok(())
        }
    }

    /// Counts clicks per user from JSON records, keyed and timestamped.
    #[derive(Default, Serialize, Deserialize)]
    struct Clicks {
        per_user: HashMap<String, u64>,
    }

    #[derive(Deserialize)]
    struct Click<'a> {
        user: &'a str,
    }

    impl Job for Clicks {
        fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            let click: Click = record.json()?;
            let count = self.per_user.entry(click.user.to_string()).or_default();
            *count += 1;
            let value = format!("{}", count);
            let mut out = Record::from_bytes(value.as_bytes()).with_key(click.user.as_bytes());
            if let Some(t) = record.timestamp() {
                out = out.at(t);
            }
            ctx.emit(out);
            Ok(())
        }
    }

    #[test]
    fn state_survives_snapshot_and_restore() {
        let mut job = Harness::<Probe>::new().unwrap();
        assert_eq!(job.process(&[Input::int(1)]).ints(), Vec::<i64>::new());
        job.snapshot_and_restore().unwrap();
        assert_eq!(
            job.process(&[Input::int(5)]).ints(),
            vec![6],
            "the open window came back"
        );
    }

    #[test]
    fn a_refused_record_is_reported_and_the_batch_carries_on() {
        let mut job = Harness::<Probe>::new().unwrap();
        let out = job.process(&[Input::int(1), Input::int(-13), Input::int(2), Input::text("x")]);
        assert_eq!(out.ints(), vec![3]);
        assert_eq!(out.rejected.len(), 2);
        assert_eq!(out.rejected[0], (1, "unlucky".to_string()));
        assert_eq!(out.rejected[1].0, 3);
        assert!(out.rejected[1].1.contains("not a number"), "{:?}", out.rejected);
    }

    #[test]
    fn records_carry_keys_timestamps_and_json() {
        let mut job = Harness::<Clicks>::new().unwrap();
        let out = job.process(&[
            Input::json(&serde_json::json!({"user": "ann"})).at(1_000),
            Input::json(&serde_json::json!({"user": "bob"})).key(b"k").at(2_000),
            Input::json(&serde_json::json!({"user": "ann"})),
            Input::text("not json"),
        ]);
        let keys: Vec<_> = out.emitted.iter().map(|e| e.key.clone().unwrap()).collect();
        assert_eq!(keys, vec![b"ann".to_vec(), b"bob".to_vec(), b"ann".to_vec()]);
        assert_eq!(out.texts(), vec!["1", "1", "2"]);
        let times: Vec<_> = out.emitted.iter().map(|e| e.timestamp).collect();
        assert_eq!(times, vec![Some(1_000), Some(2_000), None]);
        assert_eq!(out.rejected.len(), 1);
        assert!(out.rejected[0].1.contains("JSON"), "{:?}", out.rejected);
    }

    #[test]
    fn a_record_reads_back_every_column() {
        let input = Input::bytes(b"v")
            .key(b"")
            .at(7)
            .from_partition(3, 42)
            .header("h", b"1");
        #[derive(Default, Serialize, Deserialize)]
        struct Echo;
        impl Job for Echo {
            fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
                assert_eq!(record.key(), Some(&b""[..]), "an empty key is a key");
                assert_eq!(record.value(), Value::Bytes(b"v"));
                assert_eq!(
                    (record.timestamp(), record.partition(), record.offset()),
                    (Some(7), Some(3), Some(42))
                );
                assert_eq!(record.headers().collect::<Vec<_>>(), vec![("h", &b"1"[..])]);
                ctx.emit(record);
                Ok(())
            }
        }
        let mut job = Harness::<Echo>::new().unwrap();
        let out = job.process(&[input.clone(), input]);
        assert!(out.rejected.is_empty());
        assert_eq!(out.emitted.len(), 2);
        assert_eq!(out.emitted[1].headers, vec![("h".to_string(), b"1".to_vec())]);
    }

    #[test]
    fn output_is_packed_in_the_cheapest_batch_that_keeps_the_order() {
        let pack = |f: &dyn Fn(&mut Context)| {
            let mut ctx = Context::new(None);
            f(&mut ctx);
            ctx.finish()
        };
        assert_eq!(pack(&|_| {}), Batch::Ints(vec![]));
        assert_eq!(pack(&|c| (4..6).for_each(|n| c.emit_int(n))), Batch::Ints(vec![4, 5]));
        assert_eq!(
            pack(&|c| {
                c.emit_text("ab");
                c.emit_text("c")
            }),
            Batch::Texts(Texts {
                data: b"abc".to_vec(),
                ends: vec![2, 3]
            })
        );
        let Batch::Records(mixed) = pack(&|c| {
            c.emit_int(1);
            c.emit_text("two");
            c.emit(Record::from_bytes(b"3").with_key(b"k"));
        }) else {
            panic!("numbers and texts together are records")
        };
        let values: Vec<_> = (0..mixed.len())
            .map(|i| mixed.get(i).value_bytes().into_owned())
            .collect();
        assert_eq!(values, vec![b"1".to_vec(), b"two".to_vec(), b"3".to_vec()]);
        assert_eq!(mixed.get(2).key(), Some(&b"k"[..]));
        assert_eq!(mixed.get(0).key(), None);
    }

    #[test]
    fn bad_bounds_give_empty_parts_not_a_trap() {
        let bad = Texts {
            data: b"x".to_vec(),
            ends: vec![5],
        };
        assert_eq!(instance::unpack(&bad).collect::<Vec<_>>(), vec![&b""[..]]);
        let records = bindings::weir::job::types::Records {
            data: b"x".to_vec(),
            ends: vec![9, 1],
            keyed: vec![1, 1],
            ..Default::default()
        };
        assert_eq!(records.get(1).value(), Value::Bytes(b""));
    }

    #[test]
    fn every_number_of_a_batch_is_processed_once_in_order() {
        // 37 is two unrolled chunks of 16 and a remainder of 5.
        let mut job = Harness::<Probe>::new().unwrap();
        let batch: Vec<Input> = (0..37).map(Input::int).collect();
        let sums: Vec<i64> = (0..36)
            .collect::<Vec<i64>>()
            .chunks_exact(2)
            .map(|p| p[0] + p[1])
            .collect();
        assert_eq!(job.process(&batch).ints(), sums);
        assert_eq!(
            job.process(&[Input::int(100)]).ints(),
            vec![136],
            "the 37th number waited in its window"
        );
    }

    /// Counts records and flushes the count a second after the first of a
    /// run arrives (processing time), or when the watermark passes 500.
    #[derive(Default, Serialize, Deserialize)]
    struct Flush {
        count: u64,
        armed: bool,
    }

    impl Job for Flush {
        fn process(&mut self, _record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            self.count += 1;
            if !self.armed {
                self.armed = true;
                ctx.timer_at(now_millis() + 1_000);
                ctx.event_timer_at(500);
            }
            Ok(())
        }

        fn on_timer(&mut self, timer: Timer, ctx: &mut Context) {
            ctx.emit_text(&format!("{timer:?} {}", self.count));
            if let Timer::Processing(_) = timer {
                (self.count, self.armed) = (0, false);
            }
        }
    }

    #[test]
    fn a_processing_timer_fires_with_no_record_coming_and_survives_a_restore() {
        let mut job = Harness::<Flush>::new().unwrap();
        job.set_processing_time(10_000);
        assert!(job.process(&[Input::int(1), Input::int(2)]).emitted.is_empty());
        assert_eq!(job.wake_at(), Some(11_000), "the supervisor is told when to wake it");
        job.snapshot_and_restore().unwrap();
        assert!(job.advance_processing_time(10_999).emitted.is_empty());
        assert_eq!(job.advance_processing_time(11_000).texts(), vec!["Processing(11000) 2"]);
        assert_eq!(job.wake_at(), None, "a timer fires once");
    }

    #[test]
    fn an_event_timer_fires_when_the_watermark_reaches_it() {
        let mut job = Harness::<Flush>::new().unwrap();
        job.set_processing_time(0);
        job.set_watermark(Some(499));
        assert!(job.process(&[Input::int(1)]).emitted.is_empty());
        assert_eq!(job.advance_watermark(500).texts(), vec!["Event(500) 1"]);
        assert!(job.advance_watermark(600).emitted.is_empty());
    }

    /// Says what watermark it sees, per record and per advance.
    #[derive(Default, Serialize, Deserialize)]
    struct Watcher;

    impl Job for Watcher {
        fn process(&mut self, _record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            let seen = format!("record sees {:?}", ctx.watermark());
            ctx.emit_text(&seen);
            Ok(())
        }

        fn on_watermark(&mut self, watermark: i64, ctx: &mut Context) {
            ctx.emit_text(&format!("advanced to {watermark}"));
        }
    }

    #[test]
    fn a_restored_job_keeps_its_watermark() {
        let mut job = Harness::<Watcher>::new().unwrap();
        job.set_watermark(Some(1_000));
        assert_eq!(
            job.process(&[Input::int(1)]).texts(),
            vec!["record sees None", "advanced to 1000"]
        );
        job.snapshot_and_restore().unwrap();
        assert_eq!(
            job.process(&[Input::int(2)]).texts(),
            vec!["record sees Some(1000)"],
            "judged against the watermark it had, and not told of it again"
        );
    }

    /// Counts records per 1 s event-time window; a late one is returned with `?`.
    #[derive(Default, Serialize, Deserialize)]
    struct PerSecond {
        windows: crate::windows::EventTimeWindows<(), u64>,
    }

    impl Job for PerSecond {
        fn process(&mut self, record: Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
            let at = record.timestamp().ok_or("no event time")?;
            let second = crate::windows::Assigner::tumbling(core::time::Duration::from_secs(1));
            self.windows.add(second, 0, &(), at, |n| *n += 1)?;
            Ok(())
        }

        fn on_watermark(&mut self, watermark: i64, ctx: &mut Context) {
            for fired in self.windows.fire(watermark, 0) {
                ctx.emit_text(&format!("{} {}", fired.start, fired.value));
            }
        }
    }

    #[test]
    fn a_late_record_goes_to_the_side_output_not_the_errors() {
        let mut job = Harness::<PerSecond>::new().unwrap();
        job.set_watermark(Some(1_000));
        assert_eq!(job.process(&[Input::int(1).at(500)]).texts(), vec!["0 1"]);
        let out = job.process(&[Input::int(2).at(1_500), Input::int(3).at(900), Input::int(4)]);
        assert_eq!(out.late.len(), 1, "{out:?}");
        assert_eq!(out.late[0].0, 1);
        assert!(out.late[0].1.contains("window starting at 0 ms"), "{:?}", out.late);
        assert_eq!(out.rejected, vec![(2, "no event time".to_string())]);
    }

    #[test]
    fn the_host_calls_work_in_a_native_test() {
        log(Level::Info, "from a native test");
        assert!(now_millis() > 1_700_000_000_000);
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
