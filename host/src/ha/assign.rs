//! Which worker runs which task: the leader's decisions, as a pure
//! function of what it read (the specs, the tasks' assignments and
//! statuses, the live workers) to the writes it should make. No I/O here,
//! so the rules are tested on their own and the simulation runs them as
//! the leader does.
//!
//! A task's assignment names a worker node, which is one supervisor
//! *session*: the node goes when the session ends, so an assignment whose
//! node is gone is one whose worker can write nothing more, and only then
//! is the task given to another. Every reassignment bumps the task's
//! generation, which is in every object path the new owner writes, and
//! changes the assignment's znode version, which every write of the old
//! owner checks: the two can never both commit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SupervisorInfo;
use crate::spec::{Desired, JobSpec, JobState, JobStatus};

/// Who runs a task, kept in `jobs/<name>/tasks/<i>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The deployment (the spec's uid) the task belongs to.
    pub uid: String,
    /// The worker node (one supervisor session) that runs it.
    pub worker: String,
    /// That worker's `--id`, for people reading it.
    pub supervisor: String,
    /// Bumped by every assignment of the task: the fencing token in the
    /// paths of the checkpoints its owner writes.
    pub generation: u64,
    /// When it was made (ms since the Unix epoch).
    pub since_ms: u64,
}

/// A task as the leader read it.
#[derive(Debug, Clone, Default)]
pub struct TaskView {
    /// Its assignment and the znode's version, if it has one.
    pub assignment: Option<(Assignment, i32)>,
    /// Its status, if it has a readable one.
    pub status: Option<JobStatus>,
}

/// A job as the leader read it.
#[derive(Debug, Clone)]
pub struct JobView {
    /// Its spec.
    pub spec: JobSpec,
    /// The version of the spec's znode.
    pub version: i32,
    /// Its job-level status.
    pub status: Option<JobStatus>,
    /// Whether `jobs/<name>/tasks` exists.
    pub has_tasks_dir: bool,
    /// Its tasks `0..parallelism` (missing ones as default).
    pub tasks: Vec<TaskView>,
}

/// One task given to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskAssign {
    /// Which task.
    pub index: u32,
    /// The new assignment.
    pub assignment: Assignment,
    /// The version the assignment's znode must be at (`None`: create it).
    pub expected: Option<i32>,
    /// The task starts over in a new deployment: its pointer is emptied.
    pub fresh: bool,
    /// Restarts so far, carried to its new status.
    pub restarts: u32,
}

/// A write the leader should make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Give these tasks of `job` (at spec `version`) to workers, in one multi-op.
    Assign {
        /// The job.
        job: String,
        /// Its spec's version, checked by the write.
        version: i32,
        /// Create `jobs/<name>/tasks` first.
        create_dir: bool,
        /// The tasks.
        tasks: Vec<TaskAssign>,
    },
    /// The job has failed for good: mark it so (its tasks then stop).
    Fail {
        /// The job.
        job: String,
        /// Its spec's version.
        version: i32,
        /// Why.
        error: String,
    },
    /// Every task of the cancelled job has stopped: mark it so.
    Cancel {
        /// The job.
        job: String,
        /// Its spec's version.
        version: i32,
    },
}

/// What the leader should write, given the jobs and the live workers (by
/// node name). `now_ms` goes into new assignments.
pub fn plan(jobs: &[JobView], workers: &BTreeMap<String, SupervisorInfo>, now_ms: u64) -> Vec<Decision> {
    let live = |a: &Assignment, spec: &JobSpec| a.uid == spec.uid && workers.contains_key(&a.worker);
    let mut load: BTreeMap<&str, usize> = workers.keys().map(|w| (w.as_str(), 0)).collect();
    let running: Vec<&JobView> = jobs
        .iter()
        .filter(|j| {
            j.spec.desired == Desired::Running && !j.status.as_ref().is_some_and(|s| s.state == JobState::Failed)
        })
        .collect();
    for job in &running {
        for task in &job.tasks {
            if let Some((a, _)) = &task.assignment {
                if live(a, &job.spec) {
                    *load.get_mut(a.worker.as_str()).expect("live") += 1;
                }
            }
        }
    }
    let owners = file_owners(&running);
    let mut decisions = Vec::new();
    for job in running {
        let spec = &job.spec;
        if let Some((path, owner)) = spec
            .sink_files()
            .filter_map(|path| owners.get(path).map(|owner| (path, *owner)))
            .find(|(_, owner)| *owner != spec.name)
        {
            decisions.push(Decision::Fail {
                job: spec.name.clone(),
                version: job.version,
                error: format!(
                    "its file {path} is also written by job `{owner}`; cancel it and deploy it again with another file"
                ),
            });
            continue;
        }
        if let Some(error) = failed_task(job) {
            decisions.push(Decision::Fail {
                job: spec.name.clone(),
                version: job.version,
                error,
            });
            continue;
        }
        let mut tasks = Vec::new();
        for (index, task) in (0..).zip(&job.tasks) {
            if task.assignment.as_ref().is_some_and(|(a, _)| live(a, spec)) {
                continue;
            }
            if task
                .assignment
                .as_ref()
                .is_some_and(|(a, _)| still_running(a, task, workers))
            {
                // The previous deployment's task may still write the sink
                // this one will: it starts once that one has stopped.
                continue;
            }
            let Some(worker) = load.iter().min_by_key(|(node, n)| (**n, **node)).map(|(node, _)| *node) else {
                break;
            };
            *load.get_mut(worker).expect("listed") += 1;
            let previous = task.assignment.as_ref();
            let fresh = previous.is_none_or(|(a, _)| a.uid != spec.uid);
            tasks.push(TaskAssign {
                index,
                assignment: Assignment {
                    uid: spec.uid.clone(),
                    worker: worker.to_string(),
                    supervisor: workers[worker].id.clone(),
                    generation: previous.map_or(0, |(a, _)| a.generation) + 1,
                    since_ms: now_ms,
                },
                expected: previous.map(|(_, version)| *version),
                fresh,
                restarts: match (&task.status, fresh) {
                    (Some(status), false) => status.restarts,
                    _ => 0,
                },
            });
        }
        if !tasks.is_empty() {
            decisions.push(Decision::Assign {
                job: spec.name.clone(),
                version: job.version,
                create_dir: !job.has_tasks_dir,
                tasks,
            });
        }
    }
    for job in jobs.iter().filter(|j| j.spec.desired == Desired::Canceled) {
        if job.status.as_ref().is_some_and(|s| s.state == JobState::Canceled) {
            continue;
        }
        let stopped = job.tasks.iter().all(|task| match &task.assignment {
            Some((a, _)) => !still_running(a, task, workers),
            None => true,
        });
        if stopped {
            decisions.push(Decision::Cancel {
                job: job.spec.name.clone(),
                version: job.version,
            });
        }
    }
    decisions
}

/// Whether the task `a` assigned may still run: its worker lives and it
/// has not said it stopped for good.
fn still_running(a: &Assignment, task: &TaskView, workers: &BTreeMap<String, SupervisorInfo>) -> bool {
    let stopped = task
        .status
        .as_ref()
        .is_some_and(|s| s.epoch == a.generation && matches!(s.state, JobState::Canceled | JobState::Failed));
    workers.contains_key(&a.worker) && !stopped
}

/// Why the job failed, if one of its current tasks has failed for good.
fn failed_task(job: &JobView) -> Option<String> {
    (0..).zip(&job.tasks).find_map(|(index, task)| {
        let (a, _) = task.assignment.as_ref()?;
        let status = task.status.as_ref()?;
        (a.uid == job.spec.uid && status.epoch == a.generation && status.state == JobState::Failed).then(|| {
            let why = status.error.as_deref().unwrap_or("its restart strategy gave up");
            if job.tasks.len() == 1 {
                why.to_string()
            } else {
                format!("task {index}: {why}")
            }
        })
    })
}

/// Which job keeps each file two running jobs would write: `weir deploy`
/// refuses a file another job writes, but two deploys can race, and the
/// earlier deployed keeps the file.
fn file_owners<'a>(running: &[&'a JobView]) -> BTreeMap<&'a str, &'a str> {
    let mut owners: BTreeMap<&str, &JobSpec> = BTreeMap::new();
    for job in running {
        let spec = &job.spec;
        for path in spec.sink_files() {
            let owner = owners.entry(path).or_insert(spec);
            if (spec.created_ms, &spec.name) < (owner.created_ms, &owner.name) {
                *owner = spec;
            }
        }
    }
    owners
        .into_iter()
        .map(|(path, spec)| (path, spec.name.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{OnError, SinkSpec, SourceSpec};

    fn spec(name: &str, parallelism: u32) -> JobSpec {
        JobSpec {
            name: name.into(),
            uid: format!("uid-{name}"),
            module_sha256: "m".into(),
            source: SourceSpec::Sequence {
                start: 0,
                rate: 0,
                timestamp: None,
            },
            sink: SinkSpec::Stdout,
            checkpoint_interval: std::time::Duration::from_secs(1),
            config: Vec::new(),
            memory_limit: 1 << 20,
            call_timeout: std::time::Duration::from_secs(1),
            restart: Default::default(),
            on_error: OnError::default(),
            watermark: None,
            grants: Default::default(),
            parallelism,
            desired: Desired::Running,
            created_ms: 0,
        }
    }

    fn job(spec: JobSpec) -> JobView {
        JobView {
            tasks: vec![TaskView::default(); spec.parallelism as usize],
            spec,
            version: 1,
            status: None,
            has_tasks_dir: false,
        }
    }

    fn workers(names: &[&str]) -> BTreeMap<String, SupervisorInfo> {
        names
            .iter()
            .map(|n| {
                let info = SupervisorInfo {
                    id: format!("s-{n}"),
                    ..SupervisorInfo::default()
                };
                (n.to_string(), info)
            })
            .collect()
    }

    /// Carries out the assignments of `decisions` on `jobs`.
    fn apply(jobs: &mut [JobView], decisions: &[Decision]) {
        for decision in decisions {
            if let Decision::Assign { job, tasks, .. } = decision {
                let view = jobs.iter_mut().find(|j| &j.spec.name == job).unwrap();
                view.has_tasks_dir = true;
                for t in tasks {
                    let version = t.expected.map_or(0, |v| v + 1);
                    view.tasks[t.index as usize].assignment = Some((t.assignment.clone(), version));
                }
            }
        }
    }

    fn per_worker(jobs: &[JobView]) -> BTreeMap<String, usize> {
        let mut count = BTreeMap::new();
        for task in jobs.iter().flat_map(|j| &j.tasks) {
            *count
                .entry(task.assignment.as_ref().unwrap().0.worker.clone())
                .or_default() += 1;
        }
        count
    }

    #[test]
    fn tasks_are_spread_evenly_over_the_live_workers_and_stay_put() {
        let mut jobs = vec![job(spec("a", 6)), job(spec("b", 1))];
        let live = workers(&["w1", "w2", "w3"]);
        let decisions = plan(&jobs, &live, 0);
        apply(&mut jobs, &decisions);
        let counts = per_worker(&jobs);
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), [3, 2, 2]);
        assert!(plan(&jobs, &live, 0).is_empty(), "a settled cluster moves nothing");
    }

    #[test]
    fn only_the_tasks_of_a_worker_whose_session_ended_move_and_they_get_a_new_generation() {
        let mut jobs = vec![job(spec("a", 6))];
        let decisions = plan(&jobs, &workers(&["w1", "w2", "w3"]), 0);
        apply(&mut jobs, &decisions);
        let before = jobs[0].tasks.clone();
        let decisions = plan(&jobs, &workers(&["w1", "w3"]), 5);
        let [Decision::Assign { tasks, create_dir, .. }] = decisions.as_slice() else {
            panic!("{decisions:?}")
        };
        assert!(!create_dir);
        assert_eq!(tasks.len(), 2, "w2's two tasks, no more");
        for t in tasks {
            let (old, version) = before[t.index as usize].assignment.clone().unwrap();
            assert_eq!(old.worker, "w2");
            assert_eq!(t.expected, Some(version), "checked against the old owner's assignment");
            assert_eq!(t.assignment.generation, old.generation + 1);
            assert!(!t.fresh, "the same deployment keeps its checkpoints");
            assert_ne!(t.assignment.worker, "w2");
        }
        apply(&mut jobs, &decisions);
        assert_eq!(per_worker(&jobs).values().copied().collect::<Vec<_>>(), [3, 3]);
    }

    #[test]
    fn a_new_deployment_starts_its_tasks_fresh_once_the_old_ones_stopped() {
        let mut jobs = vec![job(spec("a", 2))];
        let live = workers(&["w1"]);
        let decisions = plan(&jobs, &live, 0);
        apply(&mut jobs, &decisions);
        jobs[0].spec.uid = "uid-again".into();
        assert!(
            plan(&jobs, &live, 0).is_empty(),
            "the old tasks may still write the sink"
        );
        for task in &mut jobs[0].tasks {
            task.status = Some(JobStatus {
                state: JobState::Canceled,
                epoch: task.assignment.as_ref().unwrap().0.generation,
                ..JobStatus::created(0)
            });
        }
        let decisions = plan(&jobs, &live, 0);
        let [Decision::Assign { tasks, .. }] = decisions.as_slice() else {
            panic!("{decisions:?}")
        };
        assert!(tasks.iter().all(|t| t.fresh && t.assignment.uid == "uid-again"));
    }

    #[test]
    fn nothing_is_assigned_without_a_live_worker() {
        assert!(plan(&[job(spec("a", 2))], &BTreeMap::new(), 0).is_empty());
    }

    #[test]
    fn a_task_failed_for_good_fails_its_job_and_is_not_moved() {
        let mut jobs = vec![job(spec("a", 2))];
        let decisions = plan(&jobs, &workers(&["w1", "w2"]), 0);
        apply(&mut jobs, &decisions);
        let generation = jobs[0].tasks[1].assignment.as_ref().unwrap().0.generation;
        jobs[0].tasks[1].status = Some(JobStatus {
            state: JobState::Failed,
            epoch: generation,
            error: Some("trap".into()),
            ..JobStatus::created(0)
        });
        let decisions = plan(&jobs, &workers(&["w1"]), 0);
        assert_eq!(
            decisions,
            [Decision::Fail {
                job: "a".into(),
                version: 1,
                error: "task 1: trap".into()
            }]
        );
        jobs[0].status = Some(JobStatus {
            state: JobState::Failed,
            ..JobStatus::created(0)
        });
        assert!(plan(&jobs, &workers(&["w1"]), 0).is_empty(), "a FAILED job stays so");
    }

    #[test]
    fn a_cancelled_job_is_marked_so_once_every_live_task_has_stopped() {
        let mut jobs = vec![job(spec("a", 2))];
        let decisions = plan(&jobs, &workers(&["w1", "w2"]), 0);
        apply(&mut jobs, &decisions);
        jobs[0].spec.desired = Desired::Canceled;
        let live = workers(&["w1", "w2"]);
        assert!(plan(&jobs, &live, 0).is_empty(), "its tasks still run");
        let generation = jobs[0].tasks[0].assignment.as_ref().unwrap().0.generation;
        jobs[0].tasks[0].status = Some(JobStatus {
            state: JobState::Canceled,
            epoch: generation,
            ..JobStatus::created(0)
        });
        assert!(plan(&jobs, &live, 0).is_empty(), "task 1 still runs");
        let cancel = [Decision::Cancel {
            job: "a".into(),
            version: 1,
        }];
        assert_eq!(plan(&jobs, &workers(&["w1"]), 0), cancel, "task 1's worker is gone");
    }

    #[test]
    fn of_two_jobs_writing_one_file_the_later_deployed_fails() {
        let mut a = spec("a", 1);
        a.sink = SinkSpec::File { path: "/out".into() };
        let mut b = a.clone();
        b.name = "b".into();
        b.created_ms = 1;
        let decisions = plan(&[job(a), job(b)], &workers(&["w1"]), 0);
        assert!(matches!(&decisions[0], Decision::Assign { job, .. } if job == "a"));
        assert!(matches!(&decisions[1], Decision::Fail { job, .. } if job == "b"));
    }
}
