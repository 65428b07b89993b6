//! The Nexmark benchmark's queries as one weir job: `--config query=q5`
//! picks which (q0, q1, q2, q3, q4, q5, q7, q8; see `queries`), over the
//! records of `--source nexmark`. The windowed ones (q5, q7, q8) fire on
//! the watermark: deploy them with `--watermark max-delay=4s`, Nexmark's.
//! The joins and windows (q3, q4, q5, q7, q8) need all events in one task:
//! deploy them with `--parallelism 1` (tasks share no records). The
//! benchmark runs the same code natively, as the job's native twin.

pub mod model;
pub mod queries;

use std::borrow::Cow;

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
        let value = record.value_bytes();
        if !self.query.reads(model::kind(&value)) {
            return Ok(());
        }
        let Cow::Borrowed(value) = value else {
            return Err(Error::new("a number is no Nexmark event"));
        };
        let event = model::read(value).map_err(Error::new)?;
        self.state
            .on_event(self.query, &event, &mut |line| ctx.emit_text(line))?;
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
        assert!(Harness::<Nexmark>::with_config(&[("query", "q6")]).is_err());
    }

    /// `--source nexmark:encoding=binary`'s bid: its tag, then auction,
    /// bidder, price and time as 8 bytes little-endian each, then extra.
    fn binary_bid(auction: i64, price: i64, at: i64, extra: &str) -> Vec<u8> {
        let mut value = vec![0x83];
        for n in [auction, 1001, price, at] {
            value.extend_from_slice(&n.to_le_bytes());
        }
        value.extend_from_slice(extra.as_bytes());
        value
    }

    #[test]
    fn a_binary_event_gives_the_lines_its_json_gives_and_a_cut_one_is_refused() {
        let mut q1 = Harness::<Nexmark>::with_config(&[("query", "q1")]).unwrap();
        let value = binary_bid(1000, 1234, 5, "x\\y");
        let out = q1.process(&[Input::bytes(&value).at(5), Input::bytes(&value[..20]).at(5)]);
        assert_eq!(out.texts(), ["1000,1001,1120.472,5,x\\y"]);
        assert_eq!(out.rejected.len(), 1, "a binary event cut short is refused: {out:?}");
        let extremes = [binary_bid(1, i64::MAX, 0, ""), binary_bid(1, i64::MIN, 0, "")];
        let out = q1.process(&[Input::bytes(&extremes[0]).at(0), Input::bytes(&extremes[1]).at(0)]);
        assert_eq!(
            out.texts(),
            [
                "1,1001,8374821809464136432.756,0,",
                "1,1001,-8374821809464136433.664,0,"
            ],
            "prices past 64 bits in thousandths"
        );
        let mut q0 = Harness::<Nexmark>::with_config(&[("query", "q0")]).unwrap();
        let out = q0.process(&[Input::bytes(&binary_bid(7, -5, -1, "")).at(-1), bid(7, 5, 3)]);
        assert_eq!(out.texts(), ["7,1001,-5,-1,", "7,1001,5,3,x\\y"]);
    }

    #[test]
    fn q4_averages_each_categorys_winning_bids_as_auctions_close() {
        let auction = |id: i64, category: i64, expires: i64| {
            let value = format!(
                r#"{{"auction":{{"id":{id},"dateTime":0,"expires":{expires},"seller":1000,"category":{category}}}}}"#
            );
            Input::bytes(value.as_bytes()).at(0)
        };
        let mut q4 = Harness::<Nexmark>::with_config(&[("query", "q4")]).unwrap();
        let bids = [
            bid(1, 10, 5),
            bid(1, 30, 100),
            bid(2, 7, 50),
            bid(1, 99, 101),
            bid(3, 5, 1),
        ];
        q4.process(&[auction(1, 10, 100), auction(2, 10, 200), auction(3, 11, 300)]);
        q4.process(&bids);
        q4.snapshot_and_restore().unwrap();
        assert_eq!(q4.advance_watermark(99).texts(), Vec::<String>::new());
        assert_eq!(
            q4.advance_watermark(200).texts(),
            ["10,30", "10,18"],
            "the bid at 101 came after the close"
        );
        assert_eq!(q4.advance_watermark(1_000).texts(), ["11,5"]);
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
        // Windows to 10 s have closed (empty ones too): a bid for them is late.
        let out = q5.process(&[bid(3, 0, 9_000), bid(4, 0, 14_000)]);
        assert_eq!(out.late.len(), 1, "{out:?}");
        assert_eq!(
            q5.advance_watermark(21_999).texts(),
            ["4,1"],
            "only [12 s, 22 s) fires, once"
        );
    }

    #[test]
    fn a_closed_tumbling_window_takes_no_late_event_and_fires_once() {
        let mut q7 = Harness::<Nexmark>::with_config(&[("query", "q7")]).unwrap();
        q7.process(&[bid(1, 5, 100), bid(2, 9, 200), bid(3, 9, 300)]);
        assert_eq!(
            q7.advance_watermark(9_999).texts(),
            ["2,9,1001,200,x\\y", "3,9,1001,300,x\\y"]
        );
        let out = q7.process(&[bid(4, 50, 400), bid(i64::MAX, 1, i64::MIN)]);
        assert_eq!(out.late.len(), 2, "a closed window, and a time with no window: {out:?}");
        assert!(q7.advance_watermark(30_000).texts().is_empty());
    }
}
