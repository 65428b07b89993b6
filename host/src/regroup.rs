//! Regrouping a savepoint's tasks over another number of tasks, for
//! `weir rescale`. Task `i` of `N` owns the source partitions `p` with
//! `p % N == i` (see [`Share`]), so a task of the new count takes, from
//! each old task that held some of its partitions, their offsets, their
//! event times and their state. The state can follow its partitions only
//! when the job keeps it per partition (the SDK's `PARTITIONED_STATE`):
//! then its snapshot is a container of one section per partition, whose
//! framing (and nothing inside a section) is read here.
//!
//! Each old task's sink is carried on by one new task: its own if the new
//! count still has it, else task `j % N`, which publishes the old task's
//! last staged output (idempotent by position) before it starts, so that
//! the output of a task that is gone is neither lost nor written twice.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::checkpoint::{Checkpoint, CheckpointMeta, CheckpointRef, EventTimes, SinkPositions, StagedOutput};
use crate::spec::Share;
use crate::storage::sha256_hex;

/// The start of a snapshot kept per source partition, as the SDK writes it.
const PARTITIONS_MAGIC: &[u8; 8] = b"\0weir-p1";

/// Whether a snapshot is kept per source partition, so it can be regrouped.
pub fn is_partitioned(snapshot: &[u8]) -> bool {
    snapshot.starts_with(PARTITIONS_MAGIC)
}

/// Where a task of a regrouped job starts.
#[derive(Debug, Clone)]
pub struct TaskStart {
    /// Its state, source position and event times. Its sink positions and
    /// staged output are those of the old task with its number, if there
    /// was one (`carries_sink`); else its sink starts where it stands.
    pub checkpoint: Checkpoint,
    /// Whether the old job had a task with this number, whose sink this one carries on.
    pub carries_sink: bool,
    /// Old tasks the new count has no room for, whose sinks this task
    /// brings up to date before it starts.
    pub orphans: Vec<Orphan>,
}

impl TaskStart {
    /// A task that restores its own checkpoint, nothing regrouped.
    pub fn whole(checkpoint: Checkpoint) -> TaskStart {
        TaskStart {
            checkpoint,
            carries_sink: true,
            orphans: Vec::new(),
        }
    }
}

/// An old task with no place in the new count, and what its sinks still need.
#[derive(Debug, Clone)]
pub struct Orphan {
    /// Its number in the old job.
    pub task: u32,
    /// Where its last checkpoint's output goes in its sinks.
    pub positions: SinkPositions,
    /// That output.
    pub output: StagedOutput,
}

/// The old tasks (of `old_tasks`) that task `share` takes partitions or a
/// sink from: those congruent to it modulo the two counts' greatest common
/// divisor, the only ones whose partitions can be its own.
pub fn sources(old_tasks: u32, share: Share) -> Vec<u32> {
    let step = gcd(old_tasks, share.of).max(1);
    (0..old_tasks).filter(|j| j % step == share.index % step).collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Task `share`'s start, from the checkpoints of the old tasks
/// [`sources`] names, each with its old number.
pub fn regroup(share: Share, old: Vec<(u32, Checkpoint)>) -> Result<TaskStart, String> {
    let mut sections = BTreeMap::new();
    let mut source_partitions = BTreeMap::new();
    let mut newest = BTreeMap::new();
    let mut watermark = Some(i64::MAX);
    let mut own = None;
    let mut orphans = Vec::new();
    let mut latest = None;
    for (task, checkpoint) in old {
        for (partition, section) in split(&checkpoint.snapshot).map_err(|e| format!("task {task}'s state: {e}"))? {
            if share.owns(partition) && sections.insert(partition, section).is_some() {
                return Err(format!("two old tasks hold the state of partition {partition}"));
            }
        }
        let meta = &checkpoint.meta;
        source_partitions.extend(meta.source_partitions.iter().filter(|(p, _)| share.owns(**p)));
        newest.extend(meta.event_times.newest.iter().filter(|(p, _)| share.owns(**p)));
        watermark = watermark.zip(meta.event_times.watermark).map(|(a, b)| a.min(b));
        if latest.is_none_or(|l: CheckpointRef| l.id < meta.checkpoint.id) {
            latest = Some(meta.checkpoint);
        }
        if task == share.index {
            own = Some(checkpoint);
        } else if task >= share.of && share.owns(task) {
            orphans.push(Orphan {
                task,
                positions: meta.sink_positions(),
                output: checkpoint.output,
            });
        }
    }
    let Some(checkpoint) = latest else {
        return Err("no old task holds any of its partitions".into());
    };
    let snapshot = join(&sections);
    let carries_sink = own.is_some();
    let (positions, output, dead_letters_sha256) = match own {
        Some(c) => (c.meta.sink_positions(), c.output, c.meta.dead_letters_sha256),
        None => (SinkPositions::default(), StagedOutput::default(), None),
    };
    let meta = CheckpointMeta {
        image: None,
        checkpoint,
        source_offset: 0,
        source_partitions,
        event_times: EventTimes { newest, watermark },
        sink_offset: positions.main,
        dead_letter_offset: positions.dead_letters,
        snapshot_sha256: sha256_hex(&snapshot),
        output_sha256: sha256_hex(&output.main),
        dead_letters_sha256,
    };
    Ok(TaskStart {
        checkpoint: Checkpoint {
            meta,
            snapshot,
            memory: None,
            output,
        },
        carries_sink,
        orphans,
    })
}

/// The sections of a snapshot kept per partition, each sharing its bytes.
fn split(snapshot: &Bytes) -> Result<Vec<(u32, Bytes)>, String> {
    if !is_partitioned(snapshot) {
        return Err(
            "it is kept per task, not per source partition, so it cannot be regrouped \
                    (set PARTITIONED_STATE = true in the job's Job impl, deploy it, then rescale)"
                .into(),
        );
    }
    let mut at = PARTITIONS_MAGIC.len();
    let word = |at: usize| -> Result<u32, String> {
        snapshot
            .get(at..at + 4)
            .map(|w| u32::from_le_bytes(w.try_into().expect("four bytes")))
            .ok_or_else(|| "it ends inside a header".to_string())
    };
    let count = word(at)?;
    at += 4;
    let mut sections = Vec::new();
    for _ in 0..count {
        let (partition, len) = (word(at)?, word(at + 4)? as usize);
        at += 8;
        if snapshot.len() - at < len {
            return Err(format!("partition {partition}'s state ({len} bytes) runs past its end"));
        }
        sections.push((partition, snapshot.slice(at..at + len)));
        at += len;
    }
    if at != snapshot.len() {
        return Err(format!("{} bytes after its last partition", snapshot.len() - at));
    }
    Ok(sections)
}

/// A snapshot kept per partition, from its sections.
fn join(sections: &BTreeMap<u32, Bytes>) -> Bytes {
    let len = PARTITIONS_MAGIC.len() + 4 + sections.values().map(|s| 8 + s.len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(len);
    out.put_slice(PARTITIONS_MAGIC);
    out.put_u32_le(sections.len() as u32);
    for (partition, section) in sections {
        out.put_u32_le(*partition);
        out.put_u32_le(section.len() as u32);
        out.put_slice(section);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(index: u32, of: u32) -> Share {
        Share { index, of }
    }

    /// An old task's checkpoint `id`, holding `partitions` (each with its
    /// state, offset and newest event time), a watermark, and `output`
    /// staged at sink position `at`.
    fn old(id: u64, partitions: &[u32], watermark: Option<i64>, at: u64, output: &str) -> Checkpoint {
        let sections = partitions
            .iter()
            .map(|p| (*p, Bytes::from(format!("state of {p}"))))
            .collect();
        let snapshot = join(&sections);
        let output = StagedOutput {
            main: Bytes::from(output.to_string()),
            dead_letters: Bytes::from("late\n"),
        };
        Checkpoint {
            meta: CheckpointMeta {
                checkpoint: CheckpointRef {
                    id,
                    epoch: 2,
                    created_ms: id * 10,
                    image_base: None,
                },
                source_offset: 0,
                source_partitions: partitions.iter().map(|p| (*p, 100 + *p as i64)).collect(),
                event_times: EventTimes {
                    newest: partitions.iter().map(|p| (*p, 1000 * *p as i64)).collect(),
                    watermark,
                },
                sink_offset: at,
                dead_letter_offset: at / 2,
                snapshot_sha256: sha256_hex(&snapshot),
                output_sha256: sha256_hex(&output.main),
                dead_letters_sha256: Some(sha256_hex(&output.dead_letters)),
                image: None,
            },
            snapshot,
            memory: None,
            output,
        }
    }

    fn partitions_of(start: &TaskStart) -> Vec<(u32, Bytes)> {
        split(&start.checkpoint.snapshot).unwrap()
    }

    #[test]
    fn a_task_reads_only_the_old_tasks_that_can_hold_its_partitions() {
        assert_eq!(sources(2, share(0, 3)), vec![0, 1]);
        assert_eq!(sources(4, share(0, 2)), vec![0, 2]);
        assert_eq!(sources(4, share(1, 2)), vec![1, 3]);
        assert_eq!(sources(2, share(3, 4)), vec![1]);
        assert_eq!(sources(1, share(2, 3)), vec![0]);
    }

    #[test]
    fn scaling_up_splits_partitions_and_only_the_old_numbers_carry_their_sinks() {
        let whole = old(7, &[0, 1, 2, 3], Some(500), 40, "staged\n");
        let first = regroup(share(0, 3), vec![(0, whole.clone())]).unwrap();
        assert_eq!(
            partitions_of(&first),
            vec![(0, Bytes::from("state of 0")), (3, Bytes::from("state of 3"))]
        );
        let meta = &first.checkpoint.meta;
        assert_eq!(meta.source_partitions, BTreeMap::from([(0, 100), (3, 103)]));
        assert_eq!(meta.event_times.newest, BTreeMap::from([(0, 0), (3, 3000)]));
        assert_eq!(meta.event_times.watermark, Some(500));
        assert_eq!(meta.checkpoint, whole.meta.checkpoint);
        assert!(first.carries_sink && first.orphans.is_empty());
        assert_eq!(
            (meta.sink_positions(), &first.checkpoint.output),
            (whole.meta.sink_positions(), &whole.output)
        );
        assert_eq!(meta.snapshot_sha256, sha256_hex(&first.checkpoint.snapshot));

        let third = regroup(share(2, 3), vec![(0, whole)]).unwrap();
        assert_eq!(partitions_of(&third), vec![(2, Bytes::from("state of 2"))]);
        assert!(!third.carries_sink, "old task 0's sink is new task 0's");
        assert_eq!(third.checkpoint.meta.sink_positions(), SinkPositions::default());
        assert_eq!(third.checkpoint.output, StagedOutput::default());
    }

    #[test]
    fn scaling_down_merges_partitions_and_publishes_the_removed_tasks_output() {
        let tasks = vec![
            (0, old(5, &[0, 3], Some(900), 10, "zero\n")),
            (1, old(6, &[1, 4], Some(300), 20, "one\n")),
            (2, old(4, &[2, 5], Some(700), 30, "two\n")),
        ];
        let first = regroup(share(0, 2), tasks.clone()).unwrap();
        let owned: Vec<u32> = partitions_of(&first).iter().map(|(p, _)| *p).collect();
        assert_eq!(owned, vec![0, 2, 4]);
        let meta = &first.checkpoint.meta;
        assert_eq!(meta.source_partitions.keys().copied().collect::<Vec<_>>(), owned);
        assert_eq!(meta.event_times.watermark, Some(300), "the lowest watermark wins");
        assert_eq!(meta.checkpoint.id, 6, "it names the newest old checkpoint it restores");
        assert_eq!(meta.sink_offset, 10);
        assert_eq!(first.orphans.len(), 1);
        let orphan = &first.orphans[0];
        assert_eq!(
            (orphan.task, orphan.positions.main, &orphan.output.main[..]),
            (2, 30, &b"two\n"[..])
        );

        let second = regroup(share(1, 2), tasks.clone()).unwrap();
        assert!(second.orphans.is_empty(), "old task 2 is new task 0's to publish");
        assert_eq!(second.checkpoint.meta.sink_offset, 20);

        let mut unwatermarked = tasks;
        unwatermarked[2].1.meta.event_times.watermark = None;
        let meta = regroup(share(0, 2), unwatermarked).unwrap().checkpoint.meta;
        assert_eq!(meta.event_times.watermark, None, "a task without one holds it back");
    }

    #[test]
    fn state_kept_per_task_or_damaged_is_refused() {
        let mut per_task = old(1, &[0], None, 0, "");
        per_task.snapshot = Bytes::from_static(b"\0weir-s1 rest");
        let err = regroup(share(0, 2), vec![(0, per_task)]).unwrap_err();
        assert!(err.contains("PARTITIONED_STATE"), "{err}");

        let twice = vec![(0, old(1, &[0, 2], None, 0, "")), (1, old(1, &[2], None, 0, ""))];
        let err = regroup(share(0, 2), twice).unwrap_err();
        assert!(err.contains("partition 2"), "{err}");

        let whole = old(1, &[0, 1], None, 0, "").snapshot;
        assert_eq!(join(&split(&whole).unwrap().into_iter().collect()), whole);
        for end in PARTITIONS_MAGIC.len()..whole.len() {
            assert!(split(&whole.slice(..end)).is_err(), "cut at {end}");
        }
        let mut longer = whole.to_vec();
        longer.push(0);
        assert!(split(&Bytes::from(longer)).is_err());
    }
}
