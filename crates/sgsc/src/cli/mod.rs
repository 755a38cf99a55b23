//! The `sgsc` command line: `train`, `eval` and `bench`. Each subcommand is a thin layer over the
//! library stages; nothing below this module knows about arguments or terminals.

mod bench;
mod eval;
mod train;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tch::Device;

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
    /// Time training steps and inference of a config's network.
    Bench(bench::BenchArgs),
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
        Command::Bench(args) => bench::run(args),
    }
}

/// Turns `cpu` / `cuda` into a device, refusing `cuda` when libtorch sees no GPU.
fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => bail!("--device cuda: libtorch sees no CUDA GPU on this machine"),
        other => bail!("--device {other:?}: expected cpu or cuda"),
    }
}

/// The data folders to search, from `--data-dir` and the environment.
fn data_dirs(flag: &Option<PathBuf>) -> Vec<PathBuf> {
    crate::data::locate::candidate_dirs(flag.as_deref())
}
