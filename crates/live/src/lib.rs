//! flagship-live: the micro-batch loop behind `flagship watch` (and the triage desk).
//!
//! It reads lines from any [`TweetSource`] (X, Bluesky, Mastodon, merged, a replay), takes
//! each as ingest does ([`flagship_ingest::record::classify`]: posts no server filtered must
//! match the mission's track terms; ids dedup in a window and against ids already handled),
//! gathers posts into micro-batches — up to `max_batch`, or what arrived `max_wait` after
//! the first, whichever comes first — and runs the *same* plans as the batch stages on each:
//! combine's rows, filter's kept frame, textproc's features, then the model. Every post the
//! profile kept, scored, goes to a [`Sink`] (a JSONL file for `watch`, a database for the
//! desk); latency is arrival → the sink's write returned. At a clean stop the lines already
//! queued are scored too and a resumable source saves its point.
//!
//! It reads no files and writes none itself (the sink does), never trains, never opens a
//! source (the caller does).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, StringArray};
use chrono::{DateTime, Utc};
use flagship_core::{Config, Tweet};
use flagship_ingest::IngestError;
use flagship_ingest::record::{Line, classify};
use flagship_ingest::source::{SourceLine, TweetSource};

#[doc(hidden)]
pub mod testing;

/// The model the loop scores with (an exported model folder, transformer or linear).
pub use flagship_model::Classifier;

pub const STAGE: &str = "live";

/// The cleaned text the model reads (textproc's `text_model`).
pub const TEXT_COLUMN: &str = "text_model";

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("the source ended: {0}")]
    Source(#[from] IngestError),
    #[error("micro-batch: {0}")]
    Engine(#[from] datafusion::error::DataFusionError),
    #[error("micro-batch: {0}")]
    Combine(#[from] flagship_combine::CombineError),
    #[error("micro-batch: {0}")]
    Filter(#[from] flagship_filter::FilterError),
    #[error("micro-batch: {0}")]
    Frame(#[from] flagship_store::frames::FrameError),
    #[error("model: {0}")]
    Model(#[from] flagship_model::ModelError),
    #[error("processed rows have no text column `{0}`")]
    Column(String),
    #[error("sink: {0}")]
    Sink(String),
    #[error("the source task failed: {0}")]
    Task(String),
}

/// How the loop batches and when it stops.
#[derive(Debug, Clone)]
pub struct Options {
    /// Classify at most this many posts at once…
    pub max_batch: usize,
    /// …or what arrived this long after the first waiting post.
    pub max_wait: Duration,
    /// Stop after this many posts seen.
    pub max_posts: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Words kept to say why a flagged post was flagged (0: none).
    pub explain: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_batch: 32,
            max_wait: Duration::from_millis(200),
            max_posts: None,
            duration: None,
            explain: 3,
        }
    }
}

pub use flagship_model::Why;

/// One post the profile kept, with the model's judgement.
#[derive(Debug, Clone)]
pub struct Scored {
    pub tweet: Tweet,
    /// The cleaned text the model read.
    pub text_model: String,
    /// The profile's wanted terms the post matched (filter's `matched_terms`).
    pub matched: Vec<String>,
    pub client: Option<String>,
    pub probability: f32,
    pub need_support: bool,
    pub threshold: f64,
    pub model_id: String,
    pub scored_at: DateTime<Utc>,
    /// Arrival → scored (before the sink's write).
    pub latency_ms: f64,
    /// For a flagged post, the words that raised its probability most (empty otherwise).
    pub why: Vec<flagship_model::Why>,
}

/// Where scored posts go. A write that returns has made them durable (flushed, committed).
pub trait Sink {
    fn write(&mut self, scored: &[Scored]) -> Result<(), String>;
}

/// Counts of a live run.
#[derive(Debug, Default, Clone, serde::Serialize)]
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
    /// Arrival → written by the sink, every classified post (ms).
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub seconds: f64,
    /// Why it stopped: `signal`, `duration`, `max-posts`, `end of input`.
    pub stopped_by: String,
}

/// A post waiting for its micro-batch.
struct Arrived {
    tweet: Tweet,
    origin: String,
    at: Instant,
}

/// Lines in, posts waiting for their micro-batch out: classified, matched against the track
/// terms where no server filtered them, deduplicated, parsed.
struct Intake {
    seen: flagship_ingest::Seen,
    handled_before: HashSet<String>,
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
            Line::Tweet { id, record, post } => {
                if flagship_ingest::record::off_track(&line, post.as_deref(), &self.track) {
                    t.unmatched += 1;
                } else if self.handled_before.contains(&id) || !self.seen.insert(&id) {
                    t.duplicates += 1;
                } else {
                    // A Bluesky / Mastodon post was parsed whole by `classify`; an X message
                    // (only peeked at there) is parsed here.
                    let parsed = match post {
                        Some(p) => Ok(vec![*p]),
                        None => flagship_core::jsonl::parse_record(&record, Some(Utc::now()))
                            .map(|p| p.tweets),
                    };
                    match parsed {
                        Ok(tweets) => {
                            for tweet in tweets {
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

fn strings<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray, LiveError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| LiveError::Column(name.to_owned()))
}

/// Row `i` of a list-of-strings column.
fn terms_at(list: &arrow::array::ListArray, i: usize) -> Vec<String> {
    if list.is_null(i) {
        return Vec::new();
    }
    let v = list.value(i);
    v.as_any()
        .downcast_ref::<StringArray>()
        .map(|s| s.iter().flatten().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The model and the plans one micro-batch goes through.
struct Triage<'a> {
    config: &'a Config,
    model: &'a flagship_model::Classifier,
    model_id: &'a str,
    ctx: datafusion::prelude::SessionContext,
    latencies: Vec<f64>,
    /// Words kept per flagged post ([`Options::explain`]).
    explain: usize,
}

impl Triage<'_> {
    async fn run(
        &mut self,
        batch: Vec<Arrived>,
        sink: &mut dyn Sink,
        t: &mut Totals,
    ) -> Result<(), LiveError> {
        // The micro-batch as combine would write it (same code: ids deduplicated, ordered).
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
        let mut scored = Vec::with_capacity(processed.num_rows());
        if processed.num_rows() > 0 {
            let ids = strings(&processed, "id")?;
            let texts = strings(&processed, TEXT_COLUMN)?;
            let client = strings(&processed, "client")?;
            let matched = processed
                .column_by_name("matched_terms")
                .and_then(|c| c.as_any().downcast_ref::<arrow::array::ListArray>())
                .ok_or_else(|| LiveError::Column("matched_terms".into()))?;
            let refs: Vec<&str> = (0..texts.len()).map(|i| texts.value(i)).collect();
            let preds = self.model.predict(&refs)?;
            // Why each flagged post was flagged (its strongest words).
            let flagged: Vec<usize> = (0..preds.len())
                .filter(|&i| preds[i].need_support)
                .collect();
            let mut why: Vec<Vec<flagship_model::Why>> = vec![Vec::new(); preds.len()];
            if self.explain > 0 && !flagged.is_empty() {
                let texts: Vec<&str> = flagged.iter().map(|&i| refs[i]).collect();
                for (&i, w) in flagged
                    .iter()
                    .zip(self.model.explain(&texts, self.explain)?)
                {
                    why[i] = w;
                }
            }
            t.kept += processed.num_rows() as u64;
            let by_id: std::collections::HashMap<&str, &Arrived> =
                batch.iter().map(|a| (a.tweet.id.as_str(), a)).collect();
            for (i, p) in preds.iter().enumerate() {
                let Some(a) = by_id.get(ids.value(i)).copied() else {
                    continue;
                };
                scored.push(Scored {
                    tweet: a.tweet.clone(),
                    text_model: texts.value(i).to_owned(),
                    matched: terms_at(matched, i),
                    client: (!client.is_null(i)).then(|| client.value(i).to_owned()),
                    probability: p.probability,
                    need_support: p.need_support,
                    threshold: self.model.threshold(),
                    model_id: self.model_id.to_owned(),
                    scored_at: Utc::now(),
                    latency_ms: a.at.elapsed().as_secs_f64() * 1e3,
                    why: std::mem::take(&mut why[i]),
                });
            }
        }
        t.flagged += scored.iter().filter(|s| s.need_support).count() as u64;
        if !scored.is_empty() {
            sink.write(&scored).map_err(LiveError::Sink)?;
        }
        for a in &batch {
            self.latencies.push(a.at.elapsed().as_secs_f64() * 1e3);
        }
        Ok(())
    }
}

/// Runs `source` through the profile and `model` into `sink` until `stop`, a limit or the
/// end of the source. Ids in `handled_before` (an earlier run's output) are never scored
/// again. `progress` is called after each micro-batch.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    config: &Config,
    model: &flagship_model::Classifier,
    model_id: &str,
    mut source: Box<dyn TweetSource>,
    handled_before: HashSet<String>,
    sink: &mut dyn Sink,
    opts: &Options,
    stop: impl std::future::Future<Output = ()>,
    progress: &(dyn Fn(&Totals) + Sync),
) -> Result<Totals, LiveError> {
    let mut triage = Triage {
        config,
        model,
        model_id,
        ctx: flagship_store::frames::local_session(),
        latencies: Vec::new(),
        explain: opts.explain,
    };
    let mut intake = Intake {
        seen: flagship_ingest::Seen::new(1_000_000),
        handled_before,
        track: flagship_core::track::Track::new(&config.mission.stream.track),
        pending: Vec::new(),
        first_at: None,
    };
    let mut t = Totals::default();
    let start = Instant::now();
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    // The source runs in its own task, so waiting for a batch's deadline never cancels a
    // read half-way; the channel is the queue between them. Asked to stop, the reader hands
    // the source back, with a line it read but could not queue: a resumable source saves its
    // point only once all it gave was handled.
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(Result<SourceLine, IngestError>, Instant)>(4096);
    let reconnects = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = reconnects.clone();
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
    tokio::pin!(stop);
    let mut stopped_by = None;
    while stopped_by.is_none() {
        // Wait for the next line, but never past the waiting batch's deadline.
        let flush_at = intake.first_at.map(|f| f + opts.max_wait);
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
            _ = &mut stop => { stopped_by = Some("signal"); None }
            l = next => match l {
                None => None, // a timeout: flush what waits (or the duration ended)
                Some(Some((Ok(line), at))) => Some((line, at)),
                Some(None) => { stopped_by = Some("end of input"); None }
                Some(Some((Err(e), _))) => {
                    if !intake.pending.is_empty() {
                        triage.run(std::mem::take(&mut intake.pending), sink, &mut t).await?;
                    }
                    return Err(e.into());
                }
            },
        };
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            stopped_by.get_or_insert("duration");
        }
        if let Some((line, at)) = line {
            intake.take(line, at, &mut t);
        }
        let due = intake
            .first_at
            .is_some_and(|f| f.elapsed() >= opts.max_wait);
        if !intake.pending.is_empty()
            && (intake.pending.len() >= opts.max_batch || due || stopped_by.is_some())
        {
            triage
                .run(std::mem::take(&mut intake.pending), sink, &mut t)
                .await?;
            intake.first_at = None;
            progress(&t);
        }
        if opts.max_posts.is_some_and(|m| t.seen >= m) {
            stopped_by = Some("max-posts");
            if !intake.pending.is_empty() {
                triage
                    .run(std::mem::take(&mut intake.pending), sink, &mut t)
                    .await?;
            }
        }
    }
    let stopped_by = stopped_by.expect("set when the loop ends");
    // A clean stop (signal, duration, end of input): the lines the reader had queued are
    // scored too, then a resumable source saves its point. After `max_posts` they are left
    // (the limit is an upper bound) and the point is not saved.
    let _ = stop_reader.send(());
    let (mut source, held) = reader.await.map_err(|e| LiveError::Task(e.to_string()))?;
    if stopped_by != "max-posts" {
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
                .run(std::mem::take(&mut intake.pending), sink, &mut t)
                .await?;
        }
        if let Err(e) = source.commit() {
            tracing::error!("the source's resume point was not saved: {e}");
        }
    }
    let mut l = std::mem::take(&mut triage.latencies);
    l.sort_by(f64::total_cmp);
    t.latency_p50_ms = quantile(&l, 0.50);
    t.latency_p99_ms = quantile(&l, 0.99);
    t.latency_max_ms = l.last().copied().unwrap_or(0.0);
    t.reconnects = reconnects.load(std::sync::atomic::Ordering::Relaxed);
    t.seconds = start.elapsed().as_secs_f64();
    t.stopped_by = stopped_by.to_owned();
    Ok(t)
}
