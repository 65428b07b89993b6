//! Carries out the checkpoint-commit rules of `checkpoint::commit` for one
//! attempt: objects to the storage dir, then the pointer to ZooKeeper
//! (fenced), then the output to the sink, one checkpoint at a time. It holds
//! the bytes; the state machine decides what happens to them.

use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::time::Instant;

use super::error::failed;
use super::error::AttemptError;
use super::runner::{Barrier, GuestSnapshot, RecordCounts};
use super::{Task, WorkerContext};
use crate::checkpoint::commit::{CommitAction, CommitEvent, CommitState};
use crate::checkpoint::image::{Chain, ChainEnd, NextImage, Pages};
use crate::checkpoint::{
    upload_deadline, Checkpoint, CheckpointError, CheckpointMeta, CheckpointRef, CheckpointStore, EventTimes,
    ImageMeta, Pointer, SinkPositions, SourcePosition, StagedOutput,
};
use crate::clock::now_ms;
use crate::connectors::kafka::GroupOffsets;
use crate::connectors::Outputs;
use crate::history::CheckpointRecord;
use crate::metrics::JobMetrics;
use crate::spec::SourceSpec;
use crate::storage::{sha256_hex_of, StorageError};

/// How often the wait of a publish under way is shown in its metric.
const SINK_WAIT_STEP: std::time::Duration = std::time::Duration::from_secs(1);

/// Sets its gauge to 0 when dropped.
struct ZeroOnDrop(prometheus_client::metrics::gauge::Gauge);

impl Drop for ZeroOnDrop {
    fn drop(&mut self) {
        self.0.set(0);
    }
}

/// A pointer as read from (or last written to) its znode.
pub struct PointerAt {
    /// Its znode.
    pub path: String,
    /// Its content.
    pub pointer: Pointer,
    /// Which of its retained checkpoints the attempt restored from: the
    /// newer ones were unreadable.
    pub restored_at: usize,
    /// The znode version it was read or written at: the next write expects it.
    pub version: i32,
    /// The restored checkpoint's chain, if it is a memory image: the next
    /// checkpoint's pages are written over it.
    pub image: Option<ChainEnd>,
}

/// The commit side of one attempt.
pub struct Committer<'a> {
    ctx: &'a WorkerContext,
    task: &'a Task,
    job: String,
    metrics: Arc<JobMetrics>,
    store: CheckpointStore,
    pointer_path: String,
    state: CommitState,
    /// Output staged since the last published checkpoint (the state machine
    /// counts the same bytes).
    staged: Vec<u8>,
    /// Dead letters staged since the last published checkpoint.
    staged_dead_letters: Vec<u8>,
    /// What records went through in the barriers staged: counted in the
    /// metrics once they commit.
    counts: RecordCounts,
    /// The source offset and event times of the barrier being committed,
    /// and its snapshot if the SDK's (else its pages are in `images`).
    barrier: Option<(Option<Bytes>, SourcePosition, EventTimes)>,
    /// The guest memory's pages not yet committed, and the chain of images
    /// they go over.
    images: Chain,
    /// The chain the checkpoint being committed ends, if it is an image.
    uploaded_image: Option<ChainEnd>,
    /// The source position and lag of the checkpoint being committed: the
    /// consumer group and the lag metric get them once it is published.
    uploaded_source: (SourcePosition, BTreeMap<u32, i64>),
    source_lag: BTreeMap<u32, i64>,
    /// The Kafka source's consumer group, if it names one.
    group: Option<GroupOffsets>,
    /// The output of the checkpoint being committed, as uploaded: the
    /// first bytes of each stage, published once the pointer names it.
    uploaded_output: StagedOutput,
    /// When the barrier being committed was taken: its duration is a metric
    /// once it commits (queueing behind the previous checkpoint included).
    barrier_taken: Instant,
    /// Bytes the checkpoint being committed writes, another metric.
    checkpoint_bytes: u64,
    /// The checkpoint being committed, for its line in the history.
    uploaded: Option<Uploaded>,
    sink: Outputs,
    /// How long one checkpoint may take to reach the storage dir.
    upload_deadline: std::time::Duration,
}

impl<'a> Committer<'a> {
    /// A committer for the job of `spec` resuming after `pointer`,
    /// publishing to `sink` from `position` on.
    pub fn new(
        ctx: &'a WorkerContext,
        task: &'a Task,
        store: CheckpointStore,
        pointer: PointerAt,
        sink: Outputs,
        position: SinkPositions,
    ) -> Self {
        let spec = &task.spec;
        Committer {
            ctx,
            task,
            job: task.label(),
            metrics: ctx.metrics.job(&spec.name),
            store,
            pointer_path: pointer.path,
            state: CommitState::resume(
                task.generation,
                &pointer.pointer,
                pointer.restored_at,
                pointer.version,
                position,
            ),
            staged: Vec::new(),
            staged_dead_letters: Vec::new(),
            counts: RecordCounts::default(),
            barrier: None,
            images: Chain::after(pointer.image),
            uploaded_image: None,
            uploaded_source: Default::default(),
            source_lag: BTreeMap::new(),
            group: group_offsets(&spec.source),
            uploaded_output: StagedOutput::default(),
            barrier_taken: Instant::now(),
            checkpoint_bytes: 0,
            uploaded: None,
            sink,
            upload_deadline: upload_deadline(spec.checkpoint_interval),
        }
    }

    /// Commits one barrier. A storage failure skips this checkpoint (the job
    /// keeps running); a ZooKeeper or sink failure ends the attempt, since the
    /// committed state is then only known to ZooKeeper.
    pub async fn commit(&mut self, barrier: Barrier) -> Result<(), AttemptError> {
        self.staged.extend_from_slice(&barrier.output);
        self.staged_dead_letters.extend_from_slice(&barrier.dead_letters);
        self.counts += barrier.counts;
        let snapshot = match barrier.state {
            GuestSnapshot::Serialized(snapshot) => {
                self.images.serialized();
                Some(Bytes::from(snapshot))
            }
            GuestSnapshot::Pages { pages, whole } => {
                self.images.add(pages, whole);
                None
            }
        };
        self.barrier = Some((snapshot, barrier.source_position, barrier.event_times));
        self.barrier_taken = barrier.taken;
        self.source_lag = barrier.source_lag;
        let mut actions = VecDeque::from(self.state.step(CommitEvent::Barrier {
            output_len: SinkPositions {
                main: barrier.output.len() as u64,
                dead_letters: barrier.dead_letters.len() as u64,
            },
            created_ms: barrier.created_ms,
        }));
        while let Some(action) = actions.pop_front() {
            if let Some(event) = self.carry_out(action).await? {
                actions.extend(self.state.step(event));
            }
        }
        Ok(())
    }

    /// Waits until a publish that a dropped [`Committer::commit`] left
    /// running has landed. A checkpoint whose pointer was written when a
    /// stop cut its publish short is committed (the next attempt publishes
    /// it again), and is counted and put in the history as such.
    pub async fn settle(&mut self) {
        self.sink.settle().await;
        if self.uploaded.as_ref().is_some_and(|u| u.pointer_written) {
            self.note_committed();
        }
    }

    /// The metrics and the history of a committed checkpoint.
    fn note_committed(&mut self) {
        let took = self.barrier_taken.elapsed().as_millis() as u64;
        self.metrics.last_checkpoint_duration_ms.set(took as i64);
        self.metrics.last_checkpoint_bytes.set(self.checkpoint_bytes as i64);
        self.metrics.checkpoints_committed.inc();
        record(self.ctx, self.task, self.uploaded.take(), None);
        let counts = std::mem::take(&mut self.counts);
        self.metrics.records_rejected.inc_by(counts.rejected);
        self.metrics.records_late.inc_by(counts.late);
        self.metrics
            .count_records(self.task.share.index, counts.records_in, counts.records_out);
        self.metrics.last_checkpoint_committed_ms.set(now_ms() as i64);
        let (position, lag) = std::mem::take(&mut self.uploaded_source);
        self.metrics.set_source_lag(&lag);
        if let Some(group) = &self.group {
            group.commit(&position.partitions);
        }
    }

    /// Does one action; returns its outcome for the state machine, if it has one.
    async fn carry_out(&mut self, action: CommitAction) -> Result<Option<CommitEvent>, AttemptError> {
        match action {
            CommitAction::Upload {
                checkpoint,
                sink_offset,
                output_len,
            } => {
                let (snapshot, source_position, event_times) =
                    self.barrier.take().expect("an upload follows its barrier");
                let (snapshot, image) = match snapshot {
                    Some(snapshot) => (snapshot, None),
                    None => {
                        let next = self.images.next().expect("a barrier brings a snapshot or pages");
                        match self.image(next).await {
                            Ok((snapshot, image)) => (snapshot, Some(image)),
                            // A lost link: the restore falls back past it, and
                            // the next attempt's first image is whole.
                            Err(
                                e @ (CheckpointError::Corrupt { .. }
                                | CheckpointError::Storage(StorageError::NotFound { .. })),
                            ) => {
                                return Err(failed(anyhow::Error::new(e).context("compacting the memory images")));
                            }
                            Err(e) => {
                                tracing::warn!(
                                    job = %self.job,
                                    checkpoint = checkpoint.id,
                                    "checkpoint failed compacting the memory images, the job keeps running and the next checkpoint carries its output and pages: {e}"
                                );
                                self.images.failed();
                                return Ok(Some(CommitEvent::UploadFailed));
                            }
                        }
                    }
                };
                let image_base = image
                    .as_ref()
                    .and_then(|i| i.over)
                    .map(|o| o.image_base.unwrap_or(o.id));
                let checkpoint = CheckpointRef {
                    image_base,
                    ..checkpoint
                };
                self.uploaded_source = (source_position.clone(), std::mem::take(&mut self.source_lag));
                let output = StagedOutput {
                    main: Bytes::copy_from_slice(&self.staged[..output_len.main as usize]),
                    dead_letters: Bytes::copy_from_slice(&self.staged_dead_letters[..output_len.dead_letters as usize]),
                };
                self.uploaded_output = output.clone();
                let dead_letters_sha256 = match output.dead_letters.is_empty() {
                    true => None,
                    false => Some(sha256_hex_of(output.dead_letters.clone()).await),
                };
                let checkpoint = Checkpoint {
                    meta: CheckpointMeta {
                        checkpoint,
                        source_offset: source_position.offset,
                        source_partitions: source_position.partitions,
                        event_times,
                        sink_offset: sink_offset.main,
                        dead_letter_offset: sink_offset.dead_letters,
                        snapshot_sha256: sha256_hex_of(snapshot.clone()).await,
                        image,
                        output_sha256: sha256_hex_of(output.main.clone()).await,
                        dead_letters_sha256,
                    },
                    snapshot,
                    memory: None,
                    output,
                };
                self.uploaded_image = ChainEnd::of(&checkpoint.meta);
                let output_len = checkpoint.output.len();
                self.checkpoint_bytes = checkpoint.snapshot.len() as u64 + output_len.main + output_len.dead_letters;
                self.uploaded = Some(Uploaded {
                    checkpoint: checkpoint.meta.checkpoint,
                    barrier_taken: self.barrier_taken,
                    bytes: self.checkpoint_bytes,
                    pointer_written: false,
                });
                Ok(Some(match self.store.write(&checkpoint, self.upload_deadline).await {
                    Ok(()) => CommitEvent::Uploaded { image_base },
                    Err(e) => {
                        self.images.failed();
                        tracing::warn!(
                            job = %self.job,
                            checkpoint = checkpoint.meta.checkpoint.id,
                            "checkpoint failed, the job keeps running and the next checkpoint carries its output: {e}"
                        );
                        record(self.ctx, self.task, self.uploaded.take(), Some(e.to_string()));
                        CommitEvent::UploadFailed
                    }
                }))
            }
            CommitAction::WritePointer {
                pointer,
                expected_version,
            } => {
                let written = self
                    .ctx
                    .write_pointer(self.task, &self.pointer_path, pointer.encode(), expected_version)
                    .await;
                match written {
                    Ok(version) => {
                        self.images.committed(self.uploaded_image.take());
                        if let Some(uploaded) = &mut self.uploaded {
                            uploaded.pointer_written = true;
                        }
                        Ok(Some(CommitEvent::PointerWritten { version }))
                    }
                    Err(e) => {
                        self.state.step(CommitEvent::PointerRefused);
                        let why = format!("its pointer was not written: {e}");
                        record(self.ctx, self.task, self.uploaded.take(), Some(why));
                        Err(e)
                    }
                }
            }
            CommitAction::Publish { at, len } => {
                let output = std::mem::take(&mut self.uploaded_output);
                debug_assert_eq!(output.len(), len, "the output published is the one uploaded");
                let started = Instant::now();
                // Back to 0 however the publish ends, dropped with a stop included.
                let _waiting = ZeroOnDrop(self.metrics.sink_wait_ms.clone());
                let published = {
                    let publish = self.sink.publish(at, output);
                    tokio::pin!(publish);
                    loop {
                        tokio::select! {
                            biased;
                            result = &mut publish => break result,
                            () = tokio::time::sleep(SINK_WAIT_STEP) => {
                                self.metrics.sink_wait_ms.set(started.elapsed().as_millis() as i64);
                            }
                        }
                    }
                };
                if let Err(e) = published {
                    self.state.step(CommitEvent::PublishFailed);
                    let why = format!("its output was not published: {e}");
                    record(self.ctx, self.task, self.uploaded.take(), Some(why));
                    return Err(AttemptError::Failed(anyhow::Error::new(e).context(format!(
                        "publishing at sink byte {} (dead letters: {})",
                        at.main, at.dead_letters
                    ))));
                }
                self.staged.drain(..len.main as usize);
                self.staged_dead_letters.drain(..len.dead_letters as usize);
                self.metrics
                    .last_publish_duration_ms
                    .set(started.elapsed().as_millis() as i64);
                self.note_committed();
                tracing::debug!(job = %self.job, bytes = len.main, dead_letters = len.dead_letters, "checkpoint committed");
                Ok(Some(CommitEvent::Published))
            }
            CommitAction::Delete(old) => {
                // Best effort, and bounded: a hung storage dir must not hold the job up here.
                match tokio::time::timeout(self.upload_deadline, self.store.delete(old)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(checkpoint = old.id, "cannot delete an unneeded checkpoint: {e}"),
                    Err(_) => tracing::warn!(checkpoint = old.id, "deleting an unneeded checkpoint timed out"),
                }
                Ok(None)
            }
            CommitAction::CountFailure => {
                self.metrics.checkpoints_failed.inc();
                Ok(None)
            }
            CommitAction::EndAttempt => Ok(None),
        }
    }
}

impl Committer<'_> {
    /// The snapshot object and meta of the next image. Compacting reads
    /// the chain back.
    async fn image(&mut self, next: NextImage) -> Result<(Bytes, ImageMeta), CheckpointError> {
        let (snapshot, over) = match next {
            NextImage::Whole(pages) => (pages.encode(), None),
            NextImage::Over { over, pages } => (pages.encode(), Some(over)),
            NextImage::Compact { over, pages } => {
                // The chain's images only: the checkpoints' output stays unread.
                let (meta, snapshot) = self.store.read_state(over.checkpoint).await?;
                let memory = self.store.read_memory(&meta, &snapshot).await?;
                let whole = crate::storage::cpu_bound(memory.len(), move || {
                    let mut memory = memory;
                    pages.apply(&mut memory);
                    Pages::whole(&memory).encode()
                })
                .await
                .map_err(|e| CheckpointError::Corrupt {
                    what: format!("the memory images up to checkpoint {}", over.checkpoint.id),
                    reason: format!("compacting them failed: {e}"),
                })?;
                (whole, None)
            }
        };
        let meta = ImageMeta::over(&self.task.spec.module_sha256, over, snapshot.len() as u64);
        Ok((Bytes::from(snapshot), meta))
    }
}

/// The consumer group a Kafka source names, if it names one and a client
/// for it can be made (else a warning: it only serves monitoring).
fn group_offsets(source: &SourceSpec) -> Option<GroupOffsets> {
    let SourceSpec::Kafka {
        brokers,
        topic,
        group: Some(group),
        ..
    } = source
    else {
        return None;
    };
    GroupOffsets::new(brokers, topic, group)
        .inspect_err(|e| tracing::warn!("the checkpoints' offsets will not reach the consumer group: {e}"))
        .ok()
}

/// The checkpoint being committed, as its line in the history needs it.
struct Uploaded {
    checkpoint: CheckpointRef,
    barrier_taken: Instant,
    bytes: u64,
    /// Its pointer is in ZooKeeper: it is committed, published or not.
    pointer_written: bool,
}

/// Puts a checkpoint that committed (no error) or failed in the
/// supervisor's history.
fn record(ctx: &WorkerContext, task: &Task, uploaded: Option<Uploaded>, error: Option<String>) {
    let Some(Uploaded {
        checkpoint,
        barrier_taken,
        bytes,
        ..
    }) = uploaded
    else {
        return;
    };
    let record = CheckpointRecord {
        task: task.share.index,
        id: checkpoint.id,
        epoch: checkpoint.epoch,
        started_ms: checkpoint.created_ms,
        duration_ms: barrier_taken.elapsed().as_millis() as u64,
        bytes,
        result: if error.is_none() { "committed" } else { "failed" },
        error,
    };
    ctx.history.checkpoint(&task.spec.name, record);
}
