//! What `sgsc eval --integer`, `sgsc predict --integer` and `sgsc export --format c` share: a
//! packed image classifier's integer plan, with the activation ranges its certificate records
//! (a `safe` run's final gate calibrated and measured them) or calibrated here on training
//! images of the data set the file records.

use super::data_dirs;
use crate::data::{load_train_validation, DataConfig};
use crate::pack::evaluate::{calibration_ranges, integer_model, CALIBRATION_IMAGES};
use crate::train::safety::IntegerFigures;
use anyhow::{bail, Context, Result};
use clap::Args;
use sgsc_runtime::{IntegerModel, Model};
use std::path::PathBuf;

/// How the integer path is calibrated.
#[derive(Debug, Args)]
pub struct CalibrationArgs {
    /// Training images (evenly spaced through the training split) that calibrate the integer
    /// path's activation ranges [default: the ranges the file's certificate records, else
    /// 1000 images].
    #[arg(long)]
    pub calibration_images: Option<usize>,
    /// Bits of the integer path's activation codes (2 to 8) [default: the certificate's, else 8].
    #[arg(long)]
    pub activation_bits: Option<u32>,
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

/// The integer figures a packed file's certificate records, if any.
fn recorded_integer(model: &Model) -> Option<IntegerFigures> {
    let certificate = model.metadata().certificate.as_ref()?;
    serde_json::from_value(certificate.get("integer")?.clone()).ok()
}

/// The integer model of `model` and where its ranges came from: the certificate's, unless
/// `args` asks for a calibration, or calibrated on the training images of the data set the
/// file records.
pub fn calibrated(
    model: &Model,
    args: &CalibrationArgs,
    data_dir: &Option<PathBuf>,
) -> Result<(IntegerModel, String)> {
    let recorded = recorded_integer(model);
    if let (Some(recorded), None) = (&recorded, args.calibration_images) {
        let bits = args.activation_bits.unwrap_or(recorded.activation_bits);
        let integer = integer_model(model, &recorded.ranges, bits)?;
        return Ok((
            integer,
            format!("{bits}-bit activations, ranges from the certificate"),
        ));
    }
    let data = recorded_data(model)?;
    let input: Vec<i64> = model.metadata().input.iter().map(|&d| d as i64).collect();
    let train = load_train_validation(&data, &input, &data_dirs(data_dir))?.train;
    let Some(images) = train.images() else {
        bail!("the integer path runs image classifiers");
    };
    let count = args
        .calibration_images
        .unwrap_or(CALIBRATION_IMAGES)
        .clamp(1, images.len().max(1));
    let ranges: Vec<f64> = calibration_ranges(model, images, count)?
        .into_iter()
        .map(f64::from)
        .collect();
    let bits = args
        .activation_bits
        .unwrap_or(crate::config::DEFAULT_ACTIVATION_BITS);
    Ok((
        integer_model(model, &ranges, bits)?,
        format!("{bits}-bit activations, ranges from {count} training images"),
    ))
}
