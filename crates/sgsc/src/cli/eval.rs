//! `sgsc eval`: a checkpoint's accuracy on the test split and its size.

use super::{data_dirs, parse_device};
use crate::data::load_train_validation;
use crate::report::{layer_table, results_table, summarize, RunFacts};
use crate::train::checkpoint;
use crate::train::config::ExperimentConfig;
use crate::train::learner::Learner;
use crate::train::Mode;
use anyhow::{anyhow, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `sgsc eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A checkpoint written by `sgsc train` (its run folder's `checkpoint.safetensors`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data folder (else $SGSC_DATA_DIR, else ./data, else download).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Runs `sgsc eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let (info, tensors) = checkpoint::load(&args.checkpoint)?;
    let config = ExperimentConfig::parse(&info.config, Path::new("<checkpoint>"))?;
    let mode: Mode = info.mode.parse().map_err(|e: String| anyhow!(e))?;
    let device = parse_device(&args.device)?;
    let mut learner = Learner::new(&config, mode, device)?;
    learner.load_state(&tensors, info.step)?;
    let dirs = data_dirs(&args.data_dir);
    let data = load_train_validation(&config.data, &config.model.input, &dirs)?;
    let facts = RunFacts {
        mode,
        steps: info.step,
        wall_seconds: 0.0,
        rollbacks: 0,
        certificate: None,
    };
    let (summary, size) = summarize(
        &learner.network,
        &learner.original,
        &config,
        &data,
        &dirs,
        device,
        facts,
    )?;
    if mode.quantizes() {
        println!("{}", layer_table(&size));
    }
    print!("{}", results_table(&[summary]));
    Ok(())
}
