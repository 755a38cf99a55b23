//! The experiment config: one TOML file with `[data]`, `[model]`, `[train]` and `[quant]`
//! sections. Unknown keys are errors, so a typo never silently falls back to a default.

use crate::data::mnist::InputOptions;
use crate::error::{Error, Result};
use crate::models::ModelConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A whole experiment: data, model, optimisation and quantization settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Which data and how it is fed.
    pub data: DataConfig,
    /// The network.
    pub model: ModelConfig,
    /// Optimisation of the weights, schedule, evaluation and checkpoints.
    pub train: TrainConfig,
    /// The quantizer and the size pressure.
    pub quant: QuantConfig,
}

/// Data set and input options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Data set name; `mnist` for now.
    pub dataset: String,
    /// Images split off the training file for validation.
    pub validation_size: usize,
    /// Seed of the train/validation split. Separate from `train.seed`, so that runs of several
    /// seeds, and the preservation set built from a reference run, share one validation split.
    /// Default 0.
    #[serde(default)]
    pub split_seed: u64,
    /// Normalisation and augmentation of training inputs.
    #[serde(flatten)]
    pub input: InputOptions,
}

/// Learning-rate schedule of an optimizer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// The learning rates stay where they start.
    Constant,
    /// Cosine decay from the starting rates to 0 at the last step.
    Cosine,
}

/// Weight optimisation, schedule, evaluation and checkpointing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps in the run.
    pub steps: i64,
    /// Training images per step.
    pub batch_size: usize,
    /// Adam learning rate of the weights (and biases).
    pub learning_rate: f64,
    /// Adam epsilon of the weights.
    pub adam_eps: f64,
    /// Learning-rate schedule of the weights.
    pub schedule: Schedule,
    /// Evaluate on validation every this many steps (and at the end).
    pub eval_every: i64,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: i64,
    /// Images per evaluation batch.
    pub eval_batch_size: usize,
    /// Seed of the weights, the batch order and the augmentation.
    pub seed: u64,
}

/// The quantizer's starting point and learning, and the size pressure gamma.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantConfig {
    /// Bit depth every channel starts at (b0).
    pub initial_bit_depth: f64,
    /// Adam learning rate of bit depths and exponents.
    pub learning_rate: f64,
    /// Adam epsilon of bit depths and exponents.
    pub adam_eps: f64,
    /// Learning-rate schedule of bit depths and exponents.
    pub schedule: Schedule,
    /// Weight gamma of the size term Q (average bits per original weight) in the loss.
    pub gamma: f64,
    /// Steps over which gamma ramps linearly from 0 to its value (0: no warm-up).
    #[serde(default)]
    pub gamma_warmup_steps: i64,
}

impl ExperimentConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::io(path, source))?;
        Self::parse(&text, path)
    }

    /// Parses and checks config text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let config: ExperimentConfig = toml::from_str(text).map_err(|error| Error::Config {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The config as TOML text (stored in checkpoints, so a run can be resumed or evaluated
    /// without the original file).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config always serialises to TOML")
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let problem = if self.data.dataset != "mnist" {
            Some(format!(
                "data.dataset {:?} is not supported (only \"mnist\")",
                self.data.dataset
            ))
        } else if self.train.steps < 1 {
            Some("train.steps must be at least 1".into())
        } else if self.train.batch_size == 0 || self.train.eval_batch_size == 0 {
            Some("train.batch_size and train.eval_batch_size must be positive".into())
        } else if self.train.eval_every < 1 || self.train.checkpoint_every < 1 {
            Some("train.eval_every and train.checkpoint_every must be at least 1".into())
        } else if !(self.train.learning_rate > 0.0 && self.quant.learning_rate >= 0.0) {
            Some("learning rates must be positive".into())
        } else if !(self.train.adam_eps > 0.0 && self.quant.adam_eps > 0.0) {
            Some("adam_eps values must be positive".into())
        } else if !(self.quant.initial_bit_depth > 0.0 && self.quant.initial_bit_depth <= 32.0) {
            Some("quant.initial_bit_depth must be in (0, 32]".into())
        } else if self.quant.gamma.is_nan()
            || self.quant.gamma < 0.0
            || self.quant.gamma_warmup_steps < 0
        {
            Some("quant.gamma and quant.gamma_warmup_steps must not be negative".into())
        } else {
            None
        };
        match problem {
            Some(message) => Err(Error::Config {
                path: path.to_path_buf(),
                message,
            }),
            None => Ok(()),
        }
    }
}
