//! Counters an operator scrapes (Prometheus text format): checkpoints
//! committed and failed, the newest one's duration and size, restarts,
//! leadership. Updated lock-free on the hot paths; the map of jobs is
//! locked only to add a job or to render.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One job's counters.
#[derive(Debug, Default)]
pub struct JobMetrics {
    /// Checkpoints whose pointer was committed.
    pub checkpoints_committed: AtomicU64,
    /// Checkpoints that failed (storage dir unwritable, slow, ...).
    pub checkpoints_failed: AtomicU64,
    /// Failed attempts that were restarted.
    pub restarts: AtomicU64,
    /// How long the newest committed checkpoint took, from its barrier to
    /// its output published, queueing behind the previous one included
    /// (Flink's `lastCheckpointDuration`); 0 until the first commits.
    pub last_checkpoint_duration_ms: AtomicU64,
    /// Bytes the newest committed checkpoint wrote: snapshot and output.
    pub last_checkpoint_bytes: AtomicU64,
}

/// Picks one counter or gauge out of a job's metrics.
type Metric = fn(&JobMetrics) -> &AtomicU64;

/// Every counter of this supervisor.
#[derive(Debug, Default)]
pub struct Metrics {
    jobs: Mutex<BTreeMap<String, Arc<JobMetrics>>>,
    /// Epoch of this supervisor's leadership, 0 while it follows.
    pub leader_epoch: AtomicU64,
}

impl Metrics {
    /// The counters of `job`, created on first use.
    pub fn job(&self, job: &str) -> Arc<JobMetrics> {
        self.jobs
            .lock()
            .expect("metrics lock")
            .entry(job.to_string())
            .or_default()
            .clone()
    }

    /// Renders every counter in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let epoch = self.leader_epoch.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP weir_leader 1 if this supervisor leads.\n# TYPE weir_leader gauge"
        );
        let _ = writeln!(out, "weir_leader {}", u8::from(epoch > 0));
        let _ = writeln!(
            out,
            "# HELP weir_leader_epoch Epoch of this supervisor's leadership (0: follower)."
        );
        let _ = writeln!(out, "# TYPE weir_leader_epoch gauge\nweir_leader_epoch {epoch}");
        let jobs = self.jobs.lock().expect("metrics lock");
        let per_job: [(&str, &str, &str, Metric); 5] = [
            (
                "weir_checkpoints_committed_total",
                "counter",
                "Checkpoints committed.",
                |m| &m.checkpoints_committed,
            ),
            (
                "weir_checkpoints_failed_total",
                "counter",
                "Checkpoints that failed.",
                |m| &m.checkpoints_failed,
            ),
            (
                "weir_job_restarts_total",
                "counter",
                "Failed attempts restarted.",
                |m| &m.restarts,
            ),
            (
                "weir_last_checkpoint_duration_ms",
                "gauge",
                "Barrier to output published, for the newest committed checkpoint.",
                |m| &m.last_checkpoint_duration_ms,
            ),
            (
                "weir_last_checkpoint_bytes",
                "gauge",
                "Snapshot and output bytes of the newest committed checkpoint.",
                |m| &m.last_checkpoint_bytes,
            ),
        ];
        for (name, kind, help, metric) in per_job {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (job, metrics) in jobs.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{job=\"{job}\"}} {}",
                    metric(metrics).load(Ordering::Relaxed)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics
            .job("counter")
            .checkpoints_failed
            .fetch_add(2, Ordering::Relaxed);
        metrics.leader_epoch.store(3, Ordering::Relaxed);
        metrics
            .job("counter")
            .last_checkpoint_duration_ms
            .store(12, Ordering::Relaxed);
        let text = metrics.render();
        assert!(text.contains("weir_leader 1\n"), "{text}");
        assert!(
            text.contains("weir_checkpoints_failed_total{job=\"counter\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("weir_checkpoints_committed_total{job=\"counter\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE weir_last_checkpoint_duration_ms gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("weir_last_checkpoint_duration_ms{job=\"counter\"} 12\n"),
            "{text}"
        );
    }
}
