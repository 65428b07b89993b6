//! The Nexmark benchmark's queries as one weir job: `--config query=q5`
//! picks which (q0, q1, q2, q3, q5, q7, q8; see `queries`), over the
//! records of `--source nexmark`. The windowed ones (q5, q7, q8) fire on
//! the watermark: deploy them with `--watermark max-delay=4s`, Nexmark's.
//! The joins and windows (q3, q5, q7, q8) need all events in one task:
//! deploy them with `--parallelism 1` (tasks share no records). The
//! benchmark runs the same code natively, as the job's native twin.

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
        if !self.query.reads(model::kind(&record.value_bytes())) {
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

#[cfg(test)]
mod tests {
    use weir_guest::testing::{Harness, Input};

    use super::Nexmark;

    fn bid(auction: i64, price: i64, at: i64) -> Input {
        let value = format!(
            r#"{{"bid":{{"auction":{auction},"bidder":1001,"price":{price},"dateTime":{at},"extra":"x\\y"}}}}"#
        );
        Input::bytes(value.as_bytes()).at(at)
    }

    #[test]
    fn queries_select_convert_and_refuse_what_is_no_event() {
        let mut q1 = Harness::<Nexmark>::with_config(&[("query", "q1")]).unwrap();
        let out = q1.process(&[bid(1000, 1234, 5), Input::text("hello")]);
        assert_eq!(out.texts(), ["1000,1001,1120.472,5,x\\y"]);
        assert_eq!(out.rejected.len(), 1, "a record that is no event is refused: {out:?}");
        let mut q2 = Harness::<Nexmark>::with_config(&[("query", "q2")]).unwrap();
        let person = Input::bytes(br#"{"person":{"id":1,"name":"a","city":"b","state":"OR","dateTime":0}}"#);
        let out = q2.process(&[bid(1000, 1, 0), bid(1107, 2, 0), person]);
        assert_eq!(out.texts(), ["1107,2"], "1107 = 9 x 123; a person is not read");
        assert!(Harness::<Nexmark>::with_config(&[("query", "q4")]).is_err());
    }

    #[test]
    fn q5_fires_each_sliding_window_once_with_its_busiest_auctions_through_a_restore() {
        let mut q5 = Harness::<Nexmark>::with_config(&[("query", "q5")]).unwrap();
        q5.process(&[bid(1, 0, 500), bid(2, 0, 2500), bid(2, 0, 3000)]);
        q5.snapshot_and_restore().unwrap();
        // Windows [-8 s, 2 s) and [-6 s, 4 s) ... close as the watermark passes their ends.
        assert_eq!(q5.advance_watermark(1_999).texts(), ["1,1"]);
        assert_eq!(q5.advance_watermark(3_999).texts(), ["2,2"]);
        assert!(q5.advance_watermark(3_999).texts().is_empty(), "a window fires once");
        assert_eq!(q5.advance_watermark(11_999).texts(), ["2,2", "2,2", "2,2", "2,2"]);
        assert!(q5.advance_watermark(20_000).texts().is_empty());
    }
}
