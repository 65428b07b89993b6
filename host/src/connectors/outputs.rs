//! A job's sinks as one: its `--sink` and, with `--on-error dead-letter:`,
//! the sink its dead letters go to. Both publish at the positions a
//! checkpoint recorded, so a checkpoint's dead letters are exactly-once
//! (where the sink is) like its output.

use std::io;

use super::{Sink, TableShape};
use crate::checkpoint::{SinkPositions, StagedOutput};

/// The sinks of one attempt.
pub struct Outputs {
    main: Box<dyn Sink>,
    dead_letters: Option<Box<dyn Sink>>,
}

impl Outputs {
    /// A job's sinks: its output, and its dead letters if it has a sink for them.
    pub fn new(main: Box<dyn Sink>, dead_letters: Option<Box<dyn Sink>>) -> Outputs {
        Outputs { main, dead_letters }
    }

    /// Where the next output goes on a fresh start (no checkpoint yet).
    pub async fn initial_position(&mut self) -> io::Result<SinkPositions> {
        let main = self.main.initial_position().await?;
        let dead_letters = match &mut self.dead_letters {
            Some(sink) => sink.initial_position().await.map_err(dead_letter_sink)?,
            None => 0,
        };
        Ok(SinkPositions { main, dead_letters })
    }

    /// Publishes one committed checkpoint's output at `at`, the output
    /// first. Doing it twice with the same arguments leaves the same result.
    pub async fn publish(&mut self, at: SinkPositions, output: StagedOutput) -> io::Result<()> {
        self.main.publish(at.main, output.main).await?;
        match &mut self.dead_letters {
            Some(sink) if !output.dead_letters.is_empty() => sink
                .publish(at.dead_letters, output.dead_letters)
                .await
                .map_err(dead_letter_sink),
            _ => Ok(()),
        }
    }

    /// After a restore: publishes the restored checkpoint's output and cuts
    /// each sink after it.
    pub async fn recover(&mut self, at: SinkPositions, output: StagedOutput) -> io::Result<()> {
        self.main.recover(at.main, output.main).await?;
        match &mut self.dead_letters {
            Some(sink) => sink
                .recover(at.dead_letters, output.dead_letters)
                .await
                .map_err(dead_letter_sink),
            None => Ok(()),
        }
    }

    /// The table the job's output goes to, if its sink writes one.
    pub fn table_shape(&self) -> Option<TableShape> {
        self.main.table_shape()
    }

    /// Waits until writes that a cancelled publish or recover left running have landed.
    pub async fn settle(&mut self) {
        self.main.settle().await;
        if let Some(sink) = &mut self.dead_letters {
            sink.settle().await;
        }
    }
}

fn dead_letter_sink(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("dead-letter sink: {e}"))
}
