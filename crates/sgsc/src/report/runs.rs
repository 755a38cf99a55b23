//! The run folders a report reads: each one's `summary.json`, `config.toml`, `metrics.jsonl`
//! and `model.sgsc`, gathered into [`RunRecord`]s.

use super::{read_summary, Summary, MODEL_FILE, SUMMARY_FILE};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One finished run as the report sees it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Its folder relative to the runs folder (`safe-b2-g0.1-seed0`).
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// Its summary; `size_bytes` is the model file's length when the folder has one.
    pub summary: Summary,
    /// `quant.initial_bit_depth` of its config, for compressing runs.
    pub initial_bit_depth: Option<f64>,
    /// The evaluations logged during training, in step order.
    pub evaluations: Vec<Evaluation>,
    /// The safety controller's checks, in step order (safe runs).
    pub checks: Vec<Check>,
    /// Bit width of every live output channel of each quantized layer, from `model.sgsc`.
    pub widths: Vec<Vec<u8>>,
}

/// One evaluation line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Optimizer step.
    pub step: i64,
    /// Validation accuracy (fraction).
    pub validation_accuracy: f64,
    /// Validation loss.
    pub validation_loss: f64,
    /// Stored bits per original weight.
    pub bits_per_weight: f64,
    /// Live output channels summed over the quantized layers.
    pub channels_alive: i64,
}

/// One safety check of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Optimizer step.
    pub step: i64,
    /// `safe`, `restore`, `rollback`, ...
    pub action: String,
    /// Preservation-set figure at the check in the budget's metric: accuracy (fraction), or
    /// loss (nats) for a language model.
    pub preservation_accuracy: f64,
}

/// Every run under `runs_dir` (its folders and their sub-folders) that has a `summary.json`,
/// sorted by name.
pub fn collect_runs(runs_dir: &Path) -> Result<Vec<RunRecord>> {
    let mut folders = Vec::new();
    for entry in read_dir(runs_dir)? {
        if entry.join(SUMMARY_FILE).is_file() {
            folders.push(entry);
        } else if entry.is_dir() {
            folders.extend(
                read_dir(&entry)?
                    .into_iter()
                    .filter(|sub| sub.join(SUMMARY_FILE).is_file()),
            );
        }
    }
    folders.sort();
    let mut runs = Vec::new();
    for dir in folders {
        let run = read_run(runs_dir, dir)?;
        // A size that is not positive cannot go on a log axis and means a damaged summary.
        if run.summary.size_bytes <= 0 || !run.summary.test_accuracy.is_finite() {
            tracing::warn!(
                "{}: skipped (size {} B, test accuracy {})",
                run.dir.display(),
                run.summary.size_bytes,
                run.summary.test_accuracy
            );
            continue;
        }
        runs.push(run);
    }
    Ok(runs)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::io(dir, source))?;
    Ok(entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_dir())
        .collect())
}

fn read_run(runs_dir: &Path, dir: PathBuf) -> Result<RunRecord> {
    let mut summary = read_summary(&dir.join(SUMMARY_FILE))?;
    let mut widths = Vec::new();
    let model_path = dir.join(MODEL_FILE);
    if let Ok(bytes) = std::fs::read(&model_path) {
        let model = sgsc_runtime::format::decode(&bytes).map_err(|error| Error::Config {
            path: model_path.clone(),
            message: error.to_string(),
        })?;
        summary.size_bytes = bytes.len() as i64;
        summary.size_kind = "sgsc-file".into();
        summary.ratio_to_float = bytes.len() as f64 / summary.float_bytes.max(1) as f64;
        widths = model
            .layers
            .iter()
            .flat_map(|layer| layer.dense_parts())
            .map(|(_, dense)| dense.weight.widths.clone())
            .collect();
    }
    let initial_bit_depth = std::fs::read_to_string(dir.join("config.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|config| config.get("quant")?.get("initial_bit_depth")?.as_float())
        .filter(|_| summary.mode != "baseline");
    let (evaluations, checks) = read_metrics(&dir.join("metrics.jsonl"));
    let name = dir
        .strip_prefix(runs_dir)
        .unwrap_or(&dir)
        .display()
        .to_string();
    Ok(RunRecord {
        name,
        dir,
        summary,
        initial_bit_depth,
        evaluations,
        checks,
        widths,
    })
}

/// The evaluations and checks of a `metrics.jsonl` (missing file or unreadable lines: skipped,
/// since a report should still draw what it can).
pub fn read_metrics(path: &Path) -> (Vec<Evaluation>, Vec<Check>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut evaluations = Vec::new();
    let mut checks = Vec::new();
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let number = |value: &Value, key: &str| value.get(key).and_then(Value::as_f64);
        if let Some(check) = value.get("check") {
            checks.push(Check {
                step: number(check, "step").unwrap_or(0.0) as i64,
                action: check
                    .get("action")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                preservation_accuracy: number(check, "preservation_accuracy").unwrap_or(f64::NAN),
            });
        } else if let (Some(step), Some(validation_accuracy)) = (
            number(&value, "step"),
            number(&value, "validation_accuracy"),
        ) {
            evaluations.push(Evaluation {
                step: step as i64,
                validation_accuracy,
                validation_loss: number(&value, "validation_loss").unwrap_or(f64::NAN),
                bits_per_weight: number(&value, "bits_per_weight").unwrap_or(f64::NAN),
                channels_alive: value
                    .get("channels_alive")
                    .and_then(Value::as_array)
                    .map_or(0, |alive| alive.iter().filter_map(Value::as_i64).sum()),
            });
        }
    }
    (evaluations, checks)
}

/// The run's name without its seed (`safe-b2-g0.1-seed0` → `safe-b2-g0.1`): runs that differ
/// only in seed share it and are averaged together.
pub fn group_name(name: &str) -> String {
    match name.rfind("-seed") {
        Some(at) if name[at + 5..].chars().all(|c| c.is_ascii_digit()) && at + 5 < name.len() => {
            name[..at].to_string()
        }
        _ => name.to_string(),
    }
}

/// Indices of the runs on the Pareto front of accuracy against size: no other run is both
/// smaller (or as small) and more accurate. Sorted by size.
pub fn pareto_front(runs: &[RunRecord]) -> Vec<usize> {
    let summaries: Vec<&Summary> = runs.iter().map(|run| &run.summary).collect();
    super::plot::pareto_front(&summaries)
}
