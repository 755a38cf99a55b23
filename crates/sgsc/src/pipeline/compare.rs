//! `compare`: baseline, unsafe and safe on the same harness, over several seeds (METHOD.md §5);
//! [`crate::report::compare`] tabulates them.
//!
//! For each seed: the `baseline` run is trained; its checkpoint is that seed's reference and its
//! preservation set is built from it; then `unsafe` and `safe` both start from the reference's
//! weights, so the only difference between them is the safety guard. A run whose folder already
//! holds a `summary.json` is not trained again, and an interrupted run resumes from its
//! checkpoint, so a comparison can be stopped and restarted.

use super::run;
use crate::config::ExperimentConfig;
use crate::data::load_train_validation;
use crate::error::{Error, Result};
use crate::preserve::{build_and_save, PreservationOptions, SplitInfo};
use crate::report::{read_summary, Summary, SUMMARY_FILE};
use crate::train::safety::load_reference;
use crate::train::trainer::{checkpoint_path, RunOptions};
use crate::train::Mode;
use std::path::{Path, PathBuf};
use tch::Device;

/// Where and how a comparison runs.
#[derive(Debug, Clone)]
pub struct ComparisonOptions {
    /// Training seeds; each trains all three modes.
    pub seeds: Vec<u64>,
    /// Folder holding one folder per run (`<mode>-seed<seed>`), plus `comparison.csv`.
    pub out_dir: PathBuf,
    /// Data folders to search, in order.
    pub data_dirs: Vec<PathBuf>,
    /// Where tensors live.
    pub device: Device,
    /// How the preservation sets are built.
    pub preservation: PreservationOptions,
    /// Show progress bars.
    pub progress: bool,
    /// Gamma of the safe runs when it differs from the config's (which the unsafe runs use): the
    /// guard spends bytes on restores, so an equal-size comparison gives safe more pressure.
    pub safe_gamma: Option<f64>,
    /// Config overrides (`section.key=value`) for the unsafe and safe runs only, for example a
    /// fine-tuning learning rate, since they start from the trained baseline.
    pub compress_overrides: Vec<String>,
}

/// Trains (or reloads) every run of the comparison and returns their summaries, seed by seed in
/// the order baseline, unsafe, safe.
pub fn run_comparison(
    config: &ExperimentConfig,
    options: &ComparisonOptions,
) -> Result<Vec<Summary>> {
    // The compressing runs' config, checked before anything trains.
    let overrides_label = Path::new("<compress overrides>");
    let mut compressing = config.with_overrides(&options.compress_overrides, overrides_label)?;
    let safety = compressing.safety.take().ok_or_else(|| Error::Config {
        path: "<config>".into(),
        message: "compare needs a [safety] section for its safe runs".into(),
    })?;
    let mut guarded_base = compressing.clone();
    if let Some(gamma) = options.safe_gamma {
        guarded_base.quant.gamma = gamma;
        guarded_base.validate(Path::new("--safe-gamma"))?;
    }
    let mut summaries = Vec::new();
    for &seed in &options.seeds {
        let mut seeded = config.clone();
        seeded.train.seed = seed;
        seeded.safety = None;
        let baseline_dir = options.out_dir.join(format!("baseline-seed{seed}"));
        summaries.push(run_once(&seeded, Mode::Baseline, &baseline_dir, options)?);

        let reference = checkpoint_path(&baseline_dir);
        let preservation_set = baseline_dir.join("preservation.json");
        if !preservation_set.exists() {
            let network = load_reference(&reference, &seeded, options.device)?;
            let data =
                load_train_validation(&seeded.data, &seeded.model.input, &options.data_dirs)?;
            let split = SplitInfo::train(seeded.data.validation_size, seeded.data.split_seed);
            build_and_save(
                &network,
                &reference,
                &data,
                split,
                &seeded.data.input,
                options.preservation.clone(),
                seeded.train.eval_batch_size,
                options.device,
                &preservation_set,
                &preservation_set.with_extension("png"),
            )?;
        }

        let mut unguarded = compressing.clone();
        unguarded.train.seed = seed;
        unguarded.train.init_from = Some(reference.clone());
        summaries.push(run_once(
            &unguarded,
            Mode::Unsafe,
            &options.out_dir.join(format!("unsafe-seed{seed}")),
            options,
        )?);

        let mut guarded = guarded_base.clone();
        guarded.train.seed = seed;
        guarded.safety = Some(crate::config::SafetyConfig {
            preservation_set,
            reference,
            ..safety.clone()
        });
        summaries.push(run_once(
            &guarded,
            Mode::Safe,
            &options.out_dir.join(format!("safe-seed{seed}")),
            options,
        )?);
    }
    Ok(summaries)
}

/// One run of the comparison, or its saved summary if it already finished.
fn run_once(
    config: &ExperimentConfig,
    mode: Mode,
    out_dir: &Path,
    options: &ComparisonOptions,
) -> Result<Summary> {
    if let Ok(summary) = read_summary(&out_dir.join(SUMMARY_FILE)) {
        tracing::info!("{} already finished; using its summary", out_dir.display());
        let saved = ExperimentConfig::load(&out_dir.join("config.toml"));
        if saved.as_ref().ok() != Some(config) {
            tracing::warn!(
                "{} was trained with another config than this comparison's (see its config.toml); \
                 delete the folder or use another --out to train it again",
                out_dir.display()
            );
        }
        return Ok(summary);
    }
    tracing::info!(
        "training {mode} (seed {}) into {}",
        config.train.seed,
        out_dir.display()
    );
    let run_options = RunOptions {
        mode,
        out_dir: out_dir.to_path_buf(),
        data_dirs: options.data_dirs.clone(),
        resume: true,
        device: options.device,
        progress: options.progress,
        stop_at: None,
    };
    let (summary, _) = run(config, &run_options)?.ok_or_else(|| {
        Error::Training(format!(
            "{} stopped before its last step",
            out_dir.display()
        ))
    })?;
    Ok(summary)
}
