//! Group commit: the checkpoint pointers of a worker's tasks reach
//! ZooKeeper together, one fenced multi-op for every pointer ready within
//! a short window, so ZooKeeper's write load grows with workers, not with
//! tasks. Each pointer keeps its own guards (its job's spec and its task's
//! assignment; the spec checked once per batch), so a refused guard fails
//! only the tasks behind it and the rest go again at once.
//!
//! A pointer whose task stopped waiting before its batch left is dropped
//! from it: a stopped attempt writes nothing it had not already sent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::error::AttemptError;
use crate::coord::{FenceError, FencedOp, Session};
use crate::metrics::Metrics;

/// Pointers in one multi-op at most, and the bytes they may take: far
/// below ZooKeeper's 1 MiB request limit (`jute.maxbuffer`), past which
/// the server drops the connection.
const MAX_BATCH: usize = 500;
const MAX_BATCH_BYTES: usize = 256 << 10;

/// What a batched op costs beyond its path and data (its header).
const OP_OVERHEAD: usize = 32;

/// One pointer to write: the pointer's node, its new content and the
/// version it must be at, and the guards of its task.
struct Request {
    /// `jobs/<name>` and the version the task's spec was read at.
    spec: (String, i32),
    /// `jobs/<name>/tasks/<i>` and the version that assigned it here.
    assignment: (String, i32),
    pointer: String,
    data: Vec<u8>,
    expected: i32,
    /// When it was asked for: it waits at most the window from then.
    asked: Instant,
    reply: oneshot::Sender<Result<i32, AttemptError>>,
}

impl Request {
    fn bytes(&self) -> usize {
        self.assignment.0.len() + self.pointer.len() + self.data.len() + 2 * OP_OVERHEAD
    }
}

/// The pointers this worker's tasks are yet to have written.
#[derive(Clone)]
pub struct GroupCommit {
    requests: mpsc::UnboundedSender<Request>,
}

impl GroupCommit {
    /// Writes pointers through `session`, fenced by the worker node `node`,
    /// each waiting at most `window` from when it was asked for (one that
    /// comes while a write is in flight waits for that write too, then goes
    /// with the next). The writer ends when the last handle is dropped.
    pub fn start(session: Arc<dyn Session>, node: String, window: Duration, metrics: Arc<Metrics>) -> GroupCommit {
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(session, node, window, metrics, queue));
        GroupCommit { requests }
    }

    /// Sets the pointer at `pointer` to `data` if it is at version
    /// `expected`, this worker's node exists and the spec and assignment
    /// are at the versions given; returns the pointer's new version.
    pub async fn write(
        &self,
        spec: (String, i32),
        assignment: (String, i32),
        pointer: &str,
        data: Vec<u8>,
        expected: i32,
    ) -> Result<i32, AttemptError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            spec,
            assignment,
            pointer: pointer.to_string(),
            data,
            expected,
            asked: Instant::now(),
            reply,
        };
        let stopped = || AttemptError::Failed(anyhow::anyhow!("the worker's pointer writer has stopped"));
        self.requests.send(request).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer: gathers requests into batches and writes each batch.
async fn write_batches(
    session: Arc<dyn Session>,
    node: String,
    window: Duration,
    metrics: Arc<Metrics>,
    mut queue: mpsc::UnboundedReceiver<Request>,
) {
    let mut pending = VecDeque::new();
    loop {
        if pending.is_empty() {
            let Some(first) = queue.recv().await else { return };
            let until = first.asked + window;
            pending.push_back(first);
            while pending.len() < MAX_BATCH {
                tokio::select! {
                    biased;
                    request = queue.recv() => match request {
                        Some(request) => pending.push_back(request),
                        None => break,
                    },
                    () = tokio::time::sleep_until(until) => break,
                }
            }
        }
        while let Ok(request) = queue.try_recv() {
            pending.push_back(request);
        }
        pending.retain(|r| !r.reply.is_closed());
        let batch = next_batch(&mut pending);
        if batch.is_empty() {
            continue;
        }
        let (ops, specs) = ops(&batch);
        metrics.pointer_writes.inc();
        let result = session.fenced(&node, &ops).await;
        if result.is_ok() {
            metrics.pointers_written.inc_by(batch.len() as u64);
        }
        let retry = answer(batch, specs, result);
        for request in retry.into_iter().rev() {
            pending.push_front(request);
        }
    }
}

/// Takes the next batch off `pending`, in order: at most [`MAX_BATCH`]
/// pointers and [`MAX_BATCH_BYTES`], and one version of each spec, so a
/// refused spec check names the tasks it fails. What does not fit stays.
fn next_batch(pending: &mut VecDeque<Request>) -> Vec<Request> {
    let mut batch: Vec<Request> = Vec::new();
    let mut bytes = 0;
    let mut rest = VecDeque::new();
    while let Some(request) = pending.pop_front() {
        let spec_bytes = match batch.iter().find(|r| r.spec.0 == request.spec.0) {
            Some(other) if other.spec.1 != request.spec.1 => {
                rest.push_back(request);
                continue;
            }
            Some(_) => 0,
            None => request.spec.0.len() + OP_OVERHEAD,
        };
        let cost = request.bytes() + spec_bytes;
        if !batch.is_empty() && (batch.len() == MAX_BATCH || bytes + cost > MAX_BATCH_BYTES) {
            rest.push_back(request);
            rest.extend(pending.drain(..));
            break;
        }
        bytes += cost;
        batch.push(request);
    }
    *pending = rest;
    batch
}

/// A batch's multi-op, in the order ZooKeeper checks it: each spec once,
/// then each pointer's assignment check and write; and how many spec
/// checks lead it.
fn ops(batch: &[Request]) -> (Vec<FencedOp<'_>>, usize) {
    let mut ops: Vec<FencedOp<'_>> = Vec::new();
    for request in batch {
        let checked = ops.iter().any(|op| op.path() == request.spec.0);
        debug_assert!(
            !checked
                || ops.contains(&FencedOp::Check {
                    path: &request.spec.0,
                    version: request.spec.1
                }),
            "a batch holds one version of each spec"
        );
        if !checked {
            ops.push(FencedOp::Check {
                path: &request.spec.0,
                version: request.spec.1,
            });
        }
    }
    let specs = ops.len();
    for request in batch {
        ops.push(FencedOp::Check {
            path: &request.assignment.0,
            version: request.assignment.1,
        });
        ops.push(FencedOp::Set {
            path: &request.pointer,
            data: &request.data,
            expected: Some(request.expected),
        });
    }
    (ops, specs)
}

/// Where in a batch's answer the version of its pointer `i` is.
fn pointer_at(specs: usize, i: usize) -> usize {
    specs + 2 * i + 1
}

/// Answers the requests of a batch led by `specs` spec checks and written
/// with `result`; returns those to write again, in order. A refused guard
/// fails only the tasks behind it.
fn answer(batch: Vec<Request>, specs: usize, result: Result<Vec<i32>, FenceError>) -> Vec<Request> {
    let behind = |request: &Request, path: &str| {
        path == request.spec.0 || path == request.assignment.0 || path == request.pointer
    };
    let refused_some = match &result {
        Err(FenceError::Conflict { path, .. }) => batch.iter().any(|r| behind(r, path)),
        _ => false,
    };
    let mut retry = Vec::new();
    for (i, request) in batch.into_iter().enumerate() {
        let outcome = match &result {
            Ok(versions) => versions.get(pointer_at(specs, i)).copied().ok_or_else(|| {
                AttemptError::Failed(anyhow::anyhow!(
                    "ZooKeeper answered {} results for a write of {} ops",
                    versions.len(),
                    pointer_at(specs, i) + 1
                ))
            }),
            Err(FenceError::Conflict { path, .. }) if refused_some && !behind(&request, path) => {
                retry.push(request);
                continue;
            }
            Err(FenceError::Conflict { path, .. }) if *path == request.spec.0 || *path == request.assignment.0 => {
                Err(AttemptError::Superseded)
            }
            Err(e) => Err(e.clone().into()),
        };
        // The task may have stopped waiting: nothing to tell it then.
        let _ = request.reply.send(outcome);
    }
    retry
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = oneshot::Receiver<Result<i32, AttemptError>>;

    fn request(job: &str, version: i32, task: u32) -> (Request, Answer) {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            spec: (format!("/jobs/{job}"), version),
            assignment: (format!("/jobs/{job}/tasks/{task}"), 3),
            pointer: format!("/jobs/{job}/tasks/{task}/checkpoint"),
            data: vec![b'x'; 100],
            expected: 7,
            asked: Instant::now(),
            reply,
        };
        (request, answer)
    }

    fn queue(requests: impl IntoIterator<Item = (Request, Answer)>) -> VecDeque<Request> {
        requests.into_iter().map(|(request, _)| request).collect()
    }

    fn conflict(path: &str) -> Result<Vec<i32>, FenceError> {
        Err(FenceError::Conflict {
            path: path.into(),
            source: zookeeper_client::Error::BadVersion,
        })
    }

    #[test]
    fn a_batch_checks_each_spec_once_and_holds_one_version_of_it() {
        let mut pending = queue([
            request("a", 1, 0),
            request("b", 4, 0),
            request("a", 1, 1),
            request("a", 2, 2),
        ]);
        let batch = next_batch(&mut pending);
        assert_eq!(batch.len(), 3);
        assert_eq!(
            pending.len(),
            1,
            "the other version of a's spec waits for the next batch"
        );
        assert_eq!(pending[0].spec.1, 2);
        let (ops, specs) = ops(&batch);
        assert_eq!(specs, 2);
        assert_eq!(ops.len(), 2 + 2 * 3);
        assert_eq!(
            ops[0],
            FencedOp::Check {
                path: "/jobs/a",
                version: 1
            }
        );
        assert_eq!(
            ops[1],
            FencedOp::Check {
                path: "/jobs/b",
                version: 4
            }
        );
        assert_eq!(ops[pointer_at(specs, 2)].path(), "/jobs/a/tasks/1/checkpoint");
    }

    #[test]
    fn a_batch_stays_below_its_limits() {
        let mut pending = queue((0..MAX_BATCH as u32 + 10).map(|i| request("a", 1, i)));
        assert_eq!(next_batch(&mut pending).len(), MAX_BATCH);
        assert_eq!(pending.len(), 10);
        assert_eq!(
            pending[0].assignment.0,
            format!("/jobs/a/tasks/{MAX_BATCH}"),
            "the rest keep their order"
        );

        let (mut big, _) = request("a", 1, 0);
        big.data = vec![0; MAX_BATCH_BYTES];
        let mut pending = queue([(big, oneshot::channel().1), request("a", 1, 1)]);
        assert_eq!(
            next_batch(&mut pending).len(),
            1,
            "a pointer goes alone if it alone is over"
        );
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn a_refused_guard_fails_only_the_tasks_behind_it() {
        let (a0, mut a0_answer) = request("a", 1, 0);
        let (b0, mut b0_answer) = request("b", 1, 0);
        let (b1, mut b1_answer) = request("b", 1, 1);
        let retry = answer(vec![a0, b0, b1], 2, conflict("/jobs/b"));
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].spec.0, "/jobs/a");
        assert!(matches!(b0_answer.try_recv(), Ok(Err(AttemptError::Superseded))));
        assert!(matches!(b1_answer.try_recv(), Ok(Err(AttemptError::Superseded))));
        assert!(a0_answer.try_recv().is_err(), "a's pointer is not answered yet");

        let (a0, _) = request("a", 1, 0);
        let (a1, mut a1_answer) = request("a", 1, 1);
        let retry = answer(vec![a0, a1], 1, conflict("/jobs/a/tasks/1"));
        assert_eq!(retry.len(), 1);
        assert!(matches!(a1_answer.try_recv(), Ok(Err(AttemptError::Superseded))));

        let (a0, _) = request("a", 1, 0);
        let (a1, mut a1_answer) = request("a", 1, 1);
        assert_eq!(answer(vec![a0, a1], 1, conflict("/jobs/a/tasks/1/checkpoint")).len(), 1);
        assert!(matches!(a1_answer.try_recv(), Ok(Err(AttemptError::Failed(_)))));
    }

    #[test]
    fn a_refusal_that_names_no_pointer_of_the_batch_fails_them_all() {
        let (a0, mut a0_answer) = request("a", 1, 0);
        assert!(answer(vec![a0], 1, conflict("/elsewhere")).is_empty());
        assert!(matches!(a0_answer.try_recv(), Ok(Err(AttemptError::Failed(_)))));
    }

    #[test]
    fn a_written_batch_answers_each_pointer_with_its_version_and_a_lost_worker_fails_all() {
        let (a0, mut a0_answer) = request("a", 1, 0);
        let (b0, mut b0_answer) = request("b", 1, 0);
        // Two spec checks, then each pointer's check and set.
        assert!(answer(vec![a0, b0], 2, Ok(vec![1, 1, 3, 8, 3, 9])).is_empty());
        assert_eq!(a0_answer.try_recv().unwrap().unwrap(), 8);
        assert_eq!(b0_answer.try_recv().unwrap().unwrap(), 9);

        let (a0, mut a0_answer) = request("a", 1, 0);
        let (b0, mut b0_answer) = request("b", 1, 0);
        assert!(answer(vec![a0, b0], 2, Err(FenceError::Deposed)).is_empty());
        assert!(matches!(a0_answer.try_recv(), Ok(Err(AttemptError::Deposed))));
        assert!(matches!(b0_answer.try_recv(), Ok(Err(AttemptError::Deposed))));
    }
}
