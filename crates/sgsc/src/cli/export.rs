//! `sgsc export`: a compressed run's checkpoint as a packed `.sgsc` file (the format of
//! `docs/format.md`), with its data description, safety certificate and test figures inside, as
//! dequantized float weights in safetensors, as ONNX, or (from a checkpoint or a packed file) as
//! a C library running the integer path ([`crate::codegen`]).

use super::integer::{calibrated, CalibrationArgs};
use super::{load_run, LoadedRun};
use crate::codegen::generate;
use crate::files::write_atomically;
use crate::pack::export::{export, metadata, ExportFormat};
use crate::report::{read_summary, Summary, SUMMARY_FILE};
use anyhow::{bail, Context, Result};
use clap::Args;
use sgsc_runtime::Model;
use std::path::{Path, PathBuf};
use tch::Device;

/// Arguments of `sgsc export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Checkpoint of an `unsafe`, `distill` or `safe` run (its run folder's
    /// `checkpoint.safetensors`).
    #[arg(long, required_unless_present = "model")]
    checkpoint: Option<PathBuf>,
    /// A packed model file (`--format c` only), instead of a checkpoint.
    #[arg(long, conflicts_with = "checkpoint")]
    model: Option<PathBuf>,
    /// Where to write the model (a folder for `--format c`).
    #[arg(long)]
    out: PathBuf,
    /// sgsc (the packed file), safetensors (dequantized float32 weights, PyTorch names), onnx
    /// (QDQ: int8 codes, per-channel scales 2^e, DequantizeLinear; image models) or c (a C99
    /// library running the integer path: model.h, model.c, example_main.c; image models).
    #[arg(long, default_value = "sgsc")]
    format: String,
    #[command(flatten)]
    calibration: CalibrationArgs,
    /// Data folder for the calibration images of `--format c` (else $SGSC_DATA_DIR, else
    /// ./data, else download).
    #[arg(long)]
    data_dir: Option<PathBuf>,
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
    let format = match args.format.as_str() {
        "sgsc" => Some(ExportFormat::Sgsc),
        "safetensors" => Some(ExportFormat::Safetensors),
        "onnx" => Some(ExportFormat::Onnx),
        "c" => None,
        other => bail!("--format {other:?}: expected sgsc, safetensors, onnx or c"),
    };
    let packed = match (&args.model, &args.checkpoint) {
        (Some(model), _) if format.is_none() => {
            std::fs::read(model).with_context(|| format!("reading {}", model.display()))?
        }
        (Some(_), _) => {
            bail!("--model is the input of --format c; other formats read --checkpoint")
        }
        (None, Some(checkpoint)) => {
            let format = format.unwrap_or(ExportFormat::Sgsc);
            let (bytes, removed) = export_checkpoint(checkpoint, format)?;
            if args.format != "c" {
                write_atomically(&args.out, &bytes)?;
                println!(
                    "{}: {} bytes ({} dead channels removed at export)",
                    args.out.display(),
                    bytes.len(),
                    removed
                );
                return Ok(());
            }
            bytes
        }
        (None, None) => bail!("give --checkpoint (or, for --format c, --model)"),
    };
    export_c(&packed, &args)
}

/// The bytes of a run's checkpoint in `format`, and how many dead channels went.
fn export_checkpoint(checkpoint: &Path, format: ExportFormat) -> Result<(Vec<u8>, usize)> {
    let LoadedRun {
        info,
        config,
        mode,
        mut learner,
    } = load_run(checkpoint, Device::Cpu)?;
    if !mode.quantizes() {
        bail!(
            "{}: a {mode} run has float weights; export the checkpoint of a compressing run",
            checkpoint.display()
        );
    }
    let (certificate, summary) = match summary_beside(checkpoint)? {
        Some(summary) => {
            let (certificate, summary) = summary.for_packing();
            (certificate, Some(summary))
        }
        None => (None, None),
    };
    let metadata = metadata(&config, &info.data, certificate, summary)?;
    Ok(export(&mut learner.network, metadata, format)?)
}

/// Writes the C library of a packed image classifier into the folder `args.out`.
fn export_c(packed: &[u8], args: &ExportArgs) -> Result<()> {
    let model = Model::from_bytes(packed).context("reading the packed model")?;
    let input = match *model.metadata().input.as_slice() {
        [channels, height, width] => [channels, height, width],
        ref other => bail!("the C export runs image classifiers (input {other:?})"),
    };
    let (integer, calibration) = calibrated(&model, &args.calibration, &args.data_dir)?;
    let classes = model.metadata().classes.clone().unwrap_or_default();
    let library = generate(integer.plan(), input, &classes)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for (name, text) in [
        ("model.h", &library.header),
        ("model.c", &library.source),
        ("example_main.c", &library.example),
    ] {
        write_atomically(&args.out.join(name), text.as_bytes())?;
    }
    println!(
        "{}: model.h, model.c, example_main.c ({calibration}); flash: {} B of weights and {} B of other constants, plus about {} B of code on a Cortex-M0; RAM: {} B of activations and {} B for a weight row, plus about {} B of stack on a Cortex-M0",
        args.out.display(),
        library.weight_bytes,
        library.constant_bytes,
        crate::codegen::CODE_BYTES,
        library.arena_bytes,
        library.row_bytes,
        library.stack_bytes
    );
    Ok(())
}
