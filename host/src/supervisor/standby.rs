//! Hot standby: a follower compiles every deployed job's module ahead of
//! time, so a takeover restores jobs without a cold compile.

use std::time::Duration;

use zookeeper_client::Client;

use crate::ha::Layout;
use crate::job::load_module;
use crate::runtime::Runtime;
use crate::spec::{Desired, JobSpec};
use crate::storage::Storage;

/// How often a follower looks for newly deployed modules.
const SCAN_INTERVAL: Duration = Duration::from_secs(2);

/// Compiles the modules of running jobs, forever. Errors are logged and retried.
pub async fn keep_warm(client: &Client, layout: &Layout, storage: &Storage, runtime: &Runtime) {
    loop {
        for spec in read_specs(client, layout).await {
            if spec.desired == Desired::Running && !runtime.is_compiled(&spec.module_sha256) {
                match load_module(storage, runtime, &spec.module_sha256).await {
                    Ok(()) => {
                        tracing::debug!(job = %spec.name, "module compiled ahead of takeover")
                    }
                    Err(e) => tracing::debug!(job = %spec.name, "cannot precompile module: {e:?}"),
                }
            }
        }
        tokio::time::sleep(SCAN_INTERVAL).await;
    }
}

/// Every job spec that reads and parses, skipping the rest.
pub async fn read_specs(client: &Client, layout: &Layout) -> Vec<JobSpec> {
    let Ok(names) = client.list_children(&layout.jobs()).await else {
        return Vec::new();
    };
    let mut specs = Vec::with_capacity(names.len());
    for name in names {
        if let Ok((data, _)) = client.get_data(&layout.job(&name)).await {
            match serde_json::from_slice::<JobSpec>(&data) {
                Ok(spec) => specs.push(spec),
                Err(e) => tracing::warn!(job = %name, "ignoring an unreadable job spec: {e}"),
            }
        }
    }
    specs
}
