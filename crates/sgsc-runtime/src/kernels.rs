//! The arithmetic of inference on dense f32 buffers (row-major): matrix products through
//! `matrixmultiply`'s SGEMM, im2col convolution, pooling, normalisation, attention and GELU.

/// `c[m x n] = a[m x k] * b[k x n]` with explicit row and column strides (so either operand can
/// be read transposed without a copy); `c` is overwritten.
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
) {
    assert!(c.len() >= m * n, "output buffer too small");
    if m == 0 || n == 0 {
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
            0.0,
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
#[derive(Debug, Clone, Copy)]
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

impl ConvShape {
    /// Output height and width.
    pub fn output(&self) -> (usize, usize) {
        let (_, h, w) = self.input;
        let side = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        (side(h), side(w))
    }
}

/// One image's convolution: im2col into `columns` (reused between calls), then one SGEMM of the
/// `[out, in*k*k]` weights with the `[in*k*k, oh*ow]` columns.
pub fn conv2d(
    image: &[f32],
    shape: &ConvShape,
    weight: &[f32],
    bias: Option<&[f32]>,
    columns: &mut Vec<f32>,
) -> Vec<f32> {
    let (channels, height, width) = shape.input;
    let (oh, ow) = shape.output();
    let (k, stride, pad) = (shape.kernel, shape.stride, shape.padding as isize);
    let patch = channels * k * k;
    columns.clear();
    columns.resize(patch * oh * ow, 0.0);
    for c in 0..channels {
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut columns[((c * k + ky) * k + kx) * oh * ow..][..oh * ow];
                // Output columns x whose source column x * stride + kx - pad lies inside the image.
                let first = (pad - kx as isize).max(0) as usize;
                let first = first.div_ceil(stride).min(ow);
                let reach = width as isize + pad - kx as isize;
                let last = if reach <= 0 {
                    0
                } else {
                    ((reach - 1) as usize / stride + 1).min(ow)
                };
                for y in 0..oh {
                    let source_y = (y * stride + ky) as isize - pad;
                    if source_y < 0 || source_y >= height as isize || first >= last {
                        continue;
                    }
                    let source_row = &image[(c * height + source_y as usize) * width..][..width];
                    let target = &mut row[y * ow..][..ow];
                    let start = first * stride + kx - pad as usize;
                    if stride == 1 {
                        target[first..last]
                            .copy_from_slice(&source_row[start..start + last - first]);
                    } else {
                        for (x, value) in target[first..last].iter_mut().enumerate() {
                            *value = source_row[start + x * stride];
                        }
                    }
                }
            }
        }
    }
    let mut output = vec![0.0; shape.out_channels * oh * ow];
    let n = oh * ow;
    matmul(
        shape.out_channels,
        patch,
        n,
        weight,
        (patch as isize, 1),
        columns,
        (n as isize, 1),
        &mut output,
    );
    if let Some(bias) = bias {
        for (plane, b) in output.chunks_exact_mut(n).zip(bias) {
            plane.iter_mut().for_each(|v| *v += b);
        }
    }
    output
}

/// Max pooling of `[c, h, w]` with window and stride `k` (no padding; the remainder is dropped).
pub fn max_pool(
    image: &[f32],
    (channels, height, width): (usize, usize, usize),
    k: usize,
) -> Vec<f32> {
    let (oh, ow) = (height / k, width / k);
    let mut output = Vec::with_capacity(channels * oh * ow);
    for c in 0..channels {
        let plane = &image[c * height * width..][..height * width];
        for y in 0..oh {
            for x in 0..ow {
                let mut best = f32::NEG_INFINITY;
                for dy in 0..k {
                    for dx in 0..k {
                        let value = plane[(y * k + dy) * width + x * k + dx];
                        if value > best || value.is_nan() {
                            best = value;
                        }
                    }
                }
                output.push(best);
            }
        }
    }
    output
}

/// Layer normalisation of each `features`-long row (biased variance, like PyTorch).
pub fn layer_norm(x: &mut [f32], features: usize, weight: &[f32], bias: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(features) {
        let mean = row.iter().sum::<f32>() / features as f32;
        let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / features as f32;
        let inverse = 1.0 / (variance + eps).sqrt();
        for ((value, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *value = (*value - mean) * inverse * w + b;
        }
    }
}

/// Exact GELU, `x * Phi(x)` (PyTorch's `gelu(approximate="none")`).
pub fn gelu(x: &mut [f32]) {
    for value in x {
        *value = 0.5 * *value * (1.0 + libm::erff(*value * std::f32::consts::FRAC_1_SQRT_2));
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
    let scale = 1.0 / (head_dim as f32).sqrt();
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
                *score = (*score - largest).exp();
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
        let out = conv2d(
            &image,
            &shape,
            &[1.0, 0.0, 0.0, -1.0],
            Some(&[0.5]),
            &mut Vec::new(),
        );
        // out[y][x] = in[y-1][x-1] - in[y][x] (zero outside), plus 0.5.
        let expected = [
            -1.0, -2.0, -3.0, 0.0, -4.0, -4.0, -4.0, 3.0, -7.0, -4.0, -4.0, 6.0, 0.0, 7.0, 8.0, 9.0,
        ];
        let expected: Vec<f32> = expected.iter().map(|v| v + 0.5).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn im2col_matches_a_direct_convolution() {
        for (size, kernel, stride, padding) in
            [(7, 3, 2, 1), (6, 2, 3, 2), (5, 5, 1, 0), (4, 3, 2, 3)]
        {
            let shape = ConvShape {
                input: (2, size, size),
                out_channels: 3,
                kernel,
                stride,
                padding,
            };
            let image: Vec<f32> = (0..2 * size * size)
                .map(|i| ((i * 7) % 11) as f32 - 5.0)
                .collect();
            let weight: Vec<f32> = (0..3 * 2 * kernel * kernel)
                .map(|i| ((i * 5) % 7) as f32 - 3.0)
                .collect();
            let got = conv2d(&image, &shape, &weight, None, &mut Vec::new());
            let (oh, ow) = shape.output();
            let mut expected = vec![0.0; 3 * oh * ow];
            for o in 0..3 {
                for y in 0..oh {
                    for x in 0..ow {
                        let mut sum = 0.0;
                        for c in 0..2 {
                            for ky in 0..kernel {
                                for kx in 0..kernel {
                                    let (sy, sx) = (
                                        (y * stride + ky) as isize - padding as isize,
                                        (x * stride + kx) as isize - padding as isize,
                                    );
                                    if sy >= 0
                                        && sx >= 0
                                        && (sy as usize) < size
                                        && (sx as usize) < size
                                    {
                                        sum += image[(c * size + sy as usize) * size + sx as usize]
                                            * weight[((o * 2 + c) * kernel + ky) * kernel + kx];
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
                "size {size}, kernel {kernel}, stride {stride}, padding {padding}"
            );
        }
    }

    #[test]
    fn pooling_takes_window_maxima() {
        let image = [1.0, 5.0, 2.0, 0.0, 3.0, 4.0, -1.0, 8.0, 0.0];
        assert_eq!(max_pool(&image, (1, 3, 3), 2), vec![5.0]);
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
