//! Counts JSON records per key per tumbling event-time window (default
//! 1 s, `--config window_ms=N`): a record `{"key": "user42", ...}` with an
//! event timestamp (e.g. `file:path=PATH,timestamp=json:ts`) counts in its
//! key's window, and a window fires, once the watermark passes its end, as
//! the line `START KEY COUNT`. The keyed-window job of the benchmarks.

use std::fmt::Write;

use serde::{Deserialize, Serialize};
use weir_guest::{config_value, Assigner, Config, Context, Error, EventTimeWindows, Job, Record};

#[derive(Default, Serialize, Deserialize)]
struct WindowCount {
    #[serde(skip)]
    window_ms: u64,
    windows: EventTimeWindows<String, u64>,
}

#[derive(Deserialize)]
struct Keyed<'a> {
    /// Borrowed from the record unless the JSON escapes it.
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
}

impl Job for WindowCount {
    fn init(&mut self, config: &Config) -> Result<(), String> {
        self.window_ms = config_value(config, "window_ms")?.unwrap_or(1000);
        Ok(())
    }

    fn process(&mut self, record: Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        let keyed: Keyed = record.json()?;
        let at = record.timestamp().ok_or("the record has no event time")?;
        let tumbling = Assigner::tumbling(std::time::Duration::from_millis(self.window_ms));
        self.windows.add(tumbling, 0, keyed.key.as_ref(), at, |n| *n += 1)?;
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, ctx: &mut Context) {
        // One line buffer for all: no allocation per window.
        let mut line = String::new();
        for window in self.windows.fire(watermark, 0) {
            line.clear();
            let _ = write!(line, "{} {} {}", window.start, window.key, window.value);
            ctx.emit_text(&line);
        }
    }
}

weir_guest::export_job!(WindowCount);
