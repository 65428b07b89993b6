//! The Nexmark benchmark's source: persons, auctions and bids of an online
//! auction, generated as the Nexmark generator makes them (Apache Beam's,
//! and nexmark/nexmark's before it drew from an unseeded RNG): event `n`
//! depends only on `n` and the seed, through a `java.util.Random` seeded
//! with its id, so a replay from any offset, on any task, makes the same
//! events, and with seed 0 the same as the reference generator.

use std::io;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::source::{Source, Throttle};
use crate::checkpoint::SourcePosition;
use crate::spec::{EventEncoding, Share};
use crate::wit::{Batch, Records};

/// One in this many events is a person, then auctions, then bids.
const PERSON_PROPORTION: i64 = 1;
const AUCTION_PROPORTION: i64 = 3;
const TOTAL_PROPORTION: i64 = 50;
const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: i32 = 5;
const HOT_AUCTION_RATIO: i32 = 2;
const HOT_SELLERS_RATIO: i32 = 4;
const HOT_BIDDERS_RATIO: i32 = 4;
const NUM_ACTIVE_PEOPLE: i64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
const PERSON_ID_LEAD: i64 = 10;
const AUCTION_ID_LEAD: i64 = 10;
const AVG_PERSON_BYTES: i32 = 200;
const AVG_AUCTION_BYTES: i32 = 500;
const AVG_BID_BYTES: i32 = 100;

/// Event times start here (2024-01-01T00:00:00Z): fixed, so a replay
/// stamps every event as before.
pub const BASE_TIME_MS: i64 = 1_704_067_200_000;

/// The event-time pace of an unthrottled source: the Nexmark suite's.
const UNTHROTTLED_EVENT_RATE: u64 = 10_000_000;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// `java.util.Random`, bit for bit: the generator's distributions are
/// defined through its calls.
struct JavaRandom(u64);

impl JavaRandom {
    const MULTIPLIER: u64 = 0x5_DEEC_E66D;
    const MASK: u64 = (1 << 48) - 1;

    fn new(seed: i64) -> Self {
        JavaRandom((seed as u64 ^ Self::MULTIPLIER) & Self::MASK)
    }

    fn next(&mut self, bits: u32) -> i32 {
        self.0 = self.0.wrapping_mul(Self::MULTIPLIER).wrapping_add(0xB) & Self::MASK;
        (self.0 >> (48 - bits)) as i32
    }

    fn next_i32(&mut self) -> i32 {
        self.next(32)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    fn next_below(&mut self, bound: i32) -> i32 {
        let mut r = self.next(31);
        let m = bound - 1;
        if bound & m == 0 {
            return ((i64::from(bound) * i64::from(r)) >> 31) as i32;
        }
        let mut u = r;
        loop {
            r = u % bound;
            if u.wrapping_sub(r).wrapping_add(m) < 0 {
                u = self.next(31);
            } else {
                return r;
            }
        }
    }

    fn next_i64(&mut self) -> i64 {
        (i64::from(self.next(32)) << 32).wrapping_add(i64::from(self.next(32)))
    }

    fn next_f64(&mut self) -> f64 {
        let bits = (i64::from(self.next(26)) << 27) + i64::from(self.next(27));
        bits as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n` > 0), as the generator's `LongGenerator`.
    fn next_long_below(&mut self, n: i64) -> i64 {
        if n < i64::from(i32::MAX) {
            i64::from(self.next_below(n as i32))
        } else {
            (self.next_i64() % n).abs()
        }
    }
}

/// SplitMix64's finalizer: a seed spread over all 64 bits, since
/// `java.util.Random` keeps only 48 of them and nearby seeds would swap
/// nearby events' numbers. Seed 0 stays 0: the reference's events.
fn mix64(seed: u64) -> u64 {
    let z = (seed ^ (seed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Java's `Math.round` of a non-negative double.
fn java_round(x: f64) -> i64 {
    (x + 0.5).floor() as i64
}

/// The newest person id (from 0) at event `id`.
fn last_base0_person_id(id: i64) -> i64 {
    let (epoch, offset) = (id / TOTAL_PROPORTION, id % TOTAL_PROPORTION);
    epoch * PERSON_PROPORTION + offset.min(PERSON_PROPORTION - 1)
}

/// The newest auction id (from 0) at event `id`.
fn last_base0_auction_id(id: i64) -> i64 {
    let (mut epoch, mut offset) = (id / TOTAL_PROPORTION, id % TOTAL_PROPORTION);
    if offset < PERSON_PROPORTION {
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

/// A recent person (from 0), or one a little ahead.
fn next_base0_person_id(id: i64, rng: &mut JavaRandom) -> i64 {
    let people = last_base0_person_id(id) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.next_long_below(active + PERSON_ID_LEAD)
}

/// An auction in flight (from 0), or one a little ahead.
fn next_base0_auction_id(id: i64, rng: &mut JavaRandom) -> i64 {
    let max = last_base0_auction_id(id);
    let min = (max - NUM_IN_FLIGHT_AUCTIONS).max(0);
    min + rng.next_long_below(max - min + 1 + AUCTION_ID_LEAD)
}

/// 3 to `max_len` - 1 letters, one in 13 a space, trimmed.
fn next_string(rng: &mut JavaRandom, max_len: i32) -> String {
    let len = 3 + rng.next_below(max_len - 3);
    let mut bytes: Vec<u8> = (0..len)
        .map(|_| match rng.next_below(13) {
            0 => b' ',
            _ => b'a' + rng.next_below(26) as u8,
        })
        .collect();
    let end = bytes.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
    bytes.truncate(end);
    let start = bytes.iter().position(|b| *b != b' ').unwrap_or(end);
    bytes.drain(..start);
    ascii(bytes)
}

/// Generated ASCII as a string: bytes, not chars, are what is pushed,
/// since pushing a char encodes it (a fifth of the source's time).
fn ascii(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("the generator makes ASCII")
}

/// `length` characters, six from each random int (some of them
/// punctuation, as the reference's are), appended to `out`.
fn next_exact_string(rng: &mut JavaRandom, length: i32, out: &mut Vec<u8>) {
    let length = usize::try_from(length).unwrap_or(0);
    out.reserve(length);
    for _ in 0..length / 6 {
        out.extend_from_slice(&six_letters(rng.next_i32()));
    }
    if length % 6 > 0 {
        out.extend_from_slice(&six_letters(rng.next_i32())[..length % 6]);
    }
}

/// The reference's six characters of one random int: `97 + rnd % 26`,
/// then `rnd /= 26`, six times, in Java's division toward zero. That is
/// `97 ± d` for the base-26 digits `d` of `|rnd|` (minus for a negative
/// int, hence the punctuation), read here two at a time from a table: the
/// reference's loop, a chain of dependent divisions, was most of the
/// source's time.
fn six_letters(rnd: i32) -> [u8; 6] {
    let pairs = if rnd < 0 { &LETTER_PAIRS[1] } else { &LETTER_PAIRS[0] };
    let a = rnd.unsigned_abs();
    let [p0, p1, p2] = [a % 676, a / 676 % 676, a / 456_976 % 676].map(|pair| pairs[pair as usize]);
    [p0[0], p0[1], p1[0], p1[1], p2[0], p2[1]]
}

/// Two characters for each two base-26 digits (the low one first): `97 +
/// d` for a non-negative int, `97 - d` for a negative one.
const LETTER_PAIRS: [[[u8; 2]; 676]; 2] = [letter_pairs(1), letter_pairs(-1)];

const fn letter_pairs(sign: i32) -> [[u8; 2]; 676] {
    let mut pairs = [[0; 2]; 676];
    let mut i = 0;
    while i < 676 {
        let (low, high) = ((i % 26) as i32, (i / 26) as i32);
        pairs[i] = [(97 + sign * low) as u8, (97 + sign * high) as u8];
        i += 1;
    }
    pairs
}

/// Padding that brings an event of `size` bytes to about `avg`.
fn next_extra(rng: &mut JavaRandom, size: i32, avg: i32) -> String {
    let mut extra = Vec::new();
    next_extra_into(rng, size, avg, &mut extra);
    ascii(extra)
}

/// `next_extra`, appended to `out`.
fn next_extra_into(rng: &mut JavaRandom, size: i32, avg: i32, out: &mut Vec<u8>) {
    if size > avg {
        return;
    }
    let room = avg - size;
    let delta = java_round(f64::from(room) * 0.2) as i32;
    let len = room - delta + if delta == 0 { 0 } else { rng.next_below(2 * delta) };
    next_exact_string(rng, len, out);
}

/// A price in cents, 1 to 1,000,000 dollars, log-uniform.
fn next_price(rng: &mut JavaRandom) -> i64 {
    java_round(10f64.powf(rng.next_f64() * 6.0) * 100.0)
}

/// A person who registered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub id: i64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: String,
    pub state: String,
    pub date_time: i64,
    pub extra: String,
}

/// An item put up for auction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Auction {
    pub id: i64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: i64,
    pub reserve: i64,
    pub date_time: i64,
    pub expires: i64,
    pub seller: i64,
    pub category: i64,
    pub extra: String,
}

/// A bid on an auction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bid {
    pub auction: i64,
    pub bidder: i64,
    pub price: i64,
    pub date_time: i64,
    pub extra: String,
}

/// One event, as its record's JSON value: `{"bid": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

impl Event {
    /// The id it is about, its record's key: a bid's is its auction's.
    fn key(&self) -> i64 {
        match self {
            Event::Person(p) => p.id,
            Event::Auction(a) => a.id,
            Event::Bid(b) => b.auction,
        }
    }

    /// Appends it to `out` as a record's value in `encoding`.
    pub fn encode(&self, encoding: EventEncoding, out: &mut Vec<u8>) {
        match encoding {
            EventEncoding::Json => serde_json::to_writer(out, self).expect("events serialize"),
            EventEncoding::Binary => self.encode_binary(out),
        }
    }

    /// The binary layout (README, "Nexmark"): a tag byte that no UTF-8
    /// text starts with, the numbers as 8 bytes little-endian, each string
    /// but the last as a 4-byte little-endian length and its bytes, and
    /// the last (`extra`) as the rest of the value.
    fn encode_binary(&self, out: &mut Vec<u8>) {
        let (tag, numbers, strings, extra): (u8, &[i64], &[&str], &str) = match self {
            Event::Person(p) => (
                PERSON_TAG,
                &[p.id, p.date_time],
                &[&p.name, &p.email_address, &p.credit_card, &p.city, &p.state],
                &p.extra,
            ),
            Event::Auction(a) => (
                AUCTION_TAG,
                &[
                    a.id,
                    a.initial_bid,
                    a.reserve,
                    a.date_time,
                    a.expires,
                    a.seller,
                    a.category,
                ],
                &[&a.item_name, &a.description],
                &a.extra,
            ),
            Event::Bid(b) => {
                binary_bid_numbers(b.auction, b.bidder, b.price, b.date_time, out);
                out.extend_from_slice(b.extra.as_bytes());
                return;
            }
        };
        binary_numbers(tag, numbers, out);
        for s in strings {
            let len = u32::try_from(s.len()).expect("the generator's strings are short");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(extra.as_bytes());
    }
}

/// A binary bid's tag and numbers; its extra follows.
fn binary_bid_numbers(auction: i64, bidder: i64, price: i64, at: i64, out: &mut Vec<u8>) {
    binary_numbers(BID_TAG, &[auction, bidder, price, at], out);
}

/// A binary event's tag and numbers.
fn binary_numbers(tag: u8, numbers: &[i64], out: &mut Vec<u8>) {
    out.push(tag);
    for n in numbers {
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// Appends one record to `records`: its key, the value `value` writes, its time.
fn push_record(records: &mut Records, key: i64, at: i64, value: impl FnOnce(&mut Vec<u8>)) {
    records
        .data
        .extend_from_slice(itoa::Buffer::new().format(key).as_bytes());
    records.ends.push(records.data.len() as u32);
    value(&mut records.data);
    records.ends.push(records.data.len() as u32);
    records.keyed.push(1);
    records.timestamps.push(at);
}

/// The first byte of a binary event: continuation bytes, which begin no
/// UTF-8 text (so no JSON either).
const PERSON_TAG: u8 = 0x81;
const AUCTION_TAG: u8 = 0x82;
const BID_TAG: u8 = 0x83;

/// The whole stream's events by number, from 0.
#[derive(Debug, Clone, Copy)]
pub struct Generator {
    seed: u64,
    /// Event time between two events.
    delay_us: f64,
}

impl Generator {
    /// Events paced in event time at `rate` per second (0: the Nexmark
    /// suite's 10 M/s), their random numbers mixed with `seed`.
    pub fn new(rate: u64, seed: u64) -> Self {
        let rate = if rate == 0 { UNTHROTTLED_EVENT_RATE } else { rate };
        Generator {
            seed,
            delay_us: 1_000_000.0 / rate as f64,
        }
    }

    /// When the event numbered `number` (from 1) happens.
    fn timestamp(&self, number: i64) -> i64 {
        BASE_TIME_MS + ((number as f64 * self.delay_us) as i64) / 1000
    }

    /// Event `n`'s number (from 1), id, time and random numbers.
    fn draw(&self, n: u64) -> (i64, i64, i64, JavaRandom) {
        let number = n as i64 + 1;
        let id = number + 1;
        (
            number,
            id,
            self.timestamp(number),
            JavaRandom::new(id ^ mix64(self.seed) as i64),
        )
    }

    /// Event `n` of the stream (from 0).
    pub fn event(&self, n: u64) -> Event {
        let (number, id, at, mut rng) = self.draw(n);
        self.drawn(number, id, at, &mut rng)
    }

    /// The event of `id`, numbered `number`, at `at`, from its random numbers.
    fn drawn(&self, number: i64, id: i64, at: i64, rng: &mut JavaRandom) -> Event {
        match id % TOTAL_PROPORTION {
            rem if rem < PERSON_PROPORTION => Event::Person(person(id, rng, at)),
            _ if is_bid(id) => Event::Bid(bid(id, rng, at)),
            _ => Event::Auction(self.auction(number, id, rng, at)),
        }
    }

    /// Appends event `n` to `records` as a record in `encoding`. A binary
    /// bid (most events) is written straight into the batch, its extra
    /// never a string of its own.
    fn append(&self, n: u64, encoding: EventEncoding, records: &mut Records) {
        let (number, id, at, mut rng) = self.draw(n);
        if encoding == EventEncoding::Binary && is_bid(id) {
            let (auction, bidder, price) = bid_numbers(id, &mut rng);
            push_record(records, auction, at, |out| {
                binary_bid_numbers(auction, bidder, price, at, out);
                next_bid_extra(&mut rng, out);
            });
        } else {
            let event = self.drawn(number, id, at, &mut rng);
            push_record(records, event.key(), at, |out| event.encode(encoding, out));
        }
    }

    fn auction(&self, number: i64, id: i64, rng: &mut JavaRandom, at: i64) -> Auction {
        let seller = if rng.next_below(HOT_SELLERS_RATIO) > 0 {
            (last_base0_person_id(id) / 100) * 100
        } else {
            next_base0_person_id(id, rng)
        };
        let category = FIRST_CATEGORY_ID + i64::from(rng.next_below(NUM_CATEGORIES));
        let initial_bid = next_price(rng);
        let events_in_flight = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let horizon = self.timestamp(number + events_in_flight) - at;
        let expires = at + 1 + rng.next_long_below((horizon * 2).max(1));
        let item_name = next_string(rng, 20);
        let description = next_string(rng, 100);
        let reserve = initial_bid + next_price(rng);
        let size = 8 + item_name.len() + description.len() + 40;
        let extra = next_extra(rng, size as i32, AVG_AUCTION_BYTES);
        Auction {
            id: last_base0_auction_id(id) + FIRST_AUCTION_ID,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: at,
            expires,
            seller: seller + FIRST_PERSON_ID,
            category,
            extra,
        }
    }
}

fn person(id: i64, rng: &mut JavaRandom, at: i64) -> Person {
    let first = FIRST_NAMES[rng.next_below(FIRST_NAMES.len() as i32) as usize];
    let last = LAST_NAMES[rng.next_below(LAST_NAMES.len() as i32) as usize];
    let name = format!("{first} {last}");
    let user = next_string(rng, 7);
    let domain = next_string(rng, 5);
    let email_address = format!("{user}@{domain}.com");
    let credit_card = (0..4)
        .map(|_| format!("{:04}", rng.next_below(10_000)))
        .collect::<Vec<_>>()
        .join(" ");
    let city = US_CITIES[rng.next_below(US_CITIES.len() as i32) as usize];
    let state = US_STATES[rng.next_below(US_STATES.len() as i32) as usize];
    let size = 8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
    let extra = next_extra(rng, size as i32, AVG_PERSON_BYTES);
    Person {
        id: last_base0_person_id(id) + FIRST_PERSON_ID,
        name,
        email_address,
        credit_card,
        city: city.to_string(),
        state: state.to_string(),
        date_time: at,
        extra,
    }
}

fn bid(id: i64, rng: &mut JavaRandom, at: i64) -> Bid {
    let (auction, bidder, price) = bid_numbers(id, rng);
    Bid {
        auction,
        bidder,
        price,
        date_time: at,
        extra: {
            let mut extra = Vec::new();
            next_bid_extra(rng, &mut extra);
            ascii(extra)
        },
    }
}

/// Whether event `id` is a bid (most are).
fn is_bid(id: i64) -> bool {
    id % TOTAL_PROPORTION >= PERSON_PROPORTION + AUCTION_PROPORTION
}

/// A bid's padding, its last draw, appended to `out`: the reference counts
/// its other fields as 32 bytes.
fn next_bid_extra(rng: &mut JavaRandom, out: &mut Vec<u8>) {
    next_extra_into(rng, 32, AVG_BID_BYTES, out);
}

/// A bid's auction, bidder and price: what it draws before its extra.
fn bid_numbers(id: i64, rng: &mut JavaRandom) -> (i64, i64, i64) {
    let auction = if rng.next_below(HOT_AUCTION_RATIO) > 0 {
        (last_base0_auction_id(id) / 100) * 100
    } else {
        next_base0_auction_id(id, rng)
    };
    let bidder = if rng.next_below(HOT_BIDDERS_RATIO) > 0 {
        (last_base0_person_id(id) / 100) * 100 + 1
    } else {
        next_base0_person_id(id, rng)
    };
    let price = next_price(rng);
    (auction + FIRST_AUCTION_ID, bidder + FIRST_PERSON_ID, price)
}

/// A task's share of the stream: task `i` of `n` makes events `i, i+n,
/// ...`; the offset is how many it has made.
pub struct Nexmark {
    generator: Generator,
    share: Share,
    /// Events in the whole stream, if it ends.
    events: Option<u64>,
    throttle: Throttle,
    offset: u64,
    encoding: EventEncoding,
}

/// A batch stops growing past this many bytes of values.
const MAX_BATCH_BYTES: usize = 4 << 20;

impl Nexmark {
    /// Task `share`'s events of `generator`'s stream from `offset` on, at
    /// `rate` a second over all tasks (0: unthrottled), `events` in all,
    /// each written in `encoding`.
    pub fn new(
        generator: Generator,
        rate: u64,
        events: Option<u64>,
        encoding: EventEncoding,
        share: Share,
        offset: u64,
    ) -> Self {
        Nexmark {
            generator,
            share,
            events,
            throttle: Throttle::new(rate.div_ceil(u64::from(share.of.max(1))), offset),
            offset,
            encoding,
        }
    }

    /// The stream's number of this task's `nth` event.
    fn number(&self, nth: u64) -> u64 {
        u64::from(self.share.index) + nth * u64::from(self.share.of.max(1))
    }

    /// How many events of the stream are this task's, if it ends.
    fn mine(&self) -> Option<u64> {
        let (index, of) = (u64::from(self.share.index), u64::from(self.share.of.max(1)));
        self.events.map(|events| events.saturating_sub(index).div_ceil(of))
    }
}

impl Source for Nexmark {
    fn next_batch(&mut self, max: usize, until: Instant) -> io::Result<Batch> {
        let mut n = self.throttle.allowed(self.offset, max, until);
        if let Some(mine) = self.mine() {
            n = n.min(mine.saturating_sub(self.offset));
            if self.offset >= mine {
                // The stream has ended: nothing more, ever.
                std::thread::sleep(
                    until
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(50)),
                );
            }
        }
        let mut records = Records::default();
        for nth in self.offset..self.offset + n {
            self.generator.append(self.number(nth), self.encoding, &mut records);
            self.offset += 1;
            if records.data.len() >= MAX_BATCH_BYTES {
                break;
            }
        }
        Ok(Batch::Records(records))
    }

    fn position(&self) -> SourcePosition {
        SourcePosition::at(self.offset)
    }

    fn ended(&self) -> bool {
        self.mine().is_some_and(|mine| self.offset >= mine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_letters_are_the_reference_loop_s() {
        let mut rng = JavaRandom::new(1);
        let edges = [0, 1, -1, 25, 26, -26, 675, i32::MAX, i32::MIN, 308_915_776];
        for rnd in edges.into_iter().chain((0..100_000).map(|_| rng.next_i32())) {
            let mut r = rnd;
            let reference: [u8; 6] = std::array::from_fn(|_| {
                let c = (97 + r % 26) as u8;
                r /= 26;
                c
            });
            assert_eq!(six_letters(rnd), reference, "{rnd}");
        }
    }

    #[test]
    fn java_random_is_java_s() {
        let mut r = JavaRandom::new(42);
        assert_eq!(r.next_i32(), -1_170_105_035);
        assert_eq!(r.next_below(13), 7);
        assert_eq!(r.next_below(16), 10);
        assert_eq!(r.next_below(10_000), 8884);
        assert_eq!(r.next_i64(), 5_694_868_678_511_409_995);
        assert_eq!(r.next_f64(), 0.277_078_490_074_136_65);
        assert_eq!(next_price(&mut JavaRandom::new(2)), 2_437_146);
    }

    /// The reference generator's first events (nexmark/nexmark 558d931,
    /// Apache Beam), at base time 0 and 10,000 events/s.
    #[test]
    fn events_are_the_reference_generator_s() {
        let generator = Generator::new(10_000, 0);
        let shift = |at: i64| at - BASE_TIME_MS;
        let Event::Auction(a) = generator.event(0) else {
            panic!("event id 2 is an auction")
        };
        assert_eq!(
            (
                a.id,
                a.item_name.as_str(),
                a.initial_bid,
                a.reserve,
                a.seller,
                a.category
            ),
            (1001, "z ck w", 25_626_290, 28_805_847, 1000, 12)
        );
        assert_eq!((shift(a.date_time), shift(a.expires)), (0, 202));
        assert!(a.description.starts_with("cwlachrnkfzkygsu edjytotggvasbt z"));
        assert!(a.extra.starts_with(
            "jzlkehMZPLIIwtopffS\\KHLRhdduqtifpeko`KO`ZQK[[_I`H[aTINQKQJMPTYYLOYitqbesrjqlgtpwxmaisefjioILP`O"
        ));
        let Event::Bid(b) = generator.event(2) else {
            panic!("event id 4 is a bid")
        };
        assert_eq!(
            (b.auction, b.bidder, b.price, shift(b.date_time)),
            (1000, 1001, 32_530_001, 0)
        );
        assert_eq!(
            b.extra,
            "fdiysaV^]NLVsbolvyqwgticfdrwdyiyofziYMU\\Z`UaTQO][NX\\RM]WPYTOuwogvszlxjrcNOORM"
        );
        let Event::Bid(b) = generator.event(10) else {
            panic!("event id 12 is a bid")
        };
        assert_eq!(
            (b.auction, b.bidder, b.price, shift(b.date_time)),
            (1000, 1000, 2074, 1)
        );
        let Event::Person(p) = generator.event(48) else {
            panic!("event id 50 is a person")
        };
        assert_eq!(
            (p.id, p.name.as_str(), p.email_address.as_str(), p.credit_card.as_str()),
            (1001, "Sarah Smith", "f  y@yumv.com", "0892 2755 1923 0591")
        );
        assert_eq!(
            (p.city.as_str(), p.state.as_str(), shift(p.date_time)),
            ("Los Angeles", "ID", 4)
        );
        let kinds = (0..1000).map(|n| match generator.event(n) {
            Event::Person(_) => (1, 0, 0),
            Event::Auction(_) => (0, 1, 0),
            Event::Bid(_) => (0, 0, 1),
        });
        let counts = kinds.fold((0, 0, 0), |(p, a, b), (dp, da, db)| (p + dp, a + da, b + db));
        assert_eq!(counts, (20, 60, 920));
        assert_ne!(
            Generator::new(10_000, 1).event(2),
            generator.event(2),
            "another seed, other events"
        );
        assert_ne!(
            Generator::new(10_000, 1).event(1),
            generator.event(2),
            "not the neighbour's"
        );
        assert_ne!(
            Generator::new(10_000, 1 << 48).event(2),
            generator.event(2),
            "all 64 bits count"
        );
    }

    /// `jobs/nexmark` reads a binary event as it reads the same event's
    /// JSON, every field its queries use, strings included.
    #[test]
    fn binary_events_read_as_their_json_does() {
        let generator = Generator::new(10_000, 3);
        let mut kinds = std::collections::BTreeSet::new();
        for n in 0..2_000 {
            let event = generator.event(n);
            let (mut json, mut binary) = (Vec::new(), Vec::new());
            event.encode(EventEncoding::Json, &mut json);
            event.encode(EventEncoding::Binary, &mut binary);
            assert!(binary.len() < json.len(), "{binary:?}");
            let kind = nexmark::model::kind(&binary);
            assert_eq!(kind, nexmark::model::kind(&json));
            kinds.insert(format!("{kind:?}"));
            let read = |value: &[u8]| format!("{:?}", nexmark::model::read(value).unwrap());
            assert_eq!(read(&binary), read(&json), "event {n}");
        }
        assert_eq!(kinds.len(), 3, "persons, auctions and bids: {kinds:?}");
        let mut bid = Vec::new();
        generator.event(2).encode(EventEncoding::Binary, &mut bid);
        for cut in [1, 20, 32] {
            let err = nexmark::model::read(&bid[..cut]).unwrap_err();
            assert!(err.contains("ends early"), "{err}");
        }
        bid.push(0xff);
        assert!(nexmark::model::read(&bid).unwrap_err().contains("not UTF-8"));
    }

    /// The source writes a binary bid straight into its batch: the same
    /// bytes as the event encoded, under the same key and time as in JSON.
    #[test]
    fn a_binary_source_writes_each_event_as_it_encodes() {
        let batch = |encoding| {
            let mut source = Nexmark::new(Generator::new(1_000, 5), 0, Some(300), encoding, Share::WHOLE, 0);
            let Batch::Records(r) = source.next_batch(1_000, Instant::now()).unwrap() else {
                panic!("records")
            };
            r
        };
        let (json, binary) = (batch(EventEncoding::Json), batch(EventEncoding::Binary));
        assert_eq!(binary.timestamps.len(), 300);
        assert_eq!(binary.timestamps, json.timestamps);
        // A batch's keys and values, one after the other, each ending where `ends` says.
        let field = |r: &Records, i: usize| {
            let start = if i == 0 { 0 } else { r.ends[i - 1] as usize };
            r.data[start..r.ends[i] as usize].to_vec()
        };
        for n in 0..300 {
            assert_eq!(field(&binary, 2 * n), field(&json, 2 * n), "event {n}'s key");
            let mut encoded = Vec::new();
            Generator::new(1_000, 5)
                .event(n as u64)
                .encode(EventEncoding::Binary, &mut encoded);
            assert_eq!(field(&binary, 2 * n + 1), encoded, "event {n}");
        }
    }

    #[test]
    fn tasks_share_the_stream_and_a_replay_makes_the_same_events() {
        let records = |source: &mut Nexmark| {
            let Batch::Records(r) = source.next_batch(100, Instant::now()).unwrap() else {
                panic!("records")
            };
            r
        };
        let mut source = Nexmark::new(Generator::new(0, 0), 0, Some(10), EventEncoding::Json, Share::WHOLE, 0);
        assert!(!source.ended());
        let whole = records(&mut source);
        assert_eq!(whole.timestamps.len(), 10, "the stream ends at events=10");
        assert!(source.ended());
        assert!(records(&mut source).timestamps.is_empty());
        let second = records(&mut Nexmark::new(
            Generator::new(0, 0),
            0,
            Some(10),
            EventEncoding::Json,
            Share { index: 1, of: 2 },
            0,
        ));
        assert_eq!(second.timestamps.len(), 5);
        let resumed = records(&mut Nexmark::new(
            Generator::new(0, 0),
            0,
            Some(10),
            EventEncoding::Json,
            Share { index: 1, of: 2 },
            3,
        ));
        assert_eq!(resumed.timestamps, second.timestamps[3..]);
        let value = |r: &Records, i: usize| r.data[r.ends[2 * i] as usize..r.ends[2 * i + 1] as usize].to_vec();
        assert_eq!(value(&second, 4), value(&resumed, 1));
        assert_eq!(value(&second, 0), value(&whole, 1), "task 1 of 2 makes event 1");
        let json: serde_json::Value = serde_json::from_slice(&value(&whole, 2)).unwrap();
        assert_eq!(json["bid"]["auction"], 1000);
        assert_eq!(
            &whole.data[whole.ends[3] as usize..whole.ends[4] as usize],
            b"1000",
            "keyed by auction"
        );
    }
}
