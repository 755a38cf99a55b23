//! `sgsc predict`: a packed model's predictions through the pure-Rust runtime, for images (an
//! IDX file, gzipped or not, or a PNG or JPEG image) or for a text prompt. Classes are printed
//! by the names the file records.

use super::integer::{calibrated, CalibrationArgs};
use crate::data::idx::{is_gzip, maybe_gunzip, parse_idx};
use crate::data::ImageShape;
use anyhow::{bail, Context, Result};
use clap::Args;
use sgsc_runtime::Model;
use std::path::{Path, PathBuf};

/// Arguments of `sgsc predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A packed model file written by `sgsc export`.
    model: PathBuf,
    /// Images: an IDX file of unsigned bytes (`.gz` or plain, grey models), or a PNG or JPEG
    /// image (converted to the model's channels and resized to its input, as image folders are
    /// read in training).
    #[arg(long, conflicts_with = "prompt")]
    input: Option<PathBuf>,
    /// Text to continue (a language model; escapes such as `\n` are read as characters).
    #[arg(long)]
    prompt: Option<String>,
    /// Images to print (the rest are only counted).
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Characters to generate after the prompt (greedy: the most likely character each time).
    #[arg(long, default_value_t = 100)]
    length: usize,
    /// Run the integer-only path (image classifiers; activation ranges calibrated on the
    /// training images of the data set the file records) and print every image's class and
    /// 32-bit logits, as the generated C's `example_main.c` prints them.
    #[arg(long, conflicts_with = "prompt")]
    integer: bool,
    #[command(flatten)]
    calibration: CalibrationArgs,
    /// Data folder for the calibration images (else $SGSC_DATA_DIR, else ./data, else
    /// download).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Runs `sgsc predict`.
pub fn run(args: PredictArgs) -> Result<()> {
    let model =
        Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    match (&args.input, &args.prompt) {
        (Some(input), None) if args.integer => predict_integer(&model, input, &args),
        (Some(input), None) => predict_images(&model, input, args.show),
        (None, Some(prompt)) => continue_text(&model, &super::sample_prompt(prompt), args.length),
        _ => bail!("give --input (images) or --prompt (text)"),
    }
}

/// Pixels of every image in `path` (IDX, or one PNG or JPEG), in the model's input `shape`.
fn read_images(path: &Path, shape: ImageShape) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    let is_idx = is_gzip(&bytes) || bytes.starts_with(&[0, 0, 0x08]);
    if !is_idx {
        return Ok(crate::data::image_folder::decode(&bytes, shape, path)?);
    }
    if shape.channels != 1 {
        bail!(
            "{name} is an IDX file of grey images; this model reads {} channels",
            shape.channels
        );
    }
    let array = parse_idx(&maybe_gunzip(bytes, &name)?, 3, &name)?;
    if array.dims[1..] != [shape.height, shape.width] {
        bail!(
            "{name} holds {}x{} images; the model reads {}x{}",
            array.dims[1],
            array.dims[2],
            shape.height,
            shape.width
        );
    }
    Ok(array.data)
}

/// The input shape of an image classifier.
fn image_shape(model: &Model) -> Result<ImageShape> {
    match *model.metadata().input.as_slice() {
        [channels, height, width] if !model.is_language_model() => {
            Ok(ImageShape::new(channels, height, width))
        }
        ref input => bail!("this model does not read images (input {input:?})"),
    }
}

/// Every image's class and 32-bit logits through the integer path, one line each, as the
/// generated C's example program prints them.
fn predict_integer(model: &Model, path: &Path, args: &PredictArgs) -> Result<()> {
    let shape = image_shape(model)?;
    let pixels = read_images(path, shape)?;
    let count = pixels.len() / shape.values();
    let (integer, _) = calibrated(model, &args.calibration, &args.data_dir)?;
    let logits = integer.classify_pixels(&pixels, count)?;
    let names = model.metadata().classes.as_deref().unwrap_or_default();
    for (index, row) in logits.chunks_exact(integer.outputs().max(1)).enumerate() {
        let class = row
            .iter()
            .enumerate()
            .fold(0, |best, (i, &v)| if v > row[best] { i } else { best });
        let values: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        let name = names
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string());
        println!(
            "image {index}: class {class} logits {} ({name})",
            values.join(" ")
        );
    }
    Ok(())
}

fn predict_images(model: &Model, path: &Path, show: usize) -> Result<()> {
    let shape = image_shape(model)?;
    let pixels = read_images(path, shape)?;
    let count = pixels.len() / shape.values();
    let logits = model.classify_pixels(&pixels, count)?;
    let names = model.metadata().classes.as_deref();
    let name = |class: usize| -> String {
        names
            .and_then(|names| names.get(class))
            .cloned()
            .unwrap_or_else(|| class.to_string())
    };
    let mut counts = vec![0usize; model.outputs()];
    for (index, row) in logits.chunks_exact(model.outputs()).enumerate() {
        let probabilities = softmax(row);
        let (class, p) =
            probabilities.iter().enumerate().fold(
                (0, 0.0),
                |(bc, bp), (c, &p)| if p > bp { (c, p) } else { (bc, bp) },
            );
        counts[class] += 1;
        if index < show {
            println!("image {index}: {} (class {class}, p = {p:.4})", name(class));
        }
    }
    let per_class: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(class, count)| format!("{} {count}", name(class)))
        .collect();
    println!(
        "{count} images; predictions per class: {}",
        per_class.join(", ")
    );
    Ok(())
}

fn softmax(row: &[f32]) -> Vec<f64> {
    let largest = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = row.iter().map(|&v| f64::from(v - largest).exp()).collect();
    let total: f64 = exp.iter().sum();
    exp.iter().map(|v| v / total).collect()
}

fn continue_text(model: &Model, prompt: &str, length: usize) -> Result<()> {
    let symbols: Vec<char> = match &model.metadata().vocabulary {
        Some(vocabulary) => vocabulary.chars().collect(),
        None => bail!("this model has no vocabulary: it is not a language model"),
    };
    let mut ids = prompt
        .chars()
        .map(|c| {
            symbols
                .iter()
                .position(|&s| s == c)
                .map(|id| id as u32)
                .with_context(|| {
                    format!("the prompt's character {c:?} is not in the model's vocabulary")
                })
        })
        .collect::<Result<Vec<u32>>>()?;
    if ids.is_empty() {
        bail!("the prompt is empty");
    }
    let context = model.metadata().input[0];
    let mut first = None;
    for _ in 0..length {
        let window = &ids[ids.len().saturating_sub(context)..];
        let logits = model.next_token_logits(window, 1)?;
        let last = &logits[(window.len() - 1) * model.outputs()..];
        let probabilities = softmax(last);
        let mut ranked: Vec<usize> = (0..probabilities.len()).collect();
        ranked.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
        first.get_or_insert_with(|| {
            ranked
                .iter()
                .take(5)
                .map(|&i| (symbols[i], probabilities[i]))
                .collect::<Vec<_>>()
        });
        ids.push(ranked[0] as u32);
    }
    if let Some(top) = first {
        let shown: Vec<String> = top.iter().map(|(c, p)| format!("{c:?} {p:.3}")).collect();
        println!("next character after the prompt: {}", shown.join(", "));
    }
    let text: String = ids.iter().map(|&id| symbols[id as usize]).collect();
    println!("{text}");
    Ok(())
}
