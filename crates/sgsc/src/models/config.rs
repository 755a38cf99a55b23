//! The `[model]` section of an experiment config: the input shape and a list of layers.

use serde::{Deserialize, Serialize};

/// A feed-forward network: input shape `[channels, height, width]` and its layers in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Shape of one input, `[channels, height, width]`.
    pub input: [i64; 3],
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
}

fn one() -> i64 {
    1
}
