//! flagship-live: the micro-batch loop behind `flagship watch` (and the triage desk).
//!
//! It reads lines from any [`PostSource`] (X, Bluesky, Mastodon, merged, a replay), takes
//! each as ingest does ([`flagship_ingest::record::classify`]: posts no server filtered must
//! match the mission's track terms; ids dedup in a window and against ids already handled),
//! gathers posts into micro-batches and runs the *same* plans as the batch stages on each:
//! combine's rows, filter's kept frame, textproc's features (planned once, their regular
//! expressions compiled once: `once`), then the model. Batching adapts
//! to load: a post that arrives alone is scored at once; what arrived while a batch was being
//! scored forms the next batch (up to `max_batch`; `max_wait` > 0 lingers for more). Every
//! post the profile kept, scored, goes to a [`Sink`] (a JSONL file for `watch`, a database for
//! the desk); latency is arrival → the sink's write returned. Why a flagged post was flagged
//! comes twice. With the write: a mean-pooled model's scoring pass gives each flagged post
//! its words ([`Options::scored_words`]: its words left out of the mean pool of the layer that
//! decided it — no pass of its own). Then, off that path, better ones (by default occlusion:
//! the post scored again without each of its words; for a post without words that waited
//! [`EXPLAIN_BEHIND`], the pooled attribution, one pass a post): after the
//! write, while no line waits, a slice at a time (a post that arrives waits for one slice of
//! [`EXPLAIN_SLICE`] texts, not a whole explanation), and handed to the sink's
//! [`Sink::explained`] — with the post's sentence embedding from a second, frozen encoder
//! ([`Run::embedder`]) that the desk groups questions by. A post still waiting for words
//! [`EXPLAIN_WITHIN`] after its write, or beyond a backlog of [`EXPLAIN_BACKLOG`], keeps the
//! words it came with, or goes unexplained, counted. Its vector has longer ([`EMBED_WITHIN`],
//! a backlog of [`EMBED_BACKLOG`]): a loop that a burst keeps busy scoring has almost no idle
//! moment for vectors until the burst passes (then it embeds [`EMBED_CHUNK`] posts at a
//! time), and a question group is worth forming minutes later; a post left without one stays
//! a single card on the desk, counted. At a clean stop the lines already queued are scored
//! too, the posts waiting for words or vectors get a few seconds more (the rest counted),
//! and a resumable source saves its point.
//!
//! Every count also goes, as it happens, to the run's [`Telemetry`] (posts seen, dropped,
//! kept, flagged, explained per platform; micro-batches; the latency histogram; the source's
//! reconnects), which the caller may serve at `/metrics`.
//!
//! It reads no files and writes none itself (the sink does), never trains, never opens a
//! source (the caller does).

mod once;

use std::collections::HashSet;

use flagship_model::Pace;
use flagship_model::explain::Attribution;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, StringArray};
use chrono::Utc;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use flagship_core::schema::Stage;
use flagship_core::telemetry::Telemetry;
use flagship_core::{Config, Post, Stop};
use flagship_ingest::IngestError;
use flagship_ingest::record::{Line, classify};
use flagship_ingest::source::{PostSource, SourceLine};

#[cfg(feature = "testing")]
pub mod testing;

/// The model the loop scores with (an exported model folder, transformer or linear).
pub use flagship_model::Classifier;

pub const STAGE: &str = "live";

pub use flagship_core::live::{EXPLAIN_BEHIND, HURRY_AFTER, HURRY_HOLD, HURRY_MIN_POSTS};

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
    Sink(#[from] SinkError),
    #[error("the source task failed: {0}")]
    Task(String),
}

/// How the loop batches and when it stops.
#[derive(Debug, Clone)]
pub struct Options {
    /// Classify at most this many posts at once…
    pub max_batch: usize,
    /// …and wait this long after the first waiting post for more (0: score what has
    /// arrived as soon as the model is free).
    pub max_wait: Duration,
    /// Stop after this many posts seen.
    pub max_posts: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Words kept to say why a flagged post was flagged (0: none).
    pub explain: usize,
    /// A flagged post still waiting this long after its write gets the pooled words
    /// ([`EXPLAIN_BEHIND`] by default; 0: always; longer than [`EXPLAIN_WITHIN`]: never).
    pub explain_behind: Duration,
    /// A flagged post's words come with its write, from the scoring pass itself
    /// ([`Attribution::Scored`]), where the model allows (mean pooling); occlusion refines
    /// them while the loop is idle. `false`: words only after the write, as above.
    pub scored_words: bool,
    /// A micro-batch whose oldest post has waited this long (and that holds at least
    /// [`HURRY_MIN_POSTS`]) is scored in a hurry ([`Pace::Hurried`]: the exits' looser
    /// margins, `model.early_exit_hurried`), so a loop that has fallen behind reads less until
    /// it catches up ([`HURRY_AFTER`] by default; 0: every batch; `1h`: never).
    pub hurry_after: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_batch: flagship_core::live::MAX_BATCH,
            max_wait: Duration::ZERO,
            max_posts: None,
            duration: None,
            explain: 3,
            explain_behind: EXPLAIN_BEHIND,
            scored_words: true,
            hurry_after: HURRY_AFTER,
        }
    }
}

pub use flagship_core::live::{Embed, Explained, Scored, Sink, SinkError, Why};

/// Flagged posts waiting for their explanation, at most (beyond it the oldest is dropped and
/// counted in [`Totals::unexplained`]).
pub const EXPLAIN_BACKLOG: usize = 1024;

/// How long after its write a flagged post may still get its words: older ones leave the
/// backlog unexplained, counted ([`Totals::unexplained`]). The words reach the sink within
/// this bound or not at all ([`Totals::explain_delay_max_ms`]). Its vector has longer
/// ([`EMBED_WITHIN`]).
pub const EXPLAIN_WITHIN: Duration = Duration::from_secs(30);

/// How long after its write a flagged post may still have its sentence embedding worked out
/// (the desk's question groups): older ones stay single cards, counted
/// ([`Totals::unembedded`]). Longer than the words' bound: a burst keeps a 2-core loop busy
/// scoring, so its posts are embedded once it has passed (about 5–8 ms of a core a post),
/// and the same question from many people is answered after the burst, once, from its group.
/// The bound is checked as a post's chunk starts, so a vector reaches the sink at most one
/// chunk's time past it ([`Totals::embed_delay_max_ms`]). Embedded oldest first, a burst too
/// long to catch up on within the bound leaves its last posts single cards.
pub const EMBED_WITHIN: Duration = Duration::from_secs(600);

/// Flagged posts waiting for their embedding alone (their words given, or given up), at most:
/// beyond it the oldest is dropped, counted in [`Totals::unembedded`]. [`EMBED_WITHIN`] of a
/// burst at ten times the demo's rate (about 220 flagged posts a second), some 60 MB.
pub const EMBED_BACKLOG: usize = 131_072;

/// Texts put through the model at a time for a flagged post's words while the loop is idle
/// (occlusion's variants: the post without one of its words each): a post that arrives
/// meanwhile waits for one slice, not a whole explanation of a long post. Sixteen: one
/// call for almost every post (a tweet has ~10 units), since each call has a fixed cost —
/// slices of eight made 1.6 calls a post and cost 1.9× the time per post
/// (`flagship-bench model explain --slice 8`).
pub const EXPLAIN_SLICE: usize = 16;

/// More flagged posts than this waiting for words or vectors: the loop is behind, and the
/// words that came with a post's write stay as they are (no refinement by occlusion), so that
/// its idle moments go to the posts without words and to vectors. At ten times the demo's
/// rate refinement reached 2 % of the flagged posts and its slices cost the p99 a tenth.
pub const REFINE_BACKLOG: usize = 64;

/// Posts embedded together while more than [`REFINE_BACKLOG`] wait for vectors alone (after
/// a burst): one call of the encoder and one hand-over to the sink (the desk: one
/// transaction) for four posts; a post that arrives meanwhile waits for one chunk (18 ms at
/// p50 on 2 cores). One at a time, the vectors of a burst took 1.5× as long.
pub const EMBED_CHUNK: usize = 4;

/// Posts explained together by the pooled attribution.
const POOLED_CHUNK: usize = 16;

/// Flagged posts explained at a time after a stop, when no post waits.
const FINAL_CHUNK: usize = 8;

/// How long a stopping run keeps explaining the backlog.
const FINAL_EXPLAIN: Duration = Duration::from_secs(5);

/// One step's time across a run: p50 / p99 per micro-batch (per post for `wait`) and the total.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Step {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub total_s: f64,
}

impl Step {
    fn of(mut ms: Vec<f64>) -> Step {
        ms.sort_by(f64::total_cmp);
        Step {
            p50_ms: quantile(&ms, 0.50),
            p99_ms: quantile(&ms, 0.99),
            total_s: ms.iter().sum::<f64>() / 1e3,
        }
    }
}

/// Where the time between a post's arrival and its write goes.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Budget {
    /// Arrival → its micro-batch starts, per post: queued behind the batch being scored or an
    /// explanation chunk, and the batch's own parsing (also in `parse`).
    pub wait: Step,
    /// Classifying and parsing the batch's lines.
    pub parse: Step,
    /// combine's rows, filter's and textproc's plans.
    pub prepare: Step,
    pub tokenise: Step,
    /// The forward pass (and the linear half of an ensemble).
    pub model: Step,
    /// The sink's write (flushed or committed).
    pub write: Step,
    /// Off the path above: explaining flagged posts, per chunk.
    pub explain: Step,
    /// Off the path above: the frozen encoder's sentence embeddings, per chunk.
    pub embed: Step,
}

/// Per-batch times, in ms, collected for the [`Budget`].
#[derive(Default)]
struct Clock {
    wait: Vec<f64>,
    parse: Vec<f64>,
    prepare: Vec<f64>,
    tokenise: Vec<f64>,
    model: Vec<f64>,
    write: Vec<f64>,
    explain: Vec<f64>,
    embed: Vec<f64>,
    /// Per explained post: its write → its first words handed to the sink.
    explain_delay: Vec<f64>,
    /// Per embedded post: its write → its vector handed to the sink.
    embed_delay: Vec<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
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
    /// Flagged posts whose words went to the sink.
    pub explained: u64,
    /// Of those, the words that came with the post's write, from the scoring pass itself
    /// ([`Options::scored_words`]).
    pub explained_scored: u64,
    /// Of those, the words replaced afterwards by occlusion's, while the loop was idle.
    pub refined: u64,
    /// Of those, the words of posts that had waited [`EXPLAIN_BEHIND`] without any: by the
    /// pooled attribution, one pass a post, where occlusion takes one per word.
    pub explained_pooled: u64,
    /// Flagged posts left without words: dropped from a full backlog, still waiting
    /// [`EXPLAIN_WITHIN`] after their write or when the run's final few seconds of explaining
    /// ended, or the explanation failed (a post whose words came with its write is never
    /// counted here: only its refinement is lost).
    pub unexplained: u64,
    /// Posts scored in a hurry ([`Options::hurry_after`]), and their micro-batches.
    pub hurried: u64,
    pub hurried_batches: u64,
    /// Flagged posts whose sentence embedding went to the sink ([`Run::embedder`]).
    pub embedded: u64,
    /// Flagged posts left without an embedding: dropped from a full backlog
    /// ([`EMBED_BACKLOG`]), still waiting [`EMBED_WITHIN`] after their write or when the
    /// run's final few seconds of explaining ended, or the encoder failed.
    pub unembedded: u64,
    /// A flagged post's write → its first words handed to the sink, over the posts explained
    /// (0 for words that came with the write); the work starts within [`EXPLAIN_WITHIN`]
    /// (ms).
    pub explain_delay_p50_ms: f64,
    pub explain_delay_p99_ms: f64,
    pub explain_delay_max_ms: f64,
    /// A flagged post's write → its vector handed to the sink, over the posts embedded; the
    /// work starts within [`EMBED_WITHIN`] (ms).
    pub embed_delay_p50_ms: f64,
    pub embed_delay_p99_ms: f64,
    pub embed_delay_max_ms: f64,
    pub reconnects: u64,
    /// Arrival → written by the sink, every classified post (ms).
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Where the latency goes, step by step.
    pub budget: Budget,
    /// Posts seen ÷ the time until the last was written (before the final explanations).
    pub posts_per_second: f64,
    pub seconds: f64,
    /// Why it stopped: a signal, the duration, `max-posts` or the end of the input.
    pub stopped_by: Stop,
}

/// A post waiting for its micro-batch.
struct Arrived {
    post: Post,
    origin: String,
    at: Instant,
}

/// A flagged post, written, waiting for its explanation.
struct Unexplained {
    platform: flagship_core::Platform,
    id: String,
    text: String,
    /// When it was written.
    written: Instant,
    /// The words that came with its write ([`Options::scored_words`]; empty: none yet).
    /// A post with words waits only for occlusion's (a refinement) and its vector.
    why: Vec<Why>,
}

impl Unexplained {
    fn worded(&self) -> bool {
        !self.why.is_empty()
    }
}

/// At most [`REFINE_BACKLOG`] flagged posts wait (`waiting`: for words, or for vectors
/// alone): the loop keeps up, and words that came with a write may be refined by occlusion.
/// Behind a burst its idle moments go to the posts without words, then to vectors.
fn refining(waiting: usize) -> bool {
    waiting <= REFINE_BACKLOG
}

/// Far behind ([`refining`] no more): the posts whose words came with their write wait for
/// no other words, and leave the backlog with those words (no refinement), so that its idle
/// moments go to the posts without words. Returned, in order, for their vectors.
/// `vectors`: the posts waiting for vectors alone.
fn shed_worded(
    backlog: &mut std::collections::VecDeque<Unexplained>,
    vectors: usize,
) -> Vec<Unexplained> {
    if refining(backlog.len() + vectors) {
        return Vec::new();
    }
    let (worded, rest): (Vec<_>, Vec<_>) = backlog.drain(..).partition(Unexplained::worded);
    *backlog = rest.into();
    worded
}

/// Flagged posts whose words are settled (given, or given up), waiting only for their
/// vectors: at most `cap` ([`EMBED_BACKLOG`]), none embedded later than `within`
/// ([`EMBED_WITHIN`]) after its write. About oldest first: a post that waited for words
/// joins behind younger ones that came with theirs.
struct AwaitingVectors {
    posts: std::collections::VecDeque<Unexplained>,
    within: Duration,
    cap: usize,
}

impl AwaitingVectors {
    fn new(within: Duration, cap: usize) -> AwaitingVectors {
        AwaitingVectors {
            posts: std::collections::VecDeque::new(),
            within,
            cap,
        }
    }

    fn is_empty(&self) -> bool {
        self.posts.is_empty()
    }

    fn len(&self) -> usize {
        self.posts.len()
    }

    /// Queues `p` at `now`. Returns the post that leaves without a vector: `p` itself, past
    /// the bound already, or the oldest waiting, when the queue was full.
    fn push(&mut self, p: Unexplained, now: Instant) -> Option<Unexplained> {
        if now.saturating_duration_since(p.written) > self.within {
            return Some(p);
        }
        let full = self.posts.len() >= self.cap;
        let gone = if full { self.posts.pop_front() } else { None };
        self.posts.push_back(p);
        gone
    }

    /// Up to `n` posts for their vectors at `now`, in order, and the ones met on the way that
    /// are past the bound (they leave without).
    fn take(&mut self, n: usize, now: Instant) -> (Vec<Unexplained>, Vec<Unexplained>) {
        let (mut out, mut stale) = (Vec::with_capacity(n), Vec::new());
        while out.len() < n
            && let Some(p) = self.posts.pop_front()
        {
            if now.saturating_duration_since(p.written) > self.within {
                stale.push(p);
            } else {
                out.push(p);
            }
        }
        (out, stale)
    }

    /// Every post still waiting.
    fn drain(&mut self) -> impl Iterator<Item = Unexplained> + '_ {
        self.posts.drain(..)
    }
}

/// Flagged posts taken from the backlog, their words worked out a slice at a time.
struct Explaining {
    posts: Vec<Unexplained>,
    /// `None`: no words asked for, or finding them failed (counted).
    words: Option<flagship_model::Explanation>,
    /// By the pooled attribution (they had waited [`EXPLAIN_BEHIND`]).
    pooled: bool,
    /// Their words are settled: only their vectors are made ([`Triage::vectors`]).
    only_vectors: bool,
    /// The model's time on them so far.
    spent: Duration,
}

/// Lines in, posts waiting for their micro-batch out: classified, matched against the track
/// terms where no server filtered them, deduplicated, parsed.
struct Intake {
    seen: flagship_ingest::Seen,
    handled_before: HashSet<String>,
    track: flagship_core::track::Track,
    pending: Vec<Arrived>,
    first_at: Option<tokio::time::Instant>,
    /// Time spent classifying and parsing the pending batch's lines.
    parsing: Duration,
    telemetry: Arc<Telemetry>,
}

impl Intake {
    fn take(&mut self, line: SourceLine, at: Instant, t: &mut Totals) {
        let started = Instant::now();
        self.classify(line, at, t);
        self.parsing += started.elapsed();
    }

    fn classify(&mut self, line: SourceLine, at: Instant, t: &mut Totals) {
        t.lines += 1;
        let tel = &self.telemetry;
        match classify(line.platform, &line.bytes, Utc::now()) {
            Line::KeepAlive => {}
            Line::Deleted { .. } | Line::Other { .. } => t.other_events += 1,
            Line::Error { .. } => t.api_errors += 1,
            Line::Malformed { reason } => {
                t.malformed += 1;
                tel.malformed.inc(line.platform);
                tracing::warn!("{} line {}: malformed: {reason}", line.origin, line.line);
            }
            Line::Post { id, record, post } => {
                if flagship_ingest::record::off_track(&line, post.as_deref(), &self.track) {
                    t.unmatched += 1;
                    tel.off_track.inc(line.platform);
                } else if self.handled_before.contains(&id) || !self.seen.insert(&id) {
                    t.duplicates += 1;
                    tel.duplicate.inc(line.platform);
                } else {
                    // A Bluesky / Mastodon post was parsed whole by `classify`; an X message
                    // (only peeked at there) is parsed here.
                    let parsed = match post {
                        Some(p) => Ok(vec![*p]),
                        None => flagship_platforms::jsonl::parse_record(&record, Some(Utc::now()))
                            .map(|p| p.posts),
                    };
                    match parsed {
                        Ok(posts) => {
                            for post in posts {
                                t.seen += 1;
                                tel.seen.inc(post.platform);
                                self.pending.push(Arrived {
                                    post,
                                    origin: line.origin.clone(),
                                    at,
                                });
                            }
                            self.first_at.get_or_insert_with(tokio::time::Instant::now);
                        }
                        Err(e) => {
                            t.malformed += 1;
                            tel.malformed.inc(line.platform);
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

/// A micro-batch of `(post, origin)` rows through the batch stages' own rules: combine's
/// rows (the same code: ids deduplicated, ordered), then filter's and textproc's plans as one
/// plan. The processed rows (`id`, [`TEXT_COLUMN`], `client`, `matched_terms`, …). Plans
/// both on every call; the loop runs [`Prepared`], the same plans built once.
pub async fn prepare(
    ctx: &datafusion::prelude::SessionContext,
    config: &Config,
    rows: &[(Post, String)],
) -> Result<RecordBatch, LiveError> {
    let hour = flagship_core::layout::hour_floor(Utc::now());
    let combined = flagship_combine::combine_rows(ctx, hour, rows).await?;
    let processed = process_frame(ctx.read_batch(combined)?, config)?;
    Ok(flagship_store::frames::collect(processed, &Stage::Processed.schema()).await?)
}

/// Filter's kept rows and textproc's features of combined rows, as one plan.
fn process_frame(
    combined: datafusion::prelude::DataFrame,
    config: &Config,
) -> Result<datafusion::prelude::DataFrame, LiveError> {
    let kept = flagship_filter::kept_frame(combined, &config.mission.filter)?;
    Ok(flagship_textproc::features(kept)?)
}

/// [`prepare`]'s plans — combine's rows, then filter's and textproc's as one — planned,
/// optimised and made physical once, when the run starts. Each micro-batch is put in a
/// plan's input slot and that physical plan runs on it: the same rules, no planning on the
/// hot path (planning both was most of the ~14 ms a batch took).
pub struct Prepared {
    combine: Planned,
    process: Planned,
    task: Arc<datafusion::execution::TaskContext>,
}

impl Prepared {
    pub async fn new(
        ctx: &datafusion::prelude::SessionContext,
        config: &Config,
    ) -> Result<Prepared, LiveError> {
        let input = flagship_combine::input_rows(Utc::now(), &[])?.schema();
        let combine = Planned::new(ctx, input, Stage::Combined.schema(), |df| {
            Ok(flagship_combine::rows_frame(df)?)
        })
        .await?;
        let process = Planned::new(
            ctx,
            Stage::Combined.schema(),
            Stage::Processed.schema(),
            |df| process_frame(df, config),
        )
        .await?;
        Ok(Prepared {
            combine,
            process,
            task: ctx.task_ctx(),
        })
    }

    /// How many of the plans' regex calls hold their pattern compiled (DataFusion's compile
    /// it on every batch).
    pub fn compiled_once(&self) -> usize {
        self.combine.compiled + self.process.compiled
    }

    /// The metrics the plans' operators hold: as many after a million micro-batches as after
    /// the first ([`Planned::run`]).
    pub fn metrics_held(&self) -> usize {
        fn count(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> usize {
            plan.metrics().map_or(0, |m| m.iter().count())
                + plan.children().into_iter().map(count).sum::<usize>()
        }
        count(&self.combine.plan) + count(&self.process.plan)
    }

    /// What [`prepare`] gives for `rows`.
    pub async fn run(&self, rows: &[(Post, String)]) -> Result<RecordBatch, LiveError> {
        if rows.is_empty() {
            return Ok(RecordBatch::new_empty(Stage::Processed.schema()));
        }
        let hour = flagship_core::layout::hour_floor(Utc::now());
        let input = flagship_combine::input_rows(hour, rows)?;
        let combined = self.combine.run(input, &self.task).await?;
        self.process.run(combined, &self.task).await
    }
}

/// One physical plan over an input slot, and the schema its result is conformed to.
struct Planned {
    slot: Arc<Slot>,
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    out: arrow::datatypes::SchemaRef,
    /// Its regular expressions compiled once ([`once`]).
    compiled: usize,
}

impl Planned {
    async fn new(
        ctx: &datafusion::prelude::SessionContext,
        input: arrow::datatypes::SchemaRef,
        out: arrow::datatypes::SchemaRef,
        frame: impl FnOnce(
            datafusion::prelude::DataFrame,
        ) -> Result<datafusion::prelude::DataFrame, LiveError>,
    ) -> Result<Planned, LiveError> {
        let slot = Arc::new(Slot {
            schema: input.clone(),
            batch: std::sync::Mutex::new(None),
        });
        let table = datafusion::catalog::streaming::StreamingTable::try_new(
            input,
            vec![slot.clone() as Arc<dyn datafusion::physical_plan::streaming::PartitionStream>],
        )?;
        let (state, plan) = frame(ctx.read_table(Arc::new(table))?)?.into_parts();
        let (plan, compiled) = once::compile_once(plan)?;
        let plan = datafusion::prelude::DataFrame::new(state, plan)
            .create_physical_plan()
            .await?;
        Ok(Planned {
            slot,
            plan,
            out,
            compiled,
        })
    }

    async fn run(
        &self,
        batch: RecordBatch,
        task: &Arc<datafusion::execution::TaskContext>,
    ) -> Result<RecordBatch, LiveError> {
        *self.slot.batch.lock().expect("slot lock") = Some(batch);
        // A copy of the operators for this run: each run adds its metrics to the operators it
        // runs (about 150 kB a micro-batch here), which a plan kept for the life of the loop
        // would hold forever. The copy keeps the plan's properties and expressions: no
        // planning.
        let plan = reset_plan_states(self.plan.clone())?;
        let result = datafusion::physical_plan::collect(plan, task.clone()).await;
        // A plan that did not read its input would answer for no rows: refused, not trusted.
        if self.slot.batch.lock().expect("slot lock").take().is_some() {
            return Err(LiveError::Engine(
                datafusion::error::DataFusionError::Internal(
                    "the micro-batch plan did not read its input".into(),
                ),
            ));
        }
        Ok(flagship_store::frames::conform(&result?, &self.out)?)
    }
}

/// The input of a [`Planned`]: the batch its next run reads, taken by the plan's scan.
#[derive(Debug)]
struct Slot {
    schema: arrow::datatypes::SchemaRef,
    batch: std::sync::Mutex<Option<RecordBatch>>,
}

impl datafusion::physical_plan::streaming::PartitionStream for Slot {
    fn schema(&self) -> &arrow::datatypes::SchemaRef {
        &self.schema
    }

    fn execute(
        &self,
        _: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::execution::SendableRecordBatchStream {
        let batches: Vec<RecordBatch> = self
            .batch
            .lock()
            .expect("slot lock")
            .take()
            .into_iter()
            .collect();
        let stream = datafusion::physical_plan::memory::MemoryStream::try_new(
            batches,
            self.schema.clone(),
            None,
        )
        .expect("a batch in its own schema");
        Box::pin(stream)
    }
}

/// Column `name` of processed rows, as strings.
pub fn strings<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray, LiveError> {
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

/// When a micro-batch is scored in a hurry ([`Options::hurry_after`], [`HURRY_MIN_POSTS`],
/// [`HURRY_HOLD`]).
#[derive(Debug, Clone, Copy)]
struct Hurry {
    /// [`Options::hurry_after`]; `None`: never (the model has no hurried margins).
    after: Option<Duration>,
    /// Hurried until then: [`HURRY_HOLD`] after the last batch that was behind.
    until: Option<Instant>,
}

impl Hurry {
    /// The pace of a batch of `posts` starting `now` whose oldest post has waited `oldest`:
    /// hurried when it is behind (waited `after` or more, at least [`HURRY_MIN_POSTS`]
    /// posts), or one was within the hold. `after` 0: every batch.
    fn pace(&mut self, posts: usize, oldest: Option<Duration>, now: Instant) -> Pace {
        if self.after == Some(Duration::ZERO) {
            return Pace::Hurried;
        }
        if let (Some(after), Some(waited)) = (self.after, oldest)
            && waited >= after
            && posts >= HURRY_MIN_POSTS
        {
            self.until = Some(now + HURRY_HOLD);
        }
        match self.until {
            Some(until) if now < until => Pace::Hurried,
            _ => Pace::Careful,
        }
    }
}

/// The model and the plans one micro-batch goes through.
struct Triage<'a> {
    model: &'a flagship_model::Classifier,
    model_id: &'a str,
    /// The micro-batch plans, built once.
    prepared: Prepared,
    /// libtorch's threads, matched to the cores other processes leave free.
    threads: flagship_model::threads::Governor,
    latencies: Vec<f64>,
    /// Words kept per flagged post ([`Options::explain`]).
    explain: usize,
    /// [`Options::explain_behind`].
    behind: Duration,
    /// Words come with the write ([`Options::scored_words`], and the model allows it).
    scored_words: bool,
    /// When its micro-batches are scored in a hurry.
    hurry: Hurry,
    /// The frozen sentence encoder, when the sink groups questions.
    embedder: Option<Arc<dyn Embed>>,
    /// Flagged posts written, oldest first, waiting for their words (and vectors).
    backlog: std::collections::VecDeque<Unexplained>,
    /// Flagged posts whose words are settled, waiting only for their vectors; empty without
    /// an embedder.
    vectors: AwaitingVectors,
    /// The posts taken from the backlog whose words are in the making.
    current: Option<Explaining>,
    clock: Clock,
    telemetry: Arc<Telemetry>,
}

impl Triage<'_> {
    /// Scores the posts waiting in `intake` as one micro-batch.
    async fn flush(
        &mut self,
        intake: &mut Intake,
        sink: &mut dyn Sink,
        t: &mut Totals,
    ) -> Result<(), LiveError> {
        intake.first_at = None;
        let parsing = std::mem::take(&mut intake.parsing);
        let batch = std::mem::take(&mut intake.pending);
        if batch.is_empty() {
            return Ok(());
        }
        self.clock.parse.push(ms(parsing));
        self.run(batch, sink, t).await
    }

    /// Flagged posts wait for their words or vectors, or one is being explained.
    fn explaining(&self) -> bool {
        self.current.is_some() || !self.backlog.is_empty() || !self.vectors.is_empty()
    }

    /// `posts`, their words settled, wait for their vectors ([`AwaitingVectors`]; the ones
    /// that cannot are counted); without an embedder, nothing.
    fn await_vectors(&mut self, posts: impl IntoIterator<Item = Unexplained>, t: &mut Totals) {
        if self.embedder.is_none() {
            return;
        }
        let now = Instant::now();
        for p in posts {
            if let Some(gone) = self.vectors.push(p, now) {
                self.count_unembedded(std::slice::from_ref(&gone), t);
            }
        }
    }

    /// The next `posts` waiting for vectors alone, oldest first, or [`EMBED_CHUNK`] when more
    /// than [`REFINE_BACKLOG`] wait (those past [`EMBED_WITHIN`] leave, counted). `None`:
    /// none waits.
    fn next_vectors(&mut self, posts: usize, t: &mut Totals) -> Option<Explaining> {
        let posts = if refining(self.vectors.len()) {
            posts
        } else {
            posts.max(EMBED_CHUNK)
        };
        let (posts, stale) = self.vectors.take(posts, Instant::now());
        self.count_unembedded(&stale, t);
        (!posts.is_empty()).then_some(Explaining {
            posts,
            words: None,
            pooled: false,
            only_vectors: true,
            spent: Duration::ZERO,
        })
    }

    /// The next posts to explain, oldest first, and how: up to `posts` by the model's own
    /// attribution, or the ones that waited [`Options::explain_behind`] by the pooled one
    /// (posts past [`EXPLAIN_WITHIN`] leave the backlog, counted, for their vectors alone);
    /// when none waits for words, up to `posts` for their vectors. `None`: none waits.
    fn next_job(&mut self, posts: usize, t: &mut Totals) -> Option<Explaining> {
        // Words later than the bound are not worth the time a waiting post would pay.
        let stale = self
            .backlog
            .iter()
            .take_while(|p| p.written.elapsed() > EXPLAIN_WITHIN)
            .count();
        if stale > 0 {
            let old: Vec<Unexplained> = self.backlog.drain(..stale).collect();
            if self.explain > 0 {
                self.count_unexplained(&old, t);
            }
            self.await_vectors(old, t);
        }
        let worded = shed_worded(&mut self.backlog, self.vectors.len());
        self.await_vectors(worded, t);
        // Behind: the posts without words that waited `explain_behind`, several at a time,
        // by the pooled attribution (it passes the deletion test; gradient × input, cheaper
        // still, did no better than random words and is never used). They go first, wherever
        // they are: a refinement of words that came with a write never holds them back.
        // Otherwise the model's own attribution, oldest first.
        let waited = |p: &Unexplained| !p.worded() && p.written.elapsed() >= self.behind;
        let behind = self.explain > 0
            && self.model.attribution == Attribution::Occlusion
            && self.model.explains_pooled()
            && self.backlog.iter().any(waited);
        let want = posts;
        let posts: Vec<Unexplained> = if behind {
            let (mut out, mut rest) = (Vec::new(), std::collections::VecDeque::new());
            for p in self.backlog.drain(..) {
                if out.len() < POOLED_CHUNK.max(posts) && waited(&p) {
                    out.push(p);
                } else {
                    rest.push_back(p);
                }
            }
            self.backlog = rest;
            out
        } else {
            let take = posts.min(self.backlog.len());
            self.backlog.drain(..take).collect()
        };
        if posts.is_empty() {
            return self.next_vectors(want, t);
        }
        let texts: Vec<&str> = posts.iter().map(|p| p.text.as_str()).collect();
        let how = if behind {
            Attribution::Pooled
        } else {
            self.model.attribution
        };
        let words = posts
            .iter()
            .any(|p| self.wants_words(p))
            .then(|| self.model.explanation_with(&texts, self.explain, how));
        Some(Explaining {
            posts,
            words,
            pooled: behind,
            only_vectors: false,
            spent: Duration::ZERO,
        })
    }

    /// Whether `p` waits for words: none came with its write, or occlusion may refine them
    /// (while the loop keeps up: [`refining`]).
    fn wants_words(&self, p: &Unexplained) -> bool {
        self.explain > 0
            && (!p.worded()
                || (self.model.attribution == Attribution::Occlusion
                    && refining(self.backlog.len() + self.vectors.len())))
    }

    /// One slice of the explanation work: takes up to `posts` backlog posts (oldest first)
    /// when none is in the making, puts `slice` more texts through the model for their words
    /// (occlusion's variants), and once they are done, embeds the posts and hands the words
    /// and vectors to the sink.
    fn explain_step(
        &mut self,
        posts: usize,
        slice: usize,
        sink: &mut dyn Sink,
        t: &mut Totals,
    ) -> Result<(), LiveError> {
        if self.current.is_none() {
            self.current = self.next_job(posts, t);
        }
        let Some(mut e) = self.current.take() else {
            return Ok(());
        };
        // Words are a courtesy: a failure to find them costs these posts their words, never
        // the run (the posts themselves are written).
        if let Some(job) = e.words.as_mut() {
            self.threads.tick();
            let started = Instant::now();
            let done = self.model.advance(job, slice);
            e.spent += started.elapsed();
            match done {
                Ok(false) => {
                    self.current = Some(e);
                    return Ok(());
                }
                Ok(true) => self.clock.explain.push(ms(e.spent)),
                Err(err) => {
                    tracing::warn!("{} flagged posts left without words: {err}", e.posts.len());
                    e.words = None;
                    self.count_unexplained(&e.posts, t);
                }
            }
        }
        let Explaining {
            posts,
            words,
            pooled,
            only_vectors,
            ..
        } = e;
        let words = words.and_then(|w| w.words());
        let worded = words.is_some();
        let words = words.unwrap_or_else(|| vec![Vec::new(); posts.len()]);
        let texts: Vec<&str> = posts.iter().map(|p| p.text.as_str()).collect();
        // Vectors are a courtesy too: without one a post stays a single card.
        let mut vectors = vec![Vec::new(); posts.len()];
        if let Some(embedder) = &self.embedder {
            let started = Instant::now();
            match embedder.embed(&texts) {
                Ok(v) if v.len() == posts.len() => {
                    vectors = v;
                    self.clock.embed.push(ms(started.elapsed()));
                }
                Ok(v) => {
                    tracing::warn!(
                        "the sentence encoder gave {} vectors for {} posts: they stay single cards",
                        v.len(),
                        posts.len()
                    );
                    self.count_unembedded(&posts, t);
                }
                Err(e) => {
                    tracing::warn!("{} flagged posts left without a group: {e}", posts.len());
                    self.count_unembedded(&posts, t);
                }
            }
        }
        // First words, or a refinement of the words that came with the write (one that found
        // no word keeps those, and is no refinement).
        let (written, refines): (Vec<Instant>, Vec<bool>) =
            posts.iter().map(|p| (p.written, p.worded())).unzip();
        let found: Vec<bool> = words.iter().map(|w| !w.is_empty()).collect();
        let out: Vec<Explained> = posts
            .into_iter()
            .zip(words)
            .zip(vectors)
            .map(|((p, why), embedding)| Explained {
                platform: p.platform,
                id: p.id,
                // A vector alone brings no new words; occlusion may find no word that raised
                // the probability: keep the first.
                why: if only_vectors {
                    Vec::new()
                } else if why.is_empty() {
                    p.why
                } else {
                    why
                },
                embedding,
            })
            .collect();
        // No new words (a vector alone, words that failed, a refinement that found nothing)
        // and no vector change nothing: no line for them.
        let changed: Vec<Explained> = out
            .iter()
            .zip(refines.iter().zip(&found))
            .filter(|(e, (r, f))| {
                let no_words = only_vectors || !worded || (**r && !**f);
                !(no_words && e.embedding.is_empty())
            })
            .map(|(e, _)| e.clone())
            .collect();
        if !changed.is_empty() {
            sink.explained(&changed)?;
        }
        if worded {
            for (p, _) in written.iter().zip(&refines).filter(|(_, r)| !**r) {
                self.clock.explain_delay.push(ms(p.elapsed()));
            }
        }
        for (p, e) in written.iter().zip(&out) {
            if !e.embedding.is_empty() {
                self.clock.embed_delay.push(ms(p.elapsed()));
            }
        }
        for ((e, refined), found) in out.iter().zip(refines).zip(found) {
            if worded && refined {
                t.refined += u64::from(found);
            } else if worded {
                t.explained += 1;
                t.explained_pooled += u64::from(pooled);
                self.telemetry.explained.inc(e.platform);
            }
            if !e.embedding.is_empty() {
                t.embedded += 1;
                self.telemetry.embedded.inc(e.platform);
            }
        }
        Ok(())
    }

    /// The posts of `posts` left without any words (those whose words came with their
    /// write lose only a refinement).
    fn count_unexplained(&self, posts: &[Unexplained], t: &mut Totals) {
        for p in posts.iter().filter(|p| !p.worded()) {
            t.unexplained += 1;
            self.telemetry.unexplained.inc(p.platform);
        }
    }

    fn count_unembedded(&self, posts: &[Unexplained], t: &mut Totals) {
        t.unembedded += posts.len() as u64;
        for p in posts {
            self.telemetry.unembedded.inc(p.platform);
        }
    }

    /// Posts that left the backlog unexplained and unembedded (dropped, or a stop came).
    fn count_left(&self, posts: &[Unexplained], t: &mut Totals) {
        if self.explain > 0 {
            self.count_unexplained(posts, t);
        }
        if self.embedder.is_some() {
            self.count_unembedded(posts, t);
        }
    }

    async fn run(
        &mut self,
        batch: Vec<Arrived>,
        sink: &mut dyn Sink,
        t: &mut Totals,
    ) -> Result<(), LiveError> {
        let started = Instant::now();
        let mut oldest = None;
        for a in &batch {
            let waited = started.duration_since(a.at);
            self.clock.wait.push(ms(waited));
            oldest = oldest.max(Some(waited));
        }
        let pace = self.hurry.pace(batch.len(), oldest, started);
        let rows: Vec<(Post, String)> = batch
            .iter()
            .map(|a| (a.post.clone(), a.origin.clone()))
            .collect();
        let processed = self.prepared.run(&rows).await?;
        self.clock.prepare.push(ms(started.elapsed()));
        t.batches += 1;
        self.telemetry.batches.inc();
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
            self.threads.tick();
            let scoring = Instant::now();
            let (preds, mut words, tokenise) = if self.scored_words {
                let w = self.model.predict_worded(&refs, self.explain, pace)?;
                (w.predictions, w.words, w.tokenise)
            } else {
                let (p, t) = self.model.predict_timed(&refs, pace)?;
                (p, Vec::new(), t)
            };
            self.clock.tokenise.push(ms(tokenise));
            self.clock
                .model
                .push(ms(scoring.elapsed().saturating_sub(tokenise)));
            t.kept += processed.num_rows() as u64;
            let by_id: std::collections::HashMap<&str, &Arrived> =
                batch.iter().map(|a| (a.post.id.as_str(), a)).collect();
            for (i, p) in preds.iter().enumerate() {
                let Some(a) = by_id.get(ids.value(i)).copied() else {
                    continue;
                };
                scored.push(Scored {
                    post: a.post.clone(),
                    text_model: texts.value(i).to_owned(),
                    matched: terms_at(matched, i),
                    client: (!client.is_null(i)).then(|| client.value(i).to_owned()),
                    probability: p.probability,
                    need_support: p.need_support,
                    threshold: self.model.threshold(),
                    model_id: self.model_id.to_owned(),
                    scored_at: Utc::now(),
                    latency_ms: a.at.elapsed().as_secs_f64() * 1e3,
                    hurried: pace == Pace::Hurried,
                    why: words.get_mut(i).map(std::mem::take).unwrap_or_default(),
                });
            }
        }
        t.flagged += scored.iter().filter(|s| s.need_support).count() as u64;
        if pace == Pace::Hurried && !scored.is_empty() {
            t.hurried += scored.len() as u64;
            t.hurried_batches += 1;
        }
        for s in scored
            .iter()
            .filter(|s| s.need_support && !s.why.is_empty())
        {
            t.explained += 1;
            t.explained_scored += 1;
            self.telemetry.explained.inc(s.post.platform);
            self.clock.explain_delay.push(0.0);
        }
        if !scored.is_empty() {
            let writing = Instant::now();
            sink.write(&scored)?;
            self.clock.write.push(ms(writing.elapsed()));
        }
        let tel = &self.telemetry;
        for s in &scored {
            tel.kept.inc(s.post.platform);
            if s.hurried {
                tel.hurried.inc(s.post.platform);
            }
            if s.need_support {
                tel.flagged.inc(s.post.platform);
            }
        }
        for a in &batch {
            let latency = a.at.elapsed();
            self.latencies.push(latency.as_secs_f64() * 1e3);
            tel.latency.observe(latency.as_secs_f64());
        }
        // Their words (or better ones) and vectors come later, off the path a post waits on.
        for s in scored.into_iter().filter(|s| s.need_support) {
            let p = Unexplained {
                platform: s.post.platform,
                id: s.post.id,
                text: s.text_model,
                written: Instant::now(),
                why: s.why,
            };
            if !self.wants_words(&p) {
                self.await_vectors([p], t);
                continue;
            }
            if self.backlog.len() == EXPLAIN_BACKLOG
                && let Some(old) = self.backlog.pop_front()
            {
                self.count_unexplained(std::slice::from_ref(&old), t);
                self.await_vectors([old], t);
            }
            self.backlog.push_back(p);
        }
        Ok(())
    }
}

/// One live run's model and settings: what [`run`] scores with, how it batches, when it
/// stops by itself, and who hears of its progress.
pub struct Run<'a> {
    pub config: &'a Config,
    pub model: &'a Classifier,
    /// Names the model in every scored post (its folder, or a label).
    pub model_id: &'a str,
    /// Ids an earlier run handled (its output): never scored again.
    pub handled_before: HashSet<String>,
    pub options: &'a Options,
    /// The frozen sentence encoder whose vectors the sink groups questions by (`None`: no
    /// vectors; the desk then shows every post as its own card).
    pub embedder: Option<Arc<dyn Embed>>,
    /// Called after each micro-batch.
    pub progress: &'a (dyn Fn(&Totals) + Sync),
    /// Where the counts also go as they happen (a `/metrics` listener reads it); `None`:
    /// only the [`Totals`] at the end.
    pub telemetry: Option<Arc<Telemetry>>,
}

/// Runs `source` through the profile and the model into `sink` until `stop`, a limit or the
/// end of the source.
pub async fn run(
    run: Run<'_>,
    source: Box<dyn PostSource>,
    sink: &mut dyn Sink,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Totals, LiveError> {
    let Run {
        config,
        model,
        model_id,
        handled_before,
        options,
        embedder,
        progress,
        telemetry,
    } = run;
    let telemetry = telemetry.unwrap_or_else(|| Arc::new(Telemetry::live()));
    let start = Instant::now();
    let mut scoring = Scoring {
        triage: Triage {
            model,
            model_id,
            prepared: Prepared::new(&flagship_store::frames::micro_batch_session(), config).await?,
            threads: flagship_model::threads::Governor::new(),
            latencies: Vec::new(),
            explain: options.explain,
            behind: options.explain_behind,
            scored_words: options.scored_words && options.explain > 0 && model.explains_pooled(),
            hurry: Hurry {
                after: model.hurries().then_some(options.hurry_after),
                until: None,
            },
            embedder,
            backlog: std::collections::VecDeque::new(),
            vectors: AwaitingVectors::new(EMBED_WITHIN, EMBED_BACKLOG),
            current: None,
            clock: Clock::default(),
            telemetry: telemetry.clone(),
        },
        intake: Intake {
            seen: flagship_ingest::Seen::new(1_000_000),
            handled_before,
            track: flagship_core::track::Track::new(&config.mission.stream.track),
            pending: Vec::new(),
            first_at: None,
            parsing: Duration::ZERO,
            telemetry: telemetry.clone(),
        },
        t: Totals::default(),
        options,
        deadline: options.duration.map(|d| tokio::time::Instant::now() + d),
    };
    // The host's load sets libtorch's threads before the first post, not a period into the
    // run (flagship_model::threads).
    tokio::time::sleep(flagship_model::threads::FIRST_LOOK).await;
    scoring.triage.threads.decide();
    let mut reader = Reader::spawn(source, telemetry);
    tokio::pin!(stop);
    let stopped_by = scoring
        .until_stop(&mut reader.lines, sink, stop, progress)
        .await?;
    let reconnects = reader.reconnects.clone();
    let (mut source, mut lines, held) = reader.stop().await?;
    // A clean stop (signal, duration, end of input): the lines the reader had queued are
    // scored too, then a resumable source saves its point. After `max_posts` they are left
    // (the limit is an upper bound) and the point is not saved.
    if stopped_by != Stop::MaxPosts {
        scoring.queued(&mut lines, held, sink).await?;
        if let Err(e) = source.commit() {
            tracing::error!("the source's resume point was not saved: {e}");
        }
    }
    let mut t = scoring.finish(start, sink)?;
    t.reconnects = reconnects.load(std::sync::atomic::Ordering::Relaxed);
    t.seconds = start.elapsed().as_secs_f64();
    t.stopped_by = stopped_by;
    Ok(t)
}

/// A line the reader took from the source, and when.
type Read = (Result<SourceLine, IngestError>, Instant);

/// The source, read in its own task, so waiting for a batch's deadline never cancels a read
/// half-way; the channel is the queue between it and the loop. Asked to stop, it hands the
/// source back with a line it read but could not queue: a resumable source saves its point
/// only once all it gave was handled.
struct Reader {
    lines: tokio::sync::mpsc::Receiver<Read>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(Box<dyn PostSource>, Option<Read>)>,
    /// The source's reconnects so far.
    reconnects: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Reader {
    fn spawn(mut source: Box<dyn PostSource>, telemetry: Arc<Telemetry>) -> Reader {
        let (tx, lines) = tokio::sync::mpsc::channel::<Read>(4096);
        let reconnects = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = reconnects.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut held = None;
            loop {
                let r = tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    r = source.next_line() => r,
                };
                let reconnects = source.stats().reconnects;
                counter.store(reconnects, std::sync::atomic::Ordering::Relaxed);
                telemetry.reconnects.raise_to(reconnects);
                let last = !matches!(r, Ok(Some(_)));
                let item = match r {
                    Ok(Some(l)) => Ok(l),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                let item = (item, Instant::now());
                tokio::select! {
                    biased;
                    _ = &mut stopped => {
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
        Reader {
            lines,
            stop,
            task,
            reconnects,
        }
    }

    /// Stops reading: the source back, the queue, and a line read but not queued.
    async fn stop(
        self,
    ) -> Result<
        (
            Box<dyn PostSource>,
            tokio::sync::mpsc::Receiver<Read>,
            Option<Read>,
        ),
        LiveError,
    > {
        let _ = self.stop.send(());
        let (source, held) = self
            .task
            .await
            .map_err(|e| LiveError::Task(e.to_string()))?;
        Ok((source, self.lines, held))
    }
}

/// The loop's state: posts taken and waiting, the model's side, the counts, and the limits.
struct Scoring<'a> {
    triage: Triage<'a>,
    intake: Intake,
    t: Totals,
    options: &'a Options,
    /// When `options.duration` ends the run.
    deadline: Option<tokio::time::Instant>,
}

impl Scoring<'_> {
    /// Takes lines and scores micro-batches until a stop, the duration, the post limit or the
    /// end of the input; explains flagged posts while idle. Returns why it stopped.
    async fn until_stop(
        &mut self,
        lines: &mut tokio::sync::mpsc::Receiver<Read>,
        sink: &mut dyn Sink,
        mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
        progress: &(dyn Fn(&Totals) + Sync),
    ) -> Result<Stop, LiveError> {
        let opts = self.options;
        loop {
            // Idle (nothing waits to be scored, no line queued): explain a few flagged posts.
            if self.intake.pending.is_empty() && lines.is_empty() && self.triage.explaining() {
                let asked = tokio::select! {
                    biased;
                    _ = &mut stop => true,
                    _ = std::future::ready(()) => false,
                };
                if asked {
                    return Ok(Stop::Signal);
                }
                if self
                    .deadline
                    .is_none_or(|d| tokio::time::Instant::now() < d)
                {
                    self.triage
                        .explain_step(1, EXPLAIN_SLICE, sink, &mut self.t)?;
                    continue;
                }
            }
            let mut stopped_by = None;
            // Wait for the next line, but never past the waiting batch's deadline.
            let flush_at = self.intake.first_at.map(|f| f + opts.max_wait);
            let limit = match (flush_at, self.deadline) {
                (Some(f), Some(d)) => Some(f.min(d)),
                (f, d) => f.or(d),
            };
            let next = async {
                match limit {
                    Some(l) => tokio::time::timeout_at(l, lines.recv()).await.ok(),
                    None => Some(lines.recv().await),
                }
            };
            let line = tokio::select! {
                biased;
                _ = &mut stop => { stopped_by = Some(Stop::Signal); None }
                l = next => match l {
                    None => None, // a timeout: flush what waits (or the duration ended)
                    Some(Some((Ok(line), at))) => Some((line, at)),
                    Some(None) => { stopped_by = Some(Stop::EndOfInput); None }
                    Some(Some((Err(e), _))) => return self.failed(e, sink).await,
                },
            };
            if self
                .deadline
                .is_some_and(|d| tokio::time::Instant::now() >= d)
            {
                stopped_by.get_or_insert(Stop::Duration);
            }
            if let Some((line, at)) = line {
                self.intake.take(line, at, &mut self.t);
                // What else already arrived joins this batch: a post alone is scored at once,
                // a burst (queued while the last batch was scored) goes in together.
                while self.intake.pending.len() < opts.max_batch
                    && opts.max_posts.is_none_or(|m| self.t.seen < m)
                {
                    match lines.try_recv() {
                        Ok((Ok(line), at)) => self.intake.take(line, at, &mut self.t),
                        Ok((Err(e), _)) => return self.failed(e, sink).await,
                        Err(_) => break,
                    }
                }
            }
            let due = self
                .intake
                .first_at
                .is_some_and(|f| f.elapsed() >= opts.max_wait);
            if !self.intake.pending.is_empty()
                && (self.intake.pending.len() >= opts.max_batch || due || stopped_by.is_some())
            {
                self.flush(sink).await?;
                progress(&self.t);
            }
            if opts.max_posts.is_some_and(|m| self.t.seen >= m) {
                self.flush(sink).await?;
                return Ok(Stop::MaxPosts);
            }
            if let Some(s) = stopped_by {
                return Ok(s);
            }
        }
    }

    /// Scores what waits, then ends the run with the source's error.
    async fn failed(&mut self, e: IngestError, sink: &mut dyn Sink) -> Result<Stop, LiveError> {
        self.flush(sink).await?;
        Err(e.into())
    }

    async fn flush(&mut self, sink: &mut dyn Sink) -> Result<(), LiveError> {
        self.triage.flush(&mut self.intake, sink, &mut self.t).await
    }

    /// Scores the lines the reader had queued (and one it held) at a clean stop.
    async fn queued(
        &mut self,
        lines: &mut tokio::sync::mpsc::Receiver<Read>,
        held: Option<Read>,
        sink: &mut dyn Sink,
    ) -> Result<(), LiveError> {
        lines.close();
        let mut rest = Vec::new();
        while let Some(item) = lines.recv().await {
            rest.push(item);
        }
        rest.extend(held);
        for (item, at) in rest {
            if let Ok(line) = item {
                self.intake.take(line, at, &mut self.t);
            }
        }
        self.flush(sink).await
    }

    /// The run's last words and figures: the flagged posts written get their words, for a
    /// few seconds at most (a stop is not held up; the rest are counted), then the rate, the
    /// budget and the latency quantiles.
    fn finish(mut self, start: Instant, sink: &mut dyn Sink) -> Result<Totals, LiveError> {
        let mut t = std::mem::take(&mut self.t);
        t.posts_per_second = t.seen as f64 / start.elapsed().as_secs_f64().max(1e-9);
        let triage = &mut self.triage;
        let until = Instant::now() + FINAL_EXPLAIN;
        while triage.explaining() && Instant::now() < until {
            triage.explain_step(FINAL_CHUNK, usize::MAX, sink, &mut t)?;
        }
        let mut left: Vec<Unexplained> = triage.backlog.drain(..).collect();
        let mut unembedded: Vec<Unexplained> = triage.vectors.drain().collect();
        match triage.current.take() {
            Some(e) if e.only_vectors => unembedded.extend(e.posts),
            Some(e) => left.extend(e.posts),
            None => {}
        }
        triage.count_left(&left, &mut t);
        triage.count_unembedded(&unembedded, &mut t);
        let c = std::mem::take(&mut triage.clock);
        t.budget = Budget {
            wait: Step::of(c.wait),
            parse: Step::of(c.parse),
            prepare: Step::of(c.prepare),
            tokenise: Step::of(c.tokenise),
            model: Step::of(c.model),
            write: Step::of(c.write),
            explain: Step::of(c.explain),
            embed: Step::of(c.embed),
        };
        let mut d = c.explain_delay;
        d.sort_by(f64::total_cmp);
        t.explain_delay_p50_ms = quantile(&d, 0.50);
        t.explain_delay_p99_ms = quantile(&d, 0.99);
        t.explain_delay_max_ms = d.last().copied().unwrap_or(0.0);
        let mut d = c.embed_delay;
        d.sort_by(f64::total_cmp);
        t.embed_delay_p50_ms = quantile(&d, 0.50);
        t.embed_delay_p99_ms = quantile(&d, 0.99);
        t.embed_delay_max_ms = d.last().copied().unwrap_or(0.0);
        let mut l = std::mem::take(&mut triage.latencies);
        l.sort_by(f64::total_cmp);
        t.latency_p50_ms = quantile(&l, 0.50);
        t.latency_p99_ms = quantile(&l, 0.99);
        t.latency_max_ms = l.last().copied().unwrap_or(0.0);
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` flagged posts waiting, every other one with the words of its write.
    fn backlog(n: usize) -> std::collections::VecDeque<Unexplained> {
        (0..n)
            .map(|i| Unexplained {
                platform: flagship_core::Platform::Mastodon,
                id: i.to_string(),
                text: format!("post {i}"),
                written: Instant::now(),
                why: if i % 2 == 0 {
                    vec![Why {
                        word: "late".into(),
                        weight: 0.5,
                    }]
                } else {
                    Vec::new()
                },
            })
            .collect()
    }

    /// Posts wait for their vectors in order, at most `cap` (the oldest goes), none past
    /// the bound: one already past it never joins, one that passed it while waiting leaves
    /// when met.
    #[test]
    fn posts_wait_for_their_vectors_within_the_bound_and_the_cap() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let post = |id: &str, written: Instant| Unexplained {
            platform: flagship_core::Platform::Bluesky,
            id: id.into(),
            text: id.into(),
            written,
            why: Vec::new(),
        };
        let ids = |v: &[Unexplained]| v.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        let mut q = AwaitingVectors::new(s(10), 3);
        let now = t0 + s(20);
        assert_eq!(
            q.push(post("late", t0), now).map(|p| p.id),
            Some("late".into())
        );
        assert!(q.is_empty());
        assert!(q.push(post("a", t0 + s(11)), now).is_none());
        assert!(q.push(post("b", t0 + s(15)), now).is_none());
        assert!(q.push(post("c", t0 + s(12)), now).is_none());
        assert_eq!(
            q.push(post("d", t0 + s(19)), now).map(|p| p.id),
            Some("a".into())
        );
        // At 24 s, "c" (written at 12 s) is past the bound; "b" (15 s) and "d" (19 s) are not.
        let (out, stale) = q.take(1, t0 + s(24));
        assert_eq!((ids(&out), ids(&stale)), (vec!["b".to_owned()], vec![]));
        let (out, stale) = q.take(5, t0 + s(24));
        assert_eq!(
            (ids(&out), ids(&stale)),
            (vec!["d".to_owned()], vec!["c".to_owned()])
        );
        assert!(q.is_empty());
        let (out, stale) = q.take(1, t0 + s(24));
        assert!(out.is_empty() && stale.is_empty());
    }

    /// A batch that is behind (waited `hurry_after`, at least [`HURRY_MIN_POSTS`] posts) is
    /// hurried, and so is every batch within the hold after it, however small or short its
    /// wait; then care again. A few posts that waited (a busy host): care. A model without
    /// hurried margins: never.
    #[test]
    fn a_batch_behind_hurries_the_loop_for_the_hold() {
        let ms = Duration::from_millis;
        let big = HURRY_MIN_POSTS;
        let t0 = Instant::now();
        let mut h = Hurry {
            after: Some(ms(100)),
            until: None,
        };
        assert_eq!(h.pace(big, Some(ms(99)), t0), Pace::Careful);
        assert_eq!(h.pace(0, None, t0), Pace::Careful);
        assert_eq!(h.pace(big - 1, Some(ms(400)), t0), Pace::Careful);
        assert_eq!(h.pace(big, Some(ms(100)), t0 + ms(10)), Pace::Hurried);
        let held = t0 + ms(10) + HURRY_HOLD;
        assert_eq!(h.pace(1, Some(ms(1)), held - ms(1)), Pace::Hurried);
        assert_eq!(h.pace(1, Some(ms(1)), held), Pace::Careful);
        // Behind again restarts the hold.
        assert_eq!(h.pace(big, Some(ms(250)), held + ms(5)), Pace::Hurried);
        assert_eq!(h.pace(1, Some(ms(0)), held + HURRY_HOLD), Pace::Hurried);
        let mut never = Hurry {
            after: None,
            until: None,
        };
        assert_eq!(
            never.pace(256, Some(Duration::from_secs(60)), t0),
            Pace::Careful
        );
        let mut always = Hurry {
            after: Some(Duration::ZERO),
            until: None,
        };
        assert_eq!(always.pace(1, None, t0), Pace::Hurried);
    }

    /// Past [`REFINE_BACKLOG`] waiting posts (for words, or for vectors alone) the worded ones
    /// keep their words and go (to wait for their vectors, in order); up to it every post stays.
    #[test]
    fn far_behind_the_posts_with_words_keep_them_and_leave_the_backlog() {
        let mut b = backlog(REFINE_BACKLOG);
        assert!(shed_worded(&mut b, 0).is_empty());
        assert_eq!(b.len(), REFINE_BACKLOG, "keeping up: all may be refined");
        let mut b = backlog(REFINE_BACKLOG - 10);
        assert_eq!(shed_worded(&mut b, 11).len(), (REFINE_BACKLOG - 10) / 2);
        assert_eq!(
            b.len(),
            (REFINE_BACKLOG - 10) / 2,
            "posts wait for vectors: behind"
        );
        let mut b = backlog(3 * REFINE_BACKLOG);
        let gone = shed_worded(&mut b, 0);
        let left: Vec<&str> = b.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(b.len(), 3 * REFINE_BACKLOG / 2, "{left:?}");
        assert!(b.iter().all(|p| !p.worded()), "{left:?}");
        assert_eq!((left[0], left[1]), ("1", "3"), "the order kept");
        let gone: Vec<&str> = gone.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(gone.len(), 3 * REFINE_BACKLOG / 2, "{gone:?}");
        assert_eq!((gone[0], gone[1]), ("0", "2"), "in order, with their words");
    }
}
