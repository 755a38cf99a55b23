//! sgsc: safety-guided self-compression of neural networks.
//!
//! The library follows the pipeline, one folder per stage: [`data`] (the data sets of the
//! `sgsc-data` crate, as tensors), [`quant`] (the quantizer), [`models`], [`config`] (the
//! experiment file), [`size`] (the bytes of the stored form and which channels are live),
//! [`prune`] (removing channels), [`pack`] (writing the `.sgsc` file, safetensors and ONNX),
//! [`codegen`] (a packed model's integer plan as C for microcontrollers), [`preserve`] (the preservation set), [`train`] (objective, optimizer, controller and guard,
//! the loop), [`report`] (figures of finished runs), [`pipeline`] (one run from training to its
//! file and figures, and comparisons of runs), [`sweep`] (many runs) and the `sgsc` binary's
//! [`cli`]. Dependencies point one way, down this list ([`LAYERS`], checked by a test): training
//! can measure the stored form's size and prune as it goes, and nothing below the pipeline
//! starts a run.

pub mod cli;
pub mod codegen;
pub mod config;
pub mod data;
pub mod error;
pub mod files;
pub mod models;
pub mod pack;
pub mod pipeline;
pub mod preserve;
pub mod prune;
pub mod quant;
pub mod report;
pub mod size;
pub mod sweep;
pub mod train;

pub use error::{Error, Result};

/// The modules from the bottom of the pipeline up: each may use the ones before it, never one
/// after it (the test below checks every `crate::` path in the sources, comments aside).
pub const LAYERS: [&str; 16] = [
    "data", "error", "files", "quant", "models", "config", "size", "prune", "pack", "codegen",
    "preserve", "train", "report", "pipeline", "sweep", "cli",
];

#[cfg(test)]
mod tests {
    use super::LAYERS;
    use std::path::Path;

    /// Every `crate::<module>` named in the code (not the comments) of the files under `path`.
    fn uses(path: &Path, found: &mut Vec<(String, String)>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                uses(&entry.unwrap().path(), found);
            }
        } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(path).unwrap();
            let code = text
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"));
            for line in code {
                for (at, _) in line.match_indices("crate::") {
                    let rest = &line[at + 7..];
                    // `crate::{a, b::c}` names a and b.
                    let names: Vec<&str> = match rest.strip_prefix('{') {
                        Some(group) => group.split([',', '}']).collect(),
                        None => vec![rest],
                    };
                    for name in names {
                        let name: String = name
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        found.push((path.display().to_string(), name));
                    }
                }
            }
        }
    }

    #[test]
    fn no_module_uses_one_above_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let rank = |name: &str| LAYERS.iter().position(|layer| *layer == name);
        let mut violations = Vec::new();
        for (position, module) in LAYERS.iter().enumerate() {
            let (folder, file) = (src.join(module), src.join(format!("{module}.rs")));
            assert!(folder.is_dir() || file.is_file(), "{module}: no sources");
            let mut found = Vec::new();
            uses(&folder, &mut found);
            uses(&file, &mut found);
            for (file, used) in found {
                match rank(&used) {
                    Some(used_rank) if used_rank > position => {
                        violations.push(format!("{file} uses crate::{used}"))
                    }
                    _ => {}
                }
            }
        }
        assert!(violations.is_empty(), "{violations:#?}");
    }
}
