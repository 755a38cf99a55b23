//! A PNG picture of a preservation set: every member as a tile of its image (grey or colour, at
//! its own size) with its Grad-CAM map laid over it in red-to-yellow, framed in the colour of the criterion that picked it (saliency red,
//! uncertainty yellow, diversity blue), ordered by criterion and label.

use super::{Criterion, Member};
use crate::data::ImageShape;
use crate::error::{Error, Result};
use image::{Rgb, RgbImage};
use std::io::Cursor;
use std::path::Path;
use tch::{Kind, Tensor};

/// Tiles per row.
const COLUMNS: u32 = 40;

fn frame_colour(criterion: Criterion) -> Rgb<u8> {
    match criterion {
        Criterion::Saliency => Rgb([220, 40, 40]),
        Criterion::Uncertainty => Rgb([235, 200, 0]),
        Criterion::Diversity => Rgb([40, 120, 235]),
        Criterion::RareBigrams => Rgb([40, 180, 80]),
    }
}

/// Draws `members` with their `images` (of `shape`: grey or RGB planes) and Grad-CAM maps `cams`
/// (`[n, h, w]`, any resolution; each is scaled to the tile and to its own maximum), and writes
/// the PNG to `path` atomically.
pub fn write_montage(
    path: &Path,
    members: &[Member],
    images: &[&[u8]],
    cams: &Tensor,
    shape: ImageShape,
) -> Result<()> {
    let (width, height) = (shape.width as u32, shape.height as u32);
    if members.len() != images.len() || cams.size().first() != Some(&(members.len() as i64)) {
        return Err(Error::Model(
            "montage: members, images and maps differ in number".into(),
        ));
    }
    let heat = if members.is_empty() {
        Vec::new()
    } else {
        let resized = cams
            .f_unsqueeze(1)?
            .f_upsample_bilinear2d([height as i64, width as i64], false, None, None)?
            .f_squeeze_dim(1)?;
        let peak = resized
            .f_amax([1, 2].as_slice(), true)?
            .f_clamp_min(1e-12)?;
        Vec::<f32>::try_from(
            &resized
                .f_div(&peak)?
                .f_clamp(0.0, 1.0)?
                .f_to_kind(Kind::Float)?
                .f_flatten(0, -1)?,
        )?
    };
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| {
        (
            members[i].criterion as u8,
            members[i].label,
            members[i].index,
        )
    });
    let (tile_width, tile_height) = (width + 2, height + 2);
    let rows = (members.len() as u32).div_ceil(COLUMNS).max(1);
    let mut picture = RgbImage::from_pixel(
        COLUMNS * tile_width,
        rows * tile_height,
        Rgb([255, 255, 255]),
    );
    let area = (width * height) as usize;
    for (slot, &member) in order.iter().enumerate() {
        let (left, top) = (
            (slot as u32 % COLUMNS) * tile_width,
            (slot as u32 / COLUMNS) * tile_height,
        );
        let frame = frame_colour(members[member].criterion);
        for offset in 0..tile_width {
            picture.put_pixel(left + offset, top, frame);
            picture.put_pixel(left + offset, top + tile_height - 1, frame);
        }
        for offset in 0..tile_height {
            picture.put_pixel(left, top + offset, frame);
            picture.put_pixel(left + tile_width - 1, top + offset, frame);
        }
        for y in 0..height {
            for x in 0..width {
                let pixel = (y * width + x) as usize;
                // Grey images repeat their one plane; colour images take one plane per channel.
                let base = [0, 1, 2].map(|channel| {
                    let plane = if shape.channels == 3 { channel } else { 0 };
                    images[member][plane * area + pixel] as f32
                });
                let h = heat[member * area + pixel];
                let alpha = 0.6 * h;
                let overlay = [255.0, 255.0 * h, 0.0];
                let colour = [0, 1, 2].map(|channel| {
                    ((1.0 - alpha) * base[channel] + alpha * overlay[channel]).round() as u8
                });
                picture.put_pixel(left + 1 + x, top + 1 + y, Rgb(colour));
            }
        }
    }
    let mut bytes = Cursor::new(Vec::new());
    picture
        .write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| Error::Training(format!("encoding {}: {e}", path.display())))?;
    crate::files::write_atomically(path, bytes.get_ref())
}
