//! `sgsc train`: one run from a config, then the results table and `summary.json`.

use super::{data_dirs, parse_device};
use crate::config::ExperimentConfig;
use crate::pipeline;
use crate::report::{layer_table, results_table};
use crate::train::trainer::RunOptions;
use crate::train::Mode;
use anyhow::Result;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Arguments of `sgsc train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Experiment config (TOML).
    #[arg(long, default_value = "configs/mnist-cnn.toml")]
    config: PathBuf,
    /// baseline (float), unsafe (self-compression), distill (self-compression distilling from the
    /// [safety] section's reference) or safe (self-compression with the safety guard; needs the
    /// [safety] section's reference run and preservation set).
    #[arg(long, default_value = "unsafe")]
    mode: Mode,
    /// Set any config value, as `section.key=value` (TOML syntax; repeatable), for example
    /// `--set quant.learning_rate=0.02`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Override train.steps.
    #[arg(long)]
    steps: Option<i64>,
    /// Override train.seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override quant.gamma (the size pressure; with a target, where its law starts).
    #[arg(long)]
    gamma: Option<f64>,
    #[command(flatten)]
    target: super::TargetArgs,
    /// Run folder (default: runs/<mode>-seed<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data folder (else $SGSC_DATA_DIR, else ./data, else download).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Continue from the run folder's checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop after this step (with a checkpoint); finish later with --resume.
    #[arg(long)]
    stop_at: Option<i64>,
}

/// Runs `sgsc train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let mut config = ExperimentConfig::load_with_overrides(&args.config, &args.overrides)?;
    if let Some(steps) = args.steps {
        config.train.steps = steps;
    }
    if let Some(seed) = args.seed {
        config.train.seed = seed;
    }
    if let Some(gamma) = args.gamma {
        config.quant.gamma = gamma;
    }
    args.target.apply(&mut config.quant);
    config.validate(&args.config)?;
    let out_dir = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("runs/{}-seed{}", args.mode, config.train.seed)));
    let options = RunOptions {
        mode: args.mode,
        out_dir: out_dir.clone(),
        data_dirs: data_dirs(&args.data_dir),
        resume: args.resume,
        device: parse_device(&args.device)?,
        progress: std::io::stderr().is_terminal(),
        stop_at: args.stop_at,
    };
    tracing::info!(
        "training {} for {} steps (seed {}, gamma {}) into {}",
        args.mode,
        config.train.steps,
        config.train.seed,
        config.quant.gamma,
        out_dir.display()
    );
    let Some((summary, size)) = pipeline::run(&config, &options)? else {
        println!(
            "stopped at step {}; continue with the same command and --resume",
            options.stop_at.unwrap_or_default()
        );
        return Ok(());
    };
    if args.mode.quantizes() {
        println!("{}", layer_table(&size));
    }
    if let Some(certificate) = &summary.safety {
        let metric = certificate.budget.metric;
        println!(
            "safety: preservation {} (reference {}), validation {} (reference {}): budget {}{}; {} breaches, {} restores, {} roll-backs, {} channels removed",
            metric.show(certificate.final_preservation),
            metric.show(certificate.budget.reference_preservation),
            metric.show(certificate.final_validation),
            metric.show(certificate.budget.reference_validation),
            if certificate.met { "met" } else { "NOT met" },
            if certificate.restored_last_safe_snapshot { " (the last safe snapshot)" } else { "" },
            certificate.events.breaches,
            certificate.events.restored_channels,
            certificate.events.rollbacks,
            certificate.pruned_channels
        );
    }
    print!("{}", results_table(std::slice::from_ref(&summary)));
    println!("(run folder: {})", out_dir.display());
    if let (Some(target), Some(over)) = (summary.target_bytes, summary.shortfall_bytes) {
        anyhow::bail!(
            "the target of {target} B was not reached: the {} is {} B, {over} B over{}",
            if summary.flash_bytes.is_some() {
                "flash estimate"
            } else {
                "file"
            },
            summary.flash_bytes.unwrap_or(summary.size_bytes),
            if summary.safety.is_some() {
                " (the smallest state within the safety budget)"
            } else {
                ""
            }
        );
    }
    Ok(())
}
