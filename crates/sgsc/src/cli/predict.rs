//! `sgsc predict`: a packed model's predictions through the pure-Rust runtime, for images (an
//! IDX file, gzipped or not, or a grayscale PNG) or for a text prompt.

use crate::data::idx::{gunzip, parse_idx};
use anyhow::{bail, Context, Result};
use clap::Args;
use sgsc_runtime::Model;
use std::path::{Path, PathBuf};

/// Arguments of `sgsc predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A packed model file written by `sgsc export`.
    model: PathBuf,
    /// Images: an IDX file of unsigned bytes (`.gz` or plain), or a PNG of the model's input size.
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
}

/// Runs `sgsc predict`.
pub fn run(args: PredictArgs) -> Result<()> {
    let model =
        Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    match (&args.input, &args.prompt) {
        (Some(input), None) => predict_images(&model, input, args.show),
        (None, Some(prompt)) => continue_text(&model, &super::sample_prompt(prompt), args.length),
        _ => bail!("give --input (images) or --prompt (text)"),
    }
}

/// Pixels of every image in `path` (IDX or PNG), checked against the model's input size.
fn read_images(path: &Path, (height, width): (usize, usize)) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    let pixels = if bytes.starts_with(b"\x89PNG") {
        let image = image::load_from_memory(&bytes)
            .with_context(|| format!("decoding {name}"))?
            .to_luma8();
        if (image.height() as usize, image.width() as usize) != (height, width) {
            bail!(
                "{name} is {}x{}; the model reads {height}x{width} images",
                image.width(),
                image.height()
            );
        }
        image.into_raw()
    } else {
        let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
            gunzip(&bytes, &name)?
        } else {
            bytes
        };
        let array = parse_idx(&bytes, 3, &name)?;
        if array.dims[1..] != [height, width] {
            bail!(
                "{name} holds {}x{} images; the model reads {height}x{width}",
                array.dims[1],
                array.dims[2]
            );
        }
        array.data
    };
    Ok(pixels)
}

fn predict_images(model: &Model, path: &Path, show: usize) -> Result<()> {
    let input = &model.metadata().input;
    if model.is_language_model() || input[0] != 1 {
        bail!("this model does not read single-channel images (input {input:?})");
    }
    let per_image = input[1] * input[2];
    let pixels = read_images(path, (input[1], input[2]))?;
    let count = pixels.len() / per_image;
    let logits = model.classify_pixels(&pixels, count)?;
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
            println!("image {index}: class {class} (p = {p:.4})");
        }
    }
    println!("{count} images; predictions per class: {counts:?}");
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
