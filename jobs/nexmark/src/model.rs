//! The events of `--source nexmark`, read from their records' values,
//! JSON (`{"bid": {...}}`) or binary (`encoding=binary`), borrowing their
//! strings from the record.

use std::borrow::Cow;

use serde::Deserialize;

/// A person who registered.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person<'a> {
    pub id: i64,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub city: Cow<'a, str>,
    #[serde(borrow)]
    pub state: Cow<'a, str>,
    pub date_time: i64,
}

/// An item put up for auction.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Auction {
    pub id: i64,
    pub date_time: i64,
    pub expires: i64,
    pub seller: i64,
    pub category: i64,
}

/// A bid on an auction.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bid<'a> {
    pub auction: i64,
    pub bidder: i64,
    pub price: i64,
    pub date_time: i64,
    #[serde(borrow)]
    pub extra: Cow<'a, str>,
}

/// One event.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event<'a> {
    #[serde(borrow)]
    Person(Person<'a>),
    Auction(Auction),
    #[serde(borrow)]
    Bid(Bid<'a>),
}

/// What a record's value holds, as its first bytes tell: a query skips,
/// unread, the kinds it does not join (anything else is parsed, so a
/// record that is no Nexmark event is refused, not passed over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Person,
    Auction,
    Bid,
    Unknown,
}

pub fn kind(value: &[u8]) -> Kind {
    match value.first() {
        Some(&BID_TAG) => return Kind::Bid,
        Some(&PERSON_TAG) => return Kind::Person,
        Some(&AUCTION_TAG) => return Kind::Auction,
        _ => {}
    }
    if value.starts_with(b"{\"bid\":") {
        Kind::Bid
    } else if value.starts_with(b"{\"person\":") {
        Kind::Person
    } else if value.starts_with(b"{\"auction\":") {
        Kind::Auction
    } else {
        Kind::Unknown
    }
}

/// The first byte of a binary event: a UTF-8 continuation byte, which no
/// text (so no JSON) begins with.
const PERSON_TAG: u8 = 0x81;
const AUCTION_TAG: u8 = 0x82;
const BID_TAG: u8 = 0x83;

/// The event a record's value holds, in either encoding.
pub fn read(value: &[u8]) -> Result<Event<'_>, String> {
    match value.split_first() {
        Some((&tag, fields)) if matches!(tag, PERSON_TAG | AUCTION_TAG | BID_TAG) => binary(tag, Fields(fields)),
        _ => serde_json::from_slice(value).map_err(|e| format!("the value is no Nexmark event: {e}")),
    }
}

/// A binary event (README, "Nexmark"): after the tag, its numbers as 8
/// bytes little-endian, each string but the last as a 4-byte
/// little-endian length and its bytes, and the last (`extra`) the rest.
/// Read in place: nothing is parsed or copied, which is what the encoding
/// is for. Strings no query reads are skipped, their bytes unchecked.
fn binary(tag: u8, mut r: Fields<'_>) -> Result<Event<'_>, String> {
    let event = match tag {
        PERSON_TAG => {
            let (id, date_time) = (r.int()?, r.int()?);
            let name = r.text()?;
            r.skip_text()?; // emailAddress
            r.skip_text()?; // creditCard
            let (city, state) = (r.text()?, r.text()?);
            Event::Person(Person {
                id,
                name: Cow::Borrowed(name),
                city: Cow::Borrowed(city),
                state: Cow::Borrowed(state),
                date_time,
            })
        }
        AUCTION_TAG => {
            let id = r.int()?;
            let (_initial_bid, _reserve) = (r.int()?, r.int()?);
            let (date_time, expires, seller, category) = (r.int()?, r.int()?, r.int()?, r.int()?);
            r.skip_text()?; // itemName
            r.skip_text()?; // description
            Event::Auction(Auction {
                id,
                date_time,
                expires,
                seller,
                category,
            })
        }
        BID_TAG => Event::Bid(Bid {
            auction: r.int()?,
            bidder: r.int()?,
            price: r.int()?,
            date_time: r.int()?,
            extra: Cow::Borrowed(r.rest()?),
        }),
        _ => return Err(format!("the value is no Nexmark event: tag {tag:#04x}")),
    };
    Ok(event)
}

/// The fields of a binary event not yet read.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the value is no Nexmark event: a binary event ends early".to_string());
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn int(&mut self) -> Result<i64, String> {
        let bytes = self.take(8)?;
        Ok(i64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    fn text(&mut self) -> Result<&'a str, String> {
        let bytes = self.text_bytes()?;
        utf8(bytes)
    }

    fn skip_text(&mut self) -> Result<(), String> {
        self.text_bytes().map(drop)
    }

    fn text_bytes(&mut self) -> Result<&'a [u8], String> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        self.take(len as usize)
    }

    fn rest(&mut self) -> Result<&'a str, String> {
        utf8(std::mem::take(&mut self.0))
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("the value is no Nexmark event: a string is not UTF-8: {e}"))
}
