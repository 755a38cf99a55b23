//! What a packed file holds: metadata, and the layers with their tensors in stored form
//! (integer codes with per-channel widths and exponents; floats where the model keeps floats).
//! Nothing here runs a model; see [`crate::inference`] for that.

use crate::error::{Result, RuntimeError};
pub use crate::layers::{LayerSpec, Pool, Projection, Shape};
use half::f16;
use serde::{Deserialize, Serialize};

/// A weight matrix quantized per row (output channel): `w[r][c] = code[r][c] * 2^exponent[r]`.
/// A convolution's `[out, in, k, k]` weights are stored as `out` rows of `in * k * k`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedMatrix {
    /// Rows (output channels).
    pub rows: usize,
    /// Columns (weights per output channel).
    pub columns: usize,
    /// Stored two's-complement width of each row's codes, 0 to 32 (0: every code is 0).
    pub widths: Vec<u8>,
    /// Exponent of each row (`2^e` is the quantization step); ignored for rows of width 0.
    pub exponents: Vec<f16>,
    /// Codes, row-major, `rows * columns`; each fits its row's width.
    pub codes: Vec<i32>,
}

impl QuantizedMatrix {
    /// Dense float weights, row-major: `code * 2^e`, computed in f32 like the training side.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut dense = Vec::with_capacity(self.codes.len());
        for row in 0..self.rows {
            let step = f32::from(self.exponents[row]).exp2();
            let codes = &self.codes[row * self.columns..(row + 1) * self.columns];
            dense.extend(codes.iter().map(|&code| code as f32 * step));
        }
        dense
    }

    /// Bits of all stored codes.
    pub fn code_bits(&self) -> usize {
        self.widths.iter().map(|&w| w as usize * self.columns).sum()
    }
}

/// A linear map with quantized weights and an optional float bias.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Weights `[out, in]` (rows are outputs).
    pub weight: QuantizedMatrix,
    /// Bias `[out]`.
    pub bias: Option<Vec<f32>>,
}

/// Layer normalisation's scale and shift over the features of a position.
#[derive(Debug, Clone, PartialEq)]
pub struct Norm {
    /// Scale per feature.
    pub weight: Vec<f32>,
    /// Shift per feature.
    pub bias: Vec<f32>,
    /// Epsilon added to the variance.
    pub eps: f32,
}

/// Batch normalisation in inference form: running statistics and an optional affine map.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// Running mean per channel.
    pub mean: Vec<f32>,
    /// Running variance per channel.
    pub variance: Vec<f32>,
    /// Scale and shift per channel, when affine.
    pub affine: Option<(Vec<f32>, Vec<f32>)>,
    /// Epsilon added to the variance.
    pub eps: f32,
}

/// A pre-LayerNorm transformer block (see the training crate's `models::transformer`).
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Attention heads left (after pruning).
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// MLP hidden units left (after pruning).
    pub hidden: usize,
    /// Norm before attention.
    pub attention_norm: Norm,
    /// Query `[heads * head_dim, d_model]`.
    pub query: Dense,
    /// Key, like the query.
    pub key: Dense,
    /// Value, like the query.
    pub value: Dense,
    /// Output projection `[d_model, heads * head_dim]`.
    pub projection: Dense,
    /// Norm before the MLP.
    pub mlp_norm: Norm,
    /// First MLP layer `[hidden, d_model]`.
    pub mlp_in: Dense,
    /// Second MLP layer `[d_model, hidden]`.
    pub mlp_out: Dense,
}

/// One layer with its tensors.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// 2-D convolution, square kernel, weights `[out, in / groups * kernel * kernel]`.
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
        /// Channel groups (1: ordinary; the input channels: depthwise).
        groups: usize,
        /// Weights and bias.
        dense: Dense,
    },
    /// Fully connected layer.
    Linear(Dense),
    /// Rectified linear unit.
    Relu,
    /// Batch normalisation (inference form).
    BatchNorm(BatchNorm),
    /// Max pooling.
    MaxPool(Pool),
    /// Average pooling (the divisor is the whole window, padding included).
    AvgPool(Pool),
    /// The mean of each channel's map.
    GlobalAvgPool,
    /// Channel-major flattening of `[c, h, w]`.
    Flatten,
    /// Token plus position embedding.
    Embedding {
        /// Token table `[vocab_size, d_model]`, row-major.
        token: Vec<f32>,
        /// Position table `[context, d_model]`, row-major.
        position: Vec<f32>,
        /// Symbols.
        vocab_size: usize,
        /// Positions.
        context: usize,
        /// Width.
        d_model: usize,
    },
    /// Transformer block.
    TransformerBlock(Box<Block>),
    /// Layer normalisation.
    LayerNorm(Norm),
    /// Starts a residual block (keeps the activation).
    Residual,
    /// Ends a residual block: adds the kept activation, through the projection if any.
    Add {
        /// A 1x1 convolution `[out, in]` without bias, and its stride.
        projection: Option<(Dense, usize)>,
    },
}

/// Pixel normalisation applied before the first layer, per input channel:
/// `(pixel / 255 - mean[c]) / std[c]`. A one-channel model's values are written as plain numbers
/// (as files before per-channel normalisation did), longer ones as lists; both are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Mean subtracted, per channel.
    #[serde(with = "number_or_list")]
    pub mean: Vec<f32>,
    /// Standard deviation divided by, per channel.
    #[serde(with = "number_or_list")]
    pub std: Vec<f32>,
}

impl Normalization {
    /// The same mean and deviation for every channel.
    pub fn uniform(mean: f32, std: f32) -> Self {
        Normalization {
            mean: vec![mean],
            std: vec![std],
        }
    }
}

/// Serde for a list of numbers that is a plain number when it has one element.
mod number_or_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum NumberOrList {
        Number(f32),
        List(Vec<f32>),
    }

    pub fn serialize<S: Serializer>(values: &[f32], serializer: S) -> Result<S::Ok, S::Error> {
        match values {
            [value] => NumberOrList::Number(*value).serialize(serializer),
            _ => values.serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f32>, D::Error> {
        Ok(match NumberOrList::deserialize(deserializer)? {
            NumberOrList::Number(value) => vec![value],
            NumberOrList::List(values) => values,
        })
    }
}

/// Everything a file says about its model besides the layers: the description section holds
/// all but the certificate and the summary, which are the run record section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Shape of one input: `[channels, height, width]` for images, `[context]` for token ids.
    pub input: Vec<usize>,
    /// Pixel normalisation (image models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<Normalization>,
    /// The symbols of a language model, in id order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocabulary: Option<String>,
    /// Class names of a classifier, in output order (absent: the class index is the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Where the model's data comes from (the training config's `[data]` section, free-form
    /// JSON), so that a tool can rebuild the test split it was measured on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The safety certificate of the run that made the model (free-form JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<serde_json::Value>,
    /// A summary of training and its test figures (free-form JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
}

/// A whole packed model: metadata and layers.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedModel {
    /// Input description, vocabulary, certificate and summary.
    pub metadata: Metadata,
    /// The layers in order.
    pub layers: Vec<Layer>,
}

impl Layer {
    /// The layer's shape description.
    pub fn spec(&self) -> LayerSpec {
        match self {
            Layer::Conv2d {
                in_channels,
                kernel,
                stride,
                padding,
                groups,
                dense,
            } => LayerSpec::Conv2d {
                in_channels: *in_channels,
                out_channels: dense.weight.rows,
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
                bias: dense.bias.is_some(),
                groups: *groups,
            },
            Layer::Linear(dense) => LayerSpec::Linear {
                in_features: dense.weight.columns,
                out_features: dense.weight.rows,
                bias: dense.bias.is_some(),
            },
            Layer::Relu => LayerSpec::Relu,
            Layer::BatchNorm(norm) => LayerSpec::BatchNorm {
                channels: norm.mean.len(),
                affine: norm.affine.is_some(),
                eps: norm.eps,
            },
            Layer::MaxPool(pool) => LayerSpec::MaxPool(*pool),
            Layer::AvgPool(pool) => LayerSpec::AvgPool(*pool),
            Layer::GlobalAvgPool => LayerSpec::GlobalAvgPool,
            Layer::Flatten => LayerSpec::Flatten,
            Layer::Embedding {
                vocab_size,
                context,
                d_model,
                ..
            } => LayerSpec::Embedding {
                vocab_size: *vocab_size,
                context: *context,
                d_model: *d_model,
            },
            Layer::TransformerBlock(block) => LayerSpec::TransformerBlock {
                d_model: block.d_model,
                heads: block.heads,
                head_dim: block.head_dim,
                hidden: block.hidden,
                bias: block.query.bias.is_some(),
                eps: block.attention_norm.eps,
            },
            Layer::LayerNorm(norm) => LayerSpec::LayerNorm {
                features: norm.weight.len(),
                eps: norm.eps,
            },
            Layer::Residual => LayerSpec::Residual,
            Layer::Add { projection } => LayerSpec::Add {
                projection: projection.as_ref().map(|(dense, stride)| Projection {
                    in_channels: dense.weight.columns,
                    out_channels: dense.weight.rows,
                    stride: *stride,
                }),
            },
        }
    }

    /// The quantized linear maps of the layer (weights and biases), in file order, each with
    /// its name suffix (`.query`, ... for a transformer block's parts; empty otherwise).
    pub fn dense_parts(&self) -> Vec<(&'static str, &Dense)> {
        match self {
            Layer::Conv2d { dense, .. } | Layer::Linear(dense) => vec![("", dense)],
            Layer::TransformerBlock(block) => vec![
                (".query", &block.query),
                (".key", &block.key),
                (".value", &block.value),
                (".projection", &block.projection),
                (".mlp_in", &block.mlp_in),
                (".mlp_out", &block.mlp_out),
            ],
            Layer::Add {
                projection: Some((dense, _)),
            } => vec![(".projection", dense)],
            _ => Vec::new(),
        }
    }
}

/// Checks a matrix's own lengths and its shape against the expected `[rows, columns]`.
fn check_matrix(matrix: &QuantizedMatrix, rows: usize, columns: usize, what: &str) -> Result<()> {
    if matrix.rows != rows
        || matrix.columns != columns
        || matrix.widths.len() != rows
        || matrix.exponents.len() != rows
        || matrix.codes.len() != rows.saturating_mul(columns)
    {
        return Err(RuntimeError::Invalid(format!(
            "{what}: expected a {rows}x{columns} matrix, found {}x{} with {} widths, {} exponents, {} codes",
            matrix.rows,
            matrix.columns,
            matrix.widths.len(),
            matrix.exponents.len(),
            matrix.codes.len()
        )));
    }
    Ok(())
}

fn check_dense(dense: &Dense, rows: usize, columns: usize, what: &str) -> Result<()> {
    check_matrix(&dense.weight, rows, columns, what)?;
    check_length(
        dense.bias.as_deref().unwrap_or(&[]),
        if dense.bias.is_some() { rows } else { 0 },
        what,
    )
}

fn check_length(values: &[f32], expected: usize, what: &str) -> Result<()> {
    if values.len() != expected {
        return Err(RuntimeError::Invalid(format!(
            "{what}: {} values where {expected} belong",
            values.len()
        )));
    }
    Ok(())
}

fn check_norm(norm: &Norm, features: usize, what: &str) -> Result<()> {
    check_length(&norm.weight, features, what)?;
    check_length(&norm.bias, features, what)
}

impl Layer {
    /// Checks that the layer's tensors have the lengths its own dimensions imply, and that its
    /// epsilon is a finite, non-negative number.
    fn check_tensors(&self) -> Result<()> {
        let eps = match self {
            Layer::BatchNorm(norm) => vec![norm.eps],
            Layer::LayerNorm(norm) => vec![norm.eps],
            Layer::TransformerBlock(block) => vec![block.attention_norm.eps, block.mlp_norm.eps],
            _ => Vec::new(),
        };
        if let Some(eps) = eps.into_iter().find(|e| !(e.is_finite() && *e >= 0.0)) {
            return Err(RuntimeError::Invalid(format!(
                "epsilon {eps} is not a finite, non-negative number"
            )));
        }
        match self {
            Layer::Conv2d {
                in_channels,
                kernel,
                groups,
                dense,
                ..
            } => {
                if *groups == 0 || in_channels % groups != 0 {
                    return Err(RuntimeError::Invalid(format!(
                        "conv of {in_channels} channels in {groups} groups"
                    )));
                }
                let columns = (in_channels / groups).saturating_mul(kernel.saturating_mul(*kernel));
                check_dense(dense, dense.weight.rows, columns, "conv")
            }
            Layer::Linear(dense) => {
                check_dense(dense, dense.weight.rows, dense.weight.columns, "linear")
            }
            Layer::Add {
                projection: Some((dense, _)),
            } => {
                if dense.bias.is_some() {
                    return Err(RuntimeError::Invalid(
                        "a residual projection has no bias".into(),
                    ));
                }
                check_dense(dense, dense.weight.rows, dense.weight.columns, "projection")
            }
            Layer::BatchNorm(norm) => {
                let channels = norm.mean.len();
                check_length(&norm.variance, channels, "batch norm variance")?;
                if let Some((scale, shift)) = &norm.affine {
                    check_length(scale, channels, "batch norm scale")?;
                    check_length(shift, channels, "batch norm shift")?;
                }
                Ok(())
            }
            Layer::Embedding {
                token,
                position,
                vocab_size,
                context,
                d_model,
            } => {
                check_length(
                    token,
                    vocab_size.saturating_mul(*d_model),
                    "token embedding",
                )?;
                check_length(
                    position,
                    context.saturating_mul(*d_model),
                    "position embedding",
                )
            }
            Layer::TransformerBlock(block) => {
                let (d, width, hidden) = (
                    block.d_model,
                    block.heads.saturating_mul(block.head_dim),
                    block.hidden,
                );
                check_norm(&block.attention_norm, d, "attention norm")?;
                check_dense(&block.query, width, d, "query")?;
                check_dense(&block.key, width, d, "key")?;
                check_dense(&block.value, width, d, "value")?;
                check_dense(&block.projection, d, width, "projection")?;
                check_norm(&block.mlp_norm, d, "mlp norm")?;
                check_dense(&block.mlp_in, hidden, d, "mlp_in")?;
                check_dense(&block.mlp_out, d, hidden, "mlp_out")?;
                let bias = block.query.bias.is_some();
                let dense = [
                    &block.key,
                    &block.value,
                    &block.projection,
                    &block.mlp_in,
                    &block.mlp_out,
                ];
                if dense.iter().any(|d| d.bias.is_some() != bias)
                    || block.heads == 0
                    || block.head_dim == 0
                {
                    return Err(RuntimeError::Invalid(
                        "a block's linear layers must all have biases or none, and at least one head".into(),
                    ));
                }
                Ok(())
            }
            Layer::LayerNorm(norm) => check_norm(norm, norm.weight.len(), "layer norm"),
            Layer::Relu
            | Layer::MaxPool(_)
            | Layer::AvgPool(_)
            | Layer::GlobalAvgPool
            | Layer::Flatten
            | Layer::Residual
            | Layer::Add { projection: None } => Ok(()),
        }
    }
}

/// Most f32 values one image's or window's activations, or one convolution's work buffers,
/// may hold (256 MiB): a file that is small but describes a huge computation is rejected
/// rather than allowed to exhaust memory.
pub const MAX_ACTIVATION: usize = 1 << 26;

/// `a * b * ...` if it stays within [`MAX_ACTIVATION`].
fn bounded(factors: &[usize]) -> Option<usize> {
    factors
        .iter()
        .try_fold(1usize, |product, &factor| product.checked_mul(factor))
        .filter(|&product| product <= MAX_ACTIVATION)
}

impl PackedModel {
    /// Checks that the layers fit the input and each other, and that no activation or work
    /// buffer would exceed [`MAX_ACTIVATION`]; returns the number of outputs (classes, or
    /// vocabulary size for a language model).
    pub fn validate(&self) -> Result<usize> {
        let invalid = |message: String| Err(RuntimeError::Invalid(message));
        if let Some(n) = &self.metadata.normalization {
            let finite = n.mean.iter().chain(&n.std).all(|v| v.is_finite());
            if !finite || n.std.iter().any(|&s| s <= 0.0) {
                return invalid(format!(
                    "normalisation mean {:?} and std {:?} (each std must be positive)",
                    n.mean, n.std
                ));
            }
            let channels = self.metadata.input.first().copied().unwrap_or(0);
            let fits = |len: usize| len == 1 || (len == channels && self.metadata.input.len() == 3);
            if n.mean.len() != n.std.len() || !fits(n.mean.len()) {
                return invalid(format!(
                    "normalisation has {} means and {} deviations for an input of {:?}",
                    n.mean.len(),
                    n.std.len(),
                    self.metadata.input
                ));
            }
        }
        let input = &self.metadata.input;
        if input.iter().any(|&d| d > crate::format::MAX_DIMENSION) || bounded(input).is_none() {
            return invalid(format!("input shape {input:?} is too large"));
        }
        let first = Shape::of_input(input).map_err(RuntimeError::Invalid)?;
        let mut shape = first;
        for (index, layer) in self.layers.iter().enumerate() {
            let at = |message: String| RuntimeError::Invalid(format!("layer {index}: {message}"));
            layer.check_tensors().map_err(|e| at(e.to_string()))?;
            let next = layer.spec().output_shape(shape).map_err(at)?;
            if next
                .values()
                .and_then(|values| bounded(&[values]))
                .is_none()
            {
                return Err(at(format!("an activation of {next:?} is too large")));
            }
            if let (
                Layer::Conv2d {
                    kernel, padding, ..
                },
                Shape::Map {
                    channels,
                    height,
                    width,
                },
                Shape::Map {
                    channels: rows,
                    height: oh,
                    width: ow,
                },
            ) = (layer, shape, next)
            {
                // The convolution's buffers: padded planes copied per kernel column, the
                // product of a row per tap and output channel, and the output.
                let (ph, pw) = (height + 2 * padding, width + 2 * padding);
                if bounded(&[channels, *kernel, ph, pw]).is_none()
                    || bounded(&[*kernel, *kernel, rows + 16, ph, pw]).is_none()
                    || bounded(&[rows, oh, ow]).is_none()
                {
                    return Err(at(format!(
                        "conv with padding {padding} on {height}x{width} is too large"
                    )));
                }
            }
            shape = next;
        }
        // Each layer fits the one before; every residual block's add fits its kept activation.
        let specs: Vec<LayerSpec> = self.layers.iter().map(Layer::spec).collect();
        crate::layers::walk(&specs, first).map_err(|(index, message)| {
            RuntimeError::Invalid(format!("layer {index}: {message}"))
        })?;
        let outputs = match shape {
            Shape::Flat { features } | Shape::Sequence { features, .. } => features,
            other => {
                return invalid(format!(
                    "the network ends in {other:?}, not in a vector of outputs"
                ))
            }
        };
        if let Some(vocabulary) = &self.metadata.vocabulary {
            let symbols = vocabulary.chars().count();
            if symbols != outputs {
                return invalid(format!(
                    "vocabulary of {symbols} symbols for {outputs} outputs"
                ));
            }
        }
        if let Some(classes) = &self.metadata.classes {
            if classes.len() != outputs {
                return invalid(format!(
                    "{} class names for {outputs} outputs",
                    classes.len()
                ));
            }
        }
        Ok(outputs)
    }
}
