//! The watermark a job's batches carry: bounded out-of-orderness over the
//! event times its source gave (Flink's `forBoundedOutOfOrderness`). It
//! never goes back, and the newest event time it rests on is part of every
//! checkpoint, so a restored job's watermark resumes where it was.

use crate::spec::WatermarkSpec;
use crate::wit::Batch;

/// Where a job's watermark is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    max_delay_ms: i64,
    newest: Option<i64>,
}

impl Watermark {
    /// A watermark per `spec`, resuming from the newest event time a
    /// checkpoint recorded.
    pub fn new(spec: WatermarkSpec, newest: Option<i64>) -> Watermark {
        Watermark {
            max_delay_ms: i64::try_from(spec.max_delay.as_millis()).unwrap_or(i64::MAX),
            newest,
        }
    }

    /// Takes in a batch's event times.
    pub fn observe(&mut self, batch: &Batch) {
        let Batch::Records(records) = batch else { return };
        let newest = records.timestamps.iter().copied().filter(|t| *t != i64::MIN).max();
        self.newest = self.newest.max(newest);
    }

    /// The event time up to which the input is complete: no record at or
    /// before it is expected any more (one that comes is late).
    pub fn current(&self) -> Option<i64> {
        self.newest
            .map(|t| t.saturating_sub(self.max_delay_ms).saturating_sub(1))
    }

    /// The newest event time seen, for the checkpoint.
    pub fn newest(&self) -> Option<i64> {
        self.newest
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wit::Records;

    fn stamped(timestamps: &[i64]) -> Batch {
        Batch::Records(Records {
            ends: vec![0; timestamps.len() * 2],
            keyed: vec![0; timestamps.len()],
            timestamps: timestamps.to_vec(),
            ..Records::default()
        })
    }

    #[test]
    fn the_watermark_trails_the_newest_time_and_never_goes_back() {
        let spec = WatermarkSpec {
            max_delay: Duration::from_millis(100),
        };
        let mut w = Watermark::new(spec, None);
        assert_eq!(w.current(), None, "no event time yet, no watermark");
        w.observe(&stamped(&[1_000, 1_500, 1_200]));
        assert_eq!(w.current(), Some(1_399));
        w.observe(&stamped(&[900, i64::MIN]));
        assert_eq!(w.current(), Some(1_399), "an older record does not move it back");
        w.observe(&Batch::Ints(vec![1, 2]));
        assert_eq!(w.current(), Some(1_399));
        let resumed = Watermark::new(spec, w.newest());
        assert_eq!(resumed.current(), Some(1_399), "a restore resumes it");
    }
}
