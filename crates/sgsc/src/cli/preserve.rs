//! `sgsc preserve`: builds the preservation set from a float reference run's checkpoint, on that
//! run's training split only, and writes it as JSON plus a PNG montage.

use super::{data_dirs, parse_device};
use crate::data::mnist::load_train_validation;
use crate::preserve::{build_and_save, PreservationOptions, SplitInfo};
use crate::train::checkpoint;
use crate::train::config::ExperimentConfig;
use crate::train::learner::Learner;
use crate::train::Mode;
use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `sgsc preserve`.
#[derive(Debug, Args)]
pub struct PreserveArgs {
    /// Checkpoint of a `baseline` run: the float reference model.
    #[arg(long)]
    reference: PathBuf,
    /// Number of examples in the set.
    #[arg(long, default_value_t = 1000)]
    size: usize,
    /// Shares of saliency, uncertainty and diversity (normalised to sum to 1).
    #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [1.0, 1.0, 1.0])]
    shares: Vec<f64>,
    /// Seed of the k-means clustering.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the set (default: preservation.json beside the reference).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where to draw the montage (default: the set's path with .png).
    #[arg(long)]
    montage: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data folder (else $SGSC_DATA_DIR, else ./data, else download).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Runs `sgsc preserve`.
pub fn run(args: PreserveArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let (info, tensors) = checkpoint::load(&args.reference)?;
    if info.mode != Mode::Baseline.name() {
        bail!(
            "{}: the reference must be a baseline (float) run, not {}",
            args.reference.display(),
            info.mode
        );
    }
    let config = ExperimentConfig::parse(&info.config, Path::new("<reference checkpoint>"))?;
    let mut reference = Learner::new(&config, Mode::Baseline, device)?;
    reference.load_state(&tensors, info.step)?;
    let data = load_train_validation(
        &data_dirs(&args.data_dir),
        config.data.validation_size,
        config.data.split_seed,
    )?;
    let total_share: f64 = args.shares.iter().sum();
    if total_share.is_nan()
        || total_share <= 0.0
        || args.shares.iter().any(|&s| s.is_nan() || s < 0.0)
    {
        bail!(
            "--shares {:?}: shares must be non-negative with a positive sum",
            args.shares
        );
    }
    let options = PreservationOptions {
        size: args.size,
        saliency_share: args.shares[0] / total_share,
        uncertainty_share: args.shares[1] / total_share,
        diversity_share: args.shares[2] / total_share,
        seed: args.seed,
        ..PreservationOptions::default()
    };
    let split = SplitInfo::train(config.data.validation_size, config.data.split_seed);
    let out = args
        .out
        .unwrap_or_else(|| args.reference.with_file_name("preservation.json"));
    let montage = args.montage.unwrap_or_else(|| out.with_extension("png"));
    tracing::info!(
        "scoring {} training images with the reference",
        data.train.len()
    );
    let set = build_and_save(
        &reference.network,
        &args.reference,
        &data,
        split,
        &config.data.input,
        options,
        config.train.eval_batch_size,
        device,
        &out,
        &montage,
    )?;
    let count = |criterion| {
        set.members
            .iter()
            .filter(|m| m.criterion == criterion)
            .count()
    };
    let misclassified = set.members.iter().filter(|m| m.misclassified).count();
    let mut per_class = [0usize; 10];
    for member in &set.members {
        per_class[member.label as usize % 10] += 1;
    }
    println!(
        "preservation set: {} training images ({} saliency, {} uncertainty of which {} misclassified by the reference, {} diversity)",
        set.members.len(),
        count(crate::preserve::Criterion::Saliency),
        count(crate::preserve::Criterion::Uncertainty),
        misclassified,
        count(crate::preserve::Criterion::Diversity)
    );
    println!("per class: {per_class:?}");
    println!("written to {} and {}", out.display(), montage.display());
    Ok(())
}
