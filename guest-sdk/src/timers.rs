//! Timers a job sets through its [`crate::Context`]: processing-time ones,
//! for which the host wakes the job even when no record comes, and
//! event-time ones, which fire when the watermark reaches them. They are
//! part of the job's snapshot, so they survive a failover.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// A timer that came due, as [`crate::Job::on_timer`] gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Timer {
    /// Set with [`crate::Context::timer_at`]: wall-clock ms since the Unix
    /// epoch, fired once the supervisor's clock reaches it.
    Processing(u64),
    /// Set with [`crate::Context::event_timer_at`]: event time, fired once
    /// the watermark reaches it.
    Event(i64),
}

/// A job's pending timers, each once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timers {
    processing: BTreeSet<u64>,
    event: BTreeSet<i64>,
}

impl Timers {
    pub(crate) fn set(&mut self, timer: Timer) {
        match timer {
            Timer::Processing(at) => self.processing.insert(at),
            Timer::Event(at) => self.event.insert(at),
        };
    }

    /// Takes out the timers due at processing time `now` and watermark
    /// `watermark`: event timers first, each kind in time order.
    pub(crate) fn due(&mut self, now: u64, watermark: Option<i64>) -> Vec<Timer> {
        let mut due = Vec::new();
        if let Some(watermark) = watermark {
            let later = self.event.split_off(&watermark.saturating_add(1));
            due.extend(core::mem::replace(&mut self.event, later).into_iter().map(Timer::Event));
        }
        let later = self.processing.split_off(&now.saturating_add(1));
        due.extend(
            core::mem::replace(&mut self.processing, later)
                .into_iter()
                .map(Timer::Processing),
        );
        due
    }

    /// Keeps the timers the job set through `ctx` since the last take.
    pub(crate) fn take(&mut self, ctx: &mut crate::Context) {
        ctx.timers.drain(..).for_each(|t| self.set(t));
    }

    /// The earliest processing-time timer: when the host must wake the job.
    pub(crate) fn wake_at(&self) -> Option<u64> {
        self.processing.first().copied()
    }
}
