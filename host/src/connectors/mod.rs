//! Sources and sinks. Sources are replayable from an offset; sinks publish
//! a checkpoint's output only after its pointer is committed, at a position
//! recorded in the checkpoint, so publishing the same checkpoint twice (by
//! a new leader, or a late old one) writes the same bytes at the same place.

pub mod kafka;
mod kafka_sink;
mod lines;
pub mod nexmark;
mod outputs;
pub mod postgres;
mod sink;
mod source;
mod staged;

/// Where a source stands, as a checkpoint records it.
pub use crate::checkpoint::SourcePosition;
pub use lines::encode_batch;
pub use outputs::Outputs;
pub use postgres::{TableShape, Unfit};
pub use sink::{open_sink, Sink};
pub use source::{open_source, Source};
pub use staged::{read_records, OutputFormat, StagedRecord};

/// Whose output a sink holds: sinks that keep their own progress (a
/// database's progress row) keep it per job deployment and output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOwner {
    /// The job's name.
    pub job: String,
    /// Its deployment's uid, with `/dead-letters` for its dead-letter sink.
    pub deployment: String,
}
