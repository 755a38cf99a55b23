//! `sgsc preserve`: builds the preservation set from a float reference run's checkpoint, its loss
//! part on that run's training split and its audit part on its validation split, and writes it as
//! JSON plus a PNG montage.

use super::{data_dirs, parse_device};
use crate::config::ExperimentConfig;
use crate::data::load_train_validation;
use crate::preserve::{build_and_save, PreservationOptions, SplitInfo};
use crate::train::checkpoint;
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
    /// Number of examples in the set, both parts (the reference's config's
    /// `safety.audit_share` of them from the validation split).
    #[arg(long, default_value_t = 1000)]
    size: usize,
    /// Share of the set drawn from the validation split as its audit part (default: the
    /// reference's config's `safety.audit_share`, else 0.5); a `safe` run's
    /// `safety.audit_share` must be the same.
    #[arg(long)]
    audit_share: Option<f64>,
    /// Shares of saliency, uncertainty and diversity, and for text optionally a fourth for the
    /// rarest bigrams (normalised to sum to 1). Default: equal shares, with the fourth for names.
    #[arg(long, value_delimiter = ',', num_args = 3..=4)]
    shares: Option<Vec<f64>>,
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
        &config.data,
        &config.model.input,
        &data_dirs(&args.data_dir),
    )?;
    let defaults = PreservationOptions::for_dataset(config.data.dataset);
    let shares = args.shares.clone().unwrap_or_else(|| {
        vec![
            defaults.saliency_share,
            defaults.uncertainty_share,
            defaults.diversity_share,
            defaults.rare_bigram_share,
        ]
    });
    if let Some(share) = args.audit_share.filter(|share| !(0.0..1.0).contains(share)) {
        bail!("--audit-share {share}: must be in [0, 1)");
    }
    let total_share: f64 = shares.iter().sum();
    if total_share.is_nan() || total_share <= 0.0 || shares.iter().any(|&s| s.is_nan() || s < 0.0) {
        bail!("--shares {shares:?}: shares must be non-negative with a positive sum");
    }
    let options = PreservationOptions {
        size: args.size,
        audit_share: args.audit_share.unwrap_or_else(|| config.audit_share()),
        saliency_share: shares[0] / total_share,
        uncertainty_share: shares[1] / total_share,
        diversity_share: shares[2] / total_share,
        rare_bigram_share: shares.get(3).map_or(0.0, |share| share / total_share),
        seed: args.seed,
        ..defaults
    };
    let split = SplitInfo::train(config.data.validation_size, config.data.split_seed);
    let out = args
        .out
        .unwrap_or_else(|| args.reference.with_file_name("preservation.json"));
    let montage = args.montage.unwrap_or_else(|| out.with_extension("png"));
    // Make the folders before the minutes of scoring, not after.
    for path in [&out, &montage] {
        if let Some(folder) = path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
        {
            std::fs::create_dir_all(folder)
                .map_err(|e| anyhow::anyhow!("{}: {e}", folder.display()))?;
        }
    }
    let examples = if config.data.is_text() {
        "windows"
    } else {
        "images"
    };
    tracing::info!(
        "scoring {} training and {} validation {examples} with the reference",
        data.train.len(),
        data.validation.len()
    );
    let (set, picture) = build_and_save(
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
    let both_parts = || set.members.iter().chain(&set.audit);
    let count = |criterion| both_parts().filter(|m| m.criterion == criterion).count();
    let misclassified = both_parts().filter(|m| m.misclassified).count();
    println!(
        "preservation set: {} training {examples} in the loss part, {} validation {examples} in the audit part ({} saliency, {} uncertainty of which {} misclassified by the reference, {} diversity, {} rare bigrams)",
        set.members.len(),
        set.audit.len(),
        count(crate::preserve::Criterion::Saliency),
        count(crate::preserve::Criterion::Uncertainty),
        misclassified,
        count(crate::preserve::Criterion::Diversity),
        count(crate::preserve::Criterion::RareBigrams)
    );
    if let Some(classes) = &data.classes {
        let mut per_class = vec![0usize; classes.len()];
        for member in both_parts() {
            if let Some(count) = per_class.get_mut(member.label as usize) {
                *count += 1;
            }
        }
        let listed: Vec<String> = classes
            .iter()
            .zip(&per_class)
            .map(|(class, count)| format!("{class} {count}"))
            .collect();
        println!("per class: {}", listed.join(", "));
    }
    println!("written to {} and {}", out.display(), picture.display());
    Ok(())
}
