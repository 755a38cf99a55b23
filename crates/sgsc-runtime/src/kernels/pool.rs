//! Pooling of `[c, h, w]` feature maps (the reference implementation: a loop over each window).

use crate::layers::Pool;
use crate::prelude::*;

/// What a window reduces to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// The largest value (padding never wins; a NaN does, as in PyTorch).
    Max,
    /// The sum over the window divided by `kernel * kernel`: padding counts as zeros.
    Average,
}

/// Pools each channel of `image` (`[c, h, w]`) over `pool`'s windows.
pub fn pool(
    image: &[f32],
    (channels, height, width): (usize, usize, usize),
    pool: &Pool,
    reduce: Reduce,
) -> Vec<f32> {
    let (kernel, stride, padding) = (pool.kernel, pool.stride(), pool.padding);
    let (Ok(oh), Ok(ow)) = (pool.output_side(height), pool.output_side(width)) else {
        return Vec::new();
    };
    let divisor = (kernel * kernel) as f32;
    let mut output = Vec::with_capacity(channels * oh * ow);
    for plane in image.chunks_exact(height * width).take(channels) {
        for y in 0..oh {
            for x in 0..ow {
                let mut best = f32::NEG_INFINITY;
                let mut sum = 0.0f32;
                for dy in 0..kernel {
                    let Some(row) = (y * stride + dy).checked_sub(padding) else {
                        continue;
                    };
                    if row >= height {
                        continue;
                    }
                    for dx in 0..kernel {
                        let Some(column) = (x * stride + dx).checked_sub(padding) else {
                            continue;
                        };
                        if column >= width {
                            continue;
                        }
                        let value = plane[row * width + column];
                        sum += value;
                        if value > best || value.is_nan() {
                            best = value;
                        }
                    }
                }
                output.push(match reduce {
                    Reduce::Max => best,
                    Reduce::Average => sum / divisor,
                });
            }
        }
    }
    output
}

/// The mean of each channel's `plane` values.
pub fn global_average(image: &[f32], plane: usize) -> Vec<f32> {
    image
        .chunks_exact(plane)
        .map(|values| values.iter().sum::<f32>() / plane as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: [f32; 9] = [1.0, 5.0, 2.0, 0.0, 3.0, 4.0, -1.0, 8.0, 0.0];

    fn window(kernel: usize, stride: Option<usize>, padding: usize) -> Pool {
        Pool {
            kernel,
            stride,
            padding,
        }
    }

    #[test]
    fn max_pooling_takes_window_maxima() {
        assert_eq!(
            pool(&IMAGE, (1, 3, 3), &window(2, None, 0), Reduce::Max),
            vec![5.0]
        );
        // Stride 1: the four 2x2 windows.
        assert_eq!(
            pool(&IMAGE, (1, 3, 3), &window(2, Some(1), 0), Reduce::Max),
            vec![5.0, 5.0, 8.0, 8.0]
        );
        // Padding 1, stride 2: windows at -1 and 1 on each axis; padding never wins.
        let image = [-1.0, -2.0, -3.0, -4.0];
        assert_eq!(
            pool(&image, (1, 2, 2), &window(2, Some(2), 1), Reduce::Max),
            vec![-1.0, -2.0, -3.0, -4.0]
        );
    }

    #[test]
    fn average_pooling_divides_by_the_whole_window() {
        // 3x3 window, padding 1, stride 2 on 3x3: four windows, each sees a 2x2 corner.
        let corners = pool(&IMAGE, (1, 3, 3), &window(3, Some(2), 1), Reduce::Average);
        let by_hand = [
            (1.0 + 5.0 + 0.0 + 3.0) / 9.0,
            (5.0 + 2.0 + 3.0 + 4.0) / 9.0,
            (0.0 + 3.0 - 1.0 + 8.0) / 9.0,
            (3.0 + 4.0 + 8.0 + 0.0) / 9.0,
        ];
        assert_eq!(corners, by_hand);
        assert_eq!(global_average(&IMAGE, 9), vec![22.0 / 9.0]);
        assert_eq!(global_average(&[1.0, 3.0, 2.0, 6.0], 2), vec![2.0, 4.0]);
    }
}
