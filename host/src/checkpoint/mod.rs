//! Checkpoints: what one holds, where it lives in the storage dir, and how it
//! is verified on restore. A checkpoint is written to storage first and only
//! then named by the pointer in ZooKeeper; a checkpoint without a pointer does
//! not exist. The pointer keeps the newest [`RETAINED`] so a restore can fall
//! back when the newest is unreadable.

pub mod commit;
pub mod image;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::storage::{sha256_hex_of, Storage, StorageError};

/// How long a checkpoint may take to reach the storage dir, for a given
/// interval: ten intervals, and never less than ten seconds.
pub fn upload_deadline(interval: Duration) -> Duration {
    (interval * 10).max(Duration::from_secs(10))
}

/// How many committed checkpoints are kept per job.
pub const RETAINED: usize = 3;

/// The longest chain of memory images a restore reads: a checkpoint is a
/// whole image again once its chain would be longer (or its bytes more
/// than the memory's).
pub const MAX_LINKS: usize = 256;

/// One committed checkpoint, as named by the pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// Sequence number, increasing across leaders.
    pub id: u64,
    /// The generation of the task's assignment that wrote it.
    pub epoch: u64,
    /// When its barrier was taken (ms since the Unix epoch).
    pub created_ms: u64,
    /// For pages of guest memory written over earlier checkpoints: the id
    /// of the whole image their chain starts at. None: it restores alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_base: Option<u64>,
}

impl CheckpointRef {
    /// The oldest checkpoint a restore from this one reads.
    fn chain_start(&self) -> u64 {
        self.image_base.unwrap_or(self.id)
    }
}

/// The content of `jobs/<name>/checkpoint` in ZooKeeper.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// Committed checkpoints, newest first: the newest [`RETAINED`], and
    /// when those are all pages over one whole image, the newest whole one
    /// before it, to fall back to if a link of their chain is lost.
    pub retained: Vec<CheckpointRef>,
    /// Older checkpoints a retained one's pages are written over: kept,
    /// never restored from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<CheckpointRef>,
}

impl Pointer {
    /// Decodes a pointer znode; an empty node means "no checkpoint yet".
    pub fn decode(data: &[u8]) -> Result<Pointer, CheckpointError> {
        if data.is_empty() {
            return Ok(Pointer::default());
        }
        serde_json::from_slice(data).map_err(|e| CheckpointError::Corrupt {
            what: "checkpoint pointer".into(),
            reason: e.to_string(),
        })
    }

    /// Encodes for the znode.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("pointer serializes")
    }

    /// The newest committed checkpoint.
    pub fn latest(&self) -> Option<CheckpointRef> {
        self.retained.first().copied()
    }

    /// The pointer for an attempt restored from `retained[index]`, and the
    /// checkpoints it drops: the newer ones the restore skipped
    /// (unreadable), so no later restore can pick one whose output the
    /// restored attempt has cut off the sink, and the links only they were
    /// written over.
    pub fn restored_from(&self, index: usize) -> (Pointer, Vec<CheckpointRef>) {
        let retained = self.retained.get(index..).unwrap_or_default().to_vec();
        let links = Pointer::links_of(&retained, self.links.iter().copied());
        let dropped = self
            .retained
            .iter()
            .chain(&self.links)
            .filter(|c| !retained.contains(c) && !links.contains(c))
            .copied()
            .collect();
        (Pointer { retained, links }, dropped)
    }

    /// Of `candidates`, the checkpoints that some of `retained` is written
    /// over: those committed between its chain's start and itself.
    fn links_of(retained: &[CheckpointRef], candidates: impl Iterator<Item = CheckpointRef>) -> Vec<CheckpointRef> {
        candidates
            .filter(|c| !retained.contains(c))
            .filter(|c| retained.iter().any(|r| (r.chain_start()..r.id).contains(&c.id)))
            .collect()
    }

    /// The id of the checkpoint after every one this pointer has named.
    pub fn next_id(&self) -> u64 {
        self.latest().map_or(1, |c| c.id + 1)
    }

    /// The pointer after committing `newest`, and the checkpoints it drops.
    ///
    /// A chain's links are committed one after another (each checkpoint's
    /// pages are written over the one committed before it), so everything
    /// committed from the oldest retained chain's start on is needed.
    pub fn advance(&self, newest: CheckpointRef) -> (Pointer, Vec<CheckpointRef>) {
        let mut committed = vec![newest];
        committed.extend(self.retained.iter().chain(&self.links).copied());
        committed.sort_by_key(|c| std::cmp::Reverse(c.id));
        committed.dedup();
        let mut retained: Vec<CheckpointRef> = committed.iter().take(RETAINED).copied().collect();
        // Chains with different starts share no link; if all the retained
        // share one, losing it must leave something to restore.
        let start = retained.iter().map(CheckpointRef::chain_start).min().unwrap_or(0);
        if retained.iter().all(|c| c.chain_start() == start) && retained.iter().any(|c| c.image_base.is_some()) {
            let fallback = committed.iter().find(|c| c.id < start && c.image_base.is_none());
            retained.extend(fallback.copied());
        }
        let links = Pointer::links_of(&retained, committed.iter().copied());
        let dropped = committed
            .into_iter()
            .filter(|c| !retained.contains(c) && !links.contains(c))
            .collect();
        (Pointer { retained, links }, dropped)
    }
}

/// A checkpoint's metadata, `meta.json` beside its snapshot and output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Which checkpoint this is.
    pub checkpoint: CheckpointRef,
    /// Source offset just after the last event the snapshot includes.
    pub source_offset: u64,
    /// For a source with partitions: the next offset of each.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_partitions: BTreeMap<u32, i64>,
    /// Where the job's watermark stood, if it has one.
    #[serde(default, skip_serializing_if = "EventTimes::is_empty")]
    pub event_times: EventTimes,
    /// Sink position (bytes already published) before this checkpoint's output.
    pub sink_offset: u64,
    /// Dead-letter sink position before this checkpoint's dead letters.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dead_letter_offset: u64,
    /// sha256 of the guest snapshot.
    pub snapshot_sha256: String,
    /// Set when the snapshot is pages of the guest's memory rather than
    /// the SDK's serialized state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageMeta>,
    /// sha256 of the staged sink output.
    pub output_sha256: String,
    /// sha256 of the staged dead letters, when there are any (a checkpoint
    /// without has no such object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letters_sha256: Option<String>,
}

/// What a checkpoint of guest memory pages is, beside `meta.json`'s other fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    /// The module whose memory it is: it restores into no other.
    pub module_sha256: String,
    /// The checkpoint its pages are written over; none: a whole image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over: Option<CheckpointRef>,
    /// Checkpoints a restore from it reads, itself included.
    pub links: u32,
    /// Bytes of their snapshots, its own included.
    pub chain_bytes: u64,
}

/// Where a source stands, just after the last record a snapshot includes:
/// one offset (a sequence's count, a file's byte), or the next offset of
/// each partition (Kafka's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcePosition {
    /// The offset of a source without partitions.
    pub offset: u64,
    /// The next offset of each partition.
    pub partitions: BTreeMap<u32, i64>,
}

impl SourcePosition {
    /// The position of a source without partitions, at `offset`.
    pub fn at(offset: u64) -> Self {
        SourcePosition {
            offset,
            partitions: BTreeMap::new(),
        }
    }
}

impl std::fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.partitions.is_empty() {
            return write!(f, "{}", self.offset);
        }
        let parts: Vec<String> = self.partitions.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        write!(f, "partition:offset {}", parts.join(","))
    }
}

/// Where a job's watermark stood at a checkpoint: the newest event time of
/// each source partition (0 for a source without) and the watermark given
/// out, which a restore must not go back from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTimes {
    /// Newest event time per partition.
    #[serde(default)]
    pub newest: BTreeMap<u32, i64>,
    /// The watermark.
    #[serde(default)]
    pub watermark: Option<i64>,
}

impl EventTimes {
    /// Whether there is nothing to record (a job without a watermark).
    pub fn is_empty(&self) -> bool {
        self.newest.is_empty() && self.watermark.is_none()
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl CheckpointMeta {
    /// Where the source resumes.
    pub fn source_position(&self) -> SourcePosition {
        SourcePosition {
            offset: self.source_offset,
            partitions: self.source_partitions.clone(),
        }
    }

    /// Where this checkpoint's output starts in each sink.
    pub fn sink_positions(&self) -> SinkPositions {
        SinkPositions {
            main: self.sink_offset,
            dead_letters: self.dead_letter_offset,
        }
    }
}

/// How far a job's two outputs go, each in its own sink's bytes: the
/// records it emits and the dead letters (records it refused, and late
/// ones). A position, or a length of staged output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkPositions {
    /// The job's `--sink`.
    pub main: u64,
    /// Its `--on-error dead-letter:SINK`.
    pub dead_letters: u64,
}

impl std::ops::Add for SinkPositions {
    type Output = SinkPositions;

    fn add(self, other: SinkPositions) -> SinkPositions {
        SinkPositions {
            main: self.main + other.main,
            dead_letters: self.dead_letters + other.dead_letters,
        }
    }
}

impl std::ops::Sub for SinkPositions {
    type Output = SinkPositions;

    fn sub(self, other: SinkPositions) -> SinkPositions {
        SinkPositions {
            main: self.main - other.main,
            dead_letters: self.dead_letters - other.dead_letters,
        }
    }
}

/// The output a checkpoint carries, for each sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StagedOutput {
    /// For the job's `--sink`.
    pub main: Bytes,
    /// For its dead-letter sink.
    pub dead_letters: Bytes,
}

impl StagedOutput {
    /// How many bytes each sink gets.
    pub fn len(&self) -> SinkPositions {
        SinkPositions {
            main: self.main.len() as u64,
            dead_letters: self.dead_letters.len() as u64,
        }
    }
}

impl CheckpointMeta {
    /// Decodes `meta.json`; any malformed input is an error, never a panic.
    pub fn decode(raw: &[u8]) -> Result<CheckpointMeta, String> {
        serde_json::from_slice(raw).map_err(|e| e.to_string())
    }
}

/// Failures reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The storage dir failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Writing the checkpoint took longer than its deadline.
    #[error("writing the checkpoint took longer than {after:?}; the storage dir is too slow")]
    Timeout {
        /// The deadline.
        after: Duration,
    },
    /// An object of this checkpoint already exists: an earlier attempt wrote
    /// it and failed before naming it.
    #[error("{path} already exists (left by an earlier attempt that never committed it)")]
    AlreadyWritten {
        /// The object.
        path: String,
    },
    /// An object is missing, unreadable or its checksum does not match:
    /// reading it again will not help.
    #[error("{what} is corrupt: {reason}")]
    Corrupt {
        /// The object.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A checkpoint with its content, as taken at a barrier or read back on restore.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Metadata.
    pub meta: CheckpointMeta,
    /// The guest's snapshot: the SDK's serialized state, or with
    /// `meta.image`, pages of its memory.
    pub snapshot: Bytes,
    /// With `meta.image`, once read back for a restore: the guest's whole
    /// memory ([`CheckpointStore::read_memory`]).
    pub memory: Option<Bytes>,
    /// Output staged since the previous committed checkpoint, to be
    /// published once this checkpoint's pointer is committed.
    pub output: StagedOutput,
}

/// Where a job deployment's checkpoints live: `checkpoints/<job>/<uid>/<id>-<epoch>`.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    storage: Storage,
    prefix: String,
}

impl CheckpointStore {
    /// The checkpoints of deployment `uid` of job `job`.
    pub fn new(storage: Storage, job: &str, uid: &str) -> Self {
        CheckpointStore::at(storage, format!("checkpoints/{job}/{uid}"))
    }

    /// Checkpoints kept under `prefix`, as a savepoint keeps its tasks'.
    pub fn at(storage: Storage, prefix: String) -> Self {
        CheckpointStore { storage, prefix }
    }

    fn dir(&self, c: CheckpointRef) -> String {
        format!("{}/{}-{}", self.prefix, c.id, c.epoch)
    }

    /// Writes its objects, metadata last, giving up after `deadline`
    /// (a slow storage dir fails the checkpoint rather than stalling the job).
    /// Create-only: an existing object is never replaced.
    pub async fn write(&self, checkpoint: &Checkpoint, deadline: Duration) -> Result<(), CheckpointError> {
        tokio::time::timeout(deadline, self.write_objects(checkpoint, false))
            .await
            .map_err(|_| CheckpointError::Timeout { after: deadline })?
    }

    /// Writes its objects as [`CheckpointStore::write`] does, keeping any
    /// already there with the same bytes: a copy made again after one cut
    /// short (a savepoint's), never a commit.
    pub async fn write_again(&self, checkpoint: &Checkpoint, deadline: Duration) -> Result<(), CheckpointError> {
        tokio::time::timeout(deadline, self.write_objects(checkpoint, true))
            .await
            .map_err(|_| CheckpointError::Timeout { after: deadline })?
    }

    async fn write_objects(&self, checkpoint: &Checkpoint, same_kept: bool) -> Result<(), CheckpointError> {
        let dir = self.dir(checkpoint.meta.checkpoint);
        let meta = serde_json::to_vec(&checkpoint.meta).expect("meta serializes");
        let dead_letters = (checkpoint.meta.dead_letters_sha256.is_some())
            .then(|| ("dead-letters", checkpoint.output.dead_letters.clone()));
        let objects = [
            Some(("snapshot", checkpoint.snapshot.clone())),
            Some(("output", checkpoint.output.main.clone())),
            dead_letters,
            Some(("meta.json", meta.into())),
        ];
        for (name, bytes) in objects.into_iter().flatten() {
            let path = format!("{dir}/{name}");
            // An earlier attempt of this leader may have left an unnamed
            // checkpoint with this id: its objects are not ours to name.
            let written = self.storage.put_if_absent(&path, bytes.clone()).await?;
            let kept = !written && same_kept && self.storage.get(&path).await? == bytes;
            if !written && !kept {
                return Err(CheckpointError::AlreadyWritten { path });
            }
        }
        Ok(())
    }

    /// Reads a checkpoint back and verifies its checksums.
    pub async fn read(&self, c: CheckpointRef) -> Result<Checkpoint, CheckpointError> {
        let (meta, snapshot) = self.read_state(c).await?;
        let dir = self.dir(c);
        let main = self
            .read_verified(&format!("{dir}/output"), &meta.output_sha256)
            .await?;
        let dead_letters = match &meta.dead_letters_sha256 {
            Some(sha256) => self.read_verified(&format!("{dir}/dead-letters"), sha256).await?,
            None => Bytes::new(),
        };
        Ok(Checkpoint {
            meta,
            snapshot,
            memory: None,
            output: StagedOutput { main, dead_letters },
        })
    }

    /// A checkpoint's meta and verified snapshot, without its output: what
    /// a chain of memory images needs of each link.
    pub async fn read_state(&self, c: CheckpointRef) -> Result<(CheckpointMeta, Bytes), CheckpointError> {
        let dir = self.dir(c);
        let raw = self.storage.get(&format!("{dir}/meta.json")).await?;
        let meta = CheckpointMeta::decode(&raw).map_err(|reason| CheckpointError::Corrupt {
            what: format!("{dir}/meta.json"),
            reason,
        })?;
        if meta.checkpoint.id != c.id || meta.checkpoint.epoch != c.epoch {
            return Err(CheckpointError::Corrupt {
                what: format!("{dir}/meta.json"),
                reason: "names another checkpoint".into(),
            });
        }
        let snapshot = self
            .read_verified(&format!("{dir}/snapshot"), &meta.snapshot_sha256)
            .await?;
        Ok((meta, snapshot))
    }

    async fn read_verified(&self, path: &str, sha256: &str) -> Result<Bytes, CheckpointError> {
        let bytes = self.storage.get(path).await?;
        let actual = sha256_hex_of(bytes.clone()).await;
        if actual != sha256 {
            return Err(CheckpointError::Corrupt {
                what: path.to_string(),
                reason: format!("sha256 {actual}, expected {sha256}"),
            });
        }
        Ok(bytes)
    }

    /// The guest memory a checkpoint of pages stands for: its chain read
    /// back, whole image first, each link's checksum verified. A missing
    /// or corrupt link makes the whole checkpoint corrupt, so a restore
    /// falls back as it would for the checkpoint itself.
    pub async fn read_memory(&self, meta: &CheckpointMeta, snapshot: &Bytes) -> Result<Vec<u8>, CheckpointError> {
        let mut chain = vec![(meta.clone(), snapshot.clone())];
        while let Some(over) = chain.last().and_then(|(meta, _)| meta.image.as_ref()?.over) {
            let newer = &chain.last().expect("not empty").0;
            if over.id >= newer.checkpoint.id || chain.len() > MAX_LINKS {
                return Err(CheckpointError::Corrupt {
                    what: format!("{}/meta.json", self.dir(newer.checkpoint)),
                    reason: format!(
                        "its chain of images does not lead back to a whole one (over {})",
                        over.id
                    ),
                });
            }
            chain.push(self.read_state(over).await?);
        }
        let dirs: Vec<String> = chain.iter().map(|(meta, _)| self.dir(meta.checkpoint)).collect();
        // Up to hundreds of MiB to decode and copy: not on an async thread.
        let memory_len = chain
            .iter()
            .filter_map(|(_, s)| image::Pages::memory_len_of(s))
            .max()
            .unwrap_or(0);
        let bytes = chain.iter().map(|(_, s)| s.len()).sum::<usize>() + memory_len as usize;
        crate::storage::cpu_bound(bytes, move || {
            let mut memory = Vec::new();
            for ((_, snapshot), dir) in chain.iter().zip(dirs).rev() {
                let pages = image::Pages::decode(snapshot).map_err(|reason| CheckpointError::Corrupt {
                    what: format!("{dir}/snapshot"),
                    reason,
                })?;
                pages.apply(&mut memory);
            }
            Ok(memory)
        })
        .await
        .map_err(|e| CheckpointError::Corrupt {
            what: "the memory image".into(),
            reason: format!("rebuilding it failed: {e}"),
        })?
    }

    /// Deletes a checkpoint that the pointer no longer names.
    pub async fn delete(&self, c: CheckpointRef) -> Result<(), CheckpointError> {
        Ok(self.storage.delete_prefix(&self.dir(c)).await?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::sha256_hex;

    fn cref(id: u64) -> CheckpointRef {
        CheckpointRef {
            id,
            epoch: 1,
            created_ms: 0,
            image_base: None,
        }
    }

    pub(crate) fn checkpoint(id: u64) -> Checkpoint {
        let snapshot = Bytes::from(format!("state {id}"));
        let output = Bytes::from(format!("{id}\n"));
        // Odd checkpoints have dead letters, even ones none.
        let dead_letters = Bytes::from(if id % 2 == 1 { "{}\n" } else { "" });
        Checkpoint {
            meta: CheckpointMeta {
                checkpoint: cref(id),
                source_offset: id * 10,
                source_partitions: BTreeMap::from([(1, 7)]),
                event_times: EventTimes {
                    newest: BTreeMap::from([(0, id as i64 * 1000), (2, 5)]),
                    watermark: Some(4),
                },
                sink_offset: 0,
                dead_letter_offset: id,
                snapshot_sha256: sha256_hex(&snapshot),
                image: None,
                output_sha256: sha256_hex(&output),
                dead_letters_sha256: (id % 2 == 1).then(|| sha256_hex(&dead_letters)),
            },
            snapshot,
            memory: None,
            output: StagedOutput {
                main: output,
                dead_letters,
            },
        }
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = Pointer::decode(&bytes);
            let _ = CheckpointMeta::decode(&bytes);
        }

        #[test]
        fn pointers_round_trip(ids in proptest::collection::vec(proptest::prelude::any::<(u64, u64, u64)>(), 0..5)) {
            let retained = ids.into_iter().map(|(id, epoch, created_ms)| CheckpointRef { id, epoch, created_ms, image_base: None }).collect();
            let pointer = Pointer { retained, links: Vec::new() };
            proptest::prop_assert_eq!(Pointer::decode(&pointer.encode()).unwrap(), pointer);
        }
    }

    fn image_ref(id: u64, base: Option<u64>) -> CheckpointRef {
        CheckpointRef {
            image_base: base,
            ..cref(id)
        }
    }

    fn ids(refs: &[CheckpointRef]) -> Vec<u64> {
        refs.iter().map(|c| c.id).collect()
    }

    #[test]
    fn a_chain_keeps_its_links_and_a_whole_image_to_fall_back_to() {
        let mut pointer = Pointer::default();
        let mut commit = |c| {
            let (next, dropped) = pointer.advance(c);
            pointer = next;
            (pointer.clone(), ids(&dropped))
        };
        // 1 whole, 2 to 5 over it: all it has are links of one chain.
        for id in 1..=4 {
            commit(image_ref(id, (id > 1).then_some(1)));
        }
        let (now, dropped) = commit(image_ref(5, Some(1)));
        assert_eq!(
            (ids(&now.retained), ids(&now.links), dropped),
            (vec![5, 4, 3], vec![2, 1], vec![])
        );
        // Compacted at 6: two chains, no fallback needed yet.
        let (now, dropped) = commit(image_ref(6, None));
        assert_eq!(
            (ids(&now.retained), ids(&now.links), dropped),
            (vec![6, 5, 4], vec![3, 2, 1], vec![])
        );
        commit(image_ref(7, Some(6)));
        // All retained over 6: whole 1 stays to fall back to, its chain goes.
        let (now, dropped) = commit(image_ref(8, Some(6)));
        assert_eq!(
            (ids(&now.retained), ids(&now.links), dropped),
            (vec![8, 7, 6, 1], vec![], vec![5, 4, 3, 2])
        );
        let (now, dropped) = commit(image_ref(9, Some(6)));
        assert_eq!(
            (ids(&now.retained), ids(&now.links), dropped),
            (vec![9, 8, 7, 1], vec![6], vec![])
        );
        assert_eq!(Pointer::decode(&now.encode()).unwrap(), now);
        // Restored from 7 (9 and 8 unreadable): 7 still needs 6.
        let (restored, dropped) = now.restored_from(2);
        assert_eq!(
            (ids(&restored.retained), ids(&restored.links), ids(&dropped)),
            (vec![7, 1], vec![6], vec![9, 8])
        );
        // From 1: 6 was a link of the skipped ones only.
        let (restored, dropped) = now.restored_from(3);
        assert_eq!(
            (ids(&restored.retained), ids(&restored.links), ids(&dropped)),
            (vec![1], vec![], vec![9, 8, 7, 6])
        );
        // The SDK's snapshot is whole: the chains age out as it is retained.
        let (now, dropped) = commit(image_ref(10, None));
        assert_eq!(
            (ids(&now.retained), ids(&now.links), dropped),
            (vec![10, 9, 8], vec![7, 6], vec![1])
        );
    }

    #[tokio::test]
    async fn a_chain_of_images_reads_back_whole_and_a_lost_link_makes_it_corrupt() {
        use image::Pages;
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&format!("file://{}", dir.path().display())).unwrap();
        let store = CheckpointStore::new(storage, "job", "uid");
        let page = crate::runtime::PAGE;
        let write = async |id: u64, pages: Pages, over: Option<u64>| {
            let mut c = checkpoint(id);
            c.snapshot = Bytes::from(pages.encode());
            c.meta.snapshot_sha256 = sha256_hex(&c.snapshot);
            c.meta.image = Some(ImageMeta {
                module_sha256: "m".into(),
                over: over.map(cref),
                links: 1,
                chain_bytes: 0,
            });
            store.write(&c, Duration::from_secs(10)).await.unwrap();
            c
        };
        let mut memory = vec![1u8; 4 * page];
        write(1, Pages::whole(&memory), None).await;
        memory[page] = 2;
        memory.resize(6 * page, 0);
        memory[5 * page] = 3;
        write(2, Pages::copy(&memory, vec![1, 5]), Some(1)).await;
        memory[0] = 4;
        let newest = write(3, Pages::copy(&memory, vec![0]), Some(2)).await;
        assert_eq!(store.read_memory(&newest.meta, &newest.snapshot).await.unwrap(), memory);

        std::fs::write(dir.path().join("checkpoints/job/uid/2-1/snapshot"), b"flipped").unwrap();
        let err = store.read_memory(&newest.meta, &newest.snapshot).await.unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        let mut looping = newest.clone();
        looping.meta.image.as_mut().unwrap().over = Some(cref(3));
        let err = store.read_memory(&looping.meta, &looping.snapshot).await.unwrap_err();
        assert!(err.to_string().contains("does not lead back to a whole one"), "{err}");
    }

    /// A store whose writes never finish, like a storage dir that hangs.
    #[derive(Debug, Default)]
    struct Hanging(object_store::memory::InMemory);

    impl std::fmt::Display for Hanging {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Hanging")
        }
    }

    #[async_trait::async_trait]
    impl object_store::ObjectStore for Hanging {
        async fn put_opts(
            &self,
            _: &object_store::path::Path,
            _: object_store::PutPayload,
            _: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            std::future::pending().await
        }

        async fn put_multipart_opts(
            &self,
            location: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
            self.0.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.0.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn a_hanging_storage_dir_fails_the_checkpoint_at_its_deadline() {
        let storage = Storage::with_store(std::sync::Arc::new(Hanging::default()));
        let store = CheckpointStore::new(storage, "job", "uid");
        let err = store
            .write(&checkpoint(1), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, CheckpointError::Timeout { .. }), "{err}");
        assert_eq!(upload_deadline(Duration::from_millis(200)), Duration::from_secs(10));
        assert_eq!(upload_deadline(Duration::from_secs(5)), Duration::from_secs(50));
    }

    #[test]
    fn pointer_keeps_the_newest_three() {
        let mut pointer = Pointer::default();
        let mut dropped_all = Vec::new();
        for id in 1..=5 {
            let (next, dropped) = pointer.advance(cref(id));
            pointer = next;
            dropped_all.extend(dropped);
        }
        assert_eq!(pointer.retained.iter().map(|c| c.id).collect::<Vec<_>>(), vec![5, 4, 3]);
        assert_eq!(dropped_all.iter().map(|c| c.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(Pointer::decode(&pointer.encode()).unwrap(), pointer);
        assert_eq!(Pointer::decode(b"").unwrap().latest(), None);
    }

    #[tokio::test]
    async fn checkpoints_round_trip_and_corruption_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&format!("file://{}", dir.path().display())).unwrap();
        let store = CheckpointStore::new(storage, "job", "uid");
        store.write(&checkpoint(7), Duration::from_secs(10)).await.unwrap();
        let back = store.read(cref(7)).await.unwrap();
        assert_eq!(back.meta, checkpoint(7).meta);
        assert_eq!(back.snapshot, checkpoint(7).snapshot);
        assert_eq!(back.output, checkpoint(7).output);
        store.write(&checkpoint(8), Duration::from_secs(10)).await.unwrap();
        assert_eq!(store.read(cref(8)).await.unwrap().output, checkpoint(8).output);
        assert!(
            !dir.path().join("checkpoints/job/uid/8-1/dead-letters").exists(),
            "no object for no dead letters"
        );
        let again = store.write(&checkpoint(7), Duration::from_secs(10)).await.unwrap_err();
        assert!(
            matches!(again, CheckpointError::AlreadyWritten { .. }),
            "a checkpoint written twice under one id: {again}"
        );

        std::fs::write(dir.path().join("checkpoints/job/uid/7-1/dead-letters"), b"flipped").unwrap();
        let err = store.read(cref(7)).await.unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        std::fs::write(dir.path().join("checkpoints/job/uid/7-1/snapshot"), b"flipped").unwrap();
        let err = store.read(cref(7)).await.unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        store.delete(cref(7)).await.unwrap();
        assert!(matches!(
            store.read(cref(7)).await,
            Err(CheckpointError::Storage(StorageError::NotFound { .. }))
        ));
    }
}
