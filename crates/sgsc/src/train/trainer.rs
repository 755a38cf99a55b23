//! The training loop, the same for every mode: batches, steps, validation, metrics, checkpoints,
//! resume, and roll-back to the last good state when the loss stops being finite. Gamma comes
//! from the run's [`PressureLaw`]; with a size target the loop measures the stored size every
//! `quant.control_every` steps and keeps the best state within the target.

use super::checkpoint::{self, CheckpointInfo};
use super::controller::BudgetMetric;
use super::evaluate::{evaluate, Evaluation};
use super::learner::{Learner, Snapshot, StepReport, StepTerms, Teacher};
use super::metrics::MetricsLog;
use super::objective::warmup_fraction;
use super::pressure::{LawState, PressureLaw, SizeDecision};
use super::safety::{load_reference, Certificate, CheckStage, Guard};
use super::Mode;
use crate::codegen::measured_size;
use crate::config::ExperimentConfig;
use crate::data::sampler::{step_rng, EpochSampler};
use crate::data::{load_train_validation, Tensors, TrainValidation};
use crate::error::{Error, Result};
use crate::models::Network;
use crate::pack::export::{metadata, stored_bytes, PackedSummary, LONGEST_ACCURACY, LONGEST_LOSS};
use crate::size::payload_estimate;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Tensor};

/// Roll-backs in a row after which a run gives up.
const MAX_CONSECUTIVE_ROLLBACKS: u32 = 5;

/// Where and how a run trains.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// What to train.
    pub mode: Mode,
    /// Folder for the config copy, metrics, checkpoint and summary.
    pub out_dir: PathBuf,
    /// Data folders to search, in order.
    pub data_dirs: Vec<PathBuf>,
    /// Continue from `out_dir`'s checkpoint if there is one.
    pub resume: bool,
    /// Where tensors live.
    pub device: Device,
    /// Show a progress bar.
    pub progress: bool,
    /// Stop (with a checkpoint) after this step of the schedule, as an interruption would; a
    /// later run with `resume` continues exactly where this one stopped (the safety guard's
    /// snapshot, floors and controller included).
    pub stop_at: Option<i64>,
}

/// A finished run: the trained learner, its data and its last validation figures.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Network and optimizer after the last step.
    pub learner: Learner,
    /// The train/validation split the run used.
    pub data: TrainValidation,
    /// Validation figures after the last step.
    pub validation: Evaluation,
    /// Seconds this invocation spent (resumed runs count only their own part).
    pub wall_seconds: f64,
    /// Roll-backs after non-finite losses.
    pub rollbacks: u32,
    /// Steps completed (less than the config's `steps` when `stop_at` cut the run short).
    pub steps_done: i64,
    /// The safety figures of a `safe` run that finished.
    pub certificate: Option<Certificate>,
}

/// Path of the checkpoint inside a run folder.
pub fn checkpoint_path(out_dir: &Path) -> PathBuf {
    out_dir.join("checkpoint.safetensors")
}

/// Trains `config` in `options.mode`, writing everything under `options.out_dir`.
pub fn train(config: &ExperimentConfig, options: &RunOptions) -> Result<TrainOutcome> {
    let started = Instant::now();
    let mut run = Run::start(config, options)?;
    let (steps, last_step) = (config.train.steps, run.last_step());
    for step in run.start_step..last_step {
        let Some(report) = run.step(step)? else {
            continue; // rolled back after a non-finite loss
        };
        let done = step + 1;
        run.show_progress(done, &report);
        if run.control_due(done) {
            run.control(done)?;
        }
        if run.check_due(done) {
            run.check(done)?;
        }
        if done % config.train.eval_every == 0 || done == steps {
            run.evaluate(done, step, &report)?;
        }
        if done % config.train.checkpoint_every == 0 || done == last_step {
            run.save_checkpoint(done)?;
        }
    }
    run.finish(last_step, started)
}

/// The frozen reference of distillation on the training batches.
#[derive(Debug)]
struct Distiller {
    reference: Network,
    weight: f64,
    temperature: f64,
}

/// The best state within the size target so far: its validation figure (higher is better:
/// accuracy, or minus a language model's loss), its file length, and its tensors.
#[derive(Debug)]
struct Best {
    record: BestRecord,
    snapshot: Snapshot,
}

/// What a checkpoint records of the best state besides its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct BestRecord {
    step: i64,
    score: f64,
    bytes: i64,
}

/// What a checkpoint records of the pressure law and the target's best state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PressureRecord {
    law: LawState,
    best: Option<(BestRecord, i64)>,
}

/// Checkpoint prefix of the best state's tensors.
const BEST_PREFIX: &str = "best.";

/// A run in progress: its data, learner and guard, and the loop's bookkeeping.
struct Run<'a> {
    config: &'a ExperimentConfig,
    options: &'a RunOptions,
    data: TrainValidation,
    learner: Learner,
    guard: Option<Guard>,
    /// Sets gamma.
    law: PressureLaw,
    /// The reference that `distill` and `safe` distil from on every training batch.
    teacher: Option<Distiller>,
    /// With a target: the best state within it so far.
    best: Option<Best>,
    metrics: MetricsLog,
    progress: ProgressBar,
    sampler: EpochSampler,
    /// The first step this invocation takes (after a resume, the checkpoint's).
    start_step: i64,
    /// Where a non-finite loss rolls back to.
    last_good: Snapshot,
    rollbacks: u32,
    consecutive_rollbacks: u32,
    /// Steps since the last evaluation.
    window: Window,
    /// The last validation figures, and the size at that evaluation.
    validation: Option<Evaluation>,
    /// Validation figures of the model as it is now and the step after which they were measured
    /// (by an evaluation, or by a check that changed nothing); `None` once the model changed
    /// without a new measurement. Whatever needs them after the same step takes them from here.
    measured: Option<(i64, Evaluation)>,
    last_size: Option<i64>,
}

impl<'a> Run<'a> {
    /// Loads the data, builds the learner at its starting weights (or resumes it from the run
    /// folder's checkpoint), sets up the guard of a `safe` run, and opens the metrics log.
    fn start(config: &'a ExperimentConfig, options: &'a RunOptions) -> Result<Self> {
        std::fs::create_dir_all(&options.out_dir).map_err(|e| Error::io(&options.out_dir, e))?;
        let data = load_train_validation(&config.data, &config.model.input, &options.data_dirs)?;
        let mut learner = Learner::new(config, options.mode, options.device)?;
        data.check_outputs(&config.data, learner.network.output_features as usize)?;
        load_starting_weights(&learner, config, options)?;
        let resumed = resume(&mut learner, config, options)?;
        let start_step = resumed.as_ref().map_or(0, |(info, _)| info.step);
        crate::files::write_atomically(
            &options.out_dir.join("config.toml"),
            config.to_toml().as_bytes(),
        )?;
        let metrics = MetricsLog::open(&options.out_dir.join("metrics.jsonl"), start_step)?;
        let mut guard = match options.mode {
            Mode::Safe => Some(Guard::new(config, &data, &learner, options.device)?),
            Mode::Baseline | Mode::Unsafe | Mode::Distill => None,
        };
        let target = config
            .quant
            .target_bytes
            .filter(|_| options.mode.quantizes());
        let reach_step = (config.quant.target_reach * config.train.steps as f64).round() as i64;
        let mut law = PressureLaw::new(
            config.quant.gamma,
            target,
            reach_step,
            guard.as_ref().map(Guard::breach_response),
        );
        let teacher = teacher(config, options)?;
        if let (Some(guard), Some((info, tensors))) = (guard.as_mut(), &resumed) {
            match &info.guard {
                Some(json) => {
                    guard.load_state(&learner, tensors, json, &checkpoint_path(&options.out_dir))?
                }
                None => tracing::warn!(
                    "the checkpoint has no guard state (an older sgsc): the guard starts afresh"
                ),
            }
        }
        if let Some(guard) = &guard {
            guard.log_roll_back_rule();
        }
        let mut best = None;
        if let Some((info, tensors)) = &resumed {
            if let Some(json) = &info.pressure {
                best = resume_pressure(&mut law, json, tensors, options.device)?;
            }
        }
        drop(resumed);
        let sampler =
            EpochSampler::new(data.train.len(), config.train.batch_size, config.train.seed);
        let last_good = learner.snapshot()?;
        Ok(Run {
            config,
            options,
            data,
            learner,
            guard,
            law,
            teacher,
            best,
            metrics,
            progress: progress_bar(options.progress, config.train.steps, start_step),
            sampler,
            start_step,
            last_good,
            rollbacks: 0,
            consecutive_rollbacks: 0,
            window: Window::default(),
            validation: None,
            measured: None,
            last_size: None,
        })
    }

    /// The step this invocation stops after: the last of the schedule, or `stop_at`.
    fn last_step(&self) -> i64 {
        let steps = self.config.train.steps;
        self.options
            .stop_at
            .map_or(steps, |stop| stop.clamp(self.start_step, steps))
    }

    /// One optimisation step on the batch of `step`; `None` when its loss was not finite and
    /// the model rolled back to the last good state (an error after too many in a row).
    fn step(&mut self, step: i64) -> Result<Option<StepReport>> {
        let step_started = Instant::now();
        let positions = self.sampler.positions(step).to_vec();
        let mut rng = step_rng(self.config.train.seed, step);
        let (inputs, labels) =
            self.data
                .train
                .tensors(&positions, &self.config.data.input, Some(&mut rng))?;
        let device = self.options.device;
        let (inputs, labels) = (inputs.f_to_device(device)?, labels.f_to_device(device)?);
        let guidance = self
            .guard
            .as_mut()
            .map(|guard| guard.guidance(step))
            .transpose()?;
        let teacher = match &self.teacher {
            Some(distiller) => Some(Teacher {
                logits: tch::no_grad(|| distiller.reference.forward(&inputs, false, false))?,
                weight: distiller.weight,
                temperature: distiller.temperature,
            }),
            None => None,
        };
        let terms = StepTerms {
            gamma: self.gamma(step),
            teacher,
            guidance,
        };
        let report = self.learner.step(&inputs, &labels, step, &terms)?;
        if !report.finite {
            self.roll_back(step, &report)?;
            return Ok(None);
        }
        self.consecutive_rollbacks = 0;
        if let Some(guard) = self.guard.as_mut() {
            guard.after_step(&self.learner, step)?;
        }
        // One prediction per image, or per character of a language model's windows.
        let predictions = labels.size()[0] as usize;
        self.window
            .add(&report, predictions, step_started.elapsed().as_secs_f64());
        Ok(Some(report))
    }

    /// Rolls the model back to the last good state after a non-finite loss at `step`.
    fn roll_back(&mut self, step: i64, report: &StepReport) -> Result<()> {
        self.rollbacks += 1;
        self.consecutive_rollbacks += 1;
        self.metrics.write(&json!({"step": step + 1, "event": "rollback", "reason": "non-finite loss", "loss": format!("{}", report.loss)}))?;
        tracing::warn!(
            "step {}: non-finite loss, rolled back to the last good state",
            step + 1
        );
        if self.consecutive_rollbacks > MAX_CONSECUTIVE_ROLLBACKS {
            return Err(Error::Training(format!(
                "the loss was not finite {} times in a row after rolling back; \
                 lower the learning rates or check the data",
                self.consecutive_rollbacks
            )));
        }
        self.learner.restore(&self.last_good)
    }

    /// Moves the progress bar every ten steps (and at the end).
    fn show_progress(&self, done: i64, report: &StepReport) {
        if done % 10 == 0 || done == self.config.train.steps {
            self.progress.set_position(done as u64);
            let size = self
                .last_size
                .map_or("-".to_string(), |bytes| format!("{bytes} B"));
            self.progress.set_message(format!(
                "loss {:.3} acc {:.1}% Q {:.2} bits/weight, size at last eval {size}",
                report.loss,
                100.0 * self.window.last_accuracy(report),
                report.size_term
            ));
        }
    }

    /// Gamma of the size term at `step`: the law's, through the config's warm-up ramp (0 in
    /// baseline mode).
    fn gamma(&self, step: i64) -> f64 {
        if !self.options.mode.quantizes() {
            return 0.0;
        }
        self.law.gamma() * warmup_fraction(self.config.quant.gamma_warmup_steps, step)
    }

    /// True when a run with a size target measures its stored size after step `done`: at its
    /// control points, and after every step while approaching the target.
    fn control_due(&self, done: i64) -> bool {
        self.law.target().is_some() && (self.is_control_point(done) || self.law.approaching())
    }

    /// True at the steps where the law may change gamma.
    fn is_control_point(&self, done: i64) -> bool {
        done % self.config.quant.control_every == 0
    }

    /// The size the target counts (`quant.target_measure`) of the file the current state would
    /// make, with every figure of its metadata at its longest (so the file, once its figures are
    /// known, is at most this long).
    fn stored_bytes(&self) -> Result<i64> {
        let certificate = match &self.guard {
            Some(guard) => Some(
                serde_json::to_value(guard.certificate_draft(self.law.target()))
                    .map_err(|e| Error::Training(e.to_string()))?,
            ),
            None => None,
        };
        let summary = PackedSummary {
            mode: self.options.mode.name().into(),
            seed: self.config.train.seed,
            steps: self.config.train.steps,
            gamma: Some(self.config.quant.gamma),
            test_accuracy: LONGEST_ACCURACY,
            test_loss: LONGEST_LOSS,
            target_bytes: self.law.target(),
        };
        let metadata = metadata(
            self.config,
            &self.data.description(),
            certificate,
            Some(summary.to_json()),
        )?;
        let bytes = stored_bytes(&self.learner.network, &self.config.model, metadata)?;
        Ok(measured_size(&bytes, self.config.quant.target_measure)? as i64)
    }

    /// Measures the stored size after step `done` and lets the law act on it.
    fn control(&mut self, done: i64) -> Result<()> {
        let bytes = self.stored_bytes()?;
        let control_point = self.is_control_point(done);
        match self.law.observe_size(bytes, done, control_point) {
            SizeDecision::StartFineTune => {
                self.learner.cap_bits()?;
                tracing::info!(
                    "step {done}: {bytes} B, within the {} B steered to: fine-tuning with the bit depths held",
                    self.law.steering_target().unwrap_or_default()
                );
            }
            SizeDecision::ResumeCompress => {
                self.learner.release_bits();
                tracing::info!("step {done}: {bytes} B, past the target again: compressing");
            }
            SizeDecision::Continue => {}
        }
        if control_point || self.law.phase() == super::pressure::Phase::FineTune {
            self.metrics.write(&json!({"event": "size", "step": done, "bytes": bytes, "gamma": self.law.gamma(), "phase": self.law.phase()}))?;
        }
        Ok(())
    }

    /// Offers the current state, measured at `score` (higher is better), as the best within
    /// the target: kept when within it and better than (or as good as) the best so far.
    fn offer_best(&mut self, step: i64, score: f64) -> Result<()> {
        let Some(target) = self.law.target() else {
            return Ok(());
        };
        let bytes = self.stored_bytes()?;
        let better = self
            .best
            .as_ref()
            .is_none_or(|best| score >= best.record.score);
        if bytes <= target && better {
            self.best = Some(Best {
                record: BestRecord { step, score, bytes },
                snapshot: self.learner.snapshot()?,
            });
        }
        Ok(())
    }

    /// True when the guard of a `safe` run checks the budget after step `done`.
    fn check_due(&self, done: i64) -> bool {
        let check_every = self
            .config
            .safety
            .as_ref()
            .map_or(i64::MAX, |safety| safety.check_every);
        self.guard.is_some() && done % check_every == 0
    }

    /// The guard's budget check after step `done`, logged.
    fn check(&mut self, done: i64) -> Result<()> {
        let Some(guard) = self.guard.as_mut() else {
            return Ok(());
        };
        let lr_factor = self
            .learner
            .schedule_factor(self.config.train.schedule, done);
        let stage = if self.law.searching() || self.law.settling(done) {
            // On the glide to a size searched for, as after arriving at any size: a breach is
            // a dip, and only a state within the budget itself becomes the snapshot (the one a
            // refusal returns to, which must be safe).
            CheckStage::Settling
        } else if !self.law.judges_checks() {
            CheckStage::Descent
        } else if self.law.gamma() == 0.0 && !self.law.state().yielded {
            // At the target. Once the law has yielded, the run fine-tunes the state it returned
            // to, and its checks are judged as any others.
            CheckStage::Holding
        } else {
            CheckStage::Compressing
        };
        let check = guard.check(&mut self.learner, &self.data, done, lr_factor, stage)?;
        let budget = guard.budget();
        let snapshot_within_budget = guard.snapshot_within_budget();
        self.measured = check.validation.map(|evaluation| (done, evaluation));
        if stage.judged() {
            self.law.observe_check(check.within);
        }
        if self.law.target().is_some() && matches!(check.action, "restore" | "rollback") {
            // The budget undid compression at this size: fine-tune the state returned to.
            self.law.yield_target();
            self.learner.cap_bits()?;
            tracing::info!(
                "step {done}: the budget refused {} B; fine-tuning the state it returned to",
                self.law.state().refused.unwrap_or_default()
            );
            if check.action == "rollback" && snapshot_within_budget {
                // Back at a state measured within the budget itself: search from here at once.
                self.advance(done)?;
            }
        } else if check.action == "safe"
            && budget.is_met(check.preservation_accuracy, check.validation_accuracy)
            && (self.law.state().yielded || stage == CheckStage::Holding)
        {
            self.advance(done)?;
        }
        if check.pruned_channels > 0 {
            // The roll-back point for non-finite losses must have the network's shapes, and
            // the best state within the target cannot be returned to across a pruning.
            self.last_good = self.learner.snapshot()?;
            self.best = None;
        }
        if check.action == "safe"
            && budget.is_met(check.preservation_accuracy, check.validation_accuracy)
        {
            self.offer_best(done, score(budget.metric, check.validation_accuracy))?;
        }
        self.metrics.write(&json!({"event": "check", "mode": self.options.mode.name(), "check": check, "step": done}))?;
        if check.action != "safe" || check.pruned_channels > 0 {
            let metric = budget.metric;
            tracing::info!(
                "step {done}: preservation {}, validation {}: {} ({} channels restored, {} removed)",
                metric.show(check.preservation_accuracy),
                metric.show(check.validation_accuracy),
                check.action,
                check.restored_channels,
                check.pruned_channels
            );
        }
        Ok(())
    }

    /// The step by which a glide starting after step `done` reaches its size (the share
    /// `quant.target_reach` of the steps left), if enough steps are left after it to settle
    /// there and be judged once.
    fn search_reach_step(&self, done: i64) -> Option<i64> {
        let check_every = self.config.safety.as_ref()?.check_every;
        let left = self.config.train.steps - done;
        let glide = ((left as f64 * self.config.quant.target_reach).round() as i64).max(1);
        (left >= glide + 2 * check_every).then_some(done + glide)
    }

    /// After step `done` the model is within the budget itself, at a size the law yielded at or
    /// searched for: try a smaller one, between it and the largest size refused, while steps
    /// are left for it ([`PressureLaw::advance`]).
    fn advance(&mut self, done: i64) -> Result<()> {
        let Some(reach_step) = self.search_reach_step(done) else {
            return Ok(());
        };
        let bytes = self.stored_bytes()?;
        if self.law.advance(bytes, done, reach_step) {
            self.learner.release_bits();
            let aim = self.law.steering_target().unwrap_or_default();
            tracing::info!(
                "step {done}: within the budget at {bytes} B; steering to {aim} B (refused: {} B)",
                self.law.state().refused.unwrap_or_default()
            );
            self.metrics
                .write(&json!({"event": "advance", "step": done, "bytes": bytes, "aim": aim}))?;
        }
        Ok(())
    }

    /// Validation figures of the model as it is after step `done`: those measured then if the
    /// model has not changed since, else measured now.
    fn validation_after(&self, done: i64) -> Result<Evaluation> {
        match self.measured {
            Some((step, evaluation)) if step == done => Ok(evaluation),
            _ => self.validate(),
        }
    }

    /// Validation figures of the model as it is now.
    fn validate(&self) -> Result<Evaluation> {
        evaluate(
            &self.learner.network,
            &self.data.validation,
            &self.config.data.input,
            self.options.mode.quantizes(),
            self.config.train.eval_batch_size,
            self.options.device,
        )
    }

    /// Evaluates on validation after step `done` (the batch of `step`, which `report`
    /// describes): writes the metrics line, logs it, and makes a finite state the roll-back point.
    fn evaluate(&mut self, done: i64, step: i64, report: &StepReport) -> Result<()> {
        let config = self.config;
        let evaluation = self.validation_after(done)?;
        let size = payload_estimate(&self.learner.network, &self.learner.original)?;
        let headline = size.headline(self.options.mode.quantizes());
        let window = &self.window;
        self.metrics.write(&json!({
            "step": done,
            "mode": self.options.mode.name(),
            "train_loss": window.mean_loss(),
            "train_accuracy": window.accuracy(),
            "distillation_loss": window.mean(window.distillation_sum),
            "preservation_loss": window.mean(window.preservation_sum),
            "size_term": report.size_term,
            "gamma": self.gamma(step),
            "learning_rate_factor": self.learner.schedule_factor(config.train.schedule, step),
            "validation_loss": evaluation.loss,
            "validation_accuracy": evaluation.accuracy,
            "size_bytes": headline.bytes,
            "size_kind": headline.kind,
            "bits_per_weight": headline.bits_per_weight,
            "channels_alive": size.layers.iter().map(|layer| layer.alive).collect::<Vec<_>>(),
            "ms_per_step": window.ms_per_step(),
            "rollbacks": self.rollbacks,
        }))?;
        let line = format!(
            "step {done:>6}  val acc {:.2}%  val loss {:.4}  {} {} B  {:.2} bits/weight  {:.0} ms/step",
            100.0 * evaluation.accuracy,
            evaluation.loss,
            headline.kind,
            headline.bytes,
            headline.bits_per_weight,
            window.ms_per_step()
        );
        if self.progress.is_hidden() {
            tracing::info!("{line}");
        } else {
            self.progress.println(line);
        }
        self.window = Window::default();
        if evaluation.loss.is_finite() {
            self.last_good = self.learner.snapshot()?;
        }
        if self.guard.is_none() && evaluation.loss.is_finite() {
            // A guarded run offers its states at checks within budget instead.
            self.offer_best(done, validation_score(config, &evaluation))?;
        }
        self.validation = Some(evaluation);
        self.measured = Some((done, evaluation));
        self.last_size = Some(headline.bytes);
        Ok(())
    }

    /// Writes the checkpoint after step `step` (the guard's state included), atomically.
    fn save_checkpoint(&self, step: i64) -> Result<()> {
        let mut tensors = self.learner.state();
        let guard = match &self.guard {
            Some(guard) => {
                let (guard_tensors, json) = guard.state()?;
                tensors.extend(guard_tensors);
                Some(json)
            }
            None => None,
        };
        if let Some(best) = &self.best {
            tensors.extend(
                best.snapshot
                    .tensors()
                    .iter()
                    .map(|(name, tensor)| (format!("{BEST_PREFIX}{name}"), tensor.shallow_clone())),
            );
        }
        let pressure = PressureRecord {
            law: self.law.state(),
            best: self
                .best
                .as_ref()
                .map(|best| (best.record, best.snapshot.steps_taken())),
        };
        let info = CheckpointInfo {
            format: checkpoint::FORMAT.into(),
            mode: self.options.mode.name().into(),
            step,
            config: self.config.to_toml(),
            original_weights: self.learner.original.weights,
            guard,
            pressure: Some(
                serde_json::to_string(&pressure).map_err(|e| Error::Training(e.to_string()))?,
            ),
            data: self.data.description(),
        };
        checkpoint::save(&checkpoint_path(&self.options.out_dir), &info, &tensors)
    }

    /// Ends the run after `last_step`: the guard's final gate (when the schedule is complete),
    /// the last validation figures, and the outcome.
    fn finish(mut self, last_step: i64, started: Instant) -> Result<TrainOutcome> {
        self.progress.finish_and_clear();
        if last_step == self.config.train.steps {
            self.settle_on_target(last_step)?;
        }
        let certificate = match self.guard.as_mut() {
            Some(guard) if last_step == self.config.train.steps => {
                let metadata = metadata(self.config, &self.data.description(), None, None)?;
                let certificate = guard.final_gate(&mut self.learner, &self.data, &metadata)?;
                self.metrics.write(
                    &json!({"event": "final_gate", "step": last_step, "certificate": certificate}),
                )?;
                self.save_checkpoint(last_step)?;
                Some(certificate)
            }
            _ => None,
        };
        let validation = match self.validation.take() {
            Some(evaluation) => evaluation,
            None => self.validate()?,
        };
        Ok(TrainOutcome {
            learner: self.learner,
            data: self.data,
            validation,
            wall_seconds: started.elapsed().as_secs_f64(),
            rollbacks: self.rollbacks,
            steps_done: last_step,
            certificate,
        })
    }
}

impl Run<'_> {
    /// At the end of a run with a target: the final state, if within the target (and, guarded,
    /// within budget), competes with the best state kept so far; the better one stays. When no
    /// state was within the target, the final one stays (for `safe`, the final gate then keeps
    /// the last safe snapshot if the final state is outside the budget).
    fn settle_on_target(&mut self, step: i64) -> Result<()> {
        if self.law.target().is_none() {
            return Ok(());
        }
        let evaluation = self.validation_after(step)?;
        let within_budget = match &self.guard {
            Some(guard) => guard.final_figures_met(&self.learner, &self.data)?,
            None => true,
        };
        if within_budget && evaluation.loss.is_finite() {
            self.offer_best(step, validation_score(self.config, &evaluation))?;
        }
        if let Some(best) = self.best.take() {
            if best.record.step != step {
                tracing::info!(
                    "keeping the best state within the target: step {} ({} B)",
                    best.record.step,
                    best.record.bytes
                );
                self.learner.restore(&best.snapshot)?;
                self.validation = Some(self.validate()?);
                self.measured = None;
            }
            self.best = Some(best);
        }
        Ok(())
    }
}

/// A figure in `metric` as a score where higher is better (a loss counts negatively).
fn score(metric: BudgetMetric, figure: f64) -> f64 {
    match metric {
        BudgetMetric::Accuracy => figure,
        BudgetMetric::Loss => -figure,
    }
}

/// The score of a validation `evaluation`: accuracy, or for a language model minus its loss.
fn validation_score(config: &ExperimentConfig, evaluation: &Evaluation) -> f64 {
    if config.data.is_text() {
        score(BudgetMetric::Loss, evaluation.loss)
    } else {
        score(BudgetMetric::Accuracy, evaluation.accuracy)
    }
}

/// The reference that `distill` and `safe` runs distil from on every training batch (none when
/// `safety.train_distillation_weight` is 0).
fn teacher(config: &ExperimentConfig, options: &RunOptions) -> Result<Option<Distiller>> {
    if !options.mode.distils() {
        return Ok(None);
    }
    let safety = config.safety.as_ref().ok_or_else(|| Error::Config {
        path: "<config>".into(),
        message: format!(
            "the {} mode needs a [safety] section (its reference)",
            options.mode
        ),
    })?;
    if safety.train_distillation_weight <= 0.0 {
        return Ok(None);
    }
    Ok(Some(Distiller {
        reference: load_reference(&safety.reference, config, options.device)?,
        weight: safety.train_distillation_weight,
        temperature: safety.temperature,
    }))
}

/// Continues the pressure law and the target's best state from a checkpoint's record.
fn resume_pressure(
    law: &mut PressureLaw,
    json: &str,
    tensors: &HashMap<String, Tensor>,
    device: Device,
) -> Result<Option<Best>> {
    let record: PressureRecord = serde_json::from_str(json)
        .map_err(|e| Error::Training(format!("saved pressure state: {e}")))?;
    law.set_state(record.law);
    let Some((best, steps_taken)) = record.best else {
        return Ok(None);
    };
    let saved = tensors
        .iter()
        .filter_map(|(name, tensor)| {
            name.strip_prefix(BEST_PREFIX)
                .map(|name| Ok((name.to_string(), tensor.f_to_device(device)?)))
        })
        .collect::<Result<HashMap<_, _>>>()?;
    Ok(Some(Best {
        record: best,
        snapshot: Snapshot::from_tensors(saved, steps_taken),
    }))
}

/// Loads the weights a run starts from, where it does not start from scratch: `init_from`, or
/// a `distill` or `safe` run's reference; the quantizers start afresh from them.
fn load_starting_weights(
    learner: &Learner,
    config: &ExperimentConfig,
    options: &RunOptions,
) -> Result<()> {
    let safety_reference = config
        .safety
        .as_ref()
        .filter(|_| options.mode.distils())
        .map(|safety| &safety.reference);
    if let Some(start) = config.train.init_from.as_ref().or(safety_reference) {
        let trained = load_reference(start, config, options.device)?;
        learner
            .network
            .load_state(&trained.state().into_iter().collect())?;
        learner
            .network
            .reset_quantizers(config.quant.initial_bit_depth)?;
        tracing::info!("starting from the weights of {}", start.display());
    }
    Ok(())
}

/// The checkpoint of `options.out_dir`, loaded into `learner`, when the run resumes and one
/// exists: its record and tensors (the guard loads its own from them). A checkpoint of another
/// mode or config is an error.
fn resume(
    learner: &mut Learner,
    config: &ExperimentConfig,
    options: &RunOptions,
) -> Result<Option<(CheckpointInfo, HashMap<String, Tensor>)>> {
    let checkpoint_file = checkpoint_path(&options.out_dir);
    if !(options.resume && checkpoint_file.exists()) {
        return Ok(None);
    }
    let (info, tensors) = checkpoint::load(&checkpoint_file)?;
    let saved_config = ExperimentConfig::parse(&info.config, &checkpoint_file)?;
    if info.mode != options.mode.name() || &saved_config != config {
        return Err(Error::Checkpoint {
            path: checkpoint_file,
            message: "was written by a different mode or config; resume with the same ones or use a new --out".into(),
        });
    }
    learner.load_state(&tensors, info.step)?;
    tracing::info!("resuming from step {}", info.step);
    Ok(Some((info, tensors)))
}

/// A progress bar over `steps`, at `start_step` (hidden unless `show`).
fn progress_bar(show: bool, steps: i64, start_step: i64) -> ProgressBar {
    let progress = if show {
        ProgressBar::new(steps as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("static template"),
    );
    progress.set_position(start_step as u64);
    progress
}

/// Running means of the steps since the last evaluation.
#[derive(Debug, Default)]
struct Window {
    steps: usize,
    loss_sum: f64,
    distillation_sum: f64,
    preservation_sum: f64,
    correct: i64,
    examples: usize,
    last_examples: usize,
    seconds: f64,
}

impl Window {
    fn add(&mut self, report: &StepReport, examples: usize, seconds: f64) {
        self.steps += 1;
        self.loss_sum += report.loss;
        self.distillation_sum += report.distillation_loss;
        self.preservation_sum += report.preservation_loss;
        self.correct += report.correct;
        self.examples += examples;
        self.last_examples = examples;
        self.seconds += seconds;
    }

    /// The accuracy of the last step's batch, which `report` describes.
    fn last_accuracy(&self, report: &StepReport) -> f64 {
        report.correct as f64 / self.last_examples.max(1) as f64
    }

    fn mean_loss(&self) -> f64 {
        self.mean(self.loss_sum)
    }

    /// `sum` over the window's steps, per step.
    fn mean(&self, sum: f64) -> f64 {
        sum / self.steps.max(1) as f64
    }

    fn accuracy(&self) -> f64 {
        self.correct as f64 / self.examples.max(1) as f64
    }

    fn ms_per_step(&self) -> f64 {
        1000.0 * self.seconds / self.steps.max(1) as f64
    }
}
