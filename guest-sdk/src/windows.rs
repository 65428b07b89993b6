//! Windows that group a stream's events before they are aggregated. Both keep
//! only a running aggregate, never the events themselves, so a window's state
//! (and so a snapshot) stays the size of one aggregate.

use serde::{Deserialize, Serialize};

/// Groups every `size` consecutive events (Flink's `countWindowAll(size)`).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountWindow<A> {
    count: u64,
    acc: A,
}

impl<A: Default> CountWindow<A> {
    /// Folds one event into the open window with `fold`. When this event is
    /// the window's `size`-th, closes the window and returns its aggregate.
    pub fn add(&mut self, size: u64, fold: impl FnOnce(&mut A)) -> Option<A> {
        fold(&mut self.acc);
        self.count += 1;
        if self.count >= size.max(1) {
            self.count = 0;
            Some(core::mem::take(&mut self.acc))
        } else {
            None
        }
    }

    /// Events in the open window so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether the open window has no events yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Groups events by fixed, non-overlapping time intervals of `size_ms`
/// (Flink's tumbling windows), keyed on the timestamp the caller gives. It
/// keeps one window open: an event past it closes it, and an event before
/// it is late (its window has closed already) and is handed back, never
/// folded into a window that was emitted.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct TumblingWindow<A> {
    start: Option<u64>,
    acc: A,
}

/// An event whose window had already closed when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late {
    /// The start of the window it belonged to.
    pub window_start: u64,
}

impl<A: Default> TumblingWindow<A> {
    /// Folds an event at `timestamp_ms` into its window. When the event falls
    /// past the open window, closes it first and returns `Ok(Some((window
    /// start, aggregate)))`; an event before the open window is `Err(Late)`
    /// and changes nothing.
    pub fn add(
        &mut self,
        size_ms: u64,
        timestamp_ms: u64,
        fold: impl FnOnce(&mut A),
    ) -> Result<Option<(u64, A)>, Late> {
        let size = size_ms.max(1);
        let start = timestamp_ms - timestamp_ms % size;
        let closed = match self.start {
            Some(open) if start < open => return Err(Late { window_start: start }),
            Some(open) if open != start => Some((open, core::mem::take(&mut self.acc))),
            _ => None,
        };
        self.start = Some(start);
        fold(&mut self.acc);
        Ok(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_closes_every_size_events() {
        let mut w = CountWindow::<i64>::default();
        let sums: Vec<i64> = (0..300).filter_map(|n| w.add(100, |acc| *acc += n)).collect();
        assert_eq!(sums, vec![4950, 14950, 24950]);
        assert!(w.is_empty());
    }

    #[test]
    fn tumbling_window_closes_when_time_passes_its_end() {
        let mut w = TumblingWindow::<u64>::default();
        assert_eq!(w.add(1000, 10, |a| *a += 1), Ok(None));
        assert_eq!(w.add(1000, 999, |a| *a += 1), Ok(None));
        assert_eq!(w.add(1000, 1000, |a| *a += 1), Ok(Some((0, 2))));
        assert_eq!(w.add(1000, 3500, |a| *a += 1), Ok(Some((1000, 1))));
    }

    #[test]
    fn tumbling_window_closes_each_window_once_when_events_come_out_of_order() {
        let mut w = TumblingWindow::<u64>::default();
        let mut closed = Vec::new();
        let mut late = Vec::new();
        for t in [100, 1100, 900, 1200, 2100] {
            match w.add(1000, t, |a| *a += 1) {
                Ok(Some(window)) => closed.push(window),
                Ok(None) => {}
                Err(l) => late.push((t, l.window_start)),
            }
        }
        assert_eq!(closed, vec![(0, 1), (1000, 2)], "each window closed once");
        assert_eq!(late, vec![(900, 0)], "900 came after its window closed");
    }
}
