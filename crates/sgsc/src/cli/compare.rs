//! `sgsc compare`: baseline, unsafe, distill and safe over several seeds, one table at equal bytes.

use super::{data_dirs, parse_device};
use crate::config::ExperimentConfig;
use crate::files::write_atomically;
use crate::pipeline::compare::{run_comparison, ComparisonOptions};
use crate::preserve::PreservationOptions;
use crate::report::compare::{comparison_csv, comparison_table};
use crate::report::plot::accuracy_against_size;
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
    /// Set any config value, as `section.key=value` (TOML syntax; repeatable), for example
    /// `--set quant.learning_rate=0.02`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Set a config value for the compressing runs only (repeatable), for example
    /// `--compress-set train.learning_rate=2e-4` to fine-tune the baseline gently.
    #[arg(long = "compress-set", value_name = "KEY=VALUE")]
    compress_overrides: Vec<String>,
    /// Override train.steps.
    #[arg(long)]
    steps: Option<i64>,
    /// Override quant.gamma (where the pressure law starts; of every compressing run unless
    /// --safe-gamma).
    #[arg(long)]
    gamma: Option<f64>,
    /// Starting gamma of the safe runs only.
    #[arg(long)]
    safe_gamma: Option<f64>,
    #[command(flatten)]
    target: super::TargetArgs,
    /// Compressing runs trained side by side, each on one libtorch thread.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Folder of the comparison's runs.
    #[arg(long, default_value = "runs/compare")]
    out: PathBuf,
    /// Preservation set size, both parts (`safety.audit_share` of it from the validation split).
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
    let mut config = ExperimentConfig::load_with_overrides(&args.config, &args.overrides)?;
    if let Some(steps) = args.steps {
        config.train.steps = steps;
    }
    if let Some(gamma) = args.gamma {
        config.quant.gamma = gamma;
    }
    args.target.apply(&mut config.quant);
    config.validate(&args.config)?;
    let options = ComparisonOptions {
        seeds: (0..args.seeds).collect(),
        out_dir: args.out.clone(),
        data_dirs: data_dirs(&args.data_dir),
        device,
        preservation: PreservationOptions {
            size: args.preservation_size,
            ..PreservationOptions::for_dataset(config.data.dataset)
        },
        progress: std::io::stderr().is_terminal(),
        safe_gamma: args.safe_gamma,
        compress_overrides: args.compress_overrides,
        jobs: args.jobs.max(1),
    };
    let summaries = run_comparison(&config, &options)?;
    let csv = args.out.join("comparison.csv");
    write_atomically(&csv, comparison_csv(&summaries).as_bytes())?;
    print!("{}", comparison_table(&summaries));
    println!("(every run: {})", csv.display());
    if config.data.is_text() {
        return Ok(());
    }
    let plot = args.out.join("comparison.png");
    let title = format!(
        "{}: baseline, unsafe, distill and safe",
        args.config.display()
    );
    match accuracy_against_size(&summaries, &title, &plot) {
        Ok(()) => println!("(accuracy against size: {})", plot.display()),
        Err(error) => tracing::warn!("no plot: {error}"),
    }
    Ok(())
}
