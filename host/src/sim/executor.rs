//! The simulated supervisor's jobs, behind the real [`Executor`]: a job that
//! passes its source's numbers through (so its sink must read `0, 1, 2, ...`
//! exactly), run as a task on the simulated runtime, and a sink file in the
//! world. They check, as they go, the rules only they can see: no job runs
//! on while its supervisor is cut off, none stops or restarts without a
//! reason, a FAILED job never starts again, and no write to a sink leaves
//! it anything but the sequence.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::kafka::SimKafkaSink;
use super::world::World;
use crate::checkpoint::Checkpoint;
use crate::connectors::{Sink, SinkOwner, TableShape};
use crate::job::{
    AttemptError, Barrier, BatchLoop, Control, ControlReceiver, Executor, GuestSnapshot, LoopEnded, RunEnd,
};
use crate::runtime::{Pages, PAGE};
use crate::spec::{JobSpec, JobState, JobStatus, Share, SinkSpec, StateFormat};

/// How long a supervisor may let its jobs run on after its connection
/// dropped: its loop must pause them at once, give or take a request in flight.
const PAUSE_WITHIN: Duration = Duration::from_millis(100);

/// How soon after a fault on its supervisor a job may stop or restart
/// because of it: the leader acts at once, give or take a few requests.
const REASON_WITHIN: Duration = Duration::from_secs(1);

/// A job whose name starts with this fails in its first batch.
pub const DOOMED: &str = "doomed";

/// Runs simulated jobs for supervisor process `node`.
pub struct SimExecutor {
    pub world: Arc<World>,
    pub node: usize,
    /// Where the cluster's job statuses are, for the FAILED check.
    pub layout: crate::ha::Layout,
}

#[async_trait::async_trait]
impl Executor for SimExecutor {
    fn is_prepared(&self, _module_sha256: &str) -> bool {
        true
    }

    async fn prepare(&self, _module_sha256: &str) -> Result<(), AttemptError> {
        Ok(())
    }

    fn open_sink(&self, spec: &SinkSpec, _owner: SinkOwner) -> Box<dyn Sink> {
        match spec {
            SinkSpec::File { path } => Box::new(SimSink {
                world: self.world.clone(),
                node: self.node,
                path: path.clone(),
                in_flight: None,
            }),
            SinkSpec::Kafka { topic, .. } => Box::new(SimKafkaSink {
                world: self.world.clone(),
                node: self.node,
                topic: topic.clone(),
                epoch: None,
                in_flight: None,
            }),
            other => panic!("the simulation's jobs write files and topics, not {other}"),
        }
    }

    async fn load(
        &self,
        spec: &JobSpec,
        share: Share,
        restored: Option<&Checkpoint>,
        _table: Option<TableShape>,
    ) -> Result<Box<dyn BatchLoop>, AttemptError> {
        self.world.latency(self.node).await;
        let mut state = self.world.lock();
        let status = state
            .tree
            .get(&self.layout.job_status(&spec.name))
            .and_then(|z| serde_json::from_slice::<JobStatus>(&z.data).ok());
        if status.is_some_and(|s| s.state == JobState::Failed) {
            state
                .violations
                .push(format!("node {}: FAILED job {} started again", self.node, spec.name));
        }
        let next = restored.map_or(0, |c| c.meta.source_offset);
        let memory = restored.and_then(|c| c.memory.as_ref().map(|m| m.to_vec()));
        let snapshot = match &memory {
            Some(memory) => offset_in(memory).to_le_bytes().to_vec(),
            None => restored.map(|c| c.snapshot.to_vec()).unwrap_or_default(),
        };
        if restored.is_some() && snapshot != next.to_le_bytes() {
            state.violations.push(format!(
                "node {}: job {} restored a snapshot of another offset",
                self.node, spec.name
            ));
        }
        let node = self.node;
        state.note(|| format!("node {node}: job {} loaded at {next}", spec.name));
        Ok(Box::new(SimLoop {
            world: self.world.clone(),
            node: self.node,
            name: spec.name.clone(),
            uid: spec.uid.clone(),
            layout: self.layout.clone(),
            share,
            next,
            interval: spec.checkpoint_interval,
            memory: (spec.state == StateFormat::Memory).then(|| memory.unwrap_or_default()),
        }))
    }
}

/// One attempt's batch loop.
struct SimLoop {
    world: Arc<World>,
    node: usize,
    name: String,
    uid: String,
    layout: crate::ha::Layout,
    /// The task's share: its `k`-th number is `index + k * of`.
    share: Share,
    /// How many numbers the task's source has given.
    next: u64,
    interval: Duration,
    /// For a job whose checkpoints are its memory: the memory as of the
    /// last image (empty: none yet), in which byte `j` of `next` is the
    /// first of page `j`, so an image that missed a page is caught.
    memory: Option<Vec<u8>>,
}

/// The offset a sim job's memory holds.
fn offset_in(memory: &[u8]) -> u64 {
    let byte = |j: usize| memory.get(j * PAGE).copied().unwrap_or(0) as u64;
    (0..8).map(|j| byte(j) << (8 * j)).sum()
}

impl BatchLoop for SimLoop {
    fn start(
        self: Box<Self>,
        control: ControlReceiver,
        barriers: mpsc::Sender<Barrier>,
        mut cancel: oneshot::Receiver<()>,
    ) -> Result<LoopEnded, AttemptError> {
        let (ended, loop_ended) = oneshot::channel();
        tokio::spawn(async move {
            let _ = ended.send(self.run(control, barriers, &mut cancel).await);
        });
        Ok(loop_ended)
    }
}

impl SimLoop {
    async fn run(
        mut self,
        mut control: ControlReceiver,
        barriers: mpsc::Sender<Barrier>,
        cancel: &mut oneshot::Receiver<()>,
    ) -> anyhow::Result<RunEnd> {
        let mut staged = (Vec::new(), Vec::new());
        let mut next_barrier = tokio::time::Instant::now() + self.interval;
        loop {
            self.world.running(self.node).await;
            if !matches!(cancel.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
                self.ended("cancelled");
                return Ok(RunEnd::Stopped);
            }
            let now = control.get();
            match now {
                Control::Stop => {
                    self.ended("stopped");
                    if self.world.strikes(|r| r.slow_stop) {
                        // Blocked in a host call, until the attempt gives
                        // up on it and drops it.
                        tokio::select! {
                            biased;
                            _ = &mut *cancel => {}
                            () = tokio::time::sleep(Duration::from_secs(5)) => {}
                        }
                    }
                    return Ok(RunEnd::Stopped);
                }
                Control::Pause => {
                    if control.changed().await.is_err() {
                        return Ok(RunEnd::Stopped);
                    }
                    continue;
                }
                Control::Finish => {
                    // As a wasm job's, the final checkpoint is the SDK's state.
                    self.memory = None;
                    let barrier = self.barrier(&mut staged);
                    let _ = barriers.send(barrier).await;
                    return Ok(RunEnd::Finished);
                }
                Control::Run => {}
            }
            self.check_paused_when_cut_off();
            if self.name.starts_with(DOOMED) {
                anyhow::bail!("the doomed job fails its first batch");
            }
            let (count, pause) = {
                let mut state = self.world.lock();
                let drawn = (state.rng.u64(1..4), state.rng.u64(5..20));
                let (node, name, next) = (self.node, &self.name, self.next);
                state.note(|| format!("node {node}: job {name} at {next} draws {drawn:?}"));
                drawn
            };
            let (index, of) = (u64::from(self.share.index), u64::from(self.share.of));
            for n in (self.next..self.next + count).map(|k| index + k * of) {
                let to = if is_dead_letter(n) {
                    &mut staged.1
                } else {
                    &mut staged.0
                };
                to.extend_from_slice(format!("{n}\n").as_bytes());
            }
            self.next += count;
            if tokio::time::Instant::now() >= next_barrier {
                let barrier = self.barrier(&mut staged);
                if barriers.send(barrier).await.is_err() {
                    return Ok(RunEnd::Stopped);
                }
                next_barrier = tokio::time::Instant::now() + self.interval;
            }
            tokio::select! {
                biased;
                _ = &mut *cancel => {}
                _ = control.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(pause)) => {}
            }
        }
    }

    fn barrier(&mut self, staged: &mut (Vec<u8>, Vec<u8>)) -> Barrier {
        let (output, dead_letters) = std::mem::take(staged);
        let state = match &mut self.memory {
            None => GuestSnapshot::Serialized(self.next.to_le_bytes().to_vec()),
            Some(memory) => {
                let mut now = vec![0; 8 * PAGE];
                for (j, byte) in self.next.to_le_bytes().into_iter().enumerate() {
                    now[j * PAGE] = byte;
                }
                let whole = memory.is_empty();
                let written = (0..8u32).filter(|&j| memory.get(j as usize * PAGE) != Some(&now[j as usize * PAGE]));
                let pages = match whole {
                    true => Pages::whole(&now),
                    false => Pages::copy(&now, written.collect()),
                };
                *memory = now;
                GuestSnapshot::Pages { pages, whole }
            }
        };
        Barrier {
            state,
            source_position: crate::checkpoint::SourcePosition::at(self.next),
            source_lag: Default::default(),
            event_times: Default::default(),
            output,
            dead_letters,
            counts: Default::default(),
            created_ms: 0,
            taken: tokio::time::Instant::now(),
        }
    }

    /// A job told to run while its supervisor has been cut off for longer
    /// than [`PAUSE_WITHIN`] means the leader's loop did not hear it.
    fn check_paused_when_cut_off(&self) {
        let state = self.world.lock();
        let process = &state.processes[self.node];
        // A process that was paused meanwhile could not act on it until resumed.
        let since = process.disconnected.map(|at| at.max(process.last_fault.unwrap_or(at)));
        drop(state);
        if since.is_some_and(|since| since.elapsed() > PAUSE_WITHIN) {
            self.world.violation(format!(
                "node {}: job {} ran on {:?} after its supervisor was cut off from ZooKeeper",
                self.node,
                self.name,
                since.map(|s| s.elapsed())
            ));
        }
    }

    /// An attempt that ends with no fault on its supervisor lately, while
    /// its job is still wanted and its supervisor not shutting down, had no
    /// reason to.
    fn ended(&self, how: &str) {
        let state = self.world.lock();
        let process = &state.processes[self.node];
        let wanted = state
            .tree
            .get(&self.layout.job(&self.name))
            .and_then(|z| serde_json::from_slice::<JobSpec>(&z.data).ok())
            .is_some_and(|s| s.uid == self.uid && s.desired == crate::spec::Desired::Running);
        let recent_fault = process.last_fault.is_some_and(|at| at.elapsed() < REASON_WITHIN);
        let reason = recent_fault || process.shutting_down || !wanted;
        drop(state);
        if !reason {
            self.world.violation(format!(
                "node {}: job {} {how} with no fault, no shutdown and its spec unchanged",
                self.node, self.name
            ));
        }
    }
}

/// A sink file in the world, written as the file sink writes (at a byte
/// position, by a task that lands even when the caller stops waiting),
/// checked after every write.
struct SimSink {
    world: Arc<World>,
    node: usize,
    path: String,
    in_flight: Option<tokio::task::JoinHandle<()>>,
}

impl SimSink {
    /// Writes after the world's latency, on a task of its own, as the file
    /// sink's blocking write goes on when its caller is dropped.
    async fn write_later(&mut self, position: u64, output: Bytes, truncate: bool) {
        self.settle().await;
        let (world, node, path) = (self.world.clone(), self.node, self.path.clone());
        let write = self.in_flight.insert(tokio::spawn(async move {
            world.latency(node).await;
            SimSink::write(&world, node, &path, position, &output, truncate);
        }));
        let _ = write.await;
        self.in_flight = None;
    }

    fn write(world: &World, node: usize, path: &str, position: u64, output: &[u8], truncate: bool) {
        let mut state = world.lock();
        let len = output.len();
        let text = String::from_utf8_lossy(output).replace('\n', " ");
        state.note(|| format!("node {node}: sink {path} at {position} +{len} truncate {truncate}: {text}"));
        let file = state.sinks.entry(path.to_string()).or_default();
        let position = position as usize;
        if file.len() < position {
            let what = format!("node {node}: sink {path} written past its end");
            state.violations.push(what);
            return;
        }
        let end = position + output.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[position..end].copy_from_slice(output);
        if truncate {
            file.truncate(end);
        }
        if let Some(problem) = sequence_problem(path, file) {
            let what = format!("node {node}: sink {path}: {problem}");
            state.violations.push(what);
        }
    }
}

/// The simulated job sends every fifth number to its dead letters, so
/// that every commit carries output for two sinks.
fn is_dead_letter(n: u64) -> bool {
    n.is_multiple_of(5)
}

/// The file a job of deployment `uid` with `tasks` tasks writes its output
/// (or its dead letters) to: `{task}` is each task's number, and the
/// name says which numbers the task has.
pub fn sink_path(uid: &str, tasks: u32, dead: bool) -> String {
    let kind = if dead { "dead" } else { "out" };
    format!("/sim/{uid}.t{{task}}of{tasks}.{kind}")
}

/// The numbers task `i` of `n` has, from the name [`sink_path`] gave its
/// file (all of them for a name without one).
fn share_of(path: &str) -> (u64, u64) {
    let share = path.rsplit_once(".t").and_then(|(_, rest)| {
        let (share, _) = rest.split_once('.')?;
        let (i, n) = share.split_once("of")?;
        Some((i.parse().ok()?, n.parse().ok()?))
    });
    share.unwrap_or((0, 1))
}

/// What is wrong with a sink at `path` that should hold its task's share
/// of the numbers `0\n1\n2\n...` that are not dead letters (or, for a
/// dead-letter sink, those that are), if anything.
pub fn sequence_problem(path: &str, file: &[u8]) -> Option<String> {
    let Ok(text) = std::str::from_utf8(file) else {
        return Some("is not text".into());
    };
    if !text.is_empty() && !text.ends_with('\n') {
        return Some("ends in a partial line".into());
    }
    let dead = path.ends_with(".dead");
    let (index, of) = share_of(path);
    let mut expected = (0..).map(|k| index + k * of).filter(|n| is_dead_letter(*n) == dead);
    for (i, line) in text.lines().enumerate() {
        if Some(line) != expected.next().map(|n| n.to_string()).as_deref() {
            return Some(format!("line {i} is {line:?}: lost or duplicated output"));
        }
    }
    None
}

#[async_trait::async_trait]
impl Sink for SimSink {
    async fn initial_position(&mut self) -> io::Result<u64> {
        self.world.latency(self.node).await;
        Ok(self.world.lock().sinks.get(&self.path).map_or(0, |f| f.len() as u64))
    }

    async fn publish(&mut self, position: u64, output: Bytes) -> io::Result<()> {
        self.write_later(position, output, false).await;
        Ok(())
    }

    async fn recover(&mut self, position: u64, output: Bytes) -> io::Result<()> {
        self.write_later(position, output, true).await;
        Ok(())
    }

    async fn settle(&mut self) {
        if let Some(write) = self.in_flight.as_mut() {
            let _ = write.await;
            self.in_flight = None;
        }
    }
}
