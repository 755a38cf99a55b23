//! `compare`: baseline, unsafe and safe on the same harness, over several seeds (METHOD.md §5).
//!
//! For each seed: the `baseline` run is trained; its checkpoint is that seed's reference and its
//! preservation set is built from it; then `unsafe` and `safe` both start from the reference's
//! weights, so the only difference between them is the safety guard. A run whose folder already
//! holds a `summary.json` is not trained again, and an interrupted run resumes from its
//! checkpoint, so a comparison can be stopped and restarted.

use super::{read_summary, train_and_report, Summary, SUMMARY_FILE};
use crate::data::load_train_validation;
use crate::error::{Error, Result};
use crate::preserve::{build_and_save, PreservationOptions, SplitInfo};
use crate::train::config::ExperimentConfig;
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
        guarded.safety = Some(crate::train::config::SafetyConfig {
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
    let run = RunOptions {
        mode,
        out_dir: out_dir.to_path_buf(),
        data_dirs: options.data_dirs.clone(),
        resume: true,
        device: options.device,
        progress: options.progress,
        stop_at: None,
    };
    let (summary, _) = train_and_report(config, &run)?.ok_or_else(|| {
        Error::Training(format!(
            "{} stopped before its last step",
            out_dir.display()
        ))
    })?;
    Ok(summary)
}

/// Mean and sample standard deviation (0 for a single value).
pub fn mean_and_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, variance.sqrt())
}

/// One row per mode: test accuracy (a language model's test loss, nats per character) mean ±
/// std, size, ratio to float, train-test gap, controller events and wall time, over the seeds.
pub fn comparison_table(summaries: &[Summary]) -> String {
    let language_model = summaries.iter().any(|s| s.language_model);
    let mut table = format!(
        "{:<9} {:>5} {:>6} {:>17} {:>19} {:>8} {:>15} {:>22} {:>8}\n",
        "mode",
        "runs",
        "gamma",
        if language_model {
            "test loss (nats)"
        } else {
            "test accuracy"
        },
        "size (bytes)",
        "ratio",
        "train-test gap",
        "breach/restore/rollback",
        "wall"
    );
    for mode in Mode::ALL.map(Mode::name) {
        let runs: Vec<&Summary> = summaries.iter().filter(|s| s.mode == mode).collect();
        if runs.is_empty() {
            continue;
        }
        let column = |value: fn(&Summary) -> f64| {
            mean_and_std(&runs.iter().map(|s| value(s)).collect::<Vec<_>>())
        };
        let (size, size_std) = column(|s| s.size_bytes as f64);
        let (ratio, _) = column(|s| s.ratio_to_float);
        let (quality, gap) = if language_model {
            let (loss, loss_std) = column(|s| s.test_loss);
            let (gap, gap_std) = column(|s| s.test_loss - s.train_loss);
            (
                format!("{loss:.4} ± {loss_std:.4}"),
                format!("{gap:+.4} ± {gap_std:.4}"),
            )
        } else {
            let (accuracy, accuracy_std) = column(|s| 100.0 * s.test_accuracy);
            let (gap, gap_std) = column(|s| 100.0 * s.train_test_gap);
            (
                format!("{accuracy:.2} ± {accuracy_std:.2}%"),
                format!("{gap:.2} ± {gap_std:.2}pt"),
            )
        };
        let (wall, _) = column(|s| s.wall_seconds);
        let events = runs.iter().fold([0u32; 3], |sum, s| {
            let e = s.controller_events;
            [
                sum[0] + e.breaches,
                sum[1] + e.restores,
                sum[2] + e.rollbacks,
            ]
        });
        let gammas: Vec<f64> = runs.iter().filter_map(|s| s.gamma).collect();
        let gamma = match gammas.first() {
            Some(first) if gammas.len() == runs.len() && gammas.iter().all(|g| g == first) => {
                format!("{first}")
            }
            Some(_) => "mixed".into(),
            None => "-".into(),
        };
        table.push_str(&format!(
            "{:<9} {:>5} {:>6} {:>17} {:>10.0} ± {:<6.0} {:>8.4} {:>15} {:>22} {:>7.0}s\n",
            mode,
            runs.len(),
            gamma,
            quality,
            size,
            size_std,
            ratio,
            gap,
            format!("{}/{}/{}", events[0], events[1], events[2]),
            wall
        ));
    }
    table
}

/// Every run as a CSV line (header first).
pub fn comparison_csv(summaries: &[Summary]) -> String {
    let mut csv = String::from(
        "mode,seed,steps,gamma,test_accuracy,test_loss,train_accuracy,train_test_gap,validation_accuracy,size_bytes,size_kind,float_bytes,ratio_to_float,bits_per_weight,breaches,restores,rollbacks,wall_seconds,train_loss,validation_loss,language_model\n",
    );
    for s in summaries {
        let e = s.controller_events;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            s.mode,
            s.seed,
            s.steps,
            s.gamma.map(|g| g.to_string()).unwrap_or_default(),
            s.test_accuracy,
            s.test_loss,
            s.train_accuracy,
            s.train_test_gap,
            s.validation_accuracy,
            s.size_bytes,
            s.size_kind,
            s.float_bytes,
            s.ratio_to_float,
            s.bits_per_weight,
            e.breaches,
            e.restores,
            e.rollbacks,
            s.wall_seconds,
            s.train_loss,
            s.validation_loss,
            s.language_model
        ));
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (mean, std) = mean_and_std(&[99.0, 99.2, 99.4]);
        assert!((mean - 99.2).abs() < 1e-12);
        assert!((std - 0.2).abs() < 1e-12);
        assert_eq!(mean_and_std(&[5.0]), (5.0, 0.0));
    }
}
