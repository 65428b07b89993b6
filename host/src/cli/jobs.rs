//! `weir jobs`: every job with its state and last checkpoint, and each of
//! its tasks with the worker running it.

use clap::Args;

use super::{age, print_table, say, ClusterArgs, OutputFormat};
use crate::spec::JobState;
use crate::views::{read_jobs, CheckpointView};

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value = "table")]
    output: OutputFormat,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub async fn run(args: JobsArgs) -> anyhow::Result<()> {
    let layout = args.cluster.layout()?;
    let client = args.cluster.connect().await?;
    let views = read_jobs(&client, &layout).await?;
    match args.output {
        OutputFormat::Json => say!("{}", serde_json::to_string_pretty(&views)?)?,
        OutputFormat::Table => {
            let mut rows: Vec<Vec<String>> = Vec::new();
            for v in &views {
                let checkpoint = |c: &Option<CheckpointView>| match c {
                    Some(c) => (c.id.to_string(), age(c.age_ms)),
                    None => ("-".into(), "-".into()),
                };
                let (id, checkpoint_age) = checkpoint(&v.last_checkpoint);
                let worker = match v.parallelism {
                    1 => v.supervisor.clone().unwrap_or_else(|| "-".into()),
                    n => format!("{n} tasks"),
                };
                rows.push(vec![
                    v.name.clone(),
                    v.state.to_string(),
                    v.restarts.to_string(),
                    id,
                    checkpoint_age,
                    worker,
                    v.error.clone().unwrap_or_default(),
                ]);
                if v.parallelism > 1 {
                    for t in &v.tasks {
                        let (id, checkpoint_age) = checkpoint(&t.last_checkpoint);
                        rows.push(vec![
                            format!("  {}/{}", v.name, t.task),
                            t.state.to_string(),
                            t.restarts.to_string(),
                            id,
                            checkpoint_age,
                            t.worker.clone().unwrap_or_else(|| "-".into()),
                            t.error.clone().unwrap_or_default(),
                        ]);
                    }
                }
            }
            print_table(
                &["NAME", "STATE", "RESTARTS", "CHECKPOINT", "AGE", "WORKER", "LAST ERROR"],
                &rows,
            )?;
            if views.iter().any(|v| v.state == JobState::Canceled) {
                say!("(cancelled jobs stay listed, with their checkpoints, until `weir delete NAME` removes them)")?;
            }
        }
    }
    Ok(())
}
