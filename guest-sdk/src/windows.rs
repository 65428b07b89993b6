//! Windows that group a stream's events before they are aggregated. Both keep
//! only a running aggregate, never the events themselves, so a window's state
//! (and so a snapshot) stays the size of one aggregate.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use core::borrow::Borrow;
use core::hash::{BuildHasherDefault, Hash};

use indexmap::IndexMap;
use rustc_hash::FxHasher;

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
    /// The start of the window it belonged to (ms; event times may be
    /// before the epoch).
    pub window_start: i64,
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
            Some(open) if start < open => {
                return Err(Late {
                    window_start: i64::try_from(start).unwrap_or(i64::MAX),
                })
            }
            Some(open) if open != start => Some((open, core::mem::take(&mut self.acc))),
            _ => None,
        };
        self.start = Some(start);
        fold(&mut self.acc);
        Ok(closed)
    }
}

/// How an event-time window is cut from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assigner {
    /// Fixed windows of `size_ms`, back to back: `[k*size, (k+1)*size)`.
    Tumbling {
        /// Window length.
        size_ms: i64,
    },
    /// Windows of `size_ms` starting every `slide_ms` (a record falls in
    /// `size / slide` of them).
    Sliding {
        /// Window length.
        size_ms: i64,
        /// Distance between window starts.
        slide_ms: i64,
    },
}

impl Assigner {
    /// Tumbling windows of `size` (at least 1 ms).
    pub fn tumbling(size: core::time::Duration) -> Assigner {
        Assigner::Tumbling { size_ms: ms(size) }
    }

    /// Sliding windows of `size`, one starting every `slide` (each at
    /// least 1 ms).
    pub fn sliding(size: core::time::Duration, slide: core::time::Duration) -> Assigner {
        Assigner::Sliding {
            size_ms: ms(size),
            slide_ms: ms(slide),
        }
    }

    /// The windows `[start, end)` a record at `t` falls in; none when they
    /// would reach past the range of event times (a bogus timestamp).
    fn starts(self, t: i64) -> impl Iterator<Item = (i64, i64)> {
        let (size, slide) = match self {
            Assigner::Tumbling { size_ms } => (size_ms, size_ms),
            Assigner::Sliding { size_ms, slide_ms } => (size_ms, slide_ms.min(size_ms)),
        };
        let last = t.checked_sub(t.rem_euclid(slide));
        let count = size / slide + i64::from(size % slide != 0);
        (0..count).filter_map(move |i| {
            let start = last?.checked_sub(i.checked_mul(slide)?)?;
            let end = start.checked_add(size)?;
            (end > t).then_some((start, end))
        })
    }
}

/// Whole milliseconds of `d`, at least 1.
fn ms(d: core::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// The last ms at which a window ending at `end` still takes records.
fn last_open(end: i64, lateness_ms: i64) -> i64 {
    end.saturating_sub(1).saturating_add(lateness_ms.max(0))
}

/// One window's result, as [`EventTimeWindows::fire`] hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired<K, A> {
    /// The window's key.
    pub key: K,
    /// Its start (inclusive), ms since the Unix epoch.
    pub start: i64,
    /// Its end (exclusive).
    pub end: i64,
    /// The aggregate of its records.
    pub value: A,
}

/// Keyed event-time windows (Flink's `keyBy(..).window(..)` with a
/// running aggregate): a record folds into its key's windows by its
/// timestamp; a window fires when the watermark passes its end, in order
/// of end time. With allowed lateness a fired window stays that much
/// longer: a late record within it updates the window, which fires again
/// with the new aggregate; a record later still is handed back as
/// [`Late`] (return it with `?`: it goes to the job's late side output). Only
/// aggregates are kept, one per open window and key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, A: Serialize",
    deserialize = "K: Eq + Hash + Deserialize<'de>, A: Deserialize<'de>"
))]
pub struct EventTimeWindows<K, A> {
    /// By window end, then key: the window's start, its aggregate, and
    /// whether it has fired since it last changed. Keyed by end first so
    /// that firing walks the front; by key inside, hashed (FxHash), so
    /// that a record finds its window by a borrowed key in one probe,
    /// allocating nothing, and in the order keys first came, which a
    /// replay repeats and a snapshot keeps: windows of one end fire in
    /// that order, with no sort.
    open: BTreeMap<i64, Keys<K, A>>,
    /// The newest watermark fired at.
    watermark: Option<i64>,
}

/// The windows of one end, by key, in the order the keys came.
type Keys<K, A> = IndexMap<K, Slot<A>, BuildHasherDefault<FxHasher>>;

/// The windows of `keys` (all ending at `end`) that have not fired since
/// they last changed, moved out.
fn unfired<K, A>(keys: Keys<K, A>, end: i64) -> impl Iterator<Item = Fired<K, A>> {
    keys.into_iter()
        .filter(|(_, slot)| !slot.fired)
        .map(move |(key, slot)| Fired {
            key,
            start: slot.start,
            end,
            value: slot.value,
        })
}

/// One window of one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Slot<A> {
    start: i64,
    value: A,
    fired: bool,
}

impl<K: Eq + Hash, A: PartialEq> PartialEq for EventTimeWindows<K, A> {
    fn eq(&self, other: &Self) -> bool {
        self.open == other.open && self.watermark == other.watermark
    }
}

impl<K, A> Default for EventTimeWindows<K, A> {
    fn default() -> Self {
        EventTimeWindows {
            open: BTreeMap::new(),
            watermark: None,
        }
    }
}

impl<K: Eq + Hash + Clone, A: Default + Clone> EventTimeWindows<K, A> {
    /// Folds a record of `key` at `timestamp` into each of its windows
    /// (`lateness_ms`: how long past its end a window still takes records).
    /// A record whose windows have all closed is `Err(Late)`, and so is one
    /// with a timestamp so far out that its window would end past the
    /// range of event times. `key` may be borrowed (`&str` for `String` keys): it is copied only
    /// when it opens a window.
    pub fn add<Q>(
        &mut self,
        assigner: Assigner,
        lateness_ms: i64,
        key: &Q,
        timestamp: i64,
        mut fold: impl FnMut(&mut A),
    ) -> Result<(), Late>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ToOwned<Owned = K> + ?Sized,
    {
        let (mut accepted, mut late) = (false, None);
        for (start, end) in assigner.starts(timestamp) {
            if self.watermark.is_some_and(|w| last_open(end, lateness_ms) <= w) {
                late.get_or_insert(Late { window_start: start });
                continue;
            }
            let keys = self.open.entry(end).or_default();
            let slot = match keys.get_mut(key) {
                Some(slot) => slot,
                None => keys.entry(key.to_owned()).or_insert(Slot {
                    start,
                    value: A::default(),
                    fired: false,
                }),
            };
            fold(&mut slot.value);
            slot.fired = false;
            accepted = true;
        }
        // A sliding record too late for its oldest windows still counts in
        // the younger ones; it is late only when no window took it.
        match (accepted, late) {
            (true, _) => Ok(()),
            (false, late) => Err(late.unwrap_or(Late {
                window_start: timestamp,
            })),
        }
    }

    /// The windows the watermark has passed and that have not fired since
    /// they last changed, in order of end, then of each key's first record
    /// in the window; those past their lateness too are dropped.
    pub fn fire(&mut self, watermark: i64, lateness_ms: i64) -> Vec<Fired<K, A>> {
        if self.watermark.is_some_and(|w| w >= watermark) {
            return Vec::new();
        }
        self.watermark = Some(watermark);
        let mut fired = Vec::new();
        let ends: Vec<i64> = self
            .open
            .range(..=watermark.saturating_add(1))
            .map(|(end, _)| *end)
            .collect();
        for end in ends {
            if last_open(end, lateness_ms) <= watermark {
                // Closed for good: its windows move out, nothing is copied.
                let keys = self.open.remove(&end).unwrap_or_default();
                fired.extend(unfired(keys, end));
            } else if let Some(keys) = self.open.get_mut(&end) {
                for (key, slot) in keys.iter_mut().filter(|(_, slot)| !slot.fired) {
                    slot.fired = true;
                    fired.push(Fired {
                        key: key.clone(),
                        start: slot.start,
                        end,
                        value: slot.value.clone(),
                    });
                }
            }
        }
        fired
    }

    /// Fires every open window that has not fired since it last changed,
    /// and drops them all, whatever the watermark: for a job that decides
    /// its input has ended (quiet for long enough, say). The windows count
    /// as closed from then on: a record that comes later for one of them
    /// (or for any window ending by then, lateness included) is late, so
    /// no window fires twice.
    pub fn flush(&mut self, lateness_ms: i64) -> Vec<Fired<K, A>> {
        if let Some(newest) = self.open.keys().next_back() {
            let closed = last_open(*newest, lateness_ms);
            self.watermark = Some(self.watermark.map_or(closed, |w| w.max(closed)));
        }
        core::mem::take(&mut self.open)
            .into_iter()
            .flat_map(|(end, keys)| unfired(keys, end))
            .collect()
    }

    /// How many windows are open (over all keys).
    pub fn len(&self) -> usize {
        self.open.values().map(IndexMap::len).sum()
    }

    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Keyed session windows (Flink's `EventTimeSessionWindows`): a key's
/// records closer than `gap_ms` to each other (in event time) make one
/// session `[first, last + gap)`; a record that bridges two sessions merges
/// them. A session fires once the watermark passes its end, and follows
/// the same lateness and flush rules as [`EventTimeWindows`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, A: Serialize",
    deserialize = "K: Ord + Deserialize<'de>, A: Deserialize<'de>"
))]
pub struct SessionWindows<K, A> {
    /// Each key's sessions, by start: its end, aggregate and fired flag.
    sessions: BTreeMap<K, BTreeMap<i64, (i64, Slot<A>)>>,
    /// The newest watermark fired at (or flushed to).
    watermark: Option<i64>,
}

impl<K, A> Default for SessionWindows<K, A> {
    fn default() -> Self {
        SessionWindows {
            sessions: BTreeMap::new(),
            watermark: None,
        }
    }
}

impl<K: Ord + Clone, A: Default + Clone> SessionWindows<K, A> {
    /// Folds a record of `key` at `timestamp` into its session, opening
    /// one or merging the sessions it bridges (`merge` folds one
    /// aggregate into another).
    pub fn add<Q>(
        &mut self,
        gap_ms: i64,
        lateness_ms: i64,
        key: &Q,
        timestamp: i64,
        fold: impl FnOnce(&mut A),
        merge: impl Fn(&mut A, A),
    ) -> Result<(), Late>
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        let gap = gap_ms.max(1);
        let Some(end) = timestamp.checked_add(gap) else {
            return Err(Late {
                window_start: timestamp,
            });
        };
        if self.watermark.is_some_and(|w| last_open(end, lateness_ms) <= w) {
            return Err(Late {
                window_start: timestamp,
            });
        }
        let sessions = match self.sessions.get_mut(key) {
            Some(sessions) => sessions,
            None => self.sessions.entry(key.to_owned()).or_default(),
        };
        // The sessions this record's own `[t, t + gap)` meets (touching
        // ends count, as in Flink).
        let touching: Vec<i64> = sessions
            .range(..=end)
            .filter(|(_, (session_end, _))| *session_end >= timestamp)
            .map(|(start, _)| *start)
            .collect();
        let mut merged = Slot {
            start: timestamp,
            value: A::default(),
            fired: false,
        };
        let mut merged_end = end;
        for start in touching {
            let (session_end, slot) = sessions.remove(&start).expect("just listed");
            merged.start = merged.start.min(start);
            merged_end = merged_end.max(session_end);
            merge(&mut merged.value, slot.value);
        }
        fold(&mut merged.value);
        sessions.insert(merged.start, (merged_end, merged));
        Ok(())
    }

    /// The sessions the watermark has passed that have not fired since
    /// they last changed, in order of key, then start; those past their
    /// lateness too are dropped.
    pub fn fire(&mut self, watermark: i64, lateness_ms: i64) -> Vec<Fired<K, A>> {
        if self.watermark.is_some_and(|w| w >= watermark) {
            return Vec::new();
        }
        self.watermark = Some(watermark);
        let mut fired = Vec::new();
        for (key, sessions) in self.sessions.iter_mut() {
            for (start, (end, slot)) in sessions.iter_mut() {
                if end.saturating_sub(1) <= watermark && !slot.fired {
                    slot.fired = true;
                    fired.push(Fired {
                        key: key.clone(),
                        start: *start,
                        end: *end,
                        value: slot.value.clone(),
                    });
                }
            }
            sessions.retain(|_, (end, _)| last_open(*end, lateness_ms) > watermark);
        }
        self.sessions.retain(|_, sessions| !sessions.is_empty());
        fired
    }

    /// Fires every open session not fired since it last changed and drops
    /// them all; from then on a record whose session would end by the
    /// newest end flushed is late (see [`EventTimeWindows::flush`]).
    pub fn flush(&mut self, lateness_ms: i64) -> Vec<Fired<K, A>> {
        let newest = self
            .sessions
            .values()
            .flat_map(|s| s.values().map(|(end, _)| *end))
            .max();
        if let Some(newest) = newest {
            let closed = last_open(newest, lateness_ms);
            self.watermark = Some(self.watermark.map_or(closed, |w| w.max(closed)));
        }
        core::mem::take(&mut self.sessions)
            .into_iter()
            .flat_map(|(key, sessions)| {
                sessions
                    .into_iter()
                    .filter(|(_, (_, slot))| !slot.fired)
                    .map(move |(start, (end, slot))| Fired {
                        key: key.clone(),
                        start,
                        end,
                        value: slot.value,
                    })
            })
            .collect()
    }

    /// How many sessions are open (over all keys).
    pub fn len(&self) -> usize {
        self.sessions.values().map(BTreeMap::len).sum()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
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

    fn count(
        windows: &mut EventTimeWindows<&'static str, u64>,
        assigner: Assigner,
        key: &'static str,
        t: i64,
    ) -> Result<(), Late> {
        windows.add(assigner, 0, &key, t, |n| *n += 1)
    }

    #[test]
    fn keyed_tumbling_windows_fire_once_when_the_watermark_passes_their_end() {
        let tumbling = Assigner::tumbling(core::time::Duration::from_secs(1));
        let mut w = EventTimeWindows::default();
        for (key, t) in [("a", 100), ("b", 1_100), ("a", 900), ("a", 1_200), ("b", 2_100)] {
            count(&mut w, tumbling, key, t).unwrap();
        }
        assert!(w.fire(998, 0).is_empty(), "window 0 ends at 1000: 999 is its last ms");
        let fired = w.fire(999, 0);
        assert_eq!(
            fired,
            vec![Fired {
                key: "a",
                start: 0,
                end: 1_000,
                value: 2
            }]
        );
        assert!(w.fire(999, 0).is_empty(), "a window fires once");
        let fired: Vec<_> = w
            .fire(5_000, 0)
            .into_iter()
            .map(|f| (f.key, f.start, f.value))
            .collect();
        assert_eq!(
            fired,
            vec![("b", 1_000, 1), ("a", 1_000, 1), ("b", 2_000, 1)],
            "by end, then in the order the keys came"
        );
        assert!(w.is_empty());
        assert_eq!(count(&mut w, tumbling, "a", 4_999), Err(Late { window_start: 4_000 }));
    }

    #[test]
    fn allowed_lateness_fires_a_window_again_with_its_late_records() {
        let tumbling = Assigner::tumbling(core::time::Duration::from_secs(1));
        let mut w: EventTimeWindows<&str, u64> = EventTimeWindows::default();
        w.add(tumbling, 500, &"a", 10, |n| *n += 1).unwrap();
        assert_eq!(w.fire(1_000, 500)[0].value, 1);
        w.add(tumbling, 500, &"a", 20, |n| *n += 1).unwrap();
        assert_eq!(w.fire(1_200, 500)[0].value, 2, "fired again, updated");
        assert!(
            w.fire(1_499, 500).is_empty() && w.is_empty(),
            "dropped past its lateness"
        );
        assert!(w.add(tumbling, 500, &"a", 30, |n| *n += 1).is_err());
    }

    #[test]
    fn sliding_windows_hold_a_record_in_each_window_it_falls_in() {
        let sliding = Assigner::sliding(core::time::Duration::from_secs(2), core::time::Duration::from_secs(1));
        let mut w = EventTimeWindows::default();
        count(&mut w, sliding, "k", 1_500).unwrap();
        let fired: Vec<_> = w.fire(10_000, 0).into_iter().map(|f| (f.start, f.end)).collect();
        assert_eq!(fired, vec![(0, 2_000), (1_000, 3_000)]);
        // -500 falls in [-2000, 0) and [-1000, 1000): negative times work too.
        let mut w = EventTimeWindows::default();
        count(&mut w, sliding, "k", -500).unwrap();
        let fired: Vec<_> = w.fire(10_000, 0).into_iter().map(|f| f.start).collect();
        assert_eq!(fired, vec![-2_000, -1_000]);
    }

    #[test]
    fn windows_of_one_end_fire_in_the_order_their_keys_came_across_a_snapshot() {
        let tumbling = Assigner::tumbling(core::time::Duration::from_secs(1));
        let keys: Vec<String> = (0..200).rev().map(|k| format!("k{k}")).collect();
        let mut w: EventTimeWindows<String, u64> = EventTimeWindows::default();
        for key in &keys {
            w.add(tumbling, 0, key.as_str(), 1_500, |n| *n += 1).unwrap();
            w.add(tumbling, 0, key.as_str(), 500, |n| *n += 1).unwrap();
        }
        let mut restored: EventTimeWindows<String, u64> =
            postcard::from_bytes(&postcard::to_allocvec(&w).unwrap()).unwrap();
        assert_eq!(restored, w);
        for windows in [&mut w, &mut restored] {
            let fired: Vec<(i64, String)> = windows.fire(5_000, 0).into_iter().map(|f| (f.end, f.key)).collect();
            let expected: Vec<(i64, String)> = [1_000, 2_000]
                .into_iter()
                .flat_map(|end| keys.iter().map(move |k| (end, k.clone())))
                .collect();
            assert_eq!(fired, expected);
        }
    }

    #[test]
    fn a_flush_fires_what_is_open_and_closes_it_for_good() {
        let tumbling = Assigner::tumbling(core::time::Duration::from_secs(1));
        let mut w = EventTimeWindows::default();
        count(&mut w, tumbling, "a", 100).unwrap();
        count(&mut w, tumbling, "a", 1_100).unwrap();
        assert_eq!(w.fire(999, 0).len(), 1);
        let flushed: Vec<_> = w.flush(0).into_iter().map(|f| f.start).collect();
        assert_eq!(flushed, vec![1_000]);
        assert!(w.is_empty());
        assert_eq!(
            count(&mut w, tumbling, "a", 1_200),
            Err(Late { window_start: 1_000 }),
            "a flushed window does not fire twice"
        );
        count(&mut w, tumbling, "a", 2_000).expect("a later window still opens");
    }

    #[test]
    fn timestamps_and_lateness_at_the_ends_of_time_neither_wrap_nor_panic() {
        let tumbling = Assigner::tumbling(core::time::Duration::from_secs(1));
        let mut w = EventTimeWindows::default();
        assert!(
            count(&mut w, tumbling, "a", i64::MAX).is_err(),
            "its window would end past i64"
        );
        assert!(
            count(&mut w, tumbling, "a", i64::MIN).is_err(),
            "its window would start before i64"
        );
        assert_eq!(count(&mut w, tumbling, "a", -500), Ok(()));
        let fired: Vec<_> = w.fire(0, i64::MAX).into_iter().map(|f| f.start).collect();
        assert_eq!(fired, vec![-1_000]);
        assert_eq!(w.len(), 1, "kept forever with endless lateness");
        let forever = Assigner::tumbling(core::time::Duration::MAX);
        assert!(EventTimeWindows::<&str, u64>::default()
            .add(forever, 0, &"a", 5, |_| {})
            .is_ok());
        let late = EventTimeWindows::<&str, u64>::default().add(tumbling, 0, &"a", -1, |_| {});
        assert!(late.is_ok());
    }

    #[test]
    fn windows_survive_a_snapshot() {
        let tumbling = Assigner::tumbling(core::time::Duration::from_secs(1));
        let mut w = EventTimeWindows::<String, u64>::default();
        w.add(tumbling, 0, "a", 5, |n| *n += 3).unwrap();
        let bytes = postcard::to_allocvec(&w).unwrap();
        let mut back: EventTimeWindows<String, u64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, w);
        assert_eq!(back.fire(999, 0)[0].value, 3);
    }

    #[test]
    fn sessions_close_after_a_gap_and_merge_when_a_record_bridges_them() {
        let mut w = SessionWindows::<&str, u64>::default();
        let add = |w: &mut SessionWindows<&str, u64>, key, t| w.add(100, 0, &key, t, |n| *n += 1, |a, b| *a += b);
        for (key, t) in [("a", 0), ("a", 50), ("a", 200), ("b", 10)] {
            add(&mut w, key, t).unwrap();
        }
        assert_eq!(w.len(), 3, "a: [0,150) and [200,300); b: [10,110)");
        add(&mut w, "a", 120).unwrap();
        assert_eq!(w.len(), 2, "120 is within the gap of both of a's sessions");
        let fired: Vec<_> = w
            .fire(1_000, 0)
            .into_iter()
            .map(|f| (f.key, f.start, f.end, f.value))
            .collect();
        assert_eq!(fired, vec![("a", 0, 300, 4), ("b", 10, 110, 1)]);
        assert!(w.is_empty());
        assert!(add(&mut w, "a", 900).is_err(), "its session would end by the watermark");
    }

    #[test]
    fn a_session_fires_only_once_the_watermark_passes_its_end() {
        let mut w = SessionWindows::<&str, u64>::default();
        w.add(100, 0, &"k", 1_000, |n| *n += 1, |a, b| *a += b).unwrap();
        assert!(w.fire(1_098, 0).is_empty());
        assert_eq!(w.fire(1_099, 0)[0].value, 1);
        let flushed = {
            let mut w = SessionWindows::<&str, u64>::default();
            w.add(100, 0, &"k", 5, |n| *n += 1, |a, b| *a += b).unwrap();
            let flushed = w.flush(0);
            assert!(
                w.add(100, 0, &"k", 4, |n| *n += 1, |a, b| *a += b).is_err(),
                "a session ending by the flush counts as closed"
            );
            flushed
        };
        assert_eq!(flushed.len(), 1);
    }
}
