//! Training stage: one loop for every mode.
//!
//! - [`objective`]: the loss terms (cross-entropy, size term Q).
//! - [`optimizer`]: Adam with separate groups for weights and for bit depths/exponents.
//! - [`learner`]: one optimisation step, shared by training and benchmarks.
//! - [`trainer`]: the loop: batches, evaluation, checkpoints, metrics, roll-back on NaN.
//! - [`pressure`]: the law that sets gamma (fixed, to a target size, or the search of `safe`).
//! - [`controller`], [`safety`]: the safety guard of the `safe` mode.
//! - [`checkpoint`], [`metrics`], [`evaluate`]: what the loop writes and measures.

pub mod checkpoint;
pub mod controller;
pub mod evaluate;
pub mod learner;
pub mod metrics;
pub mod objective;
pub mod optimizer;
pub mod pressure;
pub mod safety;
pub mod trainer;

use serde::{Deserialize, Serialize};

/// What a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Float training, no quantization: the reference and the "no compression" baseline.
    Baseline,
    /// Self-compression (quantized weights, gamma * Q), without safety guidance.
    Unsafe,
    /// Self-compression with the same distillation from the reference that `safe` uses on every
    /// training batch, without the preservation set and the controller: the ablation that tells
    /// what the guard adds beyond distillation.
    Distill,
    /// Self-compression guarded by the preservation set and the feedback controller.
    Safe,
}

impl Mode {
    /// Every mode, in the order tables and figures show them.
    pub const ALL: [Mode; 4] = [Mode::Baseline, Mode::Unsafe, Mode::Distill, Mode::Safe];

    /// Whether the forward pass uses quantized weights and the quantizer is trained.
    pub fn quantizes(self) -> bool {
        self != Mode::Baseline
    }

    /// Whether the run distils from a reference on its training batches.
    pub fn distils(self) -> bool {
        matches!(self, Mode::Distill | Mode::Safe)
    }

    /// The mode's name, as used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Baseline => "baseline",
            Mode::Unsafe => "unsafe",
            Mode::Distill => "distill",
            Mode::Safe => "safe",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "baseline" => Ok(Mode::Baseline),
            "unsafe" => Ok(Mode::Unsafe),
            "distill" => Ok(Mode::Distill),
            "safe" => Ok(Mode::Safe),
            other => Err(format!(
                "unknown mode {other:?} (expected baseline, unsafe, distill or safe)"
            )),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
