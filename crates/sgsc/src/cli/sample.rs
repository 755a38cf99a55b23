//! `sgsc sample`: text from a language model's checkpoint, so a person can read what
//! compression did to it.

use super::{data_dirs, load_run, parse_device, LoadedRun};
use crate::data::load_train_validation;
use crate::models::generate::{generate, SamplingOptions};
use anyhow::{anyhow, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `sgsc sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// A language model's checkpoint written by `sgsc train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to continue (escapes such as `\n` are read as characters).
    #[arg(long, default_value = "\\n")]
    prompt: String,
    /// Characters to generate per sample.
    #[arg(long, default_value_t = 200)]
    length: usize,
    /// Number of samples.
    #[arg(long, default_value_t = 1)]
    samples: u64,
    /// Softmax temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Draw among the k most likely characters only (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Seed of the first sample (the next ones use the following seeds).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data folder, to rebuild the vocabulary of a checkpoint that lacks it.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Runs `sgsc sample`.
pub fn run(args: SampleArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let LoadedRun {
        info,
        config,
        mode,
        learner,
    } = load_run(&args.checkpoint, device)?;
    if !config.data.is_text() {
        anyhow::bail!(
            "{}: sampling needs a language model, not a {} model",
            args.checkpoint.display(),
            config.data.describe()
        );
    }
    let vocabulary = match info.data.vocabulary {
        Some(vocabulary) => vocabulary,
        None => load_train_validation(
            &config.data,
            &config.model.input,
            &data_dirs(&args.data_dir),
        )?
        .vocabulary
        .ok_or_else(|| anyhow!("the data set has no vocabulary"))?,
    };
    let prompt = super::sample_prompt(&args.prompt);
    for sample in 0..args.samples {
        let options = SamplingOptions {
            length: args.length,
            temperature: args.temperature,
            top_k: args.top_k,
            seed: args.seed + sample,
        };
        let text = generate(
            &learner.network,
            &vocabulary,
            &prompt,
            options,
            mode.quantizes(),
            device,
        )?;
        println!(
            "--- {} sample {} (seed {}) ---",
            mode,
            sample + 1,
            options.seed
        );
        println!("{text}");
    }
    Ok(())
}
