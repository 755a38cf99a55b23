//! The `sgsc` command line: `train`, `eval`, `preserve`, `compare`, `sample`, `bench`, `export`,
//! `inspect` and `predict`. Each subcommand is a thin layer over the
//! library stages; nothing below this module knows about arguments or terminals.

mod bench;
mod compare;
mod eval;
mod export;
mod inspect;
mod integer;
mod predict;
mod preserve;
mod report;
mod sample;
mod sweep;
mod train;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tch::Device;

/// The size target of `train` and `compare`: a file length, or the flash of the C build.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// Steer the size to a file of at most this many bytes (quant.target_bytes; in `compare`,
    /// every compressing run, and without a target there safe finds the smallest model within
    /// its budget and the others run to its size).
    #[arg(long)]
    target_bytes: Option<i64>,
    /// Steer instead to at most this many bytes of flash in the model's C build for a
    /// microcontroller (weights, constants and code, estimated without compiling; image
    /// classifiers): quant.target_bytes with quant.target_measure = "flash".
    #[arg(long, conflicts_with = "target_bytes")]
    target_flash: Option<i64>,
}

impl TargetArgs {
    /// Sets the target, if one was given, in `quant`.
    pub fn apply(&self, quant: &mut crate::config::QuantConfig) {
        if let Some(target) = self.target_bytes {
            quant.target_bytes = Some(target);
        }
        if let Some(target) = self.target_flash {
            quant.target_bytes = Some(target);
            quant.target_measure = crate::config::TargetMeasure::Flash;
        }
    }
}

/// Safety-guided self-compression of neural networks.
#[derive(Debug, Parser)]
#[command(name = "sgsc", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train (and compress) a model from a config, then report on the test split.
    Train(train::TrainArgs),
    /// Evaluate a checkpoint on the test split and print its size.
    Eval(eval::EvalArgs),
    /// Train baseline, unsafe and safe over several seeds and tabulate them.
    #[command(args_override_self = true)]
    Compare(compare::CompareArgs),
    /// Build the preservation set from a baseline run's checkpoint.
    Preserve(preserve::PreserveArgs),
    /// Generate text from a language model's checkpoint.
    Sample(sample::SampleArgs),
    /// Time training steps and inference of a config's network.
    Bench(bench::BenchArgs),
    /// Write a compressed run's checkpoint as a packed .sgsc model file.
    Export(export::ExportArgs),
    /// Show what a packed .sgsc file holds, layer by layer.
    Inspect(inspect::InspectArgs),
    /// Predict with a packed .sgsc model through the pure-Rust runtime.
    Predict(predict::PredictArgs),
    /// Run a sweep file's grid or list of configs as separate, resumable processes.
    Sweep(sweep::SweepArgs),
    /// Write an HTML and Markdown report, with figures, of a folder of runs.
    Report(report::ReportArgs),
}

/// Runs the command line.
pub fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Preserve(args) => preserve::run(args),
        Command::Sample(args) => sample::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Export(args) => export::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Report(args) => report::run(args),
    }
}

/// Turns `cpu` / `cuda` into a device, refusing `cuda` when libtorch sees no GPU.
fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            load_torch_cuda()?;
            if !tch::Cuda::is_available() {
                bail!("--device cuda: libtorch's CUDA backend loaded, but it sees no GPU");
            }
            Ok(Device::Cuda(0))
        }
        other => bail!("--device {other:?}: expected cpu or cuda"),
    }
}

/// Loads libtorch's CUDA backend, which registers the GPU with libtorch. The binaries do not link
/// it, so that CPU use needs only the slim install (libtorch_cuda.so needs cuBLAS, cuDNN, NCCL and
/// more, gigabytes that a CPU machine does not need). The library stays loaded for the process.
fn load_torch_cuda() -> Result<()> {
    static LOADED: std::sync::OnceLock<Result<libloading::Library, String>> =
        std::sync::OnceLock::new();
    // SAFETY: libtorch_cuda.so only registers libtorch's CUDA hooks when it is loaded; it runs no
    // code that depends on the state of this process.
    let loaded = LOADED.get_or_init(|| {
        unsafe { libloading::Library::new("libtorch_cuda.so") }.map_err(|e| e.to_string())
    });
    match loaded {
        Ok(_) => Ok(()),
        Err(error) => bail!(
            "--device cuda: cannot load libtorch_cuda.so ({error}); the slim install of scripts/setup-libtorch.sh is \
             CPU-only: use a full torch 2.11 installation (LIBTORCH and LD_LIBRARY_PATH pointing at its lib folder)"
        ),
    }
}

/// The data folders to search, from `--data-dir` and the environment.
fn data_dirs(flag: &Option<PathBuf>) -> Vec<PathBuf> {
    crate::data::locate::candidate_dirs(flag.as_deref())
}

/// A run's checkpoint loaded into a network: what `eval`, `sample` and `export` start from.
struct LoadedRun {
    /// The checkpoint's own record (mode, step, vocabulary).
    info: crate::train::checkpoint::CheckpointInfo,
    /// The experiment config the run was trained with.
    config: crate::config::ExperimentConfig,
    /// The run's mode.
    mode: crate::train::Mode,
    /// The network (and optimizer) with the checkpoint's state.
    learner: crate::train::learner::Learner,
}

/// Loads `path` (a checkpoint written by `sgsc train`) onto `device`.
fn load_run(path: &std::path::Path, device: Device) -> Result<LoadedRun> {
    use crate::config::ExperimentConfig;
    use crate::train::{checkpoint, learner::Learner, Mode};
    let (info, tensors) = checkpoint::load(path)?;
    let config = ExperimentConfig::parse(&info.config, std::path::Path::new("<checkpoint>"))?;
    let mode: Mode = info.mode.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let mut learner = Learner::new(&config, mode, device)?;
    learner.load_state(&tensors, info.step)?;
    Ok(LoadedRun {
        info,
        config,
        mode,
        learner,
    })
}

/// Reads `\n`, `\t` and `\\` in a command-line prompt as the characters they stand for.
fn sample_prompt(text: &str) -> String {
    text.replace("\\n", "\n")
        .replace("\\t", "\t")
        .replace("\\\\", "\\")
}
