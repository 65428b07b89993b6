//! A deterministic simulation of several supervisors against one simulated
//! ZooKeeper, storage dir and file sink, driven by the same pure state
//! machines as the real ones (`ha::role` for election and fencing,
//! `checkpoint::commit` for checkpoints). A seeded scheduler interleaves
//! batches, barriers, I/O completions, pauses (SIGSTOP), connection losses,
//! session expiries and elections in orders real processes hit once in a
//! thousand runs: a leader paused between its upload and its pointer write,
//! a deposed leader's late publish, a pointer write racing an election, a
//! pointer write cut off by a dropped connection that ZooKeeper may or may
//! not have applied.
//!
//! The job is the identity on `0, 1, 2, ...`, so the sink must always hold
//! exactly `0..n`: anything lost, duplicated or reordered shows at once.

use std::collections::{HashMap, VecDeque};

use crate::checkpoint::commit::{CommitAction, CommitEvent, CommitState};
use crate::checkpoint::Pointer;
use crate::ha::{step, Action, Event, Role};

/// What a checkpoint's objects hold.
#[derive(Debug, Clone)]
struct Objects {
    source_offset: u64,
    sink_offset: u64,
    output: Vec<u64>,
}

/// The shared world: ZooKeeper's latch and pointer, the storage dir, the sink.
#[derive(Debug, Default)]
struct World {
    /// The supervisor whose latch node exists, if any.
    latch: Option<usize>,
    epoch: u64,
    pointer: Pointer,
    version: i32,
    storage: HashMap<(u64, u64), Objects>,
    sink: Vec<u64>,
    /// Pointer writes ZooKeeper accepted, with who wrote them.
    accepted_writes: Vec<usize>,
}

impl World {
    /// Where the output of the newest committed checkpoint ends: the sink
    /// may never hold more, and no recovery may cut it shorter.
    fn committed_end(&self) -> u64 {
        self.pointer.latest().map_or(0, |c| {
            let objects = &self.storage[&(c.id, c.epoch)];
            objects.sink_offset + objects.output.len() as u64
        })
    }

    /// Positional write: the same bytes at the same place, as the file sink
    /// does. The identity job's k-th output is k, so any output not at its
    /// own position is a loss, a duplicate or a reordering.
    fn publish(&mut self, at: u64, output: &[u64]) {
        let at = at as usize;
        assert!(at <= self.sink.len(), "a publish past the end leaves a gap");
        for (i, value) in output.iter().enumerate() {
            assert_eq!(
                *value,
                (at + i) as u64,
                "output {value} published at position {}",
                at + i
            );
        }
        let end = at + output.len();
        assert!(
            end as u64 <= self.committed_end(),
            "published output no committed checkpoint holds"
        );
        if self.sink.len() < end {
            self.sink.resize(end, 0);
        }
        self.sink[at..end].copy_from_slice(output);
    }
}

/// One job attempt on a leader.
#[derive(Debug)]
struct Attempt {
    commit: CommitState,
    /// Next input to read.
    source: u64,
    staged: Vec<u64>,
    /// Source offset of the barrier being uploaded.
    barrier_source: u64,
    pending: VecDeque<CommitAction>,
    /// The sink recovery planned from the pointer read at restore, not yet
    /// done: a separate step, as in the real attempt, so that leadership can
    /// be lost in between.
    recovery: Option<Recovery>,
}

/// Cutting the sink back to the checkpoint a restore read.
#[derive(Debug)]
struct Recovery {
    /// The pointer's version when it was read.
    version: i32,
    sink_offset: u64,
    output: Vec<u64>,
}

/// A fault injected into one I/O step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IoFault {
    None,
    /// The storage dir refuses the write.
    Storage,
    /// The connection to ZooKeeper drops during the step. A pointer write
    /// then fails whether or not ZooKeeper applied it (the writer cannot
    /// tell which), and a recovery's fenced check goes unconfirmed.
    Connection,
}

/// One supervisor process.
#[derive(Debug)]
struct Node {
    role: Role,
    attempt: Option<Attempt>,
    /// SIGSTOPped: takes no step at all.
    paused: bool,
    /// The connection to ZooKeeper is down.
    disconnected: bool,
    /// ZooKeeper expired the session; the node has not noticed yet.
    expired: bool,
}

struct Sim {
    world: World,
    nodes: Vec<Node>,
    /// Seeded, so a failing seed replays exactly.
    rng: fastrand::Rng,
}

impl Sim {
    fn new(seed: u64, nodes: usize) -> Sim {
        let node = || Node {
            role: Role::Follower,
            attempt: None,
            paused: false,
            disconnected: false,
            expired: false,
        };
        Sim {
            world: World::default(),
            nodes: (0..nodes).map(|_| node()).collect(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Feeds a session or signal event to node `n`'s role and carries out its actions.
    fn role_event(&mut self, n: usize, event: Event) {
        let (role, actions) = step(self.nodes[n].role, event);
        self.nodes[n].role = role;
        for action in actions {
            match action {
                Action::RunJobs | Action::ResumeJobs => {
                    if self.nodes[n].attempt.is_none() {
                        self.restore(n);
                    }
                }
                Action::StopJobs | Action::FinishJobs => self.nodes[n].attempt = None,
                Action::Rejoin => self.nodes[n].expired = false,
                Action::PauseJobs | Action::ReleaseLatch | Action::Exit => {}
            }
        }
    }

    /// A new attempt from the latest checkpoint; the sink is recovered to it
    /// in a later step ([`Sim::recover`]).
    fn restore(&mut self, n: usize) {
        let Role::Leader { epoch, .. } = self.nodes[n].role else {
            return;
        };
        let (source, sink_offset, output) = match self.world.pointer.latest() {
            Some(c) => {
                let objects = self.world.storage[&(c.id, c.epoch)].clone();
                (objects.source_offset, objects.sink_offset, objects.output)
            }
            None => (0, 0, Vec::new()),
        };
        let published = sink_offset + output.len() as u64;
        self.nodes[n].attempt = Some(Attempt {
            commit: CommitState::resume(epoch, self.world.pointer.clone(), self.world.version, published),
            source,
            staged: Vec::new(),
            barrier_source: source,
            pending: VecDeque::new(),
            recovery: Some(Recovery {
                version: self.world.version,
                sink_offset,
                output,
            }),
        });
    }

    /// Node `n` cuts the sink back to its restored checkpoint, once it has
    /// confirmed (fenced) that it still leads and the pointer has not moved.
    fn recover(&mut self, n: usize, cut_off: bool) {
        let node = &mut self.nodes[n];
        let Some(recovery) = node.attempt.as_mut().and_then(|a| a.recovery.take()) else {
            return;
        };
        let confirmed =
            !cut_off && !node.disconnected && self.world.latch == Some(n) && self.world.version == recovery.version;
        if !confirmed {
            node.attempt = None;
            if self.world.latch != Some(n) {
                self.role_event(n, Event::Deposed);
            }
            return;
        }
        let end = recovery.sink_offset + recovery.output.len() as u64;
        assert_eq!(
            end,
            self.world.committed_end(),
            "recovered to a checkpoint the pointer no longer names"
        );
        self.world.publish(recovery.sink_offset, &recovery.output);
        self.world.sink.truncate(end as usize);
    }

    /// Whether node `n` runs jobs: a connected leader with a recovered attempt.
    fn running(&self, n: usize) -> bool {
        matches!(self.nodes[n].role, Role::Leader { suspended: false, .. })
            && self.nodes[n].attempt.as_ref().is_some_and(|a| a.recovery.is_none())
    }

    /// Node `n`'s next I/O: its pending recovery, else its next commit
    /// action, carried out against the world with `fault` injected.
    fn io(&mut self, n: usize, fault: IoFault) {
        // The connection drops during this step: a ZooKeeper request in it goes unanswered.
        let cut_off = fault == IoFault::Connection && !self.nodes[n].disconnected;
        if self.nodes[n].attempt.as_ref().is_some_and(|a| a.recovery.is_some()) {
            self.recover(n, cut_off);
        } else {
            self.commit_io(n, fault == IoFault::Storage, cut_off);
        }
        if cut_off {
            self.drop_connection(n);
        }
    }

    /// The connection of node `n` to ZooKeeper drops; its client says so.
    fn drop_connection(&mut self, n: usize) {
        self.nodes[n].disconnected = true;
        self.role_event(n, Event::ConnectionLost);
    }

    /// Carries out node `n`'s next commit action against the world.
    fn commit_io(&mut self, n: usize, storage_fails: bool, cut_off: bool) {
        let node = &mut self.nodes[n];
        let Some(attempt) = node.attempt.as_mut() else { return };
        let Some(action) = attempt.pending.pop_front() else {
            return;
        };
        let event = match action {
            CommitAction::Upload {
                checkpoint,
                sink_offset,
                output_len,
            } => {
                let key = (checkpoint.id, checkpoint.epoch);
                if storage_fails || self.world.storage.contains_key(&key) {
                    Some(CommitEvent::UploadFailed)
                } else {
                    let output = attempt.staged[..output_len as usize].to_vec();
                    let objects = Objects {
                        source_offset: attempt.barrier_source,
                        sink_offset,
                        output,
                    };
                    self.world.storage.insert(key, objects);
                    Some(CommitEvent::Uploaded)
                }
            }
            CommitAction::WritePointer {
                pointer,
                expected_version,
            } => {
                // A fenced multi-op: our latch node must exist, and the version match.
                let fenced = node.disconnected || self.world.latch != Some(n) || self.world.version != expected_version;
                // A write cut off with the connection may still have reached
                // ZooKeeper; either way the writer hears only that it failed.
                let applied = !fenced && (!cut_off || self.rng.bool());
                if applied {
                    self.world.pointer = pointer;
                    self.world.version += 1;
                    self.world.accepted_writes.push(n);
                }
                if applied && !cut_off {
                    Some(CommitEvent::PointerWritten {
                        version: self.world.version,
                    })
                } else {
                    Some(CommitEvent::PointerRefused)
                }
            }
            CommitAction::Publish { at, len } => {
                let output: Vec<u64> = attempt.staged.drain(..len as usize).collect();
                self.world.publish(at, &output);
                Some(CommitEvent::Published)
            }
            CommitAction::Delete(old) => {
                self.world.storage.remove(&(old.id, old.epoch));
                None
            }
            CommitAction::CountFailure => None,
            CommitAction::EndAttempt => {
                node.attempt = None;
                return;
            }
        };
        if let Some(event) = event {
            let actions = attempt.commit.step(event);
            if event == CommitEvent::PointerRefused && self.world.latch != Some(n) {
                self.role_event(n, Event::Deposed);
            }
            if let Some(attempt) = self.nodes[n].attempt.as_mut() {
                attempt.pending.extend(actions);
            }
        }
    }

    /// One random step of the world.
    fn step(&mut self, faults: bool) {
        let n = self.rng.usize(..self.nodes.len());
        let choice = self.rng.u64(..if faults { 13 } else { 6 });
        let Node {
            role,
            paused,
            disconnected,
            expired,
            ..
        } = self.nodes[n];
        // A paused node does nothing; it can only be woken, or have its
        // session expired by ZooKeeper.
        if paused && !matches!(choice, 6 | 8) {
            return;
        }
        match choice {
            // A failed attempt restarts from the latest checkpoint (the restart strategy).
            0 if matches!(role, Role::Leader { suspended: false, .. }) && self.nodes[n].attempt.is_none() => {
                self.restore(n)
            }
            // A batch of 1-3 events through the job.
            0 | 1 if self.running(n) => {
                let attempt = self.nodes[n].attempt.as_mut().unwrap();
                if attempt.pending.is_empty() {
                    let k = self.rng.u64(1..4);
                    attempt.staged.extend(attempt.source..attempt.source + k);
                    attempt.source += k;
                }
            }
            2 if self.running(n) => {
                let attempt = self.nodes[n].attempt.as_mut().unwrap();
                if attempt.pending.is_empty() {
                    let unstaged = attempt.staged.len() as u64 - attempt.commit.staged();
                    attempt.barrier_source = attempt.source;
                    let actions = attempt.commit.step(CommitEvent::Barrier {
                        output_len: unstaged,
                        created_ms: 0,
                    });
                    attempt.pending.extend(actions);
                }
            }
            // In-flight I/O completes, even on a node that is suspended or deposed
            // without knowing it yet.
            3 | 4 => self.io(n, IoFault::None),
            // An election, once the latch is free.
            5 if self.world.latch.is_none() && role == Role::Follower && !disconnected && !expired => {
                self.world.latch = Some(n);
                self.world.epoch += 1;
                let epoch = self.world.epoch;
                self.role_event(n, Event::Elected { epoch });
            }
            // Faults.
            6 => self.nodes[n].paused = !paused,
            7 if !disconnected => self.drop_connection(n),
            7 => {
                self.nodes[n].disconnected = false;
                if expired {
                    self.role_event(n, Event::SessionEnded);
                } else {
                    let latch_held = self.world.latch == Some(n);
                    self.role_event(n, Event::Reconnected { latch_held });
                }
            }
            // ZooKeeper expires a silent session (paused or cut off); its latch goes.
            8 if (paused || disconnected) && !expired => {
                self.nodes[n].expired = true;
                if self.world.latch == Some(n) {
                    self.world.latch = None;
                }
            }
            // The node's own client notices the expiry.
            9 if expired && !disconnected => self.role_event(n, Event::SessionEnded),
            10 => self.io(n, IoFault::Storage),
            11 => self.io(n, IoFault::Connection),
            _ => {}
        }
    }

    /// The rules that must hold after every step (the sink's own are checked
    /// on every write, in [`World::publish`]).
    fn check(&self, seed: u64) {
        for c in &self.world.pointer.retained {
            assert!(
                self.world.storage.contains_key(&(c.id, c.epoch)),
                "seed {seed}: the pointer names a deleted checkpoint {c:?}"
            );
        }
    }

    /// Lets every fault heal and runs on without faults.
    fn heal(&mut self) {
        for n in 0..self.nodes.len() {
            self.nodes[n].paused = false;
            if self.nodes[n].disconnected {
                self.nodes[n].disconnected = false;
                let event = if self.nodes[n].expired {
                    Event::SessionEnded
                } else {
                    Event::Reconnected {
                        latch_held: self.world.latch == Some(n),
                    }
                };
                self.role_event(n, event);
            }
            if self.nodes[n].expired {
                self.role_event(n, Event::SessionEnded);
            }
        }
    }
}

#[test]
fn no_interleaving_of_faults_loses_duplicates_or_lets_a_deposed_leader_write() {
    for seed in 0..3000 {
        let mut sim = Sim::new(seed, 3);
        for _ in 0..400 {
            sim.step(true);
            sim.check(seed);
        }
        sim.heal();
        let before = sim.world.sink.len();
        for _ in 0..2000 {
            sim.step(false);
            sim.check(seed);
        }
        assert!(
            sim.world.sink.len() > before,
            "seed {seed}: no progress once faults stopped: {:?}",
            sim.nodes
        );
    }
}

/// Two supervisors; node 0 leads in epoch 1, has run `0..5` through the
/// job and uploaded a checkpoint of it: its next I/O is the pointer write.
fn uploaded_before_the_pointer_write(seed: u64) -> Sim {
    let mut sim = Sim::new(seed, 2);
    sim.world.latch = Some(0);
    sim.world.epoch = 1;
    sim.role_event(0, Event::Elected { epoch: 1 });
    sim.io(0, IoFault::None);
    let attempt = sim.nodes[0].attempt.as_mut().unwrap();
    attempt.staged.extend(0..5);
    attempt.source = 5;
    attempt.barrier_source = 5;
    let actions = attempt.commit.step(CommitEvent::Barrier {
        output_len: 5,
        created_ms: 0,
    });
    attempt.pending.extend(actions);
    sim.io(0, IoFault::None);
    sim
}

#[test]
fn a_leader_deposed_between_upload_and_pointer_write_writes_nothing() {
    let mut sim = uploaded_before_the_pointer_write(1);
    // Paused here, the session expires and node 1 takes over.
    sim.nodes[0].paused = true;
    sim.nodes[0].expired = true;
    sim.world.latch = Some(1);
    sim.world.epoch = 2;
    sim.role_event(1, Event::Elected { epoch: 2 });
    // Node 0 wakes and goes on with its pointer write before noticing.
    sim.nodes[0].paused = false;
    sim.io(0, IoFault::None);
    assert!(
        sim.world.accepted_writes.is_empty(),
        "a deposed leader's pointer write went through"
    );
    assert!(sim.world.sink.is_empty(), "a deposed leader published");
    assert_eq!(sim.nodes[0].role, Role::Follower);
    assert!(sim.nodes[0].attempt.is_none());
}

#[test]
fn a_pointer_write_cut_off_with_its_connection_loses_and_repeats_nothing() {
    let mut outcomes = Vec::new();
    for seed in 0..16 {
        let mut sim = uploaded_before_the_pointer_write(seed);
        // The pointer write goes out and the connection drops before its answer.
        sim.io(0, IoFault::Connection);
        outcomes.push(sim.world.accepted_writes.len());
        assert!(sim.world.sink.is_empty(), "published on an unconfirmed pointer write");
        sim.heal();
        for _ in 0..2000 {
            sim.step(false);
            sim.check(seed);
        }
        assert!(sim.world.sink.len() >= 5, "seed {seed}: the output never came");
    }
    assert!(
        outcomes.contains(&0) && outcomes.contains(&1),
        "both outcomes of a cut-off write were tried: {outcomes:?}"
    );
}
