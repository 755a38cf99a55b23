//! Small random affine distortions of 28x28 images (shifts and rotations), the augmentation used
//! while training the CNN and on preservation-set batches.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How strongly to distort training images. The default distorts nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augmentation {
    /// Largest shift in whole pixels, drawn uniformly in `-max..=max` for each axis.
    pub max_shift_pixels: u32,
    /// Largest rotation in degrees, drawn uniformly in `[-max, max]`.
    pub max_rotation_degrees: f32,
}

impl Augmentation {
    /// True when this augmentation changes nothing, so batches can skip it.
    pub fn is_identity(&self) -> bool {
        self.max_shift_pixels == 0 && self.max_rotation_degrees == 0.0
    }

    /// Draws a random distortion and applies it to a square `side` x `side` image.
    pub fn apply(&self, image: &[f32], side: usize, rng: &mut impl Rng) -> Vec<f32> {
        let max_shift = self.max_shift_pixels as i32;
        let shift_x = rng.random_range(-max_shift..=max_shift) as f32;
        let shift_y = rng.random_range(-max_shift..=max_shift) as f32;
        let degrees = if self.max_rotation_degrees > 0.0 {
            rng.random_range(-self.max_rotation_degrees..=self.max_rotation_degrees)
        } else {
            0.0
        };
        affine(image, side, degrees, shift_x, shift_y)
    }
}

/// Rotates `image` by `degrees` (counter-clockwise on screen, about the image centre), then shifts
/// it by (`shift_x`, `shift_y`) pixels. Pixels that come from outside the image are 0; others are
/// sampled bilinearly, so whole-pixel shifts without rotation move pixels exactly.
pub fn affine(image: &[f32], side: usize, degrees: f32, shift_x: f32, shift_y: f32) -> Vec<f32> {
    let centre = (side as f32 - 1.0) / 2.0;
    let (sin, cos) = degrees.to_radians().sin_cos();
    let pixel = |x: i64, y: i64| -> f32 {
        if x < 0 || y < 0 || x >= side as i64 || y >= side as i64 {
            0.0
        } else {
            image[y as usize * side + x as usize]
        }
    };
    let mut out = vec![0.0; side * side];
    for y in 0..side {
        for x in 0..side {
            // Inverse map: undo the shift, then rotate back about the centre. Rows grow downwards,
            // so a counter-clockwise turn on screen is clockwise in (x, y) coordinates.
            let dx = x as f32 - shift_x - centre;
            let dy = y as f32 - shift_y - centre;
            let source_x = cos * dx - sin * dy + centre;
            let source_y = sin * dx + cos * dy + centre;
            let (x0, y0) = (source_x.floor(), source_y.floor());
            let (fx, fy) = (source_x - x0, source_y - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            out[y * side + x] = (1.0 - fx) * (1.0 - fy) * pixel(x0, y0)
                + fx * (1.0 - fy) * pixel(x0 + 1, y0)
                + (1.0 - fx) * fy * pixel(x0, y0 + 1)
                + fx * fy * pixel(x0 + 1, y0 + 1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_hot(side: usize, x: usize, y: usize) -> Vec<f32> {
        let mut image = vec![0.0; side * side];
        image[y * side + x] = 1.0;
        image
    }

    #[test]
    fn whole_pixel_shift_moves_pixels_exactly() {
        let shifted = affine(&one_hot(5, 1, 2), 5, 0.0, 2.0, -1.0);
        assert_eq!(shifted, one_hot(5, 3, 1));
        // A pixel shifted off the image is gone.
        assert_eq!(affine(&one_hot(5, 4, 0), 5, 0.0, 1.0, 0.0), vec![0.0; 25]);
    }

    #[test]
    fn quarter_turn_maps_pixel_centres_onto_pixel_centres() {
        // Side 4, centre (1.5, 1.5): pixel (3, 1) is at offset (1.5, -0.5), right of centre and a
        // little up. A quarter turn counter-clockwise on screen (rows grow downwards) maps offset
        // (dx, dy) to (dy, -dx) = (-0.5, -1.5): the top row, pixel (1, 0).
        let rotated = affine(&one_hot(4, 3, 1), 4, 90.0, 0.0, 0.0);
        for (i, value) in rotated.iter().enumerate() {
            let expected = if i == 1 { 1.0 } else { 0.0 };
            assert!((value - expected).abs() < 1e-5, "pixel {i}: {value}");
        }
    }

    #[test]
    fn identity_augmentation_keeps_the_image() {
        let image: Vec<f32> = (0..49).map(|i| i as f32).collect();
        let mut rng = rand::rng();
        assert_eq!(Augmentation::default().apply(&image, 7, &mut rng), image);
    }
}
