//! Helpers shared by the integration tests: the shipped config and the data folders.

#![allow(dead_code)]

use sgsc::config::ExperimentConfig;
use sgsc::train::trainer::RunOptions;
use sgsc::train::Mode;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Held by every test that trains. Two trainings in one process share libtorch's thread pool,
/// which then splits reductions differently from run to run; one at a time, runs are
/// bit-for-bit reproducible, which the resume test checks.
pub fn training_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shipped MNIST config.
pub fn mnist_config() -> ExperimentConfig {
    ExperimentConfig::load(&workspace().join("configs/mnist-cnn.toml"))
        .expect("the shipped config parses")
}

/// Data folders for tests: `SGSC_DATA_DIR` (set by `scripts/test.sh` and `.ci/run`), then the
/// development checkout's `../shared/data`, then the workspace's `data/` (where the downloader puts
/// files on a user's machine).
pub fn data_dirs() -> Vec<PathBuf> {
    let mut dirs = sgsc::data::locate::candidate_dirs(None);
    dirs.retain(|dir| dir != Path::new("data"));
    dirs.push(workspace().join("../shared/data"));
    dirs.push(workspace().join("data"));
    dirs
}

/// Writes a small IDX copy of MNIST into `dir`: its first `train` training images and `test` test
/// images with their labels, under MNIST's file names (plain). For tests that go through a whole
/// comparison: the preservation set scores every training image, which on all of MNIST takes a
/// minute. Returns `dir`, for the config's `data.dir` (data set kind `idx`).
pub fn small_mnist(dir: &Path, train: usize, test: usize) -> PathBuf {
    let source = data_dirs()
        .into_iter()
        .map(|dir| dir.join("mnist"))
        .find(|dir| dir.is_dir())
        .expect("MNIST in a data folder");
    let files = [
        ("train-images-idx3-ubyte", train),
        ("train-labels-idx1-ubyte", train),
        ("t10k-images-idx3-ubyte", test),
        ("t10k-labels-idx1-ubyte", test),
    ];
    for (stem, count) in files {
        let path = [source.join(format!("{stem}.gz")), source.join(stem)]
            .into_iter()
            .find(|path| path.exists())
            .expect("every MNIST file");
        let bytes = sgsc::data::idx::read_maybe_gzip(&path).unwrap();
        // Magic (two zero bytes, the type, the number of dimensions), then each dimension.
        let dimensions = bytes[3] as usize;
        let header = 4 + 4 * dimensions;
        let dimension =
            |d: usize| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap());
        let item: usize = (1..dimensions).map(|d| dimension(d) as usize).product();
        assert!(
            count as u32 <= dimension(0),
            "{stem} has fewer than {count} items"
        );
        let mut subset = bytes[..header].to_vec();
        subset[4..8].copy_from_slice(&(count as u32).to_be_bytes());
        subset.extend_from_slice(&bytes[header..header + count * item]);
        std::fs::write(dir.join(stem), subset).unwrap();
    }
    dir.to_path_buf()
}

/// Options of a test run on the CPU, without a progress bar.
pub fn run_options(mode: Mode, out_dir: &Path) -> RunOptions {
    RunOptions {
        mode,
        out_dir: out_dir.to_path_buf(),
        data_dirs: data_dirs(),
        resume: false,
        device: tch::Device::Cpu,
        progress: false,
        stop_at: None,
    }
}

/// The shipped names transformer config, shrunk to train in seconds: context 16, d_model 32,
/// 2 blocks of 2 heads.
pub fn small_names_config() -> ExperimentConfig {
    let mut config = ExperimentConfig::load(&workspace().join("configs/names-transformer.toml"))
        .expect("the shipped config parses");
    config.model.input = vec![16];
    let block = sgsc::models::LayerConfig::TransformerBlock {
        heads: 2,
        mlp_ratio: 4,
        bias: false,
    };
    config.model.layers = vec![
        sgsc::models::LayerConfig::Embedding {
            vocab_size: 27,
            d_model: 32,
        },
        block.clone(),
        block,
        sgsc::models::LayerConfig::LayerNorm,
        sgsc::models::LayerConfig::Linear {
            out_features: 27,
            bias: false,
        },
    ];
    config.train.batch_size = 32;
    config
}

/// Logits of an ONNX model from onnxruntime (installed by `scripts/setup-onnxruntime.sh`) for
/// float32 images of `shape`.
pub fn run_onnx(model: &[u8], images: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let root = workspace();
    let setup = std::process::Command::new("bash")
        .arg(root.join("scripts/setup-onnxruntime.sh"))
        .status()
        .unwrap();
    assert!(setup.success(), "installing onnxruntime failed");
    sgsc::pack::onnx::run_onnxruntime(&root, model, images, shape, &[])
        .expect("onnxruntime runs the export")
        .logits
}

/// Builds a generated C library with the host's `cc` (C99, every warning an error, address and
/// undefined-behaviour sanitizers that stop at the first report), runs its example program on
/// `pixels` (whole images, one after another) and returns each image's 32-bit logits.
pub fn run_c(library: &sgsc::codegen::CLibrary, pixels: &[u8]) -> Vec<Vec<i64>> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("model.h", &library.header),
        ("model.c", &library.source),
        ("example_main.c", &library.example),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    std::fs::write(dir.path().join("images.bin"), pixels).unwrap();
    let compiled = std::process::Command::new("cc")
        .current_dir(dir.path())
        .args([
            "-std=c99",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "model.c",
            "example_main.c",
            "-o",
            "predict",
        ])
        .output()
        .expect("cc runs");
    assert!(
        compiled.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ran = std::process::Command::new(dir.path().join("predict"))
        .arg(dir.path().join("images.bin"))
        .output()
        .unwrap();
    assert!(
        ran.status.success() && ran.stderr.is_empty(),
        "the C program: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    String::from_utf8(ran.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let logits = line.split(" logits ").nth(1).unwrap();
            logits
                .split(" (")
                .next()
                .unwrap()
                .split(' ')
                .map(|value| value.parse().unwrap())
                .collect()
        })
        .collect()
}
