//! The Nexmark queries (nexmark/nexmark's SQL) as stream code: one logic
//! for the wasm job and for the benchmark's native twin, so the two give
//! the same lines for the same events. Each result is a line of
//! comma-separated columns in the SQL's order; windows are in event time
//! and fire when the watermark passes their end, their lines in key order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use weir_guest::Late;

use crate::model::{Auction, Bid, Event, Kind, Person};

/// Which query a job runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Query {
    /// Pass-through: every bid's auction, bidder, price, time and extra.
    #[default]
    Q0,
    /// Currency conversion: q0 with the price in euros (0.908 a dollar).
    Q1,
    /// Selection: the auction and price of bids on every 123rd auction.
    Q2,
    /// Local item suggestion: persons in OR, ID or CA selling in category
    /// 10, joined with their auctions.
    Q3,
    /// Average price per category: each auction's winning bid (its
    /// highest while it was open) as it closes, averaged per category.
    Q4,
    /// Hot items: per 10 s window sliding by 2 s, the auctions with the
    /// most bids.
    Q5,
    /// Highest bid: per 10 s tumbling window, the bids at its highest price.
    Q7,
    /// Monitor new users: persons who put an item up for auction in the 10
    /// s tumbling window they registered in.
    Q8,
}

impl FromStr for Query {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "q0" => Query::Q0,
            "q1" => Query::Q1,
            "q2" => Query::Q2,
            "q3" => Query::Q3,
            "q4" => Query::Q4,
            "q5" => Query::Q5,
            "q7" => Query::Q7,
            "q8" => Query::Q8,
            _ => return Err(format!("query={s}: give q0, q1, q2, q3, q4, q5, q7 or q8")),
        })
    }
}

impl Query {
    /// Whether it reads events of `kind` (those it does not go unread).
    pub fn reads(self, kind: Kind) -> bool {
        match kind {
            Kind::Bid => !matches!(self, Query::Q3 | Query::Q8),
            Kind::Auction => matches!(self, Query::Q3 | Query::Q4 | Query::Q8),
            Kind::Person => matches!(self, Query::Q3 | Query::Q8),
            Kind::Unknown => true,
        }
    }
}

/// An auction q4 waits on: its category, when it opened and expires, and
/// its highest bid so far.
#[derive(Debug, Serialize, Deserialize)]
struct OpenAuction {
    category: i64,
    opened: i64,
    expires: i64,
    highest: Option<i64>,
}

/// A bid at its window's highest price: auction, bidder, time, extra.
type TopBid = (i64, i64, i64, String);

const WINDOW_MS: i64 = 10_000;
const SLIDE_MS: i64 = 2_000;

/// What the queries remember; each keeps only its own part.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// The newest watermark the windows fired at: an event for a window
    /// that closed is late.
    closed: Option<i64>,
    /// q3: persons of OR, ID and CA by id: name, city, state.
    locals: BTreeMap<i64, (String, String, String)>,
    /// q3: auctions of category 10 whose seller has not been seen, by seller.
    waiting: BTreeMap<i64, Vec<i64>>,
    /// q4: auctions still open, by id: category, opened, expires, highest bid.
    open: BTreeMap<i64, OpenAuction>,
    /// q4: when each open auction closes, in that order.
    closing: BTreeSet<(i64, i64)>,
    /// q4: per category, the winning bids' sum and count.
    categories: BTreeMap<i64, (i128, u64)>,
    /// q5: bids per auction, per 2 s pane: a window is the five panes it
    /// spans, so a bid counts once, not in each of its five windows.
    panes: BTreeMap<i64, BTreeMap<i64, u64>>,
    /// q5: the start of the last window fired.
    fired: Option<i64>,
    /// q7: per window start, its highest price and the bids at it.
    highest: BTreeMap<i64, (i64, Vec<TopBid>)>,
    /// q8: per window start, the persons who registered (id, name) and the
    /// sellers who put an item up.
    new_users: BTreeMap<i64, (BTreeMap<i64, String>, BTreeSet<i64>)>,
    /// The line being written for an event (not state: reused, so a line
    /// per bid allocates nothing).
    #[serde(skip)]
    line: Line,
}

/// A result line, written column by column into one buffer: numbers with
/// itoa, since `core::fmt` makes a call per piece, and in wasm each call
/// checks the epoch deadline (q0 and q1 write one per bid).
#[derive(Debug, Default)]
struct Line {
    text: String,
    columns: usize,
}

impl Line {
    fn start(&mut self) -> &mut Self {
        self.text.clear();
        self.columns = 0;
        self
    }

    fn column(&mut self) -> &mut String {
        if self.columns > 0 {
            self.text.push(',');
        }
        self.columns += 1;
        &mut self.text
    }

    fn int(&mut self, n: i64) -> &mut Self {
        self.column().push_str(itoa::Buffer::new().format(n));
        self
    }

    /// `n` thousandths as a decimal with three places: `-1.005`.
    fn thousandths(&mut self, n: i128) -> &mut Self {
        let text = self.column();
        if n < 0 {
            text.push('-');
        }
        let abs = n.unsigned_abs();
        // A price in thousandths fits in 64 bits: then no 128-bit division (a call).
        let mut digits = itoa::Buffer::new();
        let (whole, fraction) = match u64::try_from(abs) {
            Ok(abs) => (digits.format(abs / 1000), abs % 1000),
            Err(_) => (digits.format(abs / 1000), (abs % 1000) as u64),
        };
        text.push_str(whole);
        text.push('.');
        text.push_str(&itoa::Buffer::new().format(fraction + 1000)[1..]);
        self
    }

    fn text(&mut self, s: &str) -> &mut Self {
        self.column().push_str(s);
        self
    }

    fn as_str(&self) -> &str {
        &self.text
    }
}

impl State {
    /// Runs `query` over one event; `emit` gets each line it produces.
    /// An event whose window (every window, for q5) has closed is `Late`.
    pub fn on_event(&mut self, query: Query, event: &Event<'_>, emit: &mut impl FnMut(&str)) -> Result<(), Late> {
        let window = match (query, event) {
            (Query::Q5, Event::Bid(b)) => Some(window_of(b.date_time, SLIDE_MS)?),
            (Query::Q7, Event::Bid(Bid { date_time, .. }))
            | (Query::Q8, Event::Person(Person { date_time, .. }) | Event::Auction(Auction { date_time, .. })) => {
                Some(window_of(*date_time, WINDOW_MS)?)
            }
            _ => None,
        };
        // q5's pane is in windows up to the one it starts; the others' in its own.
        if let Some(start) = window.filter(|start| self.closed.is_some_and(|w| due(*start, w))) {
            return Err(Late { window_start: start });
        }
        let start = window.unwrap_or_default();
        let line = &mut self.line;
        match (query, event) {
            (Query::Q0, Event::Bid(b)) => {
                line.start().int(b.auction).int(b.bidder).int(b.price);
                emit(line.int(b.date_time).text(&b.extra).as_str());
            }
            (Query::Q1, Event::Bid(b)) => {
                let euros = line
                    .start()
                    .int(b.auction)
                    .int(b.bidder)
                    .thousandths(i128::from(b.price) * 908);
                emit(euros.int(b.date_time).text(&b.extra).as_str());
            }
            (Query::Q2, Event::Bid(b)) if b.auction % 123 == 0 => {
                emit(line.start().int(b.auction).int(b.price).as_str());
            }
            (Query::Q4, Event::Auction(a)) => {
                let auction = OpenAuction {
                    category: a.category,
                    opened: a.date_time,
                    expires: a.expires,
                    highest: None,
                };
                self.closing.insert((a.expires, a.id));
                self.open.insert(a.id, auction);
            }
            (Query::Q4, Event::Bid(b)) => {
                // A bid counts while its auction is open, both ends included.
                let open = self.open.get_mut(&b.auction);
                if let Some(a) = open.filter(|a| (a.opened..=a.expires).contains(&b.date_time)) {
                    a.highest = Some(a.highest.map_or(b.price, |h| h.max(b.price)));
                }
            }
            (Query::Q3, Event::Person(p)) => self.local_seller(p, emit),
            (Query::Q3, Event::Auction(a)) => self.local_item(a, emit),
            (Query::Q5, Event::Bid(b)) => {
                *self.panes.entry(start).or_default().entry(b.auction).or_default() += 1;
            }
            (Query::Q7, Event::Bid(b)) => self.highest_bid(start, b),
            (Query::Q8, Event::Person(p)) => {
                self.new_users
                    .entry(start)
                    .or_default()
                    .0
                    .insert(p.id, p.name.to_string());
            }
            (Query::Q8, Event::Auction(a)) => {
                self.new_users.entry(start).or_default().1.insert(a.seller);
            }
            _ => {}
        }
        Ok(())
    }

    fn local_seller(&mut self, p: &Person<'_>, emit: &mut impl FnMut(&str)) {
        // Auctions waiting for a seller from elsewhere never match: gone either way.
        let waiting = self.waiting.remove(&p.id).unwrap_or_default();
        if !matches!(p.state.as_ref(), "OR" | "ID" | "CA") {
            return;
        }
        for auction in waiting {
            emit(&format!("{},{},{},{auction}", p.name, p.city, p.state));
        }
        self.locals
            .insert(p.id, (p.name.to_string(), p.city.to_string(), p.state.to_string()));
    }

    fn local_item(&mut self, a: &Auction, emit: &mut impl FnMut(&str)) {
        if a.category != 10 {
            return;
        }
        match self.locals.get(&a.seller) {
            Some((name, city, state)) => emit(&format!("{name},{city},{state},{}", a.id)),
            None => self.waiting.entry(a.seller).or_default().push(a.id),
        }
    }

    /// q5's windows that the watermark closed, each as its bids per auction.
    fn hot_windows(&mut self, watermark: i64, emit: &mut impl FnMut(&str)) {
        let mut line = String::new();
        while let Some(first) = self.panes.keys().next().copied() {
            let earliest = first.saturating_sub(WINDOW_MS - SLIDE_MS);
            let mut start = match self.fired {
                Some(fired) => fired.saturating_add(SLIDE_MS).max(earliest),
                None => earliest,
            };
            // Windows the watermark passed while they were empty stay closed.
            while self.hot_window_passed(start) && start < first {
                start = start.saturating_add(SLIDE_MS);
            }
            if !due(start, watermark) {
                return;
            }
            let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
            for (_, pane) in self.panes.range(start..start.saturating_add(WINDOW_MS)) {
                for (auction, n) in pane {
                    *counts.entry(*auction).or_default() += n;
                }
            }
            let most = counts.values().copied().max().unwrap_or(0);
            for (auction, n) in counts.iter().filter(|(_, n)| **n == most) {
                line.clear();
                let _ = write!(line, "{auction},{n}");
                emit(&line);
            }
            self.fired = Some(start);
            // A pane is in windows from 8 s before it to itself: done with now.
            self.panes.retain(|pane, _| *pane > start);
        }
    }

    /// Whether q5 has fired the window from `start`, or skipped it empty.
    fn hot_window_passed(&self, start: i64) -> bool {
        self.fired.is_some_and(|fired| start <= fired) || self.closed.is_some_and(|w| due(start, w))
    }

    fn highest_bid(&mut self, window: i64, b: &Bid<'_>) {
        let (max, bids) = self.highest.entry(window).or_insert((i64::MIN, Vec::new()));
        if b.price > *max {
            *max = b.price;
            bids.clear();
        }
        if b.price == *max {
            bids.push((b.auction, b.bidder, b.date_time, b.extra.to_string()));
        }
    }

    /// Fires every window of `query` whose end the watermark has passed.
    pub fn on_watermark(&mut self, query: Query, watermark: i64, emit: &mut impl FnMut(&str)) {
        self.fire(query, watermark, emit);
        self.closed = Some(self.closed.map_or(watermark, |w| w.max(watermark)));
    }

    fn fire(&mut self, query: Query, watermark: i64, emit: &mut impl FnMut(&str)) {
        let due = |start: &i64| due(*start, watermark);
        let mut line = String::new();
        match query {
            Query::Q4 => {
                // Closed once no bid at or before its expiry can come.
                while let Some(&(expires, id)) = self.closing.first().filter(|(expires, _)| *expires <= watermark) {
                    self.closing.remove(&(expires, id));
                    let Some(auction) = self.open.remove(&id) else { continue };
                    let Some(winning) = auction.highest else { continue };
                    let (sum, count) = self.categories.entry(auction.category).or_default();
                    *sum += i128::from(winning);
                    *count += 1;
                    line.clear();
                    let _ = write!(line, "{},{}", auction.category, *sum / i128::from(*count));
                    emit(&line);
                }
            }
            Query::Q5 => self.hot_windows(watermark, emit),
            Query::Q7 => {
                while let Some(entry) = self.highest.first_entry().filter(|e| due(e.key())) {
                    let (price, bids) = entry.remove();
                    for (auction, bidder, at, extra) in bids {
                        line.clear();
                        let _ = write!(line, "{auction},{price},{bidder},{at},{extra}");
                        emit(&line);
                    }
                }
            }
            Query::Q8 => {
                while let Some(entry) = self.new_users.first_entry().filter(|e| due(e.key())) {
                    let start = *entry.key();
                    let (persons, sellers) = entry.remove();
                    for (id, name) in persons.iter().filter(|(id, _)| sellers.contains(id)) {
                        line.clear();
                        let _ = write!(line, "{id},{name},{start}");
                        emit(&line);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether the window from `start` has closed: the watermark reached its
/// last millisecond.
fn due(start: i64, watermark: i64) -> bool {
    start.saturating_add(WINDOW_MS - 1) <= watermark
}

/// The start of the `size` ms window (or pane) holding `at`; an event
/// time too near the ends of time to have one is late for all.
fn window_of(at: i64, size: i64) -> Result<i64, Late> {
    at.div_euclid(size)
        .checked_mul(size)
        .filter(|start| start.checked_add(WINDOW_MS).is_some())
        .ok_or(Late { window_start: i64::MIN })
}
