//! `sgsc report`: a folder of runs (a sweep's, a comparison's) as a Markdown page and a
//! self-contained HTML page (its figures inlined), with the PNG figures beside them.

use super::compare::mean_and_std;
use super::figures::{bits_heat_map, controller_timeline, training_curves};
use super::plot::accuracy_against_size;
use super::runs::{collect_runs, group_name, pareto_front, RunRecord};
use crate::error::{Error, Result};
use crate::train::checkpoint::write_atomically;
use base64::Engine;
use std::path::{Path, PathBuf};

/// What a report wrote.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// The PNG figures.
    pub figures: Vec<PathBuf>,
    /// Runs read.
    pub runs: usize,
}

/// One row of the seed-averaged table: runs that differ only in seed.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRow {
    /// The runs' name without the seed.
    pub group: String,
    /// Their mode.
    pub mode: String,
    /// How many runs (seeds).
    pub runs: usize,
    /// Size pressure, if compressing.
    pub gamma: Option<f64>,
    /// Initial bit depth, if compressing.
    pub initial_bit_depth: Option<f64>,
    /// Language models: the quality columns hold losses in nats, not accuracies.
    pub language_model: bool,
    /// Test accuracy in percent (a language model's test loss), mean and sample standard
    /// deviation.
    pub accuracy: (f64, f64),
    /// Model bytes, mean and sample standard deviation.
    pub bytes: (f64, f64),
    /// Train-test gap in points (a language model's test minus train loss), mean and sample
    /// standard deviation.
    pub gap: (f64, f64),
    /// Breaches, restores and roll-backs, summed.
    pub events: [u32; 3],
    /// How many runs met their safety budget (safe runs).
    pub budget_met: Option<usize>,
}

/// Seed-averaged rows, ordered by mode (baseline, unsafe, safe) then mean size.
pub fn group_rows(runs: &[RunRecord]) -> Vec<GroupRow> {
    let mut names: Vec<String> = runs.iter().map(|run| group_name(&run.name)).collect();
    names.sort();
    names.dedup();
    let mut rows: Vec<GroupRow> = names
        .into_iter()
        .map(|group| {
            let members: Vec<&RunRecord> = runs
                .iter()
                .filter(|run| group_name(&run.name) == group)
                .collect();
            let stat = |value: &dyn Fn(&RunRecord) -> f64| {
                mean_and_std(&members.iter().map(|run| value(run)).collect::<Vec<_>>())
            };
            let first = &members[0].summary;
            let language_model = first.language_model;
            GroupRow {
                language_model,
                mode: first.mode.clone(),
                runs: members.len(),
                gamma: first.gamma,
                initial_bit_depth: members[0].initial_bit_depth,
                accuracy: if language_model {
                    stat(&|run| run.summary.test_loss)
                } else {
                    stat(&|run| 100.0 * run.summary.test_accuracy)
                },
                bytes: stat(&|run| run.summary.size_bytes as f64),
                gap: if language_model {
                    stat(&|run| run.summary.test_loss - run.summary.train_loss)
                } else {
                    stat(&|run| 100.0 * run.summary.train_test_gap)
                },
                events: members.iter().fold([0; 3], |sum, run| {
                    let e = run.summary.controller_events;
                    [
                        sum[0] + e.breaches,
                        sum[1] + e.restores,
                        sum[2] + e.rollbacks,
                    ]
                }),
                budget_met: (first.mode == "safe").then(|| {
                    members
                        .iter()
                        .filter(|run| run.summary.safety.as_ref().is_some_and(|c| c.met))
                        .count()
                }),
                group,
            }
        })
        .collect();
    let mode_order = |mode: &str| {
        ["baseline", "unsafe", "safe"]
            .iter()
            .position(|m| *m == mode)
    };
    rows.sort_by(|a, b| {
        mode_order(&a.mode)
            .cmp(&mode_order(&b.mode))
            .then(a.bytes.0.total_cmp(&b.bytes.0))
    });
    rows
}

/// Reads every run under `runs_dir` and writes the report into `out`.
pub fn write_report(runs_dir: &Path, out: &Path) -> Result<ReportFiles> {
    let runs = collect_runs(runs_dir)?;
    if runs.is_empty() {
        return Err(Error::Config {
            path: runs_dir.to_path_buf(),
            message: "no finished runs (folders with a summary.json) here".into(),
        });
    }
    std::fs::create_dir_all(out).map_err(|source| Error::io(out, source))?;
    let front = pareto_front(&runs);
    let mut figures: Vec<(PathBuf, String)> = Vec::new();

    let summaries: Vec<_> = runs.iter().map(|run| run.summary.clone()).collect();
    let path = out.join("accuracy-vs-size.png");
    let title = format!("{}: test accuracy against file size", runs_dir.display());
    accuracy_against_size(&summaries, &title, &path)?;
    figures.push((path, "Test accuracy against model size (file bytes), every run, with the Pareto front and the published anchors.".into()));

    let shown = heat_map_runs(&runs);
    if !shown.is_empty() {
        let path = out.join("bits-per-channel.png");
        bits_heat_map(&shown, &path)?;
        figures.push((path, "Bits per output channel, layer by layer, for each mode's most accurate run no larger than that mode's median size (removed channels are left blank).".into()));
    }
    let path = out.join("training-curves.png");
    training_curves(&runs, &path)?;
    figures.push((
        path,
        "Validation accuracy and live output channels over training, one line per run.".into(),
    ));
    if runs.iter().any(|run| !run.checks.is_empty()) {
        let path = out.join("controller-timeline.png");
        controller_timeline(&runs, &path)?;
        figures.push((path, "The safety controller's checks: preservation-set accuracy at each check of every safe run, restores and roll-backs marked.".into()));
    }
    if let Some(montage) = runs
        .iter()
        .map(|run| run.dir.join("preservation.png"))
        .find(|path| path.is_file())
    {
        let path = out.join("preservation-set.png");
        std::fs::copy(&montage, &path).map_err(|source| Error::io(&montage, source))?;
        figures.push((
            path,
            format!(
                "The preservation set of {} (a montage of its images).",
                montage.display()
            ),
        ));
    }

    let rows = group_rows(&runs);
    let markdown = markdown_page(runs_dir, &runs, &front, &rows, &figures);
    let markdown_path = out.join("report.md");
    write_atomically(&markdown_path, markdown.as_bytes())?;
    let html = html_page(runs_dir, &runs, &front, &rows, &figures)?;
    let html_path = out.join("report.html");
    write_atomically(&html_path, html.as_bytes())?;
    Ok(ReportFiles {
        markdown: markdown_path,
        html: html_path,
        figures: figures.into_iter().map(|(path, _)| path).collect(),
        runs: runs.len(),
    })
}

/// For each compressing mode, its most accurate run no larger than the mode's median size.
fn heat_map_runs(runs: &[RunRecord]) -> Vec<&RunRecord> {
    ["unsafe", "safe"]
        .iter()
        .filter_map(|mode| {
            let mut members: Vec<&RunRecord> = runs
                .iter()
                .filter(|run| run.summary.mode == *mode && !run.widths.is_empty())
                .collect();
            members.sort_by_key(|run| run.summary.size_bytes);
            let median = members
                .get(members.len().saturating_sub(1) / 2)?
                .summary
                .size_bytes;
            members
                .into_iter()
                .filter(|run| run.summary.size_bytes <= median)
                .max_by(|a, b| a.summary.test_accuracy.total_cmp(&b.summary.test_accuracy))
        })
        .collect()
}

/// The table cells of a group row, in the column order of [`TABLE_HEADER`].
fn group_cells(row: &GroupRow) -> Vec<String> {
    let optional = |value: Option<f64>| value.map_or("−".into(), |v| format!("{v}"));
    vec![
        row.group.clone(),
        row.mode.clone(),
        row.runs.to_string(),
        optional(row.gamma),
        optional(row.initial_bit_depth),
        if row.language_model {
            format!("{:.4} ± {:.4} nats", row.accuracy.0, row.accuracy.1)
        } else {
            format!("{:.2} ± {:.2}%", row.accuracy.0, row.accuracy.1)
        },
        format!("{:.0} ± {:.0}", row.bytes.0, row.bytes.1),
        if row.language_model {
            format!("{:+.4} ± {:.4} nats", row.gap.0, row.gap.1)
        } else {
            format!("{:.2} ± {:.2} pt", row.gap.0, row.gap.1)
        },
        format!("{}/{}/{}", row.events[0], row.events[1], row.events[2]),
        row.budget_met
            .map_or("−".into(), |met| format!("{met}/{}", row.runs)),
    ]
}

const TABLE_HEADER: [&str; 10] = [
    "runs (seeds averaged)",
    "mode",
    "seeds",
    "γ",
    "initial bits",
    "test accuracy (LM: loss)",
    "bytes",
    "train−test gap",
    "breach/restore/roll-back",
    "budget met",
];

const RUN_HEADER: [&str; 6] = [
    "run",
    "mode",
    "seed",
    "test accuracy (LM: loss)",
    "bytes",
    "Pareto front",
];

fn run_cells(run: &RunRecord, on_front: bool) -> Vec<String> {
    vec![
        run.name.clone(),
        run.summary.mode.clone(),
        run.summary.seed.to_string(),
        if run.summary.language_model {
            format!("{:.4} nats", run.summary.test_loss)
        } else {
            format!("{:.2}%", 100.0 * run.summary.test_accuracy)
        },
        format!("{} ({})", run.summary.size_bytes, run.summary.size_kind),
        if on_front {
            "yes".into()
        } else {
            String::new()
        },
    ]
}

fn markdown_page(
    runs_dir: &Path,
    runs: &[RunRecord],
    front: &[usize],
    rows: &[GroupRow],
    figures: &[(PathBuf, String)],
) -> String {
    let table = |header: &[&str], rows: Vec<Vec<String>>| {
        let mut text = format!(
            "| {} |\n|{}\n",
            header.join(" | "),
            "---|".repeat(header.len())
        );
        for row in rows {
            text.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        text
    };
    let mut page = format!(
        "# Report: {}\n\n{} runs. Accuracy is on the untouched test split; bytes are the length of each run's `model.sgsc` (float32 bytes for baselines; `payload-estimate` marks older runs without a file).\n\n## Seed-averaged comparison\n\n",
        runs_dir.display(),
        runs.len()
    );
    page.push_str(&table(
        &TABLE_HEADER,
        rows.iter().map(group_cells).collect(),
    ));
    page.push_str("\n## Figures\n\n");
    for (path, caption) in figures {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        page.push_str(&format!("![{caption}]({name})\n\n{caption}\n\n"));
    }
    page.push_str("## Every run\n\n");
    page.push_str(&table(
        &RUN_HEADER,
        runs.iter()
            .enumerate()
            .map(|(index, run)| run_cells(run, front.contains(&index)))
            .collect(),
    ));
    page
}

fn html_page(
    runs_dir: &Path,
    runs: &[RunRecord],
    front: &[usize],
    rows: &[GroupRow],
    figures: &[(PathBuf, String)],
) -> Result<String> {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let table = |header: &[&str], rows: Vec<Vec<String>>| {
        let mut text = String::from("<table><tr>");
        for cell in header {
            text.push_str(&format!("<th>{}</th>", escape(cell)));
        }
        text.push_str("</tr>\n");
        for row in rows {
            text.push_str("<tr>");
            for cell in row {
                text.push_str(&format!("<td>{}</td>", escape(&cell)));
            }
            text.push_str("</tr>\n");
        }
        text.push_str("</table>\n");
        text
    };
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sgsc report: {title}</title>\n<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}td:first-child{{text-align:left}}img{{max-width:100%}}figcaption{{color:#555;margin-bottom:2em}}</style></head><body>\n<h1>Report: {title}</h1>\n<p>{count} runs. Accuracy is on the untouched test split; bytes are the length of each run's <code>model.sgsc</code> (float32 bytes for baselines).</p>\n<h2>Seed-averaged comparison</h2>\n",
        title = escape(&runs_dir.display().to_string()),
        count = runs.len()
    );
    page.push_str(&table(
        &TABLE_HEADER,
        rows.iter().map(group_cells).collect(),
    ));
    page.push_str("<h2>Figures</h2>\n");
    for (path, caption) in figures {
        let bytes = std::fs::read(path).map_err(|source| Error::io(path, source))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        page.push_str(&format!(
            "<figure><img src=\"data:image/png;base64,{encoded}\" alt=\"{caption}\"><figcaption>{caption}</figcaption></figure>\n",
            caption = escape(caption)
        ));
    }
    page.push_str("<h2>Every run</h2>\n");
    page.push_str(&table(
        &RUN_HEADER,
        runs.iter()
            .enumerate()
            .map(|(index, run)| run_cells(run, front.contains(&index)))
            .collect(),
    ));
    page.push_str("</body></html>\n");
    Ok(page)
}
