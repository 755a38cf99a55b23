//! `sgsc inspect`: what a packed `.sgsc` file holds, layer by layer, read by the runtime alone.

use anyhow::{Context, Result};
use clap::Args;
use sgsc_runtime::format::{
    quantized_bytes, section_lengths, HEADER_BYTES, SECTIONS, SECTION_OVERHEAD,
};
use std::path::PathBuf;

/// Arguments of `sgsc inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A packed model file written by `sgsc export`.
    model: PathBuf,
}

/// Runs `sgsc inspect`.
pub fn run(args: InspectArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let model = sgsc_runtime::format::decode(&bytes)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let sizes = quantized_bytes(&model);
    println!(
        "{:<22} {:>10} {:>8} {:>8}  widths (bits: rows)",
        "layer", "alive", "fan-in", "bytes"
    );
    for size in &sizes {
        let widths: Vec<String> = size
            .widths
            .iter()
            .map(|(w, n)| format!("{w}:{n}"))
            .collect();
        println!(
            "{:<22} {:>10} {:>8} {:>8}  {}",
            size.name,
            format!("{}/{}", size.alive, size.rows),
            size.columns,
            size.bytes,
            widths.join(" ")
        );
    }
    let quantized: usize = sizes.iter().map(|s| s.bytes).sum();
    let lengths = section_lengths(&bytes)?;
    println!(
        "file {} B = header {HEADER_BYTES} + description {} (compressed) + data {} (quantized layers {quantized}, floats {}) + run record {} + section framing {}",
        bytes.len(),
        lengths.description,
        lengths.data,
        lengths.data - quantized,
        lengths.record,
        SECTIONS * SECTION_OVERHEAD
    );
    let metadata = &model.metadata;
    println!("input {:?}", metadata.input);
    if let Some(data) = &metadata.data {
        let field = |key: &str| data.get(key).and_then(|v| v.as_str());
        let kind = field("dataset").unwrap_or("(unrecorded)");
        match field("dir").or_else(|| field("path")) {
            Some(place) => println!("data set {kind} ({place})"),
            None => println!("data set {kind}"),
        }
    }
    if let Some(n) = &metadata.normalization {
        println!("pixel normalisation: mean {:?}, std {:?}", n.mean, n.std);
    }
    if let Some(classes) = &metadata.classes {
        println!("{} classes: {}", classes.len(), classes.join(", "));
    }
    if let Some(vocabulary) = &metadata.vocabulary {
        println!("vocabulary {:?}", vocabulary);
    }
    if let Some(summary) = &metadata.summary {
        println!("training summary {summary}");
    }
    match &metadata.certificate {
        Some(certificate) => println!("safety certificate {certificate}"),
        None => println!("no safety certificate (not a safe run)"),
    }
    Ok(())
}
