//! A job whose state is `bytes=N` bytes of ballast, for measuring what a
//! checkpoint of a given size costs. It counts the events it sees and emits
//! the count every `every=M` events (default 100,000). Each event bumps one
//! byte of the ballast: the next one, or with `spread=true` one at a
//! pseudo-random place, so that N events write about N pages (what a
//! memory checkpoint's cost follows). The ballast is a byte
//! buffer snapshotted as one (`serde_bytes`), as any job keeping raw bytes
//! should: serde's default writes a `Vec<u8>` one element at a time.

use serde::{Deserialize, Serialize};
use weir_guest::{config_value, Config, Context, Error, Job, Record};

#[derive(Default, Serialize, Deserialize)]
struct Ballast {
    seen: u64,
    every: u64,
    spread: bool,
    #[serde(with = "serde_bytes")]
    ballast: Vec<u8>,
}

impl Job for Ballast {
    fn init(&mut self, config: &Config) -> Result<(), String> {
        self.every = config_value(config, "every")?.unwrap_or(100_000).max(1);
        self.spread = config_value(config, "spread")?.unwrap_or(false);
        let bytes: usize = config_value(config, "bytes")?.unwrap_or(1024);
        if self.ballast.len() != bytes {
            self.ballast = (0..bytes).map(|i| i as u8).collect();
        }
        Ok(())
    }

    fn process(&mut self, _record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        self.seen += 1;
        let at = match self.spread {
            true => (self.seen.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) as usize,
            false => self.seen as usize,
        } % self.ballast.len().max(1);
        if let Some(byte) = self.ballast.get_mut(at) {
            *byte = byte.wrapping_add(1);
        }
        if self.seen.is_multiple_of(self.every) {
            ctx.emit_int(self.seen as i64);
        }
        Ok(())
    }
}

weir_guest::export_job!(Ballast);
