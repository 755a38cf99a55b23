//! A user's own data, end to end through the command line: a synthetic CIFAR-10 set in its
//! binary format and a 3-class RGB image folder of 20x20 images (from 24x24 PNG and JPEG
//! files), each through `compare` (baseline, preservation set, unsafe, safe), `eval`,
//! `predict` (a PNG in, a class name out) and `inspect`; the image folder also through
//! `report` (montage, plots) and `bench`, so that no 10-class or 28-pixel assumption survives.

mod common;

use std::path::Path;
use std::process::Command;

/// Runs the `sgsc` binary; panics with its output unless it succeeds; returns stdout.
fn sgsc(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sgsc"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        output.status.success(),
        "sgsc {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// The colour of class `label` (of `classes`), brightened by `shade`.
fn colour(label: usize, classes: usize, shade: u8) -> [u8; 3] {
    let mut rgb = [40 + shade, 40 + shade, 40 + shade];
    rgb[label % 3] = 200 + shade / 4;
    if classes > 3 {
        rgb[(label / 3) % 3] = rgb[(label / 3) % 3].saturating_add(30 * (label / 3) as u8);
    }
    rgb
}

/// A `side` x `side` image of class `label`: its colour, with a lighter square of the other
/// colours whose place depends on `index`.
fn picture(side: u32, label: usize, classes: usize, index: usize) -> image::RgbImage {
    let shade = (index * 7 % 30) as u8;
    let corner = (index as u32 * 3) % (side / 2);
    image::RgbImage::from_fn(side, side, |x, y| {
        let inside = x >= corner && x < corner + side / 3 && y >= corner && y < corner + side / 3;
        let mut rgb = colour(label, classes, shade);
        if inside {
            rgb = rgb.map(|c| c.saturating_add(40));
        }
        image::Rgb(rgb)
    })
}

/// Writes CIFAR-10's six batch files, `per_file` records each, into `dir`.
fn write_cifar(dir: &Path, per_file: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let files: Vec<String> = (1..=5)
        .map(|i| format!("data_batch_{i}.bin"))
        .chain(["test_batch.bin".to_string()])
        .collect();
    for (f, name) in files.iter().enumerate() {
        let mut bytes = Vec::new();
        for r in 0..per_file {
            let index = f * per_file + r;
            let label = index % 10;
            bytes.push(label as u8);
            let image = picture(32, label, 10, index);
            for channel in 0..3 {
                bytes.extend(image.pixels().map(|p| p.0[channel]));
            }
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

const SHAPES: [&str; 3] = ["moss", "rust", "sky"];

/// Writes an image folder of 3 classes, `train` images per class for training and 6 for the
/// test, 24x24 (resized to the model's 20x20), every third one a JPEG.
fn write_image_folder(dir: &Path, train: usize) {
    for (split, count) in [("train", train), ("test", 6)] {
        for (label, class) in SHAPES.iter().enumerate() {
            let folder = dir.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..count {
                // Class 0 is green, 1 red, 2 blue: the label picks the bright channel.
                let label_colour = [1, 0, 2][label];
                let image = picture(24, label_colour, 3, i + label * 100);
                let extension = if i % 3 == 2 { "jpg" } else { "png" };
                image
                    .save(folder.join(format!("{i:03}.{extension}")))
                    .unwrap();
            }
        }
    }
}

/// A small CNN config on `dataset` (its `[data]` lines), reading `input` with `classes` outputs,
/// with a `[safety]` section for the safe run.
fn config_text(data: &str, input: &str, layers: &str, classes: usize) -> String {
    format!(
        r#"
[data]
{data}
split_seed = 0
normalize = true

[data.augmentation]
max_shift_pixels = 2
horizontal_flip = true

[model]
input = {input}
{layers}

[[model.layers]]
type = "flatten"

[[model.layers]]
type = "linear"
out_features = {classes}

[train]
steps = 30
batch_size = 16
learning_rate = 3e-3
adam_eps = 1e-5
schedule = "cosine"
eval_every = 15
checkpoint_every = 15
eval_batch_size = 64
seed = 0

[quant]
initial_bit_depth = 8.0
learning_rate = 0.1
adam_eps = 1e-3
gamma = 0.05

[safety]
preservation_set = "unused/preservation.json"
reference = "unused/checkpoint.safetensors"
preservation_weight = 1.0
preservation_batch_size = 8
distillation_weight = 0.5
temperature = 4.0
check_every = 10
max_preservation_drop = 5.0
max_validation_drop = 5.0
cooldown_steps = 10
breach_gamma_factor = 0.7
breach_preservation_factor = 2.0
gamma_growth = 1.5
restore_fraction = 0.25
breaches_before_rollback = 3
prune_grace_steps = 10
"#
    )
}

const CONV: &str = r#"
[[model.layers]]
type = "conv2d"
out_channels = 8
kernel = 3

[[model.layers]]
type = "relu"

[[model.layers]]
type = "batch_norm"

[[model.layers]]
type = "max_pool"
kernel = 2

[[model.layers]]
type = "conv2d"
out_channels = 8
kernel = 3

[[model.layers]]
type = "relu"

[[model.layers]]
type = "max_pool"
kernel = 2
"#;

/// `compare` on one seed, then `eval`, `inspect` and `predict` of the safe model on `png`;
/// returns the predicted class name.
fn compare_and_use(config: &Path, data: &Path, out: &Path, png: &Path, classes: &[&str]) -> String {
    let (config, data, out) = (
        config.to_str().unwrap(),
        data.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let table = sgsc(&[
        "compare",
        "--config",
        config,
        "--seeds",
        "1",
        "--out",
        out,
        "--preservation-size",
        "24",
        "--data-dir",
        data,
    ]);
    assert!(table.contains("safe"), "{table}");
    let model = format!("{out}/safe-seed0/model.sgsc");
    let evaluation = sgsc(&["eval", &model, "--data-dir", data]);
    assert!(evaluation.contains("test accuracy"), "{evaluation}");
    let inspection = sgsc(&["inspect", &model]);
    let listed = format!("{} classes: {}", classes.len(), classes.join(", "));
    assert!(inspection.contains(&listed), "{inspection}");
    assert!(
        inspection.contains("pixel normalisation: mean ["),
        "{inspection}"
    );
    let prediction = sgsc(&["predict", &model, "--input", png.to_str().unwrap()]);
    let first = prediction.lines().next().unwrap_or_default().to_string();
    let name = first
        .strip_prefix("image 0: ")
        .and_then(|rest| rest.split(" (class ").next())
        .unwrap_or_else(|| panic!("unexpected prediction output: {prediction}"))
        .to_string();
    assert!(classes.contains(&name.as_str()), "{prediction}");
    name
}

#[test]
fn a_cifar_format_set_and_an_image_folder_go_through_every_stage() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // CIFAR-10 in its binary format: 3x32x32, the published class names.
    write_cifar(&data.join("cifar-10-batches-bin"), 40);
    let cifar_config = dir.path().join("cifar.toml");
    std::fs::write(
        &cifar_config,
        config_text(
            "dataset = \"cifar10\"\nvalidation_size = 40",
            "[3, 32, 32]",
            CONV,
            10,
        ),
    )
    .unwrap();
    let png = dir.path().join("cat.png");
    picture(32, 3, 10, 7).save(&png).unwrap();
    let cifar_classes = sgsc::data::cifar::CIFAR10_CLASSES;
    compare_and_use(
        &cifar_config,
        &data,
        &dir.path().join("cifar-runs"),
        &png,
        &cifar_classes,
    );

    // An image folder of 3 classes at 20x20, and a JPEG to predict.
    write_image_folder(&data.join("colours"), 30);
    let folder_config = dir.path().join("folder.toml");
    std::fs::write(
        &folder_config,
        config_text(
            "dataset = \"image_folder\"\ndir = \"colours\"\nvalidation_size = 12",
            "[3, 20, 20]",
            CONV,
            3,
        ),
    )
    .unwrap();
    let jpeg = dir.path().join("sky.jpg");
    picture(24, 2, 3, 5).save(&jpeg).unwrap();
    let runs = dir.path().join("folder-runs");
    compare_and_use(&folder_config, &data, &runs, &jpeg, &SHAPES);

    // The preservation montage tiles 20x20 colour images (40 columns of 22-pixel tiles).
    let montage = image::open(runs.join("baseline-seed0/preservation.png")).unwrap();
    assert_eq!(montage.width(), 40 * 22);
    assert_eq!(montage.height(), 22, "24 members fit one row");
    let report = dir.path().join("report");
    let written = sgsc(&[
        "report",
        runs.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(written.starts_with("4 runs"), "{written}");
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(!markdown.contains("MNIST"), "no MNIST wording: {markdown}");
    let bench = sgsc(&[
        "bench",
        "--config",
        folder_config.to_str().unwrap(),
        "--repeats",
        "1",
        "--batch-sizes",
        "8",
    ]);
    assert!(bench.contains("batch assembly"), "{bench}");
    let checkpoint = runs.join("safe-seed0/checkpoint.safetensors");
    let bench = sgsc(&[
        "bench",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--repeats",
        "1",
        "--inference-batch-sizes",
        "2",
    ]);
    assert!(bench.contains("examples per second"), "{bench}");
}

#[test]
fn the_resnet8_config_runs_on_a_synthetic_cifar_set() {
    let _one_at_a_time = common::training_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_cifar(&data.join("cifar-10-batches-bin"), 40);
    // The shipped config, shortened: tens of steps at batch 16, checks every 10 steps.
    let shipped =
        std::fs::read_to_string(common::workspace().join("configs/cifar10-resnet8.toml")).unwrap();
    let mut config: toml::Table = toml::from_str(&shipped).unwrap();
    let mut set = |section: &str, key: &str, value: toml::Value| {
        config[section]
            .as_table_mut()
            .unwrap()
            .insert(key.into(), value);
    };
    set("data", "validation_size", 40.into());
    for (key, value) in [
        ("steps", 20),
        ("batch_size", 16),
        ("eval_every", 10),
        ("checkpoint_every", 10),
        ("eval_batch_size", 64),
    ] {
        set("train", key, value.into());
    }
    set("safety", "check_every", 10.into());
    set("safety", "preservation_batch_size", 8.into());
    let path = dir.path().join("resnet8.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let png = dir.path().join("ship.png");
    picture(32, 8, 10, 3).save(&png).unwrap();
    compare_and_use(
        &path,
        &data,
        &dir.path().join("runs"),
        &png,
        &sgsc::data::cifar::CIFAR10_CLASSES,
    );
}
