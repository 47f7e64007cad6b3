use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flagship_core::schema::Stage;
use flagship_platforms::jsonl::ReadReport;
use flagship_store::records;
use flagship_store::storage::{Location, Store};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct Args {
    /// Payload files: one stream message or search page per line.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the posts as raw-schema Parquet here (path, file:// or s3://), and malformed
    /// lines to a quarantine file beside it.
    #[arg(long)]
    pub out: Option<String>,
}

/// Reads payload files into one report, with a progress bar.
pub fn read_files(files: &[PathBuf]) -> Result<ReadReport> {
    let bar = ProgressBar::new(files.len() as u64).with_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} files").expect("template"),
    );
    bar.set_message("reading");
    let mut report = ReadReport::default();
    for f in files {
        let name = f.file_name().map_or_else(
            || f.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        report.read(&name, &bytes, None);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(report)
}

pub fn print_report(r: &ReadReport) {
    println!("{r}");
    for e in &r.api_errors {
        tracing::debug!(source = %e.source, line = e.line, "API error: {}", e.error);
    }
    for b in &r.bad_lines {
        tracing::warn!("quarantined {b}");
    }
}

/// Writes `raw.parquet` and, when any line was malformed, `quarantine.jsonl` under `out`.
pub async fn write_outputs(
    r: &ReadReport,
    out: &Location,
    s3: &flagship_store::storage::S3Options,
) -> Result<()> {
    let store = Store::open(out, s3)?;
    let batch = records::to_batch(&r.posts)?;
    store
        .write_parquet("raw.parquet", &Stage::Raw.schema(), &[batch])
        .await?;
    println!("wrote {}", out.join("raw.parquet"));
    if !r.bad_lines.is_empty() {
        store
            .put("quarantine.jsonl", r.quarantine_jsonl().into())
            .await?;
        println!(
            "wrote {} ({} lines)",
            out.join("quarantine.jsonl"),
            r.bad_lines.len()
        );
    }
    Ok(())
}

pub fn run(config: &flagship_core::Config, args: Args) -> Result<()> {
    let report = read_files(&args.files)?;
    print_report(&report);
    if let Some(out) = args.out {
        let loc = Location::parse(&out, Path::new(".")).context("--out")?;
        tokio::runtime::Runtime::new()?.block_on(write_outputs(
            &report,
            &loc,
            &config.storage.s3,
        ))?;
    }
    Ok(())
}
