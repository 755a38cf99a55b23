//! A folder of images in torchvision's ImageFolder layout: `DIR/train/<class>/*.png|jpg` and
//! `DIR/test/<class>/...`. Classes are the training folder's sub-folders sorted by name; each
//! image is converted to grey or RGB as the model's input says and resized to its side.

use crate::images::{ImageShape, ImageSplit, Normalization, MAX_CLASSES};
use crate::DataError;
use image::imageops::FilterType;
use std::path::{Path, PathBuf};

/// The class folders of `split_dir`, sorted by name (hidden folders are skipped).
fn class_folders(split_dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let entries = std::fs::read_dir(split_dir).map_err(|cause| DataError::Io {
        path: split_dir.to_path_buf(),
        cause,
    })?;
    let mut folders = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|cause| DataError::Io {
            path: split_dir.to_path_buf(),
            cause,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !name.starts_with('.') {
            folders.push((name, entry.path()));
        }
    }
    folders.sort();
    Ok(folders)
}

/// True for a file name that ends in `.png`, `.jpg` or `.jpeg` (any case).
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
}

/// The image files of a class folder, sorted by name (hidden files such as macOS's `._x.png`
/// are skipped); an empty folder is an error.
fn image_files(folder: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(folder).map_err(|cause| DataError::Io {
        path: folder.to_path_buf(),
        cause,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|cause| DataError::Io {
                path: folder.to_path_buf(),
                cause,
            })?
            .path();
        let hidden = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'));
        if path.is_file() && is_image(&path) && !hidden {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(DataError::EmptyClass {
            folder: folder.to_path_buf(),
        });
    }
    files.sort();
    Ok(files)
}

/// Decodes one image file to `shape`: grey (1 channel) or RGB (3), resized (bilinear) when its
/// side differs, channel-major.
pub fn decode(bytes: &[u8], shape: ImageShape, file: &Path) -> Result<Vec<u8>, DataError> {
    let decoded = image::load_from_memory(bytes).map_err(|error| DataError::Decode {
        file: file.to_path_buf(),
        reason: error.to_string(),
    })?;
    let (width, height) = (shape.width as u32, shape.height as u32);
    let resize = |w: u32, h: u32| (w, h) != (width, height);
    match shape.channels {
        1 => {
            let mut grey = decoded.to_luma8();
            if resize(grey.width(), grey.height()) {
                grey = image::imageops::resize(&grey, width, height, FilterType::Triangle);
            }
            Ok(grey.into_raw())
        }
        3 => {
            let mut rgb = decoded.to_rgb8();
            if resize(rgb.width(), rgb.height()) {
                rgb = image::imageops::resize(&rgb, width, height, FilterType::Triangle);
            }
            let plane = shape.height * shape.width;
            let mut planes = vec![0u8; 3 * plane];
            for (i, pixel) in rgb.pixels().enumerate() {
                for channel in 0..3 {
                    planes[channel * plane + i] = pixel.0[channel];
                }
            }
            Ok(planes)
        }
        other => Err(DataError::Config(format!(
            "an image folder is read as grey (1 channel) or RGB (3 channels), not {other}"
        ))),
    }
}

/// The class names of the folder's training split, sorted.
pub fn classes(dir: &Path) -> Result<Vec<String>, DataError> {
    let folders = class_folders(&dir.join("train"))?;
    if folders.is_empty() {
        return Err(DataError::Config(format!(
            "{} has no class folders",
            dir.join("train").display()
        )));
    }
    if folders.len() > MAX_CLASSES {
        return Err(DataError::Config(format!(
            "{} has {} class folders; at most {MAX_CLASSES} are supported",
            dir.join("train").display(),
            folders.len()
        )));
    }
    Ok(folders.into_iter().map(|(name, _)| name).collect())
}

/// Reads the images of one split (`train` or `test`) of an image folder whose classes are
/// `classes`; a class folder of the split that is not among them is an error. Images are
/// numbered in listing order (class by class, files sorted by name).
pub fn load_split(
    dir: &Path,
    split: &str,
    classes: &[String],
    shape: ImageShape,
) -> Result<ImageSplit, DataError> {
    let mut out = ImageSplit::empty(shape, Normalization::identity(shape.channels));
    for (name, folder) in class_folders(&dir.join(split))? {
        let label = classes
            .iter()
            .position(|class| *class == name)
            .ok_or_else(|| DataError::Malformed {
                file: folder.display().to_string(),
                reason: format!("class {name:?} is not among the training classes"),
            })?;
        for file in image_files(&folder)? {
            let bytes = crate::locate::read(&file)?;
            out.images.extend(decode(&bytes, shape, &file)?);
            out.source_indices.push(out.labels.len() as u32);
            out.labels.push(label as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_images_become_planes_and_grey_stays_grey() {
        let mut rgb = image::RgbImage::new(2, 1);
        rgb.put_pixel(0, 0, image::Rgb([10, 20, 30]));
        rgb.put_pixel(1, 0, image::Rgb([40, 50, 60]));
        let mut png = Vec::new();
        rgb.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let planes = decode(&png, ImageShape::new(3, 1, 2), Path::new("a.png")).unwrap();
        assert_eq!(planes, vec![10, 40, 20, 50, 30, 60]);
        // Grey from RGB: the luma of (10, 20, 30) is about 18.6.
        let grey = decode(&png, ImageShape::new(1, 1, 2), Path::new("a.png")).unwrap();
        assert_eq!(grey.len(), 2);
        assert!((17..=19).contains(&grey[0]), "{grey:?}");
        assert!(matches!(
            decode(
                b"not an image",
                ImageShape::new(1, 1, 2),
                Path::new("b.png")
            ),
            Err(DataError::Decode { .. })
        ));
    }
}
