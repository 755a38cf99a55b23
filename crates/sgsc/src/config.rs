//! The experiment config: one TOML file with `[data]`, `[model]`, `[train]` and `[quant]`
//! sections. Unknown keys are errors, so a typo never silently falls back to a default.

pub use crate::data::DataConfig;
use crate::error::{Error, Result};
use crate::models::ModelConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    /// The safety guard (preservation set, budget, controller); required by the `safe` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<SafetyConfig>,
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
    /// Start from the weights (and batch-norm statistics) of this checkpoint instead of a random
    /// initialisation; the quantizers start afresh from those weights. The `safe` mode starts from
    /// its reference when this is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
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
    /// Learning-rate schedule of bit depths and exponents (default cosine).
    #[serde(default = "cosine")]
    pub schedule: Schedule,
    /// Weight gamma of the size term Q (average bits per original weight) in the loss.
    pub gamma: f64,
    /// Steps over which gamma ramps linearly from 0 to its value (0: no warm-up).
    #[serde(default)]
    pub gamma_warmup_steps: i64,
    /// Weight alpha of the L1 term on the weights of low-bit channels (default 0: off).
    #[serde(default)]
    pub l1_weight: f64,
    /// Channels whose `relu(b)` is below this get the L1 pull (default 1 bit).
    #[serde(default = "one_bit")]
    pub l1_bit_threshold: f64,
    /// The size the model must reach, in bytes of its `.sgsc` file: gamma then follows the
    /// target law of [`crate::train::pressure`] (starting from `gamma`) instead of staying fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_bytes: Option<i64>,
    /// What `target_bytes` counts: `file` (the `.sgsc` file's length, the default) or `flash`
    /// (the flash bytes of the model's C build for a microcontroller, computed without
    /// compiling: [`crate::codegen::flash_estimate`]; image classifiers).
    #[serde(default, skip_serializing_if = "TargetMeasure::is_file")]
    pub target_measure: TargetMeasure,
    /// Measure the stored size every this many steps when steering to a target (default 25).
    #[serde(default = "default_control_every")]
    pub control_every: i64,
    /// The share of the run by which the glide path reaches the target (default 0.5; the rest
    /// fine-tunes at the target's size).
    #[serde(default = "default_target_reach")]
    pub target_reach: f64,
    /// Integer exponents: the quantizer rounds each exponent (straight through), so every
    /// channel's step is a power of two and a pure shift could rescale it (default false: the
    /// integer path's per-channel multiplier absorbs real exponents at no cost; docs/integer.md
    /// has the measurement).
    #[serde(default)]
    pub integer_exponents: bool,
    /// Bits of the integer path's activation codes (2 to 8; default 8): what a `safe` run's
    /// final gate measures and certifies, and what the C export then runs.
    #[serde(default = "default_activation_bits")]
    pub activation_bits: u32,
}

fn default_target_reach() -> f64 {
    0.5
}

/// What a size target counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetMeasure {
    /// The length of the `.sgsc` file.
    #[default]
    File,
    /// The flash bytes of the C build (weights, constants and code).
    Flash,
}

impl TargetMeasure {
    fn is_file(&self) -> bool {
        *self == TargetMeasure::File
    }
}

fn default_control_every() -> i64 {
    25
}

fn cosine() -> Schedule {
    Schedule::Cosine
}

fn one_bit() -> f64 {
    1.0
}

/// The safety guard of METHOD.md §3-4: what to preserve, the budget and the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// The preservation set written by `sgsc preserve`.
    pub preservation_set: PathBuf,
    /// The float reference checkpoint (a `baseline` run): the budget's yardstick, the teacher of
    /// distillation, and the starting weights.
    pub reference: PathBuf,
    /// Weight lambda_p of the preservation loss.
    pub preservation_weight: f64,
    /// Preservation examples per step (augmented like training batches).
    pub preservation_batch_size: usize,
    /// Weight of distillation from the reference within the preservation loss (0: off).
    pub distillation_weight: f64,
    /// Distillation temperature T.
    pub temperature: f64,
    /// Weight of distillation from the reference on the training batch too (0: off): the
    /// reference's soft outputs carry more than the labels about how it decides, everywhere.
    #[serde(default)]
    pub train_distillation_weight: f64,
    /// Check the budget every this many steps (K).
    pub check_every: i64,
    /// Largest allowed drop of the audit part's figure below the reference's: accuracy points,
    /// or nats per character for a language model.
    pub max_preservation_drop: f64,
    /// Largest allowed drop of validation accuracy below the reference, in points.
    pub max_validation_drop: f64,
    /// Steps after a breach during which restored channels may not fall below their snapshot bits.
    pub cooldown_steps: i64,
    /// Gamma is multiplied by this on each breach.
    pub breach_gamma_factor: f64,
    /// Lambda_p is multiplied by this on each breach.
    pub breach_preservation_factor: f64,
    /// Lambda_p's multiplier never exceeds this, however many breaches come: unbounded, a long
    /// run of breaches makes the preservation term swamp the training loss and the model overfits
    /// the preservation set.
    #[serde(default = "default_max_preservation_factor")]
    pub max_preservation_factor: f64,
    /// Each safe check divides lambda_p's multiplier by this (back to 1) and, in a run without a
    /// size target, multiplies gamma by it: the search for the smallest model within the budget.
    /// (Older configs call it `pressure_recovery`.)
    #[serde(alias = "pressure_recovery")]
    pub gamma_growth: f64,
    /// Gamma never falls below this share of its starting value, however many breaches come
    /// (default 1/16).
    #[serde(default = "default_min_gamma_factor")]
    pub min_gamma_factor: f64,
    /// Share of the preservation set held out as its audit part (default 0.5), drawn from the
    /// validation split when the set is built (`sgsc preserve`, `sgsc compare`): no run trains
    /// on it; the guard and the certificate measure it. A set must be built with this share.
    #[serde(default = "default_audit_share")]
    pub audit_share: f64,
    /// Mid-run checks allow `1 + check_slack * lr(step) / lr(0)` times the drops (default 1):
    /// twice the final budget while the fine-tune's learning rate is at its peak, the budget
    /// itself as it decays to 0. The final gate always judges the budget itself.
    #[serde(default = "one")]
    pub check_slack: f64,
    /// Share of the channels whose stored width fell since the safe snapshot that a breach
    /// restores, most sensitive first (at least one).
    pub restore_fraction: f64,
    /// The breach in a row from which breaches restore channels (default 2: a first breach only
    /// eases the pressure, since a model often recovers by itself from a dip).
    #[serde(default = "two")]
    pub breaches_before_restore: u32,
    /// Breaches in a row after which the whole model rolls back to the safe snapshot.
    pub breaches_before_rollback: u32,
    /// At the target, a breach whose breached figures all rose since the last check waits
    /// instead of rolling back, at most this many checks in a row (default 2): a model still on
    /// its way back from the glide gets that long to come within the budget.
    #[serde(default = "two")]
    pub recovery_checks: u32,
    /// At the target, a breach is deferred to the final gate, or waits as above, only while the
    /// figures are within this many times the budget (default 2.5); farther out, the fine-tune's
    /// remaining gain cannot bring the model back (the most seen from the first judged check to
    /// the end: 3 budgets on MNIST at 6,000 B, from 6.2), and the guard rolls back at once.
    #[serde(default = "default_max_deferred_breach")]
    pub max_deferred_breach: f64,
    /// Steps a channel must stay at zero bits, through safe checks, before it is removed.
    pub prune_grace_steps: i64,
}

fn default_min_gamma_factor() -> f64 {
    1.0 / 16.0
}

/// The share of the preservation set held out as its audit part when nothing says otherwise:
/// half, so that each part of a 1,000-member set has about 500 (see `docs/guard.md`).
pub const DEFAULT_AUDIT_SHARE: f64 = 0.5;

fn default_audit_share() -> f64 {
    DEFAULT_AUDIT_SHARE
}

/// The integer path's activation bits when nothing says otherwise (`quant.activation_bits`,
/// and the `--integer` and C export of a file without a certificate).
pub const DEFAULT_ACTIVATION_BITS: u32 = 8;

fn default_activation_bits() -> u32 {
    DEFAULT_ACTIVATION_BITS
}

fn default_max_deferred_breach() -> f64 {
    2.5
}

fn one() -> f64 {
    1.0
}

fn two() -> u32 {
    2
}

/// The cap on lambda_p's multiplier when a config does not set one.
fn default_max_preservation_factor() -> f64 {
    8.0
}

impl SafetyConfig {
    /// What is wrong with these settings, if anything.
    fn problem(&self) -> Option<String> {
        let non_negative = [
            self.preservation_weight,
            self.distillation_weight,
            self.train_distillation_weight,
            self.max_preservation_drop,
            self.max_validation_drop,
            self.breach_gamma_factor,
            self.breach_preservation_factor,
        ];
        if non_negative.iter().any(|v| !v.is_finite() || *v < 0.0) {
            Some("safety weights, drops and factors must be finite and not negative".into())
        } else if !self.max_preservation_factor.is_finite() || self.max_preservation_factor < 1.0 {
            Some("safety.max_preservation_factor must be finite and at least 1".into())
        } else if !self.gamma_growth.is_finite() || self.gamma_growth < 1.0 {
            Some("safety.gamma_growth must be finite and at least 1".into())
        } else if !(self.min_gamma_factor > 0.0 && self.min_gamma_factor <= 1.0) {
            Some("safety.min_gamma_factor must be in (0, 1]".into())
        } else if !(self.audit_share >= 0.0 && self.audit_share < 1.0) {
            Some("safety.audit_share must be in [0, 1)".into())
        } else if !(self.max_deferred_breach >= 1.0 && self.max_deferred_breach.is_finite()) {
            Some("safety.max_deferred_breach must be finite and at least 1".into())
        } else if !(self.check_slack >= 0.0 && self.check_slack.is_finite()) {
            Some("safety.check_slack must be finite and not negative".into())
        } else if self.temperature.is_nan() || self.temperature <= 0.0 {
            Some("safety.temperature must be positive".into())
        } else if self.preservation_batch_size == 0 || self.check_every < 1 {
            Some("safety.preservation_batch_size and safety.check_every must be positive".into())
        } else if self.restore_fraction.is_nan()
            || self.restore_fraction <= 0.0
            || self.restore_fraction > 1.0
        {
            Some("safety.restore_fraction must be in (0, 1]".into())
        } else if self.cooldown_steps < 0 || self.prune_grace_steps < 0 {
            Some("safety.cooldown_steps and safety.prune_grace_steps must not be negative".into())
        } else {
            None
        }
    }
}

/// A `--set` value: TOML (`0.5`, `true`, `"text"`, `[1, 2]`), else the text as a string.
fn parse_override(value: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("value = {value}"))
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| toml::Value::String(value.into()))
}

/// Sets `a.b.c` in `table`, creating sections that do not exist yet.
fn set_dotted(
    table: &mut toml::Table,
    key: &str,
    value: toml::Value,
) -> std::result::Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts
        .pop()
        .filter(|part| !part.is_empty())
        .ok_or("empty key")?;
    let mut section = table;
    for part in parts {
        section = section
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("{part} is not a section"))?;
    }
    section.insert(last.into(), value);
    Ok(())
}

impl ExperimentConfig {
    /// The share of a preservation set built for this config that is its audit part:
    /// `safety.audit_share`, or the default without a `[safety]` section.
    pub fn audit_share(&self) -> f64 {
        self.safety
            .as_ref()
            .map_or(DEFAULT_AUDIT_SHARE, |safety| safety.audit_share)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with_overrides(path, &[])
    }

    /// Reads a config file, replaces the values named by `overrides` (`section.key=value`, the
    /// value in TOML syntax, or a bare string), then checks the result as if it had been written
    /// in the file: unknown keys and bad values are errors.
    pub fn load_with_overrides(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::io(path, source))?;
        if overrides.is_empty() {
            // Straight from the text, so errors point at the line.
            return Self::parse(&text, path);
        }
        let table: toml::Table = toml::from_str(&text).map_err(|error| Error::Config {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        Self::from_table(table, overrides, path)
    }

    /// This config with the values named by `overrides` replaced (as in
    /// [`ExperimentConfig::load_with_overrides`]); `path` only labels errors.
    pub fn with_overrides(&self, overrides: &[String], path: &Path) -> Result<Self> {
        let table = toml::Table::try_from(self).map_err(|error| Error::Config {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        Self::from_table(table, overrides, path)
    }

    fn from_table(mut table: toml::Table, overrides: &[String], path: &Path) -> Result<Self> {
        let fail = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        for assignment in overrides {
            let (key, value) = assignment
                .split_once('=')
                .ok_or_else(|| fail(format!("override {assignment:?} is not KEY=VALUE")))?;
            set_dotted(&mut table, key.trim(), parse_override(value.trim()))
                .map_err(|message| fail(format!("override {assignment:?}: {message}")))?;
        }
        let config: ExperimentConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| fail(e.to_string()))?;
        config.validate(path)?;
        Ok(config)
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
    /// The data settings are checked against the model first (a model whose input or class
    /// count the data set cannot feed is a [`crate::data::DataError`]).
    pub fn validate(&self, path: &Path) -> Result<()> {
        let input = crate::data::input_shape(&self.model.input);
        if let Some(problem) = self.data.problem(&input, self.model.classifier_outputs()) {
            return Err(problem.into());
        }
        let problem = if self.train.steps < 1 {
            Some("train.steps must be at least 1".into())
        } else if self.train.batch_size == 0 || self.train.eval_batch_size == 0 {
            Some("train.batch_size and train.eval_batch_size must be positive".into())
        } else if self.train.eval_every < 1 || self.train.checkpoint_every < 1 {
            Some("train.eval_every and train.checkpoint_every must be at least 1".into())
        } else if !(self.train.learning_rate > 0.0 && self.quant.learning_rate >= 0.0) {
            Some("learning rates must be positive".into())
        } else if !(self.train.adam_eps > 0.0 && self.quant.adam_eps > 0.0) {
            Some("adam_eps values must be positive".into())
        } else if !(2..=8).contains(&self.quant.activation_bits) {
            Some("quant.activation_bits must be in 2..=8".into())
        } else if !(self.quant.initial_bit_depth > 0.0 && self.quant.initial_bit_depth <= 32.0) {
            Some("quant.initial_bit_depth must be in (0, 32]".into())
        } else if self.quant.gamma.is_nan()
            || self.quant.gamma < 0.0
            || self.quant.gamma_warmup_steps < 0
        {
            Some("quant.gamma and quant.gamma_warmup_steps must not be negative".into())
        } else if !(self.quant.target_reach >= 0.0 && self.quant.target_reach <= 1.0) {
            Some("quant.target_reach must be in [0, 1]".into())
        } else if self.quant.target_bytes.is_some_and(|bytes| bytes < 1)
            || self.quant.control_every < 1
        {
            Some("quant.target_bytes and quant.control_every must be at least 1".into())
        } else if self.quant.target_measure == TargetMeasure::Flash && self.model.input.len() != 3 {
            Some("quant.target_measure = \"flash\" is for image classifiers".into())
        } else if self.quant.target_bytes.is_some() && self.quant.gamma <= 0.0 {
            Some(
                "quant.gamma (the target law's starting gamma) must be positive with a target"
                    .into(),
            )
        } else if let Some(safety) = &self.safety {
            safety.problem()
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
