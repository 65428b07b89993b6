//! The events of `--source nexmark`, as their records' JSON values
//! (`{"bid": {...}}`), read borrowing their strings from the record.

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
