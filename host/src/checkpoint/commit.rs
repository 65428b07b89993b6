//! The checkpoint-commit rules as a pure state machine: barrier, upload,
//! pointer, publish, retention. Outcomes of I/O come in as events, what to
//! do next goes out as actions; `job::committer` carries them out against
//! the storage dir, ZooKeeper and the sink, and never decides anything itself.
//!
//! The rules, each tested over every sequence of events:
//! - output is published only after the pointer naming its checkpoint is
//!   written, at the sink position that checkpoint recorded, each byte once
//!   and in order;
//! - a checkpoint that failed to upload is never named, and its output rides
//!   with the next one, so nothing is lost;
//! - nothing the pointer names is ever deleted, and what a failed upload
//!   left behind is, as are the checkpoints a restore skipped (with the
//!   attempt's first publish, once);
//! - once a pointer write is refused (deposed, or the pointer moved under us)
//!   or a publish fails, the attempt ends and nothing more is done.

use super::{CheckpointRef, Pointer, SinkPositions};

/// Something that happened to the checkpoint in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitEvent {
    /// The batch loop took a barrier; `output_len` bytes of output were
    /// produced since the previous one.
    Barrier {
        /// Bytes of output (for each sink) since the previous barrier.
        output_len: SinkPositions,
        /// When the barrier was taken (ms since the Unix epoch).
        created_ms: u64,
    },
    /// The checkpoint's objects are in the storage dir.
    Uploaded {
        /// For pages of memory over earlier checkpoints: the whole image
        /// their chain starts at (the committer decides what it uploads).
        image_base: Option<u64>,
    },
    /// They could not be written (in time).
    UploadFailed,
    /// The pointer write went through; the znode is now at `version`.
    PointerWritten {
        /// The pointer znode's new version.
        version: i32,
    },
    /// The pointer write was refused: our latch is gone or the pointer moved.
    PointerRefused,
    /// The output reached the sink.
    Published,
    /// The sink refused the output.
    PublishFailed,
}

/// What the committer must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitAction {
    /// Write the checkpoint's objects, with the first `output_len` bytes of
    /// staged output, recording `sink_offset` as where that output goes.
    Upload {
        /// The checkpoint.
        checkpoint: CheckpointRef,
        /// Sink positions the output starts at.
        sink_offset: SinkPositions,
        /// How many staged bytes it carries.
        output_len: SinkPositions,
    },
    /// Write `pointer`, expecting the znode at `expected_version`.
    WritePointer {
        /// The new pointer.
        pointer: Pointer,
        /// The version the write is checked against.
        expected_version: i32,
    },
    /// Publish the first `len` staged bytes at sink position `at`, then drop them from the stage.
    Publish {
        /// Sink positions.
        at: SinkPositions,
        /// Bytes to publish.
        len: SinkPositions,
    },
    /// Delete a checkpoint the pointer no longer names.
    Delete(CheckpointRef),
    /// A checkpoint failed: count it; the job runs on.
    CountFailure,
    /// Stop the attempt: nothing more may be written.
    EndAttempt,
}

/// Where the checkpoint in progress stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Idle,
    Uploading {
        checkpoint: CheckpointRef,
        len: SinkPositions,
    },
    WritingPointer {
        len: SinkPositions,
        pointer: Pointer,
        dropped: Vec<CheckpointRef>,
    },
    Publishing {
        len: SinkPositions,
        dropped: Vec<CheckpointRef>,
    },
    Ended,
}

/// The commit side of one attempt, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitState {
    epoch: u64,
    next_id: u64,
    pointer: Pointer,
    version: i32,
    /// Checkpoints the znode names that the restore skipped (unreadable),
    /// and the links only they needed: deleted with what the attempt's
    /// first committed pointer drops.
    skipped: Vec<CheckpointRef>,
    /// Sink bytes published: where the next output goes.
    published: SinkPositions,
    /// Output bytes produced and not yet published.
    staged: SinkPositions,
    stage: Stage,
}

impl CommitState {
    /// The state of a leader in `epoch` resuming from the checkpoint
    /// `pointer.retained[restored_at]` (the pointer read at znode
    /// `version`), whose sink holds `published` bytes, numbering its
    /// checkpoints on after every one the pointer names.
    pub fn resume(
        epoch: u64,
        pointer: &Pointer,
        restored_at: usize,
        version: i32,
        published: SinkPositions,
    ) -> CommitState {
        let (restored, skipped) = pointer.restored_from(restored_at);
        CommitState {
            epoch,
            next_id: pointer.next_id(),
            pointer: restored,
            version,
            skipped,
            published,
            staged: SinkPositions::default(),
            stage: Stage::Idle,
        }
    }

    /// Sink bytes published so far (what the tests hold the sink to).
    #[cfg(test)]
    fn published(&self) -> SinkPositions {
        self.published
    }

    /// Takes one event; returns what to do about it, in order.
    pub fn step(&mut self, event: CommitEvent) -> Vec<CommitAction> {
        use CommitAction::*;
        if self.stage == Stage::Ended {
            return vec![];
        }
        let stage = std::mem::replace(&mut self.stage, Stage::Idle);
        let (stage, actions) = match (stage, event) {
            (stage, CommitEvent::Barrier { output_len, created_ms }) => {
                self.staged = self.staged + output_len;
                if stage != Stage::Idle {
                    // One checkpoint at a time: this barrier's output rides with the next.
                    (stage, vec![])
                } else {
                    let checkpoint = CheckpointRef {
                        id: self.next_id,
                        epoch: self.epoch,
                        created_ms,
                        image_base: None,
                    };
                    self.next_id += 1;
                    (
                        Stage::Uploading {
                            checkpoint,
                            len: self.staged,
                        },
                        vec![Upload {
                            checkpoint,
                            sink_offset: self.published,
                            output_len: self.staged,
                        }],
                    )
                }
            }
            (Stage::Uploading { checkpoint, len }, CommitEvent::Uploaded { image_base }) => {
                let (pointer, mut dropped) = self.pointer.advance(CheckpointRef {
                    image_base,
                    ..checkpoint
                });
                dropped.append(&mut self.skipped);
                let action = WritePointer {
                    pointer: pointer.clone(),
                    expected_version: self.version,
                };
                (Stage::WritingPointer { len, pointer, dropped }, vec![action])
            }
            // Whatever part of it was written is named by nothing: clear it away.
            (Stage::Uploading { checkpoint, .. }, CommitEvent::UploadFailed) => {
                (Stage::Idle, vec![CountFailure, Delete(checkpoint)])
            }
            (Stage::WritingPointer { len, pointer, dropped }, CommitEvent::PointerWritten { version }) => {
                self.pointer = pointer;
                self.version = version;
                let at = self.published;
                (Stage::Publishing { len, dropped }, vec![Publish { at, len }])
            }
            (Stage::Publishing { len, dropped }, CommitEvent::Published) => {
                self.published = self.published + len;
                self.staged = self.staged - len;
                (Stage::Idle, dropped.into_iter().map(Delete).collect())
            }
            (Stage::WritingPointer { .. }, CommitEvent::PointerRefused)
            | (Stage::Publishing { .. }, CommitEvent::PublishFailed) => (Stage::Ended, vec![EndAttempt]),
            // An outcome of something not asked for changes nothing.
            (stage, _) => (stage, vec![]),
        };
        self.stage = stage;
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: u64 = 9;

    const EVENTS: [CommitEvent; 7] = [
        CommitEvent::Barrier {
            output_len: SinkPositions {
                main: 0,
                dead_letters: 0,
            },
            created_ms: 0,
        },
        CommitEvent::Uploaded { image_base: None },
        CommitEvent::UploadFailed,
        CommitEvent::PointerWritten { version: 0 },
        CommitEvent::PointerRefused,
        CommitEvent::Published,
        CommitEvent::PublishFailed,
    ];

    /// The I/O the state machine asked for and that has not answered yet.
    #[derive(Debug, Clone)]
    enum Outstanding {
        Upload {
            checkpoint: CheckpointRef,
            len: SinkPositions,
        },
        Pointer {
            pointer: Pointer,
            len: SinkPositions,
        },
        Publish {
            len: SinkPositions,
        },
    }

    /// The storage dir, znode and sink as the actions have left them.
    #[derive(Debug, Default, Clone)]
    struct World {
        /// Output bytes produced by the job so far.
        produced: SinkPositions,
        barriers: u64,
        /// Bytes in the sinks.
        sink: SinkPositions,
        pointer: Pointer,
        version: i32,
        outstanding: Option<Outstanding>,
        last_id: u64,
        ended: bool,
        /// What the restore skipped, until the first publish deletes it.
        skipped: Vec<CheckpointRef>,
    }

    /// Feeds `event` (made concrete: the n-th barrier brings n bytes of
    /// output, and a dead letter every other barrier; a pointer write bumps
    /// the version) and checks the actions against every rule.
    fn feed(state: &mut CommitState, world: &mut World, event: CommitEvent) -> CommitEvent {
        use CommitAction::*;
        let event = match event {
            CommitEvent::Barrier { .. } => {
                world.barriers += 1;
                let output_len = SinkPositions {
                    main: world.barriers,
                    dead_letters: world.barriers % 2,
                };
                world.produced = world.produced + output_len;
                CommitEvent::Barrier {
                    output_len,
                    created_ms: world.barriers,
                }
            }
            CommitEvent::PointerWritten { .. } => CommitEvent::PointerWritten {
                version: world.version + 1,
            },
            // Every other upload is pages over the chain of the newest one.
            CommitEvent::Uploaded { .. } => CommitEvent::Uploaded {
                image_base: world
                    .pointer
                    .latest()
                    .filter(|_| world.barriers.is_multiple_of(2))
                    .map(|c| c.image_base.unwrap_or(c.id)),
            },
            other => other,
        };
        let actions = state.step(event);
        if world.ended {
            assert!(actions.is_empty(), "acted after the attempt ended: {actions:?}");
            return event;
        }
        match (world.outstanding.take(), event) {
            (None, CommitEvent::Barrier { created_ms, .. }) => {
                let [Upload {
                    checkpoint,
                    sink_offset,
                    output_len,
                }] = actions[..]
                else {
                    panic!("a barrier with nothing in flight must upload: {actions:?}")
                };
                assert!(checkpoint.id > world.last_id, "checkpoint ids must increase");
                assert_eq!((checkpoint.epoch, checkpoint.created_ms), (EPOCH, created_ms));
                assert_eq!(sink_offset, world.sink, "the upload records where its output goes");
                assert_eq!(
                    output_len,
                    world.produced - world.sink,
                    "an upload carries every unpublished byte"
                );
                world.last_id = checkpoint.id;
                world.outstanding = Some(Outstanding::Upload {
                    checkpoint,
                    len: output_len,
                });
            }
            (Some(Outstanding::Upload { checkpoint, len }), CommitEvent::Uploaded { image_base }) => {
                let [WritePointer {
                    ref pointer,
                    expected_version,
                }] = actions[..]
                else {
                    panic!("an uploaded checkpoint must be committed: {actions:?}")
                };
                assert_eq!(
                    *pointer,
                    world
                        .pointer
                        .advance(CheckpointRef {
                            image_base,
                            ..checkpoint
                        })
                        .0,
                    "the pointer names the upload"
                );
                assert_eq!(expected_version, world.version, "checked against the last version");
                world.outstanding = Some(Outstanding::Pointer {
                    pointer: pointer.clone(),
                    len,
                });
            }
            (Some(Outstanding::Upload { checkpoint, .. }), CommitEvent::UploadFailed) => {
                assert_eq!(
                    actions,
                    [CountFailure, Delete(checkpoint)],
                    "a failed upload is counted and its remains deleted"
                );
            }
            (Some(Outstanding::Pointer { pointer, len }), CommitEvent::PointerWritten { version }) => {
                world.pointer = pointer;
                world.version = version;
                assert_eq!(
                    actions,
                    [Publish { at: world.sink, len }],
                    "publish the committed output where the sink ends"
                );
                world.outstanding = Some(Outstanding::Publish { len });
            }
            (Some(Outstanding::Publish { len }), CommitEvent::Published) => {
                world.sink = world.sink + len;
                for skipped in std::mem::take(&mut world.skipped) {
                    assert!(
                        actions.contains(&Delete(skipped)),
                        "what the restore skipped goes with the first publish: {actions:?}"
                    );
                }
                for action in &actions {
                    let Delete(old) = action else {
                        panic!("after publishing only deletes follow: {actions:?}")
                    };
                    assert!(!world.pointer.retained.contains(old), "deleted a retained checkpoint");
                    assert!(!world.pointer.links.contains(old), "deleted a link of a retained chain");
                }
            }
            (Some(Outstanding::Pointer { .. }), CommitEvent::PointerRefused)
            | (Some(Outstanding::Publish { .. }), CommitEvent::PublishFailed) => {
                assert_eq!(actions, [EndAttempt]);
                world.ended = true;
            }
            (outstanding, CommitEvent::Barrier { .. }) => {
                assert!(actions.is_empty(), "one checkpoint at a time: {actions:?}");
                world.outstanding = outstanding;
            }
            (outstanding, event) => {
                assert!(actions.is_empty(), "{event:?} was not asked for, yet: {actions:?}");
                world.outstanding = outstanding;
            }
        }
        assert_eq!(state.published(), world.sink);
        assert!(world.sink.main <= world.produced.main && world.sink.dead_letters <= world.produced.dead_letters);
        event
    }

    /// Walks every sequence of `depth` events from an attempt resuming
    /// from the `restored_at`-th checkpoint of `world`'s pointer (read at
    /// version 0); returns how many runs.
    fn every_run(mut world: World, restored_at: usize, depth: usize) -> usize {
        fn walk(state: &CommitState, world: &World, depth: usize) -> usize {
            if depth == 0 {
                return 1;
            }
            let mut runs = 1;
            for event in EVENTS {
                let (mut state, mut world) = (state.clone(), world.clone());
                feed(&mut state, &mut world, event);
                runs += walk(&state, &world, depth - 1);
            }
            runs
        }
        let state = CommitState::resume(EPOCH, &world.pointer, restored_at, 0, SinkPositions::default());
        world.last_id = world.pointer.latest().map_or(0, |c| c.id);
        (world.pointer, world.skipped) = world.pointer.restored_from(restored_at);
        walk(&state, &world, depth)
    }

    #[test]
    fn every_rule_holds_over_every_sequence_of_outcomes() {
        assert_eq!(every_run(World::default(), 0, 7), (7usize.pow(8) - 1) / 6);
    }

    #[test]
    fn every_rule_holds_after_a_restore_that_skipped_checkpoints() {
        let cref = |id, image_base| CheckpointRef {
            id,
            epoch: 3,
            created_ms: 0,
            image_base,
        };
        // 4 and 3 (pages over 2) unreadable: restored from 2.
        let znode = Pointer {
            retained: vec![cref(4, None), cref(3, Some(2)), cref(2, None)],
            links: Vec::new(),
        };
        let world = World {
            pointer: znode,
            ..World::default()
        };
        assert_eq!(every_run(world, 2, 6), (7usize.pow(7) - 1) / 6);
    }

    #[test]
    fn a_clean_run_publishes_everything_and_keeps_the_newest_three() {
        let mut state = CommitState::resume(EPOCH, &Pointer::default(), 0, 0, SinkPositions::default());
        let mut world = World::default();
        for _ in 0..5 {
            for event in [EVENTS[0], EVENTS[1], EVENTS[3], EVENTS[5]] {
                feed(&mut state, &mut world, event);
            }
        }
        assert_eq!(world.sink, world.produced);
        let ids: Vec<u64> = world.pointer.retained.iter().map(|c| c.id).collect();
        assert_eq!(ids, [5, 4, 3]);
    }

    #[test]
    fn a_failed_upload_carries_its_output_into_the_next_checkpoint() {
        let mut state = CommitState::resume(EPOCH, &Pointer::default(), 0, 0, SinkPositions::default());
        let barrier = CommitEvent::Barrier {
            output_len: SinkPositions {
                main: 4,
                dead_letters: 1,
            },
            created_ms: 1,
        };
        state.step(barrier);
        let failed = state.step(CommitEvent::UploadFailed);
        assert!(
            matches!(failed[..], [CommitAction::CountFailure, CommitAction::Delete(c)] if c.id == 1),
            "{failed:?}"
        );
        let actions = state.step(barrier);
        assert!(
            matches!(actions[..], [CommitAction::Upload { output_len: SinkPositions { main: 8, dead_letters: 2 }, sink_offset, checkpoint }]
                if checkpoint.id == 2 && sink_offset == SinkPositions::default()),
            "{actions:?}"
        );
    }

    #[test]
    fn a_resumed_attempt_numbers_on_from_the_pointer() {
        let latest = CheckpointRef {
            id: 41,
            epoch: 3,
            created_ms: 0,
            image_base: None,
        };
        let pointer = Pointer {
            retained: vec![latest],
            links: Vec::new(),
        };
        let published = SinkPositions {
            main: 100,
            dead_letters: 3,
        };
        let mut state = CommitState::resume(EPOCH, &pointer, 0, 7, published);
        let actions = state.step(EVENTS[0]);
        assert!(
            matches!(actions[..], [CommitAction::Upload { sink_offset, checkpoint, .. }] if checkpoint.id == 42 && sink_offset == published),
            "{actions:?}"
        );
        let actions = state.step(CommitEvent::Uploaded { image_base: Some(41) });
        assert!(
            matches!(&actions[..], [CommitAction::WritePointer { expected_version: 7, pointer }] if pointer.retained[1] == latest && pointer.retained[0].image_base == Some(41)),
            "{actions:?}"
        );
    }

    #[test]
    fn checkpoints_the_restore_skipped_are_deleted_once_the_next_is_published() {
        let cref = |id| CheckpointRef {
            id,
            epoch: 3,
            created_ms: 0,
            image_base: None,
        };
        let znode = Pointer {
            retained: vec![cref(42), cref(41), cref(40)],
            links: Vec::new(),
        };
        let mut state = CommitState::resume(EPOCH, &znode, 2, 7, SinkPositions::default());
        for event in [EVENTS[0], EVENTS[1], EVENTS[3]] {
            let actions = state.step(event);
            assert!(
                !actions.iter().any(|a| matches!(a, CommitAction::Delete(_))),
                "deleted before the next checkpoint was published: {actions:?}"
            );
        }
        assert_eq!(
            state.step(EVENTS[5]),
            [CommitAction::Delete(cref(42)), CommitAction::Delete(cref(41))]
        );
        for event in [EVENTS[0], EVENTS[1], EVENTS[3]] {
            state.step(event);
        }
        assert_eq!(state.step(EVENTS[5]), [], "deleted once");
    }
}
