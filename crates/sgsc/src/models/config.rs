//! The `[model]` section of an experiment config: the input shape and a list of layers.
//!
//! An image network takes `input = [channels, height, width]`; a language model takes
//! `input = [context]` (token ids) and starts with an `embedding` layer.

use super::network::BATCH_NORM_EPS;
use super::transformer::LAYER_NORM_EPS;
use serde::{Deserialize, Serialize};
pub use sgsc_runtime::layers::{LayerSpec, Pool, Projection, Shape};

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
        /// Channel groups, each convolved on its own (default 1; the input channels for a
        /// depthwise convolution). Must divide the input and output channels.
        #[serde(default = "one")]
        groups: i64,
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
    /// Max pooling over square windows: `kernel`, `stride` (default: the window) and `padding`
    /// (default 0, at most half the window).
    MaxPool(Pool),
    /// Average pooling over square windows, like `max_pool`; padding counts as zeros in the
    /// average.
    AvgPool(Pool),
    /// The mean of each channel's map: `[c, h, w]` to `[c, 1, 1]` (a flatten then gives `[c]`).
    GlobalAvgPool,
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
    /// Starts a residual block: the activation here is kept, and the `add` that ends the block
    /// adds it to the block's output.
    Residual,
    /// Ends the innermost residual block. When the block changed the shape (channels, or size
    /// by a stride), the kept activation goes through a 1x1 convolution with the stride that
    /// fits, quantized per output channel.
    Add,
}

impl ModelConfig {
    /// Every layer's description with the shape it takes, checked as every back end checks it
    /// ([`sgsc_runtime::layers::walk`]); an error names the layer.
    pub fn specs(&self) -> Result<Vec<(LayerSpec, Shape)>, (usize, String)> {
        let input: Vec<usize> = self
            .input
            .iter()
            .map(|&side| usize::try_from(side).unwrap_or(0))
            .collect();
        let mut shape = Shape::of_input(&input).map_err(|message| (0, message))?;
        let mut kept = Vec::new();
        let mut specs = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            let spec = layer
                .spec(shape, kept.last().copied())
                .map_err(|message| (index, message))?;
            let next = spec
                .output_shape(shape)
                .map_err(|message| (index, message))?;
            match spec {
                LayerSpec::Residual => kept.push(next),
                LayerSpec::Add { .. } => {
                    kept.pop();
                }
                _ => {}
            }
            specs.push((spec, shape));
            shape = next;
        }
        let layers: Vec<LayerSpec> = specs.iter().map(|(spec, _)| spec.clone()).collect();
        let first = specs.first().map_or(shape, |(_, input)| *input);
        sgsc_runtime::layers::walk(&layers, first)?;
        Ok(specs)
    }

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

impl LayerConfig {
    /// This layer's description on an input of shape `input` (and, for an `add`, the activation
    /// `kept` at its block's start), with the sizes it takes from its input filled in; the shape
    /// rule itself is [`LayerSpec::output_shape`], shared by every back end.
    pub fn spec(&self, input: Shape, kept: Option<Shape>) -> Result<LayerSpec, String> {
        let positive = |value: i64, what: &str| {
            usize::try_from(value)
                .ok()
                .filter(|&value| value > 0)
                .ok_or_else(|| format!("{what} must be positive, not {value}"))
        };
        let features = match input {
            Shape::Map { channels, .. } => channels,
            Shape::Flat { features } | Shape::Sequence { features, .. } => features,
            Shape::Tokens { length } => length,
        };
        Ok(match *self {
            LayerConfig::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
                bias,
                groups,
            } => LayerSpec::Conv2d {
                in_channels: features,
                out_channels: positive(out_channels, "conv2d out_channels")?,
                kernel: positive(kernel, "conv2d kernel")?,
                stride: positive(stride, "conv2d stride")?,
                padding: usize::try_from(padding)
                    .map_err(|_| format!("conv2d padding must not be negative, not {padding}"))?,
                bias,
                groups: positive(groups, "conv2d groups")?,
            },
            LayerConfig::Linear { out_features, bias } => {
                if matches!(input, Shape::Map { .. }) {
                    return Err("linear needs a flat input: add a flatten layer before it".into());
                }
                LayerSpec::Linear {
                    in_features: features,
                    out_features: positive(out_features, "linear out_features")?,
                    bias,
                }
            }
            LayerConfig::Relu => LayerSpec::Relu,
            LayerConfig::BatchNorm { affine } => LayerSpec::BatchNorm {
                channels: features,
                affine,
                eps: BATCH_NORM_EPS as f32,
            },
            LayerConfig::MaxPool(pool) => LayerSpec::MaxPool(pool),
            LayerConfig::AvgPool(pool) => LayerSpec::AvgPool(pool),
            LayerConfig::GlobalAvgPool => LayerSpec::GlobalAvgPool,
            LayerConfig::Flatten => LayerSpec::Flatten,
            LayerConfig::Embedding {
                vocab_size,
                d_model,
            } => LayerSpec::Embedding {
                vocab_size: positive(vocab_size, "embedding vocab_size")?,
                context: features,
                d_model: positive(d_model, "embedding d_model")?,
            },
            LayerConfig::TransformerBlock {
                heads,
                mlp_ratio,
                bias,
            } => {
                let heads = positive(heads, "transformer_block heads")?;
                if !features.is_multiple_of(heads) {
                    return Err(format!(
                        "transformer_block: d_model {features} must split into {heads} heads"
                    ));
                }
                LayerSpec::TransformerBlock {
                    d_model: features,
                    heads,
                    head_dim: features / heads,
                    hidden: features * positive(mlp_ratio, "transformer_block mlp_ratio")?,
                    bias,
                    eps: LAYER_NORM_EPS as f32,
                }
            }
            LayerConfig::LayerNorm => LayerSpec::LayerNorm {
                features,
                eps: LAYER_NORM_EPS as f32,
            },
            LayerConfig::Residual => LayerSpec::Residual,
            LayerConfig::Add => LayerSpec::Add {
                projection: Projection::between(
                    kept.ok_or("an add without a residual block to end")?,
                    input,
                )?,
            },
        })
    }
}

fn one() -> i64 {
    1
}

fn four() -> i64 {
    4
}
