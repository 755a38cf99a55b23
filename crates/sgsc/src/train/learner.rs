//! One optimisation step on one batch: forward, loss, backward, Adam. The trainer and the
//! benchmark both drive this, so what is timed is what trains.

use super::objective::{distillation_loss, low_bit_l1, size_term};
use super::optimizer::{Adam, GroupSettings};
use super::Mode;
use crate::config::{ExperimentConfig, Schedule};
use crate::error::Result;
use crate::models::{Network, ParameterGroup};
use crate::size::OriginalSize;
use std::collections::HashMap;
use tch::{Device, Kind, Reduction, Tensor};

/// The network, its optimizer and the settings of the objective.
#[derive(Debug)]
pub struct Learner {
    /// The network being trained.
    pub network: Network,
    /// Adam over the trained parameters (weights; plus bit depths and exponents when quantizing).
    pub optimizer: Adam,
    /// The run's mode.
    pub mode: Mode,
    /// The experiment config.
    pub config: ExperimentConfig,
    /// Size facts of the starting network (N0 of the size term, float32 bytes, channels).
    pub original: OriginalSize,
    /// Per quantized layer, the bit depths held while a target run fine-tunes (see
    /// [`super::pressure`]): they neither rise (the size would grow) nor keep falling on Adam's
    /// momentum (the size would overshoot the target); saved with the state as `bit_cap.<layer>`.
    pub bit_caps: Vec<Option<Tensor>>,
}

/// The terms of one step's loss besides cross-entropy.
#[derive(Debug, Default)]
pub struct StepTerms {
    /// Gamma of the size term (0 in baseline mode and while fine-tuning within a target).
    pub gamma: f64,
    /// Distillation from the reference on the training batch (`distill` and `safe`).
    pub teacher: Option<Teacher>,
    /// The preservation batch of the safety guard (`safe`).
    pub guidance: Option<Guidance>,
}

/// The reference's logits on the training batch, and how much distilling from them weighs.
#[derive(Debug)]
pub struct Teacher {
    /// The frozen reference's logits on the step's training batch.
    pub logits: Tensor,
    /// Weight of the distillation term.
    pub weight: f64,
    /// Distillation temperature.
    pub temperature: f64,
}

/// What the safety guard adds to a step: a batch of the preservation set's loss part.
#[derive(Debug)]
pub struct Guidance {
    /// Training-split indices of the batch's members (the loss part only, never the audit part).
    pub indices: Vec<u32>,
    /// Augmented preservation-set images.
    pub inputs: Tensor,
    /// Their labels.
    pub labels: Tensor,
    /// The frozen reference's logits on the same images (the distillation teacher).
    pub teacher_logits: Tensor,
    /// Lambda_p, the weight of the preservation loss (raised during cool-downs).
    pub preservation_weight: f64,
    /// Weight of distillation inside the preservation loss.
    pub distillation_weight: f64,
    /// Distillation temperature.
    pub temperature: f64,
}

/// What one step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Total loss.
    pub loss: f64,
    /// Cross-entropy on the batch.
    pub cross_entropy: f64,
    /// Size term Q (average bits per original weight), 0 in baseline mode.
    pub size_term: f64,
    /// Preservation loss (0 without guidance).
    pub preservation_loss: f64,
    /// Distillation loss on the training batch, before its weight (0 without a teacher).
    pub distillation_loss: f64,
    /// Correct predictions in the batch.
    pub correct: i64,
    /// False when the loss was not finite; the step then changed nothing.
    pub finite: bool,
}

/// A deep copy of every model and optimizer tensor, to roll back to.
#[derive(Debug)]
pub struct Snapshot {
    tensors: HashMap<String, Tensor>,
    steps_taken: i64,
}

impl Snapshot {
    /// A snapshot of saved tensors (as named by [`Learner::state`]) and the optimizer's step count.
    pub fn from_tensors(tensors: HashMap<String, Tensor>, steps_taken: i64) -> Self {
        Snapshot {
            tensors,
            steps_taken,
        }
    }

    /// The saved copy of the tensor `name` (as named by [`Learner::state`]).
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Every saved tensor by name.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// The optimizer's step count when the snapshot was taken.
    pub fn steps_taken(&self) -> i64 {
        self.steps_taken
    }
}

impl Learner {
    /// Builds the network (seeded by the config's seed) and its optimizer for `mode`.
    pub fn new(config: &ExperimentConfig, mode: Mode, device: Device) -> Result<Self> {
        tch::manual_seed(config.train.seed as i64);
        let mut network = Network::new(&config.model, config.quant.initial_bit_depth, device)?;
        network.set_integer_exponents(config.quant.integer_exponents);
        let mut learner = Learner {
            original: OriginalSize::of(&network),
            bit_caps: (0..network.quantized.len()).map(|_| None).collect(),
            optimizer: Adam::new(Vec::new())?,
            network,
            mode,
            config: config.clone(),
        };
        learner.optimizer = Adam::new(learner.trained_parameters())?;
        Ok(learner)
    }

    /// Learning-rate multiplier of `schedule` at `step` of this run.
    pub fn schedule_factor(&self, schedule: Schedule, step: i64) -> f64 {
        match schedule {
            Schedule::Constant => 1.0,
            Schedule::Cosine => {
                let progress = step as f64 / self.config.train.steps.max(1) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
        }
    }

    /// One step of training on `inputs`/`labels` (already on the network's device) with the
    /// loss terms of `terms`. A step whose loss is not finite changes nothing, the batch norms'
    /// running statistics included.
    pub fn step(
        &mut self,
        inputs: &Tensor,
        labels: &Tensor,
        step: i64,
        terms: &StepTerms,
    ) -> Result<StepReport> {
        let running_statistics = self.network.buffers();
        let saved_statistics = running_statistics
            .iter()
            .map(|tensor| tensor.f_detach_copy())
            .collect::<Result<Vec<_>, _>>()?;
        let logits = self.network.forward(inputs, true, self.mode.quantizes())?;
        let cross_entropy =
            logits.f_cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, 0.0)?;
        let quantizes = self.mode.quantizes();
        let mut loss = cross_entropy.shallow_clone();
        let mut size = 0.0;
        if quantizes {
            let gamma = terms.gamma;
            let size_term = size_term(&self.network, self.original.weights as f64)?;
            size = size_term.double_value(&[]);
            loss = loss.f_add(&size_term.f_mul_scalar(gamma)?)?;
            if self.config.quant.l1_weight > 0.0 {
                let l1 = low_bit_l1(
                    &self.network,
                    self.config.quant.l1_bit_threshold,
                    self.original.weights as f64,
                )?;
                loss = loss.f_add(&l1.f_mul_scalar(self.config.quant.l1_weight)?)?;
            }
        }
        let mut distillation_value = 0.0;
        if let Some(teacher) = &terms.teacher {
            let distillation = distillation_loss(&logits, &teacher.logits, teacher.temperature)?;
            distillation_value = distillation.double_value(&[]);
            loss = loss.f_add(&distillation.f_mul_scalar(teacher.weight)?)?;
        }
        let mut preservation_loss = 0.0;
        // The running statistics follow the training batches only: the preservation set's hard
        // images are not the data the model will see. (They are put back after the backward
        // pass, which needs the versions the forward passes left.)
        let mut after_training_batch = None;
        if let Some(guidance) = &terms.guidance {
            after_training_batch = Some(
                running_statistics
                    .iter()
                    .map(|tensor| tensor.f_detach_copy())
                    .collect::<Result<Vec<_>, _>>()?,
            );
            let logits = self.network.forward(&guidance.inputs, true, quantizes)?;
            let mut preservation = logits.f_cross_entropy_loss::<Tensor>(
                &guidance.labels,
                None,
                Reduction::Mean,
                -100,
                0.0,
            )?;
            if guidance.distillation_weight > 0.0 {
                let distillation =
                    distillation_loss(&logits, &guidance.teacher_logits, guidance.temperature)?;
                preservation = preservation
                    .f_add(&distillation.f_mul_scalar(guidance.distillation_weight)?)?;
            }
            preservation_loss = preservation.double_value(&[]);
            loss = loss.f_add(&preservation.f_mul_scalar(guidance.preservation_weight)?)?;
        }
        let loss_value = loss.double_value(&[]);
        let correct = tch::no_grad(|| -> Result<i64> {
            Ok(logits
                .f_argmax(-1, false)?
                .f_eq_tensor(labels)?
                .f_sum(Kind::Int64)?
                .int64_value(&[]))
        })?;
        let report = StepReport {
            loss: loss_value,
            cross_entropy: cross_entropy.double_value(&[]),
            size_term: size,
            preservation_loss,
            distillation_loss: distillation_value,
            correct,
            finite: loss_value.is_finite(),
        };
        if !report.finite {
            restore_statistics(&running_statistics, &saved_statistics)?;
            return Ok(report);
        }
        self.optimizer.zero_grad();
        loss.f_backward()?;
        if let Some(saved) = &after_training_batch {
            restore_statistics(&running_statistics, saved)?;
        }
        let (train, quant) = (&self.config.train, &self.config.quant);
        let weights = GroupSettings {
            learning_rate: train.learning_rate * self.schedule_factor(train.schedule, step),
            eps: train.adam_eps,
        };
        let quantizer = GroupSettings {
            learning_rate: quant.learning_rate * self.schedule_factor(quant.schedule, step),
            eps: quant.adam_eps,
        };
        self.optimizer.step(|group| match group {
            ParameterGroup::Weights => weights,
            ParameterGroup::Quantizer => quantizer,
        })?;
        self.hold_bit_caps()?;
        Ok(report)
    }

    /// Holds every bit depth where it is now (a target run starts fine-tuning).
    pub fn cap_bits(&mut self) -> Result<()> {
        for index in 0..self.network.quantized.len() {
            let bits = &self.network.quantized_weight(index).bit_depth;
            self.bit_caps[index] = Some(bits.f_detach_copy()?);
        }
        Ok(())
    }

    /// Lets every bit depth move again (a target run compresses again).
    pub fn release_bits(&mut self) {
        self.bit_caps.iter_mut().for_each(|cap| *cap = None);
    }

    /// Puts held bit depths back where they are held.
    fn hold_bit_caps(&self) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (index, cap) in self.bit_caps.iter().enumerate() {
                if let Some(cap) = cap {
                    let mut bits = self
                        .network
                        .quantized_weight(index)
                        .bit_depth
                        .shallow_clone();
                    bits.f_copy_(cap)?;
                }
            }
            Ok(())
        })
    }

    /// Checkpoint name of quantized layer `index`'s bit cap.
    fn cap_name(&self, index: usize) -> String {
        format!("bit_cap.{}", self.network.quantized[index].name)
    }

    /// Every tensor of the model and the optimizer, by name (what a checkpoint holds), with the
    /// bit caps of a fine-tuning target run.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = self.network.state();
        state.extend(self.optimizer.state());
        for (index, cap) in self.bit_caps.iter().enumerate() {
            if let Some(cap) = cap {
                state.push((self.cap_name(index), cap.shallow_clone()));
            }
        }
        state
    }

    /// Removes the output channels of quantized layer `index` that are not in `keep`, from the
    /// network and from the optimizer's moments.
    pub fn prune(&mut self, index: usize, keep: &[i64]) -> Result<()> {
        let slices = crate::prune::remove_channels(&mut self.network, index, keep)?;
        if let Some(cap) = &self.bit_caps[index] {
            let kept = Tensor::f_from_slice(keep)?.f_to_device(cap.device())?;
            self.bit_caps[index] = Some(cap.f_index_select(0, &kept)?);
        }
        let trained = self.trained_parameters();
        self.optimizer.apply_pruning(&slices, trained)
    }

    /// The parameters the optimizer trains in this mode.
    fn trained_parameters(&self) -> Vec<(String, Tensor, ParameterGroup)> {
        let quantizes = self.mode.quantizes();
        self.network
            .parameters()
            .into_iter()
            .filter(|(_, _, group)| quantizes || *group == ParameterGroup::Weights)
            .collect()
    }

    /// Restores the model and optimizer from tensors saved by [`Learner::state`]. A state saved
    /// after pruning has fewer channels than the config's network: the network is first cut to
    /// those channel counts, then every tensor is loaded.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        steps_taken: i64,
    ) -> Result<()> {
        for index in 0..self.network.quantized.len() {
            let name = format!("{}.weight", self.network.quantized[index].name);
            let current = self.network.quantized_weight(index).weight.size()[0];
            if let Some(saved) = tensors.get(&name).map(|tensor| tensor.size()[0]) {
                if saved < current && saved > 0 {
                    self.prune(index, &(0..saved).collect::<Vec<i64>>())?;
                }
            }
        }
        let device = self.network.quantized_weight(0).weight.device();
        // `guard.*` tensors belong to the safety guard, `best.*` to the target's best state.
        let on_device = tensors
            .iter()
            .filter(|(name, _)| !name.starts_with("guard.") && !name.starts_with("best."))
            .map(|(name, tensor)| Ok((name.clone(), tensor.f_to_device(device)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        self.network.load_state(&on_device)?;
        for index in 0..self.network.quantized.len() {
            let channels = self.network.quantized_weight(index).bit_depth.size();
            self.bit_caps[index] = match on_device.get(&self.cap_name(index)) {
                Some(cap) if cap.size() != channels => {
                    return Err(crate::error::Error::Model(format!(
                        "{} has shape {:?}, its layer {channels:?}",
                        self.cap_name(index),
                        cap.size()
                    )))
                }
                Some(cap) => Some(cap.f_detach_copy()?),
                None => None,
            };
        }
        self.optimizer.load_state(&on_device, steps_taken)
    }

    /// A deep copy of the current state.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let tensors = self
            .state()
            .into_iter()
            .map(|(name, tensor)| Ok((name, tensor.f_detach_copy()?)))
            .collect::<Result<_>>()?;
        Ok(Snapshot {
            tensors,
            steps_taken: self.optimizer.steps_taken,
        })
    }

    /// Returns the network (not the optimizer) to a snapshot taken earlier.
    pub fn restore_network(&mut self, snapshot: &Snapshot) -> Result<()> {
        self.network.load_state(&snapshot.tensors)
    }

    /// Returns to a snapshot taken earlier.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<()> {
        self.load_state(&snapshot.tensors, snapshot.steps_taken)
    }
}

/// Copies `saved` back into the running statistics `tensors`.
fn restore_statistics(tensors: &[Tensor], saved: &[Tensor]) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        for (tensor, saved) in tensors.iter().zip(saved) {
            tensor.shallow_clone().f_copy_(saved)?;
        }
        Ok(())
    })
}
