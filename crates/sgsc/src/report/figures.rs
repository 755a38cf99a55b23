//! The report's figures beyond accuracy against size: bits per channel as a heat map, channels
//! alive and validation accuracy over training, and the safety controller's checks on a
//! timeline. Each is a PNG drawn with plotters.

use super::plot::{
    dashed_level, dashed_sample, draw_legend, mode_colour, title_with_runs_below, write_png,
    Canvas, Drawn, FONT,
};
use super::runs::{Evaluation, RunRecord};
use crate::error::Result;
use crate::train::controller::{Budget, BudgetMetric};
use crate::train::Mode;
use plotters::prelude::*;
use std::path::Path;

/// Bits of each live channel of each quantized layer, one panel per run: a row per layer, a
/// cell per channel (widest first), white cells for the channels removed.
pub fn bits_heat_map(runs: &[&RunRecord], path: &Path) -> Result<()> {
    let panel_height = 220;
    let size = (960, (panel_height * runs.len().max(1)) as u32);
    write_png(path, size, |root| {
        for (run, area) in runs.iter().zip(root.split_evenly((runs.len().max(1), 1))) {
            draw_widths(run, &area)?;
        }
        Ok(())
    })
}

/// Colour of a width, on a viridis-like scale: yellow at 1 bit, through green and teal, to
/// purple at 16 bits and more.
fn width_colour(bits: u8) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (1.0, [253.0, 231.0, 37.0]),
        (4.0, [94.0, 201.0, 98.0]),
        (8.0, [33.0, 145.0, 140.0]),
        (12.0, [59.0, 82.0, 139.0]),
        (16.0, [68.0, 1.0, 84.0]),
    ];
    let bits = f64::from(bits).clamp(1.0, 16.0);
    let upper = STOPS
        .iter()
        .position(|(at, _)| *at >= bits)
        .unwrap_or(4)
        .max(1);
    let ((from, low), (to, high)) = (STOPS[upper - 1], STOPS[upper]);
    let t = (bits - from) / (to - from);
    let mix = |i: usize| (low[i] + (high[i] - low[i]) * t) as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

fn draw_widths(run: &RunRecord, area: &Canvas) -> Drawn {
    let layers = run.widths.len().max(1);
    let originals: Vec<usize> = run
        .summary
        .channels_alive
        .iter()
        .map(|&[_, original]| original as usize)
        .collect();
    let columns = run
        .widths
        .iter()
        .enumerate()
        .map(|(layer, widths)| originals.get(layer).copied().unwrap_or(0).max(widths.len()))
        .max()
        .unwrap_or(1)
        .max(1);
    let title = format!(
        "{}: bits per output channel ({} B, {:.2}%)",
        run.name,
        run.summary.size_bytes,
        100.0 * run.summary.test_accuracy
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(0..columns, (0..layers).into_segmented())?;
    // Layer 0 (the input's) at the top.
    let row_of = |layer: usize| layers - 1 - layer;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("output channel (widest first; blank: removed)")
        .y_labels(layers)
        .y_label_formatter(&|value| match value {
            SegmentValue::CenterOf(row) if *row < layers => format!("layer {}", row_of(*row)),
            _ => String::new(),
        })
        .label_style((FONT, 12))
        .draw()?;
    for (layer, widths) in run.widths.iter().enumerate() {
        let mut sorted = widths.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let row = row_of(layer);
        chart.draw_series(sorted.iter().enumerate().map(|(column, &bits)| {
            Rectangle::new(
                [
                    (column, SegmentValue::Exact(row)),
                    (column + 1, SegmentValue::Exact(row + 1)),
                ],
                width_colour(bits).filled(),
            )
        }))?;
        chart.draw_series(sorted.iter().enumerate().map(|(column, &bits)| {
            let colour = if bits > 6 { WHITE } else { BLACK };
            Text::new(
                format!("{bits}"),
                (column, SegmentValue::CenterOf(row)),
                (FONT, 10).into_font().color(&colour),
            )
        }))?;
    }
    Ok(())
}

/// How far below the best validation accuracy the training curves' axis reaches: wider than the
/// final-accuracy plot's window, because accuracy dips during compression.
const CURVE_WINDOW_POINTS: f64 = 10.0;

/// Two panels over training steps, one line per run in its mode's colour: validation accuracy,
/// and live output channels summed over the quantized layers. When the compressing runs are
/// shorter than the baselines (fine-tunes of them), the steps span the compressing runs and each
/// baseline is a dashed level at its final value. Accuracies span the runs within
/// [`CURVE_WINDOW_POINTS`] of the best; lines are cut where they fall below, and the step axis's
/// title counts those runs.
pub fn training_curves(runs: &[RunRecord], path: &Path) -> Result<()> {
    let size = (960, 720);
    write_png(path, size, |root| {
        let panels = root.split_evenly((2, 1));
        draw_curves(
            runs,
            &panels[0],
            "validation accuracy (%)",
            |e| 100.0 * e.validation_accuracy,
            Some(CURVE_WINDOW_POINTS),
        )?;
        draw_curves(
            runs,
            &panels[1],
            "output channels alive",
            |e| e.channels_alive as f64,
            None,
        )
    })
}

/// How one run appears in a panel of [`training_curves`].
enum Curve {
    /// Its evaluations, step by step.
    Line(Vec<(f64, f64)>),
    /// Its final value across the panel (a baseline longer than the compressing runs).
    Level(f64),
}

/// One panel of [`training_curves`]: `value` of each evaluation; with a `window`, the axis
/// reaches only that far below the best value.
fn draw_curves(
    runs: &[RunRecord],
    area: &Canvas,
    label: &str,
    value: impl Fn(&Evaluation) -> f64,
    window: Option<f64>,
) -> Drawn {
    let last_step = |run: &RunRecord| run.evaluations.last().map_or(0, |e| e.step) as f64;
    let compressing_steps = runs
        .iter()
        .filter(|run| run.summary.mode != "baseline")
        .map(last_step)
        .fold(0.0f64, f64::max);
    let steps = if compressing_steps > 0.0 {
        compressing_steps
    } else {
        runs.iter().map(last_step).fold(1.0f64, f64::max)
    };
    let curves: Vec<(&RunRecord, Curve)> = runs
        .iter()
        .map(|run| {
            let curve = match run.evaluations.last() {
                Some(last) if run.summary.mode == "baseline" && last_step(run) > steps => {
                    Curve::Level(value(last))
                }
                _ => Curve::Line(
                    run.evaluations
                        .iter()
                        .map(|e| (e.step as f64, value(e)))
                        .collect(),
                ),
            };
            (run, curve)
        })
        .collect();
    let values = |curve: &Curve| -> Vec<f64> {
        match curve {
            Curve::Line(points) => points.iter().map(|&(_, y)| y).collect(),
            Curve::Level(level) => vec![*level],
        }
    };
    let drawn: Vec<f64> = curves
        .iter()
        .flat_map(|(_, curve)| values(curve))
        .filter(|y| y.is_finite())
        .collect();
    let best = drawn.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let floor = window.map_or(f64::NEG_INFINITY, |window| best - window);
    let (mut low, mut high) = drawn
        .iter()
        .filter(|&&y| y >= floor)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &y| {
            (l.min(y), h.max(y))
        });
    if !low.is_finite() {
        (low, high) = (0.0, 1.0);
    }
    let margin = ((high - low) * 0.05).max(1e-3);
    let bottom = (low - margin).max(floor);
    let on_axis = |y: f64| y >= bottom;
    let below = curves
        .iter()
        .filter(|(_, curve)| values(curve).iter().any(|&y| !on_axis(y)))
        .count();
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..steps, bottom..high + margin)?;
    chart
        .configure_mesh()
        .x_desc(title_with_runs_below(
            "step",
            below,
            bottom,
            "cut where they fall below it",
        ))
        .x_label_formatter(&|step| format!("{step:.0}"))
        .y_desc(label)
        .label_style((FONT, 12))
        .draw()?;
    for mode in Mode::ALL.map(Mode::name) {
        let colour = mode_colour(mode);
        let style = colour.mix(0.6).stroke_width(1);
        let mut labelled = false;
        for (_, curve) in curves.iter().filter(|(run, _)| run.summary.mode == mode) {
            let series = match curve {
                Curve::Level(level) if on_axis(*level) => {
                    let series = chart.draw_series(dashed_level(*level, steps, style))?;
                    if !labelled {
                        series
                            .label("baseline (final)")
                            .legend(move |point| dashed_sample(point, style));
                    }
                    labelled = true;
                    continue;
                }
                Curve::Level(_) => continue,
                Curve::Line(points) => {
                    // Each stretch of points on the axis is its own line.
                    let mut last = None;
                    for stretch in points.split(|&(_, y)| !on_axis(y)) {
                        if !stretch.is_empty() {
                            last =
                                Some(chart.draw_series(LineSeries::new(stretch.to_vec(), style))?);
                        }
                    }
                    last
                }
            };
            if let (false, Some(series)) = (labelled, series) {
                series
                    .label(mode)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
                labelled = true;
            }
        }
    }
    draw_legend(&mut chart, 12)
}

/// The safe runs' checks over training: the preservation-set figure at each check (accuracy, or
/// loss for language models), one line per run, the check's action marked (a restore in orange,
/// a roll-back in red), and each budget's threshold dashed.
pub fn controller_timeline(runs: &[RunRecord], path: &Path) -> Result<()> {
    let size = (960, 480);
    // One metric per figure: language models' checks hold losses, the others' accuracies. A
    // folder with both shows the kind of its first safe run.
    let language_model = runs
        .iter()
        .find(|run| !run.checks.is_empty())
        .is_some_and(|run| run.summary.language_model);
    let safe: Vec<&RunRecord> = runs
        .iter()
        .filter(|run| !run.checks.is_empty() && run.summary.language_model == language_model)
        .collect();
    let budgets: Vec<Budget> = safe
        .iter()
        .filter_map(|run| run.summary.safety.as_ref().map(|c| c.budget))
        .collect();
    let metric = if language_model {
        BudgetMetric::Loss
    } else {
        BudgetMetric::Accuracy
    };
    let (shown, title, axis) = match metric {
        BudgetMetric::Accuracy => (
            100.0,
            "safety controller: preservation accuracy at each check",
            "preservation accuracy (%)",
        ),
        BudgetMetric::Loss => (
            1.0,
            "safety controller: preservation loss at each check",
            "preservation loss (nats)",
        ),
    };
    let thresholds = preservation_thresholds(&budgets);
    write_png(path, size, |root| {
        let checks = || safe.iter().flat_map(|run| run.checks.iter());
        let steps = checks().map(|c| c.step as f64).fold(1.0, f64::max);
        let figures = checks()
            .map(|c| shown * c.preservation_accuracy)
            .chain(thresholds.iter().copied())
            .filter(|a| a.is_finite());
        let (low, high) = figures.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), a| {
            (l.min(a), h.max(a))
        });
        let (low, high) = if low > high {
            (0.0, 100.0)
        } else {
            let margin = ((high - low) * 0.03).max(1e-3);
            let high = high + margin;
            (
                low - margin,
                if metric == BudgetMetric::Accuracy {
                    high.min(100.0)
                } else {
                    high
                },
            )
        };
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..steps, low..high)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&|step| format!("{step:.0}"))
            .y_desc(axis)
            .label_style((FONT, 12))
            .draw()?;
        let blue = mode_colour("safe");
        for run in &safe {
            let line = run
                .checks
                .iter()
                .filter(|c| c.preservation_accuracy.is_finite())
                .map(|c| (c.step as f64, shown * c.preservation_accuracy));
            chart.draw_series(LineSeries::new(line, blue.mix(0.4)))?;
        }
        let grey = RGBColor(90, 90, 90);
        let style = grey.stroke_width(1);
        for (index, &threshold) in thresholds.iter().enumerate() {
            let series = chart.draw_series(dashed_level(threshold, steps, style))?;
            if index == 0 {
                series
                    .label("budget")
                    .legend(move |point| dashed_sample(point, style));
            }
        }
        for (action, colour, label) in [
            ("restore", RGBColor(255, 127, 14), "restore"),
            ("rollback", RGBColor(214, 39, 40), "roll-back"),
        ] {
            let marks = safe
                .iter()
                .flat_map(|run| run.checks.iter())
                .filter(|c| c.action == action && c.preservation_accuracy.is_finite())
                .map(|c| {
                    Circle::new(
                        (c.step as f64, shown * c.preservation_accuracy),
                        4,
                        colour.filled(),
                    )
                });
            chart
                .draw_series(marks)?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, colour.filled()));
        }
        draw_legend(&mut chart, 12)
    })
}

/// The lowest preservation accuracy (percent) or highest loss (nats) each budget allows, sorted,
/// each once.
fn preservation_thresholds(budgets: &[Budget]) -> Vec<f64> {
    let mut thresholds: Vec<f64> = budgets
        .iter()
        .map(|b| match b.metric {
            BudgetMetric::Accuracy => 100.0 * b.reference_preservation - b.max_preservation_drop,
            BudgetMetric::Loss => b.reference_preservation + b.max_preservation_drop,
        })
        .collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    thresholds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(metric: BudgetMetric, reference: f64, drop: f64) -> Budget {
        Budget {
            metric,
            reference_preservation: reference,
            reference_validation: 0.99,
            max_preservation_drop: drop,
            max_validation_drop: drop,
        }
    }

    #[test]
    fn thresholds_are_the_reference_less_the_drop_in_points_or_plus_it_in_nats() {
        let accuracy = [
            budget(BudgetMetric::Accuracy, 0.956, 0.5),
            budget(BudgetMetric::Accuracy, 0.949, 0.5),
            budget(BudgetMetric::Accuracy, 0.956, 0.5),
        ];
        let thresholds = preservation_thresholds(&accuracy);
        assert_eq!(thresholds.len(), 2, "one line per distinct budget");
        assert!((thresholds[0] - 94.4).abs() < 1e-9);
        assert!((thresholds[1] - 95.1).abs() < 1e-9);
        let loss = preservation_thresholds(&[budget(BudgetMetric::Loss, 2.0, 0.05)]);
        assert!((loss[0] - 2.05).abs() < 1e-12);
    }
}
