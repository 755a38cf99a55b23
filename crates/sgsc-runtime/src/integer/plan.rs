//! The integer plan of an image classifier: the file's layers grouped into integer operations,
//! each with the 32-bit multipliers, shifts, biases and code ranges that `docs/integer.md`
//! defines. Built once from the file and the activation ranges of a calibration; both the Rust
//! integer path ([`super::run`]) and the generated C read the same plan, so they agree bit for
//! bit.

use super::arith::{code_range, pow2, round_shift, saturate, Multiplier};
use crate::error::{Result, RuntimeError};
use crate::kernels::ConvShape;
use crate::layers::{LayerSpec, Pool};
use crate::model::{Layer, PackedModel, QuantizedMatrix};
use crate::prelude::*;

/// How a tensor's codes stand for real values: `real = scale * code`, codes in `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activation {
    /// Real value of one code step.
    pub scale: f64,
    /// Smallest code (0 for a tensor that is never negative).
    pub low: i32,
    /// Largest code.
    pub high: i32,
}

impl Activation {
    /// A tensor of `bits`-bit codes whose values reach `range` in magnitude (a zero range gets
    /// a scale of 1: every code is 0).
    fn calibrated(range: f64, bits: u32, signed: bool) -> Activation {
        let (low, high) = code_range(bits, signed);
        let scale = if range > 0.0 && range.is_finite() {
            range / f64::from(high)
        } else {
            1.0
        };
        Activation { scale, low, high }
    }

    /// The largest code magnitude.
    fn magnitude(&self) -> i64 {
        i64::from(self.low.unsigned_abs().max(self.high.unsigned_abs()))
    }
}

/// What turns a layer's 32-bit accumulators into the codes of its output, per output channel:
/// `code = saturate(round_shift(max?(acc + bias, 0) * multiplier + offset, shift))`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputStage {
    /// Bias of each channel, in accumulator units.
    pub bias: Vec<i32>,
    /// A ReLU on `acc + bias`, before the multiplier (a ReLU between the layer and a batch
    /// norm; a ReLU after the norm is the saturation at `low = 0`).
    pub relu_first: bool,
    /// Multiplier and shift of each channel.
    pub multipliers: Vec<Multiplier>,
    /// Offset of each channel (a batch norm's shift), in units of `2^-shift` output codes.
    pub offsets: Vec<i64>,
    /// Smallest output code.
    pub low: i32,
    /// Largest output code.
    pub high: i32,
}

impl OutputStage {
    /// The output code of `channel` for accumulator `accumulator`.
    pub fn apply(&self, channel: usize, accumulator: i32) -> i32 {
        let mut value = i64::from(accumulator) + i64::from(self.bias[channel]);
        if self.relu_first {
            value = value.max(0);
        }
        let m = self.multipliers[channel];
        let scaled = value * i64::from(m.multiplier) + self.offsets[channel];
        saturate(round_shift(scaled, m.shift), self.low, self.high)
    }
}

/// One integer operation on codes laid out channel-major (`[c, h, w]`).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A convolution in `groups` groups, with its output stage.
    Conv {
        /// The whole input's shape, all output channels, kernel, stride and padding.
        shape: ConvShape,
        /// Channel groups (1, or the input channels for a depthwise convolution).
        groups: usize,
        /// Codes `[out, in / groups * k * k]` at each row's width.
        weights: QuantizedMatrix,
        /// Accumulators to output codes.
        stage: OutputStage,
    },
    /// A fully connected layer with its output stage.
    Linear {
        /// Codes `[out, in]`.
        weights: QuantizedMatrix,
        /// Accumulators to output codes.
        stage: OutputStage,
    },
    /// A batch norm on its own: each code goes through its channel's output stage.
    Affine {
        /// Values per channel.
        plane: usize,
        /// Codes to output codes.
        stage: OutputStage,
    },
    /// `max(code, 0)`: the same scale, a range from 0.
    Relu,
    /// The largest code of each window (padding never wins).
    MaxPool {
        /// Input channels, height, width.
        input: (usize, usize, usize),
        /// The window.
        pool: Pool,
    },
    /// The window's sum times `1 / (kernel * kernel)`, at the input's scale.
    AvgPool {
        /// Input channels, height, width.
        input: (usize, usize, usize),
        /// The window.
        pool: Pool,
        /// `1 / (kernel * kernel)`.
        multiplier: Multiplier,
    },
    /// Each channel's sum times `1 / plane`, at the input's scale.
    GlobalAvgPool {
        /// Values per channel.
        plane: usize,
        /// `1 / plane`.
        multiplier: Multiplier,
    },
    /// Keeps the tensor for the residual block's add.
    Keep,
    /// `saturate(round_shift(block * block_multiplier + kept * kept_multiplier, shift))` per
    /// channel, `kept` being the kept codes or, through a projection, its accumulators.
    Add {
        /// The kept tensor's 1x1 convolution and its codes, when the block changed the shape.
        projection: Option<(ConvShape, QuantizedMatrix)>,
        /// Values per channel.
        plane: usize,
        /// Multiplier of the block's codes, per channel.
        block_multipliers: Vec<i32>,
        /// Multiplier of the kept codes (or projection accumulators), per channel.
        kept_multipliers: Vec<i32>,
        /// Shift of each channel.
        shifts: Vec<u32>,
        /// Smallest output code.
        low: i32,
        /// Largest output code.
        high: i32,
    },
}

impl Op {
    /// The code range of the operation's output where it saturates (convolutions, linear
    /// layers, affine maps and residual additions), as `(low, high)`; `None` for operations
    /// that cannot leave their input's range (ReLU, pooling) and for the 32-bit logits.
    pub fn saturating_range(&self) -> Option<(i32, i32)> {
        let (low, high) = match self {
            Op::Conv { stage, .. } | Op::Linear { stage, .. } | Op::Affine { stage, .. } => {
                (stage.low, stage.high)
            }
            Op::Add { low, high, .. } => (*low, *high),
            _ => return None,
        };
        (high < i32::MAX).then_some((low, high))
    }

    /// A short name of the operation's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "conv",
            Op::Linear { .. } => "linear",
            Op::Affine { .. } => "affine",
            Op::Relu => "relu",
            Op::MaxPool { .. } => "max_pool",
            Op::AvgPool { .. } => "avg_pool",
            Op::GlobalAvgPool { .. } => "global_avg_pool",
            Op::Keep => "keep",
            Op::Add { .. } => "add",
        }
    }
}

/// How 8-bit pixels become the codes of the first layer's input: a table per channel of the
/// normalised value `(pixel / 255 - mean) / std` in codes, rounded half away from zero.
#[derive(Debug, Clone, PartialEq)]
pub struct InputQuantization {
    /// Values per channel.
    pub plane: usize,
    /// 256 codes per channel, channel after channel.
    pub table: Vec<i32>,
    /// The codes' scale and range.
    pub activation: Activation,
}

impl InputQuantization {
    /// The input codes of one image's pixels (`channels * plane` of them).
    pub fn codes(&self, pixels: &[u8]) -> Vec<i32> {
        let channels = self.table.len() / 256;
        pixels
            .iter()
            .enumerate()
            .map(|(i, &pixel)| {
                let channel = if channels == 1 {
                    0
                } else {
                    (i / self.plane) % channels
                };
                self.table[channel * 256 + usize::from(pixel)]
            })
            .collect()
    }
}

/// An image classifier as integer operations.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Pixels to input codes.
    pub input: InputQuantization,
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// Real value of one step of the 32-bit logits.
    pub output_scale: f64,
    /// Logits per image.
    pub outputs: usize,
    /// Bits of every activation code.
    pub activation_bits: u32,
}

/// The widest activation codes a plan holds: they are stored in a byte.
pub const MAX_ACTIVATION_BITS: u32 = 8;

/// A batch norm's per-channel `(scale, shift)`: `y = x * scale + shift`, in f64.
fn batch_norm(layer: &Layer) -> Result<Vec<(f64, f64)>> {
    let LayerSpec::BatchNorm {
        channels,
        affine,
        eps,
    } = layer.spec
    else {
        return Err(RuntimeError::Invalid("not a batch norm".into()));
    };
    let mean = layer.required_floats("running_mean")?;
    let variance = layer.required_floats("running_var")?;
    let (gamma, beta) = if affine {
        (
            Some(layer.required_floats("weight")?),
            Some(layer.required_floats("bias")?),
        )
    } else {
        (None, None)
    };
    Ok((0..channels)
        .map(|c| {
            let inverse = 1.0 / libm::sqrt(f64::from(variance[c]) + f64::from(eps));
            let scale = inverse * gamma.map_or(1.0, |g| f64::from(g[c]));
            let shift = beta.map_or(0.0, |b| f64::from(b[c])) - f64::from(mean[c]) * scale;
            (scale, shift)
        })
        .collect())
}

/// The layers fused into the operation that starts before `next`: an optional ReLU, an
/// optional batch norm, an optional ReLU after it.
struct Fused {
    /// One past the last fused layer.
    end: usize,
    /// A ReLU before the norm (or alone).
    relu_first: bool,
    /// The fused batch norm's layer.
    norm: Option<usize>,
    /// Whether the output is never negative.
    unsigned: bool,
}

fn fuse(specs: &[&LayerSpec], mut next: usize, take_norm: bool) -> Fused {
    let mut fused = Fused {
        end: next,
        relu_first: false,
        norm: None,
        unsigned: false,
    };
    if matches!(specs.get(next), Some(LayerSpec::Relu)) {
        fused.relu_first = true;
        fused.unsigned = true;
        next += 1;
    }
    if take_norm && matches!(specs.get(next), Some(LayerSpec::BatchNorm { .. })) {
        fused.norm = Some(next);
        fused.unsigned = false;
        next += 1;
        if matches!(specs.get(next), Some(LayerSpec::Relu)) {
            fused.unsigned = true;
            next += 1;
        }
    }
    fused.end = next;
    fused
}

fn integer_error(message: String) -> RuntimeError {
    RuntimeError::Integer(message)
}

/// The per-channel output stage of a layer whose accumulators of channel `c` stand for
/// `accumulator_scales[c] * acc`, with bias `bias` (real), then `norm`, into `output`. Returns
/// the stage, or why the arithmetic cannot hold it. `bounds[c]` bounds `|acc|` of channel `c`.
fn output_stage(
    what: &str,
    accumulator_scales: &[f64],
    bounds: &[i64],
    bias: Option<&[f32]>,
    relu_first: bool,
    norm: Option<&[(f64, f64)]>,
    output: Activation,
) -> Result<OutputStage> {
    let channels = accumulator_scales.len();
    let mut stage = OutputStage {
        bias: Vec::with_capacity(channels),
        relu_first,
        multipliers: Vec::with_capacity(channels),
        offsets: Vec::with_capacity(channels),
        low: output.low,
        high: output.high,
    };
    for c in 0..channels {
        let (norm_scale, norm_shift) = norm.map_or((1.0, 0.0), |norm| norm[c]);
        let real_bias = bias.map_or(0.0, |b| f64::from(b[c]));
        let scale = accumulator_scales[c];
        if bounds[c] == 0 {
            // A row of zero codes: the output is a constant, held by the offset alone.
            let mut value = real_bias;
            if relu_first {
                value = value.max(0.0);
            }
            let code = libm::round((value * norm_scale + norm_shift) / output.scale);
            if !code.is_finite() || code.abs() > f64::from(i32::MAX) {
                return Err(integer_error(format!(
                    "{what}, channel {c}: its constant output does not fit 32 bits"
                )));
            }
            stage.bias.push(0);
            stage.multipliers.push(Multiplier {
                multiplier: 0,
                shift: 0,
            });
            stage.offsets.push(code as i64);
            continue;
        }
        let bias_code = libm::round(real_bias / scale);
        let total = bounds[c] as f64 + bias_code.abs();
        if !bias_code.is_finite() || total >= f64::from(i32::MAX) {
            return Err(integer_error(format!(
                "{what}, channel {c}: its accumulator can overflow 32 bits (bound {total})"
            )));
        }
        let multiplier =
            Multiplier::from_real(scale * norm_scale / output.scale).ok_or_else(|| {
                integer_error(format!(
                    "{what}, channel {c}: the factor {} cannot be a 32-bit multiplier",
                    scale * norm_scale / output.scale
                ))
            })?;
        let offset = libm::round(norm_shift / output.scale * pow2(multiplier.shift as i32));
        if !offset.is_finite() || offset.abs() >= pow2(61) {
            return Err(integer_error(format!(
                "{what}, channel {c}: the offset does not fit 61 bits"
            )));
        }
        stage.bias.push(bias_code as i32);
        stage.multipliers.push(multiplier);
        stage.offsets.push(offset as i64);
    }
    Ok(stage)
}

/// `2^exponent` of each row, in f64.
fn steps(weights: &QuantizedMatrix) -> Vec<f64> {
    weights
        .exponents
        .iter()
        .map(|&e| libm::exp2(f64::from(f32::from(e))))
        .collect()
}

/// `sum |code|` of each row times the largest input code: a bound on its accumulator.
fn accumulator_bounds(weights: &QuantizedMatrix, input: Activation) -> Vec<i64> {
    weights
        .codes
        .chunks(weights.columns.max(1))
        .take(weights.rows)
        .map(|row| {
            row.iter()
                .map(|&code| i64::from(code.unsigned_abs()))
                .sum::<i64>()
                .saturating_mul(input.magnitude())
        })
        .collect()
}

/// The table of the input codes and their activation, from the file's normalisation: the
/// scale covers every value a pixel can take, signed only if one is negative.
fn input_quantization(packed: &PackedModel, plane: usize, bits: u32) -> InputQuantization {
    let normalized = |pixel: u8, channel: usize| -> f64 {
        let value = f64::from(pixel) / 255.0;
        match &packed.metadata.normalization {
            Some(n) => {
                let c = if n.mean.len() == 1 { 0 } else { channel };
                (value - f64::from(n.mean[c])) / f64::from(n.std[c])
            }
            None => value,
        }
    };
    let channels = packed
        .metadata
        .normalization
        .as_ref()
        .map_or(1, |n| n.mean.len().max(1));
    let values: Vec<f64> = (0..channels)
        .flat_map(|c| (0..=255u8).map(move |p| (p, c)))
        .map(|(p, c)| normalized(p, c))
        .collect();
    let signed = values.iter().any(|&v| v < 0.0);
    let range = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let activation = Activation::calibrated(range, bits, signed);
    let table = values
        .iter()
        .map(|&v| {
            let code = libm::round(v / activation.scale);
            saturate(code as i64, activation.low, activation.high)
        })
        .collect();
    InputQuantization {
        plane,
        table,
        activation,
    }
}

impl Plan {
    /// The plan of `packed`, an image classifier, with `ranges[i]` the largest magnitude of
    /// layer `i`'s output over the calibration images, and `bits`-bit activations.
    pub fn new(packed: &PackedModel, ranges: &[f32], bits: u32) -> Result<Plan> {
        if !(2..=MAX_ACTIVATION_BITS).contains(&bits) {
            return Err(integer_error(format!(
                "activation bits must be 2 to {MAX_ACTIVATION_BITS}, not {bits}"
            )));
        }
        let shapes = packed.validated_shapes()?;
        let layers = &packed.layers;
        if ranges.len() != layers.len() {
            return Err(integer_error(format!(
                "{} calibration ranges for {} layers",
                ranges.len(),
                layers.len()
            )));
        }
        let specs: Vec<&LayerSpec> = layers.iter().map(|layer| &layer.spec).collect();
        let input_map = shapes.input.map();
        let input = input_quantization(packed, input_map.1 * input_map.2, bits);
        let mut current = input.activation;
        // The activation and shape each open residual block keeps.
        let mut kept: Vec<(Activation, (usize, usize, usize))> = Vec::new();
        let mut ops = Vec::new();
        let mut output_scale = None;
        let mut index = 0;
        // Only flattens may follow the classifier's last operation.
        let last_from = |end: usize| specs[end..].iter().all(|s| **s == LayerSpec::Flatten);
        while index < layers.len() {
            let layer = &layers[index];
            let what = format!("layer {index} ({})", layer.spec.kind());
            let map = shapes.input_of(index).map();
            let calibrated = |end: usize, unsigned: bool| {
                Activation::calibrated(f64::from(ranges[end - 1]), bits, !unsigned)
            };
            match layer.spec {
                LayerSpec::Conv2d { .. } | LayerSpec::Linear { .. } => {
                    let fused = fuse(&specs, index + 1, true);
                    let dense = layer.dense("")?;
                    let weights = dense.weight.clone();
                    let scales: Vec<f64> =
                        steps(&weights).iter().map(|s| s * current.scale).collect();
                    let bounds = accumulator_bounds(&weights, current);
                    let norm = fused
                        .norm
                        .map(|norm| batch_norm(&layers[norm]))
                        .transpose()?;
                    let output = if last_from(fused.end) {
                        let logits =
                            logit_activation(&scales, &bounds, dense.bias, norm.as_deref());
                        output_scale = Some(logits.scale);
                        logits
                    } else {
                        calibrated(fused.end, fused.unsigned)
                    };
                    let stage = output_stage(
                        &what,
                        &scales,
                        &bounds,
                        dense.bias,
                        fused.relu_first,
                        norm.as_deref(),
                        output,
                    )?;
                    ops.push(match layer.spec {
                        LayerSpec::Conv2d {
                            out_channels,
                            kernel,
                            stride,
                            padding,
                            groups,
                            ..
                        } => Op::Conv {
                            shape: ConvShape {
                                input: map,
                                out_channels,
                                kernel,
                                stride,
                                padding,
                            },
                            groups,
                            weights,
                            stage,
                        },
                        _ => Op::Linear { weights, stage },
                    });
                    current = output;
                    index = fused.end;
                }
                LayerSpec::BatchNorm { .. } => {
                    let fused = fuse(&specs, index + 1, false);
                    let norm = batch_norm(layer)?;
                    let output = calibrated(fused.end.max(index + 1), fused.unsigned);
                    let scales = vec![current.scale; map.0];
                    let bounds = vec![current.magnitude(); map.0];
                    let stage =
                        output_stage(&what, &scales, &bounds, None, false, Some(&norm), output)?;
                    ops.push(Op::Affine {
                        plane: map.1 * map.2,
                        stage,
                    });
                    current = output;
                    index = fused.end.max(index + 1);
                }
                LayerSpec::Relu => {
                    ops.push(Op::Relu);
                    current.low = 0;
                    index += 1;
                }
                LayerSpec::MaxPool(pool) => {
                    ops.push(Op::MaxPool { input: map, pool });
                    index += 1;
                }
                LayerSpec::AvgPool(pool) => {
                    let multiplier =
                        Multiplier::from_real(1.0 / (pool.kernel * pool.kernel) as f64)
                            .ok_or_else(|| integer_error(format!("{what}: empty window")))?;
                    ops.push(Op::AvgPool {
                        input: map,
                        pool,
                        multiplier,
                    });
                    index += 1;
                }
                LayerSpec::GlobalAvgPool => {
                    let plane = map.1 * map.2;
                    let multiplier = Multiplier::from_real(1.0 / plane.max(1) as f64)
                        .ok_or_else(|| integer_error(format!("{what}: empty map")))?;
                    ops.push(Op::GlobalAvgPool { plane, multiplier });
                    index += 1;
                }
                LayerSpec::Flatten => index += 1,
                LayerSpec::Residual => {
                    kept.push((current, map));
                    ops.push(Op::Keep);
                    index += 1;
                }
                LayerSpec::Add { projection } => {
                    let (skip, kept_map) = kept.pop().ok_or_else(|| {
                        integer_error(format!("{what}: no residual block to end"))
                    })?;
                    let fused = fuse(&specs, index + 1, false);
                    let end = fused.end.max(index + 1);
                    let output = calibrated(end, fused.relu_first);
                    let plane = map.1 * map.2;
                    let (projection, kept_scales) = match projection {
                        Some(projection) => {
                            let weights = layer.dense("projection")?.weight.clone();
                            let bounds = accumulator_bounds(&weights, skip);
                            if let Some(c) = bounds.iter().position(|&b| b >= i64::from(i32::MAX)) {
                                return Err(integer_error(format!(
                                    "{what}, projection channel {c}: its accumulator can overflow 32 bits"
                                )));
                            }
                            let scales = steps(&weights).iter().map(|s| s * skip.scale).collect();
                            let shape = ConvShape {
                                input: kept_map,
                                out_channels: projection.out_channels,
                                kernel: 1,
                                stride: projection.stride,
                                padding: 0,
                            };
                            (Some((shape, weights)), scales)
                        }
                        None => (None, vec![skip.scale; map.0]),
                    };
                    let mut block_multipliers = Vec::with_capacity(map.0);
                    let mut kept_multipliers = Vec::with_capacity(map.0);
                    let mut shifts = Vec::with_capacity(map.0);
                    for kept_scale in kept_scales {
                        let block = current.scale / output.scale;
                        let kept = kept_scale / output.scale;
                        let common = Multiplier::from_real(block.max(kept)).ok_or_else(|| {
                            integer_error(format!("{what}: a factor cannot be a multiplier"))
                        })?;
                        let at =
                            |factor: f64| libm::round(factor * pow2(common.shift as i32)) as i32;
                        block_multipliers.push(at(block));
                        kept_multipliers.push(at(kept));
                        shifts.push(common.shift);
                    }
                    ops.push(Op::Add {
                        projection,
                        plane,
                        block_multipliers,
                        kept_multipliers,
                        shifts,
                        low: output.low,
                        high: output.high,
                    });
                    current = output;
                    index = end;
                }
                LayerSpec::Embedding { .. }
                | LayerSpec::TransformerBlock { .. }
                | LayerSpec::LayerNorm { .. } => {
                    return Err(integer_error(format!(
                        "{what}: the integer path runs image classifiers; language models run on the f32 path"
                    )));
                }
            }
        }
        Ok(Plan {
            input,
            ops,
            output_scale: output_scale.unwrap_or(current.scale),
            outputs: shapes.outputs,
            activation_bits: bits,
        })
    }
}

/// The 32-bit logits' activation: one scale for every class, as fine as the largest value any
/// class can reach allows (`2^30` steps for it, so nothing saturates).
fn logit_activation(
    accumulator_scales: &[f64],
    bounds: &[i64],
    bias: Option<&[f32]>,
    norm: Option<&[(f64, f64)]>,
) -> Activation {
    let reach = accumulator_scales
        .iter()
        .zip(bounds)
        .enumerate()
        .map(|(c, (scale, &bound))| {
            let (norm_scale, norm_shift) = norm.map_or((1.0, 0.0), |norm| norm[c]);
            let bias = bias.map_or(0.0, |b| f64::from(b[c]).abs());
            let reach = if bound == 0 {
                0.0
            } else {
                scale * (bound as f64 + 1.0)
            };
            norm_scale.abs() * (reach + bias) + norm_shift.abs()
        })
        .fold(0.0f64, f64::max);
    let scale = if reach > 0.0 && reach.is_finite() {
        reach / pow2(30)
    } else {
        1.0
    };
    Activation {
        scale,
        low: i32::MIN,
        high: i32::MAX,
    }
}
