//! Sinks: where a checkpoint's output goes once the checkpoint is committed.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::kafka_sink::{KafkaSinkError, KafkaTopic};
use super::postgres::{Table, TableShape};
use super::SinkOwner;
use crate::spec::SinkSpec;

/// Publishes committed output. Every method may block on a disk or the
/// network, so implementations do their I/O off the async threads.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// Where the next output goes on a fresh start (no checkpoint yet).
    async fn initial_position(&mut self) -> io::Result<u64>;

    /// Publishes one committed checkpoint's `output` at `position`. Doing it
    /// twice with the same arguments leaves the same result.
    async fn publish(&mut self, position: u64, output: Bytes) -> io::Result<()>;

    /// After a restore: publishes the restored checkpoint's output and drops
    /// anything after it, which belonged to no committed checkpoint.
    async fn recover(&mut self, position: u64, output: Bytes) -> io::Result<()>;

    /// Waits until a write that a cancelled `publish` or `recover` left
    /// running has landed: a stopped job's last write must not overlap its
    /// successor's first.
    async fn settle(&mut self) {}

    /// The table the sink writes, for a sink that writes rows of one: the
    /// runner holds each output record up to it. Known once the sink has
    /// reached its server.
    fn table_shape(&self) -> Option<TableShape> {
        None
    }
}

/// Opens the sink a spec names, for `owner`.
pub fn open_sink(spec: &SinkSpec, owner: SinkOwner) -> Box<dyn Sink> {
    match spec {
        SinkSpec::Stdout => Box::new(Stdout),
        SinkSpec::File { path } => Box::new(FileSink {
            path: path.clone(),
            identity: None,
            in_flight: None,
        }),
        SinkSpec::Postgres { url, table, mode } => Box::new(PostgresSink(Table::new(url, table, mode, owner))),
        SinkSpec::Kafka {
            brokers,
            topic,
            delivery,
        } => Box::new(KafkaSink {
            topic: Some(KafkaTopic::new(brokers, topic, *delivery, owner)),
            in_flight: None,
        }),
    }
}

/// Runs blocking sink I/O on tokio's blocking pool.
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("sink I/O did not finish: {e}"))))
}

/// The supervisor's standard output: at-least-once (a restored checkpoint's
/// output is printed again).
struct Stdout;

#[async_trait::async_trait]
impl Sink for Stdout {
    async fn initial_position(&mut self) -> io::Result<u64> {
        Ok(0)
    }

    async fn publish(&mut self, _position: u64, output: Bytes) -> io::Result<()> {
        // A reader that does not keep up (a full pipe) blocks the write.
        off_thread(move || {
            let mut out = io::stdout().lock();
            out.write_all(&output)?;
            out.flush()
        })
        .await
    }

    async fn recover(&mut self, position: u64, output: Bytes) -> io::Result<()> {
        self.publish(position, output).await
    }
}

/// A PostgreSQL table holding each output record once (see `postgres`).
struct PostgresSink(Table);

#[async_trait::async_trait]
impl Sink for PostgresSink {
    async fn initial_position(&mut self) -> io::Result<u64> {
        self.0.position().await.map_err(io::Error::other)
    }

    async fn publish(&mut self, position: u64, output: Bytes) -> io::Result<()> {
        self.0.publish(position, &output).await.map_err(io::Error::other)
    }

    /// The rows past the restored checkpoint stay: the replay's output up
    /// to them is skipped by position, not written again. Connects even
    /// with nothing to write, so the table's shape is known for the run.
    async fn recover(&mut self, position: u64, output: Bytes) -> io::Result<()> {
        self.0.connect().await.map_err(io::Error::other)?;
        self.publish(position, output).await
    }

    fn table_shape(&self) -> Option<TableShape> {
        self.0.shape()
    }
}

/// A Kafka topic holding each output record once (see `kafka_sink`). Its
/// client blocks, so each call runs on the blocking pool, taking the topic
/// with it and handing it back.
struct KafkaSink {
    topic: Option<KafkaTopic>,
    in_flight: Option<tokio::task::JoinHandle<(KafkaTopic, io::Result<u64>)>>,
}

impl KafkaSink {
    /// Runs `call` on the topic off the async threads; a call a dropped
    /// publish left running is waited out first.
    async fn call(
        &mut self,
        call: impl FnOnce(&mut KafkaTopic) -> Result<u64, KafkaSinkError> + Send + 'static,
    ) -> io::Result<u64> {
        self.settle().await;
        let mut topic = self
            .topic
            .take()
            .ok_or_else(|| io::Error::other("the Kafka sink's client was lost with a failed call"))?;
        let stopped = topic.stopped();
        stopped.store(false, Ordering::Relaxed);
        // Dropped with this future (the attempt stopped waiting): the call
        // gives up its retries.
        let _stop_on_drop = StopOnDrop(stopped);
        let task = self.in_flight.insert(tokio::task::spawn_blocking(move || {
            let result = call(&mut topic).map_err(io::Error::other);
            (topic, result)
        }));
        let done = task.await;
        self.in_flight = None;
        let (topic, result) = done.map_err(|e| io::Error::other(format!("sink I/O did not finish: {e}")))?;
        self.topic = Some(topic);
        result
    }
}

/// Destroying librdkafka clients blocks (they wait for their requests and
/// threads): off the async threads too.
impl Drop for KafkaSink {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(topic) = self.topic.take() {
            runtime.spawn_blocking(move || drop(topic));
        }
        // A call that finished unobserved holds the topic in its result.
        if let Some(call) = self.in_flight.take() {
            runtime.spawn(async move {
                if let Ok((topic, _)) = call.await {
                    tokio::task::spawn_blocking(move || drop(topic));
                }
            });
        }
    }
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    async fn initial_position(&mut self) -> io::Result<u64> {
        self.call(KafkaTopic::position).await
    }

    async fn publish(&mut self, position: u64, output: Bytes) -> io::Result<()> {
        self.call(move |topic| topic.publish(position, &output).map(|()| 0))
            .await
            .map(drop)
    }

    /// Nothing to cut: the records past the restored checkpoint are
    /// skipped by position, as in a publish.
    async fn recover(&mut self, position: u64, output: Bytes) -> io::Result<()> {
        self.call(move |topic| topic.recover(position, &output).map(|()| 0))
            .await
            .map(drop)
    }

    async fn settle(&mut self) {
        if let Some(task) = self.in_flight.as_mut() {
            if let Ok((topic, _)) = task.await {
                self.topic = Some(topic);
            }
            self.in_flight = None;
        }
    }
}

/// A file that only ever holds output of committed checkpoints, each event once.
struct FileSink {
    path: String,
    /// Device and inode of the file this sink first wrote: a path that
    /// names another file later was moved or replaced under the job.
    identity: Option<(u64, u64)>,
    /// The blocking write under way, kept here so that a cancelled publish
    /// leaves it for [`Sink::settle`] to wait out.
    in_flight: Option<tokio::task::JoinHandle<io::Result<(u64, u64)>>>,
}

impl FileSink {
    /// Opens the file for a write at `position`, refusing one that was
    /// replaced since this sink first opened it, or that holds fewer bytes
    /// than were published before `position` (it was truncated): writing
    /// there would pad it with NUL bytes.
    fn open_at(path: &str, identity: Option<(u64, u64)>, position: u64) -> io::Result<(File, (u64, u64))> {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("file sink {path}: {e}"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(named)?;
        let meta = file.metadata().map_err(named)?;
        let found = (meta.dev(), meta.ino());
        if identity.is_some_and(|expected| expected != found) {
            return Err(io::Error::other(format!(
                "file sink {path} was moved or replaced while the job ran; weir writes only the file it \
                 started: put the file back, or cancel the job and deploy it again to start a new file"
            )));
        }
        if meta.len() < position {
            return Err(io::Error::other(format!(
                "file sink {path} holds {} bytes but {position} were published to it: it was truncated \
                 while the job ran; restore the file, or cancel the job and deploy it again to start a new file",
                meta.len()
            )));
        }
        Ok((file, found))
    }
}

#[async_trait::async_trait]
impl Sink for FileSink {
    async fn initial_position(&mut self) -> io::Result<u64> {
        let path = self.path.clone();
        off_thread(move || match std::fs::metadata(&path) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io::Error::new(e.kind(), format!("file sink {path}: {e}"))),
        })
        .await
    }

    async fn publish(&mut self, position: u64, output: Bytes) -> io::Result<()> {
        self.write_at(position, output, false).await
    }

    async fn recover(&mut self, position: u64, output: Bytes) -> io::Result<()> {
        self.write_at(position, output, true).await
    }

    async fn settle(&mut self) {
        if let Some(write) = self.in_flight.as_mut() {
            let _ = write.await;
            self.in_flight = None;
        }
    }
}

impl FileSink {
    /// Writes `output` at `position` (and cuts the file there, `truncate`)
    /// on a blocking thread, durably.
    async fn write_at(&mut self, position: u64, output: Bytes, truncate: bool) -> io::Result<()> {
        self.settle().await;
        let (path, identity) = (self.path.clone(), self.identity);
        let write = self.in_flight.insert(tokio::task::spawn_blocking(move || {
            let (file, found) = FileSink::open_at(&path, identity, position)?;
            file.write_all_at(&output, position)?;
            if truncate {
                file.set_len(position + output.len() as u64)?;
            }
            file.sync_data()?;
            Ok(found)
        }));
        let written = write
            .await
            .unwrap_or_else(|e| Err(io::Error::other(format!("sink I/O did not finish: {e}"))));
        self.in_flight = None;
        self.identity = Some(written?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_sink(path: &std::path::Path) -> Box<dyn Sink> {
        let owner = SinkOwner {
            job: "job".into(),
            deployment: "uid".into(),
        };
        open_sink(
            &SinkSpec::File {
                path: path.display().to_string(),
            },
            owner,
        )
    }

    #[tokio::test]
    async fn file_sink_publishing_is_idempotent_and_recovery_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut sink = file_sink(&path);
        let bytes = Bytes::from_static;
        assert_eq!(sink.initial_position().await.unwrap(), 0);
        sink.publish(0, bytes(b"1\n2\n")).await.unwrap();
        sink.publish(4, bytes(b"3\n")).await.unwrap();
        sink.publish(0, bytes(b"1\n2\n")).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"1\n2\n3\n");
        sink.recover(2, bytes(b"2\n")).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"1\n2\n");
        assert_eq!(sink.initial_position().await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_file_sink_truncated_or_replaced_under_the_job_is_refused_not_padded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut sink = file_sink(&path);
        sink.publish(0, Bytes::from_static(b"1\n2\n")).await.unwrap();

        std::fs::write(&path, b"").unwrap();
        let err = sink.publish(4, Bytes::from_static(b"3\n")).await.unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"", "no NUL padding");
        let err = sink.recover(4, Bytes::from_static(b"3\n")).await.unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");

        std::fs::write(&path, b"1\n2\n").unwrap();
        std::fs::rename(&path, dir.path().join("out.1")).unwrap();
        std::fs::write(&path, b"1\n2\n").unwrap();
        let err = sink.publish(4, Bytes::from_static(b"3\n")).await.unwrap_err();
        assert!(err.to_string().contains("moved or replaced"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"1\n2\n");
    }
}
