//! `sgsc report`: a folder of runs as an HTML and Markdown report with PNG figures.

use crate::report::page::write_report;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `sgsc report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Folder of runs (each a folder with a summary.json, also one level further down).
    runs_dir: PathBuf,
    /// Where to write report.html, report.md and the figures.
    #[arg(long, default_value = "report")]
    out: PathBuf,
}

/// Runs `sgsc report`.
pub fn run(args: ReportArgs) -> Result<()> {
    let files = write_report(&args.runs_dir, &args.out)?;
    println!(
        "{} runs: {} and {} ({} figures)",
        files.runs,
        files.html.display(),
        files.markdown.display(),
        files.figures.len()
    );
    Ok(())
}
