//! Version 2 of the counter's state, for `weir upgrade`: the same output
//! as `jobs/counter`, with the window renamed `sums` (which serde cannot
//! guess, so [`Job::migrate`] converts version 1) and a count of the
//! windows closed since the upgrade added (which needs no code:
//! `#[serde(default)]`). A module of version 1 refuses this state.

use serde::{Deserialize, Serialize};
use weir_guest::{config_value, Config, Context, CountWindow, Error, Job, Record, StoredState};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    size: u64,
    sums: CountWindow<i64>,
    #[serde(default)]
    closed: u64,
}

/// The counter's state before this version, as `jobs/counter` stores it.
#[derive(Deserialize)]
struct Version1 {
    window: CountWindow<i64>,
}

impl Job for Counter {
    const STATE_VERSION: u32 = 2;

    fn init(&mut self, config: &Config) -> Result<(), String> {
        self.size = config_value(config, "window")?.unwrap_or(100);
        Ok(())
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let n = record.int()?;
        if let Some(sum) = self.sums.add(self.size, |acc| *acc += n) {
            self.closed += 1;
            ctx.emit_int(sum);
        }
        Ok(())
    }

    fn migrate(from_version: u32, state: StoredState<'_>) -> Result<Self, String> {
        match from_version {
            1 => {
                let old: Version1 = state.decode()?;
                Ok(Counter {
                    sums: old.window,
                    ..Counter::default()
                })
            }
            v => Err(format!("no migration from state version {v}")),
        }
    }
}

weir_guest::export_job!(Counter);
