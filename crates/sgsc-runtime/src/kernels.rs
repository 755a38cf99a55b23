//! The arithmetic of inference on dense f32 buffers (row-major): matrix products through
//! `matrixmultiply`'s SGEMM, channels-last convolution, normalisation, attention and GELU;
//! depthwise convolution in [`depthwise`], pooling in [`pool`].

use crate::prelude::*;
pub mod depthwise;
pub mod pool;

/// `c[m x n] = a[m x k] * b[k x n]` with explicit row and column strides (so either operand can
/// be read transposed without a copy); `c` is overwritten, or added to with `accumulate`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (a_row, a_col): (isize, isize),
    b: &[f32],
    (b_row, b_col): (isize, isize),
    c: &mut [f32],
    accumulate: bool,
) {
    assert!(c.len() >= m * n, "output buffer too small");
    if m == 0 || n == 0 || (k == 0 && accumulate) {
        return;
    }
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    let (a_last, b_last) = (
        (m as isize - 1) * a_row + (k as isize - 1) * a_col,
        (k as isize - 1) * b_row + (n as isize - 1) * b_col,
    );
    assert!(
        a_last < a.len() as isize && b_last < b.len() as isize,
        "operand too small"
    );
    // SAFETY: the asserts above keep every index the strides reach inside `a`, `b` and `c`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            a_row,
            a_col,
            b.as_ptr(),
            b_row,
            b_col,
            if accumulate { 1.0 } else { 0.0 },
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `y[rows x out] = x[rows x in] * w^T + bias`, with `w` stored `[out x in]`.
pub fn linear(
    x: &[f32],
    rows: usize,
    weight: &[f32],
    out: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let input = weight.len() / out.max(1);
    let mut y = vec![0.0; rows * out];
    matmul(
        rows,
        input,
        out,
        x,
        (input as isize, 1),
        weight,
        (1, input as isize),
        &mut y,
        false,
    );
    if let Some(bias) = bias {
        for row in y.chunks_exact_mut(out) {
            for (value, b) in row.iter_mut().zip(bias) {
                *value += b;
            }
        }
    }
    y
}

/// Shape of a convolution on one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels, height and width.
    pub input: (usize, usize, usize),
    /// Output channels.
    pub out_channels: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub padding: usize,
}

/// A convolution's matrix product is padded to multiples of this (the widest SGEMM tile,
/// AVX-512's 16 x 16) with zero weights and positions that are dropped: a partial tile costs a
/// whole tile's arithmetic anyway, plus a masked copy.
const TILE: usize = 16;

impl ConvShape {
    /// Output height and width.
    pub fn output(&self) -> (usize, usize) {
        let (_, h, w) = self.input;
        let side = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        (side(h), side(w))
    }

    /// Copies of each input plane that [`conv2d`] multiplies, shifted by one kernel column each:
    /// `kernel` when the kernel columns are summed inside the product (few input channels, so the
    /// product stays deep enough), 1 when they are rows of the product like the kernel rows.
    fn copies(&self) -> usize {
        if self.input.0 >= TILE {
            1
        } else {
            self.kernel
        }
    }

    /// Reorders PyTorch's `[out, c, k, k]` weights into the matrix [`conv2d`] multiplies:
    /// rows `(ky, kx, out)` and columns `c` or, with few input channels, rows `(ky, out)` and
    /// columns `(c, kx)`; its rows padded with zeros to a whole tile.
    pub fn weight_by_kernel_row(&self, weight: &[f32]) -> Vec<f32> {
        let (channels, k, out) = (self.input.0, self.kernel, self.out_channels);
        let copies = self.copies();
        let row_columns = k / copies;
        let rows = (k * row_columns * out).next_multiple_of(TILE);
        let mut reordered = vec![0.0; rows * channels * copies];
        for o in 0..out {
            for c in 0..channels {
                for ky in 0..k {
                    for kx in 0..k {
                        let (in_row, in_column) = if copies == 1 { (kx, 0) } else { (0, kx) };
                        let row = (ky * row_columns + in_row) * out + o;
                        reordered[(row * channels + c) * copies + in_column] =
                            weight[((o * channels + c) * k + ky) * k + kx];
                    }
                }
            }
        }
        reordered
    }
}

/// The work buffers of [`conv2d`], kept between calls (one per thread) so that a batch does not
/// allocate and fault in fresh pages for every image.
#[derive(Debug, Default)]
pub struct ConvScratch {
    planes: Vec<f32>,
    products: Vec<f32>,
    sums: Vec<f32>,
}

/// One image's convolution (`[c, h, w]` in, `[out, oh, ow]` out, `weight` from
/// [`ConvShape::weight_by_kernel_row`]) as one matrix product and a shifted sum, with no im2col
/// copy ("kn2row"; Anderson et al., "Low-memory GEMM-based convolution algorithms", 2017).
///
/// The product's right side is the (padded) input planes, one row per channel, each position of
/// a plane a column. Its left side has a row per kernel tap and output channel, so it gives, at
/// every plane position, each tap's contribution; an output pixel then adds up its taps, entry
/// `(ky, kx, o)` at `q = (y * stride + ky) * padded_width + x * stride + kx`. With few input
/// channels that product would be too shallow, so the kernel columns move inside it: the planes
/// are copied once per column `kx`, shifted left by `kx` (`k` times the image, not im2col's
/// `k * k`), and the rows are `(ky, o)`. (Every plane position is computed, so a stride `s`
/// wastes about `s * s` of the work; the networks here use stride 1.)
pub fn conv2d(
    image: &[f32],
    shape: &ConvShape,
    weight: &[f32],
    bias: Option<&[f32]>,
    scratch: &mut ConvScratch,
) -> Vec<f32> {
    let (channels, height, width) = shape.input;
    let (oh, ow) = shape.output();
    let (k, stride, pad, out) = (
        shape.kernel,
        shape.stride,
        shape.padding,
        shape.out_channels,
    );
    let copies = shape.copies();
    let row_columns = k / copies;
    let rows = (k * row_columns * out).next_multiple_of(TILE);
    let padded_width = width + 2 * pad;
    let plane = (height + 2 * pad) * padded_width;
    let positions = plane.next_multiple_of(TILE);
    // planes[(c * copies + kx) * positions + q] = padded_image[c][q + kx], zero past the plane.
    let planes = &mut scratch.planes;
    planes.clear();
    planes.resize(channels * copies * positions, 0.0);
    for c in 0..channels {
        for kx in 0..copies {
            let target = &mut planes[(c * copies + kx) * positions..][..plane];
            for y in 0..height {
                let source = &image[(c * height + y) * width..][..width];
                let start = (y + pad) * padded_width + pad;
                // Pixel x lands at start + x - kx; those that would land before 0 are never read.
                let skip = kx.saturating_sub(start).min(width);
                let first = start + skip - kx;
                target[first..first + width - skip].copy_from_slice(&source[skip..]);
            }
        }
    }
    let products = &mut scratch.products;
    // Every entry is overwritten by the product, so old values may stay.
    products.resize(products.len().max(rows * positions), 0.0);
    matmul(
        rows,
        channels * copies,
        positions,
        weight,
        ((channels * copies) as isize, 1),
        planes,
        (positions as isize, 1),
        products,
        false,
    );
    let mut output = vec![0.0; out * oh * ow];
    // The taps are summed along whole runs of plane positions, from the first output pixel's to
    // the last's (long slices that the compiler vectorizes); then each output row picks its
    // pixels, every `stride`-th position from its start. The positions in between (the k - 1
    // that straddle two rows, and with a larger stride the skipped ones) are summed and dropped.
    let span = ((oh - 1) * padded_width + ow - 1) * stride + 1;
    let sums = &mut scratch.sums;
    for (o, channel) in output.chunks_exact_mut(oh * ow).enumerate() {
        sums.clear();
        sums.resize(span, bias.map_or(0.0, |b| b[o]));
        for ky in 0..k {
            for kx in 0..row_columns {
                let row = (ky * row_columns + kx) * out + o;
                let tap = &products[row * positions..][..plane][ky * padded_width + kx..];
                sums.iter_mut().zip(tap).for_each(|(v, t)| *v += t);
            }
        }
        for (y, target) in channel.chunks_exact_mut(ow).enumerate() {
            let pixels = sums[y * stride * padded_width..].iter().step_by(stride);
            target.iter_mut().zip(pixels).for_each(|(v, s)| *v = *s);
        }
    }
    output
}

/// Layer normalisation of each `features`-long row (biased variance, like PyTorch).
pub fn layer_norm(x: &mut [f32], features: usize, weight: &[f32], bias: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(features) {
        let mean = row.iter().sum::<f32>() / features as f32;
        let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / features as f32;
        let inverse = 1.0 / libm::sqrtf(variance + eps);
        for ((value, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *value = (*value - mean) * inverse * w + b;
        }
    }
}

/// Exact GELU, `x * Phi(x)` (PyTorch's `gelu(approximate="none")`).
pub fn gelu(x: &mut [f32]) {
    for value in x {
        *value = 0.5 * *value * (1.0 + libm::erff(*value * core::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Causal multi-head attention of one sequence: `q`, `k`, `v` are `[time, heads * head_dim]`;
/// returns `[time, heads * head_dim]`.
pub fn causal_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    time: usize,
    heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let width = heads * head_dim;
    let scale = 1.0 / libm::sqrtf(head_dim as f32);
    let mut output = vec![0.0; time * width];
    let mut scores = vec![0.0f32; time];
    for head in 0..heads {
        let offset = head * head_dim;
        for t in 0..time {
            let query = &q[t * width + offset..][..head_dim];
            let mut largest = f32::NEG_INFINITY;
            for (s, score) in scores.iter_mut().enumerate().take(t + 1) {
                let key = &k[s * width + offset..][..head_dim];
                *score = query.iter().zip(key).map(|(a, b)| a * b).sum::<f32>() * scale;
                largest = largest.max(*score);
            }
            let mut total = 0.0;
            for score in scores.iter_mut().take(t + 1) {
                *score = libm::expf(*score - largest);
                total += *score;
            }
            let out = &mut output[t * width + offset..][..head_dim];
            for (s, score) in scores.iter().enumerate().take(t + 1) {
                let value = &v[s * width + offset..][..head_dim];
                let weight = score / total;
                for (o, x) in out.iter_mut().zip(value) {
                    *o += weight * x;
                }
            }
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_a_hand_product() {
        // x = [[1, 2]], w = [[1, 0], [2, -1], [0.5, 0.5]], bias = [0, 1, -1].
        let y = linear(
            &[1.0, 2.0],
            1,
            &[1.0, 0.0, 2.0, -1.0, 0.5, 0.5],
            3,
            Some(&[0.0, 1.0, -1.0]),
        );
        assert_eq!(y, vec![1.0, 1.0, 0.5]);
    }

    /// Runs [`conv2d`] with PyTorch-layout weights.
    fn conv_in_pytorch_layout(
        image: &[f32],
        shape: &ConvShape,
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let weight = shape.weight_by_kernel_row(weight);
        conv2d(image, shape, &weight, bias, &mut ConvScratch::default())
    }

    #[test]
    fn convolution_matches_a_hand_count() {
        // A 3x3 image 1..9, one 2x2 kernel [[1, 0], [0, -1]], stride 1, padding 1 -> 4x4.
        let image: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let shape = ConvShape {
            input: (1, 3, 3),
            out_channels: 1,
            kernel: 2,
            stride: 1,
            padding: 1,
        };
        let out = conv_in_pytorch_layout(&image, &shape, &[1.0, 0.0, 0.0, -1.0], Some(&[0.5]));
        // out[y][x] = in[y-1][x-1] - in[y][x] (zero outside), plus 0.5.
        let expected = [
            -1.0, -2.0, -3.0, 0.0, -4.0, -4.0, -4.0, 3.0, -7.0, -4.0, -4.0, 6.0, 0.0, 7.0, 8.0, 9.0,
        ];
        let expected: Vec<f32> = expected.iter().map(|v| v + 0.5).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn strided_gemm_convolution_matches_a_direct_convolution() {
        for (size, kernel, stride, padding) in [
            (7, 3, 2, 1),
            (6, 2, 3, 2),
            (5, 5, 1, 0),
            (4, 3, 2, 3),
            (9, 3, 1, 1),
            (28, 5, 1, 0),
            (3, 3, 1, 2),
            (24, 5, 1, 0),
            (8, 3, 1, 1),
        ] {
            // 2 input channels take the shifted-copies path, 17 the taps-as-rows path.
            let channels = if size % 2 == 0 { 17 } else { 2 };
            // Rectangular images too: one or two columns more than rows for some sizes.
            let width = size + size % 3;
            let shape = ConvShape {
                input: (channels, size, width),
                out_channels: 3,
                kernel,
                stride,
                padding,
            };
            let image: Vec<f32> = (0..channels * size * width)
                .map(|i| ((i * 7) % 11) as f32 - 5.0)
                .collect();
            let weight: Vec<f32> = (0..3 * channels * kernel * kernel)
                .map(|i| ((i * 5) % 7) as f32 - 3.0)
                .collect();
            let bias = [0.5, -1.0, 2.0];
            let got = conv_in_pytorch_layout(&image, &shape, &weight, Some(&bias));
            let (oh, ow) = shape.output();
            let mut expected = vec![0.0; 3 * oh * ow];
            for o in 0..3 {
                for y in 0..oh {
                    for x in 0..ow {
                        let mut sum = bias[o];
                        for c in 0..channels {
                            for ky in 0..kernel {
                                for kx in 0..kernel {
                                    let (sy, sx) = (
                                        (y * stride + ky) as isize - padding as isize,
                                        (x * stride + kx) as isize - padding as isize,
                                    );
                                    if sy >= 0
                                        && sx >= 0
                                        && (sy as usize) < size
                                        && (sx as usize) < width
                                    {
                                        sum += image
                                            [(c * size + sy as usize) * width + sx as usize]
                                            * weight
                                                [((o * channels + c) * kernel + ky) * kernel + kx];
                                    }
                                }
                            }
                        }
                        expected[(o * oh + y) * ow + x] = sum;
                    }
                }
            }
            assert_eq!(
                got, expected,
                "{size}x{width}, kernel {kernel}, stride {stride}, padding {padding}"
            );
        }
    }

    #[test]
    fn layer_norm_and_gelu_match_hand_values() {
        let mut x = [1.0, 3.0];
        layer_norm(&mut x, 2, &[2.0, 1.0], &[0.0, 1.0], 0.0);
        assert_eq!(x, [-2.0, 2.0]);
        let mut g = [0.0, 1.0, -1.0];
        gelu(&mut g);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 0.841_344_7).abs() < 1e-6);
        assert!((g[2] + 0.158_655_3).abs() < 1e-6);
    }

    #[test]
    fn attention_is_causal_and_averages_values() {
        // One head of width 1; equal scores, so position t averages the values 0..=t.
        let q = [0.0, 0.0, 0.0];
        let v = [3.0, 6.0, 9.0];
        let out = causal_attention(&q, &q, &v, 3, 1, 1);
        assert_eq!(out, vec![3.0, 4.5, 6.0]);
    }
}
