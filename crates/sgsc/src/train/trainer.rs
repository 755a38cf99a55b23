//! The training loop, the same for every mode: batches, steps, validation, metrics, checkpoints,
//! resume, and roll-back to the last good state when the loss stops being finite.

use super::checkpoint::{self, CheckpointInfo};
use super::config::ExperimentConfig;
use super::evaluate::{evaluate, Evaluation};
use super::learner::{Learner, Snapshot};
use super::metrics::MetricsLog;
use super::safety::{load_reference, Certificate, Guard};
use super::Mode;
use crate::data::sampler::{step_rng, EpochSampler};
use crate::data::{load_train_validation, Tensors, TrainValidation};
use crate::error::{Error, Result};
use crate::pack::payload_estimate;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

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
    std::fs::create_dir_all(&options.out_dir).map_err(|e| Error::io(&options.out_dir, e))?;
    let data = load_train_validation(&config.data, &config.model.input, &options.data_dirs)?;
    let mut learner = Learner::new(config, options.mode, options.device)?;
    let safety_reference = config
        .safety
        .as_ref()
        .filter(|_| options.mode == Mode::Safe)
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
    let checkpoint_file = checkpoint_path(&options.out_dir);
    let mut start_step = 0;
    let mut resumed = None;
    if options.resume && checkpoint_file.exists() {
        let (info, tensors) = checkpoint::load(&checkpoint_file)?;
        let saved_config = ExperimentConfig::parse(&info.config, &checkpoint_file)?;
        if info.mode != options.mode.name() || &saved_config != config {
            return Err(Error::Checkpoint {
                path: checkpoint_file,
                message: "was written by a different mode or config; resume with the same ones or use a new --out".into(),
            });
        }
        learner.load_state(&tensors, info.step)?;
        start_step = info.step;
        tracing::info!("resuming from step {start_step}");
        resumed = Some((info, tensors));
    }
    checkpoint::write_atomically(
        &options.out_dir.join("config.toml"),
        config.to_toml().as_bytes(),
    )?;
    let mut metrics = MetricsLog::open(&options.out_dir.join("metrics.jsonl"), start_step)?;
    let save_checkpoint = |learner: &Learner, guard: Option<&Guard>, step: i64| {
        let mut tensors = learner.state();
        let guard = match guard {
            Some(guard) => {
                let (guard_tensors, json) = guard.state()?;
                tensors.extend(guard_tensors);
                Some(json)
            }
            None => None,
        };
        let info = CheckpointInfo {
            format: checkpoint::FORMAT.into(),
            mode: options.mode.name().into(),
            step,
            config: config.to_toml(),
            original_weights: learner.original.weights,
            guard,
            data: data.description(),
        };
        checkpoint::save(&checkpoint_file, &info, &tensors)
    };
    let mut guard = match options.mode {
        Mode::Safe => Some(Guard::new(config, &data, &learner, options.device)?),
        Mode::Baseline | Mode::Unsafe => None,
    };
    if let (Some(guard), Some((info, tensors))) = (guard.as_mut(), &resumed) {
        match &info.guard {
            Some(json) => guard.load_state(&learner, tensors, json)?,
            None => tracing::warn!(
                "the checkpoint has no guard state (an older sgsc): the guard starts afresh"
            ),
        }
    }
    if let Some(guard) = &guard {
        guard.log_roll_back_rule();
    }
    drop(resumed);
    let steps = config.train.steps;
    let progress = if options.progress {
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

    let mut sampler =
        EpochSampler::new(data.train.len(), config.train.batch_size, config.train.seed);
    let validate = |learner: &Learner| {
        evaluate(
            &learner.network,
            &data.validation,
            &config.data.input,
            options.mode.quantizes(),
            config.train.eval_batch_size,
            options.device,
        )
    };
    let mut last_good: Snapshot = learner.snapshot()?;
    let (mut rollbacks, mut consecutive_rollbacks) = (0u32, 0u32);
    let mut window = Window::default();
    let mut validation = None;
    let mut last_size = None;
    let last_step = options
        .stop_at
        .map_or(steps, |stop| stop.clamp(start_step, steps));
    for step in start_step..last_step {
        let step_started = Instant::now();
        let positions = sampler.positions(step).to_vec();
        let mut rng = step_rng(config.train.seed, step);
        let (inputs, labels) =
            data.train
                .tensors(&positions, &config.data.input, Some(&mut rng))?;
        let (inputs, labels) = (
            inputs.f_to_device(options.device)?,
            labels.f_to_device(options.device)?,
        );
        let guidance = guard
            .as_mut()
            .map(|guard| guard.guidance(step, &inputs))
            .transpose()?;
        let report = learner.step(&inputs, &labels, step, guidance.as_ref())?;
        // One prediction per image, or per character of a language model's windows.
        let predictions = labels.size()[0] as usize;
        if !report.finite {
            rollbacks += 1;
            consecutive_rollbacks += 1;
            metrics.write(&json!({"step": step + 1, "event": "rollback", "reason": "non-finite loss", "loss": format!("{}", report.loss)}))?;
            tracing::warn!(
                "step {}: non-finite loss, rolled back to the last good state",
                step + 1
            );
            if consecutive_rollbacks > MAX_CONSECUTIVE_ROLLBACKS {
                return Err(Error::Training(format!(
                    "the loss was not finite {consecutive_rollbacks} times in a row after rolling back; \
                     lower the learning rates or check the data"
                )));
            }
            learner.restore(&last_good)?;
            continue;
        }
        consecutive_rollbacks = 0;
        if let Some(guard) = guard.as_mut() {
            guard.after_step(&learner, step)?;
        }
        window.add(&report, predictions, step_started.elapsed().as_secs_f64());
        let done = step + 1;
        if done % 10 == 0 || done == steps {
            progress.set_position(done as u64);
            let size = last_size.map_or("-".to_string(), |bytes: i64| format!("{bytes} B"));
            progress.set_message(format!(
                "loss {:.3} acc {:.1}% Q {:.2} bits/weight, size at last eval {size}",
                report.loss,
                100.0 * report.correct as f64 / predictions as f64,
                report.size_term
            ));
        }
        if let Some(guard) = guard.as_mut() {
            let check_every = config
                .safety
                .as_ref()
                .map_or(i64::MAX, |safety| safety.check_every);
            if done % check_every == 0 {
                let check = guard.check(&mut learner, &data, done)?;
                if check.pruned_channels > 0 {
                    // The roll-back point for non-finite losses must have the network's shapes.
                    last_good = learner.snapshot()?;
                }
                metrics.write(&json!({"event": "check", "mode": options.mode.name(), "check": check, "step": done}))?;
                if check.action != "safe" || check.pruned_channels > 0 {
                    let metric = guard.budget().metric;
                    tracing::info!(
                        "step {done}: preservation {}, validation {}: {} ({} channels restored, {} removed)",
                        metric.show(check.preservation_accuracy),
                        metric.show(check.validation_accuracy),
                        check.action,
                        check.restored_channels,
                        check.pruned_channels
                    );
                }
            }
        }
        if done % config.train.eval_every == 0 || done == steps {
            let evaluation = validate(&learner)?;
            let size = payload_estimate(&learner.network, &learner.original)?;
            let headline = size.headline(options.mode.quantizes());
            metrics.write(&json!({
                "step": done,
                "mode": options.mode.name(),
                "train_loss": window.mean_loss(),
                "train_accuracy": window.accuracy(),
                "size_term": report.size_term,
                "gamma": learner.gamma(step),
                "learning_rate_factor": learner.schedule_factor(config.train.schedule, step),
                "validation_loss": evaluation.loss,
                "validation_accuracy": evaluation.accuracy,
                "size_bytes": headline.bytes,
                "size_kind": headline.kind,
                "bits_per_weight": headline.bits_per_weight,
                "channels_alive": size.layers.iter().map(|layer| layer.alive).collect::<Vec<_>>(),
                "ms_per_step": window.ms_per_step(),
                "rollbacks": rollbacks,
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
            if progress.is_hidden() {
                tracing::info!("{line}");
            } else {
                progress.println(line);
            }
            window = Window::default();
            if evaluation.loss.is_finite() {
                last_good = learner.snapshot()?;
            }
            validation = Some(evaluation);
            last_size = Some(headline.bytes);
        }
        if done % config.train.checkpoint_every == 0 || done == last_step {
            save_checkpoint(&learner, guard.as_ref(), done)?;
        }
    }
    progress.finish_and_clear();
    let certificate = match guard.as_mut() {
        Some(guard) if last_step == steps => {
            let certificate = guard.final_gate(&mut learner, &data)?;
            metrics.write(
                &json!({"event": "final_gate", "step": last_step, "certificate": certificate}),
            )?;
            save_checkpoint(&learner, Some(&*guard), last_step)?;
            Some(certificate)
        }
        _ => None,
    };
    let validation = match validation {
        Some(evaluation) => evaluation,
        None => validate(&learner)?,
    };
    Ok(TrainOutcome {
        learner,
        data,
        validation,
        wall_seconds: started.elapsed().as_secs_f64(),
        rollbacks,
        steps_done: last_step,
        certificate,
    })
}

/// Running means of the steps since the last evaluation.
#[derive(Debug, Default)]
struct Window {
    steps: usize,
    loss_sum: f64,
    correct: i64,
    examples: usize,
    seconds: f64,
}

impl Window {
    fn add(&mut self, report: &super::learner::StepReport, examples: usize, seconds: f64) {
        self.steps += 1;
        self.loss_sum += report.loss;
        self.correct += report.correct;
        self.examples += examples;
        self.seconds += seconds;
    }

    fn mean_loss(&self) -> f64 {
        self.loss_sum / self.steps.max(1) as f64
    }

    fn accuracy(&self) -> f64 {
        self.correct as f64 / self.examples.max(1) as f64
    }

    fn ms_per_step(&self) -> f64 {
        1000.0 * self.seconds / self.steps.max(1) as f64
    }
}
