//! The reference integer kernels: each operation of a [`Plan`] on codes, in plain loops, exactly
//! as `docs/integer.md` writes them (the generated C follows the same loops).

use super::arith::{round_shift, saturate};
use super::plan::{Op, OutputStage, Plan};
use crate::kernels::ConvShape;
use crate::layers::Pool;
use crate::model::QuantizedMatrix;
use crate::prelude::*;

/// Output side of a convolution or pool (the plan's shapes are validated).
fn side(input: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (input + 2 * padding - kernel) / stride + 1
}

/// The output positions `o` whose input `o * stride + tap - padding` lies in `0..input`.
fn valid(output: usize, input: usize, tap: usize, stride: usize, padding: usize) -> (usize, usize) {
    let first = padding.saturating_sub(tap).div_ceil(stride);
    // o * stride + tap - padding <= input - 1
    let last = (input + padding)
        .checked_sub(tap + 1)
        .map_or(0, |limit| limit / stride + 1);
    (first.min(output), last.min(output).max(first.min(output)))
}

/// A grouped convolution: every output channel's accumulators, then its output stage.
/// Weights are visited one at a time and zero codes skipped (at low widths most are zero).
pub fn conv(
    input: &[i32],
    shape: &ConvShape,
    groups: usize,
    weights: &QuantizedMatrix,
    stage: Option<&OutputStage>,
    output: &mut Vec<i32>,
) {
    let (channels, height, width) = shape.input;
    let (kernel, stride, padding) = (shape.kernel, shape.stride, shape.padding);
    let (oh, ow) = (
        side(height, kernel, stride, padding),
        side(width, kernel, stride, padding),
    );
    let group_inputs = channels / groups;
    let group_outputs = shape.out_channels / groups;
    let mut accumulators = vec![0i32; oh * ow];
    for channel in 0..shape.out_channels {
        accumulators.fill(0);
        let group = channel / group_outputs;
        let row = &weights.codes[channel * weights.columns..][..weights.columns];
        for local in 0..group_inputs {
            let plane = &input[(group * group_inputs + local) * height * width..][..height * width];
            for ky in 0..kernel {
                let (y0, y1) = valid(oh, height, ky, stride, padding);
                for kx in 0..kernel {
                    let code = row[(local * kernel + ky) * kernel + kx];
                    if code == 0 {
                        continue;
                    }
                    let (x0, x1) = valid(ow, width, kx, stride, padding);
                    for oy in y0..y1 {
                        let iy = oy * stride + ky - padding;
                        let in_row = &plane[iy * width..][..width];
                        let out_row = &mut accumulators[oy * ow..][..ow];
                        if stride == 1 && x0 < x1 {
                            // Contiguous on both sides: the compiler vectorises this form.
                            let taps = &in_row[x0 + kx - padding..x1 + kx - padding];
                            for (out, &x) in out_row[x0..x1].iter_mut().zip(taps) {
                                *out += code * x;
                            }
                        } else {
                            for ox in x0..x1 {
                                out_row[ox] += code * in_row[ox * stride + kx - padding];
                            }
                        }
                    }
                }
            }
        }
        match stage {
            Some(stage) => output.extend(accumulators.iter().map(|&a| stage.apply(channel, a))),
            None => output.extend_from_slice(&accumulators),
        }
    }
}

/// A fully connected layer: each row's dot product with the input, then its output stage.
pub fn linear(
    input: &[i32],
    weights: &QuantizedMatrix,
    stage: &OutputStage,
    output: &mut Vec<i32>,
) {
    for (channel, row) in weights
        .codes
        .chunks(weights.columns.max(1))
        .take(weights.rows)
        .enumerate()
    {
        let accumulator: i32 = row.iter().zip(input).map(|(w, x)| w * x).sum();
        output.push(stage.apply(channel, accumulator));
    }
}

/// Max or summed pooling of each channel's windows; `finish` turns a window's sum (or maximum)
/// into the output code.
fn pool(
    input: &[i32],
    (channels, height, width): (usize, usize, usize),
    pool: &Pool,
    maximum: bool,
    finish: impl Fn(i64) -> i32,
    output: &mut Vec<i32>,
) {
    let (kernel, stride, padding) = (pool.kernel, pool.stride(), pool.padding);
    let (oh, ow) = (
        side(height, kernel, stride, padding),
        side(width, kernel, stride, padding),
    );
    for plane in input.chunks_exact(height * width).take(channels) {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = i64::MIN;
                let mut sum = 0i64;
                for ky in 0..kernel {
                    let Some(y) = (oy * stride + ky)
                        .checked_sub(padding)
                        .filter(|&y| y < height)
                    else {
                        continue;
                    };
                    for kx in 0..kernel {
                        let Some(x) = (ox * stride + kx)
                            .checked_sub(padding)
                            .filter(|&x| x < width)
                        else {
                            continue;
                        };
                        let value = i64::from(plane[y * width + x]);
                        sum += value;
                        best = best.max(value);
                    }
                }
                output.push(finish(if maximum { best } else { sum }));
            }
        }
    }
}

/// Runs the plan on one image's input codes; returns the 32-bit logits.
pub fn run(plan: &Plan, codes: Vec<i32>) -> Vec<i32> {
    run_observed(plan, codes, |_, _| {})
}

/// As [`run`], handing `observe` each operation's index and output (a ReLU's in place).
pub fn run_observed(
    plan: &Plan,
    codes: Vec<i32>,
    mut observe: impl FnMut(usize, &[i32]),
) -> Vec<i32> {
    let mut x = codes;
    let mut kept: Vec<Vec<i32>> = Vec::new();
    for (index, op) in plan.ops.iter().enumerate() {
        let mut next = Vec::new();
        match op {
            Op::Conv {
                shape,
                groups,
                weights,
                stage,
            } => conv(&x, shape, *groups, weights, Some(stage), &mut next),
            Op::Linear { weights, stage } => linear(&x, weights, stage, &mut next),
            Op::Affine { plane, stage } => {
                for (channel, values) in x.chunks(*plane).enumerate() {
                    next.extend(values.iter().map(|&v| stage.apply(channel, v)));
                }
            }
            Op::Relu => {
                x.iter_mut().for_each(|v| *v = (*v).max(0));
                observe(index, &x);
                continue;
            }
            Op::MaxPool {
                input,
                pool: window,
            } => pool(&x, *input, window, true, |best| best as i32, &mut next),
            Op::AvgPool {
                input,
                pool: window,
                multiplier,
            } => pool(
                &x,
                *input,
                window,
                false,
                |sum| multiplier.apply(sum as i32) as i32,
                &mut next,
            ),
            Op::GlobalAvgPool { plane, multiplier } => next.extend(
                x.chunks(*plane)
                    .map(|values| multiplier.apply(values.iter().sum::<i32>()) as i32),
            ),
            Op::Keep => {
                kept.push(x.clone());
                observe(index, &x);
                continue;
            }
            Op::Add {
                projection,
                plane,
                block_multipliers,
                kept_multipliers,
                shifts,
                low,
                high,
            } => {
                let skip = kept.pop().unwrap_or_default();
                let skip = match projection {
                    Some((shape, weights)) => {
                        let mut accumulators = Vec::with_capacity(x.len());
                        conv(&skip, shape, 1, weights, None, &mut accumulators);
                        accumulators
                    }
                    None => skip,
                };
                for (index, (&block, &kept)) in x.iter().zip(&skip).enumerate() {
                    let channel = index / plane;
                    let sum = i64::from(block) * i64::from(block_multipliers[channel])
                        + i64::from(kept) * i64::from(kept_multipliers[channel]);
                    next.push(saturate(round_shift(sum, shifts[channel]), *low, *high));
                }
            }
        }
        observe(index, &next);
        x = next;
    }
    x
}
