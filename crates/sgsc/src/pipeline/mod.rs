//! The pipeline of one run: train (pruning as it goes), then put the network in its stored form
//! and measure it on the untouched test split, then pack it into its `.sgsc` file and write the
//! run's `summary.json`. [`compare`] runs the three modes of METHOD.md §5 side by side.

pub mod compare;

use crate::codegen::measured_size;
use crate::config::{ExperimentConfig, TargetMeasure};
use crate::data::DataDescription;
use crate::error::Result;
use crate::files::write_atomically;
use crate::models::Network;
use crate::pack::export::{export, metadata, ExportFormat};
use crate::report::{summarize, write_summary, RunFacts, Summary, MODEL_FILE, SUMMARY_FILE};
use crate::size::SizeReport;
use crate::train::safety::TargetOutcome;
use crate::train::trainer::{train, RunOptions};

/// Trains one run and reports on it: the figures of [`summarize`], written to the run folder's
/// `summary.json`. Returns `None` when `options.stop_at` ended the run early.
pub fn run(
    config: &ExperimentConfig,
    options: &RunOptions,
) -> Result<Option<(Summary, SizeReport)>> {
    let mut outcome = train(config, options)?;
    if outcome.steps_done < config.train.steps {
        return Ok(None);
    }
    let facts = RunFacts {
        mode: options.mode,
        steps: config.train.steps,
        wall_seconds: outcome.wall_seconds,
        rollbacks: outcome.rollbacks,
        certificate: outcome.certificate.clone(),
    };
    let (mut summary, size) = summarize(
        &outcome.learner.network,
        &outcome.learner.original,
        config,
        &outcome.data,
        &options.data_dirs,
        options.device,
        facts,
    )?;
    if options.mode.quantizes() {
        let bytes = pack_run(
            &mut outcome.learner.network,
            config,
            &outcome.data.description(),
            &mut summary,
        )?;
        write_atomically(&options.out_dir.join(MODEL_FILE), &bytes)?;
    }
    write_summary(&options.out_dir.join(SUMMARY_FILE), &summary)?;
    Ok(Some((summary, size)))
}

/// Packs a quantized run's `network` (cutting its dead channels in place) into the bytes of its
/// `.sgsc` file, and makes that file's length the summary's size. With a size target, the
/// certificate says whether the file is within it and the summary by how many bytes it is not.
pub fn pack_run(
    network: &mut Network,
    config: &ExperimentConfig,
    description: &DataDescription,
    summary: &mut Summary,
) -> Result<Vec<u8>> {
    let target = summary.target_bytes;
    let mut met = true;
    let (bytes, size) = loop {
        if let (Some(target_bytes), Some(certificate)) = (target, summary.safety.as_mut()) {
            certificate.target = Some(TargetOutcome { target_bytes, met });
        }
        let (certificate, packed_summary) = summary.for_packing();
        let metadata = metadata(config, description, certificate, Some(packed_summary))?;
        let (bytes, _) = export(network, metadata, ExportFormat::Sgsc)?;
        // The certificate's verdict is part of the file: settle on one that agrees with it.
        let size = measured_size(&bytes, config.quant.target_measure)? as i64;
        let within = target.is_none_or(|target| size <= target);
        if within == met || summary.safety.is_none() {
            break (bytes, size);
        }
        met = within;
    };
    summary.set_file_size(bytes.len());
    if config.quant.target_measure == TargetMeasure::Flash {
        summary.flash_bytes = Some(size);
    }
    summary.shortfall_bytes = target.map(|target| size - target).filter(|&over| over > 0);
    Ok(bytes)
}
