//! `flagship-bench textproc corpus|run`: flagship's side of `cargo xtask bench textproc`
//! (the PySpark side is `scripts/bench_textproc.py`, same steps, same files).
//!
//! `corpus` builds N tweets from the real payloads in `fixtures/twitter-v2` (ids and times
//! varied, `per_hour` tweets an hour) as filtered-schema hour files; `run` times textproc over
//! them on the local engine and prints one JSON line with the wall time and this process's
//! peak RSS. Two processes, so the corpus never counts toward the measured memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::array::{
    ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray,
};
use chrono::{TimeZone, Utc};
use flagship_core::layout::{hour_file, hour_floor};
use flagship_core::schema::Stage;
use flagship_store::storage::{Location, Store};

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Write the corpus (filtered-schema hour files) to DIR.
    Corpus {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        tweets: usize,
        #[arg(long, default_value_t = 5_000)]
        per_hour: usize,
        /// Folder of real v2 payload files the tweets are drawn from.
        #[arg(long, default_value = "fixtures/twitter-v2")]
        payloads: PathBuf,
    },
    /// Time textproc from the corpus in DIR into OUT (emptied first).
    Run {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

/// This process's peak resident set size in MiB (`VmHWM`), where Linux reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let kib = crate::desk_load::proc_kib(std::process::id(), "VmHWM:")?;
    Some(kib as f64 / 1024.0)
}

pub fn run(cmd: Cmd) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    match cmd {
        Cmd::Corpus {
            dir,
            tweets,
            per_hour,
            payloads,
        } => rt.block_on(corpus(dir, tweets, per_hour.max(1), payloads)),
        Cmd::Run { dir, out } => rt.block_on(async {
            if out.exists() {
                std::fs::remove_dir_all(&out)?;
            }
            let input = Store::open(&Location::Local(dir.clone()), &Default::default())?;
            let output = Store::open(&Location::Local(out), &Default::default())?;
            let ctx = flagship_store::frames::local_session();
            let start = Instant::now();
            let hours = flagship_textproc::run(
                &ctx,
                &input,
                &output,
                flagship_store::frames::local_concurrency(),
                &|_, _, _| {},
            )
            .await?;
            let secs = start.elapsed().as_secs_f64();
            let rows: u64 = hours.iter().map(|h| h.counts["rows"]).sum();
            println!(
                "{}",
                serde_json::json!({
                    "engine": "flagship (DataFusion 55)",
                    "tweets": rows,
                    "hours": hours.len(),
                    "seconds": secs,
                    "tweets_per_second": rows as f64 / secs,
                    "peak_rss_mib": peak_rss_mib(),
                })
            );
            Ok(())
        }),
    }
}

async fn corpus(dir: PathBuf, n: usize, per_hour: usize, payloads: PathBuf) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&payloads)
        .with_context(|| format!("payloads {}", payloads.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut report = flagship_platforms::jsonl::ReadReport::default();
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        report.read(&f.display().to_string(), &bytes, None);
    }
    let base = report.posts;
    anyhow::ensure!(!base.is_empty(), "no tweets in {}", payloads.display());
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let store = Store::open(&Location::Local(dir.clone()), &Default::default())?;
    let t0 = Utc.with_ymd_and_hms(2021, 12, 24, 0, 0, 0).unwrap();
    let step_ms = 3_600_000 / per_hour as i64;
    let schema = Stage::Filtered.schema();
    let mut written = 0;
    while written < n {
        let count = per_hour.min(n - written);
        let tweets: Vec<flagship_core::Post> = (written..written + count)
            .map(|i| {
                let mut t = base[i % base.len()].clone();
                t.id = (1_500_000_000_000_000_000 + i as u64).to_string();
                t.created_at = Some(t0 + chrono::Duration::milliseconds(step_ms * i as i64));
                t
            })
            .collect();
        let hour = hour_floor(tweets[0].created_at.expect("set above"));
        let raw = flagship_store::records::to_batch(&tweets)?;
        let mut cols = raw.columns().to_vec();
        cols.push(Arc::new(StringArray::from(vec!["bench"; count])));
        cols.push(Arc::new(
            TimestampMillisecondArray::from(vec![hour.timestamp_millis(); count])
                .with_timezone("UTC"),
        ));
        let mut terms = ListBuilder::new(StringBuilder::new());
        for _ in 0..count {
            terms.append(true);
        }
        cols.push(Arc::new(terms.finish()));
        let batch = RecordBatch::try_new(schema.clone(), cols)?;
        store
            .write_parquet(&hour_file(hour), &schema, &[batch])
            .await?;
        written += count;
    }
    println!(
        "{}",
        serde_json::json!({"corpus": dir, "tweets": n, "hours": n.div_ceil(per_hour), "from_real_tweets": base.len()})
    );
    Ok(())
}
