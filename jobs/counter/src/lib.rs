//! Flink's HA demo job: the numbers from the source, `countWindowAll(100).sum()`.
//! With the source starting at 0, the k-th output is `10000*k + 4950`.
//! `--config window=N` changes the window size.

use serde::{Deserialize, Serialize};
use weir_guest::{config_value, Config, Context, CountWindow, Error, Job, Record};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    size: u64,
    window: CountWindow<i64>,
}

impl Job for Counter {
    fn init(&mut self, config: &Config) -> Result<(), String> {
        self.size = config_value(config, "window")?.unwrap_or(100);
        Ok(())
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let n = record.int()?;
        if let Some(sum) = self.window.add(self.size, |acc| *acc += n) {
            ctx.emit_int(sum);
        }
        Ok(())
    }
}

weir_guest::export_job!(Counter);
