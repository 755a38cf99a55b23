//! The `[model]` section of an experiment config: the input shape and a list of layers.
//!
//! An image network takes `input = [channels, height, width]`; a language model takes
//! `input = [context]` (token ids) and starts with an `embedding` layer.

use serde::{Deserialize, Serialize};

/// A network: the shape of one input and its layers in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Shape of one input: `[channels, height, width]` for images, `[context]` for token ids.
    pub input: Vec<i64>,
    /// The layers, applied in order.
    pub layers: Vec<LayerConfig>,
}

/// One layer. Conv and linear layers are quantized per output channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerConfig {
    /// 2-D convolution with square kernels.
    Conv2d {
        /// Output channels.
        out_channels: i64,
        /// Kernel side.
        kernel: i64,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: i64,
        /// Zero padding on each side (default 0).
        #[serde(default)]
        padding: i64,
        /// Whether the layer has a bias (default false).
        #[serde(default)]
        bias: bool,
    },
    /// Fully connected layer on a flattened input.
    Linear {
        /// Output features.
        out_features: i64,
        /// Whether the layer has a bias (default false).
        #[serde(default)]
        bias: bool,
    },
    /// Rectified linear unit.
    Relu,
    /// Batch normalisation over channels, with running statistics.
    BatchNorm {
        /// Learn a scale and shift per channel (default false).
        #[serde(default)]
        affine: bool,
    },
    /// Max pooling with a square window and stride equal to the window.
    MaxPool {
        /// Window side.
        kernel: i64,
    },
    /// Flattens `[c, h, w]` to `[c * h * w]`, channel-major.
    Flatten,
    /// Token embedding plus a learned position embedding (kept in float), on token ids.
    Embedding {
        /// Symbols in the vocabulary (the data's vocabulary must have exactly this many).
        vocab_size: i64,
        /// Width of the residual stream.
        d_model: i64,
    },
    /// Pre-LayerNorm transformer block: causal multi-head self-attention, then an MLP, each
    /// added to the residual stream. Query, key, value, output projection and both MLP layers are
    /// quantized per output channel.
    TransformerBlock {
        /// Attention heads (`d_model` must be a multiple).
        heads: i64,
        /// Hidden units of the MLP per residual feature (default 4).
        #[serde(default = "four")]
        mlp_ratio: i64,
        /// Whether the linear layers have biases (default false).
        #[serde(default)]
        bias: bool,
    },
    /// Layer normalisation over the features of each position, with a learned scale and shift.
    LayerNorm,
}

impl ModelConfig {
    /// The number of classes of an image classifier: the outputs of its last layer when that is
    /// a linear layer (`None` for language models and networks that end otherwise).
    pub fn classifier_outputs(&self) -> Option<usize> {
        if self.input.len() != 3 {
            return None;
        }
        self.layers.iter().rev().find_map(|layer| match layer {
            LayerConfig::Linear { out_features, .. } => Some(Some(*out_features as usize)),
            LayerConfig::Conv2d { .. } => Some(None),
            _ => None,
        })?
    }
}

fn one() -> i64 {
    1
}

fn four() -> i64 {
    4
}
