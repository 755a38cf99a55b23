//! `sgsc eval`: a model's figures on the test split. A checkpoint is evaluated with libtorch and
//! its size reported; a packed `.sgsc` file is evaluated through the pure-Rust runtime.

use super::integer::{calibrated, recorded_data, CalibrationArgs};
use super::{data_dirs, load_run, parse_device, LoadedRun};
use crate::data::{load_test, load_train_validation};
use crate::pack::evaluate::{evaluate_integer, evaluate_packed};
use crate::pipeline::pack_run;
use crate::report::{layer_table, results_table, summarize, RunFacts};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `sgsc eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A packed model file written by `sgsc export`, run through the pure-Rust runtime.
    model: Option<PathBuf>,
    /// A checkpoint written by `sgsc train` (its run folder's `checkpoint.safetensors`).
    #[arg(long, conflicts_with = "model")]
    checkpoint: Option<PathBuf>,
    /// cpu or cuda (checkpoints only).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data folder (else $SGSC_DATA_DIR, else ./data, else download).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also run the integer-only path of an image classifier (packed files only): activation
    /// ranges calibrated on training images, then the test split through both paths.
    #[arg(long, requires = "model")]
    integer: bool,
    #[command(flatten)]
    calibration: CalibrationArgs,
}

/// Runs `sgsc eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    match (&args.model, &args.checkpoint) {
        (Some(model), None) => eval_packed(model, &args),
        (None, Some(checkpoint)) => eval_checkpoint(checkpoint, &args),
        _ => bail!("give a packed model file (sgsc eval model.sgsc) or --checkpoint"),
    }
}

fn eval_checkpoint(checkpoint: &std::path::Path, args: &EvalArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let LoadedRun {
        info,
        config,
        mode,
        mut learner,
    } = load_run(checkpoint, device)?;
    let dirs = data_dirs(&args.data_dir);
    let data = load_train_validation(&config.data, &config.model.input, &dirs)?;
    let facts = RunFacts {
        mode,
        steps: info.step,
        wall_seconds: 0.0,
        rollbacks: 0,
        certificate: None,
    };
    let (mut summary, size) = summarize(
        &learner.network,
        &learner.original,
        &config,
        &data,
        &dirs,
        device,
        facts,
    )?;
    if mode.quantizes() {
        println!("{}", layer_table(&size));
        pack_run(&mut learner.network, &config, &info.data, &mut summary)?;
    }
    print!("{}", results_table(&[summary]));
    Ok(())
}

fn eval_packed(path: &std::path::Path, args: &EvalArgs) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let model = sgsc_runtime::Model::from_bytes(&bytes)
        .with_context(|| format!("loading {}", path.display()))?;
    let data = recorded_data(&model)?;
    let input: Vec<i64> = model.metadata().input.iter().map(|&d| d as i64).collect();
    // Normalised as the file says, so the training files need not be read again.
    let normalization = model
        .metadata()
        .normalization
        .as_ref()
        .map(|n| crate::data::from_file(n, model.metadata().input[0]));
    let test = load_test(
        &data,
        &input,
        &data_dirs(&args.data_dir),
        normalization.as_ref(),
    )?;
    let started = std::time::Instant::now();
    let evaluation = evaluate_packed(&model, &test)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}: {} bytes, test accuracy {:.2}% ({} predictions), test loss {:.4} nats, {:.1} s through the runtime",
        path.display(),
        bytes.len(),
        100.0 * evaluation.accuracy,
        evaluation.predictions.len(),
        evaluation.loss,
        seconds
    );
    if args.integer {
        let (integer, calibration) = calibrated(&model, &args.calibration, &args.data_dir)?;
        let started = std::time::Instant::now();
        let integer_run = evaluate_integer(&integer, &test)?;
        let integer_evaluation = &integer_run.evaluation;
        let seconds = started.elapsed().as_secs_f64();
        let agreeing = evaluation
            .predictions
            .iter()
            .zip(&integer_evaluation.predictions)
            .filter(|(a, b)| a == b)
            .count();
        println!(
            "integer path ({calibration}): test accuracy {:.2}%, test loss {:.4} nats, the same class as the f32 path on {agreeing} of {} images, {:.1} s",
            100.0 * integer_evaluation.accuracy,
            integer_evaluation.loss,
            integer_evaluation.predictions.len(),
            seconds
        );
        println!(
            "codes at the ends of their range (saturated, or exactly there): {}",
            integer_run.saturation_line()
        );
    }
    Ok(())
}
