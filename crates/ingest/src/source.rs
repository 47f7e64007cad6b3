//! Where stream lines come from: the X API v2 filtered stream ([`crate::xstream`]) or a replay
//! of recorded v2 JSONL ([`Replay`]), behind one trait so everything downstream runs without
//! credentials.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use flagship_core::Platform;

use crate::IngestError;

/// One line as a source delivered it (no newline), with where it was.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceLine {
    /// What the bytes are: an X stream message, a Jetstream event, a Mastodon event.
    pub platform: Platform,
    /// The platform did not filter it by the mission (Bluesky's Jetstream, a Mastodon public
    /// timeline): the track terms are matched here.
    pub unfiltered: bool,
    pub bytes: Bytes,
    /// File name, or `stream#N` for the N-th connection.
    pub origin: String,
    /// 1-based line number within `origin`.
    pub line: u64,
    /// Byte offset of the line's first byte within `origin`.
    pub offset: u64,
}

/// What a source counted about itself.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SourceStats {
    pub connections: u64,
    pub reconnects: u64,
    pub stalls: u64,
    pub network_errors: u64,
    pub http_errors: u64,
    pub rate_limited: u64,
    /// Waits before reconnecting, in order (the documented schedule).
    pub waits: Vec<Duration>,
}

impl SourceStats {
    /// Counts of several sources (or connections) as one.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a SourceStats>) -> SourceStats {
        let mut s = SourceStats::default();
        for o in all {
            s.connections += o.connections;
            s.reconnects += o.reconnects;
            s.stalls += o.stalls;
            s.network_errors += o.network_errors;
            s.http_errors += o.http_errors;
            s.rate_limited += o.rate_limited;
            s.waits.extend(o.waits.iter().copied());
        }
        s
    }
}

#[async_trait::async_trait]
pub trait PostSource: Send {
    /// The next line; `None` when the source is exhausted (a replay's end).
    async fn next_line(&mut self) -> Result<Option<SourceLine>, IngestError>;
    fn stats(&self) -> SourceStats;
    /// At a stop: the lines already read but not yet returned (a stream's buffer; a partial
    /// last line comes back as it is and is quarantined), so none is dropped uncounted.
    fn buffered(&mut self) -> Vec<SourceLine> {
        Vec::new()
    }
    /// At a clean stop, after everything the source returned was delivered or spilled: a
    /// source that can resume saves its point here.
    fn commit(&mut self) -> Result<(), IngestError> {
        Ok(())
    }
}

/// Recorded v2 JSONL files (optionally gzipped), read line by line (memory stays flat
/// whatever the file size). Search / lookup pages (`data` an array) are split into one stream
/// message per tweet carrying the includes that tweet refers to (its author, referenced tweets,
/// place), as the filtered stream sends them. With `speed`, lines are paced by their tweets'
/// `created_at` (×`speed`: 60 = an hour in a minute).
pub struct Replay {
    platform: Platform,
    files: Vec<PathBuf>,
    speed: Option<f64>,
    current: Option<(String, Box<dyn std::io::BufRead + Send>, u64, u64)>,
    pending: std::collections::VecDeque<SourceLine>,
    /// The pacing's origin: a post's time and when it was handed out. Later lines are due
    /// at origin + (their time − its time) ÷ speed, so timer overshoot never accumulates.
    clock: Option<(DateTime<Utc>, tokio::time::Instant)>,
    /// The previous paced line's time.
    last: Option<DateTime<Utc>>,
    stats: SourceStats,
}

impl Replay {
    pub fn new(files: Vec<PathBuf>, speed: Option<f64>) -> Replay {
        Replay {
            platform: Platform::X,
            files: files.into_iter().rev().collect(),
            speed: speed.filter(|s| *s > 0.0),
            current: None,
            pending: Default::default(),
            clock: None,
            last: None,
            stats: SourceStats::default(),
        }
    }

    /// Recorded events of another platform: Jetstream events (Bluesky), Mastodon statuses or
    /// stream events — one JSON object a line.
    pub fn platform(mut self, platform: Platform) -> Replay {
        self.platform = platform;
        self
    }

    /// The `.jsonl` / `.jsonl.gz` files of a folder (sorted), or the file itself.
    pub fn files_of(path: &std::path::Path) -> Result<Vec<PathBuf>, IngestError> {
        if path.is_file() {
            return Ok(vec![path.to_owned()]);
        }
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| IngestError::Io(format!("{}: {e}", path.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".jsonl") || n.ends_with(".jsonl.gz"))
            })
            .collect();
        v.sort();
        Ok(v)
    }

    /// Splits a page into stream messages; `None` for a line that is not a page.
    pub fn split_page(line: &SourceLine) -> Option<Vec<SourceLine>> {
        let b = &line.bytes;
        let is_page =
            b.starts_with(b"{") && (memfind(b, br#""data":["#) || memfind(b, br#""data": ["#));
        if !is_page {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(b).ok()?;
        let data = v.get("data")?.as_array()?;
        let inc = v.get("includes");
        let list = |k: &str| -> Vec<serde_json::Value> {
            inc.and_then(|i| i.get(k))
                .and_then(|x| x.as_array())
                .cloned()
                .unwrap_or_default()
        };
        let (users, tweets, places) = (list("users"), list("tweets"), list("places"));
        let id_of = |x: &serde_json::Value| x.get("id").and_then(|i| i.as_str()).map(str::to_owned);
        Some(
            data.iter()
                .map(|d| {
                    let author = d.get("author_id").and_then(|a| a.as_str());
                    let refs: Vec<&str> = d
                        .get("referenced_tweets")
                        .and_then(|r| r.as_array())
                        .map(|r| r.iter().filter_map(|x| x.get("id")?.as_str()).collect())
                        .unwrap_or_default();
                    let place = d.pointer("/geo/place_id").and_then(|p| p.as_str());
                    let pick = |all: &[serde_json::Value],
                                want: &dyn Fn(&str) -> bool|
                     -> Vec<serde_json::Value> {
                        all.iter()
                            .filter(|x| id_of(x).is_some_and(|i| want(&i)))
                            .cloned()
                            .collect()
                    };
                    let includes = serde_json::json!({
                        "users": pick(&users, &|i| Some(i) == author),
                        "tweets": pick(&tweets, &|i| refs.contains(&i)),
                        "places": pick(&places, &|i| Some(i) == place),
                    });
                    SourceLine {
                        bytes: Bytes::from(
                            serde_json::to_vec(
                                &serde_json::json!({"data": d, "includes": includes}),
                            )
                            .expect("serializes"),
                        ),
                        ..line.clone()
                    }
                })
                .collect(),
        )
    }

    async fn pace(&mut self, line: &SourceLine) {
        let Some(speed) = self.speed else { return };
        // The time a line happened: X's `data.created_at`, Jetstream's `time_us`, a Mastodon
        // status's `created_at` (recorded `status`, or a stream event's `payload`).
        #[derive(serde::Deserialize)]
        struct D {
            data: Option<T>,
            time_us: Option<i64>,
            status: Option<T>,
            payload: Option<serde_json::Value>,
        }
        #[derive(serde::Deserialize)]
        struct T {
            created_at: Option<DateTime<Utc>>,
        }
        let Some(t) = serde_json::from_slice::<D>(&line.bytes).ok().and_then(|d| {
            d.data
                .and_then(|x| x.created_at)
                .or_else(|| d.time_us.and_then(DateTime::from_timestamp_micros))
                .or_else(|| d.status.and_then(|s| s.created_at))
                .or_else(|| {
                    d.payload
                        .and_then(|p| serde_json::from_value::<T>(p).ok())
                        .and_then(|s| s.created_at)
                })
        }) else {
            return;
        };
        // A quiet spell in the recording is waited out for a minute at most.
        const LONGEST: Duration = Duration::from_secs(60);
        let now = tokio::time::Instant::now();
        // A line earlier than the one before (a later file from an earlier period) starts
        // the pacing afresh from itself.
        if self.last.is_some_and(|prev| t < prev) {
            self.clock = None;
        }
        self.last = Some(t);
        let (t0, at0) = *self.clock.get_or_insert((t, now));
        if t > t0 {
            let due = at0 + (t - t0).to_std().unwrap_or_default().div_f64(speed);
            if due > now + LONGEST {
                self.clock = Some((t, now + LONGEST));
                tokio::time::sleep(LONGEST).await;
            } else {
                tokio::time::sleep_until(due).await;
            }
        }
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[async_trait::async_trait]
impl PostSource for Replay {
    async fn next_line(&mut self) -> Result<Option<SourceLine>, IngestError> {
        loop {
            if let Some(l) = self.pending.pop_front() {
                self.pace(&l).await;
                return Ok(Some(l));
            }
            if self.current.is_none() {
                let Some(f) = self.files.pop() else {
                    return Ok(None);
                };
                let file = std::fs::File::open(&f)
                    .map_err(|e| IngestError::Io(format!("{}: {e}", f.display())))?;
                let reader: Box<dyn std::io::BufRead + Send> =
                    if f.extension().is_some_and(|e| e == "gz") {
                        Box::new(std::io::BufReader::with_capacity(
                            1 << 20,
                            // Multi-member: a `.gz` written in parts (`cat a.gz b.gz`, log rotation) is read whole.
                            flate2::read::MultiGzDecoder::new(file),
                        ))
                    } else {
                        Box::new(std::io::BufReader::with_capacity(1 << 20, file))
                    };
                let name = f.file_name().map_or_else(
                    || f.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                self.stats.connections += 1;
                self.current = Some((name, reader, 0, 0));
            }
            let (name, reader, pos, line_no) = self.current.as_mut().expect("set above");
            let mut buf = Vec::new();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| IngestError::Io(format!("{name}: {e}")))?;
            if n == 0 {
                self.current = None;
                continue;
            }
            let start = *pos;
            *pos += n as u64;
            *line_no += 1;
            if buf.ends_with(b"\n") {
                buf.pop();
            }
            if buf.ends_with(b"\r") {
                buf.pop();
            }
            let line = SourceLine {
                platform: self.platform,
                unfiltered: self.platform != Platform::X,
                bytes: Bytes::from(buf),
                origin: name.clone(),
                line: *line_no,
                offset: start,
            };
            let pages = if self.platform == Platform::X {
                Replay::split_page(&line)
            } else {
                None
            };
            match pages {
                Some(many) => self.pending.extend(many),
                None => self.pending.push_back(line),
            }
        }
    }

    fn stats(&self) -> SourceStats {
        self.stats.clone()
    }
}

/// A source shared with the read that may be in flight on it.
type Shared = std::sync::Arc<tokio::sync::Mutex<Box<dyn PostSource>>>;
/// A read in flight: which source, its result, its counts after it.
type Read = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (usize, Result<Option<SourceLine>, IngestError>, SourceStats),
            > + Send,
    >,
>;

/// Several live sources at once (`--source bluesky --source mastodon`): lines in order of
/// arrival. Each source has at most one read in flight, kept across calls — a read that
/// loses a race is never dropped, so a connection attempt, a backoff wait or a half-read
/// line of one source is never cancelled by another source's line. The sources are polled
/// from a rotating start, so none starves another. At a stop ([`PostSource::buffered`],
/// [`PostSource::commit`]) the reads in flight are dropped first: nothing they were waiting
/// for had been returned.
pub struct Merged {
    sources: Vec<Shared>,
    reads: Vec<Option<Read>>,
    stats: Vec<SourceStats>,
    ended: Vec<bool>,
    turn: usize,
}

impl Merged {
    pub fn new(sources: Vec<Box<dyn PostSource>>) -> Merged {
        let n = sources.len();
        Merged {
            stats: sources.iter().map(|s| s.stats()).collect(),
            sources: sources
                .into_iter()
                .map(|s| std::sync::Arc::new(tokio::sync::Mutex::new(s)))
                .collect(),
            reads: (0..n).map(|_| None).collect(),
            ended: vec![false; n],
            turn: 0,
        }
    }

    /// Drops the reads in flight and runs `f` on every source.
    fn each<T>(&mut self, mut f: impl FnMut(&mut Box<dyn PostSource>) -> T) -> Vec<T> {
        self.reads.iter_mut().for_each(|r| *r = None);
        self.sources
            .iter()
            .map(|s| f(&mut s.try_lock().expect("no read in flight holds it")))
            .collect()
    }
}

#[async_trait::async_trait]
impl PostSource for Merged {
    async fn next_line(&mut self) -> Result<Option<SourceLine>, IngestError> {
        loop {
            let n = self.sources.len();
            for i in 0..n {
                if !self.ended[i] && self.reads[i].is_none() {
                    let source = self.sources[i].clone();
                    self.reads[i] = Some(Box::pin(async move {
                        let mut s = source.lock().await;
                        let r = s.next_line().await;
                        (i, r, s.stats())
                    }));
                }
            }
            self.turn = (self.turn + 1) % n.max(1);
            let turn = self.turn;
            let mut order: Vec<(usize, &mut Read)> = self
                .reads
                .iter_mut()
                .enumerate()
                .filter_map(|(i, r)| r.as_mut().map(|r| (i, r)))
                .collect();
            if order.is_empty() {
                return Ok(None);
            }
            let k = turn % order.len();
            order.rotate_left(k);
            let ((i, r, stats), _, _) =
                futures::future::select_all(order.into_iter().map(|(_, r)| r)).await;
            self.reads[i] = None;
            self.stats[i] = stats;
            match r? {
                Some(line) => return Ok(Some(line)),
                None => self.ended[i] = true,
            }
        }
    }

    fn stats(&self) -> SourceStats {
        SourceStats::sum(&self.stats)
    }

    fn buffered(&mut self) -> Vec<SourceLine> {
        self.each(|s| s.buffered()).into_iter().flatten().collect()
    }

    fn commit(&mut self) -> Result<(), IngestError> {
        self.each(|s| s.commit()).into_iter().collect()
    }
}
