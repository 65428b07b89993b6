//! A keyed job: the running count of every word, emitted as `word count`
//! each time the word is seen. Words are split on whitespace and lowercased.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use weir_guest::{Context, Error, Job, Record};

#[derive(Default, Serialize, Deserialize)]
struct WordCount {
    counts: HashMap<String, u64>,
}

impl Job for WordCount {
    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let line = record.text()?;
        for word in line.split_whitespace() {
            let word = word.to_lowercase();
            let count = match self.counts.get_mut(&word) {
                Some(count) => count,
                None => self.counts.entry(word.clone()).or_default(),
            };
            *count += 1;
            ctx.emit_text(&format!("{word} {count}"));
        }
        Ok(())
    }
}

weir_guest::export_job!(WordCount);
