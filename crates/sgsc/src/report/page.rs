//! `sgsc report`: a folder of runs (a sweep's, a comparison's) as a Markdown page and a
//! self-contained HTML page (its figures inlined), with the PNG figures beside them.

use super::compare::mean_and_std;
use super::figures::{bits_heat_map, controller_timeline, training_curves};
use super::plot::accuracy_against_size;
use super::runs::{collect_runs, group_name, pareto_front, RunRecord};
use super::Summary;
use crate::error::{Error, Result};
use crate::files::write_atomically;
use crate::train::Mode;
use base64::Engine;
use std::collections::BTreeMap;
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
    let mut groups: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    for run in runs {
        groups.entry(group_name(&run.name)).or_default().push(run);
    }
    let mut rows: Vec<GroupRow> = groups
        .into_iter()
        .map(|(group, members)| {
            let first = &members[0].summary;
            let language_model = first.language_model;
            let (accuracy, gap) = quality_and_gap(&members, language_model);
            GroupRow {
                language_model,
                mode: first.mode.clone(),
                runs: members.len(),
                gamma: first.gamma,
                initial_bit_depth: members[0].initial_bit_depth,
                accuracy,
                bytes: mean_and_std(
                    &members
                        .iter()
                        .map(|run| run.summary.size_bytes as f64)
                        .collect::<Vec<_>>(),
                ),
                gap,
                events: members.iter().fold([0; 3], |sum, run| {
                    let e = run.summary.controller_events;
                    [
                        sum[0] + e.breaches,
                        sum[1] + e.restored_channels,
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
    let mode_order = |mode: &str| Mode::ALL.iter().position(|m| m.name() == mode);
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
    let anchors = if summaries.iter().all(Summary::is_mnist) {
        ", and the published MNIST anchors that fall within its axes"
    } else {
        ""
    };
    figures.push((
        path,
        format!("Test accuracy against model size (file bytes), every run, with the Pareto front{anchors}."),
    ));

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
        "Validation accuracy and live output channels over training, one line per run; a baseline longer than the compressing runs is a dashed level at its final value, and lines are cut where they fall below the accuracy axis (the step axis counts those runs).".into(),
    ));
    if runs.iter().any(|run| !run.checks.is_empty()) {
        let path = out.join("controller-timeline.png");
        controller_timeline(&runs, &path)?;
        figures.push((path, "The safety controller's checks: the preservation-set figure at each check of every safe run, restores and roll-backs marked, each budget's preservation threshold dashed (a breach on the safe side of it came from validation).".into()));
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
    let tables = [
        Table {
            title: "Seed-averaged comparison",
            header: TABLE_HEADER.to_vec(),
            rows: rows.iter().map(group_cells).collect(),
        },
        Table {
            title: "By mode",
            header: MODE_HEADER.to_vec(),
            rows: mode_rows(&runs, &rows),
        },
        Table {
            title: "Every run",
            header: RUN_HEADER.to_vec(),
            rows: runs
                .iter()
                .enumerate()
                .map(|(index, run)| run_cells(run, front.contains(&index)))
                .collect(),
        },
    ];
    let intro = format!(
        "{} runs. Accuracy is on the untouched test split; bytes are the length of each run's model.sgsc (float32 bytes for baselines; payload-estimate marks older runs without a file).",
        runs.len()
    );
    let title = runs_dir.display().to_string();
    let markdown = markdown_page(&title, &intro, &tables, &figures);
    let markdown_path = out.join("report.md");
    write_atomically(&markdown_path, markdown.as_bytes())?;
    let html = html_page(&title, &intro, &tables, &figures)?;
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
    Mode::ALL
        .into_iter()
        .filter(|mode| mode.quantizes())
        .filter_map(|mode| {
            let mut members: Vec<&RunRecord> = runs
                .iter()
                .filter(|run| run.summary.mode == mode.name() && !run.widths.is_empty())
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

/// Test quality of `runs` (accuracy in percent, or a language model's loss in nats) and their
/// train-test gap (points, or test minus train loss in nats), each as mean and sample standard
/// deviation.
fn quality_and_gap(runs: &[&RunRecord], language_model: bool) -> ((f64, f64), (f64, f64)) {
    let stat = |value: &dyn Fn(&Summary) -> f64| {
        mean_and_std(
            &runs
                .iter()
                .map(|run| value(&run.summary))
                .collect::<Vec<_>>(),
        )
    };
    if language_model {
        (
            stat(&|s| s.test_loss),
            stat(&|s| s.test_loss - s.train_loss),
        )
    } else {
        (
            stat(&|s| 100.0 * s.test_accuracy),
            stat(&|s| 100.0 * s.train_test_gap),
        )
    }
}

/// A cell for [`quality_and_gap`]'s quality.
fn show_quality((mean, std): (f64, f64), language_model: bool) -> String {
    if language_model {
        format!("{mean:.4} ± {std:.4} nats")
    } else {
        format!("{mean:.2} ± {std:.2}%")
    }
}

/// A cell for [`quality_and_gap`]'s gap.
fn show_gap((mean, std): (f64, f64), language_model: bool) -> String {
    if language_model {
        format!("{mean:+.4} ± {std:.4} nats")
    } else {
        format!("{mean:.2} ± {std:.2} pt")
    }
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
        show_quality(row.accuracy, row.language_model),
        format!("{:.0} ± {:.0}", row.bytes.0, row.bytes.1),
        show_gap(row.gap, row.language_model),
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

const MODE_HEADER: [&str; 5] = [
    "mode",
    "runs",
    "test accuracy (LM: loss)",
    "train−test gap, all runs",
    "train−test gap: seed-to-seed std, mean over settings",
];

/// One row per mode over all its runs: quality and train-test gap (mean ± std), and the gap's
/// spread between seeds of the same setting, averaged over the settings that have several seeds
/// (the paper's claim is that `safe` has the smaller one).
fn mode_rows(runs: &[RunRecord], groups: &[GroupRow]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for mode in Mode::ALL.map(Mode::name) {
        let members: Vec<&RunRecord> = runs.iter().filter(|r| r.summary.mode == mode).collect();
        let Some(first) = members.first() else {
            continue;
        };
        let language_model = first.summary.language_model;
        let (quality, gap) = quality_and_gap(&members, language_model);
        let spreads: Vec<f64> = groups
            .iter()
            .filter(|g| g.mode == mode && g.runs > 1)
            .map(|g| g.gap.1)
            .collect();
        let spread = if spreads.is_empty() {
            "−".to_string()
        } else {
            let unit = if language_model { " nats" } else { " pt" };
            format!(
                "{:.4}{unit} over {} settings",
                spreads.iter().sum::<f64>() / spreads.len() as f64,
                spreads.len()
            )
        };
        rows.push(vec![
            mode.to_string(),
            members.len().to_string(),
            show_quality(quality, language_model),
            show_gap(gap, language_model),
            spread,
        ]);
    }
    rows
}

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

/// A table of the report: its section title, header and rows of cells.
struct Table {
    title: &'static str,
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

/// The page in Markdown: the first two tables, the figures (PNG files beside it), the rest.
fn markdown_page(
    title: &str,
    intro: &str,
    tables: &[Table],
    figures: &[(PathBuf, String)],
) -> String {
    let table = |table: &Table| {
        let mut text = format!(
            "## {}\n\n| {} |\n|{}\n",
            table.title,
            table.header.join(" | "),
            "---|".repeat(table.header.len())
        );
        for row in &table.rows {
            text.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        text + "\n"
    };
    let mut page = format!("# Report: {title}\n\n{intro}\n\n");
    let (first, rest) = tables.split_at(tables.len().min(2));
    first.iter().for_each(|t| page.push_str(&table(t)));
    page.push_str("## Figures\n\n");
    for (path, caption) in figures {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        page.push_str(&format!("![{caption}]({name})\n\n{caption}\n\n"));
    }
    rest.iter().for_each(|t| page.push_str(&table(t)));
    page
}

/// The same page as one self-contained HTML file, the figures inlined as base64 PNGs.
fn html_page(
    title: &str,
    intro: &str,
    tables: &[Table],
    figures: &[(PathBuf, String)],
) -> Result<String> {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let table = |table: &Table| {
        let mut text = format!("<h2>{}</h2>\n<table><tr>", escape(table.title));
        for cell in &table.header {
            text.push_str(&format!("<th>{}</th>", escape(cell)));
        }
        text.push_str("</tr>\n");
        for row in &table.rows {
            text.push_str("<tr>");
            for cell in row {
                text.push_str(&format!("<td>{}</td>", escape(cell)));
            }
            text.push_str("</tr>\n");
        }
        text + "</table>\n"
    };
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sgsc report: {title}</title>\n<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}td:first-child{{text-align:left}}img{{max-width:100%}}figcaption{{color:#555;margin-bottom:2em}}</style></head><body>\n<h1>Report: {title}</h1>\n<p>{intro}</p>\n",
        title = escape(title),
        intro = escape(intro)
    );
    let (first, rest) = tables.split_at(tables.len().min(2));
    first.iter().for_each(|t| page.push_str(&table(t)));
    page.push_str("<h2>Figures</h2>\n");
    for (path, caption) in figures {
        let bytes = std::fs::read(path).map_err(|source| Error::io(path, source))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        page.push_str(&format!(
            "<figure><img src=\"data:image/png;base64,{encoded}\" alt=\"{caption}\"><figcaption>{caption}</figcaption></figure>\n",
            caption = escape(caption)
        ));
    }
    rest.iter().for_each(|t| page.push_str(&table(t)));
    page.push_str("</body></html>\n");
    Ok(page)
}
