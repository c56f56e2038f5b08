//! `laxc plot`: curves of several training runs on one chart, written as PNG and SVG.
//!
//! A run folder's `metrics.jsonl` (written by `laxc train`) has one record per log step
//! (`loss`, `lr`, ...) and one per validation (`val_loss`, `val_perplexity` or
//! `val_accuracy`). The chart draws one metric of every run against the step.

use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// The metrics a chart can show, by their name in metrics.jsonl.
pub const METRICS: [&str; 5] = ["val_loss", "val_perplexity", "val_accuracy", "loss", "lr"];

/// One run's curve of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Reads `metric` from `run/metrics.jsonl`, in step order.
pub fn read_curve(run: &Path, metric: &str, label: Option<&str>) -> Result<Curve, String> {
    let file = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "cannot read {}: {e} (is {} a run folder of `laxc train`?)",
            file.display(),
            run.display()
        )
    })?;
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: not a JSON record: {e}", file.display(), i + 1))?;
        if let (Some(step), Some(y)) = (
            v.get("step").and_then(|s| s.as_f64()),
            v.get(metric).and_then(|m| m.as_f64()),
        ) {
            points.push((step, y));
        }
    }
    if points.is_empty() {
        return Err(format!(
            "{} has no `{metric}` records (metrics a run can have: {})",
            file.display(),
            METRICS.join(", ")
        ));
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let label = label.map(str::to_string).unwrap_or_else(|| {
        run.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| run.display().to_string())
    });
    Ok(Curve { label, points })
}

/// The axis title of a metric.
fn metric_title(metric: &str) -> &str {
    match metric {
        "val_loss" => "validation loss (nats per token)",
        "val_perplexity" => "validation perplexity",
        "val_accuracy" => "validation accuracy",
        "loss" => "training loss (nats per token)",
        "lr" => "learning rate",
        other => other,
    }
}

/// Text needs a font; the chart embeds DejaVu Sans (the `dejavu` crate) so that it renders the
/// same on a machine with no fonts installed.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font compiled into the binary.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// The y range with a 5 % margin, widened when every value is equal.
fn y_range(curves: &[Curve]) -> (f64, f64) {
    let ys = curves.iter().flat_map(|c| c.points.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
    (lo - pad, hi + pad)
}

/// A tick label with three significant digits.
fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

/// Draws the curves on one backend. A logarithmic axis is drawn as a linear axis over ln(y)
/// with the ticks labelled by their values: plotters' own log axis labels only powers of ten,
/// which leaves a 5-to-15 perplexity chart with a single label.
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    curves: &[Curve],
    metric: &str,
    title: &str,
    log_y: bool,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("cannot draw the chart: {e}");
    root.fill(&WHITE).map_err(err)?;
    let curves: Vec<Curve> = if log_y {
        curves
            .iter()
            .map(|c| Curve {
                label: c.label.clone(),
                points: c.points.iter().map(|&(x, y)| (x, y.ln())).collect(),
            })
            .collect()
    } else {
        curves.to_vec()
    };
    let x_max = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    // A margin right of the last step, so that its dot is drawn whole, not cut at the edge.
    let x_max = x_max + (0.03 * x_max).max(0.5);
    let (y_lo, y_hi) = y_range(&curves);
    let y_label = |v: &f64| tick(if log_y { v.exp() } else { *v });
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, y_lo..y_hi)
        .map_err(err)?;
    let y_desc = if log_y {
        format!("{} (log scale)", metric_title(metric))
    } else {
        metric_title(metric).to_string()
    };
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .y_labels(12)
        .y_label_formatter(&y_label)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for (i, c) in curves.iter().enumerate() {
        let color = palette(i);
        chart
            .draw_series(LineSeries::new(
                c.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(c.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        if c.points.len() <= 40 {
            chart
                .draw_series(c.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Matplotlib's "tab10": ten colours that stay apart on white and for most colour vision.
fn palette(i: usize) -> RGBAColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = TAB10[i % TAB10.len()];
    RGBColor(r, g, b).to_rgba()
}

/// The two files a chart is written to: `<prefix>.png` and `<prefix>.svg`.
pub fn output_files(prefix: &Path) -> [PathBuf; 2] {
    let with = |ext: &str| {
        let mut s = prefix.as_os_str().to_owned();
        s.push(".");
        s.push(ext);
        PathBuf::from(s)
    };
    [with("png"), with("svg")]
}

/// Refuses values a chart cannot place: not finite, or (on a log axis) not above 0, naming the
/// run and the step.
fn drawable(curves: &[Curve], metric: &str, log_y: bool) -> Result<(), String> {
    if curves.iter().all(|c| c.points.is_empty()) {
        return Err(format!("no run has a {metric} value the chart can show"));
    }
    for c in curves {
        for &(step, y) in &c.points {
            if !y.is_finite() {
                return Err(format!("{}: {metric} at step {step} is {y}", c.label));
            }
            if log_y && y <= 0.0 {
                return Err(format!(
                    "{}: {metric} at step {step} is {y}, which a log axis cannot show; drop \
                     --log-y",
                    c.label
                ));
            }
        }
    }
    Ok(())
}

/// A log axis cannot place 0 or less (a learning rate that decays to 0, a loss that reaches
/// it): those points are left out of each curve, with a warning for each curve that had some.
pub fn keep_positive(curves: &mut [Curve], metric: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    for c in curves.iter_mut() {
        let before = c.points.len();
        let first = c.points.iter().find(|(_, y)| *y <= 0.0).map(|p| p.0);
        c.points.retain(|(_, y)| *y > 0.0 || y.is_nan());
        if let Some(step) = first {
            let n = before - c.points.len();
            warnings.push(format!(
                "{}: {n} point{} of {metric} at or below 0 (the first at step {step}) left out \
                 of the log axis",
                c.label,
                if n == 1 { "" } else { "s" }
            ));
        }
    }
    warnings
}

/// A warning for each curve with fewer than three points, which a chart shows as lone dots
/// rather than as a curve (a run that validated once or twice).
pub fn sparse_warnings(curves: &[Curve], metric: &str) -> Vec<String> {
    curves
        .iter()
        .filter(|c| c.points.len() < 3)
        .map(|c| {
            let n = c.points.len();
            let points = if n == 1 { "point" } else { "points" };
            format!(
                "{} has only {n} {points} of {metric}: drawn as dots, not as a curve",
                c.label
            )
        })
        .collect()
}

/// Writes the chart as PNG and SVG (`width` × `height` pixels).
pub fn plot(
    curves: &[Curve],
    metric: &str,
    title: &str,
    log_y: bool,
    prefix: &Path,
    size: (u32, u32),
) -> Result<[PathBuf; 2], String> {
    drawable(curves, metric, log_y)?;
    register_font();
    let [png, svg] = output_files(prefix);
    draw(
        BitMapBackend::new(&png, size).into_drawing_area(),
        curves,
        metric,
        title,
        log_y,
    )?;
    draw(
        SVGBackend::new(&svg, size).into_drawing_area(),
        curves,
        metric,
        title,
        log_y,
    )?;
    Ok([png, svg])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 0 on a log axis used to send plotters into an endless loop (ln 0 = −∞).
    #[test]
    fn a_log_axis_refuses_values_at_or_below_zero() {
        let c = Curve {
            label: "run".into(),
            points: vec![(1.0, 0.5), (2.0, 0.0)],
        };
        let out = std::env::temp_dir().join(format!("laxc-plot-{}", std::process::id()));
        let e = plot(&[c], "lr", "lr", true, &out, (100, 100)).unwrap_err();
        assert!(
            e.contains("run: lr at step 2 is 0") && e.contains("--log-y"),
            "{e}"
        );
        assert!(!output_files(&out)[0].exists(), "nothing is written");
    }

    #[test]
    fn points_at_or_below_zero_are_left_out_of_a_log_axis_with_a_warning() {
        let mut curves = vec![Curve {
            label: "run".into(),
            points: vec![(1.0, 0.5), (2.0, 0.25), (3.0, 0.0), (4.0, -1.0)],
        }];
        let w = keep_positive(&mut curves, "lr");
        assert_eq!(curves[0].points, vec![(1.0, 0.5), (2.0, 0.25)]);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("2 points of lr at or below 0 (the first at step 3)"),
            "{w:?}"
        );
        let out = std::env::temp_dir().join(format!("laxc-plot-pos-{}", std::process::id()));
        let written = plot(&curves, "lr", "lr", true, &out, (200, 150)).unwrap();
        for f in written {
            assert!(std::fs::metadata(&f).unwrap().len() > 0);
            std::fs::remove_file(f).unwrap();
        }
    }

    #[test]
    fn a_flat_curve_still_gets_a_range() {
        let c = Curve {
            label: "x".into(),
            points: vec![(1.0, 2.0), (2.0, 2.0)],
        };
        let (lo, hi) = y_range(&[c]);
        assert!(lo < 2.0 && hi > 2.0);
    }

    #[test]
    fn ticks_keep_three_significant_digits() {
        assert_eq!(tick(6.1234), "6.12");
        assert_eq!(tick(12.345), "12.3");
        assert_eq!(tick(0.0012345), "0.00123");
        assert_eq!(tick(1234.5), "1234");
    }

    #[test]
    fn output_files_append_the_extensions() {
        let [p, s] = output_files(Path::new("out/loss.v2"));
        assert_eq!(p, Path::new("out/loss.v2.png"));
        assert_eq!(s, Path::new("out/loss.v2.svg"));
    }
}
