//! Turns barriers into committed checkpoints, one at a time and in order:
//! objects to the storage dir, then the pointer to ZooKeeper (fenced), then
//! the output to the sink. Output of a checkpoint that failed to reach the
//! storage dir is carried into the next one, so none is lost.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::attempt::AttemptError;
use super::runner::Barrier;
use super::LeaderContext;
use crate::checkpoint::{upload_deadline, Checkpoint, CheckpointMeta, CheckpointRef, CheckpointStore, Pointer};
use crate::connectors::Sink;
use crate::metrics::JobMetrics;
use crate::spec::JobSpec;
use crate::storage::sha256_hex;

/// A pointer as read from (or last written to) its znode.
pub struct PointerAt {
    /// Its znode.
    pub path: String,
    /// Its content.
    pub pointer: Pointer,
    /// The znode version it was read or written at: the next write expects it.
    pub version: i32,
}

/// The commit side of one attempt.
pub struct Committer<'a> {
    ctx: &'a LeaderContext,
    job: String,
    metrics: Arc<JobMetrics>,
    store: CheckpointStore,
    pointer: PointerAt,
    next_id: u64,
    /// Bytes of the sink already published: where the next output goes.
    position: u64,
    /// Output staged since the last committed checkpoint.
    carry: Vec<u8>,
    sink: Box<dyn Sink>,
    /// How long one checkpoint may take to reach the storage dir.
    upload_deadline: std::time::Duration,
}

impl<'a> Committer<'a> {
    /// A committer for the job of `spec` resuming after `pointer`,
    /// publishing to `sink` from byte `position` on.
    pub fn new(
        ctx: &'a LeaderContext,
        spec: &JobSpec,
        store: CheckpointStore,
        pointer: PointerAt,
        sink: Box<dyn Sink>,
        position: u64,
    ) -> Self {
        let next_id = pointer.pointer.latest().map_or(1, |c| c.id + 1);
        let metrics = ctx.metrics.job(&spec.name);
        Committer {
            ctx,
            job: spec.name.clone(),
            metrics,
            store,
            pointer,
            next_id,
            position,
            carry: Vec::new(),
            sink,
            upload_deadline: upload_deadline(spec.checkpoint_interval),
        }
    }

    /// Commits one barrier. A storage failure skips this checkpoint (the job
    /// keeps running); a ZooKeeper or sink failure ends the attempt, since the
    /// committed state is then only known to ZooKeeper.
    pub async fn commit(&mut self, barrier: Barrier) -> Result<(), AttemptError> {
        self.carry.extend_from_slice(&barrier.output);
        let checkpoint_ref = CheckpointRef {
            id: self.next_id,
            epoch: self.ctx.fence.epoch(),
            created_ms: barrier.created_ms,
        };
        self.next_id += 1;
        let output = Bytes::from(self.carry.clone());
        let snapshot = Bytes::from(barrier.snapshot);
        let checkpoint = Checkpoint {
            meta: CheckpointMeta {
                checkpoint: checkpoint_ref,
                source_offset: barrier.source_offset,
                sink_offset: self.position,
                snapshot_sha256: sha256_hex(&snapshot),
                output_sha256: sha256_hex(&output),
            },
            snapshot,
            output,
        };
        if let Err(e) = self.store.write(&checkpoint, self.upload_deadline).await {
            self.metrics.checkpoints_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                job = %self.job,
                checkpoint = checkpoint_ref.id,
                "checkpoint failed, the job keeps running and the next checkpoint carries its output: {e}"
            );
            return Ok(());
        }
        let (pointer, dropped) = self.pointer.pointer.advance(checkpoint_ref);
        let stat = self
            .ctx
            .fence
            .set(&self.pointer.path, &pointer.encode(), Some(self.pointer.version))
            .await?;
        self.pointer.pointer = pointer;
        self.pointer.version = stat.version;

        self.sink
            .publish(self.position, &checkpoint.output)
            .map_err(|e| AttemptError::Failed(format!("publishing checkpoint {}: {e}", checkpoint_ref.id)))?;
        self.position += checkpoint.output.len() as u64;
        self.carry.clear();
        self.metrics.checkpoints_committed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            job = %self.job,
            checkpoint = checkpoint_ref.id,
            bytes = checkpoint.output.len(),
            "checkpoint committed"
        );

        for old in dropped {
            if let Err(e) = self.store.delete(old).await {
                tracing::warn!(checkpoint = old.id, "cannot delete a checkpoint past retention: {e}");
            }
        }
        Ok(())
    }
}
