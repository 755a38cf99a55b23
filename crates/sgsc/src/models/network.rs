//! A feed-forward network built from a [`ModelConfig`], with quantized conv and linear layers.
//!
//! Besides running the layers, the network records how its quantized layers connect: which
//! quantized layer's channels feed each one (through ReLU, pooling, normalisation and flattening),
//! and how many weights each input channel owns. The size term and the size report use this to
//! count *live* fan-in: inputs coming from dead channels cost nothing.

use super::config::{LayerSpec, ModelConfig, Pool, Projection, Shape};
use super::transformer::{Embedding, LayerNorm, TransformerBlock, BLOCK_PARTS, LAYER_NORM_EPS};
use crate::error::{Error, Result};
use crate::quant::QuantizedWeight;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// Batch-norm momentum (PyTorch's default).
const BATCH_NORM_MOMENTUM: f64 = 0.1;
/// Batch-norm epsilon (PyTorch's default).
pub const BATCH_NORM_EPS: f64 = 1e-5;

/// Which optimizer group a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterGroup {
    /// Weights, biases and normalisation scales: the ordinary learning rate.
    Weights,
    /// Bit depths and exponents: their own learning rate and Adam epsilon (METHOD.md §1).
    Quantizer,
}

/// A convolution with quantized weights.
#[derive(Debug)]
pub struct Conv2d {
    /// Weights `[out, in / groups, k, k]` with their quantizer.
    pub weight: QuantizedWeight,
    /// Optional bias `[out]` (kept in float).
    pub bias: Option<Tensor>,
    /// Stride.
    pub stride: i64,
    /// Zero padding.
    pub padding: i64,
    /// Channel groups, each convolved on its own (1: an ordinary convolution).
    pub groups: i64,
}

/// A fully connected layer with quantized weights.
#[derive(Debug)]
pub struct Linear {
    /// Weights `[out, in]` with their quantizer.
    pub weight: QuantizedWeight,
    /// Optional bias `[out]` (kept in float).
    pub bias: Option<Tensor>,
}

/// Batch normalisation with running statistics and an optional affine scale and shift.
#[derive(Debug)]
pub struct BatchNorm {
    /// Running mean per channel.
    pub running_mean: Tensor,
    /// Running variance per channel.
    pub running_var: Tensor,
    /// Scale and shift per channel, when the layer is affine.
    pub affine: Option<(Tensor, Tensor)>,
}

/// One built layer.
#[derive(Debug)]
pub enum Layer {
    /// Quantized convolution.
    Conv2d(Conv2d),
    /// Quantized fully connected layer.
    Linear(Linear),
    /// Rectified linear unit.
    Relu,
    /// Batch normalisation.
    BatchNorm(BatchNorm),
    /// Max pooling.
    MaxPool(Pool),
    /// Average pooling (padding counts as zeros).
    AvgPool(Pool),
    /// The mean of each channel's map.
    GlobalAvgPool,
    /// Channel-major flattening.
    Flatten,
    /// Token and position embeddings.
    Embedding(Embedding),
    /// A pre-LayerNorm transformer block (six quantized linear layers).
    TransformerBlock(Box<TransformerBlock>),
    /// Layer normalisation.
    LayerNorm(LayerNorm),
    /// Starts a residual block: keeps the activation.
    Residual,
    /// Ends a residual block: adds the kept activation, through a 1x1 projection (a
    /// convolution without bias) when the block changed the shape.
    Add(Option<Conv2d>),
}

/// How one quantized layer sits in the network.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedLayerInfo {
    /// Index of the layer in [`Network::layers`].
    pub layer: usize,
    /// Which linear layer of a transformer block (an index into
    /// [`BLOCK_PARTS`](super::transformer::BLOCK_PARTS)); 0 for conv and linear layers.
    pub part: usize,
    /// Name prefix of its tensors, e.g. `layers.0` or `layers.1.query`.
    pub name: String,
    /// Index (into [`Network::quantized`]) of the quantized layer whose output channels are this
    /// layer's input channels; `None` when the input is the network's input.
    pub source: Option<usize>,
    /// Input channels (for a linear layer after flattening: the channels before flattening).
    pub input_channels: i64,
    /// Weights each input channel owns per output channel (`k*k` for convs, `h*w` for a linear
    /// layer after flattening a `[c, h, w]` map, 1 otherwise).
    pub positions_per_input: i64,
    /// Index (into [`Network::layers`]) of the batch norm that normalises this layer's channels.
    pub norm: Option<usize>,
    /// Channel groups of a convolution (1 otherwise). With more, each output channel reads only
    /// its group's `input_channels` inputs. A depthwise convolution's channels go with their
    /// input channels; the channels of any other grouped convolution, and of the layer feeding
    /// one, are never removed (groups of unequal sizes).
    pub groups: i64,
    /// Whether its channels are (or are added into) a residual stream: the layer before a
    /// residual block, the last quantized layer of the block, and the block's projection. Such
    /// channels are never removed (docs/method.md).
    pub residual: bool,
}

impl QuantizedLayerInfo {
    /// Whether this is a depthwise convolution: every group reads one input channel, so each
    /// output channel goes with its input channel.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.input_channels == 1
    }

    /// The live inputs of each of this layer's channels, given how many channels of the layer
    /// feeding it are alive (`live_in`, asked only when that layer's dead channels count).
    pub fn live_inputs(&self, live_in: impl FnOnce(usize) -> i64) -> i64 {
        match self.source {
            Some(source) if self.groups == 1 => live_in(source),
            _ => self.input_channels,
        }
    }
}

/// A network built from a [`ModelConfig`].
#[derive(Debug)]
pub struct Network {
    /// The config it was built from.
    pub config: ModelConfig,
    /// The layers, in order.
    pub layers: Vec<Layer>,
    /// The quantized layers, in order, with their connections.
    pub quantized: Vec<QuantizedLayerInfo>,
    /// Size of the output vector.
    pub output_features: i64,
}

/// Which weights a forward pass multiplies by.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// The float weights `w`.
    Float,
    /// The quantized weights `q(w; b, e)`.
    Quantized,
    /// Weights given by the caller, one tensor per quantized layer (for example detached copies
    /// of the quantized weights, to take gradients with respect to them).
    Given(&'a [Tensor]),
}

/// Names a quantized layer's tensors under `prefix`: weight, bias, bit depth and exponent.
fn push_quantized(
    push: &mut impl FnMut(String, &Tensor, Option<ParameterGroup>),
    prefix: &str,
    weight: &QuantizedWeight,
    bias: Option<&Tensor>,
) {
    push(
        format!("{prefix}.weight"),
        &weight.weight,
        Some(ParameterGroup::Weights),
    );
    if let Some(bias) = bias {
        push(
            format!("{prefix}.bias"),
            bias,
            Some(ParameterGroup::Weights),
        );
    }
    push(
        format!("{prefix}.bit_depth"),
        &weight.bit_depth,
        Some(ParameterGroup::Quantizer),
    );
    push(
        format!("{prefix}.exponent"),
        &weight.exponent,
        Some(ParameterGroup::Quantizer),
    );
}

/// A named tensor of the network: a trainable parameter (with its group) or a buffer.
struct Entry {
    name: String,
    tensor: Tensor,
    group: Option<ParameterGroup>,
}

/// A pool's window, stride and padding on both axes, as libtorch takes them.
fn pool_window(pool: &Pool) -> ([i64; 2], [i64; 2], [i64; 2]) {
    let (kernel, stride, padding) = (
        pool.kernel as i64,
        pool.stride() as i64,
        pool.padding as i64,
    );
    ([kernel; 2], [stride; 2], [padding; 2])
}

fn uniform(shape: &[i64], bound: f64, device: Device) -> Result<Tensor> {
    Ok(Tensor::f_rand(shape, (Kind::Float, device))?
        .f_mul_scalar(2.0 * bound)?
        .f_sub_scalar(bound)?)
}

impl Network {
    /// Builds the network, checking every layer against the shape it receives. Weights start
    /// like PyTorch's defaults (uniform in ±1/sqrt(fan-in)) from libtorch's seeded generator, so
    /// call `tch::manual_seed` first for a reproducible start. Every quantized channel starts at
    /// `initial_bit_depth` bits. Tensors live on `device`.
    pub fn new(config: &ModelConfig, initial_bit_depth: f64, device: Device) -> Result<Self> {
        let bad = |index: usize, message: String| Error::Model(format!("layer {index}: {message}"));
        let input: Vec<usize> = config
            .input
            .iter()
            .map(|&side| usize::try_from(side).unwrap_or(0))
            .collect();
        let mut output = Shape::of_input(&input).map_err(Error::Model)?;
        let specs = config
            .specs()
            .map_err(|(index, message)| bad(index, message))?;
        let mut source: Option<usize> = None;
        let mut kept_sources: Vec<Option<usize>> = Vec::new();
        let mut positions_per_channel = 1i64;
        let mut layers = Vec::new();
        let mut quantized: Vec<QuantizedLayerInfo> = Vec::new();
        for (index, (spec, shape)) in specs.into_iter().enumerate() {
            let name = format!("layers.{index}");
            let next = spec
                .output_shape(shape)
                .map_err(|message| bad(index, message))?;
            let built = match spec {
                LayerSpec::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    bias,
                    groups,
                } => {
                    let (channels, out_channels, kernel, groups) = (
                        (in_channels / groups) as i64,
                        out_channels as i64,
                        kernel as i64,
                        groups as i64,
                    );
                    let bound = 1.0 / ((channels * kernel * kernel) as f64).sqrt();
                    let weight = uniform(&[out_channels, channels, kernel, kernel], bound, device)?;
                    quantized.push(QuantizedLayerInfo {
                        layer: index,
                        part: 0,
                        name,
                        source,
                        input_channels: channels,
                        positions_per_input: kernel * kernel,
                        norm: None,
                        groups,
                        residual: false,
                    });
                    source = Some(quantized.len() - 1);
                    positions_per_channel = 1;
                    Layer::Conv2d(Conv2d {
                        weight: QuantizedWeight::new(
                            weight.set_requires_grad(true),
                            initial_bit_depth,
                        )?,
                        bias: bias
                            .then(|| uniform(&[out_channels], bound, device))
                            .transpose()?
                            .map(|b| b.set_requires_grad(true)),
                        stride: stride as i64,
                        padding: padding as i64,
                        groups,
                    })
                }
                LayerSpec::Linear {
                    in_features,
                    out_features,
                    bias,
                } => {
                    let (features, out_features) = (in_features as i64, out_features as i64);
                    let bound = 1.0 / (features as f64).sqrt();
                    let weight = uniform(&[out_features, features], bound, device)?;
                    quantized.push(QuantizedLayerInfo {
                        layer: index,
                        part: 0,
                        name,
                        source,
                        input_channels: features / positions_per_channel,
                        positions_per_input: positions_per_channel,
                        norm: None,
                        groups: 1,
                        residual: false,
                    });
                    source = Some(quantized.len() - 1);
                    positions_per_channel = 1;
                    Layer::Linear(Linear {
                        weight: QuantizedWeight::new(
                            weight.set_requires_grad(true),
                            initial_bit_depth,
                        )?,
                        bias: bias
                            .then(|| uniform(&[out_features], bound, device))
                            .transpose()?
                            .map(|b| b.set_requires_grad(true)),
                    })
                }
                LayerSpec::Relu => Layer::Relu,
                LayerSpec::BatchNorm {
                    channels, affine, ..
                } => {
                    if positions_per_channel != 1 {
                        return Err(bad(
                            index,
                            "batch_norm right after flatten is not supported; place it before"
                                .into(),
                        ));
                    }
                    if let Some(source) = source {
                        quantized[source].norm = Some(index);
                    }
                    let ones = Tensor::f_ones([channels as i64], (Kind::Float, device))?;
                    let zeros = Tensor::f_zeros([channels as i64], (Kind::Float, device))?;
                    let affine = affine.then(|| {
                        (
                            ones.copy().set_requires_grad(true),
                            zeros.copy().set_requires_grad(true),
                        )
                    });
                    Layer::BatchNorm(BatchNorm {
                        running_mean: zeros,
                        running_var: ones,
                        affine,
                    })
                }
                LayerSpec::MaxPool(pool) => Layer::MaxPool(pool),
                LayerSpec::AvgPool(pool) => Layer::AvgPool(pool),
                LayerSpec::GlobalAvgPool => Layer::GlobalAvgPool,
                LayerSpec::Flatten => {
                    if let Shape::Map { height, width, .. } = shape {
                        positions_per_channel = (height * width) as i64;
                    }
                    Layer::Flatten
                }
                LayerSpec::Embedding {
                    vocab_size,
                    context,
                    d_model,
                } => {
                    source = None;
                    Layer::Embedding(Embedding::new(
                        vocab_size as i64,
                        context as i64,
                        d_model as i64,
                        device,
                    )?)
                }
                LayerSpec::TransformerBlock {
                    d_model,
                    heads,
                    hidden,
                    bias,
                    ..
                } => {
                    let block = TransformerBlock::new(
                        d_model as i64,
                        heads as i64,
                        (hidden / d_model) as i64,
                        bias,
                        initial_bit_depth,
                        device,
                    )
                    .map_err(|error| bad(index, error.to_string()))?;
                    // Query, key, value and the MLP's first layer read the residual stream
                    // (never removed); the projection reads the values, the MLP's second layer
                    // the hidden units.
                    let first = quantized.len();
                    for (part, linear) in block.parts.iter().enumerate() {
                        let source = match part {
                            3 => Some(first + 2),
                            5 => Some(first + 4),
                            _ => None,
                        };
                        quantized.push(QuantizedLayerInfo {
                            layer: index,
                            part,
                            name: format!("{name}.{}", BLOCK_PARTS[part]),
                            source,
                            input_channels: linear.weight.weight.size()[1],
                            positions_per_input: 1,
                            norm: None,
                            groups: 1,
                            residual: false,
                        });
                    }
                    source = None;
                    Layer::TransformerBlock(Box::new(block))
                }
                LayerSpec::LayerNorm { features, .. } => {
                    source = None;
                    Layer::LayerNorm(LayerNorm::new(features as i64, device)?)
                }
                LayerSpec::Residual => {
                    if let Some(source) = source {
                        quantized[source].residual = true;
                    }
                    kept_sources.push(source);
                    Layer::Residual
                }
                LayerSpec::Add { projection } => {
                    if let Some(source) = source {
                        quantized[source].residual = true;
                    }
                    let kept_source = kept_sources.pop().flatten();
                    let projection = projection
                        .map(|projection| -> Result<Conv2d> {
                            let (inputs, outputs) = (
                                projection.in_channels as i64,
                                projection.out_channels as i64,
                            );
                            let bound = 1.0 / (inputs as f64).sqrt();
                            let weight = uniform(&[outputs, inputs, 1, 1], bound, device)?;
                            quantized.push(QuantizedLayerInfo {
                                layer: index,
                                part: 0,
                                name: format!("{name}.projection"),
                                source: kept_source,
                                input_channels: inputs,
                                positions_per_input: 1,
                                norm: None,
                                groups: 1,
                                residual: true,
                            });
                            Ok(Conv2d {
                                weight: QuantizedWeight::new(
                                    weight.set_requires_grad(true),
                                    initial_bit_depth,
                                )?,
                                bias: None,
                                stride: projection.stride as i64,
                                padding: 0,
                                groups: 1,
                            })
                        })
                        .transpose()?;
                    source = None;
                    positions_per_channel = 1;
                    Layer::Add(projection)
                }
            };
            layers.push(built);
            output = next;
        }
        let output_features = match output {
            Shape::Flat { features } | Shape::Sequence { features, .. } => features as i64,
            _ => {
                return Err(Error::Model(
                    "the network must end with a flat output (flatten, then linear) or a sequence (a linear head)".into(),
                ))
            }
        };
        if quantized.is_empty() {
            return Err(Error::Model(
                "the network has no conv2d or linear layer to train".into(),
            ));
        }
        Ok(Network {
            config: config.clone(),
            layers,
            quantized,
            output_features,
        })
    }

    /// Runs the network. `train` selects batch statistics (and updates the running ones);
    /// `quantize` selects quantized weights `q(w; b, e)` instead of the float weights.
    pub fn forward(&self, input: &Tensor, train: bool, quantize: bool) -> Result<Tensor> {
        let weights = if quantize {
            Weights::Quantized
        } else {
            Weights::Float
        };
        Ok(self.forward_with_taps(input, train, weights, &[])?.0)
    }

    /// Runs the network with the chosen `weights`, and also returns the activations that leave
    /// the layers listed in `taps` (indices into [`Network::layers`]), in the order given. The activations are part
    /// of the autograd graph, so gradients with respect to them can be taken (Grad-CAM).
    pub fn forward_with_taps(
        &self,
        input: &Tensor,
        train: bool,
        weights: Weights,
        taps: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        if let Weights::Given(given) = weights {
            if given.len() != self.quantized.len() {
                return Err(Error::Model(format!(
                    "{} weights given for {} quantized layers",
                    given.len(),
                    self.quantized.len()
                )));
            }
        }
        let mut next_quantized = 0;
        let mut weight = |q: &QuantizedWeight| -> Result<Tensor> {
            let index = next_quantized;
            next_quantized += 1;
            Ok(match weights {
                Weights::Float => q.weight.shallow_clone(),
                Weights::Quantized => q.quantized()?,
                Weights::Given(given) => given[index].shallow_clone(),
            })
        };
        let mut tapped: Vec<Option<Tensor>> = taps.iter().map(|_| None).collect();
        let mut x = input.shallow_clone();
        let mut kept = Vec::new();
        for (index, layer) in self.layers.iter().enumerate() {
            x = match layer {
                Layer::Residual => {
                    kept.push(x.shallow_clone());
                    x
                }
                Layer::Add(projection) => {
                    let skip = kept
                        .pop()
                        .ok_or_else(|| Error::Model("an add without a residual block".into()))?;
                    let skip = match projection {
                        Some(conv) => skip.f_conv2d(
                            &weight(&conv.weight)?,
                            None::<&Tensor>,
                            [conv.stride, conv.stride],
                            [0, 0],
                            [1, 1],
                            1,
                        )?,
                        None => skip,
                    };
                    x.f_add(&skip)?
                }
                Layer::Conv2d(conv) => x.f_conv2d(
                    &weight(&conv.weight)?,
                    conv.bias.as_ref(),
                    [conv.stride, conv.stride],
                    [conv.padding, conv.padding],
                    [1, 1],
                    conv.groups,
                )?,
                Layer::Linear(linear) => {
                    x.f_linear(&weight(&linear.weight)?, linear.bias.as_ref())?
                }
                Layer::Relu => x.f_relu()?,
                Layer::BatchNorm(norm) => x.f_batch_norm(
                    norm.affine.as_ref().map(|(scale, _)| scale),
                    norm.affine.as_ref().map(|(_, shift)| shift),
                    Some(&norm.running_mean),
                    Some(&norm.running_var),
                    train,
                    BATCH_NORM_MOMENTUM,
                    BATCH_NORM_EPS,
                    false,
                )?,
                Layer::MaxPool(pool) => {
                    let (kernel, stride, padding) = pool_window(pool);
                    x.f_max_pool2d(kernel, stride, padding, [1, 1], false)?
                }
                Layer::AvgPool(pool) => {
                    let (kernel, stride, padding) = pool_window(pool);
                    x.f_avg_pool2d(kernel, stride, padding, false, true, None::<i64>)?
                }
                Layer::GlobalAvgPool => x.f_mean_dim([-2, -1].as_slice(), true, None::<Kind>)?,
                Layer::Flatten => x.f_flatten(1, -1)?,
                Layer::Embedding(embedding) => embedding.forward(&x)?,
                Layer::TransformerBlock(block) => block.forward(&x, &mut weight)?,
                Layer::LayerNorm(norm) => norm.forward(&x)?,
            };
            for (slot, _) in tapped.iter_mut().zip(taps).filter(|(_, &tap)| tap == index) {
                *slot = Some(x.shallow_clone());
            }
        }
        let tapped = tapped
            .into_iter()
            .zip(taps)
            .map(|(activation, tap)| {
                activation.ok_or_else(|| Error::Model(format!("no layer {tap} to tap")))
            })
            .collect::<Result<_>>()?;
        // A language model predicts at every position: one row of logits per (sequence, position).
        if x.dim() > 2 {
            x = x.f_reshape([-1, self.output_features])?;
        }
        Ok((x, tapped))
    }

    /// Index of the layer whose output are the last convolutional feature maps (the last conv,
    /// or the ReLU right after it): where Grad-CAM looks.
    pub fn feature_map_layer(&self) -> Option<usize> {
        let conv = self
            .layers
            .iter()
            .rposition(|layer| matches!(layer, Layer::Conv2d(_)))?;
        Some(if matches!(self.layers.get(conv + 1), Some(Layer::Relu)) {
            conv + 1
        } else {
            conv
        })
    }

    /// Index of the layer whose output feeds the last quantized layer (the classifier): the
    /// penultimate embedding. `None` when the classifier reads the network's input directly.
    pub fn embedding_layer(&self) -> Option<usize> {
        self.quantized.last()?.layer.checked_sub(1)
    }

    /// The quantized weight of quantized layer `index` (an index into [`Network::quantized`]).
    pub fn quantized_weight(&self, index: usize) -> &QuantizedWeight {
        let info = &self.quantized[index];
        match &self.layers[info.layer] {
            Layer::Conv2d(conv) | Layer::Add(Some(conv)) => &conv.weight,
            Layer::Linear(linear) => &linear.weight,
            Layer::TransformerBlock(block) => &block.parts[info.part].weight,
            _ => unreachable!("quantized layer infos only point at layers with quantized weights"),
        }
    }

    /// Makes every quantizer use integer exponents (`round_ste(e)`), or real ones.
    pub fn set_integer_exponents(&mut self, integer: bool) {
        for info in &self.quantized {
            let weight = match &mut self.layers[info.layer] {
                Layer::Conv2d(conv) | Layer::Add(Some(conv)) => &mut conv.weight,
                Layer::Linear(linear) => &mut linear.weight,
                Layer::TransformerBlock(block) => &mut block.parts[info.part].weight,
                _ => continue,
            };
            weight.integer_exponent = integer;
        }
    }

    /// Whether the quantizers use integer exponents (see [`Network::set_integer_exponents`]).
    pub fn integer_exponents(&self) -> bool {
        !self.quantized.is_empty() && self.quantized_weight(0).integer_exponent
    }

    /// The description of layer `index` as it is now (channel counts after pruning): what the
    /// packed file stores of it.
    pub fn layer_spec(&self, index: usize) -> LayerSpec {
        let side = |tensor: &Tensor, dim: usize| tensor.size()[dim] as usize;
        match &self.layers[index] {
            Layer::Conv2d(conv) => {
                let weight = &conv.weight.weight;
                LayerSpec::Conv2d {
                    in_channels: side(weight, 1) * conv.groups as usize,
                    out_channels: side(weight, 0),
                    kernel: side(weight, 2),
                    stride: conv.stride as usize,
                    padding: conv.padding as usize,
                    bias: conv.bias.is_some(),
                    groups: conv.groups as usize,
                }
            }
            Layer::Linear(linear) => LayerSpec::Linear {
                in_features: side(&linear.weight.weight, 1),
                out_features: side(&linear.weight.weight, 0),
                bias: linear.bias.is_some(),
            },
            Layer::Relu => LayerSpec::Relu,
            Layer::BatchNorm(norm) => LayerSpec::BatchNorm {
                channels: side(&norm.running_mean, 0),
                affine: norm.affine.is_some(),
                eps: BATCH_NORM_EPS as f32,
            },
            Layer::MaxPool(pool) => LayerSpec::MaxPool(*pool),
            Layer::AvgPool(pool) => LayerSpec::AvgPool(*pool),
            Layer::GlobalAvgPool => LayerSpec::GlobalAvgPool,
            Layer::Flatten => LayerSpec::Flatten,
            Layer::Embedding(embedding) => LayerSpec::Embedding {
                vocab_size: side(&embedding.token, 0),
                context: side(&embedding.position, 0),
                d_model: side(&embedding.token, 1),
            },
            Layer::TransformerBlock(block) => LayerSpec::TransformerBlock {
                d_model: side(&block.attention_norm.weight, 0),
                heads: block.heads() as usize,
                head_dim: block.head_dim as usize,
                hidden: side(&block.parts[4].weight.weight, 0),
                bias: block.parts[0].bias.is_some(),
                eps: LAYER_NORM_EPS as f32,
            },
            Layer::LayerNorm(norm) => LayerSpec::LayerNorm {
                features: side(&norm.weight, 0),
                eps: LAYER_NORM_EPS as f32,
            },
            Layer::Residual => LayerSpec::Residual,
            Layer::Add(projection) => LayerSpec::Add {
                projection: projection.as_ref().map(|conv| Projection {
                    in_channels: side(&conv.weight.weight, 1),
                    out_channels: side(&conv.weight.weight, 0),
                    stride: conv.stride as usize,
                }),
            },
        }
    }

    /// The quantized layers that read quantized layer `index`'s output channels as their input
    /// channels (indices into [`Network::quantized`]).
    pub fn readers(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.quantized.len())
            .filter(move |&reader| self.quantized[reader].source == Some(index))
    }

    /// The bias of quantized layer `index`, if it has one.
    pub fn bias(&self, index: usize) -> Option<&Tensor> {
        let info = &self.quantized[index];
        match &self.layers[info.layer] {
            Layer::Conv2d(conv) | Layer::Add(Some(conv)) => conv.bias.as_ref(),
            Layer::Linear(linear) => linear.bias.as_ref(),
            Layer::TransformerBlock(block) => block.parts[info.part].bias.as_ref(),
            _ => None,
        }
    }

    /// The quantized weight and the bias of quantized layer `index`, to cut them (pruning).
    pub fn weight_and_bias_mut(
        &mut self,
        index: usize,
    ) -> (&mut QuantizedWeight, &mut Option<Tensor>) {
        let info = &self.quantized[index];
        match &mut self.layers[info.layer] {
            Layer::Conv2d(conv) | Layer::Add(Some(conv)) => (&mut conv.weight, &mut conv.bias),
            Layer::Linear(linear) => (&mut linear.weight, &mut linear.bias),
            Layer::TransformerBlock(block) => {
                let linear = &mut block.parts[info.part];
                (&mut linear.weight, &mut linear.bias)
            }
            _ => unreachable!("quantized layer infos only point at layers with quantized weights"),
        }
    }

    /// Whether quantized layer `index` is a convolution (its weight's second dimension counts
    /// input channels; for every other layer it counts input features).
    pub fn is_conv(&self, index: usize) -> bool {
        matches!(
            self.layers[self.quantized[index].layer],
            Layer::Conv2d(_) | Layer::Add(Some(_))
        )
    }

    /// The batch norm that normalises quantized layer `index`'s channels, if any.
    pub fn norm(&self, index: usize) -> Option<&BatchNorm> {
        match self.quantized[index].norm.map(|layer| &self.layers[layer]) {
            Some(Layer::BatchNorm(norm)) => Some(norm),
            _ => None,
        }
    }

    /// Every named tensor: parameters with their group, and buffers (running statistics).
    fn entries(&self) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut push = |name: String, tensor: &Tensor, group: Option<ParameterGroup>| {
            entries.push(Entry {
                name,
                tensor: tensor.shallow_clone(),
                group,
            })
        };
        for (index, layer) in self.layers.iter().enumerate() {
            let prefix = format!("layers.{index}");
            match layer {
                Layer::Conv2d(Conv2d { weight, bias, .. })
                | Layer::Linear(Linear { weight, bias }) => {
                    push_quantized(&mut push, &prefix, weight, bias.as_ref());
                }
                Layer::BatchNorm(norm) => {
                    if let Some((scale, shift)) = &norm.affine {
                        push(
                            format!("{prefix}.weight"),
                            scale,
                            Some(ParameterGroup::Weights),
                        );
                        push(
                            format!("{prefix}.bias"),
                            shift,
                            Some(ParameterGroup::Weights),
                        );
                    }
                    push(format!("{prefix}.running_mean"), &norm.running_mean, None);
                    push(format!("{prefix}.running_var"), &norm.running_var, None);
                }
                Layer::Embedding(embedding) => {
                    push(
                        format!("{prefix}.token"),
                        &embedding.token,
                        Some(ParameterGroup::Weights),
                    );
                    push(
                        format!("{prefix}.position"),
                        &embedding.position,
                        Some(ParameterGroup::Weights),
                    );
                }
                Layer::LayerNorm(norm) => {
                    push(
                        format!("{prefix}.weight"),
                        &norm.weight,
                        Some(ParameterGroup::Weights),
                    );
                    push(
                        format!("{prefix}.bias"),
                        &norm.bias,
                        Some(ParameterGroup::Weights),
                    );
                }
                Layer::TransformerBlock(block) => {
                    for (norm_name, norm) in [
                        ("attention_norm", &block.attention_norm),
                        ("mlp_norm", &block.mlp_norm),
                    ] {
                        push(
                            format!("{prefix}.{norm_name}.weight"),
                            &norm.weight,
                            Some(ParameterGroup::Weights),
                        );
                        push(
                            format!("{prefix}.{norm_name}.bias"),
                            &norm.bias,
                            Some(ParameterGroup::Weights),
                        );
                    }
                    for (part, linear) in BLOCK_PARTS.iter().zip(&block.parts) {
                        push_quantized(
                            &mut push,
                            &format!("{prefix}.{part}"),
                            &linear.weight,
                            linear.bias.as_ref(),
                        );
                    }
                }
                Layer::Add(Some(projection)) => push_quantized(
                    &mut push,
                    &format!("{prefix}.projection"),
                    &projection.weight,
                    None,
                ),
                Layer::Relu
                | Layer::MaxPool(_)
                | Layer::AvgPool(_)
                | Layer::GlobalAvgPool
                | Layer::Flatten
                | Layer::Residual
                | Layer::Add(None) => {}
            }
        }
        entries
    }

    /// Trainable parameters with their names and optimizer groups (handles share storage and
    /// gradients with the network's own tensors).
    pub fn parameters(&self) -> Vec<(String, Tensor, ParameterGroup)> {
        self.entries()
            .into_iter()
            .filter_map(|entry| entry.group.map(|group| (entry.name, entry.tensor, group)))
            .collect()
    }

    /// The running statistics of the batch norms (tensors the forward pass updates in training).
    pub fn buffers(&self) -> Vec<Tensor> {
        self.entries()
            .into_iter()
            .filter(|entry| entry.group.is_none())
            .map(|entry| entry.tensor)
            .collect()
    }

    /// Every tensor that defines the model (parameters and running statistics), by name.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.entries()
            .into_iter()
            .map(|entry| (entry.name, entry.tensor))
            .collect()
    }

    /// Overwrites the model's tensors with `state` (for example from a checkpoint). Every tensor
    /// must be present with the same shape; nothing is changed unless all of them fit.
    pub fn load_state(&self, state: &HashMap<String, Tensor>) -> Result<()> {
        let entries = self.entries();
        for entry in &entries {
            let source = state
                .get(&entry.name)
                .ok_or_else(|| Error::Model(format!("saved state has no tensor {}", entry.name)))?;
            if source.size() != entry.tensor.size() {
                return Err(Error::Model(format!(
                    "{} has shape {:?} in the saved state but {:?} in the model",
                    entry.name,
                    source.size(),
                    entry.tensor.size()
                )));
            }
        }
        tch::no_grad(|| -> Result<()> {
            for mut entry in entries {
                entry.tensor.f_copy_(&state[&entry.name])?;
            }
            Ok(())
        })
    }

    /// Starts every quantizer afresh from the current weights: bit depth `initial_bit_depth`,
    /// exponent from each channel's weight range (used when training starts from trained weights).
    pub fn reset_quantizers(&self, initial_bit_depth: f64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for index in 0..self.quantized.len() {
                let quantized = self.quantized_weight(index);
                let exponent =
                    crate::quant::initial_exponent(&quantized.weight, initial_bit_depth)?;
                let _ = quantized
                    .bit_depth
                    .shallow_clone()
                    .f_fill_(initial_bit_depth)?;
                quantized.exponent.shallow_clone().f_copy_(&exponent)?;
            }
            Ok(())
        })
    }

    /// Floats stored outside the quantized layers and their normalisation: embeddings and layer
    /// norms (a transformer's; an image network has none).
    pub fn unquantized_floats(&self) -> i64 {
        let norm = |norm: &LayerNorm| 2 * norm.weight.numel() as i64;
        self.layers
            .iter()
            .map(|layer| match layer {
                Layer::Embedding(embedding) => {
                    (embedding.token.numel() + embedding.position.numel()) as i64
                }
                Layer::LayerNorm(layer_norm) => norm(layer_norm),
                Layer::TransformerBlock(block) => {
                    norm(&block.attention_norm) + norm(&block.mlp_norm)
                }
                _ => 0,
            })
            .sum()
    }

    /// Weight count of the network (conv and linear weights; `N0` of METHOD.md §2).
    pub fn weight_count(&self) -> i64 {
        (0..self.quantized.len())
            .map(|index| self.quantized_weight(index).weight.numel() as i64)
            .sum()
    }
}
