//! `flagship combine | filter | textproc | split`: the data stages, each over the config's
//! storage locations (overridable per run), on the chosen engine, with a progress bar and
//! the stage's counts at the end.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use flagship_core::config::{Area, Config};
use flagship_store::frames::HourDone;
use flagship_store::storage::{Location, Store};
use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::Engine;

#[derive(clap::Args, Clone)]
pub struct Common {
    /// Where the plans run: `local`, `ballista://HOST:PORT`, or `ballista://standalone`.
    #[arg(long, default_value = "local")]
    pub engine: Engine,
    /// Read from here instead of the config's location for this stage's input.
    #[arg(long)]
    pub input: Option<String>,
    /// Write here instead of the config's location for this stage's output.
    #[arg(long)]
    pub output: Option<String>,
}

#[derive(clap::Args)]
pub struct CombineArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only objects under this key prefix of the raw location (e.g. `2022/01/09`).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Remove the outputs of hours whose raw objects are all gone (kept by default: raw data
    /// may expire by design).
    #[arg(long)]
    pub prune_vanished: bool,
}

#[derive(clap::Subcommand)]
pub enum SplitCmd {
    /// Write the candidate posts that have no label yet as CSV (id, created_at, text).
    ExportForLabeling {
        #[command(flatten)]
        common: Common,
        /// Labels file already delivered (CSV or Parquet `id,label`); its posts are left out.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// The CSV to write (relative to the output location).
        #[arg(long, default_value = "to-label.csv")]
        file: String,
    },
    /// Append the candidates newer than the last split post as monitoring batches of
    /// `monitor.batch_size` (`batch-0002.parquet`, …; labels joined where present).
    Append {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        labels: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct SplitArgs {
    #[command(subcommand)]
    pub cmd: Option<SplitCmd>,
    #[command(flatten)]
    pub common: Common,
    /// Labels file (CSV or Parquet with `id,label`); default: the config's `split.labels`.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Only candidates created up to this time (RFC 3339) form the initial split; later ones
    /// become monitoring batches (`split append`).
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// The location given on the command line, else the config's for `area`.
fn location(config: &Config, over: &Option<String>, area: Area) -> Result<Location> {
    Ok(match over {
        Some(s) => Location::parse(s, &std::env::current_dir()?)?,
        None => config.location(area)?,
    })
}

fn store(config: &Config, over: &Option<String>, area: Area) -> Result<Store> {
    Ok(Store::open(
        &location(config, over, area)?,
        &config.storage.s3,
    )?)
}

/// A stage's input: like [`store`], but a local folder that does not exist is an error (a
/// typo must not read as "0 hours, nothing to do"; opening would create it).
fn input(config: &Config, over: &Option<String>, area: Area, stage: &str) -> Result<Store> {
    let loc = location(config, over, area)?;
    if let Location::Local(p) = &loc
        && !p.is_dir()
    {
        bail!("{stage}: the input {} does not exist", p.display());
    }
    Ok(Store::open(&loc, &config.storage.s3)?)
}

fn bar(stage: &str) -> ProgressBar {
    let b = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} hours {elapsed}")
            .expect("template"),
    );
    b.set_message(stage.to_owned());
    b
}

fn tick(b: &ProgressBar) -> impl Fn(&HourDone, usize, usize) + Sync + '_ {
    move |_, i, n| {
        b.set_length(n as u64);
        b.set_position(i as u64);
    }
}

/// combine and split join in-memory rows (parsed records, labels) that a cluster cannot
/// read; they run locally whatever `--engine` says, and say so.
fn note_local(stage: &str, engine: &Engine) {
    if *engine != Engine::Local {
        println!(
            "{stage}: runs in this process (its plan joins in-memory rows); --engine {engine} applies to filter and textproc"
        );
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Runtime::new()?)
}

pub fn combine(config: &Config, a: CombineArgs) -> Result<flagship_combine::Report> {
    runtime()?.block_on(async {
        let raw = input(config, &a.common.input, Area::Raw, "combine")?;
        let out = store(config, &a.common.output, Area::Combined)?;
        let quarantine = store(config, &None, Area::Quarantine)?;
        // Parsing (and its quarantine) runs here line by line; the dedup plan runs over the
        // parsed rows in this process, so a cluster has nothing to do for combine.
        note_local("combine", &a.common.engine);
        let ctx = flagship_store::frames::local_session();
        let b = bar("combine");
        let mut report =
            flagship_combine::run(&ctx, &raw, &a.prefix, &out, &quarantine, &|_, i, n| {
                b.set_length(n as u64);
                b.set_position(i as u64);
            })
            .await
            .with_context(|| format!("combine {} → {}", raw.location(), out.location()))?;
        if a.prune_vanished {
            flagship_combine::remove_vanished(&out, &mut report).await?;
        }
        b.finish_and_clear();
        println!("combine: {report}");
        if report.totals.quarantined > 0 {
            println!(
                "combine: malformed lines are in {}",
                quarantine.location().join(flagship_combine::STAGE)
            );
        }
        for k in report.outside_layout.iter().take(5) {
            tracing::warn!("not in the YYYY/MM/DD/HH layout, not combined: {k}");
        }
        Ok(report)
    })
}

pub fn filter(config: &Config, a: Common) -> Result<std::collections::BTreeMap<String, u64>> {
    runtime()?.block_on(async {
        let input = input(config, &a.input, Area::Combined, "filter")?;
        let out = store(config, &a.output, Area::Filtered)?;
        let ctx = a.engine.session().await?;
        let b = bar("filter");
        let hours = flagship_filter::run(
            &ctx,
            &config.mission.filter,
            &input,
            &out,
            a.engine.concurrency(),
            &tick(&b),
        )
        .await
        .with_context(|| format!("filter {} → {}", input.location(), out.location()))?;
        b.finish_and_clear();
        let totals = flagship_filter::totals(&hours);
        let all: u64 = totals
            .iter()
            .filter(|(k, _)| !k.starts_with("unwanted category"))
            .map(|(_, v)| v)
            .sum();
        println!(
            "filter: {}, {all} tweets → {} kept (profile `{}`)",
            flagship_store::frames::summary(&hours),
            totals.get(flagship_filter::KEPT).copied().unwrap_or(0),
            config.mission.name
        );
        for (reason, n) in &totals {
            if reason != flagship_filter::KEPT {
                println!("  {n:>8}  {reason}");
            }
        }
        Ok(totals)
    })
}

pub fn textproc(config: &Config, a: Common) -> Result<()> {
    runtime()?.block_on(async {
        let input = input(config, &a.input, Area::Filtered, "textproc")?;
        let out = store(config, &a.output, Area::Processed)?;
        let ctx = a.engine.session().await?;
        let b = bar("textproc");
        let hours = flagship_textproc::run(&ctx, &input, &out, a.engine.concurrency(), &tick(&b))
            .await
            .with_context(|| format!("textproc {} → {}", input.location(), out.location()))?;
        b.finish_and_clear();
        let sum = |k: &str| {
            hours
                .iter()
                .map(|h| h.counts.get(k).copied().unwrap_or(0))
                .sum::<u64>()
        };
        println!(
            "textproc: {}, {} rows, {} with nothing left after cleaning",
            flagship_store::frames::summary(&hours),
            sum("rows"),
            sum("empty_text_model")
        );
        Ok(())
    })
}

/// The triage desk's decisions laid over the labels file's (`split.desk_labels`).
pub fn desk_labels(config: &Config, labels: &mut flagship_split::Labels) -> Result<()> {
    let db = config.desk_database();
    let desk = flagship_desk::DeskStore::open_existing(&db)
        .context("split.desk_labels is on, but the desk database is missing")?;
    let decided = desk.labels(config.split.desk_bulk_labels)?;
    let n = decided.len();
    let o = labels.overlay(decided.into_iter().map(|(id, l)| (id, l as i8)));
    println!(
        "split: {n} labels from the desk's decisions ({}): {} new, {} replacing the file's label ({} of them changing need_support), {} agreeing with it",
        db.display(),
        o.added,
        o.replaced,
        o.retargeted,
        o.agreed
    );
    Ok(())
}

fn labels_path(config: &Config, given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        config
            .split
            .labels
            .as_ref()
            .map(|l| config.base_dir.join(l))
    })
}

/// Split's input and output stores, its labels (none given: no labels yet) and a local
/// session (split joins in-memory labels, so it runs here whatever `--engine` says).
fn split_setup(
    config: &Config,
    common: &Common,
    labels: Option<PathBuf>,
) -> Result<(
    Store,
    Store,
    flagship_split::Labels,
    datafusion::prelude::SessionContext,
)> {
    let input = input(config, &common.input, Area::Processed, "split")?;
    let out = store(config, &common.output, Area::Splits)?;
    let mut labels = match labels_path(config, labels) {
        Some(p) => flagship_split::Labels::read(&p)?,
        None => flagship_split::Labels::default(),
    };
    if config.split.desk_labels {
        desk_labels(config, &mut labels)?;
    }
    note_local("split", &common.engine);
    Ok((input, out, labels, flagship_store::frames::local_session()))
}

pub fn split(config: &Config, a: SplitArgs) -> Result<()> {
    runtime()?.block_on(async {
        if let Some(SplitCmd::ExportForLabeling { common, labels, file }) = a.cmd {
            let (input, out, labels, ctx) = split_setup(config, &common, labels)?;
            let n = flagship_split::export_for_labeling(&ctx, &input, &labels, &out, &file).await?;
            println!("split: {n} unlabeled candidate tweets written to {}", out.location().join(&file));
            return Ok(());
        }
        if let Some(SplitCmd::Append { common, labels }) = a.cmd {
            let (input, out, labels, ctx) = split_setup(config, &common, labels)?;
            let r = flagship_split::append(&ctx, &input, &labels, config.monitor.batch_size, &out).await?;
            for b in &r.batches {
                println!("split: batch {} → {} ({} rows, {} labelled)", b.batch, out.location().join(&b.file), b.rows, b.labelled);
            }
            println!("split: {} new batches; {} newer tweets wait for a full batch of {}", r.batches.len(), r.pending, config.monitor.batch_size);
            return Ok(());
        }
        let path = labels_path(config, a.labels);
        if path.is_none() && !config.split.desk_labels {
            bail!(
                "no labels: pass --labels FILE, set split.labels in the config, or \
                 split.desk_labels = true (`flagship split export-for-labeling` writes what needs labels)"
            );
        }
        let (input, out, labels, ctx) = split_setup(config, &a.common, path)?;
        let r = flagship_split::run(
            &ctx,
            &input,
            &labels,
            config.split.test_size,
            config.split.val_size,
            a.until,
            &out,
        )
        .await?;
        let c = &r.candidates;
        println!(
            "split: {} processed rows → {} candidates ({} retweets, {} quotes, {} without time, {} empty after cleaning, {} repeated ids, {} repeated texts set aside); {} labels",
            c.processed, c.candidates, c.retweets, c.quotes, c.no_time, c.empty_text, c.duplicate_ids, c.duplicate_texts, r.labels
        );
        if r.labels_unmatched > 0 {
            tracing::warn!(
                "{} of {} labels are for tweets that are not candidates (not used)",
                r.labels_unmatched,
                r.labels
            );
        }
        for p in &r.parts {
            println!(
                "  {:<5} {:>6} rows, {:>5.1}% need support, {} … {}  → {}",
                p.part.name(),
                p.rows,
                100.0 * p.need_support as f64 / p.rows.max(1) as f64,
                p.first.map_or("-".into(), |t| t.to_rfc3339()),
                p.last.map_or("-".into(), |t| t.to_rfc3339()),
                out.location().join(&p.file)
            );
        }
        Ok(())
    })
}
