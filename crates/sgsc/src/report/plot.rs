//! Test accuracy against model size as a PNG: every run of a comparison as a point coloured by
//! mode, on a logarithmic size axis, with the Pareto front, and on MNIST the published anchors of
//! METHOD.md that fall within the runs' axes (the report's other figures, [`super::figures`],
//! share its helpers). The legend sits in a band to the right of the largest run, so it never
//! covers a point. Text is set
//! in a bundled DejaVu Sans (`assets/`), so the plot looks the same on machines without fonts.

use super::Summary;
use crate::error::{Error, Result};
use crate::files::write_atomically;
use crate::train::Mode;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;

/// A published result the plot is measured against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    /// What the point is.
    pub label: &'static str,
    /// Model size in bytes.
    pub bytes: f64,
    /// MNIST test accuracy in percent.
    pub accuracy_percent: f64,
}

/// The bar of the mission: tinygrad's self-compression and Deep Compression's LeNet-5.
pub const ANCHORS: [Anchor; 2] = [
    Anchor {
        label: "tinygrad self-compression",
        bytes: 18_075.0,
        accuracy_percent: 98.20,
    },
    Anchor {
        label: "Deep Compression LeNet-5",
        bytes: 44_000.0,
        accuracy_percent: 99.26,
    },
];

/// The font family every plot uses.
pub(super) const FONT: &str = "sans-serif";
const WIDTH: u32 = 960;
const HEIGHT: u32 = 640;

/// Colour of each mode's points (anything else is drawn grey).
pub(super) fn mode_colour(mode: &str) -> RGBColor {
    match mode {
        "baseline" => RGBColor(90, 90, 90),
        "unsafe" => RGBColor(214, 39, 40),
        "distill" => RGBColor(44, 160, 44),
        "safe" => RGBColor(31, 119, 180),
        _ => RGBColor(150, 150, 150),
    }
}

/// Makes the bundled font known to plotters (once per process; the outcome is remembered).
pub(super) fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok()
    });
    if registered {
        Ok(())
    } else {
        Err(plot_error("the bundled font does not load"))
    }
}

/// A plotting failure as the crate's error.
pub(super) fn plot_error(message: impl std::fmt::Display) -> Error {
    Error::Plot(message.to_string())
}

/// Draws test accuracy (percent) against size (bytes, log scale) for `summaries` and the
/// [`ANCHORS`], and writes it as a PNG to `path` (atomically).
pub fn accuracy_against_size(summaries: &[Summary], title: &str, path: &Path) -> Result<()> {
    write_png(path, (WIDTH, HEIGHT), |root| draw(summaries, title, root))
}

/// Result of a drawing function.
pub(super) type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

/// The drawing area a figure is drawn on: an RGB buffer.
pub(super) type Canvas<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws a figure of `size` on a white canvas with `draw` and writes it as a PNG (atomically).
pub(super) fn write_png(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Canvas) -> Drawn,
) -> Result<()> {
    register_font()?;
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    let drawn = (|| -> Drawn {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
        Ok(())
    })();
    drawn.map_err(plot_error)?;
    let image = image::RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| plot_error("the plot buffer has the wrong size"))?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(plot_error)?;
    write_atomically(path, &png)
}

/// The MNIST anchors, for runs that are all on MNIST (none for other data or language models).
fn anchors_for(summaries: &[Summary]) -> &'static [Anchor] {
    if !summaries.is_empty() && summaries.iter().all(Summary::is_mnist) {
        &ANCHORS
    } else {
        &[]
    }
}

/// The anchors of [`anchors_for`] that fall within the axes (sizes in bytes, accuracies in
/// percent).
fn anchors_within(
    summaries: &[Summary],
    sizes: (f64, f64),
    accuracies: (f64, f64),
) -> Vec<&'static Anchor> {
    anchors_for(summaries)
        .iter()
        .filter(|anchor| {
            (sizes.0..=sizes.1).contains(&anchor.bytes)
                && (accuracies.0..=accuracies.1).contains(&anchor.accuracy_percent)
        })
        .collect()
}

/// Share of the size axis, on its right, kept free of runs for the legend.
const LEGEND_BAND: f64 = 0.3;

/// MNIST runs more than this many points below the most accurate one fall below the accuracy
/// axis (drawn as rings on its bottom edge), so that one collapsed run does not squeeze every
/// useful run into a thin band at the top. Language models, whose per-character accuracies
/// spread wider, get no window.
const ACCURACY_WINDOW_POINTS: f64 = 5.0;

/// The axis ranges of the runs, sizes in bytes and accuracies in percent (never above 100),
/// with a margin: sizes hold every run; accuracies every run within [`ACCURACY_WINDOW_POINTS`] of
/// the most accurate one (every run, for language models). Anchors do not widen them.
pub fn axis_ranges(summaries: &[Summary]) -> ((f64, f64), (f64, f64)) {
    let sizes = summaries.iter().map(|summary| summary.size_bytes as f64);
    let best = summaries
        .iter()
        .map(|summary| 100.0 * summary.test_accuracy)
        .fold(f64::NEG_INFINITY, f64::max);
    let window = if summaries.iter().any(|summary| summary.language_model) {
        f64::INFINITY
    } else {
        ACCURACY_WINDOW_POINTS
    };
    let accuracies = summaries
        .iter()
        .map(|summary| 100.0 * summary.test_accuracy)
        .filter(|&accuracy| accuracy >= best - window);
    let (smallest, largest) = sizes.fold((f64::INFINITY, 0.0f64), |(low, high), size| {
        (low.min(size), high.max(size))
    });
    let (lowest, highest) = accuracies.fold((f64::INFINITY, 0.0f64), |(low, high), accuracy| {
        (low.min(accuracy), high.max(accuracy))
    });
    (
        (smallest / 1.5, largest * 1.5),
        (lowest - 0.2, (highest + 0.2).min(100.0)),
    )
}

/// Indices of the runs on the Pareto front of accuracy against size: each more accurate than
/// every run no larger than it. Sorted by size. The front is chosen by *validation* accuracy
/// (what is drawn is the test figure): no choice of ours looks at the test split.
pub fn pareto_front(summaries: &[&Summary]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..summaries.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (summaries[a], summaries[b]);
        a.size_bytes
            .cmp(&b.size_bytes)
            .then(b.validation_accuracy.total_cmp(&a.validation_accuracy))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for index in order {
        let accuracy = summaries[index].validation_accuracy;
        if accuracy > best {
            best = accuracy;
            front.push(index);
        }
    }
    front
}

/// An axis label for a size: `18 kB`, `350 kB`, or bytes below a kilobyte.
fn kilobytes(bytes: f64) -> String {
    if bytes >= 1000.0 {
        format!("{:.0} kB", bytes / 1000.0)
    } else {
        format!("{bytes:.0} B")
    }
}

fn draw(summaries: &[Summary], title: &str, root: &Canvas) -> Drawn {
    let ((smallest, largest), (lowest, highest)) = axis_ranges(summaries);
    let anchors = anchors_within(summaries, (smallest, largest), (lowest, highest));
    // Runs below the accuracy axis (or without a figure) sit on its bottom edge as rings; the
    // axis title counts them.
    let on_axis = |accuracy: f64| accuracy >= lowest;
    let edge = lowest + 0.01 * (highest - lowest);
    let below = summaries
        .iter()
        .filter(|summary| !on_axis(100.0 * summary.test_accuracy))
        .count();
    let size_title = title_with_runs_below(
        "model size (bytes, log scale)",
        below,
        lowest,
        "drawn as rings on the bottom edge",
    );
    let (left, right) = (smallest.log10(), largest.log10());
    let band_end = left + (right - left) / (1.0 - LEGEND_BAND);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        // Sizes are drawn at log10(bytes) on a plain axis, so the labels can be round numbers of
        // kilobytes wherever they fall.
        .build_cartesian_2d(left..band_end, lowest..highest)?;
    let accuracy_title = if summaries.iter().any(|summary| summary.language_model) {
        "test accuracy per next character (%)".to_string()
    } else if !anchors_for(summaries).is_empty() {
        "MNIST test accuracy (%)".to_string()
    } else {
        match summaries
            .first()
            .and_then(|summary| summary.dataset.as_deref())
        {
            Some(dataset) => format!("test accuracy (%), {dataset} data"),
            None => "test accuracy (%)".to_string(),
        }
    };
    chart
        .configure_mesh()
        .x_labels(12)
        .x_desc(size_title)
        .y_desc(accuracy_title)
        .x_label_formatter(&|log_bytes| kilobytes(10f64.powf(*log_bytes)))
        .y_label_formatter(&|accuracy| format!("{accuracy:.2}"))
        .label_style((FONT, 14))
        .draw()?;
    for mode in Mode::ALL.map(Mode::name) {
        let colour = mode_colour(mode);
        let points: Vec<(f64, f64)> = summaries
            .iter()
            .filter(|summary| summary.mode == mode)
            .map(|summary| {
                let bytes = summary.size_bytes as f64;
                (bytes.log10(), 100.0 * summary.test_accuracy)
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|point| on_axis(point.1))
                    .map(|&point| Circle::new(point, 6, colour.filled())),
            )?
            .label(mode)
            .legend(move |(x, y)| Circle::new((x + 8, y), 6, colour.filled()));
        chart.draw_series(
            points
                .iter()
                .filter(|point| !on_axis(point.1))
                .map(|&(size, _)| Circle::new((size, edge), 6, colour.stroke_width(2))),
        )?;
    }
    // The Pareto front, joined as a staircase whose last level runs on to the largest size.
    let point = |s: &Summary| ((s.size_bytes as f64).log10(), 100.0 * s.test_accuracy);
    let mut front: Vec<(f64, f64)> = Vec::new();
    for index in pareto_front(&summaries.iter().collect::<Vec<_>>()) {
        let (size, accuracy) = point(&summaries[index]);
        if let Some(&(_, best)) = front.last() {
            front.push((size, best));
        }
        front.push((size, accuracy));
    }
    let largest = summaries
        .iter()
        .map(point)
        .map(|(size, _)| size)
        .fold(f64::NEG_INFINITY, f64::max);
    if let Some(&(_, best)) = front.last() {
        front.push((largest, best));
    }
    if front.len() > 2 {
        let green = RGBColor(44, 160, 44);
        chart
            .draw_series(LineSeries::new(front, green.stroke_width(2)))?
            .label("Pareto front")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], green.stroke_width(2))
            });
    }
    if !anchors.is_empty() {
        chart
            .draw_series(anchors.iter().map(|anchor| {
                EmptyElement::at((anchor.bytes.log10(), anchor.accuracy_percent))
                    + TriangleMarker::new((0, 0), 8, BLACK.filled())
                    + Text::new(
                        format!(
                            "{} ({:.0} B, {:.2}%)",
                            anchor.label, anchor.bytes, anchor.accuracy_percent
                        ),
                        (10, -6),
                        (FONT, 14),
                    )
            }))?
            .label("published anchors")
            .legend(|(x, y)| TriangleMarker::new((x + 8, y), 8, BLACK.filled()));
    }
    // In the band right of the largest run: no point lies under it.
    draw_legend_at(&mut chart, 14, SeriesLabelPosition::UpperRight)
}

/// An axis title that counts the runs below the bottom of the other axis, `bottom` (percent),
/// and says how they are shown: `title; 3 runs below 95.5%, how`.
pub(super) fn title_with_runs_below(title: &str, count: usize, bottom: f64, how: &str) -> String {
    match count {
        0 => title.to_string(),
        1 => format!("{title}; 1 run below {bottom:.1}%, {how}"),
        _ => format!("{title}; {count} runs below {bottom:.1}%, {how}"),
    }
}

/// A dashed horizontal line at `level` from step 0 to `steps`: a level that is not a curve (a
/// baseline's final figure, a budget's threshold).
pub(super) fn dashed_level(
    level: f64,
    steps: f64,
    style: ShapeStyle,
) -> DashedLineSeries<std::array::IntoIter<(f64, f64), 2>, i32> {
    DashedLineSeries::new([(0.0, level), (steps, level)], 8, 6, style)
}

/// The legend sample of a [`dashed_level`].
pub(super) fn dashed_sample(
    (x, y): (i32, i32),
    style: ShapeStyle,
) -> DashedPathElement<std::array::IntoIter<(i32, i32), 2>, i32> {
    DashedPathElement::new([(x, y), (x + 20, y)], 5, 3, style)
}

/// The legend of a chart's labelled series, in the lower right corner.
pub(super) fn draw_legend<'a, CT>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    font_size: u32,
) -> Drawn
where
    CT: plotters::coord::CoordTranslate,
{
    draw_legend_at(chart, font_size, SeriesLabelPosition::LowerRight)
}

/// The legend of a chart's labelled series, at `position`.
fn draw_legend_at<'a, CT>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    font_size: u32,
    position: SeriesLabelPosition,
) -> Drawn
where
    CT: plotters::coord::CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, font_size))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::controller::Events;

    fn summary(mode: &str, size_bytes: i64, test_accuracy: f64) -> Summary {
        Summary {
            mode: mode.into(),
            seed: 0,
            steps: 10,
            test_accuracy,
            test_loss: 0.1,
            train_accuracy: test_accuracy,
            train_test_gap: 0.0,
            validation_accuracy: test_accuracy,
            train_loss: 0.1,
            validation_loss: 0.1,
            language_model: false,
            dataset: None,
            gamma: None,
            target_bytes: None,
            target_measure: None,
            shortfall_bytes: None,
            flash_bytes: None,
            size_bytes,
            size_kind: "payload-estimate".into(),
            float_bytes: 350_592,
            ratio_to_float: size_bytes as f64 / 350_592.0,
            bits_per_weight: 1.0,
            channels_alive: vec![[1, 1]],
            wall_seconds: 1.0,
            rollbacks: 0,
            controller_events: Events::default(),
            safety: None,
        }
    }

    #[test]
    fn the_front_is_chosen_by_validation_accuracy() {
        let mut lucky = summary("safe", 9_000, 0.995);
        lucky.validation_accuracy = 0.980;
        let runs = [
            summary("unsafe", 6_000, 0.990),
            lucky,
            summary("distill", 12_000, 0.992),
        ];
        let front = pareto_front(&runs.iter().collect::<Vec<_>>());
        assert_eq!(
            front,
            vec![0, 2],
            "the best test figure is off the front: its validation figure is the worst"
        );
    }

    #[test]
    fn axes_span_the_runs_and_anchors_are_for_mnist_only() {
        let runs = [
            summary("unsafe", 6_000, 0.99),
            summary("safe", 300_000, 0.995),
        ];
        let ((smallest, largest), (lowest, highest)) = axis_ranges(&runs);
        assert_eq!((smallest, largest), (4_000.0, 450_000.0));
        assert!(
            (lowest - 98.8).abs() < 1e-9,
            "the lowest run, not tinygrad's 98.20%: {lowest}"
        );
        assert!((highest - 99.7).abs() < 1e-9);
        assert_eq!(
            anchors_for(&runs).len(),
            2,
            "summaries without a data set are MNIST"
        );
        let mut fashion = runs.clone();
        for run in &mut fashion {
            run.dataset = Some("idx".into());
        }
        assert!(
            anchors_for(&fashion).is_empty(),
            "no MNIST anchors on other data"
        );
        let perfect = [summary("safe", 6_000, 1.0)];
        assert_eq!(axis_ranges(&perfect).1 .1, 100.0, "never above 100%");
        let collapsed = [
            summary("unsafe", 6_000, 0.099),
            summary("safe", 300_000, 0.995),
        ];
        let ((smallest, _), (lowest, _)) = axis_ranges(&collapsed);
        assert_eq!(
            smallest, 4_000.0,
            "a collapsed run still sets the size axis"
        );
        assert!(
            (lowest - 99.3).abs() < 1e-9,
            "9.9% is more than 5 points below 99.5%: off the accuracy axis ({lowest})"
        );
        let mut language_models = [summary("unsafe", 6_000, 0.30), summary("safe", 9_000, 0.55)];
        for run in &mut language_models {
            run.language_model = true;
        }
        let (_, (lowest, _)) = axis_ranges(&language_models);
        assert!(
            (lowest - 29.8).abs() < 1e-9,
            "no window for language models: {lowest}"
        );
    }

    #[test]
    fn plot_is_a_png_with_each_mode_in_its_colour() {
        let runs = [
            summary("baseline", 350_592, 0.9956),
            summary("unsafe", 6_364, 0.9906),
            summary("safe", 9_000, 0.9934),
        ];
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("plot.png");
        accuracy_against_size(&runs, "test", &path).unwrap();
        let image = image::open(&path).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (WIDTH, HEIGHT));
        let count = |colour: RGBColor| {
            image
                .pixels()
                .filter(|pixel| pixel.0 == [colour.0, colour.1, colour.2])
                .count()
        };
        for mode in Mode::ALL.map(Mode::name) {
            // A filled circle of radius 6 in the chart and one in the legend.
            assert!(count(mode_colour(mode)) > 2 * 80, "{mode} is drawn");
        }
        let only_safe = folder.path().join("safe.png");
        accuracy_against_size(&runs[2..], "test", &only_safe).unwrap();
        let image = image::open(&only_safe).unwrap().to_rgb8();
        assert!(
            !image.pixels().any(|pixel| pixel.0 == [214, 39, 40]),
            "no unsafe colour without unsafe runs"
        );
    }
}
