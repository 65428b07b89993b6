//! Hot standby: a follower compiles every deployed job's module ahead of
//! time, so a takeover restores jobs without a cold compile.

use std::time::Duration;

use zookeeper_client as zkc;

use crate::coord::Session;
use crate::ha::Layout;
use crate::job::Executor;
use crate::spec::{Desired, JobSpec};

/// How often a follower looks for newly deployed modules.
const SCAN_INTERVAL: Duration = Duration::from_secs(2);

/// Compiles the modules of running jobs, forever. Errors are logged and retried.
pub async fn keep_warm(session: &dyn Session, layout: &Layout, executor: &dyn Executor) {
    loop {
        match read_specs(session, layout).await {
            Ok(specs) => {
                for (spec, _) in specs {
                    if spec.desired == Desired::Running && !executor.is_prepared(&spec.module_sha256) {
                        match executor.prepare(&spec.module_sha256).await {
                            Ok(()) => tracing::debug!(job = %spec.name, "module compiled ahead of takeover"),
                            Err(e) => tracing::debug!(job = %spec.name, "cannot precompile module: {e}"),
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("cannot read the job specs ahead of takeover: {e}"),
        }
        tokio::time::sleep(SCAN_INTERVAL).await;
    }
}

/// Every job spec that parses, with the version of its znode, skipping
/// (with a warning) the ones that do not, and those deleted while being
/// read. Any other failure to read is an error: an empty list would say
/// "no jobs", and a leader would stop them all.
pub async fn read_specs(session: &dyn Session, layout: &Layout) -> Result<Vec<(JobSpec, i32)>, zkc::Error> {
    let names = match session.list_children(&layout.jobs()).await {
        Ok(names) => names,
        Err(zkc::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut specs = Vec::with_capacity(names.len());
    for name in names {
        match session.get_data(&layout.job(&name)).await {
            Ok((data, version)) => match serde_json::from_slice::<JobSpec>(&data) {
                Ok(spec) => specs.push((spec, version)),
                Err(e) => tracing::warn!(job = %name, "ignoring an unreadable job spec: {e}"),
            },
            Err(zkc::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(specs)
}
