//! A job whose state follows its partitions: the running count of every
//! record key, emitted as `key count` each time the key is seen. Kafka
//! sends a key to one partition, so the count of a key is the state of
//! that partition alone; with `PARTITIONED_STATE` the SDK keeps one count
//! map per source partition, and `weir rescale` moves each map with its
//! partition to whichever task reads it next.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use weir_guest::{Context, Error, Job, Record};

#[derive(Default, Serialize, Deserialize)]
struct KeyCount {
    counts: HashMap<String, u64>,
}

impl Job for KeyCount {
    const PARTITIONED_STATE: bool = true;

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let key = record.key_text()?.ok_or("the record has no key")?;
        let count = match self.counts.get_mut(key) {
            Some(count) => count,
            None => self.counts.entry(key.to_string()).or_default(),
        };
        *count += 1;
        ctx.emit_text(&format!("{key} {count}"));
        Ok(())
    }
}

weir_guest::export_job!(KeyCount);
