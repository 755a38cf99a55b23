//! `sgsc bench`: median milliseconds per training step (float and quantized, batch 128 and 512),
//! per batch assembly (with the config's augmentation, for images) and inference examples (images
//! or windows) per second, on random inputs so it needs no data set.

use super::{load_run, parse_device, LoadedRun};
use crate::config::ExperimentConfig;
use crate::data::sampler::step_rng;
use crate::data::{ImageShape, ImageSplit, Normalization, Tensors};
use crate::pack::export::{export, metadata, ExportFormat};
use crate::pack::onnx::{run_onnxruntime, to_onnx};
use crate::train::learner::Learner;
use crate::train::Mode;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Kind, Tensor};

/// Arguments of `sgsc bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Experiment config whose network is timed.
    #[arg(long, default_value = "configs/mnist-cnn.toml")]
    config: PathBuf,
    /// Timed repetitions per measurement (after 3 untimed warm-up runs).
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Batch sizes of the training-step measurements.
    #[arg(long, value_delimiter = ',', default_value = "128,512")]
    batch_sizes: Vec<i64>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Instead: time inference of this compressed run's model through the pure-Rust runtime
    /// against libtorch's float inference of the same (pruned) network, on the CPU.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Batch sizes of the inference comparison.
    #[arg(long, value_delimiter = ',', default_value = "1,256")]
    inference_batch_sizes: Vec<usize>,
}

/// Rounds of [`median_ms_each`].
const ROUNDS: usize = 5;

/// Median of `repeats` timings of `work` in milliseconds, after 3 warm-up calls.
fn median_ms(repeats: usize, mut work: impl FnMut() -> Result<()>) -> Result<f64> {
    Ok(median_ms_each(repeats, &mut [&mut work])?[0])
}

/// Median milliseconds of each job over `repeats` timed runs. The jobs take turns in
/// [`ROUNDS`] rounds, each job running a block of 3 warm-up calls then its share of the timed
/// ones, so a slow spell of a shared machine falls on all of them alike rather than on whichever
/// happened to be running. (Blocks rather than single calls: a thread pool that spins for a while
/// after its work, as libtorch's OpenMP pool does, would otherwise slow down the next job.)
fn median_ms_each(repeats: usize, jobs: &mut [&mut dyn FnMut() -> Result<()>]) -> Result<Vec<f64>> {
    let repeats = repeats.max(1);
    let rounds = ROUNDS.min(repeats);
    let mut times = vec![Vec::with_capacity(repeats); jobs.len()];
    for round in 0..rounds {
        let block = repeats / rounds + usize::from(round < repeats % rounds);
        for (job, times) in jobs.iter_mut().zip(&mut times) {
            for call in 0..block + 3 {
                let started = Instant::now();
                job()?;
                if call >= 3 {
                    times.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
    }
    Ok(times
        .into_iter()
        .map(|mut times| {
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        })
        .collect())
}

/// Runs `sgsc bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(checkpoint) = &args.checkpoint {
        return bench_runtime(checkpoint, &args);
    }
    let device = parse_device(&args.device)?;
    let config = ExperimentConfig::load(&args.config)?;
    // Random inputs of the network's shape: images, or token ids with next-token targets.
    let synthetic = |batch: i64, outputs: i64| -> Result<(Tensor, Tensor)> {
        Ok(match *config.model.input.as_slice() {
            [context] => (
                Tensor::f_randint(outputs, [batch, context], (Kind::Int64, device))?,
                Tensor::f_randint(outputs, [batch * context], (Kind::Int64, device))?,
            ),
            _ => {
                let mut shape = vec![batch];
                shape.extend(&config.model.input);
                (
                    Tensor::f_randn(shape.as_slice(), (Kind::Float, device))?,
                    Tensor::f_randint(outputs, [batch], (Kind::Int64, device))?,
                )
            }
        })
    };
    println!(
        "libtorch threads: {}, device: {:?}",
        tch::get_num_threads(),
        device
    );
    println!("{:<24} {:>7} {:>12}", "measurement", "batch", "median");
    for mode in [Mode::Baseline, Mode::Unsafe] {
        for &batch in &args.batch_sizes {
            let mut learner = Learner::new(&config, mode, device)?;
            let (inputs, labels) = synthetic(batch, learner.network.output_features)?;
            let mut step = 0;
            let terms = crate::train::learner::StepTerms {
                gamma: if mode.quantizes() {
                    config.quant.gamma
                } else {
                    0.0
                },
                ..Default::default()
            };
            let ms = median_ms(args.repeats, || {
                learner.step(&inputs, &labels, step, &terms)?;
                step += 1;
                Ok(())
            })?;
            let label = if mode.quantizes() {
                "train step (quantized)"
            } else {
                "train step (float)"
            };
            println!("{label:<24} {batch:>7} {ms:>9.1} ms");
        }
    }
    let images = 1024;
    let input = crate::data::input_shape(&config.model.input);
    let shape = ImageShape::new(
        input.first().copied().unwrap_or(1),
        input.get(1).copied().unwrap_or(1),
        input.get(2).copied().unwrap_or(1),
    );
    let classes = config.model.classifier_outputs().unwrap_or(1).max(1);
    let channels = vec![0.5; shape.channels];
    let pixels = ImageSplit {
        shape,
        images: (0..images * shape.values())
            .map(|i| (i * 7919 % 256) as u8)
            .collect(),
        labels: (0..images).map(|i| (i % classes) as u8).collect(),
        source_indices: (0..images as u32).collect(),
        normalization: Normalization {
            mean: channels.clone(),
            std: channels,
        },
    };
    for &batch in args.batch_sizes.iter().filter(|_| !config.data.is_text()) {
        let positions: Vec<usize> = (0..batch as usize).map(|i| i % images).collect();
        let mut step = 0;
        let ms = median_ms(args.repeats, || {
            let mut rng = step_rng(0, step);
            step += 1;
            let _batch = pixels.tensors(&positions, &config.data.input, Some(&mut rng))?;
            Ok(())
        })?;
        println!("{:<24} {batch:>7} {ms:>9.1} ms", "batch assembly");
    }
    let batch = 1000;
    let learner = Learner::new(&config, Mode::Unsafe, device)?;
    let (inputs, _) = synthetic(batch, learner.network.output_features)?;
    for (label, quantize) in [
        ("inference (float)", false),
        ("inference (quantized)", true),
    ] {
        let ms = median_ms(args.repeats, || {
            let _no_grad = tch::no_grad_guard();
            let _logits = learner.network.forward(&inputs, false, quantize)?;
            Ok(())
        })?;
        println!(
            "{label:<24} {batch:>7} {:>9.0} examples/s",
            batch as f64 * 1000.0 / ms
        );
    }
    Ok(())
}

/// Images (or windows) per second through the runtime and through libtorch (float weights, the
/// same pruned shapes), for each inference batch size, on random inputs.
fn bench_runtime(checkpoint: &Path, args: &BenchArgs) -> Result<()> {
    let LoadedRun {
        info,
        config,
        mut learner,
        ..
    } = load_run(checkpoint, tch::Device::Cpu)?;
    let metadata = metadata(&config, &info.data, None, None)?;
    let (bytes, _) = export(&mut learner.network, metadata, ExportFormat::Sgsc)?;
    let model = sgsc_runtime::Model::from_bytes(&bytes)?;
    let per_example: usize = model.metadata().input.iter().product();
    println!(
        "{:<24} {:>7} {:>14} {:>14} {:>8} {:>14}",
        "inference", "batch", "libtorch /s", "runtime /s", "ratio", "integer /s"
    );
    for &batch in &args.inference_batch_sizes {
        let mut rng = step_rng(1, batch as i64);
        let mut run_integer: Option<Box<dyn FnMut() -> Result<()>>> = None;
        let (torch_input, mut run_runtime): (Tensor, Box<dyn FnMut() -> Result<()>>) = if model
            .is_language_model()
        {
            let ids: Vec<u32> = (0..batch * per_example)
                .map(|_| rand::Rng::random_range(&mut rng, 0..model.outputs() as u32))
                .collect();
            let tensor = Tensor::f_from_slice(&ids.iter().map(|&i| i as i64).collect::<Vec<_>>())?
                .f_view([batch as i64, per_example as i64])?;
            let model = &model;
            (
                tensor,
                Box::new(move || Ok(model.next_token_logits(&ids, batch).map(|_| ())?)),
            )
        } else {
            let pixels: Vec<u8> = (0..batch * per_example)
                .map(|_| rand::Rng::random(&mut rng))
                .collect();
            let input = &model.metadata().input;
            let shape = ImageShape::new(input[0], input[1], input[2]);
            let normalization = match &model.metadata().normalization {
                Some(n) => crate::data::from_file(n, shape.channels),
                None => Normalization::identity(shape.channels),
            };
            let images = ImageSplit {
                shape,
                images: pixels.clone(),
                labels: vec![0; batch],
                source_indices: (0..batch as u32).collect(),
                normalization,
            };
            let positions: Vec<usize> = (0..batch).collect();
            let (tensor, _) = images.tensors(&positions, &Default::default(), None)?;
            // The integer path, its ranges calibrated on the same random pixels (for timing).
            let ranges = model.layer_ranges(&pixels, batch)?;
            let integer = sgsc_runtime::IntegerModel::new(
                model.packed(),
                &ranges,
                crate::config::DEFAULT_ACTIVATION_BITS,
            )?;
            let integer_pixels = pixels.clone();
            run_integer = Some(Box::new(move || {
                Ok(integer
                    .classify_pixels(&integer_pixels, batch)
                    .map(|_| ())?)
            }));
            let model = &model;
            (
                tensor,
                Box::new(move || Ok(model.classify_pixels(&pixels, batch).map(|_| ())?)),
            )
        };
        let mut run_torch = || {
            let _no_grad = tch::no_grad_guard();
            let _logits = learner.network.forward(&torch_input, false, false)?;
            Ok(())
        };
        let medians = match run_integer.as_mut() {
            Some(run_integer) => median_ms_each(
                args.repeats,
                &mut [&mut run_torch, &mut run_runtime, run_integer.as_mut()],
            )?,
            None => median_ms_each(args.repeats, &mut [&mut run_torch, &mut run_runtime])?,
        };
        let per_second = |ms: f64| batch as f64 * 1000.0 / ms;
        let (torch, runtime) = (per_second(medians[0]), per_second(medians[1]));
        let integer = medians
            .get(2)
            .map_or("-".to_string(), |&ms| format!("{:.0}", per_second(ms)));
        println!(
            "{:<24} {batch:>7} {torch:>14.0} {runtime:>14.0} {:>7.2}x {integer:>14}",
            "examples per second",
            runtime / torch
        );
    }
    println!(
        "(median of {} runs in 5 alternating blocks of libtorch, runtime and integer-path runs, each after 3 warm-ups; libtorch on {} threads, the runtime on {} rayon threads; the integer path's ranges calibrated on the same random images; model file {} B)",
        args.repeats,
        tch::get_num_threads(),
        rayon::current_num_threads(),
        bytes.len()
    );
    if !model.is_language_model() {
        bench_onnxruntime(&model, &args.inference_batch_sizes)?;
    }
    Ok(())
}

/// Images per second of onnxruntime on the model's ONNX export, through
/// `scripts/onnx_predict.py`, when `scripts/setup-onnxruntime.sh` has installed it in
/// `.onnxruntime/` of the working directory (it is not a dependency of sgsc itself).
fn bench_onnxruntime(model: &sgsc_runtime::Model, batch_sizes: &[usize]) -> Result<()> {
    if !Path::new(".onnxruntime").is_dir() {
        println!("(onnxruntime: not installed; scripts/setup-onnxruntime.sh installs it)");
        return Ok(());
    }
    let input = &model.metadata().input;
    let count = batch_sizes.iter().copied().max().unwrap_or(1);
    let images: Vec<f32> = (0..count * input.iter().product::<usize>())
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let shape = [count, input[0], input[1], input[2]];
    let run = run_onnxruntime(
        Path::new("."),
        &to_onnx(model.packed())?,
        &images,
        shape,
        batch_sizes,
    )?;
    print!("{}", run.throughput);
    Ok(())
}
