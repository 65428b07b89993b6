//! Carries out the checkpoint-commit rules of `checkpoint::commit` for one
//! attempt: objects to the storage dir, then the pointer to ZooKeeper
//! (fenced), then the output to the sink, one checkpoint at a time. It holds
//! the bytes; the state machine decides what happens to them.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::time::Instant;

use super::error::AttemptError;
use super::runner::Barrier;
use super::{Deployment, LeaderContext};
use crate::checkpoint::commit::{CommitAction, CommitEvent, CommitState};
use crate::checkpoint::{upload_deadline, Checkpoint, CheckpointMeta, CheckpointStore, Pointer};
use crate::connectors::Sink;
use crate::coord::FencedOp;
use crate::metrics::JobMetrics;
use crate::storage::sha256_hex_of;

/// A pointer as read from (or last written to) its znode.
pub struct PointerAt {
    /// Its znode.
    pub path: String,
    /// Its content, less any checkpoints the restore skipped.
    pub pointer: Pointer,
    /// The id the next checkpoint takes: after every one the znode named.
    pub next_id: u64,
    /// The znode version it was read or written at: the next write expects it.
    pub version: i32,
}

/// The commit side of one attempt.
pub struct Committer<'a> {
    ctx: &'a LeaderContext,
    deployment: &'a Deployment,
    job: String,
    metrics: Arc<JobMetrics>,
    store: CheckpointStore,
    pointer_path: String,
    state: CommitState,
    /// Output staged since the last published checkpoint (the state machine
    /// counts the same bytes).
    staged: Vec<u8>,
    /// Records skipped (`--on-error skip`) in the barriers staged, counted
    /// in the metrics once they commit.
    skipped: u64,
    /// The snapshot, source offset and newest event time of the barrier
    /// being committed.
    barrier: Option<(Bytes, u64, Option<i64>)>,
    /// The output of the checkpoint being committed, as uploaded: the
    /// first bytes of `staged`, published once the pointer names it.
    uploaded_output: Bytes,
    /// When the barrier being committed was taken: its duration is a metric
    /// once it commits (queueing behind the previous checkpoint included).
    barrier_taken: Instant,
    /// Bytes the checkpoint being committed writes, another metric.
    checkpoint_bytes: u64,
    sink: Box<dyn Sink>,
    /// How long one checkpoint may take to reach the storage dir.
    upload_deadline: std::time::Duration,
}

impl<'a> Committer<'a> {
    /// A committer for the job of `spec` resuming after `pointer`,
    /// publishing to `sink` from byte `position` on.
    pub fn new(
        ctx: &'a LeaderContext,
        deployment: &'a Deployment,
        store: CheckpointStore,
        pointer: PointerAt,
        sink: Box<dyn Sink>,
        position: u64,
    ) -> Self {
        let spec = &deployment.spec;
        Committer {
            ctx,
            deployment,
            job: spec.name.clone(),
            metrics: ctx.metrics.job(&spec.name),
            store,
            pointer_path: pointer.path,
            state: CommitState::resume(
                ctx.fence.epoch(),
                pointer.pointer,
                pointer.version,
                position,
                pointer.next_id,
            ),
            staged: Vec::new(),
            skipped: 0,
            barrier: None,
            uploaded_output: Bytes::new(),
            barrier_taken: Instant::now(),
            checkpoint_bytes: 0,
            sink,
            upload_deadline: upload_deadline(spec.checkpoint_interval),
        }
    }

    /// Commits one barrier. A storage failure skips this checkpoint (the job
    /// keeps running); a ZooKeeper or sink failure ends the attempt, since the
    /// committed state is then only known to ZooKeeper.
    pub async fn commit(&mut self, barrier: Barrier) -> Result<(), AttemptError> {
        self.staged.extend_from_slice(&barrier.output);
        self.skipped += barrier.skipped;
        self.barrier = Some((
            Bytes::from(barrier.snapshot),
            barrier.source_offset,
            barrier.newest_event_time,
        ));
        self.barrier_taken = barrier.taken;
        let mut actions = VecDeque::from(self.state.step(CommitEvent::Barrier {
            output_len: barrier.output.len() as u64,
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
    /// running has landed.
    pub async fn settle(&mut self) {
        self.sink.settle().await;
    }

    /// Does one action; returns its outcome for the state machine, if it has one.
    async fn carry_out(&mut self, action: CommitAction) -> Result<Option<CommitEvent>, AttemptError> {
        match action {
            CommitAction::Upload {
                checkpoint,
                sink_offset,
                output_len,
            } => {
                let (snapshot, source_offset, newest_event_time) =
                    self.barrier.take().expect("an upload follows its barrier");
                let output = Bytes::copy_from_slice(&self.staged[..output_len as usize]);
                self.uploaded_output = output.clone();
                let checkpoint = Checkpoint {
                    meta: CheckpointMeta {
                        checkpoint,
                        source_offset,
                        newest_event_time,
                        sink_offset,
                        snapshot_sha256: sha256_hex_of(snapshot.clone()).await,
                        output_sha256: sha256_hex_of(output.clone()).await,
                    },
                    snapshot,
                    output,
                };
                self.checkpoint_bytes = (checkpoint.snapshot.len() + checkpoint.output.len()) as u64;
                Ok(Some(match self.store.write(&checkpoint, self.upload_deadline).await {
                    Ok(()) => CommitEvent::Uploaded,
                    Err(e) => {
                        tracing::warn!(
                            job = %self.job,
                            checkpoint = checkpoint.meta.checkpoint.id,
                            "checkpoint failed, the job keeps running and the next checkpoint carries its output: {e}"
                        );
                        CommitEvent::UploadFailed
                    }
                }))
            }
            CommitAction::WritePointer {
                pointer,
                expected_version,
            } => {
                let data = pointer.encode();
                let op = FencedOp::Set {
                    path: &self.pointer_path,
                    data: &data,
                    expected: Some(expected_version),
                };
                match self.ctx.write_job(self.deployment, &[op]).await {
                    Ok(versions) => Ok(Some(CommitEvent::PointerWritten { version: versions[0] })),
                    Err(e) => {
                        self.state.step(CommitEvent::PointerRefused);
                        Err(e)
                    }
                }
            }
            CommitAction::Publish { at, len } => {
                let output = std::mem::take(&mut self.uploaded_output);
                debug_assert_eq!(output.len() as u64, len, "the output published is the one uploaded");
                if let Err(e) = self.sink.publish(at, output).await {
                    self.state.step(CommitEvent::PublishFailed);
                    return Err(AttemptError::Failed(
                        anyhow::Error::new(e).context(format!("publishing at sink byte {at}")),
                    ));
                }
                self.staged.drain(..len as usize);
                let took = self.barrier_taken.elapsed().as_millis() as u64;
                self.metrics.last_checkpoint_duration_ms.set(took as i64);
                self.metrics.last_checkpoint_bytes.set(self.checkpoint_bytes as i64);
                self.metrics.checkpoints_committed.inc();
                self.metrics.records_rejected.inc_by(std::mem::take(&mut self.skipped));
                tracing::debug!(job = %self.job, bytes = len, "checkpoint committed");
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
