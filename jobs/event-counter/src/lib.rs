//! The counter in event time: the source's numbers, keyed by whether they
//! are even or odd, summed per tumbling event-time window (default 1 s,
//! `--config window_ms=N`). A window fires once the watermark passes its
//! end, as the line `START even|odd SUM`, windows in order of their end.
//! Run it on `sequence:timestamp=every:10ms` with `--watermark
//! max-delay=0s`: window k then holds the numbers 100k..100k+99, the same
//! on every replay, so its output is checkable line by line.

use serde::{Deserialize, Serialize};
use weir_guest::{config_value, Assigner, Config, Context, Error, EventTimeWindows, Job, Record};

#[derive(Default, Serialize, Deserialize)]
struct EventCounter {
    #[serde(skip)]
    window_ms: u64,
    /// Sums by (window end, odd).
    windows: EventTimeWindows<bool, i64>,
}

impl EventCounter {
    fn assigner(&self) -> Assigner {
        Assigner::tumbling(std::time::Duration::from_millis(self.window_ms))
    }
}

impl Job for EventCounter {
    fn init(&mut self, config: &Config) -> Result<(), String> {
        self.window_ms = config_value(config, "window_ms")?.unwrap_or(1000);
        Ok(())
    }

    fn process(&mut self, record: Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        let n = record.int()?;
        let at = record
            .timestamp()
            .ok_or_else(|| Error::new("the record has no event time; give the source timestamp="))?;
        self.windows
            .add(self.assigner(), 0, n % 2 != 0, at, |sum| *sum += n)
            .map_err(|late| Error::new(format!("late for the window at {}", late.window_start)))
    }

    fn on_watermark(&mut self, watermark: i64, ctx: &mut Context) {
        for window in self.windows.fire(watermark, 0) {
            let parity = if window.key { "odd" } else { "even" };
            ctx.emit_text(&format!("{} {parity} {}", window.start, window.value));
        }
    }
}

weir_guest::export_job!(EventCounter);
