//! Telling a crashed supervisor from a silent one, so that its tasks and
//! its leadership move at once rather than a session timeout later.
//!
//! A process that dies (`kill -9`, a panic, the OOM killer) has its
//! sockets closed by its kernel: a connection held open to it ends, and
//! its port then refuses a new one. A paused or partitioned process shows
//! neither: its kernel still holds the connection and still accepts on its
//! port (a SIGSTOP), or nothing answers at all (a partition), so only its
//! ZooKeeper session's expiry can tell. This module holds a connection to
//! each peer's HTTP endpoint and reports the first case only: a proof of
//! death, never a guess from silence. Acting on a wrong proof costs a
//! handoff and nothing more, since fencing, not this, keeps a deposed
//! supervisor from writing (docs/ARCHITECTURE.md argues it).

use std::io::ErrorKind;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;

use crate::ha::SupervisorInfo;

/// Tells when another supervisor's process is known to have died.
pub trait Liveness: Send + Sync {
    /// Resolves once `peer`'s process is proven dead; never while it may live.
    fn died(&self, peer: &SupervisorInfo) -> BoxFuture<'static, ()>;
}

/// The route of a supervisor's HTTP endpoint its peers hold open.
pub const PATH: &str = "/peer";

/// What a supervisor answers on [`PATH`] before its heartbeats: who it is
/// (its `--id`, then what tells this run of it from another), so a
/// watcher knows it reached that very process.
pub fn identity(info: &SupervisorInfo) -> Bytes {
    Bytes::from(format!("{} {} {}\n", info.id, info.pid, info.started_ms))
}

/// How often a held connection carries a byte: enough to keep a NAT or
/// firewall from forgetting an idle flow (which would hide a death).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// The answer on [`PATH`]: the identity, then a newline every
/// [`HEARTBEAT`], for as long as this process lives and `permit` is held.
pub fn held_open<P: Send + 'static>(identity: Bytes, permit: P) -> Body {
    let first = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(identity) });
    let beats = futures::stream::unfold(permit, |permit| async move {
        tokio::time::sleep(HEARTBEAT).await;
        Some((Ok(Bytes::from_static(b"\n")), permit))
    });
    Body::from_stream(first.chain(beats))
}

/// How long connecting to a peer, or its first answer, may take: one that
/// takes longer is unreachable, which proves nothing.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// Wait before trying a peer that could not be held again.
const RETRY: Duration = Duration::from_secs(1);
/// Probes made after a held connection ended, besides the first.
const PROBES: u32 = 10;
/// Wait between two probes.
const PROBE_GAP: Duration = Duration::from_millis(20);
/// The least time between two bursts of probes.
const BURST_GAP: Duration = Duration::from_secs(1);
/// How long a held connection may carry nothing (not even a heartbeat)
/// before it is taken as ended: a host gone without a reset, whose address
/// may later answer (or refuse) for a successor.
const SILENCE: Duration = Duration::from_secs(30);

/// Liveness over TCP, to the address each supervisor advertises.
pub struct TcpLiveness {
    /// Connections held open to a peer that answered as itself.
    held: Gauge,
}

impl TcpLiveness {
    /// Liveness that counts the connections it holds in `held`.
    pub fn new(held: Gauge) -> TcpLiveness {
        TcpLiveness { held }
    }
}

impl Liveness for TcpLiveness {
    fn died(&self, peer: &SupervisorInfo) -> BoxFuture<'static, ()> {
        let Some(address) = peer.address.clone() else {
            return futures::future::pending().boxed();
        };
        let expected = identity(peer);
        let id = peer.id.clone();
        let held = self.held.clone();
        async move {
            // Whether the peer itself has answered at this address: a refusal
            // before that may be a wrong --advertise-http, and proves nothing.
            let mut answered = false;
            // Probes left since the last connection ended: attempts, made
            // at once and then [`PROBE_GAP`] apart, that tell a death from a
            // hang-up. A dying process's kernel may still take a connection
            // on its port for a moment (its listening socket closes after
            // the connection did), so one answer-less probe is not enough.
            let mut probes = 0;
            // When the last burst of probes began: at most one a BURST_GAP.
            let mut burst: Option<tokio::time::Instant> = None;
            loop {
                let outcome = hold(&address, &expected, &id, &held).await;
                match outcome {
                    Held::Refused if answered => {
                        tracing::debug!(%address, "the peer's connection ended and its port refuses connections");
                        return;
                    }
                    Held::Replaced => {
                        tracing::debug!(%address, "another run of the peer answers on its port");
                        return;
                    }
                    // A held connection that ends starts a burst of probes, at
                    // once, unless one began less than BURST_GAP ago (a peer
                    // that keeps hanging up on us cannot make a tight loop).
                    Held::Ended if burst.is_none_or(|at| at.elapsed() >= BURST_GAP) => {
                        answered = true;
                        probes = PROBES;
                        burst = Some(tokio::time::Instant::now());
                        continue;
                    }
                    Held::Ended => answered = true,
                    Held::Refused | Held::Unreachable => {}
                }
                if probes > 0 {
                    probes -= 1;
                    tokio::time::sleep(PROBE_GAP).await;
                } else {
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        .boxed()
    }
}

/// How one attempt to hold a connection to a peer went.
enum Held {
    /// Nothing listens on its port (the host answered with a reset).
    Refused,
    /// It answered as itself; then the connection ended.
    Ended,
    /// Another run of the same supervisor (same `--id`) holds its port:
    /// it has been restarted, so the run watched is gone (proof whether or
    /// not the run watched ever answered: only one process holds a port).
    Replaced,
    /// No answer in time, another process answering, or any other failure:
    /// nothing proven either way.
    Unreachable,
}

/// The longest identity line read.
const IDENTITY_MAX: usize = 1024;

/// Counts one held connection while it lives.
struct Holding(Gauge);

impl Holding {
    fn new(gauge: &Gauge) -> Holding {
        gauge.inc();
        Holding(gauge.clone())
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Connects to the peer at `address`, checks that it answers as
/// `expected` (supervisor `id`), and waits for the connection to end.
async fn hold(address: &str, expected: &Bytes, id: &str, held: &Gauge) -> Held {
    let stream = match tokio::time::timeout(ANSWER_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => return Held::Refused,
        Ok(Err(e)) => {
            tracing::debug!(address, "cannot reach the peer: {e}");
            return Held::Unreachable;
        }
        Err(_) => return Held::Unreachable,
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
        return Held::Unreachable;
    };
    tokio::pin!(conn);
    let request = hyper::Request::get(PATH)
        .header(hyper::header::HOST, address)
        .body(Body::empty())
        .expect("a GET with a host header is a valid request");
    // The connection does the I/O of the request and its answer, so every
    // wait below is raced against it; its end is the end of the answer.
    let answered = async {
        let response = sender.send_request(request).await.ok()?;
        if !response.status().is_success() {
            tracing::debug!(address, status = %response.status(), "the peer does not hold liveness connections");
            return None;
        }
        let mut body = Body::new(response.into_body()).into_data_stream();
        let mut line = Vec::new();
        while !line.contains(&b'\n') && line.len() < IDENTITY_MAX {
            line.extend_from_slice(&body.next().await?.ok()?);
        }
        Some((line, body))
    };
    let answer = tokio::select! {
        biased;
        _ = &mut conn => None,
        answer = tokio::time::timeout(ANSWER_TIMEOUT, answered) => answer.ok().flatten(),
    };
    let Some((line, mut body)) = answer else {
        return Held::Unreachable;
    };
    let first = line.split(|b| *b == b'\n').next().unwrap_or_default();
    if first != expected.strip_suffix(b"\n").unwrap_or(expected) {
        let same_id = first.split(|b| *b == b' ').next() == Some(id.as_bytes());
        return if same_id { Held::Replaced } else { Held::Unreachable };
    }
    let _holding = Holding::new(held);
    tokio::select! {
        biased;
        _ = &mut conn => {}
        _ = async { while let Ok(Some(Ok(_))) = tokio::time::timeout(SILENCE, body.next()).await {} } => {}
    }
    Held::Ended
}
