//! Savepoints: every task's newest committed checkpoint, copied out of
//! retention into `savepoints/<job>/<id>/<i>/` with a manifest beside
//! them, so that a job can start from it later, under another module
//! (an upgrade), after it was cancelled, or in another cluster.
//!
//! A task's checkpoint is a consistent cut of that task (its state, its
//! source position and its sinks' positions, taken at one barrier), and
//! tasks share nothing, so the tasks' cuts together are one of the job.
//! The snapshot in it is what the SDK serialized (the job's serde state),
//! not an image of the engine, so another build of the job can read it.
//! The manifest is written last: a savepoint without one does not exist.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointRef, CheckpointStore};
use crate::regroup::{self, TaskStart};
use crate::runtime::{GuestError, ImageError, Limits, ModuleError, Runtime};
use crate::spec::{JobSpec, Lineage, Share};
use crate::storage::{Storage, StorageError};

/// Where savepoints live in a storage dir.
pub const SAVEPOINTS: &str = "savepoints";

/// The manifest's name in a savepoint's directory.
const MANIFEST: &str = "savepoint.json";

/// What a savepoint holds, `savepoint.json` in its directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The job it was taken of.
    pub job: String,
    /// That job's deployment.
    pub uid: String,
    /// The module the state was written by.
    pub module_sha256: String,
    /// Whose sinks' progress a job started from it carries on.
    pub lineage: Lineage,
    /// The sinks its positions are in, as `weir jobs` names them (no
    /// password): the job's output, then its dead letters' if it has one.
    pub sinks: Vec<String>,
    /// When it was taken (ms since the Unix epoch).
    pub created_ms: u64,
    /// Each task's checkpoint, by task number.
    pub tasks: Vec<CheckpointRef>,
}

/// Failures reading or writing a savepoint, each naming it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SavepointError {
    /// No manifest where the savepoint should be.
    #[error("no savepoint at {dir} (no {MANIFEST} there); `weir savepoints JOB` lists them")]
    Missing {
        /// The savepoint's directory.
        dir: String,
    },
    /// The manifest does not parse or does not fit.
    #[error("savepoint {dir} is unusable: {reason}")]
    Corrupt {
        /// The savepoint's directory.
        dir: String,
        /// What is wrong.
        reason: String,
    },
    /// A task's checkpoint in it cannot be read or written.
    #[error("savepoint {dir}, task {task}: {source}")]
    Task {
        /// The savepoint's directory.
        dir: String,
        /// Which task.
        task: usize,
        /// Why.
        source: CheckpointError,
    },
    /// A task of a job started from it with another task count has no
    /// checkpoint of its own yet: its start is spread over the savepoint's
    /// tasks, and copying one of them would lose the others' part.
    #[error(
        "task {task} of job `{job}` has not checkpointed since it was regrouped into {tasks} tasks from savepoint \
         {dir}; take the savepoint once it has (`weir jobs`){}",
        restart_hint(job, dir, *tasks, *savepoint_tasks)
    )]
    Regrouped {
        /// The job.
        job: String,
        /// The savepoint the job started from.
        dir: String,
        /// How many tasks that savepoint holds.
        savepoint_tasks: usize,
        /// Which task.
        task: usize,
        /// How many tasks the job runs.
        tasks: u32,
    },
    /// A task's newest checkpoint is an image of its memory, and it could
    /// not be turned into the SDK's state a savepoint keeps.
    #[error(
        "savepoint {dir}, task {task}: checkpoint {checkpoint} is an image of the job's memory \
         (--checkpoint-state memory) and could not be turned into the job's serialized state: {reason}"
    )]
    Image {
        /// The savepoint's directory.
        dir: String,
        /// Which task.
        task: usize,
        /// Its checkpoint.
        checkpoint: u64,
        /// Why not.
        reason: String,
    },
    /// The storage dir failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The directory of savepoint `id` of job `job`.
pub fn dir(job: &str, id: &str) -> String {
    format!("{SAVEPOINTS}/{job}/{id}")
}

/// A new savepoint's id: its time, then random digits so that two taken
/// in one millisecond differ. Sorts by time.
pub fn new_id(created_ms: u64, random: u64) -> String {
    format!("savepoint-{created_ms}-{:06x}", random & 0xff_ffff)
}

/// How a job regrouped from a savepoint can start again from it: only
/// into no more tasks than it holds, since a file sink's extra task would
/// write again what it published before.
fn restart_hint(job: &str, dir: &str, tasks: u32, savepoint_tasks: usize) -> String {
    if tasks as usize <= savepoint_tasks {
        format!(
            ", or, once the job is stopped, start it again from where the regrouping began: \
             `weir deploy MODULE --name {job} --from-savepoint {dir} --parallelism {tasks}`"
        )
    } else {
        String::new()
    }
}

/// Where task `task` of the savepoint at `dir` keeps its checkpoint.
fn task_store(storage: &Storage, dir: &str, task: usize) -> CheckpointStore {
    CheckpointStore::at(storage.clone(), format!("{dir}/{task}"))
}

/// Turns a checkpoint of a job's memory into the SDK's state, as a
/// savepoint keeps it: the job's own module, its memory restored from the
/// image, asked for its `snapshot`.
pub struct Portable {
    runtime: Runtime,
    spec: JobSpec,
}

impl Portable {
    /// Compiles job `spec`'s module, read from `storage`.
    pub async fn new(storage: &Storage, spec: &JobSpec) -> Result<Portable, PortableError> {
        let module = storage.get(&Storage::module_path(&spec.module_sha256)).await?;
        let runtime = Runtime::new()?;
        runtime.prepare(&spec.module_sha256, &module)?;
        Ok(Portable {
            runtime,
            spec: spec.clone(),
        })
    }

    /// The checkpoint with the SDK's state in place of its memory image.
    pub async fn serialized(
        &self,
        mut checkpoint: Checkpoint,
        from: &CheckpointStore,
    ) -> Result<Checkpoint, PortableError> {
        let memory = from.read_memory(&checkpoint.meta, &checkpoint.snapshot).await?;
        let limits = Limits {
            memory_bytes: self.spec.memory_limit.max(memory.len() as u64),
            call_timeout: self.spec.call_timeout,
        };
        // No grants: a memory image is taken only while the guest holds no
        // host resources, and its `snapshot` reaches for none.
        let mut instance = self
            .runtime
            .instantiate(
                &self.spec.module_sha256,
                &self.spec.name,
                limits,
                &Default::default(),
                memory.len(),
            )
            .await?;
        instance.restore_memory(&memory)?;
        let snapshot = Bytes::from(instance.snapshot().await?);
        checkpoint.meta.snapshot_sha256 = crate::storage::sha256_hex(&snapshot);
        checkpoint.meta.image = None;
        checkpoint.meta.checkpoint.image_base = None;
        checkpoint.snapshot = snapshot;
        Ok(checkpoint)
    }
}

/// Why a memory image could not be turned into the SDK's state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortableError {
    /// The module or the image could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The image's chain could not be read back.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The module does not compile here.
    #[error("the job's module: {0}")]
    Module(#[from] ModuleError),
    /// The guest failed to start from the image or to take its snapshot.
    #[error("the job, restored from its memory image: {0}")]
    Guest(#[from] GuestError),
    /// The image does not fit the guest.
    #[error("the job, restored from its memory image: {0}")]
    Image(#[from] ImageError),
}

/// Copies `checkpoint`, read from `from`, into the savepoint at `dir` as
/// task `task`'s, create-only; an image of the job's memory is kept as the
/// SDK's state, which `portable` makes. Objects an earlier try left there
/// are kept if they hold the same bytes, so an interrupted import can be
/// run again.
pub async fn copy_task(
    from: &CheckpointStore,
    checkpoint: CheckpointRef,
    to: &Storage,
    dir: &str,
    task: usize,
    portable: Option<&Portable>,
) -> Result<(), SavepointError> {
    let wrap = |source| SavepointError::Task {
        dir: dir.to_string(),
        task,
        source,
    };
    let mut read = from.read(checkpoint).await.map_err(wrap)?;
    if read.meta.image.is_some() {
        let Some(portable) = portable else {
            return Err(SavepointError::Image {
                dir: dir.to_string(),
                task,
                checkpoint: checkpoint.id,
                reason: "nothing here can run the job".into(),
            });
        };
        read = match portable.serialized(read, from).await {
            Ok(read) => read,
            // Retired under the copy: the caller takes the newer one.
            Err(PortableError::Checkpoint(source)) => return Err(wrap(source)),
            Err(e) => {
                return Err(SavepointError::Image {
                    dir: dir.to_string(),
                    task,
                    checkpoint: checkpoint.id,
                    reason: e.to_string(),
                })
            }
        };
    }
    task_store(to, dir, task)
        .write_again(&read, std::time::Duration::from_secs(300))
        .await
        .map_err(wrap)
}

/// Copies task `share`'s checkpoint in the savepoint at `savepoint` into
/// the savepoint at `dir`: for a task of a job started from a savepoint
/// that stopped before a checkpoint of its own, where it stands is where
/// it started (unless the job was started with another task count).
/// Returns the checkpoint.
pub async fn carry_task(
    job: &str,
    from: &Storage,
    savepoint: &str,
    share: Share,
    to: &Storage,
    dir: &str,
) -> Result<CheckpointRef, SavepointError> {
    let manifest = manifest(from, savepoint).await?;
    let task = share.index as usize;
    if manifest.tasks.len() != share.of as usize {
        return Err(SavepointError::Regrouped {
            job: job.to_string(),
            dir: savepoint.to_string(),
            savepoint_tasks: manifest.tasks.len(),
            task,
            tasks: share.of,
        });
    }
    let Some(checkpoint) = manifest.tasks.get(task).copied() else {
        return Err(SavepointError::Corrupt {
            dir: savepoint.to_string(),
            reason: format!("it has {} tasks, not a task {task}", manifest.tasks.len()),
        });
    };
    copy_task(&task_store(from, savepoint, task), checkpoint, to, dir, task, None).await?;
    Ok(checkpoint)
}

/// Writes the manifest, which makes the savepoint at `dir` exist.
pub async fn finish(to: &Storage, dir: &str, manifest: &Manifest) -> Result<(), SavepointError> {
    let bytes = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
    if !to.put_if_absent(&format!("{dir}/{MANIFEST}"), bytes.into()).await? {
        return Err(SavepointError::Corrupt {
            dir: dir.to_string(),
            reason: "a savepoint with this id already exists".into(),
        });
    }
    Ok(())
}

/// Reads the manifest of the savepoint at `dir`.
pub async fn manifest(storage: &Storage, dir: &str) -> Result<Manifest, SavepointError> {
    let raw = match storage.get(&format!("{dir}/{MANIFEST}")).await {
        Ok(raw) => raw,
        Err(StorageError::NotFound { .. }) => return Err(SavepointError::Missing { dir: dir.to_string() }),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&raw).map_err(|e| SavepointError::Corrupt {
        dir: dir.to_string(),
        reason: format!("{MANIFEST}: {e}"),
    })
}

/// Where task `share` of a job started from the savepoint at `dir`
/// starts: its task's checkpoint, or, when the savepoint has another
/// number of tasks, the old tasks' checkpoints regrouped.
pub async fn read_start(storage: &Storage, dir: &str, share: Share) -> Result<TaskStart, SavepointError> {
    let manifest = manifest(storage, dir).await?;
    let old_tasks = manifest.tasks.len() as u32;
    if old_tasks == share.of {
        return Ok(TaskStart::whole(
            read_checkpoint(storage, dir, &manifest, share.index as usize).await?,
        ));
    }
    let mut old = Vec::new();
    for task in regroup::sources(old_tasks, share) {
        old.push((task, read_checkpoint(storage, dir, &manifest, task as usize).await?));
    }
    regroup::regroup(share, old).map_err(|reason| SavepointError::Corrupt {
        dir: dir.to_string(),
        reason: format!(
            "its tasks cannot be regrouped into {} for task {}: {reason}",
            share.of, share.index
        ),
    })
}

/// Whether the state in the savepoint at `dir` is kept per source
/// partition, so that it can follow its partitions to another task count.
pub async fn is_regroupable(storage: &Storage, dir: &str) -> Result<bool, SavepointError> {
    let manifest = manifest(storage, dir).await?;
    let first = read_checkpoint(storage, dir, &manifest, 0).await?;
    Ok(regroup::is_partitioned(&first.snapshot))
}

/// Task `task`'s checkpoint in the savepoint at `dir` with `manifest`, read and verified.
async fn read_checkpoint(
    storage: &Storage,
    dir: &str,
    manifest: &Manifest,
    task: usize,
) -> Result<Checkpoint, SavepointError> {
    let Some(checkpoint) = manifest.tasks.get(task) else {
        return Err(SavepointError::Corrupt {
            dir: dir.to_string(),
            reason: format!("it has {} tasks, not a task {task}", manifest.tasks.len()),
        });
    };
    task_store(storage, dir, task)
        .read(*checkpoint)
        .await
        .map_err(|source| SavepointError::Task {
            dir: dir.to_string(),
            task,
            source,
        })
}

/// Copies the savepoint at `dir` in `from` whole to the same place in
/// `to`, manifest last: how a savepoint kept elsewhere (`weir savepoint
/// --to`) comes back into a cluster's storage dir. One already there is
/// left as it is.
pub async fn import(from: &Storage, to: &Storage, dir: &str) -> Result<Manifest, SavepointError> {
    let manifest = manifest(from, dir).await?;
    if let Ok(there) = self::manifest(to, dir).await {
        if there == manifest {
            return Ok(manifest);
        }
    }
    for (task, checkpoint) in manifest.tasks.iter().enumerate() {
        copy_task(&task_store(from, dir, task), *checkpoint, to, dir, task, None).await?;
    }
    finish(to, dir, &manifest).await?;
    Ok(manifest)
}

/// Deletes the savepoint at `dir`: its manifest first, so that what a
/// delete cut short leaves is no savepoint, not a damaged one.
pub async fn delete(storage: &Storage, dir: &str) -> Result<(), SavepointError> {
    storage.delete(&format!("{dir}/{MANIFEST}")).await?;
    Ok(storage.delete_prefix(dir).await?)
}

/// Job `job`'s savepoints in `storage`, oldest first, each with its
/// directory; a directory without a readable manifest is left out.
pub async fn list(storage: &Storage, job: &str) -> Result<Vec<(String, Manifest)>, SavepointError> {
    let mut found = Vec::new();
    for dir in storage.list_dirs(&format!("{SAVEPOINTS}/{job}")).await? {
        if let Ok(manifest) = manifest(storage, &dir).await {
            found.push((dir, manifest));
        }
    }
    found.sort_by_key(|(dir, m)| (m.created_ms, dir.clone()));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::tests::checkpoint;

    fn manifest_of(tasks: Vec<CheckpointRef>) -> Manifest {
        Manifest {
            job: "j".into(),
            uid: "u".into(),
            module_sha256: "m".into(),
            lineage: Lineage {
                job: "j".into(),
                uid: "u".into(),
            },
            sinks: vec!["stdout".into()],
            created_ms: 5,
            tasks,
        }
    }

    #[tokio::test]
    async fn a_savepoint_holds_each_tasks_checkpoint_and_exists_once_its_manifest_does() {
        let storage = Storage::open("memory://").unwrap();
        let from = CheckpointStore::new(storage.clone(), "j", "u/0");
        let taken = checkpoint(4);
        from.write(&taken, std::time::Duration::from_secs(5)).await.unwrap();
        let dir = dir("j", &new_id(5, 0xabcdef12));
        assert_eq!(dir, "savepoints/j/savepoint-5-cdef12");
        copy_task(&from, taken.meta.checkpoint, &storage, &dir, 0, None)
            .await
            .unwrap();
        assert!(matches!(
            read_start(&storage, &dir, Share::WHOLE).await,
            Err(SavepointError::Missing { .. })
        ));
        assert!(list(&storage, "j").await.unwrap().is_empty());

        let manifest = manifest_of(vec![taken.meta.checkpoint]);
        finish(&storage, &dir, &manifest).await.unwrap();
        let read = read_start(&storage, &dir, Share::WHOLE).await.unwrap().checkpoint;
        assert_eq!((&read.meta, &read.snapshot), (&taken.meta, &taken.snapshot));
        assert_eq!(
            list(&storage, "j").await.unwrap(),
            vec![(dir.clone(), manifest.clone())]
        );
        let err = carry_task("j", &storage, &dir, Share { index: 1, of: 1 }, &storage, "elsewhere")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("it has 1 tasks, not a task 1"), "{err}");
        let err = carry_task("j", &storage, &dir, Share { index: 1, of: 2 }, &storage, "elsewhere")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("task 1 of job `j` has not checkpointed"), "{err}");
        assert!(!err.contains("weir deploy"), "a scale-up is not offered again: {err}");
        assert!(restart_hint("j", &dir, 2, 3)
            .contains("--name j --from-savepoint savepoints/j/savepoint-5-cdef12 --parallelism 2"));
        assert!(
            finish(&storage, &dir, &manifest).await.is_err(),
            "a savepoint is written once"
        );

        let elsewhere = Storage::open("memory://").unwrap();
        // An import cut short after a task's objects, before the manifest.
        copy_task(&from, taken.meta.checkpoint, &elsewhere, &dir, 0, None)
            .await
            .unwrap();
        assert_eq!(import(&storage, &elsewhere, &dir).await.unwrap(), manifest);
        assert_eq!(
            read_start(&elsewhere, &dir, Share::WHOLE)
                .await
                .unwrap()
                .checkpoint
                .snapshot,
            read.snapshot
        );
        assert_eq!(
            import(&storage, &elsewhere, &dir).await.unwrap(),
            manifest,
            "importing twice is a no-op"
        );
    }
}
