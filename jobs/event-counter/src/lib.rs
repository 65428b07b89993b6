//! The counter in event time: the source's numbers, keyed by whether they
//! are even or odd, summed per tumbling event-time window (default 1 s,
//! `--config window_ms=N`). A window fires once the watermark passes its
//! end, as the line `START even|odd SUM`, windows in order of their end.
//! Run it on `sequence:timestamp=every:10ms` with `--watermark
//! max-delay=0s`: window k then holds the numbers 100k..100k+99, the same
//! on every replay, so its output is checkable line by line. Records may
//! also be JSON, `{"n": 5, "ts": 1000}` (a file source with
//! `timestamp=json:ts`). With `--config idle_flush_ms=N` a stream that
//! goes quiet for N ms (processing time) has its open windows fired
//! anyway, by a timer: the last window of a quiet stream is not lost.
//! With `--config format=json` each window is a JSON record instead,
//! `{"window_start": START, "parity": "even", "sum": SUM}` keyed by its
//! parity and stamped with its start: rows for a PostgreSQL sink.

use serde::{Deserialize, Serialize};
use weir_guest::{
    config_value, now_millis, Assigner, Config, Context, Error, EventTimeWindows, Fired, Job, Record, Timer,
};

#[derive(Default, Serialize, Deserialize)]
struct EventCounter {
    #[serde(skip)]
    window_ms: u64,
    #[serde(skip)]
    idle_flush_ms: Option<u64>,
    #[serde(skip)]
    json: bool,
    /// Sums by (window end, odd).
    windows: EventTimeWindows<bool, i64>,
    /// When the last record came (processing time), and whether a flush
    /// timer is set.
    last_record: u64,
    flush_armed: bool,
}

#[derive(Deserialize)]
struct Reading {
    n: i64,
}

/// Emits fired windows, one record each.
fn emit(fired: Vec<Fired<bool, i64>>, json: bool, ctx: &mut Context) {
    for window in fired {
        let parity = if window.key { "odd" } else { "even" };
        if json {
            let row = format!(
                r#"{{"window_start":{},"parity":"{parity}","sum":{}}}"#,
                window.start, window.value
            );
            ctx.emit(
                Record::from_bytes(row.as_bytes())
                    .with_key(parity.as_bytes())
                    .at(window.start),
            );
        } else {
            ctx.emit_text(&format!("{} {parity} {}", window.start, window.value));
        }
    }
}

impl EventCounter {
    fn assigner(&self) -> Assigner {
        Assigner::tumbling(std::time::Duration::from_millis(self.window_ms))
    }
}

impl Job for EventCounter {
    fn init(&mut self, config: &Config) -> Result<(), String> {
        self.window_ms = config_value(config, "window_ms")?.unwrap_or(1000);
        self.idle_flush_ms = config_value(config, "idle_flush_ms")?;
        self.json = match config_value::<String>(config, "format")?.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => return Err(format!("format={other}: expected text or json")),
        };
        // Quiet since this instance started, not since the checkpoint it
        // restored: the time a failover took is not the stream's silence.
        self.last_record = now_millis();
        Ok(())
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let n = match record.int() {
            Ok(n) => n,
            Err(_) => record.json::<Reading>()?.n,
        };
        if let Some(idle) = self.idle_flush_ms {
            self.last_record = now_millis();
            if !self.flush_armed {
                self.flush_armed = true;
                ctx.timer_at(self.last_record + idle);
            }
        }
        let at = record
            .timestamp()
            .ok_or_else(|| Error::new("the record has no event time; give the source timestamp="))?;
        self.windows
            .add(self.assigner(), 0, &(n % 2 != 0), at, |sum| *sum += n)?;
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, ctx: &mut Context) {
        emit(self.windows.fire(watermark, 0), self.json, ctx);
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Context) {
        let (Timer::Processing(now), Some(idle)) = (timer, self.idle_flush_ms) else {
            return;
        };
        if now >= self.last_record.saturating_add(idle) {
            // Quiet for long enough: fire what is open.
            self.flush_armed = false;
            emit(self.windows.flush(0), self.json, ctx);
        } else {
            ctx.timer_at(self.last_record + idle);
        }
    }
}

weir_guest::export_job!(EventCounter);
