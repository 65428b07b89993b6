//! What the leader wants a running job to do, and the handles it tells the
//! job's tasks through. A tokio `watch` would do, but it wakes its waiters
//! in a random order (it spreads them over shards at random), and the
//! simulation replays a seed only if every wake order is fixed: this one
//! wakes them in the order they began to wait.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// What the leader wants a running job to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Process and checkpoint.
    Run,
    /// Hold still: ZooKeeper is unreachable and we may no longer lead.
    Pause,
    /// Stop now, committing nothing more.
    Stop,
    /// Take a final checkpoint, commit and publish it, then stop (planned handoff).
    Finish,
}

/// The leader is gone: nothing more will be said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the leader dropped the job's control")]
pub struct Closed;

struct Shared {
    /// The current value, how many times it was set, and whether the sender is gone.
    state: Mutex<(Control, u64, bool)>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Control, u64, bool)> {
        self.state.lock().expect("control lock")
    }
}

/// The leader's end.
pub struct ControlSender(Arc<Shared>);

/// A job task's end. Clones see the same value, each with its own idea of
/// what it has seen.
#[derive(Clone)]
pub struct ControlReceiver {
    shared: Arc<Shared>,
    seen: u64,
}

/// A control set to `initial`.
pub fn channel(initial: Control) -> (ControlSender, ControlReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new((initial, 0, false)),
        changed: Notify::new(),
    });
    (ControlSender(shared.clone()), ControlReceiver { shared, seen: 0 })
}

impl ControlSender {
    /// Tells the job `control`, waking every task waiting on it.
    pub fn send_replace(&self, control: Control) {
        let mut state = self.0.lock();
        state.0 = control;
        state.1 += 1;
        drop(state);
        self.0.changed.notify_waiters();
    }
}

impl Drop for ControlSender {
    fn drop(&mut self) {
        self.0.lock().2 = true;
        self.0.changed.notify_waiters();
    }
}

impl ControlReceiver {
    /// The current value, marked seen.
    pub fn get(&mut self) -> Control {
        let state = self.shared.lock();
        self.seen = state.1;
        state.0
    }

    /// Waits until the value changes from what this handle last saw.
    ///
    /// Cancel-safe.
    pub async fn changed(&mut self) -> Result<(), Closed> {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.1 != self.seen {
                    self.seen = state.1;
                    return Ok(());
                }
                if state.2 {
                    return Err(Closed);
                }
            }
            notified.await;
        }
    }

    /// Waits until the value satisfies `pred` (at once if it does now),
    /// and returns it.
    ///
    /// Cancel-safe.
    pub async fn wait_for(&mut self, pred: impl Fn(Control) -> bool) -> Result<Control, Closed> {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.shared.lock();
                self.seen = state.1;
                if pred(state.0) {
                    return Ok(state.0);
                }
                if state.2 {
                    return Err(Closed);
                }
            }
            notified.await;
        }
    }
}
