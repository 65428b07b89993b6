//! weir: a runtime for stateful stream jobs written as WebAssembly
//! components, made highly available by supervisor replicas that elect a
//! leader through ZooKeeper. See `docs/ARCHITECTURE.md` for how the modules
//! fit together: data flows source -> instance -> sink with the checkpoint
//! barrier riding along; `ha` decides whether this process runs jobs, never
//! how a job runs.

pub(crate) mod checkpoint;
pub mod cli;
pub(crate) mod clock;
pub mod connectors;
pub(crate) mod coord;
pub mod ha;
pub(crate) mod history;
pub(crate) mod http;
pub mod job;
pub(crate) mod liveness;
pub(crate) mod metrics;
pub(crate) mod regroup;
pub mod runtime;
pub(crate) mod savepoint;
#[cfg(test)]
mod sim;
pub mod spec;
pub mod storage;
pub(crate) mod supervisor;
pub(crate) mod views;
pub mod wit;
