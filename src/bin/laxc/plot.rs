//! `laxc plot`: one metric of several runs on one chart, as PNG and SVG.

use crate::common::{to_json_text, Format, IO_ERROR};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PlotArgs {
    /// Run folders written by `laxc train` (each has a metrics.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// What to draw.
    #[arg(long, default_value = "val_loss", value_parser = laxc::plot::METRICS)]
    metric: String,
    /// A legend label per run, in order (default: the folder names).
    #[arg(long)]
    label: Vec<String>,
    /// Writes <OUT>.png and <OUT>.svg.
    #[arg(
        short = 'o',
        long = "out",
        visible_alias = "output",
        default_value = "laxc-plot"
    )]
    output: PathBuf,
    /// The chart's title (default: the metric).
    #[arg(long)]
    title: Option<String>,
    /// Logarithmic y axis.
    #[arg(long)]
    log_y: bool,
    /// Overwrite existing output files.
    #[arg(long)]
    force: bool,
    /// `json`: the files written, as a JSON list.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(a: PlotArgs) -> ExitCode {
    if !a.label.is_empty() && a.label.len() != a.runs.len() {
        eprintln!(
            "error: {} labels for {} runs: give one --label per run, in order, or none",
            a.label.len(),
            a.runs.len()
        );
        return ExitCode::from(IO_ERROR);
    }
    let files = laxc::plot::output_files(&a.output);
    if !a.force {
        if let Some(f) = files.iter().find(|f| f.exists()) {
            eprintln!(
                "error: {} exists; pass --force to replace it, or choose another --out",
                f.display()
            );
            return ExitCode::from(IO_ERROR);
        }
    }
    let mut curves = Vec::with_capacity(a.runs.len());
    for (i, run) in a.runs.iter().enumerate() {
        match laxc::plot::read_curve(run, &a.metric, a.label.get(i).map(String::as_str)) {
            Ok(c) => curves.push(c),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(IO_ERROR);
            }
        }
    }
    if a.log_y {
        for w in laxc::plot::keep_positive(&mut curves, &a.metric) {
            eprintln!("warning: {w}");
        }
    }
    for w in laxc::plot::sparse_warnings(&curves, &a.metric) {
        eprintln!("warning: {w}");
    }
    let title = a.title.unwrap_or_else(|| a.metric.replace('_', " "));
    match laxc::plot::plot(&curves, &a.metric, &title, a.log_y, &a.output, (960, 600)) {
        Ok(written) => {
            match a.format {
                Format::Text => written
                    .iter()
                    .for_each(|f| println!("wrote {}", f.display())),
                Format::Json => print!(
                    "{}",
                    to_json_text(&serde_json::json!({ "written": written }))
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(IO_ERROR)
        }
    }
}
