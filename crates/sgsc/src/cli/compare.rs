//! `sgsc compare`: baseline, unsafe and safe over several seeds, one table.

use super::{data_dirs, parse_device};
use crate::preserve::PreservationOptions;
use crate::report::compare::{comparison_csv, comparison_table, run_comparison, ComparisonOptions};
use crate::train::checkpoint::write_atomically;
use crate::train::config::ExperimentConfig;
use anyhow::Result;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Arguments of `sgsc compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Experiment config (TOML) with a [safety] section.
    #[arg(long, default_value = "configs/mnist-cnn.toml")]
    config: PathBuf,
    /// Number of seeds (0, 1, ...).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Override train.steps.
    #[arg(long)]
    steps: Option<i64>,
    /// Override quant.gamma.
    #[arg(long)]
    gamma: Option<f64>,
    /// Folder of the comparison's runs.
    #[arg(long, default_value = "runs/compare")]
    out: PathBuf,
    /// Preservation set size.
    #[arg(long, default_value_t = 1000)]
    preservation_size: usize,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data folder (else $SGSC_DATA_DIR, else ./data, else download).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Runs `sgsc compare`.
pub fn run(args: CompareArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let mut config = ExperimentConfig::load(&args.config)?;
    if let Some(steps) = args.steps {
        config.train.steps = steps;
    }
    if let Some(gamma) = args.gamma {
        config.quant.gamma = gamma;
    }
    config.validate(&args.config)?;
    let options = ComparisonOptions {
        seeds: (0..args.seeds).collect(),
        out_dir: args.out.clone(),
        data_dirs: data_dirs(&args.data_dir),
        device,
        preservation: PreservationOptions {
            size: args.preservation_size,
            ..PreservationOptions::default()
        },
        progress: std::io::stderr().is_terminal(),
    };
    let summaries = run_comparison(&config, &options)?;
    let csv = args.out.join("comparison.csv");
    write_atomically(&csv, comparison_csv(&summaries).as_bytes())?;
    print!("{}", comparison_table(&summaries));
    println!("(every run: {})", csv.display());
    Ok(())
}
