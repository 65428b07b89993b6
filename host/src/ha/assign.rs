//! Which worker runs which task: the leader's decisions, as a pure
//! function of what it read (the specs, the tasks' assignments and
//! statuses, the live workers) to the writes it should make. No I/O here,
//! so the rules are tested on their own and the simulation runs them as
//! the leader does.
//!
//! A task's assignment names a worker node, which is one supervisor
//! *session*: the node goes when the session ends, so an assignment whose
//! node is gone is one whose worker can write nothing more, and only then
//! is the task given to another without asking. A task moves from a live
//! worker only by handoff: the leader asks (`tasks/<i>/handoff`), the
//! owner takes a final checkpoint, publishes it and says RELEASED, and only
//! then does the leader give the task to the worker it asked for. Every reassignment bumps the task's
//! generation, which is in every object path the new owner writes, and
//! changes the assignment's znode version, which every write of the old
//! owner checks: the two can never both commit.

use std::collections::{BTreeMap, BTreeSet};

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

/// The leader's request that a task's owner hand it off, kept in
/// `jobs/<name>/tasks/<i>/handoff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The assignment it is for: stale once the task has another.
    pub generation: u64,
    /// The worker node to give the task to once it is released.
    pub to: String,
}

/// A task as the leader read it.
#[derive(Debug, Clone, Default)]
pub struct TaskView {
    /// Its assignment and the znode's version, if it has one.
    pub assignment: Option<(Assignment, i32)>,
    /// Its status, if it has a readable one.
    pub status: Option<JobStatus>,
    /// A handoff asked of it, if any (maybe for an older assignment).
    pub handoff: Option<Handoff>,
    /// Whether `tasks/<i>/handoff` exists (it is set, never deleted).
    pub has_handoff_node: bool,
}

/// A live worker as the leader sees it.
#[derive(Debug, Clone, Default)]
pub struct WorkerView {
    /// Who it is.
    pub info: SupervisorInfo,
    /// `weir drain` asked that it run nothing.
    pub draining: bool,
    /// Live for longer than the cooldown (or a rebalance was asked for):
    /// tasks may be moved to it. A worker that joins and leaves again
    /// before this never draws tasks away from the others.
    pub settled: bool,
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
    /// Tasks past `parallelism`, left by a deployment that had more.
    pub stale: Vec<TaskView>,
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
    /// Ask the owner of `task` (at assignment `assignment`) to hand it off.
    Handoff {
        /// The job.
        job: String,
        /// Its spec's version.
        version: i32,
        /// Which task.
        task: u32,
        /// The version its assignment must be at.
        assignment: i32,
        /// The request.
        handoff: Handoff,
        /// Create the handoff node (else set it).
        create: bool,
    },
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
/// node name). `now_ms` goes into new assignments; tasks in `settling`
/// moved lately and are not moved again yet.
pub fn plan(
    jobs: &[JobView],
    workers: &BTreeMap<String, WorkerView>,
    settling: &BTreeSet<(String, u32)>,
    now_ms: u64,
) -> Vec<Decision> {
    let live = |a: &Assignment, spec: &JobSpec| a.uid == spec.uid && workers.contains_key(&a.worker);
    // Where tasks may go: the workers not draining (all of them if every one is).
    let open: Vec<&str> = workers
        .iter()
        .filter(|(_, w)| !w.draining)
        .map(|(node, _)| node.as_str())
        .collect();
    let targets: Vec<&str> = if open.is_empty() {
        workers.keys().map(String::as_str).collect()
    } else {
        open
    };
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
                    // A task being handed off counts where it goes.
                    let at = match pending_handoff(a, task) {
                        Some(h) if workers.contains_key(&h.to) => h.to.as_str(),
                        _ => a.worker.as_str(),
                    };
                    *load.get_mut(at).expect("live") += 1;
                }
            }
        }
    }
    let least_loaded = |load: &BTreeMap<&str, usize>| -> Option<String> {
        targets
            .iter()
            .min_by_key(|node| (load[**node], **node))
            .map(|node| node.to_string())
    };
    let owners = file_owners(&running);
    let mut decisions = Vec::new();
    for job in &running {
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
        // A previous deployment's task whose worker lives and has not said
        // it stopped may still write the sinks this one will: this one's
        // tasks start once none is left.
        let waiting = job.tasks.iter().chain(&job.stale).any(|task| {
            task.assignment
                .as_ref()
                .is_some_and(|(a, _)| a.uid != spec.uid && still_running(a, task, workers))
        });
        let mut tasks = Vec::new();
        for (index, task) in (0..).zip(&job.tasks) {
            let released = task
                .assignment
                .as_ref()
                .filter(|(a, _)| live(a, spec) && is_released(a, task));
            let worker = match released {
                Some((a, _)) => {
                    // Released by a handoff: to the worker asked for, if it
                    // can still take it (its load already counts the task).
                    let asked = pending_handoff(a, task)
                        .map(|h| h.to.clone())
                        .filter(|to| targets.contains(&to.as_str()));
                    match asked {
                        Some(to) => to,
                        None => {
                            let counted = pending_handoff(a, task)
                                .map(|h| h.to.as_str())
                                .filter(|to| workers.contains_key(*to))
                                .unwrap_or(a.worker.as_str());
                            *load.get_mut(counted).expect("live") -= 1;
                            let Some(to) = least_loaded(&load) else { break };
                            *load.get_mut(to.as_str()).expect("listed") += 1;
                            to
                        }
                    }
                }
                None if task.assignment.as_ref().is_some_and(|(a, _)| live(a, spec)) => continue,
                None if waiting && task.assignment.as_ref().is_none_or(|(a, _)| a.uid != spec.uid) => continue,
                None => {
                    let Some(to) = least_loaded(&load) else { break };
                    *load.get_mut(to.as_str()).expect("listed") += 1;
                    to
                }
            };
            let worker = worker.as_str();
            let previous = task.assignment.as_ref();
            let fresh = previous.is_none_or(|(a, _)| a.uid != spec.uid);
            tasks.push(TaskAssign {
                index,
                assignment: Assignment {
                    uid: spec.uid.clone(),
                    worker: worker.to_string(),
                    supervisor: workers[worker].info.id.clone(),
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
    decisions.extend(handoffs(&running, workers, &targets, settling, &mut load));
    for job in jobs.iter().filter(|j| j.spec.desired == Desired::Canceled) {
        if job.status.as_ref().is_some_and(|s| s.state == JobState::Canceled) {
            continue;
        }
        let stopped = job.tasks.iter().chain(&job.stale).all(|task| match &task.assignment {
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

/// The handoffs that empty draining workers and even out the others: a
/// task moves from the worker with the most tasks to the settled one with
/// the fewest while they differ by more than one. Only running tasks of a
/// live assignment move, none that moved lately, the highest-numbered of a
/// worker's first.
fn handoffs(
    running: &[&JobView],
    workers: &BTreeMap<String, WorkerView>,
    targets: &[&str],
    settling: &BTreeSet<(String, u32)>,
    load: &mut BTreeMap<&str, usize>,
) -> Vec<Decision> {
    // Tasks that may move, by the worker they are on.
    let mut movable: BTreeMap<&str, Vec<(&JobView, u32, &TaskView)>> = BTreeMap::new();
    for job in running {
        for (index, task) in (0..).zip(&job.tasks) {
            let Some((a, _)) = &task.assignment else { continue };
            let runs = task
                .status
                .as_ref()
                .is_some_and(|s| s.epoch == a.generation && s.state == JobState::Running);
            let moving = pending_handoff(a, task).is_some();
            if a.uid == job.spec.uid
                && workers.contains_key(&a.worker)
                && runs
                && !moving
                && !settling.contains(&(job.spec.name.clone(), index))
            {
                movable.entry(a.worker.as_str()).or_default().push((job, index, task));
            }
        }
    }
    let receivers: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|node| workers[*node].settled && !workers[*node].draining)
        .collect();
    let mut decisions = Vec::new();
    while let Some(to) = receivers.iter().copied().min_by_key(|node| (load[*node], *node)) {
        // A draining worker gives up everything; the others down to one more than `to`.
        let from = movable
            .iter()
            .filter(|(node, tasks)| !tasks.is_empty() && **node != to)
            .filter(|(node, _)| workers[**node].draining || load[**node] > load[to] + 1)
            .max_by_key(|(node, _)| (workers[**node].draining, load[**node], std::cmp::Reverse(**node)))
            .map(|(node, _)| *node);
        let Some(from) = from else { break };
        let (job, index, task) = movable.get_mut(from).expect("listed").pop().expect("not empty");
        let (a, version) = task.assignment.as_ref().expect("movable");
        *load.get_mut(from).expect("live") -= 1;
        *load.get_mut(to).expect("listed") += 1;
        decisions.push(Decision::Handoff {
            job: job.spec.name.clone(),
            version: job.version,
            task: index,
            assignment: *version,
            handoff: Handoff {
                generation: a.generation,
                to: to.to_string(),
            },
            create: !task.has_handoff_node,
        });
    }
    decisions
}

/// The handoff asked of the task's current assignment, if any.
fn pending_handoff<'a>(a: &Assignment, task: &'a TaskView) -> Option<&'a Handoff> {
    task.handoff.as_ref().filter(|h| h.generation == a.generation)
}

/// Whether the task `a` assigned has been released by a handoff.
fn is_released(a: &Assignment, task: &TaskView) -> bool {
    task.status
        .as_ref()
        .is_some_and(|s| s.epoch == a.generation && s.state == JobState::Released)
}

/// Whether the task `a` assigned may still run: its worker lives and it
/// has not said it stopped.
fn still_running(a: &Assignment, task: &TaskView, workers: &BTreeMap<String, WorkerView>) -> bool {
    let stopped = task.status.as_ref().is_some_and(|s| {
        s.epoch == a.generation && matches!(s.state, JobState::Canceled | JobState::Failed | JobState::Released)
    });
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
    use crate::spec::{test_spec as spec, SinkSpec};

    fn job(spec: JobSpec) -> JobView {
        JobView {
            tasks: vec![TaskView::default(); spec.parallelism as usize],
            spec,
            version: 1,
            status: None,
            has_tasks_dir: false,
            stale: Vec::new(),
        }
    }

    fn workers(names: &[&str]) -> BTreeMap<String, WorkerView> {
        names
            .iter()
            .map(|n| {
                let info = SupervisorInfo {
                    id: format!("s-{n}"),
                    ..SupervisorInfo::default()
                };
                let worker = WorkerView {
                    info,
                    draining: false,
                    settled: true,
                };
                (n.to_string(), worker)
            })
            .collect()
    }

    fn plan(jobs: &[JobView], workers: &BTreeMap<String, WorkerView>, now_ms: u64) -> Vec<Decision> {
        super::plan(jobs, workers, &BTreeSet::new(), now_ms)
    }

    /// Every task's status says it runs in its current assignment.
    fn all_running(jobs: &mut [JobView]) {
        for task in jobs.iter_mut().flat_map(|j| &mut j.tasks) {
            let generation = task.assignment.as_ref().unwrap().0.generation;
            task.status = Some(JobStatus {
                state: JobState::Running,
                epoch: generation,
                ..JobStatus::created(0)
            });
        }
    }

    /// Carries out the handoffs of `decisions`, and the owners release their tasks.
    fn hand_off(jobs: &mut [JobView], decisions: &[Decision]) -> usize {
        let mut n = 0;
        for decision in decisions {
            if let Decision::Handoff { job, task, handoff, .. } = decision {
                let view = jobs.iter_mut().find(|j| &j.spec.name == job).unwrap();
                let t = &mut view.tasks[*task as usize];
                t.handoff = Some(handoff.clone());
                t.has_handoff_node = true;
                t.status.as_mut().unwrap().state = JobState::Released;
                n += 1;
            }
        }
        n
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
    fn a_worker_that_joins_gets_tasks_by_handoff_once_settled() {
        let mut jobs = vec![job(spec("a", 6))];
        let decisions = plan(&jobs, &workers(&["w1", "w2"]), 0);
        apply(&mut jobs, &decisions);
        all_running(&mut jobs);
        let mut joined = workers(&["w1", "w2", "w3"]);
        joined.get_mut("w3").unwrap().settled = false;
        assert!(
            plan(&jobs, &joined, 0).is_empty(),
            "a worker not yet settled draws nothing"
        );
        let joined = workers(&["w1", "w2", "w3"]);
        let decisions = plan(&jobs, &joined, 0);
        assert_eq!(hand_off(&mut jobs, &decisions), 2, "{decisions:?}");
        assert!(decisions
            .iter()
            .all(|d| matches!(d, Decision::Handoff { handoff, .. } if handoff.to == "w3")));
        assert!(
            plan(&jobs, &joined, 0)
                .iter()
                .all(|d| matches!(d, Decision::Assign { .. })),
            "asked once"
        );
        // Released: each goes where it was asked, under a new generation.
        let decisions = plan(&jobs, &joined, 0);
        let [Decision::Assign { tasks, .. }] = decisions.as_slice() else {
            panic!("{decisions:?}")
        };
        assert!(tasks
            .iter()
            .all(|t| t.assignment.worker == "w3" && !t.fresh && t.assignment.generation == 2));
        apply(&mut jobs, &decisions);
        all_running(&mut jobs);
        assert_eq!(per_worker(&jobs).values().copied().collect::<Vec<_>>(), [2, 2, 2]);
        assert!(plan(&jobs, &joined, 0).is_empty(), "balanced: nothing more moves");
    }

    #[test]
    fn a_draining_worker_hands_every_task_off_and_gets_none() {
        let mut jobs = vec![job(spec("a", 4))];
        let mut live = workers(&["w1", "w2"]);
        let decisions = plan(&jobs, &live, 0);
        apply(&mut jobs, &decisions);
        all_running(&mut jobs);
        live.get_mut("w1").unwrap().draining = true;
        let decisions = plan(&jobs, &live, 0);
        assert_eq!(hand_off(&mut jobs, &decisions), 2);
        let decisions = plan(&jobs, &live, 0);
        apply(&mut jobs, &decisions);
        assert_eq!(
            per_worker(&jobs).into_iter().collect::<Vec<_>>(),
            [("w2".to_string(), 4)]
        );
    }

    #[test]
    fn a_task_moved_lately_stays_put() {
        let mut jobs = vec![job(spec("a", 2))];
        let decisions = plan(&jobs, &workers(&["w1"]), 0);
        apply(&mut jobs, &decisions);
        all_running(&mut jobs);
        let settling: BTreeSet<(String, u32)> = [("a".to_string(), 0), ("a".to_string(), 1)].into();
        assert!(super::plan(&jobs, &workers(&["w1", "w2"]), &settling, 0).is_empty());
    }

    #[test]
    fn a_released_task_whose_target_died_goes_to_the_least_loaded() {
        let mut jobs = vec![job(spec("a", 2))];
        let decisions = plan(&jobs, &workers(&["w1", "w2"]), 0);
        apply(&mut jobs, &decisions);
        all_running(&mut jobs);
        let generation = jobs[0].tasks[1].assignment.as_ref().unwrap().0.generation;
        jobs[0].tasks[1].handoff = Some(Handoff {
            generation,
            to: "gone".into(),
        });
        jobs[0].tasks[1].status.as_mut().unwrap().state = JobState::Released;
        let decisions = plan(&jobs, &workers(&["w1", "w2"]), 0);
        let [Decision::Assign { tasks, .. }] = decisions.as_slice() else {
            panic!("{decisions:?}")
        };
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].assignment.generation, generation + 1);
    }

    #[test]
    fn a_deployment_with_fewer_tasks_waits_for_every_old_one() {
        let mut jobs = vec![job(spec("a", 3))];
        let live = workers(&["w1"]);
        let decisions = plan(&jobs, &live, 0);
        apply(&mut jobs, &decisions);
        let old = jobs[0].tasks.clone();
        let mut again = spec("a", 2);
        again.uid = "uid-again".into();
        jobs[0] = job(again);
        jobs[0].tasks = old[..2].to_vec();
        jobs[0].stale = old[2..].to_vec();
        assert!(plan(&jobs, &live, 0).is_empty(), "old task 2 may still write the sink");
        let generation = jobs[0].stale[0].assignment.as_ref().unwrap().0.generation;
        let view = &mut jobs[0];
        for task in view.tasks.iter_mut().chain(view.stale.iter_mut()) {
            task.status = Some(JobStatus {
                state: JobState::Canceled,
                epoch: generation,
                ..JobStatus::created(0)
            });
        }
        assert!(matches!(plan(&jobs, &live, 0).as_slice(), [Decision::Assign { tasks, .. }] if tasks.len() == 2));
    }

    #[test]
    fn drained_workers_do_not_trade_tasks() {
        let mut jobs = vec![job(spec("a", 4))];
        let mut live = workers(&["w1", "w2"]);
        let decisions = plan(&jobs, &live, 0);
        apply(&mut jobs, &decisions);
        all_running(&mut jobs);
        for w in live.values_mut() {
            w.draining = true;
        }
        assert!(plan(&jobs, &live, 0).is_empty(), "nowhere better to go");
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
