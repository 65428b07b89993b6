//! Why a job refused a record.

use alloc::string::{String, ToString};

use crate::windows::Late;

/// Why a job refused a record: returned from [`crate::Job::process`], the
/// record goes to the job's `--on-error` route (fail the job, skip the
/// record, or the dead-letter sink) with this reason. Any error converts
/// with `?` (a JSON or UTF-8 decode error, a `String`, a `&str`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    reason: String,
    late: bool,
}

impl Error {
    /// A refusal for `reason`.
    pub fn new(reason: impl Into<String>) -> Error {
        Error {
            reason: reason.into(),
            late: false,
        }
    }

    /// A record that came after its window closed (Flink's late data): not
    /// a failure, whatever the job's `--on-error`. It goes to the job's
    /// dead-letter sink (its side output) if it has one, else it is dropped
    /// and counted. A window's [`Late`] converts into one with `?`.
    pub fn late(reason: impl Into<String>) -> Error {
        Error {
            reason: reason.into(),
            late: true,
        }
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the record was late rather than refused.
    pub fn is_late(&self) -> bool {
        self.late
    }
}

impl From<Late> for Error {
    fn from(late: Late) -> Error {
        Error::late(alloc::format!(
            "late: its window starting at {} ms had closed",
            late.window_start
        ))
    }
}

/// `Error` itself is not `Display`, which is what lets every displayable
/// error convert into it (as `anyhow::Error` does for `std::error::Error`).
impl<E: core::fmt::Display> From<E> for Error {
    fn from(e: E) -> Error {
        Error::new(e.to_string())
    }
}
