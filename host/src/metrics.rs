//! What an operator scrapes: checkpoints committed and failed, the newest
//! one's duration and size, restarts, leadership and the ZooKeeper
//! connection, in a prometheus-client registry. Updated lock-free on the hot
//! paths (each handle is an atomic shared with the registry); the map of
//! jobs is locked only to add or drop a job. A job's gauges go once no task
//! of it runs here (their last values would be stale beside the replica
//! that runs it now); its counters stay, as counters do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The label every per-job series carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

/// The label of a ZooKeeper request's series: which request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabel {
    request: &'static str,
}

/// The labels of a per-partition series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PartitionLabel {
    job: String,
    partition: u32,
}

/// The labels of a per-task series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TaskLabel {
    job: String,
    task: u32,
}

/// The families of the per-job gauges.
#[derive(Debug, Clone, Default)]
struct JobGauges {
    source_lag: Family<PartitionLabel, Gauge>,
    last_checkpoint_committed_ms: Family<JobLabel, Gauge>,
    last_checkpoint_duration_ms: Family<JobLabel, Gauge>,
    last_checkpoint_bytes: Family<JobLabel, Gauge>,
    last_publish_duration_ms: Family<JobLabel, Gauge>,
    sink_wait_ms: Family<JobLabel, Gauge>,
}

/// A job's handle while one is out, and the partitions a lag was set for,
/// shared by every handle of the job, old and new, until the job goes.
#[derive(Debug)]
struct JobEntry {
    handle: Weak<JobMetrics>,
    partitions: Arc<Mutex<BTreeSet<u32>>>,
}

/// The jobs with a handle out, by name.
type JobHandles = Arc<Mutex<BTreeMap<String, JobEntry>>>;

/// One job's counters and gauges, while a task of it runs here.
#[derive(Debug)]
pub struct JobMetrics {
    job: String,
    gauges: JobGauges,
    /// The partitions a lag was set for.
    partitions: Arc<Mutex<BTreeSet<u32>>>,
    handles: JobHandles,
    records_in: Family<TaskLabel, Counter>,
    records_out: Family<TaskLabel, Counter>,
    /// When the newest checkpoint committed (ms since the Unix epoch; 0
    /// before the first): the time since is how stale a restore would be.
    pub last_checkpoint_committed_ms: Gauge,
    /// Checkpoints whose pointer was committed.
    pub checkpoints_committed: Counter,
    /// Checkpoints that failed (storage dir unwritable, slow, ...).
    pub checkpoints_failed: Counter,
    /// Failed attempts that were restarted.
    pub restarts: Counter,
    /// Records the job refused that `--on-error skip` passed over or
    /// `dead-letter:` sent away, counted once their checkpoint committed.
    pub records_rejected: Counter,
    /// Records that came after their window had closed (dropped, or sent to
    /// the dead-letter sink), counted once their checkpoint committed.
    pub records_late: Counter,
    /// How long the newest committed checkpoint took, from its barrier to
    /// its output published, queueing behind the previous one included
    /// (Flink's `lastCheckpointDuration`); 0 until the first commits.
    pub last_checkpoint_duration_ms: Gauge,
    /// Bytes the newest committed checkpoint wrote: snapshot and output.
    pub last_checkpoint_bytes: Gauge,
    /// How long the newest committed checkpoint's publish took: its output
    /// and dead letters, waits for a server that was away included.
    pub last_publish_duration_ms: Gauge,
    /// How long the publish under way has been waiting for the sink, in
    /// steps of a second (0: none waiting): a sink whose server is away
    /// holds the job's checkpoints back, and this shows it.
    pub sink_wait_ms: Gauge,
}

/// Every series of this supervisor.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    checkpoints_committed: Family<JobLabel, Counter>,
    checkpoints_failed: Family<JobLabel, Counter>,
    restarts: Family<JobLabel, Counter>,
    records_rejected: Family<JobLabel, Counter>,
    records_late: Family<JobLabel, Counter>,
    records_in: Family<TaskLabel, Counter>,
    records_out: Family<TaskLabel, Counter>,
    gauges: JobGauges,
    zookeeper_requests: Family<RequestLabel, Histogram, fn() -> Histogram>,
    jobs: JobHandles,
    /// 1 while this supervisor leads.
    pub leader: Gauge,
    /// Epoch of this supervisor's leadership, 0 while it follows.
    pub leader_epoch: Gauge,
    /// 1 while this supervisor's ZooKeeper session is connected: `/healthz` answers 200 only then.
    pub zookeeper_connected: Gauge,
    /// ZooKeeper writes sent that carried checkpoint pointers: with group
    /// commit, one carries the pointers of many tasks.
    pub pointer_writes: Counter,
    /// Checkpoint pointers written.
    pub pointers_written: Counter,
    /// Liveness connections held open to peers that answered as themselves.
    pub peers_watched: Gauge,
    /// Supervisors this one found dead and removed from the cluster
    /// before their sessions expired.
    pub peers_deposed: Counter,
    /// Supervisors this one found dead and dealt with: removed, or found
    /// removed already (by another peer, or by their own exit).
    pub peers_seen_dead: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            checkpoints_committed: Family::default(),
            checkpoints_failed: Family::default(),
            restarts: Family::default(),
            records_rejected: Family::default(),
            records_late: Family::default(),
            records_in: Family::default(),
            records_out: Family::default(),
            gauges: JobGauges::default(),
            // 0.25 ms to about 4 s: a loopback ensemble answers in well
            // under a millisecond, one losing its quorum in seconds.
            zookeeper_requests: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_25, 2.0, 15))),
            jobs: JobHandles::default(),
            leader: Gauge::default(),
            leader_epoch: Gauge::default(),
            zookeeper_connected: Gauge::default(),
            pointer_writes: Counter::default(),
            pointers_written: Counter::default(),
            peers_watched: Gauge::default(),
            peers_deposed: Counter::default(),
            peers_seen_dead: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("weir_leader", "1 if this supervisor leads", metrics.leader.clone());
        registry.register(
            "weir_leader_epoch",
            "Epoch of this supervisor's leadership (0: follower)",
            metrics.leader_epoch.clone(),
        );
        registry.register(
            "weir_zookeeper_connected",
            "1 while this supervisor's ZooKeeper session is connected",
            metrics.zookeeper_connected.clone(),
        );
        registry.register(
            "weir_zookeeper_request_seconds",
            "How long this supervisor's ZooKeeper requests took to answer, by request",
            metrics.zookeeper_requests.clone(),
        );
        registry.register(
            "weir_zookeeper_pointer_writes",
            "ZooKeeper writes sent that carried checkpoint pointers (one carries many with group commit)",
            metrics.pointer_writes.clone(),
        );
        registry.register(
            "weir_peers_watched",
            "Liveness connections this supervisor holds open to peers that answered as themselves",
            metrics.peers_watched.clone(),
        );
        registry.register(
            "weir_peers_deposed",
            "Supervisors found dead (connection ended, port refused) and removed before their sessions expired",
            metrics.peers_deposed.clone(),
        );
        registry.register(
            "weir_peers_seen_dead",
            "Supervisors found dead and dealt with: removed, or found removed already",
            metrics.peers_seen_dead.clone(),
        );
        registry.register(
            "weir_pointers_written",
            "Checkpoint pointers written to ZooKeeper",
            metrics.pointers_written.clone(),
        );
        registry.register(
            "weir_checkpoints_committed",
            "Checkpoints committed",
            metrics.checkpoints_committed.clone(),
        );
        registry.register(
            "weir_checkpoints_failed",
            "Checkpoints that failed",
            metrics.checkpoints_failed.clone(),
        );
        registry.register(
            "weir_job_restarts",
            "Failed attempts restarted",
            metrics.restarts.clone(),
        );
        registry.register(
            "weir_records_rejected",
            "Records the job refused that were skipped or sent to its dead-letter sink",
            metrics.records_rejected.clone(),
        );
        registry.register(
            "weir_records_late",
            "Records that came after their window closed, dropped or sent to the dead-letter sink",
            metrics.records_late.clone(),
        );
        registry.register(
            "weir_source_lag_records",
            "Records in a source partition past the newest committed checkpoint (Kafka)",
            metrics.gauges.source_lag.clone(),
        );
        registry.register(
            "weir_records_in",
            "Records a task read from its source, counted when their checkpoint commits",
            metrics.records_in.clone(),
        );
        registry.register(
            "weir_records_out",
            "Records a task's job emitted, counted when their checkpoint commits",
            metrics.records_out.clone(),
        );
        registry.register(
            "weir_last_checkpoint_committed_ms",
            "When the newest checkpoint committed, ms since the Unix epoch (0: none yet)",
            metrics.gauges.last_checkpoint_committed_ms.clone(),
        );
        registry.register(
            "weir_last_checkpoint_duration_ms",
            "Barrier to output published, for the newest committed checkpoint",
            metrics.gauges.last_checkpoint_duration_ms.clone(),
        );
        registry.register(
            "weir_last_checkpoint_bytes",
            "Snapshot and output bytes of the newest committed checkpoint",
            metrics.gauges.last_checkpoint_bytes.clone(),
        );
        registry.register(
            "weir_last_publish_duration_ms",
            "How long the newest committed checkpoint's output took to publish",
            metrics.gauges.last_publish_duration_ms.clone(),
        );
        registry.register(
            "weir_sink_wait_ms",
            "How long the publish under way has waited for the sink (0: none waiting)",
            metrics.gauges.sink_wait_ms.clone(),
        );
        Metrics { registry, ..metrics }
    }
}

impl Drop for JobMetrics {
    /// The job's last handle here is gone: its gauges go too, unless a new
    /// handle was made meanwhile (it holds the same series).
    fn drop(&mut self) {
        let Ok(mut jobs) = self.handles.lock() else { return };
        if jobs.get(&self.job).is_some_and(|entry| entry.handle.strong_count() > 0) {
            return;
        }
        jobs.remove(&self.job);
        let label = JobLabel { job: self.job.clone() };
        let gauges = &self.gauges;
        for family in [
            &gauges.last_checkpoint_committed_ms,
            &gauges.last_checkpoint_duration_ms,
            &gauges.last_checkpoint_bytes,
            &gauges.last_publish_duration_ms,
            &gauges.sink_wait_ms,
        ] {
            family.remove(&label);
        }
        let partitions = std::mem::take(&mut *self.partitions.lock().unwrap_or_else(|e| e.into_inner()));
        for partition in partitions {
            gauges.source_lag.remove(&self.partition(partition));
        }
    }
}

impl JobMetrics {
    /// Sets how far each source partition's end is past the newest
    /// committed checkpoint.
    pub fn set_source_lag(&self, lag: &BTreeMap<u32, i64>) {
        self.partitions
            .lock()
            .expect("metrics lock")
            .extend(lag.keys().copied());
        for (partition, records) in lag {
            self.gauges
                .source_lag
                .get_or_create(&self.partition(*partition))
                .set(*records);
        }
    }

    fn partition(&self, partition: u32) -> PartitionLabel {
        PartitionLabel {
            job: self.job.clone(),
            partition,
        }
    }

    /// Counts the records of a committed checkpoint of `task`.
    pub fn count_records(&self, task: u32, records_in: u64, records_out: u64) {
        let label = TaskLabel {
            job: self.job.clone(),
            task,
        };
        self.records_in.get_or_create(&label).inc_by(records_in);
        self.records_out.get_or_create(&label).inc_by(records_out);
    }
}

impl Metrics {
    /// The series of `job`, created on first use; its gauges stay while
    /// the handle (or another of the job's) is held.
    pub fn job(&self, job: &str) -> Arc<JobMetrics> {
        let mut jobs = self.jobs.lock().expect("metrics lock");
        if let Some(held) = jobs.get(job).and_then(|entry| entry.handle.upgrade()) {
            return held;
        }
        // A handle whose drop has not run yet left the entry: its partitions carry over.
        let partitions = jobs.get(job).map(|entry| entry.partitions.clone()).unwrap_or_default();
        let label = JobLabel { job: job.to_string() };
        let gauges = &self.gauges;
        let metrics = Arc::new(JobMetrics {
            job: job.to_string(),
            gauges: gauges.clone(),
            partitions: partitions.clone(),
            handles: self.jobs.clone(),
            records_in: self.records_in.clone(),
            records_out: self.records_out.clone(),
            last_checkpoint_committed_ms: gauges.last_checkpoint_committed_ms.get_or_create(&label).clone(),
            checkpoints_committed: self.checkpoints_committed.get_or_create(&label).clone(),
            checkpoints_failed: self.checkpoints_failed.get_or_create(&label).clone(),
            restarts: self.restarts.get_or_create(&label).clone(),
            records_rejected: self.records_rejected.get_or_create(&label).clone(),
            records_late: self.records_late.get_or_create(&label).clone(),
            last_checkpoint_duration_ms: gauges.last_checkpoint_duration_ms.get_or_create(&label).clone(),
            last_checkpoint_bytes: gauges.last_checkpoint_bytes.get_or_create(&label).clone(),
            last_publish_duration_ms: gauges.last_publish_duration_ms.get_or_create(&label).clone(),
            sink_wait_ms: gauges.sink_wait_ms.get_or_create(&label).clone(),
        });
        let handle = Arc::downgrade(&metrics);
        jobs.insert(job.to_string(), JobEntry { handle, partitions });
        metrics
    }

    /// Records that ZooKeeper request `request` took `took` to answer.
    pub fn zookeeper_request(&self, request: &'static str, took: std::time::Duration) {
        self.zookeeper_requests
            .get_or_create(&RequestLabel { request })
            .observe(took.as_secs_f64());
    }

    /// Every series in the OpenMetrics text format (which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_text() {
        let metrics = Metrics::default();
        let job = metrics.job("counter");
        job.checkpoints_failed.inc_by(2);
        metrics.leader.set(1);
        metrics.leader_epoch.set(3);
        metrics.job("counter").last_checkpoint_duration_ms.set(12);
        job.set_source_lag(&BTreeMap::from([(2, 40)]));
        job.count_records(1, 500, 5);
        metrics.job("counter").count_records(1, 100, 1);
        metrics.zookeeper_request("multi", std::time::Duration::from_micros(300));
        let text = metrics.render();
        for line in [
            "weir_leader 1\n",
            "weir_leader_epoch 3\n",
            "weir_checkpoints_failed_total{job=\"counter\"} 2\n",
            "weir_checkpoints_committed_total{job=\"counter\"} 0\n",
            "# TYPE weir_last_checkpoint_duration_ms gauge\n",
            "weir_last_checkpoint_duration_ms{job=\"counter\"} 12\n",
            "weir_source_lag_records{job=\"counter\",partition=\"2\"} 40\n",
            "weir_records_in_total{job=\"counter\",task=\"1\"} 600\n",
            "weir_records_out_total{job=\"counter\",task=\"1\"} 6\n",
            "weir_zookeeper_request_seconds_count{request=\"multi\"} 1\n",
            "weir_zookeeper_request_seconds_bucket{le=\"0.0005\",request=\"multi\"} 1\n",
            "# EOF\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from {text}");
        }
    }

    #[test]
    fn a_jobs_gauges_go_with_its_last_handle_and_its_counters_stay() {
        let metrics = Metrics::default();
        let first = metrics.job("moved");
        let second = metrics.job("moved");
        first.last_checkpoint_duration_ms.set(40);
        first.set_source_lag(&BTreeMap::from([(0, 7)]));
        first.checkpoints_committed.inc_by(3);
        drop(first);
        assert!(metrics
            .render()
            .contains("weir_last_checkpoint_duration_ms{job=\"moved\"} 40\n"));
        drop(second);
        let text = metrics.render();
        assert!(!text.contains("weir_last_checkpoint_duration_ms{job"), "{text}");
        assert!(!text.contains("weir_source_lag_records{job"), "{text}");
        assert!(
            text.contains("weir_checkpoints_committed_total{job=\"moved\"} 3\n"),
            "{text}"
        );
        let again = metrics.job("moved");
        assert_eq!(
            again.last_checkpoint_duration_ms.get(),
            0,
            "a job back here starts its gauges anew"
        );
        assert!(metrics
            .render()
            .contains("weir_last_checkpoint_duration_ms{job=\"moved\"} 0\n"));
    }
}
