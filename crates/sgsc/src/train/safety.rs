//! The safety guard of the `safe` mode (METHOD.md §3-4, as built: docs/guard.md), around the
//! [`Controller`]'s decisions:
//!
//! - the preservation set has two parts: the *loss part* (training examples) feeds the
//!   preservation loss (as in the paper), the *audit part* (`audit_share` of the set, validation
//!   examples chosen by the same criteria) never reaches any loss, nor do the training batches
//!   hold it, and it is what the budget, the checks and the certificate measure;
//! - before training, the reference's figures on the audit part and on validation fix the
//!   [`Budget`];
//! - every step gets a batch of the loss part (augmented) and the reference's logits on it;
//! - every `check_every` steps the audit part and validation are evaluated against the budget
//!   widened by `1 + check_slack * lr(step) / lr(0)`, since the fine-tune's early high learning
//!   rate costs accuracy by itself. When within it, channels that stayed at zero bits through
//!   `prune_grace_steps` of safe checks are removed and the state becomes the safe snapshot. On a
//!   breach, the channels that changed since the snapshot are ranked by the first-order change of
//!   the preservation loss that restoring them would bring, `|sum g * (q_snapshot - q_now)|` with
//!   `g` the gradient with respect to the quantized weights: those whose stored width fell, or,
//!   when none fell (the breach came from drifting weights or exponents), those whose codes or
//!   exponents changed. The top `restore_fraction` go back to their snapshot weights, bits and
//!   exponents (and Adam moments) and are held there through the cool-down, so their codes cannot
//!   shrink by any route; the count of restored channels is the restore count. A breach with
//!   nothing to restore rolls back. Lambda_p rises (the controller), gamma falls (the pressure
//!   law, [`super::pressure`]). Repeated breaches roll the model back to the snapshot if it was
//!   measured within budget (its tensors, not Adam's moments: a roll-back to the starting
//!   snapshot would otherwise restart Adam from zero moments, whose first bias-corrected steps
//!   move every weight by about one learning rate); a start outside the budget is never returned
//!   to;
//! - at the end, the final gate keeps the model only if it meets the budget itself, else the last
//!   safe snapshot; the figures (audit part, loss part, validation) become the run's
//!   [`Certificate`].

use super::checkpoint;
use super::controller::{
    Action, Budget, BudgetMetric, Controller, ControllerState, Events, PressureSettings,
};
use super::evaluate::{evaluate, Evaluation};
use super::learner::{Guidance, Learner, Snapshot};
use super::pressure::BreachResponse;
use super::Mode;
use crate::config::{ExperimentConfig, SafetyConfig};
use crate::data::sampler::{preservation_rng, EpochSampler};
use crate::data::{InputOptions, Tensors};
use crate::data::{Split, TrainValidation};
use crate::error::{Error, Result};
use crate::models::{Network, Weights};
use crate::pack::evaluate::{
    calibration_ranges, evaluate_integer, integer_model, CALIBRATION_IMAGES,
};
use crate::pack::export::{round_figure, to_packed, LONGEST_ACCURACY, LONGEST_LOSS};
use crate::preserve::Member;
use crate::preserve::PreservationSet;
use crate::quant::QuantizedWeight;
use crate::size::live::{self, Statistics};
use crate::size::prepare_for_storage;
use serde::{Deserialize, Serialize};
use sgsc_runtime::model::Metadata;
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Reduction, Tensor};

/// What one check found and did (a line of the metrics log).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// Step of the check.
    pub step: i64,
    /// Figure on the preservation set's audit part (no augmentation) in the budget's metric:
    /// accuracy, or loss for a language model (the field keeps its name for older logs).
    pub preservation_accuracy: f64,
    /// Figure on validation, in the budget's metric.
    pub validation_accuracy: f64,
    /// The factor the budget's drops were widened by at this check.
    pub budget_scale: f64,
    /// Whether the check found the model within the (widened) budget.
    pub within: bool,
    /// `safe`, `slack` (at the target, within the widened budget only: no snapshot), `ease`
    /// (the pressure alone answered a breach), `recovering` (a breach on its way back),
    /// `deferred` (a breach at the target, left to the final gate),
    /// `restore`, `rollback`, or `dip` (outside the budget on a target's glide path, where
    /// checks are not judged).
    pub action: &'static str,
    /// Channels restored to the snapshot.
    pub restored_channels: usize,
    /// Channels removed.
    pub pruned_channels: usize,
    /// Validation figures of the model as the check left it, when the check changed nothing
    /// (so an evaluation at the same step need not measure validation again).
    #[serde(skip)]
    pub validation: Option<Evaluation>,
}

/// Where a run is when the guard checks it, which decides what a breach may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStage {
    /// On a target's glide path: checks are not judged (a breach is a dip, and undoes nothing).
    Descent,
    /// Judged, with a size pressure on that a breach can ease.
    Compressing,
    /// Judged, with no pressure on (fine-tuning within the target): every breach returns to the
    /// safe snapshot at once (the trainer then fine-tunes there).
    Holding,
    /// Within the target for less than one check interval, still recovering from the glide: a
    /// breach is a dip, as on the way down, and only a state within the budget itself becomes
    /// the snapshot, as when holding.
    Settling,
}

impl CheckStage {
    /// Whether a check at this stage is judged: a breach counts, feeds the pressure law and may
    /// undo something. On the way down and while settling, one outside the budget is a dip.
    pub fn judged(self) -> bool {
        !matches!(self, CheckStage::Descent | CheckStage::Settling)
    }
}

/// The safety figures a model carries (its certificate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    /// The budget, with the reference's accuracies.
    pub budget: Budget,
    /// Final figure on the preservation set's audit part (the whole set before the split), in
    /// the budget's metric (accuracy, or loss for a language model). Summaries written before the
    /// rename call it `final_preservation_accuracy`.
    #[serde(alias = "final_preservation_accuracy")]
    pub final_preservation: f64,
    /// Final figure on the loss part, which the preservation loss trained on (absent in older
    /// summaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_loss_part: Option<f64>,
    /// Members in the audit part and in the loss part.
    #[serde(default)]
    pub parts: (usize, usize),
    /// Final figure on validation, in the budget's metric.
    #[serde(alias = "final_validation_accuracy")]
    pub final_validation: f64,
    /// Whether the final model meets the budget.
    pub met: bool,
    /// Whether the final gate fell back to the last safe snapshot.
    pub restored_last_safe_snapshot: bool,
    /// Breaches, restores and roll-backs.
    pub events: Events,
    /// Channels removed during training.
    pub pruned_channels: usize,
    /// The preservation set file it was measured on: the first 16 hex digits of the SHA-256 of
    /// its bytes (a digest, not a path, so that the same run writes the same file wherever its
    /// folder is). Empty in summaries written before digests.
    #[serde(default)]
    pub preservation_set_sha256: String,
    /// The reference checkpoint, likewise.
    #[serde(default)]
    pub reference_sha256: String,
    /// The size target of the run, if it had one, and whether its file is within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetOutcome>,
    /// The integer path's figures (image classifiers): what runs on a microcontroller, with the
    /// activation ranges it was calibrated with. `met` above includes its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integer: Option<IntegerFigures>,
}

/// The final model on the integer path (`docs/integer.md`), as the certificate records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegerFigures {
    /// Bits of the activation codes.
    pub activation_bits: u32,
    /// The largest magnitude of each layer's output over the calibration images (training
    /// images, evenly spaced), to 6 significant digits: the C export and `--integer` use these.
    pub ranges: Vec<f64>,
    /// Figure on the audit part, through the integer path.
    pub preservation: f64,
    /// Figure on validation, through the integer path.
    pub validation: f64,
    /// Whether these figures meet the budget.
    pub met: bool,
}

/// A range to 6 significant digits (so that its JSON is at most as long as
/// [`LONGEST_RANGE`]'s).
fn round_range(value: f32) -> f64 {
    let value = f64::from(value);
    if value == 0.0 || !value.is_finite() {
        return 0.0;
    }
    let digits = 5 - value.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// A placeholder as long as any rounded range prints.
const LONGEST_RANGE: f64 = 1.23456e-100;

/// The final gate's measurement of one state.
#[derive(Debug, Clone)]
struct Judged {
    preservation: f64,
    validation: f64,
    /// The integer path's figures, when measured (an image classifier whose f32 figures meet
    /// the budget).
    integer: Option<IntegerFigures>,
    /// Whether the state meets the budget on every path measured.
    met: bool,
}

/// How a run with a size target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetOutcome {
    /// The target, in bytes of the `.sgsc` file.
    pub target_bytes: i64,
    /// Whether the file is at most that long.
    pub met: bool,
}

/// The guard's bookkeeping besides tensors, saved in checkpoints (as JSON) so that a resumed
/// `safe` run continues exactly as an uninterrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GuardState {
    controller: ControllerState,
    snapshot_safe: bool,
    #[serde(default)]
    snapshot_within_budget: bool,
    snapshot_steps_taken: i64,
    #[serde(default)]
    earlier_steps_taken: Vec<i64>,
    zero_since: Vec<Vec<Option<i64>>>,
    held: Vec<Vec<bool>>,
    pruned_channels: usize,
    #[serde(default)]
    recovery_waits: u32,
    /// Digests of the preservation set and the reference the run was guarded by (absent in
    /// checkpoints of older versions).
    #[serde(default)]
    sources: Option<(String, String)>,
}

/// Checkpoint names of the safe snapshot's tensors.
const SNAPSHOT_PREFIX: &str = "guard.snapshot.";

/// Earlier safe snapshots kept for the final gate's walk-back: the oldest and the newest others
/// (each is a copy of the network and its Adam moments, in memory and in checkpoints).
const MAX_EARLIER_SNAPSHOTS: usize = 8;

/// Checkpoint names of the earlier safe snapshots' tensors (`guard.earlier.{i}.{name}`).
const EARLIER_PREFIX: &str = "guard.earlier.";

/// State of the safety guard during a run.
#[derive(Debug)]
pub struct Guard {
    safety: SafetyConfig,
    input: InputOptions,
    eval_batch_size: usize,
    device: Device,
    seed: u64,
    /// The part of the preservation set in the loss.
    loss_part: Split,
    /// The held-out part that the checks and the certificate measure (the loss part when the
    /// audit share is 0).
    audit: Split,
    /// Validation-split source indices of the audit part's members.
    audit_indices: Vec<u32>,
    /// For an image classifier measured in accuracy, its layers: the final gate measures its
    /// integer path, and the certificate's draft holds that many ranges.
    integer_draft: Option<usize>,
    /// Bits of the integer path's activations (`quant.activation_bits`).
    activation_bits: u32,
    reference: Network,
    controller: Controller,
    snapshot: Snapshot,
    /// Whether the snapshot was measured within budget (the starting state may not be).
    snapshot_safe: bool,
    /// The safe snapshots that `snapshot` replaced since the last pruning, oldest first (the
    /// oldest and the [`MAX_EARLIER_SNAPSHOTS`] - 1 newest): the final gate falls back through
    /// them when a snapshot measured safe in f32 fails on the integer path.
    earlier: Vec<Snapshot>,
    /// Whether it was measured within the budget itself, not only the widened one of a check
    /// on the way down.
    snapshot_within_budget: bool,
    /// Preservation and validation figures of the model the guard was built on (for the log).
    start_figures: (f64, f64),
    /// Channels restored by a breach and held at their snapshot state during the cool-down.
    held: Vec<Vec<bool>>,
    zero_since: Vec<Vec<Option<i64>>>,
    sampler: EpochSampler,
    pruned_channels: usize,
    /// Breaches at the target in a row that waited because their figures rose.
    recovery_waits: u32,
    /// Digests of the preservation set and reference files, for the certificate.
    sources: (String, String),
}

/// The first 16 hex digits of the SHA-256 of a file's bytes: what a certificate names its
/// sources by.
pub fn file_digest(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::io(path, source))?;
    Ok(sgsc_data::locate::sha256_hex(&bytes)[..16].to_string())
}

/// Loads a float network for `config`: the reference network of a `baseline` checkpoint (checked
/// to have `config`'s model), or a float state dict under PyTorch's names (a model trained
/// elsewhere; see [`crate::models::state_dict`]).
pub fn load_reference(path: &Path, config: &ExperimentConfig, device: Device) -> Result<Network> {
    let bytes = std::fs::read(path).map_err(|source| Error::io(path, source))?;
    if !checkpoint::is_checkpoint(&bytes) {
        // A float state dict under PyTorch's names (a model trained elsewhere).
        let network = Network::new(&config.model, config.quant.initial_bit_depth, device)?;
        crate::models::state_dict::load_float_state(&network, &bytes, path)?;
        return Ok(network);
    }
    let (info, tensors) = checkpoint::parse(&bytes, path)?;
    let fail = |message: String| Error::Config {
        path: path.to_path_buf(),
        message,
    };
    if info.mode != Mode::Baseline.name() {
        return Err(fail(format!(
            "the reference must be a baseline (float) run, not {}",
            info.mode
        )));
    }
    let reference_config = ExperimentConfig::parse(&info.config, path)?;
    if reference_config.model != config.model {
        return Err(fail(
            "the reference has a different [model] than this config".into(),
        ));
    }
    let mut reference = Learner::new(&reference_config, Mode::Baseline, device)?;
    reference.load_state(&tensors, info.step)?;
    Ok(reference.network)
}

impl Guard {
    /// Prepares the guard for `learner` (already at its starting weights): loads and checks the
    /// preservation set and the reference, and measures the budget.
    pub fn new(
        config: &ExperimentConfig,
        data: &TrainValidation,
        learner: &Learner,
        device: Device,
    ) -> Result<Self> {
        let safety = config.safety.clone().ok_or_else(|| Error::Config {
            path: "<config>".into(),
            message: "the safe mode needs a [safety] section".into(),
        })?;
        let set = PreservationSet::load(&safety.preservation_set)?;
        let fail = |message: String| Error::Config {
            path: safety.preservation_set.clone(),
            message,
        };
        if set.split.validation_size != config.data.validation_size
            || set.split.split_seed != config.data.split_seed
        {
            return Err(fail(format!(
                "built on another train/validation split (validation_size {}, split_seed {}) than this config's ({}, {})",
                set.split.validation_size, set.split.split_seed, config.data.validation_size, config.data.split_seed
            )));
        }
        if (set.options.audit_share - safety.audit_share).abs() > 1e-9 {
            return Err(fail(format!(
                "built with an audit share of {}, but safety.audit_share is {}: rebuild it with `sgsc preserve --audit-share {}`",
                set.options.audit_share, safety.audit_share, safety.audit_share
            )));
        }
        // The members of one part, as positions in the split they come from.
        let positions_in = |split: &Split, members: &[Member], what: &str| {
            let position_of = split.positions_by_index();
            members
                .iter()
                .map(|member| {
                    position_of
                        .get(&member.index)
                        .copied()
                        .filter(|&position| {
                            split
                                .label(position)
                                .is_none_or(|label| label == member.label)
                        })
                        .ok_or_else(|| {
                            fail(format!(
                                "member {} is not a {what} example with label {}",
                                member.index, member.label
                            ))
                        })
                })
                .collect::<Result<Vec<_>>>()
        };
        // `PreservationSet::load` refuses a set whose loss part is empty.
        let loss_part = data
            .train
            .subset(&positions_in(&data.train, &set.members, "training")?);
        let audit_indices: Vec<u32> = set.audit.iter().map(|member| member.index).collect();
        let audit = if set.audit.is_empty() {
            tracing::warn!(
                "the preservation set has no audit part: the checks measure the loss part itself"
            );
            loss_part.clone()
        } else {
            data.validation
                .subset(&positions_in(&data.validation, &set.audit, "validation")?)
        };
        let preservation = &audit;
        let reference = load_reference(&safety.reference, config, device)?;
        let batch = config.train.eval_batch_size;
        let reference_preservation = evaluate(
            &reference,
            preservation,
            &config.data.input,
            false,
            batch,
            device,
        )?;
        let reference_validation = evaluate(
            &reference,
            &data.validation,
            &config.data.input,
            false,
            batch,
            device,
        )?;
        let metric = if config.data.is_text() {
            BudgetMetric::Loss
        } else {
            BudgetMetric::Accuracy
        };
        let budget = Budget {
            metric,
            reference_preservation: figure(metric, &reference_preservation),
            reference_validation: figure(metric, &reference_validation),
            max_preservation_drop: safety.max_preservation_drop,
            max_validation_drop: safety.max_validation_drop,
        };
        match metric {
            BudgetMetric::Accuracy => tracing::info!(
                "safety budget: reference {:.2}% on the {} audit images of the preservation set ({} more in the loss), {:.2}% on validation; at most {} and {} points lost",
                100.0 * budget.reference_preservation,
                preservation.len(),
                loss_part.len(),
                100.0 * budget.reference_validation,
                budget.max_preservation_drop,
                budget.max_validation_drop
            ),
            BudgetMetric::Loss => tracing::info!(
                "safety budget: reference loss {:.4} nats on the {} audit windows of the preservation set ({} more in the loss), {:.4} on validation; at most {} and {} nats more",
                budget.reference_preservation,
                preservation.len(),
                loss_part.len(),
                budget.reference_validation,
                budget.max_preservation_drop,
                budget.max_validation_drop
            ),
        }
        let layers = learner.network.quantized.len();
        let mut guard = Guard {
            controller: Controller::new(
                budget,
                safety.breaches_before_restore,
                safety.breaches_before_rollback,
                safety.cooldown_steps,
                PressureSettings {
                    breach_preservation_factor: safety.breach_preservation_factor,
                    max_preservation_factor: safety.max_preservation_factor,
                    recovery: safety.gamma_growth,
                },
            ),
            sampler: EpochSampler::new(
                loss_part.len(),
                safety.preservation_batch_size,
                config.train.seed,
            ),
            zero_since: (0..layers)
                .map(|index| {
                    vec![None; learner.network.quantized_weight(index).weight.size()[0] as usize]
                })
                .collect(),
            held: (0..layers)
                .map(|index| {
                    vec![false; learner.network.quantized_weight(index).weight.size()[0] as usize]
                })
                .collect(),
            snapshot: learner.snapshot()?,
            snapshot_safe: false,
            earlier: Vec::new(),
            snapshot_within_budget: false,
            activation_bits: config.quant.activation_bits,
            integer_draft: (matches!(data.train, Split::Images(_))
                && metric == BudgetMetric::Accuracy)
                .then_some(learner.network.layers.len()),
            start_figures: (f64::NAN, f64::NAN),
            input: config.data.input,
            eval_batch_size: batch,
            seed: config.train.seed,
            device,
            loss_part,
            audit,
            audit_indices,
            reference,
            sources: (
                file_digest(&safety.preservation_set)?,
                file_digest(&safety.reference)?,
            ),
            safety,
            pruned_channels: 0,
            recovery_waits: 0,
        };
        // The starting state is the first snapshot, safe only if it meets the budget.
        guard.start_figures = guard.measure(learner, data)?;
        guard.snapshot_safe = budget.is_met(guard.start_figures.0, guard.start_figures.1);
        guard.snapshot_within_budget = guard.snapshot_safe;
        Ok(guard)
    }

    /// What a checkpoint must carry to resume the guard: the safe snapshot as tensors (named
    /// `guard.*`), the rest as JSON.
    pub fn state(&self) -> Result<(Vec<(String, Tensor)>, String)> {
        let mut tensors: Vec<(String, Tensor)> = self
            .snapshot
            .tensors()
            .iter()
            .map(|(name, tensor)| (format!("{SNAPSHOT_PREFIX}{name}"), tensor.shallow_clone()))
            .collect();
        for (index, snapshot) in self.earlier.iter().enumerate() {
            tensors.extend(snapshot.tensors().iter().map(|(name, tensor)| {
                (
                    format!("{EARLIER_PREFIX}{index}.{name}"),
                    tensor.shallow_clone(),
                )
            }));
        }
        let state = GuardState {
            controller: self.controller.state(),
            snapshot_safe: self.snapshot_safe,
            snapshot_within_budget: self.snapshot_within_budget,
            snapshot_steps_taken: self.snapshot.steps_taken(),
            earlier_steps_taken: self.earlier.iter().map(Snapshot::steps_taken).collect(),
            zero_since: self.zero_since.clone(),
            held: self.held.clone(),
            pruned_channels: self.pruned_channels,
            recovery_waits: self.recovery_waits,
            sources: Some(self.sources.clone()),
        };
        let json = serde_json::to_string(&state)
            .map_err(|e| Error::Training(format!("guard state: {e}")))?;
        Ok((tensors, json))
    }

    /// Continues from what [`Guard::state`] saved in `checkpoint` (`tensors` may hold other
    /// names too), for `learner` as resumed from it. Inconsistent saved state is an error, and
    /// so is a run guarded by another preservation set or reference than this guard's (a
    /// [`Error::Checkpoint`]: the run would mix two budgets).
    pub fn load_state(
        &mut self,
        learner: &Learner,
        tensors: &HashMap<String, Tensor>,
        json: &str,
        checkpoint: &Path,
    ) -> Result<()> {
        let bad = |message: String| Error::Training(format!("saved guard state: {message}"));
        let state: GuardState = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        if let Some((set, reference)) = state
            .sources
            .as_ref()
            .filter(|&saved| *saved != self.sources)
        {
            return Err(Error::Checkpoint {
                path: checkpoint.to_path_buf(),
                message: format!(
                    "was guarded by another preservation set or reference (sha256 {set} and \
                     {reference}, now {} and {}); delete the run's folder or use a new --out",
                    self.sources.0, self.sources.1
                ),
            });
        }
        let channels: Vec<i64> = (0..learner.network.quantized.len())
            .map(|index| learner.network.quantized_weight(index).weight.size()[0])
            .collect();
        let timers: Vec<i64> = state.zero_since.iter().map(|l| l.len() as i64).collect();
        let held: Vec<i64> = state.held.iter().map(|l| l.len() as i64).collect();
        if timers != channels || held != channels {
            return Err(bad(format!(
                "zero-bit timers for {timers:?} channels, the network has {channels:?}"
            )));
        }
        let saved_snapshot = |prefix: &str, steps_taken: i64| -> Result<Snapshot> {
            let mut snapshot = HashMap::new();
            for (name, tensor) in learner.state() {
                let saved = tensors
                    .get(&format!("{prefix}{name}"))
                    .filter(|saved| saved.size() == tensor.size())
                    .ok_or_else(|| bad(format!("no snapshot {prefix} of {name} in its shape")))?;
                snapshot.insert(name, saved.f_to_device(self.device)?);
            }
            Ok(Snapshot::from_tensors(snapshot, steps_taken))
        };
        self.snapshot = saved_snapshot(SNAPSHOT_PREFIX, state.snapshot_steps_taken)?;
        self.earlier = state
            .earlier_steps_taken
            .iter()
            .enumerate()
            .map(|(index, &steps)| saved_snapshot(&format!("{EARLIER_PREFIX}{index}."), steps))
            .collect::<Result<_>>()?;
        self.held = state.held;
        self.controller.set_state(state.controller);
        self.snapshot_safe = state.snapshot_safe;
        self.snapshot_within_budget = state.snapshot_within_budget;
        self.zero_since = state.zero_since;
        self.pruned_channels = state.pruned_channels;
        self.recovery_waits = state.recovery_waits;
        Ok(())
    }

    /// The budget being guarded.
    pub fn budget(&self) -> Budget {
        self.controller.budget
    }

    /// Source indices of the audit part's members: validation examples, which must stay out of
    /// every loss.
    pub fn audit_indices(&self) -> &[u32] {
        &self.audit_indices
    }

    /// The batch of the preservation set's loss part for `step`, with lambda_p now.
    pub fn guidance(&mut self, step: i64) -> Result<Guidance> {
        let positions = self.sampler.positions(step).to_vec();
        let indices = positions
            .iter()
            .map(|&position| self.loss_part.source_indices()[position])
            .collect();
        let mut rng = preservation_rng(self.seed, step);
        let (inputs, labels) = self
            .loss_part
            .tensors(&positions, &self.input, Some(&mut rng))?;
        let (inputs, labels) = (
            inputs.f_to_device(self.device)?,
            labels.f_to_device(self.device)?,
        );
        let teacher_logits = tch::no_grad(|| self.reference.forward(&inputs, false, false))?;
        Ok(Guidance {
            indices,
            inputs,
            labels,
            teacher_logits,
            preservation_weight: self.safety.preservation_weight
                * self.controller.preservation_factor(),
            distillation_weight: self.safety.distillation_weight,
            temperature: self.safety.temperature,
        })
    }

    /// Says in the log when there is no state measured within the budget to roll back to (a
    /// start at few bits per weight), so that breaches will restore channels only. Called once
    /// the guard has its state, fresh or resumed.
    pub fn log_roll_back_rule(&self) {
        if !self.snapshot_safe {
            let metric = self.controller.budget.metric;
            tracing::info!(
                "no state has been measured within the budget yet (at this start: {} on the preservation set, {} on validation): until a check is, breaches restore channels and never roll back",
                metric.show(self.start_figures.0),
                metric.show(self.start_figures.1),
            );
        }
    }

    /// How the pressure law answers this guard's checks.
    pub fn breach_response(&self) -> BreachResponse {
        BreachResponse {
            breach_factor: self.safety.breach_gamma_factor,
            min_factor: self.safety.min_gamma_factor,
            growth: self.safety.gamma_growth,
            settle_steps: self.safety.check_every,
        }
    }

    /// After an optimizer step: during a cool-down, restored channels are put back to their
    /// snapshot weights, bits and exponents (so their codes cannot shrink by any route); after
    /// it, they are released.
    pub fn after_step(&mut self, learner: &Learner, step: i64) -> Result<()> {
        if !self.controller.cooling_down(step) {
            self.held
                .iter_mut()
                .flatten()
                .for_each(|held| *held = false);
            return Ok(());
        }
        let current: HashMap<String, Tensor> = learner.network.state().into_iter().collect();
        tch::no_grad(|| -> Result<()> {
            for (index, held) in self.held.iter().enumerate() {
                let info = &learner.network.quantized[index];
                for (channel, _) in held.iter().enumerate().filter(|(_, &held)| held) {
                    for suffix in ["weight", "bit_depth", "exponent", "bias"] {
                        let name = format!("{}.{suffix}", info.name);
                        if let Some(target) = current.get(&name) {
                            copy_row(target, self.snapshot.tensor(&name), channel as i64)?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Evaluates the budget at `step`, widened by `1 + check_slack * lr_factor` (`lr_factor`: the
    /// weights' learning rate now over its start), and acts on the controller's decision as
    /// `stage` allows.
    pub fn check(
        &mut self,
        learner: &mut Learner,
        data: &TrainValidation,
        step: i64,
        lr_factor: f64,
        stage: CheckStage,
    ) -> Result<CheckReport> {
        let judged = stage.judged();
        // Measured in the stored form (exponents rounded to f16, dead channels' statistics
        // reset), so that a snapshot within the budget is within it as the file holds it: the
        // final gate measures that form (MNIST at 10,000 B: a snapshot at the floor measured
        // 0.04 points lower after the rounding).
        prepare_for_storage(&learner.network)?;
        let (preservation, validation, evaluation) = self.measure_with_validation(learner, data)?;
        let scale = 1.0 + self.safety.check_slack * lr_factor.clamp(0.0, 1.0);
        let within = self
            .controller
            .budget
            .is_met_scaled(preservation, validation, scale);
        if !judged && !within {
            // On a target's glide path, and for one check interval after it, the dip is the
            // law's doing and passes once the pressure stops: nothing is undone, nothing
            // counted. The controller keeps the figures, so that the first judged check compares
            // with them.
            self.controller.record_figures(preservation, validation);
            self.restart_grace_periods();
            return Ok(CheckReport {
                step,
                preservation_accuracy: preservation,
                validation_accuracy: validation,
                budget_scale: scale,
                within,
                action: "dip",
                restored_channels: 0,
                pruned_channels: 0,
                validation: Some(evaluation),
            });
        }
        // At the target, the fine-tune gains more than the widened budget allows until its last
        // step (`distill` from three quarters of the learning rate to the end: MNIST at
        // 10,000 B +0.68 validation points, Fashion-MNIST at 35,000 B +1.56, against 0.375
        // points of widening there), so a breach there cannot tell a state that will end outside the
        // budget from one that will not. With a snapshot within the budget itself to fall back
        // to, the final gate judges the state instead: the breach is deferred.
        // Far outside the budget, though, the remaining gain may not bring the model back: the
        // guard does not defer. A model whose figures fell there returns to the snapshot at once
        // (the trainer then searches for a size the budget allows); one whose figures rose is on
        // its way back from the glide and waits, `recovery_checks` times in a row at most, like
        // any rising breach at the target (Fashion-MNIST at 35,000 B: 1.6 validation points out
        // at its first judged check, 0.8 more than at the check before).
        let hopeless = stage == CheckStage::Holding
            && !self.controller.budget.is_met_scaled(
                preservation,
                validation,
                self.safety.max_deferred_breach,
            );
        let deferred = stage == CheckStage::Holding && self.snapshot_within_budget && !hopeless;
        let may_roll_back = self.snapshot_safe && !deferred;
        let action =
            match self
                .controller
                .observe(step, preservation, validation, may_roll_back, scale)
            {
                Action::Ease | Action::Recovering | Action::RestoreChannels if deferred => {
                    Action::Recovering
                }
                // At the target there is no pressure to ease, and channels restored to an older
                // state no longer fit a network that adapted around them. A model whose figures
                // all rose is on its way back from the glide and waits, `recovery_checks` times
                // in a row at most, since the learning rate that could recover it runs out; any
                // other breach returns to the last safe state, to fine-tune there.
                Action::Recovering
                    if stage == CheckStage::Holding
                        && self.recovery_waits < self.safety.recovery_checks =>
                {
                    self.recovery_waits += 1;
                    Action::Recovering
                }
                Action::Ease | Action::Recovering | Action::RestoreChannels
                    if stage == CheckStage::Holding && self.snapshot_safe =>
                {
                    self.controller.record_rollback();
                    Action::RollBack
                }
                action => action,
            };
        if !matches!(action, Action::Recovering) {
            self.recovery_waits = 0;
        }
        let mut report = CheckReport {
            step,
            preservation_accuracy: preservation,
            validation_accuracy: validation,
            budget_scale: scale,
            within: action == Action::Snapshot,
            action: "safe",
            restored_channels: 0,
            pruned_channels: 0,
            validation: None,
        };
        match action {
            Action::Snapshot
                if matches!(stage, CheckStage::Holding | CheckStage::Settling)
                    && !self.controller.budget.is_met(preservation, validation) =>
            {
                // At the target, the learning rate has decayed and a state becomes the snapshot
                // (what a breach and the final gate return to) only within the budget itself.
                report.action = "slack";
            }
            Action::Snapshot => {
                report.pruned_channels = self.prune(learner, step)?;
                let replaced = std::mem::replace(&mut self.snapshot, learner.snapshot()?);
                if report.pruned_channels > 0 {
                    // Earlier states no longer fit the pruned network.
                    self.earlier.clear();
                } else if self.snapshot_safe {
                    self.earlier.push(replaced);
                    if self.earlier.len() > MAX_EARLIER_SNAPSHOTS {
                        // The oldest stays: it is the likeliest to pass.
                        self.earlier.remove(1);
                    }
                }
                self.snapshot_safe = true;
                self.snapshot_within_budget =
                    self.controller.budget.is_met(preservation, validation);
            }
            Action::RestoreChannels => {
                report.restored_channels = self.restore_channels(learner)?;
                self.controller.record_restored(report.restored_channels);
                if report.restored_channels > 0 {
                    report.action = "restore";
                } else if self.snapshot_safe {
                    // Nothing changed that a restore could undo: return to the snapshot.
                    self.controller.record_rollback();
                    report.action = "rollback";
                    self.roll_back(learner)?;
                } else {
                    report.action = "restore";
                }
            }
            Action::Ease => report.action = "ease",
            Action::Recovering if deferred => report.action = "deferred",
            Action::Recovering => report.action = "recovering",
            Action::RollBack => {
                report.action = "rollback";
                self.roll_back(learner)?;
            }
        }
        if action != Action::Snapshot {
            self.restart_grace_periods();
        }
        let unchanged = matches!(
            report.action,
            "safe" | "slack" | "ease" | "recovering" | "deferred"
        ) && report.pruned_channels == 0;
        report.validation = unchanged.then_some(evaluation);
        Ok(report)
    }

    /// A channel's grace period before removal counts safe time only: after a check outside the
    /// budget, every zero-bit channel starts its period anew.
    fn restart_grace_periods(&mut self) {
        self.zero_since
            .iter_mut()
            .flatten()
            .for_each(|since| *since = None);
    }

    /// Returns the network to the safe snapshot and releases held channels.
    fn roll_back(&mut self, learner: &mut Learner) -> Result<()> {
        learner.restore_network(&self.snapshot)?;
        self.held
            .iter_mut()
            .flatten()
            .for_each(|held| *held = false);
        Ok(())
    }

    /// Figures on the audit part and on validation, in the budget's metric.
    fn measure(&self, learner: &Learner, data: &TrainValidation) -> Result<(f64, f64)> {
        let (preservation, validation, _) = self.measure_with_validation(learner, data)?;
        Ok((preservation, validation))
    }

    /// As [`Guard::measure`], with the whole validation evaluation besides.
    fn measure_with_validation(
        &self,
        learner: &Learner,
        data: &TrainValidation,
    ) -> Result<(f64, f64, Evaluation)> {
        let quantize = learner.mode.quantizes();
        let preservation = evaluate(
            &learner.network,
            &self.audit,
            &self.input,
            quantize,
            self.eval_batch_size,
            self.device,
        )?;
        let validation = evaluate(
            &learner.network,
            &data.validation,
            &self.input,
            quantize,
            self.eval_batch_size,
            self.device,
        )?;
        let metric = self.controller.budget.metric;
        Ok((
            figure(metric, &preservation),
            figure(metric, &validation),
            validation,
        ))
    }

    /// Removes channels that have had zero bits since at least `prune_grace_steps` ago (and no
    /// bias or affine shift that would still reach the next layer, unless it folds into that
    /// layer's bias: see [`live::fold_consumer`]), in the units the network
    /// allows (channels, MLP units, attention heads: see [`crate::prune::plan`]). Returns how many
    /// output channels went.
    fn prune(&mut self, learner: &mut Learner, step: i64) -> Result<usize> {
        let mut removable = Vec::with_capacity(self.zero_since.len());
        for index in 0..learner.network.quantized.len() {
            let zero_bits = live::zero_bits(&learner.network, index)?;
            let constant = live::constant_outputs(&learner.network, index, Statistics::Running)?;
            let folds = live::fold_consumer(&learner.network, index).is_some();
            let since = &mut self.zero_since[index];
            for (channel, &zero) in zero_bits.iter().enumerate() {
                since[channel] = if zero {
                    Some(since[channel].unwrap_or(step))
                } else {
                    None
                };
            }
            removable.push(
                (0..zero_bits.len())
                    .map(|c| {
                        (!constant[c] || folds)
                            && since[c]
                                .is_some_and(|start| step - start >= self.safety.prune_grace_steps)
                    })
                    .collect(),
            );
        }
        let mut removed = 0;
        for (index, keep) in crate::prune::plan(&learner.network, &removable)? {
            removed += self.zero_since[index].len() - keep.len();
            learner.prune(index, &keep)?;
            self.zero_since[index] = keep
                .iter()
                .map(|&c| self.zero_since[index][c as usize])
                .collect();
            self.held[index] = keep.iter().map(|&c| self.held[index][c as usize]).collect();
        }
        self.pruned_channels += removed;
        Ok(removed)
    }

    /// Restores the most sensitive channels that changed since the snapshot: those whose stored
    /// width fell, or, when none fell, those whose codes or exponents drifted. Returns how many.
    fn restore_channels(&mut self, learner: &mut Learner) -> Result<usize> {
        let network = &learner.network;
        let layers = network.quantized.len();
        let mut saved = Vec::with_capacity(layers);
        for info in &network.quantized {
            let tensor = |suffix: &str| {
                self.snapshot
                    .tensor(&format!("{}.{suffix}", info.name))
                    .ok_or_else(|| {
                        Error::Training(format!("the safe snapshot has no {}.{suffix}", info.name))
                    })
            };
            saved.push((tensor("weight")?, tensor("bit_depth")?, tensor("exponent")?));
        }
        let current: Vec<Tensor> = (0..layers)
            .map(|index| Ok(network.quantized_weight(index).quantized()?.f_detach()?))
            .collect::<Result<_>>()?;
        let gradients = self.preservation_gradients(network, &current)?;
        let mut fallen: Vec<(f64, usize, i64)> = Vec::new();
        let mut drifted: Vec<(f64, usize, i64)> = Vec::new();
        for index in 0..layers {
            let (weight, bits, exponent) = saved[index];
            if weight.size() != network.quantized_weight(index).weight.size() {
                continue;
            }
            let snapshot = QuantizedWeight {
                weight: weight.shallow_clone(),
                bit_depth: bits.shallow_clone(),
                exponent: exponent.shallow_clone(),
                integer_exponent: network.quantized_weight(index).integer_exponent,
            };
            let restored = tch::no_grad(|| snapshot.quantized())?;
            let change = gradients[index]
                .f_mul(&restored.f_sub(&current[index])?)?
                .f_flatten(1, -1)?
                .f_sum_dim_intlist(1, false, Kind::Float)?
                .f_abs()?;
            let fell: Vec<bool> = network
                .quantized_weight(index)
                .channel_widths()?
                .iter()
                .zip(&snapshot.channel_widths()?)
                .map(|(now, then)| now < then)
                .collect();
            let moved = changed_rows(
                &network.quantized_weight(index).codes()?,
                &snapshot.codes()?,
            )?;
            let exponent_moved = changed_rows(&network.quantized_weight(index).exponent, exponent)?;
            let change = Vec::<f32>::try_from(&change.f_to_device(Device::Cpu)?)?;
            for c in 0..fell.len() {
                let entry = (change[c] as f64, index, c as i64);
                if fell[c] {
                    fallen.push(entry);
                } else if moved[c] || exponent_moved[c] {
                    drifted.push(entry);
                }
            }
        }
        let mut candidates = if fallen.is_empty() { drifted } else { fallen };
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let count = ((candidates.len() as f64 * self.safety.restore_fraction).ceil() as usize)
            .min(candidates.len());
        let optimizer_state: HashMap<String, Tensor> =
            learner.optimizer.state().into_iter().collect();
        let current: HashMap<String, Tensor> = learner.network.state().into_iter().collect();
        tch::no_grad(|| -> Result<()> {
            for &(_, index, channel) in &candidates[..count] {
                let info = &learner.network.quantized[index];
                let mut names: Vec<String> = ["weight", "bit_depth", "exponent", "bias"]
                    .iter()
                    .map(|suffix| format!("{}.{suffix}", info.name))
                    .collect();
                if let Some(norm) = info.norm {
                    names.extend(
                        ["running_mean", "running_var", "weight", "bias"]
                            .iter()
                            .map(|suffix| format!("layers.{norm}.{suffix}")),
                    );
                }
                for name in names.iter().filter(|name| current.contains_key(*name)) {
                    copy_row(&current[name], self.snapshot.tensor(name), channel)?;
                    for moment in ["m", "v"] {
                        let moment_name = format!("adam.{moment}.{name}");
                        if let Some(target) = optimizer_state.get(&moment_name) {
                            copy_row(target, self.snapshot.tensor(&moment_name), channel)?;
                        }
                    }
                }
                self.held[index][channel as usize] = true;
            }
            Ok(())
        })?;
        Ok(count)
    }

    /// Gradients of the preservation loss (mean cross-entropy over the loss part, evaluation
    /// mode) with respect to the given quantized weights of each layer.
    fn preservation_gradients(
        &self,
        network: &Network,
        quantized: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        let leaves: Vec<Tensor> = quantized
            .iter()
            .map(|q| Ok(q.f_detach()?.set_requires_grad(true)))
            .collect::<Result<_>>()?;
        let mut totals: Vec<Tensor> = leaves
            .iter()
            .map(|leaf| leaf.f_zeros_like())
            .collect::<Result<_, _>>()?;
        let positions: Vec<usize> = (0..self.loss_part.len()).collect();
        let count = self.loss_part.len().max(1) as f64;
        for chunk in positions.chunks(self.eval_batch_size.max(1)) {
            let (inputs, labels) = self.loss_part.tensors(chunk, &self.input, None)?;
            let (inputs, labels) = (
                inputs.f_to_device(self.device)?,
                labels.f_to_device(self.device)?,
            );
            let (logits, _) =
                network.forward_with_taps(&inputs, false, Weights::Given(&leaves), &[])?;
            let loss = logits
                .f_cross_entropy_loss::<Tensor>(&labels, None, Reduction::Sum, -100, 0.0)?
                .f_div_scalar(count)?;
            let references: Vec<&Tensor> = leaves.iter().collect();
            let gradients = Tensor::f_run_backward(&[&loss], &references, false, false)?;
            for (total, gradient) in totals.iter_mut().zip(gradients) {
                *total = total.f_add(&gradient)?;
            }
        }
        Ok(totals)
    }

    /// The final gate: puts the model in its stored form and keeps it only if it meets the
    /// budget, on the f32 path and, for an image classifier, on the integer path as a
    /// microcontroller runs it (`metadata` describes its file). Otherwise it returns to the last
    /// safe snapshot, and when that one fails too (a snapshot is measured in f32 when it is
    /// taken), to the earlier ones in turn, newest first; when none meets the budget, the last
    /// snapshot stays and the certificate says the budget is not met (as when no snapshot was
    /// ever measured safe). Returns the certificate.
    pub fn final_gate(
        &mut self,
        learner: &mut Learner,
        data: &TrainValidation,
        metadata: &Metadata,
    ) -> Result<Certificate> {
        let mut judged = self.judge(learner, data, metadata)?;
        let mut restored = false;
        if !judged.met && self.snapshot_safe {
            restored = true;
            let mut last = None;
            for snapshot in std::iter::once(&self.snapshot).chain(self.earlier.iter().rev()) {
                learner.restore(snapshot)?;
                judged = self.judge(learner, data, metadata)?;
                if judged.met {
                    break;
                }
                last.get_or_insert(judged.clone());
            }
            if let Some(last) = last.filter(|_| !judged.met) {
                tracing::warn!("no safe snapshot meets the budget in its stored form");
                learner.restore(&self.snapshot)?;
                prepare_for_storage(&learner.network)?;
                judged = last;
            }
        }
        let Judged {
            preservation,
            validation,
            mut integer,
            met,
        } = judged;
        if integer.is_none() {
            integer = self.integer_figures(learner, data, metadata)?;
        }
        let budget = self.controller.budget;
        let loss_part = evaluate(
            &learner.network,
            &self.loss_part,
            &self.input,
            true,
            self.eval_batch_size,
            self.device,
        )?;
        Ok(Certificate {
            budget,
            final_preservation: round_figure(preservation),
            final_loss_part: Some(round_figure(figure(budget.metric, &loss_part))),
            parts: (self.audit_indices.len(), self.loss_part.len()),
            final_validation: round_figure(validation),
            met,
            restored_last_safe_snapshot: restored,
            events: self.controller.events,
            pruned_channels: self.pruned_channels,
            preservation_set_sha256: self.sources.0.clone(),
            reference_sha256: self.sources.1.clone(),
            target: None,
            integer,
        })
    }

    /// Puts the network in its stored form and measures it against the budget: the f32 path,
    /// then (when that is met) the integer path.
    fn judge(
        &self,
        learner: &Learner,
        data: &TrainValidation,
        metadata: &Metadata,
    ) -> Result<Judged> {
        prepare_for_storage(&learner.network)?;
        let (preservation, validation) = self.measure(learner, data)?;
        let f32_met = self.controller.budget.is_met(preservation, validation);
        let integer = if f32_met {
            self.integer_figures(learner, data, metadata)?
        } else {
            None
        };
        Ok(Judged {
            preservation,
            validation,
            met: f32_met && integer.as_ref().is_none_or(|figures| figures.met),
            integer,
        })
    }

    /// The integer path's figures of the network as it is (an image classifier measured in
    /// accuracy; `None` otherwise): its file's model calibrated on training images, then the
    /// audit part and validation through it.
    fn integer_figures(
        &self,
        learner: &Learner,
        data: &TrainValidation,
        metadata: &Metadata,
    ) -> Result<Option<IntegerFigures>> {
        let (Split::Images(train), BudgetMetric::Accuracy) =
            (&data.train, self.controller.budget.metric)
        else {
            return Ok(None);
        };
        let model = sgsc_runtime::Model::new(to_packed(&learner.network, metadata.clone())?)?;
        let ranges: Vec<f64> = calibration_ranges(&model, train, CALIBRATION_IMAGES)?
            .into_iter()
            .map(round_range)
            .collect();
        let integer = integer_model(&model, &ranges, self.activation_bits)?;
        let preservation = evaluate_integer(&integer, &self.audit)?.evaluation.accuracy;
        let on_validation = evaluate_integer(&integer, &data.validation)?;
        tracing::info!(
            "integer path on validation: {:.2}%; codes at the ends of their range: {}",
            100.0 * on_validation.evaluation.accuracy,
            on_validation.saturation_line()
        );
        let validation = on_validation.evaluation.accuracy;
        Ok(Some(IntegerFigures {
            activation_bits: self.activation_bits,
            ranges,
            preservation: round_figure(preservation),
            validation: round_figure(validation),
            met: self.controller.budget.is_met(preservation, validation),
        }))
    }

    /// A certificate of the run so far with every figure at the longest it can print as
    /// (6 decimals: see [`crate::pack::export::round_figure`]), for the size the target law steers on: the final
    /// certificate's JSON is at most as long, and differs from this one only in those digits.
    pub fn certificate_draft(&self, target: Option<i64>) -> Certificate {
        let longest = match self.controller.budget.metric {
            BudgetMetric::Accuracy => LONGEST_ACCURACY,
            BudgetMetric::Loss => LONGEST_LOSS,
        };
        Certificate {
            budget: self.controller.budget,
            final_preservation: longest,
            final_loss_part: Some(longest),
            parts: (self.audit_indices.len(), self.loss_part.len()),
            final_validation: longest,
            met: false,
            restored_last_safe_snapshot: false,
            events: self.controller.events,
            pruned_channels: self.pruned_channels,
            preservation_set_sha256: self.sources.0.clone(),
            reference_sha256: self.sources.1.clone(),
            target: target.map(|target_bytes| TargetOutcome {
                target_bytes,
                met: false,
            }),
            integer: self.integer_draft.map(|layers| IntegerFigures {
                activation_bits: self.activation_bits,
                ranges: vec![LONGEST_RANGE; layers],
                preservation: longest,
                validation: longest,
                met: false,
            }),
        }
    }

    /// Whether the model as it is now meets the budget itself (the final gate's judgement,
    /// without changing anything).
    pub fn final_figures_met(&self, learner: &Learner, data: &TrainValidation) -> Result<bool> {
        let (preservation, validation) = self.measure(learner, data)?;
        Ok(self.controller.budget.is_met(preservation, validation))
    }

    /// Whether the snapshot (what a roll-back returns to) was measured within the budget
    /// itself.
    pub fn snapshot_within_budget(&self) -> bool {
        self.snapshot_within_budget
    }

    /// The snapshot the final gate would fall back to, if one was measured within budget.
    pub fn safe_snapshot(&self) -> Option<&Snapshot> {
        self.snapshot_safe.then_some(&self.snapshot)
    }
}

/// The figure of `evaluation` that a budget in `metric` reads.
fn figure(metric: BudgetMetric, evaluation: &Evaluation) -> f64 {
    match metric {
        BudgetMetric::Accuracy => evaluation.accuracy,
        BudgetMetric::Loss => evaluation.loss,
    }
}

/// For each row (first dimension), whether `a` and `b` differ anywhere in it.
fn changed_rows(a: &Tensor, b: &Tensor) -> Result<Vec<bool>> {
    let differs = a
        .f_ne_tensor(b)?
        .f_reshape([a.size()[0], -1])?
        .f_any_dim(1, false)?
        .f_to_device(Device::Cpu)?;
    Ok(Vec::<bool>::try_from(&differs)?)
}

/// Copies row `row` of `source` into `target` (in place).
fn copy_row(target: &Tensor, source: Option<&Tensor>, row: i64) -> Result<()> {
    let source = source
        .ok_or_else(|| Error::Training("the safe snapshot lacks a tensor to restore".into()))?;
    target
        .f_narrow(0, row, 1)?
        .f_copy_(&source.f_narrow(0, row, 1)?)?;
    Ok(())
}
