//! The Nexmark benchmark's queries as one weir job: `--config query=q5`
//! picks which (q0, q1, q2, q3, q5, q7, q8; see `queries`), over the
//! records of `--source nexmark`. The windowed ones (q5, q7, q8) fire on
//! the watermark: deploy them with `--watermark max-delay=4s`, Nexmark's.
//! The benchmark runs the same code natively, as the job's native twin.

pub mod model;
pub mod queries;

use serde::{Deserialize, Serialize};
use weir_guest::{config_value, Config, Context, Error, Job, Record};

pub use queries::{Query, State};

#[derive(Default, Serialize, Deserialize)]
pub struct Nexmark {
    #[serde(skip)]
    query: Query,
    state: State,
}

impl Job for Nexmark {
    fn init(&mut self, config: &Config) -> Result<(), String> {
        let query: Option<String> = config_value(config, "query")?;
        self.query = query.as_deref().unwrap_or("q0").parse()?;
        Ok(())
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        if self.query.bids_only() && !model::is_bid(&record.value_bytes()) {
            return Ok(());
        }
        let event: model::Event = record.json()?;
        self.state.on_event(self.query, &event, &mut |line| ctx.emit_text(line));
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, ctx: &mut Context) {
        self.state
            .on_watermark(self.query, watermark, &mut |line| ctx.emit_text(line));
    }
}

#[cfg(target_arch = "wasm32")]
weir_guest::export_job!(Nexmark);
