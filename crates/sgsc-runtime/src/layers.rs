//! Every layer kind, described once: what the description section stores of it
//! ([`LayerSpec`]), which tensors the data section stores for it, named and shaped as PyTorch
//! names and shapes them ([`LayerSpec::stored_tensors`]), and which activation shapes it takes
//! and makes ([`LayerSpec::output_shape`]). The file's reader and writer, the model's checks
//! and the float export follow the tensor list, so they hold no code per kind.
//!
//! Each back end implements the kinds in its own place: the training network
//! (`sgsc::models::network`), this crate's f32 inference ([`crate::inference`] and its kernels),
//! the ONNX writer (`sgsc::pack::onnx`). All of them walk shapes with this one rule, so a network
//! that trains also exports and runs.

use crate::prelude::*;
use serde::{Deserialize, Serialize};

/// The activation shape between two layers, for one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Feature maps `[channels, height, width]`.
    Map {
        /// Channels.
        channels: usize,
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
    /// A vector.
    Flat {
        /// Its length.
        features: usize,
    },
    /// Token ids, one per position.
    Tokens {
        /// Positions.
        length: usize,
    },
    /// A vector per position.
    Sequence {
        /// Positions.
        length: usize,
        /// Features per position.
        features: usize,
    },
}

impl Shape {
    /// The shape of a model's input: `[c, h, w]` for images, `[context]` for token ids.
    pub fn of_input(input: &[usize]) -> Result<Shape, String> {
        match *input {
            [channels, height, width] if channels > 0 && height > 0 && width > 0 => Ok(Shape::Map {
                channels,
                height,
                width,
            }),
            [length] if length > 0 => Ok(Shape::Tokens { length }),
            _ => Err(format!(
                "input shape {input:?} is neither [channels, height, width] nor [context] (all positive)"
            )),
        }
    }

    /// `(channels, height, width)` of a map; a vector or sequence is `(values, 1, 1)`.
    pub fn map(&self) -> (usize, usize, usize) {
        match *self {
            Shape::Map {
                channels,
                height,
                width,
            } => (channels, height, width),
            _ => (self.values().unwrap_or(0), 1, 1),
        }
    }

    /// Values of one input's activation (`None` on overflow).
    pub fn values(&self) -> Option<usize> {
        match *self {
            Shape::Map {
                channels,
                height,
                width,
            } => channels.checked_mul(height)?.checked_mul(width),
            Shape::Flat { features } => Some(features),
            Shape::Tokens { length } => Some(length),
            Shape::Sequence { length, features } => length.checked_mul(features),
        }
    }
}

/// A pooling window: square, with its own stride and zero padding. Files written before
/// stride and padding existed hold only `kernel` (stride = kernel, no padding), and a pool with
/// those defaults is still written that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Window side.
    pub kernel: usize,
    /// Step between windows (default: the window side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<usize>,
    /// Padding on each side (default 0). Max pooling pads with minus infinity, average pooling
    /// with zeros that count in the average (the divisor is always `kernel * kernel`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub padding: usize,
}

fn is_zero(value: &usize) -> bool {
    *value == 0
}

fn one() -> usize {
    1
}

fn is_one(value: &usize) -> bool {
    *value == 1
}

impl Pool {
    /// The step between windows.
    pub fn stride(&self) -> usize {
        self.stride.unwrap_or(self.kernel)
    }

    /// Output side for an input side, or why the window does not fit. As in PyTorch, the
    /// padding is at most half the window, and the last partial window is dropped.
    pub fn output_side(&self, side: usize) -> Result<usize, String> {
        let (kernel, stride, padding) = (self.kernel, self.stride(), self.padding);
        if kernel == 0 || stride == 0 || padding > kernel / 2 {
            return Err(format!(
                "pool window {kernel}, stride {stride}, padding {padding}: the window and stride must be positive and the padding at most half the window"
            ));
        }
        windows(side, kernel, stride, padding)
            .ok_or_else(|| format!("pool window {kernel} larger than its padded input {side}"))
    }
}

/// How many windows of side `kernel`, `stride` apart, fit a side of `side` padded by `padding`
/// at each end, as PyTorch counts them (the last partial window dropped): `None` when none
/// fits, the kernel or stride is 0, or the padded side overflows.
fn windows(side: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = padding.checked_mul(2)?.checked_add(side)?;
    (kernel > 0 && stride > 0 && padded >= kernel).then(|| (padded - kernel) / stride + 1)
}

/// The shape-only description of a layer, as the description section stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// 2-D convolution, square kernel, weights `[out, in * kernel * kernel]`.
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding.
        padding: usize,
        /// Has a bias.
        bias: bool,
        /// Channel groups, each convolved on its own: 1 for an ordinary convolution, the input
        /// channels for a depthwise one (written only when not 1).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        groups: usize,
    },
    /// Fully connected layer, on a vector or on each position of a sequence.
    Linear {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
        /// Has a bias.
        bias: bool,
    },
    /// Rectified linear unit.
    Relu,
    /// Batch normalisation per channel of a feature map, or per feature of a vector.
    BatchNorm {
        /// Channels.
        channels: usize,
        /// Has scale and shift.
        affine: bool,
        /// Epsilon.
        eps: f32,
    },
    /// Max pooling over square windows.
    MaxPool(Pool),
    /// Average pooling over square windows.
    AvgPool(Pool),
    /// The mean of each channel's map: `[c, h, w]` to `[c, 1, 1]`.
    GlobalAvgPool,
    /// Channel-major flattening of `[c, h, w]` (nothing on a vector).
    Flatten,
    /// Token plus position embedding.
    Embedding {
        /// Symbols.
        vocab_size: usize,
        /// Positions.
        context: usize,
        /// Width.
        d_model: usize,
    },
    /// Pre-LayerNorm transformer block.
    TransformerBlock {
        /// Width of the residual stream.
        d_model: usize,
        /// Heads.
        heads: usize,
        /// Head width.
        head_dim: usize,
        /// MLP hidden units.
        hidden: usize,
        /// Linear layers have biases.
        bias: bool,
        /// Layer-norm epsilon.
        eps: f32,
    },
    /// Layer normalisation over the features of each position.
    LayerNorm {
        /// Features.
        features: usize,
        /// Epsilon.
        eps: f32,
    },
    /// Starts a residual block: the activation here is kept for the `add` that ends the block.
    Residual,
    /// Ends the innermost residual block: adds the activation kept at its start, through a
    /// projection when the block changed its shape.
    Add {
        /// The 1x1 convolution of the kept activation, when the shapes differ.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        projection: Option<Projection>,
    },
}

/// A residual block's projection: a 1x1 convolution without bias, quantized per output channel,
/// weights `[out_channels, in_channels]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Projection {
    /// Channels of the kept activation.
    pub in_channels: usize,
    /// Channels of the block's output.
    pub out_channels: usize,
    /// Stride.
    pub stride: usize,
}

impl Projection {
    /// The projection that takes a block's kept activation `skip` to its output `output`, if
    /// one does (`None` when no projection is needed).
    pub fn between(skip: Shape, output: Shape) -> Result<Option<Projection>, String> {
        if skip == output {
            return Ok(None);
        }
        let (
            Shape::Map {
                channels: in_channels,
                height,
                width,
            },
            Shape::Map {
                channels: out_channels,
                ..
            },
        ) = (skip, output)
        else {
            return Err(format!(
                "a residual block takes {skip:?} to {output:?}: only feature maps are projected"
            ));
        };
        (1..=height.max(width))
            .map(|stride| Projection {
                in_channels,
                out_channels,
                stride,
            })
            .find(|projection| projection.output(skip) == Ok(output))
            .map(Some)
            .ok_or_else(|| {
                format!("no 1x1 convolution takes {skip:?} to {output:?} (a {height}x{width} map)")
            })
    }

    /// The shape it makes of the kept activation.
    pub fn output(&self, skip: Shape) -> Result<Shape, String> {
        match skip {
            Shape::Map {
                channels,
                height,
                width,
            } if channels == self.in_channels && self.stride > 0 && self.out_channels > 0 => {
                Ok(Shape::Map {
                    channels: self.out_channels,
                    height: (height - 1) / self.stride + 1,
                    width: (width - 1) / self.stride + 1,
                })
            }
            _ => Err(format!("{self:?} cannot take {skip:?}")),
        }
    }
}

/// How a stored tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Integer codes quantized per row (the first dimension), each row at its own width with
    /// its own exponent: the weights of conv and linear layers.
    Codes,
    /// Plain f32 values: biases, normalisation statistics and scales, embeddings.
    Floats,
    /// f32 values that must not be negative (a batch norm's running variance).
    NonNegative,
}

/// One tensor a layer stores, in the order of the data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    /// Its name within the layer, as PyTorch names it (`weight`, `running_var`,
    /// `query.bias`, ...); `layers.{index}.{name}` names it in a model.
    pub name: &'static str,
    /// Its shape, as PyTorch shapes it (a convolution's weights `[out, in / groups, k, k]`).
    pub shape: Vec<usize>,
    /// How it is stored.
    pub storage: Storage,
}

impl StoredTensor {
    /// Rows (the first dimension; 1 for a scalar) and values per row, or `None` on overflow.
    pub fn rows_and_columns(&self) -> Option<(usize, usize)> {
        let rows = self.shape.first().copied().unwrap_or(1);
        let columns = self
            .shape
            .iter()
            .skip(1)
            .try_fold(1usize, |product, &side| product.checked_mul(side))?;
        Some((rows, columns))
    }

    /// Values in all (`None` on overflow).
    pub fn values(&self) -> Option<usize> {
        let (rows, columns) = self.rows_and_columns()?;
        rows.checked_mul(columns)
    }
}

/// The output shape of every layer of a network on `input`, checking that each layer fits the
/// one before and that every residual block's `add` fits the activation kept at its start.
pub fn walk(layers: &[LayerSpec], input: Shape) -> Result<Vec<Shape>, (usize, String)> {
    let mut kept = Vec::new();
    let mut shape = input;
    let mut shapes = Vec::with_capacity(layers.len());
    for (index, layer) in layers.iter().enumerate() {
        let at = |message: String| (index, message);
        shape = layer.output_shape(shape).map_err(at)?;
        match layer {
            LayerSpec::Residual => kept.push(shape),
            LayerSpec::Add { projection } => {
                let skip = kept
                    .pop()
                    .ok_or_else(|| at("an add without a residual block to end".into()))?;
                let projected = match projection {
                    Some(projection) => projection.output(skip).map_err(at)?,
                    None => skip,
                };
                if projected != shape {
                    return Err(at(format!(
                        "the block's output {shape:?} and its kept activation {projected:?} differ"
                    )));
                }
            }
            _ => {}
        }
        shapes.push(shape);
    }
    if !kept.is_empty() {
        return Err((
            layers.len(),
            "a residual block is never ended by an add".into(),
        ));
    }
    Ok(shapes)
}

impl LayerSpec {
    /// The kind's name, as configs and files write its `type` (every kind has one: a new kind
    /// does not compile until it is named here).
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::Linear { .. } => "linear",
            LayerSpec::Relu => "relu",
            LayerSpec::BatchNorm { .. } => "batch_norm",
            LayerSpec::MaxPool(_) => "max_pool",
            LayerSpec::AvgPool(_) => "avg_pool",
            LayerSpec::GlobalAvgPool => "global_avg_pool",
            LayerSpec::Flatten => "flatten",
            LayerSpec::Embedding { .. } => "embedding",
            LayerSpec::TransformerBlock { .. } => "transformer_block",
            LayerSpec::LayerNorm { .. } => "layer_norm",
            LayerSpec::Residual => "residual",
            LayerSpec::Add { .. } => "add",
        }
    }

    /// The tensors a layer of this description stores, in file order.
    pub fn stored_tensors(&self) -> Vec<StoredTensor> {
        let tensor = |name, shape: &[usize], storage| StoredTensor {
            name,
            shape: shape.to_vec(),
            storage,
        };
        let codes = |name, shape: &[usize]| tensor(name, shape, Storage::Codes);
        let floats = |name, shape: &[usize]| tensor(name, shape, Storage::Floats);
        let mut tensors = Vec::new();
        match *self {
            LayerSpec::Conv2d {
                in_channels,
                out_channels,
                kernel,
                bias,
                groups,
                ..
            } => {
                let fan_in = in_channels / groups.max(1);
                tensors.push(codes("weight", &[out_channels, fan_in, kernel, kernel]));
                if bias {
                    tensors.push(floats("bias", &[out_channels]));
                }
            }
            LayerSpec::Linear {
                in_features,
                out_features,
                bias,
            } => {
                tensors.push(codes("weight", &[out_features, in_features]));
                if bias {
                    tensors.push(floats("bias", &[out_features]));
                }
            }
            LayerSpec::BatchNorm {
                channels, affine, ..
            } => {
                tensors.push(floats("running_mean", &[channels]));
                tensors.push(tensor("running_var", &[channels], Storage::NonNegative));
                if affine {
                    tensors.push(floats("weight", &[channels]));
                    tensors.push(floats("bias", &[channels]));
                }
            }
            LayerSpec::Embedding {
                vocab_size,
                context,
                d_model,
            } => {
                tensors.push(floats("token.weight", &[vocab_size, d_model]));
                tensors.push(floats("position.weight", &[context, d_model]));
            }
            LayerSpec::TransformerBlock {
                d_model,
                heads,
                head_dim,
                hidden,
                bias,
                ..
            } => {
                let width = heads.saturating_mul(head_dim);
                let linear = |tensors: &mut Vec<StoredTensor>, weight, bias_name, out, input| {
                    tensors.push(codes(weight, &[out, input]));
                    if bias {
                        tensors.push(floats(bias_name, &[out]));
                    }
                };
                tensors.push(floats("attention_norm.weight", &[d_model]));
                tensors.push(floats("attention_norm.bias", &[d_model]));
                linear(&mut tensors, "query.weight", "query.bias", width, d_model);
                linear(&mut tensors, "key.weight", "key.bias", width, d_model);
                linear(&mut tensors, "value.weight", "value.bias", width, d_model);
                linear(
                    &mut tensors,
                    "projection.weight",
                    "projection.bias",
                    d_model,
                    width,
                );
                tensors.push(floats("mlp_norm.weight", &[d_model]));
                tensors.push(floats("mlp_norm.bias", &[d_model]));
                linear(
                    &mut tensors,
                    "mlp_in.weight",
                    "mlp_in.bias",
                    hidden,
                    d_model,
                );
                linear(
                    &mut tensors,
                    "mlp_out.weight",
                    "mlp_out.bias",
                    d_model,
                    hidden,
                );
            }
            LayerSpec::LayerNorm { features, .. } => {
                tensors.push(floats("weight", &[features]));
                tensors.push(floats("bias", &[features]));
            }
            LayerSpec::Add {
                projection: Some(projection),
            } => tensors.push(codes(
                "projection.weight",
                &[projection.out_channels, projection.in_channels, 1, 1],
            )),
            LayerSpec::Relu
            | LayerSpec::MaxPool(_)
            | LayerSpec::AvgPool(_)
            | LayerSpec::GlobalAvgPool
            | LayerSpec::Flatten
            | LayerSpec::Residual
            | LayerSpec::Add { projection: None } => {}
        }
        tensors
    }

    /// The shape this layer makes of `input`, or why it cannot take it (or any input: an
    /// epsilon that is not a finite, non-negative number, a block without heads).
    pub fn output_shape(&self, input: Shape) -> Result<Shape, String> {
        let mismatch = || {
            Err(format!(
                "{self:?} cannot take an activation of shape {input:?}"
            ))
        };
        match *self {
            LayerSpec::BatchNorm { eps, .. }
            | LayerSpec::LayerNorm { eps, .. }
            | LayerSpec::TransformerBlock { eps, .. }
                if !(eps.is_finite() && eps >= 0.0) =>
            {
                return Err(format!(
                    "epsilon {eps} is not a finite, non-negative number"
                ));
            }
            LayerSpec::TransformerBlock {
                heads,
                head_dim,
                hidden,
                ..
            } if heads == 0 || head_dim == 0 || hidden == 0 => {
                return Err(format!(
                    "a block of {heads} heads of width {head_dim} and {hidden} hidden units: none may be 0"
                ));
            }
            _ => {}
        }
        match (self, input) {
            (
                &LayerSpec::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    groups,
                    ..
                },
                Shape::Map {
                    channels,
                    height,
                    width,
                },
            ) => {
                if in_channels != channels || out_channels == 0 || kernel == 0 || stride == 0 {
                    return Err(format!(
                        "conv of {in_channels} to {out_channels} channels, kernel {kernel}, stride {stride} on {channels} channels"
                    ));
                }
                if groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
                    return Err(format!(
                        "conv of {in_channels} to {out_channels} channels in {groups} groups: the groups must divide both"
                    ));
                }
                let side = |side: usize| {
                    windows(side, kernel, stride, padding).ok_or_else(|| {
                        format!(
                            "kernel {kernel} does not fit its {height}x{width} input padded by {padding} (or the padding is too large)"
                        )
                    })
                };
                Ok(Shape::Map {
                    channels: out_channels,
                    height: side(height)?,
                    width: side(width)?,
                })
            }
            (
                &LayerSpec::Linear {
                    in_features,
                    out_features,
                    ..
                },
                Shape::Flat { features } | Shape::Sequence { features, .. },
            ) => {
                if in_features != features || out_features == 0 {
                    return Err(format!(
                        "linear of {in_features} to {out_features} features on {features}"
                    ));
                }
                Ok(match input {
                    Shape::Sequence { length, .. } => Shape::Sequence {
                        length,
                        features: out_features,
                    },
                    _ => Shape::Flat {
                        features: out_features,
                    },
                })
            }
            (LayerSpec::Relu, Shape::Tokens { .. }) => mismatch(),
            (LayerSpec::Relu, shape) => Ok(shape),
            (
                &LayerSpec::BatchNorm { channels, .. },
                Shape::Map {
                    channels: features, ..
                }
                | Shape::Flat { features },
            ) => {
                if channels != features {
                    return Err(format!("batch norm of {channels} channels on {features}"));
                }
                Ok(input)
            }
            (
                LayerSpec::MaxPool(pool) | LayerSpec::AvgPool(pool),
                Shape::Map {
                    channels,
                    height,
                    width,
                },
            ) => Ok(Shape::Map {
                channels,
                height: pool.output_side(height)?,
                width: pool.output_side(width)?,
            }),
            (LayerSpec::GlobalAvgPool, Shape::Map { channels, .. }) => Ok(Shape::Map {
                channels,
                height: 1,
                width: 1,
            }),
            (LayerSpec::Flatten, Shape::Map { .. } | Shape::Flat { .. }) => Ok(Shape::Flat {
                features: input.values().ok_or("flattened input too large")?,
            }),
            (
                &LayerSpec::Embedding {
                    vocab_size,
                    context,
                    d_model,
                },
                Shape::Tokens { length },
            ) => {
                if length > context || vocab_size == 0 || d_model == 0 {
                    return Err(format!(
                        "embedding of {vocab_size} symbols, {context} positions and width {d_model} on {length} positions"
                    ));
                }
                Ok(Shape::Sequence {
                    length,
                    features: d_model,
                })
            }
            (LayerSpec::Residual | LayerSpec::Add { .. }, Shape::Tokens { .. }) => mismatch(),
            (LayerSpec::Residual | LayerSpec::Add { .. }, shape) => Ok(shape),
            (&LayerSpec::TransformerBlock { d_model, .. }, Shape::Sequence { features, .. })
            | (
                &LayerSpec::LayerNorm {
                    features: d_model, ..
                },
                Shape::Sequence { features, .. },
            ) => {
                if d_model != features {
                    return Err(format!("{self:?} on {features} features"));
                }
                Ok(input)
            }
            _ => mismatch(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(channels: usize, height: usize, width: usize) -> Shape {
        Shape::Map {
            channels,
            height,
            width,
        }
    }

    #[test]
    fn pools_follow_pytorchs_output_sizes() {
        let pool = |kernel, stride, padding| Pool {
            kernel,
            stride,
            padding,
        };
        // floor((side + 2 padding - kernel) / stride) + 1, by hand.
        assert_eq!(pool(2, None, 0).output_side(7), Ok(3));
        assert_eq!(pool(3, Some(2), 1).output_side(7), Ok(4));
        assert_eq!(pool(3, Some(1), 1).output_side(5), Ok(5));
        assert!(
            pool(3, Some(2), 2).output_side(7).is_err(),
            "padding over half"
        );
        assert!(pool(4, None, 0).output_side(3).is_err(), "window too large");
        assert!(pool(0, None, 0).output_side(3).is_err());
        let spec = LayerSpec::AvgPool(pool(3, Some(2), 1));
        assert_eq!(spec.output_shape(map(5, 7, 8)), Ok(map(5, 4, 4)));
        assert_eq!(
            LayerSpec::GlobalAvgPool.output_shape(map(5, 7, 8)),
            Ok(map(5, 1, 1))
        );
        assert!(LayerSpec::GlobalAvgPool
            .output_shape(Shape::Flat { features: 3 })
            .is_err());
    }

    #[test]
    fn a_default_pool_is_written_as_before_and_both_forms_are_read() {
        let old = LayerSpec::MaxPool(Pool {
            kernel: 2,
            stride: None,
            padding: 0,
        });
        let json = serde_json::to_string(&old).unwrap();
        assert_eq!(json, r#"{"type":"max_pool","kernel":2}"#);
        let new: LayerSpec =
            serde_json::from_str(r#"{"type":"avg_pool","kernel":3,"stride":1,"padding":1}"#)
                .unwrap();
        assert_eq!(
            new,
            LayerSpec::AvgPool(Pool {
                kernel: 3,
                stride: Some(1),
                padding: 1
            })
        );
        assert!(
            serde_json::from_str::<LayerSpec>(r#"{"type":"max_pool","kernel":2,"size":1}"#)
                .is_err()
        );
    }

    #[test]
    fn shapes_are_checked_where_layers_meet() {
        let conv = |in_channels, groups| LayerSpec::Conv2d {
            in_channels,
            out_channels: 4,
            kernel: 3,
            stride: 2,
            padding: 1,
            bias: false,
            groups,
        };
        assert_eq!(conv(1, 1).output_shape(map(1, 28, 28)), Ok(map(4, 14, 14)));
        assert!(conv(1, 1).output_shape(map(2, 28, 28)).is_err());
        assert_eq!(conv(4, 4).output_shape(map(4, 8, 8)), Ok(map(4, 4, 4)));
        assert!(
            conv(6, 3).output_shape(map(6, 8, 8)).is_err(),
            "3 groups of 4 outputs"
        );
        let json = serde_json::to_string(&conv(1, 1)).unwrap();
        assert!(
            !json.contains("groups"),
            "one group is written as before: {json}"
        );
        let norm = LayerSpec::BatchNorm {
            channels: 10,
            affine: true,
            eps: 1e-5,
        };
        let flat = Shape::Flat { features: 10 };
        assert_eq!(norm.output_shape(flat), Ok(flat), "after a linear layer");
        assert_eq!(
            LayerSpec::Flatten.output_shape(map(4, 3, 2)),
            Ok(Shape::Flat { features: 24 })
        );
        assert!(LayerSpec::Relu
            .output_shape(Shape::Tokens { length: 3 })
            .is_err());
    }
}
