//! `sgsc sweep`: many runs of a config over a grid or list of values, as separate processes
//! (resumable), or as Slurm job arrays with `--emit slurm`.

use crate::sweep::runner::{is_finished, run_all, run_one, RunnerOptions};
use crate::sweep::{slurm, SweepConfig};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Arguments of `sgsc sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Sweep file (TOML): base config, output folder, stages with grid/list/set values.
    #[arg(long)]
    config: PathBuf,
    /// Instead of running: write job scripts for a cluster scheduler.
    #[arg(long, value_enum)]
    emit: Option<Emit>,
    /// Runs at once (default: the file's `parallel`, else one per core).
    #[arg(long)]
    parallel: Option<usize>,
    /// Threads of each run (default: the cores shared out among the runs a stage has at once).
    #[arg(long)]
    threads: Option<usize>,
    /// With --index: the stage of the one run to do (what a Slurm array task runs).
    #[arg(long, requires = "index")]
    stage: Option<usize>,
    /// With --stage: the index of the one run to do within its stage.
    #[arg(long, requires = "stage")]
    index: Option<usize>,
    /// List the runs and whether they have finished, and do nothing.
    #[arg(long, conflicts_with_all = ["stage", "emit"])]
    dry_run: bool,
    /// Data folder (else $SGSC_DATA_DIR, else ./data, else download).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Job scripts `--emit` can write.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Emit {
    /// sbatch job arrays, one per stage, and a submit.sh that chains them.
    Slurm,
}

/// Runs `sgsc sweep`.
pub fn run(args: SweepArgs) -> Result<()> {
    let sweep = SweepConfig::load(&args.config)?;
    let runs = sweep.expand(&args.config)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parallel = args.parallel.or(sweep.parallel).unwrap_or(cores).max(1);
    // A stage with fewer runs than `parallel` gives each more threads.
    let threads_for = |stage: usize| {
        let at_once = parallel.min(runs.iter().filter(|run| run.stage == stage).count());
        args.threads.unwrap_or(cores / at_once.max(1)).max(1)
    };
    let executable = std::env::current_exe().context("locating the sgsc executable")?;
    if let Some(Emit::Slurm) = args.emit {
        let submit = slurm::emit(
            &sweep,
            &args.config,
            &runs,
            &executable,
            args.data_dir.as_deref(),
            &threads_for,
        )?;
        println!(
            "{} runs in {} stages; submit with: bash {}",
            runs.len(),
            sweep.stage.len(),
            submit.display()
        );
        return Ok(());
    }
    let options = |stage: usize| RunnerOptions {
        executable: executable.clone(),
        config: sweep.config.clone(),
        data_dir: args.data_dir.clone(),
        parallel,
        threads_per_run: threads_for(stage),
    };
    if let (Some(stage), Some(index)) = (args.stage, args.index) {
        let Some(run) = runs.iter().filter(|run| run.stage == stage).nth(index) else {
            bail!(
                "{}: stage {stage} has no run {index}",
                args.config.display()
            );
        };
        // Anything but finished fails the task, so a scheduler's "after ok" waits for it.
        let status = run_one(run, &options(stage))?;
        if let Some(failure) = status.failure(run) {
            bail!("{failure}");
        }
        println!("{}: {status:?}", run.name);
        return Ok(());
    }
    let finished = runs.iter().filter(|run| is_finished(run)).count();
    println!(
        "{} runs in {} stages, {finished} already finished; {parallel} at a time",
        runs.len(),
        sweep.stage.len()
    );
    if args.dry_run {
        for run in &runs {
            let state = if is_finished(run) {
                "finished"
            } else {
                "to do"
            };
            println!("stage {}  {:<40} {state}", run.stage, run.name);
        }
        return Ok(());
    }
    for stage in 0..sweep.stage.len() {
        let stage_runs: Vec<_> = runs
            .iter()
            .filter(|run| run.stage == stage)
            .cloned()
            .collect();
        let statuses = run_all(&stage_runs, &options(stage));
        let failed: Vec<String> = stage_runs
            .iter()
            .zip(&statuses)
            .filter_map(|(run, status)| status.failure(run))
            .collect();
        let done = statuses.len() - failed.len();
        println!("stage {stage}: {done} of {} runs finished", statuses.len());
        if !failed.is_empty() {
            bail!(
                "stage {stage} did not finish, so later stages were not started:\n  {}",
                failed.join("\n  ")
            );
        }
    }
    println!(
        "all {} runs finished; the report: sgsc report {}",
        runs.len(),
        sweep.out.display()
    );
    Ok(())
}
