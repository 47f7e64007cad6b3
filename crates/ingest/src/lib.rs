//! flagship-ingest: X API v2 filtered stream (or a replay of recorded payloads) → Kinesis
//! Firehose or the local Firehose layout.
//!
//! A [`source::PostSource`] yields lines; [`run`] classifies each ([`record`]: tweet, error /
//! operational-disconnect message, keep-alive, malformed), drops tweet ids already seen (a
//! reconnect can repeat tweets), stamps tweets with their arrival time and hands them through
//! a bounded queue (backpressure) to a [`sink::Sink`] task. Malformed lines go to a quarantine
//! file with their origin, line and byte offset. It stops at `max_posts`, after `duration`, on
//! SIGINT / SIGTERM (the caller's `stop` future) or when a replay ends, then drains the queue,
//! flushes the sink and reports every count. [`backoff`] holds X's reconnect schedule and
//! [`xstream`] the stream client. Every count also goes, as it happens, to the run's
//! [`Telemetry`] ([`Options::telemetry`]: posts seen and dropped per platform, the queue's
//! depth, the sink's records sent, retried and spilled, the source's reconnects), which the
//! caller may serve at `/metrics`. It never cleans or filters text (textproc's and filter's
//! job) and never logs secrets.

pub mod backoff;
pub mod firehose;
pub mod jetstream;
pub mod mastodon;
pub mod record;
pub mod sink;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
pub mod xstream;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use flagship_core::Stop;
use flagship_core::telemetry::Telemetry;
use flagship_store::Store;
use serde::Serialize;

use crate::record::Line;
use crate::sink::{Drain, Sink, SinkCounts};
use crate::source::{PostSource, SourceStats};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Retrying cannot help (credentials, access level, rules): stop with this message.
    #[error("{0}")]
    Fatal(String),
    #[error("{0}")]
    Io(String),
    #[error("sink: {0}")]
    Sink(String),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub max_posts: Option<u64>,
    pub duration: Option<Duration>,
    /// Records waiting between the source and the sink; a full queue stops reading.
    pub queue: usize,
    /// How many recent tweet ids are remembered for dedup.
    pub dedup_window: usize,
    /// After a stop signal, how long the sink may go on sending what is queued before it
    /// spills the rest (the systemd unit stops after 90 s: the default leaves room).
    pub drain_timeout: Duration,
    /// The mission's track terms, matched against posts no server filtered.
    pub track: Option<flagship_core::track::Track>,
    /// Where the counts also go as they happen (a `/metrics` listener reads it).
    pub telemetry: Option<Arc<Telemetry>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_posts: None,
            duration: None,
            queue: 10_000,
            dedup_window: 1_000_000,
            drain_timeout: Duration::from_secs(60),
            track: None,
            telemetry: None,
        }
    }
}

/// Every count of a run, printed at exit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub lines: u64,
    pub received: u64,
    pub duplicates: u64,
    /// Posts from an unfiltered source that match no track term (not sent).
    pub unmatched: u64,
    /// Deletions seen (Bluesky, Mastodon): counted, not sent.
    pub deletions: u64,
    /// Events that are no post (identity, account, likes, notifications): counted, not sent.
    pub other_events: u64,
    pub keep_alives: u64,
    pub api_errors: u64,
    pub operational_disconnects: u64,
    pub quarantined: u64,
    pub sink: SinkCounts,
    /// Received tweets neither delivered nor spilled (a failed sink): 0 unless logged as an
    /// error.
    pub lost: u64,
    pub source: SourceStats,
    pub seconds: f64,
    /// Why the run ended.
    pub stopped_by: Stop,
    /// The fatal error that ended the run (after everything received was flushed).
    pub error: Option<String>,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} tweets received ({} duplicates dropped{}), {} sent in {} calls ({} retried, {} spilled, {} lost), {} malformed lines quarantined, {} API error messages ({} operational disconnects), {} keep-alives, {} reconnects; stopped by {} after {:.1} s",
            self.received,
            self.duplicates,
            // Counts only the open sources make, shown when there are any.
            [
                (self.unmatched, "not matching the track terms"),
                (self.deletions, "deletions"),
                (self.other_events, "other events"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!(", {n} {what}"))
            .collect::<String>(),
            self.sink.sent,
            self.sink.calls,
            self.sink.retried,
            self.sink.spilled,
            self.lost,
            self.quarantined,
            self.api_errors,
            self.operational_disconnects,
            self.keep_alives,
            self.source.reconnects,
            self.stopped_by,
            self.seconds
        )
    }
}

/// A progress snapshot, for the caller's progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub received: u64,
    pub queued: usize,
    pub elapsed: Duration,
}

/// Remembers the last `cap` ids (the dedup window of ingest and of live triage).
pub struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Seen {
    pub fn new(cap: usize) -> Seen {
        Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Whether `id` is new in the window (and remembers it).
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// A record to send: its bytes and when it was received (which sets its Firehose hour).
type Record = (Bytes, chrono::DateTime<Utc>);

/// What the run has taken from the source: its counts, the ids seen in the dedup window,
/// the malformed lines for the quarantine, and the track terms an unfiltered source's posts
/// must match.
struct Intake<'a> {
    t: Totals,
    seen: Seen,
    bad: Vec<serde_json::Value>,
    track: Option<&'a flagship_core::track::Track>,
    telemetry: &'a Telemetry,
}

impl Intake<'_> {
    /// What one line means for the run: counted, quarantined, or a record to send.
    fn handle(&mut self, line: &source::SourceLine) -> Option<Record> {
        let t = &mut self.t;
        let tel = self.telemetry;
        t.lines += 1;
        let now = Utc::now();
        match record::classify(line.platform, &line.bytes, now) {
            Line::KeepAlive => t.keep_alives += 1,
            Line::Deleted { .. } => t.deletions += 1,
            Line::Other { .. } => t.other_events += 1,
            Line::Post { id, record, post } => {
                if self
                    .track
                    .is_some_and(|track| record::off_track(line, post.as_deref(), track))
                {
                    t.unmatched += 1;
                    tel.off_track.inc(line.platform);
                } else if self.seen.insert(&id) {
                    t.received += 1;
                    tel.seen.inc(line.platform);
                    return Some((record, now));
                } else {
                    t.duplicates += 1;
                    tel.duplicate.inc(line.platform);
                }
            }
            Line::Error {
                operational_disconnect,
                message,
            } => {
                t.api_errors += 1;
                t.operational_disconnects += u64::from(operational_disconnect);
                tracing::warn!(origin = %line.origin, line = line.line, "stream message: {message}");
            }
            Line::Malformed { reason } => {
                t.quarantined += 1;
                tel.malformed.inc(line.platform);
                tracing::warn!(origin = %line.origin, line = line.line, offset = line.offset, "malformed line quarantined: {reason}");
                self.bad.push(serde_json::json!({
                    "source": line.origin, "line": line.line, "offset": line.offset,
                    "error": reason, "raw": String::from_utf8_lossy(&line.bytes),
                }));
            }
        }
        None
    }
}

/// Runs `source` into `sink` until a limit, `stop`, or the end of the source. Malformed lines
/// are appended to `quarantine_key` in `quarantine` (JSONL: origin, line, offset, reason, raw).
///
/// Nothing received is dropped silently: after a stop the queue is drained through the sink
/// until `opts.drain_timeout`, then the sink spills what is left; lines the source already
/// holds are handled too; the quarantine and every count are written even when the sink
/// fails, and what a failed sink never took is counted in [`Totals::lost`] and logged.
pub async fn run<S: Sink + 'static>(
    source: &mut dyn PostSource,
    mut sink: S,
    quarantine: &Store,
    quarantine_key: &str,
    opts: &Options,
    stop: impl std::future::Future<Output = ()>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Totals, IngestError> {
    let start = Instant::now();
    let drain = Drain::default();
    sink.set_drain(drain.clone());
    let telemetry = opts
        .telemetry
        .clone()
        .unwrap_or_else(|| Arc::new(Telemetry::ingest()));
    let (tx, rx) = tokio::sync::mpsc::channel::<Record>(opts.queue.max(1));
    let sink_task = tokio::spawn(feed(sink, rx, telemetry.clone()));
    let mut intake = Intake {
        t: Totals::default(),
        seen: Seen::new(opts.dedup_window),
        bad: Vec::new(),
        track: opts.track.as_ref(),
        telemetry: &telemetry,
    };
    tokio::pin!(stop);
    let start_drain = || {
        drain.start(tokio::time::Instant::now() + opts.drain_timeout);
        tracing::info!(
            deadline_s = opts.drain_timeout.as_secs_f64(),
            "stopping: draining the queue, then spilling what is left"
        );
    };
    let (mut stopped_by, held) = read_until_stop(
        source,
        &mut intake,
        &tx,
        opts,
        stop.as_mut(),
        progress,
        start,
    )
    .await;
    if stopped_by == Stop::Signal {
        start_drain();
    }
    // Complete lines the source has already read (a stream's buffer) are handled, not dropped
    // (after `--max-posts` they are left unread: the limit is an upper bound).
    let mut rest: Vec<_> = held.into_iter().collect();
    if stopped_by != Stop::MaxPosts {
        for line in source.buffered() {
            rest.extend(intake.handle(&line));
        }
    }
    for rec in rest {
        // Still watching for a stop: a full queue must not hide it from the drain deadline.
        let permit = if stopped_by == Stop::Signal {
            tx.reserve().await
        } else {
            tokio::select! {
                p = tx.reserve() => p,
                _ = &mut stop => {
                    stopped_by = Stop::Signal;
                    start_drain();
                    tx.reserve().await
                }
            }
        };
        match permit {
            Ok(p) => p.send(rec),
            Err(_) => break,
        }
    }
    drop(tx);
    // A signal while the queue drains (the source had already ended) also sets the deadline.
    tokio::pin!(sink_task);
    let joined = if stopped_by == Stop::Signal {
        sink_task.await
    } else {
        tokio::select! {
            j = &mut sink_task => j,
            _ = &mut stop => {
                stopped_by = Stop::Signal;
                start_drain();
                sink_task.await
            }
        }
    };
    let (sink_counts, sink_error) =
        joined.map_err(|e| IngestError::Sink(format!("sink task: {e}")))?;
    let Intake { mut t, bad, .. } = intake;
    t.sink = sink_counts;
    t.source = source.stats();
    telemetry.reconnects.raise_to(t.source.reconnects);
    telemetry.queue.set(0.0);
    t.seconds = start.elapsed().as_secs_f64();
    t.stopped_by = stopped_by;
    t.lost = t.received.saturating_sub(t.sink.sent + t.sink.spilled);
    if let Some(e) = sink_error {
        tracing::error!("sink failed: {e}");
        t.error.get_or_insert(format!("sink: {e}"));
    }
    if t.lost > 0 {
        tracing::error!(
            lost = t.lost,
            "tweets received but neither delivered nor spilled"
        );
    }
    append_quarantine(quarantine, quarantine_key, &bad).await?;
    // Everything returned was delivered, spilled or quarantined: a resumable source saves
    // its point.
    if t.lost == 0
        && let Err(e) = source.commit()
    {
        tracing::error!("the source's resume point was not saved: {e}");
        t.error.get_or_insert(e.to_string());
    }
    Ok(t)
}

/// The sink's task: records from the queue into `sink`, a tick a second (Firehose's buffer
/// interval), and a flush when the queue closes. The sink's counts go to `telemetry` at each
/// tick and at the end. Returns the sink's counts and its error.
async fn feed<S: Sink>(
    mut sink: S,
    mut rx: tokio::sync::mpsc::Receiver<Record>,
    telemetry: Arc<Telemetry>,
) -> (SinkCounts, Option<IngestError>) {
    let publish = |c: &SinkCounts| {
        telemetry.sent.raise_to(c.sent);
        telemetry.retried.raise_to(c.retried);
        telemetry.spilled.raise_to(c.spilled);
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    // A tick missed while a send was slow is not made up for in a burst.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = async {
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some((rec, at)) => sink.put(rec, at).await?,
                    None => break,
                },
                _ = ticker.tick() => {
                    sink.tick(Utc::now()).await?;
                    publish(&sink.counts());
                }
            }
        }
        sink.flush().await
    }
    .await;
    let counts = sink.counts();
    publish(&counts);
    (counts, result.err())
}

/// Reads the source into the sink's queue until the post limit, the duration, `stop`, an
/// error, a failed sink or the end of the source. Returns why, and a record taken but not
/// yet queued (a stop while the queue was full: it is queued during the drain).
async fn read_until_stop(
    source: &mut dyn PostSource,
    intake: &mut Intake<'_>,
    tx: &tokio::sync::mpsc::Sender<Record>,
    opts: &Options,
    mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    progress: &(dyn Fn(Progress) + Sync),
    start: Instant,
) -> (Stop, Option<Record>) {
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut last_progress = Instant::now();
    loop {
        if opts.max_posts.is_some_and(|m| intake.t.received >= m) {
            return (Stop::MaxPosts, None);
        }
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, source.next_line()).await.ok(),
                None => Some(source.next_line().await),
            }
        };
        let line = tokio::select! {
            biased;
            _ = &mut stop => return (Stop::Signal, None),
            l = next => match l {
                None => return (Stop::Duration, None),
                Some(Ok(l)) => l,
                Some(Err(e)) => {
                    intake.t.error = Some(e.to_string());
                    return (Stop::Error, None);
                }
            },
        };
        let Some(line) = line else {
            return (Stop::EndOfInput, None);
        };
        if let Some(rec) = intake.handle(&line) {
            // A full queue waits here, and a stop still ends the run: the record is kept and
            // queued during the drain.
            tokio::select! {
                biased;
                _ = &mut stop => return (Stop::Signal, Some(rec)),
                permit = tx.reserve() => match permit {
                    Ok(p) => p.send(rec),
                    Err(_) => return (Stop::SinkFailure, None),
                },
            }
        }
        if last_progress.elapsed() >= Duration::from_millis(500) {
            last_progress = Instant::now();
            let queued = opts.queue.max(1) - tx.capacity();
            intake.telemetry.queue.set(queued as f64);
            // (`stats` copies the source's wait list: read twice a second, not per line.)
            intake
                .telemetry
                .reconnects
                .raise_to(source.stats().reconnects);
            progress(Progress {
                received: intake.t.received,
                queued,
                elapsed: start.elapsed(),
            });
        }
    }
}

/// Appends the malformed lines to the quarantine object (JSONL), keeping what it held.
async fn append_quarantine(
    quarantine: &Store,
    key: &str,
    bad: &[serde_json::Value],
) -> Result<(), IngestError> {
    if bad.is_empty() {
        return Ok(());
    }
    let mut text = match quarantine.exists(key).await {
        Ok(true) => quarantine
            .get(key)
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for b in bad {
        text.extend_from_slice(b.to_string().as_bytes());
        text.push(b'\n');
    }
    quarantine
        .put(key, Bytes::from(text))
        .await
        .map_err(|e| IngestError::Io(e.to_string()))
}
