//! `sgsc export`: a compressed run's checkpoint as a packed `.sgsc` file (the format of
//! `docs/format.md`), with its data description, safety certificate and test figures inside, or
//! as dequantized float weights in safetensors.

use super::{load_run, LoadedRun};
use crate::files::write_atomically;
use crate::pack::export::{export, metadata, ExportFormat};
use crate::report::{read_summary, Summary, SUMMARY_FILE};
use anyhow::{bail, Result};
use clap::Args;
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
    /// sgsc (the packed file), safetensors (dequantized float32 weights, PyTorch names) or onnx
    /// (QDQ: int8 codes, per-channel scales 2^e, DequantizeLinear; image models).
    #[arg(long, default_value = "sgsc")]
    format: String,
}

/// The run's `summary.json` beside its checkpoint, when there is one.
fn summary_beside(checkpoint: &Path) -> Result<Option<Summary>> {
    let path = checkpoint.with_file_name(SUMMARY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(read_summary(&path)?))
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
    let (certificate, summary) = match summary_beside(&args.checkpoint)? {
        Some(summary) => {
            let (certificate, summary) = summary.for_packing();
            (certificate, Some(summary))
        }
        None => (None, None),
    };
    let metadata = metadata(&config, &info.data, certificate, summary)?;
    let format = match args.format.as_str() {
        "sgsc" => ExportFormat::Sgsc,
        "safetensors" => ExportFormat::Safetensors,
        "onnx" => ExportFormat::Onnx,
        other => bail!("--format {other:?}: expected sgsc, safetensors or onnx"),
    };
    let (bytes, removed) = export(&mut learner.network, metadata, format)?;
    write_atomically(&args.out, &bytes)?;
    println!(
        "{}: {} bytes ({} dead channels removed at export)",
        args.out.display(),
        bytes.len(),
        removed
    );
    Ok(())
}
