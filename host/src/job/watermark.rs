//! The watermark a job's batches carry: bounded out-of-orderness over the
//! event times its source gave (Flink's `forBoundedOutOfOrderness`), per
//! source partition, the slowest partition holding it back unless it has
//! been idle longer than `idle` (Flink's `withIdleness`). It never goes
//! back, and where it stands is part of every checkpoint, so a restored
//! job's watermark resumes where it was.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::checkpoint::EventTimes;
use crate::spec::WatermarkSpec;
use crate::wit::Batch;

/// Where a job's watermark is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    max_delay_ms: i64,
    idle: Option<Duration>,
    /// Per partition (0 for a source without): the newest event time
    /// (none yet for one that has brought no record), and when it last
    /// brought a record (or was first known).
    partitions: BTreeMap<u32, (Option<i64>, Instant)>,
    /// The watermark given out last: it never goes back.
    current: Option<i64>,
}

impl Watermark {
    /// A watermark per `spec`, resuming from what a checkpoint recorded.
    /// Restored partitions count as active from now.
    pub fn new(spec: WatermarkSpec, restored: EventTimes, now: Instant) -> Watermark {
        Watermark {
            max_delay_ms: i64::try_from(spec.max_delay.as_millis()).unwrap_or(i64::MAX),
            idle: spec.idle,
            partitions: restored.newest.into_iter().map(|(p, t)| (p, (Some(t), now))).collect(),
            current: restored.watermark,
        }
    }

    /// Takes in a batch's event times, read at `now`.
    pub fn observe(&mut self, batch: &Batch, now: Instant) {
        let Batch::Records(records) = batch else { return };
        let partitions = records.partitions.iter().copied().chain(std::iter::repeat(0));
        for (t, partition) in records.timestamps.iter().copied().zip(partitions) {
            if t == i64::MIN {
                continue;
            }
            let entry = self.partitions.entry(partition).or_insert((Some(t), now));
            *entry = (entry.0.max(Some(t)), now);
        }
    }

    /// Learns the source's partitions: one that has brought no record yet
    /// holds the watermark back until it brings one or goes idle, as an
    /// empty split does in Flink.
    pub fn expect(&mut self, partitions: impl Iterator<Item = u32>, now: Instant) {
        for p in partitions {
            self.partitions.entry(p).or_insert((None, now));
        }
    }

    /// The event time up to which the input is complete at `now`: no record
    /// at or before it is expected any more (one that comes is late). The
    /// minimum over the partitions that are not idle; while one that is not
    /// has brought nothing yet, it stays where it was. Once every partition
    /// is idle the stream has gone quiet, and the minimum is over those that
    /// brought records: a source that read all there was fires what it read,
    /// even when the partition that held it back went idle only as late as
    /// the others.
    pub fn current(&mut self, now: Instant) -> Option<i64> {
        let active = |seen: &Instant| self.idle.is_none_or(|idle| now.duration_since(*seen) < idle);
        let mut active_times = self
            .partitions
            .values()
            .filter(|(_, seen)| active(seen))
            .map(|(newest, _)| *newest)
            .peekable();
        // None sorts first: an active partition with no record yet wins the minimum.
        let slowest = if active_times.peek().is_some() {
            active_times.min().flatten()
        } else {
            self.partitions.values().filter_map(|(newest, _)| *newest).min()
        };
        if let Some(slowest) = slowest {
            let watermark = slowest.saturating_sub(self.max_delay_ms).saturating_sub(1);
            self.current = self.current.max(Some(watermark));
        }
        self.current
    }

    /// The input has ended: nothing more will come, at any time.
    pub fn end(&mut self) {
        self.current = Some(i64::MAX);
    }

    /// What the checkpoint records.
    pub fn event_times(&self) -> EventTimes {
        EventTimes {
            newest: self
                .partitions
                .iter()
                .filter_map(|(p, (t, _))| Some((*p, (*t)?)))
                .collect(),
            watermark: self.current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::Records;

    fn stamped(timestamps: &[i64], partitions: &[u32]) -> Batch {
        Batch::Records(Records {
            ends: vec![0; timestamps.len() * 2],
            keyed: vec![0; timestamps.len()],
            timestamps: timestamps.to_vec(),
            partitions: partitions.to_vec(),
            ..Records::default()
        })
    }

    fn spec(idle: Option<u64>) -> WatermarkSpec {
        WatermarkSpec {
            max_delay: Duration::from_millis(100),
            idle: idle.map(Duration::from_secs),
        }
    }

    #[test]
    fn the_watermark_trails_the_newest_time_and_never_goes_back() {
        let now = Instant::now();
        let mut w = Watermark::new(spec(None), EventTimes::default(), now);
        assert_eq!(w.current(now), None, "no event time yet, no watermark");
        w.observe(&stamped(&[1_000, 1_500, 1_200], &[]), now);
        assert_eq!(w.current(now), Some(1_399));
        w.observe(&stamped(&[900, i64::MIN], &[]), now);
        assert_eq!(w.current(now), Some(1_399), "an older record does not move it back");
        w.observe(&Batch::Ints(vec![1, 2]), now);
        assert_eq!(w.current(now), Some(1_399));
        let mut resumed = Watermark::new(spec(None), w.event_times(), now);
        assert_eq!(resumed.current(now), Some(1_399), "a restore resumes it");
        w.end();
        w.observe(&stamped(&[2_000], &[]), now);
        assert_eq!(w.current(now), Some(i64::MAX), "an ended input has passed all time");
        let mut resumed = Watermark::new(spec(None), w.event_times(), now);
        assert_eq!(resumed.current(now), Some(i64::MAX));
    }

    #[test]
    fn the_slowest_partition_holds_it_back_until_it_is_idle() {
        let start = Instant::now();
        let mut w = Watermark::new(spec(Some(30)), EventTimes::default(), start);
        w.observe(&stamped(&[5_000, 1_000, 6_000], &[0, 1, 0]), start);
        assert_eq!(w.current(start), Some(899), "partition 1 is behind");
        let later = start + Duration::from_secs(31);
        w.observe(&stamped(&[7_000], &[0]), later);
        assert_eq!(
            w.current(later),
            Some(6_899),
            "partition 1 went idle: it no longer counts"
        );
        w.observe(&stamped(&[2_000], &[1]), later);
        assert_eq!(
            w.current(later),
            Some(6_899),
            "back from idle behind the watermark, it does not move it back"
        );
        let quiet = later + Duration::from_secs(60);
        assert_eq!(
            w.current(quiet),
            Some(6_899),
            "every partition idle: the slowest that brought records is behind it, it stays"
        );

        let mut waiting = Watermark::new(spec(Some(30)), EventTimes::default(), start);
        waiting.expect([0, 1].into_iter(), start);
        waiting.observe(&stamped(&[5_000], &[0]), start);
        assert_eq!(waiting.current(start), None, "partition 1 has brought nothing yet");
        waiting.observe(&stamped(&[5_000], &[0]), later);
        assert_eq!(waiting.current(later), Some(4_899), "until it is idle");

        let mut drained = Watermark::new(spec(Some(30)), EventTimes::default(), start);
        drained.expect([0, 1, 2].into_iter(), start);
        drained.observe(&stamped(&[5_000, 4_000], &[0, 1]), start);
        assert_eq!(drained.current(start), None, "partition 2 has brought nothing yet");
        assert_eq!(
            drained.current(later),
            Some(3_899),
            "all idle at once (a source that read everything): the slowest of those that brought records"
        );

        let mut strict = Watermark::new(spec(None), EventTimes::default(), start);
        strict.observe(&stamped(&[5_000, 1_000], &[0, 1]), start);
        assert_eq!(
            strict.current(start + Duration::from_secs(3600)),
            Some(899),
            "no idleness: it waits"
        );
        let restored = Watermark::new(spec(None), strict.event_times(), start).event_times();
        assert_eq!(restored.newest, BTreeMap::from([(0, 5_000), (1, 1_000)]));
        assert_eq!(restored.watermark, Some(899));
    }
}
