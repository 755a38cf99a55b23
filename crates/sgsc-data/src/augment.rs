//! Small random distortions of training images: whole-pixel shifts with zero fill (which is
//! torchvision's `RandomCrop(size, padding=p)`: pad by `p` black pixels, cut a random window),
//! rotations, and horizontal flips. Digits use shifts (and rotations); colour photographs use
//! shifts and flips. Every channel of an image gets the same distortion.

use crate::images::ImageShape;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How strongly to distort training images. The default distorts nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augmentation {
    /// Largest shift in whole pixels, drawn uniformly in `-max..=max` for each axis; pixels
    /// shifted in from outside are black. The same as a random crop after padding by this much.
    pub max_shift_pixels: u32,
    /// Largest rotation in degrees, drawn uniformly in `[-max, max]`.
    pub max_rotation_degrees: f32,
    /// Mirror half of the images left to right (photographs; never digits or text).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub horizontal_flip: bool,
}

impl Augmentation {
    /// True when this augmentation changes nothing, so batches can skip it.
    pub fn is_identity(&self) -> bool {
        self.max_shift_pixels == 0 && self.max_rotation_degrees == 0.0 && !self.horizontal_flip
    }

    /// Draws a random distortion and applies it to every channel of an image of `shape`
    /// (channel-major). The draws come in a fixed order: the shifts, then a rotation and a flip
    /// only where configured, so a config without rotations and flips draws exactly what it did
    /// before flips existed.
    pub fn apply(&self, image: &[f32], shape: ImageShape, rng: &mut impl Rng) -> Vec<f32> {
        let max_shift = self.max_shift_pixels as i32;
        let shift_x = rng.random_range(-max_shift..=max_shift) as f32;
        let shift_y = rng.random_range(-max_shift..=max_shift) as f32;
        let degrees = if self.max_rotation_degrees > 0.0 {
            rng.random_range(-self.max_rotation_degrees..=self.max_rotation_degrees)
        } else {
            0.0
        };
        let flip = self.horizontal_flip && rng.random_bool(0.5);
        let plane = shape.height * shape.width;
        let mut out = Vec::with_capacity(image.len());
        for channel in image.chunks_exact(plane) {
            let mut moved = affine(channel, shape, degrees, shift_x, shift_y);
            if flip {
                for row in moved.chunks_exact_mut(shape.width) {
                    row.reverse();
                }
            }
            out.extend(moved);
        }
        out
    }
}

/// Rotates one channel plane of an image of `shape` by `degrees` (counter-clockwise on screen,
/// about the image centre), then shifts it by (`shift_x`, `shift_y`) pixels. Pixels that come
/// from outside the image are 0; others are sampled bilinearly, so whole-pixel shifts without
/// rotation move pixels exactly.
pub fn affine(
    plane: &[f32],
    shape: ImageShape,
    degrees: f32,
    shift_x: f32,
    shift_y: f32,
) -> Vec<f32> {
    let (height, width) = (shape.height, shape.width);
    let centre_x = (width as f32 - 1.0) / 2.0;
    let centre_y = (height as f32 - 1.0) / 2.0;
    let (sin, cos) = degrees.to_radians().sin_cos();
    let pixel = |x: i64, y: i64| -> f32 {
        if x < 0 || y < 0 || x >= width as i64 || y >= height as i64 {
            0.0
        } else {
            plane[y as usize * width + x as usize]
        }
    };
    let mut out = vec![0.0; height * width];
    for y in 0..height {
        for x in 0..width {
            // Inverse map: undo the shift, then rotate back about the centre. Rows grow downwards,
            // so a counter-clockwise turn on screen is clockwise in (x, y) coordinates.
            let dx = x as f32 - shift_x - centre_x;
            let dy = y as f32 - shift_y - centre_y;
            let source_x = cos * dx - sin * dy + centre_x;
            let source_y = sin * dx + cos * dy + centre_y;
            let (x0, y0) = (source_x.floor(), source_y.floor());
            let (fx, fy) = (source_x - x0, source_y - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            out[y * width + x] = (1.0 - fx) * (1.0 - fy) * pixel(x0, y0)
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
    use rand::SeedableRng;

    fn square(side: usize) -> ImageShape {
        ImageShape::new(1, side, side)
    }

    fn one_hot(side: usize, x: usize, y: usize) -> Vec<f32> {
        let mut image = vec![0.0; side * side];
        image[y * side + x] = 1.0;
        image
    }

    #[test]
    fn whole_pixel_shift_moves_pixels_exactly() {
        let shifted = affine(&one_hot(5, 1, 2), square(5), 0.0, 2.0, -1.0);
        assert_eq!(shifted, one_hot(5, 3, 1));
        // A pixel shifted off the image is gone.
        assert_eq!(
            affine(&one_hot(5, 4, 0), square(5), 0.0, 1.0, 0.0),
            vec![0.0; 25]
        );
        // A wide image (3 rows of 5): the pixel at (x 4, y 0) moves to (x 1, y 2).
        let mut wide = vec![0.0; 15];
        wide[4] = 1.0;
        let moved = affine(&wide, ImageShape::new(1, 3, 5), 0.0, -3.0, 2.0);
        let mut expected = vec![0.0; 15];
        expected[2 * 5 + 1] = 1.0;
        assert_eq!(moved, expected);
    }

    #[test]
    fn flips_mirror_every_channel_alike_and_half_of_the_images() {
        let flip = Augmentation {
            horizontal_flip: true,
            ..Augmentation::default()
        };
        let shape = ImageShape::new(2, 2, 3);
        let image: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mirrored: Vec<f32> = [2, 1, 0, 5, 4, 3, 8, 7, 6, 11, 10, 9]
            .iter()
            .map(|&v| v as f32)
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut flipped = 0;
        for _ in 0..200 {
            let out = flip.apply(&image, shape, &mut rng);
            if out == mirrored {
                flipped += 1;
            } else {
                assert_eq!(out, image);
            }
        }
        assert!((70..130).contains(&flipped), "{flipped} of 200 flipped");
    }

    #[test]
    fn quarter_turn_maps_pixel_centres_onto_pixel_centres() {
        // Side 4, centre (1.5, 1.5): pixel (3, 1) is at offset (1.5, -0.5), right of centre and a
        // little up. A quarter turn counter-clockwise on screen (rows grow downwards) maps offset
        // (dx, dy) to (dy, -dx) = (-0.5, -1.5): the top row, pixel (1, 0).
        let rotated = affine(&one_hot(4, 3, 1), square(4), 90.0, 0.0, 0.0);
        for (i, value) in rotated.iter().enumerate() {
            let expected = if i == 1 { 1.0 } else { 0.0 };
            assert!((value - expected).abs() < 1e-5, "pixel {i}: {value}");
        }
    }

    #[test]
    fn identity_augmentation_keeps_the_image() {
        let image: Vec<f32> = (0..49).map(|i| i as f32).collect();
        let mut rng = rand::rng();
        assert_eq!(
            Augmentation::default().apply(&image, square(7), &mut rng),
            image
        );
    }
}
