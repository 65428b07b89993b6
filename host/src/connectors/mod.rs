//! Sources and sinks. Sources are replayable from an offset; sinks publish
//! a checkpoint's output only after its pointer is committed, at a position
//! recorded in the checkpoint, so publishing the same checkpoint twice (by
//! a new leader, or a late old one) writes the same bytes at the same place.

mod lines;
mod outputs;
mod sink;
mod source;

pub use lines::{encode_batch, encode_dead_letter};
pub use outputs::Outputs;
pub use sink::{open_sink, Sink};
pub use source::{open_source, Source};
