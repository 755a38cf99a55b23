//! `sgsc export`: a compressed run's checkpoint as a packed `.sgsc` file (the format of
//! `docs/format.md`), with its data description, safety certificate and test figures inside.

use super::{load_run, LoadedRun};
use crate::data::mnist::{PIXEL_MEAN, PIXEL_STD};
use crate::pack::export::{remove_dead_channels, to_packed};
use crate::report::Summary;
use crate::train::checkpoint::write_atomically;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use sgsc_runtime::model::{Metadata, Normalization};
use std::path::{Path, PathBuf};
use tch::Device;

/// Arguments of `sgsc export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Checkpoint of an `unsafe` or `safe` run (its run folder's `checkpoint.safetensors`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Where to write the model.
    #[arg(long)]
    out: PathBuf,
}

/// The run's `summary.json` beside its checkpoint, when there is one.
fn read_summary(checkpoint: &Path) -> Result<Option<Summary>> {
    let path = checkpoint.with_file_name("summary.json");
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
    ))
}

/// Runs `sgsc export`.
pub fn run(args: ExportArgs) -> Result<()> {
    let LoadedRun {
        info,
        config,
        mode,
        mut learner,
    } = load_run(&args.checkpoint, Device::Cpu)?;
    if !mode.quantizes() {
        bail!(
            "{}: a {mode} run has float weights; export the checkpoint of an unsafe or safe run",
            args.checkpoint.display()
        );
    }
    let removed = remove_dead_channels(&mut learner.network)?;
    let summary = read_summary(&args.checkpoint)?;
    let metadata = Metadata {
        input: config.model.input.iter().map(|&d| d as usize).collect(),
        normalization: (!config.data.is_text()).then_some(Normalization {
            mean: PIXEL_MEAN,
            std: PIXEL_STD,
        }),
        vocabulary: info
            .vocabulary
            .as_ref()
            .map(|vocabulary| vocabulary.symbols.iter().collect()),
        classes: None,
        data: Some(serde_json::to_value(&config.data)?),
        certificate: summary
            .as_ref()
            .and_then(|s| s.safety.as_ref())
            .map(serde_json::to_value)
            .transpose()?,
        summary: summary.as_ref().map(|s| {
            json!({
                "mode": s.mode, "seed": s.seed, "steps": s.steps, "gamma": s.gamma,
                "test_accuracy": s.test_accuracy, "test_loss": s.test_loss,
            })
        }),
    };
    let packed = to_packed(&learner.network, metadata)?;
    let bytes = sgsc_runtime::format::encode(&packed)?;
    write_atomically(&args.out, &bytes)?;
    println!(
        "{}: {} bytes ({} dead channels removed at export)",
        args.out.display(),
        bytes.len(),
        removed
    );
    Ok(())
}
