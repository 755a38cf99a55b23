//! What `sgsc eval --integer` and `sgsc export --format c` share: calibrating a packed image
//! classifier's activation ranges on its training images, and building its integer plan.

use super::data_dirs;
use crate::data::{load_train_validation, DataConfig};
use crate::report::packed::pixels_of;
use anyhow::{bail, Context, Result};
use clap::Args;
use sgsc_runtime::{IntegerModel, Model};
use std::path::PathBuf;

/// How the integer path is calibrated.
#[derive(Debug, Args)]
pub struct CalibrationArgs {
    /// Training images (evenly spaced through the training split) that calibrate the integer
    /// path's activation ranges.
    #[arg(long, default_value_t = 1000)]
    pub calibration_images: usize,
    /// Bits of the integer path's activation codes (2 to 8).
    #[arg(long, default_value_t = 8)]
    pub activation_bits: u32,
}

/// The data description a packed file records.
pub fn recorded_data(model: &Model) -> Result<DataConfig> {
    serde_json::from_value(
        model
            .metadata()
            .data
            .clone()
            .context("the file records no data set")?,
    )
    .context("the file's data description")
}

/// The integer model of `model`, its ranges calibrated on `args.calibration_images` training
/// images of the data set the file records; returns it with the number of images used.
pub fn calibrated(
    model: &Model,
    args: &CalibrationArgs,
    data_dir: &Option<PathBuf>,
) -> Result<(IntegerModel, usize)> {
    let data = recorded_data(model)?;
    let input: Vec<i64> = model.metadata().input.iter().map(|&d| d as i64).collect();
    let train = load_train_validation(&data, &input, &data_dirs(data_dir))?.train;
    let Some(images) = train.images() else {
        bail!("the integer path runs image classifiers");
    };
    let count = args.calibration_images.clamp(1, images.len().max(1));
    let positions: Vec<usize> = (0..count).map(|i| i * images.len() / count).collect();
    let ranges = model.layer_ranges(&pixels_of(images, &positions), count)?;
    let integer = IntegerModel::new(model.packed(), &ranges, args.activation_bits)?;
    Ok((integer, count))
}
