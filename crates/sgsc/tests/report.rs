//! `sgsc report` on a hand-made folder of runs: the pages and figures exist, the PNGs decode,
//! and the numbers are the fixture's.

use half::f16;
use sgsc::report::page::{group_rows, write_report};
use sgsc::report::runs::{collect_runs, pareto_front, Evaluation};
use sgsc_runtime::model::{Layer, LayerSpec, Metadata, PackedModel, QuantizedMatrix, TensorData};
use std::path::Path;

/// A summary.json of a run with the given figures.
fn summary(
    mode: &str,
    seed: u64,
    accuracy: f64,
    bytes: i64,
    met: Option<bool>,
) -> serde_json::Value {
    let mut value = serde_json::json!({
        "mode": mode, "seed": seed, "steps": 8, "test_accuracy": accuracy, "test_loss": 0.05,
        "train_accuracy": accuracy + 0.002, "train_test_gap": 0.002, "validation_accuracy": accuracy,
        "gamma": if mode == "baseline" { None } else { Some(0.5) },
        "size_bytes": bytes, "size_kind": if mode == "baseline" { "float32" } else { "sgsc-file" },
        "float_bytes": 48, "ratio_to_float": bytes as f64 / 48.0, "bits_per_weight": 2.0,
        "channels_alive": [[3, 4]], "wall_seconds": 1.0, "rollbacks": 0,
        "controller_events": { "breaches": u32::from(met.is_some()), "restores": u32::from(met.is_some()), "rollbacks": 0 },
    });
    if let Some(met) = met {
        value["safety"] = serde_json::json!({
            "budget": { "metric": "accuracy", "reference_preservation": 0.95, "reference_validation": 0.99,
                        "max_preservation_drop": 0.5, "max_validation_drop": 0.5 },
            "final_preservation_accuracy": 0.95, "final_validation_accuracy": 0.99, "met": met,
            "restored_last_safe_snapshot": false,
            "events": { "breaches": 1, "restores": 1, "rollbacks": 0 },
            "preservation_set": "p.json", "pruned_channels": 1, "reference": "r.safetensors"
        });
    }
    value
}

/// A model file with one linear layer of 3 live rows at widths 2, 3 and 1.
fn model_file() -> Vec<u8> {
    let model = PackedModel {
        metadata: Metadata {
            input: vec![1, 2, 2],
            normalization: None,
            vocabulary: None,
            classes: None,
            data: None,
            certificate: None,
            summary: None,
        },
        layers: vec![
            Layer::without_tensors(LayerSpec::Flatten),
            Layer {
                spec: LayerSpec::Linear {
                    in_features: 4,
                    out_features: 3,
                    bias: false,
                },
                tensors: vec![TensorData::Codes(QuantizedMatrix {
                    rows: 3,
                    columns: 4,
                    widths: vec![2, 3, 1],
                    exponents: vec![f16::ZERO; 3],
                    codes: vec![0; 12],
                })],
            },
        ],
    };
    sgsc_runtime::format::encode(&model).unwrap()
}

fn write_run(runs: &Path, name: &str, summary: serde_json::Value, metrics: &str) {
    let dir = runs.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "[quant]\ninitial_bit_depth = 4.0\n",
    )
    .unwrap();
}

#[test]
fn a_report_of_a_fixture_folder_renders_with_its_numbers() {
    let folder = tempfile::tempdir().unwrap();
    let runs = folder.path().join("runs");
    let evaluations = "{\"step\":4,\"validation_accuracy\":0.97,\"validation_loss\":0.1,\"bits_per_weight\":3.0,\"channels_alive\":[4,2]}\n\
                       {\"step\":8,\"validation_accuracy\":0.98,\"validation_loss\":0.08,\"bits_per_weight\":2.0,\"channels_alive\":[3,2]}\n";
    write_run(
        &runs,
        "baseline-seed0",
        summary("baseline", 0, 0.995, 48, None),
        evaluations,
    );
    write_run(
        &runs,
        "unsafe-g0.5-seed0",
        summary("unsafe", 0, 0.98, 100, None),
        evaluations,
    );
    write_run(
        &runs,
        "unsafe-g0.5-seed1",
        summary("unsafe", 1, 0.99, 999_999, None),
        evaluations,
    );
    let file = model_file();
    std::fs::write(runs.join("unsafe-g0.5-seed1/model.sgsc"), &file).unwrap();
    let checks = "{\"check\":{\"action\":\"restore\",\"preservation_accuracy\":0.9,\"step\":4},\"event\":\"check\"}\n\
                  {\"check\":{\"action\":\"safe\",\"preservation_accuracy\":0.96,\"step\":8},\"event\":\"check\"}\n";
    write_run(
        &runs,
        "safe-g0.5-seed0",
        summary("safe", 0, 0.985, 90, Some(true)),
        &format!("{evaluations}{checks}"),
    );

    // A damaged summary (size 0, which no log axis can hold) is skipped, not fatal.
    write_run(
        &runs,
        "broken-seed0",
        summary("unsafe", 0, 0.9, 0, None),
        "",
    );

    // The runs as read: the file's length replaces the summary's size; metrics come from JSONL.
    let records = collect_runs(&runs).unwrap();
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "baseline-seed0",
            "safe-g0.5-seed0",
            "unsafe-g0.5-seed0",
            "unsafe-g0.5-seed1"
        ]
    );
    let with_file = &records[3];
    assert_eq!(with_file.summary.size_bytes, file.len() as i64);
    assert_eq!(with_file.widths, vec![vec![2, 3, 1]]);
    assert_eq!(with_file.initial_bit_depth, Some(4.0));
    assert_eq!(
        records[0].initial_bit_depth, None,
        "a baseline has no bit depth"
    );
    assert_eq!(
        records[2].evaluations[1],
        Evaluation {
            step: 8,
            validation_accuracy: 0.98,
            validation_loss: 0.08,
            bits_per_weight: 2.0,
            channels_alive: 5
        }
    );
    assert_eq!(records[1].checks.len(), 2);
    assert_eq!(records[1].checks[0].action, "restore");
    // The baseline (48 B, 99.5%) is both the smallest and the most accurate: the front is it.
    assert_eq!(pareto_front(&records), vec![0]);

    // The seed-averaged rows: unsafe over two seeds, by hand.
    let rows = group_rows(&records);
    let unsafe_row = rows.iter().find(|row| row.group == "unsafe-g0.5").unwrap();
    assert_eq!(unsafe_row.runs, 2);
    assert!((unsafe_row.accuracy.0 - 98.5).abs() < 1e-9);
    assert!(
        (unsafe_row.accuracy.1 - 0.5f64.sqrt()).abs() < 1e-9,
        "sample std of 98 and 99"
    );
    let mean_bytes = (100.0 + file.len() as f64) / 2.0;
    assert!((unsafe_row.bytes.0 - mean_bytes).abs() < 1e-9);
    let safe_row = rows.iter().find(|row| row.group == "safe-g0.5").unwrap();
    assert_eq!((safe_row.events, safe_row.budget_met), ([1, 1, 0], Some(1)));
    assert_eq!(
        rows.iter().map(|row| row.mode.as_str()).collect::<Vec<_>>(),
        ["baseline", "unsafe", "safe"]
    );

    // The pages and figures.
    let out = folder.path().join("report");
    let files = write_report(&runs, &out).unwrap();
    assert_eq!(files.runs, 4);
    for figure in &files.figures {
        let image = image::open(figure).unwrap_or_else(|e| panic!("{}: {e}", figure.display()));
        assert!(
            image.width() > 100 && image.height() > 100,
            "{}",
            figure.display()
        );
    }
    let names: Vec<String> = files
        .figures
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into())
        .collect();
    assert_eq!(
        names,
        [
            "accuracy-vs-size.png",
            "bits-per-channel.png",
            "training-curves.png",
            "controller-timeline.png"
        ]
    );
    let markdown = std::fs::read_to_string(&files.markdown).unwrap();
    let unsafe_line = format!(
        "| unsafe-g0.5 | unsafe | 2 | 0.5 | 4 | 98.50 ± 0.71% | {:.0} ± {:.0} | 0.20 ± 0.00 pt | 0/0/0 | − |",
        mean_bytes,
        (file.len() as f64 - 100.0).abs() / 2f64.sqrt()
    );
    assert!(markdown.contains(&unsafe_line), "{markdown}");
    assert!(markdown.contains("| safe-g0.5 | safe | 1 | 0.5 | 4 | 98.50 ± 0.00% | 90 ± 0 | 0.20 ± 0.00 pt | 1/1/0 | 1/1 |"), "{markdown}");
    assert!(markdown.contains("![") && markdown.contains("(accuracy-vs-size.png)"));
    // By mode: the two unsafe runs together; their setting's seed-to-seed spread of the gap is 0.
    assert!(
        markdown.contains(
            "| unsafe | 2 | 98.50 ± 0.71% | 0.20 ± 0.00 pt | 0.0000 pt over 1 settings |"
        ),
        "{markdown}"
    );
    assert!(
        markdown.contains("| safe | 1 | 98.50 ± 0.00% | 0.20 ± 0.00 pt | − |"),
        "{markdown}"
    );
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert_eq!(
        html.matches("data:image/png;base64,").count(),
        4,
        "figures inlined"
    );
    assert!(html.contains("<td>98.50 ± 0.71%</td>"));
}

#[test]
fn an_empty_folder_is_an_error() {
    let folder = tempfile::tempdir().unwrap();
    let error = write_report(folder.path(), &folder.path().join("out")).unwrap_err();
    assert!(error.to_string().contains("no finished runs"), "{error}");
}
