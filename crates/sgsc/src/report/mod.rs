//! Reports stage: the figures of a finished run on the untouched test split, `summary.json`, and
//! the tables printed at the end of a run; [`compare`] tabulates the three modes, [`plot`] draws
//! their accuracy against size, and [`page`] writes a report of many runs. Nothing here trains:
//! runs are the pipeline's ([`crate::pipeline`]).

pub mod compare;
pub mod figures;
pub mod page;
pub mod plot;
pub mod runs;

use crate::config::ExperimentConfig;
use crate::data::{load_test, TrainValidation};
use crate::error::{Error, Result};
use crate::models::Network;
use crate::size::{payload_estimate, prepare_for_storage, OriginalSize, SizeReport};
use crate::train::controller::Events;
use crate::train::evaluate::evaluate;
use crate::train::safety::Certificate;
use crate::train::Mode;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::Device;

/// The record of one run, written as `summary.json`. Fields are only ever added, never renamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `baseline` or `unsafe`.
    pub mode: String,
    /// Seed of the run.
    pub seed: u64,
    /// Optimizer steps.
    pub steps: i64,
    /// Accuracy on the test split (fraction), evaluated once, at the end.
    pub test_accuracy: f64,
    /// Mean cross-entropy on the test split.
    pub test_loss: f64,
    /// Accuracy on 10,000 evenly spaced training images (no augmentation).
    pub train_accuracy: f64,
    /// `train_accuracy - test_accuracy`.
    pub train_test_gap: f64,
    /// Accuracy on the validation split.
    pub validation_accuracy: f64,
    /// Mean cross-entropy on the same training sample as `train_accuracy`.
    #[serde(default)]
    pub train_loss: f64,
    /// Mean cross-entropy on the validation split.
    #[serde(default)]
    pub validation_loss: f64,
    /// A character-level language model: its accuracies are per next character, its losses
    /// nats per character, and the loss is its headline figure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub language_model: bool,
    /// The kind of data set (`mnist`, `idx`, `cifar10`, ...; none in summaries written before it
    /// was recorded, which were MNIST or text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Size pressure gamma of a quantized run (none for baseline and for older summaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// The size target of the run, in bytes of its file, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_bytes: Option<i64>,
    /// What the target counted: absent for the file's length, `flash` for the flash bytes of
    /// the model's C build (estimated: `codegen::flash_estimate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_measure: Option<String>,
    /// Bytes by which the file (or, with a flash target, the flash estimate) exceeds its target
    /// (absent when it met it, or had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortfall_bytes: Option<i64>,
    /// The flash estimate of the model's C build, for a run with a flash target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_bytes: Option<i64>,
    /// Bytes of the model: the length of its `.sgsc` file for quantized modes (older runs: the
    /// payload estimate), float32 bytes for baseline.
    pub size_bytes: i64,
    /// What `size_bytes` counts: `sgsc-file`, `payload-estimate` or `float32`.
    pub size_kind: String,
    /// Bytes of the same network in float32.
    pub float_bytes: i64,
    /// `size_bytes / float_bytes`.
    pub ratio_to_float: f64,
    /// Stored code bits per original weight (32 for baseline).
    pub bits_per_weight: f64,
    /// Live output channels of each quantized layer, and how many it started with.
    pub channels_alive: Vec<[i64; 2]>,
    /// Seconds of training in this invocation.
    pub wall_seconds: f64,
    /// Roll-backs after non-finite losses.
    pub rollbacks: u32,
    /// What the safety controller did (all zero outside the `safe` mode).
    #[serde(default)]
    pub controller_events: Events,
    /// The safety certificate of a `safe` run: budget, reference and final figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<Certificate>,
}

/// Training images (evenly spaced through the train split) that measure train accuracy for the
/// train-test gap: enough for a figure good to about 0.1 points, at a fifth of the cost.
pub const TRAIN_ACCURACY_SAMPLE: usize = 10_000;
/// Training windows that measure a language model's train loss (each holds `context`
/// predictions, so a thousand already hold as many as the validation split).
pub const TRAIN_LOSS_SAMPLE_WINDOWS: usize = 1_000;

/// `count` positions spread evenly over `0..len` (all of them when `len <= count`).
fn evenly_spaced(len: usize, count: usize) -> Vec<usize> {
    if len <= count {
        return (0..len).collect();
    }
    (0..count).map(|i| i * len / count).collect()
}

/// Facts about the run that the network itself does not know.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Mode of the run.
    pub mode: Mode,
    /// Steps trained.
    pub steps: i64,
    /// Seconds of training.
    pub wall_seconds: f64,
    /// Roll-backs.
    pub rollbacks: u32,
    /// The safety certificate, for `safe` runs.
    pub certificate: Option<Certificate>,
}

/// Puts a trained network into its stored form and measures it: size, and accuracy on train,
/// validation and (for the first and only time) the test split.
pub fn summarize(
    network: &Network,
    original: &OriginalSize,
    config: &ExperimentConfig,
    data: &TrainValidation,
    data_dirs: &[PathBuf],
    device: Device,
    facts: RunFacts,
) -> Result<(Summary, SizeReport)> {
    let quantize = facts.mode.quantizes();
    if quantize {
        prepare_for_storage(network)?;
    }
    let size = payload_estimate(network, original)?;
    let input = &config.data.input;
    let batch = config.train.eval_batch_size;
    let test = load_test(
        &config.data,
        &config.model.input,
        data_dirs,
        data.normalization(),
    )?;
    let test_eval = evaluate(network, &test, input, quantize, batch, device)?;
    let train_sample = data.train.subset(&evenly_spaced(
        data.train.len(),
        if config.data.is_text() {
            TRAIN_LOSS_SAMPLE_WINDOWS
        } else {
            TRAIN_ACCURACY_SAMPLE
        },
    ));
    let train_eval = evaluate(network, &train_sample, input, quantize, batch, device)?;
    let validation_eval = evaluate(network, &data.validation, input, quantize, batch, device)?;
    let headline = size.headline(quantize);
    let summary = Summary {
        mode: facts.mode.name().into(),
        seed: config.train.seed,
        steps: facts.steps,
        test_accuracy: test_eval.accuracy,
        test_loss: test_eval.loss,
        train_accuracy: train_eval.accuracy,
        train_test_gap: train_eval.accuracy - test_eval.accuracy,
        validation_accuracy: validation_eval.accuracy,
        train_loss: train_eval.loss,
        validation_loss: validation_eval.loss,
        language_model: config.data.is_text(),
        dataset: Some(config.data.dataset.name().into()),
        gamma: quantize.then_some(config.quant.gamma),
        target_bytes: config.quant.target_bytes.filter(|_| quantize),
        target_measure: (quantize
            && config.quant.target_bytes.is_some()
            && config.quant.target_measure == crate::config::TargetMeasure::Flash)
            .then(|| "flash".to_string()),
        shortfall_bytes: None,
        flash_bytes: None,
        size_bytes: headline.bytes,
        size_kind: headline.kind.into(),
        float_bytes: size.float_bytes,
        ratio_to_float: headline.bytes as f64 / size.float_bytes as f64,
        bits_per_weight: headline.bits_per_weight,
        channels_alive: size
            .layers
            .iter()
            .map(|layer| {
                let alive = if quantize {
                    layer.alive
                } else {
                    layer.channels
                };
                [alive, layer.original_channels]
            })
            .collect(),
        wall_seconds: facts.wall_seconds,
        rollbacks: facts.rollbacks,
        controller_events: facts
            .certificate
            .as_ref()
            .map(|c| c.events)
            .unwrap_or_default(),
        safety: facts.certificate,
    };
    Ok((summary, size))
}

/// Name of the packed model file in a quantized run's folder.
pub const MODEL_FILE: &str = "model.sgsc";

impl Summary {
    /// True for a run on MNIST (older summaries without a data set: every image run).
    pub fn is_mnist(&self) -> bool {
        match &self.dataset {
            Some(dataset) => dataset == "mnist",
            None => !self.language_model,
        }
    }

    /// What a packed file records of this run: its safety certificate, and a short summary
    /// (mode, seed, steps, gamma and the test figures).
    pub fn for_packing(&self) -> (Option<serde_json::Value>, serde_json::Value) {
        let certificate = self
            .safety
            .as_ref()
            .and_then(|certificate| serde_json::to_value(certificate).ok());
        let summary = crate::pack::export::PackedSummary {
            mode: self.mode.clone(),
            seed: self.seed,
            steps: self.steps,
            gamma: self.gamma,
            test_accuracy: self.test_accuracy,
            test_loss: self.test_loss,
            target_bytes: self.target_bytes,
        };
        (certificate, summary.to_json())
    }

    /// Takes the size of a quantized model from its packed file of `bytes` bytes.
    pub fn set_file_size(&mut self, bytes: usize) {
        self.size_bytes = bytes as i64;
        self.size_kind = "sgsc-file".into();
        self.ratio_to_float = bytes as f64 / self.float_bytes as f64;
    }
}

/// Name of a finished run's summary in its folder.
pub const SUMMARY_FILE: &str = "summary.json";

/// Writes `summary.json`.
pub fn write_summary(path: &Path, summary: &Summary) -> Result<()> {
    let text = serde_json::to_string_pretty(summary).map_err(|e| Error::Training(e.to_string()))?;
    crate::files::write_atomically(path, text.as_bytes())
}

/// Reads a `summary.json` written by [`write_summary`] (or by an older sgsc: see the field
/// aliases).
pub fn read_summary(path: &Path) -> Result<Summary> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::io(path, source))?;
    serde_json::from_str(&text).map_err(|error| Error::Config {
        path: path.to_path_buf(),
        message: error.to_string(),
    })
}

impl Summary {
    /// The headline quality figure: test accuracy in percent, or a language model's test loss
    /// in nats per character.
    pub fn headline(&self) -> String {
        if self.language_model {
            format!("{:.4}", self.test_loss)
        } else {
            format!("{:.2}%", 100.0 * self.test_accuracy)
        }
    }

    /// Train-test gap: accuracy points lost from train to test, or a language model's loss
    /// (nats per character) gained.
    pub fn gap(&self) -> String {
        if self.language_model {
            format!("{:+.4}", self.test_loss - self.train_loss)
        } else {
            format!("{:.2}pt", 100.0 * self.train_test_gap)
        }
    }
}

/// The results table: one row per run.
pub fn results_table(summaries: &[Summary]) -> String {
    let language_model = summaries.iter().any(|s| s.language_model);
    let mut table = format!(
        "{:<9} {:>5} {:>7} {:>10} {:>10} {:>18} {:>9} {:>10} {:>9} {:>9}\n",
        "mode",
        "seed",
        "steps",
        if language_model {
            "test nats"
        } else {
            "test acc"
        },
        "train-test",
        "size (bytes)",
        "ratio",
        "bits/wt",
        "alive",
        "wall"
    );
    for s in summaries {
        let alive: i64 = s.channels_alive.iter().map(|[alive, _]| alive).sum();
        let total: i64 = s.channels_alive.iter().map(|[_, total]| total).sum();
        table.push_str(&format!(
            "{:<9} {:>5} {:>7} {:>10} {:>10} {:>9} {:<8} {:>8.4}x {:>10.3} {:>9} {:>8.0}s\n",
            s.mode,
            s.seed,
            s.steps,
            s.headline(),
            s.gap(),
            s.size_bytes,
            match s.size_kind.as_str() {
                "float32" => "float32",
                "sgsc-file" => "file",
                _ => "estimate",
            },
            s.ratio_to_float,
            s.bits_per_weight,
            format!("{alive}/{total}"),
            s.wall_seconds
        ));
    }
    table
}

/// Per-layer table of a size report: channels alive, live fan-in, width histogram, bytes.
pub fn layer_table(size: &SizeReport) -> String {
    let mut table = format!(
        "{:<20} {:>9} {:>12} {:>10} {:>8}  widths (bits: channels)\n",
        "layer", "alive", "live fan-in", "code bits", "bytes"
    );
    for layer in &size.layers {
        let widths: Vec<String> = layer
            .width_histogram
            .iter()
            .map(|(width, count)| format!("{width}:{count}"))
            .collect();
        table.push_str(&format!(
            "{:<20} {:>9} {:>12} {:>10} {:>8}  {}\n",
            layer.name,
            format!("{}/{}", layer.alive, layer.original_channels),
            layer.live_fan_in,
            layer.code_bits,
            layer.bytes,
            widths.join(" ")
        ));
    }
    if size.float_parameter_bytes > 0 {
        table.push_str(&format!(
            "float parameters (embeddings, layer norms) {} B\n",
            size.float_parameter_bytes
        ));
    }
    table.push_str(&format!(
        "payload estimate {} B, float32 {} B, {:.3} bits per original weight\n",
        size.payload_bytes, size.float_bytes, size.bits_per_weight
    ));
    table
}
