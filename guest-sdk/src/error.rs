//! Why a job refused a record.

use alloc::string::{String, ToString};

/// Why a job refused a record: returned from [`crate::Job::process`], the
/// record goes to the job's `--on-error` route (fail the job, skip the
/// record, or the dead-letter sink) with this reason. Any error converts
/// with `?` (a JSON or UTF-8 decode error, a `String`, a `&str`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    reason: String,
}

impl Error {
    /// A refusal for `reason`.
    pub fn new(reason: impl Into<String>) -> Error {
        Error { reason: reason.into() }
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// `Error` itself is not `Display`, which is what lets every displayable
/// error convert into it (as `anyhow::Error` does for `std::error::Error`).
impl<E: core::fmt::Display> From<E> for Error {
    fn from(e: E) -> Error {
        Error { reason: e.to_string() }
    }
}
