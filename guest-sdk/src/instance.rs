//! A job as a component holds it: the job's state and the SDK's beside it
//! (timers, the watermark it was given), once, or once per source
//! partition for a job with [`Job::PARTITIONED_STATE`]. The glue keeps one
//! of these per component and the testing harness one per test; both hand
//! it batches here.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::bindings::weir::job::types::{Batch, Output, Records, Rejection, Texts};
use crate::state;
use crate::timers::Timers;
use crate::{Context, Error, Job, Record};

/// One instance of the job and its pending timers.
pub(crate) struct Slot<J> {
    pub job: J,
    pub timers: Timers,
}

impl<J: Job> Slot<J> {
    fn fresh(config: &[(String, String)]) -> Result<Slot<J>, String> {
        let mut job = J::default();
        job.init(config)?;
        Ok(Slot {
            job,
            timers: Timers::default(),
        })
    }
}

/// The job's instances, by source partition: one, under partition 0, for a
/// job without [`Job::PARTITIONED_STATE`] (or a source without partitions).
pub(crate) struct Instance<J> {
    slots: BTreeMap<u32, Slot<J>>,
    /// The settings of the last `init`, for instances of partitions that
    /// appear later.
    config: Vec<(String, String)>,
    /// The newest watermark passed to the job.
    last_watermark: Option<i64>,
}

impl<J: Job> Default for Instance<J> {
    fn default() -> Self {
        Instance {
            slots: BTreeMap::new(),
            config: Vec::new(),
            last_watermark: None,
        }
    }
}

impl<J: Job> Instance<J> {
    /// Applies the settings to every instance (and to the one a job without
    /// partitioned state always has), as `init` runs before the first
    /// record and again after a restore.
    pub fn init(&mut self, config: &[(String, String)]) -> Result<(), String> {
        self.config = config.to_vec();
        if self.slots.is_empty() && !J::PARTITIONED_STATE {
            self.slots.insert(0, Slot::fresh(config)?);
            return Ok(());
        }
        if self.slots.is_empty() {
            // Checked now, so that bad settings fail the deploy, not a record.
            return Slot::<J>::fresh(config).map(drop);
        }
        self.slots.values_mut().try_for_each(|slot| slot.job.init(config))
    }

    /// Takes the state of `restored` (its instances, timers and
    /// watermark) and keeps these settings for partitions that come later.
    pub fn replace_state(&mut self, restored: Instance<J>) {
        let config = core::mem::take(&mut self.config);
        *self = Instance { config, ..restored };
    }

    /// The instance of `partition`, made and configured on first use.
    fn slot(&mut self, partition: u32) -> Result<&mut Slot<J>, String> {
        if !self.slots.contains_key(&partition) {
            let slot = Slot::fresh(&self.config)?;
            self.slots.insert(partition, slot);
        }
        Ok(self.slots.get_mut(&partition).expect("just made"))
    }

    /// When the host must wake the job: its earliest processing-time timer.
    pub fn wake_at(&self) -> Option<u64> {
        self.slots.values().filter_map(|s| s.timers.wake_at()).min()
    }

    /// The instances, by partition.
    pub fn slots(&self) -> &BTreeMap<u32, Slot<J>> {
        &self.slots
    }

    /// Runs one batch through the job, record by record, collecting what it
    /// emits and what it refuses; then, if the batch moved the watermark on,
    /// tells each instance, and fires the timers due. While it handles the
    /// batch's records the job sees the watermark before the batch (what is
    /// late is late by that).
    pub fn process_batch(&mut self, input: &Batch, watermark: Option<i64>) -> Output {
        let mut ctx = Context::new(self.last_watermark);
        let mut rejected = Vec::new();
        match input {
            Batch::Records(records) if J::PARTITIONED_STATE => {
                self.process_by_partition(records, &mut ctx, &mut rejected)
            }
            // No records (time passing): no partition's instance to make.
            _ if J::PARTITIONED_STATE && batch_len(input) == 0 => {}
            _ => match self.slot(0) {
                Ok(slot) => {
                    process_all(&mut slot.job, input, &mut ctx, &mut rejected);
                    slot.timers.take(&mut ctx);
                }
                Err(e) => {
                    for index in 0..batch_len(input) {
                        reject(&mut rejected, index, Error::new(e.clone()));
                    }
                }
            },
        }
        let advanced = watermark.filter(|w| self.last_watermark.is_none_or(|l| *w > l));
        if let Some(watermark) = advanced {
            self.last_watermark = Some(watermark);
            ctx.set_watermark(watermark);
        }
        let now = crate::now_millis();
        for slot in self.slots.values_mut() {
            if let Some(watermark) = advanced {
                slot.job.on_watermark(watermark, &mut ctx);
                slot.timers.take(&mut ctx);
            }
            // The timers due now; those they set fire on a later call.
            for timer in slot.timers.due(now, self.last_watermark) {
                slot.job.on_timer(timer, &mut ctx);
            }
            slot.timers.take(&mut ctx);
        }
        Output {
            wake_at: self.wake_at(),
            batch: ctx.finish(),
            rejected,
        }
    }

    /// Each run of records from one partition goes to that partition's
    /// instance, which keeps the timers it sets.
    fn process_by_partition(&mut self, records: &Records, ctx: &mut Context, rejected: &mut Vec<Rejection>) {
        let partition = |i: usize| records.partitions.get(i).copied().unwrap_or(0);
        let mut start = 0;
        while start < records.len() {
            let of = partition(start);
            let end = (start..records.len())
                .find(|&i| partition(i) != of)
                .unwrap_or(records.len());
            match self.slot(of) {
                Ok(slot) => {
                    for i in start..end {
                        if let Err(e) = slot.job.process(records.get(i), ctx) {
                            reject(rejected, i, e);
                        }
                    }
                    slot.timers.take(ctx);
                }
                Err(e) => {
                    let reason = format!("configuring the job for partition {of}: {e}");
                    (start..end).for_each(|i| reject(rejected, i, Error::new(reason.clone())));
                }
            }
            start = end;
        }
    }

    /// The snapshot: the one instance's state, or each partition's in the
    /// layout the supervisor regroups on a rescale.
    pub fn snapshot(&self) -> Vec<u8> {
        let encode = |slot: &Slot<J>| state::encode(&slot.job, &slot.timers, self.last_watermark);
        if !J::PARTITIONED_STATE {
            return match self.slots.get(&0) {
                Some(slot) => encode(slot),
                None => encode(&Slot {
                    job: J::default(),
                    timers: Timers::default(),
                }),
            };
        }
        state::encode_partitions(self.slots.iter().map(|(p, slot)| (*p, encode(slot))))
    }

    /// The instance a snapshot holds, not yet configured (`init` follows).
    pub fn restore(snapshot: &[u8]) -> Result<Instance<J>, String> {
        let mut restored = Instance::default();
        if !J::PARTITIONED_STATE {
            let (job, sdk) = state::decode::<J>(snapshot)?;
            restored.last_watermark = sdk.watermark;
            restored.slots.insert(
                0,
                Slot {
                    job,
                    timers: sdk.timers,
                },
            );
            return Ok(restored);
        }
        // Sections regrouped from several tasks may stand at different
        // watermarks: the lowest holds, since its records are not late yet.
        let mut watermarks = Vec::new();
        for (partition, section) in state::decode_partitions(snapshot)? {
            let (job, sdk) =
                state::decode::<J>(section).map_err(|e| format!("the state of partition {partition}: {e}"))?;
            watermarks.push(sdk.watermark);
            if restored
                .slots
                .insert(
                    partition,
                    Slot {
                        job,
                        timers: sdk.timers,
                    },
                )
                .is_some()
            {
                return Err(format!("cannot decode snapshot: it holds partition {partition} twice"));
            }
        }
        restored.last_watermark = watermarks.iter().copied().min().flatten();
        Ok(restored)
    }
}

fn process_all<J: Job>(job: &mut J, input: &Batch, ctx: &mut Context, rejected: &mut Vec<Rejection>) {
    match input {
        Batch::Ints(ints) => process_ints(job, ints, ctx, rejected),
        Batch::Texts(texts) => {
            for (i, text) in unpack(texts).enumerate() {
                if let Err(e) = job.process(Record::from_bytes(text), ctx) {
                    reject(rejected, i, e);
                }
            }
        }
        Batch::Records(records) => {
            for i in 0..records.len() {
                if let Err(e) = job.process(records.get(i), ctx) {
                    reject(rejected, i, e);
                }
            }
        }
    }
}

fn batch_len(input: &Batch) -> usize {
    match input {
        Batch::Ints(ints) => ints.len(),
        Batch::Texts(texts) => texts.ends.len(),
        Batch::Records(records) => records.len(),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::testing::{Harness, Input};
    use crate::Timer;

    /// Counts the records of each key, and says so when the watermark
    /// passes 1000 (an event timer each instance sets).
    #[derive(Default, Serialize, Deserialize)]
    struct PerKey {
        counts: BTreeMap<String, u64>,
    }

    impl Job for PerKey {
        const PARTITIONED_STATE: bool = true;

        fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            let key = record.key_text()?.ok_or("no key")?.to_string();
            let count = self.counts.entry(key.clone()).or_default();
            *count += 1;
            ctx.emit_text(&format!("{key} {count}"));
            ctx.event_timer_at(1_000);
            Ok(())
        }

        fn on_timer(&mut self, _: Timer, ctx: &mut Context) {
            ctx.emit_text(&format!("{} keys", self.counts.len()));
        }
    }

    /// The same state, one instance per task.
    #[derive(Default, Serialize, Deserialize)]
    struct PerTask {
        counts: BTreeMap<String, u64>,
    }

    impl Job for PerTask {
        fn process(&mut self, _: Record<'_>, _: &mut Context) -> Result<(), Error> {
            Ok(())
        }
    }

    fn keyed(key: &str, partition: u32) -> Input {
        Input::int(0).key(key.as_bytes()).from_partition(partition, 0)
    }

    #[test]
    fn each_partition_keeps_its_own_state_and_timers_through_a_restore() {
        let mut job = Harness::<PerKey>::new().unwrap();
        let out = job.process(&[keyed("a", 0), keyed("b", 1), keyed("a", 0), keyed("c", 1)]);
        assert_eq!(out.texts(), vec!["a 1", "b 1", "a 2", "c 1"]);
        assert_eq!(job.partition(0).unwrap().counts.len(), 1);
        assert_eq!(job.partition(1).unwrap().counts.len(), 2);
        job.snapshot_and_restore().unwrap();
        assert_eq!(job.process(&[keyed("b", 1)]).texts(), vec!["b 2"]);
        // Each instance fires its own timer, in partition order.
        assert_eq!(job.advance_watermark(1_000).texts(), vec!["1 keys", "2 keys"]);
    }

    #[test]
    fn partitions_of_two_tasks_regroup_into_one_with_the_lower_watermark() {
        let mut tasks = [Harness::<PerKey>::new().unwrap(), Harness::<PerKey>::new().unwrap()];
        tasks[0].process(&[keyed("a", 0), keyed("x", 2)]);
        tasks[0].set_watermark(Some(500));
        tasks[0].process(&[]);
        tasks[1].set_watermark(Some(700));
        tasks[1].process(&[keyed("b", 1), keyed("b", 1)]);
        // What the supervisor does on a rescale to one task: every section.
        let snapshots: Vec<Vec<u8>> = tasks.iter().map(|t| t.instance.snapshot()).collect();
        let mut sections: Vec<(u32, Vec<u8>)> = snapshots
            .iter()
            .flat_map(|s| state::decode_partitions(s).unwrap())
            .map(|(p, s)| (p, s.to_vec()))
            .collect();
        sections.sort_by_key(|(p, _)| *p);
        // Time passing with no records makes no instance.
        let mut idle = Harness::<PerKey>::new().unwrap();
        idle.advance_watermark(5);
        assert!(idle.partition(0).is_none());
        let merged = Instance::<PerKey>::restore(&state::encode_partitions(sections.clone().into_iter())).unwrap();
        assert_eq!(merged.last_watermark, Some(500));
        assert_eq!(merged.slots.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(merged.slots[&1].job.counts["b"], 2);

        sections.push(sections[0].clone());
        let twice = Instance::<PerKey>::restore(&state::encode_partitions(sections.into_iter()));
        assert!(twice.map(drop).unwrap_err().contains("partition 0 twice"));
    }

    #[test]
    fn state_kept_per_task_and_per_partition_do_not_mix() {
        let mut per_key = Harness::<PerKey>::new().unwrap();
        per_key.process(&[keyed("a", 0)]);
        let err = per_key.upgrade::<PerTask>(&[]).map(drop).unwrap_err();
        assert!(err.contains("set PARTITIONED_STATE = true"), "{err}");
        let per_task = Harness::<PerTask>::new().unwrap();
        let err = per_task.upgrade::<PerKey>(&[]).map(drop).unwrap_err();
        assert!(err.contains("kept per task"), "{err}");
    }

    #[test]
    fn a_damaged_partitioned_snapshot_is_an_error_not_a_panic() {
        let mut job = Harness::<PerKey>::new().unwrap();
        job.process(&[keyed("a", 0), keyed("b", 3)]);
        let snapshot = job.instance.snapshot();
        for end in 0..snapshot.len() {
            assert!(Instance::<PerKey>::restore(&snapshot[..end]).is_err(), "cut at {end}");
        }
    }
}
