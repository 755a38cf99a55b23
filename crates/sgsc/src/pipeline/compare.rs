//! `compare`: baseline, unsafe, distill and safe on the same harness, over several seeds
//! (METHOD.md §5); [`crate::report::compare`] tabulates them.
//!
//! For each seed: the `baseline` run is trained; its checkpoint is that seed's reference and its
//! preservation set is built from it; then `unsafe`, `distill` and `safe` all start from the
//! reference's weights. `distill` adds the reference's distillation on every training batch, as
//! `safe` does, so `unsafe` → `distill` → `safe` adds one thing at a time.
//!
//! Every compressing run ends at the same size, so the table compares accuracy at equal bytes.
//! `safe` runs first, on every thread: with a target (`quant.target_bytes`) it steers to it,
//! without one it finds the smallest model within its budget. `unsafe` and `distill` then run to
//! the same target, or to `safe`'s file length, side by side when `jobs` > 1 (on 2 cores, one run
//! on both threads and then two on one thread each finish sooner than three sharing two).
//!
//! A run whose folder already holds a `summary.json` is not trained again, and an interrupted
//! run resumes from its checkpoint, so a comparison can be stopped and restarted.

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
    /// Training seeds; each trains all four modes.
    pub seeds: Vec<u64>,
    /// Folder holding one folder per run (`<mode>-seed<seed>`), plus `comparison.csv`.
    pub out_dir: PathBuf,
    /// Data folders to search, in order.
    pub data_dirs: Vec<PathBuf>,
    /// Where tensors live.
    pub device: Device,
    /// How the preservation sets are built.
    pub preservation: PreservationOptions,
    /// Show progress bars (only when runs go one at a time).
    pub progress: bool,
    /// Gamma of the safe runs when it differs from the config's (where the law starts).
    pub safe_gamma: Option<f64>,
    /// Config overrides (`section.key=value`) for the compressing runs only, for example a
    /// fine-tuning learning rate, since they start from the trained baseline.
    pub compress_overrides: Vec<String>,
    /// Compressing runs trained side by side, each on one libtorch thread (1: one at a time,
    /// on every thread).
    pub jobs: usize,
}

/// Trains (or reloads) every run of the comparison and returns their summaries, seed by seed in
/// the order baseline, unsafe, distill, safe.
pub fn run_comparison(
    config: &ExperimentConfig,
    options: &ComparisonOptions,
) -> Result<Vec<Summary>> {
    // The compressing runs' config, checked before anything trains.
    let overrides_label = Path::new("<compress overrides>");
    let mut compressing = config.with_overrides(&options.compress_overrides, overrides_label)?;
    let safety = compressing.safety.take().ok_or_else(|| Error::Config {
        path: "<config>".into(),
        message: "compare needs a [safety] section for its distill and safe runs".into(),
    })?;
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
        let config_of = |mode: Mode, target: Option<i64>| -> Result<ExperimentConfig> {
            let mut run = compressing.clone();
            run.train.seed = seed;
            run.train.init_from = Some(reference.clone());
            run.quant.target_bytes = target;
            if mode.distils() {
                run.safety = Some(crate::config::SafetyConfig {
                    preservation_set: preservation_set.clone(),
                    reference: reference.clone(),
                    ..safety.clone()
                });
            }
            if let (Mode::Safe, Some(gamma)) = (mode, options.safe_gamma) {
                run.quant.gamma = gamma;
            }
            run.validate(Path::new("<compare>"))?;
            Ok(run)
        };
        let dir = |mode: Mode| options.out_dir.join(format!("{mode}-seed{seed}"));
        // safe first, on every thread; then the other two side by side, to the same target, or
        // without one to safe's size.
        let target = compressing.quant.target_bytes;
        let safe_run = run_once(
            &config_of(Mode::Safe, target)?,
            Mode::Safe,
            &dir(Mode::Safe),
            options,
        )?;
        let target = target.or(Some(safe_run.size_bytes));
        if compressing.quant.target_bytes.is_none() {
            tracing::info!(
                "safe ended at {} B: unsafe and distill run to that size",
                safe_run.size_bytes
            );
        }
        let runs = [Mode::Unsafe, Mode::Distill]
            .into_iter()
            .map(|mode| Ok((config_of(mode, target)?, mode, dir(mode))))
            .collect::<Result<Vec<_>>>()?;
        let others = run_side_by_side(&runs, options)?;
        summaries.extend(others);
        summaries.push(safe_run);
    }
    Ok(summaries)
}

/// Trains `runs` (config, mode, folder), `options.jobs` at a time on one libtorch thread each,
/// and returns their summaries in order.
fn run_side_by_side(
    runs: &[(ExperimentConfig, Mode, PathBuf)],
    options: &ComparisonOptions,
) -> Result<Vec<Summary>> {
    if options.jobs <= 1 {
        return runs
            .iter()
            .map(|(config, mode, dir)| run_once(config, *mode, dir, options))
            .collect();
    }
    let threads = tch::get_num_threads();
    tch::set_num_threads(1);
    let quiet = ComparisonOptions {
        progress: false,
        ..options.clone()
    };
    let mut summaries = Vec::with_capacity(runs.len());
    let outcome = runs.chunks(options.jobs).try_for_each(|chunk| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(config, mode, dir)| {
                    let quiet = &quiet;
                    scope.spawn(move || {
                        // OpenMP's thread count is per thread: set it in the run's own.
                        tch::set_num_threads(1);
                        run_once(config, *mode, dir, quiet)
                    })
                })
                .collect();
            for handle in handles {
                let summary = handle
                    .join()
                    .map_err(|_| Error::Training("a comparison run panicked".into()))??;
                summaries.push(summary);
            }
            Ok::<(), Error>(())
        })
    });
    tch::set_num_threads(threads);
    outcome?;
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
