//! A job whose state is `bytes=N` bytes of ballast, for measuring what a
//! checkpoint of a given size costs. It counts the events it sees and emits
//! the count every `every=M` events (default 100,000). The ballast is a byte
//! buffer snapshotted as one (`serde_bytes`), as any job keeping raw bytes
//! should: serde's default writes a `Vec<u8>` one element at a time.

use serde::{Deserialize, Serialize};
use weir_guest::{config_value, Config, Context, Error, Job, Record};

#[derive(Default, Serialize, Deserialize)]
struct Ballast {
    seen: u64,
    every: u64,
    #[serde(with = "serde_bytes")]
    ballast: Vec<u8>,
}

impl Job for Ballast {
    fn init(&mut self, config: &Config) -> Result<(), String> {
        self.every = config_value(config, "every")?.unwrap_or(100_000).max(1);
        let bytes: usize = config_value(config, "bytes")?.unwrap_or(1024);
        if self.ballast.len() != bytes {
            self.ballast = (0..bytes).map(|i| i as u8).collect();
        }
        Ok(())
    }

    fn process(&mut self, _record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        self.seen += 1;
        let at = self.seen as usize % self.ballast.len().max(1);
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
