//! `flagship watch`: live triage. Streams posts (the X API v2 filtered stream, Bluesky's
//! Jetstream, Mastodon timelines — several at once — or a replay),
//! keeps the ones the mission profile keeps, cleans them, classifies them with an exported
//! model and appends the flagged ones (`need_support`, with their platform and a link to the
//! post) to a JSONL file, within a second of arrival. Posts no server filtered (Bluesky, a
//! Mastodon public timeline) must match the mission's track terms first, as in ingest. Tweets are batched on the fly — up to `--max-batch` or `--max-wait` after the
//! first, whichever comes first — and each micro-batch runs the *same* DataFusion filter and
//! textproc plans as the batch stages, so a tweet is judged live exactly as it would be later.
//!
//! The stream client reconnects on X's schedule by itself; ids already seen (including those
//! in an existing output file) are never flagged twice, so a restarted watch keeps its place.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::{Array, RecordBatch, StringArray};
use chrono::Utc;
use flagship_core::Tweet;
use flagship_core::config::{Area, Config};
use flagship_ingest::IngestError;
use flagship_ingest::record::{Line, classify};
use flagship_ingest::source::SourceLine;
use flagship_store::storage::Location;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ingest_cmd::parse_duration;

#[derive(clap::Args)]
pub struct Args {
    /// Model folder (default: `<storage.models>/need-support`, what the pipeline trains).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub source: crate::ingest_cmd::SourceArgs,
    /// Flagged tweets are appended here, one JSON object per line.
    #[arg(long, default_value = "data/flagged.jsonl")]
    pub out: PathBuf,
    /// Classify at most this many tweets at once…
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// …or what arrived this long after the first waiting tweet (`200ms`, `1s`).
    #[arg(long, value_parser = parse_duration, default_value = "200ms")]
    pub max_wait: Duration,
    /// Stop after this many tweets.
    #[arg(long)]
    pub max_tweets: Option<u64>,
    /// Stop after this long (`90s`, `10m`).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// A tweet waiting for its micro-batch.
struct Arrived {
    tweet: Tweet,
    origin: String,
    at: Instant,
}

/// Counts of a watch run.
#[derive(Debug, Default, serde::Serialize)]
pub struct Totals {
    pub lines: u64,
    pub seen: u64,
    pub duplicates: u64,
    /// Posts from an unfiltered source matching no track term.
    pub unmatched: u64,
    /// Deletions and events that are no post.
    pub other_events: u64,
    pub malformed: u64,
    pub api_errors: u64,
    pub kept: u64,
    pub flagged: u64,
    pub batches: u64,
    pub reconnects: u64,
    /// Arrival → flagged line written and flushed, every classified tweet (ms).
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub seconds: f64,
}

/// Ids in an existing output file: already flagged, never flagged again.
fn flagged_ids(path: &Path) -> Result<HashSet<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let mut ids = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let id: Id = serde_json::from_str(line)
            .with_context(|| format!("{}: line {}: not a flagged tweet", path.display(), i + 1))?;
        ids.insert(id.id);
    }
    Ok(ids)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn strings<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .with_context(|| format!("processed rows have no text column `{name}`"))
}

/// Lines in, posts waiting for their micro-batch out: classified, matched against the track
/// terms where no server filtered them, deduplicated, parsed.
struct Intake {
    seen: flagship_ingest::Seen,
    flagged_before: HashSet<String>,
    track: flagship_core::track::Track,
    pending: Vec<Arrived>,
    first_at: Option<tokio::time::Instant>,
}

impl Intake {
    fn take(&mut self, line: SourceLine, at: Instant, t: &mut Totals) {
        t.lines += 1;
        match classify(line.platform, &line.bytes, Utc::now()) {
            Line::KeepAlive => {}
            Line::Deleted { .. } | Line::Other { .. } => t.other_events += 1,
            Line::Error { .. } => t.api_errors += 1,
            Line::Malformed { reason } => {
                t.malformed += 1;
                tracing::warn!("{} line {}: malformed: {reason}", line.origin, line.line);
            }
            Line::Tweet { id, record, text } => {
                if line.unfiltered && text.as_deref().is_some_and(|x| !self.track.matches(x)) {
                    t.unmatched += 1;
                } else if self.flagged_before.contains(&id) || !self.seen.insert(&id) {
                    t.duplicates += 1;
                } else {
                    match flagship_core::jsonl::parse_record(&record, Some(Utc::now())) {
                        Ok(p) => {
                            for tweet in p.tweets {
                                t.seen += 1;
                                self.pending.push(Arrived {
                                    tweet,
                                    origin: line.origin.clone(),
                                    at,
                                });
                            }
                            self.first_at.get_or_insert_with(tokio::time::Instant::now);
                        }
                        Err(e) => {
                            t.malformed += 1;
                            tracing::warn!(
                                "{} line {}: not a post record: {e}",
                                line.origin,
                                line.line
                            );
                        }
                    }
                }
            }
        }
    }
}

struct Triage {
    config: Config,
    model: flagship_model::Classifier,
    model_id: String,
    ctx: datafusion::prelude::SessionContext,
    out: std::fs::File,
    latencies: Vec<f64>,
}

impl Triage {
    /// Filters, cleans and classifies one micro-batch; appends the flagged rows.
    async fn run(&mut self, batch: Vec<Arrived>, t: &mut Totals) -> Result<()> {
        // The micro-batch as combine would write it (same code: ids deduplicated, time-ordered).
        let hour = flagship_core::layout::hour_floor(Utc::now());
        let rows: Vec<(Tweet, String)> = batch
            .iter()
            .map(|a| (a.tweet.clone(), a.origin.clone()))
            .collect();
        let combined = flagship_combine::combine_rows(&self.ctx, hour, &rows).await?;
        // filter's and textproc's plans, as one plan over the micro-batch.
        let kept = flagship_filter::kept_frame(
            self.ctx.read_batch(combined)?,
            &self.config.mission.filter,
        )?;
        let (processed, _) = flagship_textproc::process_frame(kept).await?;
        t.batches += 1;
        let mut lines = Vec::new();
        if processed.num_rows() > 0 {
            let ids = strings(&processed, "id")?;
            let texts = strings(&processed, crate::pipeline::TEXT_COLUMN)?;
            let refs: Vec<&str> = (0..texts.len()).map(|i| texts.value(i)).collect();
            let preds = self.model.predict(&refs)?;
            t.kept += processed.num_rows() as u64;
            let original = strings(&processed, "text")?;
            let client = strings(&processed, "client")?;
            let by_id: std::collections::HashMap<&str, &Arrived> =
                batch.iter().map(|a| (a.tweet.id.as_str(), a)).collect();
            for (i, p) in preds.iter().enumerate() {
                if !p.need_support {
                    continue;
                }
                let id = ids.value(i);
                let a = by_id.get(id).copied();
                let row = serde_json::json!({
                    "platform": a.map(|a| a.tweet.platform),
                    "id": id,
                    "url": a.and_then(|a| a.tweet.url.clone()),
                    "created_at": a.and_then(|a| a.tweet.created_at),
                    "author_username": a.and_then(|a| a.tweet.author_username.clone()),
                    "client": (!client.is_null(i)).then(|| client.value(i)),
                    "text": original.value(i),
                    "text_model": texts.value(i),
                    "need_support_probability": p.probability,
                    "threshold": self.model.threshold(),
                    "model": self.model_id,
                    "flagged_at": Utc::now(),
                    "latency_ms": a.map(|a| a.at.elapsed().as_secs_f64() * 1e3),
                });
                lines.push(row.to_string());
            }
        }
        if !lines.is_empty() {
            let mut text = lines.join("\n");
            text.push('\n');
            self.out.write_all(text.as_bytes())?;
            self.out.flush()?;
            t.flagged += lines.len() as u64;
        }
        for a in &batch {
            self.latencies.push(a.at.elapsed().as_secs_f64() * 1e3);
        }
        Ok(())
    }
}

pub fn run(config: &Config, a: Args) -> Result<Totals> {
    tokio::runtime::Runtime::new()?.block_on(watch(config, a))
}

async fn watch(config: &Config, a: Args) -> Result<Totals> {
    let model_dir = match &a.model {
        Some(m) => m.clone(),
        None => match config.location(Area::Models)? {
            Location::Local(p) => p.join(crate::pipeline::MODEL_DIR),
            Location::S3 { .. } => bail!("storage.models is on S3: pass --model DIR"),
        },
    };
    let model = flagship_model::Classifier::load(&model_dir).with_context(|| {
        format!(
            "model {} (train one with `cargo xtask pipeline`, or pass --model)",
            model_dir.display()
        )
    })?;
    let mut source = a
        .source
        .open(config, "watch", Duration::from_secs(120))
        .await?;
    // Ids flagged by an earlier run are never flagged again; the rest dedup in a window.
    let flagged_before = flagged_ids(&a.out)?;
    let already = flagged_before.len();
    let mut intake = Intake {
        seen: flagship_ingest::Seen::new(1_000_000),
        flagged_before,
        track: flagship_core::track::Track::new(&config.mission.stream.track),
        pending: Vec::new(),
        first_at: None,
    };
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.out)
        .with_context(|| format!("cannot open {}", a.out.display()))?;
    println!(
        "watch: model {} (threshold {:.3}), profile `{}`, flagged tweets → {}{}",
        model_dir.display(),
        model.threshold(),
        config.mission.name,
        a.out.display(),
        if already > 0 {
            format!(" ({already} already there, not flagged again)")
        } else {
            String::new()
        }
    );
    let mut triage = Triage {
        config: config.clone(),
        model_id: model_dir.display().to_string(),
        model,
        ctx: flagship_store::frames::local_session(),
        out,
        latencies: Vec::new(),
    };
    let mut t = Totals::default();
    let start = Instant::now();
    let bar = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("{spinner} watch {msg}").expect("template"));
    let deadline = a.duration.map(|d| tokio::time::Instant::now() + d);
    // The source runs in its own task, so waiting for a batch's deadline never cancels a read
    // half-way; the channel is the queue between them.
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(Result<SourceLine, IngestError>, Instant)>(4096);
    let reconnects = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = reconnects.clone();
    // Asked to stop, the reader hands the source back, with a line it read but could not
    // queue: a resumable source (Jetstream) saves its point only once all it gave was handled.
    let (stop_reader, mut reader_stop) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut held = None;
        loop {
            let r = tokio::select! {
                biased;
                _ = &mut reader_stop => break,
                r = source.next_line() => r,
            };
            counter.store(
                source.stats().reconnects,
                std::sync::atomic::Ordering::Relaxed,
            );
            let last = !matches!(r, Ok(Some(_)));
            let item = match r {
                Ok(Some(l)) => Ok(l),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            let item = (item, Instant::now());
            tokio::select! {
                biased;
                _ = &mut reader_stop => {
                    held = Some(item);
                    break;
                }
                permit = tx.reserve() => match permit {
                    Ok(p) => {
                        p.send(item);
                        if last {
                            break;
                        }
                    }
                    Err(_) => break,
                },
            }
        }
        (source, held)
    });
    let stop = crate::ingest_cmd::signal();
    tokio::pin!(stop);
    let mut ended = false;
    let mut by_limit = false;
    while !ended {
        // Wait for the next line, but never past the waiting batch's deadline.
        let flush_at = intake.first_at.map(|f| f + a.max_wait);
        let limit = match (flush_at, deadline) {
            (Some(f), Some(d)) => Some(f.min(d)),
            (f, d) => f.or(d),
        };
        let next = async {
            match limit {
                Some(l) => tokio::time::timeout_at(l, rx.recv()).await.ok(),
                None => Some(rx.recv().await),
            }
        };
        let line = tokio::select! {
            biased;
            _ = &mut stop => { ended = true; None }
            l = next => match l {
                None => None, // a timeout: flush what waits (or the duration ended)
                Some(Some((Ok(line), at))) => Some((line, at)),
                Some(None) => { ended = true; None }
                Some(Some((Err(e), _))) => {
                    if !intake.pending.is_empty() {
                        triage.run(std::mem::take(&mut intake.pending), &mut t).await?;
                    }
                    bar.finish_and_clear();
                    bail!("watch: the stream ended: {e} (flagged so far: {})", t.flagged);
                }
            },
        };
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            ended = true;
        }
        if let Some((line, at)) = line {
            intake.take(line, at, &mut t);
        }
        let due = intake.first_at.is_some_and(|f| f.elapsed() >= a.max_wait);
        if !intake.pending.is_empty() && (intake.pending.len() >= a.max_batch || due || ended) {
            triage
                .run(std::mem::take(&mut intake.pending), &mut t)
                .await?;
            intake.first_at = None;
            bar.set_message(format!(
                "{} seen, {} kept by the profile, {} flagged ({:.0}/s)",
                t.seen,
                t.kept,
                t.flagged,
                t.seen as f64 / start.elapsed().as_secs_f64().max(1e-9)
            ));
        }
        if a.max_tweets.is_some_and(|m| t.seen >= m) {
            ended = true;
            by_limit = true;
            if !intake.pending.is_empty() {
                triage
                    .run(std::mem::take(&mut intake.pending), &mut t)
                    .await?;
            }
        }
    }
    // A clean stop (signal, duration, end of input): the lines the reader had queued are
    // triaged too, then a resumable source saves its point. After --max-tweets they are left
    // (the limit is an upper bound) and the point is not saved.
    let _ = stop_reader.send(());
    let (mut source, held) = reader
        .await
        .map_err(|e| anyhow::anyhow!("watch: the source task failed: {e}"))?;
    if !by_limit {
        rx.close();
        let mut rest = Vec::new();
        while let Some(item) = rx.recv().await {
            rest.push(item);
        }
        rest.extend(held);
        for (item, at) in rest {
            if let Ok(line) = item {
                intake.take(line, at, &mut t);
            }
        }
        if !intake.pending.is_empty() {
            triage
                .run(std::mem::take(&mut intake.pending), &mut t)
                .await?;
        }
        if let Err(e) = source.commit() {
            tracing::error!("the source's resume point was not saved: {e}");
        }
    }
    bar.finish_and_clear();
    let mut l = std::mem::take(&mut triage.latencies);
    l.sort_by(f64::total_cmp);
    t.latency_p50_ms = quantile(&l, 0.50);
    t.latency_p99_ms = quantile(&l, 0.99);
    t.latency_max_ms = l.last().copied().unwrap_or(0.0);
    t.reconnects = reconnects.load(std::sync::atomic::Ordering::Relaxed);
    t.seconds = start.elapsed().as_secs_f64();
    println!(
        "watch: {} posts seen ({} duplicates, {} not matching the track terms, {} deletions and other events, {} malformed lines, {} API messages, {} reconnects), {} kept by the profile, {} flagged need_support → {}",
        t.seen,
        t.duplicates,
        t.unmatched,
        t.other_events,
        t.malformed,
        t.api_errors,
        t.reconnects,
        t.kept,
        t.flagged,
        a.out.display()
    );
    println!(
        "watch: latency arrival → flagged line written: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} tweets in {} micro-batches; {:.1} s",
        t.latency_p50_ms,
        t.latency_p99_ms,
        t.latency_max_ms,
        l.len(),
        t.batches,
        t.seconds
    );
    println!("{}", serde_json::to_string(&t)?);
    Ok(t)
}
